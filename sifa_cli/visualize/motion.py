"""Motion: what a SIFA block says about how the scene moved, in numbers.

Two readings of one block, both per query location and feature step (frame t-1 to frame t):
- the window shift: the mean learned offset of its K*K taps (where its sampling window moved);
- the displacement: where the query finds its match, the attention-weighted mean of its K*K sampling
  positions (softmax over the taps of the correlation times the block's temperature), relative to
  the query. This is what `sifa visualize` draws and what the block's motion readout passes on.

Units: feature cells (of the block's grid), and frame pixels per frame: a cell is `spec.size / grid`
model pixels, a model pixel `short side / spec.resize` frame pixels, and a feature step spans
`clip frames / feature frames` clip frames of `step` video frames each.

`measure_motion` runs a model over labelled camera clips and says, per block, whether its readings
follow the scene: the direction of the clip's mean reading (minus the mean over static clips, which
takes off a constant shift a block may learn) against the direction the scene moves, its size
against the true speed when that is known, and the accuracy with the SIFA steps on and off.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from sifa_cli.data.spec import InputSpec
from sifa_cli.errors import ModelError
from sifa_cli.models import predict_proba
from sifa_cli.models.blocks import attention_displacement
from sifa_cli.models.global_motion import STEP_STATISTICS, motion_statistics
from sifa_cli.visualize.capture import BlockCapture, capture_sifa
from sifa_cli.visualize.clip import load_model_clip

# Which way the scene moves in the frame, (dy, dx) as a unit vector, for each camera-movement class
# (cinematographic convention, examples/camera/render.py: a pan left moves the scene right).
SCENE_MOTION = {"pan left": (0.0, 1.0), "pan right": (0.0, -1.0), "tilt up": (1.0, 0.0), "tilt down": (-1.0, 0.0)}
STILL_LABEL = "static"
# A reading "points with the motion" when it lies within this angle of the scene's direction.
AGREEMENT_DEGREES = 45.0


def window_shift(capture: BlockCapture, t: int | slice) -> np.ndarray:
    """(.., 2, h, w): how far each location's sampling window moved, the mean offset of its K*K taps."""
    return capture.offsets[t].mean(axis=-4)


def displacement(capture: BlockCapture, t: int | slice) -> np.ndarray:
    """(.., 2, h, w) in feature cells: where each query finds its match in frame t, relative to itself
    (the attention-weighted mean of its sampling positions; see the module doc). Computed by the model's
    own `attention_displacement`, so the picture shows what the motion readout passes on."""
    single = isinstance(t, int)
    corr = torch.from_numpy(capture.correlation[t:t + 1] if single else capture.correlation[t]).double()
    offsets = torch.from_numpy(capture.offsets[t:t + 1] if single else capture.offsets[t]).double()
    frames, kk, h, w = corr.shape
    # capture layout (F, K*K, [2,] h, w) -> the operator's (N=1, K*K or 2K*K, T=F, h, w)
    moved = attention_displacement(corr.permute(1, 0, 2, 3)[None],
                                   offsets.permute(1, 2, 0, 3, 4).reshape(1, 2 * kk, frames, h, w),
                                   capture.kernel_size, capture.dilation, capture.temperature)
    moved = moved[0].permute(1, 0, 2, 3).float().numpy()  # (F, 2, h, w)
    return moved[0] if single else moved


def mean_shift(capture: BlockCapture) -> tuple[float, float]:
    """(dy, dx) in feature pixels: how far the sampling windows moved on average over the clip's steps.
    A block can learn a constant offset that has nothing to do with motion; this is it."""
    shifts = window_shift(capture, slice(1, None))
    if shifts.size == 0:  # a single feature frame: no step
        return 0.0, 0.0
    return float(shifts[:, 0].mean()), float(shifts[:, 1].mean())


def mean_displacement(capture: BlockCapture) -> tuple[float, float]:
    """(dy, dx) in feature cells: the displacement averaged over every place and step of the clip."""
    return steps_mean(displacement(capture, slice(1, None)))


def steps_mean(moved: np.ndarray) -> tuple[float, float]:
    """(dy, dx): the mean of a displacement field (steps, 2, h, w) over its places and steps."""
    if moved.size == 0:
        return 0.0, 0.0
    return float(moved[:, 0].mean()), float(moved[:, 1].mean())


def relative_to_mean(capture: BlockCapture) -> BlockCapture:
    """The capture with the clip's mean shift taken off every offset: arrows then show how each place
    moves differently from the block as a whole."""
    dy, dx = mean_shift(capture)
    offsets = capture.offsets.copy()
    offsets[:, :, 0] -= dy
    offsets[:, :, 1] -= dx
    return dataclasses.replace(capture, offsets=offsets)


ARROW_MODES = ("match", "relative", "absolute")


def arrow_field(capture: BlockCapture, mode: str) -> np.ndarray:
    """(F, 2, h, w) vectors in feature cells for `sifa visualize --arrows MODE`: match = the displacement
    (where each query finds its match); absolute = the window shift; relative = the window shift minus
    its mean over the clip."""
    if mode == "match":
        return displacement(capture, slice(None))
    if mode == "relative":
        return window_shift(relative_to_mean(capture), slice(None))
    if mode == "absolute":
        return window_shift(capture, slice(None))
    raise ValueError(f"unknown arrow mode {mode!r}; choose from {', '.join(ARROW_MODES)}")


@dataclass(frozen=True)
class ClipScale:
    """How a block's feature cells and steps map to the video: frame pixels per cell (y, x), and video
    frames per feature step."""

    cell_pixels: tuple[float, float]
    frames_per_step: float

    @classmethod
    def of(cls, capture: BlockCapture, spec: InputSpec, source_size: tuple[int, int], indices: np.ndarray) -> "ClipScale":
        width, height = source_size
        to_frame = min(width, height) / spec.resize  # model pixels -> frame pixels
        gaps = np.diff(np.asarray(indices, np.float64))
        gaps = gaps[gaps > 0]
        gap = float(gaps.mean()) if gaps.size else 1.0
        return cls((spec.size / capture.height * to_frame, spec.size / capture.width * to_frame),
                   len(indices) / capture.frames * gap)

    def pixels_per_frame(self, cells: Sequence[float]) -> tuple[float, float]:
        return (cells[0] * self.cell_pixels[0] / self.frames_per_step,
                cells[1] * self.cell_pixels[1] / self.frames_per_step)


def similarity_fit(field: np.ndarray) -> np.ndarray:
    """(steps, len(STEP_STATISTICS)): per feature step, the similarity motion fitted to a block's
    displacement field (F, 2, h, w) as `displacement(capture, slice(None))` gives it, and how well it fits
    (`models.global_motion.motion_statistics`: translation in half frames, scale and rotation per step,
    the share of the field the fit explains, ...)."""
    moved = torch.from_numpy(field).permute(1, 0, 2, 3)[None]  # 1,2,F,h,w
    return motion_statistics(moved)[0].T.numpy()


def block_motion(capture: BlockCapture, scale: ClipScale) -> dict:
    """The numbers behind a block's picture: per feature step, the mean window shift and the mean
    displacement, (dy, dx) in feature cells and in frame pixels per frame; and their clip means."""

    def both(cells) -> dict:
        cells = [round(float(v), 4) for v in cells]
        return {"cells": cells, "pixels_per_frame": [round(v, 3) for v in scale.pixels_per_frame(cells)]}

    field = displacement(capture, slice(None))  # every step at once, for the steps and the fit
    fits = similarity_fit(field)
    steps = []
    for t in range(1, capture.frames):
        shift = window_shift(capture, t)
        steps.append({"step": [t - 1, t], "offset": both(shift.reshape(2, -1).mean(axis=1)),
                      "displacement": both(field[t].reshape(2, -1).mean(axis=1)),
                      "whole_picture": whole_picture(fits[t - 1:t], scale)})
    return {
        "grid": [capture.height, capture.width],
        "frame_pixels_per_cell": [round(v, 3) for v in scale.cell_pixels],
        "video_frames_per_step": round(scale.frames_per_step, 3),
        "temperature": round(capture.temperature, 4),
        "offset": both(mean_shift(capture)),
        "displacement": both(steps_mean(field[1:])),
        "whole_picture": whole_picture(fits, scale),
        "steps": steps,
    }


def whole_picture(fits: np.ndarray, scale: ClipScale) -> dict:
    """The similarity fit of some steps (their mean), per video frame: zoom in percent of the frame's size
    per frame (> 0: the picture grows, a zoom in), rotation in degrees per frame (> 0: clockwise on the
    screen, y pointing down), and the share of the
    displacement field one such motion of the whole picture explains (near 1 for a camera move, low
    when parts of the picture move on their own)."""
    if fits.size == 0:
        return {"zoom_percent_per_frame": 0.0, "rotation_degrees_per_frame": 0.0, "explained": 0.0}
    column = {name: float(fits[:, i].mean()) for i, name in enumerate(STEP_STATISTICS)}
    return {"zoom_percent_per_frame": round(100.0 * column["scale"] / scale.frames_per_step, 3),
            "rotation_degrees_per_frame": round(math.degrees(column["rotation"]) / scale.frames_per_step, 3),
            "explained": round(column["explained"], 3)}


def motion_summary(capture: BlockCapture, scale: ClipScale) -> tuple[str, str]:
    """A caption's note, in full and shortened for narrow panels: the block's mean displacement in frame
    pixels per frame, its zoom, and the share of its field one motion of the whole picture explains."""
    field = displacement(capture, slice(None))  # once, for the mean and the fit
    dy, dx = scale.pixels_per_frame(steps_mean(field[1:]))
    fit = whole_picture(similarity_fit(field), scale)
    x, y, zoom = _signed(dx), _signed(dy), _signed(fit["zoom_percent_per_frame"])
    explained = f"{100 * fit['explained']:.0f} %"
    return (f"scene moves x {x}, y {y} px/frame, zoom {zoom} %/frame; one motion explains {explained}",
            f"x {x} y {y} px/f, zoom {zoom} %/f, fit {explained}")


def _signed(value: float) -> str:
    """One decimal with its sign, and no "-0.0" for a value that rounds to zero."""
    rounded = round(float(value), 1)
    return f"{rounded + 0.0:+.1f}"  # + 0.0 turns -0.0 into 0.0


# ---------------------------------------------------------------------------------------------
# Does SIFA carry the motion? Over a set of labelled camera clips.


@dataclass(frozen=True)
class LabelledClip:
    path: str
    label: str
    speed: float | None = None  # true scene speed in frame pixels per frame, when known


@dataclass
class BlockAgreement:
    """One block over the pan/tilt clips: how often each reading points with the scene (within
    AGREEMENT_DEGREES, after the static clips' mean is taken off), and its size over the true speed."""

    block: str
    clips: int
    offset_agreement: float
    displacement_agreement: float
    offset_size_ratio: float | None  # median of (reading along the scene's direction) / true speed
    displacement_size_ratio: float | None
    displacement_within_2x: float | None  # share of clips whose ratio is within [0.5, 2]

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass
class MotionReport:
    clips: int
    accuracy_sifa_on: float
    accuracy_sifa_off: float
    blocks: list[BlockAgreement]

    def best_block(self) -> BlockAgreement | None:
        """The block whose displacements follow the scene best (then the one closest to true size)."""
        if not self.blocks:
            return None
        def size_error(b: BlockAgreement) -> float:
            ratio = b.displacement_size_ratio
            return abs(math.log(ratio)) if ratio is not None and ratio > 0 else math.inf

        return max(self.blocks, key=lambda b: (b.displacement_agreement, -size_error(b)))

    def failures(self, min_drop: float = 0.3, min_agreement: float = 0.9) -> list[str]:
        """Why SIFA does not carry the motion, if it does not: switching the SIFA steps off must cost at
        least `min_drop` of accuracy, and some block's displacements must point with the scene in at
        least `min_agreement` of the pan and tilt clips."""
        problems = []
        drop = self.accuracy_sifa_on - self.accuracy_sifa_off
        if drop < min_drop:
            problems.append(f"switching SIFA off costs {drop:.1%} of accuracy (at least {min_drop:.0%} wanted)")
        best = self.best_block()
        if best is None or best.displacement_agreement < min_agreement:
            found = "no block" if best is None else f"{best.block}'s in {best.displacement_agreement:.0%}"
            problems.append(f"displacements point with the scene in {found} of pan/tilt clips "
                            f"(at least {min_agreement:.0%} wanted)")
        return problems

    def as_dict(self) -> dict:
        return {"clips": self.clips, "accuracy_sifa_on": round(self.accuracy_sifa_on, 4),
                "accuracy_sifa_off": round(self.accuracy_sifa_off, 4),
                "blocks": [b.as_dict() for b in self.blocks]}


def _agrees(vector: np.ndarray, direction: np.ndarray) -> bool:
    size = float(np.linalg.norm(vector))
    return size > 0 and float(vector @ direction) / size >= math.cos(math.radians(AGREEMENT_DEGREES))


def measure_motion(model: nn.Module, meta: dict, clips: Iterable[LabelledClip]) -> MotionReport:
    """Run `model` (its checkpoint `meta`) on every clip with its SIFA steps on and off; see the module doc.
    Clips whose label is not a pan, a tilt or `static` count for accuracy only."""
    spec = InputSpec.from_meta(meta.get("input"))
    categories = list(meta.get("categories") or [])
    clips = list(clips)
    device = next(model.parameters()).device
    if not any(block.sifa_enabled for _, block in model.sifa_blocks()):
        raise ModelError("the model's SIFA steps are switched off: there is no motion to measure")
    names = [name for name, block in model.sifa_blocks() if block.sifa_enabled]
    readings: dict[str, list[tuple[np.ndarray, np.ndarray, ClipScale]]] = {name: [] for name in names}
    right_on = right_off = 0
    for clip in clips:
        loaded = load_model_clip(clip.path, spec)
        x = loaded.model_input.to(device)
        captures, probabilities = capture_sifa(model, x, names)
        right_on += categories[int(probabilities.argmax())] == clip.label
        model.set_sifa_enabled(False)
        try:
            with torch.inference_mode():
                off = predict_proba(model, x)[0]
        finally:
            model.set_sifa_enabled(True)
        right_off += categories[int(off.argmax())] == clip.label
        for name, capture in captures.items():
            readings[name].append((np.array(mean_shift(capture)), np.array(mean_displacement(capture)),
                                   ClipScale.of(capture, spec, loaded.source_size, loaded.indices)))

    still = [i for i, c in enumerate(clips) if c.label == STILL_LABEL]
    moving = [i for i, c in enumerate(clips) if c.label in SCENE_MOTION]
    blocks = []
    for name in names:
        rows = readings[name]
        base_offset = np.mean([rows[i][0] for i in still], axis=0) if still else np.zeros(2)
        base_moved = np.mean([rows[i][1] for i in still], axis=0) if still else np.zeros(2)
        agree_offset = agree_moved = 0
        offset_ratios, moved_ratios = [], []
        for i in moving:
            direction = np.array(SCENE_MOTION[clips[i].label])
            offset, moved, scale = rows[i][0] - base_offset, rows[i][1] - base_moved, rows[i][2]
            agree_offset += _agrees(offset, direction)
            agree_moved += _agrees(moved, direction)
            if clips[i].speed:
                offset_ratios.append(float(np.dot(scale.pixels_per_frame(offset), direction)) / clips[i].speed)
                moved_ratios.append(float(np.dot(scale.pixels_per_frame(moved), direction)) / clips[i].speed)
        count = len(moving)
        blocks.append(BlockAgreement(
            block=name, clips=count,
            offset_agreement=agree_offset / count if count else 0.0,
            displacement_agreement=agree_moved / count if count else 0.0,
            offset_size_ratio=float(np.median(offset_ratios)) if offset_ratios else None,
            displacement_size_ratio=float(np.median(moved_ratios)) if moved_ratios else None,
            displacement_within_2x=float(np.mean([0.5 <= r <= 2.0 for r in moved_ratios])) if moved_ratios else None,
        ))
    total = max(1, len(clips))
    return MotionReport(len(clips), right_on / total, right_off / total, blocks)
