"""Tests for sgma_cli.data.align: one grid, world points on the same pixel, swath masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.windows import Window

from sgma_cli.data.align import AlignedReader, check_overlap, reference_grid
from sgma_cli.data.raster import inspect_raster
from sgma_cli.errors import RasterError, UsageError

from .conftest import MERC, UTM, X0, Y0, Scene, write_raster


class TestAlign:
    def test_reference_grid_and_resolution(self, scene: Scene) -> None:
        info = inspect_raster(scene.root / "rgb.tif")
        grid = reference_grid(info)
        assert (grid.width, grid.height, grid.crs) == (96, 96, UTM)
        half = reference_grid(info, resolution=2.0)
        assert (half.width, half.height) == (48, 48) and half.resolution == (2.0, 2.0)
        merc = reference_grid(info, crs="EPSG:3857")
        assert merc.crs == MERC
        with pytest.raises(UsageError, match="--crs"):
            reference_grid(info, crs="EPSG:nope")

    def test_world_point_same_pixel(self, scene: Scene) -> None:
        """A DSM hole at known world coordinates is invalid on the same rgb-grid pixels."""
        grid = reference_grid(inspect_raster(scene.root / "rgb.tif"))
        with AlignedReader(inspect_raster(scene.root / "dsm.tif"), grid, "nearest") as dsm:
            data, valid = dsm.read(Window(0, 0, 96, 96))
        # dsm hole: dsm pixels 2..4 -> world X0+4..X0+10 -> rgb pixels 4..9
        assert not valid[4:10, 4:10].any() and valid[10:, 10:].all() and valid[:4, :].all()
        assert np.isnan(data[0, 4:10, 4:10]).all()
        # building block (rows 24..47, cols 48..71 on the rgb grid) is 12 m above 30 m ground
        assert data[0, 30, 60] == pytest.approx(42.0) and data[0, 80, 10] == pytest.approx(30.0)

    def test_swath_mask(self, scene: Scene) -> None:
        grid = reference_grid(inspect_raster(scene.root / "rgb.tif"))
        with AlignedReader(inspect_raster(scene.root / "sar.tif"), grid, "bilinear") as sar:
            data, valid = sar.read(Window(0, 0, 96, 96))
        edge = (
            scene.sar_right - X0
        )  # metres = rgb pixels at 1 m; the swath edge, slightly slanted in UTM
        assert valid[
            :, : int(edge) - 6
        ].all()  # west of the edge (minus one SAR pixel + slant): seen
        assert not valid[:, int(edge) + 3 :].any()  # east of it: not seen
        assert 0.5 < valid.mean() < 0.7
        assert np.isnan(data[0][~valid]).all() and np.isfinite(data[0][valid]).all()

    def test_window_equals_full_read(self, scene: Scene) -> None:
        grid = reference_grid(inspect_raster(scene.root / "rgb.tif"))
        with AlignedReader(inspect_raster(scene.root / "dsm.tif"), grid) as dsm:
            full, _ = dsm.read(Window(0, 0, 96, 96))
            part, _ = dsm.read(Window(40, 20, 32, 32))
        np.testing.assert_allclose(part, full[:, 20:52, 40:72], atol=1e-4)

    def test_out_of_extent_is_unavailable(self, scene: Scene, tmp_path: Path) -> None:
        small = write_raster(
            tmp_path / "small.tif", np.ones((1, 10, 10), np.uint8), UTM, Affine(1, 0, X0, 0, -1, Y0)
        )
        grid = reference_grid(inspect_raster(scene.root / "rgb.tif"))
        with AlignedReader(inspect_raster(small), grid) as r:
            _, valid = r.read(Window(0, 0, 96, 96))
        assert valid[:10, :10].all() and valid.sum() == 100

    def test_no_overlap(self, scene: Scene, tmp_path: Path) -> None:
        far = write_raster(
            tmp_path / "far.tif",
            np.ones((1, 10, 10), np.uint8),
            UTM,
            Affine(1, 0, X0 + 1e5, 0, -1, Y0),
        )
        grid = reference_grid(inspect_raster(scene.root / "rgb.tif"))
        with pytest.raises(RasterError, match="far.tif: far does not overlap the reference rgb"):
            check_overlap(inspect_raster(far), grid, "far", "rgb")

    def test_crs_on_one_only(self, scene: Scene, tmp_path: Path) -> None:
        plain = write_raster(tmp_path / "plain.tif", np.ones((1, 96, 96), np.uint8), None, None)
        grid = reference_grid(inspect_raster(scene.root / "rgb.tif"))
        with pytest.raises(
            RasterError, match="plain.tif: dsm has no CRS, but the reference rgb has one"
        ):
            check_overlap(inspect_raster(plain), grid, "dsm", "rgb")

    def test_no_crs_same_grid(self, tmp_path: Path) -> None:
        a = write_raster(
            tmp_path / "a.png", np.full((3, 16, 16), 7, np.uint8), None, None, driver="PNG"
        )
        b = write_raster(
            tmp_path / "b.png", np.full((1, 16, 12), 7, np.uint8), None, None, driver="PNG"
        )
        grid = reference_grid(inspect_raster(a))
        check_overlap(inspect_raster(a), grid, "a", "a")
        with pytest.raises(RasterError, match="must share one pixel grid"):
            check_overlap(inspect_raster(b), grid, "b", "a")
        with AlignedReader(inspect_raster(a), grid) as r:
            data, valid = r.read(Window(4, 4, 8, 8))
        assert valid.all() and (data == 7).all()
