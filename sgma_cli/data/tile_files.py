"""Write and read back one prepared tile folder, and write the tile index.

Also the output folder's bookkeeping: what a fresh run, a resumed run and ``--overwrite``
may find and delete. A tile folder (layout: :mod:`sgma_cli.config.dataset`) is written
under a hidden temp name and renamed when complete, so a folder with the final name is
always whole: a run killed mid-way leaves only finished tiles (plus a temp folder that the
next run removes). A write error (disk full, I/O error, read-only folder) is one
:class:`~sgma_cli.errors.OutputError` naming the file, after the temp folder is removed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.io import MemoryFile

from sgma_cli.config.dataset import INDEX_NAME, MANIFEST_NAME
from sgma_cli.data.atomic import remove_quietly, write_errors
from sgma_cli.data.raster import geotiff_profile
from sgma_cli.errors import RasterError, UsageError

__all__ = [
    "TileData",
    "write_tile",
    "read_tile",
    "write_index",
    "check_output_dir",
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
    profile = geotiff_profile(
        array, crs, transform, nodata, **({"compress": "deflate"} if compress else {})
    )
    # errors name the file in the finished tile folder, the one the user will look for
    shown = path.parent.with_name(path.parent.name.removeprefix(TMP_PREFIX)) / path.name
    # GDAL reports a full disk met while closing a small file only on stderr, leaving an
    # empty or cut file behind; so the GeoTIFF is made in memory (the same bytes) and
    # written by Python, whose write raises OSError (ENOSPC, EIO, EROFS) instead
    with write_errors(shown, kinds=(RasterioError,)):
        with MemoryFile() as memory:
            with memory.open(**profile) as dst:
                dst.write(array)
            data = memory.read()
        with open(path, "wb") as fh:
            fh.write(data)


def write_tile(folder: Path, tile: TileData, modalities: list[str]) -> None:
    """Write ``<modality>.tif``, ``mask.tif`` (+ ``label.tif``) into ``folder`` atomically.

    Raises:
        OutputError: a file could not be written; the temp folder is removed again.
    """
    folder = Path(folder)
    tmp = folder.with_name(f"{TMP_PREFIX}{folder.name}")
    try:
        with write_errors(folder):
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
            mask = tile.mask.astype(np.uint8)
            _write(tmp / "mask.tif", mask, tile.crs, tile.transform, None, True)
            if tile.label is not None:
                _write(
                    tmp / "label.tif",
                    tile.label[None].astype(np.uint8),
                    tile.crs,
                    tile.transform,
                    255,
                    True,
                )
        with write_errors(folder):
            tmp.rename(folder)
    except BaseException:
        remove_quietly(tmp)
        raise


def read_tile(
    folder: Path,
    modalities: list[str],
    size: int | None = None,
    bands: dict[str, int] | None = None,
) -> TileData:
    """Read a finished tile folder back (for resumed runs' statistics and index).

    Args:
        folder: the tile folder.
        modalities: modality names, in manifest (mask band) order.
        size: the tile side in pixels every file must have (checked before reading).
        bands: the band count each modality's file must have.

    Raises:
        RasterError: a file of the tile is missing, damaged or of another shape (named,
            with the fix).
    """
    folder = Path(folder)
    try:
        return _read_tile(folder, modalities, size, bands or {})
    except RasterioIOError as err:
        reason = " ".join(str(err).split())[:120]
        raise RasterError(
            f"damaged tile ({reason}); delete this tile folder to cut it again, or add --overwrite",
            folder,
        ) from None


def _checked(src: rasterio.DatasetReader, size: int | None, count: int | None) -> None:
    """Refuse a tile file whose header does not match the tile (before allocating for it)."""
    shape = (src.count, src.height, src.width)
    if (size is not None and shape[1:] != (size, size)) or (
        count is not None and shape[0] != count
    ):
        expected = f"{count or '?'} x {size or '?'} x {size or '?'}"
        raise RasterioIOError(
            f"{Path(src.name).name} is {' x '.join(map(str, shape))}, not {expected}"
        )


def _read_tile(
    folder: Path, modalities: list[str], size: int | None, bands: dict[str, int]
) -> TileData:
    images = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for name in modalities:
            with rasterio.open(folder / f"{name}.tif") as src:
                _checked(src, size, bands.get(name))
                images[name] = src.read()
        with rasterio.open(folder / "mask.tif") as src:
            _checked(src, size, len(modalities))
            mask = src.read()
            crs, transform = src.crs, src.transform
        label = None
        if (folder / "label.tif").exists():
            with rasterio.open(folder / "label.tif") as src:
                _checked(src, size, None)
                label = src.read(1)
    return TileData(images, mask, label, crs if crs else None, transform)


def write_index(
    path: Path, records: list[dict[str, object]], geometries: list[object], crs: CRS | None
) -> None:
    """Write the tile footprints to ``path`` (GeoPackage layer ``tiles``) atomically.

    Raises:
        OutputError: the index could not be written; nothing is left of it.
    """
    import geopandas as gpd

    frame = gpd.GeoDataFrame(records, geometry=geometries, crs=crs)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    _remove_with_journal(tmp)
    try:
        with warnings.catch_warnings(), write_errors(path, kinds=(RuntimeError, ValueError)):
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", UserWarning)
            frame.to_file(tmp, layer="tiles", driver="GPKG")  # pyogrio: RuntimeError subclasses
            tmp.replace(path)
    finally:
        _remove_with_journal(tmp)


def _remove_with_journal(path: Path) -> None:
    """Delete a (temporary) GeoPackage and what SQLite keeps beside it (``-journal``, ...):
    a journal left by a killed run would otherwise be replayed into the next file."""
    for p in (path, *path.parent.glob(f"{path.name}-*")):
        remove_quietly(p)


def _temporaries(out: Path) -> list[Path]:
    """The hidden temporaries ``prepare`` writes at the top of ``out`` before renaming."""
    names = (f".{Path(INDEX_NAME).stem}.tmp", f".{MANIFEST_NAME}.tmp", f".{FINGERPRINT}.tmp")
    return [p for p in out.glob(".*") if p.name.startswith(names)] if out.is_dir() else []


def remove_outputs(out: Path, remove_folder: bool) -> None:
    """Delete what ``prepare`` writes in ``out`` (and ``out`` itself when asked and empty)."""
    for p in (out / "tiles", out / INDEX_NAME, out / MANIFEST_NAME, out / FINGERPRINT):
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    for p in _temporaries(out):
        remove_quietly(p)
    if remove_folder and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def check_output_dir(out: Path, fp: dict[str, Any], overwrite: bool) -> bool:
    """Check, without writing, that ``prepare`` may write into ``out``; True for a fresh run.

    ``prepare`` calls this before it inspects the inputs and prints its plan, so a bad
    output folder is the first thing reported, not the last.

    Args:
        out: ``DATA_DIR``.
        fp: the run's options, compared with those an earlier run stored in
            ``out/.sgma-prepare.json`` (a resumed run must cut its tiles the same way).
        overwrite: an earlier result will be deleted, so it may hold anything of ours.

    Raises:
        UsageError: ``out`` is a file, holds other files, holds tiles of other options,
            or is not writable (nor creatable: a file in the way, no permission, a
            read-only file system).
    """
    if out.exists() and not out.is_dir():
        raise UsageError("output exists and is not a folder", out)
    fresh = overwrite or not out.exists() or not any(out.iterdir())
    if not fresh:
        old = out / FINGERPRINT
        if not old.exists():
            raise UsageError(
                "output folder is not empty and was not written by sgma prepare; "
                "pick another --out or add --overwrite",
                out,
            )
        try:
            before = json.loads(old.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            raise UsageError(
                "damaged or unreadable (it records the options of the tiles here); "
                "add --overwrite to start over",
                old,
            ) from None
        if before != fp:
            raise UsageError(
                "output folder holds tiles prepared with other options; "
                "add --overwrite to start over",
                out,
            )
    # the folder itself, or the nearest folder above it that exists (it will be created)
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        reason = os.strerror(errno.ENOTDIR)
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = os.strerror(errno.EACCES)
    else:
        return fresh
    raise UsageError(f"output folder is not writable ({reason})", out)


def prepare_output_dir(out: Path, fp: dict[str, Any], overwrite: bool) -> bool:
    """Create the output folder (or make it ready to resume); return True for a fresh run.

    Runs :func:`check_output_dir` again (the folder may have changed since), then with
    ``overwrite`` deletes an earlier result, stores ``fp`` and removes temp folders that
    a killed run left.

    Raises:
        UsageError: as :func:`check_output_dir`, or the folder cannot be written after all.
    """
    fresh = check_output_dir(out, fp, overwrite)
    if overwrite and out.exists():
        with write_errors(out):  # e.g. a read-only folder: one line, not a traceback
            remove_outputs(out, remove_folder=False)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".sgma-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"output folder is not writable ({err.strerror})", out) from None
    marker = out / FINGERPRINT
    with write_errors(marker):
        for stale in _temporaries(out):  # left by a killed run
            _remove_with_journal(stale)
        tmp = marker.with_name(f".{FINGERPRINT}.tmp")
        tmp.write_text(json.dumps(fp, indent=1, sort_keys=True))  # a kill never leaves half
        tmp.replace(marker)
    for stale in (out / "tiles").glob(f"*/{TMP_PREFIX}*") if (out / "tiles").exists() else []:
        with write_errors(stale):
            shutil.rmtree(stale)
    return fresh
