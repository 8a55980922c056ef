"""`sifa weights list | info | download | verify | import | rm`: the weights registry and cache."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from sifa_cli.cli.common import OverwriteOpt, console, handle_errors

weights_app = typer.Typer(
    help="List, download, verify, import and remove model weights.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

ManifestOpt = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--manifest",
        help="An extra manifest JSON file (repeatable); $SIFA_MANIFEST also lists some.",
        exists=True,
        dir_okay=False,
    ),
]
NameArg = Annotated[str, typer.Argument(help="A registry name (see `sifa weights list`).", metavar="NAME")]
TargetArg = Annotated[str, typer.Argument(help="A registry name or a weights file.", metavar="TARGET")]


def _size(num_bytes: Optional[int]) -> str:
    if num_bytes is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1000 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    return ""


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if value not in (None, {}, []) else "-"


def _categories(categories) -> str:
    if not categories:
        return "-"
    shown = ", ".join(categories[:5])
    return f"{len(categories)}: {shown}" + (", ..." if len(categories) > 5 else "")


@weights_app.command("list")
@handle_errors
def list_weights(manifest: ManifestOpt = None) -> None:
    """List the weights every manifest names, and which are on this machine."""
    from sifa_cli.weights.cache import local_copy, weights_dir
    from sifa_cli.weights.manifest import load_registry

    from sifa_cli.cli.tables import Col, fit_table

    registry = load_registry(manifest or ())
    # Dropped right to left by priority when the terminal is narrow; names are never cut.
    cols = [Col("name"), Col("kind", priority=2), Col("arch", priority=3), Col("classes", priority=4),
            Col("size", justify="right", priority=5), Col("here", priority=1),
            Col("checked by", wrap=True, min_width=7, priority=6)]
    rows = []
    for entry in registry:
        path = local_copy(entry)
        here = "no" if path is None else ("shipped" if path == entry.local_path else "cached")
        rows.append([entry.name, entry.kind, entry.arch, str(len(entry.categories)) if entry.categories else "-",
                     _size(entry.size), here, entry.check])
    fitted = fit_table(cols, rows, console.width, title="sifa weights")
    console.print(fitted.table)
    if fitted.dropped:
        console.print(f"[dim]not shown at this width: {', '.join(fitted.dropped)}[/]", highlight=False)
    default = f"default: {registry.default}   " if registry.default else ""
    console.print(f"{default}details: sifa weights info NAME", highlight=False)
    console.print(f"cache: {weights_dir()}", highlight=False, soft_wrap=True)


@weights_app.command("info")
@handle_errors
def info(target: TargetArg, manifest: ManifestOpt = None) -> None:
    """Everything known about a registry entry or a weights file."""
    from sifa_cli.weights.cache import local_copy
    from sifa_cli.weights.checkpoint import weights_target
    from sifa_cli.weights.manifest import load_registry
    from sifa_cli.weights.verify import inspect_file

    entry = weights_target(target, load_registry(manifest or ()))
    table = Table("field", "value", show_header=False, title=target)
    if not isinstance(entry, Path):
        path = local_copy(entry)
        rows = [
            ("kind", entry.kind), ("arch", entry.arch), ("arch kwargs", _json(dict(entry.arch_kwargs))),
            ("categories", _categories(entry.categories)), ("input", _json(dict(entry.input))),
            ("file", entry.file_name), ("format", entry.format), ("urls", "\n".join(entry.urls) or "-"),
            ("sha256", entry.sha256 or "-"), ("sha256 prefix", entry.sha256_prefix or "-"),
            ("size", _size(entry.size)), ("checked by", entry.integrity),
            ("parameters", f"{entry.num_params:,}" if entry.num_params else "-"),
            ("source", entry.source or "-"), ("licence", entry.license or "-"), ("made", entry.made or "-"),
            ("evaluation", _json(dict(entry.evaluation))), ("notes", entry.notes or "-"),
            ("manifest", str(entry.manifest)), ("on this machine", str(path) if path else "no"),
        ]
    else:
        report = inspect_file(entry)
        meta = report.meta or {}
        rows = [("file", str(report.path)), ("holds", report.kind), ("sha256", report.sha256),
                ("tensors", str(report.tensors)), ("parameters", f"{report.parameters:,}")]
        if report.meta is None:
            rows.append(("looks like", ", ".join(report.arch_guesses) or "no known architecture"))
        else:
            rows += [
                ("arch", meta["arch"]), ("arch kwargs", _json(meta["arch_kwargs"])),
                ("categories", _categories(meta["categories"])), ("input", _json(meta["input"])),
                ("source", meta.get("source") or "-"), ("licence", meta.get("license") or "-"),
                ("training", _json(meta["training"])), ("metrics", _json(meta["metrics"])),
            ]
    for field, value in rows:
        table.add_row(field, value)
    console.print(table)


@weights_app.command("download")
@handle_errors
def download(
    name: NameArg,
    manifest: ManifestOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if a good copy is cached.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Give up when fewer than 64 KiB arrive in this many seconds.")] = 30.0,
) -> None:
    """Download weights into the cache, resuming a partial file, and check their hash."""
    from sifa_cli.weights.download import fetch
    from sifa_cli.weights.manifest import load_registry

    entry = load_registry(manifest or ()).get(name)
    path = fetch(entry, progress=True, timeout=timeout, force=force)
    console.print(f"[green]ok[/] {entry.name}: {path} (checked by {entry.integrity})", highlight=False)


@weights_app.command("verify")
@handle_errors
def verify(target: TargetArg, manifest: ManifestOpt = None) -> None:
    """Recompute the full sha256 of an entry's local copy (or a file) and read every tensor safely."""
    from sifa_cli.weights.verify import verify as verify_weights

    report = verify_weights(target, manifests=manifest or ())
    how = f"manifest check: {report.entry.integrity}" if report.entry else "read safely"
    how += ", tensors match their recorded checksum" if report.digest_checked else ""
    console.print(
        f"[green]ok[/] {report.path}: {how}; {report.tensors} tensors, sha256 {report.sha256}",
        highlight=False, soft_wrap=True,
    )


@weights_app.command("import")
@handle_errors
def import_checkpoint(
    file: Annotated[Path, typer.Argument(help="A reference SIFA checkpoint (.pth).", exists=True, dir_okay=False,
                                                metavar="FILE")],
    arch: Annotated[str, typer.Option("--arch", help="The architecture it was trained as (see `sifa models`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The sifa checkpoint to write.", dir_okay=False)],
    labels: Annotated[
        Optional[Path],
        typer.Option("--labels", help="Class names, one per line, in class-index order. Default: class_0, class_1, ...",
                     exists=True, dir_okay=False),
    ] = None,
    frames: Annotated[
        Optional[int], typer.Option("--frames", min=1, help="Frames per clip. Default: read off the checkpoint.")
    ] = None,
    license: Annotated[str, typer.Option("--license", help="Licence to record in the checkpoint.")] = "",
    overwrite: OverwriteOpt = False,
) -> None:
    """Convert a reference SIFA checkpoint into a self-contained sifa checkpoint (safetensors)."""
    from sifa_cli.fileio import check_output_file
    from sifa_cli.weights.convert import import_reference_checkpoint
    from sifa_cli.writable import check_writable

    check_output_file(out, "--out", [file, labels], overwrite)
    check_writable(out, "--out")
    meta = import_reference_checkpoint(file, arch, out, labels=labels, frames=frames, license=license)
    console.print(
        f"[green]ok[/] wrote {out}: {meta['arch']}, {len(meta['categories'])} classes, "
        f"{meta['input']['frames']} frames per clip",
        highlight=False,
    )


@weights_app.command("rm")
@handle_errors
def remove(names: Annotated[list[str], typer.Argument(help="Registry names whose cached files to delete.", metavar="NAME")],
           manifest: ManifestOpt = None) -> None:
    """Delete cached weights (shipped files are never touched)."""
    from sifa_cli.errors import WeightsError
    from sifa_cli.weights.cache import cache_path
    from sifa_cli.weights.download import download_lock
    from sifa_cli.weights.manifest import load_registry

    registry = load_registry(manifest or ())
    entries = [registry.get(name) for name in names]  # every name checked before anything is deleted
    with ExitStack() as held:
        for entry in entries:  # a download in progress owns its partial file: leave it be
            if not held.enter_context(download_lock(cache_path(entry), wait=False)):
                raise WeightsError(f"'{entry.name}' is being downloaded by another sifa process; nothing was "
                                   "removed: run the command again when the download has finished")
        _remove_entries(entries)


def _remove_entries(entries) -> None:
    from sifa_cli.weights.cache import cache_path, remove_cached

    for entry in entries:
        removed = remove_cached(cache_path(entry))
        if removed:
            console.print(f"removed {entry.name}: {', '.join(str(p) for p in removed)}", highlight=False)
        elif entry.local_path is not None and entry.local_path.is_file():
            console.print(f"{entry.name} was not cached: its file {entry.local_path} comes with its manifest "
                          "and is never deleted", highlight=False)
        else:
            console.print(f"{entry.name} was not cached", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(weights_app, name="weights")
