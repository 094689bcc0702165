"""The local chunk executor (engine/predict/executors.py): setup once, sgma errors are
failures of their task only, bugs propagate."""

from __future__ import annotations

from typing import Any

import pytest

from sgma_cli.engine.predict.executors import LocalExecutor
from sgma_cli.errors import RasterError


def _work(state: dict[str, int], task: int) -> int:
    if task == 2:
        raise RasterError("unreadable chunk", "c2.tif")
    if task == 9:
        raise ZeroDivisionError("a bug")
    return state["base"] + task


def test_setup_once_results_in_order_errors_per_task() -> None:
    setups: list[int] = []
    results: list[tuple[int, int]] = []
    failures: list[tuple[int, str]] = []

    def setup() -> dict[str, int]:
        setups.append(1)
        return {"base": 100}

    LocalExecutor().run(
        [1, 2, 3],
        setup,
        _work,
        lambda task, result: results.append((task, result)),
        lambda task, error: failures.append((task, str(error))),
    )
    assert setups == [1]
    assert results == [(1, 101), (3, 103)]
    assert failures == [(2, "c2.tif: unreadable chunk")]


def test_no_tasks_no_setup_and_bugs_propagate() -> None:
    def setup() -> Any:
        raise AssertionError("setup must not run without tasks")

    LocalExecutor().run([], setup, _work, lambda *_: None, lambda *_: None)
    with pytest.raises(ZeroDivisionError):
        LocalExecutor().run([9], lambda: {"base": 0}, _work, lambda *_: None, lambda *_: None)
