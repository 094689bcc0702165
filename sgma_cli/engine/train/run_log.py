"""What a training run leaves for people: ``metrics.csv``, TensorBoard events and PNG plots.

``metrics.csv`` has one row per logged training step (``kind=train``: loss of each branch,
learning rate, throughput, and the MAS probabilities ``s_m^i`` averaged over the batch per
scale ``i`` and modality ``m``) and one row per validation (``kind=val``: Average / Top-1 /
Last-1 mIoU over the modality subsets and the mIoU of each subset). TensorBoard gets the
same scalars under ``train/``, ``mas/`` and ``val/``. On ``--resume`` rows after the
checkpoint's step are dropped and TensorBoard is told to purge them, so a killed and
resumed run reads like an uninterrupted one. At the end :func:`write_plots` draws
``loss.png``, ``val_miou.png`` and ``mas_probs.png`` from the CSV (matplotlib, Agg).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from sgma_cli.engine.subsets import subset_label
from sgma_cli.errors import UsageError

__all__ = ["RunLog", "read_metrics", "write_plots"]


class RunLog:
    """Append-only metrics of one run (rank 0 only).

    Args:
        run_dir: the run folder.
        modalities: modality names in model order.
        subsets: validation subsets.
        num_scales: MAS scales ``S``.
        resume_step: on resume, the checkpoint's step (later rows are dropped).
        tensorboard: also write TensorBoard events under ``run_dir/tb``.
    """

    def __init__(
        self,
        run_dir: Path,
        modalities: Sequence[str],
        subsets: Sequence[Sequence[str]],
        num_scales: int = 4,
        resume_step: int | None = None,
        tensorboard: bool = True,
    ) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self.mas_columns = [f"mas_s{i + 1}_{m}" for i in range(num_scales) for m in modalities]
        self.subset_columns = [f"miou_{subset_label(s)}" for s in subsets]
        self.columns = [
            "kind",
            "epoch",
            "step",
            "lr",
            "loss",
            "loss_sgf",
            "loss_mas",
            "samples_per_s",
            *self.mas_columns,
            "val_average",
            "val_top1",
            "val_last1",
            *self.subset_columns,
        ]
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if _step(r, self.path) <= resume_step]
            self._rewrite(kept)
        elif not self.path.exists() or resume_step is None:
            self._rewrite([])
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = resume_step + 1 if resume_step is not None else None
            self.writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=purge)

    def _rewrite(self, rows: Sequence[Mapping[str, str]]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def _append(self, row: Mapping[str, object]) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )

    def log_train(
        self, epoch: int, step: int, values: Mapping[str, float], mas: Mapping[str, float]
    ) -> None:
        """A training row: ``values`` (lr, losses, samples_per_s) and the MAS columns."""
        self._append({"kind": "train", "epoch": epoch, "step": step, **values, **mas})
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"train/{key}", value, step)
            for key, value in mas.items():
                scale, modality = key[len("mas_s") :].split("_", 1)
                self.writer.add_scalar(f"mas/scale{scale}/{modality}", value, step)

    def log_val(
        self, epoch: int, step: int, summary: Mapping[str, float], per_subset: Mapping[str, float]
    ) -> None:
        """One validation row: ``summary`` (average, top1, last1) and mIoU per subset label."""
        row: dict[str, object] = {"kind": "val", "epoch": epoch, "step": step}
        row.update({f"val_{k}": v for k, v in summary.items()})
        row.update({f"miou_{k}": v for k, v in per_subset.items()})
        self._append(row)
        if self.writer is not None:
            for key, value in summary.items():
                self.writer.add_scalar(f"val/{key}_miou", value, step)
            for key, value in per_subset.items():
                self.writer.add_scalar(f"val_subset/{key}", value, step)

    def close(self) -> None:
        """Flush TensorBoard."""
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: Path) -> list[dict[str, str]]:
    """Rows of a ``metrics.csv`` as dicts of strings.

    Raises:
        UsageError: the file is unreadable or damaged (one line naming it).
    """
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        reason = err.strerror if isinstance(err, OSError) else " ".join(str(err).split())[:80]
        raise UsageError(
            f"cannot read the run's metrics ({reason}); move the file away to start its "
            "rows afresh",
            path,
        ) from None


def _step(row: Mapping[str, str | None], path: Path) -> int:
    """The ``step`` of a metrics row; a damaged value raises :class:`UsageError`."""
    try:
        return int(row.get("step") or 0)
    except (TypeError, ValueError):
        raise UsageError(
            f"damaged row (step {str(row.get('step'))[:40]!r}); move the file away to start "
            "its rows afresh",
            path,
        ) from None


def _floats(rows: Sequence[Mapping[str, str]], key: str) -> list[float]:
    return [float(r[key]) if r.get(key) not in (None, "") else math.nan for r in rows]


def write_plots(run_dir: Path) -> list[Path]:
    """Draw ``loss.png``, ``val_miou.png`` and ``mas_probs.png`` from ``metrics.csv``."""
    from sgma_cli.engine.plots import line_plot

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.csv")
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    written: list[Path] = []
    if train:
        steps = _floats(train, "step")
        names = {"loss": "total (weighted)", "loss_sgf": "SGF branch", "loss_mas": "MAS branch"}
        lines = {
            label: (steps, _floats(train, key))
            for key, label in names.items()
            if _finite(_floats(train, key))
        }
        written.append(
            line_plot(
                run_dir / "loss.png",
                [("", lines)],
                title="Training loss",
                xlabel="step",
                ylabel="cross-entropy",
            )
        )
        mas_keys = [k for k in train[0] if k.startswith("mas_s") and _finite(_floats(train, k))]
        if mas_keys:
            scales = sorted({k[len("mas_s") :].split("_", 1)[0] for k in mas_keys}, key=int)
            panels = [
                (
                    f"scale {s}",
                    {
                        k.split("_", 2)[2]: (steps, _floats(train, k))
                        for k in mas_keys
                        if k.startswith(f"mas_s{s}_")
                    },
                )
                for s in scales
            ]
            written.append(
                line_plot(
                    run_dir / "mas_probs.png",
                    panels,
                    title="Modality-Aware Sampling probabilities $s_m^i$ (batch mean)",
                    xlabel="step",
                    ylabel="probability",
                    ylim=(0.0, 1.0),
                )
            )
    if val:
        epochs = _floats(val, "epoch")
        lines = {
            k[len("miou_") :]: (epochs, [100 * v for v in _floats(val, k)])
            for k in val[0]
            if k.startswith("miou_")
        }
        lines["Average"] = (epochs, [100 * v for v in _floats(val, "val_average")])
        written.append(
            line_plot(
                run_dir / "val_miou.png",
                [("", lines)],
                title="Validation mIoU per modality subset",
                xlabel="epoch",
                ylabel="mIoU (%)",
                highlight="Average",
            )
        )
    return written


def _finite(values: Sequence[float]) -> bool:
    return any(v == v for v in values)
