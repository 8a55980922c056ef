#!/usr/bin/env python
"""What one forward pass over every frame of an HD file costs in each decoder, at the timeline's size.

    PYTHONPATH=. python benchmarks/bench_timeline_decoders.py FILE [FILE ...] [--size 228x128] [--rounds 3]

A timeline with cuts decodes every frame once, forward, scaled to the model's input size; the decode
worker is its bottleneck (benchmarks/RESULTS.md). This compares, per file and round, CPU and wall
seconds of:
- decord (sifa's decoder), scaled in the decoder, 1 and 2 FFmpeg threads, read in chunks of 32;
- OpenCV (PySceneDetect's decoder): `grab` of every frame (FFmpeg's decoding alone, no colour
  conversion: the floor under any decoder of this file) and `read` (decoding plus conversion to BGR
  at full size, as PySceneDetect gets its frames);
- PyAV (`pip install av`; not a sifa dependency; its rows are left out without it), frame threads,
  scaled by swscale, with and without FFmpeg's `skip_loop_filter=all` (no deblocking: less work per
  frame, frames not bit-exact);
and the mean absolute difference (0-255) between PyAV's frames with and without the loop filter at
that size. Process CPU time counts every thread; the last column is CPU milliseconds per frame.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

CHUNK = 32


def decord_pass(path: Path, width: int, height: int, threads: int) -> int:
    import decord

    reader = decord.VideoReader(str(path), width=width, height=height, num_threads=threads)
    total = len(reader)
    for start in range(0, total, CHUNK):
        reader.get_batch(list(range(start, min(total, start + CHUNK)))).asnumpy()
    return total


def opencv_pass(path: Path, convert: bool) -> int:
    import cv2

    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0] if convert else capture.grab():
        count += 1
    capture.release()
    return count


def pyav_frames(path: Path, width: int, height: int, skip_loop_filter: bool, interpolation: str, keep: int = 0):
    """Decode every frame; return (count, the first `keep` frames as RGB arrays)."""
    import av

    kept = []
    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "FRAME"
        stream.thread_count = 2
        if skip_loop_filter:
            stream.codec_context.options = {"skip_loop_filter": "all"}
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation=interpolation)
            if count < keep:
                kept.append(rgb)
            count += 1
    return count, kept


def timed(fn) -> tuple[int, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    frames = fn()
    return frames, time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--size", default="228x128", help="WIDTHxHEIGHT the frames are scaled to (the model's)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    try:
        import av  # noqa: F401
        has_pyav = True
    except ImportError:
        has_pyav = False
        print("PyAV is not installed (pip install av): its rows are left out")

    runs = {
        "decord, 1 thread": lambda p: decord_pass(p, width, height, 1),
        "decord, 2 threads": lambda p: decord_pass(p, width, height, 2),
        "OpenCV grab (decoding alone)": lambda p: opencv_pass(p, False),
        "OpenCV read (decoding + BGR, full size)": lambda p: opencv_pass(p, True),
    }
    if has_pyav:
        runs.update({
            "PyAV, bilinear": lambda p: pyav_frames(p, width, height, False, "BILINEAR")[0],
            "PyAV, skip_loop_filter, bilinear": lambda p: pyav_frames(p, width, height, True, "BILINEAR")[0],
            "PyAV, skip_loop_filter, fast_bilinear": lambda p: pyav_frames(p, width, height, True, "FAST_BILINEAR")[0],
        })
    for path in args.files:
        if has_pyav:
            exact = np.stack(pyav_frames(path, width, height, False, "BILINEAR", keep=200)[1]).astype(np.int16)
            skipped = np.stack(pyav_frames(path, width, height, True, "BILINEAR", keep=200)[1]).astype(np.int16)
            print(f"{path.name}: first {len(exact)} frames at {width}x{height}, mean |difference| without the loop "
                  f"filter {np.abs(exact - skipped).mean():.2f} of 255 (max {np.abs(exact - skipped).max()})")
        else:
            print(f"{path.name}:")
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        frames = 0
        for _ in range(args.rounds):
            for name, run in runs.items():
                frames, wall, cpu = timed(lambda run=run, path=path: run(path))
                results[name].append((wall, cpu))
        base = min(cpu for _, cpu in results["decord, 1 thread"])
        print(f"  {'decoder':<40}{'best wall s':>12}{'best CPU s':>12}{'CPU / decord 1':>16}{'CPU ms/frame':>14}"
              f"   ({frames} frames)")
        for name, rows in results.items():
            best_wall, best_cpu = min(w for w, _ in rows), min(c for _, c in rows)
            print(f"  {name:<40}{best_wall:>12.2f}{best_cpu:>12.2f}{best_cpu / base:>16.2f}"
                  f"{1000 * best_cpu / frames:>14.2f}")


if __name__ == "__main__":
    main()
