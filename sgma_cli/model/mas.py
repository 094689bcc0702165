"""Modality-Aware Sampling (MAS), paper Sec. III-D, Eq. 11 and Algorithm 1 lines 14-21.

From SGF's robustness maps ``r_m`` MAS derives, per scale, a distribution over modalities
that favours the less-trusted ones: ``r̂_m = (1/r_m) / Σ_m' (1/r_m')`` per pixel, averaged
over the pixels into ``s_m``. One modality ``m*`` is drawn from ``s`` per sample and per
scale (or once per batch, from the batch-mean distribution), and that modality alone goes
through the same SGF path. Draws take uniforms rather than a generator so that training
can seed them per sample (see :func:`sample_modalities`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sgma_cli.config.model import MASGranularity

__all__ = ["MASGranularity", "mas_probabilities", "sample_modalities"]


def mas_probabilities(
    robustness: Tensor, available: Tensor, eps: float = 1e-6, allowed: Tensor | None = None
) -> Tensor:
    """Sampling probabilities ``s_m`` of one scale.

    Args:
        robustness: ``(B, M, H, W)`` RP weights, summing to 1 over available modalities.
        available: bool ``(B, M, H, W)``, the modalities that saw each cell.
        eps: floor on ``r`` before inverting.
        allowed: optional bool ``(B, M)``, the modalities a sample may draw (its SGF
            subset); only used by the fallback for a sample none of whose modalities saw
            a pixel, which is then uniform over ``allowed`` (default: all M).

    Returns:
        ``(B, M)`` probabilities summing to 1 per sample (0 for modalities never seen).
    """
    available = available.to(torch.bool)
    inverse = torch.where(
        available,
        1.0 / robustness.float().clamp(min=eps),
        torch.zeros((), device=robustness.device),
    )
    total = inverse.sum(dim=1, keepdim=True)
    r_hat = inverse / total.clamp(min=torch.finfo(inverse.dtype).tiny)  # (B, M, H, W), Eq. 11
    seen = available.any(dim=1)  # (B, H, W)
    probs = r_hat.sum(dim=(2, 3)) / seen.sum(dim=(1, 2)).clamp(min=1)[:, None]
    # A sample no modality saw any pixel of: uniform over the allowed modalities (or all).
    empty = probs.sum(dim=1, keepdim=True) <= 0
    fallback = torch.ones_like(probs) if allowed is None else allowed.to(probs.dtype)
    fallback = torch.where(
        fallback.sum(dim=1, keepdim=True) > 0, fallback, torch.ones_like(fallback)
    )
    probs = torch.where(empty, fallback / fallback.sum(dim=1, keepdim=True), probs)
    return probs / probs.sum(dim=1, keepdim=True)


def sample_modalities(probs: Tensor, uniforms: Tensor) -> Tensor:
    """Draw one modality index per row of ``probs`` ``(B, M)`` from ``uniforms`` ``(B,)`` in [0, 1).

    Inverse-CDF sampling: a sample's draw depends only on its own probabilities and its
    own uniform, not on the batch it lands in, so seeded per-sample uniforms reproduce the
    same draws whatever the batch size or the number of processes. Modalities with zero
    probability are never drawn.
    """
    p = probs.detach().double()
    cdf = p.cumsum(dim=1)  # (B, M)
    target = uniforms.to(cdf) * cdf[:, -1]
    index = torch.arange(p.shape[1], device=p.device)
    last_positive = torch.where(p > 0, index, torch.zeros_like(index)).amax(dim=1)  # guards u -> 1
    return torch.minimum((cdf <= target[:, None]).sum(dim=1), last_positive)
