"""Frames read by seeking come back exact on H.264 with open GOPs (x265's default, x264's open-gop).

decord numbers a key frame by its place in decoding order; in an open GOP it is shown after the
B-frames that lead it, and a seek onto it returned frame k+2 for k (sifa_cli/data/decode_backends.py,
`decord_read_plan`). Every read here is checked against the same file decoded in order, frame for frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edited_media import photographs, shot_frames
from sifa_cli.data.decode import Video
from sifa_cli.data.decode_backends import LEADING_PICTURES_MAX, decord_read_plan

av = pytest.importorskip("av")  # the test extra has it: PyAV's wheels carry libx264 (OpenCV cannot write H.264)

OPEN = "bframes=3:b-adapt=0:keyint=40:min-keyint=40:scenecut=0:open-gop=1"
CLOSED = "bframes=3:b-adapt=0:keyint=40:min-keyint=40:scenecut=0"


def write_h264(path: Path, x264_params: str, frames: int = 130) -> Path:
    """A camera panning over a real photograph, H.264 with B-frames, a key frame every 40 frames."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"x264-params": x264_params, "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = 228, 128, "yuv420p"
        for frame in shot_frames("pan left", frames, photographs()[0], seed=3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def in_order(path: Path) -> np.ndarray:
    """Every frame, decoded from the first in order (no seek)."""
    with Video(path, backend="decord", isolate=False) as video:
        return video.read(np.arange(video.num_frames)).astype(np.int16)


def which_frames(frames: np.ndarray, reference: np.ndarray) -> list[int]:
    return [int(np.argmin(np.abs(reference - frame).mean(axis=(1, 2, 3)))) for frame in frames.astype(np.int16)]


def key_frames(path: Path) -> list[int]:
    import decord

    return [int(k) for k in decord.VideoReader(str(path)).get_key_indices()]


@pytest.mark.parametrize("params", [OPEN, CLOSED], ids=["open-gop", "closed-gop"])
def test_clips_starting_on_and_just_after_key_frames_are_exact(tmp_path, params):
    path = write_h264(tmp_path / "pan.mp4", params)
    reference = in_order(path)
    keys = key_frames(path)
    assert len(keys) >= 3
    starts = [k + d for k in keys[1:] for d in (0, 1, 3, 5)] + [keys[1] - 2, 7]
    for start in starts:
        wanted = np.arange(start, min(start + 16, len(reference)), 2)
        with Video(path, backend="decord", isolate=False) as video:  # a fresh reader: its first read seeks
            assert which_frames(video.read(wanted), reference) == wanted.tolist(), (params, start)
    with Video(path, backend="decord", isolate=False) as video:  # one reader, jumping forward and back
        for start in [keys[2], keys[1] + 1, 3, keys[1], keys[2] + 2]:
            wanted = np.arange(start, start + 6)
            assert which_frames(video.read(wanted), reference) == wanted.tolist(), (params, start)


def test_the_read_plan_goes_through_the_key_frame_only_where_a_seek_could_land_late():
    keys = np.array([0, 40, 80])
    # a fresh reader asked for the key frame: read the frame before it first, so decord decodes through it
    assert decord_read_plan([40, 42], keys, None) == ([39, 40, 42], [1, 2])
    # already just before it, or inside the same GOP: nothing added
    assert decord_read_plan([40, 42], keys, 40) == ([40, 42], [0, 1])
    assert decord_read_plan([45], keys, 41) == ([45], [0])
    # far enough after the key frame for any number of leading pictures: nothing added
    far = 40 + LEADING_PICTURES_MAX + 2
    assert decord_read_plan([far], keys, None) == ([far], [0])
    # a clip that crosses into the next GOP: the frame before its key frame is read on the way
    assert decord_read_plan([36, 38, 82], keys, None) == ([36, 38, 79, 82], [0, 1, 3])
    # every frame a key frame (intra-only files): no leading pictures, nothing added
    assert decord_read_plan([5, 9], np.arange(20), None) == ([5, 9], [0, 1])
    # the same frame asked twice comes back twice
    assert decord_read_plan([3, 3], keys, None) == ([3], [0, 0])
