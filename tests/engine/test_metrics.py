"""Tests of ``engine.metrics`` and ``engine.subsets`` against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from sgma_cli.engine.metrics import SegmentationMetrics, SubsetSummary, confusion_matrix, summarize
from sgma_cli.engine.subsets import all_subsets, parse_subsets
from sgma_cli.errors import UsageError

#   reference: 0 0 1 1 2 2 255
#   predicted: 0 1 1 1 2 0 2
TARGET = torch.tensor([0, 0, 1, 1, 2, 2, 255])
PRED = torch.tensor([0, 1, 1, 1, 2, 0, 2])
#   rows = reference, columns = prediction; the 255 pixel is not counted
EXPECTED = torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 1]])


class TestConfusionMatrix:
    def test_hand_computed(self) -> None:
        cm = confusion_matrix(PRED, TARGET, 3)
        assert cm.dtype == torch.int64
        assert torch.equal(cm, EXPECTED)

    def test_any_shape(self) -> None:
        cm = confusion_matrix(PRED[:6].reshape(2, 3), TARGET[:6].reshape(2, 3), 3)
        assert torch.equal(cm, EXPECTED)

    def test_valid_mask_drops_pixels(self) -> None:
        valid = torch.tensor([True, False, True, True, True, False, True])
        cm = confusion_matrix(PRED, TARGET, 3, valid=valid)
        assert torch.equal(cm, torch.tensor([[1, 0, 0], [0, 2, 0], [0, 0, 1]]))

    def test_custom_ignore_index(self) -> None:
        cm = confusion_matrix(PRED[:6], TARGET[:6], 3, ignore_index=1)
        assert torch.equal(cm, torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 1]]))

    def test_out_of_range_reference_skipped_prediction_clamped(self) -> None:
        cm = confusion_matrix(torch.tensor([0, 7, 1]), torch.tensor([-1, 1, 3]), 3)
        assert torch.equal(cm, torch.tensor([[0, 0, 0], [0, 0, 1], [0, 0, 0]]))

    def test_matrices_add_over_batches(self) -> None:
        a = confusion_matrix(PRED[:3], TARGET[:3], 3)
        b = confusion_matrix(PRED[3:], TARGET[3:], 3)
        assert torch.equal(a + b, EXPECTED)


class TestSegmentationMetrics:
    def test_hand_computed(self) -> None:
        m = SegmentationMetrics.from_confusion(EXPECTED)
        # IoU = tp / (ref + pred - tp): 1/(2+2-1), 2/(2+3-2), 1/(2+1-1)
        torch.testing.assert_close(m.iou, torch.tensor([1 / 3, 2 / 3, 1 / 2], dtype=torch.float64))
        # F1 = 2 tp / (ref + pred): 2/4, 4/5, 2/3
        torch.testing.assert_close(m.f1, torch.tensor([0.5, 0.8, 2 / 3], dtype=torch.float64))
        assert m.miou == pytest.approx(0.5)
        assert m.mf1 == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
        assert m.oa == pytest.approx(4 / 6)

    def test_absent_class_left_out_of_means(self) -> None:
        cm = torch.tensor([[3, 1, 0], [1, 5, 0], [0, 0, 0]])
        m = SegmentationMetrics.from_confusion(cm)
        assert math.isnan(float(m.iou[2])) and math.isnan(float(m.f1[2]))
        assert m.miou == pytest.approx((3 / 5 + 5 / 7) / 2)
        assert m.oa == pytest.approx(8 / 10)

    def test_class_predicted_but_absent_counts_as_zero(self) -> None:
        cm = torch.tensor([[3, 0, 1], [0, 4, 0], [0, 0, 0]])
        m = SegmentationMetrics.from_confusion(cm)
        assert float(m.iou[2]) == 0.0
        assert m.miou == pytest.approx((3 / 4 + 1 + 0) / 3)

    def test_perfect_and_empty(self) -> None:
        perfect = SegmentationMetrics.from_confusion(torch.diag(torch.tensor([5, 2, 9])))
        assert (perfect.miou, perfect.mf1, perfect.oa) == (1.0, 1.0, 1.0)
        empty = SegmentationMetrics.from_confusion(torch.zeros(3, 3, dtype=torch.int64))
        assert math.isnan(empty.miou) and math.isnan(empty.mf1) and math.isnan(empty.oa)


class TestSummarize:
    def test_average_top1_last1(self) -> None:
        assert summarize([0.5, 0.9, 0.2]) == SubsetSummary(pytest.approx(1.6 / 3), 0.9, 0.2)

    def test_nan_ignored(self) -> None:
        assert summarize([float("nan"), 0.4, 0.6]) == SubsetSummary(pytest.approx(0.5), 0.6, 0.4)
        out = summarize([float("nan")])
        assert math.isnan(out.average) and math.isnan(out.top1) and math.isnan(out.last1)

    def test_paper_table_one(self) -> None:
        # SGMA, PVT-v2-b2 on ISPRS (paper Table I):
        # R, D, N, R+D, R+N, D+N, R+D+N -> 79.55 / 86.84 / 57.05
        s = summarize([83.51, 57.05, 76.06, 86.62, 84.25, 82.56, 86.84])
        assert (round(s.average, 2), s.top1, s.last1) == (
            79.56,
            86.84,
            57.05,
        )  # paper: 79.55, from unrounded values


class TestSubsets:
    def test_all_subsets_order(self) -> None:
        assert all_subsets(["rgb", "dsm", "sar"]) == [
            ("rgb", "dsm", "sar"),
            ("rgb", "dsm"),
            ("rgb", "sar"),
            ("dsm", "sar"),
            ("rgb",),
            ("dsm",),
            ("sar",),
        ]

    @pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
    def test_count(self, m: int) -> None:
        subsets = all_subsets([f"m{i}" for i in range(m)])
        assert len(subsets) == len(set(subsets)) == 2**m - 1

    def test_parse(self) -> None:
        mods = ["rgb", "dsm", "sar"]
        assert parse_subsets("all", mods) == all_subsets(mods)
        assert parse_subsets(" ALL ", mods) == all_subsets(mods)
        assert parse_subsets("dsm,rgb; rgb ;rgb,dsm", mods) == [("rgb", "dsm"), ("rgb",)]

    def test_parse_errors(self) -> None:
        with pytest.raises(UsageError, match=r"unknown modalities \['nir'\]; known: rgb, dsm"):
            parse_subsets("rgb,nir", ["rgb", "dsm"])
        with pytest.raises(UsageError, match="no subset"):
            parse_subsets(" ; ", ["rgb"])
