"""Label clean-up: small islands take their surroundings' label, holes are filled."""
import doctest

import numpy as np
import pytest

from segment import postprocess
from segment.postprocess import fill_holes, fill_holes_slicewise, remove_small_islands


def test_doctests():
    assert doctest.testmod(postprocess).failed == 0


def test_small_island_takes_the_surrounding_label():
    lab = np.full((12, 12, 12), 3, np.uint8)
    lab[5:7, 5, 5] = 2  # a 2-voxel island of GM inside WM
    mask = np.ones(lab.shape, bool)
    out = remove_small_islands(lab, mask, (1.0, 1.0, 1.0), min_size_mm3=5)
    assert (out == 3).all()
    # islands at or above the size stay
    kept = remove_small_islands(lab, mask, (1.0, 1.0, 1.0), min_size_mm3=2)
    assert (kept == lab).all()


def test_island_between_two_regions_splits_by_nearest_side():
    lab = np.ones((20, 6, 6), np.uint8)
    lab[10:, :, :] = 3
    lab[8:12, 2:4, 2:4] = 2  # 16 voxels across the CSF/WM border
    mask = np.ones(lab.shape, bool)
    out = remove_small_islands(lab, mask, (1.0, 1.0, 1.0), min_size_mm3=20)
    assert set(np.unique(out)) == {1, 3}
    assert (out[:10] == 1).all() and (out[10:] == 3).all()


def test_anisotropic_spacing_prefers_the_nearer_neighbour_in_mm():
    lab = np.full((5, 5, 5), 1, np.uint8)
    lab[:, :, 1] = 3
    lab[:, :, 3] = 3
    lab[2, 2, 2] = 2  # neighbours: label 1 along x/y (1 mm), label 3 along z (5 mm)
    mask = np.ones(lab.shape, bool)
    out = remove_small_islands(lab, mask, (1.0, 1.0, 5.0), min_size_mm3=6)
    assert out[2, 2, 2] == 1
    out_z = remove_small_islands(lab, mask, (5.0, 5.0, 1.0), min_size_mm3=30)
    assert out_z[2, 2, 2] == 3


def test_voxels_outside_the_mask_are_untouched_and_unreachable_islands_stay():
    lab = np.zeros((10, 10, 10), np.uint8)
    mask = np.zeros(lab.shape, bool)
    mask[1:8, 1:8, 1:8] = True
    lab[mask] = 2
    mask[9, 9, 9] = True
    lab[9, 9, 9] = 1  # an isolated one-voxel piece of the mask: no kept voxel reaches it
    out = remove_small_islands(lab, mask, (1.0, 1.0, 1.0), min_size_mm3=5)
    assert out[9, 9, 9] == 1
    assert (out[~mask] == 0).all()
    assert (out[1:8, 1:8, 1:8] == 2).all()


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.5, 0.5, 3.0)])
def test_remove_small_islands_is_deterministic_and_idempotent(spacing):
    rng = np.random.default_rng(0)
    lab = rng.integers(1, 4, size=(16, 16, 8)).astype(np.uint8)
    mask = np.ones(lab.shape, bool)
    a = remove_small_islands(lab, mask, spacing, min_size_mm3=4)
    b = remove_small_islands(lab, mask, spacing, min_size_mm3=4)
    assert (a == b).all()
    assert set(np.unique(a)) <= {1, 2, 3}


def test_fill_holes_3d_and_per_slice():
    m = np.zeros((9, 9, 9), bool)
    m[1:8, 1:8, 1:8] = True
    m[3:6, 3:6, 3:6] = False  # an enclosed cavity
    assert fill_holes(m)[4, 4, 4]
    t = np.ones((7, 7, 5), bool)
    t[3, 3, :] = False  # a tube through every slice: not a 3-D hole, a hole of each slice
    assert fill_holes_slicewise(t)[3, 3].all()
    assert fill_holes(t)[3, 3].all()
    # a notch open to the slice's border is not a hole
    n = np.ones((7, 7, 3), bool)
    n[0:4, 3, :] = False
    assert not fill_holes(n)[0:4, 3].any()


def test_fill_holes_empty_mask():
    e = np.zeros((4, 4, 4), bool)
    assert not fill_holes(e).any() and not fill_holes_slicewise(e).any()


def test_fill_holes_nd_matches_scipy_in_2d_and_3d():
    from scipy import ndimage as ndi

    from segment.postprocess import fill_holes_nd

    rng = np.random.default_rng(7)
    for _ in range(150):
        shape = tuple(int(s) for s in rng.integers(1, 11, size=rng.choice([2, 3])))
        m = rng.random(shape) < rng.uniform(0.3, 0.95)
        assert np.array_equal(fill_holes_nd(m), ndi.binary_fill_holes(m))


def test_small_island_detection_matches_per_label_connected_components():
    from scipy import ndimage as ndi

    from segment.postprocess import _small_islands

    rng = np.random.default_rng(5)
    for _ in range(20):
        shape = tuple(int(s) for s in rng.integers(2, 14, size=3))
        lab = rng.integers(1, 4, size=shape).astype(np.uint8)
        lab = ndi.median_filter(lab, size=2)  # some larger blobs next to specks
        mask = rng.random(shape) < 0.9
        min_vox = int(rng.integers(2, 12))
        want = np.zeros(shape, bool)
        for c in (1, 2, 3):
            comp, n = ndi.label((lab == c) & mask)
            sizes = np.bincount(comp.ravel())
            sizes[0] = np.iinfo(np.int64).max
            want |= (sizes < min_vox)[comp]
        for itype in (np.int32, np.int64):
            got = _small_islands(lab, mask, np.int64(min_vox), np.empty(lab.size, itype), np.zeros(lab.size, itype))
            assert np.array_equal(got, want)
