"""The exported graph: SGMA inference with plain tensor inputs and outputs.

A deployed model is called without Python, so the graph takes positional tensors only:
one normalised image per graph modality ``(B, bands, H, W)`` in the model's order, then
the availability mask ``(B, M_g, H, W)`` (bool; ``True`` where that sensor saw the pixel)
over the same ``M_g`` modalities. It returns the logits ``(B, K, H, W)`` and, when asked,
the robustness maps ``(B, M_g, H, W)``: the RP weights of the finest scale (stride 4)
upsampled bilinearly to the input, as ``sgma predict --robustness`` writes them.

A sensor missing for a whole window is fed as zeros with its mask all ``False``: SGF then
leaves it out of every attention and prototype sum, so the result equals the model run
without that sensor (up to float rounding). One graph over all modalities therefore
serves every subset. The batch dimension is always dynamic; with ``dynamic=True`` so are
``H`` and ``W`` (multiples of 32).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgma_cli.model.sgma import SGMA

__all__ = ["MASK_INPUT", "LOGITS_OUTPUT", "ROBUSTNESS_OUTPUT", "ExportGraph"]

#: Name of the availability-mask input.
MASK_INPUT = "mask"
#: Name of the logits output.
LOGITS_OUTPUT = "logits"
#: Name of the robustness output.
ROBUSTNESS_OUTPUT = "robustness"

_SIZE_MULTIPLE = 32


class ExportGraph(nn.Module):
    """SGMA inference on a fixed list of modalities, positional tensors in and out.

    Args:
        model: the trained model, in eval mode.
        modalities: the graph's modalities, a subset of ``model.modality_names`` in
            the model's order.
        robustness: also return the robustness maps.
    """

    def __init__(self, model: SGMA, modalities: Sequence[str], robustness: bool = False) -> None:
        super().__init__()
        unknown = [m for m in modalities if m not in model.modality_names]
        if unknown or not modalities:
            raise ValueError(
                f"graph modalities {list(modalities)} must be a non-empty subset of "
                f"{list(model.modality_names)}"
            )
        self.model = model
        self.modalities = tuple(m for m in model.modality_names if m in modalities)
        self.robustness = robustness
        self._index = [model.modality_names.index(m) for m in self.modalities]

    def forward(self, *inputs: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """``(*images, mask)`` -> logits ``(B, K, H, W)`` [, robustness ``(B, M_g, H, W)``]."""
        *images, mask = inputs
        B, M_g, H, W = mask.shape
        # encode reads only the encoded modalities' rows of its (B, M, H, W) mask
        rows = [mask[:, :1].new_zeros(B, 1, H, W) for _ in self.model.modality_names]
        for j, i in enumerate(self._index):
            rows[i] = mask[:, j : j + 1]
        enc = self.model.encode(dict(zip(self.modalities, images)), torch.cat(rows, 1))
        fused = self.model.fuse(enc)
        (logits,) = self.model.decode([fused], (H, W))  # (B, K, H, W)
        if not self.robustness:
            return logits
        finest = fused.robustness[0][:, self._index]  # (B, M_g, H / 4, W / 4)
        maps = F.interpolate(finest, size=(H, W), mode="bilinear", align_corners=False)
        return logits, maps

    def example_inputs(self, size: int, batch: int = 2) -> tuple[Tensor, ...]:
        """Inputs to trace with: random images and a mask with some unseen pixels.

        Args:
            size: ``H = W`` in pixels, a multiple of 32.
            batch: ``B`` (2: a batch of 1 would let the tracer fix the batch size).
        """
        if size <= 0 or size % _SIZE_MULTIPLE:
            raise ValueError(f"size {size} must be a positive multiple of {_SIZE_MULTIPLE}")
        generator = torch.Generator().manual_seed(0)
        bands = dict(zip(self.model.modality_names, self.model.modality_bands))
        images = [
            torch.randn(batch, bands[m], size, size, generator=generator) for m in self.modalities
        ]
        mask = torch.ones(batch, len(self.modalities), size, size, dtype=torch.bool)
        mask[:, :, : size // 4, : size // 4] = False
        return (*images, mask)

    def dynamic_shapes(self, dynamic: bool) -> tuple[tuple[dict[int, object], ...]]:
        """``torch.export`` dims per input: batch always, ``H``/``W`` (32 * n) if ``dynamic``.

        One tuple for :meth:`forward`'s ``*inputs``, with one entry per input.
        """
        from torch.export import Dim

        batch = Dim("batch", min=1, max=4096)
        dims: dict[int, object] = {0: batch}
        if dynamic:
            dims[2] = _SIZE_MULTIPLE * Dim("h32", min=1, max=1024)
            dims[3] = _SIZE_MULTIPLE * Dim("w32", min=1, max=1024)
        return (tuple(dict(dims) for _ in range(len(self.modalities) + 1)),)
