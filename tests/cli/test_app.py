"""The command-line edge: help, errors as one line, --debug keeps the traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sgma_cli.cli.app import app
from sgma_cli.errors import ConfigError

runner = CliRunner()


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("sample", "prepare", "train", "evaluate", "predict", "profile"):
        assert command in result.stdout


def test_debug_shows_the_exception() -> None:
    result = runner.invoke(app, ["--debug", "profile", "--backbone", "nope_net"])
    assert isinstance(result.exception, ConfigError)


@pytest.mark.parametrize("args", [["profile", "--num-classes", "1"], ["no-such-command"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert runner.invoke(app, args).exit_code == 2
