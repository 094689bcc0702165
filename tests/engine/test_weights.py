"""Weight files into models: a checkpoint, and a pretrained backbone file checked for fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from sgma_cli.config.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sgma_cli.engine.weights import load_backbone_weights, load_model
from sgma_cli.errors import CheckpointError
from sgma_cli.model.backbones import create_backbone


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


class TestLocalWeights:
    def test_loads_safetensors(self, tmp_path: Path) -> None:
        torch.manual_seed(3)
        source = timm.create_model("test_resnet", pretrained=False)
        save_file(source.state_dict(), tmp_path / "w.safetensors")
        backbone = create_backbone(
            "test_resnet", weights=load_backbone_weights(tmp_path / "w.safetensors", "test_resnet")
        )
        torch.testing.assert_close(backbone.conv1[0].weight, source.conv1[0].weight)

    def test_loads_pth(self, tmp_path: Path) -> None:
        source = timm.create_model("test_convnext", pretrained=False)
        torch.save(source.state_dict(), tmp_path / "w.pth")
        backbone = create_backbone(
            "test_convnext", weights=load_backbone_weights(tmp_path / "w.pth", "test_convnext")
        )
        torch.testing.assert_close(backbone.stem_0.weight, source.stem[0].weight)

    def test_weights_of_another_model(self, tmp_path: Path) -> None:
        save_file(timm.create_model("test_resnet").state_dict(), tmp_path / "other.safetensors")
        with pytest.raises(ValueError, match="does not fit backbone .test_convnext."):
            load_backbone_weights(tmp_path / "other.safetensors", "test_convnext")
