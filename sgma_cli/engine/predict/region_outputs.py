"""What a region run leaves in its folder besides the chunks, and how a chunk is recorded.

Layout of ``--out DIR``::

    run.json                 the checkpoint's digest and the options that change pixels
    chunks/<id>/             one folder per finished chunk (renamed into place complete):
        classes.tif          COG class map of the chunk (+ probabilities/confidence/
        chunk.json           robustness.tif, polygons.gpkg); its record (ChunkRecord)
    chunks.gpkg              each chunk's footprint, status, seconds and sensors
    map.vrt                  the class map mosaic (written last: the run is complete)
    probabilities.vrt, ...   the other mosaics asked for
    map.tif, ...             with --merge: the mosaics as single COGs

Polygons (``--vectorize``) are made per chunk; :func:`merge_polygons` dissolves the
same-class polygons that touch across a chunk border into one, so the GeoPackage holds
the polygons the one-piece map would give.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rasterio.windows import Window

from sgma_cli.config.checkpoint import CheckpointMeta
from sgma_cli.data.atomic import publish, remove_quietly, temp_path, write_errors
from sgma_cli.data.raster import Grid
from sgma_cli.data.scene import Scene
from sgma_cli.data.vrt import MosaicPart, merge_to_cog, write_mosaic_vrt
from sgma_cli.data.writers import CLASS_NODATA, PERCENT_NODATA
from sgma_cli.errors import SgmaError

if TYPE_CHECKING:
    from sgma_cli.engine.predict.job import PredictJob


class ChunkTask(Protocol):
    """A chunk's id and pixel box (``sgma_cli.engine.predict.region.ChunkTask``)."""

    @property
    def id(self) -> str: ...  # noqa: D102
    @property
    def row(self) -> int: ...  # noqa: D102
    @property
    def col(self) -> int: ...  # noqa: D102
    @property
    def height(self) -> int: ...  # noqa: D102
    @property
    def width(self) -> int: ...  # noqa: D102


__all__ = [
    "CHUNKS_DIR",
    "MANIFEST",
    "KINDS",
    "ChunkRecord",
    "read_record",
    "raster_layout",
    "region_output_paths",
    "write_chunk_index",
    "merge_polygons",
    "finish_outputs",
]

CHUNKS_DIR = "chunks"
MANIFEST = "run.json"
#: Rasters a chunk can write, in this order (``classes`` always).
KINDS = ("classes", "probabilities", "confidence", "robustness")
_MOSAIC = {"classes": "map"}


@dataclass(frozen=True)
class ChunkRecord:
    """A finished chunk, as ``chunks/<id>/chunk.json`` records it.

    Attributes:
        id: chunk id (``r000_c001``: chunk row and column).
        row: first row on the region grid.
        col: first column.
        height: rows.
        width: columns.
        seconds: compute and write time.
        windows: windows computed (halo included).
        class_pixels: pixels per class (checkpoint order).
        nodata_pixels: pixels no sensor saw, or outside the AOI polygon.
        sensors: chosen sensors whose footprint meets the chunk.
        polygons: polygons of the chunk (``--vectorize``), else ``None``.
    """

    id: str
    row: int
    col: int
    height: int
    width: int
    seconds: float
    windows: int
    class_pixels: list[int]
    nodata_pixels: int
    sensors: list[str]
    polygons: int | None = None


def read_record(folder: Path) -> ChunkRecord | None:
    """The record of a finished chunk folder, or ``None`` (absent or unreadable)."""
    path = Path(folder) / "chunk.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ChunkRecord(**data)
    except (OSError, ValueError, TypeError, RecursionError):
        return None


def raster_layout(
    meta: CheckpointMeta, sensors: Sequence[str], source_name: str
) -> dict[str, dict[str, Any]]:
    """Band count, nodata, names, colours, tags and scale of each raster kind."""
    names = meta.class_names
    tags = {
        "CLASS_NAMES": json.dumps(names),
        "CHECKPOINT": source_name,
        "SENSORS": ",".join(sensors),
    }
    pct = {
        "nodata": PERCENT_NODATA,
        "scale": 0.01,
        "overview_resampling": "AVERAGE",
        "tags": {**tags, "UNITS": "percent"},
    }
    return {
        "classes": {
            "count": 1,
            "nodata": CLASS_NODATA,
            "descriptions": ["class"],
            "colormap": {i: tuple(c.color) for i, c in enumerate(meta.classes)},
            "tags": tags,
        },
        "probabilities": {"count": len(names), "descriptions": list(names), **pct},
        "confidence": {"count": 1, "descriptions": ["confidence"], **pct},
        "robustness": {
            "count": len(sensors),
            "descriptions": [f"robustness_{n}" for n in sensors],
            **pct,
        },
    }


def region_output_paths(out: Path, job: PredictJob | None = None) -> dict[str, Path]:
    """Files of a run folder besides the chunks: every possible one, or ``job``'s."""
    paths: dict[str, Path] = {"chunks": out / "chunks.gpkg"}
    for kind in KINDS:
        if job is None or kind == "classes" or getattr(job, kind):
            name = _MOSAIC.get(kind, kind)
            paths[kind] = out / f"{name}.vrt"
            if job is None or getattr(job, "merge", False):
                paths[f"merged_{kind}"] = out / f"{name}.tif"
    if job is not None and job.vectorize is not None:
        paths["vectors"] = Path(job.vectorize)
    return paths


def _chunk_grid(grid: Grid, task: ChunkTask | ChunkRecord) -> Grid:
    return grid.window_grid(Window(task.col, task.row, task.width, task.height))


def write_chunk_index(
    path: Path,
    grid: Grid,
    tasks: Sequence[ChunkTask],
    records: Mapping[str, ChunkRecord],
    failures: Mapping[str, str],
) -> None:
    """``chunks.gpkg``: one polygon per chunk with its status, seconds, sensors and error."""
    import geopandas as gpd
    from shapely.geometry import box

    rows = []
    for task in tasks:
        record = records.get(task.id)
        status = "done" if record else ("failed" if task.id in failures else "pending")
        rows.append(
            {
                "chunk": task.id,
                "row": task.row,
                "col": task.col,
                "width": task.width,
                "height": task.height,
                "status": status,
                "seconds": record.seconds if record else None,
                "sensors": ",".join(record.sensors) if record else None,
                "error": failures.get(task.id),
                "geometry": box(*_chunk_grid(grid, task).bounds),
            }
        )
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=grid.crs)
    _write_frame(frame, path, "chunks")


def _write_frame(frame: Any, path: Path, layer: str) -> None:
    tmp = temp_path(path, "part")
    try:
        with write_errors(path, kinds=(RuntimeError, ValueError)):
            frame.to_file(tmp, layer=layer, driver="GPKG")
            os.replace(tmp, path)
    finally:
        for leftover in (tmp, *tmp.parent.glob(f"{tmp.name}-*")):
            remove_quietly(leftover)


def merge_polygons(
    out: Path,
    grid: Grid,
    records: Sequence[ChunkRecord],
    folder: Path,
    class_names: Sequence[str],
    *,
    min_area: float = 0.0,
) -> int:
    """Merge the chunks' ``polygons.gpkg`` into ``out``; returns the polygon count.

    Polygons that touch an inner chunk border are dissolved with the same-class polygons
    they touch across it (4-connected, as the rasters are vectorised); the others are
    copied as they are. Polygons under ``min_area`` are dropped after merging.
    """
    import geopandas as gpd
    import pandas as pd
    from shapely.ops import unary_union

    left, bottom, right, top = grid.bounds
    px, py = grid.resolution
    eps_x, eps_y = px * 1e-6, py * 1e-6
    kept, border = [], []
    for record in records:
        path = folder / record.id / "polygons.gpkg"
        frame = gpd.read_file(path)
        if frame.empty:
            continue
        cl, cb, cr, ct = _chunk_grid(grid, record).bounds
        b = frame.geometry.bounds
        touches = (
            ((b.minx <= cl + eps_x) & (cl > left + eps_x))
            | ((b.maxx >= cr - eps_x) & (cr < right - eps_x))
            | ((b.miny <= cb + eps_y) & (cb > bottom + eps_y))
            | ((b.maxy >= ct - eps_y) & (ct < top - eps_y))
        )
        kept.append(frame[~touches])
        border.append(frame[touches])
    merged = []
    if border:
        edge = pd.concat(border, ignore_index=True)
        for class_id, group in edge.groupby("class_id"):
            union = unary_union(list(group.geometry))
            parts = list(getattr(union, "geoms", [union]))
            merged.append(
                gpd.GeoDataFrame(
                    {"class_id": [int(class_id)] * len(parts)}, geometry=parts, crs=edge.crs
                )
            )
    frames = [f for f in kept + merged if not f.empty]
    if frames:
        frame = pd.concat(frames, ignore_index=True)
        frame = gpd.GeoDataFrame(frame, geometry="geometry", crs=grid.crs)
    else:
        frame = gpd.GeoDataFrame({"class_id": []}, geometry=[], crs=grid.crs)
    frame = frame[["class_id", "geometry"]].copy()
    frame["class_id"] = frame["class_id"].astype("int32")
    frame.insert(
        1,
        "class",
        [class_names[i] if i < len(class_names) else str(i) for i in frame["class_id"]],
    )
    frame["area"] = frame.geometry.area
    if min_area > 0:
        frame = frame[frame["area"] >= min_area * (1 - 1e-9)].reset_index(drop=True)
    _write_frame(frame, Path(out), "classes")
    return len(frame)


def finish_outputs(
    job: PredictJob,
    out: Path,
    meta: CheckpointMeta,
    scene: Scene,
    tasks: Sequence[ChunkTask],
    records: Mapping[str, ChunkRecord],
    failures: Mapping[str, str],
    *,
    min_area: float = 0.0,
) -> tuple[dict[str, Path], int | None]:
    """Write ``chunks.gpkg``; once every chunk is done, the mosaics (``map.vrt`` last).

    Returns ``({kind: path}, polygons)``.

    Raises:
        SgmaError: chunks failed or are missing (``chunks.gpkg`` says which).
    """
    grid = scene.grid
    paths = region_output_paths(out, job)
    write_chunk_index(paths["chunks"], grid, tasks, records, failures)
    missing = [t.id for t in tasks if t.id not in records]
    if missing:
        first = next((i for i in missing if i in failures), missing[0])
        why = failures.get(first, "not computed")
        raise SgmaError(
            f"{len(missing)} of {len(tasks)} chunks failed (chunk {first}: {why}); the others "
            f"are kept and {paths['chunks'].name} lists them: run the same command again to "
            "retry the failed ones",
            out,
        )
    layout = raster_layout(meta, scene.names, Path(str(job.model or job.checkpoint)).name)
    done = [records[t.id] for t in tasks]
    folder = out / CHUNKS_DIR
    pending: list[tuple[Path, Path]] = []
    kinds = [k for k in KINDS if k in paths]
    polygons = None
    try:
        for kind in [*kinds[1:], "classes"]:  # the class map's VRT last: the run is complete
            parts = [
                MosaicPart(folder / r.id / f"{kind}.tif", r.row, r.col, r.width, r.height)
                for r in done
            ]
            spec = {k: v for k, v in layout[kind].items() if k != "overview_resampling"}
            vrt_tmp = temp_path(paths[kind], "vrt")
            pending.append((vrt_tmp, paths[kind]))
            write_mosaic_vrt(vrt_tmp, grid, parts, **spec)
            if f"merged_{kind}" in paths:
                merged = paths[f"merged_{kind}"]
                cog_tmp = temp_path(merged, "cog")
                pending.insert(0, (cog_tmp, merged))
                merge_to_cog(
                    vrt_tmp,
                    cog_tmp,
                    overview_resampling=layout[kind].get("overview_resampling", "NEAREST"),
                )
        if "vectors" in paths:
            vec_tmp = temp_path(paths["vectors"], "vec")
            pending.insert(0, (vec_tmp, paths["vectors"]))
            polygons = merge_polygons(
                vec_tmp, grid, done, folder, meta.class_names, min_area=min_area
            )
        publish(pending)
    except BaseException:
        for tmp, _ in pending:
            remove_quietly(tmp)
        raise
    outputs = {k: v for k, v in paths.items() if k != "chunks"}
    outputs["chunks"] = paths["chunks"]
    outputs["manifest"] = out / MANIFEST
    return outputs, polygons
