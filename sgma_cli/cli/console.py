"""Shared console plumbing for the commands: stdout/stderr consoles and the error edge."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from sgma_cli.errors import SgmaError

__all__ = ["console", "err_console", "state", "guarded", "warn"]

#: Tables, reports and JSON go to stdout.
console = Console(highlight=False, soft_wrap=False)
#: Progress, warnings and errors go to stderr, so ``--json`` output stays clean.
err_console = Console(stderr=True, highlight=False)

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class _State:
    debug: bool = False


state = _State()


def warn(message: str) -> None:
    """One yellow warning line on stderr."""
    err_console.print(Text.assemble(("warning: ", "yellow"), message), soft_wrap=True)


def guarded(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command: :class:`SgmaError` -> one red line on stderr + its exit code.

    With ``sgma --debug`` the exception propagates with its traceback. Other exceptions
    are bugs and always keep theirs.
    """

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except SgmaError as error:
            if state.debug:
                raise
            err_console.print(Text.assemble(("error: ", "bold red"), str(error)), soft_wrap=True)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", style="yellow")
            raise typer.Exit(130) from None

    return wrapper
