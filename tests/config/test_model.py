"""The model config round-trips through plain dicts and rebuilds the same model."""

from __future__ import annotations

import json

import pytest
import torch

from sgma_cli.config.model import ModalitySpec, SGMAConfig
from sgma_cli.engine.weights import build_model


def test_round_trip_through_json() -> None:
    config = SGMAConfig(
        (ModalitySpec("rgb", 3), ModalitySpec("sar", 2)),
        6,
        "test_resnet",
        fusion="mean",
        head_dim=64,
    )
    again = SGMAConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.modality_names == ("rgb", "sar")


def test_build_uses_every_field() -> None:
    config = SGMAConfig(
        (ModalitySpec("rgb", 3),), 5, "test_convnext", sp_heads=4, rp_heads=2, head_dim=16
    )
    model = build_model(config)
    assert model.fusions[0].sp.num_heads == 4 and model.fusions[0].rp.num_heads == 2
    assert model.head.classifier.out_channels == 5
    torch.manual_seed(0)
    a = build_model(config).state_dict()
    torch.manual_seed(0)
    b = build_model(config).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"modalities": ()}, "at least one modality"),
        ({"num_classes": 1}, "at least 2"),
        ({"fusion": "max"}, "unknown fusion"),
        ({"modalities": (ModalitySpec("rgb", 3), ModalitySpec("rgb", 1))}, "unique"),
    ],
)
def test_invalid(kwargs: dict, match: str) -> None:
    base = {"modalities": (ModalitySpec("rgb", 3),), "num_classes": 3}
    with pytest.raises(ValueError, match=match):
        SGMAConfig(**{**base, **kwargs})


def test_unknown_key() -> None:
    with pytest.raises(ValueError, match="unknown model config keys"):
        SGMAConfig.from_dict(
            {"modalities": [{"name": "rgb", "bands": 3}], "num_classes": 3, "heads": 2}
        )
