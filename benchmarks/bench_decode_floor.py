"""How little CPU one clip's decoding can take: the floor under `sifa predict`'s end-to-end rate.

    PYTHONPATH=. python benchmarks/bench_decode_floor.py --inputs data/objects/test --limit 80

CPU milliseconds per video (this process and its reaped children; the decode worker's own CPU is
not counted, so its row is wall time) for: decord opening the file; decord reading the 16 frames
the shipped model samples; decord reading every frame; OpenCV reading every frame in order;
sifa's `Video` in-process and in its worker process; and, where PyAV is importable (not a sifa
dependency: `pip install av`), FFmpeg's decoding alone without colour conversion. With the model's
own CPU per clip (bench_predict.py), model / (model + floor) bounds what end to end can reach on
a machine whose cores both of them share.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sifa_cli.data.decode import DECODER_THREADS, VIDEO_EXTENSIONS, Video  # noqa: E402


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def sampled(num_frames: int, frames: int = 16, step: int = 2) -> list[int]:
    span = min(num_frames, (frames - 1) * step + 1)
    first = (num_frames - span) // 2
    return sorted({min(num_frames - 1, first + i * step) for i in range(frames)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", required=True, help="a folder of videos (searched recursively)")
    parser.add_argument("--limit", type=int, default=80)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    files = sorted(str(p) for p in Path(args.inputs).rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)[: args.limit]
    if not files:
        sys.exit(f"no videos under {args.inputs}")
    import decord

    def decord_open(path: str) -> None:
        decord.VideoReader(path, num_threads=DECODER_THREADS)

    def decord_sampled(path: str) -> None:
        reader = decord.VideoReader(path, num_threads=DECODER_THREADS)
        reader.get_batch(sampled(len(reader))).asnumpy()

    def decord_all(path: str) -> None:
        reader = decord.VideoReader(path, num_threads=DECODER_THREADS)
        reader.get_batch(list(range(len(reader)))).asnumpy()

    def opencv_all(path: str) -> None:
        capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, DECODER_THREADS])
        while capture.read()[0]:
            pass
        capture.release()

    def sifa_video(isolate: bool):
        def read(path: str) -> None:
            with Video(path, isolate=isolate) as video:
                video.read(sampled(video.num_frames))
        return read

    cases = [("decord: open", decord_open), ("decord: open + the 16 sampled frames", decord_sampled),
             ("decord: open + every frame", decord_all), ("OpenCV: every frame in order", opencv_all),
             ("sifa Video, in-process", sifa_video(False)), ("sifa Video, worker process (wall)", sifa_video(True))]
    try:
        import av

        def pyav_decode_only(path: str) -> None:
            with av.open(path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "NONE"
                for _ in container.decode(stream):
                    pass

        cases.append(("PyAV: every frame, no colour conversion", pyav_decode_only))
    except ImportError:
        pass

    print(f"{len(files)} videos from {args.inputs}; best of {args.rounds} rounds, ms per video")
    for name, fn in cases:
        fn(files[0])  # warm-up
        best = float("inf")
        for _ in range(args.rounds):
            wall, cpu = time.perf_counter(), cpu_seconds()
            for path in files:
                fn(path)
            used = (time.perf_counter() - wall) if "wall" in name else (cpu_seconds() - cpu)
            best = min(best, used)
        print(f"  {name:45s} {1e3 * best / len(files):7.2f}")


if __name__ == "__main__":
    main()
