"""Tests of the reproducible sample stream and RNG capture."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from sgma_cli.engine.train.randomness import (
    ResumableSampler,
    SeededSamples,
    ShardSampler,
    capture_rng,
    restore_rng,
    sample_seed,
)


class TestResumableSampler:
    def test_ranks_cover_the_single_process_batches(self) -> None:
        one = list(ResumableSampler(10, batch_size=4, seed=1))
        ranks = [
            list(ResumableSampler(10, batch_size=2, seed=1, rank=r, world_size=2)) for r in range(2)
        ]
        assert len(one) == 8 and all(len(r) == 4 for r in ranks)
        for step in range(2):
            mine = set(ranks[0][2 * step : 2 * step + 2]) | set(ranks[1][2 * step : 2 * step + 2])
            assert mine == set(one[4 * step : 4 * step + 4])

    def test_skip_and_epochs(self) -> None:
        sampler = ResumableSampler(12, batch_size=3, seed=0)
        sampler.set_epoch(2)
        full = list(sampler)
        sampler.set_epoch(2, skip_batches=3)
        assert list(sampler) == full[9:] and len(sampler) == 3
        assert all(epoch == 2 for epoch, _ in full)
        sampler.set_epoch(3)
        assert [i for _, i in sampler] != [i for _, i in full]

    def test_shard_sampler(self) -> None:
        shards = [list(ShardSampler(5, r, 2)) for r in range(2)]
        assert sorted(shards[0] + shards[1]) == list(range(5))


class _Base:
    def __init__(self) -> None:
        self.transform = None

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        return {"index": index}


class TestSeededSamples:
    def test_per_sample_randomness(self) -> None:
        ds = SeededSamples(_Base(), seed=0, num_modalities=3, modality_dropout=0.5)
        a, b = ds[(1, 2)], ds[(1, 2)]
        assert torch.equal(a["present"], b["present"]) and torch.equal(a["mas_u"], b["mas_u"])
        assert a["mas_u"].shape == (4,) and a["present"].any()
        draws = [ds[(e, i)]["present"] for e in range(20) for i in range(4)]
        assert all(p.any() for p in draws)
        assert 0.3 < torch.stack(draws).float().mean() < 0.8
        assert sample_seed(0, 1, 2) != sample_seed(0, 2, 1)

    def test_no_dropout_keeps_all(self) -> None:
        ds = SeededSamples(_Base(), seed=0, num_modalities=2)
        assert ds[(0, 0)]["present"].all()


class TestRng:
    def test_round_trip_weights_only(self, tmp_path) -> None:
        state = capture_rng()
        torch.save(state, tmp_path / "rng.pt")
        loaded = torch.load(tmp_path / "rng.pt", weights_only=True)
        expected = (random.random(), np.random.rand(), torch.rand(1).item())
        restore_rng(loaded)
        assert (random.random(), np.random.rand(), torch.rand(1).item()) == pytest.approx(
            expected, abs=0
        )
