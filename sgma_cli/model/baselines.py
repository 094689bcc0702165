"""Baseline fusions in the same model family: ``sum`` and ``mean`` of modality features.

Same backbone and head as SGMA, no parameters of their own: at each pixel and scale the
features of the modalities that saw it are summed (or averaged). They answer the paper's
comparison "is SGF better than adding the features?" with everything else held fixed.
Their robustness maps are uniform over the available modalities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

__all__ = ["PoolingFusion"]


class PoolingFusion(nn.Module):
    """Sum or mean over the available modalities at each pixel, one scale.

    Args:
        reduction: ``"sum"`` or ``"mean"``.
    """

    def __init__(self, reduction: Literal["sum", "mean"] = "sum") -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"unknown reduction {reduction!r}; use 'sum' or 'mean'")
        self.reduction = reduction

    def forward(
        self, features: Tensor, modalities: Sequence[int], available: Tensor
    ) -> dict[str, Tensor]:
        """Encode: keep features ``(B, M_e, C, H, W)`` and availability ``(B, M_e, H*W)``."""
        return {"features": features, "available": available.flatten(2)}

    def fuse(
        self, cache: dict[str, Tensor], present: Tensor, size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """``(B, C, H, W)`` pooled feature and uniform ``(B, M_e, H, W)`` weights."""
        weights = (cache["available"] & present[:, :, None]).unflatten(2, size)  # (B, M_e, H, W)
        weights = weights.to(cache["features"].dtype)
        fused = (cache["features"] * weights[:, :, None]).sum(dim=1)
        count = weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        if self.reduction == "mean":
            fused = fused / count
        return fused, weights / count
