"""A literal implementation of SGF written from the paper's equations, for checking.

Per sample and per scale it follows Eqs. 3-10 as written: concatenate the present
modalities' class evidence and semantic features over all pixels and multiply (Eq. 3);
repeat the K prototypes at every pixel as queries (Eq. 5) and run a standard multi-head
attention (``F.multi_head_attention_forward``, the function behind
``nn.MultiheadAttention``) over the M modality features at that pixel (Eqs. 4, 6); average
over K (Eq. 7); run the RP attention with ``f_se`` as query and take its head-averaged
weights as robustness (Eqs. 8-10). Slow on purpose; shares only the weights with the model.
The benchmark ``benchmarks/fusion_forms.py`` times it as "the literal form".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sgma_cli.model.attention import ModalityAttention
from sgma_cli.model.sgf import SemanticGuidedFusion


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
    present: Sequence[int],
) -> tuple[Tensor, Tensor]:
    """Literal SGF of one scale.

    Args:
        fusion: the model's fusion module at this scale (weights are read from it).
        features: backbone features ``(B, M_e, C, H, W)``.
        modalities: model index of each encoded modality (selects its MP).
        available: bool ``(B, M_e, H, W)`` at this scale.
        present: positions (into ``M_e``) of the modalities in the subset.

    Returns:
        ``f_SGF`` ``(B, C, H, W)`` (NaN where no present modality saw the pixel) and
        robustness ``(B, M_e, H, W)`` (0 for absent modalities).
    """
    B, Me, C, H, W = features.shape
    fused_out = torch.full((B, C, H, W), float("nan"))
    robust_out = torch.zeros(B, Me, H, W)
    for b in range(B):
        semantic = [
            fusion.projectors[modalities[j]](features[b : b + 1, j])[0] for j in present
        ]  # (C, H, W) each
        evidence = [fusion.csf.proj(s[None])[0] for s in semantic]  # (K, H, W) each
        seen = [available[b, j].flatten() for j in present]  # (H*W,) each
        # Eq. 3: [c_m] (H*W*M, K) times [f_m->se] (H*W*M, C), unseen pixels left out
        c_cat = torch.cat([e.flatten(1).T * s[:, None] for e, s in zip(evidence, seen)])
        f_cat = torch.cat([s.flatten(1).T for s in semantic])
        prototypes = c_cat.T @ f_cat  # (K, C)
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
        r = torch.zeros(H * W, len(present))
        r[rows] = weights[:, 0, :]
        for i, j in enumerate(present):
            robust_out[b, j] = r[:, i].reshape(H, W)
    return fused_out, robust_out
