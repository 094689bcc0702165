"""The one progress-bar builder: columns with rate and ETA, nothing live off a terminal."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.progress import Progress, TimeRemainingColumn

from sgma_cli.cli import progress as progress_module
from sgma_cli.cli.progress import Rate, counting_bar, progress_bar


def _task(bar: Progress, **fields: object) -> object:
    task_id = bar.add_task("x", total=10, **fields)
    return bar.tasks[task_id]


class TestRate:
    def test_no_rate_yet(self) -> None:
        bar = progress_bar(Rate("tiles"))
        assert Rate("tiles").render(_task(bar)).plain == "-- tiles/s"  # type: ignore[arg-type]

    def test_rate_from_a_field(self) -> None:
        bar = progress_bar(Rate("it"))
        task = _task(bar, rate=3.14159)
        rate = Rate("it", per_second=lambda t: t.fields["rate"], digits=1)
        assert rate.render(task).plain == "3.1 it/s"  # type: ignore[arg-type]
        nan = Rate("it", per_second=lambda t: float("nan"))
        assert nan.render(task).plain == "-- it/s"  # type: ignore[arg-type]


class TestProgressBar:
    def test_columns(self) -> None:
        bar = progress_bar(Rate("batch"), "loss {task.fields[loss]}")
        kinds = [type(c).__name__ for c in bar.columns]
        assert kinds == [
            "TextColumn",
            "BarColumn",
            "MofNCompleteColumn",
            "TextColumn",
            "Rate",
            "TimeElapsedColumn",
            "TextColumn",
            "TimeRemainingColumn",
        ]
        assert isinstance(bar.columns[-1], TimeRemainingColumn)  # the ETA

    def test_not_live_off_a_terminal(self, monkeypatch: pytest.MonkeyPatch) -> None:
        stream = io.StringIO()
        monkeypatch.setattr(progress_module, "err_console", Console(file=stream))
        assert not progress_module.err_console.is_terminal
        with counting_bar("evaluating", "batch") as update:
            update(3, 10)
            update(10, 10)
        assert stream.getvalue() == ""  # no bar and no empty line in a log

    def test_live_on_a_terminal(self, monkeypatch: pytest.MonkeyPatch) -> None:
        stream = io.StringIO()
        console = Console(file=stream, force_terminal=True, width=100)
        monkeypatch.setattr(progress_module, "err_console", console)
        bar = progress_bar(Rate("tiles", digits=1), transient=False)
        with bar:
            task = bar.add_task("tiles", total=4)
            bar.update(task, completed=4)
        assert "tiles" in stream.getvalue() and "4/4" in stream.getvalue()
