"""``sgma train``: plan (every check first), then run the loop on 1 to N processes."""

from sgma_cli.engine.train.job import train
from sgma_cli.engine.train.loop import TrainEvent, TrainResult
from sgma_cli.engine.train.plan import TrainOptions, TrainPlan, plan_training

__all__ = ["TrainEvent", "TrainOptions", "TrainPlan", "TrainResult", "plan_training", "train"]
