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
