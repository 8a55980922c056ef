"""Clip sampling: dense clips, uniform segments, multi-view positions, short videos."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import pattern_frames

from sifa_cli.data.decode import Video, read_sampled
from sifa_cli.data.sampling import Views, dense_span, parse_views, sample_clips
from sifa_cli.data.spec import REFERENCE_FPS, InputSpec
from sifa_cli.errors import InputError


def test_one_dense_clip_sits_in_the_middle():
    clips = sample_clips(4, 2, "dense", 1, 0, 20)
    # span 7, 13 spare frames: the clip starts 7 in, leaving 7 before and 6 after
    assert clips.indices.tolist() == [[7, 9, 11, 13]]
    assert not clips.short


def test_dense_clips_spread_over_a_window():
    clips = sample_clips(8, 2, "dense", 3, 100, 160)
    starts = clips.indices[:, 0]
    assert clips.indices.shape == (3, 8)
    assert (np.diff(clips.indices, axis=1) == 2).all()
    assert starts.tolist() == sorted(starts.tolist()) and len(set(starts.tolist())) == 3
    assert clips.indices.min() >= 100 and clips.indices.max() < 160
    # the clips sit at the centres of three equal stretches of the 46 possible starts
    assert starts.tolist() == [100 + 7, 100 + 23, 100 + 38]


def test_exact_fit_uses_every_frame():
    clips = sample_clips(16, 1, "dense", 1, 5, 21)
    assert clips.indices.tolist() == [list(range(5, 21))] and not clips.short


def test_short_range_is_spread_over_the_clip_never_looped():
    # 5 frames for an 8-frame clip: all five, in time order, some twice; the old sampler looped
    # back to frame 10 after 14 (a jump backwards in time the model never saw in training)
    short = sample_clips(8, 1, "dense", 1, 10, 15)
    assert short.indices.tolist() == [[10, 11, 11, 12, 12, 13, 13, 14]] and short.short
    assert short.distinct == 5
    # enough frames for the clip but not for its stride: a smaller stride over the whole range
    stepped = sample_clips(4, 3, "dense", 1, 0, 7)  # needs 10 frames, has 7
    assert stepped.indices.tolist() == [[0, 2, 4, 6]] and stepped.short and stepped.distinct == 4


def test_fractional_strides_cover_the_time_span():
    # 24 fps for a clip made on 30 fps video at step 2: 1.6 source frames apart
    clips = sample_clips(4, 1.6, "dense", 1, 0, 100)
    assert np.diff(clips.indices[0]).tolist() == [2, 1, 2] and not clips.short
    assert dense_span(16, 1.6) == 25 and dense_span(16, 2) == 31


def test_uniform_segments_take_segment_centres():
    clips = sample_clips(4, 1, "uniform", 1, 0, 40)
    assert clips.indices.tolist() == [[5, 15, 25, 35]] and not clips.short
    two = sample_clips(4, 1, "uniform", 2, 0, 40)
    assert two.indices.tolist() == [[2, 12, 22, 32], [7, 17, 27, 37]]
    short = sample_clips(8, 1, "uniform", 1, 0, 5)
    assert short.short and short.indices.min() >= 0 and short.indices.max() <= 4
    assert np.all(np.diff(short.indices[0]) >= 0)


@pytest.mark.parametrize("sampling", ["dense", "uniform"])
def test_indices_always_stay_in_range(sampling):
    rng = np.random.default_rng(1)
    for _ in range(300):
        frames, step, clips = int(rng.integers(1, 33)), int(rng.integers(1, 5)), int(rng.integers(1, 11))
        start = int(rng.integers(0, 1000))
        stop = start + int(rng.integers(1, 400))
        sampled = sample_clips(frames, step, sampling, clips, start, stop)
        assert sampled.indices.shape == (clips, frames)
        assert sampled.indices.min() >= start and sampled.indices.max() < stop
        if sampling == "dense" and not sampled.short:
            assert (np.diff(sampled.indices, axis=1) == step).all()
        assert (np.diff(sampled.indices, axis=1) >= 0).all()  # never back in time
        assert sampled.short == ((stop - start) < (dense_span(frames, step) if sampling == "dense" else frames))


def test_empty_range_is_refused():
    with pytest.raises(InputError):
        sample_clips(8, 1, "dense", 1, 10, 10)


@pytest.mark.parametrize("text,views", [("1x1", Views(1, 1)), ("4x3", Views(4, 3)), (" 10X1 ", Views(10, 1))])
def test_parse_views(text, views):
    assert parse_views(text) == views
    assert parse_views(str(views)) == views


@pytest.mark.parametrize("text", ["3", "0x1", "2x2", "ax1", "65x1", "", "1x1x1"])
def test_parse_views_rejects(text):
    with pytest.raises(InputError, match="--views"):
        parse_views(text)


@pytest.mark.parametrize("backend", ["decord", "opencv"])
def test_sampled_clips_decode_to_their_frames(make_video, backend):
    source = pattern_frames(70, 64, 32)
    path = make_video("clips.mkv", frames=source, fourcc="FFV1")
    with Video(path, backend=backend) as video:
        frames, indices = read_sampled(video, lambda n: sample_clips(8, 4, "dense", 2, 0, n).indices)
        assert indices.shape == (2, 8) and frames.shape == (2, 8, 32, 64, 3)
        np.testing.assert_array_equal(frames, source[indices])
        frames, indices = read_sampled(video, lambda n: sample_clips(8, 1, "uniform", 3, 0, n).indices)
        np.testing.assert_array_equal(frames, source[indices])


def test_short_video_spreads_its_real_frames(make_video):
    source = pattern_frames(10)
    path = make_video("short.mkv", frames=source, fourcc="FFV1")
    with Video(path) as video:
        sampled = sample_clips(16, 1, "dense", 1, 0, video.num_frames)
        frames = video.read(sampled.indices[0])
    assert sampled.short and sampled.distinct == 10
    expected = [0, 1, 1, 2, 2, 3, 4, 4, 5, 5, 6, 7, 7, 8, 8, 9]
    assert sampled.indices[0].tolist() == expected
    np.testing.assert_array_equal(frames, source[expected])


@pytest.mark.parametrize("fps", [10, 15, 24, 30])
def test_clips_cover_the_same_time_at_any_frame_rate(make_video, fps):
    """A model's clip spans its `seconds` in real files of any frame rate (at least one frame apart)."""
    spec = InputSpec(frames=8, step=2, size=32, resize=32)  # no seconds recorded: 8 x 2 / 30 fps
    assert spec.seconds == pytest.approx(8 * 2 / REFERENCE_FPS)
    path = make_video(f"v{fps}.mkv", frames=pattern_frames(3 * fps, 32, 32), fourcc="FFV1", fps=fps)
    with Video(path) as video:
        stride = spec.stride_at(video.info.fps)
        sampled = sample_clips(spec.frames, stride, "dense", 1, 0, video.num_frames)
    covered = (sampled.indices[0, -1] - sampled.indices[0, 0] + 1) / fps
    assert stride == pytest.approx(max(1.0, spec.seconds * fps / spec.frames), abs=1e-4)
    if fps * spec.seconds >= spec.frames:  # a stride of a frame or more covers the span
        assert covered == pytest.approx(spec.seconds, abs=1.0 / fps)
    else:  # 10 fps: 8 frames one apart already take longer than the span
        assert stride == 1.0 and covered == pytest.approx(spec.frames / fps)
    assert (sampled.indices[0] == sample_clips(8, 2, "dense", 1, 0, video.num_frames).indices[0]).all() == (fps == 30)


def test_checkpoint_seconds_round_trip_and_old_checkpoints():
    old = InputSpec.from_meta({"frames": 16, "step": 2})  # written before clips were sampled by time
    assert old.seconds == pytest.approx(16 * 2 / 30) and old.stride_at(30) == 2.0 and old.stride_at(None) == 2.0
    new = InputSpec.from_meta({**old.to_meta(), "seconds": 2.0})
    assert new.stride_at(24) == 3.0 and new.span_at(24) == 46 and new.stride_at(5) == 1.0
    assert InputSpec.from_meta(new.to_meta()) == new
    assert old.stride_at(float("nan")) == 2.0 and old.stride_at(0.0) == 2.0  # unknown rate: the step


def test_the_time_one_clip_covers_is_the_spec_seconds_unless_its_frames_need_longer():
    shipped = InputSpec(frames=16, step=2)  # 1.07 s
    for fps in (30, 25, 15, None, float("nan")):
        assert shipped.clip_seconds_at(fps) == pytest.approx(16 * 2 / 30)
    # at 10 fps its 16 frames, at least one frame apart, take 1.6 s: a window that long holds them all
    assert shipped.clip_seconds_at(10) == pytest.approx(1.6) and shipped.span_at(10) == 16
    assert InputSpec(frames=8, step=4).clip_seconds_at(10) == pytest.approx(8 * 4 / 30)  # 10 frames fit in 1.07 s
    assert InputSpec(frames=8, sampling="uniform").clip_seconds_at(10) == pytest.approx(0.8)
