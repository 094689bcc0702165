"""``train``: each checkpoint keeps its own scores; a write error is one line and resumes.

Validation is replaced by fixed scores (epoch 1 better than epoch 2), so ``best.pt`` and
``last.pt`` hold different validations and the metadata of each can be checked exactly.
Runs are one 32 px step per epoch, without the PNG plots, to stay quick.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch

from sgma_cli.config.checkpoint import load_checkpoint
from sgma_cli.engine.train.run_log import RunLog
from sgma_cli.errors import OutputError
from tests.conftest import make_tiny_dataset
from tests.reliability.conftest import Faults, quick_training, train_tiny


def _scored(path: Path) -> tuple[float, list[float]]:
    """``(val_average, [miou per subset])`` from a checkpoint's metadata."""
    metrics = load_checkpoint(path).meta.metrics
    subsets = sorted(v for k, v in metrics.items() if k.startswith("miou_"))
    assert set(metrics) - {k for k in metrics if k.startswith("miou_")} == {
        "val_average",
        "val_top1",
        "val_last1",
    }
    return round(metrics["val_average"], 6), [round(v, 6) for v in subsets]


def test_failed_save_resumes_and_each_checkpoint_keeps_its_scores(
    tmp_path: Path, faults: Faults, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_tiny_dataset(tmp_path / "data", tiles={"train": 4, "val": 2})
    run = tmp_path / "run"
    ckpt = run / "checkpoints"
    quick_training(monkeypatch, [0.5, 0.3])
    # torch.save: 1 best.pt (epoch 1), 2 last.pt (epoch 1), 3 last.pt (epoch 2): fails as
    # torch reports a full disk (a C++ check, not an OSError)
    full = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    faults.fail(torch, "save", at=3, error=full)
    with pytest.raises(OutputError) as caught:
        train_tiny(data, run, "schedule.epochs=2")
    assert str(caught.value) == (
        f"{ckpt}/last.pt: cannot write (write failed); continue with sgma train --resume"
    )
    assert not (run / "summary.json").exists()  # the run does not look finished
    assert sorted(p.name for p in ckpt.iterdir()) == ["best.pt", "last.pt"]  # no temporaries
    assert load_checkpoint(ckpt / "last.pt").meta.step == 1
    quick_training(monkeypatch, [0.3])
    result = train_tiny(data, run, "schedule.epochs=2", resume=True)
    assert result.resumed_from == 1 and result.step == 2
    assert json.loads((run / "summary.json").read_text())["best"]["average"] == 0.5
    # last.pt: the last validation (epoch 2); best.pt: the best one (epoch 1)
    assert _scored(ckpt / "last.pt") == (0.3, [0.3, 0.31, 0.32])
    assert _scored(ckpt / "best.pt") == (0.5, [0.5, 0.51, 0.52])
    assert load_checkpoint(ckpt / "best.pt").meta.step == 1


def test_metrics_csv_error_is_one_line(
    tmp_path: Path, faults: Faults, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_tiny_dataset(tmp_path / "data", tiles={"train": 4, "val": 2})
    run = tmp_path / "run"
    quick_training(monkeypatch, [0.4])
    faults.fail(RunLog, "_rewrite", at=1, code=errno.EIO)  # metrics.csv's header
    with pytest.raises(OutputError) as caught:
        train_tiny(data, run, "schedule.epochs=1")
    assert str(caught.value) == (
        f"{run}/metrics.csv: cannot write (Input/output error); run the command again"
    )
    assert not (run / "summary.json").exists() and not (run / "checkpoints" / "last.pt").exists()
