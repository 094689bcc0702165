"""Tests for data/region.py (--aoi, --like) and data/vrt.py (mosaic VRT, merged COG)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import Polygon, box

from sgma_cli.data.raster import Grid, inspect_raster
from sgma_cli.data.region import Region, inside_mask, like_grid, parse_aoi, region_grid
from sgma_cli.data.vrt import MosaicPart, merge_to_cog, write_mosaic_vrt
from sgma_cli.errors import RasterError, UsageError

UTM = CRS.from_epsg(32633)
X0, Y0 = 500000.0, 5800000.0
#: a 100 x 80 px grid of 1 m pixels
GRID = Grid(UTM, Affine(1.0, 0.0, X0, 0.0, -1.0, Y0), 100, 80)


def _raster(path: Path, grid: Grid, data: np.ndarray | None = None, **kw: object) -> Path:
    data = np.zeros((1, grid.height, grid.width), np.uint8) if data is None else data
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": data.shape[0],
        "dtype": data.dtype,
        "crs": grid.crs,
        "transform": grid.transform,
    }
    profile.update(kw)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return _raster(tmp_path / "rgb.tif", GRID)


class TestParseAoi:
    def test_box_with_and_without_crs(self) -> None:
        aoi = parse_aoi(f"{X0 + 10},{Y0 - 50},{X0 + 30},{Y0 - 20}")
        assert aoi.box and aoi.crs is None
        assert aoi.geometry["coordinates"][0][0] == (X0 + 10, Y0 - 50)
        assert parse_aoi("15.0,52.3,15.1,52.4,EPSG:4326").crs == CRS.from_epsg(4326)

    def test_polygon_file(self, tmp_path: Path) -> None:
        path = tmp_path / "aoi.gpkg"
        gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1), box(1, 0, 2, 1)], crs="EPSG:32633").to_file(
            path
        )
        aoi = parse_aoi(str(path))
        assert not aoi.box and aoi.crs == UTM
        assert aoi.geometry["type"] == "Polygon"  # the two touching boxes, dissolved

    @pytest.mark.parametrize(
        ("text", "needle"),
        [
            ("1,2,3", "give a GeoPackage/GeoJSON file or a box"),
            ("3,2,1,4", "maxx > minx"),
            ("0,0,1,1,EPSG:999999", "unknown CRS 'EPSG:999999'"),
            ("0,0,1,1,notacrs", "unknown CRS 'notacrs'"),
        ],
    )
    def test_bad_boxes_are_one_line(self, text: str, needle: str) -> None:
        with pytest.raises(UsageError, match=needle) as caught:
            parse_aoi(text)
        assert text in str(caught.value) and "\n" not in str(caught.value)

    def test_bad_files(self, tmp_path: Path) -> None:
        with pytest.raises(RasterError, match="AOI file not found"):
            parse_aoi(str(tmp_path / "missing.gpkg"))
        broken = tmp_path / "broken.geojson"
        broken.write_text("{not json")
        with pytest.raises(RasterError, match="cannot read the AOI") as caught:
            parse_aoi(str(broken))
        assert str(broken) in str(caught.value)
        points = tmp_path / "points.geojson"
        gpd.GeoDataFrame(geometry=gpd.points_from_xy([0], [0]), crs="EPSG:4326").to_file(points)
        with pytest.raises(RasterError, match="has no polygon"):
            parse_aoi(str(points))


class TestRegionGrid:
    def test_default_is_the_reference_grid(self, source: Path) -> None:
        region = region_grid(GRID, [inspect_raster(source)])
        assert region.grid == GRID and region.geometry is None

    def test_box_snaps_outwards_to_the_lattice_and_clips_to_the_sources(self, source: Path) -> None:
        aoi = parse_aoi(f"{X0 + 10.5},{Y0 - 50.2},{X0 + 130},{Y0 - 19.7}")
        region = region_grid(GRID, [inspect_raster(source)], aoi=aoi)
        g = region.grid
        assert (g.transform.c, g.transform.f) == (X0 + 10, Y0 - 19)
        assert (g.width, g.height) == (90, 32)  # clipped to the source's right edge (x0 + 100)
        assert region.geometry is None  # a box in the grid's CRS: every pixel is inside

    def test_box_in_another_crs_is_masked_as_its_shape(self, source: Path) -> None:
        from rasterio.warp import transform_bounds

        lon_lat = transform_bounds(UTM, "EPSG:4326", X0 + 20, Y0 - 60, X0 + 60, Y0 - 20)
        aoi = parse_aoi(",".join(f"{v:.9f}" for v in lon_lat) + ",EPSG:4326")
        region = region_grid(GRID, [inspect_raster(source)], aoi=aoi)
        assert region.geometry is not None  # a lon/lat box is not a box in UTM
        assert abs(region.grid.width - 40) <= 2 and abs(region.grid.height - 40) <= 2

    def test_polygon_mask(self, source: Path, tmp_path: Path) -> None:
        path = tmp_path / "tri.geojson"
        tri = Polygon([(X0, Y0), (X0 + 40, Y0), (X0, Y0 - 40)])
        gpd.GeoDataFrame(geometry=[tri], crs="EPSG:32633").to_file(path)
        region = region_grid(GRID, [inspect_raster(source)], aoi=parse_aoi(str(path)))
        assert (region.grid.width, region.grid.height) == (40, 40)
        inside = inside_mask(region, 0, 0, 40, 40)
        assert inside is not None and inside[0, 0] and not inside[39, 39]
        assert 780 <= inside.sum() <= 820  # pixel centres below the hypotenuse (+ on it)
        assert inside_mask(Region(GRID), 0, 0, 5, 5) is None

    def test_aoi_outside_every_source_is_one_line(self, source: Path) -> None:
        aoi = parse_aoi(f"{X0 + 500},{Y0 - 50},{X0 + 600},{Y0}")
        with pytest.raises(UsageError, match=r"lies outside every source \(rgb.tif\)") as caught:
            region_grid(GRID, [inspect_raster(source)], aoi=aoi)
        assert "\n" not in str(caught.value)

    def test_like_grid_and_aoi_on_it(self, source: Path, tmp_path: Path) -> None:
        like_path = _raster(
            tmp_path / "like.tif",
            Grid(UTM, Affine(2.0, 0.0, X0 - 1.0, 0.0, -2.0, Y0 + 1.0), 30, 30),
        )
        like = like_grid(like_path)
        region = region_grid(GRID, [inspect_raster(source)], like=like, like_source="like.tif")
        assert region.grid == like
        aoi = parse_aoi(f"{X0 + 10},{Y0 - 20},{X0 + 20},{Y0 - 10}")
        sub = region_grid(GRID, [inspect_raster(source)], aoi=aoi, like=like).grid
        assert (sub.transform.a, sub.transform.c, sub.transform.f) == (2.0, X0 + 9, Y0 - 9)
        assert (sub.width, sub.height) == (6, 6)  # on the --like raster's 2 m lattice
        far = _raster(
            tmp_path / "far.tif", Grid(UTM, Affine(1.0, 0.0, X0 + 1e5, 0.0, -1.0, Y0), 10, 10)
        )
        with pytest.raises(UsageError, match="overlaps none of the sources"):
            region_grid(GRID, [inspect_raster(source)], like=like_grid(far), like_source="far")

    def test_like_without_crs_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "plain.tif"
        with rasterio.open(
            path, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8"
        ) as dst:
            dst.write(np.zeros((1, 4, 4), np.uint8))
        with pytest.raises(RasterError, match="has no CRS"):
            like_grid(path)


def test_mosaic_vrt_and_merge(tmp_path: Path) -> None:
    """Two chunks side by side, a third missing: the VRT reads them in place, nodata elsewhere."""
    (tmp_path / "chunks").mkdir()
    parts, full = [], np.full((1, 20, 30), 255, np.uint8)
    for i, (row, col) in enumerate([(0, 0), (0, 10)]):
        data = np.full((1, 10, 10), i, np.uint8)
        g = Grid(UTM, GRID.transform * Affine.translation(col, row), 10, 10)
        _raster(tmp_path / "chunks" / f"c{i}.tif", g, data, nodata=255)
        parts.append(MosaicPart(tmp_path / "chunks" / f"c{i}.tif", row, col, 10, 10))
        full[:, row : row + 10, col : col + 10] = i
    grid = Grid(UTM, GRID.transform, 30, 20)
    vrt = write_mosaic_vrt(
        tmp_path / "map.vrt",
        grid,
        parts,
        count=1,
        nodata=255,
        descriptions=["class"],
        colormap={0: (255, 255, 255), 1: (0, 0, 255)},
        tags={"CLASS_NAMES": '["a", "b"]'},
    )
    assert 'relativeToVRT="1">chunks/c0.tif' in vrt.read_text()
    with rasterio.open(vrt) as src:
        assert np.array_equal(src.read(), full)
        assert src.crs == UTM and src.transform == grid.transform
        assert src.colormap(1)[1] == (0, 0, 255, 255) and src.descriptions == ("class",)
        assert src.tags()["CLASS_NAMES"] == '["a", "b"]' and src.nodata == 255
    merged = merge_to_cog(vrt, tmp_path / "map.tif")
    with rasterio.open(merged) as src:
        assert np.array_equal(src.read(), full) and src.colormap(1)[1] == (0, 0, 255, 255)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunks", "map.tif", "map.vrt"]
