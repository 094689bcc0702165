"""Model fixtures: small SGMA models over rgb (3 bands), dsm (1) and sar (2), K = 4."""

from __future__ import annotations

from itertools import combinations

import pytest
import torch

from sgma_cli.model.sgma import SGMA

MODALITIES = [("rgb", 3), ("dsm", 1), ("sar", 2)]
NAMES = [n for n, _ in MODALITIES]
SUBSETS = [c for k in (3, 2, 1) for c in combinations(NAMES, k)]
TINY_BACKBONES = ["test_convnext", "test_resnet"]
#: (backbone, prototypes) of the ``model`` fixture: every weighting on one tiny backbone,
#: the other backbone with the literal sum.
MODEL_PARAMS = [
    ("test_convnext", "sum"),
    ("test_convnext", "mean"),
    ("test_convnext", "softmax"),
    ("test_resnet", "sum"),
]
SIZE = 64


def subset_id(subset: tuple[str, ...]) -> str:
    return "+".join(subset)


@pytest.fixture(scope="module", params=MODEL_PARAMS, ids=lambda p: "-".join(p))
def model(request: pytest.FixtureRequest) -> SGMA:
    """An SGMA model in eval mode (seeded) with a tiny timm backbone and a prototype weighting."""
    backbone, prototypes = request.param
    torch.manual_seed(0)
    return SGMA(
        MODALITIES,
        num_classes=4,
        backbone=backbone,
        sp_heads=8,
        rp_heads=4,
        head_dim=32,
        prototypes=prototypes,
    ).eval()


def prototype_kind(model: SGMA) -> str:
    """The prototype weighting an SGMA model was built with."""
    return model.fusions[0].csf.prototypes


@pytest.fixture
def images() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {n: torch.randn(2, b, SIZE, SIZE, generator=g) for n, b in MODALITIES}


@pytest.fixture
def swath_mask() -> torch.Tensor:
    """(B, M, H, W): rgb has a hole, dsm nodata stripes, the sar swath ends mid-tile, and a
    corner that no sensor saw."""
    mask = torch.ones(2, 3, SIZE, SIZE, dtype=torch.bool)
    mask[:, 0, 8:40, 8:24] = False
    mask[:, 1, :, 36:44] = False
    mask[0, 2, :, 40:] = False
    mask[1, 2, 20:, :] = False
    mask[:, :, 56:, 56:] = False
    return mask
