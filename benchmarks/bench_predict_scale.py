"""`sifa predict` throughput on 1, 2, ... processes (torchrun), as a user runs it.

    python benchmarks/bench_predict_scale.py                          # 1 and 2 CPU processes
    python benchmarks/bench_predict_scale.py --processes 1,2,4,8 --device cuda --model sifa_resnet50 --videos 256

Generates --videos mp4v files and a randomly initialised checkpoint of --model, then runs
`sifa predict FOLDER --output results.jsonl` as a subprocess: plain for 1 process, under
`torchrun --standalone --nproc_per_node P` otherwise. On the CPU the cores are divided between the
processes (OMP_NUM_THREADS = cores / P); on CUDA each process takes the GPU of its local rank.
The process counts alternate for --rounds rounds and the best round of each counts. Two figures:

  in-run clips/s   what `sifa predict` reports: clips over the time from the model being loaded
                   to the last result written (rank 0's clock)
  command clips/s  clips over the whole command's wall time, process start and model loading included
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench_predict import make_videos
from sifa_cli.data.spec import InputSpec
from sifa_cli.models import create_model
from sifa_cli.weights.checkpoint import save_checkpoint

SUMMARY = re.compile(r"(\d+) clip\(s\) \(\S+ views\) in ([\d.]+) s, ([\d.]+) clips/s on (.*?)(?: · |$)", re.M)


def run_predict(processes: int, folder: Path, weights: Path, args, cores: int) -> tuple[int, float, float, str]:
    output = folder / f"results_{processes}.jsonl"
    output.unlink(missing_ok=True)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command = [*(launcher if processes > 1 else [sys.executable]), "-m", "sifa_cli.cli.main", "predict",
               str(folder / "videos"), "--weights", str(weights), "--output", str(output), "--device", args.device,
               "--precision", args.precision, "--batch-size", str(args.batch_size)]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // processes)), "COLUMNS": "300"}
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    match = SUMMARY.search(done.stderr)
    if done.returncode != 0 or not match:
        sys.exit(f"sifa predict on {processes} process(es) failed:\n{done.stderr[-3000:]}")
    clips, seconds, _, where = match.groups()
    return int(clips), float(seconds), wall, where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--model", default="sifa_resnet_small")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--width", type=int, default=340)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cores", type=int, default=0, help="CPU cores to divide (default: os.cpu_count())")
    args = parser.parse_args()
    counts = [int(p) for p in args.processes.split(",")]
    cores = args.cores or os.cpu_count() or 1

    with tempfile.TemporaryDirectory() as workdir:
        folder = Path(workdir)
        (folder / "videos").mkdir()
        make_videos(folder / "videos", args.videos, args.width, args.height, args.seconds)
        torch.manual_seed(0)
        model = create_model(args.model, num_classes=400, clip_length=args.frames)
        spec = InputSpec(frames=args.frames, size=args.size, resize=args.resize)
        weights = save_checkpoint(folder / "model.safetensors", model, {
            "arch": args.model, "arch_kwargs": {"clip_length": args.frames},
            "categories": [f"class_{i}" for i in range(400)], "input": spec.to_meta(),
            "source": "benchmark, random weights", "license": "none"})
        runs: dict[int, list[tuple[int, float, float, str]]] = {p: [] for p in counts}
        for _ in range(args.rounds):
            for p in counts:
                runs[p].append(run_predict(p, folder, weights, args, cores))
        best = {p: (r[0][0], min(x[1] for x in r), min(x[2] for x in r), r[0][3]) for p, r in runs.items()}

    print(f"{args.model}, {args.frames}x{args.size}, batch {args.batch_size}, {args.precision} on {args.device}; "
          f"{args.videos} videos {args.width}x{args.height}, {args.seconds:g} s each; {cores} cores divided "
          f"between the processes; best of {args.rounds} rounds")
    print(f"  {'processes':<10} {'in-run clips/s':>15} {'speed-up':>9} {'command clips/s':>16} {'speed-up':>9}  where")
    base_run, base_wall = best[counts[0]][0] / best[counts[0]][1], best[counts[0]][0] / best[counts[0]][2]
    for p in counts:
        clips, seconds, wall, where = best[p]
        print(f"  {p:<10} {clips / seconds:15.2f} {clips / seconds / base_run:9.2f} {clips / wall:16.2f} "
              f"{clips / wall / base_wall:9.2f}  {where}")


if __name__ == "__main__":
    main()
