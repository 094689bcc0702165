"""Robustness to missing sensors on the sample scene: SGMA vs the usual baselines, same budget.

Trains four models with ``recipes/sample.toml`` (same backbone, head, crops, steps, seed),
changing only the switches the paper compares:

* ``sum``                    sum fusion, no MAS
* ``sum + modality dropout`` sum fusion, each modality dropped with p = 0.5 (keep >= 1)
* ``sgf (no MAS)``           Semantic-Guided Fusion alone
* ``sgf + MAS``              SGMA: SGF + Modality-Aware Sampling (the paper)

then evaluates the last checkpoint of each on all 2^M - 1 modality subsets of the test split
and prints the paper-style table: mIoU per subset, Average / Top-1 / Last-1.

``--prototypes sum mean softmax`` compares SGMA's prototype weightings (``model.prototypes``)
instead: one SGMA (SGF + MAS) per weighting, everything else equal. ``--keep DIR`` keeps
the dataset and the runs (``DIR/<variant>-<seed>/checkpoints/last.pt``), e.g. for
``benchmarks/window_agreement.py``; ``--json PATH`` writes every seed's figures.

Run (about 10 minutes on a 2-core CPU)::

    .venv/bin/python benchmarks/robustness.py                 # makes the sample scene itself
    .venv/bin/python benchmarks/robustness.py --data demo/data --seeds 0 1
    .venv/bin/python benchmarks/robustness.py --prototypes sum mean softmax --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sgma_cli.config.recipe import load_recipe  # noqa: E402
from sgma_cli.engine.evaluate.job import EvaluateOptions, evaluate_checkpoint  # noqa: E402
from sgma_cli.engine.prepare import PrepareOptions, prepare  # noqa: E402
from sgma_cli.engine.sample_scene import sample  # noqa: E402
from sgma_cli.engine.train import TrainOptions, train  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "sum": ["model.fusion='sum'", "train.mas=false"],
    "sum + modality dropout": [
        "model.fusion='sum'",
        "train.mas=false",
        "train.modality_dropout=0.5",
    ],
    "sgf (no MAS)": ["model.fusion='sgf'", "train.mas=false"],
    "sgf + MAS (SGMA)": ["model.fusion='sgf'", "train.mas=true"],
}


def _prototype_variants(kinds: list[str]) -> dict[str, list[str]]:
    """SGMA (SGF + MAS) once per prototype weighting."""
    return {
        f"SGMA prototypes={kind}": [
            "model.fusion='sgf'",
            "train.mas=true",
            f"model.prototypes='{kind}'",
        ]
        for kind in kinds
    }


def _dataset(work: Path) -> Path:
    scene, data = work / "scene", work / "data"
    sample(scene, size=1024, seed=0)
    prepare(PrepareOptions(src=scene, out=data, tile=128, stride=128))
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, help="prepared sample dataset (default: make one in a temp folder)"
    )
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "sample.toml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="extra recipe override"
    )
    parser.add_argument(
        "--prototypes",
        nargs="+",
        choices=["sum", "mean", "softmax"],
        help="compare SGMA's prototype weightings instead of the fusion baselines",
    )
    parser.add_argument("--keep", type=Path, help="keep the dataset and runs in this folder")
    parser.add_argument("--json", type=Path, help="write every seed's figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)  # steadier timings on a shared 2-core machine
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="sgma-robustness-"))
    variants = _prototype_variants(args.prototypes) if args.prototypes else VARIANTS
    try:
        data = args.data or _dataset(work)
        table: dict[str, list[dict[str, float]]] = {}
        subsets: list[str] = []
        for name, switches in variants.items():
            for seed in args.seeds:
                recipe = load_recipe(
                    args.recipe,
                    [*switches, f"train.seed={seed}", "train.val_every=0", *args.overrides],
                )
                start = time.perf_counter()
                run_dir = work / f"{name}-{seed}".replace(" ", "_").replace("=", "_")
                result = train(recipe, TrainOptions(data_dir=data, run_dir=run_dir, device="cpu"))
                evaluation = evaluate_checkpoint(
                    result.last_checkpoint,
                    data_dir=data,
                    split=args.split,
                    options=EvaluateOptions(device="cpu"),
                )
                res = evaluation.result
                subsets = ["+".join(s) for s in res.subsets]
                row = {s: 100 * m.miou for s, m in zip(subsets, res.metrics)}
                row.update(
                    average=100 * res.summary.average,
                    top1=100 * res.summary.top1,
                    last1=100 * res.summary.last1,
                    seconds=time.perf_counter() - start,
                )
                table.setdefault(name, []).append(row)
                print(
                    f"  trained {name!r} seed {seed}: {result.step} steps in "
                    f"{row['seconds']:.0f} s, Average {row['average']:.2f}",
                    flush=True,
                )
        _print(table, subsets, args)
        if args.json:
            args.json.write_text(json.dumps({"seeds": args.seeds, "runs": table}, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _print(
    table: dict[str, list[dict[str, float]]], subsets: list[str], args: argparse.Namespace
) -> None:
    mean = {
        n: {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]} for n, rows in table.items()
    }
    width = max(len(s) for s in subsets + ["Average"]) + 2
    names = list(mean)
    print(f"\nmIoU (%) on the {args.split} split of the sample scene, mean over seeds {args.seeds}")
    print("subset".ljust(width) + "".join(n.rjust(24) for n in names))
    for s in subsets:
        best = max(mean[n][s] for n in names)
        print(
            s.ljust(width)
            + "".join(
                (f"{mean[n][s]:.2f}" + ("*" if mean[n][s] == best else " ")).rjust(24)
                for n in names
            )
        )
    print("-" * (width + 24 * len(names)))
    for key, label in (("average", "Average"), ("top1", "Top-1"), ("last1", "Last-1")):
        best = max(mean[n][key] for n in names)
        print(
            label.ljust(width)
            + "".join(
                (f"{mean[n][key]:.2f}" + ("*" if mean[n][key] == best else " ")).rjust(24)
                for n in names
            )
        )
    print("(* best in the row)")


if __name__ == "__main__":
    main()
