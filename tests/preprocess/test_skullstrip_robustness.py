"""Robustness of segment.preprocess.skullstrip on synthetic heads (no external data).

Label-preserving changes of the input (axis order and flips, grid spacing, intensity scale and
offset, noise) must leave the mask (nearly) unchanged; an eye-like sphere outside the skull and
grey matter brighter than white matter (FLAIR) must be handled. See
scripts/robustness_skullstrip.py for the same study on the raw clinical exam.
"""
from __future__ import annotations

import numpy as np
import pytest

from segment.io.nifti import from_ras, reorient_to_ras
from segment.phantom import make_phantom
from segment.preprocess.skullstrip import _head_mask, skullstrip
from segment.types import Volume


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _head(spacing, contrast="t1", seed=0, noise=0.03, eye=None, fov=(180.0, 220.0, 170.0)):
    """Synthetic head in RAS axes: brain ellipsoid (GM shell, WM core), CSF layer, dark skull,
    bright scalp, smooth bias, Rician-like noise. ``eye=(gap_mm, stalk_radius_mm)`` adds a bright
    sphere (radius 12 mm, vitreous) anterior-inferior outside the brain, ``gap_mm`` from its
    surface, joined to the brain by a stalk of grey-matter intensity through the CSF, skull and
    scalp. Returns (image, brain, eye mask or None)."""
    rng = np.random.default_rng(seed)
    sp = np.asarray(spacing, float)
    fov = np.asarray(fov, float)
    shape = np.ceil(fov / sp).astype(int)
    x, y, z = np.meshgrid(*[(np.arange(n) + 0.5) * s - f / 2 for n, s, f in zip(shape, sp, fov)],
                          indexing="ij")
    axes = np.array([65.0, 80.0, 60.0])

    def ell(extra):
        return (x / (axes[0] + extra)) ** 2 + (y / (axes[1] + extra)) ** 2 + (z / (axes[2] + extra)) ** 2

    brain = ell(0.0) <= 1
    # GM, WM, CSF, skull, scalp, vitreous
    vals = {"t1": (0.55, 0.7, 0.15, 0.05, 1.0, 0.2), "t2": (0.6, 0.45, 1.0, 0.05, 0.7, 1.0)}[contrast]
    img = np.zeros(shape, np.float32)
    img[brain] = vals[0]
    img[ell(-12.0) <= 1] = vals[1]
    img[(ell(3.0) <= 1) & ~brain] = vals[2]
    img[(ell(9.0) <= 1) & ~(ell(3.0) <= 1)] = vals[3]
    img[(ell(15.0) <= 1) & ~(ell(9.0) <= 1)] = vals[4]
    eye_mask = None
    if eye is not None:
        gap, stalk_r = eye
        r_eye = 12.0
        start = np.array([30.0, 0.0, 0.0])
        d = np.array([0.0, np.cos(np.radians(-20.0)), np.sin(np.radians(-20.0))])
        t = np.linspace(0.0, 150.0, 3001)
        pts = start[None] + t[:, None] * d[None]
        t_surface = t[np.argmax(((pts / axes) ** 2).sum(axis=1) > 1)]
        c = start + (t_surface + gap + r_eye) * d
        rel = np.stack([x - c[0], y - c[1], z - c[2]], axis=-1)
        eye_mask = (rel ** 2).sum(axis=-1) <= r_eye ** 2
        along = -(rel @ d)
        perp = np.linalg.norm(rel + along[..., None] * d, axis=-1)
        stalk = (perp <= stalk_r) & (along > 0) & (along < r_eye + gap + 5.0) & ~eye_mask & ~brain
        img[stalk] = vals[0]
        img[eye_mask] = vals[5]
    img = img * (1.0 + 0.1 * z / 100.0 + 0.05 * x / 100.0)
    img = np.sqrt((img + rng.normal(0, noise, shape)) ** 2 + rng.normal(0, noise, shape) ** 2)
    return (img * 1000.0).astype(np.float32), brain, eye_mask


def _shared(*arrays):
    """Arrays shared by several tests, read-only so that no test can change them for another."""
    for a in arrays:
        a.flags.writeable = False
    return arrays


# ---------------------------------------------------------------------------- orientation
@pytest.fixture(scope="module")
def head_223():
    """The 2 x 2 x 3 mm head and its mask, computed once for the orientation tests."""
    sp = (2.0, 2.0, 3.0)
    img, truth, _ = _head(sp)
    return _shared(img, truth, skullstrip(img, sp, modalities=["t1"]))


@pytest.mark.parametrize(
    "perm, flips",
    [((1, 2, 0), ()), ((2, 0, 1), ()), ((0, 2, 1), (1,)), ((0, 1, 2), (0, 2)), ((2, 1, 0), (0,))],
)
def test_mask_unchanged_by_axis_order_and_flips(perm, flips, head_223):
    """Apart from the neck rule (which has nothing to cut here), no step depends on the array
    axes."""
    sp = np.array([2.0, 2.0, 3.0])
    img, truth, ref = head_223
    moved = np.transpose(img, perm)
    for ax in flips:
        moved = np.flip(moved, axis=ax)
    mask = skullstrip(np.ascontiguousarray(moved), sp[list(perm)], modalities=["t1"])
    for ax in flips:
        mask = np.flip(mask, axis=ax)
    back = np.transpose(mask, np.argsort(perm))
    assert _dice(back, ref) > 0.98
    assert _dice(back, truth) > 0.95


def test_file_orientation_is_undone_by_reorientation(head_223):
    """The pipeline and `segment skullstrip` reorient to RAS first: a file stored in another
    axis order gives the same mask voxel for voxel."""
    sp = (2.0, 2.0, 3.0)
    img, _, ref = head_223
    aff = np.diag([*sp, 1.0])
    # stored as a sagittal series: axes (A-P, S-I reversed, L-R)
    stored = np.ascontiguousarray(np.flip(np.transpose(img, (1, 2, 0)), axis=1))
    a2 = np.zeros((4, 4))
    a2[:3, 0], a2[:3, 1], a2[:3, 2] = aff[:3, 1], -aff[:3, 2], aff[:3, 0]
    a2[3, 3] = 1.0
    a2[:3, 3] = aff[:3, 2] * (stored.shape[1] - 1)
    vol = Volume(stored, a2)
    ras = reorient_to_ras(vol)
    assert ras.shape == img.shape
    mask = skullstrip(ras.data, ras.spacing, modalities=["t1"])
    assert np.array_equal(mask, ref)
    assert from_ras(mask.astype(np.uint8), vol).shape == stored.shape


# ---------------------------------------------------------------------------- grids
def test_mask_stable_across_grids():
    """The same anatomy on grids from 1.5 mm isotropic to 5.5 mm slices: masks agree with the
    truth within a narrow band (all radii are millimetres)."""
    scores = []
    for sp in [(1.5, 1.5, 1.5), (2.5, 2.5, 2.5), (1.2, 1.2, 5.5), (3.0, 2.0, 2.0)]:
        img, truth, _ = _head(sp, seed=1)
        scores.append(_dice(skullstrip(img, sp, modalities=["t1"]), truth))
    assert min(scores) > 0.95
    assert max(scores) - min(scores) < 0.03


def test_large_grid_half_resolution_path_matches():
    """Grids above max_voxels are processed at half resolution: the mask stays close to the
    full-resolution one."""
    sp = (1.5, 1.5, 1.5)
    img, truth, _ = _head(sp, seed=2)
    full = skullstrip(img, sp, modalities=["t1"])
    half = skullstrip(img, sp, modalities=["t1"], max_voxels=img.size // 2)
    assert _dice(half, full) > 0.97
    assert _dice(half, truth) > 0.95


# ---------------------------------------------------------------------------- intensities
@pytest.fixture(scope="module")
def head_seed3():
    """The 2 x 2 x 2.5 mm head of seed 3 and its mask, computed once for the intensity tests."""
    sp = (2.0, 2.0, 2.5)
    img, truth, _ = _head(sp, seed=3)
    return _shared(img, truth, skullstrip(img, sp, modalities=["t1"]))


@pytest.mark.parametrize("scale, offset_frac", [(1000.0, 0.2), (1e-3, 0.0), (1.0, 0.5), (7.0, -0.1)])
def test_mask_unchanged_by_intensity_scale_and_offset(scale, offset_frac, head_seed3):
    """The air level (median outside the head), not 0, is the intensity reference."""
    sp = (2.0, 2.0, 2.5)
    img, truth, ref = head_seed3
    med = float(np.median(img[truth]))
    mask = skullstrip(img * scale + offset_frac * med * scale, sp, modalities=["t1"])
    assert _dice(mask, ref) > 0.995


def test_phantom_offset_invariance():
    ph = make_phantom(1, shape=(64, 75, 64), spacing=(3.0, 3.0, 3.0), skull=True, modalities=("t1c",))
    img = ph.images["t1c"]
    med = float(np.median(img[ph.brain_mask]))
    ref = skullstrip(img, ph.spacing, modalities=["t1c"])
    shifted = skullstrip(img * 1000.0 + 0.2 * med * 1000.0, ph.spacing, modalities=["t1c"])
    assert _dice(ref, shifted) > 0.995


def test_heavy_noise():
    """Noise twice the usual level: the Rayleigh air is not taken for an intensity offset."""
    sp = (2.0, 2.0, 2.0)
    img, truth, _ = _head(sp, seed=4, noise=0.06)
    assert _dice(skullstrip(img, sp, modalities=["t1"]), truth) > 0.95


@pytest.mark.parametrize("seed", [0, 1])
def test_flair_grey_matter_brighter_than_white_matter_is_kept(seed):
    """FLAIR grey matter is brighter than the white-matter-rich deep head: the upper bound of
    the range must not cut the cortex off (it did when it used the plain MAD)."""
    ph = make_phantom(seed, shape=(64, 75, 64), spacing=(3.0, 3.0, 3.0), skull=True,
                      modalities=("flair",))
    mask = skullstrip(ph.images["flair"], ph.spacing, modalities=["flair"])
    assert _dice(mask, ph.brain_mask) > 0.9


# ---------------------------------------------------------------------------- anatomy
@pytest.mark.parametrize("sp", [(1.5, 1.5, 1.5), (1.0, 1.0, 4.0)])
def test_eye_on_a_thin_stalk_outside_the_skull_is_excluded(sp):
    """A bright (vitreous-like, as bright as CSF on T2) sphere outside the skull, joined to the
    brain by a thin stalk (optic nerve), must not be taken into the mask."""
    img, truth, eye = _head(sp, contrast="t2", eye=(6.0, 2.5), fov=(180.0, 250.0, 170.0))
    mask = skullstrip(img, sp, modalities=["t2"])
    assert mask[eye].mean() < 0.05
    assert _dice(mask, truth) > 0.88


def test_head_mask_keeps_open_air_cavities_and_fills_cut_ones():
    """Air open to the outside (an airway) stays air in the head mask; a dark region reaching
    the cut of the field of view is filled (sealed at the cut)."""
    sp = np.array([2.0, 2.0, 2.0])
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*[np.arange(n) * 2.0 - c for n, c in zip((80, 90, 70), (80, 90, 40))],
                          indexing="ij", sparse=True)
    head = (x / 70.0) ** 2 + (y / 80.0) ** 2 + (z / 70.0) ** 2 <= 1  # cut at the bottom (z < 0)
    img = np.where(head, 600.0, 0.0)
    airway = (x ** 2 + (y - 50.0) ** 2 <= 6.0 ** 2) | ((np.abs(x) <= 6.0) & (np.abs(z - 5.0) <= 6.0) & (y >= 50.0))
    airway = airway & (z <= 5.0)  # vertical tube from the cut up, then forward to the face
    img = np.where(airway & head, 0.0, img)
    dark = (x ** 2 + (y + 20.0) ** 2 <= 10.0 ** 2) & (z <= 10.0)  # dark tissue reaching the cut
    img = np.where(dark & head & ~airway, 20.0, img)
    img = np.sqrt((img + rng.normal(0, 10, img.shape)) ** 2 + rng.normal(0, 10, img.shape) ** 2)
    mask, air = _head_mask(img.astype(np.float32), sp)
    assert air < 30.0
    inside_airway = airway & head & (np.abs(x) <= 2) & (np.abs(y - 50.0) <= 2) & (z >= -20) & (z <= 0)
    assert inside_airway.any() and not mask[inside_airway].any()
    inside_dark = dark & head & (x ** 2 + (y + 20.0) ** 2 <= 16.0) & (z <= 0)
    assert inside_dark.any() and mask[inside_dark].all()
