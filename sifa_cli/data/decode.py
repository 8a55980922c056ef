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

import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np

from sifa_cli.data import decode_backends
from sifa_cli.data.decode_backends import (  # noqa: F401  (re-exported: the decoding API is this module)
    BACKEND_CLASSES,
    DECODER_THREADS,
    DECORD_MISSING,
    BackendError,
    FrameCountError,
    as_rgb_uint8,
    capture_native_stderr,
    check_geometry,
    clean_reason,
    native_path,
    take_native_log,
    usable_frame_times,
)
from sifa_cli.errors import DecodeError, InputError, SifaError

BACKENDS = ("auto", "decord", "opencv")
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
     ".flv", ".wmv", ".asf", ".3gp", ".ogv", ".y4m"}
)
DEFAULT_TIMEOUT_S = 60.0

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



class _RemoteBackend:
    """A backend living in a decode worker process; same interface as the in-process ones."""

    def __init__(self, worker, name: str, path: Path, short_side: int | None, timeout: Callable[[], float],
                 threads: int = DECODER_THREADS):
        self._worker = worker
        self._timeout = timeout
        self.name = name
        self._handle = worker.open_handle()
        self._generation = -1
        (self.width, self.height, self.fps, self.num_frames, self.reported_frames) = self._call(
            "open", (name, str(path), short_side, threads))
        self._generation = worker.generation  # the process that holds this decoder

    def _call(self, op: str, args):
        from sifa_cli.data.decode_worker import WorkerCrashed

        if op != "open":
            if self._worker.generation != self._generation:
                raise WorkerCrashed("the decoder crashed earlier on this file")
            if not self._worker.alive:  # died since the last call: say how
                raise WorkerCrashed(self._worker.exit_description())
        return self._worker.call((op, self._handle, args), self._timeout())

    def read_sorted(self, indices: np.ndarray, ahead: np.ndarray | None = None) -> np.ndarray:
        return self._call("read", (indices, self.num_frames, ahead))

    def frame_times(self) -> np.ndarray:
        return self._call("times", self.num_frames)

    def close(self) -> None:
        if self._worker.alive and self._worker.generation == self._generation:
            try:
                self._worker.call(("close", self._handle, None), self._timeout())
            except Exception:  # closing is best effort; a worker in trouble is replaced anyway
                pass



def _check_declared_size(path: Path) -> None:
    """Refuse frames too large from the container's headers, before a decoder allocates one."""
    from sifa_cli.data.probe import declared_frame_size

    size = declared_frame_size(path)
    if size is not None and size[0] * size[1] > decode_backends.MAX_PIXELS:  # the one limit, as the backends read it
        check_geometry(path, *size)


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
    ending the program (default: where available). threads: FFmpeg threads of this reader
    (DECODER_THREADS unless it reads one long file forward).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        backend: str = "auto",
        short_side: int | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        isolate: bool = True,
        threads: int = DECODER_THREADS,
    ):
        if backend not in BACKENDS:
            raise InputError(f"unknown decoder {backend!r}: choose one of {', '.join(BACKENDS)}")
        self.path = Path(path)
        self.short_side = short_side
        self.threads = threads
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
            except BackendError as exc:
                failures.append(clean_reason(take_native_log()) or str(exc))
        else:
            raise DecodeError(_describe_failure(self.path, next((f for f in failures if f), "")))
        if failures and self._auto and not failures[0].startswith(DECORD_MISSING):
            self.notes.append("decord could not open it, OpenCV did")
        self._note_count_fix()
        if self._backend.num_frames < 1:
            raise DecodeError(f"{self.path}: contains no video frames")

    def _new_backend(self, name: str):
        if self._worker is not None:
            return _RemoteBackend(self._worker, name, self.path, self.short_side, lambda: self.timeout, self.threads)
        return BACKEND_CLASSES[name](self.path, self.short_side, self.threads)

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

    def read(self, indices: Sequence[int] | np.ndarray, ahead: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Frames at `indices` as uint8 RGB, shape (len(indices), H, W, 3).

        `ahead`: the frames the next call will most likely ask for (sorted, unique); a decode worker
        decodes them while the caller works on these. Only a hint: any next call is answered right.
        Raises FrameCountError when the file holds fewer frames than it claimed; `num_frames`
        is then corrected, so sampling again and retrying succeeds (see `read_sampled`).
        """
        wanted = np.asarray(indices, dtype=np.int64).reshape(-1)
        if wanted.size == 0:
            raise ValueError("no frame indices given")
        if wanted.min() < 0 or wanted.max() >= self.num_frames:
            raise ValueError(f"frame indices must lie in [0, {self.num_frames}), got {wanted.min()}..{wanted.max()}")
        unique, inverse = np.unique(wanted, return_inverse=True)
        if ahead is not None:
            ahead = np.unique(np.asarray(ahead, dtype=np.int64).reshape(-1))
            ahead = ahead[(ahead >= 0) & (ahead < self.num_frames)]
        try:
            frames = self._read_unique(unique, ahead if ahead is not None and ahead.size else None)
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

    def _read_unique(self, unique: np.ndarray, ahead: np.ndarray | None = None) -> np.ndarray:
        def read() -> np.ndarray:
            backend = self._backend
            if ahead is not None and isinstance(backend, _RemoteBackend):  # in-process reading has no one to read ahead
                return self._bounded(lambda: backend.read_sorted(unique, ahead), f"decoding {len(unique)} frames")
            return self._bounded(lambda: backend.read_sorted(unique), f"decoding {len(unique)} frames")

        try:
            return read()
        except BackendError as exc:
            if not (self._auto and self._backend.name == "decord"):
                raise self._decode_failure(exc) from None
        # decord gave up on this file (damaged stream, count off by one, ...): OpenCV decodes
        # what is really there.
        self._backend.close()
        try:
            self._backend = self._bounded(lambda: self._new_backend("opencv"), "opening it")
        except BackendError as exc:
            raise self._decode_failure(exc) from None
        self.notes.append("decord could not decode it, OpenCV did")
        self._note_count_fix()
        if unique.max() >= self.num_frames:
            already_said = self._backend.reported_frames is not None
            note = None if already_said else f"only {self.num_frames} frames could be decoded"
            raise FrameCountError(f"{self.path}: only {self.num_frames} frames could be decoded", self.num_frames, note)
        try:
            return read()
        except BackendError as exc:
            raise self._decode_failure(exc) from None

    def _decode_failure(self, exc: BackendError) -> DecodeError:
        reason = clean_reason(take_native_log()) or str(exc)
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

        take_native_log()
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
            if isinstance(error, (BackendError, SifaError)):
                raise error  # type: ignore[misc]
            if isinstance(error, MemoryError):
                raise DecodeError(f"{self.path}: out of memory while {what}") from None
            raise BackendError(f"{type(error).__name__}: {error}".splitlines()[0])
        return outcome["value"]  # type: ignore[return-value]

    def _in_worker(self, call: Callable[[], T], what: str) -> T:
        """Run a call that talks to the decode worker, which enforces the time limit itself."""
        from sifa_cli.data.decode_worker import WorkerCrashed, WorkerTimeout

        take_native_log()
        try:
            return call()
        except WorkerTimeout:
            self._broken = True
            raise DecodeError(
                f"{self.path}: the decoder did not finish {what} within {self.timeout:g}s; "
                "the file may be damaged or its frame count wrong"
            ) from None
        except WorkerCrashed as exc:  # like any decoder failure: "auto" still tries OpenCV
            raise BackendError(str(exc)) from None
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
