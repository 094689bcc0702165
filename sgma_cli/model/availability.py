"""Per-pixel modality availability, from input resolution down to each feature scale.

A sensor may cover only part of a tile (a SAR swath that ends mid-scene, DSM nodata
holes). Availability is a boolean mask ``(B, M, H, W)``; SGMA's attention and prototype
sums use only the modalities that saw a pixel. A feature cell at stride ``s`` covers
``s x s`` input pixels: a modality counts there when it saw at least half of them, and
where no modality reaches half, the modalities that saw any of them count instead, so a
cell that some sensor saw never goes dark.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["downsample_availability", "full_availability"]


def full_availability(batch: int, modalities: int, size: tuple[int, int], device: torch.device) -> Tensor:
    """All-true availability ``(B, M, H, W)``."""
    return torch.ones(batch, modalities, *size, dtype=torch.bool, device=device)


def downsample_availability(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """``(B, M, H, W)`` bool -> ``(B, M, h, w)`` bool at a feature scale of size ``(h, w)``."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask.bool()
    frac = F.adaptive_avg_pool2d(mask.float(), size)  # (B, M, h, w) covered fraction
    half = frac >= 0.5
    any_cover = frac > 0
    none_half = ~half.any(dim=1, keepdim=True)
    return torch.where(none_half, any_cover, half)
