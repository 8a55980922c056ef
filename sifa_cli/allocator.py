"""Keep freed memory for reuse instead of handing it back to the system (glibc's malloc).

A video network allocates tensors of tens of megabytes for every layer of every forward pass. glibc
serves blocks above its mmap threshold (at most 32 MiB by default) with fresh `mmap` calls and
returns them with `munmap` when freed, so each forward pass page-faults through all its activations
again, and the kernel zeroes every page first. On the 2-core CPU of benchmarks/RESULTS.md that made
the shipped model's forward pass about 1.4x slower (batch 8) and SIFA-R50's about 1.1x. With the
threshold raised, big blocks come from the heap and stay there once freed (the trim threshold is
raised too), so the next pass reuses them: the process keeps its peak memory instead of shrinking
between passes, which a long `sifa predict` or `sifa finetune` reaches anyway.

`keep_freed_memory()` is called once at the start of every `sifa` command. Other C libraries (musl,
macOS) are left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_MMAP_THRESHOLD = 1 << 30  # glibc before 2.26 refuses more than 32 MiB: then that is used
_FALLBACK_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 2**31 - 1  # the largest int mallopt takes: the heap's top is never trimmed

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when they were set.

    Only allocations made afterwards are affected, so call it before the model runs. Safe to call
    more than once (the first call decides)."""
    global _applied
    if _applied is None:
        _applied = _set_thresholds()
    return _applied


def _set_thresholds() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        gnu_get_libc_version = libc.gnu_get_libc_version  # glibc only: musl has mallopt as a no-op
    except (OSError, AttributeError):
        return False
    del gnu_get_libc_version
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    threshold_set = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) or mallopt(_M_MMAP_THRESHOLD, _FALLBACK_MMAP_THRESHOLD)
    return bool(threshold_set and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
