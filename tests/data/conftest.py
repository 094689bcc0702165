"""Tiny real rasters for the data-layer, engine and CLI tests of ``sgma prepare``.

Everything is written from fixed seeds into ``tmp_path``: GeoTIFFs in two CRSs and three
resolutions, a SAR swath that ends mid-scene, DSM nodata holes, colour and index label
rasters, label polygons, and tiny Potsdam, DFC2023 and DELIVER folder layouts.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import transform_bounds

from sgma_cli.data.palettes import POTSDAM

UTM = CRS.from_epsg(32633)
MERC = CRS.from_epsg(3857)
X0, Y0 = 368000.0, 5808000.0


def write_raster(
    path: Path,
    array: np.ndarray,
    crs: CRS | None,
    transform: Affine | None,
    nodata: float | None = None,
    driver: str = "GTiff",
) -> Path:
    """Write ``(C, H, W)`` (or ``(H, W)``) to ``path``; ``crs=None`` writes a plain image."""
    array = array[None] if array.ndim == 2 else array
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": driver,
        "width": array.shape[2],
        "height": array.shape[1],
        "count": array.shape[0],
        "dtype": array.dtype.name,
    }
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    if nodata is not None:
        profile["nodata"] = nodata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(array)
    return path


@dataclass
class Scene:
    """A written multi-CRS scene and the facts the tests check against."""

    root: Path
    classes: np.ndarray  # (H, W) class index on the rgb grid
    rgb: np.ndarray  # (3, H, W) uint8
    size: int
    res: float
    sar_right: float  # easting (EPSG:32633) where the SAR swath ends


def make_scene(root: Path, size: int = 96, res: float = 1.0, seed: int = 0) -> Scene:
    """rgb (1 m, UTM), dsm (2 m, UTM, hole), sar (Web Mercator, swath ends mid-scene), labels.

    Classes (Potsdam indices): 0 road left third, 1 building block, 3 tree disc, 2 grass.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    n = size
    cls = np.full((n, n), 2, np.uint8)
    cls[:, : n // 3] = 0
    cls[n // 4 : n // 2, n // 2 : 3 * n // 4] = 1
    yy, xx = np.mgrid[0:n, 0:n]
    cls[(yy - 3 * n // 4) ** 2 + (xx - 3 * n // 4) ** 2 < (n // 8) ** 2] = 3
    rgb = np.array([[120, 120, 120], [200, 60, 60], [90, 130, 60], [85, 120, 55]], np.uint8)[
        cls
    ].transpose(2, 0, 1) + rng.integers(0, 5, (3, n, n), dtype=np.uint8)
    t_rgb = Affine(res, 0, X0, 0, -res, Y0)
    write_raster(root / "rgb.tif", rgb, UTM, t_rgb)
    height = np.array([0.0, 12.0, 0.2, 9.0], np.float32)[cls]
    dsm = height.reshape(n // 2, 2, n // 2, 2).mean(axis=(1, 3)).astype(np.float32) + 30
    dsm[2:5, 2:5] = -9999
    write_raster(root / "dsm.tif", dsm, UTM, Affine(2 * res, 0, X0, 0, -2 * res, Y0), -9999.0)
    # SAR: Web Mercator grid over the scene, valid only west of sar_right
    left, bottom, right, top = transform_bounds(UTM, MERC, X0, Y0 - n * res, X0 + n * res, Y0)
    sres = (right - left) / (n // 2)
    ws, hs = n // 2, int(np.ceil((top - bottom) / sres))
    sar = rng.normal(-10, 1, (hs, ws)).astype(np.float32)
    t_sar = Affine(sres, 0, left, 0, -sres, top)
    cut = ws * 5 // 8
    sar[:, cut:] = np.nan
    sar_right_merc = left + cut * sres
    sar_right = transform_bounds(MERC, UTM, sar_right_merc - 1e-3, bottom, sar_right_merc, top)[2]
    write_raster(root / "sar.tif", sar, MERC, t_sar, float("nan"))
    lut = np.array([c for _, c in POTSDAM], np.uint8)
    write_raster(
        root / "labels_colour.tif", np.ascontiguousarray(lut[cls].transpose(2, 0, 1)), UTM, t_rgb
    )
    write_raster(root / "labels_index.tif", cls, UTM, t_rgb)
    return Scene(root, cls, rgb, n, res, sar_right)


@pytest.fixture
def scene(tmp_path: Path) -> Scene:
    """A 96 x 96 px multi-CRS scene with colour and index labels."""
    return make_scene(tmp_path / "scene")


def write_polygons(path: Path, crs: CRS = UTM, field: str = "class") -> Path:
    """Two labelled squares: a building [X0+10, X0+30] x [Y0-30, Y0-10], a tree next to it."""
    import geopandas as gpd
    from shapely.geometry import box

    frame = gpd.GeoDataFrame(
        {field: ["building", "tree"]},
        geometry=[box(X0 + 10, Y0 - 30, X0 + 30, Y0 - 10), box(X0 + 40, Y0 - 30, X0 + 50, Y0 - 20)],
        crs=UTM,
    ).to_crs(crs)
    frame.to_file(path, driver="GPKG" if path.suffix == ".gpkg" else "GeoJSON")
    return path


def make_potsdam(root: Path, n: int = 64) -> Path:
    """A Potsdam layout for tiles 2_10 and 2_13.

    2_Ortho_RGB, 4_Ortho_RGBIR, 1_DSM_normalisation (no CRS) and 5_Labels_all.
    """
    rng = np.random.default_rng(1)
    lut = np.array([c for _, c in POTSDAM], np.uint8)
    for i, (a, b) in enumerate([(2, 10), (2, 13)]):
        t = Affine(0.05, 0, X0 + 100 * i, 0, -0.05, Y0)
        cls = rng.integers(0, 6, (n // 8, n // 8)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
        write_raster(
            root / "2_Ortho_RGB" / f"top_potsdam_{a}_{b}_RGB.tif",
            rng.integers(0, 255, (3, n, n), dtype=np.uint8),
            UTM,
            t,
        )
        write_raster(
            root / "4_Ortho_RGBIR" / f"top_potsdam_{a}_{b}_RGBIR.tif",
            rng.integers(0, 255, (4, n, n), dtype=np.uint8),
            UTM,
            t,
        )
        write_raster(
            root / "1_DSM_normalisation" / f"dsm_potsdam_{a:02d}_{b:02d}_normalized_lastools.tif",
            rng.integers(0, 255, (1, n, n), dtype=np.uint8),
            None,
            None,
        )
        write_raster(
            root / "5_Labels_all" / f"top_potsdam_{a}_{b}_label.tif",
            np.ascontiguousarray(lut[cls].transpose(2, 0, 1)),
            UTM,
            t,
        )
    return root


def make_dfc2023(root: Path, n: int = 64) -> Path:
    """track2/{train,val}/{RGB,SAR,DSM}/<id>.tif + a COCO file with one building per train tile."""
    rng = np.random.default_rng(2)
    images, anns = [], []
    for split, ids in (("train", ["P_0001", "P_0002"]), ("val", ["P_0101"])):
        for k, tid in enumerate(ids):
            t = Affine(0.5, 0, X0 + 1000 * k + (5000 if split == "val" else 0), 0, -0.5, Y0)
            write_raster(
                root / "track2" / split / "RGB" / f"{tid}.tif",
                rng.integers(0, 255, (3, n, n), dtype=np.uint8),
                UTM,
                t,
            )
            write_raster(
                root / "track2" / split / "SAR" / f"{tid}.tif",
                rng.normal(-10, 2, (1, n, n)).astype(np.float32),
                UTM,
                t,
            )
            write_raster(
                root / "track2" / split / "DSM" / f"{tid}.tif",
                rng.normal(5, 2, (1, n, n)).astype(np.float32),
                UTM,
                t,
            )
            if split == "train":
                iid = len(images) + 1
                images.append({"id": iid, "file_name": f"{tid}.tif", "width": n, "height": n})
                anns.append(
                    {
                        "id": iid,
                        "image_id": iid,
                        "category_id": 1,
                        "iscrowd": 0,
                        "segmentation": [[8, 8, 24, 8, 24, 24, 8, 24]],
                        "bbox": [8, 8, 16, 16],
                    }
                )
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "building"}]}
    (root / "track2" / "buildings_only_train.json").write_text(json.dumps(coco))
    return root


def make_deliver(root: Path, n: int = 32) -> Path:
    """img/depth/event/lidar/semantic folders of PNGs (no CRS), split/condition sub-folders."""
    rng = np.random.default_rng(3)
    for split in ("train", "val"):
        for k in range(2):
            stem = f"{k:03d}"
            write_raster(
                root / "img" / split / "cloud" / f"{stem}_rgb_front.png",
                rng.integers(0, 255, (3, n, n), dtype=np.uint8),
                None,
                None,
                driver="PNG",
            )
            for m in ("depth", "event", "lidar"):
                write_raster(
                    root / m / split / "cloud" / f"{stem}_{m}_front.png",
                    rng.integers(0, 255, (3, n, n), dtype=np.uint8),
                    None,
                    None,
                    driver="PNG",
                )
            lab = rng.integers(1, 26, (n, n), dtype=np.uint8)
            lab[:4] = 0
            write_raster(
                root / "semantic" / split / "cloud" / f"{stem}_semantic_front.png",
                lab,
                None,
                None,
                driver="PNG",
            )
    return root
