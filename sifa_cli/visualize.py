"""Watch what the SIFA blocks of a model do on a clip: offsets as arrows, attention as a heat-map.

Capture. Forward hooks on the chosen blocks' `sifa` modules record the offsets (N,2K²,T,H,W) and the
correlation weights (N,K²,T,H,W) the model computes while it classifies the clip; the model's math is
untouched, and the same forward pass gives the predicted label.

Time. Tap k of feature frame t samples frame t around a location of frame t-1, the query. The stem makes
one feature frame out of every T/F clip frames (SIFA-Net and SIFA-Transformer: 4 frames; SIFA-Net's dual
path pools 2 more, so 8). The step from feature frame f-1 to f is drawn on the clip frames that make up
f: arrows start on the regular grid (query locations of f-1) and end where the samples are taken in f,
which is the picture underneath. The clip frames of feature frame 0 have no earlier feature frame and are
shown plain with a note. (The model also runs a step at t = 0 whose query is frame 0 itself; SIFA throws
its result away, so it is not shown.) The video has one frame per clip frame and plays at the rate of
the clip's sampling: source fps / step for dense sampling, so the clip lasts as long as it does in the
source.

Space. Panels show the model's view, the centre crop it classifies, at display resolution. A feature
pixel of a block with stride S sits at model pixel S*j in SIFA-Net (strided convolutions with "same"
padding keep the top-left corner) and at the centre of its S*S patch in SIFA-Transformer (patches and
merges tile the image).
"""

from __future__ import annotations

import math
import os
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from sifa_cli.fileio import atomic_write_path
from sifa_cli.writable import check_writable
from sifa_cli.data.decode import Video, capture_native_stderr, native_path, read_sampled
from sifa_cli.data.sampling import sample_clips
from sifa_cli.data.spec import InputSpec
from sifa_cli.data.transforms import evaluation_views, resize_short_side, spatial_crops
from sifa_cli.errors import InputError, ModelError, SifaError
from sifa_cli.models import predict_proba
from sifa_cli.models.ops import sifa_padding

VIEWS = ("offsets", "attention", "point")
ARROW_MODES = ("relative", "absolute")
DEFAULT_VIEWS = ("offsets", "attention")
VIDEO_SUFFIX = ".mp4"
SHEET_SUFFIX = ".png"
# H.264 first (small files that play everywhere); pip builds of OpenCV usually lack its encoder.
CODECS = (("avc1", "H.264"), ("mp4v", "MPEG-4 Part 2 (mp4v)"))
FALLBACK_FPS = 25.0

# Layout, in display pixels.
MAX_PANEL = 448
MAX_PANEL_OPTION = 2048  # the largest --panel-size
MAX_FRAME_SIDE = 8192  # video encoders refuse larger frames
MIN_PANEL = 128
# A picture shows the frame around the crop up to this many crop sides across (a 400x16 video would
# otherwise make a picture 50 crops wide).
MAX_PICTURE_SPAN = 3.0
MAX_WIDTH = 1920
MAX_HEIGHT = 1080
GAP = 4
HEADER_HEIGHT = 52
CAPTION_HEIGHT = 20
MIN_ARROW_SPACING = 28  # between arrow bases, so neighbouring arrows stay apart
SHEET_MAX_WIDTH = 2400

# Colours are BGR: everything is drawn with OpenCV.
ARROW_COLOUR = (0, 255, 255)  # yellow
OUTLINE_COLOUR = (0, 0, 0)
BASE_COLOUR = (255, 255, 255)
TEXT_COLOUR = (255, 255, 255)
BACKGROUND = (32, 32, 32)
HEAT_COLOURMAP = cv2.COLORMAP_INFERNO  # dark to bright, so "brighter" reads as "more weight"
HEAT_OPACITY = 0.8
OUTSIDE_CROP = 0.45  # brightness of the frame outside the model's crop
CROP_COLOUR = (235, 235, 235)
FONT = cv2.FONT_HERSHEY_SIMPLEX


# ---------------------------------------------------------------------------------------------
# Capture


@dataclass(frozen=True)
class BlockCapture:
    """What one SIFA block computed for one clip, on its feature grid.

    offsets: (F, K*K, 2, h, w) float32, [.., 0] = dy and [.., 1] = dx in feature pixels.
    correlation: (F, K*K, h, w) float32, the weight of each tap (no softmax; may be negative).
    """

    name: str
    offsets: np.ndarray
    correlation: np.ndarray
    kernel_size: int
    dilation: int
    channels: int

    @property
    def frames(self) -> int:
        return self.correlation.shape[0]

    @property
    def height(self) -> int:
        return self.correlation.shape[2]

    @property
    def width(self) -> int:
        return self.correlation.shape[3]

    def regular_taps(self) -> tuple[np.ndarray, np.ndarray]:
        """(dy, dx) of the K*K taps of the regular grid around a location, tap k = kh*K + kw."""
        taps = np.arange(self.kernel_size) * self.dilation - sifa_padding(self.kernel_size, self.dilation)
        return np.repeat(taps, self.kernel_size).astype(np.float32), np.tile(taps, self.kernel_size).astype(np.float32)

    def sample_positions(self, t: int) -> np.ndarray:
        """(K*K, 2, h, w): feature-grid y, x where each tap of each query samples frame t."""
        tap_y, tap_x = self.regular_taps()
        rows = np.arange(self.height, dtype=np.float32)[None, :, None]
        cols = np.arange(self.width, dtype=np.float32)[None, None, :]
        y = rows + tap_y[:, None, None] + self.offsets[t, :, 0]
        x = cols + tap_x[:, None, None] + self.offsets[t, :, 1]
        return np.stack((y, x), axis=1)


def sifa_block_names(model: nn.Module) -> list[str]:
    if not hasattr(model, "sifa_blocks"):
        raise ModelError(f"{type(model).__name__} is not a SIFA model: it has no SIFA blocks to show")
    return [name for name, _ in model.sifa_blocks()]


def select_blocks(model: nn.Module, block: str | None) -> list[str]:
    """Block names for --block: None = the first SIFA block (finest grid), 'all', or names joined by ','."""
    names = sifa_block_names(model)
    if not names:
        raise ModelError("this model has no SIFA blocks")
    if block is None or not block.strip():
        return names[:1]
    if block.strip() == "all":
        return names
    wanted = [part.strip() for part in block.split(",") if part.strip()]
    if not wanted:
        raise InputError(f"--block {block!r} names no block; give names separated by commas, or 'all'")
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise InputError(f"--block: no SIFA block named {unknown[0]!r}; this model has {', '.join(names)} (or 'all')")
    return list(dict.fromkeys(wanted))


def capture_sifa(model: nn.Module, clip: Tensor, names: Sequence[str] | None = None) -> tuple[dict[str, BlockCapture], Tensor]:
    """Run `model` on `clip` (1,3,T,H,W) in eval mode; return the captures of the named SIFA blocks
    (all when None) and the class probabilities (num_classes,)."""
    blocks = dict(model.sifa_blocks())
    names = list(blocks) if names is None else list(names)
    captured: dict[str, BlockCapture] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: tuple, outputs: tuple) -> None:
            features, offsets = inputs[0], inputs[1]
            correlation = outputs[1]
            n, channels, frames, height, width = features.shape
            kk = correlation.shape[1]
            captured[name] = BlockCapture(
                name=name,
                offsets=offsets[0].detach().float().cpu().numpy().reshape(kk, 2, frames, height, width).transpose(2, 0, 1, 3, 4).copy(),
                correlation=correlation[0].detach().float().cpu().numpy().transpose(1, 0, 2, 3).copy(),
                kernel_size=module.kernel_size,
                dilation=module.dilation,
                channels=channels,
            )

        return hook

    handles = [blocks[name].sifa.register_forward_hook(hook_for(name)) for name in names]
    try:
        model.eval()
        with torch.inference_mode():
            probabilities = predict_proba(model, clip)[0].float().cpu()
    finally:
        for handle in handles:
            handle.remove()
    silent = [name for name in names if name not in captured]
    if silent:
        raise ModelError(f"SIFA block {silent[0]} did not run (its SIFA step is switched off)")
    if not bool(torch.isfinite(probabilities).all()):
        raise ModelError("the model's scores are not finite numbers (NaN or infinity); its weights may be damaged")
    return captured, probabilities


@dataclass(frozen=True)
class BlockInfo:
    name: str
    channels: int
    frames: int
    height: int
    width: int
    stride: float  # model input pixels per feature pixel
    kernel_size: int
    dilation: int


def describe_blocks(model: nn.Module, spec: InputSpec) -> list[BlockInfo]:
    """The SIFA blocks and their feature sizes for the model's own input size (one zero clip is run)."""
    device = next(model.parameters()).device
    clip = torch.zeros(1, 3, spec.frames, spec.size, spec.size, device=device)
    captures, _ = capture_sifa(model, clip)
    return [
        BlockInfo(name, c.channels, c.frames, c.height, c.width, spec.size / c.height, c.kernel_size, c.dilation)
        for name, c in captures.items()
    ]


# ---------------------------------------------------------------------------------------------
# The clip: what the model sees and what the panels show


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


def prepare_clip(path: str | os.PathLike, spec: InputSpec, panel: int) -> PreparedClip:
    """Sample one clip as the model's input spec says (the centre one) and build its single centre-crop
    view exactly as `sifa predict --views 1x1` does; decode the same frames again at panel size for
    display when that needs more pixels."""

    with Video(path, short_side=spec.resize) as video:
        source = video.info
        stride = spec.stride_at(source.fps)

        def sample(num_frames: int) -> np.ndarray:
            return sample_clips(spec.frames, stride, spec.sampling, 1, 0, num_frames).indices[0]

        frames, indices = read_sampled(video, sample)
        notes = list(video.notes)
        short = sample_clips(spec.frames, stride, spec.sampling, 1, 0, video.num_frames).short
    if short:
        notes.append(f"the video has {video.num_frames} frames, fewer than the {spec.span_at(source.fps)} one "
                     f"{spec.seconds:.2f} s clip spans: the clip's frames were spread evenly over them")
    model_input = evaluation_views(frames, spec.size, spec.resize, 1, spec.mean, spec.std)[0]

    display_short_side = max(1, round(spec.resize * panel / spec.size))
    if display_short_side > min(frames.shape[1:3]) and min(source.width, source.height) > min(frames.shape[1:3]):
        with Video(path, short_side=display_short_side) as video:
            frames = video.read(indices)
    resized = resize_short_side(frames, display_short_side)
    display = np.ascontiguousarray(spatial_crops(resized, panel, 1)[0])
    crop_origin = ((resized.shape[2] - panel) // 2, (resized.shape[1] - panel) // 2)  # as spatial_crops cuts it
    span = int(MAX_PICTURE_SPAN * panel)
    if max(resized.shape[1:3]) > span:  # keep the middle of a very elongated frame, around the crop
        height, width = resized.shape[1:3]
        left, top = max(0, (width - span) // 2), max(0, (height - span) // 2)
        resized = np.ascontiguousarray(resized[:, top : top + min(height, span), left : left + min(width, span)])
        crop_origin = (crop_origin[0] - left, crop_origin[1] - top)
        notes.append(f"the frame is {source.width}x{source.height}: pictures show its middle, "
                     f"{MAX_PICTURE_SPAN:g} crop widths around the model's crop")
    scale = resized.shape[2] / source.width
    # The crop is centred: the source's centre lands on the panel's centre.
    offset_x = (panel - 1) / 2 - ((source.width - 1) / 2 + 0.5) * scale + 0.5
    offset_y = (panel - 1) / 2 - ((source.height - 1) / 2 + 0.5) * scale + 0.5
    return PreparedClip(
        model_input=model_input.unsqueeze(0),
        display=display,
        indices=indices,
        fps=playback_fps(source.fps, indices),
        full=resized,
        crop_origin=crop_origin,
        times=indices / (source.fps if source.fps > 0 else FALLBACK_FPS),
        source_size=(source.width, source.height),
        display_scale=scale,
        display_offset=(offset_x, offset_y),
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------
# Geometry: feature grid -> panel pixels


@dataclass(frozen=True)
class PanelGeometry:
    panel: int  # side of a square panel, display pixels
    input_size: int  # side of the model's input crop
    corner_aligned: bool  # SIFA-Net: feature pixel j sits at model pixel stride*j

    def _affine(self, feature_size: int) -> tuple[float, float]:
        """(a, b) with panel coordinate = a * feature coordinate + b."""
        stride = self.input_size / feature_size
        origin = 0.0 if self.corner_aligned else (stride - 1) / 2
        zoom = self.panel / self.input_size
        return stride * zoom, (origin + 0.5) * zoom - 0.5

    def to_panel(self, y: np.ndarray | float, x: np.ndarray | float, height: int, width: int):
        ay, by = self._affine(height)
        ax, bx = self._affine(width)
        return np.asarray(y) * ay + by, np.asarray(x) * ax + bx

    def to_feature(self, y: float, x: float, height: int, width: int) -> tuple[float, float]:
        ay, by = self._affine(height)
        ax, bx = self._affine(width)
        return (y - by) / ay, (x - bx) / ax

    def pixels_per_feature(self, size: int) -> float:
        return self._affine(size)[0]

    def warp_matrix(self, height: int, width: int) -> np.ndarray:
        ay, by = self._affine(height)
        ax, bx = self._affine(width)
        return np.array([[ax, 0.0, bx], [0.0, ay, by]], dtype=np.float64)


def geometry_for(model: nn.Module, panel: int, input_size: int) -> PanelGeometry:
    from sifa_cli.models.sifa_resnet import SIFAResNet

    return PanelGeometry(panel, input_size, corner_aligned=isinstance(model, SIFAResNet))


def sparse_grid(size: int, step: int) -> np.ndarray:
    """Every `step`-th index of range(size), centred."""
    count = (size - 1) // step + 1
    start = (size - 1 - (count - 1) * step) // 2
    return start + step * np.arange(count)


# ---------------------------------------------------------------------------------------------
# Drawing primitives

_SUBPIXEL_BITS = 4
_SUBPIXEL = 1 << _SUBPIXEL_BITS


def _fixed(x: float, y: float) -> tuple[int, int]:
    return int(round(x * _SUBPIXEL)), int(round(y * _SUBPIXEL))


def ascii_text(text: str) -> str:
    """OpenCV's fonts only have ASCII: drop accents, replace what is left."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch if 32 <= ord(ch) < 127 else ("" if unicodedata.combining(ch) else "?") for ch in decomposed)


def fit_text(text: str, max_width: int, scale: float, thickness: int = 1) -> str:
    text = ascii_text(text)
    if cv2.getTextSize(text, FONT, scale, thickness)[0][0] <= max_width:
        return text
    while text and cv2.getTextSize(text + "...", FONT, scale, thickness)[0][0] > max_width:
        text = text[:-1]
    return text + "..."


def put_text(image: np.ndarray, text: str, x: int, y: int, scale: float, colour=TEXT_COLOUR) -> None:
    """Text with a dark drop shadow. (A thicker dark copy underneath would not do as an outline:
    OpenCV 5 widens the glyph advance with the thickness, so the two copies drift apart.)"""
    cv2.putText(image, text, (x + 1, y + 1), FONT, scale, OUTLINE_COLOUR, 1, cv2.LINE_AA)
    cv2.putText(image, text, (x, y), FONT, scale, colour, 1, cv2.LINE_AA)


def draw_arrow(image: np.ndarray, start: tuple[float, float], end: tuple[float, float], colour, thickness: int) -> None:
    length = math.hypot(end[0] - start[0], end[1] - start[1])
    head = min(0.45, 7.0 / max(length, 1e-6))  # a head of about 7 px whatever the length
    cv2.arrowedLine(image, _fixed(*start), _fixed(*end), colour, thickness, cv2.LINE_AA, _SUBPIXEL_BITS, head)


# ---------------------------------------------------------------------------------------------
# Views. Each draws on a BGR panel of the key frame (the frame the samples come from).


def window_shift(capture: BlockCapture, t: int | slice) -> np.ndarray:
    """(.., 2, h, w): how far each location's sampling window moved, the mean offset of its K*K taps."""
    return capture.offsets[t].mean(axis=-4)


def arrow_grid_step(capture: BlockCapture, geometry: PanelGeometry, arrow_scale: float = 1.0) -> int:
    """Every how many feature cells an arrow starts: arrows at least MIN_ARROW_SPACING apart, and
    further when most arrows of the clip are long, so they do not run into each other (but at least
    4 arrows a side)."""
    cell = min(geometry.pixels_per_feature(capture.height), geometry.pixels_per_feature(capture.width))
    shifts = window_shift(capture, slice(1, None))
    lengths = np.hypot(shifts[:, 0], shifts[:, 1]) * arrow_scale * cell
    spacing = max(MIN_ARROW_SPACING, 1.25 * float(np.percentile(lengths, 90)) if lengths.size else 0.0)
    return max(1, min(math.ceil(spacing / cell), min(capture.height, capture.width) // 4))


def render_offsets(frame: np.ndarray, capture: BlockCapture, t: int, geometry: PanelGeometry,
                   arrow_scale: float = 1.0, step: int | None = None) -> np.ndarray:
    """One arrow per location of a sparse grid (every `step` cells): from the query location to the
    mean of its K*K sampled positions in frame t, i.e. where its sampling window moved."""
    image = (frame * 0.8).astype(np.uint8)
    h, w = capture.height, capture.width
    step = step or arrow_grid_step(capture, geometry, arrow_scale)
    rows, cols = np.meshgrid(sparse_grid(h, step), sparse_grid(w, step), indexing="ij")
    shift_y, shift_x = window_shift(capture, t)[:, rows, cols]  # each (grid rows, grid cols)
    base_y, base_x = geometry.to_panel(rows, cols, h, w)
    tip_y, tip_x = geometry.to_panel(rows + arrow_scale * shift_y, cols + arrow_scale * shift_x, h, w)
    pairs = [((bx, by), (tx, ty)) for bx, by, tx, ty in zip(base_x.ravel(), base_y.ravel(), tip_x.ravel(), tip_y.ravel())]
    arrows = [(s, e) for s, e in pairs if math.hypot(e[0] - s[0], e[1] - s[1]) >= 1.5]
    for start, end in arrows:  # outlines first, so no outline covers another arrow's colour
        draw_arrow(image, start, end, OUTLINE_COLOUR, 4)
    for start, end in arrows:
        draw_arrow(image, start, end, ARROW_COLOUR, 2)
    for start, _ in pairs:  # a dot on each grid place, also where the offset is too small for an arrow
        cv2.circle(image, _fixed(*start), 2 * _SUBPIXEL, BASE_COLOUR, -1, cv2.LINE_AA, _SUBPIXEL_BITS)
    return image


MEAN_COLOUR = (255, 255, 0)  # cyan


def draw_mean_arrow(image: np.ndarray, capture: BlockCapture, geometry: PanelGeometry, arrow_scale: float = 1.0) -> None:
    """The block's mean shift over the clip, as one cyan arrow from a ringed dot in the crop's top-left
    corner: what the relative arrows have had taken off."""
    dy, dx = mean_shift(capture)
    cell = geometry.pixels_per_feature(min(capture.height, capture.width))
    length_x, length_y = dx * cell * arrow_scale, dy * cell * arrow_scale
    margin = 14
    start = (margin + max(0.0, -length_x), margin + max(0.0, -length_y))
    end = (start[0] + length_x, start[1] + length_y)
    if math.hypot(length_x, length_y) >= 1.5:
        draw_arrow(image, start, end, OUTLINE_COLOUR, 4)
        draw_arrow(image, start, end, MEAN_COLOUR, 2)
    cv2.circle(image, _fixed(*start), 5 * _SUBPIXEL, MEAN_COLOUR, 1, cv2.LINE_AA, _SUBPIXEL_BITS)


def bilinear_splat(ys: np.ndarray, xs: np.ndarray, values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Spread each value over the four grid points around (y, x); what falls outside is dropped."""
    ys, xs, values = (np.asarray(a, np.float64).ravel() for a in (ys, xs, values))
    y0, x0 = np.floor(ys), np.floor(xs)
    fy, fx = ys - y0, xs - x0
    out = np.zeros(height * width)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
            index = (yy[inside] * width + xx[inside]).astype(np.int64)
            out += np.bincount(index, (values * wy * wx)[inside], minlength=height * width)
    return out.reshape(height, width)


def attention_landing(capture: BlockCapture, t: int) -> np.ndarray:
    """(h, w) map of frame t: how much correlation weight lands on each place, all queries and taps
    together (the size of each weight, whatever its sign)."""
    positions = capture.sample_positions(t)
    return bilinear_splat(positions[:, 0], positions[:, 1], np.abs(capture.correlation[t]), capture.height, capture.width)


@dataclass(frozen=True)
class HeatScale:
    """Maps landed weight to [0, 1] for one block over the whole clip, so frames compare: `floor` (the
    median place) and below stay clear, `peak` is full colour."""

    floor: float
    peak: float

    @classmethod
    def of(cls, maps: Iterable[np.ndarray]) -> "HeatScale":
        values = np.concatenate([m.ravel() for m in maps]) if maps else np.zeros(1)
        return cls(float(np.median(values)), float(values.max()))

    def level(self, heat: np.ndarray) -> np.ndarray:
        span = self.peak - self.floor
        if span <= 0:
            return np.zeros_like(heat, dtype=np.float32)
        return ((heat - self.floor) / span).astype(np.float32)


def render_attention(frame: np.ndarray, heat: np.ndarray, geometry: PanelGeometry, scale: HeatScale) -> np.ndarray:
    """Blend the heat-map over the frame: opaque where the weight is high, clear where it is low."""
    h, w = heat.shape
    size = (geometry.panel, geometry.panel)
    level = cv2.warpAffine(scale.level(heat), geometry.warp_matrix(h, w), size,
                           flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    level = np.clip(level, 0.0, 1.0)
    colours = cv2.applyColorMap((level * 255).astype(np.uint8), HEAT_COLOURMAP)
    alpha = (HEAT_OPACITY * level)[..., None]
    return (frame * (1 - alpha) + colours * alpha).astype(np.uint8)


@dataclass(frozen=True)
class PointView:
    """One query of one block, and the square of the panel its view zooms into: it holds every place
    the query samples during the clip, so the view keeps still while the samples move."""

    query: tuple[int, int]  # feature-grid row, column: the cell nearest to the --point
    clicked: tuple[float, float]  # the --point itself, (x, y) in panel pixels
    peak: float  # largest weight of this query over the clip: discs compare across frames
    top: float  # zoom square in panel pixels
    left: float
    side: float

    def to_view(self, y, x, panel: int):
        scale = panel / self.side
        return (np.asarray(y) - self.top) * scale, (np.asarray(x) - self.left) * scale


def plan_point_view(capture: BlockCapture, geometry: PanelGeometry, query_panel: tuple[float, float]) -> PointView:
    h, w = capture.height, capture.width
    fy, fx = geometry.to_feature(query_panel[1], query_panel[0], h, w)
    qy, qx = int(np.clip(round(fy), 0, h - 1)), int(np.clip(round(fx), 0, w - 1))
    tap_y, tap_x = capture.regular_taps()
    ys = np.concatenate([qy + tap_y[None] + capture.offsets[1:, :, 0, qy, qx], [[qy]]], axis=None)
    xs = np.concatenate([qx + tap_x[None] + capture.offsets[1:, :, 1, qy, qx], [[qx]]], axis=None)
    # Half a cell of margin around every sample, and at least 5x5 cells so the picture keeps context.
    half = max(2.5, np.abs(ys - qy).max() + 1.0, np.abs(xs - qx).max() + 1.0)
    cy, cx = geometry.to_panel(qy, qx, h, w)
    side = 2 * half * geometry.pixels_per_feature(min(h, w))
    if side >= geometry.panel:
        top = left = 0.0
        side = float(geometry.panel)
    else:
        top, left = float(cy) - side / 2, float(cx) - side / 2
    peak = float(np.abs(capture.correlation[1:, :, qy, qx]).max(initial=0.0))
    return PointView((qy, qx), (float(query_panel[0]), float(query_panel[1])), peak, top, left, float(side))


POINT_COLOUR = (255, 255, 0)  # cyan
GRID_COLOUR = (170, 170, 170)


def render_point(frame: np.ndarray, capture: BlockCapture, t: int, geometry: PanelGeometry, view: PointView) -> np.ndarray:
    """The K*K weights of one query, zoomed in: a disc at each position it samples in frame t, its area
    the weight's size (and its share of this query's weight written next to it); a thin line joins the
    tap's place on the regular grid (small square) to where it moved. A cross marks the query's cell,
    a ring the --point it was snapped from."""
    panel = geometry.panel
    scale = panel / view.side
    to_zoom = np.array([[scale, 0.0, -view.left * scale], [0.0, scale, -view.top * scale]])
    image = cv2.warpAffine(frame, to_zoom, (panel, panel), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=BACKGROUND)
    image = (image * 0.6).astype(np.uint8)
    h, w = capture.height, capture.width
    qy, qx = view.query
    tap_y, tap_x = capture.regular_taps()
    offsets = capture.offsets[t, :, :, qy, qx]
    weights = np.abs(capture.correlation[t, :, qy, qx])
    total = float(weights.sum())
    grid_y, grid_x = view.to_view(*geometry.to_panel(qy + tap_y, qx + tap_x, h, w), panel)
    sample_y, sample_x = view.to_view(*geometry.to_panel(qy + tap_y + offsets[:, 0], qx + tap_x + offsets[:, 1], h, w), panel)
    cell = geometry.pixels_per_feature(min(h, w)) * scale
    for k in range(len(weights)):
        cv2.line(image, _fixed(grid_x[k], grid_y[k]), _fixed(sample_x[k], sample_y[k]), GRID_COLOUR, 1,
                 cv2.LINE_AA, _SUBPIXEL_BITS)
        corner = (int(round(float(grid_x[k]))) - 2, int(round(float(grid_y[k]))) - 2)
        cv2.rectangle(image, corner, (corner[0] + 4, corner[1] + 4), GRID_COLOUR, 1)
    largest = min(cell * 0.4, 24.0)
    shares = weights / view.peak if view.peak > 0 else np.zeros_like(weights)
    radii = np.maximum(2.0, largest * np.sqrt(shares))
    for k in np.argsort(weights):  # strongest last, on top
        centre = _fixed(sample_x[k], sample_y[k])
        cv2.circle(image, centre, int((radii[k] + 1.5) * _SUBPIXEL), OUTLINE_COLOUR, -1, cv2.LINE_AA, _SUBPIXEL_BITS)
        cv2.circle(image, centre, int(radii[k] * _SUBPIXEL), POINT_COLOUR, -1, cv2.LINE_AA, _SUBPIXEL_BITS)
    if cell >= 36 and total > 0:  # room for numbers
        for k in range(len(weights)):
            text = f"{weights[k] / total:.0%}"
            put_text(image, text, int(sample_x[k] + radii[k] * 0.7) + 3, int(sample_y[k] - radii[k] * 0.7) - 2, 0.4)
    cy, cx = view.to_view(*geometry.to_panel(qy, qx, h, w), panel)
    cv2.drawMarker(image, (int(round(float(cx))), int(round(float(cy)))), BASE_COLOUR, cv2.MARKER_CROSS, 14, 2)
    py, px = view.to_view(view.clicked[1], view.clicked[0], panel)  # the point as given, before snapping
    cv2.circle(image, _fixed(float(px), float(py)), 5 * _SUBPIXEL, BASE_COLOUR, 1, cv2.LINE_AA, _SUBPIXEL_BITS)
    return image


def render_idle(frame: np.ndarray) -> np.ndarray:
    """A clip frame of feature frame 0: nothing attends from an earlier frame."""
    image = (frame * 0.5).astype(np.uint8)
    size = image.shape[1]
    scale = 0.45 if size < 300 else 0.55
    for row, line in enumerate(("first feature frame:", "no earlier frame to attend from")):
        text = fit_text(line, size - 8, scale)
        width = cv2.getTextSize(text, FONT, scale, 1)[0][0]
        put_text(image, text, (size - width) // 2, image.shape[0] // 2 + row * 22, scale)
    return image


# ---------------------------------------------------------------------------------------------
# Layout and the whole frame


@dataclass(frozen=True)
class Layout:
    """Pictures on a grid of `rows` x `cols` under a header, each with a caption above it. `panel` is the
    side of the model's square crop in display pixels; a picture shows the whole frame at that scale
    (`picture`: width, height; None when it is just the crop), with the crop's corner at `inset`."""

    rows: int
    cols: int
    panel: int
    picture: tuple[int, int] | None = None
    inset: tuple[int, int] = (0, 0)

    @property
    def picture_size(self) -> tuple[int, int]:
        return self.picture or (self.panel, self.panel)

    @property
    def cell_height(self) -> int:
        return CAPTION_HEIGHT + self.picture_size[1]

    @property
    def size(self) -> tuple[int, int]:
        width = self.cols * self.picture_size[0] + (self.cols - 1) * GAP
        height = HEADER_HEIGHT + self.rows * self.cell_height + (self.rows - 1) * GAP
        return width + width % 2, height + height % 2  # even sizes: H.264 needs them

    def panel_origin(self, index: int) -> tuple[int, int]:
        """Top-left corner of panel `index`'s picture (its caption sits just above)."""
        row, col = divmod(index, self.cols)
        return col * (self.picture_size[0] + GAP), HEADER_HEIGHT + row * (self.cell_height + GAP) + CAPTION_HEIGHT

    def crop_origin(self, index: int) -> tuple[int, int]:
        """Top-left corner of the model's crop inside panel `index`."""
        x, y = self.panel_origin(index)
        return x + self.inset[0], y + self.inset[1]


def choose_layout(blocks: int, views: int, panel: int | None = None,
                  picture_ratio: tuple[float, float] = (1.0, 1.0)) -> Layout:
    """Each block's views side by side; blocks fill a grid about 16:9; panels shrink to fit 1920x1080.
    picture_ratio: a picture's (width, height) over the crop's side (the whole frame around the crop)."""
    ratio_w, ratio_h = picture_ratio

    def grid(per_row: int) -> tuple[int, int]:
        return views * per_row, math.ceil(blocks / per_row)

    def fit(per_row: int) -> float:
        cols, rows = grid(per_row)
        return min(MAX_PANEL, ((MAX_WIDTH - (cols - 1) * GAP) / cols) / ratio_w,
                   ((MAX_HEIGHT - HEADER_HEIGHT - (rows - 1) * GAP) / rows - CAPTION_HEIGHT) / ratio_h)

    if panel is None:  # the arrangement that gives the largest pictures (the fewest columns among equals)
        per_row = max(range(1, blocks + 1), key=lambda n: (int(fit(n)), -n))
        panel = max(MIN_PANEL, int(fit(per_row)))
    elif not 64 <= panel <= MAX_PANEL_OPTION:
        raise InputError(f"--panel-size must be between 64 and {MAX_PANEL_OPTION} pixels, got {panel}")
    else:  # about 16:9
        per_row = max(1, min(blocks, round(math.sqrt(blocks * 16 / 9 / views * ratio_h / ratio_w))))
    cols, rows = grid(per_row)
    layout = Layout(rows, cols, panel - panel % 2)  # even sizes: H.264 needs them
    width, height = layout.size
    if max(width, height) > MAX_FRAME_SIDE:
        raise InputError(f"--panel-size {panel} with {blocks} block(s) would make {width}x{height} frames, more than "
                         f"{MAX_FRAME_SIDE} pixels a side; use a smaller --panel-size or fewer --block")
    return layout


def picture_ratio(source_size: tuple[int, int], spec: InputSpec) -> tuple[float, float]:
    """(width, height) of the whole frame over the side of the model's centre crop."""
    width, height = source_size
    short = spec.resize / spec.size
    ratio = (short * width / height, short) if width >= height else (short, short * height / width)
    return min(ratio[0], MAX_PICTURE_SPAN), min(ratio[1], MAX_PICTURE_SPAN)


def draw_colour_bar(canvas: np.ndarray, x: int, y: int, width: int, label: str) -> None:
    """The heat-map's colour scale: `label` then a bar from no weight (left) to the frame's most (right)."""
    text = f"{label}  low"
    text_width = cv2.getTextSize(text, FONT, 0.45, 1)[0][0]
    put_text(canvas, text, x, y + 10, 0.45)
    bar_x = x + text_width + 6
    ramp = np.linspace(0, 255, width).astype(np.uint8)[None, :].repeat(12, axis=0)
    canvas[y : y + 12, bar_x : bar_x + width] = cv2.applyColorMap(ramp, HEAT_COLOURMAP)
    put_text(canvas, "high", bar_x + width + 6, y + 10, 0.45)


def colour_bar_width(label: str, width: int) -> int:
    """Horizontal room `draw_colour_bar` takes for a bar `width` wide."""
    return cv2.getTextSize(f"{label}  low", FONT, 0.45, 1)[0][0] + width + 12 + cv2.getTextSize("high", FONT, 0.45, 1)[0][0]


HEAT_BAR_LABEL = "attention, scaled per frame:"


def compose(panels: Sequence[tuple[str, np.ndarray]], layout: Layout, header: Sequence[str],
            colour_bar: bool = False) -> np.ndarray:
    """The output frame: two header lines (and the heat-map's colour bar), then each (caption, picture)
    panel on the grid."""
    width, height = layout.size
    canvas = np.full((height, width, 3), BACKGROUND, np.uint8)
    bar_room = 0
    if colour_bar:  # beside the prediction line, shorter when room is short, left out when there is none
        for label, bar, keep in ((HEAT_BAR_LABEL, 120, 320), ("heat, per frame:", 80, 200)):
            room = colour_bar_width(label, bar) + 12
            if width - room >= keep:
                bar_room = room
                draw_colour_bar(canvas, width - room + 6, 30, bar, label)
                break
    for row, line in enumerate(header[:2]):
        room = width - 12 - (bar_room if row == 1 else 0)
        put_text(canvas, fit_text(line, room, 0.55), 6, 20 + row * 24, 0.55)
    picture_width, picture_height = layout.picture_size
    for index, (caption, picture) in enumerate(panels):
        x, y = layout.panel_origin(index)
        put_text(canvas, fit_text(caption, picture_width - 8, 0.45), x + 4, y - 6, 0.45)
        canvas[y : y + picture_height, x : x + picture_width] = picture
    return canvas


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float


def predicted(probabilities: Tensor, categories: Sequence[str]) -> Prediction:
    index = int(probabilities.argmax())
    label = str(categories[index]) if index < len(categories) else f"class {index}"
    return Prediction(label, float(probabilities[index]))


def feature_frame_of(clip_index: int, clip_frames: int, feature_frames: int) -> int:
    """Which feature frame a clip frame belongs to (each covers clip_frames / feature_frames frames)."""
    return clip_index * feature_frames // clip_frames


def mean_shift(capture: BlockCapture) -> tuple[float, float]:
    """(dy, dx) in feature pixels: how far the sampling windows moved on average over the clip's steps.
    A block can learn a constant offset that has nothing to do with motion; this is it."""
    shifts = window_shift(capture, slice(1, None))
    if shifts.size == 0:  # a single feature frame: no step
        return 0.0, 0.0
    return float(shifts[:, 0].mean()), float(shifts[:, 1].mean())


def relative_to_mean(capture: BlockCapture) -> BlockCapture:
    """The capture with the clip's mean shift taken off every offset: arrows then show how each place
    moves differently from the block as a whole."""
    dy, dx = mean_shift(capture)
    offsets = capture.offsets.copy()
    offsets[:, :, 0] -= dy
    offsets[:, :, 1] -= dx
    return BlockCapture(capture.name, offsets, capture.correlation, capture.kernel_size, capture.dilation, capture.channels)


def feature_frame_time(clip: PreparedClip, t: int, feature_frames: int) -> float:
    """Seconds into the video of feature frame t: the middle of the clip frames it is made of."""
    total = len(clip.indices)
    members = [i for i in range(total) if feature_frame_of(i, total, feature_frames) == t]
    return float(np.mean(clip.times[members])) if members else 0.0


@dataclass
class RenderedClip:
    frames: list[np.ndarray]  # one composed BGR frame per clip frame
    panels: list[list[tuple[str, np.ndarray]]]  # per clip frame: (caption, picture) of every panel
    header: str  # what the frames' second header line says
    colour_bar: bool


def render_clip(
    clip: PreparedClip,
    captures: dict[str, BlockCapture],
    views: Sequence[str],
    layout: Layout,
    geometry: PanelGeometry,
    prediction: Prediction,
    query_panel: tuple[float, float] | None = None,
    arrow_scale: float = 1.0,
    arrows: str = "relative",
) -> RenderedClip:
    """One BGR frame per clip frame: a header and, for every block, one panel per view. A panel shows the
    whole frame, dimmed, with the model's crop outlined and the view drawn inside it."""
    total = len(clip.indices)
    points: dict[str, PointView] = {}
    drawn = {name: relative_to_mean(c) if arrows == "relative" else c for name, c in captures.items()}
    arrow_steps = {name: arrow_grid_step(c, geometry, arrow_scale) for name, c in drawn.items()}
    heat: dict[str, dict[int, np.ndarray]] = {}
    for name, capture in captures.items():
        if "attention" in views:
            heat[name] = {t: attention_landing(capture, t) for t in range(1, capture.frames)}
        if query_panel is not None:
            points[name] = plan_point_view(capture, geometry, query_panel)

    captions: dict[tuple[str, str], str] = {}
    for name, capture in captures.items():
        for view in views:
            note = ""
            if view == "offsets":
                dy, dx = mean_shift(capture)
                note = f" minus mean (x {dx:+.2f}, y {dy:+.2f})" if arrows == "relative" else ""
                note += f", x{arrow_scale:g}" if arrow_scale != 1 else ""
            elif view == "point":
                zoom = geometry.panel / points[name].side
                qy, qx = points[name].query
                note = f" cell x{qx} y{qy}" + (f", zoom x{zoom:.1f}" if zoom > 1.05 else "")
            captions[(name, view)] = f"{name} {view}{note}"

    crop_x, crop_y = clip.crop_origin
    side = geometry.panel
    full_frame = clip.full.shape[1:3] != (side, side)
    if arrows == "relative":
        legend = "arrows: shift apart from the block's mean (cyan), in feature cells"
    else:
        legend = "arrows: where each place's samples moved"
    second_line = f"predicted: {prediction.label} ({prediction.probability:.0%})"
    if "offsets" in views:
        second_line += f"   {legend}"
    frames, all_panels = [], []
    for i in range(total):
        frame = cv2.cvtColor(clip.display[i], cv2.COLOR_RGB2BGR)
        whole = (cv2.cvtColor(clip.full[i], cv2.COLOR_RGB2BGR) * OUTSIDE_CROP).astype(np.uint8)
        panels = []
        for name, capture in captures.items():
            t = feature_frame_of(i, total, capture.frames)
            for view in views:
                if t == 0:
                    panel = render_idle(frame)
                    step = "first feature frame"
                else:
                    before = feature_frame_time(clip, t - 1, capture.frames)
                    step = f"{before:.2f} s to {feature_frame_time(clip, t, capture.frames):.2f} s"
                    if view == "offsets":
                        panel = render_offsets(frame, drawn[name], t, geometry, arrow_scale, arrow_steps[name])
                        if arrows == "relative":
                            draw_mean_arrow(panel, capture, geometry, arrow_scale)
                    elif view == "attention":
                        panel = render_attention(frame, heat[name][t], geometry, HeatScale.of([heat[name][t]]))
                    else:
                        panel = render_point(frame, capture, t, geometry, points[name])
                if full_frame:
                    picture = np.full_like(whole, BACKGROUND) if view == "point" else whole.copy()
                    picture[crop_y : crop_y + side, crop_x : crop_x + side] = panel
                    cv2.rectangle(picture, (crop_x - 1, crop_y - 1), (crop_x + side, crop_y + side), CROP_COLOUR, 1)
                    panel = picture
                panels.append((f"{captions[(name, view)]}, {step}", panel))
        header = (
            f"{clip.times[i]:.2f} s   (clip frame {i + 1} of {total}, video frame {int(clip.indices[i])}; "
            f"plays at {clip.fps:.3g} fps)",
            second_line,
        )
        frames.append(compose(panels, layout, header, colour_bar="attention" in views))
        all_panels.append(panels)
    return RenderedClip(frames, all_panels, second_line, "attention" in views)


# ---------------------------------------------------------------------------------------------
# Output files


def check_output_path(path: Path, suffix: str, option: str) -> Path:
    path = Path(path).expanduser()
    if path.suffix.lower() != suffix:
        raise InputError(f"{option} {path}: the file name must end with {suffix}")
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name ending with {suffix}")
    return check_writable(path, option, create_parents=False)


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float) -> str:
    """Write BGR frames (all of one size; any iterable, so they can be made one at a time) to an mp4
    next to `path` and move it into place; returns the codec's name."""
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise SifaError(f"no frames to write to {path}")
    height, width = first.shape[:2]
    with atomic_write_path(path) as tmp:
        partial = native_path(tmp)  # absolute: "take2:final.mp4" is not a protocol to FFmpeg
        writer, codec = None, None
        with capture_native_stderr():  # a missing H.264 encoder makes FFmpeg print several lines
            for fourcc, name in CODECS:
                writer = cv2.VideoWriter(partial, cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
                if writer.isOpened():
                    codec = name
                    break
                writer.release()
        if codec is None:
            raise SifaError("OpenCV on this system cannot write mp4 video (neither H.264 nor mp4v)")
        try:
            writer.write(first)
            for frame in frames:
                writer.write(frame)
        finally:
            writer.release()
    return codec


def contact_sheet(rendered: RenderedClip, layout: Layout, picks: Sequence[int]) -> np.ndarray:
    """Every panel at the picked clip frames: one row per block and view, one column per step between
    feature frames, left to right in time; scaled down to at most SHEET_MAX_WIDTH wide."""
    rows = len(rendered.panels[0])
    grid = Layout(rows, len(picks), layout.panel, layout.picture, layout.inset)
    cells = [rendered.panels[pick][row] for row in range(rows) for pick in picks]
    header = ("one column per step between feature frames, left to right in time (seconds into the video)",
              rendered.header)
    sheet = compose(cells, grid, header, colour_bar=rendered.colour_bar)
    if sheet.shape[1] > SHEET_MAX_WIDTH:
        scale = SHEET_MAX_WIDTH / sheet.shape[1]
        sheet = cv2.resize(sheet, (SHEET_MAX_WIDTH, max(1, round(sheet.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    return sheet


def sheet_frames(total: int, captures: Iterable[BlockCapture]) -> list[int]:
    """The middle clip frame of every feature frame that has a step to show."""
    feature_frames = max(c.frames for c in captures)
    picks = []
    for t in range(1, feature_frames):
        members = [i for i in range(total) if feature_frame_of(i, total, feature_frames) == t]
        if members:
            picks.append(members[len(members) // 2])
    return picks


def write_sheet(path: Path, sheet: np.ndarray) -> None:
    with atomic_write_path(path) as tmp:
        if not cv2.imwrite(str(tmp), sheet):
            raise SifaError(f"could not write the contact sheet {path}")


# ---------------------------------------------------------------------------------------------
# The command's work


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
    arrows: str = "relative",
) -> Rendering:
    """Decode the clip as the checkpoint's input spec says, run the model with hooks, draw every frame."""
    if not (math.isfinite(arrow_scale) and arrow_scale > 0):
        raise InputError(f"--arrow-scale must be a positive number, got {arrow_scale:g}")
    if arrows not in ARROW_MODES:
        raise InputError(f"--arrows must be one of {', '.join(ARROW_MODES)}; got {arrows!r}")
    views = resolve_views(views, point)
    names = select_blocks(model, block)
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
    rendered = render_clip(clip, captures, views, layout, geometry, prediction, query, arrow_scale, arrows)
    seconds["render"] = time.perf_counter() - mark
    return Rendering(rendered.frames, clip.fps, layout, geometry, captures, views, prediction, clip.notes, seconds,
                     rendered)


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


def visualize(
    clip_path: str | os.PathLike,
    model: nn.Module,
    meta: dict,
    out: str | os.PathLike,
    *,
    sheet: str | os.PathLike | None = None,
    **options,
) -> VisualizeReport:
    """Write the overlay video of `clip_path` for `model` (with its checkpoint `meta`) to `out`, and a
    contact sheet to `sheet`. `options` are those of `render_visualization`."""
    started = time.perf_counter()
    out = check_output_path(Path(out), VIDEO_SUFFIX, "--out")
    sheet_path = check_output_path(Path(sheet), SHEET_SUFFIX, "--sheet") if sheet is not None else None
    rendering = render_visualization(clip_path, model, meta, **options)

    mark = time.perf_counter()
    frames = rendering.frames
    codec = write_video(out, frames, rendering.fps)
    if sheet_path is not None:
        picks = sheet_frames(len(frames), rendering.captures.values())
        write_sheet(sheet_path, contact_sheet(rendering.rendered, rendering.layout, picks))
    seconds = dict(rendering.seconds, write=time.perf_counter() - mark, total=time.perf_counter() - started)
    return VisualizeReport(out, sheet_path, len(frames), rendering.fps, rendering.layout.size, codec,
                           list(rendering.captures), rendering.views, rendering.prediction, seconds, rendering.notes)
