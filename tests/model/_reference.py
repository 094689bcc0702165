"""A literal implementation of SGF written from the paper's equations, for checking.

Per sample and per scale it follows Eqs. 3-10 as written, sharing only the weights with
the model, never its code:

* MP (Fig. 3) with ``F.conv2d``: depth-wise 11x11, then 7x7, then 3x3 (the chain, each
  padded to keep the size), an exact GELU, then the 1x1 point-wise convolution. The
  depth-wise weights are found by their kernel size, not by their place in the module,
  so a model that applied them in another order fails the comparison.
* CSF: a 1x1 ``F.conv2d`` to K class channels.
* Eq. 3: concatenate the present modalities' class evidence and semantic features over
  all seen pixels (rows ``H*W*M``) and multiply; ``"mean"`` divides by the number of rows,
  ``"softmax"`` softmaxes the evidence over the rows first.
* Eqs. 4-10: repeat the K prototypes at every pixel as queries (Eq. 5) and run a standard
  multi-head attention (``F.multi_head_attention_forward``, the function behind
  ``nn.MultiheadAttention``) over the M modality features at that pixel (Eq. 6); average
  over K (Eq. 7); run the RP attention with ``f_se`` as query and take its head-averaged
  weights as robustness (Eqs. 8-10).

Slow on purpose. The benchmark ``benchmarks/fusion_forms.py`` times it as "the literal form".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgma_cli.model.attention import ModalityAttention
from sgma_cli.model.sgf import SemanticGuidedFusion

#: The paper's MP: depth-wise kernels in the order they are applied.
MP_KERNELS = (11, 7, 3)


def reference_mp(projector: nn.Module, x: Tensor, kernels: Sequence[int] = MP_KERNELS) -> Tensor:
    """MP of Fig. 3 on ``(B, C, H, W)``, from the projector's weights only.

    The projector must hold exactly one depth-wise conv per kernel size (weight
    ``(C, 1, k, k)``) and one point-wise conv (weight ``(C, C, 1, 1)``).
    """
    C = x.shape[1]
    convs = [m for m in projector.modules() if isinstance(m, nn.Conv2d)]
    depthwise = {m.weight.shape[-1]: m for m in convs if m.weight.shape[1] == 1 and C > 1}
    pointwise = [m for m in convs if m.weight.shape[-2:] == (1, 1) and m.weight.shape[1] == C]
    assert sorted(depthwise) == sorted(kernels) and len(pointwise) == 1, "unexpected MP layout"
    for k in kernels:
        x = F.conv2d(x, depthwise[k].weight, depthwise[k].bias, padding=k // 2, groups=C)
    x = F.gelu(x)  # exact (erf) GELU between the depth-wise chain and the point-wise conv
    return F.conv2d(x, pointwise[0].weight, pointwise[0].bias)


def reference_prototypes(evidence: Tensor, features: Tensor, kind: str) -> Tensor:
    """Eq. 3 on concatenated rows: evidence ``(R, K)``, features ``(R, C)`` -> ``(K, C)``."""
    if kind == "softmax":
        evidence = torch.softmax(evidence, dim=0)
    prototypes = evidence.T @ features
    if kind == "mean":
        prototypes = prototypes / max(evidence.shape[0], 1)
    return prototypes


def _mha(
    attn: ModalityAttention, query: Tensor, kv: Tensor, key_padding_mask: Tensor, need_weights: bool
) -> tuple[Tensor, Tensor | None]:
    """Standard MHA, batch = pixels. query ``(L, N, C)``, kv ``(S, N, C)``, mask ``(N, S)``."""
    C = attn.dim
    return F.multi_head_attention_forward(
        query,
        kv,
        kv,
        C,
        attn.num_heads,
        in_proj_weight=None,
        in_proj_bias=torch.cat([attn.q_proj.bias, attn.kv.k_proj.bias, attn.kv.v_proj.bias]),
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=attn.out_proj.weight,
        out_proj_bias=attn.out_proj.bias,
        training=False,
        key_padding_mask=key_padding_mask,
        need_weights=need_weights,
        use_separate_proj_weight=True,
        q_proj_weight=attn.q_proj.weight,
        k_proj_weight=attn.kv.k_proj.weight,
        v_proj_weight=attn.kv.v_proj.weight,
        average_attn_weights=True,
    )


@torch.no_grad()
def reference_sgf(
    fusion: SemanticGuidedFusion,
    features: Tensor,
    modalities: Sequence[int],
    available: Tensor,
    present: Sequence[int] | Sequence[Sequence[int]],
    kind: str = "sum",
) -> tuple[Tensor, Tensor]:
    """Literal SGF of one scale.

    Args:
        fusion: the model's fusion module at this scale (weights are read from it).
        features: backbone features ``(B, M_e, C, H, W)``.
        modalities: model index of each encoded modality (selects its MP).
        available: bool ``(B, M_e, H, W)`` at this scale.
        present: positions (into ``M_e``) of the modalities in the subset, the same for
            every sample, or one such list per sample.
        kind: prototype weighting, ``"sum"``, ``"mean"`` or ``"softmax"``.

    Returns:
        ``f_SGF`` ``(B, C, H, W)`` (NaN where no present modality saw the pixel) and
        robustness ``(B, M_e, H, W)`` (0 for absent modalities).
    """
    B, Me, C, H, W = features.shape
    per_sample = [list(present[b]) for b in range(B)] if _nested(present) else [list(present)] * B
    fused_out = torch.full((B, C, H, W), float("nan"))
    robust_out = torch.zeros(B, Me, H, W)
    for b in range(B):
        chosen = per_sample[b]
        semantic = [
            reference_mp(fusion.projectors[modalities[j]], features[b : b + 1, j])[0]
            for j in chosen
        ]  # (C, H, W) each
        csf = fusion.csf.proj
        evidence = [F.conv2d(s[None], csf.weight, csf.bias)[0] for s in semantic]  # (K, H, W)
        seen = [available[b, j].flatten() for j in chosen]  # (H*W,) each
        # Eq. 3: rows = the seen pixels of every present modality, concatenated
        c_cat = torch.cat([e.flatten(1).T[s] for e, s in zip(evidence, seen)])  # (R, K)
        f_cat = torch.cat([f.flatten(1).T[s] for f, s in zip(semantic, seen)])  # (R, C)
        prototypes = reference_prototypes(c_cat, f_cat, kind)  # (K, C)
        K = prototypes.shape[0]
        kv = torch.stack([s.flatten(1).T for s in semantic], dim=1)  # (H*W, M, C), Eq. 6
        pad = ~torch.stack(seen, dim=1)  # (H*W, M)
        rows = ~pad.all(dim=1)
        kv, pad = kv[rows], pad[rows]
        query = prototypes[None].expand(kv.shape[0], K, C)  # Eq. 5: repeat at every pixel
        a_se, _ = _mha(
            fusion.sp, query.transpose(0, 1), kv.transpose(0, 1), pad, need_weights=False
        )
        f_se = a_se.mean(dim=0)  # Eq. 7: (pixels, C)
        fused, weights = _mha(fusion.rp, f_se[None], kv.transpose(0, 1), pad, need_weights=True)
        fused_full = torch.full((H * W, C), float("nan"))
        fused_full[rows] = fused[0]
        fused_out[b] = fused_full.T.reshape(C, H, W)
        r = torch.zeros(H * W, len(chosen))
        r[rows] = weights[:, 0, :]
        for i, j in enumerate(chosen):
            robust_out[b, j] = r[:, i].reshape(H, W)
    return fused_out, robust_out


def _nested(present: Sequence[int] | Sequence[Sequence[int]]) -> bool:
    return len(present) > 0 and not isinstance(present[0], int)
