"""A VRT mosaic of chunk rasters (data/vrt.py): pixels in place, gaps as nodata, one COG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from sgma_cli.data.raster import Grid
from sgma_cli.data.vrt import MosaicPart, merge_to_cog, write_mosaic_vrt

CRS_UTM = CRS.from_epsg(32633)
ORIGIN = Affine(0.5, 0, 368000.0, 0, -0.5, 5808000.0)


def _chunk(path: Path, value: int, row: int, col: int, size: int = 32) -> MosaicPart:
    transform = ORIGIN * Affine.translation(col, row)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8"}
    with rasterio.open(path, "w", crs=CRS_UTM, transform=transform, nodata=255, **profile) as dst:
        dst.write(np.full((1, size, size), value, np.uint8))
    return MosaicPart(path, row, col, size, size)


def test_chunks_in_place_and_gaps_as_nodata(tmp_path: Path) -> None:
    grid = Grid(CRS_UTM, ORIGIN, 64, 64)
    (tmp_path / "chunks").mkdir()
    parts = [  # three of the four 32 px chunks: the bottom-right one failed
        _chunk(tmp_path / "chunks" / "a.tif", 1, 0, 0),
        _chunk(tmp_path / "chunks" / "b.tif", 2, 0, 32),
        _chunk(tmp_path / "chunks" / "c.tif", 3, 32, 0),
    ]
    vrt = write_mosaic_vrt(
        tmp_path / "map.vrt", grid, parts, count=1, nodata=255, descriptions=["class"]
    )
    assert "chunks/a.tif" in vrt.read_text() and str(tmp_path) not in vrt.read_text()
    with rasterio.open(vrt) as src:
        data = src.read(1)
        assert src.crs == CRS_UTM and src.transform == ORIGIN and src.descriptions == ("class",)
    assert (data[:32, :32] == 1).all() and (data[:32, 32:] == 2).all()
    assert (data[32:, :32] == 3).all() and (data[32:, 32:] == 255).all()
    merged = merge_to_cog(vrt, tmp_path / "map.tif")
    with rasterio.open(merged) as src:
        assert np.array_equal(src.read(1), data) and src.nodata == 255
