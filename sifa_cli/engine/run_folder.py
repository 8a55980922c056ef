"""The run folder of `sifa finetune`: what it holds, the checks before a run starts or resumes in
it, the training state `--resume` reads, and the clean-up after a run that failed before its first
epoch was saved.

    best.safetensors / last.safetensors   model + metadata, usable by `sifa predict --weights`
    train_state.pt                        everything `--resume` needs to continue exactly
    config.yaml                           the effective options (train_config.write_config_yaml)
    dataset.json, scan_report.csv         the scanned split, and the videos left out and why
    metrics.jsonl, curves.png, confusion_matrix.png

Every file is written atomically (a temporary file renamed into place); the folder is locked for
the whole run by `train` (fileio.lock_output).
"""

from __future__ import annotations

import io
import json
import os
import shlex
from pathlib import Path
from typing import Optional

import torch

from sifa_cli.data.dataset import DatasetSplits
from sifa_cli.errors import InputError
from sifa_cli.fileio import atomic_write_path
from sifa_cli.wording import counted

STATE_FORMAT = "sifa-train-state/1"


class RunFolder:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.best = self.root / "best.safetensors"
        self.last = self.root / "last.safetensors"
        self.state = self.root / "train_state.pt"
        self.config = self.root / "config.yaml"
        self.dataset = self.root / "dataset.json"
        self.scan_report = self.root / "scan_report.csv"
        self.metrics = self.root / "metrics.jsonl"
        self.curves = self.root / "curves.png"
        self.confusion = self.root / "confusion_matrix.png"

    def check_new(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"--out {self.root} exists and is not a folder")
        if self.config.exists():
            raise InputError(f"{self.root} already holds a training run; continue it with --resume {self.root} "
                             "or choose another --out")
        # a run that could not start leaves its scan report, and may be tried again in the same folder
        if self.root.is_dir() and any(p.name != self.scan_report.name for p in self.root.iterdir()):
            raise InputError(f"--out {self.root} exists and is not empty; choose a new folder")

    def check_resumable(self) -> None:
        if not self.root.is_dir():
            raise InputError(f"--resume {self.root}: no such run folder")
        for needed in (self.config, self.dataset):
            if not needed.is_file():
                raise InputError(f"--resume {self.root}: {needed.name} is missing, so this is not a sifa run folder")

    def finished_epochs(self) -> int:
        """Epochs metrics.jsonl records (0 when it is missing or unreadable)."""
        try:
            return sum(1 for line in self.metrics.read_text(encoding="utf-8").splitlines() if line.strip())
        except (OSError, UnicodeDecodeError):
            return 0

    def check_nothing_finished(self, data: str = "DATA") -> None:
        """A run folder without train_state.pt may only be resumed when no epoch of it finished
        (it was stopped during its first epoch); otherwise starting over would overwrite the
        finished epochs' checkpoints and metrics."""
        epochs = self.finished_epochs()
        checkpoints = [path.name for path in (self.best, self.last) if path.exists()]
        if not epochs and not checkpoints:
            return
        recorded = (f"{self.metrics.name} records {counted(epochs, 'finished epoch')}" if epochs
                    else f"it holds {' and '.join(checkpoints)}")
        weights = self.best if self.best.exists() else self.last if self.last.exists() else None
        advice = (f"to train on from its weights, start a new run: sifa finetune {data} "
                  f"--init {shlex.quote(str(weights))} --out NEW_RUN" if weights
                  else "start a new run with another --out")
        raise InputError(f"--resume {self.root}: {self.state.name} is missing, so training cannot continue exactly "
                         f"where it stopped ({recorded}); {advice}")

    def remove_stale_temporaries(self) -> None:
        """Half-written files of a process that was killed while saving."""
        for path in self.root.glob(".*.tmp*"):
            path.unlink(missing_ok=True)

    def write_metrics(self, history: list[dict]) -> None:
        with atomic_write_path(self.metrics) as tmp:
            tmp.write_text("".join(json.dumps(record) + "\n" for record in history), encoding="utf-8")


DEFAULT_RUNS_FOLDER = Path("runs")


def default_run_folder(data: str) -> Path:
    """`--out` left unset: runs/<the data folder's (or CSV file's) name>, numbered -2, -3, ... when
    that exists already (unless it holds only the scan report of a run that could not start)."""
    source = Path(data)
    name = (source.stem if source.suffix.lower() in (".csv", ".txt") else source.name) or "run"
    for number in range(1, 10_000):
        candidate = DEFAULT_RUNS_FOLDER / (name if number == 1 else f"{name}-{number}")
        try:
            RunFolder(candidate).check_new()
        except InputError:
            continue
        return candidate
    raise InputError(f"{DEFAULT_RUNS_FOLDER / name}: too many run folders of that name; choose one with --out")


def save_training_state(path: Path, state: dict) -> None:
    """torch.save to a temporary file, flushed to disk, then renamed over the old state."""
    buffer = io.BytesIO()  # torch's own file writer reports a full disk as a C++ error naming no file
    torch.save(state, buffer)
    with atomic_write_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(buffer.getbuffer())
        handle.flush()
        os.fsync(handle.fileno())


def load_training_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch reports damage as many exception types
        raise InputError(f"cannot read the training state {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise InputError(f"{path} is not a sifa training state")
    return state


def check_split_files(splits: DatasetSplits, run: RunFolder) -> None:
    """On resume: every video of the recorded split must still be there and readable. Training on
    without some (the loader replaces an unreadable clip by the next one) would silently change the
    data the run learns from and the validation set its metrics are compared on."""
    missing = [sample.path for sample in (*splits.train, *splits.val)
               if not (os.path.isfile(sample.path) and os.access(sample.path, os.R_OK))]
    if not missing:
        return
    gone = set(missing)
    total = len(splits.train) + len(splits.val)
    in_val = sum(sample.path in gone for sample in splits.val)
    left = {sample.label for sample in (*splits.train, *splits.val) if sample.path not in gone}
    emptied = [name for name in splits.categories if name not in left]
    classes = f"; class {', '.join(repr(c) for c in emptied)} has no video left" if emptied else ""
    weights = f" (--init {run.best} starts it from this run's weights)" if run.best.exists() else ""
    raise InputError(
        f"--resume {run.root}: {len(missing)} of the {total} videos of this run's split ({run.dataset.name}; "
        f"{in_val} of them for validation) are missing or unreadable, e.g. {missing[0]}{classes}; put them back "
        f"to resume, or start a new run on the data as it is now{weights}")


def report_lists_videos(report: Path) -> bool:
    """Whether a scan report names any video left out (more than its header line)."""
    try:
        with report.open(encoding="utf-8") as handle:
            return sum(1 for _ in zip(range(2), handle)) > 1
    except OSError:
        return False


def folder_entries(folder: Path) -> Optional[set[str]]:
    """The names in `folder`, or None when it does not exist."""
    try:
        return set(os.listdir(folder))
    except FileNotFoundError:
        return None
    except OSError:
        return set()


def remove_new_entries(folder: Path, before: Optional[set[str]], keep: str = "") -> None:
    """Delete what appeared in `folder` since `before` (files only, but `keep`), and the folder if it is
    new and empty."""
    for name in (folder_entries(folder) or set()) - (before or set()) - {keep}:
        path = folder / name
        if path.is_file() or path.is_symlink():
            path.unlink(missing_ok=True)
    if before is None:
        try:
            folder.rmdir()
        except OSError:
            pass
