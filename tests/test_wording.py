"""Count-dependent wording (`sifa_cli.wording`) and messages that use it, singular and plural."""

from __future__ import annotations

import pytest

from sifa_cli.engine.run_settings import check_resumable
from sifa_cli.engine.train_config import read_config_file
from sifa_cli.errors import InputError
from sifa_cli.wording import counted, form


def test_counted_agrees_with_the_count():
    assert counted(0, "video") == "0 videos"
    assert counted(1, "video") == "1 video"
    assert counted(2, "video") == "2 videos"
    assert counted(1, "class", "classes") == "1 class"
    assert counted(2, "class", "classes") == "2 classes"
    assert counted(0, "process", "processes") == "0 processes"


def test_form_picks_the_word_alone():
    assert form(1, "has", "have") == "has" and form(3, "has", "have") == "have"
    assert form(1, "field") == "field" and form(0, "field") == "fields"


def test_a_config_file_with_one_unknown_option_says_option(tmp_path):
    one = tmp_path / "one.yaml"
    one.write_text("epoch: 3\n")
    with pytest.raises(InputError, match=r"unknown option epoch; known: "):
        read_config_file(one)
    two = tmp_path / "two.yaml"
    two.write_text("epoch: 3\nbatch: 2\n")
    with pytest.raises(InputError, match=r"unknown options batch, epoch; known: "):
        read_config_file(two)


def test_results_without_settings_counted(tmp_path):
    out = tmp_path / "r.jsonl"
    with pytest.raises(InputError, match=r"holds 1 result with no recorded settings .*, so it cannot be known"):
        check_resumable([{"path": "a.mp4"}], {}, out)
    with pytest.raises(InputError, match=r"holds 2 results with no recorded settings .*, so they cannot be known"):
        check_resumable([{"path": "a.mp4"}, {"path": "b.mp4"}], {}, out)
