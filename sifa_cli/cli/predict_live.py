"""`sifa predict camera:N` / `sifa predict URL`: the current label of a stream, window by window.

Part of the predict command (see cli/predict.py, which hands streams over here); the work is done by
engine/live.py. Ctrl-C stops after the window in hand, writes the summary and exits with 130.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Optional, Sequence

import typer
from rich.markup import escape

from sifa_cli.cli.common import console, err_console
from sifa_cli.errors import DecodeError, InputError
from sifa_cli.wording import counted, form


def stream_source(paths: Sequence[str]):
    """The stream among PATHs (camera:N or a stream URL), or None when all are files, folders or globs."""
    from sifa_cli.data.inputs import parse_source

    sources = [source for source in map(parse_source, paths) if source is not None]
    if not sources:
        return None
    if len(paths) > 1:
        raise InputError(f"{sources[0]}: a stream is predicted on its own; give it as the only PATH")
    return sources[0]


def predict_live(source, *, weights: Optional[str], top_k: int, views, device: str, precision: str,
                 fmt: str, output: Optional[Path], window: Optional[float], stride: Optional[float], timeline: bool,
                 annotate: Optional[Path] = None, overwrite: bool = False) -> None:
    from sifa_cli.data.decode import capture_native_stderr
    from sifa_cli.data.sampling import Views, parse_views
    from sifa_cli.data.spec import InputSpec
    from sifa_cli.engine.device import resolve_device, slow_precision_note
    from sifa_cli.engine.live import LiveScorer, open_stream
    from sifa_cli.engine.predict import Predictor
    from sifa_cli.engine.records import check_window_options
    from sifa_cli.engine.results import ResultWriter
    from sifa_cli.weights.checkpoint import load_model

    if fmt in ("json", "csv"):
        raise InputError("a stream's windows are written as JSON Lines as they come: use --format jsonl "
                         "or an --output ending in .jsonl")
    if views is not None and views.clips != 1:
        raise InputError(f"--views {views}: a stream is scored one clip per window; use 1x1 or 1x3")
    if annotate is not None:
        raise InputError("--annotate needs a video file, not a stream")
    check_window_options(window, stride)
    if output is not None:
        if output.is_dir():
            raise InputError(f"--output {output} is a folder")
        if output.exists() and output.stat().st_size > 0 and not overwrite:
            raise InputError(f"--output {output} already exists; a stream cannot be resumed: choose a new file "
                             "or add --overwrite")

    model, meta = load_model(weights, resolve_device(device))
    device_used = next(model.parameters()).device
    slow = slow_precision_note(device_used, precision)
    if slow:
        err_console.print(f"[yellow]note:[/] {escape(slow)}", highlight=False, soft_wrap=True)
    crops = views.crops if views is not None else parse_views(InputSpec.from_meta(meta.get("input")).views).crops
    predictor = Predictor(model, meta, device=device_used, precision=precision, views=Views(1, crops), top_k=top_k)
    given = {name: value for name, value in (("stride", stride), ("window", window)) if value is not None}
    scorer = LiveScorer(predictor, **given)  # unset: a stream's own defaults (engine/live.py)
    stop = threading.Event()

    with capture_native_stderr():
        capture = open_stream(source)
        stats = scorer.stats
        err_console.print(f"[dim]reading {escape(str(source))}; Ctrl-C stops[/]", highlight=False, soft_wrap=True)
        writer = None
        if output is not None:
            writer = ResultWriter("jsonl", path=output)
        elif fmt == "jsonl":
            writer = ResultWriter("jsonl", stream=sys.stdout)
        restore = _stop_on_interrupt(stop)
        try:
            for result in scorer.run(capture, stop):
                if writer is not None:
                    record = {"path": str(source), "window": result.index, "start": result.start, "end": result.end,
                              "frames": result.frames, "top": [{"label": l, "score": s} for l, s in result.top]}
                    if result.notes:
                        record["notes"] = result.notes
                    writer.write(record)
                if output is not None or fmt == "table":  # the label as it goes, unless stdout carries JSON
                    _print_window(result)
        finally:
            restore()
            if writer is not None:
                writer.close()

    if stats.frames == 0 and stats.ended != "interrupted":
        reason = f" ({stats.error})" if stats.error else ""
        raise DecodeError(f"{source}: the stream opened but gave no frame{reason}")
    how = "interrupted" if stats.ended == "interrupted" else "stream ended"
    if stats.error:
        how += f" ({stats.error})"
    size = f" {stats.width}x{stats.height}" if stats.width else ""
    dropped = f", {stats.dropped} skipped to keep up" if stats.dropped else ""
    line = (f"{how}: {counted(stats.windows, 'window')} over {stats.stream_seconds:.1f} s of stream "
            f"({stats.frames} frames{size}{dropped}) in {stats.wall_seconds:.1f} s on {device_used}")
    if output is not None:
        line += f" · results in {output}"
    colour = "yellow" if stats.ended == "interrupted" or stats.error else "green"
    err_console.print(f"[{colour}]{escape(line)}[/]", highlight=False, soft_wrap=True)
    if stats.ended == "interrupted":
        raise typer.Exit(130)
    if stats.error:  # cut off or stalled mid-stream: not a normal end
        raise DecodeError(f"{source}: {stats.error}; the {counted(stats.windows, 'window')} before it "
                          f"{form(stats.windows, 'was', 'were')} scored")


def _print_window(result) -> None:
    label, score = result.top[0]
    rest = ", ".join(f"{escape(l)} {s:.3f}" for l, s in result.top[1:])
    line = f"{result.start:8.2f}-{result.end:.2f} s  [bold]{escape(label)}[/] {score:.3f}"
    if rest:
        line += f"  [dim]({rest})[/]"
    for note in result.notes:
        line += f"  [dim]note: {escape(note)}[/]"
    console.print(line, highlight=False, soft_wrap=True)


def _stop_on_interrupt(stop: threading.Event):
    """The first Ctrl-C (or SIGTERM) sets `stop` (the window in hand finishes, files close); a second
    one stops at once. Returns the function that puts the previous handler back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_interrupt(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {signum: signal.signal(signum, on_interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(signum, handler) for signum, handler in previous.items()]
