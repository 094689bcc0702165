"""What ``sgma predict`` costs on ONNX Runtime vs PyTorch eager vs ``torch.compile``, one run.

On the synthetic sample scene (``sgma sample``: RGB 0.5 m, DSM 1 m, SAR in Web Mercator)
with an untrained SGMA of the chosen backbone (M = 3 sensors, K = 6 classes), the same
sliding-window job (:func:`sgma_cli.engine.predict.job.predict_scene`: background reads,
forward, blending) runs with three runners:

* **eager**: the PyTorch model (``TorchRunner``), float32 on the CPU;
* **compiled**: the same model through ``torch.compile`` (inductor), float32;
* **onnx**: the file written by ``sgma export`` (static window size, all sensors) on
  ONNX Runtime's CPU execution provider (``GraphRunner``).

The runners take turns, ``--repeats`` rounds, so machine load hits all three alike; the
median seconds per run and the ratio to eager are printed. One-off costs are reported
apart: ``sgma export`` (trace + ONNX conversion), the session start, and the first
compiled call (inductor's compile). The agreement of the class maps with eager is printed
too.

Usage: ``.venv/bin/python benchmarks/export_runtime.py [--backbone pvt_v2_b0] [--size 512]
[--window 256] [--batch-size 2] [--repeats 3] [--threads N] [--no-compile] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sgma_cli.config.checkpoint import (  # noqa: E402
    Checkpoint,
    CheckpointMeta,
    ModalityNorm,
    save_checkpoint,
)
from sgma_cli.config.dataset import ClassSpec  # noqa: E402
from sgma_cli.config.model import ModalitySpec, SGMAConfig  # noqa: E402
from sgma_cli.data.palettes import POTSDAM  # noqa: E402
from sgma_cli.data.scene import Scene, find_sensor_files, open_scene  # noqa: E402
from sgma_cli.data.synthetic import write_scene  # noqa: E402
from sgma_cli.engine.export import ExportJob, run_export  # noqa: E402
from sgma_cli.engine.predict.inference import Runner, TorchRunner  # noqa: E402
from sgma_cli.engine.predict.job import predict_scene  # noqa: E402
from sgma_cli.engine.predict.runners import load_runner  # noqa: E402
from sgma_cli.engine.weights import build_model, load_model  # noqa: E402

STATS = {
    "rgb": ([120.0, 120.0, 110.0], [50.0, 50.0, 50.0]),
    "dsm": ([40.0], [5.0]),
    "sar": ([-12.0], [5.0]),
}


def make_checkpoint(path: Path, backbone: str, window: int) -> Path:
    """An untrained SGMA (rgb, dsm, sar; 6 Potsdam classes) saved as an sgma checkpoint."""
    torch.manual_seed(0)
    config = SGMAConfig(
        modalities=tuple(ModalitySpec(n, len(m)) for n, (m, _) in STATS.items()),
        num_classes=len(POTSDAM),
        backbone=backbone,
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
        tile_size=window,
    )
    return save_checkpoint(path, Checkpoint(meta=meta, model=build_model(config).state_dict()))


def run_once(
    runner: Runner, meta: CheckpointMeta, scene: Scene, args: argparse.Namespace
) -> tuple[float, np.ndarray]:
    """Seconds of one predict_scene pass and its class map."""
    start = time.perf_counter()
    blocks = list(
        predict_scene(
            runner, meta, scene, window=args.window, overlap=0.25, batch_size=args.batch_size
        )
    )
    return time.perf_counter() - start, np.concatenate([b.classes for b in blocks])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="pvt_v2_b0")
    parser.add_argument("--size", type=int, default=512, help="scene side in RGB pixels")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument(
        "--keep", type=Path, help="keep scene/, model.pt, model.onnx here; reuse them if there"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads; backbone {args.backbone}, scene "
        f"{args.size} px, window {args.window}, overlap 0.25, batch {args.batch_size}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        ckpt = root / "model.pt"
        if not (root / "model.onnx").exists():  # --keep with files of an earlier run: reuse them
            write_scene(root / "scene", size=args.size, vectors=False)
            make_checkpoint(ckpt, args.backbone, args.window)
            start = time.perf_counter()
            exported = run_export(ExportJob(ckpt, root / "model.onnx", size=args.window))
            print(
                f"sgma export (trace + ONNX): {time.perf_counter() - start:.1f} s, "
                f"{exported.size_bytes / 1e6:.1f} MB, max |logit diff| "
                f"{exported.max_abs_diff:.1e}",
                flush=True,
            )
        model, meta = load_model(ckpt, "cpu")
        files = find_sensor_files(root / "scene", meta.modality_names)
        bands = {m.name: m.bands for m in meta.modalities}
        scene = open_scene(files, bands, resolution=0.5, resolution_crs=meta.crs)
        start = time.perf_counter()
        onnx = load_runner(root / "model.onnx", torch.device("cpu"), graph=True)
        print(f"ONNX Runtime session: {time.perf_counter() - start:.1f} s", flush=True)
        runners: dict[str, Runner] = {
            "eager": TorchRunner(model, torch.device("cpu"), "fp32"),
            "onnx": onnx.runner,  # type: ignore[dict-item]
        }
        if not args.no_compile:
            compiled = torch.compile(model)
            runners["compiled"] = TorchRunner(compiled, torch.device("cpu"), "fp32")  # type: ignore[arg-type]
            start = time.perf_counter()
            run_once(runners["compiled"], meta, scene, args)  # compiles on the first batches
            first = time.perf_counter() - start
            print(f"torch.compile, first pass (compile + run): {first:.1f} s", flush=True)
        seconds: dict[str, list[float]] = {k: [] for k in runners}
        maps: dict[str, np.ndarray] = {}
        for _ in range(args.repeats):
            for name, runner in runners.items():
                s, classes = run_once(runner, meta, scene, args)
                seconds[name].append(s)
                maps[name] = classes
        mpix = scene.grid.width * scene.grid.height / 1e6
        eager = statistics.median(seconds["eager"])
        print(f"\nscene {mpix:.2f} MPix; median of {args.repeats} interleaved runs")
        print(f"{'runner':<10}{'seconds':>9}{'MPix/s':>9}{'vs eager':>10}{'same class':>12}")
        for name, values in seconds.items():
            med = statistics.median(values)
            same = float((maps[name] == maps["eager"]).mean())
            print(f"{name:<10}{med:>9.2f}{mpix / med:>9.3f}{eager / med:>9.2f}x{same:>11.4%}")


if __name__ == "__main__":
    main()
