"""The tumor phantom kinds: standard, cystic (FLAIR-dark core), cortical (rim at the surface)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from segment.phantom import make_phantom

KW = dict(shape=(48, 56, 48), spacing=(4.0, 4.0, 4.0), bias=0.0, noise=0.0)


def test_true_is_standard_and_healthy_tissue_unchanged():
    a = make_phantom(2, tumor=True, **KW)
    b = make_phantom(2, tumor="standard", **KW)
    np.testing.assert_array_equal(a.tumor, b.tumor)
    for m in a.images:
        np.testing.assert_array_equal(a.images[m], b.images[m])
    c = make_phantom(2, tumor="cystic", **KW)
    np.testing.assert_array_equal(a.tumor, c.tumor)  # same geometry, other core contrast
    far = (a.tumor == 0) & (ndi.distance_transform_edt(a.tumor == 0) > 3)
    np.testing.assert_array_equal(a.images["t1"][far], c.images["t1"][far])


def test_cystic_core_is_dark_on_flair_and_bright_on_t2():
    ph = make_phantom(1, tumor="cystic", **KW)
    core = ndi.binary_erosion(ph.tumor == 1)
    assert core.any()
    ed = ph.tumor == 2
    fl, t2 = ph.images["flair"], ph.images["t2"]
    wm = ph.tissue == 3
    assert np.median(fl[core]) < 0.75 * np.median(fl[wm])  # cyst 0.28 vs WM 0.55 (x 1000) before blur
    assert np.median(fl[core]) < 0.5 * np.median(fl[ed])
    assert np.median(t2[core]) > 1.5 * np.median(t2[wm])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cortical_tumor_reaches_the_brain_surface(seed):
    ph = make_phantom(seed, tumor="cortical", **KW)
    depth = ndi.distance_transform_edt(ph.brain_mask, sampling=KW["spacing"])
    et = ph.tumor == 3
    assert et.any()
    assert depth[et].min() <= 4.0 + 1e-6  # the enhancing rim touches the outermost voxels
    deep = make_phantom(seed, tumor="standard", **KW)
    assert depth[ph.tumor > 0].mean() < depth[deep.tumor > 0].mean()


def test_unknown_tumor_kind_is_rejected():
    with pytest.raises(ValueError, match="tumor must be"):
        make_phantom(0, tumor="glioblastoma", **KW)
