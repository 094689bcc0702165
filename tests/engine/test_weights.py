"""Models from configs and weight files: build_model, a checkpoint, a pretrained backbone file."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from sgma_cli.config.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sgma_cli.config.model import ARCHITECTURE_FIELDS, ModalitySpec, SGMAConfig
from sgma_cli.engine.weights import build_model, load_backbone_weights, load_model
from sgma_cli.errors import CheckpointError
from sgma_cli.model.backbones import create_backbone
from sgma_cli.model.sgma import SGMA

RGB = ModalitySpec("rgb", 3)


class TestBuildModel:
    def test_uses_every_field(self) -> None:
        config = SGMAConfig(
            (RGB, ModalitySpec("sar", 2)),
            5,
            "test_convnext",
            stem="learned",
            sp_heads=4,
            rp_heads=2,
            mp_kernels=(5, 3),
            head_dim=16,
            head_dropout=0.3,
            mas_granularity="batch",
            prototypes="softmax",
        )
        model = build_model(config)
        sgf = model.fusions[0]
        assert sgf.sp.num_heads == 4 and sgf.rp.num_heads == 2 and sgf.csf.prototypes == "softmax"
        assert [c.kernel_size for c in sgf.projectors[1].depthwise] == [(5, 5), (3, 3)]
        assert model.stems["sar"].proj is not None and model.mas_granularity == "batch"
        assert model.head.fuse.out_channels == 16 and model.head.classifier.out_channels == 5
        assert model.head.dropout.p == 0.3
        torch.manual_seed(0)
        a = build_model(config).state_dict()
        torch.manual_seed(0)
        b = build_model(config).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)

    def test_sgma_takes_every_architecture_field_with_the_configs_default(self) -> None:
        params = inspect.signature(SGMA).parameters
        defaults = SGMAConfig((RGB,), 3)
        for name in ARCHITECTURE_FIELDS:
            assert name in params, name
            default, expected = params[name].default, getattr(defaults, name)
            assert (tuple(default) if isinstance(expected, tuple) else default) == expected, name

    @pytest.mark.parametrize(
        ("changes", "match"),
        [
            ({"modalities": ()}, "at least one modality"),
            ({"modalities": (RGB, ModalitySpec("rgb", 1))}, "unique"),
            ({"num_classes": 1}, "at least 2"),
            ({"fusion": "max"}, "unknown fusion 'max'; use 'sgf', 'sum' or 'mean'"),
            ({"mas_granularity": "epoch"}, "unknown MAS granularity 'epoch'"),
            ({"mp_kernels": (4,)}, "MP kernel sizes must be odd"),
            ({"sp_heads": 5}, "must divide the channel count"),
        ],
    )
    def test_the_models_checks_run(self, changes: dict, match: str) -> None:
        config = SGMAConfig(**{"modalities": (RGB,), "num_classes": 3, **changes})
        with pytest.raises(ValueError, match=match):
            build_model(config, device="meta")


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
