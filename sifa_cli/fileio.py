"""Writing files so that a reader, or a process killed mid-write, never leaves half a file behind."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_write_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers pick the right format).

    When the block finishes, the file replaces `path` in one rename; when it raises, the temporary
    file is removed. Names start with '.' and contain '.tmp', so a cleaner can find leftovers.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
