"""Put every modality of a scene on one reference pixel grid, window by window.

A :class:`Grid` is a CRS, an affine transform and a size. :class:`AlignedReader` wraps a
source raster in a ``WarpedVRT`` onto that grid, so reading a tile window warps only
that window: a 10 000 x 10 000 scene never has to fit in memory (TorchGeo's
``RasterDataset`` reprojects on read the same way). Pixels the sensor did not see
(nodata, NaN, outside its extent) come back as NaN plus a ``False`` in the validity mask.
Rasters without a CRS are read as they are and must already share the reference grid.

A raster whose pixels already are pixels of the grid (same CRS, same pixel size and
orientation, origin a whole number of pixels away: a DSM on the same 0.5 m lattice over a
smaller or shifted extent, one tile of a mosaic) is read straight from the file, without a
``WarpedVRT`` (:func:`grid_offset`): the part of a window it covers is read as a shifted
window, the rest is unseen, the same pixels and masks the warp would give (nearest and
bilinear resampling are both the identity on such a raster) at a fraction of the cost.
"""

from __future__ import annotations

import math
import warnings
from types import TracebackType

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.windows import Window

from sgma_cli.data.raster import GDAL_ERRORS, MAX_PIXELS, Grid, RasterInfo, open_raster
from sgma_cli.data.sources import RasterSource, remote_error, source_env
from sgma_cli.errors import RasterError, UsageError

__all__ = [
    "Grid",
    "reference_grid",
    "check_overlap",
    "grid_offset",
    "AlignedReader",
    "RESAMPLING",
    "ALIGN_TOLERANCE_PX",
]

RESAMPLING = {
    r.name: r
    for r in (
        Resampling.nearest,
        Resampling.bilinear,
        Resampling.cubic,
        Resampling.cubic_spline,
        Resampling.lanczos,
        Resampling.average,
        Resampling.mode,
    )
}

#: How far, in pixels of the grid, a raster's pixel corners may lie from the grid's pixel
#: corners for it to be read directly (:func:`grid_offset`): far below anything a
#: resampling could show (a warp would move values by this fraction of a pixel step).
ALIGN_TOLERANCE_PX = 1e-6


def reference_grid(
    info: RasterInfo, resolution: float | None = None, crs: str | None = None
) -> Grid:
    """The grid of the reference raster, optionally resampled and/or reprojected.

    Args:
        info: the reference raster (``--reference``).
        resolution: target pixel size in target-CRS units (``--resolution``).
        crs: target CRS such as ``EPSG:32633`` (``--crs``).

    Raises:
        UsageError: bad CRS text, or resolution/CRS asked of a raster without CRS.
    """
    if info.crs is None:
        if resolution is not None or crs is not None:
            raise UsageError(
                "--resolution/--crs need georeferenced rasters; the reference has no CRS", info.path
            )
        return info.grid
    if resolution is not None and resolution <= 0:
        raise UsageError(f"--resolution must be > 0, got {resolution}")
    dst_crs = info.crs
    if crs is not None:
        try:
            dst_crs = CRS.from_user_input(crs)
        except (rasterio.errors.CRSError, ValueError):
            raise UsageError(
                f"--crs {crs!r} is not a CRS rasterio knows (try EPSG:32633)"
            ) from None
    if dst_crs == info.crs and resolution is None:
        return info.grid
    try:
        transform, width, height = calculate_default_transform(
            info.crs, dst_crs, info.width, info.height, *info.bounds, resolution=resolution
        )
    except (*GDAL_ERRORS, ValueError) as err:  # the area has no image in that CRS
        reason = " ".join(str(err).split())[:120]
        raise UsageError(
            f"cannot put the reference on {dst_crs} ({reason}); check --crs", info.path
        ) from None
    if not 0 < int(width) * int(height) <= MAX_PIXELS:
        raise UsageError(
            f"--resolution/--crs make a reference grid of {int(width)} x {int(height)} pixels "
            f"(at most {MAX_PIXELS:.3g}); choose a coarser --resolution",
            info.path,
        )
    return Grid(dst_crs, transform, int(width), int(height))


def check_overlap(info: RasterInfo, grid: Grid, name: str, reference: str) -> None:
    """Raise :class:`RasterError` unless ``info`` can be read on ``grid``.

    Georeferenced rasters must overlap the grid; rasters without CRS need a grid without
    CRS of the same size (or ``same_grid`` handled by the caller).
    """
    if (info.crs is None) != (grid.crs is None):
        if info.crs is None:
            raise RasterError(
                f"{name} has no CRS, but the reference {reference} has one", info.path
            )
        raise RasterError(
            f"{name} has a CRS ({info.crs_text}), but the reference {reference} has none", info.path
        )
    if info.crs is None:
        if (info.width, info.height) != (grid.width, grid.height):
            raise RasterError(
                f"{name} has no CRS and {info.width}x{info.height} pixels, the reference "
                f"{reference} {grid.width}x{grid.height}: rasters without CRS must share one "
                "pixel grid",
                info.path,
            )
        return
    left, bottom, right, top = transform_bounds(info.crs, grid.crs, *info.bounds, densify_pts=21)
    g = grid.bounds
    if not (left < g[2] and right > g[0] and bottom < g[3] and top > g[1]):
        raise RasterError(
            f"{name} does not overlap the reference {reference} (its extent in "
            f"{grid.crs}: {left:.1f}, {bottom:.1f}, {right:.1f}, {top:.1f})",
            info.path,
        )


def grid_offset(
    info: RasterInfo, grid: Grid, tolerance: float = ALIGN_TOLERANCE_PX
) -> tuple[int, int] | None:
    """``(row, col)`` of the raster's first pixel on ``grid`` when its pixels are grid pixels.

    That is: both have the same CRS, the raster's pixel size and orientation are the
    grid's, and its origin lies a whole number of grid pixels from the grid's, each corner
    of the raster within ``tolerance`` grid pixels of a grid pixel corner. Such a raster
    can be read with a shifted window instead of a warp. ``None`` otherwise (other CRS or
    pixel size, a fractional offset, no CRS).
    """
    if info.crs is None or grid.crs is None or info.crs != grid.crs:
        return None
    try:
        m = ~grid.transform * info.transform  # raster pixel -> grid pixel
    except Exception:  # noqa: BLE001 - a degenerate (non-invertible) grid: warp as before
        return None
    w, h = info.width, info.height
    if (
        abs(m.a - 1.0) * w > tolerance
        or abs(m.e - 1.0) * h > tolerance
        or abs(m.b) * h > tolerance
        or abs(m.d) * w > tolerance
    ):
        return None
    col, row = round(m.c), round(m.f)
    if abs(m.c - col) > tolerance or abs(m.f - row) > tolerance:
        return None
    return int(row), int(col)


class AlignedReader:
    """Read windows of one raster resampled onto a :class:`Grid`.

    A raster on the grid's own pixel lattice (:func:`grid_offset`) is read directly, the
    others through a ``WarpedVRT``; both give the same pixels and masks.

    Args:
        info: the source raster.
        grid: the reference grid.
        resampling: rasterio resampling name (``bilinear`` for continuous bands, ``nearest``
            for labels).
        bands: 1-based bands to read, default all.
        same_grid: read the raster as is (it has no CRS but shares the grid's pixels).
        raw: return the source dtype and leave invalid pixels unchanged (labels).
        force_warp: read through a ``WarpedVRT`` even when the raster is on the grid's
            lattice (tests and benchmarks compare the two paths).
    """

    def __init__(
        self,
        info: RasterInfo,
        grid: Grid,
        resampling: str = "bilinear",
        bands: tuple[int, ...] | None = None,
        same_grid: bool = False,
        raw: bool = False,
        *,
        force_warp: bool = False,
    ) -> None:
        if resampling not in RESAMPLING:
            raise UsageError(
                f"unknown resampling {resampling!r}; use one of {', '.join(RESAMPLING)}"
            )
        self.info = info
        self.grid = grid
        self.bands = tuple(bands) if bands else tuple(range(1, info.count + 1))
        if max(self.bands) > info.count:
            raise RasterError(
                f"asked for band {max(self.bands)} of a {info.count}-band raster", info.path
            )
        self.raw = raw
        # (row, col) of the raster on the grid when it is read directly, else None
        self._offset: tuple[int, int] | None = None
        if info.crs is None or same_grid:
            self._offset = (0, 0)  # plain images share the grid (check_overlap)
        elif not force_warp:
            self._offset = grid_offset(info, grid)
        self._src = open_raster(info.path)
        self._vrt: WarpedVRT | None = None
        if self._offset is None:
            try:
                self._vrt = WarpedVRT(
                    self._src,
                    crs=grid.crs,
                    transform=grid.transform,
                    width=grid.width,
                    height=grid.height,
                    resampling=RESAMPLING[resampling],
                    add_alpha=self._src.nodata is None,
                )
            except BaseException:  # nobody will call close() on a reader that never was
                self._src.close()
                raise

    @property
    def direct(self) -> bool:
        """Whether windows are read straight from the file (no ``WarpedVRT``)."""
        return self._offset is not None

    def __enter__(self) -> AlignedReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the file handles."""
        if self._vrt is not None:
            self._vrt.close()
        self._src.close()

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Pixels of ``window`` on the grid (cut at the grid's edges, as rasterio does).

        Returns:
            ``(data, valid)``: ``data`` ``(C, h, w)`` float32 with NaN where unseen (source
            dtype and untouched when ``raw``), ``valid`` bool ``(h, w)``: every band seen.
        """
        try:
            with warnings.catch_warnings(), source_env(self.info.path):
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                if self._vrt is None:
                    data, masks = self._read_direct(window)
                else:
                    data, masks = self._read_warped(self._vrt, window)
        except RasterioIOError as err:
            if isinstance(self.info.path, RasterSource) and self.info.path.remote:
                raise remote_error(err, self.info.path.label, "cannot read pixels") from None
            raise RasterError(
                f"cannot read pixels ({str(err).strip()[:160]})", self.info.path
            ) from None
        valid = (masks > 0).all(axis=0)
        if self.raw:
            return data, valid
        data = data.astype(np.float32, copy=False)
        valid &= np.isfinite(data).all(axis=0)
        nodata = self.info.nodata
        if nodata is not None and not math.isnan(nodata):
            valid &= ~(data == np.float32(nodata)).any(axis=0)
        data[:, ~valid] = np.nan
        return data, valid

    def _read_warped(self, vrt: WarpedVRT, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """``(data, masks)`` of a window through the ``WarpedVRT``, warping it once.

        GDAL's mask of a warped band is computed by warping the band again (its mask band
        re-reads the band, and window reads of a ``WarpedVRT`` bypass the block cache), so
        the mask is taken from the one warp instead: by GDAL's own nodata rule
        (:func:`_nodata_mask`) where the raster has a nodata value, else from the alpha
        band the warp adds, read along with the bands. (GDAL's mask of a non-uint8 band
        does not use that alpha band: it called every pixel seen, so pixels outside a
        float raster without nodata read as valid zeros.) Other rasters ask GDAL.
        """
        nodata = self._src.nodata
        if nodata is None:
            both = vrt.read((*self.bands, vrt.count), window=window)  # the alpha: last
            return both[:-1], both[-1:]
        data = vrt.read(self.bands, window=window)
        seen = _nodata_mask(data, nodata)
        if seen is None:
            return data, vrt.read_masks(self.bands, window=window)
        return data, seen

    def _read_direct(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """``(data, masks)`` of a window of a raster on the grid's lattice, read from the file.

        The window is cut at the grid's edges; the part of it the raster covers is read as
        the shifted window of the file, the rest filled as a ``WarpedVRT`` fills it
        (nodata, or 0 without one) with a zero mask.
        """
        assert self._offset is not None
        g, src = self.grid, self._src
        off_r, off_c = self._offset
        r0, c0 = max(int(window.row_off), 0), max(int(window.col_off), 0)
        r1 = min(int(window.row_off) + int(window.height), g.height)
        c1 = min(int(window.col_off) + int(window.width), g.width)
        h, w = max(r1 - r0, 0), max(c1 - c0, 0)
        # the part of the window the raster covers, in grid pixels
        sr0, sc0 = max(r0, off_r), max(c0, off_c)
        sr1, sc1 = min(r1, off_r + src.height), min(c1, off_c + src.width)
        inside = Window(sc0 - off_c, sr0 - off_r, max(sc1 - sc0, 0), max(sr1 - sr0, 0))
        if (sr0, sc0, sr1, sc1) == (r0, c0, r1, c1):  # all of it: one plain read
            return src.read(self.bands, window=inside), src.read_masks(self.bands, window=inside)
        dtype = np.dtype(src.dtypes[self.bands[0] - 1])
        data = np.full((len(self.bands), h, w), _fill_value(dtype, src.nodata), dtype)
        masks = np.zeros((len(self.bands), h, w), np.uint8)
        if sr1 > sr0 and sc1 > sc0:
            part = (slice(None), slice(sr0 - r0, sr1 - r0), slice(sc0 - c0, sc1 - c0))
            data[part] = src.read(self.bands, window=inside)
            masks[part] = src.read_masks(self.bands, window=inside)
        return data, masks


def _fill_value(dtype: np.dtype, nodata: float | None) -> float | int:
    """What a ``WarpedVRT`` writes where the raster has no pixel: its nodata, else 0."""
    if nodata is None:
        return 0
    if np.issubdtype(dtype, np.integer):
        if math.isnan(nodata):
            return 0
        limits = np.iinfo(dtype)
        return int(min(max(nodata, limits.min), limits.max))  # GDAL clamps out-of-range values
    return nodata


def _nodata_mask(data: np.ndarray, nodata: float) -> np.ndarray | None:
    """GDAL's nodata mask of ``data`` as bool, ``True`` where seen; ``None`` if not derivable.

    GDAL's nodata mask band (``GDALNoDataMaskBand``) marks a float32 pixel as nodata when
    it equals the nodata value within 2 float32 ulps of their sum (``ARE_REAL_EQUAL``) or
    both are NaN, an integer pixel when it equals the nodata value. The same rule applied
    here to float32 and integer data (integral nodata in the type's range) gives the same
    mask without a second read; other types (float64, odd nodata values) return ``None``.
    """
    if data.dtype == np.float32:
        if math.isnan(nodata):
            return ~np.isnan(data)
        nd = np.float32(nodata)
        with np.errstate(over="ignore", invalid="ignore"):
            near = np.abs(data - nd) < np.finfo(np.float32).eps * np.abs(data + nd) * 2
        return ~((data == nd) | near)
    if np.issubdtype(data.dtype, np.integer) and float(nodata).is_integer():
        limits = np.iinfo(data.dtype)
        if limits.min <= nodata <= limits.max:
            return data != data.dtype.type(int(nodata))
    return None
