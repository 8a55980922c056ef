"""`sifa predict --output`: results record the settings that made them, and a re-run refuses to mix
results made with other weights, views or top-k into one file (`--overwrite` starts afresh)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from predict_helpers import write_colour_video
from sifa_cli.weights.checkpoint import load_checkpoint, save_checkpoint

ENV = {"COLUMNS": "200"}


@pytest.fixture
def videos(tmp_path) -> Path:
    folder = tmp_path / "videos"
    write_colour_video(folder / "red.mp4", ["red"] * 12)
    write_colour_video(folder / "green.mp4", ["green"] * 12)
    return folder


@pytest.fixture(autouse=True)
def sifa_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SIFA_HOME", str(tmp_path / "home"))


def run(app, *args):
    return CliRunner().invoke(app, ["predict", *map(str, args)], env=ENV)


def error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code != 0 and lines[-1].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[-1]


def test_other_settings_are_refused_and_the_file_is_kept(app, weights, videos, tmp_path):
    out = tmp_path / "results.jsonl"
    first = run(app, videos, "-w", weights, "-o", out)
    assert first.exit_code == 0, first.output
    content = out.read_text()
    records = [json.loads(line) for line in content.splitlines()]
    settings = records[0]["settings"]
    assert settings["views"] == "1x1" and settings["top_k"] == 3 and settings["timeline"] is None
    assert len(settings["weights_sha256"]) == 64 and settings["input"]["frames"] == 8
    assert all(r["settings"] == settings for r in records)

    assert "nothing to do" in run(app, videos, "-w", weights, "-o", out).stderr  # same settings: resumes

    views = run(app, videos, "-w", weights, "-o", out, "--views", "2x3")
    assert "views 1x1 there, 2x3 now" in error_line(views) and "--overwrite" in error_line(views)
    # Only --top-k changed: the file resumes (issue 20: this used to refuse), and says so.
    top_k = run(app, videos, "-w", weights, "-o", out, "-k", "1")
    assert top_k.exit_code == 0, top_k.output
    assert "nothing to do" in top_k.stderr and "list the top 3 labels; the new ones list the top 1" in top_k.stderr
    timeline = run(app, videos, "-w", weights, "-o", out, "--timeline", "--window", "0.5", "--stride", "0.5")
    assert "timeline off there, window 0.5 s stride 0.5 s, cuts at" in error_line(timeline)
    # A bad option is an error even though every video already has a result.
    assert "unknown weights name 'no_such_model'" in error_line(run(app, videos, "-w", "no_such_model", "-o", out))
    assert "--views" in error_line(run(app, videos, "-w", weights, "-o", out, "--views", "4x2"))
    assert out.read_text() == content

    # Other weights (same architecture and classes, another file): refused by their hash.
    state, meta = load_checkpoint(weights)
    other = save_checkpoint(tmp_path / "other.safetensors", state, {**meta, "source": "a copy"})
    assert "weights sha256" in error_line(run(app, videos, "-w", other, "-o", out))

    fresh = run(app, videos, "-w", weights, "-o", out, "--views", "2x3", "--overwrite")
    assert fresh.exit_code == 0, fresh.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2 and {r["settings"]["views"] for r in records} == {"2x3"}
    assert all(r["clips"] == 6 for r in records)


def test_csv_keeps_settings_and_resumes(app, weights, videos, tmp_path):
    out = tmp_path / "results.csv"
    assert run(app, videos / "red.mp4", "-w", weights, "-o", out, "-k", "2").exit_code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert json.loads(rows[0]["settings"])["top_k"] == 2 and rows[1]["settings"] == ""
    second = run(app, videos, "-w", weights, "-o", out, "-k", "2")
    assert second.exit_code == 0 and "1 skipped" in second.stderr
    views = run(app, videos, "-w", weights, "-o", out, "-k", "2", "--views", "1x3")
    assert "views 1x1 there, 1x3 now" in error_line(views)


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_results_from_before_settings_were_recorded_are_refused(app, weights, videos, tmp_path, fmt):
    red = str(videos / "red.mp4")
    out = tmp_path / f"old.{fmt}"
    if fmt == "jsonl":
        out.write_text(json.dumps({"path": red, "top": [{"label": "red", "score": 0.9}], "views": "1x1"}) + "\n")
    elif fmt == "json":
        out.write_text(json.dumps([{"path": red, "top": [{"label": "red", "score": 0.9}], "views": "1x1"}]))
    else:
        out.write_text("path,kind,start,end,rank,label,score,error\n" + f"{red},top,,,1,red,0.9,\n")
    content = out.read_text()
    line = error_line(run(app, videos, "-w", weights, "-o", out))
    assert "no recorded settings" in line and "--overwrite" in line and out.read_text() == content
    fresh = run(app, videos, "-w", weights, "-o", out, "--overwrite")
    assert fresh.exit_code == 0, fresh.output
    assert "2 videos ok" in fresh.stderr and "skipped" not in fresh.stderr


def test_overwrite_never_replaces_a_file_that_is_not_results(app, weights, videos, tmp_path):
    out = tmp_path / "notes.jsonl"
    out.write_text("my notes\n")
    assert "is not a sifa results file" in error_line(run(app, videos, "-w", weights, "-o", out, "--overwrite"))
    assert out.read_text() == "my notes\n"
