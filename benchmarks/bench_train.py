"""Training throughput and pre-flight scan cost.

    python benchmarks/bench_train.py                       # sifa_resnet_small, 16 frames, 128 and 224 px
    python benchmarks/bench_train.py --model sifa_resnet_tiny --sizes 64

- training clips/s: forward + both heads' loss + backward + AdamW step on random clips (the model
  alone; `sifa finetune` prints its end-to-end clips/s, decoding and augmentation included, per epoch);
- scan: seconds per video for the parallel pre-flight check `sifa finetune` runs on every video.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sifa_cli.data.dataset import find_labelled_videos, scan_videos
from sifa_cli.engine.train import classification_loss
from sifa_cli.models import create_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def training_clips_per_second(model_name: str, frames: int, size: int, batch: int, steps: int) -> float:
    model = create_model(model_name, num_classes=4, clip_length=frames).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    clips = torch.randn(batch, 3, frames, size, size)
    labels = torch.randint(0, 4, (batch,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        classification_loss(model(clips), labels, 0.1).backward()
        optimizer.step()

    step()  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


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
    args = parser.parse_args()
    np.random.seed(0)
    torch.manual_seed(0)
    report = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": args.model,
        "batch": args.batch,
        "train_clips_per_s": {
            f"{args.frames}x{size}": round(training_clips_per_second(args.model, args.frames, size, args.batch, args.steps), 2)
            for size in args.sizes
        },
        "scan_ms_per_video_128px_48frames": round(1e3 * scan_seconds_per_video(args.scan_videos, 128, args.scan_workers), 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
