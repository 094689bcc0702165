"""SegFormer-style all-MLP decoder over the 4 fused scales.

Each scale is projected to ``embed_dim`` channels by a per-pixel linear layer at its own
resolution, upsampled to the finest scale (stride 4), concatenated, fused by a 1x1
convolution with batch norm, and classified (SegFormer's decoder).

Read literally, the fuse layer costs ``4·E²`` MACs per pixel at 1/4 resolution (38.7 G for
E = 768 at 512², more than the backbone), and training runs the head twice while
``evaluate`` runs it once per modality subset. Projection, upsampling and fuse are all
linear and bilinear weights sum to 1, so ``W · cat_i(up(P_i f_i)) = Σ_i up((W_i P_i) f_i)``
exactly: the forward composes each scale's projection with its slice of the fuse weight
(an ``E x C_i`` matrix, computed once per call) and applies it at the scale's own
resolution. Same parameters, same outputs, no ``E²`` work per pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MLPDecoder"]


class MLPDecoder(nn.Module):
    """Fused features at 4 scales -> class logits at the finest scale.

    Args:
        in_channels: channels ``C_i`` of the 4 scales, finest first.
        num_classes: output classes ``K``.
        embed_dim: decoder width ``E``.
        dropout: dropout before the classifier.
        norm_layer: normalisation after the fuse conv (batch norm; SyncBatchNorm under DDP).
        act_layer: activation after the norm.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        embed_dim: int = 256,
        dropout: float = 0.1,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}")
        dd = {"device": device, "dtype": dtype}
        self.project = nn.ModuleList(nn.Conv2d(c, embed_dim, 1, **dd) for c in in_channels)
        self.fuse = nn.Conv2d(embed_dim * len(in_channels), embed_dim, 1, bias=False, **dd)
        self.norm = norm_layer(embed_dim, **dd)
        self.act = act_layer()
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(embed_dim, num_classes, 1, **dd)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """``[(B, C_i, H_i, W_i)]`` -> logits ``(B, K, H_1, W_1)``."""
        size = features[0].shape[-2:]
        E, S = self.fuse.out_channels, len(features)
        fuse = self.fuse.weight.flatten(1)  # (E, S*E), scales concatenated coarsest first
        fused: Tensor | None = None
        for i, (proj, f) in enumerate(zip(self.project, features)):
            w_i = fuse[:, (S - 1 - i) * E : (S - i) * E]  # (E, E): this scale's slice
            weight = (w_i @ proj.weight.flatten(1))[:, :, None, None]  # (E, C_i, 1, 1)
            y = F.conv2d(f, weight, w_i @ proj.bias)  # (B, E, H_i, W_i)
            if i:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            fused = y if fused is None else fused + y
        x = self.act(self.norm(fused))
        return self.classifier(self.dropout(x))

    def forward_unfolded(self, features: Sequence[Tensor]) -> Tensor:
        """The decoder as written (project, upsample, concatenate, fuse), for reference."""
        size = features[0].shape[-2:]
        up = [
            F.interpolate(proj(f), size=size, mode="bilinear", align_corners=False)
            if i
            else proj(f)
            for i, (proj, f) in enumerate(zip(self.project, features))
        ]
        x = self.act(self.norm(self.fuse(torch.cat(up[::-1], dim=1))))
        return self.classifier(self.dropout(x))
