"""Chunk executors: where the independent chunks of a region job run.

A region job (:mod:`sgma_cli.engine.predict.region`) cuts its region into chunks and hands
them to a :class:`ChunkExecutor`. The executor builds per-worker state once with ``setup``
(e.g. the loaded model), calls ``work(state, task)`` for every task and reports each
result (or failure) back to the driver through ``on_result``/``on_failure``, in completion
order. :class:`LocalExecutor` runs everything in this process, one task after the other;
``sgma_cli.engine.predict.ray_executor.RayExecutor`` runs them on a Ray cluster.

Rules every executor and every ``work`` function follow:

* tasks and results are small picklable dataclasses (no arrays);
* ``work`` reads the sources itself (paths or URLs on shared storage) and writes its
  outputs under the run folder itself (temporary name, then rename), so nothing large
  passes through the driver; it is idempotent, a retried task overwrites its own
  temporary files;
* an :class:`~sgma_cli.errors.SgmaError` raised by ``work`` is a task failure, reported
  through ``on_failure`` and not retried (bad input does not improve); a worker process
  that dies (killed, out of memory) is retried by executors that have worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from sgma_cli.errors import SgmaError

__all__ = ["ChunkExecutor", "LocalExecutor"]

T = TypeVar("T")  # a task: a small picklable dataclass (chunk id, pixel window, options)
S = TypeVar("S")  # per-worker state, built once per worker by `setup` (e.g. the loaded model)
R = TypeVar("R")  # a result: a small picklable dataclass (status, seconds, paths, counts)


class ChunkExecutor(Protocol):
    """Runs independent tasks, each with per-worker state built once by ``setup``."""

    def run(
        self,
        tasks: Sequence[T],
        setup: Callable[[], S],
        work: Callable[[S, T], R],
        on_result: Callable[[T, R], None],
        on_failure: Callable[[T, BaseException], None],
    ) -> None:
        """Run ``work(state, task)`` for every task; report each outcome on the driver.

        Args:
            tasks: the tasks, small picklable dataclasses.
            setup: builds one worker's state (picklable: a module-level function or a
                ``functools.partial`` of one); called once per worker.
            work: computes one task and writes its files itself (picklable).
            on_result: called on the driver with each finished task and its result, in
                completion order.
            on_failure: called on the driver with a task that failed for good and its
                exception (an ``SgmaError`` raised by ``work``, or retries exhausted).
        """
        ...


class LocalExecutor:
    """Every task in this process, one after the other (``setup`` called once).

    An :class:`~sgma_cli.errors.SgmaError` from ``work`` goes to ``on_failure`` and the
    next task runs; any other exception is a bug and propagates with its traceback.
    ``setup`` is only called when there is at least one task.
    """

    def run(
        self,
        tasks: Sequence[Any],
        setup: Callable[[], Any],
        work: Callable[[Any, Any], Any],
        on_result: Callable[[Any, Any], None],
        on_failure: Callable[[Any, BaseException], None],
    ) -> None:
        """Run the tasks in order in this process; see :meth:`ChunkExecutor.run`."""
        if not tasks:
            return
        state = setup()
        for task in tasks:
            try:
                result = work(state, task)
            except SgmaError as error:
                on_failure(task, error)
                continue
            on_result(task, result)
