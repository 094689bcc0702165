"""Reading prepared tiles: georeference kept, masks in the asked order, normalised pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from sgma_cli.data.tile_dataset import TileDataset
from sgma_cli.errors import DatasetError


class TestTileDataset:
    def test_sample_contents(self, tiny_dataset: Path) -> None:
        ds = TileDataset(tiny_dataset, "train")
        assert len(ds) == 4
        sample = ds[1]  # odd tile: the SAR swath ends mid-tile
        assert (
            sample["image"]["rgb"].shape == (3, 64, 64)
            and sample["image"]["sar"].dtype == torch.float32
        )
        assert sample["mask"].shape == (3, 64, 64)
        assert sample["mask"][2, :, :32].all() and not sample["mask"][2, :, 32:].any()
        assert (sample["image"]["sar"][:, :, 32:] == 0).all()  # unseen -> 0 after normalisation
        assert sample["crs"] == "EPSG:32633"
        assert sample["transform"][0].item() == 0.5
        with rasterio.open(tiny_dataset / "tiles/train/train_001/dsm.tif") as src:
            raw = src.read(1)
        torch.testing.assert_close(sample["image"]["dsm"][0], torch.from_numpy((raw - 4.0) / 5.0))

    def test_subset_and_order(self, tiny_dataset: Path) -> None:
        ds = TileDataset(tiny_dataset, "val", modalities=["sar", "rgb"])
        sample = ds[1]
        assert list(sample["image"]) == ["sar", "rgb"]
        assert not sample["mask"][0, :, 32:].any() and sample["mask"][1].all()

    def test_transform_sees_raw_values(self, tiny_dataset: Path) -> None:
        seen = {}

        def flip(sample):
            seen["max"] = float(np.nanmax(sample["image"]["rgb"]))
            sample["label"] = sample["label"][:, ::-1]
            return sample

        flipped = TileDataset(tiny_dataset, "test", transform=flip)[0]["label"]
        plain = TileDataset(tiny_dataset, "test")[0]["label"]
        assert seen["max"] > 100  # raw sensor values, not normalised
        assert torch.equal(flipped, plain.flip(-1))

    def test_unknown_modality(self, tiny_dataset: Path) -> None:
        with pytest.raises(DatasetError, match=r"modalities \['nir'\] are not in the dataset"):
            TileDataset(tiny_dataset, "train", modalities=["nir"])
