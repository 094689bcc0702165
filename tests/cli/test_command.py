"""`--help` in an 80-column terminal, flags shown as flags, option errors on one line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sgma_cli.cli.app import app
from sgma_cli.cli.command import help_text

runner = CliRunner()
COMMANDS = ("sample", "prepare", "train", "evaluate", "predict", "profile")


def _help(*args: str) -> list[str]:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def _description(lines: list[str]) -> list[list[str]]:
    """The paragraphs between the usage line and the first panel, as lists of lines."""
    start = next(i for i, line in enumerate(lines) if "Usage:" in line) + 1
    end = next(i for i, line in enumerate(lines) if line.startswith("╭"))
    paragraphs: list[list[str]] = [[]]
    for line in lines[start:end]:
        if line.strip():
            paragraphs[-1].append(line.rstrip())
        elif paragraphs[-1]:
            paragraphs.append([])
    return [p for p in paragraphs if p]


class TestHelp:
    def test_help_text_joins_paragraph_lines_and_keeps_examples(self) -> None:
        doc = """Summary line.

        First paragraph,
        wrapped in the source.

        Examples:
          sgma one
          sgma two
        """
        assert help_text(doc) == (
            "Summary line.\n\nFirst paragraph, wrapped in the source.\n\n"
            "Examples:\n  sgma one\n  sgma two"
        )

    @pytest.mark.parametrize("command", COMMANDS)
    def test_paragraphs_fill_80_columns(self, command: str) -> None:
        lines = _help(command)
        assert max(len(line) for line in lines) <= 80
        paragraphs = _description(lines)
        assert len(paragraphs) >= 1
        for paragraph in paragraphs:
            if paragraph[-1].startswith("   "):  # examples: one command a line
                assert all(len(line) <= 79 for line in paragraph)
                continue
            # a line breaks only where the next word does not fit: never mid-sentence
            for line, after in zip(paragraph, paragraph[1:]):
                next_word = after.split()[0]
                assert len(line) + 1 + len(next_word) > 78, (line, after)

    @pytest.mark.parametrize("command", [(), *((c,) for c in COMMANDS)])
    def test_flags_have_no_type(self, command: tuple[str, ...]) -> None:
        text = "\n".join(_help(*command))
        assert "<bool>" not in text
        assert "--help" in text

    def test_arguments_named_as_in_the_docs(self) -> None:
        assert "{SRC_DIR}" in "\n".join(_help("prepare"))
        assert "[SCENE_DIR]" in "\n".join(_help("predict"))


class TestOptionErrors:
    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["profile", "--num-classes", "1"], "'--num-classes'"),
            (["profile", "--device", "gpu"], "'--device': 'gpu': use auto, cpu, cuda or cuda:N"),
            (["prepare"], "Missing argument 'SRC_DIR'"),
            (["no-such-command"], "No such command 'no-such-command'"),
        ],
    )
    def test_one_line_exit_2(self, args: list[str], message: str) -> None:
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
        assert "--help)" in lines[0]  # points at the command's help

    def test_no_arguments_shows_the_help(self) -> None:
        result = runner.invoke(app, [])
        assert result.exit_code == 2 and "Usage: sgma" in result.output
