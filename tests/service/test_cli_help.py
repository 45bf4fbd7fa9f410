"""`storefront --help` and each command's `--help`: they answer and say what the docstrings say."""

from __future__ import annotations

import inspect

import pytest
import typer
from typer.testing import CliRunner

from service.cli import app

COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]
WIDE = {"COLUMNS": "250", "TERMINAL_WIDTH": "250"}


def _paragraphs(help_text: str | None) -> list[str]:
    return [" ".join(p.split()) for p in inspect.cleandoc(help_text or "").split("\n\n") if p]


def test_every_command_is_listed_with_its_one_line_summary() -> None:
    result = CliRunner().invoke(app, ["--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name, command in COMMANDS.items():
        summary = _paragraphs(command.help)[0]
        assert any(name in line and summary in line for line in lines), (name, summary)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_help_shows_each_docstring_paragraph_as_written(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert f"Usage: storefront {name}" in result.output
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    for paragraph in _paragraphs(COMMANDS[name].help):
        # One line each on a wide terminal: no line break of the source shows up mid-sentence.
        assert any(paragraph in line for line in lines), paragraph
