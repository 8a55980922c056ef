"""Decoding real video files written by OpenCV, with decord and OpenCV."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import make_variable_frame_rate, nearest_frame_index, pattern_frames

from sifa_cli.data import decode_backends
from sifa_cli.data.decode import FrameCountError, Video, as_rgb_uint8, read_sampled, usable_frame_times
from sifa_cli.data.sampling import sample_clips
from sifa_cli.errors import DecodeError, InputError


def sampled_indices(num_frames: int) -> np.ndarray:
    """Indices a real run would ask for: dense 3x8 clips at step 2 plus uniform 8-frame segments,
    in an order that makes OpenCV both seek forward and rewind."""
    dense = sample_clips(8, 2, "dense", 3, 0, num_frames).indices.reshape(-1)
    uniform = sample_clips(8, 1, "uniform", 1, 0, num_frames).indices.reshape(-1)
    return np.concatenate([dense, uniform[::-1], [num_frames - 1, 0]])


@pytest.mark.parametrize("name,fourcc", [("a.mp4", "mp4v"), ("a.avi", "FFV1"), ("a.avi", "MJPG"), ("a.mkv", "FFV1")])
def test_decoders_agree_frame_exactly(make_video, name, fourcc):
    path = make_video(name, num_frames=300, width=80, height=48, fourcc=fourcc)
    # Read clip by clip as prediction does, in an order that makes OpenCV decode forward, seek
    # far ahead, seek back and rewind to the start.
    reads = [sampled_indices(300), np.arange(250, 258), np.arange(120, 128), np.array([10, 20, 20, 299])]
    assert 250 - 20 > decode_backends.OPENCV_SEEK_GAP and 120 > decode_backends.OPENCV_SEEK_GAP
    with Video(path, backend="decord") as by_decord, Video(path, backend="opencv") as by_opencv:
        assert by_decord.num_frames == by_opencv.num_frames == 300
        assert by_decord.backend == "decord" and by_opencv.backend == "opencv"
        for indices in reads:
            frames_decord = by_decord.read(indices)
            frames_opencv = by_opencv.read(indices)
            assert frames_decord.shape == (len(indices), 48, 80, 3) and frames_decord.dtype == np.uint8
            np.testing.assert_array_equal(frames_decord, frames_opencv)


def test_frames_are_the_requested_ones(make_video):
    # FFV1 is lossless, so the decoded pixels must be exactly the source pixels.
    source = pattern_frames(150, 64, 48)
    path = make_video("exact.mkv", frames=source, fourcc="FFV1")
    indices = np.array([149, 3, 3, 77, 0, 120, 4])
    for backend in ("decord", "opencv"):
        with Video(path, backend=backend) as video:
            np.testing.assert_array_equal(video.read(indices), source[indices])


def test_lossy_frames_match_their_source_index(make_video):
    source = pattern_frames(60)
    path = make_video("lossy.mp4", frames=source)
    indices = sampled_indices(60)
    with Video(path) as video:
        frames = video.read(indices)
    assert [nearest_frame_index(frame, source) for frame in frames] == indices.tolist()


def test_opencv_reader_decodes_with_one_thread(make_video):
    # Parallelism comes from several decoders at once; OpenCV must have taken the setting.
    path = make_video("threads.mp4", num_frames=10)
    backend = decode_backends.OpenCVBackend(path, None)
    try:
        assert backend._cap.get(cv2.CAP_PROP_N_THREADS) == decode_backends.DECODER_THREADS == 1
        assert backend.read_sorted(np.array([0, 9])).shape[0] == 2
    finally:
        backend.close()


@pytest.mark.parametrize("backend", ["decord", "opencv"])
def test_a_reader_with_frame_threads_gives_the_same_frames(make_video, backend):
    # A timeline with cuts reads one long file forward with 2 FFmpeg threads; decoding is exact either way.
    path = make_video("threads2.mp4", num_frames=40)
    with Video(path, backend=backend) as one, Video(path, backend=backend, threads=2) as two:
        for indices in (np.arange(0, 20), np.arange(20, 40), np.array([1, 38])):
            np.testing.assert_array_equal(two.read(indices), one.read(indices))
    opened = decode_backends.OpenCVBackend(path, None, threads=2)
    try:
        assert opened._cap.get(cv2.CAP_PROP_N_THREADS) == 2
    finally:
        opened.close()


def test_auto_prefers_decord_and_reports_geometry(make_video):
    path = make_video("geo.mp4", num_frames=30, width=96, height=64, fps=30)
    with Video(path) as video:
        info = video.info
    assert (info.backend, info.num_frames, info.width, info.height) == ("decord", 30, 96, 64)
    assert info.fps == pytest.approx(30.0)
    assert info.duration == pytest.approx(1.0)


def test_auto_falls_back_to_opencv_when_decord_is_missing(make_video, monkeypatch):
    path = make_video("fallback.mp4", num_frames=20)
    monkeypatch.setitem(sys.modules, "decord", None)  # what `import decord` sees when it is absent
    with Video(path, isolate=False) as video:
        assert video.backend == "opencv" and video.notes == []  # nothing to say about a file decord never saw
        assert video.read([0, 19]).shape == (2, 64, 64, 3)
    with pytest.raises(DecodeError, match="decord is not installed"):
        Video(path, backend="decord", isolate=False)


def test_auto_says_so_when_decord_cannot_open_the_file(make_video, monkeypatch):
    from sifa_cli.data import decode_backends

    path = make_video("unopenable.mp4", num_frames=20)

    def refuse(self, path, short_side, threads=1):  # as decord does on a file whose stream it cannot set up
        raise decode_backends.BackendError("cannot find the video stream")

    monkeypatch.setattr(decode_backends.DecordBackend, "__init__", refuse)
    with Video(path, isolate=False) as video:
        assert video.backend == "opencv" and video.notes == ["decord could not open it, OpenCV did"]
        assert video.read([0, 19]).shape == (2, 64, 64, 3)


def test_auto_falls_back_when_decord_rejects_the_frame_width(make_video):
    # decord 3.x cannot copy out frames 48 pixels wide (nor 8, 12, 16, 24, 72): a real failure.
    source = pattern_frames(20, 48, 32)
    path = make_video("narrow.mkv", frames=source, fourcc="FFV1")
    with Video(path, backend="decord") as video, pytest.raises(DecodeError, match="cannot decode its frames"):
        video.read([0, 1])
    with Video(path) as video:
        np.testing.assert_array_equal(video.read([0, 7, 19]), source[[0, 7, 19]])
        assert video.backend == "opencv" and video.notes == ["decord could not decode it, OpenCV did"]


def test_decord_scales_with_opencv_when_its_scaler_rejects_the_width(make_video):
    path = make_video("portrait.mp4", num_frames=8, width=240, height=320)  # short side 48 -> 48x64
    with Video(path, backend="decord", short_side=48) as video:
        frames = video.read([0, 7])
        assert video.backend == "decord"
    with Video(path, backend="opencv", short_side=48) as video:
        reference = video.read([0, 7])
    assert frames.shape == reference.shape == (2, 64, 48, 3)
    np.testing.assert_array_equal(frames, reference)  # same decoder output, same OpenCV scaling


def truncated_ffv1(make_video, tmp_path, keep: float = 0.5):
    """A lossless AVI cut short: its header still announces all 48 frames, decord counts a frame
    too many and fails on it, OpenCV reads what is there."""
    path = make_video("full.avi", num_frames=48, width=96, height=64, fourcc="FFV1")
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * keep)])
    return cut


def test_auto_falls_back_to_opencv_when_decord_fails_on_the_file(make_video, tmp_path):
    cut = truncated_ffv1(make_video, tmp_path)
    with Video(cut) as video:
        claimed = video.num_frames
        frames, indices = read_sampled(video, lambda n: np.arange(n - 8, n))
        assert video.backend == "opencv"
        assert video.num_frames < 48
        assert indices.max() == video.num_frames - 1
        assert frames.shape == (8, 64, 96, 3)
        assert any("OpenCV" in note for note in video.notes)
    assert claimed >= video.num_frames
    # decord alone refuses the file: at open ("damaged or unsupported") or, mostly, at the read of the
    # missing frames ("truncated or corrupt"); which of the two depends on how far its index scan got
    with pytest.raises(DecodeError, match="truncated or corrupt|damaged or unsupported"):
        with Video(cut, backend="decord") as video:
            video.read(np.arange(video.num_frames - 4, video.num_frames))


def test_opencv_corrects_an_over_reported_frame_count(make_video, tmp_path):
    cut = truncated_ffv1(make_video, tmp_path)
    import cv2

    assert int(cv2.VideoCapture(str(cut)).get(cv2.CAP_PROP_FRAME_COUNT)) == 48  # the lie
    with Video(cut, backend="opencv") as video:
        assert 0 < video.num_frames < 48
        last = video.read([video.num_frames - 1])
        assert last.shape == (1, 64, 96, 3)
        assert any("announces 48 frames" in note for note in video.notes)
        with pytest.raises(ValueError):
            video.read([video.num_frames])


@pytest.mark.parametrize("backend", ["decord", "opencv"])
def test_reading_ahead_gives_every_read_the_frames_a_plain_read_gives(make_video, backend):
    """The decode worker decodes the hinted frames while the caller works; whatever is asked next
    (the hinted frames, others, after a hint past the end) comes back as without hints."""
    path = make_video("ahead.mp4", num_frames=70)
    with Video(path, backend=backend, isolate=False) as plain:
        reference = plain.read(np.arange(70))
    asks = [(np.arange(0, 16), np.arange(16, 32)), (np.arange(16, 32), np.arange(32, 48)),  # hinted right
            (np.arange(40, 50), np.arange(50, 60)), (np.array([3, 9, 9, 64]), np.arange(60, 70)),  # not as hinted
            (np.arange(60, 70), np.arange(68, 90)), (np.arange(66, 70), None)]  # a hint past the end
    with Video(path, backend=backend) as video:
        assert video._worker is not None
        for indices, ahead in asks:
            np.testing.assert_array_equal(video.read(indices, ahead=ahead), reference[indices])


def test_a_read_ahead_that_fails_fails_the_read_that_asks_for_those_frames(make_video):
    from sifa_cli.data.decode_worker import _ReadAhead

    path = make_video("short.mp4", num_frames=30)
    backend = decode_backends.OpenCVBackend(path, None)
    try:
        backend.num_frames = 40  # as a header that over-reports: frames 30-39 are not there
        failing = _ReadAhead(backend, np.arange(28, 36), 40)
        failing.wait()
        assert failing.result(np.arange(28, 36), 40) is failing
        with pytest.raises(FrameCountError) as raised:
            failing.frames()  # raised for the read that asks for these frames, and only then
        assert raised.value.available == 30
        assert failing.result(np.arange(20, 28), 40) is None  # another read is done afresh
        assert failing.result(np.arange(28, 36), 30) is None  # so is one after the count was corrected
        backend.num_frames = 30
        good = _ReadAhead(backend, np.arange(20, 30), 30)
        good.wait()
        np.testing.assert_array_equal(good.frames(), _ReadAhead.now(backend, np.arange(20, 30)).frames())
    finally:
        backend.close()


def test_a_prestarted_worker_decodes_the_next_video(make_video):
    from sifa_cli.data import decode_worker

    path = make_video("prestart.mp4", num_frames=8)
    decode_worker.close_idle()
    decode_worker.prestart()
    (waiting,) = decode_worker._idle
    decode_worker.prestart()  # one idle worker is enough
    assert decode_worker._idle == [waiting] and waiting.alive
    with Video(path) as video:
        assert video._worker is waiting
        assert video.read([0, 7]).shape == (2, 64, 64, 3)


def test_read_sampled_resamples_when_the_count_shrinks(make_video, tmp_path):
    cut = truncated_ffv1(make_video, tmp_path, keep=0.9)
    counts = []

    def last_eight(num_frames):
        counts.append(num_frames)
        return np.arange(num_frames - 8, num_frames).reshape(2, 4)

    with Video(cut) as video:
        frames, indices = read_sampled(video, last_eight)
    assert frames.shape == (2, 4, 64, 96, 3)
    assert counts[-1] == video.num_frames and indices.max() == video.num_frames - 1
    if len(counts) > 1:  # decord over-counted by a frame: the second try used the real count
        assert counts[0] > counts[-1]


@pytest.mark.parametrize("backend", ["auto", "decord", "opencv"])
def test_bad_files_give_one_line_errors(tmp_path, make_video, backend):
    good = make_video("good.mp4", num_frames=24).read_bytes()
    cases = {
        "missing.mp4": None,
        "empty.mp4": b"",
        "text.mp4": b"this is not a video at all\n" * 20,
        "half.mp4": good[: len(good) // 2],
        "random.avi": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "headonly.mp4": good[:40],
    }
    expected = {
        "missing.mp4": "no such file",
        "empty.mp4": "empty",
        "text.mp4": "not a video file",
        "half.mp4": "truncated",
        "random.avi": "not a video file",
        "headonly.mp4": "truncated",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(DecodeError) as caught:
            Video(path, backend=backend)
        message = str(caught.value)
        assert "\n" not in message and str(path) in message
        assert expected[name] in message, message
    with pytest.raises(DecodeError, match="is a directory"):
        Video(tmp_path, backend=backend)


def test_corrupt_index_is_reported(make_video, tmp_path):
    data = bytearray(make_video("good.mp4", num_frames=24).read_bytes())
    moov = data.rindex(b"moov")
    data[moov + 4 : moov + 400] = bytes(396)  # zero out the sample tables
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(bytes(data))
    with pytest.raises(DecodeError) as caught:
        with Video(path) as video:
            video.read(np.arange(video.num_frames))
    assert "\n" not in str(caught.value) and "corrupt.mp4" in str(caught.value)


def test_unknown_backend_is_an_input_error(make_video):
    with pytest.raises(InputError, match="unknown decoder"):
        Video(make_video(), backend="ffmpeg")


def test_a_decoder_over_its_time_limit_gives_up(make_video):
    path = make_video("slow.mp4", num_frames=48, width=320, height=240)
    with pytest.raises(DecodeError, match="did not finish opening it"):
        Video(path, timeout=1e-6)
    video = Video(path)
    video.timeout = 1e-6
    with pytest.raises(DecodeError, match="did not finish decoding 48 frames"):
        video.read(np.arange(48))
    video.timeout = 30
    with pytest.raises(DecodeError, match="stopped responding"):  # never reused after a hang
        video.read([0])


@pytest.mark.parametrize("backend", ["decord", "opencv"])
def test_grayscale_comes_back_as_rgb(make_video, backend):
    source = pattern_frames(12)[..., 1]  # H,W grayscale
    path = make_video("gray.avi", frames=source, fourcc="FFV1")
    with Video(path, backend=backend) as video:
        frames = video.read([0, 5, 11])
    assert frames.shape == (3, 64, 64, 3)
    for channel in range(3):
        np.testing.assert_array_equal(frames[..., channel], source[[0, 5, 11]])


def test_pixel_layouts_become_rgb_uint8():
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 17
    assert as_rgb_uint8(rgba).shape == (4, 5, 3) and (as_rgb_uint8(rgba)[..., 0] == 200).all()
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 9
    assert (as_rgb_uint8(bgr, bgr=True)[..., 2] == 9).all()
    gray16 = np.full((4, 5), 0xAB00, np.uint16)
    assert (as_rgb_uint8(gray16) == 0xAB).all() and as_rgb_uint8(gray16).shape == (4, 5, 3)
    with pytest.raises(DecodeError):
        as_rgb_uint8(np.zeros((4, 5, 2), np.uint8))


def test_variable_frame_rate(make_video):
    # 24 slow frames (1.5x) then 24 fast ones (0.5x): same total length, uneven timing.
    source = pattern_frames(48)
    path = make_variable_frame_rate(make_video("vfr.mp4", frames=source), [1.5] * 24 + [0.5] * 24)
    indices = np.array([0, 10, 23, 24, 30, 47])
    with Video(path, backend="decord") as by_decord, Video(path, backend="opencv") as by_opencv:
        times = by_decord.frame_times()
        np.testing.assert_array_equal(by_decord.read(indices), by_opencv.read(indices))
        frames = by_decord.read(indices)
    assert [nearest_frame_index(f, source) for f in frames] == indices.tolist()
    steps = np.diff(times)
    assert steps[:23] == pytest.approx(0.06, abs=1e-4) and steps[24:] == pytest.approx(0.02, abs=1e-4)
    assert times[24] == pytest.approx(24 * 0.06, abs=1e-4)


def test_frame_times_without_timestamps_fall_back_to_the_frame_rate():
    fps, path = 24.0, Path("clip.avi")
    good = np.arange(270) / fps + 5.0  # a stream that starts at 5 s: times count from its first frame
    np.testing.assert_allclose(usable_frame_times(good, fps, path), np.arange(270) / fps)
    # OpenCV's sample Megamind.avi: decord reports FFmpeg's "no PTS" for the first frames, which
    # made a 11 s video a timeline of 3.8e17 s.
    no_pts = np.concatenate(([-3.8469187e17] * 2, np.arange(2, 270) / fps))
    for broken in (no_pts, good[::-1], np.where(np.arange(270) == 9, np.nan, good), np.zeros(270), good * 1000):
        times = usable_frame_times(broken, fps, path)
        np.testing.assert_allclose(times, np.arange(270) / fps)
    with pytest.raises(DecodeError, match="frame rate"):
        usable_frame_times(no_pts, 0.0, path)
    assert usable_frame_times(np.array([7.0]), fps, path).tolist() == [0.0]


@pytest.mark.parametrize("backend", ["decord", "opencv"])
def test_short_side_scales_down_while_decoding(make_video, backend):
    path = make_video("big.mp4", num_frames=16, width=320, height=240)
    with Video(path, backend=backend, short_side=60) as video:
        frames = video.read([0, 15])
        assert (video.info.width, video.info.height) == (320, 240)  # the source's size
    assert frames.shape == (2, 60, 80, 3)
    with Video(path, backend=backend) as video:
        full = video.read([0, 15])
    import cv2

    reference = cv2.resize(full[0], (80, 60), interpolation=cv2.INTER_AREA)
    assert np.abs(reference.astype(int) - frames[0]).mean() < 6  # same picture, decoder's scaler
    with Video(path, backend=backend, short_side=480) as video:  # never enlarged here
        assert video.read([0]).shape == (1, 240, 320, 3)


def test_huge_resolution_is_refused_before_decoding(make_video, monkeypatch):
    path = make_video("wide.mp4", num_frames=4, width=128, height=64)
    monkeypatch.setattr(decode_backends, "MAX_PIXELS", 128 * 64 - 1)
    for backend in ("auto", "decord", "opencv"):
        with pytest.raises(DecodeError, match="resolution 128x64 is above"):
            Video(path, backend=backend, isolate=False)  # the patched limit is this process's


def test_native_decoder_chatter_stays_off_the_terminal(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(2000))
    script = textwrap.dedent(
        f"""
        import os, sys
        from sifa_cli.data.decode import Video, capture_native_stderr
        from sifa_cli.errors import DecodeError
        with capture_native_stderr():
            os.write(2, b"native noise\\n")
            print("python line", file=sys.stderr)
            try:
                Video({str(bad)!r})
            except DecodeError as exc:
                print("error:", exc, file=sys.stderr)
        os.write(2, b"after\\n")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "python line"
    assert lines[1].startswith("error: ") and "bad.mp4" in lines[1]
    assert lines[2:] == ["after"]
    assert "native noise" not in result.stderr


def test_the_decode_worker_imports_this_sifa_even_from_a_folder_holding_another(make_video, tmp_path, monkeypatch):
    # `python -c` puts the working directory first on the path: another checkout there must not answer.
    from sifa_cli.data import decode_worker

    path = make_video("here.mp4", num_frames=6)
    decoy = tmp_path / "elsewhere" / "sifa_cli"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the wrong sifa_cli')\n")
    monkeypatch.chdir(decoy.parent)
    decode_worker.close_idle()  # a fresh worker, started from this folder
    with Video(path) as video:
        assert video._worker is not None
        assert video.read([0, 5]).shape == (2, 64, 64, 3)
