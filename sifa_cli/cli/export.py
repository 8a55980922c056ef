"""`sifa export WEIGHTS --format onnx|torchscript --out FILE`: a model file for other runtimes."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from sifa_cli.cli.common import OverwriteOpt, console, handle_errors


class ExportFormat(str, Enum):
    onnx = "onnx"
    torchscript = "torchscript"


@handle_errors
def export(
    weights: Annotated[
        str, typer.Argument(help="A registry name (see `sifa weights list`) or a checkpoint file.", show_default=False)
    ],
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="onnx (standard operators, opset 18) or torchscript.")] = ExportFormat.onnx,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Output file. Default: WEIGHTS' name with .onnx / .pt.", dir_okay=False)
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Export a model for runtimes without this package (onnxruntime, libtorch).

    The file takes clips of shape N,3,T,S,S normalised as the checkpoint's input spec says (any N;
    T and S fixed) and returns the logits (SIFA-Net: main and dual head; average their softmaxes).
    The checkpoint's categories and input spec are stored in the file under `sifa_meta`. Every
    export is loaded back and compared with PyTorch before it is kept.
    """
    from sifa_cli.engine.export import SUFFIXES, check_format, export_model
    from sifa_cli.fileio import check_output_file
    from sifa_cli.weights.checkpoint import load_model

    if out is None:
        out = Path(Path(weights).stem + SUFFIXES[fmt.value])
    check_format(fmt.value, out)
    check_output_file(out, "--out", [weights if Path(weights).is_file() else None], overwrite)
    model, meta = load_model(weights, "cpu")
    report = export_model(model, meta, fmt.value, out)
    n, c, t, h, w = report.input_shape
    console.print(
        f"wrote [bold]{escape(str(report.path))}[/] ({report.size_bytes / 2**20:.1f} MiB, {report.format}): "
        f"input clip N x {c} x {t} x {h} x {w}, outputs {', '.join(report.outputs)}; "
        f"max |diff| against PyTorch {report.max_abs_diff:.1e}",
        highlight=False, soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    app.command("export")(export)
