"""Tables at 80 and 120 columns: paths relative to their common folder and cut from the left (the
file name stays), headers never squeezed to '…', columns dropped by priority and said so."""

from __future__ import annotations

import pytest
from rich.console import Console
from rich.text import Text
from typer.testing import CliRunner

from predict_helpers import colour_checkpoint, write_colour_video
from sifa_cli.cli.tables import Col, cut_left, fit_table, relative_paths


def render(table, width: int) -> list[str]:
    console = Console(width=width, record=True, force_terminal=False)
    console.print(table)
    return console.export_text().splitlines()


def test_cut_left_keeps_the_end():
    assert cut_left("folder/sub/clip_0001.mp4", 12).plain == "…ip_0001.mp4"
    assert cut_left("short.mp4", 12).plain == "short.mp4"
    assert cut_left(Text("ab"), 1).plain == "…"


def test_relative_paths():
    root, shown = relative_paths(["/data/set/a/x.mp4", "/data/set/b/y.mp4"])
    assert root == "/data/set" and shown == ["a/x.mp4", "b/y.mp4"]
    assert relative_paths(["/data/one.mp4"]) == (None, ["/data/one.mp4"])
    assert relative_paths(["a.mp4", "/abs/b.mp4"]) == (None, ["a.mp4", "/abs/b.mp4"])


@pytest.mark.parametrize("width", [40, 60, 80, 120])
def test_fit_table_drops_by_priority_and_never_squeezes_headers(width):
    cols = [Col("path", cut_left=True, min_width=20), Col("label"), Col("score", priority=1),
            Col("more labels", wrap=True, priority=2, fold_at=", ")]
    rows = [[f"some/long/folder/name/clip_{i:04d}.mp4", "pan left", "0.912", "zoom in 0.051, tilt up 0.020"]
            for i in range(3)]
    fitted = fit_table(cols, rows, width)
    lines = render(fitted.table, width)
    assert max(len(line) for line in lines) <= width
    shown = [c.header for c in cols if c.header not in fitted.dropped]
    header = next(line for line in lines if "path" in line)
    assert "…" not in header and all(h.split()[0] in header for h in shown)
    assert all(f"clip_{i:04d}.mp4" in "\n".join(lines) for i in range(3))
    # lower priority goes first: 'more labels' before 'score'
    assert fitted.dropped in ([], ["more labels"], ["score", "more labels"])
    if width >= 80:
        assert fitted.dropped == []


@pytest.fixture(scope="module")
def deep_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables") / "a_folder_with_a_rather_long_name" / "and_another_level_below_it"
    write_colour_video(root / "red" / "a_red_clip_with_a_long_name_0001.mp4", ["red"] * 10)
    write_colour_video(root / "green" / "a_green_clip_with_a_long_name_0002.mp4", ["green"] * 10)
    return root


@pytest.mark.parametrize("width", [80, 120])
def test_predict_table_fits_and_keeps_file_names(app, deep_videos, tmp_path, width):
    weights = colour_checkpoint(tmp_path)
    result = CliRunner().invoke(app, ["predict", str(deep_videos), "-w", str(weights)], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= width
    assert lines[0].startswith("videos in ") and lines[0].endswith("and_another_level_below_it")
    rows = [line for line in lines if ".mp4" in line]
    assert len(rows) == 2 and not any(str(deep_videos) in row for row in rows)
    assert any("red/a_red_clip_with_a_long_name_0001.mp4" in row for row in rows)
    assert any("a_green_clip_with_a_long_name_0002.mp4" in row for row in rows)
    header = next(line for line in lines if "video" in line and "top-1" in line)
    assert "…" not in header
    assert ("next" in header) == ("not shown at this width: next" not in result.stdout)
    if width >= 120:
        assert "next" in header


@pytest.mark.parametrize("width", [80, 120])
def test_weights_list_headers_stay_whole(app, width):
    result = CliRunner().invoke(app, ["weights", "list"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= width
    header = next(line for line in lines if "name" in line and "here" in line)
    assert "…" not in header and "kind" in header and "arch" in header
    from sifa_cli.weights.manifest import load_registry

    # names are never cut
    assert all(any(f"│ {entry.name} " in line for line in lines) for entry in load_registry())
    if width >= 120:
        assert "checked by" in result.stdout and "size" in header and "not shown" not in result.stdout
    else:
        assert "not shown at this width:" in result.stdout
