"""Tests of the joint training augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sgma_cli.data.tile_dataset import TileDataset
from sgma_cli.data.transforms import AugmentConfig, JointAugment

MODALITIES = [("rgb", 3, True), ("dsm", 1, False), ("sar", 1, False)]


def raw_sample(size: int = 64) -> dict:
    """A sample whose every band encodes the pixel position, so joint motion is checkable."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    code = yy * size + xx
    mask = np.ones((3, size, size), dtype=bool)
    mask[2, :, size // 2 :] = False  # SAR swath ends mid-tile
    sar = code[None].copy()
    sar[:, ~mask[2]] = np.nan
    label = code.astype(np.int64) % 3
    label[:2, :2] = 255
    return {
        "image": {
            "rgb": np.stack([code, code + 1, code + 2]),
            "dsm": code[None].copy(),
            "sar": sar,
        },
        "mask": mask,
        "label": label,
        "tile_id": "t",
        "crs": "EPSG:32633",
        "transform": (1, 0, 0, 0, -1, 0),
    }


class TestJointAugment:
    def test_geometry_is_shared(self) -> None:
        aug = JointAugment(
            MODALITIES, AugmentConfig(crop_size=32, scale=(1.0, 1.0), photometric=0.0)
        )
        sample = raw_sample()
        for seed in range(8):
            aug.reseed(seed)
            out = aug(sample)
            dsm = out["image"]["dsm"][0]
            np.testing.assert_array_equal(out["image"]["rgb"][0], dsm)
            np.testing.assert_array_equal(out["image"]["rgb"][2], dsm + 2)
            seen = out["mask"][2]
            np.testing.assert_array_equal(out["image"]["sar"][0][seen], dsm[seen])
            assert np.isnan(out["image"]["sar"][0][~seen]).all()
            # the label moved with the pixels (ignore pixels aside)
            keep = out["label"] != 255
            np.testing.assert_array_equal(out["label"][keep], dsm.astype(np.int64)[keep] % 3)
            # the SAR availability moved with the pixels too: seen where the source column < 32
            np.testing.assert_array_equal(seen, (dsm.astype(np.int64) % 64) < 32)

    def test_reseed_reproduces(self) -> None:
        aug = JointAugment(MODALITIES, AugmentConfig(crop_size=48, scale=(0.5, 2.0)))
        sample = raw_sample()
        aug.reseed(3)
        a = aug(sample)
        aug.reseed(3)
        b = aug(sample)
        aug.reseed(4)
        c = aug(sample)
        np.testing.assert_array_equal(
            np.nan_to_num(a["image"]["rgb"]), np.nan_to_num(b["image"]["rgb"])
        )
        assert not np.array_equal(
            np.nan_to_num(a["image"]["rgb"]), np.nan_to_num(c["image"]["rgb"])
        )

    def test_padding_is_unseen_and_unlabelled(self) -> None:
        config = AugmentConfig(
            crop_size=96, scale=(1.0, 1.0), hflip=0, vflip=0, rotate90=0, photometric=0
        )
        aug = JointAugment(MODALITIES, config)
        out = aug(raw_sample(64))
        assert out["image"]["rgb"].shape == (3, 96, 96) and out["mask"].shape == (3, 96, 96)
        assert out["mask"].sum() == 64 * 64 * 2 + 64 * 32
        assert (out["label"] == 255).sum() == 96 * 96 - 64 * 64 + 4

    def test_photometric_only_on_optical(self) -> None:
        config = AugmentConfig(
            crop_size=64, scale=(1.0, 1.0), hflip=0, vflip=0, rotate90=0, photometric=1.0
        )
        aug = JointAugment(MODALITIES, config, band_range={"rgb": ([0, 0, 0], [4096, 4096, 4096])})
        sample = raw_sample()
        changed = 0
        for seed in range(4):
            aug.reseed(seed)
            out = aug(sample)
            np.testing.assert_array_equal(out["image"]["dsm"], sample["image"]["dsm"])
            changed += int(not np.allclose(out["image"]["rgb"], sample["image"]["rgb"]))
        assert changed == 4

    def test_with_tile_dataset(self, tiny_dataset: Path) -> None:
        aug = JointAugment(MODALITIES, AugmentConfig(crop_size=32))
        ds = TileDataset(tiny_dataset, "train", transform=aug)
        item = ds[1]
        assert item["image"]["rgb"].shape == (3, 32, 32) and item["mask"].shape == (3, 32, 32)
        assert item["label"].dtype.is_floating_point is False
        assert not item["image"]["sar"].isnan().any()  # normalisation zeroes unseen pixels

    def test_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match="scale"):
            AugmentConfig(crop_size=32, scale=(2.0, 1.0))
        with pytest.raises(ValueError, match="crop_size"):
            AugmentConfig(crop_size=0)
