"""Getting a registry entry's file onto this machine, verified.

`fetch(entry)` returns a local path whose hash matches the manifest: the copy beside the manifest,
the cached copy, or a fresh download. Downloads go to `<file>.part` (resumed with an HTTP Range
request when a connection drops or a previous run was interrupted), are hashed in full, and only
then renamed into place, so the cache never holds a half or corrupt file under its real name. A file
lock makes a second process wait for the first one's download instead of writing the same file.

A download never grows past the size the manifest declares (or `MAX_DOWNLOAD_BYTES` when it declares
none), and `timeout` bounds stalls: fewer than `STALL_BYTES` arriving within `timeout` seconds ends
it, however the server paces its bytes.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import stat
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, Optional, Union
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from filelock import FileLock, Timeout
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from sifa_cli import __version__
from sifa_cli.errors import WeightsError
from sifa_cli.writable import disk_problem
from sifa_cli.weights.cache import (
    cache_path,
    check_file,
    integrity_problem,
    lock_path,
    partial_path,
    remember_sha256,
    remove_cached,
    sha256_file,
)
from sifa_cli.weights.manifest import WeightsEntry

OFFLINE_ENV = "SIFA_OFFLINE"
DEFAULT_TIMEOUT_S = 30.0
# A dropped connection is retried (resuming) this many times within one call.
DROP_RETRIES = 4
_CHUNK = 1 << 16
# The most a download may write when the manifest does not declare the file's size.
MAX_DOWNLOAD_BYTES = 8 << 30
# A download that gets fewer bytes than this (or than what is left) in `timeout` seconds has stalled.
STALL_BYTES = _CHUNK

ProgressFn = Callable[[int, Optional[int]], None]
"""Called with (bytes on disk so far, total bytes or None when the server does not say)."""

_stderr = Console(stderr=True, emoji=False)


def is_offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def fetch(
    entry: WeightsEntry,
    *,
    progress: Union[bool, ProgressFn] = True,
    timeout: float = DEFAULT_TIMEOUT_S,
    force: bool = False,
) -> Path:
    """A local, verified copy of `entry`'s file, downloaded into the cache when missing.

    `force` downloads again even when a good cached copy exists.
    """
    if entry.local_path is not None and entry.local_path.is_file():
        return check_file(entry.local_path, entry)
    dest = cache_path(entry)
    if dest.is_file() and not force:
        return check_file(dest, entry, remove_bad=True)
    if not entry.urls:
        raise WeightsError(f"weights '{entry.name}' should be at {entry.local_path}, which is missing")
    if is_offline():
        raise WeightsError(_put_it_there(entry, dest, f"offline mode ({OFFLINE_ENV}=1)"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest, entry):
        if force:
            remove_cached(dest)
        elif dest.is_file():  # another process finished this download while we waited
            return check_file(dest, entry, remove_bad=True)
        _download_entry(entry, dest, progress, timeout)
    return dest


def _put_it_there(entry: WeightsEntry, dest: Path, why: str) -> str:
    return (
        f"{why}: weights '{entry.name}' are not cached; download {entry.file_name} "
        f"from {entry.urls[0]} and put it at {dest}"
    )


@contextlib.contextmanager
def download_lock(dest: Path, wait: bool = True) -> Iterator[bool]:
    """Hold the lock a download of `dest` holds (its partial file belongs to the holder); yields
    False at once when another process holds it and `wait` is False."""
    lock = FileLock(str(lock_path(dest)))
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


@contextlib.contextmanager
def _exclusive(dest: Path, entry: WeightsEntry) -> Iterator[None]:
    with download_lock(dest, wait=False) as locked:
        if locked:
            yield
            return
    _stderr.print(f"waiting for another process that is downloading '{entry.name}' ...", highlight=False)
    with download_lock(dest):
        yield


class _UrlFailed(Exception):
    """This URL cannot serve the file (HTTP error); another URL might."""


class _Unreachable(_UrlFailed):
    """The host could not be reached at all (no network, DNS failure, connection refused)."""


def _download_entry(entry: WeightsEntry, dest: Path, progress: Union[bool, ProgressFn], timeout: float) -> None:
    part = partial_path(dest)
    _check_free_space(entry, part)
    failures: list[_UrlFailed] = []
    for url in entry.urls:
        try:
            with _progress_reporter(progress, entry.file_name) as report:
                _download_url(url, part, report, timeout, entry.size)
        except _UrlFailed as exc:
            failures.append(exc)
            continue
        except OSError as exc:  # writing the file failed: the disk is full, or a file size limit
            part.unlink(missing_ok=True)
            raise WeightsError(f"cannot write {part} while downloading '{entry.name}': {disk_problem(exc)}; "
                               "the partial file was removed") from None
        digest = sha256_file(part)
        problem = integrity_problem(part, entry, digest=digest)
        if problem is not None:
            part.unlink(missing_ok=True)
            raise WeightsError(f"download of '{entry.name}' from {url} is corrupt: {problem}; the file was removed")
        os.replace(part, dest)
        remember_sha256(dest, digest)
        return
    if all(isinstance(exc, _Unreachable) for exc in failures):
        raise WeightsError(_put_it_there(entry, dest, f"no network ({failures[0]})"))
    raise WeightsError(f"could not download '{entry.name}': " + "; ".join(str(exc) for exc in failures))


def _check_free_space(entry: WeightsEntry, part: Path) -> None:
    """A declared size that cannot fit on the disk is refused before anything is requested."""
    if entry.size is None:
        return
    have = part.stat().st_size if part.is_file() else 0
    try:
        free = shutil.disk_usage(part.parent).free
    except OSError:
        return
    if entry.size - have > free:
        raise WeightsError(f"not enough disk space for '{entry.name}': the manifest declares {entry.size} bytes, "
                           f"{entry.size - have} still to write, and {part.parent} has {free} free")


def _check_local_file(url: str) -> None:
    """A file:// URL must name an ordinary file: a FIFO or device would block or never end, and a
    folder or a missing file is no network problem."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "file":
        return
    path = urllib.request.url2pathname(parts.path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise _UrlFailed(f"{url}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise _UrlFailed(f"{url} is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise _UrlFailed(f"{url} is not an ordinary file (a pipe, socket or device)")


def _download_url(url: str, part: Path, report: ProgressFn, timeout: float, expected: Optional[int] = None) -> None:
    """Fill `part` with the body at `url`, resuming from what `part` already holds; never beyond
    `expected` bytes (the manifest's size) or MAX_DOWNLOAD_BYTES."""
    host = urlsplit(url).netloc or url
    limit = expected if expected is not None else MAX_DOWNLOAD_BYTES
    try:
        urllib.request.Request(url)
    except ValueError as exc:  # urllib's word for a URL it cannot use ("unknown url type")
        raise _UrlFailed(f"cannot download {url!r}: {exc}") from None
    _check_local_file(url)
    drops = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": f"sifa/{__version__}"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                if have and resp.status == 206 and _range_start(resp) == have:
                    total = _range_total(resp)
                    mode = "ab"
                else:  # a full body: the server ignored the range, or there was nothing to resume
                    have, mode = 0, "wb"
                    total = _int_or_none(resp.headers.get("Content-Length"))
                _check_announced_size(url, part, total, have, expected)
                total = expected if expected is not None else total
                report(have, total)
                guard = _StallGuard(resp, timeout, host, url)
                with open(part, mode) as out:
                    while have < limit and (chunk := guard.read(min(_CHUNK, limit - have), (total or limit) - have)):
                        out.write(chunk)
                        have += len(chunk)
                        report(have, total)
                    if have >= limit and expected is None and guard.read(1, 1):
                        out.close()
                        part.unlink(missing_ok=True)
                        raise _UrlFailed(f"{url} sent more than {limit} bytes and the manifest declares no size; "
                                         "the partial file was removed")
            if total is None or have >= total:
                return  # a server that sends more than the declared size is not read further
            # The server closed the connection cleanly before sending everything.
        except HTTPError as exc:
            if exc.code == 416 and have:  # our partial file is not a prefix of theirs: start over
                part.unlink(missing_ok=True)
            else:
                raise _UrlFailed(f"HTTP {exc.code} {exc.reason} for {url}") from None
        except URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise _timed_out(host, timeout, url) from None
            raise _Unreachable(f"cannot reach {host}: {exc.reason}") from None
        except TimeoutError:
            raise _timed_out(host, timeout, url) from None
        except (ConnectionError, http.client.HTTPException):
            pass  # dropped mid-transfer: resume below
        drops += 1
        if drops > DROP_RETRIES:
            raise WeightsError(
                f"the connection to {host} dropped {drops} times while downloading {url}; "
                "the partial file is kept, run the command again to resume"
            )


def _check_announced_size(url: str, part: Path, total: Optional[int], have: int, expected: Optional[int]) -> None:
    """Refuse a body whose announced length disagrees with the manifest, exceeds the cap, or does not
    fit on the disk, before any of it is written."""
    if total is None:
        return
    if expected is not None and total != expected:
        raise _UrlFailed(f"{url} announces {total} bytes but the manifest declares {expected}")
    if total > MAX_DOWNLOAD_BYTES:
        raise _UrlFailed(f"{url} announces {total} bytes, more than the {MAX_DOWNLOAD_BYTES} a weights "
                         "download may take without a size in the manifest")
    try:
        free = shutil.disk_usage(part.parent).free
    except OSError:
        return
    if total - have > free:
        raise WeightsError(f"not enough disk space for {url}: {total - have} bytes to write, {free} free in "
                           f"{part.parent}")


def _socket_of(resp):
    """The socket under an http.client response, to shorten its timeout as a stall deadline nears."""
    raw = getattr(getattr(resp, "fp", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    return sock if hasattr(sock, "settimeout") else None


class _StallGuard:
    """Reads a response so that a stall ends it: within `timeout` seconds at least STALL_BYTES (or
    all that is left) must arrive, whether the server goes silent or trickles a byte at a time."""

    def __init__(self, resp, timeout: float, host: str, url: str):
        self.resp, self.timeout, self.host, self.url = resp, timeout, host, url
        self.sock = _socket_of(resp)
        self._restart()

    def _restart(self) -> None:
        self.since = time.monotonic()
        self.got = 0

    def read(self, size: int, remaining: int) -> bytes:
        left = self.since + self.timeout - time.monotonic()
        if left <= 0:
            raise self._stalled()
        if self.sock is not None:
            self.sock.settimeout(left)
        try:
            chunk = self.resp.read1(size)
        except TimeoutError:
            raise self._stalled() from None
        self.got += len(chunk)
        if self.got >= min(STALL_BYTES, max(remaining, 1)):
            self._restart()
        return chunk

    def _stalled(self) -> WeightsError:
        if self.got == 0:
            return _timed_out(self.host, self.timeout, self.url)
        return WeightsError(
            f"download stalled: {self.host} sent only {self.got} bytes in {self.timeout:g} s ({self.url}); "
            "any partial file is kept, run the command again to resume"
        )


def _timed_out(host: str, timeout: float, url: str) -> WeightsError:
    return WeightsError(
        f"download timed out: {host} sent nothing for {timeout:g} s ({url}); "
        "any partial file is kept, run the command again to resume"
    )


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _range_start(resp) -> Optional[int]:
    match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _range_total(resp) -> Optional[int]:
    match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
    return int(match.group(3)) if match and match.group(3) != "*" else None


def _int_or_none(text: Optional[str]) -> Optional[int]:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


@contextlib.contextmanager
def _progress_reporter(progress: Union[bool, ProgressFn], label: str) -> Iterator[ProgressFn]:
    if callable(progress):
        yield progress
        return
    if not progress:
        yield lambda done, total: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_stderr) as bar:
        task = bar.add_task(label, total=None)

        def report(done: int, total: Optional[int]) -> None:
            bar.update(task, completed=done, total=total)

        yield report
