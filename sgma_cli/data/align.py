"""Put every modality of a scene on one reference pixel grid, window by window.

A :class:`Grid` is a CRS, an affine transform and a size. :class:`AlignedReader` wraps a
source raster in a ``WarpedVRT`` onto that grid, so reading a tile window warps only
that window: a 10 000 x 10 000 scene never has to fit in memory (TorchGeo's
``RasterDataset`` reprojects on read the same way). Pixels the sensor did not see
(nodata, NaN, outside its extent) come back as NaN plus a ``False`` in the validity mask.
Rasters without a CRS are read as they are and must already share the reference grid.
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

__all__ = ["Grid", "reference_grid", "check_overlap", "AlignedReader", "RESAMPLING"]

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


class AlignedReader:
    """Read windows of one raster resampled onto a :class:`Grid`.

    Args:
        info: the source raster.
        grid: the reference grid.
        resampling: rasterio resampling name (``bilinear`` for continuous bands, ``nearest``
            for labels).
        bands: 1-based bands to read, default all.
        same_grid: read the raster as is (it has no CRS but shares the grid's pixels).
        raw: return the source dtype and leave invalid pixels unchanged (labels).
    """

    def __init__(
        self,
        info: RasterInfo,
        grid: Grid,
        resampling: str = "bilinear",
        bands: tuple[int, ...] | None = None,
        same_grid: bool = False,
        raw: bool = False,
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
        self._src = open_raster(info.path)
        self._vrt: WarpedVRT | None = None
        self._direct = (
            info.crs is None
            or same_grid
            or (
                info.crs == grid.crs
                and info.transform == grid.transform
                and (info.width, info.height) == (grid.width, grid.height)
            )
        )
        if not self._direct:
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
        """Pixels of ``window`` on the grid.

        Returns:
            ``(data, valid)``: ``data`` ``(C, h, w)`` float32 with NaN where unseen (source
            dtype and untouched when ``raw``), ``valid`` bool ``(h, w)``: every band seen.
        """
        ds = self._vrt if self._vrt is not None else self._src
        try:
            with warnings.catch_warnings(), source_env(self.info.path):
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                if self._direct:
                    data = ds.read(self.bands, window=window, boundless=False)
                    masks = ds.read_masks(self.bands, window=window)
                else:
                    data = ds.read(self.bands, window=window)
                    masks = (
                        ds.read_masks(self.bands, window=window)
                        if self._src.nodata is not None
                        else ds.read_masks(1, window=window)[None]
                    )
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
