"""Semantic-Guided Fusion (SGF) at one feature scale, paper Sec. III-C, Eqs. 3-10.

SGF fuses the M modality features at a pixel in two attentions:

* **SP** (Spatial Perceptron, Eq. 4-7): the K class prototypes query the M modality
  features at every pixel; the K outputs are averaged into ``f_se``.
* **RP** (Robustness Perceptron, Eq. 8-10): ``f_se`` queries the same M features; the
  output is the fused feature ``f_SGF`` and the attention weights over the M keys are the
  robustness maps ``r_m`` (summing to 1 over the modalities that saw the pixel).

It is split into :meth:`SemanticGuidedFusion.forward` (encode: MP, CSF prototype partials,
key/value projections; none depend on which modalities are present) and
:meth:`SemanticGuidedFusion.fuse` (everything that does). Two identities make ``fuse``
cheap without changing a number:

* the prototype queries are the same at every pixel, so they are projected once per
  sample ``(B, K, C)``, not once per pixel ``(B, H*W, K, C)``;
* the output projection is linear, so averaging the K outputs (Eq. 7) equals projecting
  the K-averaged attention-weighted values: K outputs per pixel are never materialised.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sgma_cli.model.attention import ModalityAttention, masked_softmax
from sgma_cli.model.csf import ClassSemanticFilter
from sgma_cli.model.projector import ModalityProjector
from sgma_cli.model.prototypes import PrototypeKind, combine_prototypes

__all__ = ["SpatialPerceptron", "RobustnessPerceptron", "SemanticGuidedFusion", "ScaleCache"]

#: Subset-independent tensors of one scale, see :meth:`SemanticGuidedFusion.forward`.
ScaleCache = dict[str, Tensor]


def _weighted_values(attn: Tensor, values: Tensor) -> Tensor:
    """``attn (B, h, N, M)``, ``values (B, h, N, M, d)`` -> ``(B, N, h*d)``.

    M is a handful of sensors: M multiply-adds over ``(B, h, N, d)`` are faster than a
    reduction over the short M axis, or than ``B*h*N`` tiny ``(1, M) @ (M, d)`` matmuls.
    """
    weighted = attn[..., 0, None] * values[..., 0, :]  # (B, h, N, d)
    for m in range(1, values.shape[3]):
        weighted = weighted.addcmul(attn[..., m, None], values[..., m, :])
    return weighted.transpose(1, 2).flatten(2)  # (B, N, h*d)


class SpatialPerceptron(ModalityAttention):
    """SP: class prototypes attend over the modalities at each pixel (Eqs. 4-7).

    Args:
        dim: feature channels ``C_i``.
        num_heads: attention heads (paper: 8).
    """

    def forward(
        self, prototypes: Tensor, keys: Tensor, values: Tensor, available: Tensor | None
    ) -> Tensor:
        """Semantic-guided feature ``f_se``.

        Args:
            prototypes: ``(B, K, C)`` prototypes of the present modalities.
            keys: ``(B, h, N, M, d)`` projected keys, head-major; values likewise.
            available: bool ``(B, N, M)``, the modalities that saw each pixel (``None``: all).

        Returns:
            ``(B, N, C)``.
        """
        scores = self.scores(prototypes, keys)  # (B, h, N, M, K)
        mask = None if available is None else available[:, None, :, :, None]
        attn = masked_softmax(scores, mask, dim=3).mean(
            dim=-1
        )  # (B, h, N, M): Eq. 7's mean over K, moved before out_proj
        return self.out_proj(_weighted_values(attn, values))

    def scores(self, prototypes: Tensor, keys: Tensor) -> Tensor:
        """Scaled dot products of the K prototype queries with every key, ``(B, h, N, M, K)``.

        The queries are the same at every pixel, so this is one ``(N*M, d) @ (d, K)`` matrix
        product per sample and head.
        """
        B, h, N, M, d = keys.shape
        q = self.split_heads(self.q_proj(prototypes))  # (B, K, h, d): once per sample
        q = (q * self.scale).permute(0, 2, 3, 1)  # (B, h, d, K)
        return (keys.reshape(B, h, N * M, d) @ q).unflatten(2, (N, M))


class RobustnessPerceptron(ModalityAttention):
    """RP: ``f_se`` attends over the modalities at its pixel (Eqs. 8-10).

    Args:
        dim: feature channels ``C_i``.
        num_heads: attention heads (paper: 4).
    """

    def forward(
        self, query: Tensor, keys: Tensor, values: Tensor, available: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Fused feature and robustness maps.

        Args:
            query: ``(B, N, C)`` semantic-guided feature ``f_se``.
            keys: ``(B, h, N, M, d)`` projected keys, head-major; values likewise.
            available: bool ``(B, N, M)`` (``None``: all).

        Returns:
            ``f_SGF`` ``(B, N, C)`` and robustness ``r`` ``(B, N, M)`` (head-averaged
            attention weights, as ``nn.MultiheadAttention`` reports them).
        """
        q = self.split_heads(self.q_proj(query)).transpose(1, 2) * self.scale  # (B, h, N, d)
        scores = (keys @ q[..., None])[..., 0]  # (B, h, N, M): M dot products per pixel
        attn = masked_softmax(scores, None if available is None else available[:, None], dim=3)
        return self.out_proj(_weighted_values(attn, values)), attn.mean(dim=1)


class SemanticGuidedFusion(nn.Module):
    """SGF for one scale over ``num_modalities`` modalities.

    Args:
        channels: feature channels ``C_i`` of this scale.
        num_modalities: number of modalities ``M`` the model knows (one MP each).
        num_classes: classes ``K`` (CSF output, number of prototypes).
        sp_heads: SP attention heads (paper, Fig. 12: 8).
        rp_heads: RP attention heads (paper, Fig. 12: 4).
        mp_kernels: MP depth-wise kernel sizes (paper: 11, 7, 3).
        prototypes: Eq. 3's weighting, ``"sum"`` (the paper), ``"mean"`` or ``"softmax"``
            (see :mod:`sgma_cli.model.prototypes`).
    """

    def __init__(  # noqa: PLR0913 (the paper's hyper-parameters, plus device and dtype)
        self,
        channels: int,
        num_modalities: int,
        num_classes: int,
        sp_heads: int = 8,
        rp_heads: int = 4,
        mp_kernels: Sequence[int] = (11, 7, 3),
        prototypes: PrototypeKind = "sum",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.projectors = nn.ModuleList(
            ModalityProjector(channels, mp_kernels, **dd) for _ in range(num_modalities)
        )
        self.csf = ClassSemanticFilter(channels, num_classes, prototypes, **dd)
        self.sp = SpatialPerceptron(channels, sp_heads, **dd)
        self.rp = RobustnessPerceptron(channels, rp_heads, **dd)

    def forward(self, features: Tensor, modalities: Sequence[int], available: Tensor) -> ScaleCache:
        """Encode: everything that does not depend on the modality subset.

        Args:
            features: backbone features ``(B, M_e, C, H, W)`` of the encoded modalities.
            modalities: model index of each of the ``M_e`` encoded modalities (its MP).
            available: bool ``(B, M_e, H, W)`` at this scale.

        Returns:
            A cache: the prototype partials (``prototypes`` ``(B, M_e, K, C)``, and for
            ``"mean"``/``"softmax"`` ``prototype_norm``/``prototype_shift`` ``(B, M_e, K)``),
            ``sp_k``/``sp_v``/``rp_k``/``rp_v`` ``(B, heads, N, M_e, C / heads)`` and
            ``available`` ``(B, M_e, N)``.
        """
        semantic = torch.stack(
            [self.projectors[m](features[:, j]) for j, m in enumerate(modalities)], dim=1
        )
        tokens = semantic.flatten(3).permute(0, 3, 1, 2)  # (B, N, M_e, C)
        cache = {**self.csf(semantic, available), "available": available.flatten(2)}
        for name, attn in (("sp", self.sp), ("rp", self.rp)):
            k, v = attn.kv(tokens)
            # head-major (B, h, N, M_e, d), laid out once: every fuse reads them copy-free
            cache[f"{name}_k"] = attn.split_heads(k).permute(0, 3, 1, 2, 4).contiguous()
            cache[f"{name}_v"] = attn.split_heads(v).permute(0, 3, 1, 2, 4).contiguous()
        return cache

    def fuse(
        self, cache: ScaleCache, present: Tensor, size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """Fuse the present modalities.

        Args:
            cache: the output of :meth:`forward`.
            present: bool ``(B, M_e)``: the subset, per sample.
            size: ``(H, W)`` of this scale.

        Returns:
            ``f_SGF`` ``(B, C, H, W)`` (zero where no present modality saw the pixel) and
            robustness ``r`` ``(B, M_e, H, W)``.
        """
        prototypes = combine_prototypes(cache, present, self.csf.prototypes)  # (B, K, C)
        available: Tensor | None = (cache["available"] & present[:, :, None]).transpose(
            1, 2
        )  # (B, N, M_e)
        # the fast path reads the mask's values: a graph (torch.export/compile) keeps the mask
        if (
            available.device.type != "meta"
            and not torch.compiler.is_compiling()
            and bool(available.all())
        ):
            available = None  # every modality saw every pixel: plain softmax, no masking passes
        f_se = self.sp(prototypes, cache["sp_k"], cache["sp_v"], available)
        fused, robustness = self.rp(f_se, cache["rp_k"], cache["rp_v"], available)
        if available is not None:
            fused = fused * available.any(dim=2, keepdim=True).to(fused.dtype)
        B, N, C = fused.shape
        return fused.transpose(1, 2).reshape(B, C, *size), robustness.transpose(1, 2).unflatten(
            2, size
        )
