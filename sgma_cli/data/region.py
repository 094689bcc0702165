"""The region to map and its pixel grid: ``--aoi`` (a polygon file or a box) and ``--like``.

By default ``sgma predict`` maps the reference sensor's coverage on the reference grid
(:func:`sgma_cli.data.scene.scene_grid`). Two options change that:

* ``--aoi FILE|minx,miny,maxx,maxy[,CRS]``: the area of interest, a GeoPackage/GeoJSON
  (any vector file GDAL reads) with polygons, or a box (without CRS, in the grid's CRS).
  The region is the AOI's bounds snapped outwards to the grid's pixel lattice and
  clipped to what the sources cover (or to the ``--like`` raster); pixels outside an AOI
  polygon are nodata (pixel centres decide, as ``gdal_rasterize`` does).
* ``--like RASTER``: write on that raster's grid (CRS, transform, size), so maps made
  from different sensor subsets, whose reference grids differ, overlay pixel by pixel.

Everything here is geometry: no pixel is read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.features import geometry_mask
from rasterio.warp import transform_bounds, transform_geom
from rasterio.windows import Window

from sgma_cli.data.raster import Grid, RasterInfo, inspect_raster
from sgma_cli.errors import RasterError, UsageError

__all__ = ["Aoi", "Region", "parse_aoi", "like_grid", "region_grid", "inside_mask"]

_VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".kml", ".gml")


@dataclass(frozen=True)
class Aoi:
    """An area of interest as the user gave it.

    Attributes:
        source: the ``--aoi`` text (a path or a box), named in errors.
        geometry: GeoJSON-like mapping of the (multi)polygon, in ``crs``.
        crs: its CRS; ``None``: a box without CRS, in the grid's CRS.
        box: it was given as ``minx,miny,maxx,maxy`` (its pixels are all inside).
    """

    source: str
    geometry: dict[str, Any]
    crs: CRS | None
    box: bool = False


@dataclass(frozen=True)
class Region:
    """The grid to write and which of its pixels belong to the region.

    Attributes:
        grid: the output grid (CRS, transform, size).
        geometry: GeoJSON-like (multi)polygon in ``grid.crs`` whose inside is mapped, or
            ``None``: every pixel of ``grid``.
        notes: human lines on the choices made.
    """

    grid: Grid
    geometry: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _crs(text: str, source: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except CRSError:
        raise UsageError(
            f"--aoi {source}: unknown CRS {text!r}; give one such as EPSG:32633"
        ) from None


def _parse_box(text: str) -> Aoi | None:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (4, 5):
        return None
    try:
        minx, miny, maxx, maxy = (float(p) for p in parts[:4])
    except ValueError:
        return None
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise UsageError(f"--aoi {text}: the box has a value that is not a finite number")
    if not (maxx > minx and maxy > miny):
        raise UsageError(
            f"--aoi {text}: a box is minx,miny,maxx,maxy with maxx > minx, maxy > miny"
        )
    crs = _crs(parts[4], text) if len(parts) == 5 else None
    ring = [(minx, miny), (maxx, miny), (maxx, maxy), (minx, maxy), (minx, miny)]
    return Aoi(text, {"type": "Polygon", "coordinates": [ring]}, crs, box=True)


def _read_vector(path: Path) -> Aoi:
    import geopandas as gpd
    from shapely.geometry import mapping
    from shapely.ops import unary_union

    try:
        frame = gpd.read_file(path)
    except Exception as err:  # noqa: BLE001 - pyogrio/fiona raise many kinds; one line
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise RasterError(f"cannot read the AOI ({reason})", path) from None
    geoms = [g for g in frame.geometry if g is not None and not g.is_empty] if len(frame) else []
    polys = [g for g in geoms if g.geom_type in ("Polygon", "MultiPolygon")]
    if not polys:
        raise RasterError("the AOI has no polygon (give a polygon layer or a box)", path)
    if frame.crs is None:
        raise RasterError("the AOI has no CRS; assign one (e.g. ogr2ogr -a_srs)", path)
    try:
        crs = CRS.from_user_input(frame.crs.to_wkt())
    except CRSError:
        raise RasterError("the AOI is in a CRS that GDAL does not know", path) from None
    union = unary_union([p.buffer(0) if not p.is_valid else p for p in polys])
    return Aoi(str(path), dict(mapping(union)), crs, box=False)


def parse_aoi(text: str) -> Aoi:
    """``--aoi``: a vector file with polygons, or ``minx,miny,maxx,maxy[,CRS]``.

    Raises:
        UsageError: a malformed box, or a box in an unknown CRS.
        RasterError: a missing or unreadable file, one without polygons or without CRS.
    """
    text = text.strip()
    path = Path(text)
    if path.suffix.lower() in _VECTOR_SUFFIXES or path.exists():
        if not path.is_file():
            raise RasterError("AOI file not found", path)
        return _read_vector(path)
    box = _parse_box(text)
    if box is None:
        raise UsageError(
            f"--aoi {text}: give a GeoPackage/GeoJSON file or a box minx,miny,maxx,maxy[,CRS]"
        )
    return box


def like_grid(path: Path | str) -> Grid:
    """``--like``: the grid (CRS, transform, size) of an existing raster.

    Raises:
        RasterError: unreadable raster, no CRS, or a rotated one.
    """
    info: RasterInfo = inspect_raster(Path(path))
    if info.crs is None:
        raise RasterError("--like raster has no CRS; give a georeferenced raster", info.path)
    t = info.transform
    if t.b != 0 or t.d != 0:
        raise RasterError("--like raster is rotated; give a north-up raster", info.path)
    return Grid(info.crs, t, info.width, info.height)


def _snap(grid: Grid, bounds: Sequence[float]) -> tuple[int, int, int, int]:
    """Pixel rows/cols ``(r0, c0, r1, c1)`` of ``grid``'s lattice covering ``bounds``."""
    t = grid.transform
    px, py = t.a, -t.e
    left, bottom, right, top = bounds
    c0 = math.floor((left - t.c) / px + 1e-6)
    c1 = math.ceil((right - t.c) / px - 1e-6)
    r0 = math.floor((t.f - top) / py + 1e-6)
    r1 = math.ceil((t.f - bottom) / py - 1e-6)
    return r0, c0, r1, c1


def _sub_grid(grid: Grid, r0: int, c0: int, r1: int, c1: int) -> Grid:
    return grid.window_grid(Window(c0, r0, c1 - c0, r1 - r0))


def _intersect(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float, float] | None:
    left, bottom = max(a[0], b[0]), max(a[1], b[1])
    right, top = min(a[2], b[2]), min(a[3], b[3])
    return (left, bottom, right, top) if right > left and top > bottom else None


def _source_bounds(sources: Sequence[RasterInfo], crs: CRS | None) -> list[tuple[float, ...]]:
    out = []
    for info in sources:
        if info.crs is None or crs is None:
            out.append(tuple(info.bounds))
        else:
            out.append(tuple(transform_bounds(info.crs, crs, *info.bounds, densify_pts=21)))
    return out


def _names(sources: Sequence[RasterInfo]) -> str:
    return ", ".join(Path(str(s.path)).name for s in sources)


def region_grid(
    reference: Grid,
    sources: Sequence[RasterInfo],
    *,
    aoi: Aoi | None = None,
    like: Grid | None = None,
    like_source: str | None = None,
) -> Region:
    """The output grid of a prediction and the part of it that is mapped.

    Args:
        reference: the scene's reference grid (today's output grid).
        sources: headers of the chosen sensors' rasters (to clip an AOI to their coverage).
        aoi: the area of interest, or ``None``.
        like: the grid of a ``--like`` raster, or ``None``.
        like_source: the ``--like`` path, named in errors and notes.

    Raises:
        UsageError: an AOI outside every source (or outside the ``--like`` grid), an AOI
            with a CRS on a grid without one, a ``--like`` grid no source overlaps.
    """
    base = like if like is not None else reference
    notes: list[str] = []
    if like is not None:
        notes.append(f"grid of --like {like_source} ({like.width}x{like.height} px)")
        crs = like.crs
        bounds = _source_bounds(sources, crs)
        if not any(_intersect(b, like.bounds) for b in bounds):
            raise UsageError(
                f"--like {like_source}: its extent overlaps none of the sources ({_names(sources)})"
            )
    if aoi is None:
        return Region(base, None, notes)
    if base.crs is None:
        if aoi.crs is not None:
            raise UsageError(
                f"--aoi {aoi.source}: the rasters have no CRS; give a box in pixel coordinates"
            )
        geometry = aoi.geometry
    elif aoi.crs is None or aoi.crs == base.crs:
        geometry = aoi.geometry
    else:
        try:
            geometry = transform_geom(aoi.crs, base.crs, aoi.geometry)
        except Exception as err:  # noqa: BLE001 - PROJ's failures come as several kinds
            raise UsageError(
                f"--aoi {aoi.source}: cannot transform it to the grid's CRS ({err})"
            ) from None
    from shapely.geometry import mapping, shape

    shp = shape(geometry)
    if shp.is_empty or not all(math.isfinite(v) for v in shp.bounds):
        raise UsageError(f"--aoi {aoi.source}: it has no area in the grid's CRS")
    aoi_bounds = tuple(shp.bounds)
    if like is not None:
        covered = [like.bounds]
        where = f"the --like raster {like_source}"
    else:
        covered = _source_bounds(sources, base.crs)
        where = f"every source ({_names(sources)})"
    parts = [b for b in (_intersect(aoi_bounds, c) for c in covered) if b is not None]
    if not parts:
        raise UsageError(
            f"--aoi {aoi.source}: the AOI (bounds {', '.join(f'{v:.1f}' for v in aoi_bounds)} "
            f"in the grid's CRS) lies outside {where}"
        )
    clipped = (
        min(p[0] for p in parts),
        min(p[1] for p in parts),
        max(p[2] for p in parts),
        max(p[3] for p in parts),
    )
    r0, c0, r1, c1 = _snap(base, clipped)
    if like is not None:  # stay on the --like raster's pixels
        r0, c0 = max(r0, 0), max(c0, 0)
        r1, c1 = min(r1, like.height), min(c1, like.width)
    if r1 <= r0 or c1 <= c0:
        raise UsageError(f"--aoi {aoi.source}: the AOI is smaller than one pixel of the grid")
    grid = _sub_grid(base, r0, c0, r1, c1)
    notes.append(f"AOI {Path(aoi.source).name}: {grid.width}x{grid.height} px")
    needs_mask = not aoi.box or (
        aoi.crs is not None and base.crs is not None and aoi.crs != base.crs
    )
    return Region(grid, dict(mapping(shp)) if needs_mask else None, notes)


def inside_mask(region: Region, row: int, col: int, height: int, width: int) -> np.ndarray | None:
    """Bool ``(height, width)``: pixels of a window of ``region.grid`` inside the region.

    ``None`` when every pixel is inside (no polygon to honour).
    """
    if region.geometry is None:
        return None
    transform = region.grid.window_transform(Window(col, row, width, height))
    return geometry_mask(
        [region.geometry], out_shape=(height, width), transform=transform, invert=True
    )
