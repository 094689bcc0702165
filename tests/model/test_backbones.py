"""Backbones: 4 scales at strides 4-32 from any timm encoder; local weights only."""

from __future__ import annotations

import pytest
import timm
import torch

from sgma_cli.model.backbones import FEATURE_STRIDES, backbone_channels, create_backbone


class TestCreateBackbone:
    @pytest.mark.parametrize("name", ["test_convnext", "test_resnet", "test_efficientnet"])
    def test_four_scales(self, name: str) -> None:
        backbone = create_backbone(name)
        feats = backbone(torch.zeros(1, 3, 64, 64))
        assert [64 // f.shape[-1] for f in feats] == list(FEATURE_STRIDES)
        assert [f.shape[1] for f in feats] == backbone_channels(backbone)

    @pytest.mark.parametrize(
        ("name", "params"),
        [("pvt_v2_b2", 24_849_856), ("pvt_v2_b0", 3_409_760), ("resnet18", 11_176_512)],
    )
    def test_paper_backbones_on_meta(self, name: str, params: int) -> None:
        backbone = create_backbone(name, device="meta")
        assert sum(p.numel() for p in backbone.parameters()) == params

    def test_unknown_name_suggests(self) -> None:
        with pytest.raises(ValueError, match="unknown backbone 'pvt_v2_b9'; did you mean pvt_v2_b"):
            create_backbone("pvt_v2_b9")

    def test_no_four_scales(self) -> None:
        with pytest.raises(ValueError, match="test_vit"):
            create_backbone("test_vit")


class TestStateDictWeights:
    def test_takes_a_state_dict(self) -> None:
        torch.manual_seed(3)
        source = timm.create_model("test_resnet", pretrained=False)
        backbone = create_backbone("test_resnet", weights=source.state_dict())
        torch.testing.assert_close(backbone.conv1[0].weight, source.conv1[0].weight)
