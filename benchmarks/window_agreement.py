"""Window-size agreement: does a prediction depend on the window it was made in?

``sgma predict`` cuts a scene into overlapping windows and blends them. A model whose
output at a pixel depends only on its neighbourhood gives (almost) the same map whatever
the window; SGMA's prototypes (paper Eq. 3) pool over the whole window, so with the
literal ``"sum"`` they grow with the window's area and the map can change with it.

For each checkpoint this predicts the whole sample scene once in a single window (the
reference), then tiled with windows of 0.5x, 1x and 2x the checkpoint's training tile
(overlap 0.25, the predict default), and prints the share of seen pixels whose class
agrees with the single window, for all sensors and, with ``--subsets``, for every sensor
subset. Checkpoints with the same ``model.prototypes`` are averaged. ``--local-baseline``
also trains the ``mean`` fusion baseline without MAS (no MP, no prototypes): the reference
of a purely local model.

Run::

    # train one SGMA per weighting on the sample scene (3 short trainings), then measure
    .venv/bin/python benchmarks/window_agreement.py
    # measure checkpoints kept by the robustness benchmark
    .venv/bin/python benchmarks/robustness.py --prototypes sum mean softmax --keep /tmp/rb
    .venv/bin/python benchmarks/window_agreement.py --runs /tmp/rb --scene /tmp/rb/scene
    # the figures of docs/train.md: 60 steps, the local baseline, MP without spatial extent
    .venv/bin/python benchmarks/window_agreement.py --prototypes --local-baseline \
        --set schedule.epochs=10 --set schedule.warmup_epochs=1
    .venv/bin/python benchmarks/window_agreement.py --prototypes sum --set "model.mp_kernels=[1]" \
        --set schedule.epochs=10 --set schedule.warmup_epochs=1
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sgma_cli.config.checkpoint import CheckpointMeta  # noqa: E402
from sgma_cli.config.recipe import load_recipe  # noqa: E402
from sgma_cli.data.scene import find_sensor_files, open_scene  # noqa: E402
from sgma_cli.engine.predict.job import predict_scene  # noqa: E402
from sgma_cli.engine.prepare import PrepareOptions, prepare  # noqa: E402
from sgma_cli.engine.sample_scene import sample  # noqa: E402
from sgma_cli.engine.train import TrainOptions, train  # noqa: E402
from sgma_cli.engine.weights import load_model  # noqa: E402
from sgma_cli.model.sgma import SGMA  # noqa: E402

FACTORS = (0.5, 1.0, 2.0)
MULTIPLE = 32


def _round(pixels: float) -> int:
    """Nearest multiple of 32 (at least 32): model input sizes must be multiples of 32."""
    return max(MULTIPLE, int(round(pixels / MULTIPLE)) * MULTIPLE)


#: The purely local reference: the ``mean`` fusion baseline without MAS (no prototypes).
LOCAL_BASELINE = ["model.fusion='mean'", "train.mas=false"]


def _train_checkpoints(
    work: Path, scene: Path, variants: dict[str, list[str]], seed: int, extra: list[str]
) -> list[Path]:
    """One model per variant (recipe overrides) with recipes/sample.toml, same budget."""
    data = work / "data"
    if not (data / "dataset.toml").exists():
        prepare(PrepareOptions(src=scene, out=data, tile=128, stride=128))
    out = []
    for name, switches in variants.items():
        recipe = load_recipe(
            ROOT / "recipes" / "sample.toml",
            [*switches, f"train.seed={seed}", "train.val_every=0", *extra],
        )
        start = time.perf_counter()
        run_dir = work / f"{name}-{seed}".replace("=", "_")
        result = train(recipe, TrainOptions(data_dir=data, run_dir=run_dir, device="cpu"))
        print(f"  trained {name}: {time.perf_counter() - start:.0f} s", flush=True)
        out.append(result.last_checkpoint)
    return out


def _predict(
    model: SGMA, meta: CheckpointMeta, scene_dir: Path, sensors: list[str], window: int
) -> np.ndarray:
    """Class map of the scene with ``window``-pixel windows, 255 where unseen."""
    files = find_sensor_files(scene_dir, meta.modality_names)
    scene = open_scene(
        files,
        {m.name: m.bands for m in meta.modalities},
        modalities=sensors,
        resolution=meta.resolution[0] if meta.resolution else None,
        resolution_crs=meta.crs,
    )
    side = max(scene.grid.height, scene.grid.width)
    overlap = 0.0 if window >= side else 0.25
    blocks = list(predict_scene(model, meta, scene, window=window, overlap=overlap, batch_size=4))
    return np.concatenate([np.where(b.valid, b.classes, 255) for b in blocks])


def measure(checkpoint: Path, scene_dir: Path, subsets: bool) -> dict[str, object]:
    """Agreement (%) of tiled vs single-window maps of one checkpoint, per window factor."""
    torch.manual_seed(0)
    model, meta = load_model(checkpoint)
    tile = meta.tile_size or 512
    names = list(meta.modality_names)
    chosen = (
        [list(c) for k in range(len(names), 0, -1) for c in itertools.combinations(names, k)]
        if subsets
        else [names]
    )
    side = None
    rows: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        for sensors in chosen:
            label = "+".join(sensors)
            if side is None:
                probe = open_scene(
                    find_sensor_files(scene_dir, meta.modality_names),
                    {m.name: m.bands for m in meta.modalities},
                    resolution=meta.resolution[0] if meta.resolution else None,
                    resolution_crs=meta.crs,
                )
                side = -(-max(probe.grid.height, probe.grid.width) // MULTIPLE) * MULTIPLE
            single = _predict(model, meta, scene_dir, sensors, side)
            seen = single != 255
            rows[label] = {}
            for factor in FACTORS:
                tiled = _predict(model, meta, scene_dir, sensors, _round(factor * tile))
                rows[label][f"{factor:g}x"] = 100.0 * float((tiled[seen] == single[seen]).mean())
    config = meta.sgma_config()
    return {
        "checkpoint": str(checkpoint),
        "prototypes": config.prototypes if config.fusion == "sgf" else f"{config.fusion} fusion",
        "tile": tile,
        "windows": {f"{f:g}x": _round(f * tile) for f in FACTORS},
        "single_window": side,
        "agreement": rows,
    }


def _print(results: list[dict[str, object]]) -> None:
    by_kind: dict[str, list[dict[str, object]]] = {}
    for r in results:
        by_kind.setdefault(str(r["prototypes"]), []).append(r)
    first = results[0]
    cols = [f"{k} ({v} px)" for k, v in first["windows"].items()]  # type: ignore[union-attr]
    print(
        f"\nAgreement (%) of tiled (overlap 0.25) vs one {first['single_window']} px window, "
        f"training tile {first['tile']} px; mean over checkpoints"
    )
    subsets = list(first["agreement"])  # type: ignore[arg-type]
    label = max(len(f"{k} (n={len(v)})") for k, v in by_kind.items()) + 2
    width = max(len(s) for s in [*subsets, "sensors"]) + 2
    print("model".ljust(label) + "sensors".ljust(width) + "".join(c.rjust(16) for c in cols))
    for kind, runs in by_kind.items():
        rows = [*subsets, "mean"] if len(subsets) > 1 else subsets
        for s in rows:
            chosen = subsets if s == "mean" else [s]
            values = [
                np.mean([r["agreement"][c][k] for r in runs for c in chosen])  # type: ignore[index]
                for k in first["windows"]  # type: ignore[union-attr]
            ]
            print(
                f"{kind} (n={len(runs)})".ljust(label)
                + s.ljust(width)
                + "".join(f"{v:.2f}".rjust(16) for v in values)
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, nargs="*", default=[], help="checkpoints")
    parser.add_argument(
        "--runs", type=Path, help="folder of runs (each RUN/checkpoints/last.pt is measured)"
    )
    parser.add_argument("--scene", type=Path, help="sample scene (default: make one, 1024 px)")
    parser.add_argument("--prototypes", nargs="*", default=["sum", "mean", "softmax"])
    parser.add_argument("--seed", type=int, default=0, help="training seed (no checkpoints)")
    parser.add_argument(
        "--local-baseline",
        action="store_true",
        help="also train the mean-fusion baseline without MAS (a purely local model)",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="extra recipe override"
    )
    parser.add_argument("--subsets", action="store_true", help="also every sensor subset")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="sgma-window-"))
    try:
        scene = args.scene
        if scene is None:
            scene = work / "scene"
            sample(scene, size=1024, seed=0)
        checkpoints = list(args.checkpoint)
        if args.runs:
            checkpoints += sorted(args.runs.glob("*/checkpoints/last.pt"))
        if not checkpoints:
            variants = {
                f"sgma-prototypes={k}": ["model.fusion='sgf'", f"model.prototypes='{k}'"]
                for k in args.prototypes
            }
            if args.local_baseline:
                variants["mean-fusion"] = LOCAL_BASELINE
            checkpoints = _train_checkpoints(work, scene, variants, args.seed, args.overrides)
        results = []
        for ckpt in checkpoints:
            start = time.perf_counter()
            results.append(measure(ckpt, scene, args.subsets))
            print(f"  measured {ckpt} in {time.perf_counter() - start:.0f} s", flush=True)
        _print(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
