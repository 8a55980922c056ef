"""A real, small file system for disk-full tests: a tmpfs of a few MiB mounted for the test (needs
root and a kernel that allows it); the test is skipped where it cannot be mounted."""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


@contextmanager
def small_disk(folder: Path, size: str = "1M") -> Iterator[Path]:
    """`folder` as a mounted tmpfs of `size` (e.g. "1M", "16M"); unmounted afterwards."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("disk-full tests mount a small tmpfs, which needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path, leave: int = 0) -> None:
    """Fill the file system of `folder` until at most `leave` bytes are free."""
    free = shutil.disk_usage(folder).free - leave
    with open(Path(folder) / "filler", "wb") as handle:
        try:
            while free > 0:
                written = handle.write(b"\0" * min(free, 1 << 20))
                handle.flush()
                free -= written
        except OSError:
            pass
