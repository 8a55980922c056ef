"""Read the frames a clip needs from a video file.

decord decodes first (it seeks to the nearest key frame and decodes only what `get_batch` asks
for); OpenCV takes over when decord is not installed or fails on a file. Every native call runs
under a time limit so a decoder that hangs, or that chases frames a header promised but the file
does not hold, ends in a `DecodeError` instead of a frozen program. Frames come back as RGB uint8
arrays T,H,W,3 whatever the source pixel format (grayscale, alpha, 10-bit).

By default the decoders run in a worker process (`sifa_cli.data.decode_worker`), so that one that
crashes on a file fails that file only. Decoders get every file by an absolute name that is valid
UTF-8: a name that is not (Python holds its bytes as surrogate escapes) is reached through a link
with an ASCII name, while messages and results keep the real name.
"""

from __future__ import annotations

import atexit
import io
import os
import re
import shutil
import struct
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

from sifa_cli.data.transforms import resize_short_side, scaled_size
from sifa_cli.errors import DecodeError, InputError, SifaError

BACKENDS = ("auto", "decord", "opencv")
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
     ".flv", ".wmv", ".asf", ".3gp", ".ogv", ".y4m"}
)
DEFAULT_TIMEOUT_S = 60.0
# Above this many pixels per frame even a handful of frames would need gigabytes.
MAX_PIXELS = 8192 * 8192
# OpenCV decodes forward instead of seeking when the next wanted frame is this close: a seek
# restarts from a key frame anyway, and OpenCV's seek is only approximate on variable frame rate.
OPENCV_SEEK_GAP = 96
# FFmpeg threads per reader (decord and OpenCV). Videos are decoded in parallel already (one
# reader per `--decoders` worker), and frame threading restarts its pipeline at every seek: with
# 1 thread a 16-frame clip of a 640x360 video took a third less CPU and less wall time with either
# decoder, and even one 1280x720 video read alone was no slower on 2 cores (benchmarks/RESULTS.md).
DECODER_THREADS = 1

T = TypeVar("T")


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    num_frames: int
    fps: float
    width: int  # of the source, before any resize
    height: int
    backend: str

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


class FrameCountError(DecodeError):
    """Fewer frames could be decoded than the file claimed; `available` is the real count.
    `note` is what the user should be told, or None when that was already said."""

    def __init__(self, message: str, available: int, note: str | None = None):
        super().__init__(message)
        self.available = available
        self.note = note

    def __reduce__(self):  # travels back from the decode worker
        return type(self), (str(self), self.available, self.note)


class _BackendError(Exception):
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


def _take_native_log() -> str:
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


def _clean_reason(text: str) -> str:
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
# Format sniffing, used only to word errors well.


def _container_name(head: bytes) -> str | None:
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"):
        return "mp4"
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:3] == b"FLV":
        return "flv"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return "mpeg"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpeg-ts"
    if head[:8] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11":
        return "asf"
    if head[:9] == b"YUV4MPEG2":
        return "y4m"
    return None


def _mp4_damage(path: Path) -> str | None:
    """Why an MP4/MOV file is structurally incomplete, from its top-level boxes, or None."""
    size = path.stat().st_size
    seen = set()
    with path.open("rb") as handle:
        position = 0
        while position + 8 <= size:
            handle.seek(position)
            box_size, kind = struct.unpack(">I4s", handle.read(8))
            if box_size == 1:
                box_size = struct.unpack(">Q", handle.read(8))[0]
            elif box_size == 0:
                box_size = size - position
            if box_size < 8:
                return "its box structure is corrupt"
            name = kind.decode("latin-1")
            if position + box_size > size:
                return f"the file ends inside its '{name}' box: it looks truncated"
            seen.add(name)
            position += box_size
    if "moov" not in seen:
        return "it has no 'moov' index, it looks truncated (an incomplete download or unfinished recording)"
    return None


def _describe_failure(path: Path, reason: str) -> str:
    from sifa_cli.data.probe import stream_kinds

    kinds = stream_kinds(path)
    if kinds and "video" not in kinds:  # (no tracks at all is more likely a truncated index)
        held = "only audio" if kinds == {"audio"} else "no video track"
        return f"{path}: no video stream in this file (it holds {held})"
    with path.open("rb") as handle:
        head = handle.read(512)
    container = _container_name(head)
    if container is None:
        return f"{path}: not a video file (unrecognised format)"
    if container == "mp4":
        damage = _mp4_damage(path)
        if damage:
            return f"{path}: cannot decode it, {damage}"
    detail = f" ({reason})" if reason else ""
    return f"{path}: cannot decode this {container} file, it is damaged or unsupported{detail}"


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


DECORD_MISSING = "decord is not installed"  # how a missing decord is reported (then "auto" says nothing of it)


class _DecordBackend:
    name = "decord"
    reported_frames = None  # decord counts packets, so there is no header count to distrust
    _logging_quieted = False

    def __init__(self, path: Path, short_side: int | None):
        try:
            import decord
        except ImportError as exc:
            raise _BackendError(f"{DECORD_MISSING} ({exc})") from None
        if not _DecordBackend._logging_quieted:
            decord.logging.set_level(decord.logging.QUIET)
            _DecordBackend._logging_quieted = True
        self._decord = decord
        self._path = path
        reader = self._open(-1, -1)
        # decord exposes the size only through a decoded frame; the first one is cheap to get.
        first = reader.next().asnumpy()
        self.height, self.width = first.shape[:2]
        self.num_frames = len(reader)
        self.fps = float(reader.get_avg_fps())
        _check_geometry(path, self.width, self.height)
        self._short_side = None
        self._scaled_by_opencv = False
        if short_side is not None and min(self.width, self.height) > short_side:
            # Scaling inside the decoder skips building full-size RGB frames at all.
            self._short_side = short_side
            reader = self._open(*scaled_size(self.width, self.height, short_side))
        self._reader = reader

    def _open(self, width: int, height: int):
        decord = self._decord
        try:
            return decord.VideoReader(native_path(self._path), ctx=decord.cpu(0), width=width, height=height,
                                      num_threads=DECODER_THREADS)
        except (RuntimeError, AssertionError, decord.DECORDError) as exc:
            raise _BackendError(_clean_reason(str(exc))) from None

    def read_sorted(self, indices: np.ndarray) -> np.ndarray:
        try:
            frames = self._get_batch(self._reader, indices)
        except _BackendError:
            if self._short_side is None or self._scaled_by_opencv:
                raise
            # decord rejects some output widths (8, 12, 16, 24, 48, 72 among them), scaled or
            # not: decode at full size and scale with OpenCV from now on.
            self._reader = self._open(-1, -1)
            self._scaled_by_opencv = True
            frames = self._get_batch(self._reader, indices)
        return resize_short_side(frames, self._short_side) if self._scaled_by_opencv else frames

    def _get_batch(self, reader, indices: np.ndarray) -> np.ndarray:
        try:
            frames = reader.get_batch(indices.tolist()).asnumpy()
        except (RuntimeError, IndexError, self._decord.DECORDError) as exc:
            raise _BackendError(_clean_reason(str(exc))) from None
        if frames.ndim != 4 or frames.shape[0] != len(indices):
            raise _BackendError(f"decord returned frames of shape {frames.shape}")
        if frames.shape[3] != 3:
            frames = np.stack([as_rgb_uint8(frame) for frame in frames])
        return frames

    def frame_times(self) -> np.ndarray:
        starts = self._reader.get_frame_timestamp(np.arange(self.num_frames))[:, 0]
        return usable_frame_times(starts, self.fps, self._path)

    def close(self) -> None:
        self._reader = None


class _OpenCVBackend:
    name = "opencv"

    def __init__(self, path: Path, short_side: int | None):
        import cv2

        self._cv2 = cv2
        self._path = path
        self._short_side = short_side
        self._open()
        cap = self._cap
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not np.isfinite(self.fps) or self.fps < 0:
            self.fps = 0.0
        _check_geometry(path, self.width, self.height)
        self.reported_frames: int | None = None  # set when the file's own count proved wrong
        self.num_frames = self._verified_frame_count(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))

    def _open(self) -> None:
        cv2 = self._cv2
        cap = cv2.VideoCapture(native_path(self._path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, DECODER_THREADS])
        if not cap.isOpened():
            raise _BackendError("")
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
            raise _BackendError("no frame could be decoded")
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


_BACKEND_CLASSES = {"decord": _DecordBackend, "opencv": _OpenCVBackend}


class _RemoteBackend:
    """A backend living in a decode worker process; same interface as the in-process ones."""

    def __init__(self, worker, name: str, path: Path, short_side: int | None, timeout: Callable[[], float]):
        self._worker = worker
        self._timeout = timeout
        self.name = name
        self._handle = worker.open_handle()
        self._generation = -1
        (self.width, self.height, self.fps, self.num_frames, self.reported_frames) = self._call(
            "open", (name, str(path), short_side))
        self._generation = worker.generation  # the process that holds this decoder

    def _call(self, op: str, args):
        from sifa_cli.data.decode_worker import WorkerCrashed

        if op != "open":
            if self._worker.generation != self._generation:
                raise WorkerCrashed("the decoder crashed earlier on this file")
            if not self._worker.alive:  # died since the last call: say how
                raise WorkerCrashed(self._worker.exit_description())
        return self._worker.call((op, self._handle, args), self._timeout())

    def read_sorted(self, indices: np.ndarray) -> np.ndarray:
        return self._call("read", (indices, self.num_frames))

    def frame_times(self) -> np.ndarray:
        return self._call("times", self.num_frames)

    def close(self) -> None:
        if self._worker.alive and self._worker.generation == self._generation:
            try:
                self._worker.call(("close", self._handle, None), self._timeout())
            except Exception:  # closing is best effort; a worker in trouble is replaced anyway
                pass


def _check_geometry(path: Path, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise _BackendError(f"it reports an invalid frame size {width}x{height}")
    if width * height > MAX_PIXELS:
        raise DecodeError(
            f"{path}: resolution {width}x{height} is above the supported {MAX_PIXELS // 10**6} megapixels"
        )


def _check_declared_size(path: Path) -> None:
    """Refuse frames too large from the container's headers, before a decoder allocates one."""
    from sifa_cli.data.probe import declared_frame_size

    size = declared_frame_size(path)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        _check_geometry(path, *size)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DecodeError(f"{path}: no such file")
    if path.is_dir():
        raise DecodeError(f"{path}: is a directory, not a video file")
    if not path.is_file():
        raise DecodeError(f"{path}: not a regular file")
    try:
        size = path.stat().st_size
        with path.open("rb"):
            pass
    except OSError as exc:
        raise DecodeError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if size == 0:
        raise DecodeError(f"{path}: the file is empty (0 bytes)")


# ---------------------------------------------------------------------------------------------


class Video:
    """An open video. `read(indices)` returns those frames (any order, repeats allowed).

    backend: "auto" (decord, then OpenCV if decord is missing or fails on this file), "decord"
    or "opencv". short_side: frames come back with their shorter side scaled down to this
    (never up), which spares memory and time on large videos. timeout: seconds any single
    decoder call may take before the file is given up with a DecodeError. isolate: decode in a
    worker process, so that a decoder crashing on this file raises a DecodeError instead of
    ending the program (default: where available).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        backend: str = "auto",
        short_side: int | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        isolate: bool = True,
    ):
        if backend not in BACKENDS:
            raise InputError(f"unknown decoder {backend!r}: choose one of {', '.join(BACKENDS)}")
        self.path = Path(path)
        self.short_side = short_side
        self.timeout = timeout
        self.notes: list[str] = []  # things the user should know about how this file was read
        self._auto = backend == "auto"
        self._broken = False
        self._worker = None
        _check_file(self.path)
        _check_declared_size(self.path)
        if isolate:
            from sifa_cli.data import decode_worker

            self._worker = decode_worker.acquire() if decode_worker.AVAILABLE else None
        try:
            self._open_first(["decord", "opencv"] if self._auto else [backend])
        except BaseException:
            self._release_worker()
            raise

    def _open_first(self, candidates: list[str]) -> None:
        failures: list[str] = []
        for name in candidates:
            try:
                self._backend = self._bounded(lambda name=name: self._new_backend(name), "opening it")
                break
            except _BackendError as exc:
                failures.append(_clean_reason(_take_native_log()) or str(exc))
        else:
            raise DecodeError(_describe_failure(self.path, next((f for f in failures if f), "")))
        if failures and self._auto and not failures[0].startswith(DECORD_MISSING):
            self.notes.append("decord could not open it, OpenCV did")
        self._note_count_fix()
        if self._backend.num_frames < 1:
            raise DecodeError(f"{self.path}: contains no video frames")

    def _new_backend(self, name: str):
        if self._worker is not None:
            return _RemoteBackend(self._worker, name, self.path, self.short_side, lambda: self.timeout)
        return _BACKEND_CLASSES[name](self.path, self.short_side)

    def _release_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            from sifa_cli.data import decode_worker

            decode_worker.release(worker)

    # -- public -------------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def num_frames(self) -> int:
        return self._backend.num_frames

    @property
    def info(self) -> VideoInfo:
        b = self._backend
        return VideoInfo(self.path, b.num_frames, b.fps, b.width, b.height, b.name)

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames at `indices` as uint8 RGB, shape (len(indices), H, W, 3).

        Raises FrameCountError when the file holds fewer frames than it claimed; `num_frames`
        is then corrected, so sampling again and retrying succeeds (see `read_sampled`).
        """
        wanted = np.asarray(indices, dtype=np.int64).reshape(-1)
        if wanted.size == 0:
            raise ValueError("no frame indices given")
        if wanted.min() < 0 or wanted.max() >= self.num_frames:
            raise ValueError(f"frame indices must lie in [0, {self.num_frames}), got {wanted.min()}..{wanted.max()}")
        unique, inverse = np.unique(wanted, return_inverse=True)
        try:
            frames = self._read_unique(unique)
        except FrameCountError as exc:
            self._backend.num_frames = exc.available
            if exc.note:
                self.notes.append(exc.note)
            if exc.available < 1:
                raise DecodeError(f"{self.path}: no frame could be decoded (corrupt or truncated)") from None
            raise
        if len(unique) == len(wanted) and (unique == wanted).all():
            return frames  # already in order: skip a copy of every frame
        return frames[inverse]

    def frame_times(self) -> np.ndarray:
        """Presentation time in seconds of every frame, from the first one; honours a variable
        frame rate with decord, assumes a constant one with OpenCV."""
        return self._bounded(self._backend.frame_times, "reading frame times")

    def close(self) -> None:
        if not self._broken:  # a hung decoder thread may still hold the handle
            self._backend.close()
        self._release_worker()

    def __enter__(self) -> "Video":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _read_unique(self, unique: np.ndarray) -> np.ndarray:
        def read() -> np.ndarray:
            return self._bounded(lambda: self._backend.read_sorted(unique), f"decoding {len(unique)} frames")

        try:
            return read()
        except _BackendError as exc:
            if not (self._auto and self._backend.name == "decord"):
                raise self._decode_failure(exc) from None
        # decord gave up on this file (damaged stream, count off by one, ...): OpenCV decodes
        # what is really there.
        self._backend.close()
        try:
            self._backend = self._bounded(lambda: self._new_backend("opencv"), "opening it")
        except _BackendError as exc:
            raise self._decode_failure(exc) from None
        self.notes.append("decord could not decode it, OpenCV did")
        self._note_count_fix()
        if unique.max() >= self.num_frames:
            already_said = self._backend.reported_frames is not None
            note = None if already_said else f"only {self.num_frames} frames could be decoded"
            raise FrameCountError(f"{self.path}: only {self.num_frames} frames could be decoded", self.num_frames, note)
        try:
            return read()
        except _BackendError as exc:
            raise self._decode_failure(exc) from None

    def _decode_failure(self, exc: _BackendError) -> DecodeError:
        reason = _clean_reason(_take_native_log()) or str(exc)
        detail = f" ({reason})" if reason else ""
        return DecodeError(f"{self.path}: cannot decode its frames{detail}; the file may be truncated or corrupt")

    def _note_count_fix(self) -> None:
        reported = self._backend.reported_frames
        if reported is not None:
            self.notes.append(
                f"the file announces {reported} frames but only {self._backend.num_frames} decode "
                "(it looks truncated)"
            )

    def _bounded(self, call: Callable[[], T], what: str) -> T:
        """Run a decoder call in a worker thread and give up after `timeout` seconds.

        Native decoders cannot be interrupted, so a hung call is abandoned (its daemon thread
        is left behind) and this Video refuses further use."""
        if self._broken:
            raise DecodeError(f"{self.path}: the decoder stopped responding earlier")
        if self._worker is not None:
            return self._in_worker(call, what)
        outcome: dict[str, object] = {}

        def run() -> None:
            try:
                outcome["value"] = call()
            except BaseException as exc:  # handed to the caller's thread below
                outcome["error"] = exc

        _take_native_log()
        worker = threading.Thread(target=run, name="sifa-decode", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            self._broken = True
            raise DecodeError(
                f"{self.path}: the decoder did not finish {what} within {self.timeout:g}s; "
                "the file may be damaged or its frame count wrong"
            )
        if "error" in outcome:
            error = outcome["error"]
            if isinstance(error, (_BackendError, SifaError)):
                raise error  # type: ignore[misc]
            if isinstance(error, MemoryError):
                raise DecodeError(f"{self.path}: out of memory while {what}") from None
            raise _BackendError(f"{type(error).__name__}: {error}".splitlines()[0])
        return outcome["value"]  # type: ignore[return-value]

    def _in_worker(self, call: Callable[[], T], what: str) -> T:
        """Run a call that talks to the decode worker, which enforces the time limit itself."""
        from sifa_cli.data.decode_worker import WorkerCrashed, WorkerTimeout

        _take_native_log()
        try:
            return call()
        except WorkerTimeout:
            self._broken = True
            raise DecodeError(
                f"{self.path}: the decoder did not finish {what} within {self.timeout:g}s; "
                "the file may be damaged or its frame count wrong"
            ) from None
        except WorkerCrashed as exc:  # like any decoder failure: "auto" still tries OpenCV
            raise _BackendError(str(exc)) from None
        except MemoryError:
            raise DecodeError(f"{self.path}: out of memory while {what}") from None


def read_sampled(
    video: Video, sample: Callable[[int], np.ndarray], attempts: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Sample indices for the video's frame count and read them; when the file turns out to hold
    fewer frames than it claimed, sample again for the real count.

    `sample` maps a frame count to an index array of any shape; returns (frames, indices) with
    frames shaped (*indices.shape, H, W, 3)."""
    for _ in range(attempts):
        indices = np.asarray(sample(video.num_frames), dtype=np.int64)
        try:
            frames = video.read(indices.reshape(-1))
        except FrameCountError:
            continue
        return frames.reshape(*indices.shape, *frames.shape[1:]), indices
    raise DecodeError(f"{video.path}: the number of decodable frames keeps changing; the file is damaged")
