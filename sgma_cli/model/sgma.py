"""The SGMA model: shared encoder, SGF per scale, MAS in training, all-MLP head.

Paper Sec. III and Algorithm 1. The forward is split in two so that evaluating many
modality subsets costs one backbone pass per modality, not one per subset:

* :meth:`SGMA.encode` runs each given modality through its stem, the shared backbone
  (Eq. 2; the modalities packed into one batch or one call each, see
  :attr:`SGMA.encode_strategy`) and the subset-independent part of each scale's fusion;
* :meth:`SGMA.fuse` fuses any subset of the encoded modalities (per sample, optionally
  per scale, which MAS uses), and :meth:`SGMA.decode` runs the head.

Missing modalities are never zero images: an absent modality is simply not encoded, or
not ``present``; a per-pixel availability mask ``(B, M, H, W)`` removes a modality from
the attention keys and prototype sums at the pixels it did not see.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgma_cli.config.model import (
    EncodeStrategy,
    FusionKind,
    MASGranularity,
    PrototypeKind,
    StemKind,
)
from sgma_cli.model.availability import downsample_availability
from sgma_cli.model.backbones import FEATURE_STRIDES, backbone_channels, create_backbone
from sgma_cli.model.baselines import PoolingFusion
from sgma_cli.model.head import MLPDecoder
from sgma_cli.model.mas import mas_probabilities, sample_modalities
from sgma_cli.model.outputs import Encoded, Fused, SegmentationOutput, TrainOutput
from sgma_cli.model.sgf import SemanticGuidedFusion
from sgma_cli.model.stems import ModalityStem

__all__ = ["SGMA", "Subset"]

#: A modality subset: names (same for every sample), or bool ``(B, M)`` / ``(S, B, M)``.
Subset = Sequence[str] | Tensor | None

_SIZE_MULTIPLE = max(FEATURE_STRIDES)


def _check_choice(what: str, value: str, choices: Any) -> None:
    """``ValueError`` naming ``value`` unless it is one of the ``Literal`` ``choices``."""
    options = get_args(choices)
    if value not in options:
        listed = ", ".join(map(repr, options[:-1])) + f" or {options[-1]!r}"
        raise ValueError(f"unknown {what} {value!r}; use {listed}")


class SGMA(nn.Module):
    """Semantic-Guided fusion + Modality-Aware sampling segmentation model.

    Args:
        modalities: ``(name, bands)`` per sensor, in the model's order.
        num_classes: classes ``K``.
        backbone: timm encoder shared by all modalities (see ``model.backbones``).
        fusion: ``"sgf"`` (SGMA) or the ``"sum"``/``"mean"`` baselines.
        stem: ``"repeat"`` or ``"learned"`` band-to-RGB stem per modality.
        sp_heads: SP heads (paper: 8).
        rp_heads: RP heads (paper: 4).
        mp_kernels: MP depth-wise kernels (paper: 11, 7, 3).
        head_dim: all-MLP decoder width.
        head_dropout: decoder dropout.
        mas_granularity: MAS draws per ``"sample"`` or per ``"batch"``.
        prototypes: SGF's Eq. 3 weighting: ``"sum"`` (the paper's literal product),
            ``"mean"`` or ``"softmax"`` (see :mod:`sgma_cli.model.prototypes`).
        backbone_weights: optional state dict for the backbone (read by the engine).
        device: where to create parameters (``"meta"`` to count them without memory).
        dtype: parameter dtype.

    Attributes:
        encode_strategy: how :meth:`encode` feeds the shared backbone: ``"packed"`` (all
            modalities in one batch of ``B * M_e`` images) or ``"per_modality"`` (one call
            of ``B`` images each). The numbers are the same (the backbone sees each image
            alone, except batch norm in training, where ``encode`` always packs so that
            the batch statistics stay those of Eq. 2's shared batch); which is faster
            depends on the device, so the engine sets it (``engine.device.encode_strategy``).
    """

    encode_strategy: EncodeStrategy = "packed"

    # Every hyper-parameter is a typed constructor argument (timm style), not a config object.
    def __init__(  # noqa: PLR0913
        self,
        modalities: Sequence[tuple[str, int]],
        num_classes: int,
        backbone: str = "pvt_v2_b2",
        *,
        fusion: FusionKind = "sgf",
        stem: StemKind = "repeat",
        sp_heads: int = 8,
        rp_heads: int = 4,
        mp_kernels: Sequence[int] = (11, 7, 3),
        head_dim: int = 256,
        head_dropout: float = 0.1,
        mas_granularity: MASGranularity = "sample",
        prototypes: PrototypeKind = "sum",
        backbone_weights: Mapping[str, Tensor] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        names = [name for name, _ in modalities]
        if not names:
            raise ValueError("SGMA needs at least one modality")
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {names}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        _check_choice("fusion", fusion, FusionKind)
        _check_choice("MAS granularity", mas_granularity, MASGranularity)
        _check_choice("prototypes", prototypes, PrototypeKind)
        dd = {"device": device, "dtype": dtype}
        self.modality_names = tuple(name for name, _ in modalities)
        self.modality_bands = tuple(int(bands) for _, bands in modalities)
        self.num_classes = num_classes
        self.mas_granularity: MASGranularity = mas_granularity
        self.stems = nn.ModuleDict(
            {name: ModalityStem(bands, 3, stem, **dd) for name, bands in modalities}
        )
        self.backbone = create_backbone(
            backbone, in_chans=3, weights=backbone_weights, device=device
        )
        if dtype is not None:
            self.backbone.to(dtype)
        self.channels = backbone_channels(self.backbone)
        M = len(modalities)
        if fusion == "sgf":
            self.fusions = nn.ModuleList(
                SemanticGuidedFusion(
                    c, M, num_classes, sp_heads, rp_heads, mp_kernels, prototypes, **dd
                )
                for c in self.channels
            )
        else:
            self.fusions = nn.ModuleList(PoolingFusion(fusion) for _ in self.channels)
        self.head = MLPDecoder(self.channels, num_classes, head_dim, head_dropout, **dd)

    # ------------------------------------------------------------------ encode
    def encode(self, images: Mapping[str, Tensor], mask: Tensor | None = None) -> Encoded:
        """Backbone and subset-independent fusion work for the given modalities.

        Args:
            images: ``{name: (B, bands, H, W)}`` normalised images; modalities left out
                are absent for the whole batch. ``H`` and ``W`` must be multiples of 32.
            mask: optional bool ``(B, M, H, W)`` availability over all M model modalities.

        Returns:
            An :class:`Encoded` to pass to :meth:`fuse` once per subset.
        """
        unknown = sorted(set(images) - set(self.modality_names))
        if unknown:
            raise ValueError(
                f"unknown modalities {unknown}; this model knows {list(self.modality_names)}"
            )
        idx = tuple(i for i, name in enumerate(self.modality_names) if name in images)
        if not idx:
            raise ValueError(
                "no modality given: pass at least one of " + ", ".join(self.modality_names)
            )
        first = images[self.modality_names[idx[0]]]
        B, _, H, W = first.shape
        for i in idx:
            x = images[self.modality_names[i]]
            if x.ndim != 4 or x.shape[0] != B or x.shape[-2:] != (H, W):
                raise ValueError(
                    f"modality {self.modality_names[i]!r} has shape {tuple(x.shape)}; "
                    f"expected (B={B}, {self.modality_bands[i]}, H={H}, W={W})"
                )
        if H % _SIZE_MULTIPLE or W % _SIZE_MULTIPLE:
            raise ValueError(
                f"image size {H}x{W} is not a multiple of {_SIZE_MULTIPLE}; pad or crop it"
            )
        if mask is None:
            available = torch.ones(B, len(idx), H, W, dtype=torch.bool, device=first.device)
        else:
            if mask.shape != (B, len(self.modality_names), H, W):
                raise ValueError(
                    f"mask has shape {tuple(mask.shape)}; expected (B, M, H, W) = "
                    f"({B}, {len(self.modality_names)}, {H}, {W})"
                )
            available = mask[:, list(idx)].bool()
        stemmed = [self.stems[self.modality_names[i]](images[self.modality_names[i]]) for i in idx]
        scales, sizes = [], []
        for fusion, feat in zip(self.fusions, self._backbone_features(stemmed)):
            size = (feat.shape[-2], feat.shape[-1])  # no int(): H, W stay symbolic in export
            scales.append(fusion(feat, idx, downsample_availability(available, size)))
            sizes.append(size)
        return Encoded(idx, scales, available, sizes)

    def _backbone_features(self, stemmed: Sequence[Tensor]) -> list[Tensor]:
        """Shared backbone on ``M_e`` stem outputs ``(B, 3, H, W)`` -> 4 x ``(B, M_e, C, h, w)``."""
        per_modality = self.encode_strategy == "per_modality" and len(stemmed) > 1
        if per_modality and self.training and self._has_batch_norm():
            per_modality = False  # batch statistics over the packed batch, as Eq. 2's
        if per_modality:
            outputs = [self.backbone(x) for x in stemmed]  # M_e x 4 x (B, C_i, h, w)
            return [torch.stack(scale, 1) for scale in zip(*outputs)]
        B = stemmed[0].shape[0]
        packed = self.backbone(torch.stack(stemmed, 1).flatten(0, 1))  # 4 x (B*M_e, C_i, h, w)
        return [feat.unflatten(0, (B, len(stemmed))) for feat in packed]

    def _has_batch_norm(self) -> bool:
        """Whether the backbone normalises over the batch (then packing changes numbers)."""
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.backbone.modules())

    # -------------------------------------------------------------------- fuse
    def resolve_subset(self, present: Subset, enc: Encoded) -> Tensor:
        """Any :data:`Subset` form -> bool ``(S, B, M)`` over all model modalities."""
        B, S, M = enc.available.shape[0], len(enc.scales), len(self.modality_names)
        device = enc.available.device
        if present is None:
            out = torch.zeros(M, dtype=torch.bool, device=device)
            out[list(enc.modalities)] = True
            return out.expand(S, B, M)
        if isinstance(present, Tensor):
            present = present.to(device=device, dtype=torch.bool)
            if present.shape == (B, M):
                present = present.expand(S, B, M)
            if present.shape != (S, B, M):
                raise ValueError(
                    f"subset mask has shape {tuple(present.shape)}; "
                    f"expected ({B}, {M}) or ({S}, {B}, {M})"
                )
        else:
            names = list(present)
            unknown = [n for n in names if n not in self.modality_names]
            if unknown or not names:
                raise ValueError(
                    f"subset {names} names unknown modalities {unknown}; "
                    f"known: {list(self.modality_names)}"
                )
            out = torch.zeros(M, dtype=torch.bool, device=device)
            out[[self.modality_names.index(n) for n in names]] = True
            present = out.expand(S, B, M)
        missing = [
            self.modality_names[m]
            for m in range(M)
            if m not in enc.modalities and bool(present[..., m].any())
        ]
        if missing:
            raise ValueError(f"subset uses {missing}, which were not encoded")
        return present

    def fuse(self, enc: Encoded, present: Subset = None) -> Fused:
        """Fuse a subset of the encoded modalities at every scale.

        Args:
            enc: output of :meth:`encode`.
            present: the subset: ``None`` (all encoded), names, or bool ``(B, M)`` per
                sample, or ``(S, B, M)`` per scale and sample.
        """
        subset = self.resolve_subset(present, enc)  # (S, B, M)
        idx = list(enc.modalities)
        used = subset[:, :, idx]  # (S, B, M_e)
        B, M = enc.available.shape[0], len(self.modality_names)
        features, robustness = [], []
        for fusion, cache, size, used_i in zip(self.fusions, enc.scales, enc.sizes, used):
            fused, r = fusion.fuse(cache, used_i, size)
            full = r.new_zeros(B, M, *size)
            full[:, idx] = r
            features.append(fused)
            robustness.append(full)
        # a pixel is valid when, at every scale, a modality used at that scale saw it (MAS
        # may use another modality per scale: a union would score pixels fused from zeros)
        valid = torch.ones_like(enc.available[:, 0])
        for used_i in used:
            valid &= (enc.available & used_i[:, :, None, None]).any(dim=1)
        return Fused(features, robustness, subset, valid)

    # ------------------------------------------------------------------ decode
    def decode(self, fused: Sequence[Fused], size: tuple[int, int]) -> list[Tensor]:
        """Head on fused outputs packed into one batch -> ``(B, K, H, W)`` logits per output."""
        batches = [f.features[0].shape[0] for f in fused]
        features = [torch.cat([f.features[i] for f in fused]) for i in range(len(self.channels))]
        logits = F.interpolate(self.head(features), size=size, mode="bilinear", align_corners=False)
        return list(logits.split(batches))

    def forward(
        self, images: Mapping[str, Tensor], mask: Tensor | None = None, present: Subset = None
    ) -> SegmentationOutput:
        """Inference (Algorithm 1, lines 28-30): SGF over the given/present modalities."""
        enc = self.encode(images, mask)
        fused = self.fuse(enc, present)
        (logits,) = self.decode([fused], enc.image_size)
        return SegmentationOutput(logits, fused.valid, fused.robustness)

    def forward_train(
        self,
        images: Mapping[str, Tensor],
        mask: Tensor | None = None,
        present: Subset = None,
        uniforms: Tensor | None = None,
        generator: torch.Generator | None = None,
        reduce: Callable[[Tensor], Tensor] | None = None,
    ) -> TrainOutput:
        """Training forward with both branches (Algorithm 1, lines 1-27).

        The SGF branch fuses ``present`` (default: all given modalities); MAS draws one
        modality per scale and sample from the SGF robustness maps, among the modalities
        that branch used, and sends it alone through the same fusion. Both branches share
        the backbone features; their features go through the head as one batch.

        Args:
            images: ``{name: (B, bands, H, W)}``.
            mask: optional bool ``(B, M, H, W)`` availability.
            present: the SGF subset (see :meth:`fuse`), e.g. per sample under modality dropout.
            uniforms: ``(S, B)`` in [0, 1) driving the MAS draws (default: drawn from
                ``generator``). With ``mas_granularity="batch"`` column 0 draws for the
                whole batch (pass the same values on every process), from the batch-mean
                distribution restricted to each sample's SGF modalities.
            generator: random source when ``uniforms`` is not given.
            reduce: sums a tensor over processes (DDP); with ``"batch"`` granularity the
                distribution is then the mean over the global batch.
        """
        enc = self.encode(images, mask)
        sgf = self.fuse(enc, present)
        idx = list(enc.modalities)
        B, M, S = enc.available.shape[0], len(self.modality_names), len(enc.scales)
        device = enc.available.device
        if uniforms is None:
            uniforms = torch.rand(S, B, generator=generator).to(device)
        probs, choices = [], []
        for scale, (cache, size, r) in enumerate(zip(enc.scales, enc.sizes, sgf.robustness)):
            used = sgf.present[scale][:, idx]  # (B, M_e): only the modalities the SGF branch used
            available = (
                cache["available"].unflatten(2, size) & used[:, :, None, None]
            )  # (B, M_e, h, w)
            p = torch.zeros(B, M, device=device)
            p[:, idx] = mas_probabilities(r[:, idx].detach(), available, allowed=used)
            probs.append(p)
            if self.mas_granularity == "batch":
                total = p.sum(dim=0, keepdim=True)
                count = torch.tensor([float(B)], device=device)
                if reduce is not None:
                    total, count = reduce(total.clone()), reduce(count)
                # the batch's distribution restricted to what each sample has (under modality
                # dropout a sample must not draw a modality its SGF branch dropped), drawn
                # with one shared uniform: samples with the same modalities share the draw
                restricted = (total / count) * (p > 0)
                restricted = torch.where(restricted.sum(dim=1, keepdim=True) > 0, restricted, p)
                choice = sample_modalities(restricted, uniforms[scale, :1].expand(B))
            else:
                choice = sample_modalities(p, uniforms[scale])
            choices.append(choice)
        mas_choice = torch.stack(choices)  # (S, B)
        mas = self.fuse(enc, F.one_hot(mas_choice, M).bool())
        logits_sgf, logits_mas = self.decode([sgf, mas], enc.image_size)
        return TrainOutput(
            logits_sgf,
            logits_mas,
            sgf.valid,
            mas.valid,
            torch.stack(probs),
            mas_choice,
            sgf.robustness,
        )
