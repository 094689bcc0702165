"""Segmentation metrics from confusion matrices, and the paper's subset summaries.

A confusion matrix ``(K, K)`` (rows = reference, columns = prediction) is accumulated over
a whole split, then turned into per-class IoU and F1, their means (mIoU, mF1) and overall
accuracy. Classes that appear neither in the reference nor in the prediction are left
out of the means. Over the 2^M - 1 modality subsets the paper reports the Average, Top-1
(best) and Last-1 (worst) mIoU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["confusion_matrix", "SegmentationMetrics", "SubsetSummary", "summarize"]


def confusion_matrix(
    pred: Tensor,
    target: Tensor,
    num_classes: int,
    ignore_index: int = 255,
    valid: Tensor | None = None,
) -> Tensor:
    """``(K, K)`` int64 counts of (reference, prediction) pairs.

    Args:
        pred: predicted class indices, any shape.
        target: reference class indices, same shape; ``ignore_index`` is skipped.
        num_classes: ``K``.
        ignore_index: reference value that is not scored.
        valid: optional bool mask, same shape; False pixels are skipped (no sensor saw them).
    """
    keep = (target != ignore_index) & (target >= 0) & (target < num_classes)
    if valid is not None:
        keep &= valid
    t = target[keep].long()
    p = pred[keep].long().clamp(0, num_classes - 1)
    return (
        torch.bincount(t * num_classes + p, minlength=num_classes**2)
        .reshape(num_classes, num_classes)
        .cpu()
    )


@dataclass(frozen=True)
class SegmentationMetrics:
    """Metrics of one confusion matrix; values are fractions in [0, 1] (NaN: class absent)."""

    iou: Tensor
    f1: Tensor
    miou: float
    mf1: float
    oa: float

    @classmethod
    def from_confusion(cls, cm: Tensor) -> SegmentationMetrics:
        """Compute IoU/F1 per class, their nan-means, and overall accuracy."""
        cm = cm.double()
        tp = cm.diag()
        ref = cm.sum(dim=1)
        pred = cm.sum(dim=0)
        union = ref + pred - tp
        present = union > 0
        nan = torch.full_like(tp, float("nan"))
        iou = torch.where(present, tp / union.clamp(min=1), nan)
        f1 = torch.where(present, 2 * tp / (ref + pred).clamp(min=1), nan)
        total = cm.sum()
        oa = float(tp.sum() / total) if total > 0 else float("nan")
        miou = float(iou[present].mean()) if present.any() else float("nan")
        mf1 = float(f1[present].mean()) if present.any() else float("nan")
        return cls(iou=iou, f1=f1, miou=miou, mf1=mf1, oa=oa)


@dataclass(frozen=True)
class SubsetSummary:
    """Average / Top-1 / Last-1 of a metric over modality subsets (paper, Sec. IV-A3)."""

    average: float
    top1: float
    last1: float


def summarize(values: Sequence[float]) -> SubsetSummary:
    """Mean, best and worst of per-subset values (NaNs ignored)."""
    finite = [v for v in values if v == v]
    if not finite:
        return SubsetSummary(float("nan"), float("nan"), float("nan"))
    return SubsetSummary(sum(finite) / len(finite), max(finite), min(finite))
