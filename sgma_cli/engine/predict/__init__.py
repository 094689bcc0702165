"""``sgma predict``: whole scenes by sliding windows, written as georeferenced outputs.

The names below are imported on first use, so that a process that needs only a light
module of this package (a Ray worker unpickling ``ray_executor``, the chunk executors)
does not import torch with the package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sgma_cli.engine.predict.job import PredictJob, PredictResult, predict_scene, run_predict

__all__ = ["PredictJob", "PredictResult", "predict_scene", "run_predict"]


def __getattr__(name: str) -> Any:
    """Import the job module's public names when first asked for."""
    if name in __all__:
        from sgma_cli.engine.predict import job

        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
