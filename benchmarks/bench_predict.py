"""End-to-end `sifa predict` throughput against the model alone on the same clips.

    python benchmarks/bench_predict.py                           # sifa_resnet_small, 16x224, CPU
    python benchmarks/bench_predict.py --model sifa_resnet50 --device cuda --batch-size 16 --videos 64
    python benchmarks/bench_predict.py --views 2x3 --width 1280 --height 720
    python benchmarks/bench_predict.py --weights default --inputs data/objects/test --batch-size 8

With --inputs (files, folders or patterns, as `sifa predict` takes them) those videos are used instead
of generated ones; with --weights (a registry name, a checkpoint, or "default" for the shipped
model) that model and its input spec and views instead of a random --model.

Otherwise generates --videos mp4v files and a randomly initialised checkpoint of --model (speed does
not depend on the weights). Then measures, after a warm-up:

  end to end    Predictor.predict over the files: open, decode, sample, resize, crop,
                normalise, batch, forward, average, rank (the decoding thread overlaps the model)
  ..., decoding in-process   the same with the decoders in this process instead of the decode
                worker process (isolation off): the difference is what isolation costs; CPU
                seconds count this process only, so compare wall times
  model alone   the same clips, already decoded and normalised in memory, through
                Predictor.forward in batches of --batch-size, and of 1
  decode alone  producing those clips (no model), one thread

and prints clips per second for each (a clip = one view: clips x crops per video); the first two
alternate for --rounds rounds and the best round of each counts.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from sifa_cli.allocator import keep_freed_memory
from sifa_cli.data import decode_worker
from sifa_cli.data.decode import Video, read_sampled
from sifa_cli.data.inputs import find_videos
from sifa_cli.data.sampling import parse_views, sample_clips
from sifa_cli.data.spec import InputSpec
from sifa_cli.data.transforms import evaluation_views
from sifa_cli.engine.device import resolve_device
from sifa_cli.engine.predict import Predictor
from sifa_cli.models import create_model
from sifa_cli.weights.checkpoint import load_model, save_checkpoint


def make_videos(folder: Path, count: int, width: int, height: int, seconds: float) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"video_{i:03d}.mp4"
        base = cv2.resize(rng.integers(0, 255, (height // 8, width // 8, 3), np.uint8), (width * 2, height))
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (width, height))
        for t in range(int(seconds * 25)):
            writer.write(np.ascontiguousarray(base[:, (t * 5) % width : (t * 5) % width + width]))
        writer.release()
        paths.append(path)
    return paths


def decoded_clips(paths: list[Path], spec: InputSpec, views) -> list[torch.Tensor]:
    clips = []
    short_side = spec.resize if views.crops == 1 else spec.size
    for path in paths:
        with Video(path, short_side=short_side) as video:
            frames, _ = read_sampled(
                video, lambda n: sample_clips(spec.frames, spec.step, spec.sampling, views.clips, 0, n).indices
            )
        for clip in frames:
            clips += evaluation_views(clip, spec.size, spec.resize, views.crops, spec.mean, spec.std)
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sifa_resnet_small")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--views", default=None, help="default: 1x1, or the --weights model's own")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--width", type=int, default=340)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--decoders", type=int, default=None, help="videos decoded at once (default: sifa's)")
    parser.add_argument("--inputs", nargs="+", help="existing videos, folders or patterns instead of generated videos")
    parser.add_argument("--weights", help='a registry name, a checkpoint, or "default": instead of a random --model')
    parser.add_argument("--plain-malloc", action="store_true",
                        help="leave glibc's malloc as it is (sifa keeps freed memory: sifa_cli/allocator.py)")
    args = parser.parse_args()
    if not args.plain_malloc:
        keep_freed_memory()  # as every sifa command does

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as workdir:
        folder = Path(workdir)
        if args.inputs:
            paths = find_videos(args.inputs).videos
            if not paths:
                raise SystemExit(f"no videos in {' '.join(args.inputs)}")
            source = f"{len(paths)} videos from {' '.join(args.inputs)}"
        else:
            paths = make_videos(folder, args.videos, args.width, args.height, args.seconds)
            source = f"{args.videos} videos {args.width}x{args.height}, {args.seconds:g} s each"
        if args.weights:
            model, meta = load_model(None if args.weights == "default" else args.weights, device)
            spec = InputSpec.from_meta(meta.get("input"))
            views = parse_views(args.views) if args.views else parse_views(spec.views)
            model_name = meta.get("arch", "model")
        else:
            spec = InputSpec(frames=args.frames, size=args.size, resize=args.resize)
            views = parse_views(args.views or "1x1")
            torch.manual_seed(0)
            model = create_model(args.model, num_classes=400, clip_length=args.frames)
            categories = [f"class_{i}" for i in range(400)]
            checkpoint = save_checkpoint(folder / "model.safetensors", model, {
                "arch": args.model, "arch_kwargs": {"clip_length": args.frames}, "categories": categories,
                "input": spec.to_meta(), "source": "benchmark, random weights", "license": "none"})
            model, meta = load_model(checkpoint, device)
            model_name = args.model
        predictor = Predictor(model, meta, device=device, precision=args.precision, views=views,
                              batch_size=args.batch_size, top_k=5, decoders=args.decoders)

        list(predictor.predict(paths[:1]))  # warm-up: allocator, kernels, decoder libraries
        started = time.perf_counter()
        clips = decoded_clips(paths, spec, views)
        decode_alone = time.perf_counter() - started

        def run_end_to_end() -> tuple[float, float]:
            predictor.stats.__init__()
            started, started_cpu = time.perf_counter(), time.process_time()
            results = list(predictor.predict(paths))
            assert all(r.ok for r in results), [r.error for r in results if not r.ok]
            assert predictor.stats.inputs == len(clips)
            return time.perf_counter() - started, time.process_time() - started_cpu

        def run_in_process() -> tuple[float, float]:
            decode_worker.AVAILABLE = False  # Video then decodes in this process, as before isolation
            try:
                return run_end_to_end()
            finally:
                decode_worker.AVAILABLE = True

        def run_model_alone(batch_size: int = args.batch_size) -> tuple[float, float]:
            started, started_cpu = time.perf_counter(), time.process_time()
            for first in range(0, len(clips), batch_size):
                predictor.forward(torch.stack(clips[first : first + batch_size]))
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - started, time.process_time() - started_cpu

        # Alternate the runs and keep each one's best round: other load on the machine only slows
        # things down. CPU seconds (all threads of this process) are the steadier measure there.
        best: dict[str, tuple[float, float]] = {}
        runs = {"end to end": run_end_to_end, "..., decoding in-process": run_in_process, f"model alone, batches of {args.batch_size}": run_model_alone,
                "model alone, batches of 1": lambda: run_model_alone(1)}
        batches = 0
        for _ in range(args.rounds):
            for name, run in runs.items():
                wall, cpu = run()
                if name == "end to end":
                    batches = predictor.stats.batches
                old_wall, old_cpu = best.get(name, (float("inf"), float("inf")))
                best[name] = (min(wall, old_wall), min(cpu, old_cpu))
        clips_run = len(clips)

    print(f"{model_name}, {spec.frames}x{spec.size} clips, views {views}, batch {args.batch_size}, "
          f"{predictor.decoders} decoder(s), "
          f"{args.precision} on {device} (torch threads {torch.get_num_threads()}); {source}; {clips_run} clips")
    print(f"  {'':<28} {'clips/s':>8} {'wall s':>8} {'CPU s/clip':>11}")
    for name, (wall, cpu) in best.items():
        extra = f"   ({batches} forward passes)" if name == "end to end" else ""
        print(f"  {name:<28} {clips_run / wall:8.2f} {wall:8.2f} {cpu / clips_run:11.3f}{extra}")
    print(f"  {'decode alone (one thread)':<28} {clips_run / decode_alone:8.2f} {decode_alone:8.2f}")
    e2e_wall, e2e_cpu = best["end to end"]
    print(f"  decode worker (isolation) cost: {e2e_wall / best['..., decoding in-process'][0] - 1:+.1%} wall time")
    model_wall, model_cpu = best[f"model alone, batches of {args.batch_size}"]
    print(f"  end to end / model alone: {model_wall / e2e_wall:.2f} by wall time, {model_cpu / e2e_cpu:.2f} by CPU time")


if __name__ == "__main__":
    main()
