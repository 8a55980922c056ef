"""keep_freed_memory: a big freed tensor's memory stays in the process for the next one (glibc).

Each case runs in a fresh interpreter: the setting lasts for the whole process.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)

# Allocates and frees a 256 MiB tensor, then prints how much of it the process still holds.
_PROBE = """
import sys
from sifa_cli.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
import torch

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

before = rss()
big = torch.ones(64 << 20)  # 256 MiB, every page touched
del big
print(applied, (rss() - before) >> 20)
"""


def _held_mib(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True).stdout
    applied, held = out.split()
    return applied, int(held)


def test_freed_memory_is_kept_for_reuse():
    applied, held = _held_mib("keep")
    assert applied == "True"
    assert held >= 200


def test_default_malloc_returns_it():
    # The contrast that makes the first test mean something: without the setting it is gone.
    applied, held = _held_mib("plain")
    assert applied == "None"
    assert held < 50


def test_calling_twice_keeps_the_first_answer():
    from sifa_cli.allocator import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() is first
