"""Edited videos of real imagery with known hard cuts, for shot-cut and timeline-export tests.

Each shot is a virtual camera move (examples/camera/render.py, the renderer of the shipped model's
corpus) over a real photograph: scikit-image's coffee cup (tests/fixtures/coffee.jpg) and
matplotlib's sample portrait of Grace Hopper (installed with matplotlib), alternating, so every cut
joins different content. Shots are written back to back into one file: cuts at known frames.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "camera"))
import render  # noqa: E402


def photographs() -> list[np.ndarray]:
    """BGR images of two real photographs."""
    import matplotlib.cbook

    coffee = cv2.imread(str(ROOT / "tests" / "fixtures" / "coffee.jpg"))
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        data = np.frombuffer(handle.read(), np.uint8)
    hopper = cv2.imdecode(data, cv2.IMREAD_COLOR)
    assert coffee is not None and hopper is not None
    return [coffee, hopper]


def shot_frames(label: str, frames: int, photo: np.ndarray, seed: int, size: tuple[int, int] = (228, 128),
                fps: int = 25) -> list[np.ndarray]:
    """One shot: `frames` BGR frames of a camera making `label` over `photo`."""
    speed = 0.02 if label.startswith("zoom") else 0.015
    plan = render.ClipPlan(label, size[0], size[1], fps, frames, speed, "constant", 0.003)
    return render.render_clip(np.random.default_rng(seed), plan, photo, [], 0, degrade=False)


def edited_video(path: Path, shots: Sequence[tuple[str, int]], fps: float = 25, size: tuple[int, int] = (228, 128),
                 fourcc: str = "mp4v") -> list[int]:
    """Write shots (label, frame count) back to back; returns the cut frames (first frame of each
    shot after the first)."""
    photos = photographs()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} to {path}"
    cuts, position = [], 0
    for number, (label, frames) in enumerate(shots):
        if number:
            cuts.append(position)
        for frame in shot_frames(label, frames, photos[number % 2], seed=100 + number, size=size, fps=int(round(fps))):
            writer.write(frame)
        position += frames
    writer.release()
    return cuts


def separate_shots(folder: Path, shots: Sequence[tuple[str, int]], fps: float = 25,
                   size: tuple[int, int] = (228, 128)) -> list[Path]:
    """The same shots as `edited_video`, each in a file of its own."""
    photos = photographs()
    paths = []
    for number, (label, frames) in enumerate(shots):
        path = Path(folder) / f"shot{number:02d}.mp4"
        render.write_clip(path, shot_frames(label, frames, photos[number % 2], seed=100 + number, size=size,
                                            fps=int(round(fps))), fps)
        paths.append(path)
    return paths
