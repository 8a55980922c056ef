"""`sifa merge-results OUTPUT PART...`: join the outputs of `sifa predict --shard K/N` jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sifa_cli.cli.common import OverwriteOpt, err_console, handle_errors
from sifa_cli.wording import counted


@handle_errors
def merge_results(
    output: Annotated[Path, typer.Argument(help="The merged file; its suffix (.jsonl, .json, .csv) picks the format.",
                                           show_default=False)],
    parts: Annotated[list[Path], typer.Argument(help="Result files written by `sifa predict --output`.",
                                                metavar="PART", show_default=False)],
    overwrite: OverwriteOpt = False,
) -> None:
    """Merge result files of `sifa predict` (e.g. one per --shard job) into one.

    Failed videos are kept, so `sifa predict --output OUTPUT` on the merged file retries them; a
    video found in several parts keeps its last successful result. An existing OUTPUT is replaced
    only with --overwrite.
    """
    from sifa_cli.engine.distributed_predict import merge_outputs
    from sifa_cli.fileio import check_output_file
    from sifa_cli.writable import check_writable

    check_output_file(output, "OUTPUT", parts, overwrite)
    check_writable(output, "OUTPUT", create_parents=False)
    written, failed = merge_outputs(parts, output)
    err_console.print(f"{counted(written, 'video')} from {counted(len(parts), 'file')} in {output}"
                      + (f", {failed} of them failed" if failed else ""), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("merge-results")(merge_results)
