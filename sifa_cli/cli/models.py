"""`sifa models`: list the model architectures this build can create."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from sifa_cli.cli.common import console, handle_errors
from sifa_cli.errors import InputError


@handle_errors
def models(
    pattern: Annotated[Optional[str], typer.Argument(help="Shell-style filter, e.g. 'sifa_resnet*'.", metavar="PATTERN")] = None,
) -> None:
    """List model architectures with their parameter counts (for 400 classes)."""
    import torch

    from sifa_cli.models import create_model, list_models
    from sifa_cli.models.registry import model_entrypoint

    names = list_models(pattern)
    if not names:
        raise InputError(f"no model name matches {pattern!r}; `sifa models` lists them all")
    table = Table("name", "parameters", "description")
    for name in names:
        with torch.device("meta"):  # no memory or init time, so counting Swin-L is instant
            params = sum(p.numel() for p in create_model(name, num_classes=400).parameters())
        doc = (model_entrypoint(name).__doc__ or "").strip().splitlines()[0]
        table.add_row(name, f"{params / 1e6:.1f} M", doc)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
