"""What ``sgma predict`` costs around the model: throughput, memory and overlap, in one run.

On the synthetic sample scene (``sgma sample``: RGB 0.5 m, DSM 1 m, SAR in Web Mercator,
so two of three sensors are warped on the fly) with a small SGMA model (M = 3, K = 6):

1. **throughput**: megapixels/s of the whole predict job (``run_predict``: windowed,
   warped reads + normalisation in a background thread, forward, softmax, blending,
   COG writing) vs the bare ``model(images, mask)`` forward on the same windows already
   in memory, both with overlap 0. Goal: ratio >= 0.85.
2. **memory**: peak RSS of the job on a scene and on one of 4x the area, each in a fresh
   subprocess (``VmHWM``; ``ru_maxrss`` where /proc is missing, see :func:`peak_rss_mib`).
   Goal: larger / smaller <= 1.15.
3. **overlap**: wall time of the default overlap (0.25) relative to overlap 0.

Usage: ``.venv/bin/python benchmarks/predict_throughput.py [--backbone test_convnext]
[--size 2048] [--rss-size 1024] [--window 256] [--batch-size 8] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sgma_cli.config.checkpoint import Checkpoint, CheckpointMeta, ModalityNorm, save_checkpoint  # noqa: E402
from sgma_cli.config.dataset import ClassSpec  # noqa: E402
from sgma_cli.config.model import ModalitySpec, SGMAConfig  # noqa: E402
from sgma_cli.data.palettes import POTSDAM  # noqa: E402
from sgma_cli.data.scene import find_sensor_files, open_scene  # noqa: E402
from sgma_cli.data.synthetic import write_scene  # noqa: E402
from sgma_cli.data.window_grid import window_grid  # noqa: E402
from sgma_cli.engine.predict.inference import batches_of, read_batches  # noqa: E402
from sgma_cli.engine.predict.job import PredictJob, run_predict
from sgma_cli.engine.weights import (
    build_model,  # noqa: E402
    load_model,  # noqa: E402
)

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


def job(ckpt: Path, scene: Path, out: Path, window: int, overlap: float, batch: int) -> PredictJob:
    """The predict job benchmarked (all three sensors, CPU)."""
    return PredictJob(
        ckpt, scene, out, window=window, overlap=overlap, batch_size=batch, device="cpu"
    )


def bare_forward(ckpt: Path, scene_dir: Path, window: int, batch: int) -> tuple[float, float]:
    """Seconds of ``model(images, mask)`` over the scene's windows held in memory; scene MPix."""
    model, meta = load_model(ckpt, "cpu")
    files = find_sensor_files(scene_dir, meta.modality_names)
    scene = open_scene(
        files, {m.name: m.bands for m in meta.modalities}, resolution=0.5, resolution_crs=meta.crs
    )
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
    ckpt: Path, scene: Path, out: Path, window: int, overlap: float, batch: int
) -> tuple[float, float]:
    """Seconds of the whole job and the scene MPix."""
    start = time.perf_counter()
    result = run_predict(job(ckpt, scene, out, window, overlap, batch))
    seconds = time.perf_counter() - start
    g = result.scene.grid
    return seconds, g.width * g.height / 1e6


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
        scene, small, large = root / "scene", root / "small", root / "large"
        write_scene(scene, size=args.size, vectors=False)
        write_scene(small, size=args.rss_size, vectors=False)
        write_scene(large, size=2 * args.rss_size, vectors=False)
        print(
            f"backbone {args.backbone}, window {args.window}, batch {args.batch_size}, "
            f"torch threads {torch.get_num_threads()}, scene {args.size}x{args.size} px (rgb, "
            f"dsm, sar)"
        )

        bare, jobs, overs = [], [], []
        for _ in range(args.repeats):  # interleaved, medians: robust to load on a shared machine
            bare_s, mpix = bare_forward(ckpt, scene, args.window, args.batch_size)
            bare.append(bare_s)
            jobs.append(
                timed_job(ckpt, scene, root / "a.tif", args.window, 0.0, args.batch_size)[0]
            )
            overs.append(
                timed_job(ckpt, scene, root / "b.tif", args.window, 0.25, args.batch_size)[0]
            )
        bare_s, job_s, over_s = (
            statistics.median(bare),
            statistics.median(jobs),
            statistics.median(overs),
        )
        bare_rate, job_rate = mpix / bare_s, mpix / job_s
        print(
            f"[throughput] bare forward {bare_rate:.3f} MPix/s ({bare_s:.2f} s), predict job "
            f"{job_rate:.3f} MPix/s "
            f"({job_s:.2f} s): ratio {job_rate / bare_rate:.3f} (goal >= 0.85; medians of "
            f"{args.repeats})"
        )

        print(
            f"[overlap] 0.25 vs 0: {over_s:.2f} s vs {job_s:.2f} s = {over_s / job_s:.2f}x "
            f"(windows {len(window_grid(args.size, args.size, args.window, 0.25))} vs "
            f"{len(window_grid(args.size, args.size, args.window, 0.0))})"
        )

        a = rss_of(ckpt, small, root / "c.tif", args)
        b = rss_of(ckpt, large, root / "d.tif", args)
        print(
            f"[memory] peak RSS {a['rss_mib']:.0f} MiB ({a['mpix']:.2f} MPix) vs "
            f"{b['rss_mib']:.0f} MiB "
            f"({b['mpix']:.2f} MPix, 4x area): ratio {b['rss_mib'] / a['rss_mib']:.3f} (goal "
            f"<= 1.15); "
            f"above the {a['base_mib']:.0f} MiB of imports: {a['rss_mib'] - a['base_mib']:.0f} vs "
            f"{b['rss_mib'] - b['base_mib']:.0f} MiB"
        )


if __name__ == "__main__":
    main()
