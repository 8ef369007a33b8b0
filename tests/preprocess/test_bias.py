"""N4 bias correction flattens a known smooth multiplicative field."""
from __future__ import annotations

import numpy as np

from segment.preprocess.bias import n4_correct


def test_n4_flattens_smooth_field():
    shape = (48, 48, 40)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    ball = x**2 + y**2 + z**2 < 0.8
    core = x**2 + y**2 + z**2 < 0.3  # a uniform "white matter" region
    img = np.where(ball, 100.0, 0.0)
    img[core] = 150.0
    field = np.exp(0.3 * x + 0.2 * y - 0.15 * z + 0.1 * x * y)  # about +/- 40 % over the ball
    rng = np.random.default_rng(0)
    biased = (img * field + rng.normal(0, 1.0, shape) * ball).astype(np.float32)

    def cv(a):
        v = a[core]
        return float(v.std() / v.mean())

    out = n4_correct(biased, ball, (1.0, 1.0, 1.0), shrink=2)
    assert out.shape == biased.shape and out.dtype == np.float32
    assert cv(biased) > 0.08
    assert cv(out) < 0.3 * cv(biased)
    # the field is normalised to mean one in the mask: intensities keep their scale
    assert 0.9 < out[core].mean() / biased[core].mean() < 1.1
