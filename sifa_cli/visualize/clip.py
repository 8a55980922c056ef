"""The clip: sampled as the model's input spec says, and decoded again at display size for the panels."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

from sifa_cli.data.decode import Video, read_sampled
from sifa_cli.data.sampling import sample_clips
from sifa_cli.data.spec import InputSpec
from sifa_cli.data.transforms import evaluation_views, resize_short_side, spatial_crops
from sifa_cli.errors import InputError

FALLBACK_FPS = 25.0
# A picture shows the frame around the crop up to this many crop sides across (a 400x16 video would
# otherwise make a picture 50 crops wide).
MAX_PICTURE_SPAN = 3.0


@dataclass
class PreparedClip:
    model_input: Tensor  # 1,3,T,S,S normalized
    display: np.ndarray  # T,P,P,3 RGB uint8: the model's crop at panel resolution
    indices: np.ndarray  # (T,) source frame index of every clip frame
    fps: float  # frame rate that plays the clip at its real speed
    full: np.ndarray  # T,H,W,3 RGB uint8: the whole frame at the same scale; `display` is cut from it
    crop_origin: tuple[int, int]  # (x, y) of the crop's top-left corner in `full`
    times: np.ndarray  # (T,) seconds from the start of the video of every clip frame
    source_size: tuple[int, int]  # (width, height) of the video
    display_scale: float  # panel pixels per source pixel
    display_offset: tuple[float, float]  # (x, y) of the source origin in panel pixels
    notes: list[str] = field(default_factory=list)

    def source_to_panel(self, x: float, y: float) -> tuple[float, float]:
        return (x + 0.5) * self.display_scale - 0.5 + self.display_offset[0], (y + 0.5) * self.display_scale - 0.5 + self.display_offset[1]

    def panel_to_source(self, x: float, y: float) -> tuple[float, float]:
        return ((x + 0.5 - self.display_offset[0]) / self.display_scale - 0.5,
                (y + 0.5 - self.display_offset[1]) / self.display_scale - 0.5)


def playback_fps(source_fps: float, indices: np.ndarray) -> float:
    """Rate at which the sampled frames play at the source's speed: source fps / mean sampling gap."""
    gaps = np.diff(indices)
    gaps = gaps[gaps > 0]  # a frame repeated in a short clip (gap 0) adds no time
    gap = float(gaps.mean()) if gaps.size else 1.0
    return (source_fps if source_fps > 0 else FALLBACK_FPS) / gap


@dataclass
class ModelClip:
    """One clip as the model sees it: the centre clip of the input spec, the single centre-crop view
    `sifa predict --views 1x1` makes."""

    model_input: Tensor  # 1,3,T,S,S normalized
    frames: np.ndarray  # T,H,W,3 RGB uint8 at the spec's resize
    indices: np.ndarray  # (T,) source frame index of every clip frame
    source_size: tuple[int, int]  # (width, height) of the video
    source_fps: float
    notes: list[str]


def load_model_clip(path: str | os.PathLike, spec: InputSpec) -> ModelClip:
    """Decode and sample the clip of `path` the model classifies (see ModelClip)."""
    with Video(path, short_side=spec.resize) as video:
        source = video.info
        stride = spec.stride_at(source.fps)

        def sample(num_frames: int) -> np.ndarray:
            return sample_clips(spec.frames, stride, spec.sampling, 1, 0, num_frames).indices[0]

        frames, indices = read_sampled(video, sample)
        notes = list(video.notes)
        short = sample_clips(spec.frames, stride, spec.sampling, 1, 0, video.num_frames).short
    if short and not spec.covers_enough(video.num_frames, len(np.unique(indices)), source.fps):
        notes.append(f"the video has {video.num_frames} frames, fewer than the {spec.span_at(source.fps)} one "
                     f"{spec.seconds:.2f} s clip spans: the clip's frames were spread evenly over them")
    model_input = evaluation_views(frames, spec.size, spec.resize, 1, spec.mean, spec.std)[0].unsqueeze(0)
    return ModelClip(model_input, frames, indices, (source.width, source.height), source.fps, notes)


def prepare_clip(path: str | os.PathLike, spec: InputSpec, panel: int) -> PreparedClip:
    """The model's clip (load_model_clip), and the same frames again at panel size for display when
    that needs more pixels."""
    loaded = load_model_clip(path, spec)
    frames, indices, notes, model_input = loaded.frames, loaded.indices, loaded.notes, loaded.model_input
    width, height = loaded.source_size
    display_short_side = max(1, round(spec.resize * panel / spec.size))
    if display_short_side > min(frames.shape[1:3]) and min(width, height) > min(frames.shape[1:3]):
        with Video(path, short_side=display_short_side) as video:
            frames = video.read(indices)
    resized = resize_short_side(frames, display_short_side)
    display = np.ascontiguousarray(spatial_crops(resized, panel, 1)[0])
    crop_origin = ((resized.shape[2] - panel) // 2, (resized.shape[1] - panel) // 2)  # as spatial_crops cuts it
    span = int(MAX_PICTURE_SPAN * panel)
    if max(resized.shape[1:3]) > span:  # keep the middle of a very elongated frame, around the crop
        shown_height, shown_width = resized.shape[1:3]
        left, top = max(0, (shown_width - span) // 2), max(0, (shown_height - span) // 2)
        resized = np.ascontiguousarray(resized[:, top : top + min(shown_height, span), left : left + min(shown_width, span)])
        crop_origin = (crop_origin[0] - left, crop_origin[1] - top)
        notes.append(f"the frame is {width}x{height}: pictures show its middle, "
                     f"{MAX_PICTURE_SPAN:g} crop widths around the model's crop")
    scale = resized.shape[2] / width
    # The crop is centred: the source's centre lands on the panel's centre.
    offset_x = (panel - 1) / 2 - ((width - 1) / 2 + 0.5) * scale + 0.5
    offset_y = (panel - 1) / 2 - ((height - 1) / 2 + 0.5) * scale + 0.5
    return PreparedClip(
        model_input=model_input,
        display=display,
        indices=indices,
        fps=playback_fps(loaded.source_fps, indices),
        full=resized,
        crop_origin=crop_origin,
        times=indices / (loaded.source_fps if loaded.source_fps > 0 else FALLBACK_FPS),
        source_size=loaded.source_size,
        display_scale=scale,
        display_offset=(offset_x, offset_y),
        notes=notes,
    )


def parse_point(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
    except ValueError:
        raise InputError(f"--point must be X,Y in pixels of the clip, e.g. 120,80; got {text!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise InputError(f"--point must be finite pixel coordinates; got {text!r}")
    return x, y


def point_in_panel(clip: PreparedClip, point: tuple[float, float], panel: int) -> tuple[float, float]:
    """--point (source pixels) -> panel pixels; refuses points outside the video or the model's crop."""
    width, height = clip.source_size
    x, y = point
    if not (0 <= x < width and 0 <= y < height):
        raise InputError(f"--point {x:g},{y:g} is outside the video, which is {width}x{height} pixels")
    px, py = clip.source_to_panel(x, y)
    if not (-0.5 <= px < panel - 0.5 and -0.5 <= py < panel - 0.5):
        left, top = clip.panel_to_source(-0.5, -0.5)
        right, bottom = clip.panel_to_source(panel - 0.5, panel - 0.5)
        raise InputError(
            f"--point {x:g},{y:g} is outside the centre crop the model sees: "
            f"x from {max(0, math.ceil(left))} to {min(width, int(right))}, y from {max(0, math.ceil(top))} to {min(height, int(bottom))}"
        )
    return px, py
