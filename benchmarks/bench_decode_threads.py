"""Threads around decoding: FFmpeg's own per reader, and torch's OpenMP team on the decoding thread.

    python benchmarks/bench_decode_threads.py              # 5 rounds
    python benchmarks/bench_decode_threads.py --rounds 9

Generates 4 s mp4v videos (bench_predict.make_videos: 25 fps, key frame every 12 frames) at
640x360 and at 170x128 (the size of the camera corpus) and reads one 16-frame clip (every 2nd
frame, as the shipped model samples) from each, with a fresh reader per clip as `sifa predict` does:

  decord / opencv, FFmpeg threads auto   the decoders' default (frame threading on every core)
  decord / opencv, FFmpeg threads 1      sifa's setting (`DECODER_THREADS` in sifa_cli/data/decode_backends.py)
  worker read + prepare, torch           `Video` (decode worker process) + the model input made with
                                         torch ops on this thread, as sifa did before
  worker read + prepare, numpy           the same with `to_model_input` as it is now (numpy)

Frames are scaled to a 128 short side in the decoder, as for the shipped model. The rows alternate
within each round; the median wall and CPU milliseconds per clip are printed (CPU time of this
process: the decode worker's time is not in it, so compare wall times for the last two rows).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from bench_predict import make_videos  # this folder is on the path when run as a script
from sifa_cli.data import decode, decode_backends
from sifa_cli.data.transforms import evaluation_views

SIZES = {"640x360": (640, 360), "170x128": (170, 128)}
INDICES = np.arange(34, 66, 2)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torch_model_input(frames: np.ndarray):
    """The model input as sifa made it before: torch ops on the calling thread."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(3, 1, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1, 1)
    return tensor.sub_(mean).div_(std)


def read_backend(backend_class, threads: int, path: Path) -> None:
    saved, decode_backends.DECODER_THREADS = decode_backends.DECODER_THREADS, threads
    try:
        backend = backend_class(path, 128)
        backend.read_sorted(INDICES)
        backend.close()
    finally:
        decode_backends.DECODER_THREADS = saved


def read_and_prepare(prepare: str, path: Path) -> None:
    with decode.Video(path, short_side=128) as video:
        frames = video.read(INDICES)
    if prepare == "torch":  # the centre crop, as evaluation_views takes it for 1x1 views
        height, width = frames.shape[1:3]
        top, left = (height - 128) // 2, (width - 128) // 2
        torch_model_input(frames[:, top : top + 128, left : left + 128])
    else:
        evaluation_views(frames, 128, 128, 1, MEAN, STD)


ROWS = {
    "decord, FFmpeg threads auto": lambda p: read_backend(decode_backends.DecordBackend, 0, p),
    "decord, FFmpeg threads 1": lambda p: read_backend(decode_backends.DecordBackend, 1, p),
    "opencv, FFmpeg threads auto": lambda p: read_backend(decode_backends.OpenCVBackend, 0, p),
    "opencv, FFmpeg threads 1": lambda p: read_backend(decode_backends.OpenCVBackend, 1, p),
    "worker read + prepare, torch": lambda p: read_and_prepare("torch", p),
    "worker read + prepare, numpy": lambda p: read_and_prepare("numpy", p),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--videos", type=int, default=8, help="videos per size")
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        videos = {}
        for name, (width, height) in SIZES.items():
            (Path(tmp) / name).mkdir()
            videos[name] = make_videos(Path(tmp) / name, args.videos, width, height, seconds=4.0)  # 100 frames
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for size, paths in videos.items():
                for row, read in ROWS.items():
                    wall, cpu = time.perf_counter(), time.process_time()
                    for path in paths:
                        read(path)
                    results.setdefault((size, row), []).append(
                        ((time.perf_counter() - wall) / len(paths), (time.process_time() - cpu) / len(paths)))
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), OpenCV {cv2.__version__}; "
          f"{args.videos} videos per size, {args.rounds} rounds, medians per clip")
    print("| video | row | wall ms | CPU ms (this process) |")
    print("|---|---|---:|---:|")
    for (size, row), values in results.items():
        wall = statistics.median(v[0] for v in values) * 1e3
        cpu = statistics.median(v[1] for v in values) * 1e3
        print(f"| {size} | {row} | {wall:.1f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
