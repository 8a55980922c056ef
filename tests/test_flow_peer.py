"""The training-free peer (benchmarks/bench_flow_peer.py): tiny mp4 clips of a textured image under a
known global motion, written with OpenCV, must get the cinematographic label (content moving right
= pan left, content moving down = tilt up, content growing = zoom in)."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import write_video

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_flow_peer", ROOT / "benchmarks" / "bench_flow_peer.py")
peer = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = peer  # dataclasses look their module up there
_spec.loader.exec_module(peer)

W, H, FRAMES = 96, 64, 40
# Content motion per frame: (dx px, dy px, scale factor) -> expected label.
MOTIONS = {
    "static": (0.0, 0.0, 1.0),
    "pan left": (1.2, 0.0, 1.0),      # content moves right
    "pan right": (-1.2, 0.0, 1.0),
    "tilt up": (0.0, 1.2, 1.0),       # content moves down
    "tilt down": (0.0, -1.2, 1.0),
    "zoom in": (0.0, 0.0, 1.012),     # content grows about the centre
    "zoom out": (0.0, 0.0, 1 / 1.012),
}


def texture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    world = cv2.GaussianBlur(rng.integers(0, 256, (240, 240, 3), dtype=np.uint8), (0, 0), 1.5)
    return cv2.normalize(world, None, 0, 255, cv2.NORM_MINMAX)


def moving_clip(path: Path, dx: float, dy: float, scale: float, seed: int = 0) -> Path:
    """FRAMES frames of a texture whose content moves by (dx, dy) px and grows by `scale` per frame,
    about the frame centre."""
    world = texture(seed)
    cw = np.array([world.shape[1] / 2, world.shape[0] / 2])
    frames = []
    for t in range(FRAMES):
        s = 1.3 * scale ** (t - FRAMES / 2)
        offset = np.array([W / 2 + dx * (t - FRAMES / 2), H / 2 + dy * (t - FRAMES / 2)]) - s * cw
        matrix = np.array([[s, 0, offset[0]], [0, s, offset[1]]])
        frames.append(cv2.warpAffine(world, matrix, (W, H), flags=cv2.INTER_LINEAR))
    return write_video(path, frames, fps=25)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("peer")
    for n, (label, (dx, dy, scale)) in enumerate(MOTIONS.items()):
        (folder / label).mkdir()
        moving_clip(folder / label / f"clip_{n}.mp4", dx, dy, scale, seed=n)
    return folder


def test_known_motion_gets_the_cinematographic_label(clip_folder):
    thresholds = peer.Thresholds(move=0.05, zoom=0.08)
    for label, (dx, dy, scale) in MOTIONS.items():
        (path,) = (clip_folder / label).iterdir()
        motion = peer.clip_motion(peer.read_gray(path, "sampled"))
        assert motion.failed == 0
        # 30 frames of motion (the model's span): the measured net motion matches the generated one.
        assert motion.tx == pytest.approx(30 * dx / W, abs=0.02), label
        assert motion.ty == pytest.approx(30 * dy / W, abs=0.02), label
        assert motion.log_scale == pytest.approx(30 * np.log(scale), rel=0.15, abs=0.02), label
        assert peer.classify(motion, thresholds) == label


def test_tune_separates_the_classes():
    motions = [peer.Motion(30 * dx / W, 30 * dy / W, 30 * np.log(s), 15, 0) for dx, dy, s in MOTIONS.values()]
    thresholds, top1 = peer.tune(motions, list(MOTIONS))
    assert top1 == 1.0
    assert [peer.classify(m, thresholds) for m in motions] == list(MOTIONS)


def test_benchmark_cli_prints_the_table_and_writes_json(clip_folder, tmp_path):
    predictions = tmp_path / "pred.csv"
    with open(predictions, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "kind", "start", "end", "rank", "label", "score", "error"])
        for label in MOTIONS:
            (path,) = (clip_folder / label).iterdir()
            # A model that calls everything static: right on 1 of 7.
            writer.writerow([f"x/{label}/{path.name}", "top", "", "", 1, "static", 0.9, ""])
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_flow_peer.py"), "--val", str(clip_folder),
         "--test", str(clip_folder), "--frames", "sampled", "--predictions", f"always static={predictions}",
         "--json", str(tmp_path / "peer.json")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "| flow + RANSAC | 100.0 |" in out.stdout
    assert "| always static | 14.3 | 100.0 | 0.0 |" in out.stdout
    result = json.loads((tmp_path / "peer.json").read_text())
    assert result["results"]["flow + RANSAC"]["top1"] == 100.0
    assert result["clips_per_s"]["flow + RANSAC"] > 0
