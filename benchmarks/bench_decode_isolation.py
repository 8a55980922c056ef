"""What isolating native decoding in a worker process costs (issue 11: a decoder crash must fail
one file, not the run).

    python benchmarks/bench_decode_isolation.py                # 340x256 and 720p mp4v, 40 clips each
    python benchmarks/bench_decode_isolation.py --clips 100

For each video size, opens a video and reads one 16-frame clip scaled to a 256 short side (what a
one-clip-per-file `sifa predict` batch does), --clips times, alternately with decoding in the
decode worker (the default) and in this process (isolate=False). Reports per clip the CPU time of
both processes together (steady on a busy machine: the cost itself) and the wall time, plus the
worker's start-up time (once per run) and resident memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_decode import make_video  # noqa: E402

from sifa_cli.data import decode_worker  # noqa: E402
from sifa_cli.data.decode import Video, read_sampled  # noqa: E402
from sifa_cli.data.sampling import sample_clips  # noqa: E402

SIZES = {"340x256": (340, 256), "720p": (1280, 720)}


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_clip(path: Path, start: int, isolate: bool) -> None:
    with Video(path, short_side=256, isolate=isolate) as video:
        read_sampled(video, lambda n: sample_clips(16, 1, "dense", 1, start, min(n, start + 16)).indices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sifa-bench-decode"))
    args = parser.parse_args()
    if not Path("/proc/self/stat").exists():
        sys.exit("needs /proc (Linux) to read the worker's CPU time")
    args.workdir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    worker = decode_worker.acquire()
    worker.call(("close", 0, None), 60)  # a no-op request: the first answer means it is ready
    startup = time.perf_counter() - started
    rss = Path(f"/proc/{worker._process.pid}/status").read_text().split("VmRSS:")[1].split()[0]
    decode_worker.release(worker)
    print(f"worker start-up {startup * 1000:.0f} ms (once per run), {int(rss) / 1024:.0f} MiB resident before decoding")

    for name, (width, height) in SIZES.items():
        path = make_video(args.workdir / f"{name}_150.mp4", width, height, 150)
        one_clip(path, 0, True)
        one_clip(path, 0, False)
        pid = decode_worker._idle[-1]._process.pid
        cpu = {True: [], False: []}
        wall = {True: [], False: []}
        for i in range(args.clips):
            for isolate in (True, False) if i % 2 else (False, True):
                began, began_cpu, began_child = time.perf_counter(), time.process_time(), process_cpu(pid)
                one_clip(path, (i * 37) % 130, isolate)
                wall[isolate].append(time.perf_counter() - began)
                cpu[isolate].append(time.process_time() - began_cpu + process_cpu(pid) - began_child)
        assert decode_worker._idle[-1]._process.pid == pid, "the worker was restarted"
        print(f"\n{name}: open + read a 16-frame clip    CPU ms (both processes)   wall ms (median)")
        for isolate, label in ((True, "decode worker"), (False, "in-process")):
            print(f"  {label:<32} {sum(cpu[isolate]) / args.clips * 1000:12.1f} {statistics.median(wall[isolate]) * 1000:16.1f}")
        extra_cpu = (sum(cpu[True]) - sum(cpu[False])) / sum(cpu[False])
        extra_wall = statistics.median(wall[True]) / statistics.median(wall[False]) - 1
        print(f"  isolation costs {extra_cpu:+.1%} CPU, {extra_wall:+.1%} wall")


if __name__ == "__main__":
    main()
