"""Rebuild a trained model from a checkpoint file, for evaluate and predict."""

from __future__ import annotations

from pathlib import Path

import torch

from sgma_cli.config.checkpoint import CheckpointMeta, load_checkpoint
from sgma_cli.errors import CheckpointError
from sgma_cli.model.sgma import SGMA

__all__ = ["load_model"]


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[SGMA, CheckpointMeta]:
    """The model in eval mode on ``device`` and the checkpoint's metadata.

    Raises:
        CheckpointError: unreadable file, not an sgma checkpoint, or weights that do not
            fit the model config they came with.
    """
    ckpt = load_checkpoint(path)
    config = ckpt.meta.model_config_()
    try:
        model = config.build()
    except ValueError as err:
        raise CheckpointError(f"cannot rebuild the model: {err}", path) from None
    try:
        model.load_state_dict(ckpt.model)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0][:200]
        raise CheckpointError(f"weights do not fit the model config ({first})", path) from None
    return model.to(device).eval(), ckpt.meta
