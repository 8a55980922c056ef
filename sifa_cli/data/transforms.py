"""Turn decoded RGB frames into model input: short-side resize, spatial crops, normalization.

Frames are numpy arrays T,H,W,3 uint8 (RGB) until `to_model_input`, which returns a float tensor
C,T,H,W. Prediction and fine-tuning share these functions so both see identical pixels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from sifa_cli.errors import InputError

if TYPE_CHECKING:  # torch is imported where tensors are made: the decode worker never loads it
    import torch


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) after scaling so the shorter side equals `short_side`, keeping the aspect."""
    if width <= 0 or height <= 0:
        raise ValueError(f"invalid frame size {width}x{height}")
    if width <= height:
        return short_side, max(1, round(height * short_side / width))
    return max(1, round(width * short_side / height)), short_side


def resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    """Resize every frame so its shorter side is `short_side`; a no-op when it already is."""
    height, width = frames.shape[1:3]
    new_width, new_height = scaled_size(width, height, short_side)
    if (new_width, new_height) == (width, height):
        return frames
    # INTER_AREA avoids aliasing when shrinking; INTER_LINEAR is the better choice when enlarging.
    interpolation = cv2.INTER_AREA if new_height < height else cv2.INTER_LINEAR
    out = np.empty((frames.shape[0], new_height, new_width, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        cv2.resize(frame, (new_width, new_height), dst=out[i], interpolation=interpolation)
    return out


def crop(frames: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    return frames[:, top : top + height, left : left + width]


def spatial_crops(frames: np.ndarray, size: int, count: int) -> list[np.ndarray]:
    """`count` square crops of side `size`: 1 = centre; 3 = start, centre, end of the longer side."""
    height, width = frames.shape[1:3]
    if height < size or width < size:
        raise ValueError(f"frames {width}x{height} are smaller than the crop size {size}")
    centre_top, centre_left = (height - size) // 2, (width - size) // 2
    if count == 1:
        return [crop(frames, centre_top, centre_left, size, size)]
    if count != 3:
        raise InputError(f"spatial crops must be 1 or 3, got {count}")
    if width >= height:
        lefts = [0, centre_left, width - size]
        return [crop(frames, centre_top, left, size, size) for left in lefts]
    tops = [0, centre_top, height - size]
    return [crop(frames, top, centre_left, size, size) for top in tops]


def to_model_input(frames: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 T,H,W,3 -> float32 C,T,H,W scaled to [0, 1] then normalized per channel."""
    import torch  # here, not at the top: the decode worker process resizes frames without loading torch

    # (x / 255 - mean) / std as one scale and one shift per channel, on a float copy made in one
    # pass. numpy, not torch: this runs on the decoding threads, where torch's OpenMP threads would
    # spin-wait after every call and take the CPU the decoders and the model need (on 2 cores it
    # made reading and preparing a 16-frame clip 7-13 ms slower; see benchmarks/RESULTS.md).
    scale = np.array([1.0 / (255.0 * s) for s in std], np.float32).reshape(3, 1, 1, 1)
    shift = np.array([-m / s for m, s in zip(mean, std)], np.float32).reshape(3, 1, 1, 1)
    out = np.empty((3, *frames.shape[:3]), np.float32)
    np.copyto(out, np.moveaxis(frames, 3, 0))
    out *= scale
    out += shift
    return torch.from_numpy(out)


def evaluation_views(
    frames: np.ndarray, size: int, resize: int, crops: int, mean: Sequence[float], std: Sequence[float]
) -> list[torch.Tensor]:
    """Evaluation views of one clip.

    One crop: short side to `resize`, then the centre `size` square (the usual 256 -> 224).
    Three crops: short side to `size`, then three squares covering the longer side, so together
    they see the whole frame.
    """
    short_side = resize if crops == 1 else size
    resized = resize_short_side(frames, short_side)
    return [to_model_input(view, mean, std) for view in spatial_crops(resized, size, crops)]
