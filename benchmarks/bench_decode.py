"""Time to decode and sample one 16-frame clip: sifa's reader against a bare decord get_batch.

    python benchmarks/bench_decode.py                 # 720p and 340x256 mp4v videos, 10 s each
    python benchmarks/bench_decode.py --repeats 30 --seconds 20

Videos are generated once into --workdir (OpenCV, mp4v, 25 fps, key frame every 12 frames).
For each size, the same random clip positions (16 consecutive frames) are read by:

  decord get_batch         a VideoReader opened once, get_batch(16 indices): the floor
  sifa Video.read          our reader (decord backend, time limit, index checks), opened once
  sifa Video.read, short 256   the same, frames scaled in the decoder to a 256 short side,
                           which is what `sifa predict` asks for (resize 256)
  sifa opencv              our OpenCV fallback, opened once
  open + read, decord      a fresh VideoReader per clip, as a one-clip-per-file batch does
  open + read, sifa        a fresh Video(short_side=256) + read_sampled(sample_clips) per clip
  ..., in-process          the same two sifa rows with isolate=False: the decoder runs in this
                           process instead of the decode worker; the difference is the cost of
                           isolating native decoding (frames cross a socket; the worker's CPU
                           time is not in the cpu column, so compare wall times)

Reports the median wall and CPU milliseconds per clip (CPU time counts every thread of the
process, so it is the steadier number on a shared machine) and their ratios to the floor.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from sifa_cli.data.decode import Video, read_sampled
from sifa_cli.data.sampling import sample_clips

SIZES = {"720p": (1280, 720), "340x256": (340, 256)}
CLIP = 16


def make_video(path: Path, width: int, height: int, frames: int) -> Path:
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    # Smooth moving texture: compresses like camera footage, not like noise.
    base = cv2.resize(rng.integers(0, 255, (height // 8, width // 8, 3), np.uint8), (width * 2, height))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (width, height))
    for t in range(frames):
        frame = np.ascontiguousarray(base[:, (t * 7) % width : (t * 7) % width + width])
        cv2.putText(frame, str(t), (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
        writer.write(frame)
    writer.release()
    return path


def bench(path: Path, repeats: int, num_frames: int) -> dict[str, tuple[float, float]]:
    import decord

    rng = np.random.default_rng(1)
    starts = [int(s) for s in rng.integers(0, num_frames - CLIP, repeats)]
    reader = decord.VideoReader(str(path))
    ours = Video(path, backend="decord")
    ours_scaled = Video(path, backend="decord", short_side=256)
    ours_scaled_here = Video(path, backend="decord", short_side=256, isolate=False)
    ours_cv = Video(path, backend="opencv")

    def sifa_cold(start: int, isolate: bool = True) -> None:
        with Video(path, short_side=256, isolate=isolate) as video:
            # the centred dense clip of a window starting at `start`, as prediction samples it
            read_sampled(video, lambda n: sample_clips(CLIP, 1, "dense", 1, start, min(n, start + CLIP)).indices)

    methods = {
        "decord get_batch": lambda s: reader.get_batch(list(range(s, s + CLIP))).asnumpy(),
        "sifa Video.read": lambda s: ours.read(np.arange(s, s + CLIP)),
        "sifa Video.read, short 256": lambda s: ours_scaled.read(np.arange(s, s + CLIP)),
        "..., in-process": lambda s: ours_scaled_here.read(np.arange(s, s + CLIP)),
        "sifa opencv": lambda s: ours_cv.read(np.arange(s, s + CLIP)),
        "open + read, decord": lambda s: decord.VideoReader(str(path)).get_batch(list(range(s, s + CLIP))).asnumpy(),
        "open + read, sifa": sifa_cold,
        "open + read, sifa in-process": lambda s: sifa_cold(s, isolate=False),
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    for fn in methods.values():
        fn(starts[0])  # warm-up
    # Interleaved, in rotating order, so a busy moment on the machine hits every method alike.
    names = list(methods)
    for i, start in enumerate(starts):
        for name in names[i % len(names):] + names[: i % len(names)]:
            began, began_cpu = time.perf_counter(), time.process_time()
            methods[name](start)
            times[name].append(time.perf_counter() - began)
            cpu[name].append(time.process_time() - began_cpu)
    return {name: (statistics.median(times[name]) * 1000, statistics.median(cpu[name]) * 1000) for name in methods}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sifa-bench-decode"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    num_frames = int(args.seconds * 25)
    print(f"python {sys.version.split()[0]}, opencv {cv2.__version__}, clip of {CLIP} consecutive frames, "
          f"median of {args.repeats} random positions (ms per clip)")
    for name, (width, height) in SIZES.items():
        path = make_video(args.workdir / f"{name}_{num_frames}.mp4", width, height, num_frames)
        results = bench(path, args.repeats, num_frames)
        floor, floor_cpu = results["decord get_batch"]
        print(f"\n{name} ({width}x{height}, {num_frames} frames, {path.stat().st_size / 1e6:.1f} MB)"
              f"{'':>6}wall ms  ratio    cpu ms  ratio")
        for label, (ms, cpu_ms) in results.items():
            print(f"  {label:<28} {ms:8.1f}  x{ms / floor:.2f}  {cpu_ms:8.1f}  x{cpu_ms / floor_cpu:.2f}")


if __name__ == "__main__":
    main()
