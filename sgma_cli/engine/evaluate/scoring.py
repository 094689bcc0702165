"""Evaluate a model on every modality subset at the cost of one backbone pass per modality.

Paper Sec. IV-A3 reports mIoU and F1 for each of the 2^M - 1 non-empty modality subsets
and their Average / Top-1 / Last-1. Running the model once per subset would cost
``M * 2^(M-1)`` backbone passes; instead each batch is encoded once
(:meth:`SGMA.encode`: stems, shared backbone, subset-independent fusion work) and every
subset is only :meth:`SGMA.fuse` + head (on CUDA several subsets per head call). The confusion
matrices are identical to feeding each subset on its own (tests/engine/test_subset_evaluation.py).

:func:`evaluate_subsets` is used by ``sgma evaluate`` (:mod:`sgma_cli.engine.evaluate.job`) and
by the training loop's validation.

Distributed use: every rank calls :func:`evaluate_subsets` on its shard, then
:meth:`SubsetEvaluation.all_reduce` sums the counts over ranks and recomputes the metrics
(or do it by hand: all-reduce :meth:`SubsetEvaluation.counts` and call
:meth:`SubsetEvaluation.from_counts`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from sgma_cli.engine.device import autocast
from sgma_cli.engine.metrics import SegmentationMetrics, SubsetSummary, confusion_matrix, summarize
from sgma_cli.model.availability import downsample_availability
from sgma_cli.model.outputs import Encoded, Fused
from sgma_cli.model.sgma import SGMA

__all__ = [
    "SubsetEvaluation",
    "evaluate_subsets",
    "decode_group_size",
    "accumulate_robustness",
    "Progress",
]

#: ``progress(done, total)`` after each batch; ``total`` is 0 when the loader has no length.
Progress = Callable[[int, int], None]

#: Rough activation budget of one head call (bytes): several subsets share a call up to it.
DECODE_BUDGET_BYTES = 1 << 30
_SIZE_MULTIPLE = 32


@dataclass(frozen=True)
class SubsetEvaluation:
    """Confusion matrices and metrics of a model on several modality subsets.

    Attributes:
        subsets: the evaluated subsets, names in model order.
        modalities: the model's modality names (columns of ``robustness``).
        class_count: ``K``.
        confusion: one ``(K, K)`` int64 matrix per subset (rows reference, columns
            prediction); summable across shards and ranks.
        metrics: :class:`SegmentationMetrics` per subset.
        summary: Average / Top-1 / Last-1 of the subsets' mIoU (fractions).
        robustness_sum: float64 ``(S, M)``: sum of the full-modality subset's RP weight
            ``r_m^i`` per scale and modality, over the cells modality ``m`` saw.
        robustness_count: float64 ``(S, M)``: the number of those cells.
    """

    subsets: list[tuple[str, ...]]
    modalities: tuple[str, ...]
    confusion: list[Tensor]
    metrics: list[SegmentationMetrics]
    summary: SubsetSummary
    robustness_sum: Tensor
    robustness_count: Tensor

    @property
    def robustness(self) -> Tensor:
        """``(S, M)`` mean RP weight per scale and modality (NaN: never seen/never encoded)."""
        nan = torch.full_like(self.robustness_sum, float("nan"))
        return torch.where(
            self.robustness_count > 0, self.robustness_sum / self.robustness_count.clamp(min=1), nan
        )

    @property
    def f1_summary(self) -> SubsetSummary:
        """Average / Top-1 / Last-1 of the subsets' mean F1."""
        return summarize([m.mf1 for m in self.metrics])

    @classmethod
    def from_counts(
        cls,
        subsets: Sequence[tuple[str, ...]],
        modalities: Sequence[str],
        confusion: Tensor | Sequence[Tensor],
        robustness_sum: Tensor,
        robustness_count: Tensor,
    ) -> SubsetEvaluation:
        """Rebuild metrics and summary from (possibly summed) counts.

        Args:
            subsets: the subsets, in the order of ``confusion``.
            modalities: model modality names.
            confusion: ``(N, K, K)`` or a list of ``(K, K)`` counts.
            robustness_sum: ``(S, M)`` summed RP weights.
            robustness_count: ``(S, M)`` cell counts.
        """
        mats = [c.detach().to("cpu", torch.int64) for c in confusion]
        if len(mats) != len(subsets):
            raise ValueError(f"{len(mats)} confusion matrices for {len(subsets)} subsets")
        metrics = [SegmentationMetrics.from_confusion(c) for c in mats]
        return cls(
            subsets=[tuple(s) for s in subsets],
            modalities=tuple(modalities),
            confusion=mats,
            metrics=metrics,
            summary=summarize([m.miou for m in metrics]),
            robustness_sum=robustness_sum.detach().to("cpu", torch.float64),
            robustness_count=robustness_count.detach().to("cpu", torch.float64),
        )

    @property
    def class_count(self) -> int:
        """Number of classes ``K``."""
        return int(self.confusion[0].shape[0]) if self.confusion else 0

    def counts(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(N, K, K)`` int64 confusion, ``(S, M)`` robustness sums and counts: what ranks sum."""
        return torch.stack(self.confusion), self.robustness_sum, self.robustness_count

    def merge(self, other: SubsetEvaluation) -> SubsetEvaluation:
        """Sum with an evaluation of the same subsets on other tiles (e.g. another shard)."""
        if other.subsets != self.subsets or other.modalities != self.modalities:
            raise ValueError("can only merge evaluations of the same subsets and modalities")
        return SubsetEvaluation.from_counts(
            self.subsets,
            self.modalities,
            [a + b for a, b in zip(self.confusion, other.confusion)],
            self.robustness_sum + other.robustness_sum,
            self.robustness_count + other.robustness_count,
        )

    def all_reduce(self, group: Any = None) -> SubsetEvaluation:
        """Sum the counts over all ranks of ``group`` and recompute; no-op without a process group.

        Every rank must call it (a collective). Under NCCL the counts travel on this
        rank's current CUDA device, otherwise on the CPU (gloo). For exact metrics shard
        the tiles without repeats (``DistributedSampler`` pads with repeated tiles, which
        would then be counted twice).
        """
        if not (dist.is_available() and dist.is_initialized()):
            return self
        device = torch.device("cpu")
        if dist.get_backend(group) == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        confusion, rsum, rcount = self.counts()
        confusion = confusion.to(device)
        robust = torch.stack([rsum, rcount]).to(device)
        dist.all_reduce(confusion, group=group)
        dist.all_reduce(robust, group=group)
        return SubsetEvaluation.from_counts(
            self.subsets, self.modalities, confusion, robust[0], robust[1]
        )


def decode_group_size(batch: int, height: int, width: int, head_dim: int, subsets: int) -> int:
    """How many subsets share one head call within :data:`DECODE_BUDGET_BYTES`.

    The head's largest activation is the concatenation of 4 projected scales at 1/4
    resolution, ``4 * E`` float32 channels (plus the upsampled copies): ~``32 * E`` bytes
    per cell and sample.
    """
    per_subset = max(1, batch * math.ceil(height / 4) * math.ceil(width / 4) * 32 * head_dim)
    return max(1, min(subsets, DECODE_BUDGET_BYTES // per_subset))


def _head_dim(model: SGMA) -> int:
    fuse = getattr(model.head, "fuse", None)
    return int(fuse.out_channels) if isinstance(fuse, torch.nn.Conv2d) else 256


def _pad_to_multiple(images: dict[str, Tensor], mask: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """Zero-pad images and pad the mask with False (unseen) up to multiples of 32."""
    H, W = mask.shape[-2:]
    ph, pw = (-H) % _SIZE_MULTIPLE, (-W) % _SIZE_MULTIPLE
    if not ph and not pw:
        return images, mask
    padded = {name: F.pad(x, (0, pw, 0, ph)) for name, x in images.items()}
    return padded, F.pad(mask, (0, pw, 0, ph), value=False)


def _model_mask(batch_mask: Tensor | None, images: Mapping[str, Tensor], model: SGMA) -> Tensor:
    """Availability ``(B, M, H, W)`` over all model modalities, in model order.

    ``batch_mask`` may cover all model modalities, or only the given images (in model
    order); modalities not given are marked unseen.
    """
    names = model.modality_names
    first = next(iter(images.values()))
    B, _, H, W = first.shape
    given = [n for n in names if n in images]
    if batch_mask is None:
        full = torch.zeros(B, len(names), H, W, dtype=torch.bool, device=first.device)
        full[:, [names.index(n) for n in given]] = True
        return full
    batch_mask = batch_mask.to(first.device).bool()
    if batch_mask.shape[1] == len(names):
        return batch_mask
    if batch_mask.shape[1] == len(given):
        full = torch.zeros(B, len(names), H, W, dtype=torch.bool, device=first.device)
        full[:, [names.index(n) for n in given]] = batch_mask
        return full
    raise ValueError(
        f"mask has {batch_mask.shape[1]} bands; expected {len(names)} (model modalities) or {len(given)} (given images)"
    )


def accumulate_robustness(fused: Fused, enc: Encoded, rsum: Tensor, rcount: Tensor) -> None:
    """Add the RP weights of ``fused`` over the cells each encoded modality saw."""
    idx = list(enc.modalities)
    for i, (r, size) in enumerate(zip(fused.robustness, enc.sizes)):
        seen = downsample_availability(enc.available, size)  # (B, M_e, h, w)
        weights = r[:, idx].float() * seen
        rsum[i, idx] += weights.sum(dim=(0, 2, 3)).double()
        rcount[i, idx] += seen.sum(dim=(0, 2, 3)).double()


@torch.no_grad()
def evaluate_subsets(
    model: SGMA,
    loader: Iterable[dict[str, Any]],
    subsets: Sequence[tuple[str, ...]],
    *,
    device: torch.device,
    ignore_index: int = 255,
    precision: str = "auto",
    progress: Progress | None = None,
    max_decode_group: int | None = None,
) -> SubsetEvaluation:
    """Confusion matrices of every subset over a loader, one encode per batch.

    Args:
        model: the model, already on ``device`` (a DDP model: pass ``.module``). It runs
            in eval mode under ``no_grad``; its previous mode is restored afterwards.
        loader: batches as :class:`~sgma_cli.data.tile_dataset.TileDataset` + default collate
            yields them: ``image`` ``{name: (B, bands, H, W)}``, ``mask`` bool
            ``(B, M, H, W)`` (over the model's modalities, or over the given images in
            model order), ``label`` int64 ``(B, H, W)``. Sizes that are not multiples of
            32 are padded (as unseen) and cropped back.
        subsets: modality subsets (names); each must use only modalities in the batches.
        device: where the model lives.
        ignore_index: reference value that is not scored. Pixels no used sensor saw
            (``Fused.valid`` False) are not scored either.
        precision: ``auto`` (bf16 autocast on CUDA), ``bf16`` or ``fp32``.
        progress: ``progress(done_batches, total_batches)`` after each batch.
        max_decode_group: subsets per head call. Default: on CUDA as many as
            :data:`DECODE_BUDGET_BYTES` allows (fewer, larger kernels); on the CPU one,
            since packing only adds copies there (measured ~4 % slower).

    Returns:
        A :class:`SubsetEvaluation`; robustness comes from the all-encoded-modalities
        subset.
    """
    subsets = [tuple(s) for s in subsets]
    if not subsets:
        raise ValueError("no subset to evaluate")
    names = model.modality_names
    for s in subsets:
        unknown = [n for n in s if n not in names]
        if unknown or not s:
            raise ValueError(
                f"subset {list(s)} names unknown modalities {unknown}; the model knows {list(names)}"
            )
    K, S, M = model.num_classes, len(model.channels), len(names)
    confusion = [torch.zeros(K, K, dtype=torch.int64) for _ in subsets]
    rsum = torch.zeros(S, M, dtype=torch.float64, device=device)
    rcount = torch.zeros(S, M, dtype=torch.float64, device=device)
    total = len(loader) if hasattr(loader, "__len__") else 0  # type: ignore[arg-type]
    was_training = model.training
    model.eval()
    try:
        for step, batch in enumerate(loader, start=1):
            images = {
                n: x.to(device, non_blocking=True).float()
                for n, x in batch["image"].items()
                if n in names
            }
            if not images:
                raise ValueError(f"batch has none of the model's modalities {list(names)}")
            missing = sorted({n for s in subsets for n in s} - set(images))
            if missing:
                raise ValueError(f"subsets use {missing}, which the batches do not contain")
            mask = _model_mask(batch.get("mask"), images, model)
            label = batch["label"].to(device, non_blocking=True)
            H, W = label.shape[-2:]
            images, mask = _pad_to_multiple(images, mask)
            with autocast(device, precision):
                enc = model.encode(images, mask)
            B = label.shape[0]
            group = max_decode_group or (
                1
                if device.type == "cpu"
                else decode_group_size(B, *enc.image_size, _head_dim(model), len(subsets))
            )
            full = tuple(names[i] for i in enc.modalities)
            seen_full = False
            for start in range(0, len(subsets), group):
                chunk = list(range(start, min(start + group, len(subsets))))
                with autocast(device, precision):
                    fused = [model.fuse(enc, list(subsets[j])) for j in chunk]
                    logits = model.decode(fused, enc.image_size)
                for j, f, lg in zip(chunk, fused, logits):
                    pred = lg[:, :, :H, :W].argmax(dim=1)
                    confusion[j] += confusion_matrix(
                        pred, label, K, ignore_index, f.valid[:, :H, :W]
                    )
                    if subsets[j] == full and not seen_full:
                        accumulate_robustness(f, enc, rsum, rcount)
                        seen_full = True
            if not seen_full:
                with autocast(device, precision):
                    accumulate_robustness(model.fuse(enc, None), enc, rsum, rcount)
            if progress is not None:
                progress(step, total)
    finally:
        model.train(was_training)
    return SubsetEvaluation.from_counts(subsets, names, confusion, rsum, rcount)
