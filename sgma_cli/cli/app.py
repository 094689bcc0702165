"""The ``sgma`` command: one Typer app, one file per command.

Every command parses its options (the shared ones from :mod:`sgma_cli.cli.options`),
calls one engine function and renders the result. Errors the user can fix
(:class:`~sgma_cli.errors.SgmaError`) become one red line on stderr and the error's exit
code; ``--debug`` shows the traceback instead. Help and option errors: :mod:`sgma_cli.cli.command`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sgma_cli import __version__
from sgma_cli.cli import evaluate, export, predict, prepare, profile, sample, train
from sgma_cli.cli.command import Command, Group, help_text
from sgma_cli.cli.console import guarded, state

__all__ = ["app", "main"]

app = typer.Typer(
    name="sgma",
    help="Segment multi-sensor imagery when some sensors are missing (SGMA: Semantic-Guided "
    "Fusion + Modality-Aware Sampling).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=Group,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sgma {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks for errors.")
    ] = False,
) -> None:
    """sgma: align, train, evaluate and predict with any subset of your sensors."""
    state.debug = debug


for _module in (sample, prepare, train, evaluate, predict, export, profile):
    app.command(_module.__name__.rsplit(".", 1)[-1], help=help_text(_module.__doc__), cls=Command)(
        guarded(_module.command)
    )


def main() -> None:
    """Console-script entry point."""
    app()
