"""Checking weights end to end for `sifa weights verify` and `info`: hash, then readable content."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import torch

from sifa_cli.errors import WeightsError
from sifa_cli.weights.cache import cache_path, check_file, file_sha256, local_copy
from sifa_cli.weights.checkpoint import (
    DIGEST_KEY,
    is_safetensors_file,
    load_checkpoint,
    load_torch_state_dict,
    weights_target,
)
from sifa_cli.weights.manifest import WeightsEntry, load_registry


@dataclass
class FileReport:
    """What a weights file holds: a sifa checkpoint (with metadata) or a PyTorch state dict."""

    path: Path
    sha256: str
    kind: str
    tensors: int
    parameters: int
    meta: Optional[dict[str, Any]] = None
    arch_guesses: list[str] = field(default_factory=list)
    entry: Optional[WeightsEntry] = None

    @property
    def digest_checked(self) -> bool:
        """The tensors matched the checksum the checkpoint recorded (older files have none)."""
        return bool(self.meta and DIGEST_KEY in self.meta)


def inspect_file(path: Union[str, Path], *, recompute: bool = False) -> FileReport:
    """Read every tensor of `path` safely and describe it; raises WeightsError when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if is_safetensors_file(path):
        state, meta = load_checkpoint(path)  # checks the recorded tensor checksum, when there is one
        kind = "sifa checkpoint (safetensors)"
        guesses: list[str] = []
    else:
        from sifa_cli.weights.convert import guess_arch

        state, meta = load_torch_state_dict(path), None
        kind = "PyTorch state dict (.pth, loaded with weights_only=True)"
        guesses = guess_arch(state)
    for key, tensor in state.items():  # what a file without a checksum can still be checked for
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"{path}: tensor {key} holds NaN or infinite values; the file is damaged")
    return FileReport(
        path=path,
        sha256=file_sha256(path, recompute=recompute),
        kind=kind,
        tensors=len(state),
        parameters=sum(t.numel() for t in state.values()),
        meta=meta,
        arch_guesses=guesses,
    )


def verify(target: Union[str, Path], *, manifests: Iterable[Union[str, Path]] = ()) -> FileReport:
    """Recompute the full hash of a registry entry's local copy (or any file) and read it safely.

    A cached copy that does not match its manifest entry is removed.
    """
    entry = weights_target(target, load_registry(manifests))
    if isinstance(entry, Path):
        return inspect_file(entry, recompute=True)
    path = local_copy(entry)
    if path is None:
        raise WeightsError(f"weights '{entry.name}' are not downloaded; run `sifa weights download {entry.name}`")
    check_file(path, entry, recompute=True, remove_bad=path == cache_path(entry))
    report = inspect_file(path)
    report.entry = entry
    return report
