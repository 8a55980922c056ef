"""Which earlier results still describe the file at their path: a result records the video's size and
modification time (nanoseconds), and a re-run scores a video again when either has changed."""

from __future__ import annotations

import os
from typing import Any


def file_identity(path: str | os.PathLike) -> dict[str, int]:
    """{"size", "mtime_ns"} of the file at `path` (following links), or {} when it cannot be read."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return {}
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def still_current(record: dict[str, Any]) -> bool:
    """False when the record's video was replaced or changed since the record was written. Records
    from before identities were kept, and those of files now gone, stay (nothing is thrown away)."""
    recorded = {key: record.get(key) for key in ("size", "mtime_ns") if record.get(key) not in (None, "")}
    if not recorded:
        return True
    now = file_identity(record["path"])
    if not now:
        return True
    return all(str(now[key]) == str(value) for key, value in recorded.items())
