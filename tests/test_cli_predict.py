"""`sifa predict` through Typer's CliRunner and as a real subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from predict_helpers import write_colour_video
from sifa_cli.models import create_model
from sifa_cli.weights.checkpoint import save_checkpoint
from sifa_cli.weights.manifest import load_registry

WIDE = {"COLUMNS": "200"}


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def videos(tmp_path) -> Path:
    folder = tmp_path / "videos"
    write_colour_video(folder / "red.mp4", ["red"] * 20)
    write_colour_video(folder / "nested" / "blue.avi", ["blue"] * 20)
    (folder / "notes.txt").write_text("not a video, and not picked up by folder search")
    return folder


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_table_for_a_folder(runner, app, weights, videos):
    result = runner.invoke(app, ["predict", str(videos), "-w", str(weights), "-k", "2"], env=WIDE)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if ".mp4" in line or ".avi" in line}
    # paths relative to the folder they share, which the title names
    assert f"videos in {videos}" in result.stdout
    assert "red" in rows["red.mp4"].split("│")[2]
    assert "blue" in rows[str(Path("nested") / "blue.avi")].split("│")[2]
    assert "2 videos ok, 0 failed" in result.stderr and "clips/s" in result.stderr


def test_jsonl_output_is_resumable(runner, app, weights, videos, tmp_path):
    empty = videos / "empty.mp4"
    empty.write_bytes(b"")
    out = tmp_path / "results.jsonl"
    args = ["predict", str(videos), "-w", str(weights), "-o", str(out)]

    first = runner.invoke(app, args, env=WIDE)
    assert first.exit_code == 1  # one input failed
    records = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records[str(empty)]["error"].endswith("the file is empty (0 bytes)")
    assert records[str(videos / "red.mp4")]["top"][0]["label"] == "red"
    assert "2 videos ok, 1 failed" in first.stderr

    # An interrupted run leaves a cut-off last line; the next run ignores it and redoes that input.
    with out.open("a") as handle:
        handle.write('{"path": "' + str(videos / "late.mp4") + '", "top": [{"lab')
    write_colour_video(videos / "late.mp4", ["green"] * 20)
    second = runner.invoke(app, args, env=WIDE)
    assert second.exit_code == 1  # the empty file still fails
    assert "2 skipped" in second.stderr and "1 video ok, 1 failed" in second.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    paths = [r["path"] for r in lines]
    assert len(paths) == len(set(paths)) == 4
    assert {r["path"]: r for r in lines}[str(videos / "late.mp4")]["top"][0]["label"] == "green"

    # Repair the failed input: only it runs, and everything is ok now.
    write_colour_video(empty, ["blue"] * 20)
    third = runner.invoke(app, args, env=WIDE)
    assert third.exit_code == 0, third.output
    assert "3 skipped" in third.stderr and "1 video ok, 0 failed" in third.stderr
    final = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert len(final) == 4 and all("top" in r for r in final.values())
    assert final[str(empty)]["top"][0]["label"] == "blue"

    fourth = runner.invoke(app, args, env=WIDE)
    assert fourth.exit_code == 0 and "nothing to do" in fourth.stderr


def test_a_foreign_output_file_is_left_alone(runner, app, weights, videos, tmp_path):
    for name, content in [("notes.jsonl", "my notes\nmore notes\n"), ("table.csv", "a,b\n1,2\n"),
                          ("data.json", '{"not": "a list"}')]:
        out = tmp_path / name
        out.write_text(content)
        result = runner.invoke(app, ["predict", str(videos), "-w", str(weights), "-o", str(out)])
        assert result.exit_code == 2
        assert "is not a" in one_error_line(result) and out.read_text() == content


def test_machine_formats_on_stdout(runner, app, weights, videos):
    red = str(videos / "red.mp4")
    as_json = runner.invoke(app, ["predict", red, "-w", str(weights), "-f", "json", "--views", "2x3"])
    assert as_json.exit_code == 0, as_json.output
    (record,) = json.loads(as_json.stdout)
    assert record["path"] == red and record["views"] == "2x3" and record["clips"] == 6
    assert len(record["top"]) == 3 and record["top"][0]["label"] == "red"

    as_csv = runner.invoke(app, ["predict", red, str(videos / "missing.mp4"), "-w", str(weights), "-f", "csv", "-k", "2"])
    assert as_csv.exit_code == 1
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["path"], r["kind"], r["rank"]) for r in rows] == [(red, "top", "1"), (red, "top", "2")]
    assert "missing.mp4: no such file or folder" in as_csv.stderr


def test_timeline_json(runner, app, weights, tmp_path):
    path = write_colour_video(tmp_path / "long.mp4", ["green"] * 30 + ["red"] * 30, fps=10)
    out = tmp_path / "timeline.json"
    # --no-cuts: windows on the stride's grid (the noisy red frames would read as cuts to the HSV detector)
    result = runner.invoke(app, ["predict", str(path), "-w", str(weights), "--timeline", "--window", "1",
                                 "--stride", "1", "--no-cuts", "-o", str(out)])
    assert result.exit_code == 0, result.output
    (record,) = json.loads(out.read_text())
    assert [(w["start"], w["end"]) for w in record["windows"]] == [(float(k), float(k + 1)) for k in range(6)]
    assert [w["top"][0]["label"] for w in record["windows"]] == ["green"] * 3 + ["red"] * 3
    assert [(s["label"], s["start"], s["end"]) for s in record["segments"]] == [("green", 0.0, 3.0), ("red", 3.0, 6.0)]
    table = runner.invoke(app, ["predict", str(path), "-w", str(weights), "--timeline", "--window", "1"], env=WIDE)
    assert table.exit_code == 0 and "segment start" in table.stdout


def test_the_line_under_a_timeline_counts_cuts_in_words(runner, app, weights, tmp_path):
    from sifa_cli.cli.predict import cuts_found

    assert cuts_found(1) == "no cuts found"  # was "1 shot(s): 0 cut(s) found; --no-cuts to ignore them"
    assert cuts_found(2) == "1 cut found, 2 shots; --no-cuts to ignore it"
    assert cuts_found(6) == "5 cuts found, 6 shots; --no-cuts to ignore them"
    for colours, line in ((["green"] * 30, "no cuts found"),
                          (["green"] * 30 + ["blue"] * 30, "1 cut found, 2 shots; --no-cuts to ignore it")):
        path = write_colour_video(tmp_path / f"{len(colours)}.mp4", colours, fps=10)
        table = runner.invoke(app, ["predict", str(path), "-w", str(weights), "--timeline", "--window", "1"], env=WIDE)
        assert table.exit_code == 0, table.output
        assert line in table.stdout


def test_bad_inputs_give_one_line(runner, app, weights, videos, tmp_path):
    empty_folder = tmp_path / "nothing"
    empty_folder.mkdir()
    other_arch = tmp_path / "small.safetensors"
    model = create_model("sifa_resnet_tiny", num_classes=3, clip_length=8)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("layer4")}
    save_checkpoint(other_arch, state, {"arch": "sifa_resnet_tiny", "arch_kwargs": {"clip_length": 8},
                                        "categories": ["a", "b", "c"]})
    red = str(videos / "red.mp4")
    cases = [
        (["predict", str(tmp_path / "nope.mp4"), "-w", str(weights)], "no such file or folder"),
        (["predict", str(empty_folder), "-w", str(weights)], "no video files in this folder"),
        (["predict", str(tmp_path / "*.mkv"), "-w", str(weights)], "no video files match"),
        (["predict", red, "-w", "no_such_weights"], "no_such_weights"),
        (["predict", red, "-w", str(tmp_path / "absent.safetensors")], "not found"),
        (["predict", red, "-w", str(other_arch)], "does not fit sifa_resnet_tiny"),
        (["predict", red, "-w", str(weights), "--views", "3x2"], "--views"),
        (["predict", red, "-w", str(weights), "--device", "cuda:7"], "--device"),
        (["predict", red, "-w", str(weights), "--format", "xml"], "--format"),
        (["predict", red, "-w", str(weights), "-o", str(tmp_path / "out.txt")], "--format"),
        (["predict", red, "-w", str(weights), "-o", str(tmp_path / "r.csv"), "--format", "json"],
         "is named as csv but --format json"),
        (["predict", red, "-w", str(weights), "--stride", "0.5"], "--stride applies to --timeline"),
        (["models", "no_such_*"], "no model name matches 'no_such_*'"),
        (["predict", red, "-w", str(weights), "--decoder", "ffmpeg"], "--decoder"),
        (["predict", red, "-w", str(weights), "--timeline", "--stride", "0"], "--stride"),
        (["predict", red, "-w", str(weights), "--batch-size", "0"], "--batch-size"),
    ]
    for args, expected in cases:
        result = runner.invoke(app, args, env={**WIDE, "SIFA_HOME": str(tmp_path / "home")})
        assert result.exit_code != 0, args
        assert expected in one_error_line(result), (args, result.stderr)
    assert not (tmp_path / "r.csv").exists()


def test_without_weights_the_shipped_default_model_runs(runner, app, videos):
    result = runner.invoke(app, ["predict", str(videos / "red.mp4"), "--format", "json"], env=WIDE)
    assert result.exit_code == 0, result.stderr
    (record,) = json.loads(result.stdout)
    assert record["top"][0]["label"] in load_registry().default_entry().categories


def test_single_bad_video_is_one_line_and_fails(runner, app, weights, tmp_path):
    truncated = tmp_path / "cut.mp4"
    data = write_colour_video(tmp_path / "whole.mp4", ["red"] * 20).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    result = runner.invoke(app, ["predict", str(truncated), "-w", str(weights)], env=WIDE)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "truncated" in errors[0]
    assert "0 videos ok, 1 failed" in result.stderr


def test_real_subprocess(weights, videos, tmp_path):
    (videos / "broken.mkv").write_bytes(b"\x1a\x45\xdf\xa3" + os.urandom(3000))
    env = {**os.environ, "COLUMNS": "200"}
    command = [sys.executable, "-m", "sifa_cli.cli.main", "predict", str(videos), "-w", str(weights),
               "--format", "jsonl", "--decoder", "auto", "--device", "cpu", "--precision", "fp32"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 1, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    by_name = {Path(r["path"]).name: r for r in records}
    assert by_name["red.mp4"]["top"][0]["label"] == "red"
    assert by_name["blue.avi"]["top"][0]["label"] == "blue"
    assert "error" in by_name["broken.mkv"]
    # stderr: the failure as one line and the summary; no traceback, no FFmpeg chatter
    stderr_lines = result.stderr.strip().splitlines()
    assert stderr_lines[0].startswith("error: ") and "broken.mkv" in stderr_lines[0]
    assert stderr_lines[1].startswith("2 videos ok, 1 failed") and len(stderr_lines) == 2, result.stderr
