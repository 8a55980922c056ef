"""The training-free peer of the camera-movement model: sparse optical flow + a RANSAC similarity fit.

    python benchmarks/bench_flow_peer.py --val data/camera/val --test data/camera/test \\
        --predictions SIFA=pred_sifa.csv "SIFA off=pred_nosifa.csv" --json peer.json

What a user would otherwise script. Between successive frames: Shi-Tomasi corners
(cv2.goodFeaturesToTrack), pyramidal Lucas-Kanade (cv2.calcOpticalFlowPyrLK) with a
forward-backward check, and a RANSAC similarity fit (cv2.estimateAffinePartial2D) about the frame
centre. The per-pair fits are chained over the frames the model sees (the centre span of its
16 frames at step 2: by default the model's 16 frames; `--frames span` tracks every frame of that
span, which scored lower on the validation split, 99.5 against 100 %: small per-pair errors add up), giving
the clip's net motion of the image centre (tx, ty, in frame widths) and its log-scale. Then:

    zoom in / zoom out   |log-scale| >= zoom threshold (sign: content grows = zoom in)
    pan / tilt           else the larger of |tx|, |ty| >= move threshold; content moving right
                         = pan left, left = pan right, down = tilt up, up = tilt down
    static               otherwise

The two thresholds are chosen on --val only (a grid search for top-1); --test is labelled once
with them. The table puts the peer beside the models' predictions (CSV from
`sifa predict --format csv`, matched by the clip's <label>/<file> path), per class, and the
peer's speed (clips/s, decoding included, one process) beside `sifa predict`'s own clips/s line
when --model-speed is given.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

CLASSES = ("static", "pan left", "pan right", "tilt up", "tilt down", "zoom in", "zoom out")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
# The shipped model's input: 16 frames at step 2 from the middle of the clip.
MODEL_FRAMES, MODEL_STEP = 16, 2
# Tracking settings, chosen on the validation split (30 clips per class).
# A low quality level keeps corners in weakly textured background (sky, walls), so that a textured
# object crossing a static shot does not outvote it in the RANSAC fit.
CORNERS = dict(maxCorners=400, qualityLevel=0.001, minDistance=8, blockSize=7)
LK = dict(winSize=(21, 21), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
FORWARD_BACKWARD_PX = 1.0   # a track must return to within this of its corner
RANSAC_PX = 1.0             # inlier distance for the similarity fit


@dataclass(frozen=True)
class Motion:
    """Net camera-induced motion over a clip: the image centre's displacement in frame widths
    (content moving right/down is positive) and the log of the scale (content growing is positive)."""

    tx: float
    ty: float
    log_scale: float
    pairs: int      # frame pairs tracked
    failed: int     # pairs without a usable fit (counted as no motion)


@dataclass(frozen=True)
class Thresholds:
    move: float     # net translation, fraction of the frame width
    zoom: float     # net |log-scale|


def span_indices(count: int, mode: str) -> list[int]:
    """Frame indices of the model's dense clip (centred), or every frame of that span."""
    span = (MODEL_FRAMES - 1) * MODEL_STEP + 1
    if count >= span:
        first = (count - span) // 2
        sampled = list(range(first, first + span, MODEL_STEP))
    else:
        sampled = sorted(set(np.linspace(0, count - 1, min(count, MODEL_FRAMES)).round().astype(int).tolist()))
    if mode == "span":
        return list(range(sampled[0], sampled[-1] + 1))
    if mode == "sampled":
        return sampled
    if mode == "all":
        return list(range(count))
    raise ValueError(f"unknown frame mode {mode!r}")


def read_gray(path: Path, mode: str) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    finally:
        capture.release()
    if len(frames) < 2:
        raise ValueError(f"{path}: fewer than 2 frames could be decoded")
    return [frames[i] for i in span_indices(len(frames), mode)]


def pair_transform(previous: np.ndarray, current: np.ndarray) -> Optional[np.ndarray]:
    """3x3 similarity mapping points of `previous` to `current`, in coordinates about the frame
    centre, or None when too few corners survive tracking."""
    h, w = previous.shape
    corners = cv2.goodFeaturesToTrack(previous, **CORNERS)
    if corners is None or len(corners) < 8:
        return None
    ahead, status, _ = cv2.calcOpticalFlowPyrLK(previous, current, corners, None, **LK)
    back, status_back, _ = cv2.calcOpticalFlowPyrLK(current, previous, ahead, None, **LK)
    returned = np.linalg.norm(back - corners, axis=2)[:, 0] < FORWARD_BACKWARD_PX
    good = (status[:, 0] == 1) & (status_back[:, 0] == 1) & returned
    if good.sum() < 8:
        return None
    centre = np.array([w / 2, h / 2], np.float32)
    src, dst = corners[good, 0] - centre, ahead[good, 0] - centre
    matrix, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX,
                                                  maxIters=2000, confidence=0.99)
    if matrix is None or inliers is None or inliers.sum() < 6:
        return None
    return np.vstack([matrix, [0.0, 0.0, 1.0]])


def clip_motion(frames: Sequence[np.ndarray]) -> Motion:
    total = np.eye(3)
    failed = 0
    for previous, current in zip(frames, frames[1:]):
        matrix = pair_transform(previous, current)
        if matrix is None:
            failed += 1
            continue
        total = matrix @ total
    width = frames[0].shape[1]
    scale = float(np.sqrt(abs(np.linalg.det(total[:2, :2]))))
    return Motion(float(total[0, 2] / width), float(total[1, 2] / width), float(np.log(max(scale, 1e-6))),
                  len(frames) - 1, failed)


def classify(motion: Motion, thresholds: Thresholds) -> str:
    if abs(motion.log_scale) >= thresholds.zoom:
        return "zoom in" if motion.log_scale > 0 else "zoom out"
    if max(abs(motion.tx), abs(motion.ty)) < thresholds.move:
        return "static"
    if abs(motion.tx) >= abs(motion.ty):
        return "pan left" if motion.tx > 0 else "pan right"
    return "tilt up" if motion.ty > 0 else "tilt down"


def tune(motions: Sequence[Motion], labels: Sequence[str]) -> tuple[Thresholds, float]:
    """The thresholds with the best top-1 on these clips, by grid search on log-spaced values; among
    ties the middle of the best zoom thresholds, then of the best move thresholds at that zoom (the
    middle of the gap between the classes, not its edge). The same rule as `classify`."""
    moves = np.round(np.geomspace(0.002, 0.2, 121), 5)
    zooms = np.round(np.geomspace(0.005, 0.3, 121), 5)
    log_scale = np.array([abs(m.log_scale) for m in motions])
    translation = np.array([max(abs(m.tx), abs(m.ty)) for m in motions])
    truth = np.array(labels)
    # What each clip is called when the zoom rule fires, when the move rule fires, and when neither.
    as_zoom = np.array([classify(m, Thresholds(0.0, 0.0)) for m in motions]) == truth
    as_move = np.array([classify(m, Thresholds(0.0, np.inf)) for m in motions]) == truth
    as_static = truth == "static"
    zoomed = log_scale[None, :] >= zooms[:, None]                          # (zooms, clips)
    moved = translation[None, :] >= moves[:, None]                         # (moves, clips)
    right = np.where(zoomed[:, None, :], as_zoom, np.where(moved[None], as_move, as_static))
    scores = right.mean(axis=2)                                            # (zooms, moves)
    best_zooms = np.flatnonzero(scores.max(axis=1) == scores.max())
    z = int(best_zooms[len(best_zooms) // 2])
    winners = np.flatnonzero(scores[z] == scores[z].max())
    return Thresholds(float(moves[winners[len(winners) // 2]]), float(zooms[z])), float(scores[z].max())


def labelled_clips(folder: Path) -> list[tuple[Path, str]]:
    clips = []
    for label in CLASSES:
        sub = folder / label
        if sub.is_dir():
            clips += [(p, label) for p in sorted(sub.iterdir()) if p.suffix.lower() in VIDEO_SUFFIXES]
    if not clips:
        raise SystemExit(f"error: no clips in {folder}/<label>/ for the labels {', '.join(CLASSES)}")
    return clips


def measure(clips: Sequence[tuple[Path, str]], mode: str, what: str) -> tuple[list[Motion], float]:
    motions = []
    start = time.perf_counter()
    for n, (path, _) in enumerate(clips, 1):
        try:
            motions.append(clip_motion(read_gray(path, mode)))
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None
        if n % 100 == 0 or n == len(clips):
            print(f"{what}: {n}/{len(clips)} clips", file=sys.stderr, flush=True)
    return motions, time.perf_counter() - start


def read_predictions(path: Path) -> dict[str, str]:
    """Top-1 label per clip, keyed by '<label folder>/<file name>'."""
    top = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("rank") == "1" and not row.get("error"):
                parts = Path(row["path"]).parts
                top["/".join(parts[-2:])] = row["label"]
    return top


def per_class(truth: Sequence[str], predicted: Sequence[Optional[str]]) -> dict:
    out = {"top1": 100.0 * float(np.mean([p == t for p, t in zip(predicted, truth)]))}
    for label in CLASSES:
        hits = [p == t for p, t in zip(predicted, truth) if t == label]
        out[label] = 100.0 * float(np.mean(hits)) if hits else None
    return out


def model_speed(folder: Path, weights: Optional[str]) -> Optional[float]:
    """`sifa predict`'s own clips/s over the folder (CPU), from its summary line."""
    command = [sys.executable, "-m", "sifa_cli.cli.main", "predict", str(folder), "--device", "cpu",
               "--format", "csv", "--output", "/dev/null"]
    if weights:
        command += ["--weights", weights]
    out = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    match = re.search(r"([\d.]+) clips/s", out.stdout + out.stderr)
    if not match:
        print(f"model speed: no clips/s in sifa predict's output:\n{out.stdout}{out.stderr}", file=sys.stderr)
        return None
    return float(match.group(1))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test", required=True, type=Path, help="labelled clips: DIR/<label>/*.mp4")
    parser.add_argument("--val", required=True, type=Path, help="labelled clips to choose the thresholds on")
    parser.add_argument("--predictions", nargs="*", default=[], metavar="NAME=CSV",
                        help="a model's `sifa predict --format csv` output on the test clips")
    parser.add_argument("--frames", choices=("span", "sampled", "all"), default="sampled",
                        help="span: every frame of the model's 16x2 span; sampled: the model's 16 frames; "
                             "all: every frame of the clip")
    parser.add_argument("--model-speed", action="store_true",
                        help="also time `sifa predict` (default weights, CPU) on the test clips")
    parser.add_argument("--weights", help="weights for --model-speed (default: the shipped model)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    val = labelled_clips(args.val)
    test = labelled_clips(args.test)
    val_motions, _ = measure(val, args.frames, "val")
    thresholds, val_top1 = tune(val_motions, [y for _, y in val])
    print(f"thresholds from {len(val)} validation clips: move {thresholds.move:.4f} of the width, "
          f"zoom {thresholds.zoom:.4f} log-scale (val top-1 {100 * val_top1:.1f} %)", file=sys.stderr)
    test_motions, seconds = measure(test, args.frames, "test")
    truth = [y for _, y in test]
    keys = ["/".join(p.parts[-2:]) for p, _ in test]
    rows = {"flow + RANSAC": per_class(truth, [classify(m, thresholds) for m in test_motions])}
    speeds = {"flow + RANSAC": len(test) / seconds}
    for item in args.predictions:
        name, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"error: --predictions takes NAME=CSV, got {item!r}")
        if not Path(path).is_file():
            raise SystemExit(f"error: --predictions {name}: no such file {path}")
        top = read_predictions(Path(path))
        missing = sum(k not in top for k in keys)
        if missing:
            print(f"{name}: {missing} test clips have no prediction (counted wrong)", file=sys.stderr)
        rows[name] = per_class(truth, [top.get(k) for k in keys])
    if args.model_speed:
        speeds["sifa predict"] = model_speed(args.test, args.weights)

    header = ["", "top-1"] + list(CLASSES)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in rows.items():
        cells = [f"{r[k]:.1f}" if r[k] is not None else "-" for k in ["top1", *CLASSES]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    print(f"{len(test)} test clips, top-1 % (frames: {args.frames})")
    print("\n".join(lines))
    print("speed on this CPU: " + ", ".join(f"{k} {v:.1f} clips/s" for k, v in speeds.items() if v is not None))
    if args.json:
        args.json.write_text(json.dumps({
            "frames": args.frames, "thresholds": asdict(thresholds), "val_clips": len(val),
            "val_top1": 100 * val_top1, "test_clips": len(test), "results": rows, "clips_per_s": speeds,
            "test_motion": [{"clip": k, "label": y, **asdict(m)} for k, y, m in zip(keys, truth, test_motions)],
        }, indent=1))


if __name__ == "__main__":
    main()
