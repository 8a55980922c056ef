"""Which device runs the model (`--device`), in which arithmetic (`--precision`), and which of
torchrun's processes this one is (`TorchrunRank`, shared by finetune and predict)."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from typing import ContextManager

import torch

from sifa_cli.errors import InputError
from sifa_cli.wording import counted

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class TorchrunRank:
    """This process's place among torchrun's processes (world_size 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> "TorchrunRank":
        """What torchrun's environment variables say (RANK, WORLD_SIZE, LOCAL_RANK), before joining any group."""
        return cls(rank=int(os.environ.get("RANK", "0")), world_size=int(os.environ.get("WORLD_SIZE", "1")),
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")))

    def device(self, requested: str) -> torch.device:
        """`--device`, except that under torchrun each process takes the GPU of its LOCAL_RANK when
        `cuda` (or `auto` finding CUDA) names none."""
        device = resolve_device(requested)
        if self.enabled and device.type == "cuda" and ":" not in requested:
            device = torch.device("cuda", self.local_rank % torch.cuda.device_count())
        return device


def resolve_device(name: str) -> torch.device:
    """auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps; refuses one that is not there."""
    text = (name or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match:
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
            raise InputError(f"--device {name}: no CUDA GPU is available (torch {torch.__version__}, {build})")
        index = int(match.group(1) or 0)
        if index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: only {counted(torch.cuda.device_count(), 'CUDA device')} here")
        return torch.device("cuda", index)
    if text == "mps":
        if not _mps_available():
            raise InputError("--device mps: Apple's Metal backend is not available here")
        return torch.device("mps")
    raise InputError(f"--device must be auto, cpu, cuda, cuda:N or mps; got {name!r}")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def autocast(device: torch.device, precision: str) -> ContextManager:
    """Mixed precision for inference: fp32 runs as is, bf16/fp16 through torch.autocast."""
    precision = getattr(precision, "value", precision)
    if precision not in PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise InputError("--precision bf16: this GPU does not support bfloat16; use fp16 or fp32")
    return torch.autocast(device_type=device.type, dtype=dtype)


def slow_precision_note(device: torch.device, precision: str) -> str | None:
    """A warning when 16-bit arithmetic will be emulated: on a CPU without native bf16 support
    SIFA-R50 ran ~60x slower in bf16 than in fp32 (benchmarks/bench_model.py, AVX2-only CPU)."""
    precision = getattr(precision, "value", precision)
    if device.type != "cpu" or precision == "fp32":
        return None
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) if precision == "bf16" else False
    except (AttributeError, RuntimeError):
        native = False
    if native:
        return None
    return (f"this CPU has no native {precision} arithmetic ({torch.backends.cpu.get_cpu_capability()}); "
            f"--precision {precision} will be much slower than fp32 here")
