"""Prediction on several devices: batches of windows dealt round-robin to worker processes.

``sgma predict --gpus N`` (or ``--device cpu --nproc N``) starts one worker per device from
a clean ``forkserver``; each loads the model once (a checkpoint, or a graph written by
``sgma export``, see :func:`~sgma_cli.engine.predict.runners.load_runner`) and computes the
batches it is dealt with :func:`~sgma_cli.engine.predict.inference.local_results`, while the
parent process
reads windows ahead, assembles the results in order and is the only writer.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import os
import queue
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch

from sgma_cli.config.checkpoint import CheckpointMeta
from sgma_cli.data.scene import Scene
from sgma_cli.data.window_grid import WindowSpec
from sgma_cli.engine.device import resolve_device
from sgma_cli.engine.predict.inference import GDAL_CACHE_MB, local_results
from sgma_cli.engine.predict.runners import load_runner
from sgma_cli.errors import SgmaError

__all__ = ["WorkerPlan", "worker_results"]


@dataclass(frozen=True)
class WorkerPlan:
    """Compute windows in worker processes, one per device.

    Attributes:
        checkpoint: the model file each worker loads.
        devices: one device per worker, e.g. ``["cuda:0", "cuda:1"]`` or ``["cpu", "cpu"]``.
        threads: CPU threads per worker (``None``: cores / workers).
        graph: ``checkpoint`` is a ``.onnx``/``.pt2`` file written by ``sgma export``.
        compile: each worker compiles its model (``None``: on CUDA only).
    """

    checkpoint: Path
    devices: tuple[str, ...]
    threads: int | None = None
    graph: bool = False
    compile: bool | None = None


# ---------------------------------------------------------------- worker processes
def _worker_main(
    rank: int,
    plan: WorkerPlan,
    scene: Scene,
    batches: list[list[WindowSpec]],
    precision: str,
    robustness: bool,
    prefetch: int,
    out: multiprocessing.queues.Queue,  # type: ignore[type-arg]
) -> None:
    """One worker process: load the model on its device, compute its batches, send results."""
    try:
        torch.set_num_threads(plan.threads or max(1, (os.cpu_count() or 1) // len(plan.devices)))
        device = resolve_device(plan.devices[rank])
        loaded = load_runner(
            plan.checkpoint, device, graph=plan.graph, precision=precision, compile=plan.compile
        )
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
            for windows, values, valid in local_results(
                loaded.runner,
                loaded.meta,
                scene,
                batches,
                robustness=robustness,
                prefetch=prefetch,
            ):
                out.put(("ok", windows, values, valid))
        out.put(("done", rank, None, None))
    except SgmaError as err:
        out.put(("error", err, None, None))
    except Exception:  # noqa: BLE001 - a bug in a worker: send its traceback to the parent
        out.put(("bug", traceback.format_exc(), None, None))


def worker_results(
    plan: WorkerPlan,
    meta: CheckpointMeta,
    scene: Scene,
    batches: Sequence[Sequence[WindowSpec]],
    *,
    precision: str = "auto",
    robustness: bool = False,
    prefetch: int = 2,
) -> Iterator[tuple[list[WindowSpec], np.ndarray | None, np.ndarray | None]]:
    """Like :func:`local_results`, computed by one worker process per device in ``plan``.

    Batches are dealt round-robin (batch ``i`` to worker ``i % N``) so the workers move
    down the scene together and the row buffer stays small.

    Raises:
        SgmaError: what a worker raised (e.g. :class:`CheckpointError`).
        RuntimeError: a worker crashed or hit a bug (its traceback is in the message).
    """
    n = len(plan.devices)
    # forkserver: a clean server process (no CUDA, no thread pools) imports sgma once and
    # forks the workers, so they start in a fraction of a second instead of re-importing torch
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["sgma_cli.engine.predict.workers"])
    results: multiprocessing.queues.Queue = ctx.Queue(maxsize=2 * n)  # type: ignore[type-arg]
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(
                r,
                plan,
                scene,
                [list(b) for b in batches[r::n]],
                precision,
                robustness,
                prefetch,
                results,
            ),
            name=f"sgma-predict-{r}",
            daemon=True,
        )
        for r in range(n)
    ]
    for p in procs:
        p.start()
    running = n
    try:
        while running:
            try:
                kind, a, b, c = results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(
                        f"prediction worker {dead[0].name} died (exit code {dead[0].exitcode})"
                    ) from None
                continue
            if kind == "ok":
                yield a, b, c
            elif kind == "done":
                running -= 1
            elif kind == "error":
                raise a
            else:
                raise RuntimeError(f"prediction worker failed:\n{a}")
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=10)
        results.close()


# ------------------------------------------------------------------------- the job
