"""The `sifa` Typer app. Each command lives in its own module and is registered here."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from sifa_cli import __version__

app = typer.Typer(
    name="sifa",
    help="Video action recognition with SIFA (Stand-Alone Inter-Frame Attention, CVPR 2022).",
    rich_markup_mode="rich",
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


def _register() -> None:
    # Imported here so `sifa --version` stays fast; each module adds its own command(s).
    from sifa_cli.cli import finetune as finetune_cmd
    from sifa_cli.cli import models as models_cmd
    from sifa_cli.cli import weights as weights_cmd

    finetune_cmd.register(app)
    models_cmd.register(app)
    weights_cmd.register(app)


def main() -> None:
    _register()
    app()


if __name__ == "__main__":
    main()
