"""Rendering: offsets as arrows, attention as a heat-map, one query's weights, laid out in panels under a
header; the whole video frame and the contact sheet."""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Sequence

import cv2
import numpy as np
from torch import Tensor, nn

from sifa_cli.data.spec import InputSpec
from sifa_cli.errors import InputError
from sifa_cli.visualize.capture import BlockCapture
from sifa_cli.visualize.clip import MAX_PICTURE_SPAN, PreparedClip
from sifa_cli.visualize.motion import arrow_field, mean_shift
from sifa_cli.wording import counted

# Layout, in display pixels.
MAX_PANEL = 448
MAX_PANEL_OPTION = 2048  # the largest --panel-size
MAX_FRAME_SIDE = 8192  # video encoders refuse larger frames
MIN_PANEL = 128
MAX_WIDTH = 1920
MAX_HEIGHT = 1080
GAP = 4
HEADER_HEIGHT = 52
CAPTION_HEIGHT = 20
MIN_ARROW_SPACING = 28  # between arrow bases, so neighbouring arrows stay apart
SHEET_MAX_WIDTH = 2400
SHEET_MAX_COLUMNS = 6  # more steps wrap into further bands of rows: 12 steps across 2400 px are unreadable

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


# A panel's caption: one text, or the same said shorter and shorter (the first that fits is drawn)
Caption = str | tuple[str, ...]


def fit_caption(caption: Caption, max_width: int, scale: float) -> str:
    """The first of a caption's forms that fits `max_width`; the last one cut to fit if none does."""
    forms = (caption,) if isinstance(caption, str) else caption
    for text in forms[:-1]:
        if cv2.getTextSize(ascii_text(text), FONT, scale, 1)[0][0] <= max_width:
            return ascii_text(text)
    return fit_text(forms[-1], max_width, scale)


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


def arrow_grid_step(shifts: np.ndarray, geometry: PanelGeometry, arrow_scale: float = 1.0) -> int:
    """Every how many feature cells an arrow starts, for the arrows `shifts` (steps, 2, h, w) of a block:
    arrows at least MIN_ARROW_SPACING apart, and further when most arrows of the clip are long, so they
    do not run into each other (but at least 4 arrows a side)."""
    h, w = shifts.shape[-2:]
    cell = min(geometry.pixels_per_feature(h), geometry.pixels_per_feature(w))
    lengths = np.hypot(shifts[:, 0], shifts[:, 1]) * arrow_scale * cell
    spacing = max(MIN_ARROW_SPACING, 1.25 * float(np.percentile(lengths, 90)) if lengths.size else 0.0)
    return max(1, min(math.ceil(spacing / cell), min(h, w) // 4))


def render_offsets(frame: np.ndarray, arrows_t: np.ndarray, geometry: PanelGeometry,
                   arrow_scale: float = 1.0, step: int | None = None) -> np.ndarray:
    """One arrow per location of a sparse grid (every `step` cells), from the query location by its
    vector in `arrows_t` (2, h, w), feature cells (motion.arrow_field: where the query finds its match,
    or where its sampling window moved)."""
    image = (frame * 0.8).astype(np.uint8)
    h, w = arrows_t.shape[-2:]
    step = step or arrow_grid_step(arrows_t[None], geometry, arrow_scale)
    rows, cols = np.meshgrid(sparse_grid(h, step), sparse_grid(w, step), indexing="ij")
    shift_y, shift_x = arrows_t[:, rows, cols]  # each (grid rows, grid cols)
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
        raise InputError(f"--panel-size {panel} with {counted(blocks, 'block')} would make {width}x{height} frames, "
                         f"more than {MAX_FRAME_SIDE} pixels a side; use a smaller --panel-size or fewer --block")
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


def compose(panels: Sequence[tuple[Caption, np.ndarray]], layout: Layout, header: Sequence[str],
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
        put_text(canvas, fit_caption(caption, picture_width - 8, 0.45), x + 4, y - 6, 0.45)
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


def feature_frame_time(clip: PreparedClip, t: int, feature_frames: int) -> float:
    """Seconds into the video of feature frame t: the middle of the clip frames it is made of."""
    total = len(clip.indices)
    members = [i for i in range(total) if feature_frame_of(i, total, feature_frames) == t]
    return float(np.mean(clip.times[members])) if members else 0.0


@dataclass
class RenderedClip:
    frames: list[np.ndarray]  # one composed BGR frame per clip frame
    panels: list[list[tuple[Caption, np.ndarray]]]  # per clip frame: (caption, picture) of every panel
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
    arrows: str = "match",
    summaries: dict[str, tuple[str, str]] | None = None,
) -> RenderedClip:
    """One BGR frame per clip frame: a header and, for every block, one panel per view. A panel shows the
    whole frame, dimmed, with the model's crop outlined and the view drawn inside it. `summaries`: a
    caption note per block (the block's motion estimate), in full and short (`motion.motion_summary`)."""
    total = len(clip.indices)
    points: dict[str, PointView] = {}
    fields = {name: arrow_field(c, arrows) for name, c in captures.items()}
    arrow_steps = {name: arrow_grid_step(field[1:], geometry, arrow_scale) for name, field in fields.items()}
    heat: dict[str, dict[int, np.ndarray]] = {}
    for name, capture in captures.items():
        if "attention" in views:
            heat[name] = {t: attention_landing(capture, t) for t in range(1, capture.frames)}
        if query_panel is not None:
            points[name] = plan_point_view(capture, geometry, query_panel)

    captions: dict[tuple[str, str], tuple[str, str]] = {}  # full and short
    for name, capture in captures.items():
        for view in views:
            note = short = ""
            if view == "offsets":
                dy, dx = mean_shift(capture)
                note = f" minus mean (x {dx:+.2f}, y {dy:+.2f})" if arrows == "relative" else ""
                note += f", x{arrow_scale:g}" if arrow_scale != 1 else ""
                short = note
                if summaries and name in summaries:
                    note += f": {summaries[name][0]}"
                    short += f": {summaries[name][1]}"
            elif view == "point":
                zoom = geometry.panel / points[name].side
                qy, qx = points[name].query
                note = short = f" cell x{qx} y{qy}" + (f", zoom x{zoom:.1f}" if zoom > 1.05 else "")
            captions[(name, view)] = (f"{name} {view}{note}", f"{name}{short}")

    crop_x, crop_y = clip.crop_origin
    side = geometry.panel
    full_frame = clip.full.shape[1:3] != (side, side)
    legend = {"match": "arrows: where each place finds its match in the next frame (attention-weighted)",
              "relative": "arrows: shift apart from the block's mean (cyan), in feature cells",
              "absolute": "arrows: where each place's samples moved"}[arrows]
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
                    step = short_step = "first feature frame"
                else:
                    before, after = (feature_frame_time(clip, k, capture.frames) for k in (t - 1, t))
                    step, short_step = f"{before:.2f} s to {after:.2f} s", f"{before:.2f}-{after:.2f} s"
                    if view == "offsets":
                        panel = render_offsets(frame, fields[name][t], geometry, arrow_scale, arrow_steps[name])
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
                full, short = captions[(name, view)]
                panels.append(((f"{full}, {step}", f"{short}, {short_step}"), panel))
        header = (
            f"{clip.times[i]:.2f} s   (clip frame {i + 1} of {total}, video frame {int(clip.indices[i])}; "
            f"plays at {clip.fps:.3g} fps)",
            second_line,
        )
        frames.append(compose(panels, layout, header, colour_bar="attention" in views))
        all_panels.append(panels)
    return RenderedClip(frames, all_panels, second_line, "attention" in views)


def contact_sheet(rendered: RenderedClip, layout: Layout, picks: Sequence[int]) -> np.ndarray:
    """Every panel at the picked clip frames: one row per block and view, one column per step between
    feature frames, left to right in time; past SHEET_MAX_COLUMNS steps the next ones start a new band
    of rows below. Scaled down to at most SHEET_MAX_WIDTH wide."""
    rows = len(rendered.panels[0])
    cols = min(len(picks), SHEET_MAX_COLUMNS)
    bands = [picks[start:start + cols] for start in range(0, len(picks), cols)]
    grid = Layout(rows * len(bands), cols, layout.panel, layout.picture, layout.inset)
    width, height = grid.picture_size
    blank = ("", np.full((height, width, 3), BACKGROUND, np.uint8))
    cells = [rendered.panels[band[col]][row] if col < len(band) else blank
             for band in bands for row in range(rows) for col in range(cols)]
    header = ("one column per step between feature frames, left to right in time (seconds into the video)"
              + (f", {cols} steps a band" if len(bands) > 1 else ""), rendered.header)
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
