"""What ``sgma predict`` costs around the model: part by part, throughput, memory and overlap.

On the synthetic sample scene (``sgma sample``: RGB 0.5 m, DSM 1 m, SAR in Web Mercator,
so two of three sensors are warped on the fly) with a small SGMA model (M = 3, K = 6):

1. **parts**: the job's cost part by part, each timed alone on the windows of the scene
   (overlap 0): setup (checkpoint, scene header), reading per sensor (GDAL reads, direct
   or through a ``WarpedVRT``, with masks), normalising into the batch, the model
   (forward + softmax), blending (``RowAccumulator``), writing (row blocks, then the COG),
   as ms per window and as shares of the whole job. The sum of the parts is larger than
   the job by what the background reader overlaps with the model.
2. **warping**: reading the same pixel-aligned raster directly vs through a forced
   ``WarpedVRT`` (the RGB of the scene, and a crop of it offset by whole pixels, which
   ``AlignedReader`` also reads directly).
3. **overlap of reads and compute**: the read loop (read + normalise + batch) per batch
   alone, and in a thread or a process while the model computes in the main thread; the
   model per batch alone and with the reader beside it. A reader thread that slows down
   more than a reader process, or slows the model more, is the GIL showing.
4. **throughput**: megapixels/s of the whole predict job (``run_predict``) vs the bare
   ``model(images, mask)`` forward on the same windows already in memory, both with
   overlap 0. Goal: ratio >= 0.9 (pvt_v2_b0).
5. **memory**: peak RSS of the job on a scene and on one of 4x the area, each in a fresh
   subprocess (``VmHWM``; ``ru_maxrss`` where /proc is missing, see :func:`peak_rss_mib`).
   Goal: larger / smaller <= 1.15.
6. **overlap**: wall time of the default overlap (0.25) relative to overlap 0.

Every figure is a median of ``--repeats`` interleaved runs (the machine may be shared: the
load average is printed at the start and the end).

Usage: ``.venv/bin/python benchmarks/predict_throughput.py [--backbone test_convnext]
[--size 2048] [--rss-size 1024] [--window 256] [--batch-size 8] [--repeats 3]
[--no-memory]``
"""

from __future__ import annotations

import argparse
import inspect
import json
import multiprocessing as mp
import os
import queue
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sgma_cli.config.checkpoint import (
    Checkpoint,
    CheckpointMeta,
    ModalityNorm,
    load_checkpoint,
    save_checkpoint,
)
from sgma_cli.config.dataset import ClassSpec
from sgma_cli.config.model import ModalitySpec, SGMAConfig
from sgma_cli.data.align import AlignedReader
from sgma_cli.data.normalize import normalize
from sgma_cli.data.palettes import POTSDAM
from sgma_cli.data.raster import inspect_raster
from sgma_cli.data.scene import Scene, find_sensor_files, open_scene
from sgma_cli.data.synthetic import write_scene
from sgma_cli.data.window_grid import WindowSpec, window_grid
from sgma_cli.data.writers import CLASS_NODATA, BlockRasterWriter, RasterSpec
from sgma_cli.engine.predict.inference import (
    GDAL_CACHE_MB,
    TorchRunner,
    WindowBatch,
    assemble,
    batches_of,
    read_batches,
)
from sgma_cli.engine.predict.job import PredictJob, run_predict
from sgma_cli.engine.speed import compile_model, use_encode_strategy
from sgma_cli.engine.weights import build_model, load_model

STATS = {
    "rgb": ([120.0, 120.0, 110.0], [50.0, 50.0, 50.0]),
    "dsm": ([40.0], [5.0]),
    "sar": ([-12.0], [5.0]),
}


def make_checkpoint(path: Path, backbone: str) -> Path:
    """An untrained SGMA (rgb, dsm, sar; 6 Potsdam classes) saved as an sgma checkpoint."""
    torch.manual_seed(0)
    config = SGMAConfig(
        modalities=(ModalitySpec("rgb", 3), ModalitySpec("dsm", 1), ModalitySpec("sar", 1)),
        num_classes=len(POTSDAM),
        backbone=backbone,
        head_dim=64,
    )
    meta = CheckpointMeta(
        model=config.to_dict(),
        classes=[ClassSpec(name=n, color=c) for n, c in POTSDAM],
        modalities=[
            ModalityNorm(name=n, bands=len(m), mean=m, std=s, optical=n == "rgb")
            for n, (m, s) in STATS.items()
        ],
        crs="EPSG:32633",
        resolution=(0.5, 0.5),
        tile_size=256,
    )
    return save_checkpoint(path, Checkpoint(meta=meta, model=build_model(config).state_dict()))


def job(
    ckpt: Path,
    scene: Path,
    out: Path,
    window: int,
    overlap: float,
    batch: int,
    compiled: bool = False,
) -> PredictJob:
    """The predict job benchmarked (all three sensors, CPU)."""
    return PredictJob(
        ckpt,
        scene,
        out,
        window=window,
        overlap=overlap,
        batch_size=batch,
        device="cpu",
        compile=compiled,
    )


def open_bench_scene(ckpt: Path, scene_dir: Path) -> tuple[torch.nn.Module, CheckpointMeta, Scene]:
    """The model, its metadata and the scene on the job's grid (the checkpoint's 0.5 m)."""
    model, meta = load_model(ckpt, "cpu")
    use_encode_strategy(model, torch.device("cpu"))  # the backbone fed as the job feeds it
    files = find_sensor_files(scene_dir, meta.modality_names)
    scene = open_scene(
        files, {m.name: m.bands for m in meta.modalities}, resolution=0.5, resolution_crs=meta.crs
    )
    return model, meta, scene


def bare_forward(
    ckpt: Path, scene_dir: Path, window: int, batch: int, compiled: bool = False
) -> tuple[float, float]:
    """Seconds of ``model(images, mask)`` over the scene's windows held in memory; scene MPix."""
    model, meta, scene = open_bench_scene(ckpt, scene_dir)
    if compiled:
        compile_model(model)  # type: ignore[arg-type]
    windows = window_grid(scene.grid.height, scene.grid.width, window, 0.0)
    batches = [
        ({n: torch.from_numpy(a) for n, a in b.images.items()}, torch.from_numpy(b.mask))
        for b in read_batches(scene, meta, batches_of(windows, batch))
    ]
    with torch.inference_mode():
        model(*batches[0])  # warm-up
        start = time.perf_counter()
        for images, mask in batches:
            model(images, mask)
        seconds = time.perf_counter() - start
    return seconds, scene.grid.width * scene.grid.height / 1e6


def timed_job(
    ckpt: Path,
    scene: Path,
    out: Path,
    window: int,
    overlap: float,
    batch: int,
    compiled: bool = False,
) -> tuple[float, float]:
    """Seconds of the whole job and the scene MPix."""
    start = time.perf_counter()
    result = run_predict(job(ckpt, scene, out, window, overlap, batch, compiled))
    seconds = time.perf_counter() - start
    g = result.scene.grid
    return seconds, g.width * g.height / 1e6


# ------------------------------------------------------------------------ part by part


def _clock(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def _reader(info: Any, grid: Any, warp: bool) -> AlignedReader:
    """An AlignedReader, forced through a WarpedVRT when ``warp`` (None if that is unknown)."""
    if warp:
        return AlignedReader(info, grid, "bilinear", force_warp=True)
    return AlignedReader(info, grid, "bilinear")


def _direct(reader: AlignedReader) -> bool:
    return bool(getattr(reader, "direct", getattr(reader, "_direct", False)))


def normalise_batches(
    meta: CheckpointMeta,
    scene: Scene,
    batches: Sequence[Sequence[WindowSpec]],
    reads: dict[int, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]],
) -> list[WindowBatch]:
    """Normalise windows already read into batches, as ``read_batches`` does after its reads."""
    norms = {m.name: m for m in meta.modalities}
    names = meta.modality_names
    fill = _batch_filler()
    out = []
    for batch in batches:
        size = batch[0].size
        images = {
            n: np.empty((len(batch), norms[n].bands, size, size), np.float32) for n in scene.names
        }
        mask = np.zeros((len(batch), len(names), size, size), bool)
        for b, w in enumerate(batch):
            arrays, valid = reads[w.index]
            for n in scene.names:
                fill(images[n][b], arrays[n], norms[n], valid[n])
                mask[b, names.index(n)] = valid[n]
        out.append(WindowBatch(list(batch), images, mask))
    return out


def _batch_filler() -> Callable[[np.ndarray, np.ndarray, ModalityNorm, np.ndarray], None]:
    """How ``read_batches`` writes one normalised window into its batch slot."""
    if "out" in inspect.signature(normalize).parameters:

        def into(out: np.ndarray, image: np.ndarray, norm: ModalityNorm, valid: np.ndarray) -> None:
            normalize(image, norm.mean, norm.std, valid, out=out)

        return into

    def copy(out: np.ndarray, image: np.ndarray, norm: ModalityNorm, valid: np.ndarray) -> None:
        out[...] = normalize(image, norm.mean, norm.std, valid)  # before normalize(out=)

    return copy


def part_costs(
    ckpt: Path, scene_dir: Path, out: Path, window: int, batch: int
) -> tuple[dict[str, float], int]:
    """Seconds of every part of the job on the scene's windows (overlap 0), and the windows."""
    parts: dict[str, float] = {}
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        parts["setup: checkpoint, model"], (model, meta) = _clock(lambda: load_model(ckpt, "cpu"))
        parts["setup: scene (headers, grid)"], scene = _clock(
            lambda: open_scene(
                find_sensor_files(scene_dir, meta.modality_names),
                {m.name: m.bands for m in meta.modalities},
                resolution=0.5,
                resolution_crs=meta.crs,
            )
        )
        grid = scene.grid
        windows = window_grid(grid.height, grid.width, window, 0.0)
        groups = batches_of(windows, batch)
        reads: dict[int, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = {
            w.index: ({}, {}) for w in windows
        }
        with scene.reader() as reader:
            for sensor in scene.sensors:
                start = time.perf_counter()
                for w in windows:
                    data, ok = reader.read_sensor(sensor, w.row, w.col, w.size, w.size)
                    reads[w.index][0][sensor.name], reads[w.index][1][sensor.name] = data, ok
                seconds = time.perf_counter() - start
                how = "direct" if _direct(reader._readers[sensor.name]) else "WarpedVRT"
                parts[f"read {sensor.name} ({how})"] = seconds
        parts["normalise + batch"], inputs = _clock(
            lambda: normalise_batches(meta, scene, groups, reads)
        )
        runner = TorchRunner(model, torch.device("cpu"))
        runner(inputs[0], [])  # warm-up
        parts["model (forward + softmax)"], results = _clock(
            lambda: [(b.windows, *runner(b, [])) for b in inputs]
        )
        K = len(meta.classes)
        parts["blend (RowAccumulator)"], blocks = _clock(
            lambda: list(assemble(iter(results), scene, windows, K, K))
        )
        spec = RasterSpec(out, grid, 1, CLASS_NODATA, ["class"])
        with BlockRasterWriter(spec) as writer:  # never published: its temp files go
            start = time.perf_counter()
            for block in blocks:
                writer.write_rows(block.row, block.classes[None])
            parts["write rows (GeoTIFF)"] = time.perf_counter() - start
            parts["write COG (finish)"], _ = _clock(writer.finish)
    return parts, len(windows)


def warp_costs(scene_dir: Path, root: Path, window: int) -> dict[str, float]:
    """Seconds per window reading a pixel-aligned raster directly vs through a WarpedVRT."""
    rgb = scene_dir / "rgb.tif"
    crop = root / "rgb_offset.tif"
    if not crop.exists():  # the RGB without its first 100 rows and 60 columns: whole pixels off
        with rasterio.open(rgb) as src:
            profile = src.profile
            data = src.read(window=Window(60, 100, src.width - 60, src.height - 100))
            transform = src.window_transform(Window(60, 100, src.width - 60, src.height - 100))
        profile.update(width=data.shape[2], height=data.shape[1], transform=transform)
        with rasterio.open(crop, "w", **profile) as dst:
            dst.write(data)
    info = inspect_raster(rgb)
    grid = info.grid
    windows = window_grid(grid.height, grid.width, window, 0.0)
    costs: dict[str, float] = {}
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        for label, path in (("rgb, same grid", rgb), ("rgb crop, offset 100/60 px", crop)):
            for warp in (False, True):
                try:
                    reader = _reader(inspect_raster(path), grid, warp)
                except TypeError:  # no force_warp in this version of AlignedReader
                    continue
                with reader:
                    how = "direct" if _direct(reader) else "WarpedVRT"
                    key = f"{label}: {how}"
                    if key in costs:
                        continue
                    start = time.perf_counter()
                    for w in windows:
                        reader.read(Window(w.col, w.row, w.size, w.size))
                    costs[key] = (time.perf_counter() - start) / len(windows)
    return costs


# ------------------------------------------------- reads beside compute: thread vs process


def _read_loop(
    ckpt: str, scene_dir: str, window: int, batch: int, passes: int, ready: Any, go: Any, out: Any
) -> None:
    """Read + normalise every batch ``passes`` times; put the per-batch seconds on ``out``."""
    meta = load_checkpoint(Path(ckpt)).meta
    files = find_sensor_files(Path(scene_dir), meta.modality_names)
    scene = open_scene(
        files, {m.name: m.bands for m in meta.modalities}, resolution=0.5, resolution_crs=meta.crs
    )
    groups = batches_of(window_grid(scene.grid.height, scene.grid.width, window, 0.0), batch)
    ready.set()
    go.wait()
    times, cpu = [], time.thread_time()
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        for _ in range(passes):
            start = time.perf_counter()
            for _b in read_batches(scene, meta, groups):
                times.append(time.perf_counter() - start)
                start = time.perf_counter()
    out.put((times, time.thread_time() - cpu))


def overlap_costs(
    ckpt: Path, scene_dir: Path, window: int, batch: int, passes: int
) -> dict[str, tuple[float, float, float]]:
    """Median seconds per batch ``(read loop wall, read loop CPU, model)``, alone and side
    by side with the reader in a thread or in a (spawned) process."""
    model, meta, scene = open_bench_scene(ckpt, scene_dir)
    groups = batches_of(window_grid(scene.grid.height, scene.grid.width, window, 0.0), batch)
    inputs = list(read_batches(scene, meta, groups))
    runner = TorchRunner(model, torch.device("cpu"))
    runner(inputs[0], [])  # warm-up

    def model_until(done: Callable[[], bool]) -> list[float]:
        times = []
        while not done() or not times:
            for b in inputs:
                start = time.perf_counter()
                runner(b, [])
                times.append(time.perf_counter() - start)
                if done():
                    break
        return times

    def reader_in(kind: str) -> tuple[list[float], float, list[float]]:
        ctx = mp.get_context("spawn")
        make = (
            (threading.Event, threading.Event, queue.Queue)
            if kind == "thread"
            else (ctx.Event, ctx.Event, ctx.Queue)
        )
        ready, go, out = make[0](), make[1](), make[2]()
        args = (str(ckpt), str(scene_dir), window, batch, passes, ready, go, out)
        worker: Any = (
            threading.Thread(target=_read_loop, args=args, daemon=True)
            if kind == "thread"
            else ctx.Process(target=_read_loop, args=args, daemon=True)
        )
        worker.start()
        ready.wait()
        result: list[Any] = []
        go.set()
        collector = threading.Thread(target=lambda: result.append(out.get()), daemon=True)
        collector.start()
        model_times = model_until(lambda: bool(result))
        collector.join()
        worker.join()
        times, cpu = result[0]
        return times, cpu, model_times

    alone_model = []
    for b in inputs:
        start = time.perf_counter()
        runner(b, [])
        alone_model.append(time.perf_counter() - start)
    alone_out: queue.Queue[Any] = queue.Queue()
    go = threading.Event()
    go.set()
    _read_loop(str(ckpt), str(scene_dir), window, batch, passes, threading.Event(), go, alone_out)
    read_t, cpu = alone_out.get()
    costs = {
        "alone": (
            statistics.median(read_t),
            cpu / len(read_t),
            statistics.median(alone_model),
        )
    }
    for kind in ("thread", "process"):
        read_t, cpu, model_t = reader_in(kind)
        costs[f"reader {kind} + model"] = (
            statistics.median(read_t),
            cpu / len(read_t),
            statistics.median(model_t),
        )
    return costs


# -------------------------------------------------------------------------- peak memory


def peak_rss_mib() -> float:
    """Peak resident set of this process in MiB.

    Linux keeps ``ru_maxrss`` across ``fork`` + ``exec`` (the parent's high-water mark at
    fork time leaks into the child), so ``VmHWM`` of ``/proc/self/status`` (the peak of
    this program's own address space) is read where it exists; ``ru_maxrss`` elsewhere.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    """Subprocess body for the RSS measurement: one job, then print peak RSS (MiB) as JSON."""
    base = peak_rss_mib()  # after imports (torch, GDAL)
    seconds, mpix = timed_job(
        Path(args.ckpt), Path(args.scene), Path(args.out), args.window, 0.25, args.batch_size
    )
    rss = peak_rss_mib()
    print(json.dumps({"rss_mib": rss, "base_mib": base, "seconds": seconds, "mpix": mpix}))


def rss_of(ckpt: Path, scene: Path, out: Path, args: argparse.Namespace) -> dict[str, float]:
    """Run :func:`child` in a fresh interpreter."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--ckpt",
        str(ckpt),
        "--scene",
        str(scene),
        "--out",
        str(out),
        "--window",
        str(args.window),
        "--batch-size",
        str(args.batch_size),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ report


def _median_parts(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def print_parts(parts: dict[str, float], windows: int, job_s: float) -> None:
    """The part-by-part table: ms per window and share of the job's wall time."""
    print(f"[parts] {windows} windows, overlap 0; each part timed alone (medians)")
    print(f"  {'part':<34} {'ms/window':>10} {'share of job':>13}")
    for name, seconds in [*parts.items(), ("sum of the parts", sum(parts.values()))]:
        print(f"  {name:<34} {1e3 * seconds / windows:>10.1f} {100 * seconds / job_s:>12.1f}%")
    print(f"  {'job (run_predict)':<34} {1e3 * job_s / windows:>10.1f} {100.0:>12.1f}%")


def compiled_ratio(
    ckpt: Path, scene: Path, root: Path, args: argparse.Namespace, mpix: float
) -> None:
    """Job / bare forward with ``--compile``: a first job fills the kernel cache, then medians."""
    first = timed_job(ckpt, scene, root / "w.tif", args.window, 0.0, args.batch_size, True)[0]
    bare, jobs = [], []
    for _ in range(args.repeats):
        bare.append(bare_forward(ckpt, scene, args.window, args.batch_size, compiled=True)[0])
        jobs.append(
            timed_job(ckpt, scene, root / "c.tif", args.window, 0.0, args.batch_size, True)[0]
        )
    bare_s, job_s = statistics.median(bare), statistics.median(jobs)
    print(
        f"[compiled] bare forward {mpix / bare_s:.3f} MPix/s ({bare_s:.2f} s), predict job "
        f"--compile {mpix / job_s:.3f} MPix/s ({job_s:.2f} s, kernels cached; the first job "
        f"took {first:.1f} s): ratio {bare_s / job_s:.3f} (medians of {args.repeats})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="test_convnext")
    parser.add_argument(
        "--size", type=int, default=2048, help="RGB side of the throughput scene in pixels"
    )
    parser.add_argument(
        "--rss-size", type=int, default=1024, help="RGB side of the smaller memory scene"
    )
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak RSS runs")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also the job and the bare forward compiled (kernels cached by a first run)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", help=argparse.SUPPRESS)
    parser.add_argument("--scene", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = make_checkpoint(root / "model.pt", args.backbone)
        scene = root / "scene"
        write_scene(scene, size=args.size, vectors=False)
        print(
            f"backbone {args.backbone}, window {args.window}, batch {args.batch_size}, "
            f"torch threads {torch.get_num_threads()}, scene {args.size}x{args.size} px (rgb, "
            f"dsm, sar); load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
        )

        bare, jobs, overs, parts, warps = [], [], [], [], []
        for _ in range(args.repeats):  # interleaved, medians: robust to load on a shared machine
            bare_s, mpix = bare_forward(ckpt, scene, args.window, args.batch_size)
            bare.append(bare_s)
            jobs.append(
                timed_job(ckpt, scene, root / "a.tif", args.window, 0.0, args.batch_size)[0]
            )
            overs.append(
                timed_job(ckpt, scene, root / "b.tif", args.window, 0.25, args.batch_size)[0]
            )
            part, windows = part_costs(ckpt, scene, root / "p.tif", args.window, args.batch_size)
            parts.append(part)
            warps.append(warp_costs(scene, root, args.window))
        bare_s, job_s, over_s = (
            statistics.median(bare),
            statistics.median(jobs),
            statistics.median(overs),
        )
        print_parts(_median_parts(parts), windows, job_s)

        print("[warping] the same pixel-aligned raster, ms per window (medians)")
        for name, seconds in _median_parts(warps).items():
            print(f"  {name:<42} {1e3 * seconds:>8.1f}")

        passes = max(2, 48 // windows)
        over = overlap_costs(ckpt, scene, args.window, args.batch_size, passes)
        print(
            f"[reads beside compute] ms per batch of {args.batch_size}, medians ({passes} passes "
            f"of the read loop; torch threads {torch.get_num_threads()}; load average "
            f"{os.getloadavg()[0]:.2f})"
        )
        print(f"  {'':<24} {'read wall':>10} {'read CPU':>10} {'model':>10}")
        for name, (read_t, cpu, model_t) in over.items():
            print(f"  {name:<24} {1e3 * read_t:>10.1f} {1e3 * cpu:>10.1f} {1e3 * model_t:>10.1f}")

        bare_rate, job_rate = mpix / bare_s, mpix / job_s
        print(
            f"[throughput] bare forward {bare_rate:.3f} MPix/s ({bare_s:.2f} s), predict job "
            f"{job_rate:.3f} MPix/s "
            f"({job_s:.2f} s): ratio {job_rate / bare_rate:.3f} (goal >= 0.9; medians of "
            f"{args.repeats})"
        )

        if args.compile:
            compiled_ratio(ckpt, scene, root, args, mpix)

        print(
            f"[overlap] 0.25 vs 0: {over_s:.2f} s vs {job_s:.2f} s = {over_s / job_s:.2f}x "
            f"(windows {len(window_grid(args.size, args.size, args.window, 0.25))} vs "
            f"{len(window_grid(args.size, args.size, args.window, 0.0))})"
        )

        if not args.no_memory:
            small, large = root / "small", root / "large"
            write_scene(small, size=args.rss_size, vectors=False)
            write_scene(large, size=2 * args.rss_size, vectors=False)
            a = rss_of(ckpt, small, root / "c.tif", args)
            b = rss_of(ckpt, large, root / "d.tif", args)
            print(
                f"[memory] peak RSS {a['rss_mib']:.0f} MiB ({a['mpix']:.2f} MPix) vs "
                f"{b['rss_mib']:.0f} MiB "
                f"({b['mpix']:.2f} MPix, 4x area): ratio {b['rss_mib'] / a['rss_mib']:.3f} (goal "
                f"<= 1.15); above the {a['base_mib']:.0f} MiB of imports: "
                f"{a['rss_mib'] - a['base_mib']:.0f} vs {b['rss_mib'] - b['base_mib']:.0f} MiB"
            )
        print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
