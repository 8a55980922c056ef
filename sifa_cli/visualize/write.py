"""Writing the outputs: the overlay video, the contact sheet, the numbers as JSON."""

from __future__ import annotations

import json

from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from sifa_cli.data.decode import capture_native_stderr, native_path
from sifa_cli.errors import InputError, SifaError
from sifa_cli.fileio import atomic_write_path
from sifa_cli.writable import check_writable

VIDEO_SUFFIX = ".mp4"
SHEET_SUFFIX = ".png"
JSON_SUFFIX = ".json"
# H.264 first (small files that play everywhere); pip builds of OpenCV usually lack its encoder.
CODECS = (("avc1", "H.264"), ("mp4v", "MPEG-4 Part 2 (mp4v)"))
FALLBACK_FPS = 25.0



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


def write_sheet(path: Path, sheet: np.ndarray) -> None:
    with atomic_write_path(path) as tmp:
        if not cv2.imwrite(str(tmp), sheet):
            raise SifaError(f"could not write the contact sheet {path}")


def write_json(path: Path, numbers: dict) -> None:
    with atomic_write_path(path) as tmp:
        Path(tmp).write_text(json.dumps(numbers, indent=1) + "\n", encoding="utf-8")
