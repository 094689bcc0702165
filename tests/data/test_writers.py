"""Tests for sgma_cli.data.writers: block-wise COG writing, atomic publish, vectorizing."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from sgma_cli.data.align import Grid
from sgma_cli.data.writers import (
    CLASS_NODATA,
    BlockRasterWriter,
    RasterSpec,
    check_writable,
    to_percent,
    vectorize_classes,
)
from sgma_cli.errors import RasterError

GRID = Grid(CRS.from_epsg(32633), from_origin(500000, 5800000, 0.5, 0.5), 300, 600)
COLORS = {0: (255, 255, 255), 1: (0, 0, 255), 2: (0, 255, 0)}


def _classes(h: int = 600, w: int = 300) -> np.ndarray:
    data = np.zeros((h, w), np.uint8)
    data[100:300, 50:150] = 1
    data[350:352, 10:12] = 2  # a 4-pixel speck (1 m²)
    data[400:, 200:] = 2
    data[:20, :20] = CLASS_NODATA
    return data


def _write(path: Path, data: np.ndarray, chunks: list[int]) -> Path:
    spec = RasterSpec(
        path,
        GRID,
        1,
        CLASS_NODATA,
        ["class"],
        colormap=COLORS,
        tags={"CLASS_NAMES": '["a", "b", "c"]'},
    )
    with BlockRasterWriter(spec) as writer:
        row = 0
        for n in chunks:
            writer.write_rows(row, data[None, row : row + n])
            row += n
        writer.finish()
        return writer.publish()


class TestBlockRasterWriter:
    def test_cog_with_metadata(self, tmp_path: Path) -> None:
        data = _classes()
        out = _write(tmp_path / "map.tif", data, [50, 7, 300, 243])
        assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif"]  # no temporary left
        with rasterio.open(out) as src:
            np.testing.assert_array_equal(src.read(1), data)
            assert src.crs == GRID.crs and src.transform == GRID.transform
            assert src.nodata == CLASS_NODATA and src.dtypes[0] == "uint8"
            assert src.colormap(1)[1] == (0, 0, 255, 255)
            assert src.descriptions == ("class",) and src.tags()["CLASS_NAMES"] == '["a", "b", "c"]'
            assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)
            assert src.overviews(1)  # COG overviews
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"

    def test_percent_bands_have_scale(self, tmp_path: Path) -> None:
        spec = RasterSpec(
            tmp_path / "p.tif", GRID, 2, 255, ["a", "b"], scale=0.01, overview_resampling="AVERAGE"
        )
        probs = np.stack([np.full((600, 300), 0.25), np.full((600, 300), 0.75)]).astype(np.float32)
        valid = np.ones((600, 300), bool)
        valid[0, 0] = False
        with BlockRasterWriter(spec) as writer:
            writer.write_rows(0, to_percent(probs, valid))
            writer.finish()
            writer.publish()
        with rasterio.open(tmp_path / "p.tif") as src:
            assert src.scales == (0.01, 0.01) and src.descriptions == ("a", "b")
            band = src.read(2)
            assert band[0, 0] == 255 and band[1, 1] == 75

    def test_rows_out_of_order(self, tmp_path: Path) -> None:
        spec = RasterSpec(tmp_path / "y.tif", GRID, 1, CLASS_NODATA)
        with pytest.raises(ValueError, match="expected row 10"), BlockRasterWriter(spec) as writer:
            writer.write_rows(0, np.zeros((1, 10, 300), np.uint8))
            writer.write_rows(20, np.zeros((1, 10, 300), np.uint8))

    def test_failure_leaves_nothing(self, tmp_path: Path) -> None:
        out = tmp_path / "map.tif"
        spec = RasterSpec(out, GRID, 1, CLASS_NODATA)
        with pytest.raises(RuntimeError, match="boom"), BlockRasterWriter(spec) as writer:
            writer.write_rows(0, np.zeros((1, 300, 300), np.uint8))
            raise RuntimeError("boom")
        assert list(tmp_path.iterdir()) == []
        with BlockRasterWriter(spec) as writer:  # finished but never published: still nothing
            writer.write_rows(0, np.zeros((1, 600, 300), np.uint8))
            writer.finish()
        assert list(tmp_path.iterdir()) == []

    def test_incomplete_raster_refused(self, tmp_path: Path) -> None:
        with (
            pytest.raises(ValueError, match="only 10 of 600 rows"),
            BlockRasterWriter(RasterSpec(tmp_path / "z.tif", GRID, 1, 255)) as w,
        ):
            w.write_rows(0, np.zeros((1, 10, 300), np.uint8))
            w.finish()


class TestCheckWritable:
    def test_errors(self, tmp_path: Path) -> None:
        check_writable(tmp_path / "ok.tif")
        with pytest.raises(RasterError, match="output folder does not exist"):
            check_writable(tmp_path / "missing" / "a.tif")
        with pytest.raises(RasterError, match="is a folder"):
            check_writable(tmp_path)


class TestToPercent:
    def test_rounding_and_nodata(self) -> None:
        got = to_percent(
            np.array([[[0.0, 0.004, 0.996, 1.0]]], np.float32),
            np.array([[True, True, True, False]]),
        )
        assert got.tolist() == [[[0, 0, 100, 255]]]


class TestVectorize:
    def test_areas_match_raster(self, tmp_path: Path) -> None:
        data = _classes()
        tif = _write(tmp_path / "map.tif", data, [600])
        n = vectorize_classes(tif, tmp_path / "v.gpkg", ["a", "b", "c"])
        frame = gpd.read_file(tmp_path / "v.gpkg", layer="classes")
        assert len(frame) == n and frame.crs == GRID.crs
        areas = frame.groupby("class_id")["area"].sum()
        for k in range(3):
            assert areas[k] == pytest.approx((data == k).sum() * 0.25)
        assert set(frame["class"]) == {"a", "b", "c"}
        np.testing.assert_allclose(frame["area"], frame.geometry.area)

    def test_min_area_merges_specks(self, tmp_path: Path) -> None:
        tif = _write(tmp_path / "map.tif", _classes(), [600])
        vectorize_classes(tif, tmp_path / "v.gpkg", ["a", "b", "c"], min_area=2.0)
        frame = gpd.read_file(tmp_path / "v.gpkg")
        assert frame["area"].min() >= 2.0
        assert frame[frame["class_id"] == 2]["area"].sum() == pytest.approx(
            200 * 100 * 0.25
        )  # the speck is gone
        assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif", "v.gpkg"]
