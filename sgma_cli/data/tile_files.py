"""Write and read back one prepared tile folder, and write the tile index.

Also the output folder's bookkeeping: what a fresh run, a resumed run and ``--overwrite``
may find and delete. A tile folder (layout: :mod:`sgma_cli.config.dataset`) is written
under a hidden temp name and renamed when complete, so a folder with the final name is
always whole: a run killed mid-way leaves only finished tiles (plus a temp folder that the
next run removes).
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning

from sgma_cli.config.dataset import INDEX_NAME, MANIFEST_NAME
from sgma_cli.errors import UsageError

__all__ = [
    "TileData",
    "write_tile",
    "read_tile",
    "write_index",
    "prepare_output_dir",
    "remove_outputs",
    "TMP_PREFIX",
    "FINGERPRINT",
]

TMP_PREFIX = ".tmp-"
FINGERPRINT = ".sgma-prepare.json"


@dataclass
class TileData:
    """The arrays of one tile.

    Attributes:
        images: modality -> ``(C, T, T)`` float32, NaN where unseen.
        mask: ``(M, T, T)`` uint8, 1 where modality m saw the pixel (manifest order).
        label: ``(T, T)`` uint8 class indices, or ``None`` for unlabelled scenes.
        crs: CRS of the tile (``None`` for plain images).
        transform: affine of the tile.
    """

    images: dict[str, np.ndarray]
    mask: np.ndarray
    label: np.ndarray | None
    crs: CRS | None
    transform: Affine
    extra: dict[str, float] = field(default_factory=dict)


def _write(
    path: Path,
    array: np.ndarray,
    crs: CRS | None,
    transform: Affine,
    nodata: float | None,
    compress: bool,
) -> None:
    profile = {
        "driver": "GTiff",
        "width": array.shape[-1],
        "height": array.shape[-2],
        "count": array.shape[0],
        "dtype": array.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    if compress:
        profile["compress"] = "deflate"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)


def write_tile(folder: Path, tile: TileData, modalities: list[str]) -> None:
    """Write ``<modality>.tif``, ``mask.tif`` (+ ``label.tif``) into ``folder`` atomically."""
    folder = Path(folder)
    tmp = folder.with_name(f"{TMP_PREFIX}{folder.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for name in modalities:
            _write(
                tmp / f"{name}.tif",
                tile.images[name].astype(np.float32),
                tile.crs,
                tile.transform,
                float("nan"),
                False,
            )
        _write(tmp / "mask.tif", tile.mask.astype(np.uint8), tile.crs, tile.transform, None, True)
        if tile.label is not None:
            _write(
                tmp / "label.tif",
                tile.label[None].astype(np.uint8),
                tile.crs,
                tile.transform,
                255,
                True,
            )
    tmp.rename(folder)


def read_tile(folder: Path, modalities: list[str]) -> TileData:
    """Read a finished tile folder back (for resumed runs' statistics and index)."""
    folder = Path(folder)
    images = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for name in modalities:
            with rasterio.open(folder / f"{name}.tif") as src:
                images[name] = src.read()
        with rasterio.open(folder / "mask.tif") as src:
            mask = src.read()
            crs, transform = src.crs, src.transform
        label = None
        if (folder / "label.tif").exists():
            with rasterio.open(folder / "label.tif") as src:
                label = src.read(1)
    return TileData(images, mask, label, crs if crs else None, transform)


def write_index(
    path: Path, records: list[dict[str, object]], geometries: list[object], crs: CRS | None
) -> None:
    """Write the tile footprints to ``path`` (GeoPackage layer ``tiles``) atomically."""
    import geopandas as gpd

    frame = gpd.GeoDataFrame(records, geometry=geometries, crs=crs)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    tmp.unlink(missing_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        frame.to_file(tmp, layer="tiles", driver="GPKG")
    tmp.replace(path)


def remove_outputs(out: Path, remove_folder: bool) -> None:
    """Delete what ``prepare`` writes in ``out`` (and ``out`` itself when asked and empty)."""
    for p in (out / "tiles", out / INDEX_NAME, out / MANIFEST_NAME, out / FINGERPRINT):
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    if remove_folder and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def prepare_output_dir(out: Path, fp: dict[str, Any], overwrite: bool) -> bool:
    """Create or check the output folder; return True for a fresh run (nothing to resume).

    Args:
        out: ``DATA_DIR``.
        fp: the run's options; stored in ``out/.sgma-prepare.json`` so a resumed run can
            check that its finished tiles were cut the same way.
        overwrite: delete an earlier result first.

    Raises:
        UsageError: ``out`` is a file, holds other files, holds tiles of other options,
            or is not writable.
    """
    if out.exists() and not out.is_dir():
        raise UsageError("output exists and is not a folder", out)
    fresh = not out.exists() or not any(out.iterdir())
    if overwrite and out.exists():
        remove_outputs(out, remove_folder=False)
        fresh = True
    elif not fresh:
        old = out / FINGERPRINT
        if not old.exists():
            raise UsageError(
                "output folder is not empty and was not written by sgma prepare; "
                "pick another --out or add --overwrite",
                out,
            )
        if json.loads(old.read_text()) != fp:
            raise UsageError(
                "output folder holds tiles prepared with other options; "
                "add --overwrite to start over",
                out,
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".sgma-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"output folder is not writable ({err.strerror})", out) from None
    (out / FINGERPRINT).write_text(json.dumps(fp, indent=1, sort_keys=True))
    for stale in (out / "tiles").glob(f"*/{TMP_PREFIX}*") if (out / "tiles").exists() else []:
        shutil.rmtree(stale)
    return fresh
