"""Turn the paths, folders and glob patterns a user typed into a list of video files, and tell a
stream (camera:N, a stream URL) from them: engine/live.py reads streams."""

from __future__ import annotations

import errno
import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from sifa_cli.data.decode import VIDEO_EXTENSIONS
from sifa_cli.errors import InputError

_GLOB_CHARS = set("*?[")


@dataclass
class FoundInputs:
    """Video files in the order given (folders sorted, duplicates dropped) and, per argument
    that yielded nothing, the reason."""

    videos: list[Path] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (argument, one-line reason)


def is_video_name(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def find_videos(arguments: Iterable[str | Path]) -> FoundInputs:
    """Files are taken as they are (whatever their extension: decoding decides); folders are
    searched recursively for video extensions; patterns are expanded (** allowed)."""
    found = FoundInputs()
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.videos.append(path)

    for argument in arguments:
        text = str(argument)
        path = Path(text).expanduser()
        problem = _unreachable(text, path)
        if problem is not None and not _has_glob_chars(text):
            found.problems.append((text, problem))
        elif path.is_file():
            add(path)
        elif path.is_dir():
            videos, unreadable = _folder_videos(path)
            found.problems += [(text, f"{folder}: cannot read this folder ({why}); its videos were left out")
                               for folder, why in unreadable]
            if not videos and not unreadable:
                extensions = ", ".join(sorted(VIDEO_EXTENSIONS))
                found.problems.append((text, f"{text}: no video files in this folder (looked for {extensions})"))
            for video in videos:
                add(video)
        elif _GLOB_CHARS & set(text):
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            files = [m for m in matches if m.is_file() and (is_video_name(m) or _pattern_names_suffix(text))]
            if not files:
                found.problems.append((text, f"{text}: no video files match this pattern"))
            for match in files:
                add(match)
        elif path.exists():
            found.problems.append((text, f"{text}: not a regular file or folder"))
        else:
            found.problems.append((text, f"{text}: no such file or folder"))
    return found


def _has_glob_chars(text: str) -> bool:
    return bool(_GLOB_CHARS & set(text))


def _unreachable(text: str, path: Path) -> str | None:
    """Why `path` cannot even be looked at (a link loop, a folder on the way we may not search), or
    None when it can, or simply does not exist."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{text}: symbolic link loop (the link leads back to itself)"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return f"{text}: permission denied (a folder on the way cannot be searched)"
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return f"{text}: broken symbolic link (it points to {os.readlink(path)}, which does not exist)"
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            return f"{text}: {exc.strerror or exc}"
    return None


def _folder_videos(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Video files under `root` (sorted), and the folders that could not be read, with why."""
    unreadable: list[tuple[str, str]] = []

    def note(exc: OSError) -> None:
        unreadable.append((exc.filename or str(root), exc.strerror or str(exc)))

    videos = []
    for folder, _, names in os.walk(root, onerror=note):
        for name in names:
            candidate = Path(folder) / name
            if is_video_name(candidate) and candidate.is_file():
                videos.append(candidate)
    return sorted(videos), unreadable


def _pattern_names_suffix(pattern: str) -> bool:
    """A pattern such as *.dat chooses its own extension; *, ** or dir/* keep to video names."""
    name = Path(pattern).name
    return "." in name and not name.endswith(".*")


STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "mms", "rtp")
CAMERA_PREFIX = "camera:"
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


@dataclass(frozen=True)
class StreamSource:
    """Where frames come from: `camera` (a device index) or `url`. `text` is what the user typed."""

    text: str
    camera: Optional[int] = None
    url: Optional[str] = None

    def __str__(self) -> str:
        return self.text


def parse_source(text: str) -> Optional[StreamSource]:
    """camera:N, or a URL whose scheme names a stream protocol; None for anything else (a path)."""
    text = str(text).strip()
    if text.lower().startswith(CAMERA_PREFIX):
        index = text[len(CAMERA_PREFIX):]
        if not index.isdigit():
            raise InputError(f"{text}: a camera is camera:N with N the device number, e.g. camera:0")
        return StreamSource(text, camera=int(index))
    match = _URL.match(text)
    if match is None:
        return None
    if match.group(1).lower() not in STREAM_SCHEMES:
        raise InputError(f"{text}: unsupported stream scheme {match.group(1)!r}; use one of "
                         + ", ".join(f"{s}://" for s in STREAM_SCHEMES) + " or camera:N")
    return StreamSource(text, url=text)
