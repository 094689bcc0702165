"""Tests for sgma_cli.data.align: one grid, world points on the same pixel, swath masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from sgma_cli.data.align import (
    ALIGN_TOLERANCE_PX,
    RESAMPLING,
    AlignedReader,
    check_overlap,
    grid_offset,
    reference_grid,
)
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


def _shifted(
    tmp_path: Path, name: str, array: np.ndarray, rows: float, cols: float, nodata: float | None
) -> Path:
    """``array`` on the 1 m UTM lattice of the scene, its origin ``rows``/``cols`` px away."""
    return write_raster(
        tmp_path / name, array, UTM, Affine(1, 0, X0 + cols, 0, -1, Y0 - rows), nodata
    )


WINDOWS = [
    Window(0, 0, 96, 96),  # the whole grid
    Window(40, 20, 32, 32),  # inside the raster
    Window(70, 70, 32, 32),  # over its edge and the grid's
    Window(-8, -8, 24, 24),  # before the grid's origin
    Window(88, 0, 8, 8),  # nothing of the raster
]


class TestDirectReads:
    """Rasters on the grid's pixel lattice are read from the file, equal to a WarpedVRT."""

    def test_grid_offset(self, scene: Scene, tmp_path: Path) -> None:
        grid = reference_grid(inspect_raster(scene.root / "rgb.tif"))
        data = np.ones((1, 8, 8), np.float32)

        def offset(rows: float, cols: float, res: float = 1.0) -> tuple[int, int] | None:
            path = write_raster(
                tmp_path / "o.tif", data, UTM, Affine(res, 0, X0 + cols, 0, -res, Y0 - rows)
            )
            return grid_offset(inspect_raster(path), grid)

        assert offset(0, 0) == (0, 0) and offset(7, -10) == (7, -10)
        assert offset(7 + 1e-8, 3 - 1e-8) == (7, 3)  # within ALIGN_TOLERANCE_PX
        assert ALIGN_TOLERANCE_PX == 1e-6
        assert offset(7.5, 3) is None and offset(7, 3 + 1e-4) is None  # a fraction of a pixel
        assert offset(0, 0, res=2.0) is None and offset(0, 0, res=1.0 + 1e-6) is None
        merc = write_raster(tmp_path / "m.tif", data, MERC, Affine(1, 0, 0, 0, -1, 0))
        assert grid_offset(inspect_raster(merc), grid) is None
        assert AlignedReader(inspect_raster(scene.root / "rgb.tif"), grid).direct
        assert not AlignedReader(inspect_raster(scene.root / "dsm.tif"), grid).direct

    @pytest.mark.parametrize("resampling", list(RESAMPLING))
    def test_offset_raster_reads_as_warped(
        self, scene: Scene, tmp_path: Path, resampling: str
    ) -> None:
        """Same pixels, NaN and masks as the warp (every resampling is the identity on the
        grid's lattice), in and out of the raster: float with a nodata hole, uint8 and
        float without nodata, NaN nodata; also raw (labels)."""
        grid = reference_grid(inspect_raster(scene.root / "rgb.tif"))
        rng = np.random.default_rng(3)
        dsm = rng.normal(40, 5, (1, 60, 50)).astype(np.float32)
        dsm[0, 10:14, 20:25] = -9999
        sar = rng.normal(-12, 3, (1, 40, 40)).astype(np.float32)
        sar[0, :5] = np.nan
        files = [
            _shifted(tmp_path, "dsm.tif", dsm, 50, 60, -9999.0),  # runs past the grid
            _shifted(tmp_path, "rgb.tif", scene.rgb[:, :90, :90], -6, -4, None),  # starts before
            _shifted(tmp_path, "sar.tif", sar, 12, 30, float("nan")),  # inside
            _shifted(tmp_path, "plain.tif", dsm[:, :30, :30], 70, 70, None),  # float, no nodata
        ]
        for path in files:
            info = inspect_raster(path)
            for raw in (False, True):
                kw = {"resampling": resampling, "raw": raw}
                with (
                    AlignedReader(info, grid, **kw) as direct,
                    AlignedReader(info, grid, **kw, force_warp=True) as warped,
                ):
                    assert direct.direct and not warped.direct
                    for window in WINDOWS:
                        a, a_ok = direct.read(window)
                        b, b_ok = warped.read(window)
                        assert a.dtype == b.dtype and a.shape == b.shape
                        np.testing.assert_array_equal(a, b, err_msg=f"{path.name} {window}")
                        np.testing.assert_array_equal(a_ok, b_ok, err_msg=f"{path.name} {window}")
        with AlignedReader(inspect_raster(files[0]), grid, resampling) as r:
            data, valid = r.read(Window(0, 0, 96, 96))
        assert (
            data.shape == (1, 96, 96) and valid.sum() == 46 * 36 - 4 * 5
        )  # the grid part, less the hole
        assert data[0, 50, 60] == dsm[0, 0, 0] and data[0, 95, 95] == dsm[0, 45, 35]
        assert np.isnan(data[0, :50]).all() and not valid[:, :60].any()
        with AlignedReader(inspect_raster(files[2]), grid, resampling) as r:
            data, valid = r.read(Window(0, 0, 96, 96))
        assert valid.sum() == 35 * 40 and not valid[12:17, 30:70].any()  # NaN rows unseen
        assert data[0, 20, 40] == sar[0, 8, 10]

    def test_warped_float_without_nodata_is_unseen_outside(
        self, scene: Scene, tmp_path: Path
    ) -> None:
        """The warp's alpha band is the mask of every dtype (GDAL's own mask of a float
        band ignored it: pixels outside read as valid zeros)."""
        grid = reference_grid(inspect_raster(scene.root / "rgb.tif"))
        for dtype in ("float32", "int16", "uint8"):
            data = np.full((1, 20, 20), 7, dtype)
            path = write_raster(  # 2 m pixels over the grid's top-left 40 x 40 m
                tmp_path / f"{dtype}.tif", data, UTM, Affine(2, 0, X0, 0, -2, Y0)
            )
            with AlignedReader(inspect_raster(path), grid) as r:
                assert not r.direct
                values, valid = r.read(Window(0, 0, 96, 96))
            assert valid[:40, :40].all() and valid.sum() == 40 * 40, dtype
            assert (values[0, :40, :40] == 7).all() and np.isnan(values[0, 40:]).all()

    @pytest.mark.parametrize("nodata", [-9999.0, 0.0, 1e-30, 3.3e38])
    def test_warped_mask_is_gdals_nodata_mask(
        self, scene: Scene, tmp_path: Path, nodata: float
    ) -> None:
        """The mask taken from the one warp is GDAL's own (values a few float32 ulps from
        nodata count as nodata in GDAL too), at no second warp."""
        grid = reference_grid(inspect_raster(scene.root / "rgb.tif"))
        nd, values = np.float32(nodata), [np.float32(nodata)]
        up = down = nd
        for _ in range(8):
            up, down = np.nextafter(up, np.float32(np.inf)), np.nextafter(down, -np.float32(np.inf))
            values += [up, down]
        values += [np.float32(v) for v in (np.nan, np.inf, 1.0, -nodata)]
        data = np.resize(np.array(values, np.float32), (1, 96, 96))
        path = write_raster(tmp_path / "near.tif", data, UTM, grid.transform, nodata)
        with AlignedReader(inspect_raster(path), grid, "nearest", force_warp=True) as r:
            _, valid = r.read(Window(0, 0, 96, 96))
        with (
            rasterio.open(path) as src,
            WarpedVRT(src, crs=UTM, transform=grid.transform, width=96, height=96) as vrt,
        ):
            gdal = vrt.read_masks(1) > 0
        expected = gdal & np.isfinite(data[0]) & (data[0] != nd)
        np.testing.assert_array_equal(valid, expected)
        if nodata == -9999.0:  # GDAL's tolerance shows: more than the exact value is nodata
            assert (~gdal & (data[0] != nd)).any()
