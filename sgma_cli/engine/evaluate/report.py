"""The evaluation report: ``metrics.json``, ``subsets.csv``, ``report.md`` and PNG plots.

Turns :class:`~sgma_cli.engine.evaluate.job.CheckpointEvaluation` results into the paper's
tables (one row per modality subset with ● / ○ marks, per-class IoU, mIoU, mF1, then the
column-wise Average / Top-1 / Last-1 rows) and, with several checkpoints, the paper's
comparison layout (one row per checkpoint, one column per subset, a Δ row per baseline).
All values leave this module in percent. The report folder is written to a temporary
folder beside it and renamed into place; an existing folder only has its files replaced,
``metrics.json`` last, so a folder with ``metrics.json`` holds a whole report. A write
error leaves none of the report's files and is one :class:`~sgma_cli.errors.OutputError`.

``metrics.json`` (also what ``sgma evaluate --json`` prints)::

    {"checkpoint": str, "split": str, "classes": [str], "modalities": [str],
     "subsets": [{"modalities": [str], "miou": float, "mf1": float, "oa": float,
                  "iou": {class: float}, "f1": {class: float}, "pixels": int}],
     "summary": {"average": float, "top1": float, "last1": float},
     "summary_f1": {...}, "robustness": {"scales": [str], "weights": {modality: [float]}},
     "data": str, "tiles": int, "skipped_modalities": [str],
     "compare": [same object per other checkpoint],            # with --compare only
     "delta": [{"checkpoint": str, "subsets": [{"modalities": [str], "miou": float}],
                "summary": {...}}]}                             # main minus each other

Unscored values (a class that never occurs, a modality never seen) are ``null``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sgma_cli.data.atomic import publish, remove_stale_temps, temp_path, write_errors
from sgma_cli.engine.evaluate.job import CheckpointEvaluation
from sgma_cli.engine.metrics import SubsetSummary, summarize
from sgma_cli.engine.plots import bar_chart, confusion_plot, heatmap
from sgma_cli.engine.subsets import subset_label
from sgma_cli.errors import UsageError
from sgma_cli.model.backbones import FEATURE_STRIDES

__all__ = [
    "SubsetRow",
    "short_labels",
    "scale_labels",
    "checkpoint_names",
    "subset_rows",
    "column_summaries",
    "evaluation_json",
    "report_json",
    "check_out_dir",
    "write_report",
    "robustness_table",
]

MARK_ON, MARK_OFF = "●", "○"


def _pct(value: float) -> float | None:
    """Fraction -> percent rounded to 4 decimals; NaN -> None (JSON null)."""
    return None if value is None or math.isnan(value) else round(100.0 * value, 4)


def short_labels(modalities: Sequence[str]) -> dict[str, str]:
    """Paper-style one-letter names (R, D, N) when the initials are unique, else the names."""
    initials = [m[0].upper() for m in modalities]
    if len(set(initials)) == len(initials):
        return dict(zip(modalities, initials))
    return {m: m for m in modalities}


def scale_labels(count: int) -> list[str]:
    """``["1/4", "1/8", "1/16", "1/32"]`` for the backbone's feature scales."""
    return [f"1/{s}" for s in list(FEATURE_STRIDES)[:count]]


def checkpoint_names(evaluations: Sequence[CheckpointEvaluation]) -> list[str]:
    """Short distinct names: file stems; the path as given where stems repeat; ``#n`` if equal."""
    stems = [e.checkpoint.stem for e in evaluations]
    names = [
        str(e.checkpoint) if stems.count(stem) > 1 else stem for e, stem in zip(evaluations, stems)
    ]
    return [
        n if names[:i].count(n) == 0 else f"{n}#{names[:i].count(n) + 1}"
        for i, n in enumerate(names)
    ]


@dataclass(frozen=True)
class SubsetRow:
    """One subset's line in the paper's table; metrics in percent (NaN: not scored)."""

    subset: tuple[str, ...]
    marks: tuple[bool, ...]
    iou: tuple[float, ...]
    f1: tuple[float, ...]
    miou: float
    mf1: float
    oa: float
    pixels: int


def subset_rows(evaluation: CheckpointEvaluation) -> list[SubsetRow]:
    """One :class:`SubsetRow` per evaluated subset, in evaluation order."""
    res = evaluation.result
    rows = []
    for subset, metrics, cm in zip(res.subsets, res.metrics, res.confusion):
        rows.append(
            SubsetRow(
                subset=subset,
                marks=tuple(m in subset for m in res.modalities),
                iou=tuple(100.0 * float(v) for v in metrics.iou),
                f1=tuple(100.0 * float(v) for v in metrics.f1),
                miou=100.0 * metrics.miou,
                mf1=100.0 * metrics.mf1,
                oa=100.0 * metrics.oa,
                pixels=int(cm.sum()),
            )
        )
    return rows


def column_summaries(rows: Sequence[SubsetRow]) -> dict[str, list[float]]:
    """Column-wise Average / Top-1 / Last-1 of ``[*iou, miou, mf1, oa]`` over the subsets.

    As in the paper's tables, each column's Top-1 and Last-1 are that column's best and
    worst values (so the mIoU column holds the summary of the subsets' mIoU).
    """
    columns = [[*r.iou, r.miou, r.mf1, r.oa] for r in rows]
    out: dict[str, list[float]] = {"Average": [], "Top-1": [], "Last-1": []}
    for col in zip(*columns):
        s = summarize(list(col))
        out["Average"].append(s.average)
        out["Top-1"].append(s.top1)
        out["Last-1"].append(s.last1)
    return out


def _summary_json(summary: SubsetSummary) -> dict[str, float | None]:
    return {
        "average": _pct(summary.average),
        "top1": _pct(summary.top1),
        "last1": _pct(summary.last1),
    }


def evaluation_json(evaluation: CheckpointEvaluation) -> dict[str, Any]:
    """The ``metrics.json`` object of one checkpoint (module docstring)."""
    res, classes = evaluation.result, evaluation.meta.class_names
    subsets = []
    for subset, metrics, cm in zip(res.subsets, res.metrics, res.confusion):
        subsets.append(
            {
                "modalities": list(subset),
                "miou": _pct(metrics.miou),
                "mf1": _pct(metrics.mf1),
                "oa": _pct(metrics.oa),
                "iou": {c: _pct(float(v)) for c, v in zip(classes, metrics.iou)},
                "f1": {c: _pct(float(v)) for c, v in zip(classes, metrics.f1)},
                "pixels": int(cm.sum()),
            }
        )
    robustness = res.robustness
    return {
        "checkpoint": str(evaluation.checkpoint),
        "split": evaluation.split,
        "classes": list(classes),
        "modalities": list(res.modalities),
        "subsets": subsets,
        "summary": _summary_json(res.summary),
        "summary_f1": _summary_json(res.f1_summary),
        "robustness": {
            "scales": scale_labels(robustness.shape[0]),
            "weights": {
                m: [
                    None if math.isnan(v) else round(float(v), 6) for v in robustness[:, j].tolist()
                ]
                for j, m in enumerate(res.modalities)
            },
        },
        "data": str(evaluation.data_dir),
        "tiles": evaluation.tiles,
        "skipped_modalities": list(evaluation.skipped),
    }


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)


def report_json(
    main: CheckpointEvaluation, others: Sequence[CheckpointEvaluation] = ()
) -> dict[str, Any]:
    """``metrics.json`` for ``main``; with others, ``compare`` and ``delta`` (main minus other)."""
    out = evaluation_json(main)
    if not others:
        return out
    out["compare"] = [evaluation_json(o) for o in others]
    mine = {tuple(s["modalities"]): s["miou"] for s in out["subsets"]}
    out["delta"] = []
    for other in out["compare"]:
        theirs = {tuple(s["modalities"]): s["miou"] for s in other["subsets"]}
        out["delta"].append(
            {
                "checkpoint": other["checkpoint"],
                "subsets": [
                    {"modalities": list(k), "miou": _delta(v, theirs.get(k))}
                    for k, v in mine.items()
                ],
                "summary": {
                    k: _delta(out["summary"][k], other["summary"][k])
                    for k in ("average", "top1", "last1")
                },
            }
        )
    return out


# ------------------------------------------------------------------------------ writing
def _fmt(value: float | None, digits: int = 2) -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


def _markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "c"
) -> list[str]:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(":-:" if align == "c" else "---:" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _write_csv(path: Path, evaluations: Sequence[CheckpointEvaluation]) -> None:
    main = evaluations[0]
    classes, modalities = main.meta.class_names, list(main.result.modalities)
    names = checkpoint_names(evaluations)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "checkpoint",
                "subset",
                *modalities,
                "miou",
                "mf1",
                "oa",
                *(f"iou_{c}" for c in classes),
                *(f"f1_{c}" for c in classes),
                "pixels",
            ]
        )
        for name, evaluation in zip(names, evaluations):
            for row in subset_rows(evaluation):
                writer.writerow(
                    [
                        name,
                        subset_label(row.subset),
                        *(int(m in row.subset) for m in modalities),
                        *(
                            _fmt(v, 4) if not math.isnan(v) else ""
                            for v in (row.miou, row.mf1, row.oa, *row.iou, *row.f1)
                        ),
                        row.pixels,
                    ]
                )


def _comparison_lines(
    evaluations: Sequence[CheckpointEvaluation], short: dict[str, str]
) -> list[str]:
    names = checkpoint_names(evaluations)
    subsets = evaluations[0].result.subsets
    header = [
        "checkpoint",
        *("+".join(short[m] for m in s) for s in subsets),
        "Average",
        "Top-1",
        "Last-1",
    ]
    values = []
    for e in evaluations:
        per = {s: 100 * m.miou for s, m in zip(e.result.subsets, e.result.metrics)}
        summary = e.result.summary
        values.append(
            [per.get(s, float("nan")) for s in subsets]
            + [100 * summary.average, 100 * summary.top1, 100 * summary.last1]
        )
    rows = [[n, *(_fmt(v) for v in vals)] for n, vals in zip(names, values)]
    for n, vals in zip(names[1:], values[1:]):
        rows.append(
            [
                f"Δ vs {n}",
                *(
                    _fmt(a - b) if not (math.isnan(a) or math.isnan(b)) else "–"
                    for a, b in zip(values[0], vals)
                ),
            ]
        )
    return ["## Comparison (mIoU %)", "", *_markdown_table(header, rows), ""]


def _markdown(evaluations: Sequence[CheckpointEvaluation], plots: dict[str, str]) -> str:
    main = evaluations[0]
    res, meta = main.result, main.meta
    classes, modalities = meta.class_names, list(res.modalities)
    short = short_labels(modalities)
    lines = [
        f"# Evaluation of `{main.checkpoint.name}`",
        "",
        f"- checkpoint: `{main.checkpoint}` (epoch {meta.epoch}, step {meta.step}, backbone "
        f"{meta.model.get('backbone', '?')}, fusion {meta.model.get('fusion', '?')})",
        f"- scene: `{main.data_dir}`, {main.tiles} sliding windows (as `sgma predict`)"
        if main.split == "scene"
        else f"- dataset: `{main.data_dir}`, split **{main.split}**, {main.tiles} tiles",
        f"- classes: {', '.join(classes)}; "
        f"modalities: {', '.join(f'{short[m]} = {m}' for m in modalities)}",
        "- metrics in %, from one confusion matrix per subset over the whole split; pixels that no "
        "sensor of the subset saw, and unlabelled pixels, are not scored",
    ]
    if main.skipped:
        lines.append(
            f"- not in this dataset, so left out of the subsets: {', '.join(main.skipped)}"
        )
    rows = subset_rows(main)
    header = [short[m] for m in modalities] + [f"IoU {c}" for c in classes] + ["mIoU", "mF1", "OA"]
    body = [
        [MARK_ON if on else MARK_OFF for on in r.marks]
        + [_fmt(v) for v in (*r.iou, r.miou, r.mf1, r.oa)]
        for r in rows
    ]
    for name, vals in column_summaries(rows).items():
        body.append([f"**{name}**", *([""] * (len(modalities) - 1)), *(_fmt(v) for v in vals)])
    best = max(rows, key=lambda r: -1 if math.isnan(r.miou) else r.miou)
    worst = min(rows, key=lambda r: math.inf if math.isnan(r.miou) else r.miou)
    lines += [
        "",
        "## Per modality subset",
        "",
        *_markdown_table(header, body),
        "",
        f"Top-1: {subset_label(best.subset)} ({_fmt(best.miou)}); "
        f"Last-1: {subset_label(worst.subset)} ({_fmt(worst.miou)}).",
        "",
    ]
    f1_header = [short[m] for m in modalities] + [f"F1 {c}" for c in classes]
    f1_body = [
        [MARK_ON if on else MARK_OFF for on in r.marks] + [_fmt(v) for v in r.f1] for r in rows
    ]
    lines += ["## F1 per class", "", *_markdown_table(f1_header, f1_body), ""]
    robust = res.robustness
    scales = scale_labels(robust.shape[0])
    r_rows = [
        [m, *(_fmt(float(robust[i, j]), 3) for i in range(robust.shape[0]))]
        for j, m in enumerate(modalities)
    ]
    lines += [
        "## Robustness weights",
        "",
        "Mean RP attention weight r_m per modality and scale with all modalities present, over the "
        "cells each modality saw (weights sum to 1 over the modalities at a cell; higher = the "
        "model leans on it).",
        "",
        *_markdown_table(["modality", *scales], r_rows),
        "",
    ]
    if len(evaluations) > 1:
        lines += _comparison_lines(evaluations, short)
    if plots:
        lines += ["## Plots", ""] + [f"![{title}]({name})" for name, title in plots.items()] + [""]
    return "\n".join(lines)


def _plots(folder: Path, evaluations: Sequence[CheckpointEvaluation]) -> dict[str, str]:
    main = evaluations[0]
    res = main.result
    labels = [subset_label(s) for s in res.subsets]
    series = {}
    for name, e in zip(checkpoint_names(evaluations), evaluations):
        per = {s: 100 * m.miou for s, m in zip(e.result.subsets, e.result.metrics)}
        series[name] = [per.get(s, float("nan")) for s in res.subsets]
    bar_chart(
        folder / "miou_per_subset.png",
        labels,
        series,
        title=f"mIoU per modality subset ({main.split})",
        xlabel="mIoU (%)",
        reference=100 * res.summary.average,
        reference_label="Average",
    )
    full = max(range(len(res.subsets)), key=lambda i: len(res.subsets[i]))
    confusion_plot(
        folder / "confusion_full.png",
        res.confusion[full].numpy(),
        main.meta.class_names,
        title=f"Confusion, {subset_label(res.subsets[full])} ({main.split})",
    )
    robust = res.robustness.numpy().T  # (M, S)
    heatmap(
        folder / "robustness.png",
        robust,
        list(res.modalities),
        scale_labels(robust.shape[1]),
        title="Mean robustness weight per modality and scale",
        colorbar_label="mean r_m",
        vmin=0.0,
        vmax=1.0,
    )
    return {
        "miou_per_subset.png": "mIoU per subset",
        "confusion_full.png": f"confusion matrix of {subset_label(res.subsets[full])}",
        "robustness.png": "robustness weights",
    }


def check_out_dir(out: Path) -> None:
    """Fail early (before a long evaluation) when ``out`` cannot become the report folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    parent = next((p for p in [out, *out.parents] if p.exists()), Path.cwd())
    if not os.access(parent, os.W_OK):
        raise UsageError(f"--out {out}: cannot write in {parent}")


def write_report(
    out: Path, main: CheckpointEvaluation, others: Sequence[CheckpointEvaluation] = ()
) -> list[Path]:
    """Write the report folder atomically; return the files in it.

    Everything is written to ``.<out>.<pid>.tmp`` beside ``out``; then that folder is
    renamed to ``out`` or, when ``out`` exists, its files replace theirs
    (:func:`~sgma_cli.data.atomic.publish`): the old ``report.md`` and ``metrics.json`` are
    removed first and the new ones renamed last, so a run killed half-way leaves no
    ``metrics.json`` and a failed rename leaves none of the report's files. Other files in
    ``out`` are left alone. Temporary folders of killed runs are removed.

    Raises:
        OutputError: a report file could not be written (disk full, I/O error, read-only).
    """
    out = Path(out)
    check_out_dir(out)
    with write_errors(out):
        out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    tmp = temp_path(out, "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    evaluations = [main, *others]
    try:
        with write_errors(out):
            tmp.mkdir()
        with write_errors(out / "metrics.json"):
            (tmp / "metrics.json").write_text(
                json.dumps(report_json(main, others), indent=2, allow_nan=False) + "\n"
            )
        with write_errors(out / "subsets.csv"):
            _write_csv(tmp / "subsets.csv", evaluations)
        with write_errors(out):  # the PNG plots
            plots = _plots(tmp, evaluations)
        with write_errors(out / "report.md"):
            (tmp / "report.md").write_text(_markdown(evaluations, plots))
        names = sorted(p.name for p in tmp.iterdir())
        if out.exists():
            last = [n for n in ("report.md", "metrics.json") if n in names]
            for name in last:  # a kill from here on leaves no finished-looking report
                with write_errors(out / name):
                    (out / name).unlink(missing_ok=True)
            order = [n for n in names if n not in last] + last
            publish([(tmp / n, out / n) for n in order])
        else:
            with write_errors(out):
                os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out / n for n in names]


def robustness_table(evaluation: CheckpointEvaluation) -> tuple[list[str], list[str], np.ndarray]:
    """``(modalities, scale labels, (M, S) mean weights)`` for display."""
    robust = evaluation.result.robustness.numpy().T
    return list(evaluation.result.modalities), scale_labels(robust.shape[1]), robust
