"""Model registry: `create_model(name, **kw)` and `list_models(pattern)`."""

from __future__ import annotations

import fnmatch
from typing import Callable

from torch import nn

from sifa_cli.errors import ModelError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a model constructor under its function name."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a shell-style pattern (e.g. 'sifa_resnet*')."""
    _import_families()
    names = sorted(_MODELS)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    _import_families()
    if name not in _MODELS:
        close = fnmatch.filter(_MODELS, f"*{name}*") or sorted(_MODELS)
        raise ModelError(f"unknown model '{name}'; known models: {', '.join(close)}")
    return _MODELS[name]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model. Keyword arguments left as None are not passed on.

    `sifa=False` builds the model with every SIFA step switched off (the blocks become plain
    bottlenecks with unused offset convolutions): the ablation of the paper's claim. Checkpoints
    record it in their arch kwargs, so such a model loads as it was trained.
    """
    sifa = kwargs.pop("sifa", True)
    model = model_entrypoint(name)(**{k: v for k, v in kwargs.items() if v is not None})
    if not sifa:
        if not hasattr(model, "set_sifa_enabled"):
            raise ModelError(f"{name} has no SIFA steps to switch off")
        model.set_sifa_enabled(False)
    return model


def clean_reference_state_dict(state_dict: dict) -> dict:
    """A reference checkpoint's tensors in our layout: unwrap {'state_dict'|'model': ...}, strip 'module.'."""
    for wrapper in ("state_dict", "model"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}


def _import_families() -> None:
    # Importing a family module runs its @register_model decorators.
    from sifa_cli.models import sifa_resnet, sifa_swin  # noqa: F401
