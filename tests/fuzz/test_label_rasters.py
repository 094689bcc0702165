"""Fuzzing label rasters through prepare's label chain: every dtype, nodata, NaN/inf, empty,
a single pixel, colour or class-index bands.

The chain is what ``sgma prepare`` runs on labels before and while it cuts tiles: discover
the scene, inspect every raster, scan the label values and settle the classes, then read
the labels on the reference grid (:class:`~sgma_cli.data.labels.LabelReader`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import rasterio
from hypothesis import given
from hypothesis import strategies as st
from rasterio.transform import from_origin
from rasterio.windows import Window

from sgma_cli.data.discovery import discover
from sgma_cli.data.labels import LabelReader
from sgma_cli.data.palettes import POTSDAM
from sgma_cli.data.scene_jobs import inspect_plan, resolve_palette
from tests.fuzz.conftest import Fuzz, works_or_sgma_error

DTYPES = [
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "float32",
    "float64",
    "complex64",
    "complex128",
]
CRS = "EPSG:32633"
TRANSFORM = from_origin(500000, 5800000, 0.5, 0.5)


@st.composite
def label_rasters(draw: st.DrawFn) -> tuple[np.ndarray, Any]:
    """``(array (bands, h, w), nodata)``: small class values mixed with any value of the dtype."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = (draw(st.sampled_from([1, 1, 3])), draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    small = st.integers(0, 7).map(dtype.type)
    array = draw(hnp.arrays(dtype, shape, elements=small | hnp.from_dtype(dtype)))
    choices: list[Any] = [None, array.flat[0], dtype.type(0), dtype.type(255 % (1 << 7))]
    if dtype.kind == "f":
        choices += [float("nan"), float("inf"), -9999.0]
    nodata = draw(st.sampled_from(choices))
    if draw(st.integers(0, 9)) == 0 and nodata is not None:  # empty: nodata everywhere
        array[...] = nodata
    return array, nodata


def _write(path: Path, array: np.ndarray, nodata: Any) -> None:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=array.shape[2],
        height=array.shape[1],
        count=array.shape[0],
        dtype=array.dtype.name,
        crs=CRS,
        transform=TRANSFORM,
        nodata=None if nodata is None else complex(nodata).real,
    ) as dst:
        dst.write(array)


def label_chain(folder: Path, palette: Any, labels: str = "labels.tif") -> np.ndarray:
    """prepare's label steps on ``folder`` (rgb.tif + ``labels``); the labels as read."""
    plan = discover(folder, None, ["rgb=rgb.tif"], labels, "class", palette)
    jobs, _, _ = inspect_plan(plan, "rgb", None, None, lambda _: None)
    classes, maps = resolve_palette(plan, palette, ())
    job = next(iter(jobs.values()))
    assert job.scene.labels is not None
    kind, mapping = maps[job.scene.labels.path]
    reader = LabelReader(job.scene.labels, job.grid, mapping, kind)
    try:
        out = reader.read(Window(0, 0, job.grid.width, job.grid.height))
    finally:
        reader.close()
    assert out.dtype == np.uint8 and out.shape == (job.grid.height, job.grid.width)
    assert set(np.unique(out).tolist()) <= set(range(len(classes))) | {255}
    return out


def test_label_rasters(fuzz: Fuzz, scratch: Callable[[], Any]) -> None:
    @given(label_rasters(), st.booleans())
    @fuzz
    def check(raster: tuple[np.ndarray, Any], with_palette: bool) -> None:
        array, nodata = raster
        with scratch() as folder:
            h, w = array.shape[1:]
            _write(folder / "rgb.tif", np.full((3, h, w), 100, np.uint8), None)
            try:
                _write(folder / "labels.tif", array, nodata)
            except (ValueError, rasterio.errors.RasterioError):
                return  # a nodata value this dtype cannot hold: no such file can exist
            out = works_or_sgma_error(label_chain, folder, POTSDAM if with_palette else None)
            if out is not None and array.shape[0] == 1 and array.dtype.kind in "iu":
                values = array[0].astype(np.int64)
                seen = values != (np.int64(nodata) if nodata is not None else -(2**62))
                kept = seen & (values <= 5 if with_palette else values <= 254)
                assert (out[kept] == values[kept]).all()  # class indices read unchanged
                assert (out[~seen] == 255).all()  # nodata: unlabelled

    check()
