"""Tests of the training forward (SGF + MAS with per-sample draws) and the loss."""

from __future__ import annotations

import torch

from sgma_cli.engine.train.step import TrainForward, branch_loss
from sgma_cli.model.sgma import SGMA


def _model() -> SGMA:
    torch.manual_seed(0)
    return SGMA([("rgb", 3), ("dsm", 1), ("sar", 1)], 3, "test_convnext", head_dim=16)


def _batch(B: int = 2) -> tuple[dict, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = {
        "rgb": torch.randn(B, 3, 64, 64, generator=g),
        "dsm": torch.randn(B, 1, 64, 64, generator=g),
        "sar": torch.randn(B, 1, 64, 64, generator=g),
    }
    return images, torch.ones(B, 3, 64, 64, dtype=torch.bool)


class TestTrainForward:
    def test_branches(self) -> None:
        model = _model()
        images, mask = _batch()
        out = TrainForward(model)(
            images, mask, torch.ones(2, 3, dtype=torch.bool), torch.rand(2, 4)
        )
        assert out.logits_sgf.shape == out.logits_mas.shape == (2, 3, 64, 64)
        torch.testing.assert_close(out.mas_probs.sum(-1), torch.ones(4, 2))

    def test_same_draw_in_any_batch(self) -> None:
        """A sample's MAS choice depends on its own uniforms, not on its batch mates."""
        model = _model().eval()
        images, mask = _batch(2)
        u = torch.tensor([[0.1, 0.5, 0.9, 0.3], [0.7, 0.2, 0.4, 0.6]])
        present = torch.ones(2, 3, dtype=torch.bool)
        both = TrainForward(model)(images, mask, present, u)
        first = TrainForward(model)(
            {k: v[:1] for k, v in images.items()}, mask[:1], present[:1], u[:1]
        )
        torch.testing.assert_close(first.logits_mas[0], both.logits_mas[0], atol=1e-5, rtol=1e-5)

    def test_dropped_modality_is_not_sampled(self) -> None:
        model = _model()
        images, mask = _batch()
        present = torch.tensor([[True, False, False], [False, True, True]])
        out = TrainForward(model)(images, mask, present, torch.rand(2, 4))
        assert (out.mas_probs[:, 0, 1:] == 0).all() and (out.mas_probs[:, 1, 0] == 0).all()

    def test_sgf_only(self) -> None:
        out = TrainForward(_model(), mas=False)(
            *_batch(), torch.ones(2, 3, dtype=torch.bool), torch.rand(2, 4)
        )
        assert out.logits_mas is None and out.mas_probs is None


class TestBranchLoss:
    def test_mean_over_valid_labelled_pixels(self) -> None:
        logits = torch.zeros(1, 3, 2, 2)
        label = torch.tensor([[[0, 1], [255, 2]]])
        valid = torch.tensor([[[True, False], [True, True]]])
        loss, value = branch_loss(logits, label, valid, 255, lambda t: t, 1)
        expected = torch.log(torch.tensor(3.0))
        torch.testing.assert_close(loss, expected)
        torch.testing.assert_close(value.float(), expected)
        scaled, _ = branch_loss(
            logits, label, valid, 255, lambda t: t * 2, 2
        )  # 2 ranks, same counts
        torch.testing.assert_close(scaled, expected)
