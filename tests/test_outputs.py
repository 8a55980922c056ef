"""What every command does with what already lies where it writes: an existing file is replaced only
with --overwrite, a device or pipe never, and SIGTERM (a scheduler's time limit, `docker stop`) keeps
what was finished as Ctrl-C does. Real files and pipes, real subprocesses for the signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from predict_helpers import write_colour_video
from sifa_cli.engine.results import ResultWriter
from sifa_cli.errors import InputError
from sifa_cli.fileio import atomic_write_path

SIFA = [sys.executable, "-m", "sifa_cli.cli.main"]
ROOT = Path(__file__).resolve().parents[1]


def _invoke(app, *args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture
def clip(tmp_path) -> Path:
    return write_colour_video(tmp_path / "red.mp4", ["red"] * 12)


def _reference_checkpoint(folder: Path) -> Path:
    """A checkpoint as the reference code saves one (for `weights import`)."""
    import torch

    from sifa_cli.models import create_model

    path = folder / "reference.pth"
    if not path.exists():
        model = create_model("sifa_resnet_tiny", num_classes=3, clip_length=8)
        torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def _commands(clip: Path, weights: Path, folder: Path, out_of: dict) -> dict:
    """Each command that writes one file, writing to out_of[kind] (a path with that kind's suffix)."""
    results = folder / "part.jsonl"
    return {
        "visualize --out": ["visualize", clip, "-w", weights, "-o", out_of["mp4"]],
        "visualize --sheet": ["visualize", clip, "-w", weights, "-o", folder / "v.mp4", "--sheet", out_of["png"]],
        "predict --annotate": ["predict", clip, "-w", weights, "--annotate", out_of["mp4"]],
        "export": ["export", weights, "-f", "torchscript", "-o", out_of["pt"]],
        "weights import": ["weights", "import", _reference_checkpoint(folder), "--arch", "sifa_resnet_tiny", "-o",
                           out_of["safetensors"]],
        "merge-results": ["merge-results", out_of["jsonl"], results],
    }


def test_an_existing_file_is_replaced_only_with_overwrite(app, weights, clip, tmp_path):
    assert _invoke(app, "predict", clip, "-w", weights, "-o", tmp_path / "part.jsonl").exit_code == 0
    mine = {kind: tmp_path / f"mine.{kind}" for kind in ("mp4", "png", "pt", "safetensors", "jsonl")}
    for command, args in _commands(clip, weights, tmp_path, mine).items():
        target = next(Path(a) for a in args if isinstance(a, Path) and a.name.startswith("mine."))
        target.write_text("my own work\n")
        refused = _invoke(app, *args)
        assert refused.exit_code == 2, (command, refused.output)
        assert f"{target} already exists; add --overwrite to replace it" in refused.stderr, (command, refused.output)
        assert target.read_text() == "my own work\n", command
        replaced = _invoke(app, *args, "--overwrite")
        assert replaced.exit_code == 0, (command, replaced.output)
        assert target.read_bytes() != b"my own work\n", command
        target.unlink()


def test_evaluate_keeps_an_earlier_report_unless_told(app, weights, tmp_path):
    for colour in ("red", "green"):
        write_colour_video(tmp_path / "data" / colour / "a.mp4", [colour] * 12)
    report = tmp_path / "report"
    assert _invoke(app, "evaluate", tmp_path / "data", "-w", weights, "-o", report).exit_code == 0
    first = (report / "metrics.json").read_text()
    (report / "predictions.csv").write_text("hand-made\n")
    again = _invoke(app, "evaluate", tmp_path / "data", "-w", weights, "-o", report)
    assert again.exit_code == 2 and "already exists; add --overwrite" in again.stderr, again.output
    assert (report / "predictions.csv").read_text() == "hand-made\n" and (report / "metrics.json").read_text() == first
    assert _invoke(app, "evaluate", tmp_path / "data", "-w", weights, "-o", report, "--overwrite").exit_code == 0
    assert (report / "predictions.csv").read_text().startswith("path,label,predicted")


def test_pipes_are_never_replaced_by_files(app, weights, clip, tmp_path):
    pipes = {kind: tmp_path / f"pipe.{kind}" for kind in ("mp4", "png", "pt", "safetensors", "jsonl")}
    for pipe in pipes.values():
        os.mkfifo(pipe)
    assert _invoke(app, "predict", clip, "-w", weights, "-o", tmp_path / "part.jsonl").exit_code == 0
    commands = _commands(clip, weights, tmp_path, pipes)
    commands["predict --output"] = ["predict", clip, "-w", weights, "-o", pipes["jsonl"]]
    for command, args in commands.items():
        result = _invoke(app, *args, "--overwrite")
        assert result.exit_code == 2 and "is a pipe, not a regular file" in result.stderr, (command, result.output)
    assert all(p.is_fifo() for p in pipes.values())


def test_the_last_step_of_every_write_refuses_a_special_file(tmp_path):
    pipe = tmp_path / "late.json"
    with pytest.raises(InputError, match="is a pipe"):
        with atomic_write_path(pipe) as tmp:
            tmp.write_text("{}")
            os.mkfifo(pipe)  # appeared while the file was being written
    assert pipe.is_fifo() and [p.name for p in tmp_path.iterdir()] == ["late.json"]


def test_export_never_writes_over_its_own_checkpoint_or_under_a_misleading_name(app, weights, tmp_path):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(weights.read_bytes())
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:  # the default output name, model.pt, is the input
        same = _invoke(app, "export", checkpoint, "-f", "torchscript", "--overwrite")
    finally:
        os.chdir(cwd)
    assert same.exit_code == 2 and "would overwrite the input" in same.stderr, same.output
    assert checkpoint.read_bytes() == weights.read_bytes()
    wrong = _invoke(app, "export", weights, "-f", "torchscript", "-o", tmp_path / "m.onnx")
    assert wrong.exit_code == 2 and "a .onnx name does not fit --format torchscript" in wrong.stderr, wrong.output
    assert not (tmp_path / "m.onnx").exists()


def test_names_that_look_like_emoji_codes_are_printed_as_they_are(app, tmp_path):
    missing = tmp_path / "x:fire:[b]y.mp4"
    result = _invoke(app, "predict", missing)
    assert result.exit_code == 2 and f"error: {missing}:" in result.stderr, result.output


def _many_videos(folder: Path, count: int = 60) -> Path:
    for i in range(count):
        write_colour_video(folder / f"{i:02d}.mp4", ["red", "green"][i % 2:][:1] * 40, width=96, height=72)
    return folder


def _signal_mid_run(args: list, out: Path, signum: int, scored_some: Callable[[int], bool]) -> tuple[int, str]:
    """Start `sifa predict ARGS -o OUT` on slow settings, send `signum` once `scored_some(pid)` says
    it is scoring; returns (exit code, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    process = subprocess.Popen([*SIFA, "predict", *map(str, args), "--views", "4x3", "--decoders", "1",
                                "--batch-size", "1", "-o", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               # SIGINT at its default in the child, so that Python turns it into
                               # KeyboardInterrupt even when the tests run in the background, where the
                               # shell ignores SIGINT and children inherit that (the run then ended
                               # normally with all its results and exit 0).
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    while not scored_some(process.pid) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before the signal: give it more work"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr


def test_overwrite_replaces_the_old_results_only_when_the_run_ends(weights, tmp_path):
    folder = _many_videos(tmp_path / "many")
    out = tmp_path / "results.jsonl"
    first = _invoke_subprocess_predict(weights, folder / "00.mp4", out)
    assert first.returncode == 0, first.stderr
    old = out.read_text()

    def new_results_written(pid: int) -> bool:  # the hidden file the new results go to until the run ends
        staged = tmp_path / f".results.{pid}.new.jsonl"
        return staged.exists() and staged.read_text().count("\n") >= 1

    code, _ = _signal_mid_run([folder, "-w", weights, "--overwrite"], out, signal.SIGKILL, new_results_written)
    assert code == -signal.SIGKILL and out.read_text() == old  # killed outright: the old file stands
    code, stderr = _signal_mid_run([folder, "-w", weights, "--overwrite"], out, signal.SIGINT, new_results_written)
    assert code == 130, stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert 1 <= len(records) < 60 and out.read_text() != old  # interrupted: what it finished replaces it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many", "results.jsonl"]  # the killed run's leftover too


def _invoke_subprocess_predict(weights: Path, video: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([*SIFA, "predict", str(video), "-w", str(weights), "-o", str(out)], capture_output=True,
                          text=True, timeout=120, env=env)


def test_sigterm_keeps_the_finished_results_as_ctrl_c_does(weights, tmp_path):
    folder = _many_videos(tmp_path / "many")
    out = tmp_path / "results.json"

    def scoring_for_a_while(pid: int) -> bool:
        # The file is "[]" from when scoring starts until ResultWriter.JSON_EVERY records are in:
        # wait for it, then some seconds more.
        if not hasattr(scoring_for_a_while, "since"):
            if not out.exists():
                return False
            scoring_for_a_while.since = time.monotonic()
        return time.monotonic() - scoring_for_a_while.since > 2.5

    code, stderr = _signal_mid_run([folder, "-w", weights], out, signal.SIGTERM, scoring_for_a_while)
    assert code == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "terminated", stderr
    records = json.loads(out.read_text())
    assert 1 <= len(records) < ResultWriter.JSON_EVERY  # none were on disk before the signal
    assert all(r["top"][0]["label"] in ("red", "green") for r in records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many", "results.json"]  # no lock or temporary file


def test_relative_names_with_a_colon_are_files_not_protocols(weights, tmp_path):
    from cli_run import run_sifa

    write_colour_video(tmp_path / "cam1:take2.mp4", ["red"] * 12)
    annotated = run_sifa("predict", "cam1:take2.mp4", "-w", weights, "--annotate", "take2:labelled.mp4", cwd=tmp_path)
    assert annotated.returncode == 0, annotated.stderr
    shown = run_sifa("visualize", "cam1:take2.mp4", "-w", weights, "-o", "take2:final.mp4", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    for name in ("take2:labelled.mp4", "take2:final.mp4"):
        assert (tmp_path / name).stat().st_size > 1000, name


def test_outputs_into_proc_name_the_option_not_a_temporary_file(app, weights, tmp_path):
    write_colour_video(tmp_path / "data" / "red" / "a.mp4", ["red"] * 12)
    for args in (["evaluate", tmp_path / "data", "-w", weights, "-o", "/proc/sifa-eval"],
                 ["export", weights, "-f", "torchscript", "-o", "/proc/sifa.pt"]):
        result = _invoke(app, *args)
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"error: --out {args[-1]}: /proc does not accept new files"), result.stderr
