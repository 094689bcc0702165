"""The dataset manifest schema: round trip, one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgma_cli.config.dataset import DatasetManifest, load_manifest, save_manifest
from sgma_cli.errors import DatasetError


def test_round_trip(tiny_dataset: Path) -> None:
    manifest = load_manifest(tiny_dataset)
    assert manifest.class_names == ["ground", "building", "tree"]
    assert manifest.modality_names == ["rgb", "dsm", "sar"]
    assert manifest.modality("rgb").optical and manifest.modality("sar").stats.mean == [-12.0]
    save_manifest(manifest, tiny_dataset)
    assert load_manifest(tiny_dataset / "dataset.toml") == manifest


def test_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no dataset.toml here; run `sgma prepare` first"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (("tile_size = 64", "tile_sise = 64"), "unknown key tile_sise; did you mean tile_size"),
        (("tile_size = 64", "tile_size = -1"), "tile_size: Input should be greater than 0"),
        (('name = "tiny"', "name = "), "not valid TOML"),
    ],
)
def test_bad_manifest_is_one_line(tiny_dataset: Path, edit: tuple[str, str], match: str) -> None:
    path = tiny_dataset / "dataset.toml"
    path.write_text(path.read_text().replace(*edit))
    with pytest.raises(DatasetError, match=match) as info:
        load_manifest(tiny_dataset)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_stats_must_match_bands() -> None:
    with pytest.raises(ValueError, match="stats have 1 bands, expected 3"):
        DatasetManifest.model_validate(
            {
                "tile_size": 8,
                "stride": 8,
                "classes": [{"name": "a"}, {"name": "b"}],
                "modalities": [
                    {
                        "name": "rgb",
                        "bands": 3,
                        "stats": {"mean": [0], "std": [1], "p2": [0], "p98": [1]},
                    }
                ],
            }
        )
