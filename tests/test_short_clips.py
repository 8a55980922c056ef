"""The clips people actually have (issue 20): short and low-frame-rate videos sampled by time, not
refused; refusals that say why and what to do, with the scan report kept; still images refused.
Real generated videos, real decoding, the CLI as real subprocesses."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cli_run import one_error, run_sifa
from conftest import moving_square_frames, write_motion_dataset, write_video
from predict_helpers import colour_checkpoint, write_colour_video
from sifa_cli.data.dataset import prepare_dataset
from sifa_cli.errors import InputError
from sifa_cli.weights.checkpoint import load_checkpoint, save_checkpoint

TINY = ["--model", "sifa_resnet_tiny", "--frames", "8", "--size", "64", "--workers", "0", "--scan-workers", "2"]
FIXTURES = Path(__file__).parent / "fixtures"


def write_mixed_rate_dataset(root: Path, seconds: float = 1.5) -> Path:
    """left/ and right/ clips of `seconds` at 10, 15, 24 and 30 fps, and one 0.6 s clip at 10 fps each."""
    for index, direction in enumerate(("left", "right")):
        (root / direction).mkdir(parents=True)
        for fps in (10, 15, 24, 30):
            for i in range(2):
                rng = np.random.default_rng([index, fps, i])
                write_video(root / direction / f"{fps}fps_{i}.mp4",
                            moving_square_frames(direction, rng, round(seconds * fps), 64), fps=fps)
        write_video(root / direction / "short.mp4",
                    moving_square_frames(direction, np.random.default_rng([index, 99]), 6, 64), fps=10)
    return root


@pytest.mark.slow
def test_finetune_without_out_or_step_trains_on_short_clips_at_any_frame_rate(tmp_path):
    """8 frames at step 4 span 29 frames at 30 fps (1.07 s): the old scan refused every clip below
    that at any frame rate; now each is sampled over the same time, at least one frame apart."""
    data = write_mixed_rate_dataset(tmp_path / "data")
    (tmp_path / "runs" / "data").mkdir(parents=True)
    (tmp_path / "runs" / "data" / "notes.txt").write_text("an earlier run's folder")
    result = run_sifa("finetune", data, *TINY, "--step", "4", "--epochs", "1", "--batch-size", "6",
                      "--val-fraction", "0.2", cwd=tmp_path, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "data-2"  # runs/<data folder name>, numbered because runs/data exists
    assert f"run folder: {run}" in result.stderr
    assert (run / "best.safetensors").is_file() and (run / "scan_report.csv").is_file()
    assert "no video skipped" in result.stderr
    # the clip-length distribution and what the run chose for each frame rate
    assert "videos: 18 of 1.50 s (median; 0.60 to 1.50 s) at " in result.stderr
    assert "clips: 8 frames over 1.07 s, at 10 fps every 1.33 frames (1.00 s); " in result.stderr
    assert "at 15 fps every 2 frames (1.00 s); at 24 fps every 3.2 frames (0.96 s); at 30 fps every 4 frames" in result.stderr
    assert ("2 of 18 videos are shorter than a clip: each of their clips spreads its 8 frames evenly over the "
            "whole video") in result.stderr
    assert "loop" not in result.stderr
    _, meta = load_checkpoint(run / "best.safetensors")
    assert meta["input"]["seconds"] == pytest.approx(8 * 4 / 30)
    # the shortest time a training clip covered, from all but the shortest 5 %: a 0.6 s video
    # (if one is among the training videos) or the 1.07 s of a full clip, rounded down
    assert meta["input"]["min_seconds"] in (0.6, 1.06)
    assert (f"; all but the shortest 5 % of training clips cover {meta['input']['min_seconds']:.2f} s or more (the "
            "model records it: predict notes shorter clips)") in result.stderr


def test_a_refused_run_counts_its_reasons_and_keeps_the_report(tmp_path):
    data = write_motion_dataset(tmp_path / "data", per_class=3, num_frames=10, size=32, fps=10)
    (data / "left" / "broken.mp4").write_bytes(b"not a video at all")
    run = tmp_path / "run"
    result = run_sifa("finetune", data, *TINY, "--min-frames", "31", "--out", run)
    line = one_error(result, codes=(2,))
    assert ("need videos of at least 2 classes to train a classifier, found 0 usable classes; 7 of 7 videos "
            "were left out: 6 videos with fewer frames than --min-frames asks for (e.g. 000.mp4: only 10 "
            "frames; --min-frames asks for at least 31): lower --min-frames or leave it out") in line
    assert "; 1 unreadable (e.g. " in line and "broken.mp4" in line
    assert f"(every video left out, and why: {run / 'scan_report.csv'})" in line
    assert "videos were unusable)" not in line  # the old message, without a reason
    rows = list(csv.DictReader((run / "scan_report.csv").open()))
    assert len(rows) == 7 and all(row["problem"] for row in rows)
    assert sorted(p.name for p in run.iterdir()) == ["scan_report.csv"]
    # The same folder takes the next try (it holds only the report): this one fails later, at the
    # starting weights, after naming the report in its log; the report it named stays.
    again = run_sifa("finetune", data, *TINY, "--init", "imagenet", "--out", run,
                     env={"SIFA_OFFLINE": "1", "SIFA_HOME": str(tmp_path / "home")})
    assert "no ImageNet initialisation is registered for sifa_resnet_tiny" in one_error(again)
    assert f"see {run / 'scan_report.csv'}" in again.stderr
    assert sorted(p.name for p in run.iterdir()) == ["scan_report.csv"]
    assert "broken.mp4" in (run / "scan_report.csv").read_text()


def test_a_train_folder_among_class_folders_is_a_class(tmp_path):
    root = write_motion_dataset(tmp_path / "data", per_class=2, directions=("left", "right"), num_frames=6, size=32)
    write_motion_dataset(tmp_path / "more", per_class=2, directions=("up",), num_frames=6, size=32)
    (tmp_path / "more" / "up").rename(root / "train")  # a class called "train"
    splits = prepare_dataset(root, val_fraction=0.5, scan_workers=2)
    assert splits.categories == ["left", "right", "train"]
    only_train = tmp_path / "only"
    (only_train / "train").mkdir(parents=True)
    (root / "left").rename(only_train / "train" / "left")
    with pytest.raises(InputError, match="holds a train/ folder but no val/ folder beside it: add .*/val/<class>/ "
                                         "videos for validation, pass --val DIR, or give .*train itself"):
        prepare_dataset(only_train, scan_workers=2)


def test_a_still_image_is_refused_with_a_reason(tmp_path, weights):
    result = run_sifa("predict", FIXTURES / "coffee.jpg", "--weights", weights)
    line = one_error(result, codes=(1,))
    assert "coffee.jpg: a single frame (a still image): it shows no motion to recognise" in line
    assert "looped" not in result.stderr + result.stdout


def _colour_weights_with_step(folder: Path, step: int) -> Path:
    """The colour model with clips of 8 frames at `step` (8 x step / 30 s)."""
    state, meta = load_checkpoint(colour_checkpoint(folder))
    meta["input"] = {**meta["input"], "step": step}
    import torch
    from sifa_cli.models import create_model

    model = create_model(meta["arch"], num_classes=len(meta["categories"]), **meta["arch_kwargs"])
    model.load_state_dict(state)
    with torch.no_grad():
        return save_checkpoint(folder / f"step{step}.safetensors", model.eval(), meta)


@pytest.fixture(scope="module")
def step2_weights(tmp_path_factory) -> Path:
    """The colour model with clips of 8 frames at step 2: 0.53 s, 15 frames at 30 fps."""
    return _colour_weights_with_step(tmp_path_factory.mktemp("step2"), 2)


def _timeline_json(*args) -> tuple[dict, str]:
    result = run_sifa("predict", *args, "--timeline", "--no-cuts", "--format", "json", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(result.stdout)
    return record, result.stderr + result.stdout


def _window_lengths(record: dict) -> set[float]:
    return {round(w["end"] - w["start"], 2) for w in record["windows"]}


def test_timeline_windows_default_to_the_models_clip_span_on_10_fps_footage(tmp_path):
    """Clips of 8 frames at step 4 cover 1.07 s, which holds 10 frames at 10 fps (every 1.33rd):
    each window is that span, one every half of it, and needs no note (the old default, 2 s
    windows every 1 s, was not the model's span)."""
    weights = _colour_weights_with_step(tmp_path, 4)
    video = write_colour_video(tmp_path / "ten.mp4", ["red"] * 30 + ["blue"] * 30, fps=10)
    record, printed = _timeline_json(video, "--weights", weights)
    assert record["window"] == pytest.approx(8 * 4 / 30, abs=1e-6)
    assert record["stride"] == pytest.approx(8 * 4 / 30 / 2, abs=1e-6)
    assert _window_lengths(record) == {1.07} and len(record["windows"]) == 11
    assert record["settings"]["timeline"]["window"] is None  # left to the model, as recorded for a re-run
    assert "notes" not in record and "note" not in printed and "loop" not in printed
    assert [s["label"] for s in record["segments"]] == ["red", "blue"]


def test_timeline_windows_on_footage_too_slow_for_the_clip_hold_all_its_frames(tmp_path, step2_weights):
    """8 frames at step 2 cover 0.53 s, 5 frames at 10 fps: a window that short would spread the clip
    over 5 frames (the note says so); the default window is the 0.8 s its 8 frames take."""
    video = write_colour_video(tmp_path / "ten.mp4", ["red"] * 20 + ["blue"] * 20, fps=10)
    record, printed = _timeline_json(video, "--weights", step2_weights)
    assert record["window"] == pytest.approx(0.8) and record["stride"] == pytest.approx(0.4)
    assert _window_lengths(record) == {0.8}
    assert "notes" not in record and "note" not in printed and "loop" not in printed
    short, printed = _timeline_json(video, "--weights", step2_weights, "--window", "0.5333", "--stride", "0.4")
    assert "hold fewer frames than a 0.53 s clip spans" in printed and "loop" not in printed


@pytest.mark.parametrize("weights, frames, window", [
    (["--weights", "sifa_resnet_small_camera"], 40, 1.6),  # the case: 16 frames over 1.07 s need 1.6 s here
    ([], 80, 3.2),  # the shipped default: 12 frames over 3.2 s, 32 frames a window at 10 fps
])
def test_shipped_models_timeline_on_10_fps_footage_has_no_note(tmp_path, weights, frames, window):
    """The earlier default and the default on 10 fps footage: four windows, each long enough for its frames."""
    # 160x128: the default 48x40 version of this video is read by OpenCV after decord fails, with a note
    video = write_colour_video(tmp_path / "ten.mp4", ["red"] * frames, fps=10, width=160, height=128)
    record, printed = _timeline_json(video, *weights)
    assert record["window"] == pytest.approx(window) and record["stride"] == pytest.approx(window / 2)
    assert _window_lengths(record) == {window} and len(record["windows"]) == 4
    assert "notes" not in record and "note" not in printed and "loop" not in printed


def test_timeline_on_10_fps_footage_needs_no_looping(tmp_path, step2_weights):
    """A 1 s window of 10 fps video holds 10 frames: the old sampler wanted 15 and looped them."""
    video = write_colour_video(tmp_path / "ten.mp4", ["red"] * 20 + ["blue"] * 20, fps=10)
    result = run_sifa("predict", video, "--weights", step2_weights, "--timeline", "--window", "1.0",
                      "--stride", "0.5", "--format", "json")
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(result.stdout)
    assert "notes" not in record and "note" not in result.stderr
    assert record["segments"][0]["label"] == "red" and record["segments"][-1]["label"] == "blue"


def test_short_videos_get_one_summarised_note_in_predict_and_evaluate(tmp_path, step2_weights):
    for colour in ("red", "blue"):
        for i in range(3):
            write_colour_video(tmp_path / "data" / colour / f"{i}.mp4", [colour] * 5, fps=10)
    predicted = run_sifa("predict", tmp_path / "data", "--weights", step2_weights, "--top-k", "1")
    assert predicted.returncode == 0, predicted.stderr
    notes = [line for line in (predicted.stderr + predicted.stdout).splitlines() if "fewer frames" in line]
    assert len(notes) == 1, predicted.stderr
    assert ("6 videos hold fewer frames than a 0.53 s clip spans (as few as 5 of 8, e.g. " in notes[0]
            and "each such clip's 8 frames were spread evenly over them (5 distinct at the fewest)" in notes[0])
    assert "looped" not in predicted.stderr + predicted.stdout
    evaluated = run_sifa("evaluate", tmp_path / "data", "--weights", step2_weights, "--out", tmp_path / "eval")
    assert evaluated.returncode == 0, evaluated.stderr
    notes = [line for line in evaluated.stderr.splitlines() if "fewer frames" in line]
    assert len(notes) == 1 and notes[0].startswith("note: 6 videos hold fewer frames than a 0.53 s clip")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["top1"] == 1.0 and metrics["short_clips"].startswith("6 videos hold fewer frames")


def test_weights_info_does_not_credit_the_papers_authors(tmp_path):
    from sifa_cli.resources import shipped_dir

    tree = Path(__file__).resolve().parents[1] / "weights"
    if shipped_dir().resolve() != tree:  # an editable install of another checkout maps sifa_cli.shipped there
        pytest.skip(f"sifa_cli.shipped resolves to {shipped_dir()}, not this tree's weights/")
    result = run_sifa("weights", "info", "sifa_resnet_small_camera", env={"SIFA_HOME": str(tmp_path / "home")})
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "the sifa authors" not in text  # read as the SIFA paper's authors, who released no weights
    assert "not the authors of the SIFA paper" in text.replace("│ ", "").replace(" │", "")


def _damaged_copy(source: Path, target: Path) -> Path:
    """`source` with bytes flipped in the middle of its stream: FFmpeg decodes it, complaining
    on file descriptor 2 ("[mpeg4 @ 0x...] ac-tex damaged ...")."""
    data = bytearray(source.read_bytes())
    for i in np.random.default_rng(0).integers(len(data) // 4, len(data) * 3 // 4, 60):
        data[i] ^= 0xFF
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(bytes(data))
    return target


FFMPEG_LINE = "@ 0x"  # FFmpeg's own prefix, "[mpeg4 @ 0x55d0...]"


def test_ffmpeg_lines_stay_off_the_terminal_with_annotate(tmp_path, weights):
    from conftest import pattern_frames

    clip = write_video(tmp_path / "clean.mp4", pattern_frames(40, 128, 96), fps=25)
    damaged = _damaged_copy(clip, tmp_path / "damaged.mp4")
    result = run_sifa("predict", damaged, "--weights", weights, "--annotate", tmp_path / "labelled.mp4")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "labelled.mp4").is_file()
    assert FFMPEG_LINE not in result.stderr + result.stdout


@pytest.mark.slow
def test_ffmpeg_lines_stay_off_the_terminal_in_training(tmp_path):
    data = write_motion_dataset(tmp_path / "data", per_class=3, num_frames=24, size=64)
    for direction in ("left", "right"):
        for i in range(2):
            _damaged_copy(data / direction / f"{i:03d}.mp4", data / direction / f"damaged_{i}.mp4")
    result = run_sifa("finetune", data, *TINY[:-4], "--workers", "1", "--epochs", "1", "--batch-size", "4",
                      "--out", tmp_path / "run", timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert FFMPEG_LINE not in result.stderr + result.stdout


def test_the_shortest_clip_time_a_model_learns_from_is_that_of_all_but_the_shortest_clips():
    from sifa_cli.data.dataset import Sample, shortest_clip_time
    from sifa_cli.data.spec import InputSpec

    spec = InputSpec(frames=8, step=4)  # 1.07 s
    # 19 videos longer than a clip (they give 1.07 s clips) and one of 0.3 s: it is the shortest 5 %
    samples = [Sample(f"{i}.mp4", "a", 60, 30.0) for i in range(19)] + [Sample("short.mp4", "a", 9, 30.0)]
    assert shortest_clip_time(samples, spec) == 0.3
    assert shortest_clip_time(samples[:19], spec) == 1.06  # 32 / 30 s, rounded down
    assert shortest_clip_time(samples[:19] * 2 + samples[19:], spec) == 1.06  # one short video in 39
    assert shortest_clip_time([Sample("x.mp4", "a", 60, 0.0)], spec) is None  # no frame rate known
    assert "min_seconds" not in spec.to_meta()  # unknown: left out of the checkpoint, as before it existed
    assert InputSpec.from_meta({**spec.to_meta(), "min_seconds": 0.66}).min_seconds == 0.66
    # what predict, visualize and live windows ask before a note: no repeated frame, at least min_seconds
    known = InputSpec(frames=8, step=4, min_seconds=0.3)
    assert known.covers_enough(9, 8, 30.0)  # 0.3 s, 8 distinct
    assert not known.covers_enough(8, 8, 30.0)  # 0.27 s
    assert not known.covers_enough(20, 7, 30.0)  # a frame repeats
    assert not known.covers_enough(20, 8, None) and not spec.covers_enough(20, 8, 30.0)  # rate, min unknown


def test_short_videos_as_long_as_the_models_training_clips_get_no_note(tmp_path, step2_weights):
    """A model that records how short its training clips were (`min_seconds`, which finetune
    writes) gets the note only for clips shorter than that, or with repeated frames."""
    state, meta = load_checkpoint(step2_weights)
    meta["input"] = {**meta["input"], "min_seconds": 0.3}  # clips of 8 frames over 0.53 s; it saw 0.3 s ones
    weights = save_checkpoint(tmp_path / "min.safetensors", state, meta)
    write_colour_video(tmp_path / "ok" / "red.mp4", ["red"] * 12, fps=30)  # 0.4 s, 12 frames: 8 distinct
    predicted = run_sifa("predict", tmp_path / "ok", "--weights", weights, "--format", "json")
    assert predicted.returncode == 0, predicted.stderr
    (record,) = json.loads(predicted.stdout)
    assert "notes" not in record and "note" not in predicted.stderr
    assert record["top"][0]["label"] == "red"
    # the same video read by the model that records nothing: the note, as before
    unknown = run_sifa("predict", tmp_path / "ok", "--weights", step2_weights)
    assert "1 video holds fewer frames than a 0.53 s clip spans" in unknown.stderr
    assert "the model saw less motion than in a full clip" in unknown.stderr
    write_colour_video(tmp_path / "short" / "blue.mp4", ["blue"] * 6, fps=30)  # 0.2 s, 6 frames
    short = run_sifa("predict", tmp_path / "short", "--weights", weights)
    assert short.returncode == 0, short.stderr
    assert ("1 video holds fewer frames than a 0.53 s clip spans (as few as 6 of 15, e.g. " in short.stderr
            and "(6 distinct at the fewest); some frames repeat; the shortest covers 0.20 s, less than the 0.30 s "
                "the model's training clips covered" in short.stderr), short.stderr
