"""Tests for sgma_cli.data.synthetic: determinism, grids, signatures that need fusion."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sgma_cli.data.synthetic import (
    BUILDING,
    IMPERVIOUS,
    LOW_VEG,
    TREE,
    make_scene,
    sample_tiling,
    write_scene,
)


@pytest.fixture(scope="module")
def scene256():  # noqa: ANN201
    return make_scene(256, seed=0)


class TestSynthetic:
    def test_deterministic(self) -> None:
        a, b = make_scene(128, 3), make_scene(128, 3)
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_array_equal(a.sar, b.sar)
        assert not np.array_equal(a.classes, make_scene(128, 4).classes)

    def test_grids_and_availability(self, scene256) -> None:  # noqa: ANN001
        s = scene256
        assert s.rgb.shape == (3, 256, 256) and s.dsm.shape == (1, 128, 128)
        assert s.rgb_transform.a == 0.5 and s.dsm_transform.a == 1.0
        assert (s.dsm == -9999).any()  # holes
        nan = np.isnan(s.sar[0])
        assert (
            0.2 < nan.mean() < 0.7 and nan[:, -1].all() and not nan[:, 5].all()
        )  # swath ends mid-scene

    def test_all_classes_present(self) -> None:
        s = make_scene(512, 0)
        assert set(np.unique(s.classes)) == set(range(6))

    def test_no_single_sensor_suffices(self, scene256) -> None:  # noqa: ANN001
        s = scene256
        rgb = s.rgb.astype(float)
        grass, tree = rgb[:, s.classes == LOW_VEG].mean(1), rgb[:, s.classes == TREE].mean(1)
        assert np.abs(grass - tree).max() < 12  # alike in colour
        dsm = np.kron(s.dsm[0], np.ones((2, 2)))
        ok = dsm > -9000
        assert (
            dsm[(s.classes == TREE) & ok].mean() - dsm[(s.classes == LOW_VEG) & ok].mean() > 3
        )  # not in height
        assert (
            dsm[(s.classes == BUILDING) & ok].mean() - dsm[(s.classes == IMPERVIOUS) & ok].mean()
            > 5
        )

    def test_write(self, tmp_path: Path) -> None:
        files = write_scene(tmp_path, size=128, seed=1)
        assert {p.name for p in files.values()} == {
            "rgb.tif",
            "dsm.tif",
            "sar.tif",
            "labels.tif",
            "labels.gpkg",
            "sample.json",
        }
        with rasterio.open(files["sar"]) as src:
            assert src.crs.to_epsg() == 3857 and src.dtypes[0] == "float32"
        with rasterio.open(files["dsm"]) as src:
            assert src.nodata == -9999 and src.res == (1.0, 1.0)
        digest = hashlib.sha256(files["rgb"].read_bytes()).hexdigest()
        again = write_scene(tmp_path / "again", size=128, seed=1)
        assert hashlib.sha256(again["rgb"].read_bytes()).hexdigest() == digest

    def test_marker_carries_the_tiling(self, tmp_path: Path) -> None:
        files = write_scene(tmp_path, size=256, seed=0, vectors=False)
        marker = json.loads(files["marker"].read_text())
        assert (marker["tile"], marker["stride"]) == (64, 64) == sample_tiling(256)

    def test_sample_tiling(self) -> None:
        assert [sample_tiling(s) for s in (64, 128, 256, 384, 512, 4096)] == [
            (32, 32),
            (32, 32),
            (64, 64),
            (96, 96),
            (128, 128),
            (128, 128),
        ]

    def test_bad_size(self) -> None:
        with pytest.raises(ValueError, match="even number"):
            make_scene(63)
