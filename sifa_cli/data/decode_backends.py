"""The decoders themselves, shared by in-process decoding (`sifa_cli.data.decode`) and the decode
worker process (`sifa_cli.data.decode_worker`), which both import this module and not each other's
internals: the decord and OpenCV backends (open a file, report its geometry, return frames for
sorted indices as RGB uint8), their errors, file names for native code, and the capture of what
FFmpeg prints on file descriptor 2.
"""

from __future__ import annotations

import atexit
import io
import os
import re
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from sifa_cli.data.transforms import resize_short_side, scaled_size
from sifa_cli.errors import DecodeError

# Above this many pixels per frame even a handful of frames would need gigabytes.
MAX_PIXELS = 8192 * 8192
# OpenCV decodes forward instead of seeking when the next wanted frame is this close: a seek
# restarts from a key frame anyway, and OpenCV's seek is only approximate on variable frame rate.
OPENCV_SEEK_GAP = 96
# FFmpeg threads per reader (decord and OpenCV). Videos are decoded in parallel already (one
# reader per `--decoders` worker), and frame threading restarts its pipeline at every seek: with
# 1 thread a 16-frame clip of a 640x360 video took a third less CPU and less wall time with either
# decoder, and even one 1280x720 video read alone was no slower on 2 cores (benchmarks/RESULTS.md).
# A reader opened for one long forward pass (a timeline with cuts) may ask for more.
DECODER_THREADS = 1


class FrameCountError(DecodeError):
    """Fewer frames could be decoded than the file claimed; `available` is the real count.
    `note` is what the user should be told, or None when that was already said."""

    def __init__(self, message: str, available: int, note: str | None = None):
        super().__init__(message)
        self.available = available
        self.note = note

    def __reduce__(self):  # travels back from the decode worker
        return type(self), (str(self), self.available, self.note)


class BackendError(Exception):
    """One decoder failed on this file; another may still succeed."""


# ---------------------------------------------------------------------------------------------
# Native chatter: FFmpeg inside decord and OpenCV prints to file descriptor 2 directly.

_native_log: io.BufferedRandom | None = None


@contextmanager
def capture_native_stderr() -> Iterator[None]:
    """Keep what C libraries print on file descriptor 2 off the terminal while Python's own
    `sys.stderr` (progress bars, error lines) still reaches it. Decode errors quote the captured
    text as their reason. Re-entrant; commands that decode many files wrap their work in it."""
    global _native_log
    if _native_log is not None:
        yield
        return
    if hasattr(sys.stderr, "flush"):
        sys.stderr.flush()
    saved_fd = os.dup(2)
    log = tempfile.TemporaryFile()
    os.dup2(log.fileno(), 2)
    original_stderr = sys.stderr
    replacement = None
    try:
        # Under a test runner sys.stderr is often not fd 2 at all; only a real fd-2 stream moves.
        if _fileno(original_stderr) == 2:
            replacement = open(os.dup(saved_fd), "w", buffering=1, encoding=getattr(
                original_stderr, "encoding", None) or "utf-8", errors="backslashreplace")
            sys.stderr = replacement
        _native_log = log
        yield
    finally:
        _native_log = None
        if replacement is not None:
            replacement.flush()
            sys.stderr = original_stderr
            replacement.close()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        log.close()


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def take_native_log() -> str:
    """Return and forget what native code printed since the last call ('' when not capturing)."""
    log = _native_log
    if log is None:
        return ""
    try:
        size = os.fstat(log.fileno()).st_size
        data = os.pread(log.fileno(), min(size, 65536), max(0, size - 65536)) if size else b""
        os.ftruncate(log.fileno(), 0)
        os.lseek(log.fileno(), 0, os.SEEK_SET)
    except (OSError, ValueError):
        return ""
    return data.decode("utf-8", "replace")


_FFMPEG_PREFIX = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\]\s*")  # "[mov,mp4 @ 0x55...] "
_DECORD_PREFIX = re.compile(r"^\[\d\d:\d\d:\d\d\]\s*\S+:\d+:\s*")  # "[03:51:50] /src/x.cc:86: "
_OPENCV_LINE = re.compile(r"^\[\s*(ERROR|WARN|INFO)[:\s]")  # OpenCV's own logging, about itself


def clean_reason(text: str) -> str:
    """The most informative line of decoder output, without log prefixes: FFmpeg's own words
    ("moov atom not found") first, then decord's."""
    ffmpeg_lines, other_lines = [], []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or _OPENCV_LINE.match(line) or "Traceback" in line:
            continue
        target = ffmpeg_lines if _FFMPEG_PREFIX.match(line) else other_lines
        previous = None
        while line != previous:  # decord nests prefixes: "[t] a.cc:1: [t] b.cc:2: message"
            previous = line
            line = _DECORD_PREFIX.sub("", _FFMPEG_PREFIX.sub("", line)).strip()
        # decord's "ERROR opening: <path>, <ffmpeg reason>"
        line = re.sub(r"^ERROR opening: .*?, ", "", line).strip(" .")
        # decord's internal assertions ("Check failed: av_buffersrc_... >= 0") mean nothing to
        # a user; the caller's generic wording is better.
        if line and "Check failed" not in line:
            target.append(line[:160])
    return (ffmpeg_lines or other_lines or [""])[0]


# ---------------------------------------------------------------------------------------------
# File names for native code

_alias_dir: str | None = None
_aliases: dict[str, str] = {}
_alias_lock = threading.Lock()


def native_path(path: Path) -> str:
    """The name to hand FFmpeg (through decord or OpenCV) for `path`: absolute, so that a name such
    as "pipe:1.mp4" is never taken for a protocol, and valid UTF-8, which native code needs (OpenCV
    crashes on anything else). A name that is not valid UTF-8 gets a link with an ASCII name."""
    global _alias_dir
    text = os.path.abspath(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    with _alias_lock:
        alias = _aliases.get(text)
        if alias is None or not os.path.lexists(alias):
            if _alias_dir is None:
                _alias_dir = tempfile.mkdtemp(prefix="sifa-names-")
                atexit.register(shutil.rmtree, _alias_dir, True)
            suffix = "".join(c for c in os.path.splitext(text)[1] if c.isascii() and (c.isalnum() or c == "."))
            alias = os.path.join(_alias_dir, f"{os.getpid()}-{len(_aliases)}{suffix}")
            os.symlink(text, alias)  # the surrogates turn back into the name's own bytes
            _aliases[text] = alias
        return alias



# ---------------------------------------------------------------------------------------------
# Backends. Each one opens a file, reports its geometry, and returns frames for sorted unique
# indices as RGB uint8, already resized to the requested short side.


def as_rgb_uint8(frame: np.ndarray, bgr: bool = False) -> np.ndarray:
    """Any decoded frame (H,W / H,W,1 / H,W,3 / H,W,4; uint8 or uint16) -> H,W,3 uint8 RGB."""
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    elif frame.dtype != np.uint8:
        raise DecodeError(f"unsupported pixel type {frame.dtype}")
    if frame.ndim == 2:
        frame = frame[:, :, None]
    channels = frame.shape[2]
    if channels == 1:
        return np.repeat(frame, 3, axis=2)
    if channels == 4:
        frame = frame[:, :, :3]
    elif channels != 3:
        raise DecodeError(f"unsupported number of colour channels: {channels}")
    return np.ascontiguousarray(frame[:, :, ::-1] if bgr else frame)


MAX_PLAUSIBLE_SPAN_S = 1e7  # 115 days: a longer span is a broken timestamp, not a video


def usable_frame_times(starts: np.ndarray, fps: float, path: Path) -> np.ndarray:
    """Frame times from the first frame on, from the container's timestamps where they make sense.

    Some files give frames no timestamp; decord then reports FFmpeg's "no PTS" marker (about
    -3.8e17 s in OpenCV's sample Megamind.avi). Timestamps that are not finite, go backwards, or
    span far more or less than the frame count at the average rate are replaced by a constant
    frame rate, as OpenCV assumes.
    """
    times = np.asarray(starts, dtype=np.float64) - float(starts[0]) if len(starts) else np.zeros(0)
    if len(times) < 2:
        return times
    nominal = (len(times) - 1) / fps if fps > 0 else None
    sane = bool(np.isfinite(times).all() and (np.diff(times) >= 0).all() and times[-1] < MAX_PLAUSIBLE_SPAN_S)
    if sane and nominal:
        sane = nominal / 10 <= times[-1] <= nominal * 10
    if sane:
        return times
    if not fps > 0:
        raise DecodeError(f"{path}: neither frame times nor a frame rate could be read")
    return np.arange(len(times)) / fps


# decord numbers a key frame by its place in decoding order. In an open GOP (x265's default, x264's
# open-gop) the key frame is shown after the pictures that lead it (B-frames that also refer to the
# GOP before), so decord's number for it is early by that many pictures, and a read that makes decord
# seek to it (a read in another GOP than the last one, or backwards) returns frames late by as many
# places, up to one past the key frame's real place; later frames come back right. Measured with
# x264 and x265 at 3, 8 and 16 B-frames: never further than leading pictures + 1 after the key frame.
# Both encoders allow at most 16 B-frames.
LEADING_PICTURES_MAX = 16
# A read that would land there is preceded by a read of the frame before the key frame, so that decord
# decodes through the key frame in order instead of seeking to it; with GOPs shorter than the risky
# span that can chain back over several key frames, at most this many.
SEEK_AROUND_DEPTH = 8


def _key_before(keys: np.ndarray, index: int) -> tuple[int, int]:
    """The key frame at or before `index` and the one before that (0, 0 when there is none)."""
    place = int(np.searchsorted(keys, index, side="right")) - 1
    if place < 0:
        return 0, 0
    return int(keys[place]), int(keys[place - 1]) if place > 0 else 0


def _decord_seeks(index: int, position: int | None, keys: np.ndarray) -> bool:
    """Whether decord's get_batch seeks to read `index` when its next frame is `position` (None: unknown)."""
    if position is None:
        return True
    if index == position:
        return False
    return index < position or _key_before(keys, index)[0] != _key_before(keys, position)[0]


def _after_leading_pictures(index: int, keys: np.ndarray) -> bool:
    """Whether `index` lies where a seek to its key frame may return it late (see LEADING_PICTURES_MAX)."""
    key, previous = _key_before(keys, index)
    gop = key - previous
    return key > 0 and gop >= 2 and index - key <= min(LEADING_PICTURES_MAX, gop - 1) + 1


def decord_read_plan(indices: list[int], keys: np.ndarray, position: int | None) -> tuple[list[int], list[int]]:
    """What to ask decord's get_batch for so that the sorted `indices` come back exact on open GOPs:
    (the frames to ask for, in order; where each of `indices` is among them). `keys`: decord's key
    frame indices; `position`: the reader's next frame, None when unknown."""
    keys = np.asarray(keys, dtype=np.int64)
    plan: list[int] = []
    where: list[int] = []
    for index in indices:
        if plan and plan[-1] == index:  # asked twice
            where.append(len(plan) - 1)
            continue
        chain = [index]
        while (len(chain) <= SEEK_AROUND_DEPTH and _decord_seeks(chain[-1], position, keys)
               and _after_leading_pictures(chain[-1], keys)):
            chain.append(_key_before(keys, chain[-1])[0] - 1)
        plan.extend(reversed(chain))
        where.append(len(plan) - 1)
        position = index + 1
    return plan, where


DECORD_MISSING = "decord is not installed"  # how a missing decord is reported (then "auto" says nothing of it)


class DecordBackend:
    name = "decord"
    reported_frames = None  # decord counts packets, so there is no header count to distrust
    _logging_quieted = False

    def __init__(self, path: Path, short_side: int | None, threads: int = DECODER_THREADS):
        try:
            import decord
        except ImportError as exc:
            raise BackendError(f"{DECORD_MISSING} ({exc})") from None
        if not DecordBackend._logging_quieted:
            decord.logging.set_level(decord.logging.QUIET)
            DecordBackend._logging_quieted = True
        self._decord = decord
        self._path = path
        self._threads = threads
        reader = self._open(-1, -1)
        # decord exposes the size only through a decoded frame; the first one is cheap to get.
        first = reader.next().asnumpy()
        self.height, self.width = first.shape[:2]
        self.num_frames = len(reader)
        self.fps = float(reader.get_avg_fps())
        check_geometry(path, self.width, self.height)
        self._short_side = None
        self._scaled_by_opencv = False
        if short_side is not None and min(self.width, self.height) > short_side:
            # Scaling inside the decoder skips building full-size RGB frames at all.
            self._short_side = short_side
            reader = self._open(*scaled_size(self.width, self.height, short_side))
        self._reader = reader
        self._keys = np.asarray(reader.get_key_indices(), dtype=np.int64)
        self._position: int | None = None  # the reader's next frame (decord_read_plan), None: unknown

    def _open(self, width: int, height: int):
        decord = self._decord
        try:
            return decord.VideoReader(native_path(self._path), ctx=decord.cpu(0), width=width, height=height,
                                      num_threads=self._threads)
        except (RuntimeError, AssertionError, decord.DECORDError) as exc:
            raise BackendError(clean_reason(str(exc))) from None

    def read_sorted(self, indices: np.ndarray) -> np.ndarray:
        try:
            frames = self._get_batch(self._reader, indices)
        except BackendError:
            if self._short_side is None or self._scaled_by_opencv:
                raise
            # decord rejects some output widths (8, 12, 16, 24, 48, 72 among them), scaled or
            # not: decode at full size and scale with OpenCV from now on.
            self._reader = self._open(-1, -1)
            self._position = None
            self._scaled_by_opencv = True
            frames = self._get_batch(self._reader, indices)
        return resize_short_side(frames, self._short_side) if self._scaled_by_opencv else frames

    def _get_batch(self, reader, indices: np.ndarray) -> np.ndarray:
        asked = [int(i) for i in indices]
        plan, where = decord_read_plan(asked, self._keys, self._position)
        self._position = None
        try:
            frames = reader.get_batch(plan).asnumpy()
        except (RuntimeError, IndexError, self._decord.DECORDError) as exc:
            raise BackendError(clean_reason(str(exc))) from None
        if frames.ndim != 4 or frames.shape[0] != len(plan):
            raise BackendError(f"decord returned frames of shape {frames.shape}")
        self._position = plan[-1] + 1 if plan else None
        if plan != asked:
            frames = frames[where]
        if frames.shape[3] != 3:
            frames = np.stack([as_rgb_uint8(frame) for frame in frames])
        return frames

    def frame_times(self) -> np.ndarray:
        starts = self._reader.get_frame_timestamp(np.arange(self.num_frames))[:, 0]
        return usable_frame_times(starts, self.fps, self._path)

    def close(self) -> None:
        self._reader = None


class OpenCVBackend:
    name = "opencv"

    def __init__(self, path: Path, short_side: int | None, threads: int = DECODER_THREADS):
        import cv2

        self._cv2 = cv2
        self._path = path
        self._threads = threads
        self._short_side = short_side
        self._open()
        cap = self._cap
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not np.isfinite(self.fps) or self.fps < 0:
            self.fps = 0.0
        check_geometry(path, self.width, self.height)
        self.reported_frames: int | None = None  # set when the file's own count proved wrong
        self.num_frames = self._verified_frame_count(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))

    def _open(self) -> None:
        cv2 = self._cv2
        cap = cv2.VideoCapture(native_path(self._path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, self._threads])
        if not cap.isOpened():
            raise BackendError("")
        self._cap = cap
        self._position = 0  # index of the frame the next read() returns

    def _verified_frame_count(self, reported: int) -> int:
        """OpenCV's count comes from headers or duration x fps and can exceed what the file holds
        (a cut-off AVI keeps its header's count): check the last frame, else count by decoding."""
        if reported > 0:
            self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, reported - 1)
            if self._cap.grab():
                self._open()
                return reported
        self._open()
        count = 0
        while self._cap.grab():
            count += 1
        self._open()
        if reported > 0 and count != reported:
            self.reported_frames = reported
        if count == 0:
            raise BackendError("no frame could be decoded")
        return count

    def read_sorted(self, indices: np.ndarray) -> np.ndarray:
        frames = []
        for index in indices.tolist():
            if index < self._position:
                if index <= OPENCV_SEEK_GAP:
                    self._open()  # rewinding by reopening is exact, seeking may not be
                else:
                    self._seek(index)
            elif index - self._position > OPENCV_SEEK_GAP:
                self._seek(index)
            while self._position < index:
                if not self._cap.grab():  # grab() skips the colour conversion of unwanted frames
                    raise self._short_read()
                self._position += 1
            ok, frame = self._cap.read()
            if not ok or frame is None:
                raise self._short_read()
            self._position += 1
            frame = as_rgb_uint8(frame, bgr=True)
            if self._short_side is not None and min(frame.shape[:2]) > self._short_side:
                frame = resize_short_side(frame[None], self._short_side)[0]
            frames.append(frame)
        return np.stack(frames)

    def _seek(self, index: int) -> None:
        self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, index)
        self._position = index

    def _short_read(self) -> FrameCountError:
        note = f"only {self._position} of the {self.num_frames} frames it announces could be decoded"
        return FrameCountError(f"{self._path}: {note}", self._position, note)

    def frame_times(self) -> np.ndarray:
        if self.fps <= 0:
            raise DecodeError(f"{self._path}: the frame rate is unknown, so frames have no times")
        return np.arange(self.num_frames) / self.fps

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


BACKEND_CLASSES = {"decord": DecordBackend, "opencv": OpenCVBackend}


def check_geometry(path: Path, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise BackendError(f"it reports an invalid frame size {width}x{height}")
    if width * height > MAX_PIXELS:
        raise DecodeError(
            f"{path}: resolution {width}x{height} is above the supported {MAX_PIXELS // 10**6} megapixels"
        )
