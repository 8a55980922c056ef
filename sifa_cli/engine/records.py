"""What a prediction run produces and the checks on its options, without torch: the records
(`VideoResult`, its timeline `Window`s and `Segment`s, `ShortClips`, `RunStats`), the timeline's window
plan, and the option checks `sifa predict` and `sifa evaluate` run before anything heavy loads. The
results writers and timeline exports build on these; `engine/predict.py` runs the model."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np

from sifa_cli.data.spec import InputSpec
from sifa_cli.errors import InputError
from sifa_cli.wording import counted, form

TopK = list[tuple[str, float]]
ProgressFn = Callable[[int, int], None]  # (more units planned, more units done)
# Windows per video a timeline may have: each is a model input kept in memory until the video ends.
MAX_TIMELINE_WINDOWS = 20_000
# Videos decoded at once by default, one per CPU up to this; each is a decode worker process and a
# thread. A small model is decode-bound (benchmarks/RESULTS.md: one decoder caps it near 32 clips/s).
MAX_DEFAULT_DECODERS = 4


def default_decoders() -> int:
    return max(1, min(MAX_DEFAULT_DECODERS, os.cpu_count() or 1))


def check_counts(batch_size: int, top_k: int = 1, decoders: Optional[int] = None) -> None:
    """The counts predict and evaluate take, checked before anything loads."""
    for option, value in (("--batch-size", batch_size), ("--top-k", top_k), ("--decoders", decoders)):
        if value is not None and value < 1:
            raise InputError(f"{option} must be at least 1, got {value}")


@dataclass
class Window:
    start: float
    end: float
    top: TopK
    shot: Optional[int] = None  # with cut detection: the shot (1, 2, ...) it lies in


@dataclass
class Segment:
    """Consecutive windows with the same top class. Boundaries sit halfway between the centres
    of the last window of one class and the first of the next; `score` is their mean top score."""

    start: float
    end: float
    label: str
    score: float
    windows: int
    # Filled in by sifa_cli.engine.shots.finish_segments: frames [start_frame, end_frame), the shot
    # (with cut detection), the runner-up label's mean score and whether the label is uncertain.
    start_frame: Optional[int] = None
    end_frame: Optional[int] = None
    shot: Optional[int] = None
    runner_up: Optional[tuple[str, float]] = None
    uncertain: bool = False


@dataclass
class VideoResult:
    path: str
    top: TopK = field(default_factory=list)
    error: Optional[str] = None
    notes: list[str] = field(default_factory=list)
    inputs: int = 0  # clips x crops the model ran for this video
    duration: Optional[float] = None
    windows: Optional[list[Window]] = None
    segments: Optional[list[Segment]] = None
    fps: Optional[float] = None  # timelines: the frame rate and frame count, for frame-accurate exports
    frames: Optional[int] = None
    shots: Optional[list[tuple[int, int]]] = None  # with cut detection: each shot's frames [first, stop)
    short: Optional["ShortClips"] = None  # set when a clip (or window) held fewer frames than a clip spans
    window: Optional[float] = None  # timelines: the window length and stride this video was scored with
    stride: Optional[float] = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ShortClips:
    """A video (or some of its timeline windows) shorter than one clip's span: every such clip's
    frames were spread evenly over what there was (`spread_offsets`), never looped. `note` is
    the line this video's record carries; `summarise_short` makes one line for a whole run."""

    frames: int  # the fewest source frames a clip had to take its frames from
    span: int  # the source frames a clip spans at this video's frame rate
    distinct: int  # the fewest distinct frames in such a clip
    windows: int = 0  # timeline windows that were short (0: the whole video was)
    note: str = ""
    fps: Optional[float] = None  # the frame rate those frames were read at


def summarise_short(results: Iterable[VideoResult], spec: InputSpec) -> Optional[str]:
    """One line for all the videos of a run that were shorter than a clip's span, or None."""
    short = [r for r in results if r.short is not None]
    if not short:
        return None
    fewest = min(short, key=lambda r: r.short.frames)
    windows = sum(r.short.windows for r in short)
    what = (f"{counted(windows, 'timeline window')} in {counted(len(short), 'video')} {form(windows, 'holds', 'hold')}"
            if windows else f"{counted(len(short), 'video')} {form(len(short), 'holds', 'hold')}")
    why = "; ".join(spec.unlike_training(fewest.short.frames, fewest.short.distinct, fewest.short.fps))
    return (f"{what} fewer frames than a {spec.seconds:.2f} s clip spans (as few as {fewest.short.frames} of "
            f"{fewest.short.span}, e.g. {fewest.path}): each such clip's {spec.frames} frames were spread evenly "
            f"over them ({fewest.short.distinct} distinct at the fewest); {why}")


@dataclass
class RunStats:
    videos_ok: int = 0
    videos_failed: int = 0
    inputs: int = 0  # model inputs (clips x crops)
    batches: int = 0  # forward passes
    model_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def inputs_per_second(self) -> float:
        return self.inputs / self.wall_seconds if self.wall_seconds > 0 else 0.0


def merge_segments(windows: list[Window]) -> list[Segment]:
    """Runs of windows whose top-1 label is the same, as a partition of the timeline."""
    segments: list[Segment] = []
    for i, window in enumerate(windows):
        label, score = window.top[0]
        if segments and segments[-1].label == label:
            segment = segments[-1]
            segment.score = (segment.score * segment.windows + score) / (segment.windows + 1)
            segment.windows += 1
            segment.end = window.end
            continue
        if segments:
            previous = windows[i - 1]
            boundary = ((previous.start + previous.end) / 2 + (window.start + window.end) / 2) / 2
            segments[-1].end = boundary
            start = boundary
        else:
            start = window.start
        segments.append(Segment(start, window.end, label, score, 1))
    return segments


def check_window_options(window: Optional[float], stride: Optional[float]) -> None:
    """--window and --stride, where given (None: the defaults of `window_and_stride`), are positive,
    finite numbers of seconds."""
    if any(value is not None and not (np.isfinite(value) and value > 0) for value in (window, stride)):
        raise InputError("--window and --stride must be positive, finite numbers of seconds")


def window_and_stride(spec: InputSpec, fps: Optional[float], window: Optional[float],
                      stride: Optional[float]) -> tuple[float, float]:
    """A timeline's window and stride for a video of `fps`: a window left unset is the time one clip
    of the model covers there (`InputSpec.clip_seconds_at`: its `seconds`, longer where the frame
    rate is too low for the clip's frames), so every window holds the frames its clip needs and no
    more; a stride left unset is half the window, so every moment is seen by two windows."""
    window = window if window is not None else spec.clip_seconds_at(fps)
    return window, stride if stride is not None else window / 2


def plan_windows(duration: float, window: float, stride: float) -> list[tuple[float, float]]:
    """Windows of `window` seconds every `stride` seconds; the last one is aligned to the end so
    the tail is covered; a video shorter than one window is one window."""
    check_window_options(window, stride)
    if duration <= window:
        return [(0.0, duration)]
    count = int(np.floor((duration - window) / stride + 1e-9)) + 1
    total = count + ((count - 1) * stride + window < duration - 1e-6)  # + the window aligned to the end
    if total > MAX_TIMELINE_WINDOWS:
        shortest = float(f"{(duration - window) / (MAX_TIMELINE_WINDOWS - 2) * 1.01:.3g}")
        raise InputError(
            f"a timeline of {duration:.1f} s with --stride {stride:g} would need {total} windows, more than the "
            f"{MAX_TIMELINE_WINDOWS} allowed per video; use a --stride of at least {shortest:g} s"
        )
    windows = [(k * stride, k * stride + window) for k in range(count)]
    if windows[-1][1] < duration - 1e-6:
        windows.append((duration - window, duration))
    return windows
