"""Tests of the warm-up + polynomial learning-rate schedule."""

from __future__ import annotations

import pytest
import torch

from sgma_cli.engine.train.schedule import WarmupPoly


class TestWarmupPoly:
    def test_paper_shape(self) -> None:
        # 200 epochs x 100 steps, 10 warm-up epochs at 10 % of 6e-5
        s = WarmupPoly(
            base_lr=6e-5, total_steps=20_000, warmup_steps=1_000, warmup_ratio=0.1, power=0.9
        )
        assert s.lr(0) == pytest.approx(6e-6)
        assert s.lr(500) == pytest.approx(6e-5 * (1 - 500 / 20_000) ** 0.9 * 0.55)
        assert s.lr(1_000) == pytest.approx(6e-5 * (1 - 1_000 / 20_000) ** 0.9)
        assert s.lr(10_000) == pytest.approx(6e-5 * 0.5**0.9)
        assert s.lr(20_000) == 0.0
        lrs = [s.lr(t) for t in range(1_000, 20_001, 500)]
        assert all(a > b for a, b in zip(lrs, lrs[1:]))

    def test_min_lr_and_apply(self) -> None:
        s = WarmupPoly(base_lr=1.0, total_steps=10, power=1.0, min_lr=0.1)
        assert s.lr(10) == pytest.approx(0.1) and s.lr(5) == pytest.approx(0.55)
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=5.0)
        assert s.apply(opt, 5) == pytest.approx(0.55)
        assert opt.param_groups[0]["lr"] == pytest.approx(0.55)
        assert s.state_dict()["name"] == "warmup_poly"

    def test_bad(self) -> None:
        with pytest.raises(ValueError, match="total_steps"):
            WarmupPoly(base_lr=1.0, total_steps=0)
        with pytest.raises(ValueError, match="warmup_steps"):
            WarmupPoly(base_lr=1.0, total_steps=10, warmup_steps=-1)

    def test_keywords_only(self) -> None:
        with pytest.raises(TypeError):
            WarmupPoly(1.0, 10)  # type: ignore[misc]
