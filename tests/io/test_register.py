"""Tests of segment.io.register on synthetic heads (no external data)."""
from __future__ import annotations

import numpy as np
import pytest

from segment.io.nifti import resample_to
from segment.io.register import apply_rigid, motion_of, rigid_matrix, rigid_register
from segment.phantom import make_phantom
from segment.types import Volume


@pytest.fixture(scope="module")
def head():
    ph = make_phantom(3, shape=(64, 75, 64), spacing=(3.0, 3.0, 3.0), skull=True)
    return ph


def _center(vol: Volume) -> np.ndarray:
    return (vol.affine @ np.append((np.asarray(vol.shape) - 1) / 2.0, 1.0))[:3]


def _error(found: np.ndarray, truth: np.ndarray, center: np.ndarray) -> tuple[float, float]:
    """Residual motion (mm at the centre, degrees) of found vs truth."""
    disp, ang = motion_of(np.linalg.inv(truth) @ found, center)
    return float(np.linalg.norm(disp)), ang


@pytest.mark.parametrize(
    "rot, shift",
    [((0.0, 0.0, 8.0), (4.0, -6.0, 3.0)), ((6.0, -4.0, 0.0), (-3.0, 2.0, 7.0))],
)
def test_known_rigid_motion_is_recovered(head, rot, shift):
    fixed = Volume(head.images["t1"], head.affine)
    c = _center(fixed)
    motion = rigid_matrix(rot, shift, c)
    # the T2 series of the same head, acquired after the head moved by `motion`: its voxels are
    # where they were, its header (scanner space) sees them moved by the inverse
    moving = Volume(head.images["t2"], np.linalg.inv(motion) @ head.affine)
    res = rigid_register(moving, fixed)
    assert res.accepted, res.warning
    mm, deg = _error(res.matrix, motion, c)
    assert mm < 1.0 and deg < 1.0, (mm, deg, res.summary())
    assert res.metric_after < res.metric_before
    # composing and resampling puts the T2 back on the T1 grid
    back = resample_to(apply_rigid(moving, res), fixed).data
    orig = head.images["t2"]
    brain = head.brain_mask
    assert np.corrcoef(back[brain], orig[brain])[0, 1] > 0.95


def test_resampled_moving_grid(head):
    """Moving series on its own (coarser, shifted) grid, data resampled through the motion."""
    fixed = Volume(head.images["t1"], head.affine)
    c = _center(fixed)
    motion = rigid_matrix((0.0, 5.0, -5.0), (2.0, 3.0, -4.0), c)
    aff = head.affine.copy()
    aff[:3, :3] *= 1.5
    aff[:3, 3] += 7.0
    grid = Volume(np.zeros((40, 50, 40), np.float32), aff)
    # sample the moved head on that grid: world point p of the moved head is motion^-1 p in the original
    moved = resample_to(Volume(head.images["flair"], motion @ head.affine), grid)
    res = rigid_register(moved, fixed)
    assert res.accepted, res.warning
    mm, deg = _error(res.matrix, np.linalg.inv(motion), c)
    assert mm < 1.0 and deg < 1.0, (mm, deg, res.summary())


def test_identity_stays_identity_and_is_deterministic(head):
    fixed = Volume(head.images["t1"], head.affine)
    moving = Volume(head.images["t2"], head.affine)
    a = rigid_register(moving, fixed, seed=3)
    b = rigid_register(moving, fixed, seed=3)
    assert a.accepted
    assert np.linalg.norm(a.translation_mm) < 0.5 and a.rotation_deg < 0.5
    np.testing.assert_array_equal(a.found, b.found)


def test_divergence_guard(head):
    fixed = Volume(head.images["t1"], head.affine)
    c = _center(fixed)
    motion = rigid_matrix((0.0, 0.0, 10.0), (8.0, 0.0, 0.0), c)
    moving = Volume(head.images["t2"], np.linalg.inv(motion) @ head.affine)
    res = rigid_register(moving, fixed, max_translation_mm=3.0)
    assert not res.accepted and "diverged" in res.warning
    np.testing.assert_array_equal(res.matrix, np.eye(4))
    assert np.linalg.norm(res.translation_mm) > 3.0  # what was found is still reported
    res = rigid_register(moving, fixed, max_rotation_deg=5.0)
    assert not res.accepted and "rotation" in res.warning
    # a metric that cannot improve (pure noise): rejected or tiny, never a wild move accepted
    rng = np.random.default_rng(0)
    noise = Volume(rng.random(fixed.shape).astype(np.float32), head.affine)
    res = rigid_register(noise, fixed)
    if res.accepted:
        assert np.linalg.norm(res.translation_mm) < 40 and res.rotation_deg < 30


def test_load_case_registers_and_notes(tmp_path, head):
    from segment.io.cases import load_case
    from segment.io.nifti import save_volume

    c = _center(Volume(head.images["t1"], head.affine))
    motion = rigid_matrix((0.0, 0.0, 6.0), (3.0, -4.0, 2.0), c)
    case = tmp_path / "moved"
    save_volume(head.images["t1"], head.affine, case / "t1.nii.gz")
    # T2 on the same grid but moved: only registration can align it
    save_volume(head.images["t2"], np.linalg.inv(motion) @ head.affine, case / "t2.nii.gz")
    save_volume(head.images["flair"], head.affine, case / "flair.nii.gz")
    loaded = load_case(case)
    assert loaded.notes == []
    assert "t2" in loaded.registered and "flair" not in loaded.registered
    assert "flair" not in loaded.resampled  # same grid, no motion: voxels untouched
    np.testing.assert_array_equal(loaded.images["flair"].data, head.images["flair"])
    mm, deg = _error(loaded.registered["t2"], motion, c)
    assert mm < 1.0 and deg < 1.0
    never = load_case(case, register="never")
    assert never.registered == {} and never.resampled == ["t2"]  # other header: resampled only
    with pytest.raises(Exception, match="register"):
        load_case(case, register="sometimes")
