"""Progress bars on stderr: one builder for every command's bar.

Every bar reads the same way: what is running, the bar, done/total, any fields of the
command (loss, learning rate), a rate, the elapsed time and the ETA. A bar is live only
when stderr is a terminal; in a log or a pipe it draws nothing (and leaves no empty line
before an error), while lines printed through ``bar.console`` still appear.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from sgma_cli.cli.console import err_console

__all__ = ["Rate", "progress_bar", "counting_bar"]


class Rate(ProgressColumn):
    """Units per second: rich's estimate from the task's progress, or the command's own.

    Args:
        unit: what is counted (``tiles``, ``batch``, ``it``, ``MPix``).
        per_second: reads the rate from a task (e.g. a field the engine measured);
            ``None``: completed steps per second as rich estimates them.
        digits: decimals shown.
    """

    def __init__(
        self,
        unit: str,
        per_second: Callable[[Task], float | None] | None = None,
        digits: int = 2,
    ) -> None:
        super().__init__()
        self.unit = unit
        self.per_second = per_second
        self.digits = digits

    def render(self, task: Task) -> Text:
        """``12.34 tiles/s``, or ``-- tiles/s`` before there is a rate."""
        if self.per_second is not None:
            speed = self.per_second(task)
        else:
            speed = task.finished_speed or task.speed
        if speed is None or speed != speed or speed <= 0:  # none yet, or NaN
            return Text(f"-- {self.unit}/s", style="cyan")
        return Text(f"{speed:.{self.digits}f} {self.unit}/s", style="cyan")


def progress_bar(rate: Rate, *fields: str, transient: bool = True) -> Progress:
    """A bar on stderr: description, bar, done/total, ``fields``, rate, elapsed, ETA.

    Args:
        rate: the rate column.
        fields: rich format strings shown after done/total, e.g.
            ``"loss [cyan]{task.fields[loss]}"``.
        transient: remove the bar when it stops (keep it for long jobs whose last state
            is worth reading, such as training).

    Returns:
        A :class:`rich.progress.Progress`, not started; live only on a terminal.
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(text) for text in fields),
        rate,
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
        disable=not err_console.is_terminal,
    )


@contextmanager
def counting_bar(description: str, unit: str) -> Iterator[Callable[[int, int], None]]:
    """A running bar that counts ``unit`` s; yields its ``update(done, total)`` callback.

    The shape of the progress callbacks the engine takes (``evaluate``, ``prepare``); a
    ``total`` of 0 means not known yet.
    """
    with progress_bar(Rate(unit)) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update
