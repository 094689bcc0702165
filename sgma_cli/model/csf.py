"""Class-aware Semantic Filter (CSF), paper Sec. III-C.

A 1x1 convolution shared by all modalities compresses a scale's semantic features from
``C_i`` channels to ``K`` class channels; its output ``c_m`` weights each pixel's
contribution to the class prototypes (Eq. 3). Its forward returns the per-modality
prototype partial sums directly, the only thing SGF needs from it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sgma_cli.model.prototypes import prototype_partials

__all__ = ["ClassSemanticFilter"]


class ClassSemanticFilter(nn.Module):
    """Semantic features ``(B, M, C, H, W)`` -> prototype partials ``(B, M, K, C)``.

    Args:
        channels: feature channels ``C_i``.
        num_classes: number of classes ``K``.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, num_classes, 1, device=device, dtype=dtype)

    def evidence(self, x: Tensor) -> Tensor:
        """Class evidence ``c``: ``(B, M, C, H, W)`` -> ``(B, M, K, H, W)``."""
        B, M = x.shape[:2]
        return self.proj(x.flatten(0, 1)).unflatten(0, (B, M))

    def forward(self, x: Tensor, available: Tensor | None = None) -> Tensor:
        """``(B, M, C, H, W)``, bool ``(B, M, H, W)`` -> partials ``(B, M, K, C)``."""
        c = self.evidence(x).flatten(3)  # (B, M, K, N)
        mask = available.flatten(2) if available is not None else None
        return prototype_partials(c, x.flatten(3), mask)
