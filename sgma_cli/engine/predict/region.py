"""``sgma predict --out DIR``: a whole region in chunks, resumable, on any chunk executor.

The region (the reference sensor's coverage, an ``--aoi`` or a ``--like`` grid, see
:mod:`sgma_cli.data.region`) is cut into square chunks of ``--chunk`` pixels. Each chunk
is an independent :class:`ChunkTask`, run by a
:class:`~sgma_cli.engine.predict.executors.ChunkExecutor` (this process by default, Ray
with ``--ray``): a worker loads the model once (:func:`setup_worker`), then for each chunk
(:func:`compute_chunk`) reads the sources itself, computes every window of the region's
one window grid that touches the chunk (a halo up to one window wide), blends them exactly
as the one-piece job does (same windows, same order of accumulation) and writes the
chunk's COGs into ``DIR/chunks/<id>/``, under a temporary folder name renamed into place
once complete. A chunked map therefore equals the one-piece map of the same region, and
memory depends on the chunk and window sizes, never on the region's.

The driver (:func:`run_region`) writes ``run.json`` (the checkpoint's digest and every
option that changes pixels), skips chunks already in ``chunks/`` and, once every chunk is
there, writes the mosaics and the chunk index (:mod:`region_outputs`). A rerun with other
options is refused unless ``--overwrite``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from sgma_cli.config.checkpoint import CheckpointMeta, load_checkpoint
from sgma_cli.data.atomic import remove_quietly, remove_stale_temps, temp_path, write_errors
from sgma_cli.data.raster import Grid
from sgma_cli.data.region import Region, inside_mask
from sgma_cli.data.scene import Scene
from sgma_cli.data.window_grid import WindowSpec, window_stride, windows_touching
from sgma_cli.data.writers import (
    CLASS_NODATA,
    BlockRasterWriter,
    RasterSpec,
    to_percent,
    vectorize_classes,
)
from sgma_cli.engine.device import resolve_device
from sgma_cli.engine.locks import output_lock
from sgma_cli.engine.predict.executors import ChunkExecutor, LocalExecutor
from sgma_cli.engine.predict.inference import (
    GDAL_CACHE_MB,
    Progress,
    Runner,
    assemble,
    batches_of,
    local_results,
)
from sgma_cli.engine.predict.job import (
    PredictJob,
    check_fit,
    check_options,
    open_job_scene,
)
from sgma_cli.engine.predict.region_outputs import (
    CHUNKS_DIR,
    KINDS,
    MANIFEST,
    ChunkRecord,
    finish_outputs,
    read_record,
    region_output_paths,
)
from sgma_cli.engine.predict.runners import LoadedRunner, load_runner
from sgma_cli.errors import SgmaError, UsageError

__all__ = [
    "DEFAULT_CHUNK",
    "RegionJob",
    "ChunkTask",
    "ChunkResult",
    "RegionContext",
    "RegionPlan",
    "RegionProgress",
    "RegionResult",
    "is_region_out",
    "plan_chunks",
    "setup_worker",
    "compute_chunk",
    "run_region",
]

#: Default chunk side in pixels (at least 16 windows; rounded up to the window stride).
DEFAULT_CHUNK = 4096
_RASTER_SUFFIXES = (".tif", ".tiff")
_FORMAT = "sgma-region/1"


def is_region_out(out: Path | str) -> bool:
    """``--out`` names a folder (region mode) unless it ends in ``.tif``/``.tiff``."""
    return Path(out).suffix.lower() not in _RASTER_SUFFIXES


@dataclass
class RegionJob(PredictJob):
    """A region prediction: a :class:`PredictJob` whose ``out`` is a folder.

    Attributes:
        chunk: chunk side in pixels (``None``: :func:`chunk_side`'s default); rounded up
            to a multiple of the window stride (the fewest windows cross chunk borders).
        merge: also write the mosaics as single COGs (``map.tif``, ...).
        overwrite: start over when ``DIR`` holds a run with other options.
    """

    chunk: int | None = None
    merge: bool = False
    overwrite: bool = False


@dataclass(frozen=True)
class ChunkTask:
    """One chunk: its id and pixel box on the region grid (small, picklable)."""

    id: str
    row: int
    col: int
    height: int
    width: int


@dataclass(frozen=True)
class ChunkResult:
    """What a chunk's worker computed (small, picklable): see :class:`ChunkRecord`."""

    record: ChunkRecord


@dataclass(frozen=True)
class RegionContext:
    """What every worker needs, pickled once per worker (no arrays, no open files).

    Attributes:
        source: the model file (checkpoint, or an exported graph with ``graph``).
        graph: ``source`` was written by ``sgma export``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (resolved on the worker).
        precision: ``auto``, ``bf16`` or ``fp32``.
        compile: compile the model on each worker (``None``: on CUDA only).
        scene: the sensors and the region's grid (``scene.grid``).
        region: the region (AOI polygon, if any).
        window: window side.
        overlap: window overlap fraction.
        batch_size: windows per forward pass.
        kinds: the rasters each chunk writes, ``classes`` first.
        vectorize: also write each chunk's polygons.
        out: the run folder.
        source_name: the model file's name, written into the rasters' metadata.
    """

    source: Path
    graph: bool
    device: str
    precision: str
    compile: bool | None
    scene: Scene
    region: Region
    window: int
    overlap: float
    batch_size: int
    kinds: tuple[str, ...]
    vectorize: bool
    out: Path
    source_name: str


@dataclass
class WorkerState:
    """One worker's state: the context and the loaded model.

    ``on_windows`` (set only where the driver runs the chunks itself, the local executor)
    is called with a chunk and the fraction of its windows done, for a smooth progress bar.
    """

    context: RegionContext
    runner: Runner
    meta: CheckpointMeta
    on_windows: Callable[[ChunkTask, float], None] | None = None


@dataclass(frozen=True)
class RegionPlan:
    """What a region run will do, known before any chunk runs (for the plan lines)."""

    grid: Grid
    scene: Scene
    chunk: int
    window: int
    chunks_total: int
    chunks_done: int
    out: Path
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RegionProgress:
    """Where a region run stands (chunks of this run; earlier ones are not counted).

    ``running`` is the fraction done of the chunk being computed, where the driver
    computes it itself (the local executor); ``megapixels_done`` includes it.
    """

    chunks_done: int
    chunks_total: int
    chunks_failed: int
    megapixels_done: float
    megapixels_total: float
    chunks_retried: int = 0
    running: float = 0.0


RegionProgressFn = Callable[[RegionProgress], None]


@dataclass
class RegionResult:
    """What a region run wrote.

    Attributes:
        outputs: ``{kind: path}`` (``classes`` is ``map.vrt``; ``chunks``, ``manifest``,
            ``merged_<kind>`` with ``--merge``, ``vectors``).
        scene: sensors and the region grid.
        chunks_total: chunks of the region.
        chunks_computed: chunks computed by this run.
        chunks_skipped: chunks finished by an earlier run.
        seconds: wall time.
        class_pixels: pixels per class name over the region.
        nodata_pixels: pixels no chosen sensor saw (or outside the AOI polygon).
        polygons: polygons written (``--vectorize``).
        notes: lines on the choices made.
    """

    outputs: dict[str, Path]
    scene: Scene
    chunks_total: int
    chunks_computed: int
    chunks_skipped: int
    seconds: float
    class_pixels: dict[str, int]
    nodata_pixels: int
    polygons: int | None = None
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------ planning
def chunk_side(requested: int | None, window: int, overlap: float) -> int:
    """The chunk side: ``requested`` rounded up to a multiple of the window stride.

    Default: :data:`DEFAULT_CHUNK`, or 16 windows where that is more (each chunk border
    costs about one extra row or column of windows, the halo: about ``stride / side`` per
    axis). On a multiple of the stride the fewest windows cross each chunk border.
    """
    stride = window_stride(window, overlap)
    side = max(DEFAULT_CHUNK, 16 * window) if requested is None else requested
    return max(stride, -(-side // stride) * stride)


def plan_chunks(grid: Grid, side: int, region: Region | None = None) -> list[ChunkTask]:
    """Chunks of ``side`` px over ``grid``, row-major; those outside an AOI polygon dropped."""
    rows = list(range(0, grid.height, side))
    cols = list(range(0, grid.width, side))
    digits = max(3, len(str(max(len(rows), len(cols)) - 1)))
    shape = None
    if region is not None and region.geometry is not None:
        from shapely.geometry import shape as to_shape

        shape = to_shape(region.geometry)
    tasks = []
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            h, w = min(side, grid.height - r), min(side, grid.width - c)
            if shape is not None:
                from shapely.geometry import box

                left, top = grid.transform * (c, r)
                right, bottom = grid.transform * (c + w, r + h)
                if not shape.intersects(
                    box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))
                ):
                    continue
            tasks.append(ChunkTask(f"r{i:0{digits}d}_c{j:0{digits}d}", r, c, h, w))
    return tasks


def _digest(path: Path, known: str | None) -> str:
    """The checkpoint's content digest (``sha256:…``), else the SHA-256 of the file."""
    if known:
        return known
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return f"sha256:{sha.hexdigest()}"


def _manifest(job: RegionJob, scene: Scene, side: int, window: int, digest: str) -> dict[str, Any]:
    g = scene.grid
    return {
        "format": _FORMAT,
        "checkpoint": str(job.model if job.model is not None else job.checkpoint),
        "checkpoint_digest": digest,
        "options": {
            "sensors": {s.name: str(s.path) for s in scene.sensors},
            "window": window,
            "overlap": job.overlap,
            "precision": job.precision,
            "resolution": str(job.resolution),
            "extent": job.extent,
            "aoi": job.aoi,
            "like": None if job.like is None else str(job.like),
            "chunk": side,
            "outputs": ",".join(k for k in KINDS if _wants(job, k)),
            "grid": {
                "crs": None if g.crs is None else g.crs.to_wkt(),
                "transform": [float(v) for v in tuple(g.transform)[:6]],
                "width": g.width,
                "height": g.height,
            },
        },
    }


def _wants(job: PredictJob, kind: str) -> bool:
    return kind == "classes" or bool(getattr(job, kind))


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    diffs = []
    if old.get("checkpoint_digest") != new["checkpoint_digest"]:
        diffs.append("the checkpoint")
    old_opts = old.get("options") if isinstance(old.get("options"), dict) else {}
    for key, value in new["options"].items():
        before = old_opts.get(key)
        if before == value:
            continue
        if isinstance(value, (dict, list)) or isinstance(before, (dict, list)):
            diffs.append(key)
        else:
            diffs.append(f"{key} {before} -> {value}")
    return diffs


def _read_manifest(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = temp_path(path, "part")
    try:
        with write_errors(path):
            tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, path)
    finally:
        remove_quietly(tmp)


def _start_over(out: Path) -> None:
    """Remove what an earlier run wrote in ``out`` (only sgma's own names)."""
    remove_quietly(out / CHUNKS_DIR)
    for path in region_output_paths(out).values():
        remove_quietly(path)
    remove_quietly(out / MANIFEST)


def _loaded_meta(job: RegionJob) -> tuple[LoadedRunner, str | None]:
    """What the model can do, read on the driver without building it (checkpoints), and
    the checkpoint's content digest (``None`` for a graph or an old checkpoint)."""
    if job.model is not None:
        return load_runner(Path(job.model), torch.device("cpu"), graph=True), None
    if job.checkpoint is None:
        raise UsageError("give either --checkpoint (a .pt) or --model (an exported .onnx/.pt2)")
    checkpoint = load_checkpoint(Path(job.checkpoint))
    meta = checkpoint.meta
    return LoadedRunner(None, meta, meta.modality_names), checkpoint.digest


def _check_region_job(job: RegionJob) -> Path:
    check_options(job)
    if job.gpus > 1 or job.nproc > 1:
        raise UsageError(
            "--gpus/--nproc split one map's windows over processes; in region mode (--out DIR) "
            "chunks run in this process, or on several workers with --ray"
        )
    if job.chunk is not None and job.chunk < 1:
        raise UsageError(f"--chunk {job.chunk} must be a positive number of pixels")
    out = Path(job.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: a file is there; region mode (--out DIR) needs a folder")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: its parent folder does not exist")
    if out.is_dir() and not (out / MANIFEST).exists():
        others = [p.name for p in out.iterdir() if not p.name.startswith(".")]
        if others:  # never mix a region's files into a folder of other things
            raise UsageError(
                f"--out {out}: a folder with other files ({', '.join(sorted(others)[:3])}"
                f"{', …' if len(others) > 3 else ''}) and no region run ({MANIFEST}); give a "
                "new or empty folder, or a .tif file for one map"
            )
    if job.vectorize is not None:
        vectors = Path(job.vectorize)
        if vectors.suffix.lower() != ".gpkg":
            raise UsageError(f"--vectorize {vectors}: give a .gpkg path")
        if not vectors.parent.is_dir() and vectors.parent.resolve() != out.resolve():
            raise UsageError(f"--vectorize {vectors}: its folder does not exist")
    return out


# ------------------------------------------------------------------------- workers
def setup_worker(context: RegionContext) -> WorkerState:
    """Load the model once on a worker (the ``setup`` of the chunk executor)."""
    loaded = load_runner(
        context.source,
        resolve_device(context.device),
        graph=context.graph,
        precision=context.precision,
        explicit_device=context.device.lower() != "auto",
        compile=context.compile,
    )
    if loaded.runner is None:  # load_runner always returns one; keeps the type checker honest
        raise SgmaError("the model could not be loaded", context.source)
    return WorkerState(context, loaded.runner, loaded.meta)


def _specs(
    ctx: RegionContext, meta: CheckpointMeta, grid: Grid, folder: Path
) -> dict[str, RasterSpec]:
    from sgma_cli.engine.predict.region_outputs import raster_layout

    layout = raster_layout(meta, ctx.scene.names, ctx.source_name)
    return {
        kind: RasterSpec(folder / f"{kind}.tif", grid, **layout[kind])  # type: ignore[arg-type]
        for kind in ctx.kinds
    }


def _sensors_seen(scene: Scene, grid: Grid) -> list[str]:
    """Chosen sensors whose footprint meets ``grid`` (a chunk's)."""
    names = []
    left, bottom, right, top = grid.bounds
    for s in scene.sensors:
        info = s.info
        b = (
            info.bounds
            if info.crs is None or grid.crs is None or info.crs == grid.crs
            else transform_bounds(info.crs, grid.crs, *info.bounds, densify_pts=21)
        )
        if b[0] < right and b[2] > left and b[1] < top and b[3] > bottom:
            names.append(s.name)
    return names


def _windows_done(
    hook: Callable[[ChunkTask, float], None], task: ChunkTask, progress: Progress
) -> None:
    hook(task, progress.windows_done / max(progress.windows_total, 1))


def _local_setup(context: RegionContext, hook: Callable[[ChunkTask, float], None]) -> WorkerState:
    """:func:`setup_worker` in the driver's own process, with a window-progress hook."""
    state = setup_worker(context)
    state.on_windows = hook
    return state


def compute_chunk(state: WorkerState, task: ChunkTask) -> ChunkResult:
    """Compute one chunk and write its files into ``chunks/<id>/`` (the executor's ``work``).

    Every window of the region's window grid that touches the chunk is computed and
    blended as the one-piece job blends it; the rows and columns of the chunk are written.
    The folder appears under its final name only when complete; a retried chunk replaces
    the temporaries of an earlier attempt.
    """
    ctx = state.context
    start = time.perf_counter()
    final = ctx.out / CHUNKS_DIR / task.id
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        remove_stale_temps(final)
        tmp = temp_path(final, "part")
        remove_quietly(tmp)
        try:
            with write_errors(final):
                tmp.mkdir(parents=True)
            record = _compute_into(state, task, tmp, start)
            with write_errors(final):
                (tmp / "chunk.json").write_text(json.dumps(dataclasses.asdict(record)) + "\n")
                if final.exists():  # a duplicate attempt finished first: ours is the same
                    remove_quietly(final)
                os.replace(tmp, final)
        finally:
            remove_quietly(tmp)
    return ChunkResult(record)


def _compute_into(state: WorkerState, task: ChunkTask, folder: Path, start: float) -> ChunkRecord:
    ctx, meta = state.context, state.meta
    scene, size = ctx.scene, ctx.window
    grid = scene.grid
    windows = windows_touching(
        grid.height,
        grid.width,
        size,
        ctx.overlap,
        range(task.row, task.row + task.height),
        range(task.col, task.col + task.width),
    )
    r_lo, c_lo = min(w.row for w in windows), min(w.col for w in windows)
    r_hi = min(grid.height, max(w.row for w in windows) + size)
    c_hi = min(grid.width, max(w.col for w in windows) + size)
    local = {w.index: WindowSpec(w.index, w.row - r_lo, w.col - c_lo, size) for w in windows}
    box = grid.window_grid(Window(c_lo, r_lo, c_hi - c_lo, r_hi - r_lo))
    chunk_grid = grid.window_grid(Window(task.col, task.row, task.width, task.height))
    K = len(meta.classes)
    robustness = "robustness" in ctx.kinds
    channels = K + (len(scene.names) if robustness else 0)
    results = local_results(
        state.runner, meta, scene, batches_of(windows, ctx.batch_size), robustness=robustness
    )
    moved = (([local[w.index] for w in ws], values, valid) for ws, values, valid in results)
    blocks = assemble(
        moved,
        dataclasses.replace(scene, grid=box),
        list(local.values()),
        K,
        channels,
        want_probabilities="probabilities" in ctx.kinds or "confidence" in ctx.kinds,
        nodata=CLASS_NODATA,
        progress=(
            None if state.on_windows is None else partial(_windows_done, state.on_windows, task)  # type: ignore[arg-type]
        ),
    )
    counts = np.zeros(K + 1, np.int64)
    cols = slice(task.col - c_lo, task.col - c_lo + task.width)
    specs = _specs(ctx, meta, chunk_grid, folder)
    with contextlib.ExitStack() as stack:
        writers = {k: stack.enter_context(BlockRasterWriter(s)) for k, s in specs.items()}
        for block in blocks:
            top = r_lo + block.row
            a = max(top, task.row)
            b = min(top + block.classes.shape[0], task.row + task.height)
            if b <= a:
                continue
            rows = slice(a - top, b - top)
            classes = block.classes[rows, cols].copy()
            valid = block.valid[rows, cols].copy()
            inside = inside_mask(ctx.region, a, task.col, b - a, task.width)
            if inside is not None:
                valid &= inside
                classes[~inside] = CLASS_NODATA
            row = a - task.row
            writers["classes"].write_rows(row, classes[None])
            counts += np.bincount(np.where(valid, classes, K).ravel(), minlength=K + 1)[: K + 1]
            if block.probabilities is not None:
                probs = block.probabilities[:, rows, cols]
                if "probabilities" in writers:
                    writers["probabilities"].write_rows(row, to_percent(probs, valid))
                if "confidence" in writers:
                    writers["confidence"].write_rows(
                        row, to_percent(probs.max(0, keepdims=True), valid)
                    )
            if block.robustness is not None and "robustness" in writers:
                writers["robustness"].write_rows(
                    row, to_percent(block.robustness[:, rows, cols], valid)
                )
        for writer in writers.values():
            writer.finish()
            writer.publish()
    polygons = None
    if ctx.vectorize:
        polygons = vectorize_classes(
            folder / "classes.tif", folder / "polygons.gpkg", meta.class_names
        )
    return ChunkRecord(
        id=task.id,
        row=task.row,
        col=task.col,
        height=task.height,
        width=task.width,
        seconds=round(time.perf_counter() - start, 3),
        windows=len(windows),
        class_pixels=[int(c) for c in counts[:K]],
        nodata_pixels=int(counts[K]),
        sensors=_sensors_seen(scene, chunk_grid),
        polygons=polygons,
    )


# -------------------------------------------------------------------------- driver
def run_region(
    job: RegionJob,
    executor: ChunkExecutor | None = None,
    progress: RegionProgressFn | None = None,
    on_plan: Callable[[RegionPlan], None] | None = None,
) -> RegionResult:
    """Predict a region chunk by chunk into ``job.out`` (a folder), resuming a run there.

    Args:
        job: the request (``out`` is the run folder, created if missing).
        executor: where chunks run (default :class:`LocalExecutor`: this process).
        progress: called after every chunk.
        on_plan: called once the region and its chunks are known, before any chunk runs.

    Raises:
        UsageError: bad options; the folder holds a run with other options (without
            ``--overwrite``); another job writing the folder.
        RasterError, CheckpointError: unreadable inputs.
        SgmaError: some chunks failed (the others are kept; a rerun retries the failed).
    """
    out = _check_region_job(job)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        loaded, digest = _loaded_meta(job)
        window = check_fit(job, loaded)
        scene, region = open_job_scene(job, loaded)
        with write_errors(out):
            out.mkdir(exist_ok=True)
        with output_lock([out / MANIFEST], "sgma predict"):
            return _run_locked(
                job, out, loaded, digest, window, scene, region, executor, progress, on_plan
            )


def _run_locked(  # noqa: PLR0913 - the pieces run_region prepared
    job: RegionJob,
    out: Path,
    loaded: LoadedRunner,
    digest: str | None,
    window: int,
    scene: Scene,
    region: Region,
    executor: ChunkExecutor | None,
    progress: RegionProgressFn | None,
    on_plan: Callable[[RegionPlan], None] | None,
) -> RegionResult:
    start = time.perf_counter()
    meta = loaded.meta
    graph = job.model is not None
    source = Path(job.model if graph else job.checkpoint)  # type: ignore[arg-type]
    side = chunk_side(job.chunk, window, job.overlap)
    tasks = plan_chunks(scene.grid, side, region)
    manifest = _manifest(job, scene, side, window, _digest(source, digest))
    old = _read_manifest(out / MANIFEST)
    if old is not None:
        diffs = _differences(old, manifest)
        if diffs and not job.overwrite:
            raise UsageError(
                f"{out / MANIFEST}: this folder holds a run with other options "
                f"({', '.join(diffs)}); add --overwrite to start over, or choose another --out"
            )
    if job.overwrite:
        _start_over(out)
    _write_json(out / MANIFEST, manifest)
    records: dict[str, ChunkRecord] = {}
    for task in tasks:
        record = read_record(out / CHUNKS_DIR / task.id)
        if record is not None:
            records[task.id] = record
    todo = [t for t in tasks if t.id not in records]
    grid = scene.grid
    notes = [
        *scene.notes,
        f"chunks of {side} px (a multiple of the {window_stride(window, job.overlap)} px "
        f"window stride), windows of {window} px, overlap {job.overlap:g}",
    ]
    if on_plan is not None:
        on_plan(RegionPlan(grid, scene, side, window, len(tasks), len(records), out, notes))
    if todo:
        for path in region_output_paths(out, job).values():  # outputs of an older, finished run
            remove_quietly(path)
    failures: dict[str, str] = {}
    mpix_total = sum(t.width * t.height for t in todo) / 1e6
    state = {"done": 0, "mpix": 0.0, "partial": 0.0, "running": 0.0}

    runner = executor or LocalExecutor()

    def report() -> None:
        if progress is not None:
            progress(
                RegionProgress(
                    int(state["done"]),
                    len(todo),
                    len(failures),
                    state["mpix"] + state["partial"],
                    mpix_total,
                    int(getattr(runner, "retries", 0)),  # executors with worker processes
                    state["running"],
                )
            )

    def on_result(task: ChunkTask, result: ChunkResult) -> None:
        records[task.id] = result.record
        state["done"] += 1
        state["mpix"] += task.width * task.height / 1e6
        state["partial"] = state["running"] = 0.0
        report()

    def on_windows(task: ChunkTask, fraction: float) -> None:
        state["running"] = fraction
        state["partial"] = fraction * task.width * task.height / 1e6
        report()

    def on_failure(task: ChunkTask, error: BaseException) -> None:
        failures[task.id] = str(error)
        state["partial"] = state["running"] = 0.0
        report()

    context = RegionContext(
        source=source,
        graph=graph,
        device=job.device,
        precision=job.precision,
        compile=job.compile,
        scene=scene,
        region=region,
        window=window,
        overlap=job.overlap,
        batch_size=job.batch_size,
        kinds=tuple(k for k in KINDS if _wants(job, k)),
        vectorize=job.vectorize is not None,
        out=out.resolve(),
        source_name=source.name,
    )
    report()
    setup = (
        partial(_local_setup, context, on_windows)  # this process: windows move the bar
        if isinstance(runner, LocalExecutor)
        else partial(setup_worker, context)
    )
    runner.run(todo, setup, compute_chunk, on_result, on_failure)
    outputs, polygons = finish_outputs(
        job, out, meta, scene, tasks, records, failures, min_area=job.min_area
    )
    K = len(meta.classes)
    counts = np.zeros(K + 1, np.int64)
    for record in records.values():
        counts[:K] += record.class_pixels
        counts[K] += record.nodata_pixels
    return RegionResult(
        outputs=outputs,
        scene=scene,
        chunks_total=len(tasks),
        chunks_computed=len(todo) - len(failures),
        chunks_skipped=len(tasks) - len(todo),
        seconds=time.perf_counter() - start,
        class_pixels={n: int(counts[i]) for i, n in enumerate(meta.class_names)},
        nodata_pixels=int(counts[K]),
        polygons=polygons,
        notes=notes,
    )
