"""Class-aware Semantic Filter (CSF), paper Sec. III-C.

A 1x1 convolution shared by all modalities compresses a scale's semantic features from
``C_i`` channels to ``K`` class channels; its output ``c_m`` weights each pixel's
contribution to the class prototypes (Eq. 3). Its forward returns the per-modality
prototype partials directly (see :mod:`sgma_cli.model.prototypes`), the only thing SGF
needs from it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sgma_cli.model.prototypes import PrototypeKind, check_kind, prototype_partials

__all__ = ["ClassSemanticFilter"]


class ClassSemanticFilter(nn.Module):
    """Semantic features ``(B, M, C, H, W)`` -> prototype partials (``(B, M, K, C)`` and norms).

    Args:
        channels: feature channels ``C_i``.
        num_classes: number of classes ``K``.
        prototypes: how Eq. 3 weights its terms: ``"sum"``, ``"mean"`` or ``"softmax"``.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        prototypes: PrototypeKind = "sum",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_kind(prototypes)
        self.prototypes: PrototypeKind = prototypes
        self.proj = nn.Conv2d(channels, num_classes, 1, device=device, dtype=dtype)

    def evidence(self, x: Tensor) -> Tensor:
        """Class evidence ``c``: ``(B, M, C, H, W)`` -> ``(B, M, K, H, W)``."""
        B, M = x.shape[:2]
        return self.proj(x.flatten(0, 1)).unflatten(0, (B, M))

    def forward(self, x: Tensor, available: Tensor | None = None) -> dict[str, Tensor]:
        """``(B, M, C, H, W)``, bool ``(B, M, H, W)`` -> partials (see ``prototype_partials``)."""
        c = self.evidence(x).flatten(3)  # (B, M, K, N)
        mask = available.flatten(2) if available is not None else None
        return prototype_partials(c, x.flatten(3), mask, self.prototypes)
