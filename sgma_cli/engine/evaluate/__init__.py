"""``sgma evaluate``: a checkpoint on every modality subset, on a prepared split or a scene."""

from sgma_cli.engine.evaluate.compare import Comparison, evaluate_and_compare
from sgma_cli.engine.evaluate.job import CheckpointEvaluation, EvaluateOptions, evaluate_checkpoint
from sgma_cli.engine.evaluate.scene import SceneSource, evaluate_scene

__all__ = [
    "CheckpointEvaluation",
    "Comparison",
    "EvaluateOptions",
    "SceneSource",
    "evaluate_and_compare",
    "evaluate_checkpoint",
    "evaluate_scene",
]
