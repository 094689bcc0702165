"""Open a scene to predict: one raster per sensor, read window by window on one grid.

A scene is a folder of ``<modality>.tif`` files named as in the checkpoint (the layout
``sgma sample`` writes; its ``sample.json`` is honoured) or explicit ``NAME=PATH`` pairs.
Sensors may differ in CRS, resolution and extent. Nothing is resampled up front: every
window is read on the fly on the reference grid, straight from the file when the sensor
already lies on that grid, else through a GDAL ``WarpedVRT`` (bilinear), as TorchGeo's
``RasterDataset`` and Raster Vision's ``RasterioSource`` do: the reads themselves are
:class:`sgma_cli.data.align.AlignedReader` (shared with ``sgma prepare``); this module
adds finding the files, choosing the reference grid from a checkpoint's view, and
windows that run past the grid.

The reference grid (:func:`scene_grid`):

* CRS and pixel alignment of the *reference sensor*, the chosen sensor with the finest
  ground pixel (the first in checkpoint order on ties);
* pixel size: the checkpoint's training resolution when given and the scene's CRS has
  the same linear unit as the checkpoint's (the model learned objects at that scale),
  else the reference sensor's own pixel size;
* extent: the reference sensor's footprint (``"reference"``) or the union of all chosen
  sensors (``"union"``).

Pixels a sensor did not see (its nodata, NaN, or outside its footprint) read as NaN and
are ``False`` in the availability mask.
"""

from __future__ import annotations

import glob
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from sgma_cli.config._base import path_inside
from sgma_cli.data.align import AlignedReader, Grid, check_overlap
from sgma_cli.data.raster import MAX_PIXELS, RasterInfo, inspect_raster
from sgma_cli.data.sources import LIST_SUFFIXES, RasterSource, is_url, resolve_source
from sgma_cli.errors import RasterError, UsageError

__all__ = [
    "Extent",
    "Grid",
    "SceneSensor",
    "Scene",
    "SceneReader",
    "find_sensor_files",
    "scene_grid",
    "open_scene",
]

Extent = Literal["reference", "union"]
_EXTS = (".tif", ".tiff", ".vrt", ".img", ".jp2")
_SAMPLE_MARKER = "sample.json"


@dataclass(frozen=True)
class SceneSensor:
    """A chosen sensor of the scene: checkpoint name, file (or source) and header.

    ``path`` is a local file, or a :class:`~sgma_cli.data.sources.RasterSource` (a mosaic
    of tiles, a URL, a STAC asset) that every reader opens alike.
    """

    name: str
    path: Path | RasterSource
    info: RasterInfo


@dataclass
class Scene:
    """Sensors chosen for prediction (checkpoint order) and the reference grid.

    Attributes:
        sensors: chosen sensors in checkpoint order.
        grid: the reference grid.
        reference: name of the reference sensor.
        notes: human lines on the choices made (reference, resolution, extent).
    """

    sensors: list[SceneSensor]
    grid: Grid
    reference: str
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """Chosen sensor names, checkpoint order."""
        return [s.name for s in self.sensors]

    def reader(self) -> SceneReader:
        """A :class:`SceneReader`; use it from one thread only (GDAL handles are not shared)."""
        return SceneReader(self)


def _ground_pixel(info: RasterInfo) -> float:
    """Approximate pixel size in metres (area-equivalent), for picking the finest sensor."""
    rx, ry = info.resolution
    if info.crs is None:
        return math.sqrt(rx * ry)
    if info.crs.is_geographic:
        lat = math.radians((info.bounds[1] + info.bounds[3]) / 2)
        return math.sqrt(rx * 111_320.0 * max(math.cos(lat), 1e-6) * ry * 110_574.0)
    try:
        factor = info.crs.linear_units_factor[1]
    except CRSError:  # no linear unit known: compare as given
        factor = 1.0
    return math.sqrt(rx * ry) * factor


def _same_unit(a: CRS, b: CRS) -> bool:
    """Both geographic, or both projected with the same linear unit."""
    if a.is_geographic or b.is_geographic:
        return bool(a.is_geographic and b.is_geographic)
    try:
        return math.isclose(a.linear_units_factor[1], b.linear_units_factor[1], rel_tol=1e-9)
    except CRSError:
        return False


def find_sensor_files(
    scene_dir: Path | None,
    names: Sequence[str],
    explicit: Mapping[str, Path | str | RasterSource] | None = None,
) -> dict[str, Path | RasterSource]:
    """Files of the sensors a checkpoint knows, from ``scene_dir`` and/or ``explicit`` pairs.

    In ``scene_dir`` a sensor is ``<name>.tif`` (or ``.tiff``, ``.vrt``, ``.img``, ``.jp2``,
    case-insensitive); a ``sample.json`` written by ``sgma sample`` names them itself.
    Explicit pairs win over the folder. An explicit value is a file, or anything
    :func:`~sgma_cli.data.sources.resolve_source` reads (a glob, a folder or list of
    tiles, a URL), or a ready :class:`~sgma_cli.data.sources.RasterSource`.

    Raises:
        UsageError: an explicit name the checkpoint does not know.
        RasterError: a missing folder or explicit file, unreadable tiles or URLs.
    """
    explicit = dict(explicit or {})
    unknown = [n for n in explicit if n not in names]
    if unknown:
        raise UsageError(
            f"sensor {unknown[0]!r} is not in the checkpoint, which knows {', '.join(names)}"
        )
    found: dict[str, Path | RasterSource] = {}
    if scene_dir is not None:
        scene_dir = Path(scene_dir)
        if not scene_dir.is_dir():
            raise RasterError("scene folder not found", scene_dir)
        marker = scene_dir / _SAMPLE_MARKER
        listed: dict[str, str] = {}
        if marker.is_file():
            try:
                listed = dict(json.loads(marker.read_text()).get("modalities", {}))
            except (OSError, ValueError, AttributeError, TypeError, RecursionError):
                listed = {}
        by_stem = {
            p.stem.lower(): p
            for p in sorted(scene_dir.iterdir())
            if p.suffix.lower() in _EXTS and p.is_file()
        }
        for name in names:
            if name in listed:  # a path from a file: it must stay inside the scene folder
                listed_path = path_inside(scene_dir, listed[name], marker, RasterError, "file")
                if listed_path.is_file():
                    found[name] = listed_path
                    continue
            if name.lower() in by_stem:
                found[name] = by_stem[name.lower()]
    for name, spec in explicit.items():
        found[name] = _explicit_source(name, spec)
    return {n: found[n] for n in names if n in found}


def _explicit_source(name: str, spec: Path | str | RasterSource) -> Path | RasterSource:
    """A plain file stays a ``Path``; globs, folders, lists and URLs become sources."""
    if isinstance(spec, RasterSource):
        return spec
    text = str(spec)
    if not is_url(text) and not glob.has_magic(text):
        path = Path(text)
        if path.is_file() and path.suffix.lower() not in LIST_SUFFIXES:
            return path
        if not path.exists():
            raise RasterError(f"file for sensor {name!r} not found", path)
    return resolve_source(text)


def scene_grid(
    sensors: Sequence[SceneSensor],
    *,
    resolution: float | None = None,
    extent: Extent = "reference",
) -> tuple[Grid, str, list[str]]:
    """The reference grid of the chosen sensors: ``(grid, reference name, notes)``.

    Args:
        sensors: the chosen sensors (checkpoint order), all with a CRS or all without.
        resolution: output pixel size in the reference CRS units; ``None`` keeps the
            reference sensor's.
        extent: ``"reference"`` (the reference sensor's footprint) or ``"union"``.

    Raises:
        RasterError: a sensor without CRS among georeferenced ones, plain images of
            different sizes, or a sensor that does not overlap the reference.
    """
    with_crs = [s for s in sensors if s.info.crs is not None]
    if not with_crs:
        sizes = {(s.info.width, s.info.height) for s in sensors}
        if len(sizes) > 1:
            raise RasterError(
                f"has no CRS and a size ({sensors[-1].info.width}x{sensors[-1].info.height}) "
                f"different from "
                f"{sensors[0].path.name}; give georeferenced rasters or images of one size",
                sensors[-1].path,
            )
        s = sensors[0]
        return (
            Grid(None, s.info.transform, s.info.width, s.info.height),
            s.name,
            ["plain images: pixel grid of the files"],
        )
    if len(with_crs) != len(sensors):
        bad = next(s for s in sensors if s.info.crs is None)
        raise RasterError(
            f"has no CRS while {with_crs[0].path.name} is georeferenced; assign one "
            f"(gdal_edit.py -a_srs)",
            bad.path,
        )
    ref = min(sensors, key=lambda s: (round(_ground_pixel(s.info), 9), sensors.index(s)))
    crs, rt = ref.info.crs, ref.info.transform
    if rt.b != 0 or rt.d != 0:
        raise RasterError("is rotated; only north-up rasters are supported as reference", ref.path)
    rx, ry = ref.info.resolution
    px, py = (float(resolution), float(resolution)) if resolution else (rx, ry)
    left, bottom, right, top = ref.info.bounds
    ref_grid = Grid(crs, rt, ref.info.width, ref.info.height)
    for s in sensors:
        if s is ref:
            continue
        check_overlap(s.info, ref_grid, s.name, f"{ref.name} ({ref.path.name})")
        sb = transform_bounds(s.info.crs, crs, *s.info.bounds, densify_pts=21)
        if extent == "union":
            left, bottom, right, top = (
                min(left, sb[0]),
                min(bottom, sb[1]),
                max(right, sb[2]),
                max(top, sb[3]),
            )
    # snap to the reference sensor's pixel lattice (origin), outwards
    ox, oy = rt.c, rt.f
    c0 = math.floor((left - ox) / px + 1e-6)
    c1 = math.ceil((right - ox) / px - 1e-6)
    r0 = math.floor((oy - top) / py + 1e-6)
    r1 = math.ceil((oy - bottom) / py - 1e-6)
    transform = Affine(px, 0.0, ox + c0 * px, 0.0, -py, oy - r0 * py)
    grid = Grid(crs, transform, c1 - c0, r1 - r0)
    if not 0 < grid.width * grid.height <= MAX_PIXELS:
        raise UsageError(
            f"the output grid would be {grid.width} x {grid.height} pixels (at most "
            f"{MAX_PIXELS:.3g}); choose a coarser --resolution",
            ref.path,
        )
    notes = [
        f"reference grid: {ref.name} ({ref.path.name}) CRS, {px:g} x {py:g} px, {extent} "
        f"extent, {grid.width}x{grid.height} px"
    ]
    return grid, ref.name, notes


def open_scene(
    files: Mapping[str, Path | RasterSource],
    bands: Mapping[str, int],
    *,
    modalities: Sequence[str] | None = None,
    resolution: float | None = None,
    resolution_crs: str | None = None,
    extent: Extent = "reference",
    source: Path | None = None,
) -> Scene:
    """Inspect the sensor files and fix the reference grid.

    Args:
        files: ``{name: path}`` of the sensors found (see :func:`find_sensor_files`).
        bands: ``{name: bands}`` of every checkpoint modality, in checkpoint order.
        modalities: restrict to these sensors (must be in the checkpoint); ``None``: all found.
        resolution: preferred pixel size (the checkpoint's training resolution), used when
            the scene's CRS shares the linear unit of ``resolution_crs``.
        resolution_crs: CRS the preferred ``resolution`` is expressed in.
        extent: ``"reference"`` or ``"union"`` (see module docstring).
        source: the scene folder, named in errors.

    Raises:
        UsageError: a chosen sensor the checkpoint does not know.
        RasterError: no chosen sensor present, unreadable file, wrong band count, missing
            CRS among georeferenced rasters, sensors that do not overlap.
    """
    names = list(bands)
    chosen = list(modalities) if modalities else list(names)
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise UsageError(
            f"sensor {unknown[0]!r} is not in the checkpoint, which knows {', '.join(names)}"
        )
    present = [n for n in names if n in chosen and n in files]
    if not present:
        raise RasterError(
            f"none of the chosen sensors ({', '.join(chosen)}) is present; expected files like "
            f"{chosen[0]}.tif",
            source,
        )
    sensors = []
    for name in present:
        info = inspect_raster(files[name])
        if info.count != bands[name]:
            raise RasterError(
                f"has {info.count} band(s) but the checkpoint's {name!r} has {bands[name]}",
                info.path,
            )
        sensors.append(SceneSensor(name, info.path, info))
    use_res = None
    notes: list[str] = []
    if resolution is not None:
        ref_crs = next((s.info.crs for s in sensors if s.info.crs is not None), None)
        try:
            res_crs = CRS.from_user_input(resolution_crs) if resolution_crs else None
        except CRSError:
            res_crs = None
            resolution_crs = None
            notes.append("the checkpoint's CRS is not readable: using its resolution as is")
        if ref_crs is not None and res_crs is not None and _same_unit(ref_crs, res_crs):
            use_res = resolution
        elif ref_crs is not None and resolution_crs is None:
            use_res = resolution
        else:
            notes.append(
                "checkpoint resolution not in the scene's CRS units: using the sensor's own "
                "pixel size"
            )
    grid, ref, grid_notes = scene_grid(sensors, resolution=use_res, extent=extent)
    missing = [n for n in chosen if n not in present]
    if missing:
        notes.append(f"not found, predicting without: {', '.join(missing)}")
    return Scene(sensors, grid, ref, grid_notes + notes)


class SceneReader:
    """Windowed reads of every chosen sensor on the reference grid (one thread only).

    Wraps one :class:`sgma_cli.data.align.AlignedReader` per sensor (opened on first use,
    in the thread that reads) and pads windows that run past the grid. Use as a context
    manager.
    """

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self._readers: dict[str, AlignedReader] = {}

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every file."""
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def read_sensor(
        self, sensor: SceneSensor, row: int, col: int, height: int, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """One sensor's window: float32 ``(C, height, width)``, NaN unseen, and its bool mask.

        The window may run past the grid (padding reads as unseen). A window inside the
        grid comes back as read, without a copy.
        """
        if sensor.name not in self._readers:
            self._readers[sensor.name] = AlignedReader(sensor.info, self.scene.grid, "bilinear")
        g = self.scene.grid
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + height, g.height), min(col + width, g.width)
        if (r0, c0, r1, c1) == (row, col, row + height, col + width):
            return self._readers[sensor.name].read(Window(col, row, width, height))
        out = np.full((sensor.info.count, height, width), np.nan, np.float32)
        valid = np.zeros((height, width), bool)
        if r1 > r0 and c1 > c0:
            data, ok = self._readers[sensor.name].read(Window(c0, r0, c1 - c0, r1 - r0))
            out[:, r0 - row : r1 - row, c0 - col : c1 - col] = data
            valid[r0 - row : r1 - row, c0 - col : c1 - col] = ok
        return out, valid

    def read(
        self, row: int, col: int, height: int, width: int
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Every chosen sensor's window: ``({name: (C, h, w) float32}, {name: (h, w) bool})``."""
        arrays, valid = {}, {}
        for sensor in self.scene.sensors:
            arrays[sensor.name], valid[sensor.name] = self.read_sensor(
                sensor, row, col, height, width
            )
        return arrays, valid
