"""Pieces every command shares: typed options, the console, and turning SifaError into one line."""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, ContextManager, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from sifa_cli.errors import SifaError

# No emoji codes: a file named "my:fire:clip.mp4" is printed as it is named.
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)

F = TypeVar("F", bound=Callable)
T = TypeVar("T")

# What a command holds until it returns (locks on its output files); closed by `handle_errors`.
_held = contextlib.ExitStack()


def hold(resource: ContextManager[T]) -> T:
    """Enter `resource` now and leave it when the command ends, however it ends."""
    return _held.enter_context(resource)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler's time limit, `docker stop`, `kill`): unwinds like Ctrl-C, so every
    command keeps what it finished and cleans up the same way."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def stop_like_ctrl_c_on_sigterm() -> None:
    """Make SIGTERM raise Terminated in the main thread (see `handle_errors`)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def fail(message: str, code: int = 1) -> None:
    """Print one red line on stderr and exit with `code`."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(func: F) -> F:
    """Decorator for commands: a SifaError becomes one line and its exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with _held:
                return func(*args, **kwargs)
        except SifaError as exc:
            fail(str(exc), exc.exit_code)
        except Terminated:
            err_console.print("terminated")
            raise typer.Exit(128 + signal.SIGTERM)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130)
        except MemoryError:
            fail("out of memory: try a smaller --batch-size, fewer --views or a smaller model")
        except RuntimeError as exc:  # torch's allocators report exhaustion as RuntimeError
            text = str(exc).lower()
            if "out of memory" not in text and "can't allocate memory" not in text:
                raise
            fail("out of memory: try a smaller --batch-size, fewer --views or a smaller model")
        except OSError as exc:  # the disk filled up or a folder vanished mid-run: not a bug, one line
            where = f"{exc.filename}: " if exc.filename else ""
            fail(f"{where}{exc.strerror or exc}")

    return wrapper  # type: ignore[return-value]


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Decoder(str, Enum):
    auto = "auto"
    decord = "decord"
    opencv = "opencv"


DecoderOpt = Annotated[
    Decoder, typer.Option("--decoder", help="auto: decord, falling back to OpenCV on files it cannot read.")
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace output files that already exist.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", "-b", help="Clips per forward pass.")]
DecodersOpt = Annotated[
    Optional[int],
    typer.Option("--decoders", help="Videos decoded at once, each in its own worker process. "
                 "[default: the CPU count, at most 4]", show_default=False),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.", show_default=True)
]
PrecisionOpt = Annotated[
    Precision, typer.Option("--precision", help="Arithmetic precision for the model.")
]
WeightsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--weights",
        "-w",
        help="A registry name (see `sifa weights list`) or a checkpoint file. Default: the shipped model.",
    ),
]
OutputOpt = Annotated[
    Optional[Path], typer.Option("--output", "-o", help="Write results to this file.", dir_okay=False)
]


def is_tty() -> bool:
    return sys.stderr.isatty()
