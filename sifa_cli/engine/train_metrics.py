"""What one epoch of `sifa finetune` measured and how it is reported: the validation metrics, the
rule that picks the best epoch, the per-epoch log line and the note on a slow epoch, and the result
`train` returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# Top-k accuracy reported besides top-1, only for models with more classes than this.
TOP_K = 5


@dataclass
class EpochMetrics:
    loss: float
    top1: float
    top5: Optional[float]  # None with TOP_K classes or fewer, where it is always 100%
    confusion: list[list[int]]
    clips: int

    def per_class(self, categories: list[str]) -> dict[str, Optional[float]]:
        result = {}
        for i, name in enumerate(categories):
            total = sum(self.confusion[i])
            result[name] = self.confusion[i][i] / total if total else None
        return result


@dataclass
class TrainResult:
    run: Path
    categories: list[str]
    history: list[dict]
    best: dict
    epochs_done: int
    stopped_early: bool
    skipped: int
    train_clips: int
    val_clips: int
    is_main: bool = True  # False on torchrun's other processes, which write and print nothing


def is_better(record: dict, best: dict, min_delta: float = 0.0) -> bool:
    """Whether an epoch beats the best so far: a lower validation loss (by more than min_delta).

    The loss, not top-1: on the few dozen validation clips of a small dataset top-1 moves in steps
    of several per cent and picked early, worse epochs in the sweep behind the default recipe (README,
    "How far the camera-pretrained start gets you"); the loss moves smoothly. Equal losses go to the
    better top-1.
    """
    if not best:
        return True
    if record["val_loss"] < best["val_loss"] - min_delta:
        return True
    return record["val_loss"] == best["val_loss"] and record["val_top1"] > best["val_top1"]


def epoch_line(record: dict, epochs: int, improved: bool) -> str:
    """One log line per epoch: comparable train and validation losses, accuracy, speed and timing."""
    top5 = f" top-{TOP_K} {100 * record['val_top5']:.1f}%" if record.get("val_top5") is not None else ""
    train_loss = record.get("train_nll", record["train_loss"])
    timing = f"{record['train_clips_per_s']:.1f} clips/s, {record['epoch_seconds']:.0f} s"
    if "data_wait_seconds" in record:
        timing += f" (waiting for data {record['data_wait_seconds']:.0f} s, validation {record['val_seconds']:.0f} s)"
    return (f"epoch {record['epoch']}/{epochs}: train loss {train_loss:.4f} top-1 {100 * record['train_top1']:.1f}% | "
            f"val loss {record['val_loss']:.4f} top-1 {100 * record['val_top1']:.1f}%{top5}"
            f"{' (best)' if improved else ''} | objective {record['train_loss']:.4f} | {timing}")


def slow_epoch_note(previous: dict, current: dict) -> Optional[str]:
    """When an epoch trained at under half the next one's speed, where its extra time went."""
    if not previous.get("train_clips_per_s") or current["train_clips_per_s"] < 2 * previous["train_clips_per_s"]:
        return None
    if "data_wait_seconds" not in previous:
        return None
    ratio = current["train_clips_per_s"] / previous["train_clips_per_s"]
    train_time = {r["epoch"]: r["epoch_seconds"] - r.get("val_seconds", 0.0) for r in (previous, current)}
    extra = train_time[previous["epoch"]] - train_time[current["epoch"]]
    extra_wait = previous["data_wait_seconds"] - current["data_wait_seconds"]
    cause = ("mostly waiting for data (decoding files the first time, loader start-up)" if extra_wait > extra / 2
             else "mostly in the model (one-time set-up of its kernels, or other programs busy on the same cores)")
    return (f"note: epoch {previous['epoch']} trained {ratio:.1f}x slower than epoch {current['epoch']}: "
            f"{extra:.0f} s more, {max(extra_wait, 0):.0f} s of it waiting for data (its first batch took "
            f"{previous['first_batch_seconds']:.1f} s, epoch {current['epoch']}'s "
            f"{current['first_batch_seconds']:.1f} s); {cause}")
