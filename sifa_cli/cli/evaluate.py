"""`sifa evaluate DATA`: accuracy, per-class precision/recall and a confusion matrix on labelled videos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sifa_cli.cli.common import (
    BatchSizeOpt,
    Decoder,
    DecoderOpt,
    DecodersOpt,
    DeviceOpt,
    OverwriteOpt,
    Precision,
    PrecisionOpt,
    WeightsOpt,
    console,
    err_console,
    handle_errors,
    hold,
    is_tty,
)
from sifa_cli.wording import counted, form


@handle_errors
def evaluate(
    data: Annotated[Path, typer.Argument(
        help="Labelled videos: `DIR/<class>/*.mp4`, a `DIR/train` + `DIR/val` root (its val part), or a CSV of "
             "`path,label` rows.", show_default=False, metavar="DATA")],
    weights: WeightsOpt = None,
    views: Annotated[
        Optional[str],
        typer.Option("--views", help="Multi-view testing CLIPSxCROPS, e.g. 4x3; crops 1 or 3. Default: the model's."),
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="Folder for metrics.json, confusion_matrix.png and predictions.csv. "
                     "Default: DATA's name + _eval in the current folder.", file_okay=False),
    ] = None,
    skip_unknown: Annotated[
        bool, typer.Option("--skip-unknown", help="Leave out videos whose label the model does not know "
                           "(default: stop with an error naming those labels).")
    ] = False,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.fp32,
    batch_size: BatchSizeOpt = 8,
    decoder: DecoderOpt = Decoder.auto,
    decoders: DecodersOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Evaluate a model on labelled videos: top-1 (and top-5 with more than 5 classes), per-class
    precision and recall, and a confusion matrix (PNG and JSON).

    Videos are found as `sifa finetune` finds them and scored as `sifa predict` scores them. A video
    that cannot be read is listed and left out of the scores; the exit code is then 1.
    """
    from sifa_cli.data.decode import capture_native_stderr
    from sifa_cli.data.sampling import parse_views
    from sifa_cli.engine.device import resolve_device, slow_precision_note
    from sifa_cli.engine.evaluate import REPORT_FILES, TOP_K, evaluate as run_evaluation, load_labelled, split_known, write_report
    from sifa_cli.engine.predict import Predictor
    from sifa_cli.engine.records import check_counts
    from sifa_cli.engine.run_settings import prediction_settings, weights_file
    from sifa_cli.errors import InputError
    from sifa_cli.fileio import check_output_file, lock_output
    from sifa_cli.writable import check_writable
    from sifa_cli.weights.checkpoint import load_model

    chosen_views = parse_views(views) if views is not None else None
    check_counts(batch_size, decoders=decoders)
    labelled = load_labelled(data)
    out = out if out is not None else Path(f"{Path(labelled.source).name or 'data'}_eval")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    check_writable(out, "--out", folder=True)
    hold(lock_output(out, "--out"))  # until the report is written: a second run would replace it
    for name in REPORT_FILES:
        check_output_file(out / name, "--out", [data, weights if weights and Path(weights).is_file() else None],
                          overwrite)
    if labelled.note:
        err_console.print(f"note: {escape(labelled.note)}", highlight=False, soft_wrap=True)

    model, meta = load_model(weights, resolve_device(device))
    model_device = next(model.parameters()).device
    slow = slow_precision_note(model_device, precision.value)
    if slow:
        err_console.print(f"[yellow]note:[/] {escape(slow)}", highlight=False, soft_wrap=True)
    predictor = Predictor(model, meta, device=model_device, precision=precision.value, views=chosen_views,
                          batch_size=batch_size, top_k=TOP_K, decoder=decoder.value,
                          decoders=decoders)
    samples, unknown = split_known(labelled.samples, predictor.categories, skip_unknown, labelled.source)
    settings = prediction_settings(weights_file(weights), predictor.spec, predictor.views, predictor.top_k)

    progress = Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True, disable=not is_tty(),
    )
    task = progress.add_task("videos", total=len(samples))
    with capture_native_stderr(), progress:
        evaluation = run_evaluation(predictor, samples, unknown=unknown, source=labelled.source, settings=settings,
                                    progress=lambda planned, done: progress.advance(task, done))
        for path, _, error in evaluation.failed:
            progress.console.print(f"[bold red]error:[/] {escape(error)}", highlight=False, soft_wrap=True)
    if evaluation.short_note:
        err_console.print(f"note: {escape(evaluation.short_note)}", highlight=False, soft_wrap=True)
    written = write_report(evaluation, out)
    _print_report(evaluation, predictor, settings)
    err_console.print(f"wrote {', '.join(escape(str(p)) for p in written)}", highlight=False, soft_wrap=True)
    if evaluation.failed:
        raise typer.Exit(1)


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _print_report(evaluation, predictor, settings) -> None:
    from sifa_cli.cli.tables import Col, fit_table

    per_class = evaluation.per_class()
    cols = [Col("class"), Col("videos", justify="right"), Col("recall", justify="right"),
            Col("precision", justify="right", priority=1), Col("most often mistaken for", wrap=True, priority=2)]
    rows = [[c.name, str(c.videos), _percent(c.recall), _percent(c.precision), c.mistaken_for or ""]
            for c in per_class]
    fitted = fit_table(cols, rows, console.width, header_style="bold", title_justify="left",
                       title=f"{evaluation.videos} videos, {len(per_class)} classes")
    console.print(fitted.table)
    if fitted.dropped:
        console.print(f"[dim]not shown at this width: {', '.join(fitted.dropped)} (all in metrics.json)[/]",
                      highlight=False)
    parts = [f"top-1 {_percent(evaluation.accuracy(1))} ({sum(p.correct for p in evaluation.predictions)}"
             f"/{evaluation.videos})"]
    if evaluation.top_k:
        parts.append(f"top-{evaluation.top_k} {_percent(evaluation.accuracy(evaluation.top_k))}")
    parts.append(f"mean class recall {_percent(evaluation.mean_class_recall())}")
    console.print(" · ".join(parts), highlight=False)
    stats = predictor.stats
    extra = []
    if evaluation.failed:
        extra.append(f"{counted(len(evaluation.failed), 'video')} failed")
    if evaluation.unknown:
        labels = sorted({s.label for s in evaluation.unknown})
        left_out = len(evaluation.unknown)
        extra.append(f"{counted(left_out, 'video')} with {form(left_out, 'a label', 'labels')} the model does not "
                     f"know left out ({', '.join(labels[:5])}{', ...' if len(labels) > 5 else ''})")
    line = (f"{settings['weights']} ({settings['views']} views) on {predictor.device}: "
            f"{counted(stats.inputs, 'clip')} in {stats.wall_seconds:.1f} s, {stats.inputs_per_second:.1f} clips/s")
    err_console.print(escape("; ".join([line, *extra])), highlight=False, soft_wrap=True,
                      style="red" if evaluation.failed else None)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
