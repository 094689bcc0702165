"""Per-pixel modality availability, from input resolution down to each feature scale.

A sensor may cover only part of a tile (a SAR swath that ends mid-scene, DSM nodata
holes). Availability is a boolean mask ``(B, M, H, W)``; SGMA's attention and prototype
sums use only the modalities that saw a pixel. A feature cell at stride ``s`` covers
``s x s`` input pixels; a modality counts there when it saw any of them. The rule looks at
each modality alone, so a modality's availability never depends on which others are
present (the encode/fuse split relies on this), and no pixel a sensor saw goes dark at
any scale.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["downsample_availability"]


def downsample_availability(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """``(B, M, H, W)`` bool -> ``(B, M, h, w)`` bool at a feature scale of size ``(h, w)``."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask.bool()
    H, W = mask.shape[-2:]
    if H % size[0] == 0 and W % size[1] == 0:  # the same cells, and exportable with symbolic H, W
        return F.max_pool2d(mask.float(), (H // size[0], W // size[1])) > 0
    return F.adaptive_max_pool2d(mask.float(), size) > 0
