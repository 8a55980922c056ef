"""`sifa predict PATH...`: ranked actions for video files, folders and globs; timelines of long videos."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from sifa_cli.cli.common import (
    BatchSizeOpt,
    Decoder,
    DecoderOpt,
    DecodersOpt,
    DeviceOpt,
    Precision,
    PrecisionOpt,
    WeightsOpt,
    console,
    err_console,
    handle_errors,
    hold,
    is_tty,
)
from sifa_cli.engine.timeline_options import UNCERTAIN_BELOW, UNCERTAIN_MARGIN
from sifa_cli.errors import InputError
from sifa_cli.wording import counted, form


class Backend(str, Enum):
    torch = "torch"
    onnxruntime = "onnxruntime"


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


# Tables list every window up to this many; beyond it only the merged segments (files get all).
MAX_TABLE_WINDOWS = 60
# The help screen's panel for the options that shape a timeline: a panel's columns are as wide as
# its longest option name, so these long names keep the others' descriptions wide.
_TIMELINE = "Timeline"


@handle_errors
def predict(
    ctx: typer.Context,
    paths: Annotated[
        list[str],
        typer.Argument(help="Video files, folders (searched recursively) or glob patterns; or one stream: "
                            "camera:N or an rtsp://, http(s):// ... URL, scored window by window as it plays.",
                       metavar="PATH",
                       show_default=False),
    ],
    weights: WeightsOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many labels to show per video.")] = 5,
    views: Annotated[
        Optional[str],
        typer.Option("--views", help="Multi-view testing CLIPSxCROPS, e.g. 4x3; crops 1 or 3. Default: the model's."),
    ] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.fp32,
    batch_size: BatchSizeOpt = 8,
    decoder: DecoderOpt = Decoder.auto,
    decoders: DecodersOpt = None,
    output_format: Annotated[
        Optional[OutputFormat],
        typer.Option("--format", "-f", help="Default: table, or the format --output's suffix names."),
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", dir_okay=False,
                     help="Write results to this file: .json, .jsonl or .csv. With --timeline and one video, "
                          ".otio, .edl, .vtt, .srt, .csv (one row per segment; --format csv for the results "
                          "layout) or .html write that timeline for editing tools."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start --output afresh instead of adding to the results already in it; replace an existing --annotate file or timeline export (.edl, .otio, ...).")
    ] = False,
    timeline: Annotated[
        bool, typer.Option("--timeline", rich_help_panel=_TIMELINE,
                           help="Score consecutive windows of each video and merge them into segments.")
    ] = False,
    window: Annotated[Optional[float], typer.Option(
        "--window", rich_help_panel=_TIMELINE, show_default=False,
        help="Timeline window length in seconds. [default: the time one clip of the model covers, its "
             "`seconds` (`sifa weights info`): 3.2 s for the shipped model; longer only where the frame rate is "
             "too low for its frames to lie one frame apart in that time]")] = None,
    stride: Annotated[Optional[float], typer.Option(
        "--stride", rich_help_panel=_TIMELINE, show_default=False,
        help="Seconds between timeline window starts. [default: half the window]")] = None,
    annotate: Annotated[
        Optional[Path],
        typer.Option("--annotate", help="Write VIDEO with its top labels (with --timeline: the segment label) "
                     "drawn on every frame to this .mp4.", dir_okay=False),
    ] = None,
    shard: Annotated[
        Optional[str],
        typer.Option("--shard", help="K/N: only part K of N of the inputs (independent jobs, e.g. a Slurm array); "
                                     "see 'sifa merge-results'."),
    ] = None,
    backend: Annotated[
        Backend, typer.Option("--backend", help="onnxruntime: CPU, fp32; exported once and cached (needs sifa[export]).")
    ] = Backend.torch,
    cuts: Annotated[
        bool, typer.Option("--cuts/--no-cuts", rich_help_panel=_TIMELINE,
                           help="With --timeline: find shot cuts (PySceneDetect's content detector on every "
                                "frame); windows never cross a cut, segments end at cuts.")
    ] = True,
    uncertain_below: Annotated[
        float, typer.Option("--uncertain-below", metavar="SCORE", rich_help_panel=_TIMELINE,
                            help="With --timeline: mark a segment uncertain when its mean top score is below SCORE...")
    ] = UNCERTAIN_BELOW,
    uncertain_margin: Annotated[
        float, typer.Option("--uncertain-margin", metavar="SCORE", rich_help_panel=_TIMELINE,
                            help="...or when the runner-up label's mean score is within SCORE of it.")
    ] = UNCERTAIN_MARGIN,
    start_timecode: Annotated[
        Optional[str], typer.Option("--start-timecode", metavar="HH:MM:SS:FF", rich_help_panel=_TIMELINE,
                                    help="Timecode of the video's first frame in .otio/.edl/.csv/.html timeline "
                                         "exports (drop-frame at 29.97 and 59.94 fps). [default: 00:00:00:00]",
                                    show_default=False)
    ] = None,
) -> None:
    """Recognise the actions in videos.

    Re-running with the same --output skips the videos already in it, if they were made with the
    same weights, input, views, top-k and timeline settings (recorded in each result); otherwise it
    stops, unless --overwrite starts the file afresh. The exit code is 1 when any input failed
    (each failure is also recorded in the output). Under torchrun the processes share the inputs
    and rank 0 writes all results.
    """
    from sifa_cli.data import decode_worker

    decode_worker.prestart()  # it starts on another core while torch and the model load
    # Everything a user can get wrong is checked before the model loads, and what the options need is
    # checked before torch is imported (a few seconds), so a mistyped option is reported at once.
    from sifa_cli.data.decode import capture_native_stderr
    from sifa_cli.data.inputs import find_videos
    from sifa_cli.data.sampling import parse_views
    from sifa_cli.engine.records import check_counts, check_window_options, summarise_short
    from sifa_cli.engine.resume import file_identity, still_current
    from sifa_cli.engine.results import ResultWriter, output_format as pick_format, path_key, read_finished, result_record
    from sifa_cli.engine.results import lock_results
    from sifa_cli.engine.run_settings import check_resumable, prediction_settings, weights_file
    from sifa_cli.engine.timecode import format_rate
    from sifa_cli.engine.timeline_export import check_export_tools
    from sifa_cli.engine.timeline_options import TimelineOptions
    from sifa_cli.fileio import refuse_input_as_output
    from sifa_cli.writable import check_writable

    export = _timeline_export(output, output_format, timeline)
    fmt = "table" if export else pick_format(output, output_format.value if output_format else None)
    if output is not None:
        check_writable(output, "--output")
    chosen_views = parse_views(views) if views is not None else None
    check_counts(batch_size, top_k, decoders)
    options = TimelineOptions(cuts=cuts, uncertain_below=uncertain_below, uncertain_margin=uncertain_margin)
    if timeline:
        check_window_options(window, stride)
        options.check()
    if export:
        check_export_tools(export)
    if start_timecode is not None and export not in (".otio", ".edl", ".csv", ".html"):
        raise InputError("--start-timecode applies to timeline exports: --timeline with --output x.otio, .edl, "
                         ".csv or .html")
    from sifa_cli.cli.predict_live import predict_live, stream_source

    source = stream_source(paths)
    if source is not None:
        if shard is not None:
            raise InputError("--shard splits a list of videos; a stream is one input")
        if export:
            raise InputError(f"--output {output}: a stream has no fixed timeline to export; write .jsonl instead")
        return predict_live(source, weights=weights, top_k=top_k, views=chosen_views, device=device,
                            precision=precision.value, fmt=fmt, output=output, window=window, stride=stride,
                            timeline=timeline, annotate=annotate, overwrite=overwrite)
    given = [name for name in ("window", "stride", "cuts", "uncertain_below", "uncertain_margin")
             if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"]
    if given and not timeline:  # a stream uses window and stride on its own; files only with --timeline
        flag = {"cuts": "--cuts/--no-cuts"}.get(given[0], "--" + given[0].replace("_", "-"))
        raise InputError(f"{flag} applies to --timeline{' (or a stream)' if given[0] in ('window', 'stride') else ''}; "
                         "add --timeline, or leave it out")
    found = find_videos(paths)
    if not found.videos and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        _print_problems(found.problems)  # nothing to do, said before torch loads
        raise typer.Exit(2)
    from sifa_cli.engine.device import slow_precision_note
    from sifa_cli.engine.distributed_predict import PredictGroup, parse_shard, shard_of
    from sifa_cli.engine.memory import check_batch_size
    from sifa_cli.engine.predict import Predictor
    from sifa_cli.weights.checkpoint import load_model

    part = parse_shard(shard)
    group = PredictGroup.from_env()  # the processes torchrun started, or this one alone
    if group.is_main:
        _print_problems(found.problems)
    if not found.videos:
        raise typer.Exit(2)
    if annotate is not None:
        from sifa_cli.engine.annotate import check_annotate_target

        annotate = check_annotate_target(annotate, found.videos, overwrite)
    found.videos = shard_of(found.videos, part)
    if export and output is not None:
        _check_export_target(output, export, found.videos, weights, overwrite, start_timecode)
    if not found.videos:
        wrote = ""
        if output is not None and group.is_main and not os.path.lexists(output):
            ResultWriter(fmt, path=output).close()  # an empty part, so merge-results finds every job's file
            wrote = f" (wrote an empty {output} for merge-results)"
        err_console.print(f"--shard {shard}: none of the inputs falls to this job; nothing to do{wrote}",
                          highlight=False, soft_wrap=True)
        raise typer.Exit(1 if found.problems else 0)
    if output is not None and group.is_main and not export:
        refuse_input_as_output(output, [*found.videos, weights if weights and Path(weights).is_file() else None],
                               "--output")
        hold(lock_results(output))  # held until the command ends: concurrent runs would lose records
    # A file that is not ours is refused (never overwritten); old results are checked once the model is known.
    existing = read_finished(output, fmt) if output is not None and group.is_main and not export else []

    if backend == Backend.onnxruntime and (device not in ("auto", "cpu") or precision != Precision.fp32):
        raise InputError("--backend onnxruntime runs on the CPU in fp32: use --device cpu --precision fp32")
    model, meta = load_model(weights, group.device("cpu" if backend == Backend.onnxruntime else device))
    model_device = next(model.parameters()).device
    if backend == Backend.onnxruntime:
        from sifa_cli.engine.onnx_backend import onnxruntime_model

        model = onnxruntime_model(model, meta, note=lambda text: err_console.print(f"[dim]note: {escape(text)}[/]"))
    slow = slow_precision_note(model_device, precision.value)
    if slow:
        err_console.print(f"[yellow]note:[/] {escape(slow)}", highlight=False, soft_wrap=True)
    predictor = Predictor(model, meta, device=model_device, precision=precision.value,
                          views=chosen_views, batch_size=batch_size, top_k=top_k, decoder=decoder.value,
                          decoders=decoders)
    check_batch_size(batch_size, predictor.spec, predictor.device)
    settings = prediction_settings(weights_file(weights), predictor.spec, predictor.views, predictor.top_k,
                                   (window, stride) if timeline else None)
    if timeline:
        settings["timeline"].update(options.settings())

    kept = [] if overwrite else existing
    if kept:
        check_resumable(kept, settings, output)
    current = [record for record in kept if still_current(record)]
    if len(current) < len(kept):
        changed = len(kept) - len(current)
        err_console.print(f"{counted(changed, 'video')} changed since {form(changed, 'its', 'their')} results were "
                          f"written; scoring {form(changed, 'it', 'them')} again", highlight=False)
        kept = current
    other_k = sorted({r["settings"].get("top_k") for r in kept} - {settings["top_k"]}, key=str)
    if other_k:
        err_console.print(f"note: the results kept in {escape(str(output))} list the top "
                          f"{', '.join(map(str, other_k))} labels; the new ones list the top {settings['top_k']}",
                          highlight=False, soft_wrap=True)
    done_keys = {path_key(record["path"]) for record in kept}
    videos = group.share([v for v in found.videos if path_key(str(v)) not in done_keys])
    skipped = len(found.videos) - len(videos)
    identities = {str(v): file_identity(v) for v in videos}  # before decoding: a later change re-scores
    if not videos and not group.is_main:
        raise typer.Exit(0)
    if not videos:
        which = "the video already has" if skipped == 1 else f"all {counted(skipped, 'video')} already have"
        err_console.print(f"{which} results in {output}; nothing to do")
        raise typer.Exit(1 if found.problems else 0)

    view_text = str(predictor.views)
    if not group.is_main:
        writer: Optional[ResultWriter] = None  # rank 0 writes every process's results
    elif output is not None and not export:
        writer = ResultWriter(fmt, path=output, keep=kept, replace=overwrite)
    elif fmt != "table":
        writer = ResultWriter(fmt, stream=sys.stdout)
    else:
        writer = None

    results = []
    failed = len(found.problems)
    show_bar = is_tty() and (timeline or len(videos) > 1) and group.is_main
    progress = Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True, disable=not show_bar,
    )
    task = progress.add_task("windows" if timeline else "videos", total=None if timeline else len(videos))

    def count_windows(planned: int, done: int) -> None:
        if planned:
            progress.update(task, total=(progress.tasks[0].total or 0) + planned)
        if done:
            progress.advance(task, done)

    with capture_native_stderr(), progress:
        stream = group.run(videos, lambda claimed: (
            predictor.timeline(claimed, window, stride, progress=count_windows, options=options) if timeline
            else predictor.predict(claimed)), predictor.stats, progress=count_windows)
        try:
            for result in stream:
                if not timeline:
                    progress.advance(task)
                record = result_record(result, view_text)
                if result.ok:
                    record["settings"] = settings
                    record.update(identities.get(result.path, {}))
                if writer is not None:
                    writer.write(record)
                if result.ok:
                    results.append(result)
                else:
                    failed += 1
                    progress.console.print(f"[bold red]error:[/] {escape(result.error)}", highlight=False, soft_wrap=True)
        finally:
            if writer is not None:
                writer.close()

    if not group.is_main:
        return
    if fmt == "table":
        if timeline:
            _print_timelines(results, options)
        else:
            _print_predictions(results, top_k)
    short = summarise_short(results, predictor.spec)
    if short:
        err_console.print(f"note: {escape(short)}", highlight=False, soft_wrap=True)
    if export and results and output is not None:
        from sifa_cli.engine.timeline_export import TimelineDoc, write_export

        doc = TimelineDoc.from_result(results[0], predictor.categories, start_timecode)
        write_export(doc, output)
        flagged = sum(1 for segment in doc.segments if segment.uncertain)
        err_console.print(f"timeline: {counted(len(doc.segments), 'segment')}, {flagged} uncertain, from "
                          f"{doc.timecode(0)} at {format_rate(doc.rate.rate)} fps"
                          f"{' drop-frame' if doc.rate.drop_frame else ''} -> {escape(str(output))}",
                          highlight=False, soft_wrap=True)
    _print_summary(predictor.stats, failed, skipped, None if export else output, group.describe(predictor.device),
                   view_text)
    if annotate is not None and results:
        from sifa_cli.engine.annotate import annotate_video

        with capture_native_stderr():  # FFmpeg's own lines about a damaged stream stay off the terminal
            drawn = annotate_video(results[0], annotate)
        err_console.print(f"labelled video: {escape(str(drawn.path))} ({drawn.frames} frames, {drawn.width}x"
                          f"{drawn.height}, {drawn.fps:.3g} fps, {drawn.codec})", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _print_problems(problems) -> None:
    """One error line per input that is not a video we can read (find_videos's problems)."""
    for _, problem in problems:
        err_console.print(f"[bold red]error:[/] {escape(problem)}", highlight=False, soft_wrap=True)


def _timeline_export(output: Optional[Path], output_format: Optional[OutputFormat], timeline: bool) -> Optional[str]:
    """The timeline export --output names (".edl", ...), or None for a results file."""
    from sifa_cli.engine.timeline_export import export_suffix

    suffix = export_suffix(output)
    if suffix is None or (suffix == ".csv" and (not timeline or output_format == OutputFormat.csv)):
        return None  # a results file (a .csv of results unless --timeline asks for the segment list)
    if not timeline:
        raise InputError(f"--output {output} is a timeline export: add --timeline (results files are .json, "
                         ".jsonl or .csv)")
    if output_format is not None:
        raise InputError(f"--format {output_format.value} does not apply to --output {output}, a timeline "
                         "export named by its suffix; leave --format out")
    return suffix


def _check_export_target(output: Path, export: str, videos: list, weights: Optional[str], overwrite: bool,
                         start_timecode: Optional[str]) -> None:
    """One video, an output that loses nothing, and a start timecode valid at the video's rate."""
    from sifa_cli.data.decode import Video
    from sifa_cli.engine.timecode import TimecodeRate
    from sifa_cli.fileio import check_output_file
    from sifa_cli.errors import SifaError

    if len(videos) != 1:
        raise InputError(f"--output {output} holds one video's timeline, but {len(videos)} videos were given: "
                         "export them one at a time (or write all timelines to .json or .jsonl)")
    check_output_file(output, "--output", [*videos, weights if weights and Path(weights).is_file() else None],
                      overwrite)
    if start_timecode is not None:
        try:
            with Video(videos[0]) as video:
                fps = video.info.fps
        except SifaError:
            return  # the run reports what is wrong with the video
        TimecodeRate.for_fps(fps).frame(start_timecode)


def _label_list(top) -> str:
    return ", ".join(f"{escape(label)} {score:.3f}" for label, score in top)


def _print_predictions(results, top_k: int) -> None:
    if not results:
        return
    from sifa_cli.cli.tables import Col, cut_left, fit_table, relative_paths

    root, shown = relative_paths([result.path for result in results])
    cols = [Col("video", cut_left=True, min_width=40), Col("top-1"), Col("score", justify="right", priority=1)]
    if top_k > 1:
        cols.append(Col("next", wrap=True, min_width=16, priority=2, fold_at=", "))
    rows = []
    for result, path in zip(results, shown):
        label, score = result.top[0]
        rows.append([path, Text(label, style="bold"), f"{score:.3f}",
                     *([", ".join(f"{l} {s:.3f}" for l, s in result.top[1:])] if top_k > 1 else [])])
    fitted = fit_table(cols, rows, console.width, header_style="bold")
    if root:
        console.print(Text("videos in ") + cut_left(root, max(16, console.width - 10)), no_wrap=True)
    console.print(fitted.table)
    if fitted.dropped:
        console.print(f"[dim]not shown at this width: {', '.join(fitted.dropped)} (widen the terminal or use "
                      "--format json)[/]", highlight=False)
    _print_notes(results)


def cuts_found(shots: int) -> str:
    """The line under a timeline that was cut into `shots` shots."""
    cuts = shots - 1
    if cuts == 0:
        return "no cuts found"
    if cuts == 1:
        return "1 cut found, 2 shots; --no-cuts to ignore it"
    return f"{cuts} cuts found, {shots} shots; --no-cuts to ignore them"


def _print_timelines(results, options=None) -> None:
    for result in results:
        windows = result.windows or []
        every = f" of {result.window:.2f} s every {result.stride:.2f} s" if result.window is not None else ""
        console.print(f"[bold]{escape(result.path)}[/]  {result.duration:.2f} s, {len(windows)} windows{every}",
                      highlight=False)
        if len(windows) <= MAX_TABLE_WINDOWS:
            table = Table("start", "end", "top-1", "score", "next", header_style="bold")
            for w in windows:
                table.add_row(f"{w.start:.2f}", f"{w.end:.2f}", escape(w.top[0][0]), f"{w.top[0][1]:.3f}",
                              _label_list(w.top[1:]))
            console.print(table)
        else:
            console.print(f"[dim]{len(windows)} windows: write them all with --output or --format json/csv[/]")
        with_shots = result.shots is not None
        segments = Table("segment start", "end", *(["shot"] if with_shots else []), "label", "mean score",
                         "runner-up", "windows", header_style="bold")
        flagged = 0
        for s in result.segments or []:
            label = f"[bold]{escape(s.label)}[/]"
            if s.uncertain:
                flagged += 1
                label = f"[bold yellow]{escape(s.label)} ?[/]"
            runner = f"{escape(s.runner_up[0])} {s.runner_up[1]:.3f}" if s.runner_up else ""
            segments.add_row(f"{s.start:.2f}", f"{s.end:.2f}", *([str(s.shot)] if with_shots else []), label,
                             f"{s.score:.3f}", runner, str(s.windows))
        console.print(segments)
        if with_shots:
            console.print(f"[dim]{cuts_found(len(result.shots))}[/]", highlight=False)
        if flagged and options is not None:
            console.print(f"[dim]? uncertain ({flagged}): mean top score below {options.uncertain_below:g} or the "
                          f"runner-up within {options.uncertain_margin:g} of it (--uncertain-below, "
                          "--uncertain-margin)[/]", highlight=False)
    _print_notes(results)


def _print_notes(results) -> None:
    for result in results:  # short clips get one line for the whole run (summarise_short)
        for note in (n for n in result.notes if result.short is None or n != result.short.note):
            console.print(f"[dim]note: {escape(result.path)}: {escape(note)}[/]", highlight=False, soft_wrap=True)


def _print_summary(stats, failed: int, skipped: int, output: Optional[Path], device, views: str) -> None:
    parts = [f"{counted(stats.videos_ok, 'video')} ok", f"{failed} failed"]
    if skipped:
        parts.append(f"{skipped} skipped (already in {output})")
    speed = (f"{counted(stats.inputs, 'clip')} ({views} views) in {stats.wall_seconds:.1f} s, "
             f"{stats.inputs_per_second:.1f} clips/s on {device}")
    line = ", ".join(parts) + " · " + speed
    if output is not None:
        line += f" · results in {output}"
    colour = "red" if failed else "green"
    err_console.print(f"[{colour}]{escape(line)}[/]", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
