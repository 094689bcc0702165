"""Global semantic prototypes, paper Eq. 3.

``p^i = einsum('mhwk,mhwc->kc', c^i, f_se^i)`` sums, over every pixel and every present
modality, the class evidence ``c`` times the semantic feature. The sum splits into one
partial sum per modality, ``c_m^T f_m`` (``(K, C)``), which does not depend on which
other modalities are present: compute the partials once, add the present ones per subset.
Pixels a modality did not see (availability mask) are left out of its partial sum.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["prototype_partials", "combine_prototypes"]


def prototype_partials(
    evidence: Tensor, features: Tensor, available: Tensor | None = None
) -> Tensor:
    """Per-modality prototype partial sums.

    Args:
        evidence: class evidence ``c`` ``(B, M, K, N)`` over ``N = H*W`` pixels.
        features: semantic features ``(B, M, C, N)``.
        available: optional bool ``(B, M, N)``; unseen pixels do not contribute.

    Returns:
        ``(B, M, K, C)`` partial prototypes, one per modality.
    """
    if available is not None:
        evidence = evidence * available[:, :, None, :].to(evidence.dtype)
    return evidence @ features.transpose(-1, -2)  # (B, M, K, N) @ (B, M, N, C)


def combine_prototypes(partials: Tensor, present: Tensor) -> Tensor:
    """Prototypes of a subset: ``(B, M, K, C)`` partials, bool ``(B, M)`` -> ``(B, K, C)``."""
    return (partials * present[:, :, None, None].to(partials.dtype)).sum(dim=1)
