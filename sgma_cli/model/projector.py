"""Modality-specific Projector (MP), paper Sec. III-C and Fig. 3.

One MP per modality per scale moves that modality's features into a shared semantic
space: three depth-wise convolutions (11x11, 7x7, 3x3), applied as a chain so the
receptive field grows to 19x19, then a 1x1 point-wise convolution. The paper does not say
chain or parallel; both have the same parameter count (Table IX), we take the chain.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sgma_cli.config.model import check_mp_kernels

__all__ = ["ModalityProjector"]


class ModalityProjector(nn.Module):
    """Depth-wise chain + point-wise projection, ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        channels: feature channels ``C_i`` at this scale.
        kernel_sizes: depth-wise kernel sizes, applied in order (paper: 11, 7, 3).
        act_layer: activation between the depth-wise chain and the point-wise conv.
    """

    def __init__(
        self,
        channels: int,
        kernel_sizes: Sequence[int] = (11, 7, 3),
        act_layer: type[nn.Module] = nn.GELU,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kernel_sizes = check_mp_kernels(kernel_sizes)
        dd = {"device": device, "dtype": dtype}
        self.depthwise = nn.Sequential(
            *(
                nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels, **dd)
                for k in kernel_sizes
            )
        )
        self.act = act_layer()
        self.pointwise = nn.Conv2d(channels, channels, 1, **dd)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)``."""
        return self.pointwise(self.act(self.depthwise(x)))
