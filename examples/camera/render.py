"""A virtual camera over real imagery: one labelled clip of camera movement per call.

The camera looks at a source (a photograph, or real footage that keeps playing) through a window
that pans, tilts or zooms, with hand-held shake on every class, objects moving through the scene on
their own, and the degradations of real video (blur, noise, lighting change, compression).

Conventions (cinematographic): "pan left" turns the camera left, so the scene moves RIGHT in the
frame; "tilt up" turns it up, so the scene moves DOWN; "zoom in" makes the scene grow.
Speeds are in fractions of the frame width per frame, from barely visible (0.3 %) to fast (5 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

CLASSES = ("static", "pan left", "pan right", "tilt up", "tilt down", "zoom in", "zoom out")
# Window motion (in window widths per frame) for a unit speed: a pan left moves the window left.
DIRECTION = {"pan left": (-1.0, 0.0), "pan right": (1.0, 0.0), "tilt up": (0.0, -1.0), "tilt down": (0.0, 1.0)}
ASPECTS = ((16, 9), (4, 3), (9, 16))
FRAME_RATES = (10, 12, 15, 24, 25, 30, 48, 50, 60)
MIN_SPEED, MAX_SPEED = 0.003, 0.05     # pan/tilt: fraction of the width per frame
MIN_ZOOM, MAX_ZOOM = 0.004, 0.04       # zoom: change of the window's log-size per frame


@dataclass
class ClipPlan:
    label: str
    width: int
    height: int
    fps: int
    frames: int
    speed: float          # pan/tilt speed or zoom rate at profile 1.0
    profile: str          # constant | accelerate | decelerate | ease
    shake: float          # hand-held shake amplitude, fraction of the width


def _profile(kind: str, n: int) -> np.ndarray:
    """Speed multiplier per frame, mean 1: constant, accelerating, decelerating, or start-move-stop."""
    t = np.linspace(0.0, 1.0, n)
    if kind == "accelerate":
        m = 0.25 + 1.5 * t
    elif kind == "decelerate":
        m = 1.75 - 1.5 * t
    elif kind == "ease":
        m = np.sin(np.pi * (0.1 + 0.8 * t))
    else:
        m = np.ones(n)
    return m / m.mean()


def _shake(rng: np.random.Generator, n: int, fps: float, amplitude: float) -> np.ndarray:
    """Smooth hand-held jitter: sums of sinusoids at 1-8 Hz, shape (n,), peak about `amplitude`."""
    if amplitude <= 0:
        return np.zeros(n)
    t = np.arange(n) / fps
    out = np.zeros(n)
    for _ in range(3):
        out += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * rng.uniform(1.0, 8.0) * t + rng.uniform(0, 2 * np.pi))
    out += 0.3 * rng.standard_normal(n)  # tremor
    return amplitude * out / max(np.abs(out).max(), 1e-6)


def plan_clip(rng: np.random.Generator, label: str, frames: int, short_side: int) -> ClipPlan:
    aw, ah = ASPECTS[rng.integers(len(ASPECTS))]
    if aw >= ah:
        height, width = short_side, int(round(short_side * aw / ah / 2)) * 2
    else:
        width, height = short_side, int(round(short_side * ah / aw / 2)) * 2
    if label.startswith("zoom"):
        speed = math.exp(rng.uniform(math.log(MIN_ZOOM), math.log(MAX_ZOOM)))
    else:
        speed = math.exp(rng.uniform(math.log(MIN_SPEED), math.log(MAX_SPEED)))
    profile = ("constant", "accelerate", "decelerate", "ease")[rng.integers(4)]
    shake = 0.0 if rng.random() < 0.15 else math.exp(rng.uniform(math.log(0.001), math.log(0.012)))
    return ClipPlan(label, width, height, int(FRAME_RATES[rng.integers(len(FRAME_RATES))]), frames, speed,
                    profile, shake)


def camera_path(rng: np.random.Generator, plan: ClipPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window centre (n,2), log-size (n,) and roll angle in degrees (n,), in window-width units
    relative to the first frame's window (centre 0,0, log-size 0)."""
    n = plan.frames
    m = _profile(plan.profile, n)
    centre = np.zeros((n, 2))
    logsize = np.zeros(n)
    if plan.label in DIRECTION:
        d = np.array(DIRECTION[plan.label])
        drift = rng.uniform(-0.15, 0.15)  # a real pan is never perfectly level
        step = (d + drift * d[::-1]) * plan.speed
        centre[1:] = np.cumsum(step[None, :] * m[1:, None], axis=0)
    elif plan.label.startswith("zoom"):
        sign = -1.0 if plan.label == "zoom in" else 1.0  # zoom in: the window shrinks
        logsize[1:] = np.cumsum(sign * plan.speed * m[1:])
        # Zoom towards a point near the centre: the window centre moves towards it as the window shrinks.
        focus = rng.uniform(-0.12, 0.12, 2) * np.array([1.0, plan.height / plan.width])
        centre = focus[None, :] * (1 - np.exp(logsize))[:, None]
    shake_x = _shake(rng, n, plan.fps, plan.shake)
    shake_y = _shake(rng, n, plan.fps, plan.shake)
    centre = centre + np.stack([shake_x, shake_y], axis=1) * np.exp(logsize)[:, None]
    logsize = logsize + _shake(rng, n, plan.fps, plan.shake * 0.3)
    roll = _shake(rng, n, plan.fps, plan.shake * 25)  # degrees: about 0.3 deg at the strongest shake
    return centre, logsize, roll


def _fit_window(source_hw: tuple[int, int], plan: ClipPlan, centre: np.ndarray, logsize: np.ndarray,
                rng: np.random.Generator, window_share: Optional[float] = None) -> tuple[float, np.ndarray]:
    """Window width in source pixels and the source position of the path's origin, so that the
    whole path stays inside the source. `window_share` caps the width at that share of the widest
    fixed window the source holds, so that a fixed shot is not framed wider than a pan (whose path
    needs room) just because it can be. Returns (width, origin xy)."""
    sh, sw = source_hw
    aspect = plan.height / plan.width
    size = np.exp(logsize)
    half_w, half_h = 0.5 * size * 1.04, 0.5 * size * aspect * 1.04  # margin for the roll
    x0, x1 = (centre[:, 0] - half_w).min(), (centre[:, 0] + half_w).max()
    y0, y1 = (centre[:, 1] - half_h).min(), (centre[:, 1] + half_h).max()
    width = min(sw / (x1 - x0), sh / (y1 - y0)) * rng.uniform(0.7, 1.0)
    if window_share is not None:
        width = min(width, window_share * min(sw, sh / aspect) / 1.04)
    origin = np.array([rng.uniform(-x0 * width, sw - x1 * width), rng.uniform(-y0 * width, sh - y1 * width)])
    return width, origin


@dataclass
class MovingObject:
    rgba: np.ndarray      # object image with alpha
    start: np.ndarray     # world position (source px) at frame 0
    velocity: np.ndarray  # source px per frame (the object's own motion)
    size: float           # world size of its longer side, source px
    spin: float           # degrees per frame
    # A swinging object (a hand waving a cup close to the lens) instead of a straight crossing: it goes
    # back and forth around `start` along `velocity`'s direction, `swing` = (amplitude in source px,
    # period in frames, phase, size change as a fraction, phase of the size change); None: straight.
    swing: Optional[tuple[float, float, float, float, float]] = None

    def at(self, t: int) -> tuple[np.ndarray, float, float]:
        """Position (world px), size (world px) and angle (degrees) at frame t."""
        if self.swing is None:
            return self.start + self.velocity * t, self.size, self.spin * t
        amplitude, period, phase, grow, grow_phase = self.swing
        norm = float(np.hypot(*self.velocity)) or 1.0
        direction = self.velocity / norm
        angle = 2 * math.pi * t / period + phase
        # a pendulum: along the direction, with a small arc across it
        offset = amplitude * (math.sin(angle) * direction + 0.2 * math.cos(2 * angle) * direction[::-1])
        size = self.size * (1 + grow * math.sin(angle + grow_phase))
        return self.start + offset, size, self.spin * math.sin(angle) * period / (2 * math.pi)


def make_objects(rng: np.random.Generator, pool: Sequence[np.ndarray], count: int, window: float,
                 origin: np.ndarray, plan: ClipPlan) -> list[MovingObject]:
    objects = []
    for _ in range(count):
        rgba = pool[rng.integers(len(pool))]
        size = window * rng.uniform(0.15, 0.5) * min(1.0, plan.height / plan.width)
        speed = window * math.exp(rng.uniform(math.log(0.004), math.log(0.05)))
        angle = rng.uniform(0, 2 * math.pi)
        velocity = speed * np.array([math.cos(angle), math.sin(angle)])
        # Start so that the object crosses the view near the middle of the clip.
        mid = origin + window * rng.uniform(-0.3, 0.3, 2) * np.array([1.0, plan.height / plan.width])
        start = mid - velocity * plan.frames / 2
        objects.append(MovingObject(rgba, start, velocity, size, rng.uniform(-1.5, 1.5)))
    return objects


def _paste(frame: np.ndarray, obj: MovingObject, world_to_screen: np.ndarray, t: int) -> None:
    """Alpha-composite the object at its world position for frame t (in place, float32 BGR)."""
    oh, ow = obj.rgba.shape[:2]
    position, size, angle = obj.at(t)
    scale = size / max(oh, ow)
    rot = cv2.getRotationMatrix2D((ow / 2, oh / 2), angle, scale)
    rot[:, 2] += position - np.array([ow / 2, oh / 2])  # object px -> world px
    full = world_to_screen @ np.vstack([rot, [0, 0, 1]])
    h, w = frame.shape[:2]
    warped = cv2.warpAffine(obj.rgba, full[:2], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=(0, 0, 0, 0)).astype(np.float32)
    alpha = warped[..., 3:] / 255.0
    frame *= 1 - alpha
    frame += warped[..., :3] * alpha


class VideoSource:
    """Real footage that keeps playing under the moving window (bounces at the end)."""

    def __init__(self, path: Path, max_frames: int = 400):
        capture = cv2.VideoCapture(str(path))
        self.frames = []
        while len(self.frames) < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            self.frames.append(frame)
        capture.release()
        if not self.frames:
            raise ValueError(f"cannot read {path}")

    def frame(self, index: int) -> np.ndarray:
        n = len(self.frames)
        period = max(1, 2 * n - 2)
        i = index % period
        return self.frames[i if i < n else period - i]


def render_clip(rng: np.random.Generator, plan: ClipPlan, background: np.ndarray | VideoSource,
                object_pool: Sequence[np.ndarray], object_count: int,
                main_object: Optional[Callable[[float, np.ndarray], MovingObject]] = None,
                path: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]] = None,
                degrade: bool = True, object_scale: float = 1.0, video_start: Optional[int] = None,
                window_share: Optional[float] = None) -> list[np.ndarray]:
    """The clip's frames (BGR uint8), following `plan` over the background. `main_object(window,
    view_centre)`, if given, makes one more object placed for this clip's window (drawn first).
    `path` (centre, log-size, roll as from `camera_path`) replaces the plan's own camera path;
    `degrade=False` leaves out blur, noise, lighting change and compression; `object_scale` shrinks
    (and slows) the `object_count` other objects, so that a main object stays the main subject.
    `video_start` is the footage frame the clip starts on (default: drawn from the first 200);
    `window_share` caps the window's size (see `_fit_window`)."""
    video = background if isinstance(background, VideoSource) else None
    first = video.frame(0) if video else background
    # Real footage is small: enlarge it so the window can move over it.
    enlarge = max(1.0, 2.2 * max(plan.width / first.shape[1], plan.height / first.shape[0])) if video else 1.0
    source_hw = (int(first.shape[0] * enlarge), int(first.shape[1] * enlarge))
    start_offset = (int(rng.integers(0, 200)) if video_start is None else video_start) if video else 0

    centre, logsize, roll = path if path is not None else camera_path(rng, plan)
    window, origin = _fit_window(source_hw, plan, centre, logsize, rng, window_share)
    view_centre = origin + centre[0] * window
    objects = make_objects(rng, object_pool, object_count, window, view_centre, plan) \
        if object_pool and object_count else []
    for obj in objects:
        obj.size *= object_scale
        obj.velocity *= object_scale
    if main_object is not None:
        objects.insert(0, main_object(window, view_centre))

    # Degradations, fixed per clip (lighting drifts over time).
    blur_sigma = rng.uniform(0.3, 1.3) if rng.random() < 0.3 else 0.0
    motion_blur = rng.random() < 0.5
    noise = rng.uniform(1.0, 7.0) if rng.random() < 0.6 else 0.0
    gain = np.linspace(1.0, 1.0 + rng.uniform(-0.3, 0.3), plan.frames) if rng.random() < 0.4 else np.ones(plan.frames)
    if rng.random() < 0.15:  # flicker (lamps, auto exposure hunting)
        gain = gain * (1 + 0.06 * np.sin(np.arange(plan.frames) * rng.uniform(0.5, 2.5)))
    jpeg_quality = int(rng.integers(20, 85)) if rng.random() < 0.5 else None
    if not degrade:
        blur_sigma, motion_blur, noise, jpeg_quality = 0.0, False, 0.0, None
        gain = np.ones(plan.frames)

    out = []
    previous_centre = None
    for t in range(plan.frames):
        if video:
            source = video.frame(start_offset + t)
            if enlarge != 1.0:
                source = cv2.resize(source, (source_hw[1], source_hw[0]), interpolation=cv2.INTER_CUBIC)
        else:
            source = background
        size = window * math.exp(logsize[t])
        world_centre = origin + centre[t] * window
        scale = plan.width / size  # screen px per source px
        # Prefilter when shrinking a lot, so the sampled image is not aliased.
        if scale < 0.5:
            sigma = 0.45 / scale
            k = int(2 * round(2.5 * sigma) + 1)
            source = cv2.GaussianBlur(source, (k, k), sigma)
        to_screen = cv2.getRotationMatrix2D((float(world_centre[0]), float(world_centre[1])), float(roll[t]), scale)
        to_screen[:, 2] += np.array([plan.width / 2, plan.height / 2]) - world_centre
        frame = cv2.warpAffine(source, to_screen, (plan.width, plan.height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT101).astype(np.float32)
        world_to_screen = np.vstack([to_screen, [0, 0, 1]])
        for obj in objects:
            _paste(frame, obj, world_to_screen, t)
        if motion_blur and previous_centre is not None:
            shift = (world_centre - previous_centre) * scale * 0.5  # half the frame interval exposed
            length = float(np.hypot(*shift))
            if length > 1.5:
                k = int(min(15, length)) | 1
                kernel = np.zeros((k, k), np.float32)
                c = k // 2
                dx, dy = shift / length
                cv2.line(kernel, (int(round(c - dx * c)), int(round(c - dy * c))),
                         (int(round(c + dx * c)), int(round(c + dy * c))), 1.0, 1)
                frame = cv2.filter2D(frame, -1, kernel / kernel.sum())
        previous_centre = world_centre
        if blur_sigma:
            frame = cv2.GaussianBlur(frame, (0, 0), blur_sigma)
        frame *= gain[t]
        if noise:
            frame += rng.normal(0, noise, frame.shape).astype(np.float32)
        frame = np.clip(frame, 0, 255).astype(np.uint8)
        if jpeg_quality is not None:
            ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            frame = cv2.imdecode(data, cv2.IMREAD_COLOR)
        out.append(frame)
    return out


def write_clip(path: Path, frames: Sequence[np.ndarray], fps: float) -> None:
    h, w = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {tmp}")
    for frame in frames:
        writer.write(frame)
    writer.release()
    tmp.replace(path)


def load_background(path: Path) -> np.ndarray | VideoSource:
    if path.suffix.lower() == ".mp4":
        return VideoSource(path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read {path}")
    return image


def load_object(path: Path) -> Optional[np.ndarray]:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return image if image is not None and image.ndim == 3 and image.shape[2] == 4 else None
