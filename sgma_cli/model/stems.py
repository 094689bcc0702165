"""Modality stems: map each sensor's bands onto the shared encoder's input channels.

The paper feeds every modality through one encoder but is silent on band counts (RGB 3,
DSM 1, SAR 1-2). The default ``"repeat"`` stem cycles a modality's normalised bands to the
encoder's 3 channels (1 band -> b,b,b; 2 bands -> b0,b1,b0), adding no parameters. The
``"learned"`` stem is a per-modality 1x1 convolution initialised to that same pattern.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sgma_cli.config.model import StemKind

__all__ = ["ModalityStem", "StemKind"]


class ModalityStem(nn.Module):
    """Map ``(B, bands, H, W)`` to ``(B, out_chans, H, W)`` for the shared encoder.

    Args:
        bands: number of bands of this modality.
        out_chans: input channels of the encoder (3 for ImageNet-style backbones).
        kind: ``"repeat"`` (cyclic band repetition, no parameters) or ``"learned"``
            (1x1 conv initialised to the repeat pattern).
    """

    def __init__(
        self,
        bands: int,
        out_chans: int = 3,
        kind: StemKind = "repeat",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if bands < 1:
            raise ValueError(f"a modality needs at least 1 band, got {bands}")
        if kind not in ("repeat", "learned"):
            raise ValueError(f"unknown stem kind {kind!r}; use 'repeat' or 'learned'")
        if kind == "repeat" and bands > out_chans:
            raise ValueError(
                f"the 'repeat' stem cannot fit {bands} bands into {out_chans} channels; "
                "use the 'learned' stem (model.stem = \"learned\")"
            )
        self.bands, self.out_chans, self.kind = bands, out_chans, kind
        index = torch.arange(out_chans) % bands
        self.register_buffer("index", index, persistent=False)
        self.proj: nn.Conv2d | None = None
        if kind == "learned":
            self.proj = nn.Conv2d(bands, out_chans, 1, device=device, dtype=dtype)
            if self.proj.weight.device.type != "meta":
                with torch.no_grad():
                    self.proj.weight.copy_(_repeat_pattern(bands, out_chans)[:, :, None, None])
                    self.proj.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        """``(B, bands, H, W)`` -> ``(B, out_chans, H, W)``."""
        if x.shape[1] != self.bands:
            raise ValueError(f"expected {self.bands} bands, got input of shape {tuple(x.shape)}")
        if self.proj is not None:
            return self.proj(x)
        if self.bands == self.out_chans:
            return x
        return x.index_select(1, self.index.to(x.device))


def _repeat_pattern(bands: int, out_chans: int) -> Tensor:
    """``(out_chans, bands)`` matrix of the repeat stem; more bands than channels average."""
    weight = torch.zeros(out_chans, bands)
    if bands <= out_chans:
        weight[torch.arange(out_chans), torch.arange(out_chans) % bands] = 1.0
    else:
        weight[torch.arange(bands) % out_chans, torch.arange(bands)] = 1.0
        weight /= weight.sum(dim=1, keepdim=True)
    return weight
