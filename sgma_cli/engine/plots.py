"""PNG plots for reports: bar charts, confusion matrices, heatmaps (matplotlib, Agg).

Figures are built with :class:`matplotlib.figure.Figure` on an Agg canvas, never through
``pyplot``: no global state, no display needed, safe in worker threads and on servers.
Every helper takes the output path first, returns it, and writes through
:func:`save_figure` (temp name in the same folder, then rename), so a half-written PNG
never appears. Add new plot kinds here as one function each, on the same pattern
(``_new_figure`` -> draw -> ``save_figure``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["save_figure", "bar_chart", "confusion_plot", "heatmap", "line_plot"]

_DPI = 120


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically and return ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, format="png", dpi=_DPI)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# The figure options are keyword-only with defaults, as in matplotlib's own plot calls.
def bar_chart(  # noqa: PLR0913
    path: Path,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str = "",
    xlabel: str = "",
    sort: bool = True,
    reference: float | None = None,
    reference_label: str = "average",
    limit: tuple[float, float] | None = None,
) -> Path:
    """Horizontal bars, one group per label, one colour per series; best on top.

    Args:
        path: PNG to write.
        labels: one label per bar group (e.g. subsets ``"rgb+dsm"``).
        series: ``{name: values}``, each as long as ``labels``; NaN draws no bar. With
            several series the legend names them (e.g. checkpoints to compare).
        title: figure title.
        xlabel: value axis label.
        sort: order groups by the first series, descending (NaN last).
        reference: optional vertical line (e.g. the Average).
        reference_label: legend text of that line.
        limit: value-axis range (default: from 0 to the largest value, with headroom).
    """
    names = list(series)
    values = np.array(
        [[float(v) for v in series[n]] for n in names], dtype=float
    )  # (series, groups)
    if values.shape[1] != len(labels):
        raise ValueError(f"{values.shape[1]} values for {len(labels)} labels")
    order = list(range(len(labels)))
    if sort and len(names):
        key = np.where(np.isnan(values[0]), -np.inf, values[0])
        order = sorted(order, key=lambda i: -key[i])
    fig = _new_figure(7.5, 1.2 + 0.38 * len(labels) * max(1, math.sqrt(len(names))))
    ax = fig.add_subplot()
    height = 0.8 / max(1, len(names))
    ypos = np.arange(len(order))
    for s, name in enumerate(names):
        vals = values[s, order]
        offset = (s - (len(names) - 1) / 2) * height
        bars = ax.barh(
            ypos + offset,
            np.nan_to_num(vals),
            height=height,
            label=name if len(names) > 1 else None,
        )
        for bar, v in zip(bars, vals):
            if not math.isnan(v):
                ax.text(
                    bar.get_width(),
                    bar.get_y() + bar.get_height() / 2,
                    f" {v:.1f}",
                    va="center",
                    fontsize=8,
                )
    if reference is not None and not math.isnan(reference):
        ax.axvline(
            reference,
            color="0.3",
            linestyle="--",
            linewidth=1,
            label=f"{reference_label} {reference:.1f}",
        )
    ax.set_yticks(ypos, [labels[i] for i in order])
    ax.invert_yaxis()
    finite = values[~np.isnan(values)]
    top = float(finite.max()) if finite.size else 1.0
    ax.set_xlim(*(limit or (0.0, top * 1.12 if top > 0 else 1.0)))
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    if len(names) > 1 or reference is not None:
        ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def confusion_plot(
    path: Path,
    confusion: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str = "",
    normalize: bool = True,
) -> Path:
    """Confusion matrix (rows reference, columns prediction), row-normalised in percent.

    Each cell shows the percentage of its reference class (recall on the diagonal) and,
    for small class counts, the pixel count below it.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    K = cm.shape[0]
    if cm.shape != (K, K) or len(class_names) != K:
        raise ValueError(f"confusion of shape {cm.shape} for {len(class_names)} classes")
    rows = cm.sum(axis=1, keepdims=True)
    shown = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0) * 100 if normalize else cm
    side = min(14.0, 2.5 + 0.6 * K)
    fig = _new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=100 if normalize else None)
    fig.colorbar(image, ax=ax, shrink=0.8, label="% of reference class" if normalize else "pixels")
    ax.set_xticks(range(K), class_names, rotation=45, ha="right")
    ax.set_yticks(range(K), class_names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("reference")
    ax.set_title(title)
    if K <= 16:
        limit = (np.nanmax(shown) if shown.size else 0) / 2
        for i in range(K):
            for j in range(K):
                text = f"{shown[i, j]:.1f}" + (
                    f"\n{int(cm[i, j]):,}" if K <= 8 and normalize else ""
                )
                color = "white" if shown[i, j] > limit else "black"
                ax.text(
                    j, i, text, ha="center", va="center", fontsize=7 if K > 8 else 8, color=color
                )
    return save_figure(fig, path)


# The figure options are keyword-only with defaults, as in matplotlib's own plot calls.
def heatmap(  # noqa: PLR0913
    path: Path,
    values: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    title: str = "",
    colorbar_label: str = "",
    fmt: str = "{:.2f}",
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
) -> Path:
    """Annotated heatmap of a ``(rows, cols)`` array (NaN cells shown blank, marked ``–``)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"values of shape {arr.shape} for {len(row_labels)} x {len(col_labels)} labels"
        )
    fig = _new_figure(2.5 + 1.1 * len(col_labels), 1.5 + 0.55 * len(row_labels))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(arr), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    fig.colorbar(image, ax=ax, label=colorbar_label)
    ax.set_xticks(range(len(col_labels)), col_labels)
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_title(title)
    finite = arr[np.isfinite(arr)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    for i in range(arr.shape[0]):
        for j in range(arr.shape[1]):
            v = arr[i, j]
            dark = not math.isnan(v) and (v - lo) < 0.5 * (hi - lo)
            label = "–" if math.isnan(v) else fmt.format(v)
            ax.text(
                j,
                i,
                label,
                ha="center",
                va="center",
                fontsize=9,
                color="white" if dark else "black",
            )
    return save_figure(fig, path)


#: One line: ``(x values, y values)``.
Series = tuple[Sequence[float], Sequence[float]]


def line_plot(
    path: Path,
    panels: Sequence[tuple[str, Mapping[str, Series]]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    ylim: tuple[float, float] | None = None,
    highlight: str | None = None,
) -> Path:
    """Lines over a shared x axis, in one or more side-by-side panels (training curves).

    Args:
        path: PNG to write.
        panels: ``(panel title, {line label: (x, y)})`` per panel; NaN leaves a gap.
        title: figure title.
        xlabel: x-axis label (every panel).
        ylabel: y-axis label (first panel).
        ylim: y range shared by the panels (default: automatic).
        highlight: a line label drawn thick and black (e.g. ``"Average"``).
    """
    if not panels:
        raise ValueError("line_plot needs at least one panel")
    fig = _new_figure(3.4 * len(panels) if len(panels) > 1 else 7.5, 3.6)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (name, lines) in zip(axes, panels):
        for label, (x, y) in lines.items():
            strong = label == highlight
            ax.plot(
                x,
                y,
                label=label,
                linewidth=2.4 if strong else 1.2,
                color="black" if strong else None,
                alpha=1.0 if strong else 0.85,
            )
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if ylim is not None:
            ax.set_ylim(*ylim)
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(fontsize=7, ncol=2 if sum(len(p[1]) for p in panels[-1:]) > 6 else 1)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
