"""The `sifa` Typer app. Each command lives in its own module and is registered here."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from sifa_cli import __version__
from sifa_cli.allocator import keep_freed_memory
from sifa_cli.cli.common import stop_like_ctrl_c_on_sigterm
from sifa_cli.cli.helpfmt import tidy_help_types

tidy_help_types()


class OneLineErrors(TyperGroup):
    """Usage mistakes (missing file, bad option value) end in one line and exit code 2, not a panel.

    Recent Typer versions carry their own copy of click, so errors are recognised by shape
    (`format_message` + `exit_code`) rather than by class.
    """

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            # Without standalone mode click returns the code of a typer.Exit instead of exiting.
            code = super().main(*args, standalone_mode=False, **kwargs)
        except Exception as exc:
            sys.exit(_report_usage_error(exc))
        sys.exit(code if isinstance(code, int) else 0)


def _report_usage_error(exc: Exception) -> int:
    if type(exc).__name__ == "NoArgsIsHelpError" and getattr(exc, "ctx", None) is not None:
        typer.echo(exc.ctx.get_help())
        return 0
    if type(exc).__name__ == "Abort" or isinstance(exc, typer.Abort):
        typer.echo("aborted", err=True)
        return 1
    if not hasattr(exc, "format_message"):
        if hasattr(exc, "exit_code"):  # Exit: a command finished with this code
            return exc.exit_code
        raise exc
    hint = ""
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and type(exc).__name__ not in ("FileError",):
        hint = f" (see '{ctx.command_path} --help')"
    typer.echo(f"error: {exc.format_message()}{hint}", err=True)
    return getattr(exc, "exit_code", 2)


app = typer.Typer(
    cls=OneLineErrors,
    name="sifa",
    help="Video action recognition with SIFA (Stand-Alone Inter-Frame Attention, CVPR 2022).",
    rich_markup_mode="markdown",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sifa {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = None,
) -> None:
    """Video action recognition with SIFA (Stand-Alone Inter-Frame Attention, CVPR 2022)."""


_registered = False


def _register() -> None:
    """Add every command to `app` (once). Each command module has a `register(app)`."""
    global _registered
    if _registered:
        return
    _registered = True
    from sifa_cli.cli import evaluate as evaluate_cmd
    from sifa_cli.cli import export as export_cmd
    from sifa_cli.cli import finetune as finetune_cmd
    from sifa_cli.cli import merge as merge_cmd
    from sifa_cli.cli import models as models_cmd
    from sifa_cli.cli import predict as predict_cmd
    from sifa_cli.cli import visualize as visualize_cmd
    from sifa_cli.cli import weights as weights_cmd

    evaluate_cmd.register(app)
    export_cmd.register(app)
    finetune_cmd.register(app)
    merge_cmd.register(app)
    models_cmd.register(app)
    predict_cmd.register(app)
    visualize_cmd.register(app)
    weights_cmd.register(app)


def _tolerate_narrow_encodings() -> None:
    """A terminal or pipe that is not UTF-8 (PYTHONIOENCODING=ascii, a Latin-1 locale) shows a label or
    file name it cannot encode as a backslash escape instead of failing with UnicodeEncodeError."""
    from sifa_cli.fileio import writes_utf8

    for stream in (sys.stdout, sys.stderr):
        if not writes_utf8(stream) and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main() -> None:
    keep_freed_memory()  # before any tensor exists: see sifa_cli/allocator.py
    _tolerate_narrow_encodings()
    stop_like_ctrl_c_on_sigterm()
    _register()
    app()


if __name__ == "__main__":
    main()
