"""``sgma evaluate``: a checkpoint on every modality subset, on a prepared split or a scene."""

from sgma_cli.engine.evaluate.job import CheckpointEvaluation, evaluate_checkpoint, evaluate_scene

__all__ = ["CheckpointEvaluation", "evaluate_checkpoint", "evaluate_scene"]
