"""Evaluate a classifier on labelled videos: accuracy, per-class precision and recall, a confusion matrix.

The labelled videos are found the way `sifa finetune` finds them (`DIR/<class>/*.mp4`, the `val/`
folder of a `DIR/train` + `DIR/val` layout, or a CSV of `path,label` rows) and scored by the same
`Predictor` as `sifa predict`, with the same views. A video that cannot be read is reported and left
out of the scores. Labels the model does not know are an error (a clear one, naming them), unless
`skip_unknown` leaves those videos out; they are listed in the report either way.

    evaluation = evaluate(predictor, load_labelled(Path("videos")))
    write_report(evaluation, Path("eval"))  # metrics.json, confusion_matrix.png, predictions.csv
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from sifa_cli.data.dataset import Sample, find_labelled_videos, has_split_folders
from sifa_cli.engine.predict import Predictor
from sifa_cli.engine.records import ProgressFn, summarise_short
from sifa_cli.errors import InputError
from sifa_cli.csvcells import neutralise_row
from sifa_cli.fileio import atomic_write_path
from sifa_cli.wording import counted

TOP_K = 5
REPORT_FORMAT = "sifa-evaluation/1"


@dataclass
class Labelled:
    """The labelled videos of a dataset and where they came from (`note` says if a layout was read
    in a way worth saying, e.g. only its val/ folder)."""

    samples: list[Sample]
    source: str
    note: Optional[str] = None


def load_labelled(source: Path) -> Labelled:
    """Labelled videos from a class-folder root, a train/val root (its val/ part) or a CSV."""
    source = Path(source).expanduser()
    note = None
    if source.is_dir() and has_split_folders(source):
        if not (source / "val").is_dir():
            raise InputError(f"{source} holds a train/ folder but no val/ folder beside it; give the folder of "
                             "class folders to evaluate")
        note = f"{source} holds train/ and val/: evaluating val/"
        source = source / "val"
    return Labelled(find_labelled_videos(source), str(source), note)


def split_known(samples: Sequence[Sample], categories: Sequence[str], skip_unknown: bool,
                source: str = "the data") -> tuple[list[Sample], list[Sample]]:
    """(videos whose label the model knows, the others); unknown labels are an error unless skipped."""
    known_names = set(categories)
    known = [s for s in samples if s.label in known_names]
    unknown = [s for s in samples if s.label not in known_names]
    if unknown and not skip_unknown:
        labels = sorted({s.label for s in unknown})
        shown = ", ".join(repr(label) for label in labels[:8]) + (", ..." if len(labels) > 8 else "")
        model_shown = ", ".join(repr(c) for c in list(categories)[:8]) + (", ..." if len(categories) > 8 else "")
        raise InputError(f"{source}: {counted(len(labels), 'label')} the model does not know ({shown}; it knows "
                         f"{model_shown}); "
                         "rename them to the model's labels, or pass --skip-unknown to leave those videos out")
    if not known:
        raise InputError(f"{source}: none of its videos has a label the model knows")
    return known, unknown


@dataclass
class ClassScores:
    name: str
    videos: int  # true instances (support)
    predicted: int  # videos predicted as this class
    correct: int
    mistaken_for: Optional[str] = None  # the most frequent wrong prediction for this class

    @property
    def recall(self) -> Optional[float]:
        return self.correct / self.videos if self.videos else None

    @property
    def precision(self) -> Optional[float]:
        return self.correct / self.predicted if self.predicted else None


@dataclass
class Prediction:
    path: str
    label: str
    top: list[tuple[str, float]]

    @property
    def correct(self) -> bool:
        return bool(self.top) and self.top[0][0] == self.label


@dataclass
class Evaluation:
    model_categories: list[str]
    predictions: list[Prediction] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (path, label, error)
    unknown: list[Sample] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    short_note: Optional[str] = None  # one line on the videos shorter than a clip (`summarise_short`)

    @property
    def videos(self) -> int:
        return len(self.predictions)

    @property
    def top_k(self) -> Optional[int]:
        """5 when the model has more than 5 classes (top-5 of 5 or fewer is always 100%), else None."""
        return TOP_K if len(self.model_categories) > TOP_K else None

    def accuracy(self, k: int = 1) -> Optional[float]:
        if not self.predictions:
            return None
        hits = sum(any(label == p.label for label, _ in p.top[:k]) for p in self.predictions)
        return hits / len(self.predictions)

    @property
    def categories(self) -> list[str]:
        """The model's classes that occur as a true or a predicted label, in the model's order."""
        seen = {p.label for p in self.predictions} | {p.top[0][0] for p in self.predictions if p.top}
        return [c for c in self.model_categories if c in seen]

    def confusion(self) -> list[list[int]]:
        """Counts, rows: true class, columns: predicted class, both indexed by `categories`."""
        index = {name: i for i, name in enumerate(self.categories)}
        matrix = [[0] * len(index) for _ in index]
        for p in self.predictions:
            matrix[index[p.label]][index[p.top[0][0]]] += 1
        return matrix

    def per_class(self) -> list[ClassScores]:
        names = self.categories
        matrix = self.confusion()
        scores = []
        for i, name in enumerate(names):
            row = matrix[i]
            wrong = [(count, names[j]) for j, count in enumerate(row) if j != i and count]
            mistaken = max(wrong, key=lambda item: (item[0], -names.index(item[1])))[1] if wrong else None
            scores.append(ClassScores(name, sum(row), sum(r[i] for r in matrix), row[i], mistaken))
        return scores

    def mean_class_recall(self) -> Optional[float]:
        recalls = [c.recall for c in self.per_class() if c.recall is not None]
        return sum(recalls) / len(recalls) if recalls else None

    def to_json(self) -> dict[str, Any]:
        k = self.top_k
        return {
            "format": REPORT_FORMAT,
            "source": self.source,
            "settings": self.settings,
            "videos": self.videos,
            "failed": len(self.failed),
            "skipped_unknown_label": len(self.unknown),
            "top1": self.accuracy(1),
            **({f"top{k}": self.accuracy(k)} if k else {}),
            "mean_class_recall": self.mean_class_recall(),
            "per_class": {c.name: {"videos": c.videos, "predicted": c.predicted, "correct": c.correct,
                                   "recall": c.recall, "precision": c.precision, "mistaken_for": c.mistaken_for}
                          for c in self.per_class()},
            "confusion": {"categories": self.categories, "rows": "true", "columns": "predicted",
                          "matrix": self.confusion()},
            "short_clips": self.short_note,
            "failures": [{"path": path, "label": label, "error": error} for path, label, error in self.failed],
            "unknown_labels": [{"path": s.path, "label": s.label} for s in self.unknown],
        }


def evaluate(predictor: Predictor, samples: Sequence[Sample], *, unknown: Sequence[Sample] = (),
             progress: Optional[ProgressFn] = None, source: str = "", settings: Optional[dict] = None) -> Evaluation:
    """Score every sample with `predictor` (whose top_k should be at least 5 for top-5 accuracy)."""
    evaluation = Evaluation(list(predictor.categories), unknown=list(unknown), settings=dict(settings or {}),
                            source=source)
    results = predictor.predict([s.path for s in samples], progress=progress)
    short = []
    for sample, result in zip(samples, results):
        if result.short is not None:
            short.append(result)
        if result.ok:
            evaluation.predictions.append(Prediction(sample.path, sample.label, list(result.top)))
        else:
            evaluation.failed.append((sample.path, sample.label, result.error or "unreadable"))
    evaluation.short_note = summarise_short(short, predictor.spec)
    return evaluation


REPORT_FILES = ("metrics.json", "confusion_matrix.png", "predictions.csv")


def write_report(evaluation: Evaluation, out: Path) -> list[Path]:
    """metrics.json, confusion_matrix.png and predictions.csv in `out` (created); returns the paths."""
    from sifa_cli.engine.plots import plot_confusion_matrix

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    metrics, png, table = (out / name for name in REPORT_FILES)
    with atomic_write_path(metrics) as tmp:
        tmp.write_text(json.dumps(evaluation.to_json(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    top1 = evaluation.accuracy(1)
    title = f"{evaluation.videos} videos: top-1 {100 * top1:.1f}%" if top1 is not None else "no videos"
    plot_confusion_matrix(evaluation.confusion(), evaluation.categories, png, title)
    with atomic_write_path(table) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "predicted", "score", "correct", "top"])
        for p in evaluation.predictions:
            top = "; ".join(f"{label} {score:.4f}" for label, score in p.top)
            writer.writerow(neutralise_row([p.path, p.label, p.top[0][0], f"{p.top[0][1]:.6f}", int(p.correct), top]))
        for path, label, error in evaluation.failed:
            writer.writerow(neutralise_row([path, label, "", "", "", f"error: {error}"]))
    return [metrics, png, table]
