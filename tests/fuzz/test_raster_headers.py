"""Fuzzing raster headers: no CRS, rotated or odd transforms, 0 x 0, 10^6 x 10^6 pixels.

Generated rasters go through prepare's input steps (discover, inspect every raster, the
reference grid with ``--resolution``/``--crs``, cutting tiles, reading the first and last
tile of every modality on the grid) and predict's (open the scene, read windows, also past
its edge). A header claiming 10^6 x 10^6 pixels must be refused before anything is
allocated for it: the tests run with an address-space limit far below such an array.
"""

from __future__ import annotations

import resource
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import given
from hypothesis import strategies as st

from sgma_cli.data.align import AlignedReader
from sgma_cli.data.discovery import discover
from sgma_cli.data.raster import inspect_raster
from sgma_cli.data.scene import open_scene
from sgma_cli.data.scene_jobs import cut_tiles, inspect_plan
from sgma_cli.errors import RasterError
from tests.fuzz.conftest import Fuzz, works_or_sgma_error

CRSES = [None, "EPSG:32633", "EPSG:4326", "EPSG:3857"]


@st.composite
def transforms(draw: st.DrawFn) -> Affine:
    """North-up, south-up, rotated, sheared, tiny or huge pixels, far-away origins."""
    size = st.sampled_from([0.5, 1.0, 30.0, 1e-6, 1e5]) | st.floats(-100, 100)
    skew = st.sampled_from([0.0, 0.0, 0.0, 0.1, -0.25]) | st.floats(-5, 5)
    origin = st.sampled_from([0.0, 10.0, 500000.0, 5800000.0]) | st.floats(-1e7, 1e7)
    a, e = draw(size), -abs(draw(size)) if draw(st.integers(0, 4)) else draw(size)
    return Affine(a, draw(skew), draw(origin), draw(skew), e, draw(origin))


@st.composite
def headers(draw: st.DrawFn) -> dict[str, Any]:
    """What to write: a GeoTIFF (any CRS, transform, size, bands) or a header-only file."""
    kind = draw(st.sampled_from(["tiff", "tiff", "tiff", "vrt", "patched"]))
    return {
        "kind": kind,
        "crs": draw(st.sampled_from(CRSES)),
        "transform": draw(transforms()),
        "width": draw(st.integers(1, 12)),
        "height": draw(st.integers(1, 12)),
        "count": draw(st.integers(1, 3)),
        "dtype": draw(st.sampled_from(["uint8", "int16", "float32"])),
        # the size a VRT or a patched TIFF header claims
        "claims": draw(st.sampled_from([(0, 0), (0, 5), (1, 1), (10**6, 10**6), (2**31 - 1, 2)])),
    }


def _patch_size(path: Path, width: int, height: int) -> None:
    """Rewrite ImageWidth/ImageLength of a little-endian classic TIFF (a header that lies)."""
    data = bytearray(path.read_bytes())
    assert data[:4] == b"II*\x00"
    (ifd,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, ifd)
    for i in range(entries):
        at = ifd + 2 + 12 * i
        (tag,) = struct.unpack_from("<H", data, at)
        if tag in (256, 257):
            struct.pack_into("<HHII", data, at, tag, 4, 1, width if tag == 256 else height)
    path.write_bytes(bytes(data))


def write_raster(path: Path, spec: dict[str, Any]) -> Path | None:
    """Write ``spec`` at ``path``; ``None`` when GDAL itself refuses to write such a file."""
    if spec["kind"] == "vrt":
        width, height = spec["claims"]
        bands = "".join(
            f'<VRTRasterBand dataType="Byte" band="{b + 1}"/>' for b in range(spec["count"])
        )
        path = path.with_suffix(".vrt")
        path.write_text(
            f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">{bands}</VRTDataset>'
        )
        return path
    array = np.arange(spec["count"] * spec["height"] * spec["width"]) % 200
    array = array.reshape(spec["count"], spec["height"], spec["width"]).astype(spec["dtype"])
    try:
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=spec["width"],
            height=spec["height"],
            count=spec["count"],
            dtype=spec["dtype"],
            crs=spec["crs"],
            transform=spec["transform"],
        ) as dst:
            dst.write(array)
    except (ValueError, rasterio.errors.RasterioError):
        return None
    if spec["kind"] == "patched":
        _patch_size(path, *spec["claims"])
    return path


GOOD = {
    "kind": "tiff",
    "crs": "EPSG:32633",
    "transform": Affine(0.5, 0, 500000, 0, -0.5, 5800000),
    "width": 8,
    "height": 8,
    "count": 1,
    "dtype": "float32",
    "claims": (1, 1),
}


@pytest.fixture(autouse=True)
def limited_memory() -> Iterator[None]:
    """At most 8 GiB of address space beyond what is mapped now: a 10^12-pixel array (or a
    10^6-pixel row times 10^6) cannot be allocated, so allocating one fails the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    mapped = sum(
        int(end, 16) - int(start, 16)
        for start, end in (
            line.split()[0].split("-") for line in Path("/proc/self/maps").read_text().splitlines()
        )
    )
    limit = mapped + (8 << 30)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def prepare_inputs(folder: Path, files: dict[str, Path], options: dict[str, Any]) -> None:
    """prepare's steps up to the pixels: plan, grid, tiles, then the first and last tile."""
    plan = discover(folder, None, [f"{n}={p.name}" for n, p in files.items()], None, "class", None)
    jobs, _, _ = inspect_plan(plan, "ref", options["resolution"], options["crs"], lambda _: None)
    cut_tiles(jobs, options["tile"], options["tile"], "1,0,0", 0)
    for job in jobs.values():
        for _, _, spec in (job.tiles[0], job.tiles[-1]):
            for info in job.infos.values():
                same = info.crs is None
                with AlignedReader(info, job.grid, "bilinear", same_grid=same) as reader:
                    data, valid = reader.read(spec.window)
                t = options["tile"]
                assert data.shape == (info.count, t, t) and valid.shape == (t, t)


def predict_inputs(files: dict[str, Path], options: dict[str, Any]) -> None:
    """predict's steps up to the model: the scene, then windows inside and past the grid."""
    bands = {n: inspect_raster(p).count for n, p in files.items()}
    scene = open_scene(files, bands, resolution=options["resolution"], extent=options["extent"])
    g = scene.grid
    with scene.reader() as reader:
        for row, col in ((0, 0), (g.height - 2, g.width - 2)):
            arrays, valid = reader.read(row, col, 4, 4)
            assert all(a.shape[1:] == (4, 4) and a.dtype == np.float32 for a in arrays.values())


options = st.fixed_dictionaries(
    {
        "resolution": st.sampled_from([None, None, 0.5, 2.0, 1e-4, 1e4]),
        "crs": st.sampled_from([None, None, "EPSG:32633", "EPSG:4326", "EPSG:3035"]),
        "tile": st.sampled_from([1, 2, 4, 8, 16]),
        "extent": st.sampled_from(["reference", "union"]),
    }
)


def test_raster_headers(fuzz: Fuzz, scratch: Callable[[], Any]) -> None:
    @given(headers(), headers() | st.just(GOOD), options)
    @fuzz.at_most(4)  # each example cuts tiles and opens a scene: up to a few seconds
    def check(ref: dict[str, Any], other: dict[str, Any], opts: dict[str, Any]) -> None:
        with scratch() as folder:
            files = {"ref": write_raster(folder / "ref.tif", ref)}
            files["other"] = write_raster(folder / "other.tif", other)
            if None in files.values():
                return
            works_or_sgma_error(prepare_inputs, folder, files, opts)
            works_or_sgma_error(predict_inputs, files, opts)

    check()


@pytest.mark.parametrize("kind", ["vrt", "patched"])
@pytest.mark.parametrize("claims", [(10**6, 10**6), (0, 0)])
def test_claimed_size_is_refused_first(tmp_path: Path, kind: str, claims: tuple[int, int]) -> None:
    path = write_raster(tmp_path / "big.tif", {**GOOD, "kind": kind, "claims": claims})
    assert path is not None
    with pytest.raises(RasterError) as err:
        inspect_raster(path)
    text = str(err.value)
    assert text.startswith(str(path)) and "\n" not in text
    if claims[0]:
        assert "claims 1000000 x 1000000 pixels" in text
