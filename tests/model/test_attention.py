"""Masked softmax over the modality axis: weights and gradients of the plain definition."""

from __future__ import annotations

import pytest
import torch

from sgma_cli.model.attention import masked_softmax


def _plain(scores: torch.Tensor, available: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over the available entries, written out; empty slots get all-zero weights."""
    masked = scores.masked_fill(~available, float("-inf"))
    empty = ~available.any(dim=dim, keepdim=True)
    weights = torch.softmax(masked.masked_fill(empty, 0.0), dim=dim)
    return weights * available


@pytest.mark.parametrize("scale", [1.0, 1e3], ids=["moderate", "saturated"])
def test_weights_and_gradients_match_the_plain_softmax(scale: float) -> None:
    """Also where one sensor takes all the weight (SP with "sum" prototypes saturates): the
    denominator is then exactly 1, where a clamp to 1 would stop the gradient."""
    g = torch.Generator().manual_seed(0)
    scores = (torch.randn(2, 4, 64, 3, 6, generator=g) * scale).requires_grad_()
    available = torch.rand(2, 1, 64, 3, 1, generator=g) > 0.3
    available[0, 0, :5] = False  # pixels no sensor saw
    upstream = torch.randn(2, 4, 64, 3, 6, generator=g)
    got = masked_softmax(scores, available, dim=3)
    (grad_got,) = torch.autograd.grad((got * upstream).sum(), scores)
    want = _plain(scores, available.expand_as(scores), dim=3)
    (grad_want,) = torch.autograd.grad((want * upstream).sum(), scores)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad_got, grad_want, atol=1e-6, rtol=1e-5)
    assert torch.isfinite(grad_got).all()
    assert (got[0, :, :5] == 0).all() and (grad_got[0, :, :5] == 0).all()
