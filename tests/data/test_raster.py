"""Tests for sgma_cli.data.raster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sgma_cli.data.raster import inspect_raster
from sgma_cli.errors import RasterError

from .conftest import UTM, X0, Y0, Scene, write_raster


class TestInspect:
    def test_header(self, scene: Scene) -> None:
        info = inspect_raster(scene.root / "dsm.tif")
        assert info.crs == UTM and info.crs_text == "EPSG:32633"
        assert (info.width, info.height, info.count, info.dtype) == (48, 48, 1, "float32")
        assert info.nodata == -9999 and info.resolution == (2.0, 2.0)
        assert info.bounds == pytest.approx((X0, Y0 - 96, X0 + 96, Y0))

    def test_plain_image(self, tmp_path: Path) -> None:
        path = write_raster(
            tmp_path / "a.png", np.zeros((3, 8, 8), np.uint8), None, None, driver="PNG"
        )
        info = inspect_raster(path)
        assert info.crs is None and not info.georeferenced and info.crs_text == "none"

    def test_not_a_raster(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.tif"
        path.write_bytes(b"II*\x00garbage" * 10)
        with pytest.raises(RasterError, match=r"bad.tif: not a readable raster"):
            inspect_raster(path)

    def test_truncated(self, scene: Scene, tmp_path: Path) -> None:
        data = (scene.root / "dsm.tif").read_bytes()
        path = tmp_path / "cut.tif"
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(RasterError, match="cut.tif"):
            inspect_raster(path)

    def test_missing(self, tmp_path: Path) -> None:
        with pytest.raises(RasterError, match="file not found"):
            inspect_raster(tmp_path / "nope.tif")
