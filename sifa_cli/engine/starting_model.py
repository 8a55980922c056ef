"""The model `sifa finetune` starts from: the architecture and input spec an `--init` fixes, and the
model built with weights from scratch, ImageNet (inflated to video), or a checkpoint (registry name
or file) whose classifier is kept or re-initialised for the data set's classes.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from sifa_cli.data.spec import InputSpec
from sifa_cli.engine.train_config import TrainConfig
from sifa_cli.errors import InputError
from sifa_cli.models import create_model

Log = Callable[[str], None]


@dataclass
class StartingPoint:
    model: nn.Module
    arch: str
    arch_kwargs: dict
    description: str  # what the weights started from, for the checkpoint's "source"
    # the SIFA block the init checkpoint names as carrying the motion (`sifa visualize` shows it by default);
    # kept for the fine-tuned model, whose blocks start from the same weights
    motion_block: str | None = None


def checkpoint_arch_kwargs(arch: str, base: dict, frames: int, size: int) -> dict:
    """create_model arguments besides num_classes: the clip length, and the image size for models
    whose layout depends on it (SIFA-Transformer's attention windows)."""
    kwargs = {**base, "clip_length": frames}
    with torch.device("meta"):  # costs no memory: only the class is wanted
        model_class = type(create_model(arch, num_classes=1, **kwargs))
    if "img_size" in inspect.signature(model_class.__init__).parameters:
        kwargs["img_size"] = size
    return kwargs


def locate_init(init: str) -> tuple[Optional[Any], Optional[Path]]:
    """(registry entry or None, local file or None) for an --init value; a classifier entry's file
    is fetched, an ImageNet entry's is left to `load_init_state_dict`."""
    from sifa_cli.weights.checkpoint import weights_target
    from sifa_cli.weights.download import fetch
    from sifa_cli.weights.manifest import KIND_INIT, load_registry

    target = weights_target(init, load_registry())
    if isinstance(target, Path):
        return None, target
    return target, (None if target.kind == KIND_INIT else fetch(target))


def read_init_checkpoint(path: Path, arch: Optional[str]) -> tuple[dict, dict]:
    """(state dict, metadata) of a starting checkpoint: ours (safetensors) or a reference .pth."""
    from sifa_cli.weights.checkpoint import is_safetensors_file, load_checkpoint, load_torch_state_dict
    from sifa_cli.weights.convert import reference_meta

    if is_safetensors_file(path):
        return load_checkpoint(path)
    state = load_torch_state_dict(path)
    return state, reference_meta(state, arch=arch, source=f"reference checkpoint {path.name}")


def default_init(model: Optional[str], log: Log) -> str:
    """--init left unset: start from the shipped default model (motion-pretrained: its backbone
    is kept, its classifier re-initialised for the dataset's classes) when --model is unset or the
    same architecture; otherwise from scratch, and say so."""
    from sifa_cli.weights.manifest import load_registry

    registry = load_registry()
    if registry.default is None:
        return "scratch"
    entry = registry.default_entry()
    if model is None or model == entry.arch:
        return entry.name
    log(f"--model {model} differs from the default model's {entry.arch}: training from scratch "
        f"(--init NAME|FILE to start from other weights)")
    return "scratch"


def init_arch_and_input(init: str) -> tuple[Optional[str], dict]:
    """The architecture a starting point fixes (None for scratch/imagenet) and the input spec it
    was trained with ({} when unknown)."""
    if init in ("scratch", "imagenet"):
        return None, {}
    from sifa_cli.weights.checkpoint import is_safetensors_file, read_checkpoint_meta
    from sifa_cli.weights.manifest import KIND_INIT

    entry, path = locate_init(init)
    if entry is not None:
        return entry.arch, ({} if entry.kind == KIND_INIT else dict(entry.input))
    if is_safetensors_file(path):
        meta = read_checkpoint_meta(path)
        return meta["arch"], dict(meta.get("input") or {})
    _, meta = read_init_checkpoint(path, None)
    return meta["arch"], {}


def build_starting_model(config: TrainConfig, categories: list[str], spec: InputSpec, log: Log) -> StartingPoint:
    """The model to fine-tune, with weights from scratch, ImageNet (inflated), or a checkpoint whose
    classifier is kept when its categories are ours and re-initialised otherwise."""
    from sifa_cli.models.inflate import load_imagenet_weights
    from sifa_cli.weights.checkpoint import load_init_state_dict, load_strict
    from sifa_cli.weights.manifest import KIND_INIT, load_registry

    arch = config.model
    sifa_off = {} if config.sifa else {"sifa": False}
    kwargs = checkpoint_arch_kwargs(arch, sifa_off, spec.frames, spec.size)
    num_classes = len(categories)
    if config.init == "scratch":
        return StartingPoint(create_model(arch, num_classes=num_classes, **kwargs), arch, kwargs, "random initialisation")

    init_name = config.init
    if init_name == "imagenet":
        matches = [e.name for e in load_registry() if e.kind == KIND_INIT and e.arch == arch]
        if not matches:
            raise InputError(f"--init imagenet: no ImageNet initialisation is registered for {arch}; "
                             "see `sifa weights list`")
        init_name = matches[0]
    entry, path = locate_init(init_name)
    if entry is not None and entry.kind == KIND_INIT:
        image_state, entry = load_init_state_dict(init_name)
        model = create_model(arch, num_classes=num_classes, **kwargs)
        fresh = load_imagenet_weights(model, image_state)
        log(f"initialised from ImageNet weights '{entry.name}' (inflated; {len(fresh)} tensors keep their fresh init)")
        return StartingPoint(model, arch, kwargs, f"ImageNet weights '{entry.name}'")

    state, meta = read_init_checkpoint(path, arch)
    if meta["arch"] != arch:
        raise InputError(f"--init {config.init} holds a {meta['arch']} model, not --model {arch}")
    recorded = {k: v for k, v in dict(meta.get("arch_kwargs") or {}).items() if k != "sifa"}
    kwargs = checkpoint_arch_kwargs(arch, {**recorded, **sifa_off}, spec.frames, spec.size)
    model = create_model(arch, num_classes=len(meta["categories"]), **kwargs)
    load_strict(model, state, str(path), arch)
    what = f"'{entry.name}'" if entry is not None else str(path)
    if list(meta["categories"]) != list(categories):
        model.reset_classifier(num_classes)
        log(f"initialised from {what}; its {len(meta['categories'])} classes are not the dataset's "
            f"{num_classes}, so the classifier starts afresh")
    else:
        log(f"initialised from {what} (same classes: the classifier is kept)")
    block = meta.get("motion_block")
    sifa_blocks = dict(model.sifa_blocks()) if hasattr(model, "sifa_blocks") else {}
    motion_block = block if config.sifa and isinstance(block, str) and block in sifa_blocks else None
    return StartingPoint(model, arch, kwargs, f"checkpoint {what}", motion_block)
