"""`--help` of every command and sub-command: flags take no value, no text is eaten by markup."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

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
    params = [p for p in command.params]
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
