"""atomic_write_path: the target holds the old or the new content, never a half-written file."""

from __future__ import annotations

import pytest

from sifa_cli.fileio import atomic_write_path


def test_replaces_on_success_and_keeps_the_suffix(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    with atomic_write_path(target) as tmp:
        assert tmp.suffix == ".json" and tmp.parent == tmp_path and tmp.name.startswith(".")
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "plot.png"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]
