"""Training-time randomness for clips: where in time a clip starts, random resized crops, colour
jitter and (opt-in) horizontal flips and playing backwards.

Every function draws from the numpy Generator it is given, and a clip applies the same crop,
jitter and flip to all of its frames: motion between frames is the signal and must survive.
Flips and reversal are off unless asked for, because they turn "moving left" into "moving right"
and "zoom in" into "zoom out": the classes they swap are given with them (`hflip_swaps`,
`reverse_swaps`), and the dataset gives a mirrored or reversed clip the swapped label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from sifa_cli.data.sampling import dense_offsets, dense_span, spread_offsets
from sifa_cli.errors import InputError


@dataclass(frozen=True)
class Augmentation:
    """scale: range of the crop's area as a fraction of the frame; ratio: range of its aspect ratio;
    color_jitter: strength s of brightness, contrast and saturation factors drawn from [1-s, 1+s]."""

    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    color_jitter: float = 0.4
    hflip: bool = False
    reverse: bool = False  # play half the clips backwards
    hflip_swaps: tuple[tuple[str, str], ...] = ()  # classes a mirrored clip swaps ("pan left", "pan right")
    reverse_swaps: tuple[tuple[str, str], ...] = ()  # classes a clip played backwards swaps


def random_clip_indices(num_frames: int, frames: int, step: float, sampling: str,
                        rng: np.random.Generator) -> np.ndarray:
    """Frame indices of one training clip.

    dense: `frames` frames `step` apart (a stride in source frames, see `InputSpec.stride_at`)
    from a random start; a video shorter than the clip's span is used whole, its frames spread
    evenly over the clip as `sifa predict` does (never looped). uniform: one random frame inside
    each of `frames` equal segments.
    """
    if sampling == "uniform":
        segment = num_frames / frames
        positions = (np.arange(frames) + rng.random(frames)) * segment
        return np.minimum(positions.astype(np.int64), num_frames - 1)
    span = dense_span(frames, step)
    if num_frames < span:
        return spread_offsets(frames, num_frames)
    start = int(rng.integers(0, num_frames - span + 1))
    return start + dense_offsets(frames, step)


def random_resized_crop(frames: np.ndarray, size: int, scale: tuple[float, float], ratio: tuple[float, float],
                        rng: np.random.Generator) -> np.ndarray:
    """One random box (area fraction in `scale`, aspect in `ratio`) cut from every frame and resized
    to size x size; falls back to the largest centred square when no box fits after 10 draws."""
    height, width = frames.shape[1:3]
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        box_w = int(round(math.sqrt(target * aspect)))
        box_h = int(round(math.sqrt(target / aspect)))
        if 0 < box_w <= width and 0 < box_h <= height:
            top = int(rng.integers(0, height - box_h + 1))
            left = int(rng.integers(0, width - box_w + 1))
            break
    else:
        box_w = box_h = min(height, width)
        top, left = (height - box_h) // 2, (width - box_w) // 2
    out = np.empty((frames.shape[0], size, size, 3), dtype=np.uint8)
    interpolation = cv2.INTER_AREA if box_h > size else cv2.INTER_LINEAR
    for i, frame in enumerate(frames):
        cv2.resize(frame[top:top + box_h, left:left + box_w], (size, size), dst=out[i], interpolation=interpolation)
    return out


def color_jitter(frames: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Scale brightness, contrast and saturation by factors from [1-strength, 1+strength].

    Brightness b, then contrast c about the clip's mean grey level m, then saturation s about each
    pixel's grey: all three are linear, so they fold into one 3x3 matrix and an offset,
    x' = b*c*(s*I + (1-s)*1*w^T) x + (1-c)*m, applied in one pass (cv2.transform, saturating).
    """
    if strength <= 0:
        return frames
    low, high = max(0.0, 1 - strength), 1 + strength
    brightness, contrast, saturation = rng.uniform(low, high, size=3)
    luma = np.array([0.299, 0.587, 0.114])
    mean_grey = brightness * float(frames.reshape(-1, 3).mean(axis=0) @ luma)
    matrix = brightness * contrast * (saturation * np.eye(3) + (1 - saturation) * np.outer(np.ones(3), luma))
    affine = np.hstack([matrix, np.full((3, 1), (1 - contrast) * mean_grey)])
    out = cv2.transform(np.ascontiguousarray(frames).reshape(-1, 1, 3), affine)
    return out.reshape(frames.shape)


def augment_clip(frames: np.ndarray, size: int, augmentation: Augmentation,
                 rng: np.random.Generator) -> tuple[np.ndarray, bool, bool]:
    """Crop, jitter and maybe flip and reverse a clip's frames (uint8 T,H,W,3) into T,size,size,3;
    also whether it was mirrored and whether it plays backwards (each with chance 1/2 when enabled)."""
    frames = random_resized_crop(frames, size, augmentation.scale, augmentation.ratio, rng)
    frames = color_jitter(frames, augmentation.color_jitter, rng)
    mirrored = bool(augmentation.hflip and rng.random() < 0.5)
    if mirrored:
        frames = np.ascontiguousarray(frames[:, :, ::-1])
    backwards = bool(augmentation.reverse and rng.random() < 0.5)
    if backwards:
        frames = np.ascontiguousarray(frames[::-1])
    return frames, mirrored, backwards


def swap_pairs(text: Optional[str], what: str) -> list[tuple[str, str]]:
    """Pairs of classes from "a=b, c=d" (`hflip_swaps`, `reverse_swaps`); `what` names the key in errors."""
    pairs = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        names = [name.strip() for name in item.split("=")]
        if len(names) != 2 or not all(names) or names[0] == names[1]:
            raise InputError(f"{what}: expected pairs of two different classes like 'pan left=pan right', "
                             f"got {item.strip()!r}")
        pairs.append((names[0], names[1]))
    return pairs


def swap_index(pairs: Sequence[tuple[str, str]], categories: Sequence[str], what: str) -> list[int]:
    """For each class index, the index of the class a clip of it becomes under the swap."""
    index = {name: i for i, name in enumerate(categories)}
    unknown = [name for pair in pairs for name in pair if name not in index]
    if unknown:
        raise InputError(f"{what} names {', '.join(repr(n) for n in dict.fromkeys(unknown))}, not a class of the "
                         f"data ({', '.join(categories)})")
    mapping = list(range(len(categories)))
    seen: set[str] = set()
    for a, b in pairs:
        for name in (a, b):
            if name in seen:
                raise InputError(f"{what} names {name!r} twice; each class swaps with at most one other")
            seen.add(name)
        mapping[index[a]], mapping[index[b]] = index[b], index[a]
    return mapping
