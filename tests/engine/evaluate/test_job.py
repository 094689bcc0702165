"""The ``sgma evaluate`` tile job: options, the dataset checks, scoring like another evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from sgma_cli.data.tile_dataset import TileDataset
from sgma_cli.engine.evaluate.job import (
    CheckpointEvaluation,
    EvaluateOptions,
    check_comparable,
    evaluate_checkpoint,
)
from sgma_cli.engine.evaluate.scoring import evaluate_subsets
from sgma_cli.engine.weights import load_model
from sgma_cli.errors import CheckpointError, UsageError
from tests.conftest import make_tiny_checkpoint

CPU_OPTIONS = EvaluateOptions(device="cpu", batch_size=2)


class TestEvaluateOptions:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"batch_size": 0}, "--batch-size 0: give 1 or more"),
            ({"workers": -1}, "--workers -1: give 0 or more"),
        ],
    )
    def test_bad_values(self, kwargs: dict[str, int], message: str) -> None:
        with pytest.raises(UsageError, match=message):
            EvaluateOptions(**kwargs)  # type: ignore[arg-type]

    def test_device(self) -> None:
        assert EvaluateOptions(device="cpu").torch_device() == torch.device("cpu")
        assert EvaluateOptions(device=torch.device("cpu")).torch_device().type == "cpu"


class TestEvaluateCheckpoint:
    def test_equals_evaluate_subsets_on_the_split(
        self, tiny_checkpoint: Path, tiny_dataset: Path
    ) -> None:
        options = EvaluateOptions(subsets="sar;rgb,dsm", device="cpu", batch_size=2)
        ev = evaluate_checkpoint(tiny_checkpoint, data_dir=tiny_dataset, options=options)
        assert (ev.split, ev.tiles, ev.skipped, ev.data_dir) == ("test", 2, (), tiny_dataset)
        assert ev.result.subsets == [("sar",), ("rgb", "dsm")]
        model, meta = load_model(tiny_checkpoint)
        stats = {m.name: (m.mean, m.std) for m in meta.modalities}
        loader = DataLoader(TileDataset(tiny_dataset, "test", stats=stats), batch_size=1)
        ref = evaluate_subsets(model, loader, ev.result.subsets, device=torch.device("cpu"))
        for a, b in zip(ev.result.confusion, ref.confusion):
            assert torch.equal(a, b)
        # 2 test tiles of 64², 4 unlabelled pixels each; sar alone misses half of one tile
        assert [int(c.sum()) for c in ev.result.confusion] == [2 * 4092 - 64 * 32, 2 * 4092]

    def test_like_takes_its_dataset_and_subsets(
        self, tmp_path: Path, tiny_checkpoint: Path, tiny_dataset: Path
    ) -> None:
        options = EvaluateOptions(subsets="dsm;rgb", device="cpu", batch_size=2)
        main = evaluate_checkpoint(tiny_checkpoint, data_dir=tiny_dataset, options=options)
        other = make_tiny_checkpoint(tmp_path / "sum.pt", fusion="sum", seed=1)
        # the other checkpoint names no dataset: like= supplies main's, and main's subsets
        ev = evaluate_checkpoint(other, options=CPU_OPTIONS, like=main)
        assert ev.data_dir == tiny_dataset
        assert ev.result.subsets == main.result.subsets == [("dsm",), ("rgb",)]
        assert [int(c.sum()) for c in ev.result.confusion] == [2 * 4092, 2 * 4092]

    def test_no_dataset_named(self, tiny_checkpoint: Path) -> None:
        with pytest.raises(UsageError, match="pass the prepared dataset with --data DATA_DIR"):
            evaluate_checkpoint(tiny_checkpoint, options=CPU_OPTIONS)


class TestCheckComparable:
    @pytest.fixture
    def main(self, tiny_checkpoint: Path, tiny_dataset: Path) -> CheckpointEvaluation:
        options = EvaluateOptions(subsets="rgb,sar;dsm", device="cpu", batch_size=2)
        return evaluate_checkpoint(tiny_checkpoint, data_dir=tiny_dataset, options=options)

    def test_same_model_passes(self, main: CheckpointEvaluation) -> None:
        check_comparable(main.meta, main, main.checkpoint)

    def test_other_classes(self, main: CheckpointEvaluation, tmp_path: Path) -> None:
        classes = [c.model_copy(update={"name": f"c{i}"}) for i, c in enumerate(main.meta.classes)]
        meta = main.meta.model_copy(update={"classes": classes})
        with pytest.raises(CheckpointError, match=r"classes \['c0', 'c1', 'c2'\] differ from tiny"):
            check_comparable(meta, main, tmp_path / "other.pt")

    def test_modality_of_a_subset_missing(self, main: CheckpointEvaluation, tmp_path: Path) -> None:
        meta = main.meta.model_copy(update={"modalities": main.meta.modalities[:2]})
        message = r"subset 'rgb\+sar' names unknown modalities \['sar'\]; known: rgb, dsm"
        with pytest.raises(CheckpointError, match=message) as err:
            check_comparable(meta, main, tmp_path / "other.pt")
        assert err.value.path == tmp_path / "other.pt"
