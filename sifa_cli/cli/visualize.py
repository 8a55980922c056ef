"""`sifa visualize [CLIP]`: a video of what the SIFA blocks see (offsets, attention, one query's weights)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from sifa_cli.cli.common import DeviceOpt, OverwriteOpt, WeightsOpt, console, err_console, handle_errors
from sifa_cli.errors import InputError, SifaError
from sifa_cli.fileio import check_output_file
from sifa_cli.resources import examples_dir

EXAMPLE_CLIP = examples_dir() / "clip.mp4"


class ArrowMode(str, Enum):
    match = "match"
    relative = "relative"
    absolute = "absolute"


def default_clip() -> Path:
    if not EXAMPLE_CLIP.is_file():
        raise InputError(f"no CLIP given and the example clip {EXAMPLE_CLIP} is not installed; pass a video file as CLIP")
    return EXAMPLE_CLIP


@handle_errors
def visualize(
    clip: Annotated[
        Optional[Path],
        typer.Argument(help="Video file. Default: the example clip examples/clip.mp4.", show_default=False,
                       metavar="CLIP"),
    ] = None,
    weights: WeightsOpt = None,
    offsets: Annotated[bool, typer.Option("--offsets", help="Arrows: where each location's samples moved in the next frame.")] = False,
    attention: Annotated[bool, typer.Option("--attention", help="Heat-map: where the correlation weight lands in the next frame.")] = False,
    block: Annotated[
        Optional[str],
        typer.Option("--block", help="SIFA block name(s), comma separated, or 'all' (see --list-blocks). Default: the first."),
    ] = None,
    point: Annotated[
        Optional[str],
        typer.Option("--point", help="X,Y in pixels of the clip: also show that query's KxK weights at their sampled positions."),
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="Output .mp4. Default: CLIP's name + _sifa.mp4 in the current folder.", dir_okay=False),
    ] = None,
    sheet: Annotated[
        Optional[Path], typer.Option("--sheet", help="Also write a PNG contact sheet (one frame per feature-frame step).", dir_okay=False)
    ] = None,
    list_blocks: Annotated[bool, typer.Option("--list-blocks", help="List the model's SIFA blocks and their feature sizes, then exit.")] = False,
    panel_size: Annotated[
        Optional[int], typer.Option("--panel-size", help="Side of each panel in pixels. Default: as large as fits 1920x1080.")
    ] = None,
    arrow_scale: Annotated[float, typer.Option("--arrow-scale", help="Lengthen the offset arrows by this factor (shown in the caption).")] = 1.0,
    arrows: Annotated[
        ArrowMode,
        typer.Option("--arrows", help="match: from each place to where it finds its match in the next frame (its K*K "
                     "sampling positions weighted by the softmax of their correlation); absolute: where its sampling "
                     "window moved (the mean learned offset); relative: that shift minus the block's mean over the clip."),
    ] = ArrowMode.match,
    json_out: Annotated[
        Optional[Path],
        typer.Option("--json", help="Also write the numbers behind the pictures: per block and feature step, the mean "
                     "offset and mean displacement (dy, dx) in feature cells and in frame pixels per frame.",
                     dir_okay=False),
    ] = None,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
) -> None:
    """Render a video of where a model's SIFA blocks find each place's match in the next frame (arrows)
    and where their attention lands (heat-map).

    Without --offsets, --attention or --point both arrows and attention are shown, for the block that
    carries the motion (the checkpoint names it; else the first). Each caption gives the block's own
    motion estimate in frame pixels per frame. Panels show the whole frame with the model's centre crop
    outlined; the views are drawn inside the crop. Each step from feature frame f-1 to f is drawn over
    the clip frames of f (the stem makes one feature frame of 1 clip frame in the default model, of 4
    in SIFA-Net R50/R101; the dual path pools 2 more); the first feature frame has nothing to attend
    from. --panel-size is the side of the crop in pixels.
    """
    from sifa_cli import visualize as vis
    from sifa_cli.data.decode import capture_native_stderr
    from sifa_cli.data.spec import InputSpec
    from sifa_cli.engine.device import resolve_device
    from sifa_cli.models.inference import prepare_for_inference
    from sifa_cli.weights.checkpoint import load_model

    # What the user typed is checked before anything slow happens.
    parsed_point = vis.parse_point(point) if point is not None else None
    views = [name for name, wanted in (("offsets", offsets), ("attention", attention)) if wanted]
    if not list_blocks:
        clip = clip if clip is not None else default_clip()
        if not clip.exists():
            raise InputError(f"{clip}: no such file")
        if out is None:
            out = Path(f"{clip.stem}_sifa.mp4")
        vis.check_output_path(out, vis.VIDEO_SUFFIX, "--out")
        inputs = [clip, weights if weights and Path(weights).is_file() else None]
        check_output_file(out, "--out", inputs, overwrite)
        if sheet is not None:
            vis.check_output_path(sheet, vis.SHEET_SUFFIX, "--sheet")
            check_output_file(sheet, "--sheet", inputs, overwrite)
        if json_out is not None:
            vis.check_output_path(json_out, vis.JSON_SUFFIX, "--json")
            check_output_file(json_out, "--json", inputs, overwrite)

    model, meta = load_model(weights, resolve_device(device))
    model = prepare_for_inference(model)  # forward hooks on its SIFA blocks work as on the plain model
    if list_blocks:
        spec = InputSpec.from_meta(meta.get("input"))
        _print_blocks(vis.describe_blocks(model, spec), spec, meta.get("arch", "the model"))
        return

    with capture_native_stderr():  # decoders print to the terminal directly; errors quote what they said
        try:
            report = vis.visualize(clip, model, meta, out, views=views, block=block, point=parsed_point, sheet=sheet,
                                   json_path=json_out, panel_size=panel_size, arrow_scale=arrow_scale, arrows=arrows.value)
        except MemoryError:
            raise SifaError("out of memory while rendering: try a smaller --panel-size or fewer --block") from None
    width, height = report.size
    label = f"{report.prediction.label} ({report.prediction.probability:.0%})"
    console.print(
        f"wrote [bold]{escape(str(report.out))}[/]: {report.frames} frames, {width}x{height}, {report.fps:.3g} fps, "
        f"{report.codec} · {', '.join(report.views)} of {', '.join(report.blocks)} · predicted {escape(label)}",
        highlight=False, soft_wrap=True,
    )
    if report.sheet is not None:
        console.print(f"contact sheet: [bold]{escape(str(report.sheet))}[/]", highlight=False, soft_wrap=True)
    if report.json is not None:
        console.print(f"numbers: [bold]{escape(str(report.json))}[/]", highlight=False, soft_wrap=True)
    for note in report.notes:
        err_console.print(f"[dim]note: {escape(note)}[/]", highlight=False, soft_wrap=True)
    times = ", ".join(f"{name} {seconds:.2f}" for name, seconds in report.seconds.items() if name != "total")
    err_console.print(f"[dim]{report.seconds['total']:.1f} s ({times}) on {next(model.parameters()).device}[/]",
                      highlight=False)


def _print_blocks(blocks, spec, arch: str) -> None:
    table = Table("block", "channels", "feature frames", "feature size", "stride", "kernel", header_style="bold",
                  title=f"SIFA blocks of {escape(arch)} for {spec.frames}-frame {spec.size}x{spec.size} clips")
    for b in blocks:
        kernel = f"{b.kernel_size}x{b.kernel_size}" + (f", dilation {b.dilation}" if b.dilation != 1 else "")
        table.add_row(b.name, str(b.channels), str(b.frames), f"{b.height}x{b.width}", f"{b.stride:g} px", kernel)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("visualize")(visualize)
