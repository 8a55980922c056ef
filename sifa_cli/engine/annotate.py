"""Write a video back out with its predicted labels drawn on it (`sifa predict VIDEO --annotate out.mp4`).

A dark band across the top of every frame carries the labels; the rest of the picture is left as it
was. Without a timeline the band lists the video's top labels and scores; with one it names the
segment playing at that moment, and a strip along the band's foot shows every segment, with a
cursor at the current time. Frames are decoded, drawn and encoded one at a time, so any length fits
in memory.
"""

from __future__ import annotations

import colorsys
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import cv2
import numpy as np

from sifa_cli.data.decode import native_path
from sifa_cli.engine.records import Segment, TopK, VideoResult
from sifa_cli.errors import DecodeError, InputError
from sifa_cli.fileio import check_output_file
from sifa_cli.visualize import VIDEO_SUFFIX, check_output_path, fit_text, put_text, write_video

MAX_LABEL_LINES = 3
BAND_DARKNESS = 0.3  # the band keeps this much of the picture underneath
FALLBACK_FPS = 25.0


def check_annotate_target(path: Path, videos: Sequence[Path], overwrite: bool = False) -> Path:
    """The --annotate file: an .mp4 in a writable folder, one input video, never that input, and
    an existing file only with --overwrite."""
    path = check_output_path(Path(path), VIDEO_SUFFIX, "--annotate")
    if len(videos) != 1:
        raise InputError(f"--annotate draws on one video; {len(videos)} were given")
    if path.resolve() == Path(videos[0]).resolve() or (path.exists() and path.samefile(videos[0])):
        raise InputError(f"--annotate {path} is the input video itself; choose another file name")
    check_output_file(path, "--annotate", overwrite=overwrite)
    return path


@dataclass(frozen=True)
class BandLayout:
    """Sizes in pixels for a frame `height` tall: text scale, line height, band height (text lines
    plus, with a timeline, the strip)."""

    scale: float
    line: int
    pad: int
    strip: int
    height: int

    @classmethod
    def for_frame(cls, height: int, lines: int, timeline: bool) -> "BandLayout":
        scale = float(np.clip(height / 480, 0.35, 1.5))
        line = max(10, round(26 * scale))
        pad = max(2, round(6 * scale))
        strip = max(3, round(8 * scale)) if timeline else 0
        return cls(scale, line, pad, strip, min(height, 2 * pad + lines * line + strip))


@dataclass
class AnnotateReport:
    path: Path
    frames: int
    width: int
    height: int
    fps: float
    codec: str
    band_height: int


def label_colour(label: str) -> tuple[int, int, int]:
    """A steady, bright BGR colour per label (the same label gets the same colour in every video)."""
    hue = int(hashlib.sha1(label.encode("utf-8")).hexdigest()[:4], 16) / 0xFFFF
    r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def segment_at(segments: Sequence[Segment], when: float) -> Optional[Segment]:
    for segment in segments:
        if when < segment.end:
            return segment
    return segments[-1] if segments else None


def draw_band(frame: np.ndarray, layout: BandLayout, lines: Sequence[tuple[str, Optional[tuple[int, int, int]]]],
              segments: Sequence[Segment] = (), duration: float = 0.0, when: float = 0.0) -> np.ndarray:
    """Darken the top `layout.height` rows of a BGR frame and write `lines` (text, swatch colour) in it;
    with segments, draw the timeline strip and a cursor at `when`."""
    height, width = frame.shape[:2]
    band = frame[: layout.height]
    band[:] = (band * BAND_DARKNESS).astype(np.uint8)
    swatch = max(4, layout.line // 2)
    for row, (text, colour) in enumerate(lines):
        baseline = layout.pad + (row + 1) * layout.line - max(2, layout.line // 4)
        x = layout.pad
        if colour is not None:
            top = baseline - swatch
            cv2.rectangle(frame, (x, top), (x + swatch - 1, baseline - 1), colour, -1)
            x += swatch + layout.pad
        put_text(frame, fit_text(text, width - x - layout.pad, layout.scale), x, baseline, layout.scale)
    if segments and duration > 0 and layout.strip:
        top = layout.height - layout.strip
        for segment in segments:
            left = int(round(segment.start / duration * width))
            right = max(left + 1, int(round(segment.end / duration * width)))
            frame[top : layout.height, left:right] = label_colour(segment.label)
        cursor = min(width - 1, int(when / duration * width))
        frame[max(0, top - layout.pad // 2) : layout.height, max(0, cursor - 1) : cursor + 1] = (255, 255, 255)
    return frame


def _top_lines(top: TopK) -> list[tuple[str, Optional[tuple[int, int, int]]]]:
    return [(f"{label}  {score:.0%}", None) for label, score in top[:MAX_LABEL_LINES]]


def annotate_video(result: VideoResult, out: Path) -> AnnotateReport:
    """Decode `result.path` frame by frame, draw its labels (its timeline when it has segments) and
    write the result to `out` (mp4, at the source's frame rate and size)."""
    capture = cv2.VideoCapture(native_path(Path(result.path)), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        raise DecodeError(f"{result.path}: cannot open it again to draw the labels on it")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    fps = fps if np.isfinite(fps) and fps > 0 else FALLBACK_FPS
    segments = list(result.segments or [])
    timeline = bool(segments)
    lines = 2 if timeline else min(MAX_LABEL_LINES, len(result.top))
    duration = float(result.duration or 0.0)
    counted = {"frames": 0, "band": 0, "size": (0, 0)}

    def frames() -> Iterator[np.ndarray]:
        layout = None
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                return
            if frame.ndim == 2 or frame.shape[2] != 3:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR if frame.ndim == 2 else cv2.COLOR_BGRA2BGR)
            if layout is None:
                layout = BandLayout.for_frame(frame.shape[0], lines, timeline)
                counted["band"], counted["size"] = layout.height, (frame.shape[1], frame.shape[0])
            when = counted["frames"] / fps
            if timeline:
                segment = segment_at(segments, when)
                text = [(f"{segment.label}  {segment.score:.0%}", label_colour(segment.label)),
                        (f"{when:.1f} s   segment {segment.start:.1f}-{segment.end:.1f} s", None)]
                draw_band(frame, layout, text, segments, duration, when)
            else:
                draw_band(frame, layout, _top_lines(result.top))
            counted["frames"] += 1
            yield frame

    try:
        codec = write_video(out, frames(), fps)
    finally:
        capture.release()
    width, height = counted["size"]
    return AnnotateReport(out, counted["frames"], width, height, fps, codec, counted["band"])
