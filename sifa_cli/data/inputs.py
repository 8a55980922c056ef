"""Turn the paths, folders and glob patterns a user typed into a list of video files."""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from sifa_cli.data.decode import VIDEO_EXTENSIONS

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
        if path.is_file():
            add(path)
        elif path.is_dir():
            videos = sorted(p for p in path.rglob("*") if p.is_file() and is_video_name(p))
            if not videos:
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


def _pattern_names_suffix(pattern: str) -> bool:
    """A pattern such as *.dat chooses its own extension; *, ** or dir/* keep to video names."""
    name = Path(pattern).name
    return "." in name and not name.endswith(".*")
