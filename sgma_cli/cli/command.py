"""The Typer classes behind ``sgma``: help that reads well, option errors on one line.

* Typer's rich help keeps every line break of a docstring, so a docstring wrapped at 88
  columns breaks mid-sentence in an 80-column terminal. :func:`help_text` joins the
  lines of each paragraph and lets the terminal wrap them; indented lines (examples)
  stay as written.
* Typer prints a value type for every option, ``<bool>`` for a flag that takes none;
  :class:`Command` and :class:`Group` show flags as plain flags.
* An option Typer itself refuses (out of its bounds, not a choice, missing) becomes one
  ``error:`` line with exit code 2, like every error the engine raises, instead of a
  usage box.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from typing import Any

from rich.text import Text
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # Typer's own Click
from typer.core import TyperCommand, TyperGroup
from typer.exceptions import Abort

from sgma_cli.cli.console import err_console

__all__ = ["help_text", "Command", "Group"]


def help_text(doc: str | None) -> str:
    """A docstring as help text: each paragraph's lines joined; indented lines kept.

    Paragraphs are separated by a blank line. A line that starts with a space (an
    example command) stays on a line of its own, as does the line after it.
    """
    paragraphs = []
    for paragraph in inspect.cleandoc(doc or "").split("\n\n"):
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not line.startswith(" ") and not lines[-1].startswith(" "):
                lines[-1] = f"{lines[-1]} {line.strip()}"
            else:
                lines.append(line.rstrip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _plain_flags(params: list[Any]) -> list[Any]:
    """Give flags (``--resume``, ``--help``) an empty metavar, so no type is shown."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


def _usage_error(error: ClickException) -> str:
    """``Invalid value for '--overlap': 0.95 is not in the range 0<=x<=0.9 (see ...)``."""
    message = error.format_message().rstrip(".")
    ctx = getattr(error, "ctx", None)
    return f"{message} (see {ctx.command_path} --help)" if ctx is not None else message


class Command(TyperCommand):
    """A Typer command whose help shows flags without a ``<bool>`` type."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_flags(super().get_params(ctx))


class Group(TyperGroup):
    """The ``sgma`` group: plain flags in its help, and option errors on one line."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_flags(super().get_params(ctx))

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command line; a usage error prints ``error: ...`` and exits with 2."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as error:  # the help was shown
            sys.exit(error.exit_code)
        except ClickException as error:
            line = Text.assemble(("error: ", "bold red"), _usage_error(error))
            err_console.print(line, soft_wrap=True)
            sys.exit(error.exit_code)
        except Abort:
            err_console.print("aborted", style="yellow")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)
