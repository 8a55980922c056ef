"""Native decoding in a child process, so that a decoder that crashes (a segfault in FFmpeg, OpenCV
or decord) or hangs on one file costs that file, not the whole run.

Each open `Video` borrows a `DecodeWorker` from a small pool. The worker runs the same decoder
backends as in-process decoding (`sifa_cli.data.decode_backends`, which both import), one request
at a time over a socket pair (pickled requests and replies, `multiprocessing.connection`): open a
file, read frames, frame times, close. A read may name the frames the caller will ask for next: the
worker decodes them while the caller works on the ones it got (a timeline reading a long file
forward). Frames come back through memory shared with the worker (one copy on each side). The
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
    with shared.capture_native_stderr():
        while True:
            try:
                op, handle, args = conn.recv()
            except (EOFError, OSError, KeyboardInterrupt):
                return
            pending = ahead.pop(handle, None)
            if pending is not None:
                pending.wait()  # whatever comes next, the backend is free first
            try:
                if op == "open":
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
                    read = pending.result(indices, num_frames) if pending is not None else None
                    backend.num_frames = num_frames
                    got = (read or _ReadAhead.now(backend, indices)).frames()
                    if next_indices is not None:  # decoded while the caller uses these
                        ahead[handle] = _ReadAhead(backend, next_indices, num_frames)
                    conn.send(("frames", frames.put(got), shared.take_native_log()))
                    continue
                elif op == "times":
                    backend = backends[handle]
                    backend.num_frames = args
                    value = backend.frame_times()
                elif op == "close":
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


class _ReadAhead:
    """One read of sorted frame indices, done on a thread of its own (FFmpeg, decord and OpenCV
    release the GIL while they decode) so that the worker decodes the next frames a caller will
    want while the caller works on the last ones. `result` hands it over if it is what was asked for."""

    def __init__(self, backend, indices: np.ndarray, num_frames: int, start: bool = True):
        self._backend, self.indices, self.num_frames = backend, indices, num_frames
        self._value: Optional[np.ndarray] = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="sifa-read-ahead", daemon=True)
        if start:
            self._thread.start()

    @classmethod
    def now(cls, backend, indices: np.ndarray) -> "_ReadAhead":
        read = cls(backend, indices, backend.num_frames, start=False)
        read._run()
        return read

    def _run(self) -> None:
        try:
            self._value = self._backend.read_sorted(self.indices)
        except BaseException as exc:  # raised where the caller asks for these frames
            self._error = exc

    def wait(self) -> None:
        if self._thread.ident is not None:
            self._thread.join()

    def result(self, indices: np.ndarray, num_frames: int) -> Optional["_ReadAhead"]:
        """Itself when it read `indices` for the same frame count, else None (its frames are
        dropped; the read that was asked for is done afresh)."""
        same = num_frames == self.num_frames and np.array_equal(indices, self.indices)
        return self if same else None

    def frames(self) -> np.ndarray:
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


def main(argv: list[str]) -> None:
    fd, frames_fd = int(argv[0]), int(argv[1])
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash is reported, not dumped into the cwd
    except (ImportError, ValueError, OSError):
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _serve(Connection(fd), _SharedBuffer(frames_fd))

