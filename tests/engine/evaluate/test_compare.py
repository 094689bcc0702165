"""``evaluate_and_compare``: what ``sgma evaluate`` runs, with ``--compare`` and ``--out``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from sgma_cli.config.checkpoint import load_checkpoint, save_checkpoint
from sgma_cli.engine.evaluate.compare import evaluate_and_compare
from sgma_cli.engine.evaluate.job import EvaluateOptions, evaluate_checkpoint
from sgma_cli.engine.evaluate.scene import SceneSource
from sgma_cli.engine.evaluate.scoring import Progress
from sgma_cli.errors import CheckpointError, UsageError
from tests.conftest import make_tiny_checkpoint, make_tiny_scene

OPTIONS = EvaluateOptions(subsets="rgb;dsm,sar", device="cpu", batch_size=1)


class _Recorder:
    """A ``progress_for`` that records which checkpoint reported which batch."""

    def __init__(self) -> None:
        self.entered: list[str] = []
        self.calls: list[tuple[str, int, int]] = []

    @contextmanager
    def __call__(self, path: Path) -> Iterator[Progress]:
        self.entered.append(path.name)
        yield lambda done, total: self.calls.append((path.name, done, total))


class TestEvaluateAndCompare:
    def test_compare_on_tiles_with_report(
        self, tmp_path: Path, tiny_checkpoint: Path, tiny_dataset: Path
    ) -> None:
        other = make_tiny_checkpoint(tmp_path / "sum.pt", fusion="sum", seed=1)
        progress, out = _Recorder(), tmp_path / "report"
        done = evaluate_and_compare(
            tiny_checkpoint,
            [other],
            data_dir=tiny_dataset,
            options=OPTIONS,
            out=out,
            progress_for=progress,
        )
        assert progress.entered == ["tiny.pt", "sum.pt"]
        assert progress.calls == [(n, d, 2) for n in ("tiny.pt", "sum.pt") for d in (1, 2)]
        assert [e.checkpoint for e in done.evaluations] == [tiny_checkpoint, other]
        (theirs,) = done.others
        assert theirs.result.subsets == done.main.result.subsets == [("rgb",), ("dsm", "sar")]
        alone = evaluate_checkpoint(other, data_dir=tiny_dataset, options=OPTIONS).result
        for a, b in zip(theirs.result.confusion, alone.confusion):
            assert torch.equal(a, b)
        assert [p.name for p in done.report] == [
            "confusion_full.png",
            "metrics.json",
            "miou_per_subset.png",
            "report.md",
            "robustness.png",
            "subsets.csv",
        ]
        metrics = json.loads((out / "metrics.json").read_text())
        assert [c["checkpoint"] for c in metrics["compare"]] == [str(other)]

    def test_out_checked_before_anything_runs(
        self, tmp_path: Path, tiny_checkpoint: Path, tiny_dataset: Path
    ) -> None:
        out = tmp_path / "file.txt"
        out.write_text("x")
        progress = _Recorder()
        with pytest.raises(UsageError, match="exists and is not a folder"):
            evaluate_and_compare(
                tiny_checkpoint, data_dir=tiny_dataset, out=out, progress_for=progress
            )
        assert progress.entered == []

    def test_other_classes_refused_before_scoring(
        self, tmp_path: Path, tiny_checkpoint: Path, tiny_dataset: Path
    ) -> None:
        ckpt = load_checkpoint(tiny_checkpoint)
        classes = [c.model_copy(update={"name": f"c{i}"}) for i, c in enumerate(ckpt.meta.classes)]
        ckpt.meta = ckpt.meta.model_copy(update={"classes": classes})
        other = save_checkpoint(tmp_path / "renamed.pt", ckpt)
        progress = _Recorder()
        with pytest.raises(CheckpointError, match="only models of the same classes") as err:
            evaluate_and_compare(
                tiny_checkpoint,
                [other],
                data_dir=tiny_dataset,
                options=OPTIONS,
                progress_for=progress,
            )
        assert err.value.path == other
        assert {name for name, _, _ in progress.calls} == {"tiny.pt"}

    def test_compare_on_a_scene(self, tmp_path: Path, tiny_checkpoint: Path) -> None:
        scene = make_tiny_scene(tmp_path / "scene", size=64)
        source = SceneSource(scene, scene / "labels.tif", window=64)
        done = evaluate_and_compare(
            tiny_checkpoint, [tiny_checkpoint], scene=source, options=OPTIONS
        )
        main, (again,) = done.main, done.others
        assert main.split == again.split == "scene" and main.tiles == 1
        assert main.result.subsets == again.result.subsets == [("rgb",), ("dsm", "sar")]
        for a, b in zip(main.result.confusion, again.result.confusion):
            assert torch.equal(a, b)
        assert int(main.result.confusion[0].sum()) == 64 * 64
        assert done.report == ()
