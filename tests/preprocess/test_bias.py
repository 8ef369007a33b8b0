"""N4 bias correction flattens a known smooth multiplicative field."""
from __future__ import annotations

import numpy as np
import pytest

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


def _biased_phantom(seed=0):
    shape = (60, 56, 44)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r2 = x**2 + y**2 + z**2
    ball = r2 < 0.8
    img = np.where(ball, 100.0, 0.0)
    img[r2 < 0.45] = 150.0
    img[(r2 < 0.15) | ((np.abs(x) < 0.1) & ball)] = 40.0  # "ventricles" and a "fissure"
    field = np.exp(0.25 * x - 0.2 * y + 0.15 * z * x)
    rng = np.random.default_rng(seed)
    return (img * field + rng.normal(0, 2.0, shape) * ball).astype(np.float32), ball, img, field


def test_native_n4_recovers_the_field_like_simpleitk():
    biased, ball, clean, field = _biased_phantom()
    est = {}
    for method in ("native", "simpleitk"):
        out = n4_correct(biased, ball, (1.0, 1.0, 1.0), shrink=3, method=method)
        est[method] = np.log(biased[ball] / out[ball])
    true = np.log(field[ball])
    for method, e in est.items():
        assert np.corrcoef(e, true)[0, 1] > 0.95, method
    # same algorithm, same samples: the two fields agree closely
    assert np.corrcoef(est["native"], est["simpleitk"])[0, 1] > 0.99


def test_native_n4_with_two_fitting_levels_also_recovers_the_field():
    biased, ball, clean, field = _biased_phantom(1)
    out = n4_correct(biased, ball, (1.0, 1.0, 1.0), shrink=3, iterations=(30, 30))
    est = np.log(biased[ball] / out[ball])
    assert np.corrcoef(est, np.log(field[ball]))[0, 1] > 0.95
    with pytest.raises(ValueError, match="method"):
        n4_correct(biased, ball, (1.0, 1.0, 1.0), method="fast")


def test_native_n4_leaves_an_unbiased_image_nearly_unchanged_and_outside_untouched():
    _, ball, clean, _ = _biased_phantom()
    img = clean + 1.0 * ball  # no field
    out = n4_correct(img.astype(np.float32), ball, (1.0, 1.0, 1.0), shrink=3)
    ratio = out[ball] / img[ball]
    assert ratio.std() < 0.02
    # voxels outside the mask's bounding box (+2) keep their value
    img2 = img.copy()
    img2[0, 0, 0] = 5.0
    out2 = n4_correct(img2.astype(np.float32), ball, (1.0, 1.0, 1.0), shrink=3)
    assert out2[0, 0, 0] == 5.0


def test_sharpening_pulls_values_toward_histogram_peaks():
    from segment.preprocess.bias import sharpen_log_intensities

    rng = np.random.default_rng(1)
    u = np.concatenate([rng.normal(0.0, 0.05, 5000), rng.normal(1.0, 0.05, 5000)])
    s = sharpen_log_intensities(u)
    assert s.shape == u.shape
    # each mode's spread shrinks, the modes stay where they are
    for lo, hi, centre in ((-1, 0.5, 0.0), (0.5, 2, 1.0)):
        sel = (u > lo) & (u < hi)
        assert s[sel].std() < u[sel].std()
        assert abs(s[sel].mean() - centre) < 0.02


def test_centred_samples_match_itk_shrink():
    from segment.preprocess.bias import _centred_samples

    assert _centred_samples(12, 6).tolist() == [3, 9]
    assert _centred_samples(149, 6)[0] == 5 and _centred_samples(149, 6).size == 24
    assert _centred_samples(26, 1).tolist() == list(range(26))
    assert _centred_samples(4, 6).tolist() == [1]
    import SimpleITK as sitk

    for n in (6, 7, 11, 12, 13, 149, 157):
        for f in (1, 2, 3, 6):
            a = np.arange(n, dtype=np.float32)[None, None, :].repeat(2, 0).repeat(2, 1)
            got = sitk.GetArrayFromImage(sitk.Shrink(sitk.GetImageFromArray(a), [f, 1, 1]))[0, 0]
            assert _centred_samples(n, f).tolist() == got.astype(int).tolist(), (n, f)
