"""The model config: a plain record that round-trips through dicts of builtins."""

from __future__ import annotations

import json

import pytest

from sgma_cli.config.model import (
    ARCHITECTURE_FIELDS,
    ModalitySpec,
    SGMAConfig,
    check_mp_kernels,
)


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


def test_keys_of_older_checkpoints_read_as_defaults() -> None:
    old = {"modalities": [{"name": "rgb", "bands": 3}], "num_classes": 3, "head_dim": 16}
    config = SGMAConfig.from_dict(old)
    assert config == SGMAConfig((ModalitySpec("rgb", 3),), 3, head_dim=16)
    assert config.prototypes == "sum" and config.mp_kernels == (11, 7, 3)


def test_unknown_key() -> None:
    with pytest.raises(ValueError, match="unknown model config keys"):
        SGMAConfig.from_dict(
            {"modalities": [{"name": "rgb", "bands": 3}], "num_classes": 3, "heads": 2}
        )


def test_architecture_is_every_field_but_the_datasets() -> None:
    assert ARCHITECTURE_FIELDS == (
        "backbone",
        "fusion",
        "stem",
        "sp_heads",
        "rp_heads",
        "mp_kernels",
        "head_dim",
        "head_dropout",
        "mas_granularity",
        "prototypes",
    )
    config = SGMAConfig((ModalitySpec("rgb", 3),), 3, "test_convnext", sp_heads=2)
    arch = config.architecture()
    assert list(arch) == list(ARCHITECTURE_FIELDS)
    assert (arch["backbone"], arch["sp_heads"], arch["rp_heads"]) == ("test_convnext", 2, 4)


def test_checks_nothing_itself() -> None:
    """Values are checked where they are used (the model, the recipe), not in the record."""
    config = SGMAConfig((), 1, fusion="max")  # type: ignore[arg-type]
    assert config.num_classes == 1 and config.fusion == "max"


class TestMPKernels:
    def test_odd_sizes_pass(self) -> None:
        assert check_mp_kernels([11, 7, 3]) == (11, 7, 3)

    @pytest.mark.parametrize("sizes", [(4,), (11, 0), (-3,)])
    def test_even_or_non_positive_sizes(self, sizes: tuple[int, ...]) -> None:
        with pytest.raises(ValueError, match=r"MP kernel sizes must be odd and positive, got \("):
            check_mp_kernels(sizes)
