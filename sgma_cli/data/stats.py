"""Streaming per-band statistics and class counts, one tile at a time.

Mean and standard deviation are exact: float64 running sums merged with Chan et al.'s
parallel update, so they do not depend on how pixels are grouped. Percentiles come from a
uniform random subsample of at most ``capacity`` values per band (exact while the
training split holds fewer pixels): memory stays bounded however large the dataset.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BandAccumulator", "ClassCounter"]


class BandAccumulator:
    """Running mean/std/percentiles of ``bands`` bands over valid pixels.

    Args:
        bands: number of bands ``C``.
        capacity: most values kept per band for the percentiles.
        seed: seed of the subsampling.
    """

    def __init__(self, bands: int, capacity: int = 1_000_000, seed: int = 0) -> None:
        if bands <= 0 or capacity <= 0:
            raise ValueError(f"bands and capacity must be > 0, got {bands}, {capacity}")
        self.bands = bands
        self.capacity = capacity
        self.count = 0
        self.mean = np.zeros(bands, np.float64)
        self.m2 = np.zeros(bands, np.float64)
        self.rate = 1.0
        self._rng = np.random.default_rng(seed)
        self._kept: list[np.ndarray] = []
        self._kept_n = 0

    def update(self, values: np.ndarray) -> None:
        """Add ``(C, N)`` valid values (no NaN)."""
        if values.ndim != 2 or values.shape[0] != self.bands:
            raise ValueError(f"expected ({self.bands}, N) values, got {values.shape}")
        n = values.shape[1]
        if n == 0:
            return
        v = values.astype(np.float64)
        mean_b = v.mean(axis=1)
        m2_b = ((v - mean_b[:, None]) ** 2).sum(axis=1)
        total = self.count + n
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2_b + delta**2 * self.count * n / total
        self.count = total
        if self.rate < 1.0:
            keep = self._rng.random(n) < self.rate
            values = values[:, keep]
        self._kept.append(values.astype(np.float32))
        self._kept_n += values.shape[1]
        while self._kept_n > self.capacity:
            pool = np.concatenate(self._kept, axis=1)
            keep = self._rng.random(pool.shape[1]) < 0.5
            self._kept = [pool[:, keep]]
            self._kept_n = int(keep.sum())
            self.rate /= 2

    def result(self) -> dict[str, list[float]]:
        """``{"mean", "std", "p2", "p98"}``, one float per band (population std)."""
        if self.count == 0:
            zeros = [0.0] * self.bands
            return {"mean": zeros, "std": [1.0] * self.bands, "p2": zeros, "p98": zeros}
        pool = np.concatenate(self._kept, axis=1)
        p2, p98 = np.percentile(pool, [2, 98], axis=1)
        std = np.sqrt(self.m2 / self.count)
        return {
            "mean": [float(x) for x in self.mean],
            "std": [float(x) for x in std],
            "p2": [float(x) for x in p2],
            "p98": [float(x) for x in p98],
        }


class ClassCounter:
    """Pixel count per class index (``ignore_index`` and out-of-range values skipped)."""

    def __init__(self, num_classes: int) -> None:
        self.counts = np.zeros(num_classes, np.int64)

    def update(self, label: np.ndarray) -> np.ndarray:
        """Add a label array; returns this array's own histogram."""
        hist = np.bincount(label.ravel(), minlength=256)[: len(self.counts)]
        self.counts += hist
        return hist

    def result(self) -> list[int]:
        """Counts as plain ints."""
        return [int(c) for c in self.counts]
