"""Global semantic prototypes, paper Eq. 3, in three weightings.

Eq. 3 multiplies the class evidence ``c`` ``(H*W*M, K)`` of the present modalities,
concatenated over pixels and modalities, with their semantic features ``(H*W*M, C)``:
prototype ``k`` is a weighted sum of the feature vectors of all pixel x modality terms.
How the terms are weighted is a choice (``model.prototypes``):

* ``"sum"``: the paper's literal product, weights ``c``. The prototypes grow with the
  window area and shrink with every missing sensor (a 512 crop sums 128² x 3 terms at
  the finest scale), so predictions depend on the window size.
* ``"mean"``: the same product divided by the number of terms (seen pixels x present
  modalities): the prototypes no longer scale with the input.
* ``"softmax"``: ``c`` softmaxed over the terms, per class, so each prototype is a convex
  combination of features (the method notes' reading).

Every weighting splits into one partial per modality that does not depend on which other
modalities are present, so :func:`prototype_partials` runs once per modality (encode) and
:func:`combine_prototypes` adds the present ones per subset (fuse). For ``"softmax"`` the
partials keep their own max-shift (log-sum-exp style) and are rescaled to a common shift
when combined. Pixels a modality did not see (availability mask) are not terms.
"""

from __future__ import annotations

from typing import get_args

import torch
from torch import Tensor

from sgma_cli.config.model import PrototypeKind

__all__ = [
    "PROTOTYPE_KINDS",
    "PrototypeKind",
    "check_kind",
    "combine_prototypes",
    "prototype_partials",
]

#: The accepted values of ``prototypes``.
PROTOTYPE_KINDS: tuple[str, ...] = get_args(PrototypeKind)


def check_kind(kind: str) -> None:
    """Raise ``ValueError`` naming ``kind`` unless it is one of :data:`PROTOTYPE_KINDS`."""
    if kind not in PROTOTYPE_KINDS:
        raise ValueError(f"unknown prototypes {kind!r}; use 'sum', 'mean' or 'softmax'")


def prototype_partials(
    evidence: Tensor,
    features: Tensor,
    available: Tensor | None = None,
    kind: PrototypeKind = "sum",
) -> dict[str, Tensor]:
    """Per-modality parts of the prototypes, independent of the other modalities.

    Args:
        evidence: class evidence ``c`` ``(B, M, K, N)`` over ``N = H*W`` pixels.
        features: semantic features ``(B, M, C, N)``.
        available: optional bool ``(B, M, N)``; unseen pixels are not terms.
        kind: ``"sum"``, ``"mean"`` or ``"softmax"`` (see the module docstring).

    Returns:
        ``prototypes`` ``(B, M, K, C)``: each modality's weighted feature sum; for
        ``"mean"`` and ``"softmax"`` also ``prototype_norm`` ``(B, M, K)`` (term count,
        or sum of the softmax numerators); for ``"softmax"`` also ``prototype_shift``
        ``(B, M, K)``, the max evidence the numerators were shifted by.
    """
    check_kind(kind)
    B, M, K, N = evidence.shape
    if kind == "softmax":
        scores = evidence
        if available is not None:
            scores = evidence.masked_fill(~available[:, :, None, :], float("-inf"))
        shift = scores.detach().amax(dim=-1)  # (B, M, K); -inf where the modality saw nothing
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        weights = torch.exp(scores - shift[..., None])  # (B, M, K, N), 0 at unseen pixels
        return {
            "prototypes": weights @ features.transpose(-1, -2),
            "prototype_norm": weights.sum(dim=-1),
            "prototype_shift": shift,
        }
    if available is not None:
        evidence = evidence * available[:, :, None, :].to(evidence.dtype)
    parts = {"prototypes": evidence @ features.transpose(-1, -2)}  # (B, M, K, N) @ (B, M, N, C)
    if kind == "mean":
        if available is None:
            count = evidence.new_full((B, M), float(N))
        else:
            count = available.sum(dim=-1).to(evidence.dtype)  # (B, M) seen pixels
        parts["prototype_norm"] = count[:, :, None].expand(B, M, K)
    return parts


def combine_prototypes(
    partials: dict[str, Tensor], present: Tensor, kind: PrototypeKind = "sum"
) -> Tensor:
    """Prototypes of a subset from the per-modality partials.

    Args:
        partials: the output of :func:`prototype_partials`.
        present: bool ``(B, M)``, the subset per sample.
        kind: the ``kind`` the partials were made with.

    Returns:
        ``(B, K, C)``; zeros for a sample whose present modalities saw no pixel.
    """
    check_kind(kind)
    numerators = partials["prototypes"]  # (B, M, K, C)
    weight = present[:, :, None].to(numerators.dtype).expand(numerators.shape[:3])  # (B, M, K)
    if kind == "softmax":
        shift = partials["prototype_shift"]
        used = present[:, :, None] & (partials["prototype_norm"] > 0)  # (B, M, K)
        common = torch.where(used, shift, torch.full_like(shift, float("-inf"))).amax(dim=1)
        common = torch.where(torch.isfinite(common), common, torch.zeros_like(common))  # (B, K)
        rescale = torch.exp(torch.where(used, shift - common[:, None], torch.zeros_like(shift)))
        weight = torch.where(used, rescale, torch.zeros_like(rescale))
    summed = (numerators * weight[..., None]).sum(dim=1)  # (B, K, C)
    if kind == "sum":
        return summed
    norm = (partials["prototype_norm"] * weight).sum(dim=1)  # (B, K)
    floor = 1.0 if kind == "mean" else torch.finfo(norm.dtype).tiny
    return summed / norm.clamp(min=floor)[..., None]
