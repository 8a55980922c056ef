"""Training throughput and pre-flight scan cost.

    python benchmarks/bench_train.py                       # sifa_resnet_small, 16 frames, 128 and 224 px
    python benchmarks/bench_train.py --model sifa_resnet_tiny --sizes 64
    python benchmarks/bench_train.py --model sifa_resnet50 --sizes 224 --device cuda --precision bf16 \
        --kernels reference auto --scan-videos 0       # SIFA-R50 training step, plain vs fastest kernel

- training clips/s: forward + both heads' loss + backward + AdamW step on random clips (the model
  alone; `sifa finetune` prints its end-to-end clips/s, decoding and augmentation included, per epoch);
- scan: seconds per video for the parallel pre-flight check `sifa finetune` runs on every video.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sifa_cli.data.dataset import find_labelled_videos, scan_videos
from sifa_cli.engine.optimization import classification_loss
from sifa_cli.models import create_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def training_clips_per_second(model_name: str, frames: int, size: int, batch: int, steps: int,
                              device: str = "cpu", precision: str = "fp32") -> tuple[float, float]:
    """(clips/s, peak GPU memory in GiB or 0 on CPU) of full training steps on random clips."""
    model = create_model(model_name, num_classes=4, clip_length=frames).train().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    clips = torch.randn(batch, 3, frames, size, size, device=device)
    labels = torch.randint(0, 4, (batch,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    cuda = device.startswith("cuda")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=dtype, enabled=dtype is not None):
            loss = classification_loss(model(clips), labels, 0.1)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()

    step()  # warm-up
    step()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    return batch / statistics.median(times), peak


def scan_seconds_per_video(videos: int, size: int, workers: int) -> float:
    spec = importlib.util.spec_from_file_location("make_motion_dataset", EXAMPLES / "make_motion_dataset.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    with tempfile.TemporaryDirectory() as root:
        generator.make_motion_dataset(Path(root), clips_per_class=max(1, videos // 4), size=size, frames=48, seed=0)
        samples = find_labelled_videos(Path(root))
        start = time.perf_counter()
        usable, skipped = scan_videos(samples, min_frames=16, workers=workers)
        elapsed = time.perf_counter() - start
        assert not skipped, skipped
        return elapsed / len(usable)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sifa_resnet_small")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--scan-videos", type=int, default=40)
    parser.add_argument("--scan-workers", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--kernels", nargs="+", default=["auto"],
                        help="SIFA kernels to compare (SIFA_KERNEL values: reference, auto, ...)")
    args = parser.parse_args()
    np.random.seed(0)
    torch.manual_seed(0)
    report = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": args.model,
        "batch": args.batch,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "precision": args.precision,
        "train": {},
    }
    for kernel in args.kernels:
        os.environ["SIFA_KERNEL"] = kernel
        for size in args.sizes:
            rate, peak = training_clips_per_second(args.model, args.frames, size, args.batch, args.steps,
                                                   args.device, args.precision)
            report["train"][f"{kernel} {args.frames}x{size}"] = {"clips_per_s": round(rate, 2),
                                                                 "peak_gib": round(peak, 2)}
    if args.scan_videos:
        report["scan_ms_per_video_128px_48frames"] = round(
            1e3 * scan_seconds_per_video(args.scan_videos, 128, args.scan_workers), 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
