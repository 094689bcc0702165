"""``SubsetScorer`` and ``evaluate_subsets``: every subset from one encode per batch."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils.data import DataLoader

from sgma_cli.config.checkpoint import load_checkpoint
from sgma_cli.data.tile_dataset import TileDataset
from sgma_cli.engine.evaluate.scoring import (
    SubsetEvaluation,
    SubsetScorer,
    decode_group_size,
    evaluate_subsets,
)
from sgma_cli.engine.metrics import confusion_matrix
from sgma_cli.engine.subsets import all_subsets
from sgma_cli.engine.weights import load_model
from sgma_cli.model.sgma import SGMA
from tests.conftest import make_tiny_checkpoint, make_tiny_dataset

CPU = torch.device("cpu")
SUBSETS = all_subsets(["rgb", "dsm", "sar"])


def _fit(model: SGMA, data: Path, steps: int = 35) -> SGMA:
    """A few AdamW steps over all subsets, so that predictions differ between subsets."""
    stats = {n: (list(s[0]), list(s[1])) for n, s in _stats(data).items()}
    batch = next(iter(DataLoader(TileDataset(data, "train", stats=stats), batch_size=4)))
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        subset = SUBSETS[step % len(SUBSETS)]
        out = model({n: batch["image"][n] for n in subset}, batch["mask"])
        loss = F.cross_entropy(out.logits, batch["label"], ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _stats(data: Path) -> dict[str, tuple[list[float], list[float]]]:
    manifest = TileDataset(data, "train").manifest
    return {m.name: (m.stats.mean, m.stats.std) for m in manifest.modalities if m.stats is not None}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[SGMA, Path]:
    """A briefly trained tiny model and its dataset (shared by the module: ~2 s to fit)."""
    root = tmp_path_factory.mktemp("evaluate")
    data = make_tiny_dataset(root / "data")
    model, _ = load_model(make_tiny_checkpoint(root / "tiny.pt"))
    return _fit(model, data), data


def _loader(data: Path, split: str = "train", batch_size: int = 2) -> DataLoader:
    return DataLoader(TileDataset(data, split, stats=_stats(data)), batch_size=batch_size)


def _naive(model: SGMA, loader: DataLoader, subset: tuple[str, ...]) -> torch.Tensor:
    """Confusion of one subset, feeding only that subset's images through the whole model."""
    cm = torch.zeros(3, 3, dtype=torch.int64)
    with torch.no_grad():
        for batch in loader:
            out = model({n: batch["image"][n] for n in subset}, batch["mask"])
            cm += confusion_matrix(out.logits.argmax(1), batch["label"], 3, 255, out.valid)
    return cm


class TestCachedEqualsNaive:
    @pytest.fixture(scope="class")
    def cached(self, fitted: tuple[SGMA, Path]) -> SubsetEvaluation:
        model, data = fitted
        return evaluate_subsets(model, _loader(data), SUBSETS, device=CPU)

    @pytest.mark.parametrize("subset", SUBSETS, ids=["+".join(s) for s in SUBSETS])
    def test_identical_confusion(
        self, fitted: tuple[SGMA, Path], cached: SubsetEvaluation, subset: tuple[str, ...]
    ) -> None:
        model, data = fitted
        got = cached.confusion[cached.subsets.index(subset)]
        assert torch.equal(got, _naive(model, _loader(data), subset))

    def test_predictions_differ_between_subsets(self, cached: SubsetEvaluation) -> None:
        # otherwise the identity above would be trivial
        assert len({tuple(c.flatten().tolist()) for c in cached.confusion}) == len(SUBSETS)
        assert cached.metrics[0].miou > 0.6  # the fitted model has learnt something (0.78 here)

    def test_unseen_pixels_not_scored(self, cached: SubsetEvaluation) -> None:
        # 4 tiles of 64x64, 4 unlabelled pixels each; SAR misses the right half of 2 tiles
        labelled = 4 * (64 * 64 - 4)
        for subset, cm in zip(cached.subsets, cached.confusion):
            expected = labelled - 2 * 64 * 32 if subset == ("sar",) else labelled
            assert int(cm.sum()) == expected, subset

    def test_summary(self, cached: SubsetEvaluation) -> None:
        mious = [m.miou for m in cached.metrics]
        assert cached.summary.top1 == max(mious)
        assert cached.summary.last1 == min(mious)
        assert cached.summary.average == pytest.approx(sum(mious) / len(mious))

    def test_robustness_matches_model_output(
        self, fitted: tuple[SGMA, Path], cached: SubsetEvaluation
    ) -> None:
        model, data = fitted
        sums = torch.zeros(4, 3, dtype=torch.float64)
        counts = torch.zeros(4, 3, dtype=torch.float64)
        with torch.no_grad():
            for batch in _loader(data):
                out = model(batch["image"], batch["mask"])
                for i, r in enumerate(out.robustness):
                    seen = F.adaptive_avg_pool2d(batch["mask"].float(), r.shape[-2:])
                    # a cell counts where its modality saw >= half of it
                    # (all modalities saw >= half somewhere here)
                    seen = seen >= 0.5
                    sums[i] += (r * seen).sum(dim=(0, 2, 3)).double()
                    counts[i] += seen.sum(dim=(0, 2, 3)).double()
        torch.testing.assert_close(cached.robustness, sums / counts)
        assert cached.robustness.shape == (4, 3)
        assert bool(((cached.robustness > 0) & (cached.robustness < 1)).all())


class TestEvaluateSubsets:
    def test_decode_grouping_does_not_change_counts(self, fitted: tuple[SGMA, Path]) -> None:
        model, data = fitted
        one = evaluate_subsets(model, _loader(data, "val"), SUBSETS, device=CPU, max_decode_group=1)
        all_ = evaluate_subsets(
            model, _loader(data, "val"), SUBSETS, device=CPU, max_decode_group=7
        )
        for a, b in zip(one.confusion, all_.confusion):
            assert torch.equal(a, b)

    def test_restores_training_mode_and_reports_progress(self, fitted: tuple[SGMA, Path]) -> None:
        model, data = fitted
        calls: list[tuple[int, int]] = []
        model.train()
        try:
            evaluate_subsets(
                model,
                _loader(data, "val", 1),
                [("rgb",)],
                device=CPU,
                progress=lambda d, t: calls.append((d, t)),
            )
            assert model.training
        finally:
            model.eval()
        assert calls == [(1, 2), (2, 2)]

    def test_merge_of_shards_equals_whole(self, fitted: tuple[SGMA, Path]) -> None:
        model, data = fitted
        ds = TileDataset(data, "train", stats=_stats(data))
        whole = evaluate_subsets(model, DataLoader(ds, batch_size=4), SUBSETS, device=CPU)
        parts = [
            evaluate_subsets(
                model,
                DataLoader(torch.utils.data.Subset(ds, idx), batch_size=2),
                SUBSETS,
                device=CPU,
            )
            for idx in ([0, 2], [1, 3])
        ]
        merged = parts[0].merge(parts[1])
        for a, b in zip(merged.confusion, whole.confusion):
            assert torch.equal(a, b)
        torch.testing.assert_close(merged.robustness, whole.robustness)
        assert merged.summary == whole.summary
        rebuilt = SubsetEvaluation.from_counts(whole.subsets, whole.modalities, *whole.counts())
        assert rebuilt.summary == whole.summary

    def test_non_multiple_of_32_is_padded_and_cropped(self, fitted: tuple[SGMA, Path]) -> None:
        model, data = fitted
        batch = next(iter(_loader(data, "val")))
        crop = {
            "image": {n: x[..., :48, :40] for n, x in batch["image"].items()},
            "mask": batch["mask"][..., :48, :40],
            "label": batch["label"][..., :48, :40],
        }
        ev = evaluate_subsets(model, [crop], [("rgb", "dsm")], device=CPU)
        assert int(ev.confusion[0].sum()) == 2 * (48 * 40 - 4)

    def test_mask_over_given_images_only(self, fitted: tuple[SGMA, Path]) -> None:
        model, data = fitted
        batch = next(iter(_loader(data, "val")))
        partial = {
            "image": {"rgb": batch["image"]["rgb"]},
            "mask": batch["mask"][:, :1],
            "label": batch["label"],
        }
        ev = evaluate_subsets(model, [partial], [("rgb",)], device=CPU)
        ref = evaluate_subsets(model, [batch], [("rgb",)], device=CPU)
        assert torch.equal(ev.confusion[0], ref.confusion[0])
        assert torch.isnan(ev.robustness[:, 1:]).all()  # dsm, sar never encoded
        torch.testing.assert_close(ev.robustness[:, 0], torch.ones(4, dtype=torch.float64))

    def test_subset_not_in_batches(self, fitted: tuple[SGMA, Path]) -> None:
        model, data = fitted
        batch = next(iter(_loader(data, "val")))
        partial = {
            "image": {"rgb": batch["image"]["rgb"]},
            "mask": batch["mask"],
            "label": batch["label"],
        }
        with pytest.raises(ValueError, match=r"\['sar'\]"):
            evaluate_subsets(model, [partial], [("rgb", "sar")], device=CPU)
        with pytest.raises(ValueError, match="unknown modalities"):
            evaluate_subsets(model, [partial], [("nir",)], device=CPU)

    def test_scorer_outputs_every_subset_cropped(self, fitted: tuple[SGMA, Path]) -> None:
        model, data = fitted
        batch = next(iter(_loader(data, "val")))
        images = {n: x[..., :48, :40] for n, x in batch["image"].items()}
        mask, label = batch["mask"][..., :48, :40], batch["label"][..., :48, :40]
        scorer = SubsetScorer(model, [("sar", "rgb"), ("dsm",)], device=CPU, max_decode_group=2)
        assert scorer.subsets == [("rgb", "sar"), ("dsm",)]  # model order
        outs = list(scorer.outputs(images, mask))
        assert [o.index for o in outs] == [0, 1]
        assert [tuple(o.logits.shape) for o in outs] == [(2, 3, 48, 40)] * 2
        assert [tuple(o.valid.shape) for o in outs] == [(2, 48, 40)] * 2
        for o in outs:
            scorer.add(o.index, o.logits.argmax(1), label, o.valid)
        # the crop is scored as padded tiles: compare with the model on the padded crop
        padded = {n: F.pad(x, (0, 24, 0, 16)) for n, x in images.items() if n in ("rgb", "sar")}
        out = model(padded, F.pad(mask, (0, 24, 0, 16), value=False))
        expected = confusion_matrix(
            out.logits[..., :48, :40].argmax(1), label, 3, 255, out.valid[:, :48, :40]
        )
        assert torch.equal(scorer.result().confusion[0], expected)
        # no subset uses all three sensors: robustness comes from fusing all encoded ones
        assert not torch.isnan(scorer.result().robustness).any()

    def test_decode_group_size(self) -> None:
        assert decode_group_size(8, 512, 512, 256, 7) == 1  # 8*128*128 cells * 32 B * 256 = 1 GiB
        assert decode_group_size(2, 512, 512, 256, 7) == 4
        assert decode_group_size(1, 64, 64, 32, 7) == 7
        assert decode_group_size(64, 1024, 1024, 768, 7) == 1


def _ddp_worker(rank: int, port: int, data: str, ckpt: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model, _ = load_model(Path(ckpt))
        ds = TileDataset(Path(data), "train", stats=_stats(Path(data)))
        shard = torch.utils.data.Subset(ds, list(range(rank, len(ds), 2)))
        ev = evaluate_subsets(
            model, DataLoader(shard, batch_size=2), SUBSETS, device=CPU
        ).all_reduce()
        if rank == 0:
            Path(out).write_text(json.dumps([c.tolist() for c in ev.confusion]))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_all_reduce_single_rank_gloo(fitted: tuple[SGMA, Path]) -> None:
    model, data = fitted
    ev = evaluate_subsets(model, _loader(data, "val"), SUBSETS, device=CPU)
    assert ev.all_reduce() is ev  # no process group: unchanged
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    try:
        reduced = ev.all_reduce()
    finally:
        dist.destroy_process_group()
    assert [c.tolist() for c in reduced.confusion] == [c.tolist() for c in ev.confusion]
    assert reduced.summary == ev.summary


@pytest.mark.slow
def test_all_reduce_over_two_gloo_ranks(
    tmp_path: Path, tiny_dataset: Path, tiny_checkpoint: Path
) -> None:
    port = _free_port()
    out = tmp_path / "ddp.json"
    mp.spawn(_ddp_worker, args=(port, str(tiny_dataset), str(tiny_checkpoint), str(out)), nprocs=2)
    model, _ = load_model(tiny_checkpoint)
    whole = evaluate_subsets(
        model,
        DataLoader(TileDataset(tiny_dataset, "train", stats=_stats(tiny_dataset)), batch_size=2),
        SUBSETS,
        device=CPU,
    )
    assert json.loads(out.read_text()) == [c.tolist() for c in whole.confusion]
    assert load_checkpoint(tiny_checkpoint).meta.class_names == ["ground", "building", "tree"]
