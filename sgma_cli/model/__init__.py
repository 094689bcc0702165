"""SGMA model: pure ``nn.Module``s that receive tensors; the engine reads weight files."""

from sgma_cli.config.model import ModalitySpec, SGMAConfig
from sgma_cli.model.backbones import BACKBONES, create_backbone
from sgma_cli.model.outputs import Encoded, Fused, SegmentationOutput, TrainOutput
from sgma_cli.model.sgma import SGMA

__all__ = [
    "BACKBONES",
    "SGMA",
    "Encoded",
    "Fused",
    "ModalitySpec",
    "SGMAConfig",
    "SegmentationOutput",
    "TrainOutput",
    "create_backbone",
]
