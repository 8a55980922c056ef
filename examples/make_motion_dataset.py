#!/usr/bin/env python
"""Generate a synthetic action-recognition dataset: one shape moving left, right, up or down.

The label is the direction of motion, so a single frame cannot tell the classes apart: a model has
to compare frames. Clips vary in shape, colour, size, speed, background (flat, gradient, texture),
static distractor shapes, and sensor noise, so the only stable cue is the motion itself.

    python examples/make_motion_dataset.py data/motion --clips-per-class 120
    python examples/make_motion_dataset.py --clip examples/clip.mp4 --direction right --frames 48

Writes DIR/<class>/<class>_<number>.mp4 (class folder names: "moving left", ...), the layout
`sifa finetune DIR` reads.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

DIRECTIONS = {
    "moving left": (-1.0, 0.0),
    "moving right": (1.0, 0.0),
    "moving up": (0.0, -1.0),
    "moving down": (0.0, 1.0),
}
SHAPES = ("square", "circle", "triangle", "ring")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A static BGR background: flat, a linear gradient, or smooth random texture."""
    kind = rng.integers(3)
    if kind == 0:
        return np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (size, size, 3)).copy()
    if kind == 1:
        a, b = rng.integers(0, 256, (2, 3)).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
        t = np.clip(0.5 + (xs - 0.5) * np.cos(angle) + (ys - 0.5) * np.sin(angle), 0, 1)[..., None]
        return (a * (1 - t) + b * t).astype(np.uint8)
    coarse = rng.integers(0, 256, (rng.integers(3, 9), rng.integers(3, 9), 3), dtype=np.uint8)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _draw(frame: np.ndarray, shape: str, centre: tuple[float, float], radius: float, colour) -> None:
    # Sub-pixel positions: drawing with fractional bits keeps slow motion smooth.
    shift = 4
    scale = 1 << shift
    cx, cy, r = int(round(centre[0] * scale)), int(round(centre[1] * scale)), int(round(radius * scale))
    colour = tuple(int(c) for c in colour)
    if shape == "square":
        cv2.rectangle(frame, (cx - r, cy - r), (cx + r, cy + r), colour, -1, cv2.LINE_AA, shift)
    elif shape == "circle":
        cv2.circle(frame, (cx, cy), r, colour, -1, cv2.LINE_AA, shift)
    elif shape == "ring":
        cv2.circle(frame, (cx, cy), r, colour, max(2, int(radius / 2.5)), cv2.LINE_AA, shift)
    else:
        points = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], dtype=np.int32)
        cv2.fillPoly(frame, [points], colour, cv2.LINE_AA, shift)


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A colour at least ~90 grey levels away from the background's mean, so the shape stays visible."""
    mean = background.reshape(-1, 3).mean(axis=0)
    for _ in range(50):
        colour = rng.integers(0, 256, 3)
        if np.abs(colour - mean).max() > 90:
            return colour
    return np.where(mean > 127, 0, 255)


def render_motion_clip(direction: str, rng: np.random.Generator, size: int = 128, frames: int = 32,
                       plain: bool = False) -> np.ndarray:
    """Frames (T, size, size, 3, BGR uint8) of one shape moving in `direction`.

    plain: a bright shape on a dark flat background and no distractors (an easier task).
    """
    dx, dy = DIRECTIONS[direction]
    if plain:
        background = np.full((size, size, 3), rng.integers(0, 60), dtype=np.uint8)
        colour = rng.integers(160, 256, 3)
    else:
        background = _background(rng, size)
        for _ in range(int(rng.integers(0, 3))):  # static distractors: shapes that do not move
            _draw(background, SHAPES[rng.integers(len(SHAPES))], tuple(rng.uniform(0, size, 2)),
                  rng.uniform(0.04, 0.1) * size, _contrasting_colour(rng, background))
        colour = _contrasting_colour(rng, background)
    shape = SHAPES[rng.integers(len(SHAPES))]
    radius = rng.uniform(0.07, 0.16) * size
    speed = rng.uniform(0.025, 0.05) * size  # pixels per frame: a clear displacement between feature frames
    travel = speed * (frames - 1)
    margin = radius * 0.5  # the shape may be half outside the frame at either end of its path
    along_start = rng.uniform(margin, max(margin, size - margin - travel)) if travel < size - 2 * margin \
        else (size - travel) / 2
    across = rng.uniform(radius, size - radius)
    noise = rng.uniform(0, 10)
    clip = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        along = along_start + speed * t
        if dx != 0:
            x = along if dx > 0 else size - along
            centre = (x, across)
        else:
            y = along if dy > 0 else size - along
            centre = (across, y)
        frame = background.copy()
        _draw(frame, shape, centre, radius, colour)
        if noise > 0:
            frame = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
        clip[t] = frame
    return clip


def write_clip(path: Path, frames: np.ndarray, fps: float = 25.0) -> Path:
    """Write BGR frames as an MPEG-4 (mp4v) video."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    return path


def make_motion_dataset(root: Path, clips_per_class: int, size: int = 128, frames: int = 32, seed: int = 0,
                        directions: Sequence[str] = tuple(DIRECTIONS), plain: bool = False) -> list[Path]:
    """root/<direction>/<direction>_<i>.mp4 for every direction; returns the written paths."""
    written = []
    for class_index, direction in enumerate(directions):
        for i in range(clips_per_class):
            rng = np.random.default_rng([seed, class_index, i])
            path = Path(root) / direction / f"{direction.replace(' ', '_')}_{i:04d}.mp4"
            written.append(write_clip(path, render_motion_clip(direction, rng, size, frames, plain)))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, help="dataset folder to write")
    parser.add_argument("--clips-per-class", type=int, default=120)
    parser.add_argument("--size", type=int, default=128, help="frame width and height in pixels")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clip", type=Path, help="write a single clip to this file instead of a dataset")
    parser.add_argument("--direction", choices=[d.split()[1] for d in DIRECTIONS], default="right")
    parser.add_argument("--plain", action="store_true", help="bright shapes on dark flat backgrounds, no distractors")
    args = parser.parse_args()
    if args.clip is not None:
        rng = np.random.default_rng([args.seed, 99])
        clip = render_motion_clip(f"moving {args.direction}", rng, args.size, args.frames, args.plain)
        print(write_clip(args.clip, clip))
        return
    if args.out is None:
        parser.error("give the dataset folder, or --clip FILE")
    paths = make_motion_dataset(args.out, args.clips_per_class, args.size, args.frames, args.seed, plain=args.plain)
    print(f"wrote {len(paths)} clips to {args.out}")


if __name__ == "__main__":
    main()
