"""Checking, before any work, that an output file or folder can really be created where asked.

Permission bits do not tell the whole story (root ignores them; read-only mounts, /proc and /sys
refuse files whatever they say), so the check creates and removes a hidden file in the folder the
output will land in.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from sifa_cli.errors import InputError


def _reason(exc: OSError, folder: Path) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to write in {folder}"
    if exc.errno == errno.EROFS:
        return f"{folder} is on a read-only file system"
    if exc.errno in (errno.ENOENT, errno.EINVAL, errno.EOPNOTSUPP):
        return f"{folder} does not accept new files (a virtual file system such as /proc or /sys?)"
    if exc.errno == errno.ENOSPC:
        return f"no space left in {folder}"
    return f"cannot write in {folder} ({exc.strerror or exc})"


def disk_problem(exc: OSError) -> str:
    """Why a write failed, in words: a full disk and a file size limit said plainly."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the disk"
    if exc.errno == errno.EFBIG:
        return "the file is larger than this system allows (file size limit)"
    return exc.strerror or str(exc)


def nearest_existing(path: Path) -> Path:
    """`path` itself or its closest ancestor that exists (following links)."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_writable(path: Path, option: str, *, folder: bool = False, create_parents: bool = True) -> Path:
    """Raise InputError (one line, naming `option`) unless `path` can be created or replaced.

    folder: `path` is a folder to create (or an existing one to fill). create_parents: missing
    folders on the way will be created by the command; otherwise the parent must exist.
    """
    path = Path(path).expanduser()
    try:
        if folder:
            if path.exists() and not path.is_dir():
                raise InputError(f"{option} {path}: exists and is not a folder")
        elif path.is_dir():
            raise InputError(f"{option} {path} is a folder; give a file name")
        target = Path(os.path.abspath(path if folder else path.parent))  # the folder the output goes in
        existing = nearest_existing(target)
        if not existing.is_dir():
            raise InputError(f"{option} {path}: {existing} is a file, not a folder")
        if existing != target and not create_parents:
            raise InputError(f"{option} {path}: the folder {target} does not exist")
        _probe(existing, option, path, make_folder=existing != target)
    except OSError as exc:  # a symlink loop, a folder we may not even look into, ...
        raise InputError(f"{option} {path}: {exc.strerror or exc}") from None
    return path


def _probe(folder: Path, option: str, path: Path, make_folder: bool) -> None:
    """Create and remove a hidden file (or, where folders will be made, a folder) in `folder`."""
    try:
        if make_folder:
            os.rmdir(tempfile.mkdtemp(prefix=".sifa-write-test-", dir=folder))
        else:
            fd, name = tempfile.mkstemp(prefix=".sifa-write-test-", dir=folder)
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        raise InputError(f"{option} {path}: {_reason(exc, folder)}") from None
