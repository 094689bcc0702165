"""Issue 16: a run that never validated still leaves ``checkpoints/best.pt``, with a warning."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sgma_cli.config.checkpoint import load_checkpoint
from sgma_cli.config.recipe import load_recipe
from sgma_cli.engine.train import TrainOptions, train
from sgma_cli.engine.train.loop import TrainEvent
from tests.conftest import make_tiny_dataset

#: 2 steps of batch 2 over 4 tiles, tiny backbone.
SHORT = [
    "model.backbone='test_convnext'",
    "model.head_dim=32",
    "data.crop_size=64",
    "data.batch_size=2",
    "data.num_workers=0",
    "schedule.epochs=1",
    "schedule.warmup_epochs=0",
]


def _run(data: Path, run: Path, *extra: str) -> tuple[list[TrainEvent], object]:
    events: list[TrainEvent] = []
    options = TrainOptions(data_dir=data, run_dir=run, device="cpu")
    result = train(load_recipe(None, [*SHORT, *extra]), options, progress=events.append)
    return events, result


def test_no_val_split_leaves_last_weights_as_best(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data", tiles={"train": 4, "test": 2})
    events, result = _run(data, tmp_path / "run")
    best, last = (tmp_path / "run" / "checkpoints" / n for n in ("best.pt", "last.pt"))
    assert result.best_checkpoint == best and best.is_file()  # type: ignore[attr-defined]
    warnings = [e.message for e in events if e.kind == "info"]
    assert warnings == [
        "no validation (the dataset has no val tiles): best.pt holds the last weights (step 2), "
        "not the best validated ones"
    ]
    a, b = load_checkpoint(best), load_checkpoint(last)
    for name, tensor in a.model.items():
        torch.testing.assert_close(tensor, b.model[name], rtol=0, atol=0)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best"] == {} and summary["best_is_last"] is True


def test_val_every_zero_says_so(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data", tiles={"train": 4, "val": 2})
    events, _ = _run(data, tmp_path / "run", "train.val_every=0")
    assert [e.message.split(":")[0] for e in events if e.kind == "info"] == [
        "no validation (train.val_every = 0)"
    ]
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


def test_validated_run_keeps_its_best(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data", tiles={"train": 4, "val": 2})
    events, result = _run(data, tmp_path / "run")
    assert not [e for e in events if e.kind == "info"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best_is_last"] is False and summary["best"]["step"] == 2
