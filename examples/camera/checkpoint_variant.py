"""What the scripts that make a variant of a motion checkpoint share (add_motion_head.py,
add_layer1_sifa.py, widen_window.py): read it, build the model with changed options, and write the
result with its input, classes and a line saying how it was made."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from sifa_cli.models import create_model  # noqa: E402
from sifa_cli.weights.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402


def read_variant(source: str, **changes):
    """(state, meta, arch_kwargs, model): the checkpoint's tensors and metadata, its architecture options
    with `changes` applied, and an untrained model built with them (load the tensors into it)."""
    state, meta = load_checkpoint(source)
    arch_kwargs = {**meta.get("arch_kwargs", {}), **changes}
    model = create_model(meta["arch"], num_classes=len(meta["categories"]), **arch_kwargs)
    return dict(state), meta, arch_kwargs, model


def write_variant(out: str, model, meta: dict, arch_kwargs: dict, source: str, how: str, script: str) -> None:
    """Save `model` with the source checkpoint's architecture, classes and input, the new options, and
    "SOURCE's file name HOW by examples/camera/SCRIPT" as its source."""
    out_meta = {key: meta[key] for key in ("arch", "categories", "input") if key in meta}
    out_meta.update(arch_kwargs=arch_kwargs, source=f"{Path(source).name} {how} by examples/camera/{script}")
    save_checkpoint(out, model, out_meta)
