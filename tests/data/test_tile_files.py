"""Tests for sgma_cli.data.tile_files: atomic tile folders and the index."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
from affine import Affine
from shapely.geometry import box

from sgma_cli.data.tile_files import TileData, read_tile, write_index, write_tile

from .conftest import UTM


def test_write_read_roundtrip(tmp_path: Path) -> None:
    img = np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    img[:, 0, 0] = np.nan
    mask = np.ones((1, 8, 8), np.uint8)
    mask[0, 0, 0] = 0
    label = np.full((8, 8), 3, np.uint8)
    data = TileData({"a": img}, mask, label, UTM, Affine(1, 0, 10, 0, -1, 20))
    folder = tmp_path / "tiles" / "train" / "t1"
    folder.parent.mkdir(parents=True)
    write_tile(folder, data, ["a"])
    assert sorted(p.name for p in folder.iterdir()) == ["a.tif", "label.tif", "mask.tif"]
    assert not any(p.name.startswith(".tmp") for p in folder.parent.iterdir())
    back = read_tile(folder, ["a"])
    np.testing.assert_array_equal(back.images["a"], img)
    np.testing.assert_array_equal(back.mask, mask)
    np.testing.assert_array_equal(back.label, label)
    assert back.crs == UTM and back.transform == data.transform


def test_index(tmp_path: Path) -> None:
    path = tmp_path / "index.gpkg"
    write_index(path, [{"tile_id": "t", "coverage_a": 0.5}], [box(0, 0, 1, 1)], UTM)
    frame = gpd.read_file(path, layer="tiles")
    assert frame.crs == UTM and frame.tile_id.tolist() == ["t"] and frame.geometry[0].area == 1
