"""Tests of the warm-up + polynomial learning-rate schedule."""

from __future__ import annotations

import pytest
import torch

from sgma_cli.engine.train.schedule import WarmupPoly


class TestWarmupPoly:
    def test_paper_shape(self) -> None:
        # 200 epochs x 100 steps, 10 warm-up epochs at 10 % of 6e-5
        s = WarmupPoly(6e-5, 20_000, 1_000, 0.1, 0.9)
        assert s.lr(0) == pytest.approx(6e-6)
        assert s.lr(500) == pytest.approx(6e-5 * (1 - 500 / 20_000) ** 0.9 * 0.55)
        assert s.lr(1_000) == pytest.approx(6e-5 * (1 - 1_000 / 20_000) ** 0.9)
        assert s.lr(10_000) == pytest.approx(6e-5 * 0.5**0.9)
        assert s.lr(20_000) == 0.0
        lrs = [s.lr(t) for t in range(1_000, 20_001, 500)]
        assert all(a > b for a, b in zip(lrs, lrs[1:]))

    def test_min_lr_and_apply(self) -> None:
        s = WarmupPoly(1.0, 10, 0, power=1.0, min_lr=0.1)
        assert s.lr(10) == pytest.approx(0.1) and s.lr(5) == pytest.approx(0.55)
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=5.0)
        assert s.apply(opt, 5) == pytest.approx(0.55) and opt.param_groups[0][
            "lr"
        ] == pytest.approx(0.55)
        assert s.state_dict()["name"] == "warmup_poly"

    def test_bad(self) -> None:
        with pytest.raises(ValueError, match="total_steps"):
            WarmupPoly(1.0, 0)
