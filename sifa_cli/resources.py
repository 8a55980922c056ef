"""Where the files that ship with sifa live: `weights/` (manifest, default model) and `examples/`.

Installed from a wheel or editable, they are the packages `sifa_cli.shipped` and `sifa_cli.examples`
(pyproject.toml maps the top-level folders onto those names). Run from a source checkout
(`python -m pytest`, `python -m sifa_cli.cli.main`), Python imports the `sifa_cli/` folder itself,
where those packages do not exist: then they are the top-level folders beside it. One rule for all three.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _folder(package: str, source_folder: str) -> Path:
    try:
        return Path(str(resources.files(package)))
    except ModuleNotFoundError:
        return _SOURCE_ROOT / source_folder


def shipped_dir() -> Path:
    """The folder holding `manifest.json` and the shipped default model."""
    return _folder("sifa_cli.shipped", "weights")


def examples_dir() -> Path:
    """The folder holding the example clip(s)."""
    return _folder("sifa_cli.examples", "examples")
