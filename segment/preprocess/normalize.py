"""Intensity normalisation inside the brain."""
from __future__ import annotations

import numpy as np

from ..errors import InputError


def robust_zscore(
    data: np.ndarray,
    mask: np.ndarray,
    *,
    lower_percentile: float = 0.0,
    upper_percentile: float = 99.9,
) -> np.ndarray:
    """Clip to percentiles inside ``mask`` and z-score with robust statistics.

    The centre is the median and the scale the interquartile range / 1.349 (the standard
    deviation of a normal distribution with that IQR), both inside the mask, so a tumor or
    a few extreme voxels do not move them. Voxels outside the mask are set to 0.

    Parameters
    ----------
    data : ndarray of shape (X, Y, Z), float
    mask : ndarray of shape (X, Y, Z), bool
    lower_percentile, upper_percentile : float
        Clipping percentiles (0-100) of the intensities inside the mask.

    Returns
    -------
    ndarray of shape (X, Y, Z), float32

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(27, dtype=float).reshape(3, 3, 3)
    >>> z = robust_zscore(x, x > 0)
    >>> round(float(np.median(z[x > 0])), 6)
    0.0
    """
    if not 0 <= lower_percentile < upper_percentile <= 100:
        raise ValueError(
            f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower_percentile}, {upper_percentile}"
        )
    vals = data[mask]
    if vals.size == 0:
        raise InputError("empty brain mask: no voxel to normalise")
    lo, hi = np.percentile(vals, [lower_percentile, upper_percentile])
    vals = np.clip(vals, lo, hi)
    q1, med, q3 = np.percentile(vals, [25, 50, 75])
    scale = (q3 - q1) / 1.349
    if not scale > 0:
        scale = float(vals.std())
    if not scale > 0:
        scale = 1.0
    out = np.zeros(data.shape, dtype=np.float32)
    out[mask] = ((vals - med) / scale).astype(np.float32)
    return out
