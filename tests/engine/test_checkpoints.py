"""Rebuilding a model from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sgma_cli.config.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sgma_cli.engine.checkpoints import load_model
from sgma_cli.errors import CheckpointError


def test_same_weights_eval_mode(tiny_checkpoint: Path) -> None:
    model, meta = load_model(tiny_checkpoint)
    saved = load_checkpoint(tiny_checkpoint).model
    assert not model.training and meta.modality_names == list(model.modality_names)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_weights_that_do_not_fit(tiny_checkpoint: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    broken = dict(ckpt.model)
    broken.pop(next(iter(broken)))
    path = save_checkpoint(tmp_path / "broken.pt", Checkpoint(ckpt.meta, broken))
    with pytest.raises(CheckpointError, match="weights do not fit the model config"):
        load_model(path)
