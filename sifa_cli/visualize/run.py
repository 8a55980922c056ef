"""The command's work: decode, capture, render, write."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from torch import nn

from sifa_cli.data.decode import Video
from sifa_cli.data.spec import InputSpec
from sifa_cli.errors import InputError
from sifa_cli.visualize.capture import BlockCapture, capture_sifa, select_blocks
from sifa_cli.visualize.clip import point_in_panel, prepare_clip
from sifa_cli.visualize.render import (
    Layout, PanelGeometry, Prediction, RenderedClip, choose_layout, contact_sheet, geometry_for, picture_ratio, predicted, render_clip, sheet_frames,
)
from sifa_cli.visualize.motion import ARROW_MODES, ClipScale, block_motion, motion_summary
from sifa_cli.visualize.write import (JSON_SUFFIX, SHEET_SUFFIX, VIDEO_SUFFIX, check_output_path, write_json, write_sheet,
                                      write_video)

VIEWS = ("offsets", "attention", "point")
DEFAULT_VIEWS = ("offsets", "attention")


def resolve_views(views: Sequence[str], point: tuple[float, float] | None) -> tuple[str, ...]:
    chosen = [view for view in VIEWS if view in views]
    unknown = [view for view in views if view not in VIEWS]
    if unknown:
        raise InputError(f"unknown view {unknown[0]!r}; choose from {', '.join(VIEWS)}")
    if point is not None and "point" not in chosen:
        chosen.append("point")
    if "point" in chosen and point is None:
        raise InputError("the point view needs --point X,Y")
    return tuple(chosen) or DEFAULT_VIEWS


@dataclass
class Rendering:
    """The rendered frames (BGR) and what went into them."""

    frames: list[np.ndarray]
    fps: float
    layout: Layout
    geometry: PanelGeometry
    captures: dict[str, BlockCapture]
    views: tuple[str, ...]
    prediction: Prediction
    notes: list[str]
    seconds: dict[str, float]
    rendered: RenderedClip
    numbers: dict  # what `--json` writes: the motion numbers per block and feature step


def render_visualization(
    clip_path: str | os.PathLike,
    model: nn.Module,
    meta: dict,
    *,
    views: Sequence[str] = (),
    block: str | None = None,
    point: tuple[float, float] | None = None,
    panel_size: int | None = None,
    arrow_scale: float = 1.0,
    arrows: str = "match",
) -> Rendering:
    """Decode the clip as the checkpoint's input spec says, run the model with hooks, draw every frame."""
    if not (math.isfinite(arrow_scale) and arrow_scale > 0):
        raise InputError(f"--arrow-scale must be a positive number, got {arrow_scale:g}")
    if arrows not in ARROW_MODES:
        raise InputError(f"--arrows must be one of {', '.join(ARROW_MODES)}; got {arrows!r}")
    views = resolve_views(views, point)
    names = select_blocks(model, block, meta.get("motion_block"))
    spec = InputSpec.from_meta(meta.get("input"))
    seconds: dict[str, float] = {}

    mark = time.perf_counter()
    with Video(clip_path) as video:
        source_size = (video.info.width, video.info.height)
    layout = choose_layout(len(names), len(views), panel_size, picture_ratio(source_size, spec))
    clip = prepare_clip(clip_path, spec, layout.panel)
    layout = Layout(layout.rows, layout.cols, layout.panel, (clip.full.shape[2], clip.full.shape[1]), clip.crop_origin)
    query = point_in_panel(clip, point, layout.panel) if point is not None else None
    seconds["decode"] = time.perf_counter() - mark

    mark = time.perf_counter()
    device = next(model.parameters()).device
    captures, probabilities = capture_sifa(model, clip.model_input.to(device), names)
    seconds["model"] = time.perf_counter() - mark
    if all(c.frames < 2 for c in captures.values()):
        raise InputError(
            f"with {spec.frames}-frame clips the chosen blocks have a single feature frame, so there is no "
            "step between frames to show; pick another --block"
        )

    mark = time.perf_counter()
    geometry = geometry_for(model, layout.panel, spec.size)
    prediction = predicted(probabilities, meta.get("categories") or [])
    scales = {name: ClipScale.of(c, spec, clip.source_size, clip.indices) for name, c in captures.items()}
    summaries = {name: motion_summary(c, scales[name]) for name, c in captures.items()}
    rendered = render_clip(clip, captures, views, layout, geometry, prediction, query, arrow_scale, arrows, summaries)
    seconds["render"] = time.perf_counter() - mark
    numbers = {
        "clip": str(clip_path),
        "predicted": {"label": prediction.label, "score": round(prediction.probability, 6)},
        "video_frames": [int(i) for i in clip.indices],
        "units": "dy, dx: feature cells of the block's grid, and pixels of the video frame per video frame; "
                 "displacement = where each place finds its match (attention-weighted), offset = mean learned offset",
        "blocks": {name: block_motion(c, scales[name]) for name, c in captures.items()},
    }
    return Rendering(rendered.frames, clip.fps, layout, geometry, captures, views, prediction, clip.notes, seconds,
                     rendered, numbers)


@dataclass
class VisualizeReport:
    out: Path
    sheet: Path | None
    frames: int
    fps: float
    size: tuple[int, int]
    codec: str
    blocks: list[str]
    views: tuple[str, ...]
    prediction: Prediction
    seconds: dict[str, float]
    notes: list[str]
    json: Path | None = None


def visualize(
    clip_path: str | os.PathLike,
    model: nn.Module,
    meta: dict,
    out: str | os.PathLike,
    *,
    sheet: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    **options,
) -> VisualizeReport:
    """Write the overlay video of `clip_path` for `model` (with its checkpoint `meta`) to `out`, a
    contact sheet to `sheet` and the numbers behind the pictures to `json_path`. `options` are those of
    `render_visualization`."""
    started = time.perf_counter()
    out = check_output_path(Path(out), VIDEO_SUFFIX, "--out")
    sheet_path = check_output_path(Path(sheet), SHEET_SUFFIX, "--sheet") if sheet is not None else None
    json_out = check_output_path(Path(json_path), JSON_SUFFIX, "--json") if json_path is not None else None
    rendering = render_visualization(clip_path, model, meta, **options)

    mark = time.perf_counter()
    frames = rendering.frames
    codec = write_video(out, frames, rendering.fps)
    if sheet_path is not None:
        picks = sheet_frames(len(frames), rendering.captures.values())
        write_sheet(sheet_path, contact_sheet(rendering.rendered, rendering.layout, picks))
    if json_out is not None:
        write_json(json_out, rendering.numbers)
    seconds = dict(rendering.seconds, write=time.perf_counter() - mark, total=time.perf_counter() - started)
    return VisualizeReport(out, sheet_path, len(frames), rendering.fps, rendering.layout.size, codec,
                           list(rendering.captures), rendering.views, rendering.prediction, seconds, rendering.notes,
                           json_out)
