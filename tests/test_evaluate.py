"""`sifa evaluate`: accuracy, per-class precision/recall and the confusion matrix on labelled videos
(class folders, train/val roots, CSV lists), with real decoding and a really trained tiny model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from predict_helpers import CATEGORIES, INPUT_SPEC, write_colour_video
from sifa_cli.models import create_model
from sifa_cli.weights.checkpoint import save_checkpoint

ENV = {"COLUMNS": "120"}


@pytest.fixture(autouse=True)
def sifa_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SIFA_HOME", str(tmp_path / "home"))


def colour_folder(root: Path, per_class: int = 2) -> Path:
    for colour in CATEGORIES:
        for i in range(per_class):
            write_colour_video(root / colour / f"{colour}_{i}.mp4", [colour] * 10)
    return root


def evaluate(app, *args):
    return CliRunner().invoke(app, ["evaluate", *map(str, args)], env=ENV)


def error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code != 0 and lines[-1].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[-1]


def test_class_folders_give_accuracy_per_class_scores_and_a_confusion_matrix(app, weights, tmp_path):
    data = colour_folder(tmp_path / "data")
    mislabelled = CATEGORIES[0]
    wrong_folder = CATEGORIES[1]
    write_colour_video(data / wrong_folder / "actually_first_colour.mp4", [mislabelled] * 10)
    out = tmp_path / "eval"
    result = evaluate(app, data, "-w", weights, "--out", out)
    assert result.exit_code == 0, result.output

    report = json.loads((out / "metrics.json").read_text())
    n = 2 * len(CATEGORIES) + 1
    assert report["videos"] == n and report["failed"] == 0
    assert report["top1"] == pytest.approx((n - 1) / n)
    assert "top5" not in report  # 3 classes: top-5 says nothing
    confusion = report["confusion"]
    assert confusion["categories"] == CATEGORIES
    i, j = CATEGORIES.index(wrong_folder), CATEGORIES.index(mislabelled)
    expected = [[2 if r == c else 0 for c in range(len(CATEGORIES))] for r in range(len(CATEGORIES))]
    expected[i][j] = 1
    assert confusion["matrix"] == expected
    per_class = report["per_class"]
    assert per_class[wrong_folder]["recall"] == pytest.approx(2 / 3) and per_class[wrong_folder]["precision"] == 1.0
    assert per_class[mislabelled]["precision"] == pytest.approx(2 / 3) and per_class[mislabelled]["recall"] == 1.0
    assert per_class[wrong_folder]["mistaken_for"] == mislabelled
    assert report["settings"]["views"] == "1x1" and len(report["settings"]["weights_sha256"]) == 64
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == n and sum(r["correct"] == "0" for r in rows) == 1
    assert next(r for r in rows if "actually_first_colour" in r["path"])["predicted"] == mislabelled

    assert f"top-1 {100 * (n - 1) / n:.1f}% ({n - 1}/{n})" in result.stdout and "top-5" not in result.stdout
    table_row = next(line for line in result.stdout.splitlines() if line.startswith(f"│ {wrong_folder} "))
    assert "66.7%" in table_row and mislabelled in table_row


def test_labels_the_model_does_not_know(app, weights, tmp_path):
    data = colour_folder(tmp_path / "data", per_class=1)
    write_colour_video(data / "purple" / "p.mp4", ["red"] * 10)
    line = error_line(evaluate(app, data, "-w", weights, "--out", tmp_path / "eval"))
    assert "'purple'" in line and "--skip-unknown" in line and not (tmp_path / "eval").exists()

    skipped = evaluate(app, data, "-w", weights, "--out", tmp_path / "eval", "--skip-unknown")
    assert skipped.exit_code == 0, skipped.output
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["videos"] == len(CATEGORIES) and report["skipped_unknown_label"] == 1
    assert report["unknown_labels"][0]["label"] == "purple"
    assert "left out (purple)" in skipped.stderr


def test_csv_list_views_and_a_broken_video(app, weights, tmp_path):
    folder = tmp_path / "clips"
    lines = ["path,label"]
    for colour in CATEGORIES:
        write_colour_video(folder / f"{colour}.mp4", [colour] * 10)
        lines.append(f"clips/{colour}.mp4,{colour}")
    (folder / "broken.mp4").write_bytes(b"\x00" * 100)
    lines.append(f"clips/broken.mp4,{CATEGORIES[0]}")
    listing = tmp_path / "list.csv"
    listing.write_text("\n".join(lines) + "\n")
    result = evaluate(app, listing, "-w", weights, "--views", "2x3", "--out", tmp_path / "eval")
    assert result.exit_code == 1  # a video failed
    assert "broken.mp4" in result.stderr
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["videos"] == len(CATEGORIES) and report["failed"] == 1 and report["top1"] == 1.0
    assert report["failures"][0]["path"].endswith("broken.mp4")
    assert report["settings"]["views"] == "2x3"


def test_train_val_root_evaluates_val_and_bad_options_fail_first(app, weights, tmp_path):
    colour_folder(tmp_path / "data" / "train", per_class=1)
    colour_folder(tmp_path / "data" / "val", per_class=1)
    result = evaluate(app, tmp_path / "data", "-w", weights, "--out", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    assert "evaluating val/" in result.stderr
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["videos"] == len(CATEGORIES)
    assert "--views" in error_line(evaluate(app, tmp_path / "data", "-w", weights, "--views", "3x2"))
    assert "dataset not found" in error_line(evaluate(app, tmp_path / "nowhere", "-w", weights))
    assert "unknown weights name" in error_line(evaluate(app, tmp_path / "data", "-w", "no_such_weights"))


def test_top5_with_more_than_five_classes(app, tmp_path):
    # An untrained 7-class model: the point is that top-5 is reported and agrees with the per-video lists.
    torch.manual_seed(0)
    names = [f"class {i}" for i in range(7)]
    model = create_model("sifa_resnet_tiny", num_classes=7, clip_length=INPUT_SPEC["frames"]).eval()
    meta = {"arch": "sifa_resnet_tiny", "arch_kwargs": {"clip_length": INPUT_SPEC["frames"]}, "categories": names,
            "input": INPUT_SPEC, "source": "sifa tests", "license": "CC0"}
    weights = save_checkpoint(tmp_path / "seven.safetensors", model, meta)
    for i, colour in enumerate(CATEGORIES * 2):
        write_colour_video(tmp_path / "data" / names[i % 7] / f"{i}.mp4", [colour] * 10)
    result = evaluate(app, tmp_path / "data", "-w", weights, "--out", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    rows = list(csv.DictReader((tmp_path / "eval" / "predictions.csv").open()))
    in_top5 = [r["label"] in [part.rsplit(" ", 1)[0] for part in r["top"].split("; ")][:5] for r in rows]
    assert report["top5"] == pytest.approx(sum(in_top5) / len(rows))
    assert report["top1"] == pytest.approx(sum(r["correct"] == "1" for r in rows) / len(rows))
    assert "top-5" in result.stdout
