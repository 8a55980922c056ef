"""Timeline speed with shot-cut detection against PySceneDetect's `detect-content` on HD H.264 files.

    PYTHONPATH=. python benchmarks/bench_timeline_cuts.py --folder data/bench_hd --seconds 20 120 --rounds 2

Makes (once) a 1280x720 and a 1920x1080 H.264 file at 25 fps of each length from real photographs (scikit-image's
coffee cup, tests/fixtures/coffee.jpg, and matplotlib's sample portrait of Grace Hopper): a virtual
camera (examples/camera/render.py) pans, tilts, zooms or holds over one photograph, then cuts to the
other, every 2-5 s, encoded by FFmpeg's libx264 (`ffmpeg` on PATH; default GOP). Then, alternating in
the same run, the wall time of

- `sifa predict FILE --timeline --format json` (cuts on, the shipped model, CPU), and
- `scenedetect -i FILE detect-content list-scenes -n` (PySceneDetect's defaults),

each as a subprocess. Throughput is seconds of video per second of wall time; the ratio is sifa's
over PySceneDetect's on the same file and round. Cuts found by each are compared with the true ones.
Also printed: the machine's fp32 sgemm rate (3136x1024x256 `torch.mm`), and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_allocator import sgemm_gmac_per_s  # this folder is on the path when run as a script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

LABELS = ("pan left", "pan right", "static", "tilt down", "tilt up", "zoom in", "zoom out")


def make_video(path: Path, width: int, height: int, seconds: float, fps: int = 25, seed: int = 0) -> list[int]:
    """Write the edited file with FFmpeg; returns the true cut frames."""
    from edited_media import photographs, shot_frames

    rng = np.random.default_rng(seed)
    photos = photographs()
    total = int(seconds * fps)
    cuts, position, number = [], 0, 0
    ffmpeg = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-r", str(fps),
         "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", str(path)],
        stdin=subprocess.PIPE)
    assert ffmpeg.stdin is not None
    while position < total:
        length = min(total - position, int(rng.integers(2 * fps, 5 * fps)))
        if position:
            cuts.append(position)
        label = LABELS[int(rng.integers(len(LABELS)))]
        for frame in shot_frames(label, length, photos[number % 2], seed=seed * 1000 + number, size=(width, height),
                                 fps=fps):
            ffmpeg.stdin.write(frame.tobytes())
        position += length
        number += 1
    ffmpeg.stdin.close()
    if ffmpeg.wait() != 0:
        raise SystemExit(f"ffmpeg failed writing {path}")
    return cuts


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_sifa(path: Path, root: Path = ROOT) -> tuple[float, list[int], int]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sifa_cli.cli.main", "predict", str(path), "--timeline", "--format",
                           "json", "--device", "cpu"], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"sifa failed: {done.stderr[-500:]}")
    (record,) = json.loads(done.stdout)
    return wall, [s["start_frame"] for s in record["shots"][1:]], record["frames"]


def run_scenedetect(path: Path, out: Path) -> tuple[float, list[int]]:
    start = time.perf_counter()
    done = subprocess.run(["scenedetect", "-i", str(path), "-o", str(out), "detect-content", "list-scenes"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"scenedetect failed: {done.stderr[-500:]}")
    listing = next(out.glob(f"{path.stem}-Scenes.csv"))
    rows = listing.read_text().splitlines()[2:]  # the cut list and the header come first
    cuts = [int(row.split(",")[1]) - 1 for row in rows[1:]]
    listing.unlink()
    return wall, cuts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=ROOT / "data" / "bench_hd")
    parser.add_argument("--seconds", type=float, nargs="+", default=[20.0], help="lengths of the files")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", type=Path, help="another checkout of sifa (e.g. a clone at an older commit), "
                        "run as a third tool, 'sifa-baseline', for a before/after in the same run")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None or shutil.which("scenedetect") is None:
        raise SystemExit("needs ffmpeg (apt-get install ffmpeg) and scenedetect (pip install scenedetect-headless)")
    args.folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for seconds in args.seconds:
        for size, (width, height) in {"720p": (1280, 720), "1080p": (1920, 1080)}.items():
            path = args.folder / f"edited_{size}_{seconds:g}s.mp4"
            truth_file = path.with_suffix(".cuts.json")
            if not path.exists() or not truth_file.exists():
                truth_file.write_text(json.dumps(make_video(path, width, height, seconds)))
            files[f"{size} {seconds:g} s"] = (path, json.loads(truth_file.read_text()), seconds)
    print(f"load average before: {os.getloadavg()[0]:.2f}; sgemm {sgemm_gmac_per_s():.1f} GMAC/s", flush=True)
    tools = ["sifa", "scenedetect"] + (["sifa-baseline"] if args.baseline else [])
    results: dict[str, dict[str, list[float]]] = {name: {tool: [] for tool in tools} for name in files}
    cpu_used: dict[str, dict[str, list[float]]] = {name: {tool: [] for tool in tools} for name in files}
    for round_number in range(args.rounds):
        for name, (path, truth, seconds) in files.items():
            order = tools if round_number % 2 == 0 else tools[::-1]
            for tool in order:
                cpu = children_cpu()
                if tool == "sifa":
                    wall, cuts, frames = run_sifa(path)
                elif tool == "sifa-baseline":
                    wall, cuts, frames = run_sifa(path, args.baseline.resolve())
                else:
                    wall, cuts = run_scenedetect(path, args.folder)
                cpu = children_cpu() - cpu  # the subprocess and its children (sifa's decode worker)
                results[name][tool].append(wall)
                cpu_used[name][tool].append(cpu)
                hits = sum(any(abs(c - t) <= 2 for c in cuts) for t in truth)
                print(f"round {round_number + 1} {name} {tool}: {wall:.1f} s wall, {cpu:.1f} s CPU, "
                      f"{seconds / wall:.2f} s of "
                      f"video/s; {hits}/{len(truth)} true cuts found within 2 frames, {len(cuts)} cuts in all",
                      flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}; sgemm {sgemm_gmac_per_s():.1f} GMAC/s")
    print("| file | sifa --timeline (cuts on), best wall s | scenedetect detect-content, best wall s | throughput "
          "ratio sifa/scenedetect (best) | per-round ratios | CPU s sifa / scenedetect (best) |")
    print("|---|---:|---:|---:|---|---|")
    for name, walls in results.items():
        ratios = [b / a for a, b in zip(walls["sifa"], walls["scenedetect"])]
        cpu = cpu_used[name]
        print(f"| {name} | {min(walls['sifa']):.1f} | {min(walls['scenedetect']):.1f} | "
              f"{min(walls['scenedetect']) / min(walls['sifa']):.2f} | {', '.join(f'{r:.2f}' for r in ratios)} | "
              f"{min(cpu['sifa']):.1f} / {min(cpu['scenedetect']):.1f} |")
    if args.baseline:
        print("\n| file | sifa-baseline best wall s | CPU s (best) | ratio baseline/scenedetect (best) | "
              "sifa / sifa-baseline wall (best) |")
        print("|---|---:|---:|---:|---:|")
        for name, walls in results.items():
            base = min(walls["sifa-baseline"])
            print(f"| {name} | {base:.1f} | {min(cpu_used[name]['sifa-baseline']):.1f} | "
                  f"{min(walls['scenedetect']) / base:.2f} | {min(walls['sifa']) / base:.2f} |")


if __name__ == "__main__":
    main()
