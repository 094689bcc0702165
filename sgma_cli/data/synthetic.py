"""A synthetic, learnable multi-sensor scene in the ISPRS Potsdam class scheme.

The scene is built so that no single sensor suffices:

* grey roofs and roads share one colour, but not one height (DSM) nor one backscatter
  (SAR: double bounce on buildings, specular roads);
* trees and grass share one colour, but not height (DSM) nor volume scattering (SAR);
* a haze patch washes out the orthophoto somewhere; the DSM has nodata holes; the SAR
  swath ends inside the scene (partial availability, not a missing sensor).

Sensors live on different grids, as in real data: RGB ``uint8`` at 0.5 m in UTM 33N
(EPSG:32633), DSM ``float32`` at 1 m with nodata -9999, SAR ``float32`` dB in Web
Mercator (EPSG:3857) at ~1.5 m ground pixel with NaN outside the swath. Everything is a
pure function of ``(size, seed)``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import shapes
from rasterio.warp import Resampling, calculate_default_transform, reproject

from sgma_cli.data.palettes import POTSDAM
from sgma_cli.data.raster import geotiff_profile

__all__ = ["SAMPLE_MARKER", "SyntheticScene", "make_scene", "sample_tiling", "write_scene"]

SAMPLE_MARKER = "sample.json"
RGB_CRS = CRS.from_epsg(32633)
SAR_CRS = CRS.from_epsg(3857)
ORIGIN = (368000.0, 5808000.0)  # Potsdam, UTM 33N
RES = 0.5
DSM_NODATA = -9999.0
IMPERVIOUS, BUILDING, LOW_VEG, TREE, CAR, CLUTTER = range(6)
SAMPLE_TILE = 128  # px; the tile `make demo` prepares the 1024 px sample with


def sample_tiling(size: int) -> tuple[int, int]:
    """The ``(tile, stride)`` that ``sgma prepare`` uses for a sample scene of ``size`` px.

    128 px tiles without overlap, so the default 1024 px scene gives 64 tiles and a
    spatial train/val/test split leaves enough training tiles for ``recipes/sample.toml``
    (the prepare default of 512 px would leave 2). Smaller scenes get a quarter of their
    side, in multiples of 32 px (at least 32), so the split still fits.
    """
    tile = max(32, min(SAMPLE_TILE, size // 4 // 32 * 32))
    return tile, tile


@dataclass
class SyntheticScene:
    """Arrays of one synthetic scene.

    Attributes:
        classes: ``(H, W)`` uint8 class index on the RGB grid.
        rgb: ``(3, H, W)`` uint8 orthophoto.
        dsm: ``(1, H/2, W/2)`` float32 heights in m, ``DSM_NODATA`` in holes.
        sar: ``(1, Hs, Ws)`` float32 backscatter in dB, NaN outside the swath.
        rgb_transform: affine of the RGB (and label) grid, EPSG:32633.
        dsm_transform: affine of the DSM grid, EPSG:32633.
        sar_transform: affine of the SAR grid, EPSG:3857.
    """

    classes: np.ndarray
    rgb: np.ndarray
    dsm: np.ndarray
    sar: np.ndarray
    rgb_transform: Affine
    dsm_transform: Affine
    sar_transform: Affine


def _smooth(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth noise in [-1, 1] of shape ``(h, w)``: bilinear upsampling of a coarse grid."""
    gh, gw = h // cell + 2, w // cell + 2
    coarse = rng.uniform(-1, 1, (gh, gw))
    y = np.arange(h) / cell
    x = np.arange(w) / cell
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    a = coarse[np.ix_(y0, x0)]
    b = coarse[np.ix_(y0, x0 + 1)]
    c = coarse[np.ix_(y0 + 1, x0)]
    d = coarse[np.ix_(y0 + 1, x0 + 1)]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _layout(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class map, object height above ground and roof type (1 grey, 2 red) on an n x n grid."""
    cls = np.full((n, n), LOW_VEG, np.uint8)
    height = np.abs(rng.normal(0.05, 0.05, (n, n))).astype(np.float32)
    roof = np.zeros((n, n), np.uint8)
    yy, xx = np.mgrid[0:n, 0:n]

    # streets: a jittered grid, 12-18 px (6-9 m) wide
    def street_lines() -> list[tuple[int, int]]:
        lines, pos = [], int(rng.integers(20, 120))
        while pos < n:
            width = int(rng.integers(12, 19))
            lines.append((pos, min(n, pos + width)))
            pos += width + int(rng.integers(150, 260))
        return lines

    rows, cols = street_lines(), street_lines()
    for a, b in rows:
        cls[a:b, :] = IMPERVIOUS
    for a, b in cols:
        cls[:, a:b] = IMPERVIOUS
    height[cls == IMPERVIOUS] = 0.0

    # blocks between streets: built-up or park
    row_edges = [0, *[e for ab in rows for e in ab], n]
    col_edges = [0, *[e for ab in cols for e in ab], n]
    blocks = [
        (row_edges[i], row_edges[i + 1], col_edges[j], col_edges[j + 1])
        for i in range(0, len(row_edges) - 1, 2)
        for j in range(0, len(col_edges) - 1, 2)
    ]
    for y0, y1, x0, x1 in blocks:
        if y1 - y0 < 30 or x1 - x0 < 30:
            continue
        if rng.random() < 0.65:  # built-up: buildings along a sub-grid with gaps
            m = int(rng.integers(6, 14))
            by = y0 + m
            while by < y1 - m - 16:
                bh = int(rng.integers(24, 70))
                bx = x0 + m
                while bx < x1 - m - 16:
                    bw = int(rng.integers(24, 80))
                    ye, xe = min(by + bh, y1 - m), min(bx + bw, x1 - m)
                    if rng.random() < 0.85 and ye - by >= 12 and xe - bx >= 12:
                        cls[by:ye, bx:xe] = BUILDING
                        h = rng.uniform(6, 20)
                        ridge = 1 - np.abs(np.linspace(-1, 1, ye - by))[:, None] * rng.uniform(
                            0, 0.3
                        )
                        height[by:ye, bx:xe] = h * ridge
                        roof[by:ye, bx:xe] = 1 if rng.random() < 0.5 else 2
                    bx += bw + int(rng.integers(8, 20))
                by += bh + int(rng.integers(8, 20))
        # trees: round crowns on what is still grass
        area = (y1 - y0) * (x1 - x0)
        for _ in range(int(area / (2500 if rng.random() < 0.5 else 900))):
            cy, cx = rng.integers(y0, y1), rng.integers(x0, x1)
            r = rng.uniform(5, 18)
            s0, s1, t0, t1 = (
                max(0, int(cy - r)),
                min(n, int(cy + r) + 1),
                max(0, int(cx - r)),
                min(n, int(cx + r) + 1),
            )
            d2 = ((yy[s0:s1, t0:t1] - cy) ** 2 + (xx[s0:s1, t0:t1] - cx) ** 2) / r**2
            crown = (d2 < 1) & (cls[s0:s1, t0:t1] == LOW_VEG)
            h = rng.uniform(6, 15) * np.sqrt(np.clip(1 - d2, 0, 1)) + rng.normal(0, 0.4, d2.shape)
            cls[s0:s1, t0:t1][crown] = TREE
            height[s0:s1, t0:t1][crown] = np.maximum(height[s0:s1, t0:t1][crown], h[crown] + 2.0)
        # clutter: sheds, heaps, containers on grass
        for _ in range(int(rng.integers(0, 3))):
            cy, cx = int(rng.integers(y0, y1)), int(rng.integers(x0, x1))
            hh, ww = int(rng.integers(6, 20)), int(rng.integers(6, 24))
            sl = (slice(cy, min(n, cy + hh)), slice(cx, min(n, cx + ww)))
            spot = cls[sl] == LOW_VEG
            cls[sl][spot] = CLUTTER
            height[sl][spot] = rng.uniform(0.5, 3.0)

    # cars: 4 x 9 px on the streets, along the street direction
    for lines, horizontal in ((rows, True), (cols, False)):
        for a, b in lines:
            for _ in range(n // 45):
                along = int(rng.integers(0, n - 10))
                across = int(rng.integers(a + 1, max(a + 2, b - 5)))
                sl = (
                    (slice(across, across + 4), slice(along, along + 9))
                    if horizontal
                    else (slice(along, along + 9), slice(across, across + 4))
                )
                if (cls[sl] == IMPERVIOUS).all():
                    cls[sl] = CAR
                    height[sl] = 1.5
    return cls, height, roof


def make_scene(size: int = 1024, seed: int = 0) -> SyntheticScene:
    """Build all arrays of the scene; ``size`` is the RGB side in pixels (0.5 m each).

    Raises:
        ValueError: ``size`` below 64 or not even.
    """
    if size < 64 or size % 2:
        raise ValueError(f"size must be an even number >= 64, got {size}")
    rng = np.random.default_rng(seed)
    n = size
    cls, height, roof = _layout(rng, n)

    # --- RGB: roofs like roads, trees like grass; illumination drift; a haze patch
    base = np.zeros((3, n, n), np.float32)
    colors = {
        IMPERVIOUS: (118, 118, 122),
        LOW_VEG: (92, 124, 62),
        TREE: (86, 118, 58),
        CLUTTER: (138, 112, 88),
    }
    for k, c in colors.items():
        base[:, cls == k] = np.array(c, np.float32)[:, None]
    base[:, (cls == BUILDING) & (roof == 1)] = np.array((122, 120, 121), np.float32)[:, None]
    base[:, (cls == BUILDING) & (roof == 2)] = np.array((150, 78, 62), np.float32)[:, None]
    car = cls == CAR
    car_colors = rng.integers(20, 236, (3, n, n)).astype(np.float32)  # per-pixel, blended below
    base[:, car] = (
        0.3 * car_colors[:, car] + 0.7 * np.array((200, 40, 40), np.float32)[:, None] * rng.random()
    )
    light = 1 + 0.08 * _smooth(rng, n, n, 128)
    rgb = base * light + rng.normal(0, 7, base.shape)
    haze = np.zeros((n, n), np.float32)
    yy, xx = np.mgrid[0:n, 0:n]
    for _ in range(max(1, n // 768)):
        cy, cx, r = rng.uniform(0.2, 0.8) * n, rng.uniform(0.2, 0.8) * n, rng.uniform(0.1, 0.18) * n
        haze = np.maximum(haze, np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))) * 0.92)
    haze *= 0.85 + 0.15 * (_smooth(rng, n, n, 32) + 1) / 2
    rgb = rgb * (1 - haze) + np.array((228, 228, 232), np.float32)[:, None, None] * haze
    rgb8 = np.clip(rgb, 0, 255).astype(np.uint8)

    # --- DSM: 1 m, absolute heights on gentle terrain, nodata holes
    terrain = 34.0 + 1.5 * _smooth(rng, n, n, 256)
    surface = (terrain + height).astype(np.float32)
    dsm = surface.reshape(n // 2, 2, n // 2, 2).mean(axis=(1, 3)) + rng.normal(
        0, 0.08, (n // 2, n // 2)
    )
    dsm = dsm.astype(np.float32)
    hy, hx = np.mgrid[0 : n // 2, 0 : n // 2]
    for _ in range(max(2, n // 256)):
        cy, cx = rng.uniform(0, n // 2, 2)
        ry, rx = rng.uniform(4, 14, 2) * n / 1024 + 3
        dsm[((hy - cy) / ry) ** 2 + ((hx - cx) / rx) ** 2 < 1] = DSM_NODATA

    # --- SAR: linear backscatter per class on the fine grid, averaged onto a Web Mercator grid
    sigma_db = np.array([-18.0, 1.0, -11.0, -6.0, 4.0, -3.0], np.float32)
    linear = 10 ** (sigma_db[cls] / 10) * (1 + 0.15 * _smooth(rng, n, n, 64))
    rgb_transform = Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1])
    left, top = ORIGIN
    right, bottom = left + n * RES, top - n * RES
    sar_transform, sw, sh = calculate_default_transform(
        RGB_CRS, SAR_CRS, n, n, left, bottom, right, top, resolution=1.5 * 1.64
    )
    sar_lin = np.full((sh, sw), np.nan, np.float32)
    reproject(
        linear.astype(np.float32),
        sar_lin,
        src_transform=rgb_transform,
        src_crs=RGB_CRS,
        dst_transform=sar_transform,
        dst_crs=SAR_CRS,
        resampling=Resampling.average,
        src_nodata=None,
        dst_nodata=np.nan,
    )
    looks = 4
    speckle = rng.gamma(looks, 1 / looks, sar_lin.shape).astype(np.float32)
    sar = 10 * np.log10(np.maximum(sar_lin * speckle, 1e-6))
    sy, sx = np.mgrid[0:sh, 0:sw]
    edge = sw * rng.uniform(0.55, 0.7) + (sy - sh / 2) * rng.uniform(-0.3, 0.3)
    sar[sx > edge] = np.nan  # the swath ends inside the scene
    sar[~np.isfinite(sar_lin)] = np.nan
    return SyntheticScene(
        classes=cls,
        rgb=rgb8,
        dsm=dsm[None],
        sar=sar[None].astype(np.float32),
        rgb_transform=rgb_transform,
        dsm_transform=Affine(2 * RES, 0, ORIGIN[0], 0, -2 * RES, ORIGIN[1]),
        sar_transform=sar_transform,
    )


def _write(
    path: Path, array: np.ndarray, crs: CRS, transform: Affine, nodata: float | None
) -> None:
    small = array.shape[-1] < 256 or array.shape[-2] < 256  # no 256 px blocks fit
    blocks = {"tiled": False} if small else {"tiled": True, "blockxsize": 256, "blockysize": 256}
    profile = geotiff_profile(array, crs, transform, nodata, **blocks, compress="deflate", zlevel=1)
    tmp = path.with_name(f".{path.name}.tmp")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(array)
    tmp.replace(path)


#: The ``last_change`` timestamp written into ``labels.gpkg`` (GDAL's ``OGR_CURRENT_DATE``),
#: so the same size and seed give the same bytes for the GeoPackage as for the GeoTIFFs.
GPKG_DATE = "2000-01-01T00:00:00.000Z"


@contextlib.contextmanager
def _fixed_gpkg_date() -> Iterator[None]:
    """Set GDAL's ``OGR_CURRENT_DATE`` while a GeoPackage is written, then restore it."""
    before = os.environ.get("OGR_CURRENT_DATE")
    os.environ["OGR_CURRENT_DATE"] = GPKG_DATE
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OGR_CURRENT_DATE", None)
        else:
            os.environ["OGR_CURRENT_DATE"] = before


def write_scene(
    out_dir: Path, size: int = 1024, seed: int = 0, vectors: bool = True
) -> dict[str, Path]:
    """Write the scene as GeoTIFFs (+ GeoPackage labels) into ``out_dir``; return the files.

    Files: ``rgb.tif``, ``dsm.tif``, ``sar.tif``, ``labels.tif`` (Potsdam colours, 3 bands
    uint8 on the RGB grid), ``labels.gpkg`` (layer ``labels``, column ``class`` with the
    class name; only when ``vectors``) and ``sample.json``, the marker that lets
    ``sgma prepare`` read the folder without options (it names the files, the palette and
    the tile size and stride of :func:`sample_tiling`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = make_scene(size, seed)
    files = {
        "rgb": out_dir / "rgb.tif",
        "dsm": out_dir / "dsm.tif",
        "sar": out_dir / "sar.tif",
        "labels": out_dir / "labels.tif",
    }
    _write(files["rgb"], scene.rgb, RGB_CRS, scene.rgb_transform, None)
    _write(files["dsm"], scene.dsm, RGB_CRS, scene.dsm_transform, DSM_NODATA)
    _write(files["sar"], scene.sar, SAR_CRS, scene.sar_transform, float("nan"))
    lut = np.array([c for _, c in POTSDAM], np.uint8)
    _write(
        files["labels"],
        np.ascontiguousarray(lut[scene.classes].transpose(2, 0, 1)),
        RGB_CRS,
        scene.rgb_transform,
        None,
    )
    if vectors:
        import geopandas as gpd
        from shapely.geometry import shape

        geoms, names = [], []
        for geom, value in shapes(scene.classes, transform=scene.rgb_transform):
            geoms.append(shape(geom))
            names.append(POTSDAM[int(value)][0])
        frame = gpd.GeoDataFrame({"class": names}, geometry=geoms, crs=RGB_CRS)
        files["vectors"] = out_dir / "labels.gpkg"
        tmp = out_dir / ".labels.tmp.gpkg"
        tmp.unlink(missing_ok=True)
        with _fixed_gpkg_date():
            frame.to_file(tmp, layer="labels", driver="GPKG")
        tmp.replace(files["vectors"])
    tile, stride = sample_tiling(size)
    marker = {
        "sgma_sample": 1,
        "size": size,
        "seed": seed,
        "tile": tile,
        "stride": stride,
        "palette": "potsdam",
        "modalities": {"rgb": "rgb.tif", "dsm": "dsm.tif", "sar": "sar.tif"},
        "labels": "labels.tif",
    }
    files["marker"] = out_dir / SAMPLE_MARKER
    files["marker"].write_text(json.dumps(marker, indent=2) + "\n")
    return files
