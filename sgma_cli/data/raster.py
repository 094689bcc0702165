"""Open and describe input rasters: :class:`RasterInfo` and :func:`inspect_raster`.

Every input raster is inspected once, before anything is written, so a corrupt file,
a file that is not a raster or a raster without pixels fails the run up front with
one line naming the file. :func:`geotiff_profile` is the other direction: the profile of
a GeoTIFF that sgma writes (sample scenes, tiles).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError  # GDAL's own errors, as rasterio raises them
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.windows import Window

from sgma_cli.data.sources import RasterSource, remote_error, source_env
from sgma_cli.errors import RasterError

__all__ = [
    "Grid",
    "RasterInfo",
    "MAX_PIXELS",
    "GDAL_ERRORS",
    "geotiff_profile",
    "inspect_raster",
    "open_raster",
]

#: The largest raster sgma reads: 2^37 pixels (about 370,000 x 370,000). A header that
#: claims more is damaged, or describes a mosaic to cut into pieces first; it is refused
#: before any pixel is read or any array allocated.
MAX_PIXELS = 1 << 37

#: What rasterio raises when GDAL fails (its own errors and GDAL's ``CPLE_*`` ones).
GDAL_ERRORS = (RasterioError, CPLE_BaseError)


@dataclass(frozen=True)
class Grid:
    """A pixel grid: ``crs`` (``None`` = plain image), ``transform``, ``width`` x ``height``."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)``."""
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.width, self.height)
        return (min(left, right), min(bottom, top), max(left, right), max(bottom, top))

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel size ``(x, y)``, positive."""
        return (abs(self.transform.a), abs(self.transform.e))

    def window_transform(self, window: Window) -> Affine:
        """Affine of a window of this grid."""
        return self.transform @ Affine.translation(window.col_off, window.row_off)

    def window_grid(self, window: Window) -> Grid:
        """A window of this grid as a grid of its own (a chunk, a tile, a halo box)."""
        return Grid(self.crs, self.window_transform(window), int(window.width), int(window.height))

    def window_bounds(self, window: Window) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of a window."""
        return self.window_grid(window).bounds


@dataclass(frozen=True)
class RasterInfo:
    """What sgma needs to know about one raster file (no pixels).

    Attributes:
        path: the file, or the :class:`~sgma_cli.data.sources.RasterSource` it was read
            from (a URL or a mosaic: ``path.name`` and ``str(path)`` name it alike).
        crs: its CRS, ``None`` for plain images (PNG, JPEG, GeoTIFF without CRS).
        transform: pixel -> world affine (identity-like for plain images).
        width: pixels per row.
        height: rows.
        count: bands.
        dtype: numpy dtype name of band 1.
        nodata: nodata value of band 1, or ``None``.
        has_colormap: band 1 carries a palette (a paletted class raster).
    """

    path: Path | RasterSource
    crs: CRS | None
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    has_colormap: bool = False

    @property
    def georeferenced(self) -> bool:
        """True when the raster has a CRS."""
        return self.crs is not None

    @property
    def grid(self) -> Grid:
        """The raster's own pixel grid."""
        return Grid(self.crs, self.transform, self.width, self.height)

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in CRS units (positive)."""
        return self.grid.resolution

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in CRS units."""
        return self.grid.bounds

    @property
    def crs_text(self) -> str:
        """``EPSG:xxxx`` when possible, else WKT, or ``none``."""
        if self.crs is None:
            return "none"
        epsg = self.crs.to_epsg()
        return f"EPSG:{epsg}" if epsg else self.crs.to_wkt()


def open_raster(path: Path | RasterSource) -> rasterio.DatasetReader:
    """``rasterio.open`` whose failures become :class:`RasterError` naming the file.

    ``path`` is a local file or a :class:`~sgma_cli.data.sources.RasterSource` (a URL or
    a mosaic); a remote one is opened with :data:`~sgma_cli.data.sources.REMOTE_OPTIONS`
    (reads from it run in :func:`~sgma_cli.data.sources.source_env` too).
    """
    if isinstance(path, RasterSource):
        if not path.remote and not path.is_mosaic and not Path(path.gdal_path).exists():
            raise RasterError("file not found", path)
        with source_env(path):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    return rasterio.open(path.gdal_path)
            except GDAL_ERRORS as err:
                if path.remote:
                    raise remote_error(err, path.label) from None
                reason = str(err).split(":")[-1].strip() or "unreadable"
                raise RasterError(f"not a readable raster ({reason})", path) from None
    path = Path(path)
    if not path.exists():
        raise RasterError("file not found", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as err:
        reason = str(err).split(":")[-1].strip() or "unreadable"
        raise RasterError(f"not a readable raster ({reason})", path) from None


def inspect_raster(path: Path | RasterSource) -> RasterInfo:
    """Read the header of ``path`` (and one pixel, to catch truncated files).

    ``path`` is a file or a :class:`~sgma_cli.data.sources.RasterSource` (a URL or a
    mosaic); :attr:`RasterInfo.path` is then that source.

    Raises:
        RasterError: missing, unreadable or empty raster; a URL that cannot be read.
    """
    path = path if isinstance(path, RasterSource) else Path(path)
    with source_env(path), open_raster(path) as src:
        if src.width == 0 or src.height == 0 or src.count == 0:
            raise RasterError("raster has no pixels", path)
        t = src.transform
        if not all(math.isfinite(v) for v in t[:6]) or t.determinant == 0:
            raise RasterError(
                f"the header's pixel size is 0 or not a number (transform {tuple(t)[:6]}); "
                "the file's georeference is damaged",
                path,
            )
        if src.width * src.height > MAX_PIXELS:
            raise RasterError(
                f"the header claims {src.width} x {src.height} pixels, more than sgma reads "
                f"({MAX_PIXELS:.3g}): a damaged file, or a mosaic to cut into pieces first",
                path,
            )
        try:
            src.read(1, window=Window(src.width - 1, src.height - 1, 1, 1))
        except GDAL_ERRORS as err:
            if isinstance(path, RasterSource) and path.remote:
                raise remote_error(err, path.label, "cannot read pixels") from None
            raise RasterError(f"corrupt raster data ({str(err).strip()[:120]})", path) from None
        nodata = src.nodata
        if nodata is not None and not math.isfinite(nodata) and not math.isnan(nodata):
            nodata = None
        try:
            has_colormap = src.count == 1 and bool(src.colormap(1))
        except ValueError:
            has_colormap = False
        return RasterInfo(
            path=path,
            crs=src.crs if src.crs else None,
            transform=src.transform,
            width=src.width,
            height=src.height,
            count=src.count,
            dtype=src.dtypes[0],
            nodata=nodata,
            has_colormap=has_colormap,
        )


def geotiff_profile(
    array: np.ndarray,
    crs: CRS | None,
    transform: Affine,
    nodata: float | None,
    **creation: Any,
) -> dict[str, Any]:
    """The rasterio profile of a GeoTIFF that holds ``array`` (``(C, H, W)``).

    Size, band count and dtype come from the array; ``creation`` adds GDAL creation
    options (``compress``, ``tiled``, ``blockxsize``, ...) after them, in their order.
    """
    return {
        "driver": "GTiff",
        "width": array.shape[-1],
        "height": array.shape[-2],
        "count": array.shape[0],
        "dtype": array.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        **creation,
    }
