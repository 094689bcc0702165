"""Sliding windows over a scene and the weights that blend their overlapping predictions.

A scene of any size is cut into square windows of ``size`` pixels (a multiple of 32, the
backbone's largest stride) that overlap by a fraction ``overlap``. The last window of a
row or column is shifted back so that it ends on the scene edge; a scene smaller than one
window gets one window, padded at read time. Each window's class probabilities are
weighted by a smooth 2-D Hann (raised-cosine) ramp that is highest in the middle and small, but
never zero, at the border, so the context-poor borders of a window count little where a
neighbour sees the same pixels with more context, and no seam shows (the blending of
Huang et al., 2018, "Tiling and stitching segmentation output for remote sensing").

:class:`RowAccumulator` sums weighted window outputs into a band of full-width rows and
hands back finished rows as soon as no later window can touch them, so memory depends on
the window size and the scene width, never on the scene height.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SIZE_MULTIPLE",
    "WindowSpec",
    "window_grid",
    "windows_touching",
    "window_stride",
    "positions",
    "blend_weights",
    "RowAccumulator",
]

#: Window sizes must be multiples of the backbone's largest stride.
SIZE_MULTIPLE = 32


@dataclass(frozen=True)
class WindowSpec:
    """One window of the grid: pixel offsets on the reference grid and its size.

    Attributes:
        index: position in row-major order.
        row: first row (may be such that the window runs past the scene bottom when the
            scene is smaller than a window; those pixels are padding).
        col: first column.
        size: window height and width in pixels.
    """

    index: int
    row: int
    col: int
    size: int


def positions(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of windows of ``size`` with ``stride`` covering ``[0, length)``.

    The last window ends exactly on ``length`` (shifted back) unless ``length < size``.
    """
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def window_grid(height: int, width: int, size: int, overlap: float) -> list[WindowSpec]:
    """Row-major windows covering a ``height`` x ``width`` scene, edges included.

    Args:
        height: scene rows.
        width: scene columns.
        size: window side in pixels, a positive multiple of 32.
        overlap: fraction of ``size`` shared by neighbours, in ``[0, 0.9]``.

    Raises:
        ValueError: size or overlap out of range.
    """
    if size <= 0 or size % SIZE_MULTIPLE:
        raise ValueError(f"window size {size} is not a positive multiple of {SIZE_MULTIPLE}")
    if not 0.0 <= overlap <= 0.9:
        raise ValueError(f"overlap {overlap} is outside [0, 0.9]")
    if height <= 0 or width <= 0:
        raise ValueError(f"scene of {height}x{width} pixels has no pixels")
    stride = window_stride(size, overlap)
    rows, cols = positions(height, size, stride), positions(width, size, stride)
    return [
        WindowSpec(i * len(cols) + j, r, c, size)
        for i, r in enumerate(rows)
        for j, c in enumerate(cols)
    ]


def window_stride(size: int, overlap: float) -> int:
    """Pixels between the starts of neighbouring windows of :func:`window_grid`."""
    return max(1, size - int(round(size * overlap)))


def windows_touching(
    height: int, width: int, size: int, overlap: float, rows: range, cols: range
) -> list[WindowSpec]:
    """The windows of ``window_grid(height, width, size, overlap)`` that touch a box.

    The same windows (index, offsets) as the full grid, in its row-major order, without
    listing the whole grid: a chunk of a region finds its windows in time independent of
    the region's size.

    Args:
        height: scene rows.
        width: scene columns.
        size: window side.
        overlap: window overlap fraction.
        rows: the box's rows, e.g. ``range(4096, 8192)``.
        cols: the box's columns.
    """
    window_grid(1, 1, size, overlap)  # the same checks
    stride = window_stride(size, overlap)
    starts_r, starts_c = positions(height, size, stride), positions(width, size, stride)
    pick_r = [(i, r) for i, r in enumerate(starts_r) if r < rows.stop and r + size > rows.start]
    pick_c = [(j, c) for j, c in enumerate(starts_c) if c < cols.stop and c + size > cols.start]
    return [WindowSpec(i * len(starts_c) + j, r, c, size) for i, r in pick_r for j, c in pick_c]


def blend_weights(size: int, floor: float = 0.01) -> np.ndarray:
    """Smooth ``(size, size)`` float32 window weight: a separable Hann window with a floor.

    ``w(i) = floor + (1 - floor) * sin²(pi * (i + 0.5) / size)``, so the weight is 1 in the
    middle, falls smoothly towards the borders and stays ``>= floor`` (> 0): pixels only
    one window sees, such as scene corners, keep that window's prediction.
    """
    if not 0.0 < floor <= 1.0:
        raise ValueError(f"floor {floor} must be in (0, 1]")
    ramp = np.sin(math.pi * (np.arange(size, dtype=np.float64) + 0.5) / size) ** 2
    w1 = floor + (1.0 - floor) * ramp
    return np.outer(w1, w1).astype(np.float32)


class RowAccumulator:
    """Weighted sums of window outputs over a band of full-width rows.

    Windows may arrive in any order; rows above the first unfinished window are final.
    Sums ``(C, rows, width)`` float32 and weights ``(rows, width)`` live in one buffer that
    is reused in place (finished rows are dropped by moving an offset; the live rows are
    moved to the top only when the buffer's end is reached), so a scene costs a band of
    rows about two windows high, whatever its height.

    Args:
        height: scene rows.
        width: scene columns.
        channels: values accumulated per pixel ``C``.
        windows: the grid (from :func:`window_grid`).
    """

    def __init__(self, height: int, width: int, channels: int, windows: list[WindowSpec]) -> None:
        self.height, self.width, self.channels = height, width, channels
        self._pending: dict[int, int] = {}  # window row -> windows not added yet
        for w in windows:
            self._pending[w.row] = self._pending.get(w.row, 0) + 1
        size = max((w.size for w in windows), default=1)
        self._cap = min(height, 2 * size)
        self._sums = np.zeros((channels, self._cap, width), np.float32)
        self._weights = np.zeros((self._cap, width), np.float32)
        self.top = 0  # first row not yet handed out (grid row of buffer index ``_start``)
        self._start = 0  # buffer index of ``top``
        self._rows = 0  # live rows from ``_start``

    @property
    def buffered_rows(self) -> int:
        """Rows currently live in the buffer."""
        return self._rows

    @property
    def capacity_rows(self) -> int:
        """Rows the buffer can hold without growing."""
        return self._cap

    def _reserve(self, bottom: int) -> None:
        """Make grid rows ``[top, bottom)`` live (zeroed when new)."""
        need = bottom - self.top
        if need <= self._rows:
            return
        if self._start + need > self._cap:  # move the live rows to the top of the buffer
            if need > self._cap:  # rare: windows far out of order
                self._cap = need
                sums = np.zeros((self.channels, need, self.width), np.float32)
                weights = np.zeros((need, self.width), np.float32)
                sums[:, : self._rows] = self._sums[:, self._start : self._start + self._rows]
                weights[: self._rows] = self._weights[self._start : self._start + self._rows]
                self._sums, self._weights = sums, weights
            else:
                live = slice(self._start, self._start + self._rows)
                self._sums[:, : self._rows] = self._sums[:, live].copy()
                self._weights[: self._rows] = self._weights[live].copy()
            self._start = 0
        lo, hi = self._start + self._rows, self._start + need
        self._sums[:, lo:hi] = 0.0
        self._weights[lo:hi] = 0.0
        self._rows = need

    def add(self, window: WindowSpec, values: np.ndarray, weights: np.ndarray) -> None:
        """Add ``values * weights`` of one window.

        Args:
            window: the window the values belong to.
            values: ``(C, size, size)`` per-pixel outputs (padding included).
            weights: ``(size, size)`` blend weights, 0 where the window saw nothing.
        """
        h = min(window.size, self.height - window.row)
        w = min(window.size, self.width - window.col)
        if window.row < self.top:
            raise ValueError(
                f"window at row {window.row} arrived after rows up to {self.top} were finished"
            )
        self._reserve(window.row + h)
        r0 = self._start + window.row - self.top
        wt = weights[:h, :w]
        self._sums[:, r0 : r0 + h, window.col : window.col + w] += values[:, :h, :w] * wt
        self._weights[r0 : r0 + h, window.col : window.col + w] += wt
        self._pending[window.row] -= 1
        if self._pending[window.row] == 0:
            del self._pending[window.row]

    def pop_finished(self) -> tuple[int, np.ndarray, np.ndarray] | None:
        """Rows no pending window touches: ``(first_row, sums (C, h, W), weights (h, W))`` (copies).

        Returns ``None`` when no new row is final yet.
        """
        limit = min(self._pending) if self._pending else self.height
        n = min(limit - self.top, self._rows)
        if n <= 0:
            return None
        rows = slice(self._start, self._start + n)
        sums, weights = self._sums[:, rows].copy(), self._weights[rows].copy()
        top = self.top
        self.top, self._start, self._rows = top + n, self._start + n, self._rows - n
        return top, sums, weights
