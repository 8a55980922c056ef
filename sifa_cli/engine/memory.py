"""How much memory a process may use, and refusing a batch size that could never fit in it."""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Optional

import torch

from sifa_cli.data.spec import InputSpec
from sifa_cli.errors import InputError

_CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def usable_memory(device: torch.device | str = "cpu") -> Optional[int]:
    """Bytes this process can allocate on `device` at most: the GPU's memory, or for the CPU the
    smallest of physical memory, the cgroup limit and the heap/address-space rlimits. None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return torch.cuda.get_device_properties(device).total_memory
        except Exception:  # no CUDA here after all: the run itself will say so
            return None
    if device.type != "cpu":
        return None
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    for which in ("RLIMIT_DATA", "RLIMIT_AS"):
        soft = resource.getrlimit(getattr(resource, which))[0] if hasattr(resource, which) else -1
        if soft != resource.RLIM_INFINITY and soft > 0:
            limits.append(soft)
    return min(limits) if limits else None


def _size(num_bytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if num_bytes < 1000 or unit == "PB":
            return f"{num_bytes:.0f} {unit}" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    raise AssertionError


def check_batch_size(batch_size: int, spec: InputSpec, device: torch.device | str = "cpu",
                     option: str = "--batch-size") -> None:
    """Refuse a batch whose inputs alone (held twice: queued and stacked) exceed the usable memory."""
    per_input = 3 * spec.frames * spec.size * spec.size * 4  # float32 C,T,H,W
    needed = 2 * batch_size * per_input
    available = usable_memory(device)
    if available is None or needed <= available:
        return
    fits = max(1, available // (2 * per_input))
    raise InputError(
        f"{option} {batch_size}: one batch of {spec.frames}x{spec.size}x{spec.size} clips needs "
        f"{_size(needed)} for its inputs alone, more than the {_size(available)} of memory "
        f"{'on ' + str(device) if torch.device(device).type != 'cpu' else 'this process may use'}; "
        f"use at most {fits}"
    )
