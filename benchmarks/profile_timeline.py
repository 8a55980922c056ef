"""Where the seconds of `sifa predict VIDEO --timeline` (cuts on) go, stage by stage, in one process.

    PYTHONPATH=. python benchmarks/profile_timeline.py data/bench_hd/edited_720p_20s.mp4

Runs the timeline as the command does (shipped model, CPU, 1x1 views, 2 s windows every 1 s) with
timers around its stages: importing torch and sifa, loading the model, then, inside the run, the
decode worker's reads (`Video.read`, on the decoding thread: the wait for frames), PySceneDetect's
detector (`CutDetector.feed`), making the model inputs (`clip_views`) and the model
(`Predictor.forward`, on the main thread). Each stage gets its wall time and the CPU time of the
thread it ran on; the decode worker's own CPU (a separate process: decoding and scaling) is read from
/proc at the end. torch's OpenMP threads are not in any thread's CPU column: the process total shows
them. CPU seconds are the steadier guide on a shared machine; wall seconds say what waited on what.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time

spent: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])  # stage: [wall, thread CPU]
_lock = threading.Lock()


def _add(stage: str, wall: float, cpu: float) -> None:
    with _lock:
        spent[stage][0] += wall
        spent[stage][1] += cpu


def timed(owner, name: str, stage: str) -> None:
    function = getattr(owner, name)

    def wrapper(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            _add(stage, time.perf_counter() - wall, time.thread_time() - cpu)

    setattr(owner, name, wrapper)


def timed_generator(owner, name: str, stage: str) -> None:
    function = getattr(owner, name)

    def wrapper(*args, **kwargs):
        items = function(*args, **kwargs)
        while True:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                _add(stage, time.perf_counter() - wall, time.thread_time() - cpu)
            yield item

    setattr(owner, name, wrapper)


def process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    video = sys.argv[1]
    started, started_cpu = time.perf_counter(), time.process_time()
    wall, cpu = time.perf_counter(), time.process_time()
    import torch  # noqa: F401

    _add("import torch", time.perf_counter() - wall, time.process_time() - cpu)
    wall, cpu = time.perf_counter(), time.process_time()
    from sifa_cli.data import decode, decode_worker
    from sifa_cli.engine import predict, shots
    from sifa_cli.engine.timeline_options import TimelineOptions
    from sifa_cli.weights.checkpoint import load_model

    _add("import sifa, scenedetect", time.perf_counter() - wall, time.process_time() - cpu)
    wall, cpu = time.perf_counter(), time.process_time()
    model, meta = load_model(None, "cpu")
    predictor = predict.Predictor(model, meta, device="cpu")
    _add("load the model", time.perf_counter() - wall, time.process_time() - cpu)

    timed(decode.Video, "read", "  decode thread: waiting for frames (Video.read)")
    timed(shots.CutDetector, "feed", "  decode thread: cut detector")
    timed_generator(predict._Job, "clip_views", "  decode thread: model inputs (clip_views)")
    timed(predict.Predictor, "forward", "  main thread: model forward")
    timed_generator(shots.ShotTimelineJob, "inputs", "  decode thread: all of it")
    wall, cpu = time.perf_counter(), time.process_time()
    (result,) = list(predictor.timeline([video], 2.0, 1.0, options=TimelineOptions()))
    _add("the timeline run", time.perf_counter() - wall, time.process_time() - cpu)
    if not result.ok:
        raise SystemExit(result.error)
    worker_cpu = sum(process_cpu(worker._process.pid) for worker in decode_worker._idle if worker.alive)

    print(f"{'stage':52s} {'wall s':>7s} {'CPU s':>7s}")
    for stage, (stage_wall, stage_cpu) in spent.items():
        print(f"{stage:52s} {stage_wall:7.2f} {stage_cpu:7.2f}")
    print(f"{'decode worker process (decoding, scaling)':52s} {'':>7s} {worker_cpu:7.2f}")
    print(f"{'this process, all threads':52s} {time.perf_counter() - started:7.2f} {time.process_time() - started_cpu:7.2f}")
    print(f"torch threads during the run: see Predictor.timeline; {result.frames} frames, "
          f"{len(result.windows)} windows, cuts at {[first for first, _ in result.shots[1:]]}")


if __name__ == "__main__":
    main()
