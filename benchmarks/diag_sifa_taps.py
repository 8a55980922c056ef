#!/usr/bin/env python
"""Why are a model's SIFA displacements smaller than the true motion? Three measurements per block.

    PYTHONPATH=. python benchmarks/diag_sifa_taps.py data/camera/test --weights W [--per-class 12] [--blocks layer2.1 layer3.1]

1. The true motion of the pan and tilt clips in the block's feature cells per feature step (from the
   corpus's sources.json): does it fit the K*K taps' reach at all?
2. Where the taps really sample: each tap's regular position plus its mean learned offset, over the
   static clips and over the pan/tilt clips. The same pattern in both means the offsets learned a fixed
   sampling window, not motion.
3. The displacement's size against the true motion (median ratio, as bench_sifa_motion.py) when the
   softmax over the taps is made sharper by 1, 2, 4, 8 times the block's learned temperature, and with
   a hard argmax (the single best tap): if even the argmax is short, the correlations themselves peak
   short of the true match, and no temperature can fix the size.
4. The displacement averaged with weights instead of over every place alike: each place weighted by its
   match's confidence (the largest attention weight of its K*K taps), and the mean over the quarter of
   places with the most confident matches. Places without texture match anywhere equally well, so their
   displacement stays near the middle of the window and dilutes a plain mean.

This reads the model; it changes nothing in it. The numbers go in README's experiment table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sifa_motion import camera_clips

from sifa_cli.data.spec import InputSpec
from sifa_cli.models.blocks import tap_grid
from sifa_cli.visualize.capture import BlockCapture, capture_sifa
from sifa_cli.visualize.clip import load_model_clip
from sifa_cli.visualize.motion import (
    SCENE_MOTION,
    STILL_LABEL,
    ClipScale,
    _agrees,
    displacement,
    mean_displacement,
)
from sifa_cli.weights.checkpoint import load_model

SHARPENING = (1, 2, 4, 8)


def taps(capture: BlockCapture) -> tuple[np.ndarray, np.ndarray]:
    """Regular tap positions (K*K, 2) and mean learned offsets over the clip's steps (K*K, 2), (dy, dx)."""
    ty, tx = tap_grid(capture.kernel_size, capture.dilation, torch.zeros(1, dtype=torch.float64))
    regular = np.stack((ty.numpy(), tx.numpy()), axis=1)
    return regular, capture.offsets[1:].mean(axis=(0, 3, 4))


def argmax_displacement(capture: BlockCapture) -> np.ndarray:
    """(dy, dx) in cells: each query's single best tap (regular position + offset), averaged over the clip."""
    best = capture.correlation[1:].argmax(axis=1)[:, None]  # (F-1, 1, h, w)
    regular, _ = taps(capture)
    offsets = capture.offsets[1:]  # (F-1, K*K, 2, h, w)
    dy = regular[:, 0][best[:, 0]] + np.take_along_axis(offsets[:, :, 0], best, 1)[:, 0]
    dx = regular[:, 1][best[:, 0]] + np.take_along_axis(offsets[:, :, 1], best, 1)[:, 0]
    return np.array([dy.mean(), dx.mean()])


def confident_displacement(capture: BlockCapture, share: float | None = None) -> np.ndarray:
    """(dy, dx) in cells: the displacement averaged over places and steps weighted by each match's
    confidence (largest softmax weight over the taps), or over the `share` of most confident places."""
    moved = displacement(capture, slice(1, None))  # (F-1, 2, h, w)
    logits = capture.correlation[1:].astype(np.float64) * capture.temperature  # (F-1, K*K, h, w)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    peak = (weights / weights.sum(axis=1, keepdims=True)).max(axis=1)  # (F-1, h, w)
    if share is not None:
        peak = (peak >= np.quantile(peak, 1 - share)).astype(np.float64)
    return np.array([(moved[:, 0] * peak).sum() / peak.sum(), (moved[:, 1] * peak).sum() / peak.sum()])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--per-class", type=int, default=12)
    parser.add_argument("--blocks", nargs="+", default=["layer2.1", "layer3.1"])
    args = parser.parse_args(argv)

    model, meta = load_model(args.weights, progress=False)
    spec = InputSpec.from_meta(meta.get("input"))
    clips = [c for c in camera_clips(args.data, args.per_class) if c.label in SCENE_MOTION or c.label == STILL_LABEL]
    readings = {b: {k: [] for k in (*SHARPENING, "argmax", "weighted", "top quarter")} for b in args.blocks}
    tap_means = {b: {"still": [], "moving": []} for b in args.blocks}
    scales = {b: [] for b in args.blocks}
    regular = {}
    for clip in clips:
        loaded = load_model_clip(clip.path, spec)
        captures, _ = capture_sifa(model, loaded.model_input, args.blocks)
        for name, capture in captures.items():
            scales[name].append(ClipScale.of(capture, spec, loaded.source_size, loaded.indices))
            regular[name] = taps(capture)[0]
            tap_means[name]["still" if clip.label == STILL_LABEL else "moving"].append(taps(capture)[1])
            for k in SHARPENING:
                sharper = dataclasses.replace(capture, temperature=capture.temperature * k)
                readings[name][k].append(np.array(mean_displacement(sharper)))
            readings[name]["argmax"].append(argmax_displacement(capture))
            readings[name]["weighted"].append(confident_displacement(capture))
            readings[name]["top quarter"].append(confident_displacement(capture, 0.25))

    still = [i for i, c in enumerate(clips) if c.label == STILL_LABEL]
    moving = [i for i, c in enumerate(clips) if c.label in SCENE_MOTION and c.speed]
    print(f"{args.weights}: {len(moving)} pan/tilt and {len(still)} static clips of {args.data}")
    for name in args.blocks:
        scale = scales[name]
        true_cells = [clips[i].speed * scale[i].frames_per_step / float(np.dot(scale[i].cell_pixels,
                      np.abs(SCENE_MOTION[clips[i].label]))) for i in moving]
        print(f"\n{name}: true motion per feature step, cells: 10/50/90 % = "
              + " / ".join(f"{v:.2f}" for v in np.percentile(true_cells, [10, 50, 90])))
        still_taps, moving_taps = np.mean(tap_means[name]["still"], axis=0), np.mean(tap_means[name]["moving"], axis=0)
        print("  tap: regular (dy, dx) -> sampled at, static clips | pan/tilt clips")
        for k, r in enumerate(regular[name]):
            print(f"  {k}: ({r[0]:+.0f}, {r[1]:+.0f}) -> ({r[0] + still_taps[k, 0]:+.2f}, {r[1] + still_taps[k, 1]:+.2f})"
                  f" | ({r[0] + moving_taps[k, 0]:+.2f}, {r[1] + moving_taps[k, 1]:+.2f})")
        for k, rows in readings[name].items():
            base = np.mean([rows[i] for i in still], axis=0)
            agree = np.mean([_agrees(rows[i] - base, np.array(SCENE_MOTION[clips[i].label])) for i in moving])
            ratios = [float(np.dot(scale[i].pixels_per_frame(rows[i] - base), SCENE_MOTION[clips[i].label])) / clips[i].speed
                      for i in moving]
            what = {"argmax": "hard argmax", "weighted": "mean weighted by confidence",
                    "top quarter": "mean of the surest quarter"}.get(k, f"softmax at {k}x the temperature")
            print(f"  {what:<32} agrees {agree:.0%}, size ratio median {np.median(ratios):.2f}, "
                  f"within 2x {np.mean([0.5 <= r <= 2 for r in ratios]):.0%}")


if __name__ == "__main__":
    main()
