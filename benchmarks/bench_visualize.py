"""How long `sifa visualize` takes for one 16-frame clip on CPU.

    python benchmarks/bench_visualize.py                            # sifa_resnet_small, 16x224, 320x240 clip
    python benchmarks/bench_visualize.py --model sifa_resnet50 --views offsets,attention,point --block all

Two numbers: the whole command as a user runs it (a fresh `python -m sifa_cli.cli.main visualize`
process: imports, checkpoint load, decode, forward pass, drawing, mp4 encoding), and the library call
`visualize()` in a warm process, split into its stages (median of --repeats after one warm-up). The
model has random weights (timings do not depend on them) and is saved as a real checkpoint first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from sifa_cli import visualize as vis
from sifa_cli.models import create_model
from sifa_cli.weights.checkpoint import save_checkpoint

FRAMES = 16


def write_clip(path: Path, frames: int, width: int, height: int, fps: float = 25.0) -> None:
    """A disc crossing a smooth background: something that moves, in a real mp4 file."""
    rng = np.random.default_rng(0)
    background = cv2.resize(rng.integers(40, 200, (6, 8, 3)).astype(np.uint8), (width, height),
                            interpolation=cv2.INTER_CUBIC)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for i in range(frames):
        frame = background.copy()
        cv2.circle(frame, (width // 8 + i * width // (frames + 8), height // 2), height // 8, (250, 250, 250), -1)
        writer.write(frame)
    writer.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sifa_resnet_small")
    parser.add_argument("--size", type=int, default=224, help="model input side (resize = size * 8/7)")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--views", default="offsets,attention")
    parser.add_argument("--block", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = create_model(args.model, num_classes=400, clip_length=FRAMES).eval()
    meta = {
        "format": "sifa-checkpoint/1", "arch": args.model, "arch_kwargs": {"clip_length": FRAMES},
        "categories": [f"class {i}" for i in range(400)],
        "input": {"frames": FRAMES, "step": 1, "sampling": "dense", "size": args.size,
                  "resize": round(args.size * 8 / 7)},
    }
    views = tuple(v for v in args.views.split(",") if v)
    point = None
    if "point" in views:
        point = (args.width / 2, args.height / 2)
        views = tuple(v for v in views if v != "point")

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        clip = folder / "clip.mp4"
        write_clip(clip, 2 * FRAMES, args.width, args.height)
        weights = save_checkpoint(folder / "model.safetensors", model, meta)

        command = [sys.executable, "-m", "sifa_cli.cli.main", "visualize", str(clip), "--weights", str(weights),
                   "--device", "cpu", "--out", str(folder / "cli.mp4")]
        command += [f"--{v}" for v in views]
        if point is not None:
            command += ["--point", f"{point[0]:g},{point[1]:g}"]
        if args.block:
            command += ["--block", args.block]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        command_s = time.perf_counter() - start

        runs = []
        for _ in range(args.repeats + 1):
            report = vis.visualize(clip, model, meta, folder / "lib.mp4", views=views, block=args.block, point=point)
            runs.append(report.seconds)
        warm = {stage: statistics.median(run[stage] for run in runs[1:]) for stage in runs[0]}

    print(json.dumps({
        "model": args.model, "clip": f"{FRAMES} frames of a {args.width}x{args.height} mp4, model input {args.size}",
        "views": list(report.views), "blocks": report.blocks, "output": f"{report.size[0]}x{report.size[1]} {report.codec}",
        "torch_threads": torch.get_num_threads(),
        "command_wall_s": round(command_s, 2),
        "library_first_call_s": {k: round(v, 3) for k, v in runs[0].items()},
        "library_warm_median_s": {k: round(v, 3) for k, v in warm.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
