"""The Python API (`sifa_cli.predict`, `sifa_cli.load_model`): the records `sifa predict --format json`
writes, from real video files, in the calling process as a notebook would use it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sifa_cli
from cli_run import run_sifa
from predict_helpers import write_colour_video

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def sifa_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SIFA_HOME", str(tmp_path / "home"))


@pytest.fixture
def videos(tmp_path):
    return [write_colour_video(tmp_path / "v" / f"{colour}.mp4", [colour] * 12) for colour in ("red", "blue", "green")]


def test_predict_returns_the_records_the_cli_writes(videos, weights):
    records = sifa_cli.predict([str(v) for v in videos], weights=weights, top_k=2, device="cpu")
    cli = run_sifa("predict", *videos, "--weights", weights, "--top-k", "2", "--format", "json", "--device", "cpu")
    assert cli.returncode == 0, cli.stderr
    assert records == json.loads(cli.stdout)
    assert [r["top"][0]["label"] for r in records] == ["red", "blue", "green"]
    assert all(len(r["top"]) == 2 and r["settings"]["top_k"] == 2 for r in records)


def test_load_once_predict_many_times_timelines_and_failures(tmp_path, videos, weights):
    loaded = sifa_cli.load_model(weights, device="cpu")
    model, meta = loaded  # unpacks like the CLI's (model, metadata)
    assert loaded.categories == meta["categories"] == ["red", "green", "blue"] and not model.training
    folder = sifa_cli.predict(videos[0].parent, model=loaded, top_k=1)
    assert sorted(r["top"][0]["label"] for r in folder) == ["blue", "green", "red"]
    two_colours = write_colour_video(tmp_path / "two.mp4", ["red"] * 30 + ["blue"] * 30)
    (timeline,) = sifa_cli.predict(two_colours, model=loaded, timeline=True, window=1.0, stride=1.0)
    assert [s["label"] for s in timeline["segments"]] == ["red", "blue"] and timeline["window"] == 1.0
    missing, still = tmp_path / "missing.mp4", FIXTURES / "coffee.jpg"
    records = sifa_cli.predict([videos[1], still, missing], model=loaded)
    assert [r["path"] for r in records] == [str(videos[1]), str(still), str(missing)]
    assert records[0]["top"][0]["label"] == "blue"
    assert "a still image" in records[1]["error"] and "no such file" in records[2]["error"]
    with pytest.raises(sifa_cli.api.InputError if hasattr(sifa_cli.api, "InputError") else Exception,
                       match="weights or model"):
        sifa_cli.predict(videos, weights=weights, model=loaded)


def test_the_shipped_default_model_without_arguments():
    (record,) = sifa_cli.predict(EXAMPLES / "clip.mp4", device="cpu")
    assert record["top"][0]["label"] == "pan left" and record["settings"]["weights"]
    assert "sifa_cli.api" in __import__("sys").modules
