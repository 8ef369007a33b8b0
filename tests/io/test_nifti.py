"""Reading, writing, orientation and resampling of NIfTI volumes."""
from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from segment.errors import GridError, InputError
from segment.io.nifti import (
    axcodes,
    from_ras,
    load_volume,
    reorient_to_ras,
    resample_to,
    save_volume,
)
from segment.types import Volume
from tests.conftest import oblique_las_affine, write_nifti


def test_load_returns_float32_and_affine(tmp_path, rng):
    data = rng.integers(0, 1000, size=(5, 6, 7)).astype(np.int16)
    aff = oblique_las_affine()
    write_nifti(tmp_path / "a.nii.gz", data, aff)
    vol = load_volume(tmp_path / "a.nii.gz")
    assert vol.data.dtype == np.float32
    assert vol.shape == (5, 6, 7)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.spacing, (1.2, 1.0, 2.5), atol=1e-5)


def test_save_load_round_trip_preserves_affine_and_dtype(tmp_path, rng):
    aff = oblique_las_affine()
    labels = rng.integers(0, 4, size=(6, 5, 4)).astype(np.uint8)
    out = save_volume(labels, aff, tmp_path / "sub" / "labels.nii.gz", dtype=np.uint8)
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, aff, atol=1e-5)
    np.testing.assert_allclose(img.get_qform(), aff, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels)
    # atomic write leaves no temporary file behind
    assert [p.name for p in out.parent.iterdir()] == ["labels.nii.gz"]


@pytest.mark.parametrize("angle", [0.0, 12.0, 50.0])
def test_reorient_round_trip_on_las_oblique(angle, rng):
    aff = oblique_las_affine(angle_deg=angle)
    data = rng.normal(size=(7, 8, 9)).astype(np.float32)
    vol = Volume(data, aff)
    ras = reorient_to_ras(vol)
    assert axcodes(ras.affine) == "RAS"
    # same voxel -> same world point: pick a voxel and follow it through both affines
    ijk = np.array([2, 3, 4, 1.0])
    world = aff @ ijk
    ijk_ras = np.linalg.solve(ras.affine, world)
    np.testing.assert_allclose(ijk_ras, np.round(ijk_ras), atol=1e-6)
    i, j, k = np.round(ijk_ras[:3]).astype(int)
    assert ras.data[i, j, k] == data[2, 3, 4]
    back = from_ras(ras.data, vol)
    np.testing.assert_array_equal(back, data)


def test_resample_linear_function_is_exact():
    """Linear interpolation reproduces a linear function of world coordinates exactly."""
    def field(vol):
        ijk = np.indices(vol.shape).reshape(3, -1)
        xyz = vol.affine[:3, :3] @ ijk + vol.affine[:3, 3:4]
        return (0.5 * xyz[0] - 0.25 * xyz[1] + 0.1 * xyz[2] + 3.0).reshape(vol.shape)

    mov_aff = np.diag([0.9, 0.9, 5.5, 1.0])
    mov_aff[:3, 3] = [-20, -20, -40]
    mov = Volume(np.zeros((50, 50, 16), np.float32), mov_aff)
    mov = mov.with_data(field(mov).astype(np.float32))
    ref_aff = oblique_las_affine(spacing=(1.5, 1.5, 2.0), angle_deg=5)
    ref_aff[:3, 3] = [0, -10, -20]
    ref = Volume(np.zeros((12, 12, 10), np.float32), ref_aff)
    out = resample_to(mov, ref, order=1)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine)
    np.testing.assert_allclose(out.data, field(ref), atol=1e-3)


def test_resample_without_overlap_raises():
    a = Volume(np.ones((10, 10, 10), np.float32), np.eye(4))
    far = np.eye(4)
    far[:3, 3] = 500
    b = Volume(np.ones((10, 10, 10), np.float32), far)
    with pytest.raises(GridError, match="does not overlap"):
        resample_to(a, b)


# ----------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_volume(tmp_path / "nope.nii.gz")


def test_not_nifti(tmp_path):
    p = tmp_path / "t1.nii.gz"
    p.write_text("this is not an image")
    with pytest.raises(InputError, match="t1.nii.gz.*not a readable NIfTI"):
        load_volume(p)


def test_truncated_file(tmp_path, rng):
    p = write_nifti(tmp_path / "t1.nii.gz", rng.normal(size=(30, 30, 30)).astype(np.float32))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="t1.nii.gz.*(truncated|not a readable)"):
        load_volume(p)


def test_truncated_uncompressed(tmp_path, rng):
    p = write_nifti(tmp_path / "t1.nii", rng.normal(size=(20, 20, 20)).astype(np.float32))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) - 4000])
    with pytest.raises(InputError, match="t1.nii"):
        load_volume(p)


def test_four_d_rejected_and_channel_selects(tmp_path, rng):
    data = rng.normal(size=(4, 5, 6, 3)).astype(np.float32)
    p = write_nifti(tmp_path / "x.nii.gz", data)
    with pytest.raises(InputError, match="4-D"):
        load_volume(p)
    np.testing.assert_array_equal(load_volume(p, channel=2).data, data[..., 2])
    # a singleton 4th axis is accepted as 3-D
    q = write_nifti(tmp_path / "y.nii.gz", data[..., :1])
    assert load_volume(q).shape == (4, 5, 6)


def test_nan_and_inf_rejected(tmp_path, rng):
    data = rng.normal(size=(5, 5, 5)).astype(np.float32)
    data[1, 1, 1] = np.nan
    data[2, 2, 2] = np.inf
    p = write_nifti(tmp_path / "flair.nii.gz", data)
    with pytest.raises(InputError, match="flair.nii.gz.*2 NaN/Inf"):
        load_volume(p)


def test_all_zero_rejected(tmp_path):
    p = write_nifti(tmp_path / "t2.nii.gz", np.zeros((5, 5, 5), np.float32))
    with pytest.raises(InputError, match="t2.nii.gz.*empty"):
        load_volume(p)
    assert load_volume(p, allow_empty=True).data.sum() == 0


def test_empty_file(tmp_path):
    p = tmp_path / "t1.nii.gz"
    p.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_volume(p)


def test_gzip_of_garbage(tmp_path):
    p = tmp_path / "t1.nii.gz"
    p.write_bytes(gzip.compress(b"\x00" * 1000))
    with pytest.raises(InputError, match="t1.nii.gz"):
        load_volume(p)
