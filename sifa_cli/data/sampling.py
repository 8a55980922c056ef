"""Which frame indices make up each clip: dense clips, uniform (TSN) segments, multi-view testing."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from sifa_cli.errors import InputError

MAX_VIEW_CLIPS = 64


@dataclass(frozen=True)
class Views:
    """Multi-view testing: `clips` clips spread over time, each seen through `crops` spatial crops."""

    clips: int = 1
    crops: int = 1

    @property
    def count(self) -> int:
        return self.clips * self.crops

    def __str__(self) -> str:
        return f"{self.clips}x{self.crops}"


def parse_views(text: str) -> Views:
    """Parse "CLIPSxCROPS" such as "1x1", "4x3" or "10x3"."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not match:
        raise InputError(f"--views must look like CLIPSxCROPS, e.g. 1x1 or 4x3; got {text!r}")
    clips, crops = int(match.group(1)), int(match.group(2))
    if not 1 <= clips <= MAX_VIEW_CLIPS:
        raise InputError(f"--views: the number of clips must be between 1 and {MAX_VIEW_CLIPS}, got {clips}")
    if crops not in (1, 3):
        raise InputError(f"--views: the number of crops must be 1 or 3, got {crops}")
    return Views(clips, crops)


@dataclass(frozen=True)
class SampledClips:
    """Frame indices of shape (clips, frames), and whether the range was shorter than one clip's
    span, so that the clip's frames were spread evenly over the whole range instead (a smaller
    stride, or fewer distinct frames than the clip has, each used more than once; never looped)."""

    indices: np.ndarray
    short: bool

    @property
    def unique_indices(self) -> np.ndarray:
        return np.unique(self.indices)

    @property
    def distinct(self) -> int:
        """The fewest distinct frames any one clip holds."""
        return min(len(np.unique(clip)) for clip in self.indices)


def dense_span(frames: int, step: float) -> int:
    """How many source frames one dense clip covers, `step` (possibly fractional) frames apart."""
    return int(round((frames - 1) * step)) + 1


def dense_offsets(frames: int, step: float) -> np.ndarray:
    """Positions of a dense clip's frames from its first: `step` apart, rounded to whole frames."""
    return np.round(np.arange(frames) * float(step)).astype(np.int64)


def spread_offsets(frames: int, length: int) -> np.ndarray:
    """`frames` positions spread evenly over a range of `length` frames, first and last included:
    a range shorter than a clip's span is used whole, with a smaller stride, or (shorter than the
    clip's frame count) with fewer distinct frames, each repeated in place, in time order."""
    if frames == 1:
        return np.array([(length - 1) // 2], dtype=np.int64)
    return np.round(np.arange(frames) * ((length - 1) / (frames - 1))).astype(np.int64)


def sample_clips(
    frames: int,
    step: float,
    sampling: str,
    num_clips: int,
    start: int,
    stop: int,
) -> SampledClips:
    """Indices for `num_clips` clips drawn from frames [start, stop).

    dense: `frames` frames `step` apart (a stride in source frames, at least 1, possibly
    fractional: see `InputSpec.stride_at`); the clips sit at the centres of `num_clips` equal
    stretches of the possible start positions (one clip: the middle of the range). A range
    shorter than one clip's span is covered whole by every clip (`spread_offsets`).
    uniform: the range is cut into `frames` equal segments and each clip takes one frame per
    segment, clip k at relative position (k + 0.5) / num_clips inside every segment.
    """
    length = stop - start
    if length < 1:
        raise InputError(f"cannot sample a clip from an empty frame range [{start}, {stop})")
    if frames < 1 or step < 1 or num_clips < 1:
        raise ValueError("frames and num_clips must be positive and step at least 1")
    clip_numbers = np.arange(num_clips)
    if sampling == "uniform":
        segment = length / frames
        positions = (clip_numbers[:, None] + 0.5) / num_clips + np.arange(frames)[None, :]
        offsets = np.minimum(np.floor(positions * segment).astype(np.int64), length - 1)
        return SampledClips(start + offsets, short=length < frames)
    if sampling != "dense":
        raise ValueError(f"unknown sampling {sampling!r}")
    span = dense_span(frames, step)
    if length >= span:
        slack = length - span
        first = np.floor((clip_numbers + 0.5) * (slack + 1) / num_clips).astype(np.int64)
        return SampledClips(start + first[:, None] + dense_offsets(frames, step)[None, :], short=False)
    spread = np.broadcast_to(spread_offsets(frames, length), (num_clips, frames))
    return SampledClips(start + np.array(spread), short=True)
