"""The ``sgma`` command: one Typer app, one file per command.

Every command parses its options, calls one engine function and renders the result.
Errors the user can fix (:class:`~sgma_cli.errors.SgmaError`) become one red line on
stderr and the error's exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sgma_cli import __version__
from sgma_cli.cli import evaluate, predict, prepare, profile, sample, train
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


app.command("sample", help=sample.__doc__)(guarded(sample.command))
app.command("prepare", help=prepare.__doc__)(guarded(prepare.command))
app.command("train", help=train.__doc__)(guarded(train.command))
app.command("evaluate", help=evaluate.__doc__)(guarded(evaluate.command))
app.command("predict", help=predict.__doc__)(guarded(predict.command))
app.command("profile", help=profile.__doc__)(guarded(profile.command))


def main() -> None:
    """Console-script entry point."""
    app()
