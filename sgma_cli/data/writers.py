"""Write prediction outputs that open in QGIS as they are: COG GeoTIFFs and a GeoPackage.

:class:`BlockRasterWriter` receives finished rows of a scene in order and writes them,
one block row (256 rows) at a time, into a tiled GeoTIFF under a temporary name in the
output folder. :meth:`BlockRasterWriter.finish` then copies it with GDAL's COG driver
(internal tiling, DEFLATE, overviews) to a second temporary name and
:meth:`BlockRasterWriter.publish` (or :func:`sgma_cli.data.atomic.publish`, for several
outputs at once) renames that onto the output path, so a killed or failed run never leaves
a finished-looking file there. A write error (disk full, I/O error, read-only folder) is
one :class:`~sgma_cli.errors.OutputError` naming the output, after the temporaries are
removed; temporaries a killed run left are removed by the next writer of the same path.

Class maps are uint8 with a nodata value, the checkpoint's colour table and class names
(``CLASS_NAMES`` metadata and a band description). Probability-like bands (class
probabilities, confidence, robustness weights) are uint8 percent (0-100, scale 0.01,
nodata 255): a quarter of float32's size and exact enough for maps.

:func:`vectorize_classes` turns a class map into one polygon per connected region in a
GeoPackage (``rasterio.features.sieve`` + ``shapes`` + geopandas).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError  # GDAL's own errors, as rasterio raises them
from rasterio.errors import RasterioError
from rasterio.features import shapes, sieve
from rasterio.shutil import copy as rio_copy

from sgma_cli.data.align import Grid
from sgma_cli.data.atomic import remove_quietly, remove_stale_temps, temp_path, write_errors
from sgma_cli.errors import RasterError

__all__ = [
    "CLASS_NODATA",
    "PERCENT_NODATA",
    "RasterSpec",
    "BlockRasterWriter",
    "to_percent",
    "temp_path",
    "check_writable",
    "vectorize_classes",
]

CLASS_NODATA = 255
PERCENT_NODATA = 255
BLOCK = 256


#: What GDAL raises when a raster cannot be written (besides ``OSError``): a full disk
#: during a COG copy is a bare ``CPLE_AppDefinedError`` ("IO error writing tag data").
GDAL_WRITE_ERRORS = (RasterioError, CPLE_BaseError)


def check_writable(path: Path) -> None:
    """Raise :class:`RasterError` unless a file can be created at ``path``."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise RasterError("output path is a folder; give a file name", path)
    if not parent.is_dir():
        raise RasterError("output folder does not exist", parent)
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise RasterError("output path is not writable", path)


def to_percent(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Probabilities ``(C, h, w)`` in [0, 1] -> uint8 percent, :data:`PERCENT_NODATA` where
    not ``valid``."""
    out = np.clip(np.rint(values * 100.0), 0, 100).astype(np.uint8)
    out[:, ~valid] = PERCENT_NODATA
    return out


@dataclass
class RasterSpec:
    """What one output raster holds.

    Attributes:
        path: final path.
        grid: the reference grid (CRS, transform, size).
        count: bands.
        nodata: nodata value.
        descriptions: one per band (shown by QGIS as band names).
        colormap: ``{index: (r, g, b)}`` for a single-band class map.
        tags: dataset metadata (e.g. ``CLASS_NAMES``).
        scale: band scale (0.01 for percent bands), ``None`` for none.
        overview_resampling: ``NEAREST`` for classes, ``AVERAGE`` for continuous bands.
    """

    path: Path
    grid: Grid
    count: int
    nodata: float
    descriptions: Sequence[str] = ()
    colormap: Mapping[int, tuple[int, int, int]] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    scale: float | None = None
    overview_resampling: str = "NEAREST"


class BlockRasterWriter:
    """Write a uint8 raster row band by row band, then publish it as a COG atomically.

    Use as a context manager: leaving it before :meth:`publish` removes the temporary
    files and leaves the output path untouched.
    """

    def __init__(self, spec: RasterSpec) -> None:
        self.spec = spec
        self.path = Path(spec.path)
        self._tmp = temp_path(self.path, "part")
        self._cog = temp_path(self.path, "cog")
        remove_stale_temps(self.path)  # what a killed run left
        g = spec.grid
        profile = {
            "driver": "GTiff",
            "width": g.width,
            "height": g.height,
            "count": spec.count,
            "dtype": "uint8",
            "crs": g.crs,
            "transform": g.transform,
            "nodata": spec.nodata,
            "tiled": True,
            "blockxsize": BLOCK,
            "blockysize": BLOCK,
            "BIGTIFF": "IF_SAFER",
        }
        try:
            with write_errors(self.path, kinds=GDAL_WRITE_ERRORS):
                self._dst = rasterio.open(self._tmp, "w", **profile)
        except BaseException:
            remove_quietly(self._tmp)
            raise
        for i, text in enumerate(spec.descriptions, start=1):
            self._dst.set_band_description(i, text)
        if spec.colormap:
            self._dst.write_colormap(1, dict(spec.colormap))
        if spec.tags:
            self._dst.update_tags(**dict(spec.tags))
        if spec.scale is not None:
            self._dst.scales = [spec.scale] * spec.count
            self._dst.offsets = [0.0] * spec.count
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self._next_row = 0
        self._done = False

    def __enter__(self) -> BlockRasterWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is not None or not self._done:
            self.abort()

    def write_rows(self, row: int, data: np.ndarray) -> None:
        """Append rows ``[row, row + h)``: uint8 ``(count, h, width)``; rows must come in order."""
        if row != self._next_row:
            raise ValueError(f"rows must arrive in order: expected row {self._next_row}, got {row}")
        self._pending.append(np.ascontiguousarray(data, dtype=np.uint8))
        self._pending_rows += data.shape[1]
        self._next_row += data.shape[1]
        if self._pending_rows >= BLOCK or self._next_row >= self.spec.grid.height:
            self._flush(final=self._next_row >= self.spec.grid.height)

    def _flush(self, final: bool) -> None:
        if not self._pending:
            return
        block = (
            np.concatenate(self._pending, axis=1) if len(self._pending) > 1 else self._pending[0]
        )
        n = block.shape[1] if final else (block.shape[1] // BLOCK) * BLOCK
        top = self._next_row - block.shape[1]
        with write_errors(self.path, kinds=GDAL_WRITE_ERRORS):
            self._dst.write(block[:, :n], window=rasterio.windows.Window(0, top, block.shape[2], n))
        rest = block[:, n:]
        self._pending = [rest] if rest.shape[1] else []
        self._pending_rows = rest.shape[1]

    def finish(self) -> Path:
        """Close the temporary GeoTIFF and convert it to a COG (still under a temporary name).

        Returns the temporary COG path; :meth:`publish` renames it onto the output path.
        """
        if self._next_row != self.spec.grid.height:
            raise ValueError(f"only {self._next_row} of {self.spec.grid.height} rows were written")
        self._flush(final=True)
        try:
            with write_errors(self.path, kinds=GDAL_WRITE_ERRORS):
                self._dst.close()
                rio_copy(
                    self._tmp,
                    self._cog,
                    driver="COG",
                    COMPRESS="DEFLATE",
                    BLOCKSIZE=str(BLOCK),
                    OVERVIEWS="AUTO",
                    OVERVIEW_RESAMPLING=self.spec.overview_resampling,
                    BIGTIFF="IF_SAFER",
                )
                _read_back(self._cog)
        except BaseException:
            self.abort()
            raise
        self._tmp.unlink(missing_ok=True)
        return self._cog

    def publish(self) -> Path:
        """Rename the finished COG onto the output path (atomic within one folder)."""
        try:
            with write_errors(self.path):
                os.replace(self._cog, self.path)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.path

    def mark_published(self) -> None:
        """Record that the COG was renamed into place by someone else (``atomic.publish``)."""
        self._done = True

    def abort(self) -> None:
        """Drop the temporary files; the output path is left untouched."""
        if not self._dst.closed:
            with contextlib.suppress(OSError, *GDAL_WRITE_ERRORS):  # e.g. a flush on a full disk
                self._dst.close()
        for tmp in (self._tmp, self._cog):
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def _read_back(path: Path) -> None:
    """Read every block of ``path``: GDAL can end a write on a full disk with only a message
    on stderr, leaving a cut file, whose missing blocks fail to read here instead."""
    with rasterio.open(path) as src:
        for _, window in src.block_windows(1):
            src.read(window=window)


def vectorize_classes(
    class_map: Path,
    out: Path,
    class_names: Sequence[str],
    *,
    min_area: float = 0.0,
    nodata: int = CLASS_NODATA,
    layer: str = "classes",
    error_path: Path | None = None,
) -> int:
    """Polygons of each class region of ``class_map`` into a GeoPackage; returns their count.

    Regions smaller than ``min_area`` (CRS units squared, e.g. m²) are first merged into
    their largest neighbour (``sieve``), then any remaining polygon under ``min_area``
    (e.g. touching only nodata) is dropped. Columns: ``class_id``, ``class``, ``area``.
    The class map is read whole: one byte per pixel. ``out`` is written under a temporary
    name and renamed; ``error_path`` is the path errors name when ``out`` is itself a
    temporary name that a caller publishes later (default ``out``).

    Raises:
        OutputError: the GeoPackage cannot be written (nothing is left at ``out``).
    """
    import geopandas as gpd
    from shapely.geometry import shape

    with rasterio.open(class_map) as src:
        classes = src.read(1)
        transform, crs = src.transform, src.crs
    valid = classes != nodata
    pixel_area = abs(transform.a * transform.e)
    size = int(math.ceil(min_area / pixel_area)) if min_area > 0 else 0
    if size > 1:
        classes = sieve(classes, size=size, mask=valid, connectivity=4)
    geoms, ids = [], []
    for geom, value in shapes(classes, mask=valid, connectivity=4, transform=transform):
        geoms.append(shape(geom))
        ids.append(int(value))
    frame = gpd.GeoDataFrame(
        {
            "class_id": np.asarray(ids, dtype=np.int32),
            "class": [class_names[i] if i < len(class_names) else str(i) for i in ids],
        },
        geometry=geoms,
        crs=crs,
    )
    frame["area"] = frame.geometry.area
    if min_area > 0:
        frame = frame[frame["area"] >= min_area * (1 - 1e-9)].reset_index(drop=True)
    shown = Path(error_path or out)
    tmp = temp_path(shown, "part")
    remove_stale_temps(shown)
    remove_quietly(tmp)
    try:
        with write_errors(shown, kinds=(RuntimeError, ValueError)):  # pyogrio's errors
            frame.to_file(tmp, layer=layer, driver="GPKG")
            os.replace(tmp, out)
    finally:
        for leftover in (tmp, *tmp.parent.glob(f"{tmp.name}-*")):  # SQLite's -journal/-wal
            remove_quietly(leftover)
    return len(frame)
