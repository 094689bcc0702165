"""Per-band standardisation; unseen pixels become 0."""

from __future__ import annotations

import numpy as np
import pytest

from sgma_cli.data.normalize import availability, normalize


def test_standardises_each_band() -> None:
    image = np.stack([np.full((2, 2), 10.0), np.full((2, 2), -3.0)])
    out = normalize(image, [8.0, -1.0], [2.0, 4.0])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], 1.0)
    np.testing.assert_allclose(out[1], -0.5)


def test_nan_and_nodata_are_unavailable() -> None:
    image = np.ones((2, 2, 2), dtype=np.float32)
    image[:, 0, 0] = np.nan
    image[:, 1, 1] = -9999
    valid = availability(image, nodata=-9999)
    assert valid.tolist() == [[False, True], [True, False]]
    out = normalize(image, [0.0, 0.0], [1.0, 1.0], valid)
    assert out[:, 0, 0].tolist() == [0.0, 0.0] and out[:, 1, 1].tolist() == [0.0, 0.0]


def test_band_mismatch() -> None:
    with pytest.raises(ValueError, match="3 bands but statistics have 1"):
        normalize(np.zeros((3, 2, 2)), [0.0], [1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_into_a_batch_slot_gives_the_same_bits(dtype: type) -> None:
    """``out=`` (read_batches' batch slots) writes exactly what the plain call returns."""
    rng = np.random.default_rng(0)
    image = (rng.normal(100, 60, (3, 16, 16)).clip(0, 255)).astype(dtype)
    valid = rng.random((16, 16)) > 0.2
    mean, std = [120.1, 99.7, 0.3], [50.3, 1e-9, 7.1]  # a std floored at 1e-6
    if dtype != np.uint8:
        image[1, 3, 3] = 1e33  # inf after standardising (float32), then 0
    batch = np.full((2, 3, 16, 16), 7.0, np.float32)
    with np.errstate(over="ignore"):
        back = normalize(image, mean, std, valid, out=batch[1])
        plain = normalize(image, mean, std, valid)
        in_place = image.astype(np.float32)
        normalize(in_place, mean, std, valid, out=in_place)
    assert np.shares_memory(back, batch)
    np.testing.assert_array_equal(batch[1], plain)
    assert (batch[0] == 7.0).all() and np.isfinite(batch[1]).all()
    np.testing.assert_array_equal(in_place, batch[1])
    with pytest.raises(ValueError, match="out must be float32"):
        normalize(image, mean, std, valid, out=np.zeros((3, 16, 16)))
