"""Writing files so that a reader, or a process killed mid-write, never leaves half a file behind, and
checking that an output would not destroy an input or a file sifa should not replace."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Union


@contextmanager
def atomic_write_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers pick the right format).

    When the block finishes, the file replaces `path` in one rename; when it raises, the temporary
    file is removed. Names start with '.' and contain '.tmp', so a cleaner can find leftovers.
    """
    path = Path(path)
    _refuse_special_file(path, "output")  # checked again at the rename, after the slow part
    tmp = path.with_name(f"{hidden_prefix(path)}{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        _refuse_special_file(path, "output")
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:  # name the file the user knows, not our temporary one
            from sifa_cli.errors import SifaError
            from sifa_cli.writable import disk_problem

            kept = "the previous version is kept" if os.path.lexists(path) else "nothing was written"
            raise SifaError(f"cannot write {path}: {disk_problem(exc)}; {kept}") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# The longest file name most file systems take, in bytes.
_NAME_MAX = 255
# Room left for what follows the prefix: a process id, ".tmp"/".new"/".lock" and a suffix.
_TAIL_ROOM = 40


def hidden_prefix(path: Path) -> str:
    """The start of the names of sifa's hidden files beside `path` (temporary versions, locks):
    "." + its stem + ".", with a long stem shortened (and a hash of the whole name added) so the
    hidden name still fits where `path` itself does."""
    path = Path(path)
    stem = path.stem
    suffix_room = len(path.suffix.encode("utf-8", "surrogateescape"))
    budget = _NAME_MAX - _TAIL_ROOM - suffix_room
    encoded = stem.encode("utf-8", "surrogateescape")
    if len(encoded) + 2 <= budget:
        return f".{stem}."
    digest = hashlib.sha1(path.name.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    short = encoded[: budget - 2 - len(digest) - 1].decode("utf-8", "ignore")
    return f".{short}~{digest}."


def _refuse_special_file(path: Path, option: str) -> None:
    """A device, pipe or socket (/dev/null, a FIFO) is never replaced by a file: as root, a rename
    over /dev/null would break every program on the machine."""
    from sifa_cli.errors import InputError

    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return  # nothing there (yet)
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
        kind = "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a pipe" if stat.S_ISFIFO(mode) else "a socket"
        raise InputError(f"{option} {path} is {kind}, not a regular file; sifa writes its outputs to ordinary "
                         "files only (give a file name)")


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
        return os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:  # one of them does not exist (yet)
        return False


def refuse_input_as_output(output: Path, inputs: Iterable[Union[str, os.PathLike, None]], option: str) -> None:
    """Every command that writes files calls this before anything slow happens: an output that is,
    or resolves to (through symbolic links, `..` or hard links), one of the inputs would destroy it."""
    from sifa_cli.errors import InputError

    output = Path(output).expanduser()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).expanduser()
        if _same_file(output, source):
            raise InputError(f"{option} {output} would overwrite the input {source}; choose another file")


def refuse_unsafe_output_file(path: Path, option: str) -> None:
    """An existing output file is replaced only when that loses nothing the user did not ask to lose:
    never through a symbolic link (the link would be replaced, not its target) or over a read-only file."""
    from sifa_cli.errors import InputError

    path = Path(path).expanduser()
    _refuse_special_file(path, option)
    if path.is_symlink():
        target = os.readlink(path)
        raise InputError(f"{option} {path} is a symbolic link (to {target}); sifa will not replace a link: "
                         "give the file it points to, or another name")
    try:
        st = path.stat()
    except OSError:
        return  # nothing there yet
    if stat.S_ISREG(st.st_mode) and (not os.access(path, os.W_OK)
                                     or not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)):
        raise InputError(f"{option} {path} is read-only; sifa will not replace it (make it writable or "
                         "choose another file)")


def refuse_existing_file(path: Path, option: str, overwrite: bool) -> None:
    """An existing file is replaced only when the user said so (--overwrite)."""
    from sifa_cli.errors import InputError

    path = Path(path).expanduser()
    if not overwrite and os.path.lexists(path) and not path.is_dir():
        raise InputError(f"{option} {path} already exists; add --overwrite to replace it, or choose another name")


def check_output_file(path: Path, option: str, inputs: Iterable[Union[str, os.PathLike, None]] = (),
                      overwrite: bool = False) -> None:
    """Every check above, for commands that write one file: never an input, a link, a read-only or
    special file, and an existing file only with --overwrite."""
    from sifa_cli.errors import InputError

    refuse_input_as_output(path, inputs, option)
    if Path(path).expanduser().is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name")
    refuse_unsafe_output_file(path, option)
    refuse_existing_file(path, option, overwrite)


@contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[bool]:
    """Hold an exclusive lock named by `lock_path` (created, and removed again on release); yields
    False at once, without waiting, when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: filelock's msvcrt lock (the file stays behind)
        from filelock import FileLock, Timeout

        lock = FileLock(str(lock_path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()
        return
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        # The previous holder removes the file on release: if that happened after we opened it,
        # our lock is on a file nobody else will see, so take the lock on the current one.
        try:
            held, current = os.fstat(fd), os.stat(lock_path)
            if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield True
    finally:
        try:
            os.unlink(lock_path)  # while still holding it, so no one can lock the old file meanwhile
        finally:
            os.close(fd)


def lock_path_beside(path: Path) -> Path:
    """The hidden lock file that guards `path` (a file or a folder): beside it, so a folder that must
    start empty stays empty."""
    path = Path(os.path.abspath(Path(path).expanduser()))
    return path.with_name(f"{hidden_prefix(path.with_name(path.name + '.x'))}lock")


@contextmanager
def lock_output(path: Path, option: str) -> Iterator[None]:
    """Hold an exclusive lock on the output `path` (a results file, a run or report folder) for a whole
    run, so two runs can never interleave or replace each other's files; a second run refuses at once."""
    from sifa_cli.errors import InputError, SifaError

    path = Path(path)
    with ExitStack() as stack:
        try:
            lock = lock_path_beside(path)
            lock.parent.mkdir(parents=True, exist_ok=True)
            locked = stack.enter_context(exclusive_lock(lock))
        except OSError as exc:
            raise InputError(f"{option} {path}: cannot lock it ({exc.strerror or exc})") from None
        if not locked:
            raise SifaError(f"{option} {path} is being written by another sifa run; wait for it to "
                            "finish or choose another name")
        yield


def writes_utf8(stream) -> bool:
    """Whether a text stream (stdout, a file) encodes as UTF-8, so any name or label fits."""
    import codecs

    try:
        return codecs.lookup(getattr(stream, "encoding", None) or "utf-8").name == "utf-8"
    except LookupError:
        return False
