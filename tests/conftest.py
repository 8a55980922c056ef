"""Shared test fixtures. Add yours; don't rewrite others'.

Videos: real files written with OpenCV. "mp4v" (.mp4/.avi) is the everyday lossy codec;
"FFV1" (.avi/.mkv) is lossless, so decoded frames can be compared with the source pixels.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Callable, Iterable, Sequence

import os

import cv2
import numpy as np
import pytest

# rich fixes a console's width for good when COLUMNS is set as the console is made. The CLI's consoles
# are made when their modules are first imported, which may happen inside a test that sets COLUMNS
# (CliRunner's env=); make them now, without it, so every test's COLUMNS applies, whatever the order
# tests run in (pytest-xdist hands each worker a different order).
_columns = os.environ.pop("COLUMNS", None)
import sifa_cli.cli.common  # noqa: E402,F401
import sifa_cli.weights.download  # noqa: E402,F401

if _columns is not None:
    os.environ["COLUMNS"] = _columns

# Under pytest-xdist every worker shares the machine's cores with the other workers and with the
# `sifa` processes the tests start. Torch's default, one thread per core in each of them,
# oversubscribes the cores; one thread per worker and per child (OMP_NUM_THREADS is inherited)
# shares them.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

# ----------------------------------------------------------------------------------------------
# Videos (owner: predict)


def pattern_frame(index: int, width: int = 64, height: int = 64) -> np.ndarray:
    """An RGB frame that differs strongly from its neighbours, so a decoded frame can be told
    apart even through a lossy codec: the colour encodes the index, a bright bar moves."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = (index * 37) % 200 + 20
    frame[..., 1] = (index * 73) % 200 + 20
    frame[..., 2] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    bar = (index * 5) % max(1, width - 8)
    frame[:, bar : bar + 8] = 255
    return frame


def write_video(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: float = 25.0,
    fourcc: str = "mp4v",
) -> Path:
    """Write RGB frames (H,W,3) or grayscale frames (H,W) to `path`; returns the path."""
    path = Path(path)
    writer = None
    try:
        for frame in frames:
            frame = np.asarray(frame, dtype=np.uint8)
            if writer is None:
                height, width = frame.shape[:2]
                writer = cv2.VideoWriter(
                    str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height), isColor=frame.ndim == 3
                )
                if not writer.isOpened():
                    raise RuntimeError(f"OpenCV cannot write {fourcc} to {path}")
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]) if frame.ndim == 3 else frame)
    finally:
        if writer is not None:
            writer.release()
    if writer is None:
        raise ValueError("no frames to write")
    return path


def pattern_frames(num_frames: int, width: int = 64, height: int = 64) -> np.ndarray:
    return np.stack([pattern_frame(i, width, height) for i in range(num_frames)])


def nearest_frame_index(frame: np.ndarray, source: np.ndarray) -> int:
    """Which source frame a (lossily) decoded frame is: the one with the smallest mean error."""
    errors = np.abs(source.astype(np.int16) - frame.astype(np.int16)).mean(axis=(1, 2, 3))
    return int(errors.argmin())


def _mp4_box_path(data: bytes, names: Sequence[str]) -> list[tuple[int, int]]:
    """(offset, size) of each box along `names`, e.g. moov/trak/mdia/minf/stbl/stts."""
    chain, start, end = [], 0, len(data)
    for name in names:
        position = start
        while position < end:
            size, kind = struct.unpack(">I4s", data[position : position + 8])
            if kind.decode("latin-1") == name:
                break
            position += size
        else:
            raise ValueError(f"no '{name}' box")
        chain.append((position, size))
        start, end = position + 8, position + size
    return chain


def make_variable_frame_rate(path: Path, duration_factors: Sequence[float]) -> Path:
    """Turn an OpenCV-written constant-rate .mp4 into a variable-rate one by rewriting its sample
    durations (the stts box): frame i lasts duration_factors[i] times its original duration.
    Keep the factors' sum equal to the frame count so the header durations stay right."""
    data = bytearray(Path(path).read_bytes())
    chain = _mp4_box_path(data, ["moov", "trak", "mdia", "minf", "stbl", "stts"])
    if chain[0][0] < _mp4_box_path(data, ["mdat"])[0][0]:
        raise ValueError("moov before mdat: growing it would move the sample offsets")
    position, size = chain[-1]
    version_flags, entries = struct.unpack(">II", data[position + 8 : position + 16])
    counts = [struct.unpack(">II", data[position + 16 + 8 * i : position + 24 + 8 * i]) for i in range(entries)]
    if sum(count for count, _ in counts) != len(duration_factors):
        raise ValueError("one duration factor per frame is needed")
    base = counts[0][1]
    runs: list[list[int]] = []
    for factor in duration_factors:
        delta = int(round(base * factor))
        if runs and runs[-1][1] == delta:
            runs[-1][0] += 1
        else:
            runs.append([1, delta])
    body = struct.pack(">II", version_flags, len(runs)) + b"".join(struct.pack(">II", c, d) for c, d in runs)
    new_box = struct.pack(">I4s", 8 + len(body), b"stts") + body
    growth = len(new_box) - size
    data[position : position + size] = new_box
    for parent_position, parent_size in chain[:-1]:
        data[parent_position : parent_position + 4] = struct.pack(">I", parent_size + growth)
    Path(path).write_bytes(bytes(data))
    return Path(path)


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_video("clip.mp4", num_frames=24, width=64, height=64, fps=25, fourcc="mp4v",
    frames=None) writes pattern frames (or the given frames) and returns the path."""

    def make(
        name: str = "clip.mp4",
        num_frames: int = 24,
        width: int = 64,
        height: int = 64,
        fps: float = 25.0,
        fourcc: str | None = None,
        frames: Iterable[np.ndarray] | None = None,
    ) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if fourcc is None:
            fourcc = "FFV1" if path.suffix in (".mkv",) else "mp4v"
        if frames is None:
            frames = (pattern_frame(i, width, height) for i in range(num_frames))
        return write_video(path, frames, fps=fps, fourcc=fourcc)

    return make


# ----------------------------------------------------------------------------------------------
# Labelled motion videos (owner: finetune)

MOTION_STEPS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def moving_square_frames(direction: str, rng: np.random.Generator, num_frames: int = 12, size: int = 64) -> np.ndarray:
    """A bright square crossing a dark, noisy background in `direction`: the label is only in
    the motion, a single frame cannot tell the classes apart."""
    dx, dy = MOTION_STEPS[direction]
    side = int(size * rng.uniform(0.19, 0.28))
    # 2.5-4 pixels a frame at 64x64, slower when the path would not fit in the frame
    speed = min(size * rng.uniform(0.04, 0.0625), 0.9 * (size - side) / max(num_frames - 1, 1))
    travel = speed * (num_frames - 1)
    start_along = rng.uniform(0, size - side - travel)
    across = int(rng.integers(0, size - side))
    background = int(rng.integers(0, 60))
    colour = rng.integers(170, 256, 3)
    frames = []
    for t in range(num_frames):
        along = start_along + speed * t
        if dx < 0 or dy < 0:
            along = size - side - along
        x, y = (int(along), across) if dx else (across, int(along))
        frame = np.clip(rng.normal(background, 6, (size, size, 3)), 0, 255).astype(np.uint8)
        frame[y : y + side, x : x + side] = colour
        frames.append(frame)
    return np.stack(frames)


def write_motion_dataset(root: Path, per_class: int, directions=("left", "right"), num_frames: int = 12,
                         size: int = 64, seed: int = 0, fps: float = 25.0) -> Path:
    """root/<direction>/<i>.mp4 with `per_class` clips of each direction; returns root."""
    for class_index, direction in enumerate(directions):
        for i in range(per_class):
            rng = np.random.default_rng([seed, class_index, i])
            (Path(root) / direction).mkdir(parents=True, exist_ok=True)
            write_video(Path(root) / direction / f"{i:03d}.mp4", moving_square_frames(direction, rng, num_frames, size),
                        fps=fps)
    return Path(root)


# ----------------------------------------------------------------------------------------------
# The CLI and a small trained checkpoint, for tests that run commands in-process (a module's own
# fixture of the same name takes precedence).


@pytest.fixture(scope="module")
def app():
    from sifa_cli.cli.main import _register, app

    _register()
    return app


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from predict_helpers import colour_checkpoint

    return colour_checkpoint(tmp_path_factory.mktemp("ckpt"))
