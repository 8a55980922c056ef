"""The weights registry: named entries read from the shipped manifest plus any user manifests.

A manifest is a JSON file (format "sifa-manifest/1") mapping names to entries that say what a file
is (architecture, its arguments, categories, input spec), where to get it (URLs), how to check it
(sha256, or only the hash prefix a publisher embeds in its file names, and size), and where it came
from (source, licence, how it was made and evaluated). The shipped manifest is `weights/manifest.json`
(installed as package `sifa_cli.shipped`); a team adds its own with `SIFA_MANIFEST=a.json:b.json` or an
explicit path, so a weights server needs nothing more than a JSON file next to its files.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional
from urllib.parse import urlsplit

from sifa_cli.errors import WeightsError
from sifa_cli.resources import shipped_dir
from sifa_cli.wording import form

MANIFEST_FORMAT = "sifa-manifest/1"
MANIFEST_ENV = "SIFA_MANIFEST"

# A video classifier our `load_model` builds, versus an ImageNet initialisation that fine-tuning
# inflates into a SIFA model (its head and layout belong to a 2-D network).
KIND_CLASSIFIER = "classifier"
KIND_INIT = "init"
KINDS = (KIND_CLASSIFIER, KIND_INIT)

_ENTRY_KEYS = {
    "kind", "arch", "arch_kwargs", "categories", "input", "file_name", "path", "urls", "sha256",
    "sha256_prefix", "size", "format", "num_params", "source", "license", "made", "evaluation", "notes",
}
_REQUIRED_KEYS = ("arch", "file_name")
# Every field's JSON type (urls, categories, the hashes and size are checked on their own below).
_FIELD_TYPES = {
    "kind": (str, "a string"), "arch": (str, "a string"), "file_name": (str, "a string"),
    "path": (str, "a string"), "format": (str, "a string"), "source": (str, "a string"),
    "license": (str, "a string"), "made": (str, "a string"), "notes": (str, "a string"),
    "arch_kwargs": (dict, "an object"), "input": (dict, "an object"), "evaluation": (dict, "an object"),
    "num_params": (int, "a whole number"), "size": (int, "a byte count"),
}
_NAME = re.compile(r"[A-Za-z0-9._-]+")
URL_SCHEMES = ("http", "https", "file")


@dataclass(frozen=True)
class WeightsEntry:
    """One named weights file and everything known about it."""

    name: str
    arch: str
    file_name: str
    kind: str = KIND_CLASSIFIER
    urls: tuple[str, ...] = ()
    # A local copy beside the manifest that declared it (the shipped default model lives there).
    local_path: Optional[Path] = None
    sha256: Optional[str] = None
    # Only the leading hex digits are published for some files (torchvision names embed them).
    sha256_prefix: Optional[str] = None
    size: Optional[int] = None
    format: str = "safetensors"
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    categories: Optional[tuple[str, ...]] = None
    input: Mapping[str, Any] = field(default_factory=dict)
    num_params: Optional[int] = None
    source: str = ""
    license: str = ""
    made: str = ""
    evaluation: Mapping[str, Any] = field(default_factory=dict)
    notes: str = ""
    manifest: Optional[Path] = None

    @property
    def check(self) -> str:
        """How this file is checked, in a word or two."""
        if self.sha256:
            return "sha256"
        if self.sha256_prefix:
            return "sha256 prefix"
        return "size" if self.size is not None else "none"

    @property
    def integrity(self) -> str:
        """How this file is checked, in words (shown by `sifa weights info`)."""
        return {
            "sha256": "full sha256",
            "sha256 prefix": f"sha256 prefix {self.sha256_prefix} only (no full hash published)",
            "size": "size only (no hash published)",
            "none": "nothing (no hash or size published)",
        }[self.check]


@dataclass
class WeightsRegistry:
    """All entries from every manifest read, and the default entry's name (if any)."""

    entries: dict[str, WeightsEntry]
    default: Optional[str]
    manifests: list[Path]

    def get(self, name: str) -> WeightsEntry:
        try:
            return self.entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.entries), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else " (see `sifa weights list`)"
            raise WeightsError(f"unknown weights name '{name}'{hint}") from None

    def default_entry(self) -> WeightsEntry:
        if self.default is None:
            raise WeightsError("no default weights are installed; pass --weights NAME or FILE")
        return self.get(self.default)

    def __iter__(self):
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)


def shipped_manifest_path() -> Path:
    return shipped_dir() / "manifest.json"


def manifest_paths(extra: Iterable[os.PathLike | str] = ()) -> list[Path]:
    """The shipped manifest, then those named in $SIFA_MANIFEST, then `extra`, without repeats."""
    env = os.environ.get(MANIFEST_ENV, "")
    candidates = [shipped_manifest_path()]
    candidates += [Path(p) for p in env.split(os.pathsep) if p.strip()]
    candidates += [Path(p) for p in extra]
    seen: set[Path] = set()
    paths = []
    for path in candidates:
        key = path.expanduser().resolve()
        if key not in seen:
            seen.add(key)
            paths.append(path.expanduser())
    return paths


def load_registry(extra: Iterable[os.PathLike | str] = ()) -> WeightsRegistry:
    """Read every manifest; a later manifest may set the default but may not redefine a name."""
    entries: dict[str, WeightsEntry] = {}
    default = None
    paths = manifest_paths(extra)
    for path in paths:
        shipped = path == paths[0]
        if shipped and not path.is_file():
            continue  # a source tree without a manifest yet: nothing shipped
        doc = _read_manifest_json(path)
        for name, raw in doc.get("weights", {}).items():
            if name in entries:
                raise WeightsError(
                    f"weights name '{name}' is declared twice: in {entries[name].manifest} and in {path}"
                )
            entries[name] = parse_entry(name, raw, path)
        if doc.get("default") is not None:
            default = doc["default"]
    if default is not None and default not in entries:
        raise WeightsError(f"the default weights '{default}' have no entry in any manifest")
    return WeightsRegistry(entries=entries, default=default, manifests=paths)


def _read_manifest_json(path: Path) -> dict:
    if not path.is_file():
        raise WeightsError(f"manifest not found: {path} (from ${MANIFEST_ENV} or --manifest)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise WeightsError(f"cannot read manifest {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise WeightsError(f"manifest {path} is not valid JSON: line {exc.lineno}: {exc.msg}") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise WeightsError(f"manifest {path} must be a JSON object with \"format\": \"{MANIFEST_FORMAT}\"")
    if not isinstance(doc.get("weights", {}), dict):
        raise WeightsError(f"manifest {path}: \"weights\" must map names to entries")
    return doc


def parse_entry(name: str, raw: Any, manifest: Path) -> WeightsEntry:
    """Validate one manifest entry; every problem names the manifest and the entry."""
    where = f"manifest {manifest}, entry '{name}'"
    if not _NAME.fullmatch(name) or name in (".", ".."):
        # The name becomes a cache folder, so it must not be able to point outside the cache.
        raise WeightsError(f"{where}: names may use only letters, digits, '.', '_' and '-'")
    if not isinstance(raw, dict):
        raise WeightsError(f"{where}: an entry must be a JSON object")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise WeightsError(f"{where}: unknown {form(len(unknown), 'field')} {', '.join(unknown)}")
    missing = [key for key in _REQUIRED_KEYS if not raw.get(key)]
    if missing:
        raise WeightsError(f"{where}: missing {form(len(missing), 'field')} {', '.join(missing)}")
    for key, (kind, what) in _FIELD_TYPES.items():
        value = raw.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise WeightsError(f"{where}: {key} must be {what}, not {type(value).__name__} {value!r:.60}")
    kind = raw.get("kind", KIND_CLASSIFIER)
    if kind not in KINDS:
        raise WeightsError(f"{where}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    file_name = raw["file_name"]
    if not isinstance(file_name, str) or not _NAME.fullmatch(file_name) or file_name in (".", ".."):
        raise WeightsError(f"{where}: file_name must be a bare file name (letters, digits, '.', '_', '-'), "
                           f"not {file_name!r}")
    urls = raw.get("urls", [])
    if isinstance(urls, str) or not all(isinstance(u, str) for u in urls):
        raise WeightsError(f"{where}: urls must be a list of strings")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme.lower() not in URL_SCHEMES or (parts.scheme.lower() != "file" and not parts.hostname):
            raise WeightsError(f"{where}: {url!r} is not a URL (expected http://HOST/..., https://HOST/... or file:///...)")
    local_path = (manifest.parent / raw["path"]) if raw.get("path") else None
    if not urls and local_path is None:
        raise WeightsError(f"{where}: give urls to download from, or a path beside the manifest")
    sha256 = _hex_or_none(raw.get("sha256"), where, "sha256", exact_length=64)
    prefix = _hex_or_none(raw.get("sha256_prefix"), where, "sha256_prefix")
    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or size < 0):
        raise WeightsError(f"{where}: size must be a byte count")
    categories = raw.get("categories")
    if categories is not None:
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            raise WeightsError(f"{where}: categories must be a list of strings")
        categories = tuple(categories)
    return WeightsEntry(
        name=name,
        kind=kind,
        arch=raw["arch"],
        file_name=file_name,
        urls=tuple(urls),
        local_path=local_path,
        sha256=sha256,
        sha256_prefix=prefix,
        size=size,
        format=raw.get("format", "safetensors"),
        arch_kwargs=dict(raw.get("arch_kwargs") or {}),
        categories=categories,
        input=dict(raw.get("input") or {}),
        num_params=raw.get("num_params"),
        source=raw.get("source", ""),
        license=raw.get("license", ""),
        made=raw.get("made", ""),
        evaluation=dict(raw.get("evaluation") or {}),
        notes=raw.get("notes", ""),
        manifest=manifest,
    )


def _hex_or_none(value: Any, where: str, key: str, exact_length: Optional[int] = None) -> Optional[str]:
    if value is None:
        return None
    text = str(value).lower()
    valid = bool(text) and all(c in "0123456789abcdef" for c in text)
    if not valid or (exact_length is not None and len(text) != exact_length):
        length = f"{exact_length} " if exact_length else ""
        raise WeightsError(f"{where}: {key} must be {length}hex digits or null")
    return text
