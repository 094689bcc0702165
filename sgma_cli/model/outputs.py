"""What the SGMA model returns at each stage: plain dataclasses of tensors."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["Encoded", "Fused", "SegmentationOutput", "TrainOutput"]


@dataclass
class Encoded:
    """Subset-independent work for a batch: :meth:`SGMA.encode`'s output.

    Attributes:
        modalities: model indices of the ``M_e`` encoded modalities, in model order.
        scales: one cache per scale (see ``SemanticGuidedFusion.forward``).
        available: bool ``(B, M_e, H, W)`` input-resolution availability.
        sizes: ``(H_i, W_i)`` of each scale.
    """

    modalities: tuple[int, ...]
    scales: list[dict[str, Tensor]]
    available: Tensor
    sizes: list[tuple[int, int]]

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the input images."""
        return (int(self.available.shape[-2]), int(self.available.shape[-1]))


@dataclass
class Fused:
    """Fused features of one modality subset: :meth:`SGMA.fuse`'s output.

    Attributes:
        features: ``[(B, C_i, H_i, W_i)]``, one per scale.
        robustness: ``[(B, M, H_i, W_i)]`` RP weights over all M model modalities (0 for
            modalities absent or unseen at a cell).
        present: bool ``(S, B, M)``: the subset used at each scale, per sample.
        valid: bool ``(B, H, W)``: pixels that, at every scale, some modality used at
            that scale saw (with one subset for all scales: some used modality saw it).
    """

    features: list[Tensor]
    robustness: list[Tensor]
    present: Tensor
    valid: Tensor


@dataclass
class SegmentationOutput:
    """Inference output.

    Attributes:
        logits: ``(B, K, H, W)``.
        valid: bool ``(B, H, W)``; where False no used sensor saw the pixel: write nodata.
        robustness: ``[(B, M, H_i, W_i)]`` per scale.
    """

    logits: Tensor
    valid: Tensor
    robustness: list[Tensor]


@dataclass
class TrainOutput:
    """Training output of the SGF and MAS branches (Algorithm 1).

    Attributes:
        logits_sgf: ``(B, K, H, W)`` from all modalities.
        logits_mas: ``(B, K, H, W)`` from the sampled modality per scale.
        valid_sgf: bool ``(B, H, W)``.
        valid_mas: bool ``(B, H, W)``: pixels the sampled modality of every scale saw
            (a pixel one scale's draw did not see has a zero feature there: not scored).
        mas_probs: ``(S, B, M)`` sampling probabilities ``s_m^i``.
        mas_choice: ``(S, B)`` sampled model modality index per scale and sample.
        robustness: ``[(B, M, H_i, W_i)]`` of the SGF branch.
    """

    logits_sgf: Tensor
    logits_mas: Tensor
    valid_sgf: Tensor
    valid_mas: Tensor
    mas_probs: Tensor
    mas_choice: Tensor
    robustness: list[Tensor]
