"""Labelled videos for fine-tuning: find them, check them, split them, and serve training clips.

Layouts accepted for a dataset root:
- `root/<class>/**/*.mp4`: one folder per class (split into train/val with a seed);
- `root/train/<class>/...` and `root/val/<class>/...`: an explicit validation set;
- a CSV file of `path,label` rows (relative paths are relative to the CSV's folder).

Before training, `scan_videos` opens every file in parallel; unreadable ones, still images and
(below `min_frames`) short ones are listed with the reason in a report and left out, so a bad file
never stops a training run. A short video is otherwise used: its clips spread over it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import sys
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from sifa_cli.csvcells import neutralise_row
from sifa_cli.data.augment import Augmentation, augment_clip, random_clip_indices, swap_index
from sifa_cli.data.decode import VIDEO_EXTENSIONS, FrameCountError, Video, capture_native_stderr, read_sampled
from sifa_cli.data.sampling import sample_clips
from sifa_cli.data.spec import InputSpec
from sifa_cli.data.transforms import evaluation_views, to_model_input
from sifa_cli.errors import DecodeError, InputError, SifaError
from sifa_cli.fileio import atomic_write_path
from sifa_cli.wording import counted, form

CSV_HEADER_NAMES = {"path", "video", "file", "filename", "file_name"}
SPLIT_FOLDERS = ("train", "val")
# Seconds a single file may keep a decoder busy during the scan before it counts as unreadable.
SCAN_TIMEOUT_S = 30.0
# The scan only checks that frames decode: it asks for them this small.
SCAN_SHORT_SIDE = 32
REPLACEMENT_ATTEMPTS = 8


@dataclass(frozen=True)
class Sample:
    path: str
    label: str
    num_frames: int = 0  # known after the scan
    fps: float = 0.0  # known after the scan (0: unknown)


# Why the scan left a video out: Skipped.kind
SHORT, STILL, UNREADABLE = "short", "still", "unreadable"


@dataclass
class Skipped:
    path: str
    label: str
    problem: str
    kind: str = UNREADABLE


@dataclass
class DatasetSplits:
    """Scanned, split samples; `categories[i]` is the name of class i."""

    categories: list[str]
    train: list[Sample]
    val: list[Sample]
    skipped: list[Skipped] = field(default_factory=list)
    source: str = ""

    def label_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.categories)}

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "categories": self.categories,
            "train": [[s.path, s.label, s.num_frames, s.fps] for s in self.train],
            "val": [[s.path, s.label, s.num_frames, s.fps] for s in self.val],
            "skipped": [asdict(s) for s in self.skipped],
        }

    @classmethod
    def from_json(cls, doc: dict) -> "DatasetSplits":
        return cls(
            categories=list(doc["categories"]),
            train=[Sample(*row) for row in doc["train"]],  # [path, label, frames] before fps was recorded
            val=[Sample(*row) for row in doc["val"]],
            skipped=[Skipped(**s) for s in doc.get("skipped", [])],
            source=doc.get("source", ""),
        )

    def save(self, path: Path) -> None:
        with atomic_write_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "DatasetSplits":
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"cannot read the dataset list {path}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Finding labelled videos


def find_labelled_videos(source: Path, log: Optional[Callable[[str], None]] = None) -> list[Sample]:
    """(path, label) pairs from a class-folder root or a CSV file; `log` gets warnings (default: stderr)."""
    source = Path(source).expanduser()
    if not source.exists():
        raise InputError(f"dataset not found: {source}")
    if source.is_file():
        if source.suffix.lower() not in (".csv", ".txt"):
            raise InputError(f"{source}: a dataset is a folder of class folders or a CSV file of path,label rows")
        return read_csv_list(source, log)
    return read_class_folders(source, log)


def has_split_folders(root: Path) -> bool:
    """True for the `root/train` + `root/val` layout: a train/ folder of class folders at the top
    of `root`, beside val/ or with nothing else but test/. A train/ folder among other class
    folders is a class called "train"."""
    if not (root.is_dir() and (root / "train").is_dir() and any(p.is_dir() for p in (root / "train").iterdir())):
        return False
    folders = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    return "val" in folders or folders <= {"train", "test"}


def split_folders_without_val(root: Path) -> str:
    """The error for a root that holds train/ (and at most test/) but no val/."""
    return (f"{root} holds a train/ folder but no val/ folder beside it: add {root}/val/<class>/ videos for "
            f"validation, pass --val DIR, or give {root / 'train'} itself to hold out part of it")


class DatasetRefused(InputError):
    """No training run can start on this data; `skipped` lists the videos the scan left out and why."""

    def __init__(self, message: str, skipped: Sequence[Skipped]):
        super().__init__(message)
        self.skipped = list(skipped)


def skipped_summary(skipped: Sequence[Skipped]) -> str:
    """The scan's reasons counted, each with what to do: '68 videos with fewer frames than --min-frames
    asks for (...); 2 unreadable (e.g. ...)'."""
    by_kind: dict[str, list[Skipped]] = defaultdict(list)
    for item in skipped:
        by_kind[item.kind].append(item)
    parts = []
    if by_kind.get(SHORT):
        fewest = min(by_kind[SHORT], key=lambda item: item.problem)
        parts.append(f"{counted(len(by_kind[SHORT]), 'video')} with fewer frames than --min-frames asks for (e.g. "
                     f"{Path(fewest.path).name}: {fewest.problem}): lower --min-frames or leave it out, and every "
                     "video of 2 frames or more is used, a short one with its frames spread over the clip")
    if by_kind.get(STILL):
        stills = len(by_kind[STILL])
        parts.append(f"{counted(stills, 'still image')} or single-frame {form(stills, 'file')} (e.g. "
                     f"{Path(by_kind[STILL][0].path).name}): training needs videos")
    if by_kind.get(UNREADABLE):
        first = by_kind[UNREADABLE][0]
        parts.append(f"{len(by_kind[UNREADABLE])} unreadable (e.g. {first.path}: {first.problem}): re-encode or "
                     "replace them")
    return "; ".join(parts)


def read_class_folders(root: Path, log: Optional[Callable[[str], None]] = None) -> list[Sample]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise InputError(f"{root}: no class folders found (expected {root}/<class>/<video files>)")
    loose = sorted(p.name for p in root.iterdir()
                   if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file() and not p.name.startswith("."))
    if loose:  # a video's class is its folder's name: these have none
        them = form(len(loose), "it", "them")
        (log or _stderr_log)(f"warning: {root}: {counted(len(loose), 'video')} directly in it, outside any class "
                             f"folder, {form(len(loose), 'is', 'are')} left out (e.g. {loose[0]}); move {them} into "
                             f"<class>/ folders to use {them}")
    samples = []
    # A file reachable from two places (a symbolic link, a class folder linking to the root) is one
    # video: under two labels it would be trained on with a wrong one, and counted twice.
    first_seen: dict[str, tuple[str, Path]] = {}  # real path -> (label, where first found)
    conflicts: list[tuple[str, Path, str, Path]] = []
    repeats: list[tuple[Path, Path]] = []
    for folder in classes:
        videos = sorted(
            p for p in folder.rglob("*")
            if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file() and not p.name.startswith(".")
        )
        for video in videos:
            real = str(video.resolve())
            if real in first_seen:
                label, found = first_seen[real]
                if label != folder.name:
                    conflicts.append((label, found, folder.name, video))
                else:
                    repeats.append((video, found))
                continue
            first_seen[real] = (folder.name, video)
            samples.append(Sample(real, folder.name))
    if conflicts:
        label, found, other, video = conflicts[0]
        raise InputError(f"{root}: {counted(len(conflicts), 'video')} {form(len(conflicts), 'is', 'are')} reachable "
                         f"from two class folders, e.g. {found} "
                         f"('{label}') and {video} ('{other}') are the same file; give each video one label "
                         "(remove the link or the copy)")
    if repeats:
        video, found = repeats[0]
        (log or _stderr_log)(f"warning: {root}: {counted(len(repeats), 'video')} {form(len(repeats), 'is', 'are')} "
                             f"reachable twice within {form(len(repeats), 'its', 'their')} class folder (e.g. {video} "
                             f"is {found}); each is used once")
    if not samples:
        raise InputError(f"{root}: the class folders hold no video files ({', '.join(sorted(VIDEO_EXTENSIONS))})")
    return samples


def read_csv_list(path: Path, log: Optional[Callable[[str], None]] = None) -> list[Sample]:
    """Rows `path,label`; an optional header row; blank lines and lines starting with # ignored.

    A file listed twice (paths compared once resolved) is used once: with the same label that
    is noted (it would otherwise weigh double, or land in training and validation both); with
    another label it is an error."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    samples = []
    first_seen: dict[str, tuple[str, int]] = {}  # resolved path -> (label, line)
    repeats: list[tuple[int, int, str]] = []  # (line, first line, path)
    for line_number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 2:
            raise InputError(f"{path}, line {line_number}: expected 2 fields (path,label), found {len(row)}")
        video, label = row[0].strip(), row[1].strip()
        if not samples and video.lower() in CSV_HEADER_NAMES:
            continue
        if not video or not label:
            raise InputError(f"{path}, line {line_number}: empty path or label")
        resolved = Path(video).expanduser()
        if not resolved.is_absolute():
            resolved = path.parent / resolved
        resolved = str(resolved.resolve())
        if resolved in first_seen:
            first_label, first_line = first_seen[resolved]
            if first_label != label:
                raise InputError(f"{path}, line {line_number}: {resolved} is listed with two labels, "
                                 f"'{first_label}' (line {first_line}) and '{label}'; give each video one label")
            repeats.append((line_number, first_line, resolved))
            continue
        first_seen[resolved] = (label, line_number)
        samples.append(Sample(resolved, label))
    if not samples:
        raise InputError(f"{path}: no path,label rows found")
    _note_cwd_relative_paths(path, samples, log)
    if repeats:
        line, first_line, video = repeats[0]
        repeat = form(len(repeats), "repeats", "repeat")
        (log or _stderr_log)(f"warning: {path}: {counted(len(repeats), 'row')} {repeat} a video listed earlier with the "
                             f"same label; each video is used once (e.g. line {line} repeats line {first_line}: {video})")
    return samples


def _note_cwd_relative_paths(csv_path: Path, samples: Sequence[Sample], log: Optional[Callable[[str], None]]) -> None:
    """Relative paths are resolved against the CSV's folder: when the ones that are missing there
    exist relative to the current folder, the CSV was written for that; say so before the scan
    reports them all as missing."""
    folder = csv_path.resolve().parent
    missing = [s.path for s in samples if not os.path.lexists(s.path) and Path(s.path).is_relative_to(folder)]
    if not missing or folder == Path.cwd().resolve():
        return
    here = [p for p in missing if os.path.lexists(Path.cwd() / Path(p).relative_to(folder))]
    if here:
        does = form(len(here), "does", "do")
        (log or _stderr_log)(f"warning: {csv_path}: {counted(len(here), 'relative path')} {does} not exist in the "
                             f"CSV's folder {folder}, against which relative paths are resolved, but {does} in the "
                             f"current folder (e.g. {Path(here[0]).relative_to(folder)}); write "
                             f"{form(len(here), 'it', 'them')} relative to {folder}, or as "
                             f"{form(len(here), 'an absolute path', 'absolute paths')}")


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stratified_split(samples: Sequence[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out `val_fraction` of every class (at least one clip of any class with two or more),
    chosen by a seeded shuffle, so the same seed always gives the same split."""
    if not 0 < val_fraction < 1:
        raise InputError(f"the validation fraction must be between 0 and 1, got {val_fraction}")
    by_label: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_label[sample.label].append(sample)
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(by_label):
        members = sorted(by_label[label], key=lambda s: s.path)
        rng.shuffle(members)
        held_out = min(max(1, round(len(members) * val_fraction)), len(members) - 1) if len(members) > 1 else 0
        val += members[:held_out]
        train += members[held_out:]
    return train, val


# ---------------------------------------------------------------------------------------------
# Pre-flight scan


@dataclass(frozen=True)
class Probe:
    """What the scan learnt of one file: its decodable frame count and frame rate, or why it is left out."""

    num_frames: int = 0
    fps: float = 0.0
    problem: Optional[str] = None
    kind: str = ""


def probe_video(path: str, min_frames: int = 1) -> Probe:
    """Frame count and rate of a usable video, or why it is not usable.

    Frames are decoded one at a time and scaled down, so a scan thread holds about one source
    frame at a time (the file's declared size is checked before any is decoded)."""
    try:
        with Video(path, timeout=SCAN_TIMEOUT_S, short_side=SCAN_SHORT_SIDE) as video:
            count = video.num_frames
            # The first, middle and last frames: a cut-off file fails on the last one.
            try:
                for index in (0, count // 2, count - 1):
                    video.read([index])
            except FrameCountError:
                count = video.num_frames  # corrected to what really decodes
                for index in (0, count // 2, count - 1):
                    video.read([index])
            count, fps = video.num_frames, video.info.fps
    except SifaError as exc:
        return Probe(problem=_without_path(str(exc), path), kind=UNREADABLE)
    except Exception as exc:  # a decoder failing in an unforeseen way still only loses this file
        return Probe(problem=f"{type(exc).__name__}: {exc}".splitlines()[0], kind=UNREADABLE)
    if count == 1:
        return Probe(1, fps, STILL_IMAGE, STILL)
    if count < min_frames:
        return Probe(count, fps, f"only {count} frames; --min-frames asks for at least {min_frames}", SHORT)
    return Probe(count, fps)


STILL_IMAGE = "a single frame (a still image): it shows no motion to recognise"


def _without_path(message: str, path: str) -> str:
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def scan_videos(samples: Sequence[Sample], min_frames: int, workers: int = 4,
                progress: bool = False) -> tuple[list[Sample], list[Skipped]]:
    """Open every video in parallel; returns the usable ones (with frame counts) and the rest with reasons."""
    from tqdm import tqdm

    usable: list[Sample] = []
    skipped: list[Skipped] = []
    with capture_native_stderr(), ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda s: probe_video(s.path, min_frames), samples)
        bar = tqdm(zip(samples, results), total=len(samples), desc="checking videos", unit="video",
                   disable=not progress, file=sys.stderr, leave=False)
        for sample, probe in bar:
            if probe.problem is None:
                usable.append(Sample(sample.path, sample.label, probe.num_frames, probe.fps))
            else:
                skipped.append(Skipped(sample.path, sample.label, probe.problem, probe.kind))
    return usable, skipped


def write_scan_report(path: Path, skipped: Sequence[Skipped]) -> None:
    """CSV of the videos left out and why (just the header when none was)."""
    with atomic_write_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "problem"])
        for item in skipped:
            writer.writerow(neutralise_row([item.path, item.label, item.problem]))


def prepare_dataset(source: Path, val_source: Optional[Path] = None, *, val_fraction: float = 0.2, seed: int = 0,
                    min_frames: int = 1, scan_workers: int = 4, progress: bool = False,
                    allow_missing_classes: bool = False, log=None) -> DatasetSplits:
    """Find, scan and split a dataset. Validation comes from `val_source`, from `source/val`, or
    from a stratified split of what `source` holds.

    A class whose training videos are all unusable is an error, unless `allow_missing_classes`:
    then it is left out with a warning (through `log`)."""
    source = Path(source).expanduser()
    if val_source is None and has_split_folders(source):
        if not (source / "val").is_dir():
            raise InputError(split_folders_without_val(source))
        source, val_source = source / "train", source / "val"
    train_items = find_labelled_videos(source, log)
    val_items = find_labelled_videos(Path(val_source), log) if val_source is not None else []
    in_train = {s.path for s in train_items}
    overlap = [s.path for s in val_items if s.path in in_train]
    if overlap:
        raise InputError(f"{val_source}: {len(overlap)} of its {len(val_items)} validation videos are also training "
                         f"videos (e.g. {overlap[0]}); validating on training videos measures nothing: give "
                         "validation videos the run does not train on (without --val a share of each class is held out)")
    usable, skipped = scan_videos(train_items + val_items, min_frames, scan_workers, progress)
    usable_paths = {s.path: s for s in usable}
    train = [usable_paths[s.path] for s in train_items if s.path in usable_paths]
    val = [usable_paths[s.path] for s in val_items if s.path in usable_paths]
    categories = sorted({s.label for s in train})
    if len(categories) < 2:
        why = f": {skipped_summary(skipped)}" if skipped else ""
        raise DatasetRefused(
            f"{source}: need videos of at least 2 classes to train a classifier, found "
            f"{counted(len(categories), 'usable class', 'usable classes')}; {len(skipped)} of "
            f"{len(train_items) + len(val_items)} videos were left out{why}", skipped)
    missing = sorted({s.label for s in train_items} - set(categories))
    if missing:
        first_problem = {}
        for item in skipped:
            first_problem.setdefault(item.label, item)
        counts = Counter(s.label for s in train_items)
        details = "; ".join(
            f"'{label}' ({counted(counts[label], 'video')}, e.g. {first_problem[label].path}: "
            f"{first_problem[label].problem})"
            if label in first_problem else f"'{label}'" for label in missing)
        what = (f"{counted(len(missing), 'class', 'classes')} {form(len(missing), 'has', 'have')} no usable "
                f"training videos: {details}")
        if not allow_missing_classes:
            them = form(len(missing), "it", "them")
            raise DatasetRefused(f"{what}; fix or remove {them}, or pass --allow-missing-classes to train without "
                                 f"{them}", skipped)
        if log is not None:
            log(f"WARNING: {what}; the model will not know {form(len(missing), 'this class', 'these classes')}")
    if val_source is None:
        train, val = stratified_split(train, val_fraction, seed)
    unknown = sorted({s.label for s in val} - set(categories))
    if unknown:
        raise InputError(f"{val_source}: validation classes not in the training set: {', '.join(unknown)}")
    if not val:
        raise DatasetRefused(f"{val_source or source}: no usable validation videos; add more videos per class"
                             + (f" ({skipped_summary(skipped)})" if skipped else ""), skipped)
    description = str(source) if val_source is None else f"{source} (validation: {val_source})"
    return DatasetSplits(categories, train, val, skipped, description)


# The share of the shortest training clips `min_seconds` leaves out (an odd short video does not set it).
SHORTEST_SHARE = 5


def shortest_clip_time(samples: Sequence[Sample], spec: InputSpec, share: float = SHORTEST_SHARE) -> Optional[float]:
    """The time that clips from all but the shortest `share` % of `samples` cover at least: a video
    shorter than a clip gives clips that cover just the video. A model trained on them records it
    as `InputSpec.min_seconds`; None when no frame rate is known."""
    timed = [s for s in samples if s.fps > 0 and s.num_frames > 0]
    if not timed:
        return None
    covered = [s.num_frames / s.fps if spec.sampling == "uniform"
               else min(s.num_frames / s.fps, spec.clip_seconds_at(s.fps)) for s in timed]
    return math.floor(float(np.percentile(covered, share, method="lower")) * 100) / 100  # a clip's, down to 1/100 s


def describe_clip_lengths(samples: Sequence[Sample], spec: InputSpec) -> list[str]:
    """Two lines for the start of a run: how long the videos are and at what frame rates, and how
    clips are sampled from them (the stride chosen per frame rate, and how many are shorter than a clip)."""
    if not samples:
        return []
    timed = [s for s in samples if s.fps > 0]
    rates = Counter(round(s.fps, 2) for s in timed)
    lengths = ""
    if timed:
        seconds = np.array([s.num_frames / s.fps for s in timed])
        lengths = (f" of {np.median(seconds):.2f} s (median; {seconds.min():.2f} to {seconds.max():.2f} s)"
                   f" at {', '.join(f'{fps:g} fps ({n})' for fps, n in rates.most_common(4))}"
                   f"{', ...' if len(rates) > 4 else ''}")
    frames = np.array([s.num_frames for s in samples])
    first = (f"videos: {len(samples)}{lengths}; {int(np.median(frames))} frames median "
             f"({frames.min()} to {frames.max()})")
    if spec.sampling == "uniform":
        return [first, f"clips: {spec.frames} frames, one from each of {spec.frames} equal parts of a video"]
    short = [s for s in samples if s.num_frames < spec.span_at(s.fps or None)]
    strides = "; ".join(f"at {fps:g} fps {_frames_apart(spec.stride_at(fps))} ({spec.span_at(fps) / fps:.2f} s)"
                        for fps, _ in rates.most_common(4))
    second = f"clips: {spec.frames} frames over {spec.seconds:.2f} s" + (f", {strides}" if strides else "")
    if short:
        second += (f"; {len(short)} of {len(samples)} videos are shorter than a clip: each of their clips spreads "
                   f"its {spec.frames} frames evenly over the whole video")
    if spec.min_seconds is not None:
        second += (f"; all but the shortest {SHORTEST_SHARE} % of training clips cover {spec.min_seconds:.2f} s or "
                   "more (the model records it: predict notes shorter clips)")
    return [first, second]


def _frames_apart(stride: float) -> str:
    return "every frame" if stride == 1 else f"every {stride:.3g} frames"


def class_counts(samples: Sequence[Sample]) -> Counter:
    return Counter(s.label for s in samples)


# ---------------------------------------------------------------------------------------------
# Clips for the training loop


class ClipDataset(Dataset):
    """Clips of the given samples as (tensor C,T,H,W, class index).

    Training clips (`augmentation` given) get a random temporal position, crop, jitter, flip and
    reversal (a flipped or reversed clip takes the class its swaps name) drawn from a generator seeded by (seed, epoch, index), so a resumed run sees exactly the clips
    the uninterrupted run would have seen, whatever the number of loader workers. Evaluation clips
    are the centre clip and centre crop, as `sifa predict` makes them.
    """

    def __init__(self, samples: Sequence[Sample], categories: Sequence[str], spec: InputSpec,
                 augmentation: Optional[Augmentation] = None, seed: int = 0):
        self.samples = list(samples)
        self.label_index = {name: i for i, name in enumerate(categories)}
        self.spec = spec
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0
        # the class a mirrored / reversed clip of each class becomes
        swaps = augmentation or Augmentation()
        self.mirrored_label = swap_index(swaps.hflip_swaps, categories, "hflip_swaps")
        self.reversed_label = swap_index(swaps.reverse_swaps, categories, "reverse_swaps")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.augmentation is None:
            # Evaluation never swaps in another video: its scores would silently stop being comparable.
            sample = self.samples[index]
            try:
                return self.load_clip(sample, index)
            except SifaError as exc:
                raise DecodeError(f"a validation video can no longer be read ({exc}); validation does not "
                                  "substitute another video: restore or fix it, then run again (--resume RUN "
                                  "continues from the last finished epoch)") from None
        # Every process must yield a full batch (DDP steps in lockstep), so a training file that broke
        # since the scan is replaced by the next readable one rather than dropped.
        for attempt in range(min(len(self.samples), REPLACEMENT_ATTEMPTS)):
            position = (index + attempt) % len(self.samples)
            sample = self.samples[position]
            try:
                return self.load_clip(sample, position)
            except SifaError as exc:
                print(f"warning: could not read a training video, using the next one instead: {exc}",
                      file=sys.stderr, flush=True)
        raise DecodeError(f"{REPLACEMENT_ATTEMPTS} videos in a row could not be read; is the dataset still there?")

    def load_clip(self, sample: Sample, index: int) -> tuple[torch.Tensor, int]:
        """(the clip's model input, its class index: swapped when augmentation mirrored or reversed it)."""
        spec = self.spec
        label = self.label_index[sample.label]
        with Video(sample.path, short_side=spec.resize) as video:
            stride = spec.stride_at(video.info.fps)  # clips cover the same time at any frame rate
            if self.augmentation is None:
                frames, _ = read_sampled(
                    video, lambda n: sample_clips(spec.frames, stride, spec.sampling, 1, 0, n).indices[0]
                )
                return evaluation_views(frames, spec.size, spec.resize, 1, spec.mean, spec.std)[0], label
            rng = np.random.default_rng([self.seed, self.epoch, index])
            frames, _ = read_sampled(
                video, lambda n: random_clip_indices(n, spec.frames, stride, spec.sampling, rng)
            )
        frames, mirrored, backwards = augment_clip(frames, spec.size, self.augmentation, rng)
        if mirrored:
            label = self.mirrored_label[label]
        if backwards:
            label = self.reversed_label[label]
        return to_model_input(frames, spec.mean, spec.std), label
