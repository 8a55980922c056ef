"""Where weights live on disk, and checking a file against its published hash.

The cache root is the platform cache directory (platformdirs), or $SIFA_HOME when set. Each entry
gets its own folder, `<root>/weights/<name>/<file_name>`, so two manifests may reuse a file name.

A file's full sha256 is checked every time it is used, not only after download; to keep that cheap,
the digest is remembered in a small JSON sidecar together with the file's size and mtime, and is
recomputed whenever either changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

import platformdirs

from sifa_cli.errors import WeightsError
from sifa_cli.weights.manifest import WeightsEntry

HOME_ENV = "SIFA_HOME"
_CHUNK = 1 << 20


def sifa_home() -> Path:
    override = os.environ.get(HOME_ENV)
    if override:
        home = Path(override).expanduser()
        if home.exists() and not home.is_dir():
            from sifa_cli.errors import InputError

            raise InputError(f"${HOME_ENV} is {home}, which is not a folder; point it at a folder for sifa's cache")
        return home
    return Path(platformdirs.user_cache_dir("sifa", appauthor=False))


def weights_dir() -> Path:
    return sifa_home() / "weights"


def cache_path(entry: WeightsEntry) -> Path:
    """Where a downloaded copy of `entry` belongs (it may not exist yet)."""
    return weights_dir() / entry.name / entry.file_name


def local_copy(entry: WeightsEntry) -> Optional[Path]:
    """The entry's file on this machine (shipped beside its manifest or cached), or None."""
    for path in (entry.local_path, cache_path(entry)):
        if path is not None and path.is_file():
            return path
    return None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar_path(path: Path) -> Path:
    path = path.resolve()
    if weights_dir().resolve() in path.parents:
        return path.with_name(path.name + ".sha256.json")
    # Files outside the cache (a shipped or user file) may sit in a read-only folder.
    key = hashlib.sha256(str(path).encode()).hexdigest()[:24]
    return sifa_home() / "hashes" / f"{key}.json"


def _stamp(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def file_sha256(path: Path, *, recompute: bool = False) -> str:
    """The file's sha256, reusing the sidecar's digest while size and mtime are unchanged."""
    stamp = _stamp(path)
    sidecar = _sidecar_path(path)
    if not recompute:
        try:
            remembered = json.loads(sidecar.read_text())
            if {k: remembered.get(k) for k in stamp} == stamp and len(remembered.get("sha256", "")) == 64:
                return remembered["sha256"]
        except (OSError, ValueError):
            pass
    digest = sha256_file(path)
    _write_sidecar(sidecar, {**stamp, "sha256": digest})
    return digest


def _write_sidecar(sidecar: Path, record: dict) -> None:
    try:
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        tmp = sidecar.with_name(f"{sidecar.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, sidecar)
    except OSError:
        pass  # the sidecar only saves time; without it the hash is simply recomputed next time


def remember_sha256(path: Path, digest: str) -> None:
    """Record a digest the caller just computed (after a download) so the next check is free."""
    _write_sidecar(_sidecar_path(path), {**_stamp(path), "sha256": digest})


def integrity_problem(
    path: Path, entry: WeightsEntry, *, recompute: bool = False, digest: Optional[str] = None
) -> Optional[str]:
    """None when `path` matches what `entry` publishes, else what is wrong, in words.

    `digest` is the file's sha256 when the caller already has it.
    """
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return f"size is {size} bytes, expected {entry.size}"
    if entry.sha256 or entry.sha256_prefix:
        actual = digest or file_sha256(path, recompute=recompute)
        if entry.sha256 and actual != entry.sha256:
            return f"sha256 is {actual}, expected {entry.sha256}"
        if entry.sha256_prefix and not actual.startswith(entry.sha256_prefix):
            return f"sha256 is {actual}, expected it to start with {entry.sha256_prefix}"
    return None


def check_file(path: Path, entry: WeightsEntry, *, recompute: bool = False, remove_bad: bool = False) -> Path:
    """Raise WeightsError unless `path` matches `entry`; a bad file in the cache can be deleted."""
    problem = integrity_problem(path, entry, recompute=recompute)
    if problem is None:
        return path
    removed = ""
    if remove_bad:
        remove_cached(path)
        removed = "; the bad file was removed, download it again"
    raise WeightsError(f"{path} does not match weights '{entry.name}': {problem}{removed}")


def remove_cached(path: Path) -> list[Path]:
    """Delete a cached file, its hash sidecar and any partial download; returns what was deleted.

    The lock file stays: deleting it while another process holds it would let a third one in.
    """
    removed = []
    for candidate in (path, path.with_name(path.name + ".sha256.json"), partial_path(path)):
        try:
            candidate.unlink()
            removed.append(candidate)
        except FileNotFoundError:
            pass
    return removed


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")
