"""A timeline's forward pass with two decode workers on alternate key-frame chunks
(sifa_cli/data/forward.py): the frames must be exactly those of one decoder reading in order,
on H.264 with B-frames, closed and open GOPs, and when the second worker dies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edited_media import photographs, shot_frames
from sifa_cli.data.decode import Video
from sifa_cli.data.forward import ForwardFrames, key_frame_chunks

av = pytest.importorskip("av")  # the test extra has it: PyAV's wheels carry libx264

SHOTS = [("pan left", 70), ("zoom in", 45), ("tilt up", 90), ("pan right", 60)]


def write_h264(path: Path, x264_params: str) -> Path:
    """Real-imagery shots (camera moves over two photographs) in H.264 with B-frames."""
    photos = photographs()
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"x264-params": x264_params, "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = 228, 128, "yuv420p"
        for number, (label, count) in enumerate(SHOTS):
            for frame in shot_frames(label, count, photos[number % 2], seed=number):
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


CLOSED = "bframes=3:keyint=40:min-keyint=10"
OPEN = "bframes=3:keyint=40:min-keyint=10:open-gop=1"


def read_all(path: Path, paired: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """Every frame through ForwardFrames: indices, frames, and how the reading went."""
    video = Video(path, threads=1)
    reader = ForwardFrames(video, (lambda: Video(path, backend="decord", threads=1)) if paired else None)
    try:
        chunks = len(reader.chunks)
        indices, frames, first = [], [], 0
        while first < video.num_frames:
            got, chunk = reader.read(first)
            indices.append(got)
            frames.append(chunk)
            first = int(got[-1]) + 1
        how = {"chunks": chunks, "checked": reader.checked, "paired_to_the_end": reader.paired}
        return np.concatenate(indices), np.concatenate(frames), how
    finally:
        reader.close()
        video.close()


def test_chunks_start_on_key_frames_and_hold_enough_frames():
    assert key_frame_chunks(np.array([0, 10, 40, 50, 100, 130]), 150, least=32) == [(0, 40), (40, 100), (100, 150)]
    assert key_frame_chunks(np.array([0, 40, 80, 90]), 100, least=32) == [(0, 40), (40, 100)]  # short tail joins
    assert key_frame_chunks(np.array([0]), 500) == [(0, 500)]
    assert key_frame_chunks(np.array([12, 40]), 100) == []  # decoding cannot start at frame 0
    assert key_frame_chunks(np.array([], dtype=np.int64), 100) == []


def test_two_workers_give_the_frames_of_one_in_order_on_closed_gops(tmp_path):
    path = write_h264(tmp_path / "closed.mp4", CLOSED)
    in_order_indices, in_order, alone = read_all(path, paired=False)
    indices, frames, how = read_all(path, paired=True)
    assert alone == {"chunks": 0, "checked": 0, "paired_to_the_end": False}
    assert how["chunks"] >= 5 and how["paired_to_the_end"]
    assert how["checked"] == how["chunks"] - 1  # every chunk start after the first was checked and used
    np.testing.assert_array_equal(indices, np.arange(len(in_order)))
    np.testing.assert_array_equal(in_order_indices, indices)
    assert np.array_equal(frames, in_order)


def test_an_open_gop_key_frame_fails_the_check_and_the_frames_stay_exact(tmp_path):
    path = write_h264(tmp_path / "open.mp4", OPEN)
    _, in_order, _ = read_all(path, paired=False)
    with Video(path, threads=1) as video:
        keys = video.key_frames()
        chunks = key_frame_chunks(keys, video.num_frames)
        first, stop = chunks[1]
        sought = video.read(np.arange(first, stop))  # a decoder sent straight to the key frame
    # what the check is for: decord hands out this chunk shifted (its leading pictures dropped)
    assert not np.array_equal(sought, in_order[first:stop])
    indices, frames, how = read_all(path, paired=True)
    assert how["chunks"] >= 5 and how["checked"] == 0 and not how["paired_to_the_end"]
    np.testing.assert_array_equal(indices, np.arange(len(in_order)))
    assert np.array_equal(frames, in_order)


def test_the_rest_is_read_by_the_first_worker_when_the_second_dies(tmp_path):
    path = write_h264(tmp_path / "closed.mp4", CLOSED)
    _, in_order, _ = read_all(path, paired=False)
    video = Video(path, threads=1)
    reader = ForwardFrames(video, lambda: Video(path, backend="decord", threads=1))
    try:
        assert reader.paired and len(reader.chunks) >= 4
        got, frames = reader.read(0)
        got2, frames2 = reader.read(int(got[-1]) + 1)  # chunk 1, from the second worker
        reader.other._worker.kill()  # its process dies with chunk 3 on its hands
        parts, first = [frames, frames2], int(got2[-1]) + 1
        while first < video.num_frames:
            got, chunk = reader.read(first)
            parts.append(chunk)
            first = int(got[-1]) + 1
        assert not reader.paired
        assert np.array_equal(np.concatenate(parts), in_order)
    finally:
        reader.close()
        video.close()


def test_still_frames_at_a_chunk_start_cannot_be_checked_so_one_worker_reads_on(tmp_path):
    """A locked-off shot without noise repeats frames: a shifted chunk would pass a comparison, so
    the check refuses (frames that are all alike) and the first worker decodes the rest in order."""
    photo = photographs()[0][:128, :228]
    path = tmp_path / "still.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"x264-params": CLOSED, "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = 228, 128, "yuv420p"
        for _ in range(120):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(photo), format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    _, in_order, _ = read_all(path, paired=False)
    indices, frames, how = read_all(path, paired=True)
    assert how["chunks"] >= 2 and how["checked"] == 0 and not how["paired_to_the_end"]
    assert np.array_equal(frames, in_order)
