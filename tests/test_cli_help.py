"""`--help` of every command and sub-command: flags take no value, no text is eaten by markup."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from cli_run import run_sifa
from sifa_cli.cli import finetune as finetune_cmd
from sifa_cli.cli import main as cli_main


def _commands():
    """(argument path, click command) for every command reachable from `sifa`."""
    cli_main._register()
    root = typer.main.get_command(cli_main.app)
    found = [((), root)]
    stack = [((), root)]
    while stack:
        path, command = stack.pop()
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            found.append(((*path, name), sub))
            stack.append(((*path, name), sub))
    return found


COMMANDS = _commands()


def test_every_command_is_checked():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"", "predict", "finetune", "visualize", "models", "weights", "weights list"} <= names


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) or "sifa" for p, _ in COMMANDS])
def test_help_shows_flags_without_a_value_and_keeps_every_word(path, command):
    result = CliRunner().invoke(cli_main.app, [*path, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "<bool>" not in text and "list[" not in text
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    for param in params:
        opts = [o for o in getattr(param, "opts", []) if o.startswith("--")]
        if getattr(param, "is_flag", False) and opts:
            line = next(line for line in text.splitlines() if re.search(rf"{re.escape(opts[0])}\b", line))
            after = line.split(opts[0], 1)[1]
            assert not re.match(r"(\s+-{1,2}[\w-]+)*\s+<", after), f"a flag shown as taking a value: {line}"
        # Words markup could eat (<class>, *.mp4, names_with_underscores) come through as written.
        for word in (getattr(param, "help", None) or "").split():
            word = word.strip("`.,;()'")
            if any(ch in word for ch in "<>*_"):
                assert word in text, f"{' '.join(path)} {param.name}: {word!r} missing from the help"
    assert re.search(r"--help\s+Show this message", text)


def test_finetune_help_names_the_class_folder_layout():
    result = CliRunner().invoke(cli_main.app, ["finetune", "--help"], env={"COLUMNS": "120"})
    assert "DIR/<class>/*.mp4" in result.output


def _option_names(command) -> list[str]:
    """Every name of every option the help screen shows (both forms of an on/off flag)."""
    return [name for param in command.params if param.param_type_name == "option" and not param.hidden
            for name in (*param.opts, *param.secondary_opts)]


# `finetune --help` was 136 lines at 80 columns and 96 at 100, its descriptions squeezed into a
# 17-character column and `--no-freeze-backbone` cut to `--no-freeze-ba…`.
FINETUNE_HELP_LINES = {80: 80, 100: 65}


@pytest.mark.parametrize("columns", sorted(FINETUNE_HELP_LINES))
def test_finetune_help_fits_the_terminal_with_every_option_whole(columns):
    result = run_sifa("finetune", "--help", env={"COLUMNS": str(columns)}, timeout=120)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    lines = text.splitlines()
    assert len(lines) <= FINETUNE_HELP_LINES[columns], text
    assert max(len(line) for line in lines) <= columns
    assert "…" not in text, text
    command = dict(COMMANDS)[("finetune",)]
    words = set(re.findall(r"(?<![\w-])-{1,2}[\w-]+", text))
    for name in _option_names(command):
        assert name in words, f"{name} is not shown whole at {columns} columns:\n{text}"
    # Descriptions keep a column wide enough to read: where one wraps, its next line starts at the
    # description column, at least 25 characters before the panel's right edge.
    for line in lines:
        inner = line.strip("│ ")
        if line.startswith("│") and inner and "  " not in inner:
            indent = len(line) - len(line.lstrip("│ "))
            assert columns - 1 - indent >= 25, f"a description wrapped in a narrow column:\n{line}\n{text}"


def test_finetune_help_names_the_options_it_leaves_off():
    command = dict(COMMANDS)[("finetune",)]
    hidden = [param for param in command.params if getattr(param, "hidden", False)]
    assert len(hidden) >= 10
    text = CliRunner().invoke(cli_main.app, ["finetune", "--help"], env={"COLUMNS": "100"}).output
    for param in hidden:
        assert any(re.search(rf"{re.escape(name)}\b", text) for name in (*param.opts, *param.secondary_opts)), \
            f"{param.opts} is hidden and not named in the help's epilog"
    assert "--config FILE takes every option" in text and "Every finetune option" in text


def test_finetune_options_left_off_the_help_still_work(tmp_path, monkeypatch):
    """Hidden options and both forms of the switches parse and reach the run's settings."""
    seen = {}
    monkeypatch.setattr("sifa_cli.engine.train.train", lambda config, **_: seen.setdefault("config", config))
    monkeypatch.setattr(finetune_cmd, "_print_summary", lambda result: None)
    data = tmp_path / "data"
    data.mkdir()
    result = CliRunner().invoke(cli_main.app, [
        "finetune", str(data), "--out", str(tmp_path / "run"), "--no-sifa", "--momentum", "0.5", "--min-crop-area",
        "0.6", "--allow-missing-classes", "--no-freeze-backbone", "--hflip", "--license", "CC-BY-4.0"])
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert (config.sifa, config.momentum, config.min_crop_area, config.allow_missing_classes) == (False, 0.5, 0.6, True)
    assert (config.freeze_backbone, config.hflip, config.license) == (False, True, "CC-BY-4.0")


@pytest.mark.parametrize("columns", [80, 100])
@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) or "sifa" for p, _ in COMMANDS])
def test_help_cuts_no_option_name_or_word(path, command, columns):
    text = CliRunner().invoke(cli_main.app, [*path, "--help"], env={"COLUMNS": str(columns)}).output
    assert "…" not in text, text
    words = set(re.findall(r"(?<![\w-])-{1,2}[\w-]+", text))
    for name in _option_names(command):
        assert name in words, f"{' '.join(path)}: {name} is not shown whole at {columns} columns:\n{text}"
