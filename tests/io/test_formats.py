"""Every input format round-trips: a phantom written as .mha/.mhd/.nrrd/.mgz/DICOM reads back
with the same voxels and the same physical space, and bad files fail with one line."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from segment.errors import InputError
from segment.io.cases import find_case, load_case
from segment.io.formats import (
    image_suffix,
    is_dicom_folder,
    load_image,
    save_image,
    sitk_to_volume,
    strip_image_suffix,
    volume_to_sitk,
)
from segment.io.nifti import load_volume, reorient_to_ras, save_volume
from segment.phantom import make_phantom
from segment.types import Volume


def _oblique_affine():
    """A rotated, anisotropic, LPS-stored grid: catches any axis or sign mix-up."""
    a = np.deg2rad(12.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    flip = np.diag([-1.0, 1.0, 1.0])  # array axis 0 runs right to left (as in LPS-stored DICOM)
    aff = np.eye(4)
    aff[:3, :3] = rot @ flip @ np.diag([1.5, 1.25, 3.0])
    aff[:3, 3] = [40.5, -71.25, -20.0]
    return aff


@pytest.fixture(scope="module")
def phantom():
    ph = make_phantom(3, shape=(24, 28, 12), spacing=(6.0, 6.0, 8.0), noise=0.0, bias=0.0)
    t1 = ph.images["t1"]
    t1 = np.rint(t1 / t1.max() * 4000).astype(np.int16)  # DICOM stores integers
    return t1, _oblique_affine()


def _write_dicom_series(data, affine, folder, series_uid="1.2.826.0.1.3680043.2.1125.1.1"):
    """One MR series, a file per slice, geometry from ``affine`` (as a scanner exports it)."""
    folder.mkdir(parents=True, exist_ok=True)
    img = volume_to_sitk(data.astype(np.int16), affine)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = img.GetDirection()
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        pos = img.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "MR",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in pos),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0018|0050": f"{img.GetSpacing()[2]:.6f}",
        }
        for key, val in tags.items():
            sl.SetMetaData(key, val)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)
    return folder


@pytest.mark.parametrize("suffix", [".mha", ".mhd", ".nrrd", ".nhdr", ".mgz", ".mgh", ".nii", ".nii.gz"])
def test_each_file_format_round_trips(tmp_path, phantom, suffix):
    data, aff = phantom
    path = save_image(data, aff, tmp_path / f"t1{suffix}")
    vol = load_volume(path)
    assert vol.data.dtype == np.float32 and vol.shape == data.shape
    np.testing.assert_array_equal(vol.data, data.astype(np.float32))
    np.testing.assert_allclose(vol.affine, aff, atol=1e-4)
    # same world position of a voxel whatever the format
    ijk = np.array([5, 7, 3, 1.0])
    np.testing.assert_allclose((vol.affine @ ijk)[:3], (aff @ ijk)[:3], atol=1e-3)


def test_dicom_series_folder_round_trips(tmp_path, phantom):
    data, aff = phantom
    folder = _write_dicom_series(data, aff, tmp_path / "t1")
    assert is_dicom_folder(folder) and not is_dicom_folder(tmp_path / "nothing")
    vol = load_volume(folder)
    # ITK stacks the slices along row x column, which here is the reverse of the array's third
    # axis: other voxel order, same physical space; in RAS both are the same array
    a, b = reorient_to_ras(vol), reorient_to_ras(Volume(data.astype(np.float32), aff))
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-3)


def test_itk_geometry_matches_nibabel(tmp_path, phantom):
    """A NIfTI read by ITK (LPS) and by nibabel (RAS) gives the same Volume through our conversion."""
    data, aff = phantom
    p = save_volume(data, aff, tmp_path / "x.nii.gz")
    via_itk = sitk_to_volume(sitk.ReadImage(str(p)))
    np.testing.assert_array_equal(via_itk.data, data)
    np.testing.assert_allclose(via_itk.affine, load_volume(p).affine, atol=1e-4)


def test_suffix_helpers():
    assert image_suffix("A.NII.GZ") == ".nii.gz" and image_suffix("b.mha") == ".mha"
    assert image_suffix("c.txt") is None
    assert strip_image_suffix("t1.nrrd") == "t1" and strip_image_suffix("orig.mgz") == "orig"


def test_case_folder_of_other_formats_gives_nifti_outputs_in_input_space(tmp_path):
    """A case of .mha, .nrrd, .mgz files and a DICOM folder loads on the T1 (.mha) grid; the
    reference the outputs are written with is the input's own geometry."""
    ph = make_phantom(1, shape=(32, 36, 32), spacing=(4.5, 4.5, 4.5))
    case = tmp_path / "case"
    aff = ph.affine.copy()
    save_image(ph.images["t1"], aff, case / "t1.mha")
    save_image(ph.images["t2"], aff, case / "t2.nrrd")
    save_image(ph.images["flair"], aff, case / "flair.mgz")
    _write_dicom_series(np.rint(ph.images["t1c"] / ph.images["t1c"].max() * 4000), aff, case / "t1c")
    (case / "notes.txt").write_text("not an image")
    c = find_case(case)
    assert c.images == {"t1": case / "t1.mha", "t2": case / "t2.nrrd", "flair": case / "flair.mgz",
                        "t1c": case / "t1c"}
    lc = load_case(c, register="never")
    assert lc.modalities == ["t1", "t1c", "t2", "flair"]
    np.testing.assert_allclose(lc.reference.affine, aff, atol=1e-4)
    assert lc.resampled == []  # every series on the T1 grid: read, not interpolated
    np.testing.assert_allclose(lc.images["t2"].data, ph.images["t2"], rtol=1e-6)


def test_bad_files_fail_with_one_line_naming_them(tmp_path, phantom):
    data, aff = phantom
    bad = tmp_path / "t1.mha"
    bad.write_bytes(b"ObjectType = Image\nNDims = 3\nnot really\n")
    with pytest.raises(InputError, match=r"t1\.mha: not a readable MetaImage") as e:
        load_volume(bad)
    assert "\n" not in str(e.value)
    empty = tmp_path / "t2.nrrd"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"t2\.nrrd: file is empty"):
        load_volume(empty)
    trunc = tmp_path / "flair.mgz"
    save_image(data, aff, trunc)
    trunc.write_bytes(trunc.read_bytes()[:200])
    with pytest.raises(InputError, match=r"flair\.mgz: .*(truncated|not a readable)"):
        load_volume(trunc)
    zero = save_image(np.zeros((4, 4, 4), np.float32), np.eye(4), tmp_path / "z.nrrd")
    with pytest.raises(InputError, match=r"z\.nrrd: image is empty"):
        load_volume(zero)
    nan = np.ones((4, 4, 4), np.float32)
    nan[0, 0, 0] = np.nan
    nan[1, 1, 1] = 2
    with pytest.raises(InputError, match=r"n\.mha: contains 1 NaN/Inf"):
        load_volume(save_image(nan, np.eye(4), tmp_path / "n.mha"))
    vec = sitk.GetImageFromArray(np.ones((4, 4, 4, 3), np.float32), isVector=True)
    sitk.WriteImage(vec, str(tmp_path / "rgb.mha"))
    with pytest.raises(InputError, match=r"rgb\.mha: has 3 components per voxel"):
        load_volume(tmp_path / "rgb.mha")
    flat = sitk.GetImageFromArray(np.arange(16, dtype=np.float32).reshape(4, 4))
    sitk.WriteImage(flat, str(tmp_path / "slice.nrrd"))
    with pytest.raises(InputError, match=r"slice\.nrrd: is 2-D"):
        load_volume(tmp_path / "slice.nrrd")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"notes\.txt: unknown image format"):
        load_image(tmp_path / "notes.txt")


def test_dicom_folder_errors(tmp_path, phantom):
    data, aff = phantom
    two = tmp_path / "two"
    _write_dicom_series(data, aff, two, series_uid="1.2.3.4.1")
    _write_dicom_series(data, aff, two / "..", series_uid="1.2.3.4.2")  # written beside: a second folder
    for f in sorted((tmp_path).glob("slice*.dcm"))[:3]:
        f.rename(two / f"b_{f.name}")
    with pytest.raises(InputError, match=r"two: holds 2 DICOM series"):
        load_volume(two)
    gap = _write_dicom_series(data, aff, tmp_path / "gap", series_uid="1.2.3.4.3")
    (gap / "slice005.dcm").unlink()
    with pytest.raises(InputError, match=r"gap: DICOM slices are not evenly spaced"):
        load_volume(gap)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.txt").write_text("x")
    with pytest.raises(InputError, match=r"plain: is a folder"):
        load_volume(plain)
