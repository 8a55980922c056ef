"""The shipped default model and example clips: what the README's first command runs.

The default recognises camera movement through its SIFA steps (sifa_motion_small_camera; how much
SIFA carries is tested in test_sifa_motion.py). Its manifest entry must match the file (hash, size,
labels, parameter count), and it must get every class right on clips that a virtual camera makes over
a real photograph it never saw in training (tests/fixtures/coffee.jpg), through the real CLI.
"""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from sifa_cli.models import create_model
from sifa_cli.weights.checkpoint import read_checkpoint_meta
from sifa_cli.weights.manifest import load_registry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "camera"))
import render  # noqa: E402

SIFA = [sys.executable, "-m", "sifa_cli.cli.main"]
LABELS = ["pan left", "pan right", "static", "tilt down", "tilt up", "zoom in", "zoom out"]


@pytest.fixture(scope="module")
def default_entry():
    registry = load_registry()
    assert registry.default == "sifa_motion_small_camera"
    return registry.entries[registry.default]


def test_default_entry_matches_the_file_and_the_model(default_entry):
    entry = default_entry
    data = entry.local_path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry.sha256 and len(data) == entry.size < 20 * 2**20
    meta = read_checkpoint_meta(entry.local_path)
    assert sorted(entry.categories) == LABELS and list(meta["categories"]) == list(entry.categories)
    assert meta["input"] == dict(entry.input) and meta["input"]["frames"] == 12 and meta["input"]["seconds"] == 3.2
    model = create_model(entry.arch, num_classes=len(entry.categories), **meta["arch_kwargs"])
    assert entry.num_params == sum(p.numel() for p in model.parameters())
    assert all(block.sifa_enabled for _, block in model.sifa_blocks())


def _clip(label: str, seed: int, aspect: tuple[int, int]) -> list[np.ndarray]:
    photo = cv2.imread(str(ROOT / "tests" / "fixtures" / "coffee.jpg"))
    rng = np.random.default_rng(seed)
    width, height = (228, 128) if aspect[0] > aspect[1] else (128, 228)
    speed = 0.02 if label.startswith("zoom") else 0.015
    plan = render.ClipPlan(label, width, height, 25, 36, speed, "constant", 0.003)
    return render.render_clip(rng, plan, photo, [], 0, degrade=False)


def test_shipped_model_gets_every_class_on_an_unseen_photograph(tmp_path):
    folder = tmp_path / "clips"
    for label in LABELS:
        for seed, aspect in ((1, (16, 9)), (2, (9, 16))):
            render.write_clip(folder / label / f"{seed}.mp4", _clip(label, seed, aspect), 25)
    out = tmp_path / "predictions.csv"
    result = subprocess.run([*SIFA, "predict", str(folder), "--format", "csv", "--output", str(out), "--device", "cpu"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    top = {Path(r["path"]).parent.name + "/" + Path(r["path"]).name: r["label"]
           for r in csv.DictReader(out.open()) if r["rank"] == "1"}
    assert len(top) == 14
    wrong = {clip: label for clip, label in top.items() if clip.split("/")[0] != label}
    assert not wrong, wrong


def test_readme_command_predicts_the_example_clip():
    result = subprocess.run([*SIFA, "predict", str(ROOT / "examples" / "clip.mp4"), "--format", "json", "--device", "cpu"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(result.stdout)
    assert record["top"][0]["label"] == "pan left" and record["top"][0]["score"] > 0.5


def test_timeline_example_follows_the_chained_moves():
    result = subprocess.run([*SIFA, "predict", str(ROOT / "examples" / "moves.mp4"), "--timeline", "--window", "2",
                             "--format", "json", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(result.stdout)
    labels = [segment["label"] for segment in record["segments"]]
    assert labels == ["static", "pan right", "tilt down", "zoom in"], record["segments"]
