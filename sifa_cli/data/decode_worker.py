"""Native decoding in a child process, so that a decoder that crashes (a segfault in FFmpeg, OpenCV
or decord) or hangs on one file costs that file, not the whole run.

Each open `Video` borrows a `DecodeWorker` from a small pool. The worker runs the same decoder
backends as in-process decoding (`sifa_cli.data.decode_backends`, which both import), one request
at a time over a socket pair (pickled requests and replies, `multiprocessing.connection`): open a
file, read frames, frame times, close. A read may name the frames the caller will ask for next: the
worker decodes them while the caller works on the ones it got (a timeline reading a long file
forward keeps it several chunks ahead), and an "ahead" request starts on frames before any read asks
(a command still loading its model). Frames come back through memory shared with the worker (one copy on each side). The
parent waits for each reply at most the decode time limit; a worker that dies is reported as a
crash of the decoder on that file and a fresh one is started for the next request; one that takes
too long is killed (a hung decoder thread, before, could only be abandoned).

The worker imports numpy, OpenCV and decord but not torch: it starts in a fraction of a second and
holds about 50 MB. benchmarks/bench_decode_isolation.py measures what isolation costs per clip.
"""

from __future__ import annotations

import atexit
import mmap
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Optional

import numpy as np

import sifa_cli

# The parent's sifa_cli first on the path: with `-c` the working directory comes first, and another
# checkout there (or on PYTHONPATH before it) would otherwise answer a protocol it does not speak.
_CHILD_CODE = (
    "import sys; root = sys.argv[1]\n"
    "sys.path.insert(0, root)\n"
    "from sifa_cli.data.decode_worker import main; main(sys.argv[2:])"
)
AVAILABLE = os.name == "posix"  # socket pairs handed to a child by file descriptor
CRASH_TEST_VARIABLE = "SIFA_TEST_CRASH_DECODER_ON"  # a file-name part the worker segfaults on (tests)
_MAX_IDLE = 16  # more Videos open at once than this (scan threads) would restart workers


class WorkerCrashed(Exception):
    """The worker process died while handling a request (or before it)."""


class WorkerTimeout(Exception):
    """The worker did not answer within the time limit and was killed."""


class DecodeWorker:
    """One decoding child process, restarted on demand after it dies or is killed. `generation`
    counts restarts: a decoder opened in an earlier generation is gone."""

    def __init__(self) -> None:
        self._process: Optional[subprocess.Popen] = None
        self._conn: Optional[Connection] = None
        self._frames: Optional[_SharedBuffer] = None
        self.generation = 0
        self._next_handle = 0

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _start(self) -> None:
        parent_end, child_end = socket.socketpair()
        self._frames = _SharedBuffer(_shared_file())
        # The child imports this same sifa_cli, wherever it came from (a checkout, site-packages).
        package_root = str(Path(sifa_cli.__file__).resolve().parent.parent)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _CHILD_CODE, package_root, str(child_end.fileno()), str(self._frames.fd)],
                pass_fds=[child_end.fileno(), self._frames.fd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError as exc:
            self._frames.close()
            self._frames = None
            parent_end.close()
            raise WorkerCrashed(f"cannot start the decoder process ({exc.strerror or exc})") from None
        finally:
            child_end.close()
        self._conn = Connection(parent_end.detach())
        self.generation += 1

    def open_handle(self) -> int:
        self._next_handle += 1
        return self._next_handle

    def call(self, request: tuple, timeout: float) -> Any:
        """Send one request and return its value; exceptions raised by the backend in the child
        are raised here. WorkerCrashed / WorkerTimeout when the child dies / is too slow."""
        if not self.alive:
            self._reap()
            self._start()
        assert self._conn is not None
        started = time.monotonic()
        try:
            self._conn.send(request)
            if not self._conn.poll(timeout):
                self.kill()
                raise WorkerTimeout()
            status, value, native_log = self._conn.recv()
        except (EOFError, OSError):
            raise WorkerCrashed(self.exit_description()) from None
        if time.monotonic() - started > timeout:  # answered, but later than allowed (poll rounds up to 1 ms)
            self.kill()  # it may hold a decoder nobody will close
            raise WorkerTimeout()
        if native_log:
            # What FFmpeg printed in the child reaches our fd 2 as if printed here: the terminal, or
            # the log that capture_native_stderr reads error reasons from.
            try:
                os.write(2, native_log.encode("utf-8", "replace"))
            except OSError:
                pass
        if status == "error":
            raise value
        if status == "frames":  # an array left in the shared buffer
            shape, dtype = value
            return self._frames.take(tuple(shape), np.dtype(dtype))
        return value

    def exit_description(self) -> str:
        process = self._process
        code = None
        if process is not None:
            try:
                code = process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap()
        if code is not None and code < 0:
            try:
                return f"the decoder crashed: {signal.Signals(-code).name}"
            except ValueError:
                return f"the decoder crashed: signal {-code}"
        return "the decoder process ended unexpectedly" + (f" (exit code {code})" if code is not None else "")

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._reap()

    def _reap(self) -> None:
        if self._frames is not None:
            self._frames.close()
            self._frames = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            self._process = None

    def close(self) -> None:
        """Ask the child to leave (it exits when its end of the socket closes)."""
        if self._frames is not None:
            self._frames.close()
            self._frames = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            try:
                self._process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


class _SharedBuffer:
    """Memory shared with the worker through a file descriptor: decoded frames travel through it
    with one copy on each side instead of being pickled through the socket (several times faster
    for the megabytes of a clip)."""

    def __init__(self, fd: int):
        self.fd = fd
        self._map: Optional[mmap.mmap] = None

    def _view(self, nbytes: int, grow: bool) -> memoryview:
        if nbytes == 0:
            return memoryview(b"")
        if grow and os.fstat(self.fd).st_size < nbytes:
            os.ftruncate(self.fd, max(nbytes, 2 * os.fstat(self.fd).st_size))
        size = os.fstat(self.fd).st_size
        if self._map is None or len(self._map) != size:
            if self._map is not None:
                self._map.close()
            self._map = mmap.mmap(self.fd, size)
        return memoryview(self._map)[:nbytes]

    def put(self, array: np.ndarray) -> tuple[tuple[int, ...], str]:
        array = np.ascontiguousarray(array)
        view = self._view(array.nbytes, grow=True)
        np.frombuffer(view, np.uint8)[:] = array.reshape(-1).view(np.uint8)
        view.release()
        return array.shape, array.dtype.str

    def take(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        out = np.empty(shape, dtype)
        view = self._view(out.nbytes, grow=False)
        out.reshape(-1).view(np.uint8)[:] = np.frombuffer(view, np.uint8)
        view.release()
        return out

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        os.close(self.fd)


def _shared_file() -> int:
    if hasattr(os, "memfd_create"):
        return os.memfd_create("sifa-frames", os.MFD_CLOEXEC)
    handle = tempfile.TemporaryFile()
    fd = os.dup(handle.fileno())
    handle.close()
    return fd


_idle: list[DecodeWorker] = []
_pool_lock = threading.Lock()


def acquire() -> DecodeWorker:
    """A worker for one video, from the pool when one is free (several threads may decode at once)."""
    with _pool_lock:
        while _idle:
            worker = _idle.pop()
            if worker.alive:
                return worker
    return DecodeWorker()


def prestart() -> None:
    """Start a worker into the pool now, unless one is idle there: a command that is about to
    import torch and load a model (seconds) lets the worker start (Python, numpy, OpenCV) meanwhile
    on another core, instead of when the first video opens."""
    if not AVAILABLE:
        return
    with _pool_lock:
        if _idle:
            return
    worker = DecodeWorker()
    try:
        worker._start()
    except WorkerCrashed:
        return  # the first video says why, with its own message
    release(worker)


def release(worker: DecodeWorker) -> None:
    with _pool_lock:
        if worker.alive and len(_idle) < _MAX_IDLE:
            _idle.append(worker)
            return
    worker.close()


def close_idle() -> None:
    """End the pooled workers (they are started again when needed)."""
    with _pool_lock:
        workers, _idle[:] = list(_idle), []
    for worker in workers:
        worker.close()


atexit.register(close_idle)


def _forget_pool_after_fork() -> None:
    # A forked process (a DataLoader worker) must not talk to its parent's workers over the
    # sockets it inherited: it starts its own. The lock may have been held by another thread.
    global _pool_lock
    _pool_lock = threading.Lock()
    _idle[:] = []


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


# ---------------------------------------------------------------------------------------------
# The child


def _serve(conn: Connection, frames: _SharedBuffer) -> None:
    from sifa_cli.data import decode_backends as shared
    from sifa_cli.errors import SifaError

    backends: dict[int, Any] = {}
    ahead: dict[int, _ReadAhead] = {}  # per handle: frames being decoded before they are asked for
    # Tests need a decoder that really crashes on a chosen file; none of ours does on demand.
    crash_on = os.environ.get(CRASH_TEST_VARIABLE)

    def read_ahead(handle: int, indices: np.ndarray, num_frames: int) -> None:
        """Have the frames `indices` decoded next, behind those already under way when they lead to them."""
        pending = ahead.get(handle)
        if pending is not None and pending.extend(indices, num_frames):
            return
        stop(handle)
        backends[handle].num_frames = num_frames
        ahead[handle] = _ReadAhead(backends[handle], indices, num_frames)

    def stop(handle: int) -> None:
        pending = ahead.pop(handle, None)
        if pending is not None:
            pending.stop()  # whatever comes next, the backend is free first

    with shared.capture_native_stderr():
        while True:
            try:
                op, handle, args = conn.recv()
            except (EOFError, OSError, KeyboardInterrupt):
                return
            try:
                if op == "open":
                    stop(handle)
                    name, path, short_side, threads = args
                    if crash_on and crash_on in path:
                        import ctypes

                        ctypes.string_at(0)  # a real segmentation fault, as in a native decoder
                    backend = shared.BACKEND_CLASSES[name](Path(path), short_side, threads)
                    backends[handle] = backend
                    value: Any = (backend.width, backend.height, backend.fps, backend.num_frames,
                                  backend.reported_frames)
                elif op == "read":
                    indices, num_frames, next_indices = args
                    backend = backends[handle]
                    pending = ahead.get(handle)
                    try:
                        got = pending.take(indices, num_frames) if pending is not None else None
                    except BaseException:
                        stop(handle)
                        raise
                    if got is None:  # not what was read ahead (or nothing was): read it now
                        stop(handle)
                        backend.num_frames = num_frames
                        got = backend.read_sorted(indices)
                    if next_indices is not None:  # decoded while the caller uses these
                        read_ahead(handle, next_indices, num_frames)
                    conn.send(("frames", frames.put(got), shared.take_native_log()))
                    continue
                elif op == "ahead":  # start on frames no read has asked for yet
                    indices, num_frames = args
                    read_ahead(handle, indices, num_frames)
                    value = None
                elif op == "times":
                    stop(handle)
                    backend = backends[handle]
                    backend.num_frames = args
                    value = backend.frame_times()
                elif op == "close":
                    stop(handle)
                    backend = backends.pop(handle, None)
                    if backend is not None:
                        backend.close()
                    value = None
                else:
                    raise ValueError(f"unknown request {op!r}")
                reply = ("ok", value)
            except (shared.BackendError, SifaError, MemoryError) as exc:
                reply = ("error", exc)
            except Exception as exc:  # a decoder's own exception type: the parent sees a backend failure
                reply = ("error", shared.BackendError(f"{type(exc).__name__}: {exc}".splitlines()[0]))
            conn.send(reply + (shared.take_native_log(),))


READ_AHEAD_PIECE = 32  # frames a read-ahead decodes per backend call


class _ReadAhead:
    """Frames a caller will ask for next, decoded in order on a thread of their own (FFmpeg, decord and
    OpenCV release the GIL while they decode), in pieces of at most READ_AHEAD_PIECE frames, while the
    caller works on the last ones. `take` hands over the frames at the front when they are what a read
    asks for; `extend` names more to decode behind the rest, so a caller reading a long file forward
    keeps the worker as many frames ahead as it names. The backend is the read-ahead's until `stop`."""

    def __init__(self, backend, indices: np.ndarray, num_frames: int):
        self._backend, self.num_frames = backend, num_frames
        self._cond = threading.Condition()
        self._remaining = np.zeros(0, dtype=np.int64)  # every frame not taken yet, in order
        self._todo: list[np.ndarray] = []  # pieces not started
        self._done: list[tuple[np.ndarray, Any]] = []  # decoded pieces: (indices, frames or the exception)
        self._running = False
        self._stopped = False
        self.extend(indices, num_frames)

    def extend(self, indices: np.ndarray, num_frames: int) -> bool:
        """Decode `indices` after the frames not taken yet, where the two agree on the frames they share
        (True: `indices` begin with those frames, or are the first of them); else False, and nothing
        changes. Nothing is added behind a piece that failed."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        with self._cond:
            held = len(self._remaining)
            common = min(held, len(indices))
            if (self._stopped or num_frames != self.num_frames
                    or not np.array_equal(indices[:common], self._remaining[:common])
                    or any(isinstance(value, BaseException) for _, value in self._done)):
                return False
            if len(indices) <= held:
                return True  # already named
            tail = indices[held:]
            self._remaining = indices.copy()
            self._todo += [tail[i:i + READ_AHEAD_PIECE] for i in range(0, len(tail), READ_AHEAD_PIECE)]
            if self._todo and not self._running:
                self._running = True
                threading.Thread(target=self._run, name="sifa-read-ahead", daemon=True).start()
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped or not self._todo:
                    self._running = False
                    self._cond.notify_all()
                    return
                piece = self._todo.pop(0)
            try:
                value: Any = self._backend.read_sorted(piece)
            except BaseException as exc:  # raised for the read that asks for these frames
                value = exc
            with self._cond:
                self._done.append((piece, value))
                if isinstance(value, BaseException):
                    self._todo.clear()
                self._cond.notify_all()

    def take(self, indices: np.ndarray, num_frames: int) -> Optional[np.ndarray]:
        """The frames `indices`, once decoded, when they are the next ones read ahead for the same frame
        count; None otherwise (the caller reads them afresh). Raises what decoding them raised."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(indices)
        with self._cond:
            if (num_frames != self.num_frames or n == 0 or n > len(self._remaining)
                    or not np.array_equal(self._remaining[:n], indices)):
                return None
            while True:
                have = 0
                for _, value in self._done:
                    if isinstance(value, BaseException):
                        raise value
                    have += len(value)
                    if have >= n:
                        break
                if have >= n:
                    break
                self._cond.wait()
            parts, need = [], n
            while need:
                piece, value = self._done[0]
                if len(value) <= need:
                    self._done.pop(0)
                    parts.append(value)
                    need -= len(value)
                else:
                    self._done[0] = (piece[need:], value[need:])
                    parts.append(value[:need])
                    need = 0
            self._remaining = self._remaining[n:]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def stop(self) -> None:
        """Decode nothing more (the piece under way is finished) and drop what was not taken."""
        with self._cond:
            self._stopped = True
            self._todo.clear()
            while self._running:
                self._cond.wait()
            self._done.clear()

    def wait(self) -> None:
        """Until everything named so far is decoded (tests)."""
        with self._cond:
            while self._running:
                self._cond.wait()


def main(argv: list[str]) -> None:
    fd, frames_fd = int(argv[0]), int(argv[1])
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash is reported, not dumped into the cwd
    except (ImportError, ValueError, OSError):
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _serve(Connection(fd), _SharedBuffer(frames_fd))

