"""Tests of segment.preprocess.skullstrip on synthetic heads (no external data)."""
from __future__ import annotations

import numpy as np
import pytest

from segment.errors import InputError
from segment.preprocess.skullstrip import (
    brain_mask_nonzero,
    is_brain_only,
    mask_quality_flags,
    skullstrip,
)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def synthetic_head(spacing=(1.5, 1.5, 1.5), seed=0, contrast="t1", tumor=False, neck=False):
    """A head phantom in RAS axes: brain ellipsoid (WM core, GM shell), CSF layer, dark skull,
    bright scalp, optional neck cylinder and tumor, Rician-like noise. Returns (image, brain)."""
    rng = np.random.default_rng(seed)
    sp = np.asarray(spacing, float)
    fov = np.array([180.0, 210.0, 200.0 if neck else 170.0])
    shape = np.ceil(fov / sp).astype(int)
    x, y, z = np.meshgrid(*[(np.arange(n) + 0.5) * s - f / 2 for n, s, f in zip(shape, sp, fov)],
                          indexing="ij")
    zc = z - (15.0 if neck else 0.0)  # head centre a bit superior when the neck is in view
    axes = np.array([65.0, 80.0, 60.0])  # brain semi-axes (mm): about 1300 mL

    def ell(extra):
        return (x / (axes[0] + extra)) ** 2 + (y / (axes[1] + extra)) ** 2 + (zc / (axes[2] + extra)) ** 2

    brain = ell(0.0) <= 1
    csf = (ell(3.0) <= 1) & ~brain
    skull = (ell(9.0) <= 1) & ~brain & ~csf
    scalp = (ell(15.0) <= 1) & ~(ell(9.0) <= 1)
    wm = ell(-12.0) <= 1
    vals = {  # brain GM, WM, CSF, skull, scalp
        "t1": (0.55, 0.7, 0.15, 0.05, 1.0),
        "t2": (0.6, 0.45, 1.0, 0.05, 0.7),
    }[contrast]
    img = np.zeros(shape, np.float32)
    img[brain] = vals[0]
    img[wm] = vals[1]
    img[csf] = vals[2]
    img[skull] = vals[3]
    img[scalp] = vals[4]
    if neck:  # a neck of muscle-like tissue below the head, touching the lower border
        nk = (x ** 2 / 45.0 ** 2 + (y + 10) ** 2 / 45.0 ** 2 <= 1) & (zc < -50) & ~(ell(15.0) <= 1)
        img[nk] = vals[0]
    if tumor:  # a bright enhancing rim with a dark core near the surface of the brain
        d = np.sqrt((x - 40) ** 2 + (y - 20) ** 2 + (zc - 15) ** 2)
        img[(d < 18) & brain] = 1.2
        img[(d < 12) & brain] = 0.1
    # smooth bias field and noise
    bias = 1.0 + 0.15 * (zc / 100.0) + 0.1 * (x / 100.0)
    img = img * bias
    noise = 0.03
    img = np.sqrt((img + rng.normal(0, noise, shape)) ** 2 + rng.normal(0, noise, shape) ** 2)
    return img.astype(np.float32) * 1000.0, brain


@pytest.mark.parametrize(
    "spacing, kwargs",
    [
        ((1.5, 1.5, 1.5), {}),
        ((1.2, 1.2, 5.5), {}),
        ((1.5, 1.5, 1.5), {"contrast": "t2"}),
        ((1.5, 1.5, 3.0), {"tumor": True}),
        ((1.5, 1.5, 1.5), {"neck": True}),
    ],
)
def test_skullstrip_synthetic_head(spacing, kwargs):
    img, truth = synthetic_head(spacing, **kwargs)
    mod = kwargs.get("contrast", "t1")
    mask = skullstrip(img, spacing, modalities=[mod])
    assert mask.shape == img.shape and mask.dtype == bool
    assert _dice(mask, truth) > 0.9


def test_skullstrip_multimodal_and_unnamed():
    sp = (1.5, 1.5, 3.0)
    t1, truth = synthetic_head(sp, contrast="t1", seed=1)
    t2, _ = synthetic_head(sp, contrast="t2", seed=2)
    both = skullstrip([t1, t2], sp, modalities=["t1n", "t2w"])
    assert _dice(both, truth) > 0.9
    unnamed = skullstrip([t1], sp)
    assert _dice(unnamed, truth) > 0.9


def test_is_brain_only_and_nonzero_mask():
    img, truth = synthetic_head((2.0, 2.0, 2.0))
    assert not is_brain_only(img)
    stripped = np.where(truth, img, 0.0).astype(np.float32)
    assert is_brain_only(stripped)
    mask = brain_mask_nonzero(stripped, (2.0, 2.0, 2.0))
    assert _dice(mask, truth) > 0.99
    # an island of 1 voxel is dropped, a hole is filled
    s2 = stripped.copy()
    s2[2, 2, 2] = 5.0
    c = tuple(n // 2 for n in s2.shape)
    s2[c] = 0.0
    m2 = brain_mask_nonzero(s2, (2.0, 2.0, 2.0))
    assert not m2[2, 2, 2] and m2[c]
    # zero-padded raw scan (noise inside a box) is not brain-only
    padded = np.zeros((40, 40, 40), np.float32)
    padded[:, 5:35, :] = np.random.default_rng(0).random((40, 30, 40)) + 0.1
    assert not is_brain_only(padded)
    assert not is_brain_only(np.zeros((10, 10, 10)))


def test_head_with_zeroed_air_is_not_brain_only():
    """Bug: a raw head whose air was set to zero (a converter, a defacing or background-removal
    tool, or load_case for a constant background) is one compact region surrounded by zeros, so it
    was taken for a skull-stripped brain and segmented whole (tcia_raw's T1 with its air zeroed:
    2562 mL of 'brain'). With the voxel size, a region larger than any brain is a head."""
    from scipy import ndimage as ndi

    img, truth = synthetic_head((2.0, 2.0, 2.0))
    head = ndi.binary_fill_holes(img > 0.1 * np.percentile(img, 99))  # the head, its dark skull inside
    zeroed = np.where(head, img, 0.0).astype(np.float32)
    sp = (2.0, 2.0, 2.0)
    assert is_brain_only(zeroed)  # the failure: zeros alone cannot tell a head from a brain
    # a limit between this phantom's brain and head volumes (mL of 8 mm^3 voxels)
    limit = 0.5 * (np.count_nonzero(truth) + np.count_nonzero(zeroed)) * 8.0 / 1000.0
    assert not is_brain_only(zeroed, spacing=sp, max_ml=limit)
    assert is_brain_only(np.where(truth, img, 0.0).astype(np.float32), spacing=sp, max_ml=limit)
    # the voxel size counts: the same arrays at 1 mm are an eighth of the volume
    assert is_brain_only(zeroed, spacing=(1.0, 1.0, 1.0), max_ml=limit)


@pytest.mark.parametrize("value", [0.0, 7.0])
def test_empty_or_constant_image_raises(value):
    img = np.full((30, 30, 30), value, np.float32)
    with pytest.raises(InputError, match="empty brain mask"):
        skullstrip(img, (1.0, 1.0, 1.0))
    if value == 0.0:
        with pytest.raises(InputError, match="empty brain mask"):
            brain_mask_nonzero(img)


def test_bad_inputs_raise():
    img, _ = synthetic_head((3.0, 3.0, 3.0))
    with pytest.raises(InputError, match="3-D"):
        skullstrip(img[..., 0], (3.0, 3.0, 3.0))
    with pytest.raises(InputError, match="spacing"):
        skullstrip(img, (3.0, 0.0, 3.0))
    with pytest.raises(InputError, match="resample"):
        skullstrip([img, img[:-1]], (3.0, 3.0, 3.0))
    bad = img.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        skullstrip(bad, (3.0, 3.0, 3.0))
    with pytest.raises(InputError, match="modality"):
        skullstrip([img], (3.0, 3.0, 3.0), modalities=["t1", "t2"])


def test_quality_flags():
    sp = (1.0, 1.0, 1.0)
    m = np.zeros((140, 170, 130), bool)
    x, y, z = np.ogrid[:140, :170, :130]
    m[((x - 70) / 65.0) ** 2 + ((y - 85) / 80.0) ** 2 + ((z - 65) / 60.0) ** 2 <= 1] = True
    assert mask_quality_flags(m, sp) == []
    small = np.zeros_like(m)
    small[10:20, 10:20, 10:20] = True
    assert any("volume" in f for f in mask_quality_flags(small, sp))
    touching = m.copy()
    touching[:, :, 0] = True
    assert any("border" in f for f in mask_quality_flags(touching, sp))
    assert mask_quality_flags(np.zeros_like(m), sp) == ["empty brain mask"]
