"""`sifa finetune` under torchrun: this process's rank, its device and training precision, the
collective operations the loop uses, and the message when another process of the run died.

Without torchrun (WORLD_SIZE unset or 1) the same calls describe a single process and do nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from sifa_cli.engine.device import TorchrunRank
from sifa_cli.errors import InputError


class Distributed(TorchrunRank):
    """This process's rank, and the collective operations the training loop uses."""

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, tensor: Tensor) -> Tensor:
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_object(self, value: Any) -> Any:
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def start_distributed(device: torch.device) -> Distributed:
    """Join torchrun's process group when WORLD_SIZE > 1: NCCL for CUDA devices, gloo otherwise."""
    place = Distributed.from_environment()
    if not place.enabled:
        return Distributed()  # one process: rank 0, whatever a stray RANK says
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)  # env:// refuses a missing RANK
    return place


def training_device(requested: str) -> torch.device:
    """`--device` as `sifa predict` reads it under torchrun (`TorchrunRank.device`), with the GPU's index
    always named."""
    device = TorchrunRank.from_environment().device(requested)
    if device.type == "cuda" and device.index is None:  # the one GPU this process uses, by number
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def resolve_precision(requested: str, device: torch.device) -> str:
    """fp32, bf16 or fp16. auto: bf16 on GPUs that support it, fp16 on other CUDA GPUs, fp32
    elsewhere (CPU bf16 autocast is often slower than fp32 and fp16 needs a loss scaler on CUDA)."""
    if requested == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested == "fp16" and device.type != "cuda":
        raise InputError(f"--precision fp16 trains only on CUDA GPUs (this run uses {device.type}); use bf16 or fp32")
    if requested == "bf16" and device.type == "mps":
        raise InputError("--precision bf16 is not supported on MPS; use fp32")
    return requested


# What gloo and NCCL say when a peer process died mid-collective.
PEER_LOST_MARKERS = ("connection closed by peer", "connection reset by peer", "broken pipe", "remote process exited",
                     "socket closed")


def peer_lost(exc: BaseException) -> bool:
    return any(marker in str(exc).lower() for marker in PEER_LOST_MARKERS)


def peer_lost_message(distributed: Distributed, run: Path) -> str:
    others = [rank for rank in range(distributed.world_size) if rank != distributed.rank]
    who = (f"training process rank {others[0]}" if len(others) == 1
           else f"one of the other training processes (ranks {', '.join(map(str, others))})")
    return (f"{who} stopped (killed or crashed), so rank {distributed.rank} stops too; {run} keeps the last "
            f"finished epoch, and `torchrun ... finetune --resume {run}` continues from it")
