"""`sifa predict` on many processes: torchrun ranks that share one output, and `--shard K/N` jobs.

Under `torchrun --nproc_per_node N` (any number of nodes) every process loads the model on its own
device (cuda:LOCAL_RANK on GPUs, the CPU otherwise) and takes the next unclaimed video whenever its
decoder is ready for one, so fast and slow processes stay busy until the list is done. Rank 0 alone
reads and writes `--output`: the other processes hand it their results through torchrun's
key-value store (no collective backend, NCCL or gloo, is needed), and rank 0 writes every result in
input order as soon as those before it are in, so an interrupted run resumes as a single process does.

`--shard K/N` is for schedulers that start independent jobs (a Slurm array): job K of N takes every
N-th video of the sorted input list, starting with the K-th, and writes its own output; re-running
the job resumes that output. `merge_outputs` (the `sifa merge-results` command) joins the outputs.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import torch

from sifa_cli.engine.device import TorchrunRank
from sifa_cli.engine.records import RunStats, VideoResult
from sifa_cli.errors import InputError

RunFn = Callable[[Iterable[Path]], Iterator[VideoResult]]  # Predictor.predict or .timeline over some paths
ProgressFn = Callable[[int, int], None]

# How often rank 0 looks for results of other processes while it has nothing of its own to do.
POLL_SECONDS = 0.02


def parse_shard(text: Optional[str]) -> Optional[tuple[int, int]]:
    """'K/N' (job K of N, counted from 1) as (K, N); None for None."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise InputError(f"--shard must look like K/N, e.g. 1/4 for the first of four jobs; got {text!r}")
    k, n = int(match.group(1)), int(match.group(2))
    if n < 1:
        raise InputError(f"--shard {text}: N, the number of jobs, must be at least 1")
    if not 1 <= k <= n:
        raise InputError(f"--shard {text}: K must be between 1 and N (jobs are counted from 1)")
    return k, n


def shard_of(videos: Sequence[Path], shard: Optional[tuple[int, int]]) -> list[Path]:
    """The videos job K of N takes: every N-th of the list, starting with the K-th. The split is
    made on the whole input list, before finished videos are left out, so it stays the same when a
    job is re-run to resume."""
    if shard is None:
        return list(videos)
    k, n = shard
    return list(videos[k - 1 :: n])


@dataclass
class PredictGroup(TorchrunRank):
    """This process's part in a `sifa predict` run: world_size 1 without torchrun."""

    store: Any = None  # torch.distributed.Store shared by the processes (None for one process)
    videos_per_rank: Optional[list[int]] = None  # on rank 0 after a run of several processes

    @classmethod
    def from_env(cls) -> "PredictGroup":
        """Join the other processes torchrun started (WORLD_SIZE > 1), else a group of one."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        from torch.distributed import PrefixStore, rendezvous

        timeout = timedelta(minutes=30)
        store, rank, world_size = next(rendezvous("env://", timeout=timeout))
        # torchrun keeps its store across restarts of the workers: each attempt gets fresh keys.
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        return cls(rank=rank, world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                   store=PrefixStore(f"sifa-predict/{attempt}/", store))

    def describe(self, device: torch.device) -> str:
        if not self.enabled:
            return str(device)
        counts = "" if self.videos_per_rank is None else f", videos per process {'/'.join(map(str, self.videos_per_rank))}"
        return f"{self.world_size} processes ({device.type}{counts})"

    # -- the work list ----------------------------------------------------------------------

    def share(self, videos: Sequence[Path]) -> list[Path]:
        """Rank 0's list of videos to do, on every process (each finds its own, but only rank 0
        knows which are already in the output)."""
        if not self.enabled:
            return list(videos)
        if self.is_main:
            self.store.set("videos", json.dumps([str(v) for v in videos]))
            return list(videos)
        return [Path(p) for p in json.loads(self.store.get("videos"))]

    def run(self, videos: Sequence[Path], run: RunFn, stats: RunStats,
            progress: Optional[ProgressFn] = None) -> Iterator[VideoResult]:
        """Results for `videos`. One process: `run(videos)` itself. Several: each process runs the
        videos it claims; rank 0 yields every process's results in input order (calling `progress`
        with the windows of results from elsewhere), the others yield nothing. `stats` (this
        process's) becomes the sum over all processes once the run is through."""
        if not self.enabled:
            yield from run(videos)
            return
        # Start together (the models are loaded), each with video number `rank`; then whoever
        # is ready takes the next one.
        self.store.set(f"ready/{self.rank}", "1")
        self.store.wait([f"ready/{rank}" for rank in range(self.world_size)])
        started = time.perf_counter()
        lock = threading.Lock()  # one store client, used by the decoding thread and this one
        claimed: deque[int] = deque()

        def claim() -> Iterator[Path]:
            index = self.rank
            while index < len(videos):
                claimed.append(index)
                yield videos[index]
                with lock:
                    index = self.world_size + int(self.store.add("next", 1)) - 1

        if not self.is_main:
            for result in run(claim()):
                with lock:
                    self.store.set(f"result/{claimed.popleft()}", pickle.dumps(result))
            with lock:
                self.store.set(f"stats/{self.rank}", pickle.dumps(stats))
            return

        mine: dict[int, VideoResult] = {}
        next_index = 0

        def ready() -> Iterator[VideoResult]:
            nonlocal next_index
            while next_index < len(videos):
                result = mine.pop(next_index, None)
                if result is None:
                    key = f"result/{next_index}"
                    with lock:
                        if not self.store.check([key]):
                            return
                        result = pickle.loads(self.store.get(key))
                        self.store.delete_key(key)
                    if progress is not None and result.windows:
                        progress(len(result.windows), len(result.windows))
                next_index += 1
                yield result

        for result in run(claim()):
            mine[claimed.popleft()] = result
            yield from ready()
        while next_index < len(videos):
            yield from ready()
            if next_index < len(videos):
                time.sleep(POLL_SECONDS)
        self.videos_per_rank = [stats.videos_ok + stats.videos_failed]
        for rank in range(1, self.world_size):
            with lock:
                other = pickle.loads(self.store.get(f"stats/{rank}"))
            self.videos_per_rank.append(other.videos_ok + other.videos_failed)
            for f in fields(RunStats):
                if f.name != "wall_seconds":
                    setattr(stats, f.name, getattr(stats, f.name) + getattr(other, f.name))
        stats.wall_seconds = time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# Joining the outputs of --shard jobs


def merge_outputs(parts: Sequence[Path], output: Path) -> tuple[int, int]:
    """Write the records of several result files, as `sifa predict` writes them, into `output` in
    the format its suffix names (CSV parts only into CSV). Failures are kept, so a later
    `sifa predict --output` on the merged file retries them; a video in several parts keeps its
    last successful record. Returns (videos written, of them failures)."""
    from sifa_cli.engine.results import ResultWriter, output_format, path_key

    def format_of(path: Path) -> str:
        try:
            return output_format(path, None)
        except InputError:
            raise InputError(f"{path}: results files end in .jsonl, .json or .csv") from None

    from sifa_cli.engine.run_settings import describe_difference

    fmt = format_of(output)
    records: dict[str, dict[str, Any]] = {}
    first: Optional[tuple[Path, Mapping[str, Any]]] = None  # the first part's settings
    for part in parts:
        if not part.is_file():
            raise InputError(f"{part}: no such results file")
        if path_key(str(part)) == path_key(str(output)):
            raise InputError(f"{part} is also the output; write the merge to a new file")
        part_fmt = format_of(part)
        if part_fmt == "csv" and fmt != "csv":
            raise InputError(f"{part}: CSV results can only be merged into a .csv output")
        for record in read_all_records(part, part_fmt):
            settings = record.get("settings")
            if isinstance(settings, Mapping):
                if first is None:
                    first = (part, settings)
                difference = describe_difference(first[1], settings, (f"in {first[0].name}", f"in {part.name}"))
                if difference:  # the merged file could never be resumed, and its results not compared
                    raise InputError(f"{part} holds results made with other settings than {first[0]} "
                                     f"({difference}); merge only the parts of one run")
            key = path_key(record["path"])
            if "error" in record and "error" not in records.get(key, {"error": None}):
                continue  # a success elsewhere wins over a failure
            records[key] = record
    ResultWriter(fmt, path=output, keep=records.values()).close()
    return len(records), sum("error" in r for r in records.values())


def read_all_records(part: Path, fmt: str) -> list[dict[str, Any]]:
    """Every record of a results file, failures included (CSV ones as their raw rows)."""
    import csv
    import io

    from sifa_cli.engine.results import CSV_FIELDS, LEGACY_CSV_FIELDS, _OLD_CSV_FIELDS, _records_from_rows

    text = part.read_text(encoding="utf-8", errors="replace")
    try:
        if fmt == "jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif fmt == "json":
            records = json.loads(text) if text.strip() else []
        elif not text.strip():
            records = []
        elif text.splitlines()[:1] in ([",".join(f)] for f in (CSV_FIELDS, LEGACY_CSV_FIELDS, _OLD_CSV_FIELDS)):
            records = _records_from_rows(list(csv.DictReader(io.StringIO(text))))
        else:
            raise ValueError("not our CSV header")
    except ValueError:  # json.JSONDecodeError too
        raise InputError(f"{part} is not a sifa results file") from None
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and isinstance(r.get("path"), str) for r in records
    ):
        raise InputError(f"{part} is not a sifa results file")
    return records
