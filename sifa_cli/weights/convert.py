"""Importing reference SIFA checkpoints (R50, R101, Swin) into self-contained sifa checkpoints.

The reference code saves a bare state dict, possibly wrapped in {"state_dict": ...} or
{"model": ...} and prefixed with "module." by DataParallel; our models use the reference key names,
so after unwrapping, the tensors load with strict key matching. What a `.pth` file lacks is
everything else a checkpoint of ours carries: the architecture, labels and input spec.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from sifa_cli.errors import InputError, WeightsError
from sifa_cli.weights.cache import sha256_file
from sifa_cli.weights.checkpoint import (
    StateDict,
    build_model,
    broken_safetensors,
    is_safetensors_file,
    load_torch_state_dict,
    read_checkpoint_meta,
    save_checkpoint,
)

# The reference layout names the classifier of both families `fc`.
HEAD_KEY = "fc.weight"
# `def_cor.weight` is C,T,K,K with T the temporal length inside the block; the stem (SIFA-Net) and
# the tubelet embedding (SIFA-Transformer) both divide the clip length by 4 before the first one.
_CORRELATION_SUFFIX = "def_cor.weight"
_FRAMES_PER_STEP = 4


# Reference-layout variants of our constructors: the reference SIFA-Transformer keeps its offsets
# fixed at zero, so its files lack the `conv_offset` tensors our default (learned offsets) adds.
_REFERENCE_VARIANTS: tuple[dict[str, Any], ...] = ({}, {"learn_offsets": False})


def guess_arch(state: StateDict) -> list[str]:
    """Registered architectures whose state dict has exactly these keys and shapes."""
    from sifa_cli.models import list_models

    return [name for name in list_models() if fitting_arch_kwargs(name, state) is not None]


def fitting_arch_kwargs(arch: str, state: StateDict) -> Optional[dict[str, Any]]:
    """The constructor arguments under which `arch` has exactly the keys and shapes of `state`, if any."""
    head = state.get(HEAD_KEY)
    if head is None or head.dim() != 2:
        return None
    for kwargs in _REFERENCE_VARIANTS:
        expected = _state_shapes(arch, int(head.shape[0]), tuple(sorted(kwargs.items())))
        if expected is not None and expected.keys() == state.keys() and all(
            _same_shape(key, shape, tuple(state[key].shape)) for key, shape in expected.items()
        ):
            return kwargs
    return None


@functools.lru_cache(maxsize=64)
def _state_shapes(arch: str, num_classes: int, kwargs: tuple) -> Optional[dict[str, tuple[int, ...]]]:
    """Key -> shape of `arch`'s state dict; None when the family takes no such arguments."""
    from sifa_cli.models import create_model

    try:
        with torch.device("meta"):  # shapes only: no memory, no init time, even for Swin-L
            model = create_model(arch, num_classes=num_classes, **dict(kwargs))
    except TypeError:
        return None
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _same_shape(key: str, expected: tuple[int, ...], actual: tuple[int, ...]) -> bool:
    if key.endswith(_CORRELATION_SUFFIX):  # its T follows the clip length, which may differ
        return len(expected) == len(actual) == 4 and (expected[0], expected[2:]) == (actual[0], actual[2:])
    return expected == actual


def reference_clip_length(state: StateDict) -> Optional[int]:
    """The clip length a reference checkpoint was built for, read off its first def_cor.weight."""
    for key, value in state.items():
        if key.endswith(_CORRELATION_SUFFIX) and value.dim() == 4:
            return int(value.shape[1]) * _FRAMES_PER_STEP
    return None


def numbered_categories(count: int) -> list[str]:
    return [f"class_{i}" for i in range(count)]


def read_labels(path: Union[str, Path]) -> list[str]:
    """One label per line; blank lines are skipped, repeated labels refused."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read labels file {path}: {exc}") from None
    labels = [line.strip() for line in lines if line.strip()]
    if not labels:
        raise InputError(f"labels file {path} is empty")
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise InputError(f"labels file {path} lists '{label}' twice")
        seen.add(label)
    return labels


def reference_meta(state: StateDict, arch: Optional[str], *, categories: Optional[Sequence[str]] = None,
                   frames: Optional[int] = None, source: str, license: str = "") -> dict[str, Any]:
    """Checkpoint metadata for reference tensors; `arch=None` recognises the architecture."""
    from sifa_cli.data.spec import InputSpec

    head = state.get(HEAD_KEY)
    if head is None or head.dim() != 2:
        raise WeightsError(f"{source} has no classifier '{HEAD_KEY}': it is not a reference SIFA checkpoint")
    num_classes = int(head.shape[0])
    if arch is None:
        guesses = guess_arch(state)
        if len(guesses) != 1:
            found = f"it fits {', '.join(guesses)}" if guesses else "its tensors fit no known architecture"
            raise WeightsError(f"cannot tell which architecture {source} is for ({found}); "
                               "convert it with `sifa weights import FILE --arch NAME`")
        arch = guesses[0]
    if categories is None:
        categories = numbered_categories(num_classes)
    elif len(categories) != num_classes:
        raise InputError(f"the labels file has {len(categories)} labels but {source} has {num_classes} classes")
    frames = frames or reference_clip_length(state) or InputSpec().frames
    return {
        "arch": arch,
        "arch_kwargs": {"clip_length": frames, **(fitting_arch_kwargs(arch, state) or {})},
        "categories": list(categories),
        "input": InputSpec(frames=frames).to_meta(),
        "source": source,
        "license": license or "unknown: set by whoever trained the reference checkpoint",
        "training": {},
        "metrics": {},
    }


def import_reference_checkpoint(src: Union[str, Path], arch: str, out: Union[str, Path], *,
                                labels: Union[str, Path, None] = None, frames: Optional[int] = None,
                                license: str = "") -> dict[str, Any]:
    """Convert a reference SIFA `.pth` into a sifa checkpoint at `out`; returns its metadata.

    The tensors are loaded into a freshly built `arch` with strict key matching first, so a file of
    another architecture is refused, and the saved state is the model's (constant buffers such as
    `def_cor.weight` regenerated for the chosen clip length).
    """
    src, out = Path(src), Path(out)
    if src.resolve() == out.resolve():
        raise InputError("--out must differ from the file being imported")
    if is_safetensors_file(src) and not broken_safetensors(src):
        raise InputError(f"{src} is already a safetensors checkpoint, not a reference .pth; use it directly "
                         "(`sifa predict -w FILE`, `sifa weights info FILE`)")
    state = load_torch_state_dict(src)
    categories = read_labels(labels) if labels is not None else None
    meta = reference_meta(state, arch, categories=categories, frames=frames, license=license,
                          source=f"imported from reference checkpoint {src.name}")
    meta["training"] = {"imported_from": src.name, "imported_sha256": sha256_file(src)}
    model = build_model(state, meta, str(src))
    return read_checkpoint_meta(save_checkpoint(out, model, meta))
