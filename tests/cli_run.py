"""Run the `sifa` CLI as a real subprocess (optionally under a memory limit) and read its one-line errors."""

from __future__ import annotations

import functools
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# As root, permission bits are not enforced; without these two capabilities they are again.
_DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


@functools.lru_cache(maxsize=1)
def _can_drop_dac() -> bool:
    if shutil.which("setpriv") is None:
        return False
    probe = subprocess.run([*_DROP_DAC, sys.executable, "-c", "pass"], capture_output=True)
    return probe.returncode == 0


def permissions_enforced_prefix() -> list[str]:
    """The command prefix under which file permissions apply to the child (skips the test when
    running as root without a way to drop root's override)."""
    if os.geteuid() != 0:
        return []
    if not _can_drop_dac():
        pytest.skip("running as root, and setpriv cannot drop CAP_DAC_OVERRIDE here: permissions are not enforced")
    return list(_DROP_DAC)


def sifa_env(env: dict | None = None) -> dict:
    """The environment a `sifa` child process runs in: this source tree first on the path, a wide terminal."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}


def run_sifa(*args: str, env: dict | None = None, timeout: float = 180, data_limit: int | None = None,
             cwd: Path | None = None, enforce_permissions: bool = False) -> subprocess.CompletedProcess:
    """`python -m sifa_cli.cli.main ARGS` from this source tree; `data_limit` caps the child's heap
    (RLIMIT_DATA, bytes), so a run that would grab gigabytes fails fast instead of swapping;
    `enforce_permissions` makes file permissions apply even when the tests run as root."""
    prefix = permissions_enforced_prefix() if enforce_permissions else []

    def limit() -> None:
        if data_limit is not None:
            resource.setrlimit(resource.RLIMIT_DATA, (data_limit, data_limit))

    return subprocess.run([*prefix, sys.executable, "-m", "sifa_cli.cli.main", *map(str, args)], env=sifa_env(env),
                          capture_output=True, text=True, timeout=timeout, preexec_fn=limit, cwd=cwd)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The 'error: ...' lines on stderr, after checking that nothing looks like a traceback."""
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr[-3000:]
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def one_error(result: subprocess.CompletedProcess, codes=(1, 2)) -> str:
    """The single error line of a run that failed cleanly with one of `codes`."""
    assert result.returncode in codes, (result.returncode, result.stderr[-3000:])
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]
