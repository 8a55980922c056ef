"""`sifa predict --backend onnxruntime`: the model exported to ONNX and run by onnxruntime on the CPU.

On this project's busy 2-core CPU onnxruntime ran the earlier default model faster than PyTorch
(measure with benchmarks/bench_export.py). The export takes seconds to a minute, so it is done once
per model and kept in the cache ($SIFA_HOME/onnx/), named by a hash of the weights, the input spec
and the torch/sifa versions; every export is checked against PyTorch before it is kept.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch
from torch import Tensor, nn

from sifa_cli.engine.export import (
    META_KEY,
    export_meta,
    export_model,
    onnx_session,
    require_onnx_packages,
    run_onnx,
)
from sifa_cli.weights.cache import sifa_home


class OnnxRuntimeModel(nn.Module):
    """An exported model behind the nn.Module call interface: clips (torch, CPU) in, logits out."""

    def __init__(self, path: Path, threads: Optional[int] = None):
        super().__init__()
        self.path = Path(path)
        self.session = onnx_session(self.path, threads=threads or torch.get_num_threads())

    def forward(self, x: Tensor):
        outputs = run_onnx(self.session, x)
        return outputs if len(outputs) > 1 else outputs[0]


def cached_onnx_path(model: nn.Module, meta: Mapping[str, Any]) -> Path:
    from sifa_cli import __version__

    digest = hashlib.sha256()
    digest.update(f"{torch.__version__} {__version__} {export_meta(meta)}".encode())
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return sifa_home() / "onnx" / f"{meta.get('arch', 'model')}-{digest.hexdigest()[:16]}.onnx"


def onnxruntime_model(model: nn.Module, meta: Mapping[str, Any],
                      note: Callable[[str], None] = lambda message: None) -> OnnxRuntimeModel:
    """`model` exported to ONNX (once; cached) and loaded into onnxruntime."""
    require_onnx_packages("--backend onnxruntime")
    path = cached_onnx_path(model, meta)
    if path.exists():
        try:
            loaded = OnnxRuntimeModel(path)
            stored = loaded.session.get_modelmeta().custom_metadata_map.get(META_KEY)
            if stored == export_meta(meta):
                return loaded
            problem = "it holds another model"
        except Exception as exc:  # onnxruntime's own error types: a truncated or overwritten file
            text = str(exc).strip()
            problem = text.splitlines()[-1][:120] if text else type(exc).__name__
        note(f"the cached ONNX file {path} cannot be used ({problem}); exporting the model again")
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    note(f"exporting the model to ONNX once (kept in {path})")
    export_model(model, meta, "onnx", path)
    return OnnxRuntimeModel(path)
