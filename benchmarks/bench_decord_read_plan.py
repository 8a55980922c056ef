"""What the open-GOP read plan (sifa_cli/data/decode_backends.py, decord_read_plan) costs on a file:
clips of 16 frames every 2nd at seeded random starts, each from a freshly opened reader as `sifa predict`
reads a video, with the plan and with decord asked for exactly the clip's frames; best of --rounds.

    PYTHONPATH=. python benchmarks/bench_decord_read_plan.py VIDEO [--clips 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import sifa_cli.data.decode_backends as backends
from sifa_cli.data.decode import Video


def read_clips(path: str, starts: list[int]) -> float:
    began = time.perf_counter()
    for start in starts:
        with Video(path, backend="decord", isolate=False, short_side=128) as video:
            video.read(np.arange(start, start + 32, 2))
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("video")
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import decord

    reader = decord.VideoReader(args.video)
    frames, keys = len(reader), reader.get_key_indices()
    del reader
    starts = np.random.default_rng(0).integers(0, frames - 32, args.clips).tolist()
    planned = backends.decord_read_plan
    extra = sum(len(planned(list(range(s, s + 32, 2)), keys, None)[0]) - 16 for s in starts)
    times = {"with the plan": [], "exact frames only": []}
    for _ in range(args.rounds):
        backends.decord_read_plan = planned
        times["with the plan"].append(read_clips(args.video, starts))
        backends.decord_read_plan = lambda asked, keys, position: (list(asked), list(range(len(asked))))
        times["exact frames only"].append(read_clips(args.video, starts))
    backends.decord_read_plan = planned
    print(f"{args.video}: {frames} frames, {len(keys)} key frames; {args.clips} clips, "
          f"{extra} frames added to the reads by the plan")
    for name, values in times.items():
        print(f"{name}: best {min(values):.2f} s of {args.rounds}")
    print(f"ratio: {min(times['with the plan']) / min(times['exact frames only']):.3f}")


if __name__ == "__main__":
    main()
