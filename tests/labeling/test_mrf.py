"""Mean-field MRF on class probabilities: known answers, invariants, input errors."""
from __future__ import annotations

import numba
import numpy as np
import pytest

from segment.labeling.mrf import mrf_smooth


def two_class_volume(shape=(24, 20, 16)):
    """Left half class 0, right half class 1, and its (n, 2) one-hot-ish probabilities."""
    truth = np.zeros(shape, np.int64)
    truth[shape[0] // 2 :] = 1
    mask = np.ones(shape, bool)
    mask[0, 0, :] = False  # a non-box mask: row order must follow volume[mask]
    p = np.where(truth[mask][:, None] == np.arange(2), 0.8, 0.2)
    return truth, mask, p


def test_removes_salt_and_pepper(rng):
    truth, mask, p = two_class_volume()
    flip = rng.random(p.shape[0]) < 0.15
    noisy = np.where(flip[:, None], p[:, ::-1], p)
    assert (noisy.argmax(1) != truth[mask]).mean() > 0.1
    out = mrf_smooth(noisy, mask, (1.0, 1.0, 1.0), beta=1.0, iterations=5)
    assert (out.argmax(1) == truth[mask]).mean() > 0.995


def test_clean_volume_keeps_argmax():
    truth, mask, p = two_class_volume()
    out = mrf_smooth(p, mask, (1.0, 1.0, 2.5), beta=2.0, iterations=10)
    np.testing.assert_array_equal(out.argmax(1), truth[mask])


def test_beta_zero_returns_input_and_rows_sum_to_one(rng):
    mask = rng.random((9, 8, 7)) > 0.3
    p = rng.random((int(mask.sum()), 3)).astype(np.float32)
    p /= p.sum(1, keepdims=True)
    out0 = mrf_smooth(p, mask, (1, 1, 1), beta=0.0, iterations=5)
    assert out0.dtype == np.float32
    np.testing.assert_allclose(out0, p, rtol=1e-6)
    out = mrf_smooth(p * 3.0, mask, (1, 1, 1), beta=0.7, iterations=4)  # unnormalised input is fine
    assert out.dtype == np.float32 and out.shape == p.shape
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-5)


def test_anisotropic_weights_couple_thick_slices_less():
    # a voxel whose in-plane neighbours say class 0 and slice neighbours say class 1
    mask = np.ones((3, 3, 3), bool)
    p = np.full((27, 2), 0.5)
    lab = np.zeros((3, 3, 3), int)
    lab[:, :, 0] = lab[:, :, 2] = 1
    p[:] = np.where(lab.reshape(-1, 1) == np.arange(2), 0.99, 0.01)
    p[13] = 0.5
    iso = mrf_smooth(p, mask, (1, 1, 1), beta=1.0, iterations=1)[13]
    thick = mrf_smooth(p, mask, (1, 1, 5), beta=1.0, iterations=1)[13]
    assert thick[0] > iso[0] and thick[0] > 0.5


def test_deterministic_and_thread_independent(rng):
    mask = rng.random((30, 25, 20)) > 0.2
    p = rng.random((int(mask.sum()), 3))
    a = mrf_smooth(p, mask, (1, 1, 1), beta=0.5, iterations=5)
    b = mrf_smooth(p, mask, (1, 1, 1), beta=0.5, iterations=5)
    np.testing.assert_array_equal(a, b)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        c = mrf_smooth(p, mask, (1, 1, 1), beta=0.5, iterations=5)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(a, c)


def test_shape_errors():
    mask = np.ones((4, 4, 4), bool)
    p = np.full((64, 3), 1 / 3)
    with pytest.raises(ValueError, match="rows"):
        mrf_smooth(p[:-1], mask, (1, 1, 1), beta=0.5, iterations=2)
    with pytest.raises(ValueError, match="3-D"):
        mrf_smooth(p, mask.reshape(16, 4), (1, 1, 1), beta=0.5, iterations=2)
    with pytest.raises(ValueError, match="boolean"):
        mrf_smooth(p, mask.astype(np.uint8), (1, 1, 1), beta=0.5, iterations=2)
    with pytest.raises(ValueError, match="shape"):
        mrf_smooth(p[:, 0], mask, (1, 1, 1), beta=0.5, iterations=2)
    with pytest.raises(ValueError, match="spacing"):
        mrf_smooth(p, mask, (1, 1), beta=0.5, iterations=2)
    with pytest.raises(ValueError, match="beta"):
        mrf_smooth(p, mask, (1, 1, 1), beta=-1.0, iterations=2)
