"""Whole regions in chunks (``sgma predict --out DIR``): throughput and memory, in one run.

Two regions of 4x and 16x the area of one ``--size`` px scene (synthetic, as ``sgma
sample`` writes it: RGB 0.5 m, DSM 1 m, SAR in Web Mercator) are written twice: as
single files (``merged/``) and as tiled mosaics (``tiles/``: the RGB and the DSM cut into
COG tiles of ``--tile`` RGB px, their own tilings; the SAR stays one large scene). With a
small untrained SGMA (``--backbone``, CPU), each job runs in a fresh interpreter:

1. **throughput**: megapixels/s of the chunked region job on each mosaic against the
   one-piece job (``--out map.tif``) on the same pixels in single files, both with the
   default overlap and chunk. Goal: ratio >= 0.9. Also per CPU second of the job's
   process (user + system, all threads), which other jobs on a busy machine do not
   change. The two maps are compared pixel for pixel (the chunked map equals the
   one-piece map).
2. **memory**: peak RSS (``VmHWM``) of the region job's driver, which runs the chunks
   itself with the local executor, at 16x the area vs 4x. Goal: <= 1.15. The one-piece
   job's, for comparison.
3. **Ray** (``--ray``): the 4x region on a local Ray cluster with one worker
   (``RayExecutor("local", workers=1)``) against the local executor, wall time of the
   job including Ray's start. Goal: <= 1.1. The driver's and the worker's peak RSS are
   printed (the worker's read from ``/proc`` while it runs).

With the defaults (window 64, chunks of 512 px, rounded up to 528, a multiple of the
48 px window stride) the 4x region (512 px) is one chunk and the 16x region (1024 px)
2 x 2 chunks; each chunk border costs about one more column (row) of windows.

Usage: ``.venv/bin/python benchmarks/region_scaling.py [--size 256] [--tile 128]
[--window 64] [--chunk 512] [--backbone test_convnext] [--ray] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/tiled_region.py
sys.path.insert(0, str(Path(__file__).resolve().parent))  # predict_throughput.py

from predict_throughput import make_checkpoint, peak_rss_mib  # noqa: E402

from sgma_cli.data.synthetic import write_scene  # noqa: E402
from tests.tiled_region import write_tiles  # noqa: E402


def write_region(root: Path, side: int, tile: int) -> tuple[Path, dict[str, str]]:
    """The region as single files (``merged/``) and as tiles; returns (merged, sources)."""
    merged = root / "merged"
    write_scene(merged, size=side, vectors=False)
    parts = max(1, side // tile)
    write_tiles(merged / "rgb.tif", root / "tiles" / "rgb", "rgb", parts, set(), blocksize=256)
    write_tiles(merged / "dsm.tif", root / "tiles" / "dsm", "dsm", parts, set(), blocksize=256)
    sources = {
        "rgb": str(root / "tiles" / "rgb" / "*.tif"),
        "dsm": str(root / "tiles" / "dsm" / "*.tif"),
        "sar": str(merged / "sar.tif"),
    }
    return merged, sources


def _worker_rss(stop: threading.Event, seen: dict[str, float]) -> None:
    """Poll the peak RSS (VmHWM) of this process's Ray worker children until ``stop``."""
    me = os.getpid()
    while not stop.wait(0.2):
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            if "ray::" not in fields.get("Name", "") and "ray::" not in _cmdline(status.parent):
                continue
            if int(fields.get("PPid", "0")) == me or _has_ancestor(status.parent, me):
                hwm = int(fields.get("VmHWM", "0 kB").split()[0]) / 1024
                seen["worker"] = max(seen.get("worker", 0.0), hwm)


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
    except OSError:
        return ""


def _has_ancestor(proc: Path, pid: int) -> bool:
    for _ in range(6):
        try:
            fields = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines())
        except (OSError, ValueError):
            return False
        parent = int(fields.get("PPid", "0"))
        if parent == pid:
            return True
        if parent <= 1:
            return False
        proc = Path("/proc") / str(parent)
    return False


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads (robust to a busy machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(args: argparse.Namespace) -> None:
    """One job in this fresh interpreter; prints seconds, MPix and peak RSS as JSON."""
    from sgma_cli.engine.predict.job import PredictJob, run_predict
    from sgma_cli.engine.predict.region import RegionJob, run_region

    base = peak_rss_mib()  # after the imports
    common = {
        "checkpoint": Path(args.ckpt),
        "scene_dir": None,
        "out": Path(args.out),
        "window": args.window,
        "device": "cpu",
    }
    files = dict(pair.split("=", 1) for pair in args.modality)
    seen: dict[str, float] = {}
    stop = threading.Event()
    cpu = _cpu_seconds()
    start = time.perf_counter()
    if args.child == "one":
        result = run_predict(PredictJob(files=files, **common))  # type: ignore[arg-type]
        g = result.scene.grid
    else:
        executor = None
        if args.child == "ray":
            from sgma_cli.engine.predict.ray_executor import RayExecutor

            executor = RayExecutor("local", workers=1, cpus_per_worker=float(os.cpu_count() or 1))
            threading.Thread(target=_worker_rss, args=(stop, seen), daemon=True).start()
        job = RegionJob(files=files, chunk=args.chunk, **common)  # type: ignore[arg-type]
        result = run_region(job, executor=executor)
        g = result.scene.grid
        seen["chunks"] = result.chunks_total
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu
    stop.set()
    out = {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "mpix": g.width * g.height / 1e6,
        "rss_mib": peak_rss_mib(),
        "base_mib": base,
        "worker_rss_mib": seen.get("worker"),
        "chunks": seen.get("chunks", 1),
    }
    print(json.dumps(out))


def run_child(kind: str, ckpt: Path, files: dict[str, str], out: Path, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Run :func:`child` in a fresh interpreter; its JSON line as a dict."""
    cmd = [sys.executable, __file__, "--child", kind, "--ckpt", str(ckpt), "--out", str(out)]
    cmd += ["--window", str(args.window)]
    if args.chunk is not None:
        cmd += ["--chunk", str(args.chunk)]
    for name, where in files.items():
        cmd += ["--modality", f"{name}={where}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{kind} job failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _map(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="side of one scene in RGB px")
    parser.add_argument("--tile", type=int, default=128, help="mosaic tile side in RGB px")
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=512, help="chunk side in px")
    parser.add_argument("--backbone", default="test_convnext")
    parser.add_argument("--ray", action="store_true", help="also run on a local Ray cluster")
    parser.add_argument("--keep", type=Path, default=None, help="write everything here")
    parser.add_argument("--child", choices=("one", "region", "ray"), help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--modality", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        ckpt = make_checkpoint(root / "model.pt", args.backbone)
        regions = {}
        for factor in (4, 16):
            side = int(args.size * math.sqrt(factor))
            regions[factor] = write_region(root / f"x{factor}", side, args.tile)
        print(
            f"backbone {args.backbone}, window {args.window}, scene {args.size} px; regions of "
            f"4x and 16x its area as tiles of {args.tile} px (rgb, dsm) + one SAR scene "
            f"(written in {time.perf_counter() - start:.0f} s)"
        )
        runs: dict[str, dict[str, float]] = {}
        for factor in (4, 16):
            merged, tiles = regions[factor]
            singles = {n: str(merged / f"{n}.tif") for n in ("rgb", "dsm", "sar")}
            runs[f"one{factor}"] = run_child("one", ckpt, singles, root / f"one{factor}.tif", args)
            runs[f"r{factor}"] = run_child("region", ckpt, tiles, root / f"region{factor}", args)
        for factor in (4, 16):
            one, reg = runs[f"one{factor}"], runs[f"r{factor}"]
            equal = np.array_equal(
                _map(root / f"one{factor}.tif"), _map(root / f"region{factor}" / "map.vrt")
            )
            a, b = one["mpix"] / one["seconds"], reg["mpix"] / reg["seconds"]
            ca, cb = one["mpix"] / one["cpu_seconds"], reg["mpix"] / reg["cpu_seconds"]
            print(
                f"[throughput] {factor}x ({reg['mpix']:.2f} MPix, {reg['chunks']:.0f} chunks): "
                f"one-piece job on single files {a:.3f} MPix/s ({one['seconds']:.1f} s), chunked "
                f"job on the tiles {b:.3f} MPix/s ({reg['seconds']:.1f} s): ratio {b / a:.3f} "
                f"(goal >= 0.9); per CPU second {ca:.3f} vs {cb:.3f}: ratio {cb / ca:.3f}; "
                f"same map: {equal}"
            )
        r4, r16, o4, o16 = runs["r4"], runs["r16"], runs["one4"], runs["one16"]
        print(
            f"[memory] peak RSS of the chunked job's driver: {r4['rss_mib']:.0f} MiB at 4x vs "
            f"{r16['rss_mib']:.0f} MiB at 16x: ratio {r16['rss_mib'] / r4['rss_mib']:.3f} (goal "
            f"<= 1.15); one-piece job: {o4['rss_mib']:.0f} vs {o16['rss_mib']:.0f} MiB "
            f"({o16['rss_mib'] / o4['rss_mib']:.3f}); imports alone {r4['base_mib']:.0f} MiB"
        )
        if args.ray:
            r4 = runs["r4"]
            ray4 = run_child("ray", ckpt, regions[4][1], root / "ray4", args)
            same = np.array_equal(
                _map(root / "ray4" / "map.vrt"), _map(root / "region4" / "map.vrt")
            )
            worker = ray4.get("worker_rss_mib")
            print(
                f"[ray] 4x region, local Ray cluster, one worker: {ray4['seconds']:.1f} s vs "
                f"{r4['seconds']:.1f} s with the local executor: ratio "
                f"{ray4['seconds'] / r4['seconds']:.3f} (goal <= 1.1; Ray's start included); "
                f"same map: {same}; peak RSS driver {ray4['rss_mib']:.0f} MiB, worker "
                + (f"{worker:.0f} MiB" if worker else "not seen")
            )
        print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
