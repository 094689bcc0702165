"""Score a checkpoint on every combination of sensors: mIoU, F1, per-class IoU per subset.

Each tile is encoded once per sensor; every subset then costs only fusion and head, so all
2^M - 1 subsets take little more than one pass. Prints the paper's table (● used, ○ missing)
with Average / Top-1 / Last-1 rows, the robustness weight the model gives each sensor, and
with --out writes metrics.json, subsets.csv, report.md and PNG plots.

Examples:
  sgma evaluate runs/sgma/checkpoints/best.pt --data data/potsdam --out reports/sgma
  sgma evaluate best.pt --subsets "rgb,dsm;rgb" --json
  sgma evaluate best.pt --compare runs/sum/checkpoints/best.pt --out reports/sgma-vs-sum
  sgma evaluate best.pt --scene demo/scene --labels demo/scene/labels.tif
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from sgma_cli.cli.console import console, err_console, warn
from sgma_cli.cli.options import (
    AsJson,
    Asset,
    BatchSize,
    Compile,
    DataDir,
    Device,
    LabelField,
    Overlap,
    Stac,
    Window,
    stac_option,
)
from sgma_cli.cli.progress import counting_bar
from sgma_cli.errors import UsageError

if TYPE_CHECKING:
    from sgma_cli.data.sources import RasterSource
    from sgma_cli.engine.evaluate.job import CheckpointEvaluation
    from sgma_cli.engine.evaluate.scoring import Progress as ProgressCallback

__all__ = ["command"]


def _progress_bar(label: str) -> AbstractContextManager[ProgressCallback]:
    """The bar of one checkpoint's evaluation: batches (tiles or windows) done."""
    return counting_bar(label, "batch")


def _where(evaluation: CheckpointEvaluation) -> str:
    if evaluation.split == "scene":
        return f"scene {evaluation.data_dir.name} ({evaluation.tiles} windows)"
    return f"{evaluation.data_dir.name}/{evaluation.split} ({evaluation.tiles} tiles)"


def _fmt(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}"


def _subset_table(evaluation: CheckpointEvaluation, per_class: bool = True) -> Table:
    """The paper's layout: a row per subset (● / ○), per-class IoU, mIoU, mF1, OA, summaries."""
    from sgma_cli.engine.evaluate.report import (
        MARK_OFF,
        MARK_ON,
        column_summaries,
        short_labels,
        subset_rows,
    )

    rows = subset_rows(evaluation)
    classes, modalities = evaluation.meta.class_names, list(evaluation.result.modalities)
    short = short_labels(modalities)
    table = Table(
        title=f"{evaluation.checkpoint.name} on {_where(evaluation)} ({evaluation.seconds:.1f} s)",
        caption="% · ● used ○ missing · "
        + ", ".join(f"{short[m]} = {m}" for m in modalities if short[m] != m),
    )
    table.add_column("", style="bold", no_wrap=True)
    for m in modalities:
        table.add_column(short[m], justify="center", no_wrap=True)
    for c in classes if per_class else []:
        table.add_column(c, justify="right", overflow="fold", min_width=6)
    for name in ("mIoU", "mF1", "OA"):
        table.add_column(
            name,
            justify="right",
            style="bold" if name == "mIoU" else None,
            min_width=6,
            no_wrap=True,
        )
    values = [[*(r.iou if per_class else ()), r.miou, r.mf1, r.oa] for r in rows]
    best = [max((v for v in col if not math.isnan(v)), default=math.nan) for col in zip(*values)]
    for row, vals in zip(rows, values):
        cells = [
            Text(_fmt(v), style="bold green" if len(rows) > 1 and v == b else "")
            for v, b in zip(vals, best)
        ]
        table.add_row("", *(MARK_ON if on else MARK_OFF for on in row.marks), *cells)
    table.add_section()
    skip = 0 if per_class else len(classes)
    for name, vals in column_summaries(rows).items():
        table.add_row(name, *([""] * len(modalities)), *(_fmt(v) for v in vals[skip:]))
    return table


def _class_table(evaluation: CheckpointEvaluation) -> Table:
    """IoU per class (rows) and subset (columns).

    The per-class part of the paper's layout, for terminals too narrow for it.
    """
    from sgma_cli.engine.evaluate.report import short_labels, subset_rows

    rows = subset_rows(evaluation)
    short = short_labels(evaluation.result.modalities)
    table = Table(title="IoU (%) per class and modality subset")
    table.add_column(
        "class", style="bold", no_wrap=True, max_width=max(8, console.width - 9 * len(rows) - 14)
    )
    for r in rows:
        table.add_column(
            "+".join(short[m] for m in r.subset), justify="right", min_width=5, no_wrap=True
        )
    table.add_column("Average", justify="right", style="bold", no_wrap=True)
    for k, name in enumerate(evaluation.meta.class_names):
        vals = [r.iou[k] for r in rows]
        finite = [v for v in vals if not math.isnan(v)]
        table.add_row(
            name, *(_fmt(v) for v in vals), _fmt(sum(finite) / len(finite) if finite else math.nan)
        )
    return table


def _print_subsets(evaluation: CheckpointEvaluation) -> None:
    """One table in the paper's layout when the terminal is wide enough, else two narrower ones."""
    M = len(evaluation.result.modalities)
    width = 10 + 4 * M + sum(max(len(c), 6) + 3 for c in evaluation.meta.class_names) + 9 * 3
    if width <= console.width:
        console.print(_subset_table(evaluation))
    else:
        console.print(_subset_table(evaluation, per_class=False))
        console.print(_class_table(evaluation))


def _compare_table(evaluations: Sequence[CheckpointEvaluation]) -> Table:
    """One row per subset (● / ○), one mIoU column per checkpoint, a Δ column per baseline."""
    from sgma_cli.engine.evaluate.report import MARK_OFF, MARK_ON, checkpoint_names, short_labels

    main = evaluations[0]
    subsets, modalities = main.result.subsets, list(main.result.modalities)
    short = short_labels(modalities)
    names = checkpoint_names(evaluations)
    table = Table(
        title=f"mIoU (%) per modality subset, {main.split} split",
        caption=f"Δ = {names[0]} minus the other checkpoint",
    )
    table.add_column("", style="bold")
    for m in modalities:
        table.add_column(short[m], justify="center")
    for name in names:
        table.add_column(name, justify="right")
    for name in names[1:]:
        table.add_column(f"Δ {name}", justify="right")
    per = [
        {s: 100 * m.miou for s, m in zip(e.result.subsets, e.result.metrics)} for e in evaluations
    ]
    summaries = [e.result.summary for e in evaluations]
    lines: list[tuple[str, tuple[str, ...], list[float]]] = [
        (
            "",
            tuple(MARK_ON if m in s else MARK_OFF for m in modalities),
            [p.get(s, math.nan) for p in per],
        )
        for s in subsets
    ]
    blank = tuple("" for _ in modalities)
    lines += [
        ("Average", blank, [100 * x.average for x in summaries]),
        ("Top-1", blank, [100 * x.top1 for x in summaries]),
        ("Last-1", blank, [100 * x.last1 for x in summaries]),
    ]
    for i, (label, marks, vals) in enumerate(lines):
        if i == len(subsets):
            table.add_section()
        deltas = [vals[0] - v for v in vals[1:]]
        table.add_row(
            label,
            *marks,
            *(_fmt(v) for v in vals),
            *(
                Text(
                    "–" if math.isnan(d) else f"{d:+.2f}",
                    style="green" if d > 0 else "red" if d < 0 else "",
                )
                for d in deltas
            ),
        )
    return table


def _robustness_table(evaluation: CheckpointEvaluation) -> Table:
    from sgma_cli.engine.evaluate.report import robustness_table

    modalities, scales, weights = robustness_table(evaluation)
    table = Table(
        title="mean robustness weight r_m", caption="all sensors present; higher = relied on"
    )
    table.add_column("modality", style="bold")
    for s in scales:
        table.add_column(s, justify="right")
    for m, row in zip(modalities, weights):
        table.add_row(m, *("–" if math.isnan(v) else f"{v:.3f}" for v in row))
    return table


def command(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="Checkpoint to evaluate (.pt written by sgma train).",
            metavar="CHECKPOINT",
            dir_okay=False,
        ),
    ],
    *,
    data: DataDir = None,
    split: Annotated[
        str, typer.Option("--split", help="Split to evaluate: train, val or test.")
    ] = "test",
    subsets: Annotated[
        str,
        typer.Option(
            "--subsets", help="'all' (every non-empty combination) or e.g. 'rgb,dsm;rgb'."
        ),
    ] = "all",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Report folder: metrics.json, subsets.csv, report.md, PNGs (existing files "
            "replaced).",
            file_okay=False,
        ),
    ] = None,
    as_json: AsJson = False,
    compare: Annotated[
        list[Path] | None,
        typer.Option(
            "--compare",
            help="Other checkpoint(s) to evaluate on the same tiles and subsets; repeatable.",
            dir_okay=False,
        ),
    ] = None,
    device: Device = "auto",
    batch_size: BatchSize = 8,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", help="Data loading processes (default: 0 on CPU, 4 on GPU).", min=0
        ),
    ] = None,
    scene: Annotated[
        Path | None,
        typer.Option(
            "--scene",
            help="Evaluate a whole scene folder (<modality>.tif) with predict's sliding "
            "windows (--window, --overlap).",
            file_okay=False,
            exists=True,
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            help="Labels of --scene: colour/class raster or polygons.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    modality: Annotated[
        list[str] | None,
        typer.Option(
            "--modality",
            help="NAME=WHERE of one sensor of the scene: a raster, tiles read as one (glob in "
            "quotes, folder, list file, .vrt) or a URL; repeatable, wins over --scene.",
        ),
    ] = None,
    stac: Stac = None,
    asset: Asset = None,
    label_field: LabelField = "class",
    window: Window = None,
    overlap: Overlap = 0.25,
    compile_model: Compile = None,
) -> None:
    """Evaluate a checkpoint on every modality subset."""
    from sgma_cli.data.discovery import parse_modality_option
    from sgma_cli.engine.evaluate.compare import evaluate_and_compare
    from sgma_cli.engine.evaluate.job import EvaluateOptions
    from sgma_cli.engine.evaluate.report import report_json
    from sgma_cli.engine.evaluate.scene import SceneSource
    from sgma_cli.engine.subsets import subset_label

    if split not in ("train", "val", "test"):
        raise UsageError(f"--split {split!r}: use train, val or test")
    files: dict[str, str | RasterSource] = {}
    for text in modality or []:
        name, where = parse_modality_option(text)
        if name in files:
            raise UsageError(f"--modality {name!r} given twice")
        files[name] = where
    found = stac_option(stac, asset)
    if found is not None:
        files = {**found.sources, **files}
    given = scene is not None or bool(files)
    if given != (labels is not None):
        raise UsageError(
            "--scene and --labels go together: the scene (a folder, or --modality/--stac "
            "sensors) and its labels"
        )
    if given and data is not None:
        raise UsageError(
            "give either --data (tiles of a prepared split) or --scene/--labels (a whole scene)"
        )
    source = None
    if given and labels is not None:
        source = SceneSource(
            scene, labels, label_field, window=window, overlap=overlap, files=files
        )
    done = evaluate_and_compare(
        checkpoint,
        compare or [],
        data_dir=data,
        split=split,
        scene=source,
        options=EvaluateOptions(
            subsets=subsets,
            device=device,
            batch_size=batch_size,
            workers=workers,
            compile=compile_model,
        ),
        out=out,
        progress_for=lambda path: _progress_bar(f"evaluating {path.name}"),
    )
    for evaluation in done.evaluations:
        if evaluation.compiled is not None:
            err_console.print(
                f"{evaluation.checkpoint.name}: {evaluation.compiled.describe()}",
                style="dim",
                soft_wrap=True,
            )
        if evaluation.skipped:
            where = "scene" if evaluation.split == "scene" else "dataset"
            warn(
                f"{evaluation.checkpoint.name}: the {where} has no "
                f"{', '.join(evaluation.skipped)}; subsets using them were left out"
            )
    main, others = done.main, list(done.others)
    if as_json:
        typer.echo(json.dumps(report_json(main, others), allow_nan=False))
    else:
        _print_subsets(main)
        for other in others:
            _print_subsets(other)
        if others:
            console.print(_compare_table(done.evaluations))
        console.print(_robustness_table(main))
        best = max(
            zip(main.result.subsets, main.result.metrics),
            key=lambda p: -1 if math.isnan(p[1].miou) else p[1].miou,
        )
        summary = main.result.summary
        console.print(
            f"Average {_fmt(100 * summary.average)} · Top-1 {_fmt(100 * summary.top1)} "
            f"({subset_label(best[0])}) · Last-1 {_fmt(100 * summary.last1)} mIoU %"
        )
    if out is not None:
        err_console.print(
            f"report written to {out}: " + ", ".join(f.name for f in done.report), soft_wrap=True
        )
    elif not as_json:
        err_console.print(
            "add --out DIR for metrics.json, subsets.csv, report.md and plots", style="dim"
        )
