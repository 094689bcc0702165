"""Per-band normalisation of sensor arrays, shared by train, evaluate and predict.

Every modality is standardised band by band with the training split's statistics
(``dataset.toml`` at training time, copied into the checkpoint). Pixels a sensor did not
see (NaN or nodata) become 0 after standardisation, the band mean, and are flagged in
the availability mask; the model never reads them as data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["normalize", "availability"]


def availability(image: np.ndarray, nodata: float | None = None) -> np.ndarray:
    """Bool ``(H, W)``: pixels where every band of ``image`` ``(C, H, W)`` holds data."""
    valid = np.isfinite(image).all(axis=0)
    if nodata is not None and np.isfinite(nodata):
        valid &= ~(image == nodata).all(axis=0)
    return valid


def normalize(
    image: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    valid: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Standardise ``(C, H, W)`` per band; unseen pixels -> 0. Returns float32.

    Args:
        image: sensor values ``(C, H, W)``.
        mean: per-band mean, ``C`` values.
        std: per-band standard deviation, ``C`` values (floored at 1e-6).
        valid: optional bool ``(H, W)``; defaults to :func:`availability` of ``image``.
        out: optional float32 ``(C, H, W)`` to write into (a slot of a batch), in place
            and without temporaries; ``image`` may be ``out`` itself. The same values as
            without it.
    """
    if image.shape[0] != len(mean) or len(mean) != len(std):
        raise ValueError(f"image has {image.shape[0]} bands but statistics have {len(mean)}")
    if valid is None:
        valid = availability(image)
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    s = np.maximum(np.asarray(std, dtype=np.float32), 1e-6)[:, None, None]
    if out is None:
        out = (image.astype(np.float32) - m) / s
    else:
        if out.dtype != np.float32 or out.shape != image.shape:
            raise ValueError(f"out must be float32 {image.shape}, got {out.dtype} {out.shape}")
        if image.dtype != np.float32:  # cast first, as astype does: float64 - m differs
            out[...] = image
            image = out
        np.subtract(image, m, out=out)
        np.divide(out, s, out=out)
    out[:, ~valid] = 0.0
    return np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
