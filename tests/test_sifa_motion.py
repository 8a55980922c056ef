"""Does SIFA carry the motion? The measurement of benchmarks/bench_sifa_motion.py on a small case.

Clips: a virtual camera panning, tilting or holding still over a real photograph no model saw in training
(tests/fixtures/coffee.jpg, rendered by examples/camera/render.py). The motion model of the registry must
read them through its SIFA steps: switched off at inference it loses at least 30 points, and in its motion
block the displacements point with the scene. The same check refuses the earlier default, whose SIFA steps
are decorative, and a model whose SIFA steps are switched off.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from sifa_cli.errors import ModelError
from sifa_cli.visualize.motion import LabelledClip, measure_motion
from sifa_cli.weights.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "camera"))
import render  # noqa: E402

MOTION_MODEL = "sifa_motion_small_camera"
EARLIER_DEFAULT = "sifa_resnet_small_camera"
LABELS = ("static", "pan left", "pan right", "tilt up", "tilt down")
SPEED = 0.012  # of the frame width per frame
WIDTH, HEIGHT, FPS = 228, 128, 30


@pytest.fixture(scope="module")
def camera_clips(tmp_path_factory) -> list[LabelledClip]:
    folder = tmp_path_factory.mktemp("camera")
    photo = cv2.imread(str(ROOT / "tests" / "fixtures" / "coffee.jpg"))
    clips = []
    for label in LABELS:
        for seed in (1, 2):
            plan = render.ClipPlan(label, WIDTH, HEIGHT, FPS, 40, SPEED, "constant", 0.002)
            frames = render.render_clip(np.random.default_rng(seed), plan, photo, [], 0, degrade=False)
            path = folder / label / f"{seed}.mp4"
            render.write_clip(path, frames, FPS)
            clips.append(LabelledClip(str(path), label, None if label == "static" else SPEED * WIDTH))
    return clips


def test_the_motion_model_reads_motion_through_its_sifa_steps(camera_clips):
    model, meta = load_model(MOTION_MODEL, progress=False)
    report = measure_motion(model, meta, camera_clips)
    assert report.accuracy_sifa_on >= 0.9, report.as_dict()
    assert not report.failures(min_drop=0.3, min_agreement=0.9), report.as_dict()
    shown = next(b for b in report.blocks if b.block == meta["motion_block"])  # what `sifa visualize` shows
    assert shown.displacement_agreement >= 0.9, report.as_dict()
    # and its size is within a factor of 2 of the true motion (README: 1.02 of it on the test split)
    assert 0.5 < shown.displacement_size_ratio < 2.0, report.as_dict()


def test_the_check_refuses_decorative_and_switched_off_sifa(camera_clips):
    model, meta = load_model(EARLIER_DEFAULT, progress=False)
    report = measure_motion(model, meta, camera_clips)
    assert report.accuracy_sifa_on >= 0.9  # it reads the clips well, but not through SIFA
    assert any("switching SIFA off costs" in problem for problem in report.failures()), report.as_dict()
    model.set_sifa_enabled(False)
    with pytest.raises(ModelError, match="switched off"):
        measure_motion(model, meta, camera_clips)
