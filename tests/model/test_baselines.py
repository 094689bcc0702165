"""Sum and mean fusion baselines over the available modalities."""

from __future__ import annotations

import pytest
import torch

from sgma_cli.model.baselines import PoolingFusion
from sgma_cli.model.sgma import SGMA


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_pools_available_modalities(reduction: str) -> None:
    feats = torch.stack(
        [torch.full((1, 2, 2, 2), v) for v in (1.0, 2.0, 4.0)], dim=1
    )  # (B, M, C, H, W)
    available = torch.ones(1, 3, 2, 2, dtype=torch.bool)
    available[0, 2, 0, 0] = False
    fusion = PoolingFusion(reduction)  # type: ignore[arg-type]
    cache = fusion(feats, (0, 1, 2), available)
    fused, weights = fusion.fuse(cache, torch.tensor([[True, True, True]]), (2, 2))
    expected = torch.tensor([[3.0, 7.0], [7.0, 7.0]])
    if reduction == "mean":
        expected = expected / torch.tensor([[2.0, 3.0], [3.0, 3.0]])
    torch.testing.assert_close(fused[0, 0], expected)
    torch.testing.assert_close(weights.sum(1), torch.ones(1, 2, 2))


@pytest.mark.parametrize("fusion", ["sum", "mean"])
def test_baseline_model_has_no_fusion_parameters(fusion: str) -> None:
    model = SGMA([("rgb", 3), ("dsm", 1)], 3, "test_convnext", fusion=fusion, head_dim=16)  # type: ignore[arg-type]
    assert sum(p.numel() for p in model.fusions.parameters()) == 0
    out = model.eval()({"rgb": torch.randn(1, 3, 64, 64)})
    assert out.logits.shape == (1, 3, 64, 64)


def test_unknown_fusion() -> None:
    with pytest.raises(ValueError, match="unknown fusion 'concat'"):
        SGMA([("rgb", 3)], 3, "test_convnext", fusion="concat")  # type: ignore[arg-type]
