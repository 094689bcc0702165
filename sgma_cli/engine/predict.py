"""The ``sgma predict`` job: a whole scene, window by window, in bounded memory.

Windows (:mod:`sgma_cli.data.windows`) are read on the reference grid by a background
thread (:mod:`sgma_cli.data.scene`), normalised with the checkpoint's statistics and
batched, while the model computes the previous batch (GDAL reads and torch kernels both
release the GIL). Class probabilities of overlapping windows are blended with a smooth
window weight; rows are finalised as soon as no pending window touches them and handed on
as :class:`PredictionBlock` s, so only the windows in flight and one band of output rows
are ever in memory. :func:`predict_scene` yields those blocks (``evaluate`` uses it to
score whole scenes); :func:`run_predict` writes them as COG GeoTIFFs (+ a GeoPackage).

With several devices (``--gpus N``, or ``--device cpu --nproc N``) batches are dealt
round-robin to N worker processes (:func:`worker_results`); this process only
assembles and writes.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import multiprocessing.queues
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F

from sgma_cli.config.checkpoint import CheckpointMeta, load_checkpoint
from sgma_cli.data.normalize import normalize
from sgma_cli.data.scene import Extent, Scene, find_sensor_files, open_scene
from sgma_cli.data.windows import SIZE_MULTIPLE, RowAccumulator, WindowSpec, blend_weights, window_grid
from sgma_cli.data.writers import (
    CLASS_NODATA,
    PERCENT_NODATA,
    BlockRasterWriter,
    RasterSpec,
    check_writable,
    to_percent,
    vectorize_classes,
)
from sgma_cli.engine.checkpoints import load_model
from sgma_cli.engine.device import autocast, check_gpu_count, resolve_device
from sgma_cli.errors import SgmaError, UsageError
from sgma_cli.model.sgma import SGMA

__all__ = [
    "Progress",
    "ProgressFn",
    "PredictionBlock",
    "WindowBatch",
    "batches_of",
    "read_batches",
    "compute_batch",
    "predict_scene",
    "local_results",
    "worker_results",
    "assemble",
    "WorkerPlan",
    "PredictJob",
    "PredictResult",
    "output_paths",
    "default_window",
    "run_predict",
]

_DONE = object()
#: GDAL block cache for a prediction (MiB). GDAL's default, 5 % of the machine's RAM, lets
#: the cache of warped reads grow with the scene; a fixed size keeps memory flat.
GDAL_CACHE_MB = 64


@dataclass(frozen=True)
class Progress:
    """Where a prediction stands: windows and megapixels of the scene."""

    windows_done: int
    windows_total: int
    megapixels_done: float
    megapixels_total: float


ProgressFn = Callable[[Progress], None]


@dataclass
class PredictionBlock:
    """Finished full-width rows ``[row, row + h)`` of the scene.

    Attributes:
        row: first row on the reference grid.
        classes: uint8 ``(h, W)`` class indices, ``nodata`` where not ``valid``.
        valid: bool ``(h, W)``: some chosen sensor saw the pixel.
        probabilities: float32 ``(K, h, W)`` blended class probabilities, or ``None``.
        robustness: float32 ``(M_used, h, W)`` blended RP weights of the used sensors
            (finest scale, upsampled), or ``None``.
    """

    row: int
    classes: np.ndarray
    valid: np.ndarray
    probabilities: np.ndarray | None = None
    robustness: np.ndarray | None = None


@dataclass
class WindowBatch:
    """Normalised inputs of a batch of windows.

    Attributes:
        windows: the windows, ``B`` of them.
        images: ``{name: float32 (B, C, S, S)}`` of the chosen sensors.
        mask: bool ``(B, M, S, S)`` over all checkpoint modalities.
    """

    windows: list[WindowSpec]
    images: dict[str, np.ndarray]
    mask: np.ndarray


@dataclass
class _Result:
    windows: list[WindowSpec]
    values: np.ndarray | None  # (B, C, S, S) float32; None when nothing was seen
    valid: np.ndarray | None  # (B, S, S) bool
    error: BaseException | None = field(default=None)


def batches_of(windows: Sequence[WindowSpec], batch_size: int) -> list[list[WindowSpec]]:
    """Consecutive (row-major) windows in batches of ``batch_size``."""
    return [list(windows[i : i + batch_size]) for i in range(0, len(windows), batch_size)]


def read_batches(scene: Scene, meta: CheckpointMeta, batches: Sequence[Sequence[WindowSpec]]) -> Iterator[WindowBatch]:
    """Read and normalise each batch of windows (call from one thread)."""
    norms = {m.name: m for m in meta.modalities}
    names = meta.modality_names
    with scene.reader() as reader:
        for batch in batches:
            size = batch[0].size
            images = {n: np.zeros((len(batch), norms[n].bands, size, size), np.float32) for n in scene.names}
            mask = np.zeros((len(batch), len(names), size, size), bool)
            for b, w in enumerate(batch):
                arrays, valid = reader.read(w.row, w.col, size, size)
                for n in scene.names:
                    images[n][b] = normalize(arrays[n], norms[n].mean, norms[n].std, valid[n])
                    mask[b, names.index(n)] = valid[n]
            yield WindowBatch(list(batch), images, mask)


def compute_batch(
    model: SGMA,
    batch: WindowBatch,
    device: torch.device,
    *,
    precision: str = "auto",
    robustness_of: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Run the model on one batch.

    Args:
        model: the model, in eval mode on ``device``.
        batch: normalised inputs.
        device: where to compute.
        precision: ``auto`` (bf16 autocast on CUDA), ``bf16`` or ``fp32``.
        robustness_of: model indices of the sensors whose RP weights to return.

    Returns:
        ``values`` float32 ``(B, K + len(robustness_of), S, S)`` (softmax probabilities, then
        robustness upsampled from the finest scale) and ``valid`` bool ``(B, S, S)``.
    """
    pin = device.type == "cuda"
    images = {}
    for n, a in batch.images.items():
        t = torch.from_numpy(a)
        images[n] = (t.pin_memory() if pin else t).to(device, non_blocking=pin)
    mask = torch.from_numpy(batch.mask).to(device)
    with torch.inference_mode(), autocast(device, precision):
        out = model(images, mask)
        values = out.logits.float().softmax(1)
        if robustness_of:
            size = values.shape[-2:]
            r = out.robustness[0][:, list(robustness_of)].float()
            values = torch.cat([values, F.interpolate(r, size=size, mode="bilinear", align_corners=False)], 1)
    return values.cpu().numpy(), out.valid.cpu().numpy()


def _prefetch(source: Iterator[WindowBatch], depth: int, stop: threading.Event) -> Iterator[WindowBatch]:
    """Run ``source`` in a background thread, ``depth`` batches ahead."""
    slots: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))

    def produce() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(_DONE)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, re-raised there
            slots.put(err)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # release the files in the thread that opened them

    thread = threading.Thread(target=produce, name="sgma-read", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=5)


def local_results(
    model: SGMA,
    meta: CheckpointMeta,
    scene: Scene,
    batches: Sequence[Sequence[WindowSpec]],
    device: torch.device,
    *,
    precision: str = "auto",
    robustness: bool = False,
    prefetch: int = 2,
) -> Iterator[tuple[list[WindowSpec], np.ndarray | None, np.ndarray | None]]:
    """``(windows, values, valid)`` per batch computed in this process (see :func:`compute_batch`)."""
    names = meta.modality_names
    robust_idx = [names.index(n) for n in scene.names] if robustness else []
    stop = threading.Event()
    for batch in _prefetch(read_batches(scene, meta, batches), prefetch, stop):
        seen = batch.mask.any(axis=(1, 2, 3))
        if not seen.any():
            yield batch.windows, None, None
            continue
        if not seen.all():  # compute only windows some sensor saw
            keep = np.flatnonzero(seen)
            sub = WindowBatch([batch.windows[i] for i in keep], {n: a[keep] for n, a in batch.images.items()}, batch.mask[keep])
            values, valid = compute_batch(model, sub, device, precision=precision, robustness_of=robust_idx)
            full_v = np.zeros((len(batch.windows), *values.shape[1:]), np.float32)
            full_ok = np.zeros((len(batch.windows), *valid.shape[1:]), bool)
            full_v[keep], full_ok[keep] = values, valid
            yield batch.windows, full_v, full_ok
        else:
            yield batch.windows, *compute_batch(model, batch, device, precision=precision, robustness_of=robust_idx)


def assemble(
    results: Iterator[tuple[list[WindowSpec], np.ndarray | None, np.ndarray | None]],
    scene: Scene,
    windows: list[WindowSpec],
    num_classes: int,
    channels: int,
    *,
    want_probabilities: bool = False,
    nodata: int = 255,
    progress: ProgressFn | None = None,
) -> Iterator[PredictionBlock]:
    """Blend window results into finished rows, in order."""
    grid = scene.grid
    mpix = grid.width * grid.height / 1e6
    acc = RowAccumulator(grid.height, grid.width, channels, windows)
    weight = blend_weights(windows[0].size)
    zeros = np.zeros((channels, windows[0].size, windows[0].size), np.float32)
    done, total = 0, len(windows)
    for batch, values, valid in results:
        for b, w in enumerate(batch):
            if values is None or valid is None:
                acc.add(w, zeros, np.zeros_like(weight))
            else:
                acc.add(w, values[b], weight * valid[b])
        done += len(batch)
        if progress is not None:
            progress(Progress(done, total, mpix * done / total, mpix))
        while (finished := acc.pop_finished()) is not None:
            yield _finalize(*finished, num_classes, want_probabilities, nodata)
    if done != total:
        raise RuntimeError(f"only {done} of {total} windows came back")


def _finalize(row: int, sums: np.ndarray, weights: np.ndarray, K: int, want_probs: bool, nodata: int) -> PredictionBlock:
    valid = weights > 0
    values = sums  # a copy owned by this block: normalise in place
    values /= np.where(valid, weights, np.float32(1.0))[None]
    classes = values[:K].argmax(0).astype(np.uint8)
    classes[~valid] = nodata
    probs = values[:K] if want_probs else None
    robust = values[K:] if values.shape[0] > K else None
    return PredictionBlock(row, classes, valid, probs, robust)


def predict_scene(
    model: SGMA | None,
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
        model: the model in eval mode on ``device`` (unused, may be ``None``, with ``workers``).
        meta: its checkpoint metadata (modality order, normalisation, classes).
        scene: the opened scene (:func:`sgma_cli.data.scene.open_scene`).
        window: window side in pixels (multiple of 32).
        overlap: fraction of the window shared with neighbours.
        batch_size: windows per forward pass.
        device: compute device of ``model``.
        precision: ``auto``, ``bf16`` or ``fp32``.
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
        results = worker_results(workers, meta, scene, batches, precision=precision, robustness=robustness, prefetch=prefetch)
    else:
        if model is None:
            raise ValueError("predict_scene needs a model unless workers are given")
        results = local_results(
            model, meta, scene, batches, torch.device(device), precision=precision, robustness=robustness, prefetch=prefetch
        )
    yield from assemble(results, scene, windows, K, channels, want_probabilities=probabilities, progress=progress)


@dataclass(frozen=True)
class WorkerPlan:
    """Compute windows in worker processes, one per device.

    Attributes:
        checkpoint: the checkpoint each worker loads.
        devices: one device per worker, e.g. ``["cuda:0", "cuda:1"]`` or ``["cpu", "cpu"]``.
        threads: torch CPU threads per worker (``None``: cores / workers).
    """

    checkpoint: Path
    devices: tuple[str, ...]
    threads: int | None = None


# ---------------------------------------------------------------- worker processes
def _worker_main(
    rank: int,
    plan: WorkerPlan,
    scene: Scene,
    batches: list[list[WindowSpec]],
    precision: str,
    robustness: bool,
    prefetch: int,
    out: multiprocessing.queues.Queue,  # type: ignore[type-arg]
) -> None:
    """One worker process: load the model on its device, compute its batches, send results."""
    try:
        torch.set_num_threads(plan.threads or max(1, (os.cpu_count() or 1) // len(plan.devices)))
        device = resolve_device(plan.devices[rank])
        model, meta = load_model(plan.checkpoint, device)
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
            for windows, values, valid in local_results(
                model, meta, scene, batches, device, precision=precision, robustness=robustness, prefetch=prefetch
            ):
                out.put(("ok", windows, values, valid))
        out.put(("done", rank, None, None))
    except SgmaError as err:
        out.put(("error", err, None, None))
    except Exception:  # noqa: BLE001 - a bug in a worker: send its traceback to the parent
        out.put(("bug", traceback.format_exc(), None, None))


def worker_results(
    plan: WorkerPlan,
    meta: CheckpointMeta,
    scene: Scene,
    batches: Sequence[Sequence[WindowSpec]],
    *,
    precision: str = "auto",
    robustness: bool = False,
    prefetch: int = 2,
) -> Iterator[tuple[list[WindowSpec], np.ndarray | None, np.ndarray | None]]:
    """Like :func:`local_results`, computed by one worker process per device in ``plan``.

    Batches are dealt round-robin (batch ``i`` to worker ``i % N``) so the workers move
    down the scene together and the row buffer stays small.

    Raises:
        SgmaError: what a worker raised (e.g. :class:`CheckpointError`).
        RuntimeError: a worker crashed or hit a bug (its traceback is in the message).
    """
    n = len(plan.devices)
    # forkserver: a clean server process (no CUDA, no thread pools) imports sgma once and
    # forks the workers, so they start in a fraction of a second instead of re-importing torch
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["sgma_cli.engine.predict"])
    results: multiprocessing.queues.Queue = ctx.Queue(maxsize=2 * n)  # type: ignore[type-arg]
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(r, plan, scene, [list(b) for b in batches[r::n]], precision, robustness, prefetch, results),
            name=f"sgma-predict-{r}",
            daemon=True,
        )
        for r in range(n)
    ]
    for p in procs:
        p.start()
    running = n
    try:
        while running:
            try:
                kind, a, b, c = results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"prediction worker {dead[0].name} died (exit code {dead[0].exitcode})") from None
                continue
            if kind == "ok":
                yield a, b, c
            elif kind == "done":
                running -= 1
            elif kind == "error":
                raise a
            else:
                raise RuntimeError(f"prediction worker failed:\n{a}")
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=10)
        results.close()


# ------------------------------------------------------------------------- the job
@dataclass
class PredictJob:
    """Everything ``sgma predict`` was asked to do.

    Attributes:
        checkpoint: the model.
        scene_dir: folder of ``<modality>.tif`` files, or ``None`` with ``files``.
        out: class map GeoTIFF.
        files: explicit ``{name: path}`` sensors (``--modality NAME=PATH``).
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
    """

    checkpoint: Path
    scene_dir: Path | None
    out: Path
    files: dict[str, Path] = field(default_factory=dict)
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
    """

    outputs: dict[str, Path]
    scene: Scene
    windows: int
    seconds: float
    class_pixels: dict[str, int]
    nodata_pixels: int
    polygons: int | None = None
    notes: list[str] = field(default_factory=list)


def output_paths(job: PredictJob) -> dict[str, Path]:
    """Every file ``job`` will write, by kind."""
    out = Path(job.out)
    stem = out.with_suffix("")
    paths = {"classes": out}
    for kind, on in (("probabilities", job.probabilities), ("confidence", job.confidence), ("robustness", job.robustness)):
        if on:
            paths[kind] = stem.with_name(f"{stem.name}.{kind}.tif")
    if job.vectorize is not None:
        paths["vectors"] = Path(job.vectorize)
    return paths


def _check_job(job: PredictJob) -> None:
    if job.window is not None and (job.window <= 0 or job.window % SIZE_MULTIPLE):
        raise UsageError(f"--window {job.window} must be a positive multiple of {SIZE_MULTIPLE}, e.g. 256 or 512")
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
    paths = output_paths(job)
    if len(set(paths.values())) != len(paths):
        raise UsageError("two outputs would share one path; choose another --out or --vectorize")
    for path in paths.values():
        check_writable(path)


def _workers_for(job: PredictJob) -> tuple[torch.device, WorkerPlan | None]:
    if job.gpus > 1:
        if job.device.lower() == "cpu":
            raise UsageError("--gpus asks for GPUs but --device is cpu; use --nproc N for CPU processes")
        check_gpu_count(job.gpus)
        return torch.device("cuda:0"), WorkerPlan(job.checkpoint, tuple(f"cuda:{i}" for i in range(job.gpus)))
    device = resolve_device(job.device)
    if job.nproc > 1:
        if device.type != "cpu":
            raise UsageError("--nproc is for CPU processes; use --gpus N to spread over GPUs")
        return device, WorkerPlan(job.checkpoint, ("cpu",) * job.nproc)
    return device, None


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
        raise UsageError(f"--resolution {job.resolution!r}: use checkpoint, native or a pixel size") from None
    if value <= 0:
        raise UsageError(f"--resolution {value} must be positive")
    return value, None


def _specs(job: PredictJob, meta: CheckpointMeta, scene: Scene, paths: dict[str, Path]) -> dict[str, RasterSpec]:
    names = meta.class_names
    tags = {"CLASS_NAMES": json.dumps(names), "CHECKPOINT": Path(job.checkpoint).name, "SENSORS": ",".join(scene.names)}
    specs = {
        "classes": RasterSpec(
            paths["classes"], scene.grid, 1, CLASS_NODATA, ["class"],
            colormap={i: tuple(c.color) for i, c in enumerate(meta.classes)}, tags=tags,
        )
    }
    pct = {"scale": 0.01, "overview_resampling": "AVERAGE", "tags": {**tags, "UNITS": "percent"}}
    if "probabilities" in paths:
        specs["probabilities"] = RasterSpec(paths["probabilities"], scene.grid, len(names), PERCENT_NODATA, names, **pct)  # type: ignore[arg-type]
    if "confidence" in paths:
        specs["confidence"] = RasterSpec(paths["confidence"], scene.grid, 1, PERCENT_NODATA, ["confidence"], **pct)  # type: ignore[arg-type]
    if "robustness" in paths:
        specs["robustness"] = RasterSpec(
            paths["robustness"], scene.grid, len(scene.names), PERCENT_NODATA, [f"robustness_{n}" for n in scene.names], **pct  # type: ignore[arg-type]
        )
    return specs


def run_predict(job: PredictJob, progress: ProgressFn | None = None, on_scene: Callable[[Scene], None] | None = None) -> PredictResult:
    """Validate, predict the scene and write every output (all or nothing).

    Args:
        job: the request.
        progress: called after every batch.
        on_scene: called once the scene is opened (e.g. to print the grid), before compute.

    Raises:
        UsageError: bad option values.
        CheckpointError: unreadable checkpoint.
        RasterError: missing/unfit sensors, unwritable outputs.
        DeviceError: a device this machine lacks.
    """
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        return _run_predict(job, progress, on_scene)


def _run_predict(job: PredictJob, progress: ProgressFn | None, on_scene: Callable[[Scene], None] | None) -> PredictResult:
    start = time.perf_counter()
    _check_job(job)
    paths = output_paths(job)
    device, plan = _workers_for(job)
    if plan is None:
        model, meta = load_model(job.checkpoint, device)
    else:
        model, meta = None, load_checkpoint(job.checkpoint).meta
    bands = {m.name: m.bands for m in meta.modalities}
    files = find_sensor_files(job.scene_dir, meta.modality_names, job.files)
    res, res_crs = _resolution(job, meta)
    scene = open_scene(
        files, bands, modalities=job.modalities, resolution=res, resolution_crs=res_crs, extent=job.extent,
        source=job.scene_dir,
    )
    if on_scene is not None:
        on_scene(scene)
    specs = _specs(job, meta, scene, paths)
    K = len(meta.classes)
    counts = np.zeros(K + 1, np.int64)
    window = job.window or default_window(meta)
    windows = len(window_grid(scene.grid.height, scene.grid.width, window, job.overlap))
    with contextlib.ExitStack() as stack:
        writers = {k: stack.enter_context(BlockRasterWriter(s)) for k, s in specs.items()}
        blocks = predict_scene(
            model, meta, scene, window=window, overlap=job.overlap, batch_size=job.batch_size, device=device,
            precision=job.precision, probabilities="probabilities" in writers or "confidence" in writers,
            robustness="robustness" in writers, progress=progress, workers=plan,
        )
        for block in blocks:
            writers["classes"].write_rows(block.row, block.classes[None])
            counts += np.bincount(np.where(block.valid, block.classes, K).ravel(), minlength=K + 1)[: K + 1]
            if block.probabilities is not None:
                if "probabilities" in writers:
                    writers["probabilities"].write_rows(block.row, to_percent(block.probabilities, block.valid))
                if "confidence" in writers:
                    writers["confidence"].write_rows(block.row, to_percent(block.probabilities.max(0, keepdims=True), block.valid))
            if block.robustness is not None and "robustness" in writers:
                writers["robustness"].write_rows(block.row, to_percent(block.robustness, block.valid))
        finished = {k: w.finish() for k, w in writers.items()}
        polygons = None
        if job.vectorize is not None:
            polygons = vectorize_classes(finished["classes"], Path(job.vectorize), meta.class_names, min_area=job.min_area)
        for w in writers.values():
            w.publish()
    return PredictResult(
        outputs=paths,
        scene=scene,
        windows=windows,
        seconds=time.perf_counter() - start,
        class_pixels={n: int(counts[i]) for i, n in enumerate(meta.class_names)},
        nodata_pixels=int(counts[K]),
        polygons=polygons,
        notes=[*scene.notes, f"windows of {window} px, overlap {job.overlap:g}"],
    )
