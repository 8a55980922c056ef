#!/usr/bin/env python
"""Example clips for the README and `sifa visualize`: a virtual camera over one real photograph,
making a given sequence of moves.

    python examples/camera/make_example.py PHOTO examples/clip.mp4 --moves "pan left:1.6"
    python examples/camera/make_example.py PHOTO examples/moves.mp4 \\
        --moves "static:2,pan right:2,tilt down:2,zoom in:2"

The shipped examples use scikit-image's coffee.png (a photograph by Rachel Michetti, CC0), a
source of the corpus's test split, so the default model never saw it in training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import render  # noqa: E402


def parse_moves(text: str) -> list[tuple[str, float]]:
    moves = []
    for part in text.split(","):
        label, _, seconds = part.strip().rpartition(":")
        if label not in render.CLASSES:
            sys.exit(f"unknown move '{label}'; one of: {', '.join(render.CLASSES)}")
        moves.append((label, float(seconds)))
    return moves


def chained_path(moves, fps: float, speed: float, zoom: float, shake: float, rng, plan):
    """Centre, log-size and roll per frame for the moves one after another (see render.camera_path)."""
    centre, logsize = [np.zeros(2)], [0.0]
    for label, seconds in moves:
        for _ in range(int(round(seconds * fps))):
            c, s = centre[-1].copy(), logsize[-1]
            if label in render.DIRECTION:
                c = c + np.array(render.DIRECTION[label]) * speed * np.exp(s)
            elif label == "zoom in":
                s -= zoom
            elif label == "zoom out":
                s += zoom
            centre.append(c)
            logsize.append(s)
    centre, logsize = np.array(centre[1:]), np.array(logsize[1:])
    n = len(logsize)
    jitter = np.stack([render._shake(rng, n, fps, shake), render._shake(rng, n, fps, shake)], axis=1)
    return centre + jitter * np.exp(logsize)[:, None], logsize, render._shake(rng, n, fps, shake * 25)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photo")
    parser.add_argument("out")
    parser.add_argument("--moves", required=True, help='e.g. "static:2,pan right:2,zoom in:2"')
    parser.add_argument("--size", default="384x216", help="WIDTHxHEIGHT of the video")
    parser.add_argument("--fps", type=float, default=25)
    parser.add_argument("--speed", type=float, default=0.012, help="pan/tilt: share of the width per frame")
    parser.add_argument("--zoom", type=float, default=0.012, help="zoom: change of log-size per frame")
    parser.add_argument("--shake", type=float, default=0.002, help="hand-held shake, share of the width")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    photo = cv2.imread(args.photo, cv2.IMREAD_COLOR)
    if photo is None:
        sys.exit(f"cannot read {args.photo}")
    rng = np.random.default_rng(args.seed)
    moves = parse_moves(args.moves)
    frames = sum(int(round(s * args.fps)) for _, s in moves)
    plan = render.ClipPlan("static", width, height, int(args.fps), frames, args.speed, "constant", args.shake)
    path = chained_path(moves, args.fps, args.speed, args.zoom, args.shake, rng, plan)
    clip = render.render_clip(rng, plan, photo, [], 0, path=path, degrade=False)
    render.write_clip(Path(args.out), clip, args.fps)
    print(f"wrote {args.out}: {len(clip)} frames, {width}x{height} at {args.fps:g} fps: {args.moves}")


if __name__ == "__main__":
    main()
