"""MAS (Eq. 11): less-trusted modalities are sampled more."""

from __future__ import annotations

import pytest
import torch

from sgma_cli.model.mas import mas_probabilities, sample_modalities


class TestProbabilities:
    def test_eq11_inverse_robustness(self) -> None:
        r = torch.tensor([0.7, 0.2, 0.1]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
        probs = mas_probabilities(r, torch.ones(1, 3, 4, 4, dtype=torch.bool))
        inv = torch.tensor([1 / 0.7, 1 / 0.2, 1 / 0.1])
        torch.testing.assert_close(probs[0], inv / inv.sum())
        assert probs[0, 2] > probs[0, 1] > probs[0, 0]  # more mass on the less trusted

    def test_mean_over_pixels_and_unseen_modalities(self) -> None:
        r = torch.zeros(1, 2, 1, 2)
        r[0, :, 0, 0] = torch.tensor([0.5, 0.5])  # both saw pixel 0
        r[0, :, 0, 1] = torch.tensor([1.0, 0.0])  # only modality 0 saw pixel 1
        available = r > 0
        probs = mas_probabilities(r, available)
        torch.testing.assert_close(probs[0], torch.tensor([0.75, 0.25]))

    @pytest.mark.parametrize("seed", range(3))
    def test_sum_to_one(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        r = torch.softmax(torch.randn(4, 3, 8, 8, generator=g), dim=1)
        available = torch.rand(4, 3, 8, 8, generator=g) > 0.3
        r = r * available
        r = r / r.sum(1, keepdim=True).clamp(min=1e-12)
        probs = mas_probabilities(r, available)
        torch.testing.assert_close(probs.sum(dim=1), torch.ones(4))
        assert (probs >= 0).all()

    def test_sample_without_pixels_falls_back_to_uniform(self) -> None:
        probs = mas_probabilities(
            torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2, dtype=torch.bool)
        )
        torch.testing.assert_close(probs, torch.full((1, 3), 1 / 3))


class TestSampling:
    def test_inverse_cdf_quantiles(self) -> None:
        probs = torch.tensor([[0.2, 0.0, 0.8]]).expand(5, 3)
        u = torch.tensor([0.0, 0.19, 0.2, 0.5, 0.999999])
        assert sample_modalities(probs, u).tolist() == [0, 0, 2, 2, 2]

    def test_never_zero_probability(self) -> None:
        probs = torch.tensor([[0.0, 1.0, 0.0]])
        for u in (0.0, 0.5, 1.0 - 1e-12):
            assert sample_modalities(probs, torch.tensor([u])).item() == 1

    def test_frequencies_follow_probabilities(self) -> None:
        probs = torch.tensor([[0.1, 0.3, 0.6]]).expand(20000, 3)
        choice = sample_modalities(
            probs, torch.rand(20000, generator=torch.Generator().manual_seed(0))
        )
        freq = torch.bincount(choice, minlength=3).float() / choice.numel()
        torch.testing.assert_close(freq, probs[0], atol=0.02, rtol=0)

    def test_a_sample_draws_the_same_in_any_batch(self) -> None:
        g = torch.Generator().manual_seed(1)
        probs = torch.softmax(torch.randn(6, 3, generator=g), dim=1)
        u = torch.rand(6, generator=g)
        whole = sample_modalities(probs, u)
        halves = torch.cat(
            [sample_modalities(probs[:3], u[:3]), sample_modalities(probs[3:], u[3:])]
        )
        assert torch.equal(whole, halves)
