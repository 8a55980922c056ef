"""The prediction engine on real videos with a tiny SIFA-Net trained to name colours."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from predict_helpers import CATEGORIES, colour_checkpoint, write_colour_video
from sifa_cli.data.transforms import evaluation_views
from sifa_cli.engine.predict import Predictor, _TimelineJob
from sifa_cli.engine.records import Window, merge_segments, plan_windows
from sifa_cli.engine.results import ResultWriter, csv_rows, read_finished, result_record
from sifa_cli.errors import InputError, ModelError
from sifa_cli.weights.checkpoint import load_model


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return load_model(colour_checkpoint(tmp_path_factory.mktemp("ckpt")), "cpu")


@pytest.fixture
def predictor(loaded):
    model, meta = loaded
    return Predictor(model, meta, batch_size=4, top_k=3)


@pytest.fixture(scope="module")
def colour_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return {name: write_colour_video(folder / f"{name}.mp4", [name] * 20) for name in CATEGORIES}


def test_predicts_each_colour(predictor, colour_videos):
    order = ["blue", "red", "green", "red"]
    results = list(predictor.predict([colour_videos[c] for c in order]))
    assert [r.path for r in results] == [str(colour_videos[c]) for c in order]
    assert [r.top[0][0] for r in results] == order
    for result in results:
        scores = [score for _, score in result.top]
        assert scores == sorted(scores, reverse=True) and 0.99 < sum(scores) <= 1.0 + 1e-5
        assert result.inputs == 1 and result.ok
    assert predictor.stats.videos_ok == 4 and predictor.stats.inputs == 4


def test_batching_across_videos_keeps_scores_apart(loaded, colour_videos):
    model, meta = loaded
    paths = [colour_videos[c] for c in ["red", "green", "blue", "green", "red"]]
    one_at_a_time = list(Predictor(model, meta, batch_size=1, views="2x3").predict(paths))
    shared = list(Predictor(model, meta, batch_size=7, views="2x3").predict(paths))
    for a, b in zip(one_at_a_time, shared):
        assert a.inputs == b.inputs == 6
        assert [label for label, _ in a.top] == [label for label, _ in b.top]
        assert np.allclose([s for _, s in a.top], [s for _, s in b.top], atol=1e-5)


def test_multi_view_averages_views(loaded, colour_videos):
    model, meta = loaded
    (single,) = Predictor(model, meta, views="1x1").predict([colour_videos["green"]])
    (many,) = Predictor(model, meta, views="3x3").predict([colour_videos["green"]])
    assert single.inputs == 1 and many.inputs == 9
    assert many.top[0][0] == "green"
    assert many.top[0][1] != pytest.approx(single.top[0][1], abs=1e-7)  # really other views


def test_failures_are_recorded_and_the_batch_goes_on(predictor, colour_videos, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.avi"
    text.write_text("not a video")
    paths = [empty, colour_videos["red"], tmp_path / "missing.mp4", text, colour_videos["blue"]]
    results = list(predictor.predict(paths))
    assert [r.ok for r in results] == [False, True, False, False, True]
    assert "empty" in results[0].error and "no such file" in results[2].error and "not a video" in results[3].error
    assert [r.top[0][0] for r in results if r.ok] == ["red", "blue"]
    assert predictor.stats.videos_failed == 3 and predictor.stats.videos_ok == 2


def test_short_video_is_spread_and_says_so(predictor, tmp_path):
    path = write_colour_video(tmp_path / "short.mp4", ["blue"] * 3)
    (result,) = predictor.predict([path])
    assert result.top[0][0] == "blue"
    assert result.short is not None and result.short.frames == 3 and result.short.distinct == 3
    assert any("3 frames, fewer than the 8" in note and "spread evenly" in note for note in result.notes)
    assert not any("loop" in note for note in result.notes)


def test_bf16_agrees_with_fp32(loaded, colour_videos):
    model, meta = loaded
    fp32 = list(Predictor(model, meta).predict(colour_videos.values()))
    bf16 = list(Predictor(model, meta, precision="bf16").predict(colour_videos.values()))
    assert [r.top[0][0] for r in fp32] == [r.top[0][0] for r in bf16]


def test_categories_must_match_the_model(loaded, colour_videos):
    model, meta = loaded
    with pytest.raises(ModelError, match="2 categories"):
        list(Predictor(model, {**meta, "categories": ["a", "b"]}).predict([colour_videos["red"]]))


def test_bad_settings_are_refused(loaded):
    model, meta = loaded
    for kwargs in ({"batch_size": 0}, {"top_k": 0}, {"views": "2x2"}, {"precision": "fp8"}):
        with pytest.raises(InputError):
            Predictor(model, meta, **kwargs)


def test_plan_windows():
    assert plan_windows(10.0, 2.0, 1.0) == [(float(k), float(k + 2)) for k in range(9)]
    assert plan_windows(10.0, 3.0, 2.0) == [(0, 3), (2, 5), (4, 7), (6, 9), (7.0, 10.0)]  # tail aligned
    assert plan_windows(1.5, 2.0, 1.0) == [(0.0, 1.5)]
    with pytest.raises(InputError):
        plan_windows(10.0, 0.0, 1.0)


def test_merge_segments_partitions_the_timeline():
    labels = ["a", "a", "b", "b", "b", "a"]
    windows = [Window(k * 1.0, k * 1.0 + 2.0, [(label, 0.5 + k / 100)]) for k, label in enumerate(labels)]
    segments = merge_segments(windows)
    assert [(s.label, s.windows) for s in segments] == [("a", 2), ("b", 3), ("a", 1)]
    # boundaries halfway between the centres of the neighbouring windows (2.0|3.0 and 5.0|6.0)
    assert [(s.start, s.end) for s in segments] == [(0.0, 2.5), (2.5, 5.5), (5.5, 7.0)]
    assert segments[1].score == pytest.approx(np.mean([0.52, 0.53, 0.54]))
    assert merge_segments([]) == []


def test_timeline_finds_the_change(predictor, tmp_path):
    # 8 s at 10 fps: red for the first 4 s, blue after.
    path = write_colour_video(tmp_path / "long.mp4", ["red"] * 40 + ["blue"] * 40, fps=10)
    planned = []
    (result,) = predictor.timeline([path], window=1.0, stride=0.5, progress=lambda p, d: planned.append((p, d)))
    assert result.duration == pytest.approx(8.0)
    starts = [w.start for w in result.windows]
    assert starts == pytest.approx([k * 0.5 for k in range(15)])
    assert all(w.end == pytest.approx(w.start + 1.0) for w in result.windows)
    for window in result.windows:
        if window.end <= 4.0:
            assert window.top[0][0] == "red", window
        elif window.start >= 4.0:
            assert window.top[0][0] == "blue", window
    assert [s.label for s in result.segments] == ["red", "blue"]
    assert result.segments[0].start == 0.0 and result.segments[-1].end == pytest.approx(8.0)
    assert abs(result.segments[0].end - 4.0) <= 0.25 + 1e-6
    assert sum(s.windows for s in result.segments) == 15
    assert sum(p for p, _ in planned) == 15 and sum(d for _, d in planned) == 15
    assert result.inputs == 15


def test_windows_on_the_frame_grid_get_every_frame_of_float32_frame_times(predictor, tmp_path):
    """OpenCV's vtest.avi (10 fps) reports frame times as float32: 33.6 s is 33.59999847. With a
    fixed 1e-6 s tolerance, 11 of its 99 windows of 1.6 s held 15 frames (and a note said so) and 12
    held 17."""
    job = _TimelineJob(predictor, tmp_path / "v.avi", window=None, stride=None)
    job._times = (np.arange(795) / 10).astype(np.float32).astype(np.float64)
    job.fps = 10.0
    counts = {stop - first for first, stop in (job._frame_span(s, e) for s, e in plan_windows(79.5, 1.6, 0.8))}
    assert counts == {16}


def test_timeline_reads_the_file_once_forward_and_gives_each_window_its_frames(predictor, tmp_path, monkeypatch):
    from sifa_cli.data.decode import Video

    # Windows of 1 s every 0.3 s sample every 2nd frame (step 2 in the test spec below), so
    # consecutive windows want frames of different parity: read one by one, most windows would
    # send the decoder back behind where it already was.
    path = write_colour_video(tmp_path / "long.mp4", ["red", "blue", "green", "red"] * 15, fps=10)
    predictor.spec = dataclasses.replace(predictor.spec, step=2)
    separately = {}
    with Video(path) as video:
        job = _TimelineJob(predictor, path, window=1.0, stride=0.3)
        job.plan(video)
        for start, end in job._planned:
            indices, _ = job._window_indices(video.num_frames, *job._frame_span(start, end))
            separately[start] = video.read(indices.reshape(-1))
    reads: list[list[int]] = []
    original_read = Video.read

    def recording_read(self, indices):
        reads.append(np.asarray(indices).reshape(-1).tolist())
        return original_read(self, indices)

    monkeypatch.setattr(Video, "read", recording_read)
    with Video(path) as video:
        job = _TimelineJob(predictor, path, window=1.0, stride=0.3)
        job.plan(video)
        clips = list(job.inputs(video))
    read_order = [index for call in reads for index in call]
    assert read_order == sorted(set(read_order))  # every frame once, always forward
    assert len(clips) == len(job._planned) == len(separately) >= 15
    spec = predictor.spec
    for (start, _), clip in zip(job._planned, clips):
        expected = evaluation_views(separately[start], spec.size, spec.resize, 1, spec.mean, spec.std)[0]
        assert torch.equal(clip, expected)


def test_a_cpu_timeline_leaves_a_core_to_the_decoder_and_then_restores_the_threads(predictor, tmp_path):
    path = write_colour_video(tmp_path / "two.mp4", ["red"] * 12 + ["green"] * 12, fps=8.0)
    suite_threads = torch.get_num_threads()  # conftest gives each xdist worker one thread
    torch.set_num_threads(os.cpu_count() or 1)  # what a plain `sifa` process starts with
    try:
        before = torch.get_num_threads()
        during = []
        runs = predictor.timeline([path, path], window=1.0, stride=0.5)
        for result in runs:
            assert result.ok, result.error
            during.append(torch.get_num_threads())
        assert during == [max(1, before - 1)] * 2
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(suite_threads)


def test_timeline_on_a_file_cut_short_mid_way(predictor, tmp_path):
    import cv2

    # A lossless AVI cut in half: its header announces 120 frames, 59 are there. decord usually
    # fails on the broken last one part-way through the windows and OpenCV takes over with the
    # real count (not always: decord's handling of the broken slice varies from run to run).
    full = tmp_path / "full.avi"
    writer = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"FFV1"), 10, (96, 64))
    for frame in np.random.default_rng(0).integers(0, 255, (120, 64, 96, 3), np.uint8):
        writer.write(frame)
    writer.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    (result,) = predictor.timeline([cut], window=1.0, stride=0.5)
    assert result.ok, result.error
    assert len(result.windows) == result.inputs >= 10


def test_timeline_windows_are_planned_again_when_the_frame_count_drops(predictor, tmp_path):
    from sifa_cli.data.decode import Video

    # What Video.read does when a file holds fewer frames than it said (FrameCountError): it
    # lowers num_frames. Here that happens between two windows, deterministically.
    path = write_colour_video(tmp_path / "long.mp4", ["red", "blue"] * 30, fps=10)
    with Video(path) as video:
        job = _TimelineJob(predictor, path, window=1.0, stride=0.5)
        job.plan(video)
        clips = []
        for clip in job.inputs(video):
            clips.append(clip)
            if len(clips) == 3:
                video._backend.num_frames = 35  # the windows after this one end at frame 35
        assert video.num_frames == 35
    starts = [start for start, _ in job.window_times]
    assert len(clips) == len(starts) and starts[:3] == [0.0, 0.5, 1.0]
    assert max(starts) < 3.5  # windows starting past the last frame are left out
    assert len(starts) == sum(1 for start, _ in job._planned if start * 10 < 35)


def test_several_decoders_give_the_same_results_in_input_order(loaded, tmp_path):
    model, meta = loaded
    # The first video is many timeline windows, the next ones one or two: with 3 decoders the short
    # ones finish first and wait for it, and a file that fails sits between them.
    long_one = write_colour_video(tmp_path / "long.mp4", ["red"] * 60 + ["blue"] * 60, fps=10)
    shorts = [write_colour_video(tmp_path / f"{c}.mp4", [c] * 12, fps=10) for c in ("green", "blue", "red")]
    paths = [long_one, shorts[0], tmp_path / "missing.mp4", shorts[1], shorts[2]]
    runs = {}
    for decoders in (1, 3):
        predictor = Predictor(model, meta, batch_size=3, decoders=decoders)
        assert predictor.decoders == decoders
        runs[decoders] = list(predictor.timeline(paths, window=1.0, stride=0.25))
    assert [r.path for r in runs[3]] == [str(p) for p in paths] == [r.path for r in runs[1]]
    assert [r.ok for r in runs[3]] == [True, True, False, True, True]
    for one, three in zip(runs[1], runs[3]):
        assert one.error == three.error
        if one.ok:
            assert [w.start for w in one.windows] == [w.start for w in three.windows]
            for a, b in zip(one.windows, three.windows):
                assert [label for label, _ in a.top] == [label for label, _ in b.top]
                assert np.allclose([s for _, s in a.top], [s for _, s in b.top], atol=1e-5)
    assert [s.label for s in runs[3][0].segments] == ["red", "blue"] and len(runs[3][0].windows) == 45


def test_decoders_must_be_positive(loaded):
    model, meta = loaded
    with pytest.raises(InputError, match="--decoders"):
        Predictor(model, meta, decoders=0)


def test_timeline_on_variable_frame_rate_uses_real_times(predictor, tmp_path):
    from conftest import make_variable_frame_rate

    # 40 red frames lasting 0.15 s each (6 s), then 40 blue frames of 0.05 s (2 s): the change is
    # at 6 s although it is the middle frame.
    path = write_colour_video(tmp_path / "vfr.mp4", ["red"] * 40 + ["blue"] * 40, fps=10)
    make_variable_frame_rate(path, [1.5] * 40 + [0.5] * 40)
    (result,) = predictor.timeline([path], window=1.0, stride=1.0)
    assert result.duration == pytest.approx(8.0, abs=0.06)
    labels = [(w.start, w.top[0][0]) for w in result.windows]
    assert all(label == "red" for start, label in labels if start + 1.0 <= 6.0)
    assert all(label == "blue" for start, label in labels if start >= 6.0)
    assert abs(result.segments[0].end - 6.0) <= 0.5 + 1e-6


def test_clip_duration_counts_held_frames_and_says_they_are_sparse(predictor, colour_videos, tmp_path):
    from crafted_media import mjpeg_avi

    # 20 frames, each held for 4 more frame times by empty AVI chunks: 10 s at a nominal 10 fps.
    path = mjpeg_avi(tmp_path / "held.avi", 64, 48, frames=20, fps=10, held=4)
    (result,) = predictor.predict([path])
    assert result.ok and result.duration == pytest.approx(10.0, abs=0.01)
    assert any("only 20 distinct frames over 10.0 s, though the file declares 10 fps (it holds each frame for "
               "several frame times): clips were sampled at the 2 fps it really shows" in note for note in result.notes)
    assert not any("(the file holds frames)" in note for note in result.notes)  # the old, garbled note
    # An ordinary constant-rate file: the same duration as before and no such note.
    (plain,) = predictor.predict([colour_videos["red"]])
    assert plain.duration == pytest.approx(2.0, abs=0.01)  # 20 frames at 10 fps
    assert not any("distinct frames" in note for note in plain.notes)


def test_records_and_resuming_from_files(predictor, colour_videos, tmp_path):
    results = list(predictor.predict([colour_videos["red"], tmp_path / "gone.mp4"]))
    records = [result_record(r, "1x1") for r in results]
    assert set(records[0]) >= {"path", "top", "views", "clips"} and records[1] == {
        "path": str(tmp_path / "gone.mp4"), "error": results[1].error}
    assert [row["kind"] for row in csv_rows(records[0])] == ["top"] * 3
    for fmt in ("jsonl", "json", "csv"):
        out = tmp_path / f"out.{fmt}"
        writer = ResultWriter(fmt, path=out)
        for record in records:
            writer.write(record)
        writer.close()
        finished = read_finished(out, fmt)
        assert [r["path"] for r in finished] == [str(colour_videos["red"])]  # the failure gets retried
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records


def test_slow_precision_note_only_for_emulated_cpu_arithmetic():
    import torch

    from sifa_cli.engine.device import slow_precision_note

    assert slow_precision_note(torch.device("cpu"), "fp32") is None
    assert "fp16" in slow_precision_note(torch.device("cpu"), "fp16")
    native_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert (slow_precision_note(torch.device("cpu"), "bf16") is None) == native_bf16
