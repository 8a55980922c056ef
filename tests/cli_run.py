"""Run the `sifa` CLI as a real subprocess (optionally under a memory limit) and read its one-line errors."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_sifa(*args: str, env: dict | None = None, timeout: float = 180, data_limit: int | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m sifa_cli.cli.main ARGS` from this source tree; `data_limit` caps the child's heap
    (RLIMIT_DATA, bytes), so a run that would grab gigabytes fails fast instead of swapping."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}

    def limit() -> None:
        if data_limit is not None:
            resource.setrlimit(resource.RLIMIT_DATA, (data_limit, data_limit))

    return subprocess.run([sys.executable, "-m", "sifa_cli.cli.main", *map(str, args)], env=full_env,
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
