"""Clip sampling: dense clips, uniform segments, multi-view positions, short videos."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import pattern_frames

from sifa_cli.data.decode import Video, read_sampled
from sifa_cli.data.sampling import Views, dense_span, parse_views, sample_clips
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


def test_short_range_is_looped_or_padded_and_says_so():
    looped = sample_clips(8, 1, "dense", 1, 10, 15)
    assert looped.indices.tolist() == [[10, 11, 12, 13, 14, 10, 11, 12]] and looped.short
    padded = sample_clips(8, 1, "dense", 1, 10, 15, short_policy="pad")
    assert padded.indices.tolist() == [[10, 11, 12, 13, 14, 14, 14, 14]] and padded.short
    stepped = sample_clips(4, 3, "dense", 1, 0, 6)  # needs 10 frames, has 6
    assert stepped.indices.tolist() == [[0, 3, 0, 3]] and stepped.short


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


def test_short_video_loops_on_real_frames(make_video):
    source = pattern_frames(10)
    path = make_video("short.mkv", frames=source, fourcc="FFV1")
    with Video(path) as video:
        sampled = sample_clips(16, 1, "dense", 1, 0, video.num_frames)
        frames = video.read(sampled.indices[0])
    assert sampled.short
    np.testing.assert_array_equal(frames, source[list(range(10)) + list(range(6))])
