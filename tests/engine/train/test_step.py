"""Tests of the training forward (SGF + MAS with per-sample draws) and the loss."""

from __future__ import annotations

import math

import pytest
import torch

from sgma_cli.engine.train.step import StepOutput, TrainForward, branch_loss, joint_loss
from sgma_cli.model.sgma import SGMA


def _model() -> SGMA:
    torch.manual_seed(0)
    return SGMA([("rgb", 3), ("dsm", 1), ("sar", 1)], 3, "test_convnext", head_dim=16)


def _batch(B: int = 2, size: int = 64) -> tuple[dict, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = {
        "rgb": torch.randn(B, 3, size, size, generator=g),
        "dsm": torch.randn(B, 1, size, size, generator=g),
        "sar": torch.randn(B, 1, size, size, generator=g),
    }
    return images, torch.ones(B, 3, size, size, dtype=torch.bool)


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


class TestJointLoss:
    """λ_SGF·CE(SGF) + λ_MAS·CE(MAS) with the paper's weights swapped for others."""

    @staticmethod
    def _output(with_mas: bool = True) -> tuple[StepOutput, torch.Tensor]:
        # two classes; logits (0, ln 3) everywhere: p = (1/4, 3/4)
        logits = torch.zeros(1, 2, 2, 2)
        logits[:, 1] = math.log(3.0)
        label = torch.tensor([[[0, 1], [1, 255]]])
        valid_sgf = torch.tensor([[[True, True], [False, True]]])  # scored: label 0, label 1
        valid_mas = torch.tensor([[[True, False], [False, True]]])  # scored: label 0
        out = StepOutput(
            logits,
            logits.clone() if with_mas else None,
            valid_sgf,
            valid_mas if with_mas else None,
            None,
        )
        return out, label

    def test_non_default_lambdas(self) -> None:
        out, label = self._output()
        loss, values = joint_loss(out, label, 255, 0.5, 3.0, lambda t: t, 1)
        sgf = (math.log(4.0) + math.log(4.0 / 3.0)) / 2  # mean over its 2 scored pixels
        mas = math.log(4.0)  # its 1 scored pixel
        assert float(loss) == pytest.approx(0.5 * sgf + 3.0 * mas, rel=1e-6)
        assert values["loss_sgf"] == pytest.approx(sgf, rel=1e-6)
        assert values["loss_mas"] == pytest.approx(mas, rel=1e-6)
        assert values["loss"] == pytest.approx(0.5 * sgf + 3.0 * mas, rel=1e-6)

    def test_two_ranks_with_the_same_batch_give_the_same_figures(self) -> None:
        """Counts are global (doubled) and the loss is scaled by the world size, which DDP's
        gradient averaging undoes: the same numbers as one process."""
        out, label = self._output()
        loss, values = joint_loss(out, label, 255, 0.5, 3.0, lambda t: 2 * t, 2)
        sgf, mas = (math.log(4.0) + math.log(4.0 / 3.0)) / 2, math.log(4.0)
        assert float(loss) == pytest.approx(0.5 * sgf + 3.0 * mas, rel=1e-6)
        assert values["loss"] == pytest.approx(0.5 * sgf + 3.0 * mas, rel=1e-6)

    def test_without_mas(self) -> None:
        out, label = self._output(with_mas=False)
        loss, values = joint_loss(out, label, 255, 0.5, 3.0, lambda t: t, 1)
        sgf = (math.log(4.0) + math.log(4.0 / 3.0)) / 2
        assert float(loss) == pytest.approx(0.5 * sgf, rel=1e-6)
        assert "loss_mas" not in values and values["loss"] == pytest.approx(0.5 * sgf, rel=1e-6)


class TestGradients:
    """Through the real loss (both branches, per-pixel masks), not a stand-in."""

    @staticmethod
    def _setup(prototypes: str) -> tuple[TrainForward, tuple, torch.Tensor]:
        torch.manual_seed(0)
        model = SGMA(
            [("rgb", 3), ("dsm", 1), ("sar", 1)],
            3,
            "test_convnext",
            stem="learned",
            head_dim=16,
            head_dropout=0.0,
            prototypes=prototypes,
        ).eval()  # no dropout: the loss is a deterministic function of the weights
        images, mask = _batch(size=32)
        mask[0, 2, :, 20:] = False  # the SAR swath ends mid-tile
        mask[1, 0, 4:20, 4:12] = False  # an RGB hole
        label = torch.randint(0, 3, (2, 32, 32), generator=torch.Generator().manual_seed(1))
        present = torch.ones(2, 3, dtype=torch.bool)
        u = torch.tensor([[0.1, 0.5, 0.9, 0.3], [0.7, 0.2, 0.4, 0.99]])
        return TrainForward(model), (images, mask, present, u), label

    @staticmethod
    def _loss(forward: TrainForward, inputs: tuple, label: torch.Tensor) -> torch.Tensor:
        out = forward(*inputs)
        return joint_loss(out, label, 255, 2.0, 1.0, lambda t: t, 1)[0]

    @pytest.mark.parametrize("prototypes", ["sum", "mean", "softmax"])
    def test_every_parameter_gets_a_finite_gradient(self, prototypes: str) -> None:
        forward, inputs, label = self._setup(prototypes)
        self._loss(forward, inputs, label).backward()
        params = dict(forward.model.named_parameters())
        missing = [n for n, p in params.items() if p.grad is None or not p.grad.abs().sum() > 0]
        assert missing == []
        assert all(torch.isfinite(p.grad).all() for p in params.values())
