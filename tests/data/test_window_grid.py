"""Tests for sgma_cli.data.window_grid: window grid, blend weights, row accumulation."""

from __future__ import annotations

import numpy as np
import pytest

from sgma_cli.data.window_grid import RowAccumulator, blend_weights, positions, window_grid


class TestPositions:
    @pytest.mark.parametrize(
        ("length", "size", "stride", "expected"),
        [
            (100, 64, 48, [0, 36]),
            (64, 64, 48, [0]),
            (40, 64, 48, [0]),
            (200, 64, 64, [0, 64, 128, 136]),
            (192, 64, 64, [0, 64, 128]),
        ],
    )
    def test_starts(self, length: int, size: int, stride: int, expected: list[int]) -> None:
        assert positions(length, size, stride) == expected


class TestWindowGrid:
    @pytest.mark.parametrize(
        ("h", "w", "size", "overlap"), [(150, 97, 64, 0.25), (64, 64, 64, 0.5), (30, 300, 32, 0.0)]
    )
    def test_covers_every_pixel(self, h: int, w: int, size: int, overlap: float) -> None:
        cover = np.zeros((h, w), int)
        windows = window_grid(h, w, size, overlap)
        for win in windows:
            cover[win.row : win.row + size, win.col : win.col + size] += 1
            assert win.row >= 0 and win.col >= 0
        assert cover.min() >= 1
        assert [win.index for win in windows] == list(range(len(windows)))

    def test_row_major_and_overlap(self) -> None:
        windows = window_grid(128, 128, 64, 0.5)
        assert [(w.row, w.col) for w in windows[:3]] == [(0, 0), (0, 32), (0, 64)]
        assert len(windows) == 9

    @pytest.mark.parametrize(
        ("size", "overlap", "match"),
        [
            (50, 0.2, "multiple of 32"),
            (0, 0.2, "multiple"),
            (64, 0.95, "overlap"),
            (64, -0.1, "overlap"),
        ],
    )
    def test_bad_arguments(self, size: int, overlap: float, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            window_grid(100, 100, size, overlap)


class TestBlendWeights:
    def test_shape_range_symmetry(self) -> None:
        w = blend_weights(64)
        assert w.shape == (64, 64) and w.dtype == np.float32
        assert w.min() >= 0.01 * 0.01 - 1e-7 and w.min() > 0
        assert w.max() == pytest.approx(1.0, abs=2e-3)
        np.testing.assert_allclose(w, w.T)
        np.testing.assert_allclose(w, w[::-1, ::-1])

    def test_smooth_and_centre_heavy(self) -> None:
        w = blend_weights(128)
        assert np.abs(np.diff(w, axis=0)).max() < 0.03  # no jumps
        assert w[64, 64] > 50 * w[0, 64]

    def test_bad_floor(self) -> None:
        with pytest.raises(ValueError, match="floor"):
            blend_weights(64, floor=0.0)


class TestRowAccumulator:
    def test_matches_dense_sum_in_any_order(self) -> None:
        rng = np.random.default_rng(0)
        H, W, C, S = 150, 97, 2, 64
        windows = window_grid(H, W, S, 0.25)
        values = {w.index: rng.random((C, S, S)).astype(np.float32) for w in windows}
        weight = blend_weights(S)
        dense_s, dense_w = np.zeros((C, H + S, W + S)), np.zeros((H + S, W + S))
        for w in windows:
            dense_s[:, w.row : w.row + S, w.col : w.col + S] += values[w.index] * weight
            dense_w[w.row : w.row + S, w.col : w.col + S] += weight
        acc = RowAccumulator(H, W, C, windows)
        got_s, got_w, next_row = np.zeros((C, H, W)), np.zeros((H, W)), 0
        order = list(windows)
        order[:4] = order[:4][::-1]  # a little out of order
        for w in order:
            acc.add(w, values[w.index], weight)
            while (done := acc.pop_finished()) is not None:
                top, s, wt = done
                assert top == next_row
                got_s[:, top : top + s.shape[1]], got_w[top : top + s.shape[1]] = s, wt
                next_row = top + s.shape[1]
        assert next_row == H
        np.testing.assert_allclose(got_s, dense_s[:, :H, :W], rtol=1e-5)
        np.testing.assert_allclose(got_w, dense_w[:H, :W], rtol=1e-5)

    def test_memory_is_a_band_of_rows(self) -> None:
        H, W, S = 1000, 64, 64
        windows = window_grid(H, W, S, 0.25)
        acc = RowAccumulator(H, W, 1, windows)
        most, rows = 0, 0
        for w in windows:
            acc.add(w, np.ones((1, S, S), np.float32), np.ones((S, S), np.float32))
            most = max(most, acc.buffered_rows)
            while (done := acc.pop_finished()) is not None:
                assert (
                    done[2] >= 1
                ).all()  # every handed-out row was covered (reused rows are zeroed)
                rows += done[2].shape[0]
        assert rows == H
        assert most <= S and acc.capacity_rows == 2 * S  # a band of rows, whatever the scene height

    def test_far_out_of_order_grows(self) -> None:
        H, W, S = 300, 32, 32
        windows = window_grid(H, W, S, 0.0)
        acc = RowAccumulator(H, W, 1, windows)
        for w in windows[::-1]:
            acc.add(w, np.full((1, S, S), 2.0, np.float32), np.ones((S, S), np.float32))
        top, sums, weights = acc.pop_finished()  # type: ignore[misc]
        assert (
            top == 0
            and sums.shape == (1, H, W)
            and (sums / weights == 2.0).all()
            and (weights >= 1.0).all()
        )
        with pytest.raises(ValueError, match="arrived after"):
            acc.add(windows[0], np.zeros((1, S, S), np.float32), np.ones((S, S), np.float32))
