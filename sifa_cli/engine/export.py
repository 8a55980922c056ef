"""Export a model for runtimes without this package: ONNX (standard operators) or TorchScript.

    from sifa_cli.engine.export import export_model
    report = export_model(model, meta, "onnx", Path("sifa.onnx"))

What is exported is `prepare_for_inference(model)`: frames through 2D convolutions with BatchNorm
folded in. In ONNX the SIFA step is one GridSample per block (opset 16 and later; we write opset 18),
so any ONNX runtime runs the file without a custom operator. The batch dimension is dynamic; frames
and crop size are those of the checkpoint's input spec. The checkpoint's metadata (architecture,
categories, input spec) travels with the file: ONNX metadata_props / a TorchScript extra file, both
under the key `sifa_meta` as JSON.

Each export is checked before it is kept: the file is loaded back (onnxruntime / torch.jit.load) and
run on a random batch of 3 clips, and its outputs are compared with the PyTorch model's.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from sifa_cli.data.spec import InputSpec
from sifa_cli.errors import InputError, SifaError
from sifa_cli.fileio import atomic_write_path
from sifa_cli.models.inference import prepare_for_inference
from sifa_cli.writable import check_writable

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
# Names a reader takes for the other format, or for a checkpoint: refused as --out for a format.
_MISLEADING_SUFFIXES = {"onnx": (".pt", ".pth", ".ts", ".torchscript", ".safetensors"),
                        "torchscript": (".onnx", ".safetensors")}
ONNX_OPSET = 18
META_KEY = "sifa_meta"
# fp32: the exported graph computes in a different order than PyTorch; 1e-4 is far above what that
# costs (about 1e-6 on logits of order 1) and far below any real mistake.
TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportReport:
    path: Path
    format: str
    input_shape: tuple[int, ...]  # one clip (the batch dimension is dynamic)
    outputs: tuple[str, ...]
    max_abs_diff: float  # exported vs PyTorch on a check batch of 3 clips
    size_bytes: int


def output_names(outputs) -> tuple[str, ...]:
    """SIFA-Net returns (main, dual) logits; SIFA-Transformer one tensor."""
    return ("logits", "logits_dual") if isinstance(outputs, (tuple, list)) else ("logits",)


def example_clip(meta: Mapping[str, Any], batch: int = 1, seed: int = 0) -> Tensor:
    spec = InputSpec.from_meta(meta.get("input"))
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, spec.frames, spec.size, spec.size, generator=g)


def export_meta(meta: Mapping[str, Any]) -> str:
    keep = {k: meta[k] for k in ("arch", "arch_kwargs", "categories", "input") if k in meta}
    return json.dumps(keep, sort_keys=True)


def check_format(fmt: str, out: Path) -> None:
    """Refuse an unknown format or an output path that cannot be written, before any slow work."""
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    out = Path(out)
    if out.exists() and out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name such as model{SUFFIXES[fmt]}")
    if not out.parent.exists():
        raise InputError(f"--out {out}: folder {out.parent} does not exist")
    if out.suffix.lower() in _MISLEADING_SUFFIXES[fmt]:
        raise InputError(f"--out {out}: a {out.suffix} name does not fit --format {fmt}; give it the {SUFFIXES[fmt]} suffix "
                         "(or pick the other --format)")
    check_writable(out, "--out", create_parents=False)
    if fmt == "onnx":
        require_onnx_packages()


def require_onnx_packages(what: str = "ONNX export") -> None:
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if not _importable(name)]
    if missing:
        raise SifaError(f"{what} needs {', '.join(missing)}: pip install 'sifa[export]'")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _as_tuple(outputs) -> tuple[Tensor, ...]:
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def export_model(model: nn.Module, meta: Mapping[str, Any], fmt: str, out: Path) -> ExportReport:
    """Write `model` (eval mode, on the CPU) as `fmt` to `out`; check it; return what was written."""
    out = Path(out)
    check_format(fmt, out)
    model = prepare_for_inference(model.cpu().eval())
    clip = example_clip(meta, batch=2)  # not 1: torch.export would fix a batch dimension of size 1
    check = example_clip(meta, batch=3, seed=1)
    with torch.inference_mode():
        expected = _as_tuple(model(check))
    names = output_names(expected if len(expected) > 1 else expected[0])
    with atomic_write_path(out) as tmp, _quiet():
        if fmt == "onnx":
            _write_onnx(model, clip, names, meta, tmp)
            got = run_onnx(tmp, check)
        else:
            _write_torchscript(model, clip, meta, tmp)
            with torch.inference_mode():
                got = _as_tuple(torch.jit.load(str(tmp))(check))
        diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(got, expected))
        if len(got) != len(expected) or not diff < TOLERANCE:
            raise SifaError(f"the exported {fmt} model disagrees with PyTorch (max |diff| {diff:.3g}); nothing written")
        size = tmp.stat().st_size
    return ExportReport(out, fmt, (1, *clip.shape[1:]), names, diff, size)


NARRATING_LOGGERS = ("torch.onnx._internal.exporter._registration", "onnxscript.optimizer._constant_folding",
                     "onnx_ir.passes.common.initializer_deduplication")


@contextlib.contextmanager
def _quiet():
    """The exporters narrate on stdout and warn about tracing shape checks that hold for the
    example clip (frames and size are fixed by the input spec); keep the command's output clean."""
    # The ONNX exporter and its optimizer also log warnings that ask nothing of the user: one line
    # per torchvision operator it cannot register (the torchvision wheel here is a CUDA build whose
    # operators do not load on CPU torch), and, for the motion models, one per SIFA step's list
    # it does not fold into a constant or output it does not deduplicate (the file is checked
    # against PyTorch after export all the same).
    loggers = [logging.getLogger(name) for name in NARRATING_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _write_onnx(model: nn.Module, clip: Tensor, names: tuple[str, ...], meta: Mapping[str, Any], path: Path) -> None:
    import onnx

    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.onnx.export(model, (clip,), None, dynamo=True, opset_version=ONNX_OPSET,
                                    input_names=["clip"], output_names=list(names),
                                    dynamic_shapes=({0: batch},), optimize=True, verbose=False)
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, export_meta(meta)
    onnx.save(proto, str(path))


def _write_torchscript(model: nn.Module, clip: Tensor, meta: Mapping[str, Any], path: Path) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(model, clip, check_trace=False, strict=False)
    # Serialised in memory and written by Python: torch's own file writer aborts the whole process
    # (a C++ exception) when the disk fills up.
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={META_KEY: export_meta(meta)})
    path.write_bytes(buffer.getbuffer())


def onnx_session(path: Path, threads: int | None = None):
    """An onnxruntime CPU session for an exported file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path_or_session, clip: Tensor) -> tuple[Tensor, ...]:
    session = path_or_session if hasattr(path_or_session, "run") else onnx_session(path_or_session)
    outputs = session.run(None, {session.get_inputs()[0].name: clip.detach().cpu().float().numpy()})
    return tuple(torch.from_numpy(o) for o in outputs)


def read_meta(path: Path) -> dict:
    """The checkpoint metadata stored in an exported file."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props[META_KEY])
    files = {META_KEY: ""}
    torch.jit.load(str(path), _extra_files=files)
    return json.loads(files[META_KEY])
