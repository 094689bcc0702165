"""`profile` reproduces the paper's Table IX (PVT-v2-b2, M = 3, K = 6, 512²)."""

from __future__ import annotations

import pytest

from sgma_cli.config.model import ModalitySpec, SGMAConfig
from sgma_cli.engine.profile import FUSION_PARTS, profile_model
from sgma_cli.errors import ConfigError, UsageError

POTSDAM = (ModalitySpec("rgb", 3), ModalitySpec("dsm", 1), ModalitySpec("nir", 1))


@pytest.fixture(scope="module")
def table_ix():
    return profile_model(SGMAConfig(POTSDAM, 6, "pvt_v2_b2"), size=512)


class TestTableIX:
    def test_backbone_params(self, table_ix) -> None:
        assert table_ix.params["backbone"] == pytest.approx(24.85e6, rel=0.01)

    def test_fusion_params(self, table_ix) -> None:
        assert table_ix.params["fusion"] == pytest.approx(4.79e6, rel=0.01)
        parts = table_ix.params["fusion_parts"]
        assert parts["mp"] == 1_717_248 and parts["csf"] == 6_168
        assert parts["sp"] == parts["rp"] == 1_544_192
        assert sum(parts.values()) == table_ix.params["fusion"]

    def test_backbone_macs(self, table_ix) -> None:
        assert table_ix.macs["backbone"] == pytest.approx(72.92e9, rel=0.02)

    def test_fusion_macs_at_most_the_papers(self, table_ix) -> None:
        assert table_ix.macs["fusion"] <= 9.47e9
        assert table_ix.macs["fusion"] == sum(
            table_ix.macs["fusion_parts"][p] for p in FUSION_PARTS
        )

    def test_parts_add_up_to_total(self, table_ix) -> None:
        m, p = table_ix.macs, table_ix.params
        assert m["backbone"] + m["fusion"] + m["head"] + m["stems"] == m["total"]
        assert p["backbone"] + p["fusion"] + p["head"] + p["stems"] == p["total"]


class TestOtherModels:
    @pytest.mark.parametrize("backbone", ["test_convnext", "test_resnet"])
    @pytest.mark.parametrize("fusion", ["sgf", "sum"])
    def test_latency_and_baselines(self, backbone: str, fusion: str) -> None:
        config = SGMAConfig(POTSDAM[:2], 3, backbone, fusion=fusion, head_dim=16)  # type: ignore[arg-type]
        report = profile_model(config, size=64, latency=True, device="cpu", warmup=1, repeats=1)
        assert report.latency_ms is not None and report.latency_ms > 0
        if fusion == "sum":
            assert report.params["fusion"] == 0 and report.macs["fusion"] == 0
        else:
            assert report.macs["fusion"] > 0

    def test_backbone_macs_scale_with_modalities(self) -> None:
        one = profile_model(SGMAConfig(POTSDAM[:1], 3, "test_convnext"), size=64)
        three = profile_model(SGMAConfig(POTSDAM, 3, "test_convnext"), size=64)
        assert three.macs["backbone"] == 3 * one.macs["backbone"]

    def test_bad_size(self) -> None:
        with pytest.raises(UsageError, match="multiple of 32"):
            profile_model(SGMAConfig(POTSDAM, 3, "test_convnext"), size=100)

    def test_unknown_backbone(self) -> None:
        with pytest.raises(ConfigError, match="did you mean"):
            profile_model(SGMAConfig(POTSDAM, 3, "convnext_tiniest"), size=64)
