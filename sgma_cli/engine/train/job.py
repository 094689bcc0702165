"""The ``train`` job: SGMA with Modality-Aware Sampling on a prepared dataset, 1 to N processes.

Use from Python::

    from sgma_cli.config.recipe import load_recipe
    from sgma_cli.engine.train import TrainOptions, train
    options = TrainOptions(data_dir=Path("demo/data"), run_dir=Path("demo/run"))
    result = train(load_recipe(Path("recipes/sample.toml")), options)

:func:`~sgma_cli.engine.train.plan.plan_training` checks everything first; :func:`train`
then runs :func:`run_worker` on one process, on N spawned processes (``--gpus N`` /
``--nproc N``), or as one rank of a ``torchrun`` group. The loop itself lives in
:mod:`sgma_cli.engine.train.loop`.
"""

from __future__ import annotations

import contextlib
import functools

from sgma_cli.config.recipe import Recipe
from sgma_cli.engine.distributed import launch, torchrun_env
from sgma_cli.engine.locks import output_lock
from sgma_cli.engine.train.loop import ProgressCallback, TrainResult, run_loop
from sgma_cli.engine.train.plan import TrainOptions, TrainPlan, plan_training

__all__ = ["run_worker", "train"]


def run_worker(
    rank: int,
    world_size: int,
    plan: TrainPlan,
    progress: ProgressCallback | None = None,
    local_rank: int | None = None,
) -> TrainResult:
    """One rank of the job (rank 0 gets ``progress`` and writes files)."""
    return run_loop(
        plan,
        rank,
        world_size,
        rank if local_rank is None else local_rank,
        progress if rank == 0 else None,
    )


def _spawned(rank: int, world_size: int, plan: TrainPlan) -> TrainResult:
    return run_worker(rank, world_size, plan)


def train(
    recipe: Recipe, options: TrainOptions | None = None, progress: ProgressCallback | None = None
) -> TrainResult:
    """Plan and run a training job; returns rank 0's :class:`TrainResult`.

    Args:
        recipe: a validated recipe (``load_recipe``).
        options: dataset, run folder, device and processes, resume (see :class:`TrainOptions`).
        progress: ``progress(TrainEvent)`` on rank 0.
    """
    plan = plan_training(recipe, options)
    env = torchrun_env()
    if env is not None:
        rank, world, local = env
        # rank 0 holds the run folder's lock for the group (one writer per output)
        held = output_lock(plan.run_dir, "sgma train") if rank == 0 else contextlib.nullcontext()
        with held:
            return run_worker(rank, world, plan, progress, local)
    with output_lock(plan.run_dir, "sgma train"):
        return launch(
            _spawned,
            plan.world_size,
            (plan,),
            main=functools.partial(run_worker, progress=progress),
        )
