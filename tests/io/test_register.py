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


# ----------------------------------------------------------------------------- template -> subject

def _affine_warped_template(a_true: np.ndarray, spacing: float = 3.0, brain: bool = False):
    """The bundled template moved by ``a_true`` (template mm -> subject mm), on a subject grid."""
    from scipy import ndimage as ndi

    from segment.atlas import load_template

    tpl = load_template()
    src = tpl.brain if brain else tpl.head
    shape = tuple(int(np.ceil(n * 2.0 / spacing)) + 6 for n in src.shape)
    aff = np.diag([spacing, spacing, spacing, 1.0])
    centre = a_true @ np.append(_center(src), 1.0)
    aff[:3, 3] = centre[:3] - spacing * (np.asarray(shape) - 1) / 2.0
    vox = np.linalg.inv(src.affine) @ np.linalg.inv(a_true) @ aff
    data = ndi.affine_transform(src.data, vox[:3, :3], offset=vox[:3, 3], output_shape=shape, order=1)
    return Volume(data.astype(np.float32), aff), tpl


def _max_error_mm(found: np.ndarray, truth: np.ndarray, tpl) -> float:
    """Largest distance (mm) between where found and truth put the template's brain voxels."""
    idx = np.argwhere(tpl.brain_mask.data)[::7]
    pts = tpl.brain_mask.affine @ np.c_[idx, np.ones(len(idx))].T
    return float(np.linalg.norm((found @ pts - truth @ pts)[:3], axis=0).max())


@pytest.mark.parametrize("brain", [False, True])
def test_register_template_recovers_known_affine(brain):
    from segment.io.register import register_template

    truth = rigid_matrix((8.0, -6.0, 10.0), (6.0, -9.0, 12.0))
    truth[:3, :3] = truth[:3, :3] @ np.diag([1.08, 0.93, 0.97])  # scales
    subject, tpl = _affine_warped_template(truth, brain=brain)
    res = register_template([subject], ["t1"], brain_only=brain, seed=0)
    err = _max_error_mm(res.matrix, truth, tpl)
    assert err < 2.0, (err, res.summary())
    assert "registration_poor" not in res.flags and "registration_reoriented" not in res.flags
    assert res.metric < -0.5 and res.similarity > 0.9
    # warp: the template brain lands on the subject's brain
    warped = res.warp(tpl.brain_fraction.data, 1, subject) > 0.5
    expect = _affine_warped_template(truth, brain=True)[0].data > 0.2 * subject.data.max()
    inter = (warped & expect).sum() / min(warped.sum(), expect.sum())
    assert inter > 0.9
    lab = res.warp(tpl.brain_mask.data, 0, subject)
    assert lab.dtype == bool and lab.shape == subject.shape


def test_register_template_wrong_orientation_header():
    """A head whose header says the axes are permuted (a 90 degree error) is found anyway."""
    from segment.io.register import register_template

    truth = rigid_matrix((0.0, 90.0, 0.0), (5.0, 0.0, -4.0))
    subject, tpl = _affine_warped_template(truth, spacing=4.0)
    res = register_template([subject], ["t1"])
    assert _max_error_mm(res.matrix, truth, tpl) < 2.5, res.summary()
    assert "registration_reoriented" in res.flags


def test_register_template_deterministic_and_poor_flag():
    from segment.io.register import register_template

    subject, _ = _affine_warped_template(rigid_matrix((3.0, 0.0, -4.0), (2.0, 1.0, 0.0)), spacing=4.0)
    a = register_template([subject], ["t1"], seed=3)
    b = register_template([subject], ["t1"], seed=3)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    # noise is not a head: the similarity is poor and says so
    rng = np.random.default_rng(0)
    noise = Volume(rng.random(subject.shape).astype(np.float32), subject.affine)
    assert "registration_poor" in register_template([noise], ["t1"]).flags


def test_register_template_bad_input():
    from segment.errors import InputError
    from segment.io.register import register_template

    vol = Volume(np.zeros((20, 20, 20), np.float32), np.eye(4))
    with pytest.raises(InputError):
        register_template([vol], ["t1"])
    with pytest.raises(InputError):
        register_template([vol, vol], ["t1"])
