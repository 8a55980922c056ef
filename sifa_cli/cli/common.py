"""Pieces every command shares: typed options, the console, and turning SifaError into one line."""

from __future__ import annotations

import contextlib
import functools
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, ContextManager, Optional, TypeVar

import typer
from rich.console import Console

from sifa_cli.errors import SifaError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable)
T = TypeVar("T")

# What a command holds until it returns (locks on its output files); closed by `handle_errors`.
_held = contextlib.ExitStack()


def hold(resource: ContextManager[T]) -> T:
    """Enter `resource` now and leave it when the command ends, however it ends."""
    return _held.enter_context(resource)


def fail(message: str, code: int = 1) -> None:
    """Print one red line on stderr and exit with `code`."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
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
