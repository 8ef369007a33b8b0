"""Millimetre morphology: the same sets as scipy.ndimage with Euclidean balls, on anisotropic grids."""
import numpy as np
import pytest
from scipy import ndimage as ndi

from segment.morphology import (ball, close_mm, dilate_mm, erode_mm, fill_holes_all_axes, open_mm, remove_small,
                                squared_distance_to)

SPACINGS = [(1.0, 1.0, 1.0), (1.0, 1.0, 2.0), (0.9, 1.2, 3.0)]


def blobs(seed, shape=(30, 28, 20)):
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), 1.5) > 0.5 + 0.03 * rng.standard_normal()


def scipy_fill_all_axes(mask):
    out = ndi.binary_fill_holes(mask)
    for ax in range(3):
        for i in range(out.shape[ax]):
            sl = [slice(None)] * 3
            sl[ax] = i
            out[tuple(sl)] = ndi.binary_fill_holes(out[tuple(sl)])
    return out


@pytest.mark.parametrize("spacing", SPACINGS)
def test_squared_distance_matches_scipy_edt(spacing):
    rng = np.random.default_rng(3)
    f = rng.random((33, 21, 17)) > 0.97
    ref = ndi.distance_transform_edt(~f, sampling=spacing) ** 2
    np.testing.assert_allclose(squared_distance_to(f, spacing), ref, rtol=0, atol=1e-9)


def test_squared_distance_without_feature_is_inf():
    assert np.isinf(squared_distance_to(np.zeros((4, 5, 6), bool), (1, 1, 1))).all()


@pytest.mark.parametrize("seed", range(6))
def test_operations_match_scipy_with_balls(seed):
    spacing = SPACINGS[seed % 3]
    r = (1.5, 2.0, 3.0)[seed % 3]
    m = blobs(seed)
    B = ball(r, spacing)
    pad = [s // 2 + 1 for s in B.shape]
    padded = np.pad(m, [(p, p) for p in pad])
    crop = tuple(slice(p, p + n) for p, n in zip(pad, m.shape))
    assert np.array_equal(close_mm(m, r, spacing), ndi.binary_closing(padded, B)[crop])
    assert np.array_equal(open_mm(m, r, spacing), ndi.binary_opening(m, B))
    assert np.array_equal(dilate_mm(m, r, spacing), ndi.binary_dilation(m, B))
    # the edge of the array is not outside for an erosion (a cut field of view is not eroded)
    assert np.array_equal(erode_mm(m, r, spacing), ndi.binary_erosion(m, B, border_value=1))
    assert np.array_equal(fill_holes_all_axes(m), scipy_fill_all_axes(m))


def test_fill_holes_all_axes_closes_a_tube_in_its_slices_only():
    m = np.ones((7, 7, 5), bool)
    m[3, 3, :] = False  # a tube open at both ends along axis 2: not a 3-D hole, a hole in every axial slice
    m[0, 3, 0] = False  # a notch on an edge of the array is open in every slice through it
    f = fill_holes_all_axes(m)
    assert f[3, 3, :].all() and not f[0, 3, 0]


def test_remove_small_keeps_large_components():
    m = np.zeros((10, 10, 10), bool)
    m[1:4, 1:4, 1:4] = True  # 27 voxels
    m[7, 7, 7] = True
    out = remove_small(m, 10.0, 1.0)
    assert out.sum() == 27 and not out[7, 7, 7]


@pytest.mark.parametrize("op", [close_mm, open_mm, dilate_mm, erode_mm])
def test_empty_and_zero_radius(op):
    e = np.zeros((5, 5, 5), bool)
    assert not op(e, 2.0, (1, 1, 1)).any()
    m = blobs(1)
    assert np.array_equal(op(m, 0.0, (1, 1, 1)), m)
