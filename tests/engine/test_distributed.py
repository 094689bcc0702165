"""DDP on the CPU with gloo: 2 processes x batch b step exactly like 1 process x batch 2b."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from sgma_cli.config.checkpoint import load_checkpoint
from sgma_cli.engine.distributed import (
    AllReduceBatchNorm,
    DistContext,
    launch,
    sync_batchnorm,
    torchrun_env,
)
from sgma_cli.engine.train import TrainOptions, train
from tests.engine.train.test_job import tiny_recipe

#: One AdamW step. Its first update is ``lr·g/(|g| + eps)``: with the default eps a weight
#: whose true gradient is 0 (a bias before batch norm) moves by ±lr on float32 noise alone,
#: so the comparison runs with eps = 0.1 (the update is then proportional to the gradient for
#: small gradients) and also compares the gradients themselves (Adam's first moment).
ONE_STEP = [
    "schedule.max_steps=1",
    "train.val_every=0",
    "model.head_dropout=0.0",
    "schedule.warmup_epochs=0",
    "optim.lr=0.01",
    "optim.eps=0.1",
]


class TestDDPEquivalence:
    def test_two_processes_equal_one_with_double_batch(
        self, tiny_dataset: Path, tmp_path: Path
    ) -> None:
        single = train(
            tiny_recipe(*ONE_STEP, "data.batch_size=4"),
            TrainOptions(data_dir=tiny_dataset, run_dir=tmp_path / "one", device="cpu"),
        )
        double = train(
            tiny_recipe(*ONE_STEP, "data.batch_size=2"),
            TrainOptions(data_dir=tiny_dataset, run_dir=tmp_path / "two", device="cpu", nproc=2),
        )
        assert single.step == double.step == 1 and double.world_size == 2
        a = load_checkpoint(single.last_checkpoint, with_train_state=True)
        b = load_checkpoint(double.last_checkpoint, with_train_state=True)
        assert len(b.train["rng"]) == 2  # every rank's RNG state is saved
        initial = load_checkpoint(
            single.last_checkpoint
        ).model  # sanity: the step changed the weights
        moved = 0
        for key, value in a.model.items():
            torch.testing.assert_close(
                b.model[key].float(), value.float(), atol=1e-5, rtol=0, msg=key
            )
            moved += int(key.endswith("weight"))
        assert moved and initial.keys() == a.model.keys()
        for index, state in a.train["optimizer"]["state"].items():
            grad_a, grad_b = state["exp_avg"], b.train["optimizer"]["state"][index]["exp_avg"]
            torch.testing.assert_close(grad_b, grad_a, atol=1e-5, rtol=1e-3)
        # the head's batch norm saw the global batch in both runs
        torch.testing.assert_close(
            b.model["head.norm.running_var"], a.model["head.norm.running_var"], atol=1e-6, rtol=0
        )


class TestPieces:
    def test_single_process_is_untouched(self) -> None:
        model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
        assert type(sync_batchnorm(model, DistContext())[1]) is nn.BatchNorm2d

    def test_swap_keeps_state_dict(self) -> None:
        model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
        keys = set(model.state_dict())
        swapped = sync_batchnorm(model, DistContext(rank=0, world_size=2))
        assert isinstance(swapped[1], AllReduceBatchNorm) and set(swapped.state_dict()) == keys
        x = torch.randn(4, 2, 3, 3)
        swapped.eval()
        torch.testing.assert_close(
            swapped[1](x),
            nn.functional.batch_norm(
                x, torch.zeros(2), torch.ones(2), swapped[1].weight, swapped[1].bias
            ),
        )

    def test_torchrun_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"):
            monkeypatch.delenv(key, raising=False)
        assert torchrun_env() is None
        monkeypatch.setenv("RANK", "3")
        monkeypatch.setenv("WORLD_SIZE", "8")
        monkeypatch.setenv("LOCAL_RANK", "1")
        monkeypatch.setenv("MASTER_ADDR", "node0")
        assert torchrun_env() == (3, 8, 1)

    def test_launch_single(self) -> None:
        assert launch(lambda rank, world, x: (rank, world, x), 1, (5,)) == (0, 1, 5)
