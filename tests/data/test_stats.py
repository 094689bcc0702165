"""Tests for sgma_cli.data.stats: streaming results equal numpy on the full arrays."""

from __future__ import annotations

import numpy as np
import pytest

from sgma_cli.data.stats import BandAccumulator, ClassCounter


class TestBandAccumulator:
    def test_equals_numpy(self) -> None:
        rng = np.random.default_rng(0)
        full = rng.normal([[5.0], [-3.0]], [[2.0], [0.5]], (2, 5000)).astype(np.float32)
        acc = BandAccumulator(2)
        for chunk in np.array_split(full, 7, axis=1):
            acc.update(chunk)
        res = acc.result()
        np.testing.assert_allclose(res["mean"], full.astype(np.float64).mean(axis=1), rtol=1e-9)
        np.testing.assert_allclose(res["std"], full.astype(np.float64).std(axis=1), rtol=1e-9)
        np.testing.assert_allclose(res["p2"], np.percentile(full, 2, axis=1), rtol=1e-6)
        np.testing.assert_allclose(res["p98"], np.percentile(full, 98, axis=1), rtol=1e-6)

    def test_bounded_memory_percentiles_close(self) -> None:
        rng = np.random.default_rng(1)
        acc = BandAccumulator(1, capacity=5000)
        full = rng.uniform(0, 100, (1, 100_000))
        for chunk in np.array_split(full, 20, axis=1):
            acc.update(chunk)
        assert acc._kept_n <= 5000
        res = acc.result()
        assert res["mean"][0] == pytest.approx(full.mean(), rel=1e-9)
        assert res["p2"][0] == pytest.approx(2, abs=1.5) and res["p98"][0] == pytest.approx(
            98, abs=1.5
        )

    def test_empty_and_bad(self) -> None:
        assert BandAccumulator(2).result()["std"] == [1.0, 1.0]
        with pytest.raises(ValueError, match=r"expected \(2, N\)"):
            BandAccumulator(2).update(np.zeros((3, 4)))


def test_class_counter() -> None:
    counter = ClassCounter(3)
    hist = counter.update(np.array([[0, 1, 255], [2, 2, 1]], np.uint8))
    assert list(hist) == [1, 2, 2] and counter.result() == [1, 2, 2]
