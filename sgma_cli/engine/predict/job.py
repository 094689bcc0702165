"""The ``sgma predict`` job: a whole scene written as georeferenced outputs.

:func:`run_predict` checks the job (sensors, checkpoint, output paths), opens the scene on
its reference grid, runs :func:`~sgma_cli.engine.predict.inference.predict_scene` (or, with
several devices, deals batches round-robin to worker processes with
:func:`worker_results`, this process only assembling and writing) and writes the blocks as
COG GeoTIFFs (+ a GeoPackage), each under a temporary name. Only when every output is
complete are they renamed into place, all or none (:func:`sgma_cli.data.atomic.publish`):
the extra rasters, then the class map, then the GeoPackage, so a GeoPackage means every
output is there and a failed rename leaves none of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import torch

from sgma_cli.config.checkpoint import CheckpointMeta, load_checkpoint
from sgma_cli.data.atomic import publish, remove_quietly, temp_path
from sgma_cli.data.region import Region, inside_mask, like_grid, parse_aoi, region_grid
from sgma_cli.data.scene import Extent, Scene, find_sensor_files, open_scene
from sgma_cli.data.sources import RasterSource
from sgma_cli.data.window_grid import SIZE_MULTIPLE, window_grid
from sgma_cli.data.writers import (
    CLASS_NODATA,
    PERCENT_NODATA,
    BlockRasterWriter,
    RasterSpec,
    check_writable,
    to_percent,
    vectorize_classes,
)
from sgma_cli.engine.device import check_gpu_count, resolve_device
from sgma_cli.engine.locks import output_lock
from sgma_cli.engine.predict.inference import (
    GDAL_CACHE_MB,
    PredictionBlock,
    ProgressFn,
    Runner,
    TorchRunner,
    assemble,
    batches_of,
    local_results,
)
from sgma_cli.engine.predict.runners import LoadedRunner, load_runner
from sgma_cli.engine.predict.workers import WorkerPlan, worker_results
from sgma_cli.engine.speed import CompiledModel
from sgma_cli.errors import UsageError
from sgma_cli.model.sgma import SGMA

__all__ = [
    "predict_scene",
    "PredictJob",
    "PredictResult",
    "output_paths",
    "default_window",
    "open_job_scene",
    "run_predict",
]


def predict_scene(  # noqa: PLR0913 - keyword-only options of one call, documented below
    model: SGMA | Runner | None,
    meta: CheckpointMeta,
    scene: Scene,
    *,
    window: int = 512,
    overlap: float = 0.25,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    probabilities: bool = False,
    robustness: bool = False,
    progress: ProgressFn | None = None,
    prefetch: int = 2,
    workers: WorkerPlan | None = None,
) -> Iterator[PredictionBlock]:
    """Predict a whole scene; yield finished row blocks top to bottom.

    Args:
        model: the model in eval mode on ``device``, or any
            :class:`~sgma_cli.engine.predict.inference.Runner` (e.g. an exported graph);
            unused, may be ``None``, with ``workers``.
        meta: its checkpoint metadata (modality order, normalisation, classes).
        scene: the opened scene (:func:`sgma_cli.data.scene.open_scene`).
        window: window side in pixels (multiple of 32).
        overlap: fraction of the window shared with neighbours.
        batch_size: windows per forward pass.
        device: compute device of ``model`` (an SGMA model; a runner has its own).
        precision: ``auto``, ``bf16`` or ``fp32`` (an SGMA model; a runner has its own).
        probabilities: also return blended class probabilities.
        robustness: also return blended robustness maps of the chosen sensors.
        progress: called after every batch with a :class:`Progress`.
        prefetch: batches read ahead by the background reader.
        workers: compute in worker processes instead (see :class:`WorkerPlan`).

    Yields:
        :class:`PredictionBlock` s covering rows ``0 .. H`` in order.
    """
    grid = scene.grid
    windows = window_grid(grid.height, grid.width, window, overlap)
    batches = batches_of(windows, batch_size)
    K = len(meta.classes)
    channels = K + (len(scene.names) if robustness else 0)
    if workers is not None:
        results = worker_results(
            workers,
            meta,
            scene,
            batches,
            precision=precision,
            robustness=robustness,
            prefetch=prefetch,
        )
    else:
        if model is None:
            raise ValueError("predict_scene needs a model unless workers are given")
        runner = (
            TorchRunner(model, torch.device(device), precision)
            if isinstance(model, SGMA)
            else model
        )
        results = local_results(
            runner, meta, scene, batches, robustness=robustness, prefetch=prefetch
        )
    yield from assemble(
        results, scene, windows, K, channels, want_probabilities=probabilities, progress=progress
    )


@dataclass
class PredictJob:
    """Everything ``sgma predict`` was asked to do.

    Attributes:
        checkpoint: the model, a checkpoint written by ``sgma train`` (or ``None`` with
            ``model``).
        scene_dir: folder of ``<modality>.tif`` files, or ``None`` with ``files``.
        out: class map GeoTIFF.
        files: explicit ``{name: where}`` sensors (``--modality NAME=WHERE``, ``--stac``): a
            file, glob, folder, list file or URL, or a ready ``RasterSource``.
        modalities: sensors to use (``None``: every checkpoint sensor found).
        window: window side (multiple of 32); ``None``: the checkpoint's training tile size
            rounded up to a multiple of 32 (SGMA's prototypes sum over the window, so the
            model sees what it was trained on), else 512.
        overlap: window overlap fraction.
        batch_size: windows per forward pass.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        gpus: GPU worker processes (> 1 splits windows over GPUs 0..N-1).
        nproc: CPU worker processes (with ``device=cpu``).
        precision: ``auto``, ``bf16`` or ``fp32``.
        probabilities: also write ``<out>.probabilities.tif``.
        confidence: also write ``<out>.confidence.tif``.
        robustness: also write ``<out>.robustness.tif``.
        vectorize: GeoPackage of class polygons, or ``None``.
        min_area: smallest polygon in CRS units² (``vectorize``).
        resolution: ``"checkpoint"``, ``"native"`` or a pixel size in CRS units.
        extent: ``"reference"`` or ``"union"``.
        model: instead of ``checkpoint``, a ``.onnx`` or ``.pt2`` file written by
            ``sgma export``, run by ONNX Runtime or ``torch.export`` (float32).
        aoi: ``--aoi``: a polygon file or ``minx,miny,maxx,maxy[,CRS]`` (see
            :mod:`sgma_cli.data.region`); ``None``: the reference sensor's coverage.
        like: ``--like``: write on this raster's grid.
        compile: compile the model with ``torch.compile`` (``None``: on CUDA only; see
            :mod:`sgma_cli.engine.speed`).
    """

    checkpoint: Path | None
    scene_dir: Path | None
    out: Path
    files: dict[str, Path | str | RasterSource] = field(default_factory=dict)
    modalities: list[str] | None = None
    window: int | None = None
    overlap: float = 0.25
    batch_size: int = 8
    device: str = "auto"
    gpus: int = 1
    nproc: int = 1
    precision: str = "auto"
    probabilities: bool = False
    confidence: bool = False
    robustness: bool = False
    vectorize: Path | None = None
    min_area: float = 0.0
    resolution: str | float = "checkpoint"
    extent: Extent = "reference"
    model: Path | None = None
    aoi: str | None = None
    like: Path | None = None
    compile: bool | None = None


@dataclass
class PredictResult:
    """What a prediction wrote.

    Attributes:
        outputs: ``{"classes"|"probabilities"|"confidence"|"robustness"|"vectors": path}``.
        scene: the scene (sensors used, grid).
        windows: windows computed.
        seconds: wall time.
        class_pixels: pixels per class name.
        nodata_pixels: pixels no chosen sensor saw.
        polygons: polygons written (``vectorize``).
        notes: lines on the choices made.
        compiled: what ``torch.compile`` compiled in this process, else ``None``.
    """

    outputs: dict[str, Path]
    scene: Scene
    windows: int
    seconds: float
    class_pixels: dict[str, int]
    nodata_pixels: int
    polygons: int | None = None
    notes: list[str] = field(default_factory=list)
    compiled: CompiledModel | None = None


def output_paths(job: PredictJob) -> dict[str, Path]:
    """Every file ``job`` will write, by kind."""
    out = Path(job.out)
    stem = out.with_suffix("")
    paths = {"classes": out}
    for kind, on in (
        ("probabilities", job.probabilities),
        ("confidence", job.confidence),
        ("robustness", job.robustness),
    ):
        if on:
            paths[kind] = stem.with_name(f"{stem.name}.{kind}.tif")
    if job.vectorize is not None:
        paths["vectors"] = Path(job.vectorize)
    return paths


def _check_job(job: PredictJob) -> None:
    check_options(job)
    paths = output_paths(job)
    if len(set(paths.values())) != len(paths):
        raise UsageError("two outputs would share one path; choose another --out or --vectorize")
    for path in paths.values():
        check_writable(path)


def check_options(job: PredictJob) -> None:
    """Refuse option values no prediction can honour (outputs are checked by the caller)."""
    if job.window is not None and (job.window <= 0 or job.window % SIZE_MULTIPLE):
        raise UsageError(
            f"--window {job.window} must be a positive multiple of {SIZE_MULTIPLE}, e.g. 256 or 512"
        )
    if not 0.0 <= job.overlap <= 0.9:
        raise UsageError(f"--overlap {job.overlap} must be between 0 and 0.9")
    if job.batch_size < 1:
        raise UsageError(f"--batch-size {job.batch_size} must be at least 1")
    if job.gpus < 1 or job.nproc < 1:
        raise UsageError("--gpus and --nproc must be at least 1")
    if job.min_area < 0:
        raise UsageError(f"--min-area {job.min_area} must be >= 0")
    if job.scene_dir is None and not job.files:
        raise UsageError("give SCENE_DIR or at least one --modality NAME=PATH")
    if (job.checkpoint is None) == (job.model is None):
        raise UsageError("give either --checkpoint (a .pt) or --model (an exported .onnx/.pt2)")
    if job.model is not None and job.precision == "bf16":
        raise UsageError("--precision bf16 is for --checkpoint; an exported --model runs in fp32")
    if job.model is not None and job.compile:
        raise UsageError("--compile is for --checkpoint; an exported --model is already a graph")


def _workers_for(job: PredictJob) -> tuple[torch.device, WorkerPlan | None]:
    if job.gpus > 1:
        if job.device.lower() == "cpu":
            raise UsageError(
                "--gpus asks for GPUs but --device is cpu; use --nproc N for CPU processes"
            )
        check_gpu_count(job.gpus)
        return torch.device("cuda:0"), WorkerPlan(
            _source(job),
            tuple(f"cuda:{i}" for i in range(job.gpus)),
            graph=job.model is not None,
            compile=job.compile,
        )
    device = resolve_device(job.device)
    if job.nproc > 1:
        if device.type != "cpu":
            raise UsageError("--nproc is for CPU processes; use --gpus N to spread over GPUs")
        return device, WorkerPlan(
            _source(job), ("cpu",) * job.nproc, graph=job.model is not None, compile=job.compile
        )
    return device, None


def _source(job: PredictJob) -> Path:
    """The model file: ``--model`` or ``--checkpoint``."""
    source = job.model if job.model is not None else job.checkpoint
    if source is None:  # _check_job refuses this first
        raise UsageError("give either --checkpoint or --model")
    return Path(source)


def _open_model(
    job: PredictJob, device: torch.device, plan: WorkerPlan | None
) -> tuple[Runner | None, LoadedRunner]:
    """The runner of this process (``None`` with workers) and what the model can do."""
    graph = job.model is not None
    if plan is None:
        loaded = load_runner(
            _source(job),
            device,
            graph=graph,
            precision=job.precision,
            explicit_device=job.device.lower() != "auto",
            compile=job.compile,
        )
        return loaded.runner, loaded
    if graph:  # the workers open their own sessions; this one only reads the metadata
        return None, load_runner(_source(job), torch.device("cpu"), graph=True)
    meta = load_checkpoint(_source(job)).meta
    return None, LoadedRunner(None, meta, meta.modality_names)


def check_fit(job: PredictJob, loaded: LoadedRunner) -> int:
    """Refuse what an exported graph cannot do; return the window size."""
    name = _source(job).name
    unknown = [m for m in job.modalities or [] if m not in loaded.modalities]
    if job.model is not None and unknown:
        raise UsageError(
            f"--modalities {','.join(unknown)}: {name} was exported for "
            f"{','.join(loaded.modalities)} only"
        )
    if job.robustness and not loaded.robustness:
        raise UsageError(f"--robustness: {name} was exported without it; export with --robustness")
    window = job.window or loaded.size or default_window(loaded.meta)
    if loaded.size is not None and window != loaded.size:
        raise UsageError(
            f"--window {window}: {name} takes {loaded.size} px windows only; use --window "
            f"{loaded.size} or export with --dynamic"
        )
    return window


def default_window(meta: CheckpointMeta, fallback: int = 512) -> int:
    """The checkpoint's training tile size rounded up to a multiple of 32, else ``fallback``."""
    if meta.tile_size:
        return int(-(-meta.tile_size // SIZE_MULTIPLE) * SIZE_MULTIPLE)
    return fallback


def _resolution(job: PredictJob, meta: CheckpointMeta) -> tuple[float | None, str | None]:
    if job.resolution == "native":
        return None, None
    if job.resolution == "checkpoint":
        return (meta.resolution[0] if meta.resolution else None), meta.crs
    try:
        value = float(job.resolution)
    except ValueError:
        raise UsageError(
            f"--resolution {job.resolution!r}: use checkpoint, native or a pixel size"
        ) from None
    if value <= 0:
        raise UsageError(f"--resolution {value} must be positive")
    return value, None


def _specs(
    job: PredictJob, meta: CheckpointMeta, scene: Scene, paths: dict[str, Path]
) -> dict[str, RasterSpec]:
    names = meta.class_names
    tags = {
        "CLASS_NAMES": json.dumps(names),
        "CHECKPOINT": _source(job).name,
        "SENSORS": ",".join(scene.names),
    }
    specs = {
        "classes": RasterSpec(
            paths["classes"],
            scene.grid,
            1,
            CLASS_NODATA,
            ["class"],
            colormap={i: tuple(c.color) for i, c in enumerate(meta.classes)},
            tags=tags,
        )
    }
    pct = {"scale": 0.01, "overview_resampling": "AVERAGE", "tags": {**tags, "UNITS": "percent"}}
    if "probabilities" in paths:
        specs["probabilities"] = RasterSpec(
            paths["probabilities"], scene.grid, len(names), PERCENT_NODATA, names, **pct
        )  # type: ignore[arg-type]
    if "confidence" in paths:
        specs["confidence"] = RasterSpec(
            paths["confidence"], scene.grid, 1, PERCENT_NODATA, ["confidence"], **pct
        )  # type: ignore[arg-type]
    if "robustness" in paths:
        specs["robustness"] = RasterSpec(
            paths["robustness"],
            scene.grid,
            len(scene.names),
            PERCENT_NODATA,
            [f"robustness_{n}" for n in scene.names],
            **pct,  # type: ignore[arg-type]
        )
    return specs


def open_job_scene(job: PredictJob, loaded: LoadedRunner) -> tuple[Scene, Region]:
    """Find and open the job's sensors; the scene's grid is the region's (``--aoi``/``--like``).

    Returns the scene, whose ``grid`` is the output grid, and the region (the AOI polygon
    whose outside is nodata, if any).
    """
    meta = loaded.meta
    bands = {m.name: m.bands for m in meta.modalities}
    files = find_sensor_files(job.scene_dir, loaded.modalities, job.files)
    res, res_crs = _resolution(job, meta)
    scene = open_scene(
        files,
        bands,
        modalities=job.modalities,
        resolution=res,
        resolution_crs=res_crs,
        extent=job.extent,
        source=job.scene_dir,
    )
    if job.aoi is None and job.like is None:
        return scene, Region(scene.grid)
    aoi = parse_aoi(job.aoi) if job.aoi is not None else None
    like = like_grid(job.like) if job.like is not None else None
    region = region_grid(
        scene.grid,
        [s.info for s in scene.sensors],
        aoi=aoi,
        like=like,
        like_source=str(job.like) if job.like is not None else None,
    )
    g = region.grid
    notes = [
        f"output grid: {g.width}x{g.height} px at {g.resolution[0]:g}",
        *scene.notes[1:],
        *region.notes,
    ]
    return dataclasses.replace(scene, grid=region.grid, notes=[scene.notes[0], *notes]), region


def _clip_to_region(block: PredictionBlock, region: Region) -> None:
    """Set the pixels of ``block`` outside the AOI polygon to nodata (in place)."""
    inside = inside_mask(region, block.row, 0, *block.classes.shape)
    if inside is None:
        return
    block.valid &= inside
    block.classes[~inside] = CLASS_NODATA


def run_predict(
    job: PredictJob,
    progress: ProgressFn | None = None,
    on_scene: Callable[[Scene], None] | None = None,
) -> PredictResult:
    """Validate, predict the scene and write every output (all or nothing).

    Args:
        job: the request.
        progress: called after every batch.
        on_scene: called once the scene is opened (e.g. to print the grid), before compute.

    Raises:
        UsageError: bad option values; another job writing one of the outputs (the
            outputs are locked while this one writes them).
        CheckpointError: unreadable checkpoint.
        RasterError: missing/unfit sensors, unwritable outputs.
        DeviceError: a device this machine lacks.
    """
    _check_job(job)  # outputs checked before they are locked
    with (
        rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB),
        output_lock(output_paths(job).values(), "sgma predict"),
    ):
        return _run_predict(job, progress, on_scene)


def _run_predict(
    job: PredictJob, progress: ProgressFn | None, on_scene: Callable[[Scene], None] | None
) -> PredictResult:
    start = time.perf_counter()
    _check_job(job)
    paths = output_paths(job)
    device, plan = _workers_for(job)
    runner, loaded = _open_model(job, device, plan)
    meta = loaded.meta
    window = check_fit(job, loaded)
    scene, region = open_job_scene(job, loaded)
    if on_scene is not None:
        on_scene(scene)
    specs = _specs(job, meta, scene, paths)
    if loaded.compiled is not None:
        progress = loaded.compiled.watch(progress)
    K = len(meta.classes)
    counts = np.zeros(K + 1, np.int64)
    windows = len(window_grid(scene.grid.height, scene.grid.width, window, job.overlap))
    with contextlib.ExitStack() as stack:
        writers = {k: stack.enter_context(BlockRasterWriter(s)) for k, s in specs.items()}
        blocks = predict_scene(
            runner,
            meta,
            scene,
            window=window,
            overlap=job.overlap,
            batch_size=job.batch_size,
            device=device,
            precision=job.precision,
            probabilities="probabilities" in writers or "confidence" in writers,
            robustness="robustness" in writers,
            progress=progress,
            workers=plan,
        )
        for block in blocks:
            _clip_to_region(block, region)
            writers["classes"].write_rows(block.row, block.classes[None])
            counts += np.bincount(np.where(block.valid, block.classes, K).ravel(), minlength=K + 1)[
                : K + 1
            ]
            if block.probabilities is not None:
                if "probabilities" in writers:
                    writers["probabilities"].write_rows(
                        block.row, to_percent(block.probabilities, block.valid)
                    )
                if "confidence" in writers:
                    writers["confidence"].write_rows(
                        block.row,
                        to_percent(block.probabilities.max(0, keepdims=True), block.valid),
                    )
            if block.robustness is not None and "robustness" in writers:
                writers["robustness"].write_rows(
                    block.row, to_percent(block.robustness, block.valid)
                )
        finished = {k: w.finish() for k, w in writers.items()}
        order = [k for k in writers if k != "classes"] + ["classes"]
        pairs = [(finished[k], writers[k].path) for k in order]
        polygons = None
        if job.vectorize is not None:
            vectors = Path(job.vectorize)
            vectors_tmp = temp_path(vectors, "vec")
            stack.callback(remove_quietly, vectors_tmp)
            polygons = vectorize_classes(
                finished["classes"],
                vectors_tmp,
                meta.class_names,
                min_area=job.min_area,
                error_path=vectors,
            )
            pairs.append((vectors_tmp, vectors))  # last: a GeoPackage means all is there
        publish(pairs)
        for w in writers.values():
            w.mark_published()
    return PredictResult(
        outputs=paths,
        scene=scene,
        windows=windows,
        seconds=time.perf_counter() - start,
        class_pixels={n: int(counts[i]) for i, n in enumerate(meta.class_names)},
        nodata_pixels=int(counts[K]),
        polygons=polygons,
        notes=[*scene.notes, f"windows of {window} px, overlap {job.overlap:g}"],
        compiled=loaded.compiled,
    )
