"""Evaluate a model on every modality subset at the cost of one backbone pass per modality.

Paper Sec. IV-A3 reports mIoU and F1 for each of the 2^M - 1 non-empty modality subsets
and their Average / Top-1 / Last-1. Running the model once per subset would cost
``M * 2^(M-1)`` backbone passes; instead each batch is encoded once
(:meth:`SGMA.encode`: stems, shared backbone, subset-independent fusion work) and every
subset is only :meth:`SGMA.fuse` + head (on CUDA several subsets per head call). The
confusion matrices are identical to feeding each subset on its own
(tests/engine/evaluate/test_scoring.py).

:class:`SubsetScorer` is that step, written once. :func:`evaluate_subsets` runs it over
tiles, for ``sgma evaluate --data`` (:mod:`sgma_cli.engine.evaluate.job`) and the training
loop's validation; :mod:`sgma_cli.engine.evaluate.scene` runs it over a scene's windows.

Distributed use: every rank calls :func:`evaluate_subsets` on its shard, then
:meth:`SubsetEvaluation.all_reduce` sums the counts over ranks and recomputes the metrics
(or do it by hand: all-reduce :meth:`SubsetEvaluation.counts` and call
:meth:`SubsetEvaluation.from_counts`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from sgma_cli.engine.device import autocast
from sgma_cli.engine.metrics import SegmentationMetrics, SubsetSummary, confusion_matrix, summarize
from sgma_cli.engine.subsets import select_subsets
from sgma_cli.model.availability import downsample_availability
from sgma_cli.model.outputs import Encoded, Fused
from sgma_cli.model.sgma import SGMA

__all__ = [
    "SubsetEvaluation",
    "SubsetOutput",
    "SubsetScorer",
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
        f"mask has {batch_mask.shape[1]} bands; expected {len(names)} (model modalities) "
        f"or {len(given)} (given images)"
    )


def accumulate_robustness(fused: Fused, enc: Encoded, rsum: Tensor, rcount: Tensor) -> None:
    """Add the RP weights of ``fused`` over the cells each encoded modality saw."""
    idx = list(enc.modalities)
    for i, (r, size) in enumerate(zip(fused.robustness, enc.sizes)):
        seen = downsample_availability(enc.available, size)  # (B, M_e, h, w)
        weights = r[:, idx].float() * seen
        rsum[i, idx] += weights.sum(dim=(0, 2, 3)).double()
        rcount[i, idx] += seen.sum(dim=(0, 2, 3)).double()


@dataclass(frozen=True)
class SubsetOutput:
    """The model's output for one subset of one batch (see :meth:`SubsetScorer.outputs`).

    Attributes:
        index: position of the subset in :attr:`SubsetScorer.subsets`.
        logits: ``(B, K, H, W)`` at the size of the given images.
        valid: bool ``(B, H, W)``: pixels at least one sensor of the subset saw.
    """

    index: int
    logits: Tensor
    valid: Tensor


class SubsetScorer:
    """The one evaluation step: encode a batch once, score every subset, keep the counts.

    Tile evaluation (:func:`evaluate_subsets`, also training's validation) and whole-scene
    evaluation (:func:`sgma_cli.engine.evaluate.scene.evaluate_scene`) both run their
    batches through :meth:`outputs`: one :meth:`SGMA.encode` per batch, then per subset
    only :meth:`SGMA.fuse` + head, several subsets per head call when
    ``max_decode_group`` allows. The robustness weights of the all-encoded-modalities
    subset are added on the way. Tiles are scored at once (:meth:`score`); a scene first
    blends overlapping windows and scores finished rows with :meth:`add`.

    Args:
        model: the model on ``device``, in eval mode; call under ``torch.no_grad``.
        subsets: modality subsets (checked by :func:`~sgma_cli.engine.subsets.select_subsets`).
        device: where the model lives.
        ignore_index: reference value that is not scored.
        precision: ``auto`` (bf16 autocast on CUDA), ``bf16`` or ``fp32``.
        max_decode_group: subsets per head call. Default: on CUDA as many as
            :data:`DECODE_BUDGET_BYTES` allows (fewer, larger kernels); on the CPU one,
            since packing only adds copies there (measured ~4 % slower).
    """

    def __init__(
        self,
        model: SGMA,
        subsets: Sequence[Sequence[str]],
        *,
        device: torch.device,
        ignore_index: int = 255,
        precision: str = "auto",
        max_decode_group: int | None = None,
    ) -> None:
        self.model, self.device, self.precision = model, device, precision
        self.ignore_index, self.max_decode_group = ignore_index, max_decode_group
        self.subsets = select_subsets(subsets, model.modality_names)
        K, S, M = model.num_classes, len(model.channels), len(model.modality_names)
        self.confusion = [torch.zeros(K, K, dtype=torch.int64) for _ in self.subsets]
        self.rsum = torch.zeros(S, M, dtype=torch.float64, device=device)
        self.rcount = torch.zeros(S, M, dtype=torch.float64, device=device)

    def _group(self, batch: int, enc: Encoded) -> int:
        if self.max_decode_group:
            return self.max_decode_group
        if self.device.type == "cpu":
            return 1
        return decode_group_size(batch, *enc.image_size, _head_dim(self.model), len(self.subsets))

    @torch.no_grad()
    def outputs(self, images: dict[str, Tensor], mask: Tensor) -> Iterator[SubsetOutput]:
        """Encode one batch once and yield every subset's logits; add the robustness weights.

        Args:
            images: ``{name: (B, bands, H, W)}`` on the device: the model modalities of
                the batch. Sizes that are not multiples of 32 are padded (as unseen) and
                the outputs cropped back.
            mask: bool ``(B, M, H, W)`` availability over all model modalities.

        Iterate to the end: when no subset uses every encoded modality, their robustness
        weights are added after the last subset.
        """
        model, names = self.model, self.model.modality_names
        missing = sorted({n for s in self.subsets for n in s} - set(images))
        if missing:
            raise ValueError(f"subsets use {missing}, which the batches do not contain")
        B, H, W = mask.shape[0], *mask.shape[-2:]
        images, mask = _pad_to_multiple(images, mask)
        with autocast(self.device, self.precision):
            enc = model.encode(images, mask)
        full = tuple(names[i] for i in enc.modalities)
        seen_full = False
        group = self._group(B, enc)
        for start in range(0, len(self.subsets), group):
            chunk = range(start, min(start + group, len(self.subsets)))
            with autocast(self.device, self.precision):
                fused = [model.fuse(enc, list(self.subsets[j])) for j in chunk]
                logits = model.decode(fused, enc.image_size)
            for j, f, lg in zip(chunk, fused, logits):
                if self.subsets[j] == full and not seen_full:
                    accumulate_robustness(f, enc, self.rsum, self.rcount)
                    seen_full = True
                yield SubsetOutput(j, lg[:, :, :H, :W], f.valid[:, :H, :W])
        if not seen_full:
            with autocast(self.device, self.precision):
                accumulate_robustness(model.fuse(enc, None), enc, self.rsum, self.rcount)

    def add(self, index: int, pred: Tensor, reference: Tensor, valid: Tensor) -> None:
        """Count predicted against reference classes of subset ``index`` where ``valid``."""
        K = self.model.num_classes
        self.confusion[index] += confusion_matrix(pred, reference, K, self.ignore_index, valid)

    def score(self, images: dict[str, Tensor], mask: Tensor, label: Tensor) -> None:
        """Count one batch of tiles for every subset; ``label`` int64 ``(B, H, W)``."""
        for out in self.outputs(images, mask):
            self.add(out.index, out.logits.argmax(dim=1), label, out.valid)

    def result(self) -> SubsetEvaluation:
        """The counts so far as confusion matrices, metrics and robustness."""
        return SubsetEvaluation.from_counts(
            self.subsets, self.model.modality_names, self.confusion, self.rsum, self.rcount
        )


def _tile_inputs(
    batch: Mapping[str, Any], model: SGMA, device: torch.device
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """A collated batch of tiles -> images of model modalities, full mask, label on ``device``."""
    names = model.modality_names
    images = {
        n: x.to(device, non_blocking=True).float() for n, x in batch["image"].items() if n in names
    }
    if not images:
        raise ValueError(f"batch has none of the model's modalities {list(names)}")
    mask = _model_mask(batch.get("mask"), images, model)
    return images, mask, batch["label"].to(device, non_blocking=True)


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
    """Confusion matrices of every subset over a loader of tiles, one encode per batch.

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
        max_decode_group: subsets per head call (see :class:`SubsetScorer`).

    Returns:
        A :class:`SubsetEvaluation`; robustness comes from the all-encoded-modalities
        subset.
    """
    scorer = SubsetScorer(
        model,
        subsets,
        device=device,
        ignore_index=ignore_index,
        precision=precision,
        max_decode_group=max_decode_group,
    )
    total = len(loader) if hasattr(loader, "__len__") else 0  # type: ignore[arg-type]
    was_training = model.training
    model.eval()
    try:
        for step, batch in enumerate(loader, start=1):
            scorer.score(*_tile_inputs(batch, model, device))
            if progress is not None:
                progress(step, total)
    finally:
        model.train(was_training)
    return scorer.result()
