"""Multi-head attention over the modality axis, as used by SGF's SP and RP.

Parameters follow ``nn.MultiheadAttention`` (separate q/k/v/out projections, each with
bias), so a reference built on ``F.multi_head_attention_forward`` can share them. What
differs is the layout: SGMA attends, at every pixel, over the M modality features there,
so keys and values are ``(B, M, N, C)`` with ``N = H*W`` pixels, and modalities that did
not see a pixel are masked out of its softmax.

Keys and values depend only on one modality's features, never on which other modalities
are present, so :class:`KeyValueProjection` runs once per modality at encode time and the
subset-dependent part (queries, softmax, weighted sum, output projection) runs at fuse time.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["KeyValueProjection", "ModalityAttention", "masked_softmax"]


class KeyValueProjection(nn.Module):
    """The key and value projections of one attention, ``(..., C) -> (..., C), (..., C)``."""

    def __init__(
        self, dim: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.k_proj = nn.Linear(dim, dim, device=device, dtype=dtype)
        self.v_proj = nn.Linear(dim, dim, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Project features ``(..., C)`` to keys and values ``(..., C)``."""
        return self.k_proj(x), self.v_proj(x)


class ModalityAttention(nn.Module):
    """Weights and head bookkeeping of one multi-head attention over modalities.

    Args:
        dim: feature channels ``C`` (queries, keys and values share it).
        num_heads: attention heads; must divide ``dim``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the channel count {dim}")
        dd = {"device": device, "dtype": dtype}
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q_proj = nn.Linear(dim, dim, **dd)
        self.kv = KeyValueProjection(dim, **dd)
        self.out_proj = nn.Linear(dim, dim, **dd)

    def split_heads(self, x: Tensor) -> Tensor:
        """``(..., C)`` -> ``(..., heads, C / heads)``."""
        return x.unflatten(-1, (self.num_heads, self.head_dim))


def masked_softmax(scores: Tensor, available: Tensor | None, dim: int) -> Tensor:
    """Softmax over ``dim`` where ``available`` is False gets weight 0 (``None``: plain softmax).

    ``available`` broadcasts against ``scores`` (e.g. ``(B, 1, N, M, 1)`` over heads and
    queries). A slot with no available entry gets all-zero weights (never NaN, also in
    backward): after the max-shift the largest available term is ``exp(0) = 1``, so the
    denominator is at least 1 wherever something was available; only the empty slots,
    whose numerators are all 0, have a zero denominator, replaced by 1.
    """
    if available is None:
        return torch.softmax(scores, dim=dim)
    scores = scores.masked_fill(~available, float("-inf"))
    shift = scores.detach().amax(dim=dim, keepdim=True)  # softmax is shift-invariant
    shift = shift.masked_fill(shift == float("-inf"), 0.0)  # empty slots: nothing to shift
    weights = torch.exp(scores - shift)  # 0 where unavailable
    total = weights.sum(dim=dim, keepdim=True)
    # not clamp(): a saturated softmax has a sum of exactly 1, where clamp's gradient is 0
    return weights / torch.where(total > 0, total, torch.ones_like(total))
