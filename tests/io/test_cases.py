"""Finding a case's files by name and loading them onto one grid."""
from __future__ import annotations

import numpy as np
import pytest

from segment.errors import GridError, InputError
from segment.io.cases import classify_file, find_case, load_case
from segment.io.nifti import axcodes
from tests.conftest import oblique_las_affine, write_nifti


@pytest.mark.parametrize(
    "name, expected",
    [
        ("BraTS-GLI-00000-000-t1n.nii.gz", ("image", "t1")),
        ("BraTS-GLI-00000-000-t1c.nii.gz", ("image", "t1c")),
        ("BraTS-GLI-00000-000-t2w.nii.gz", ("image", "t2")),
        ("BraTS-GLI-00000-000-t2f.nii.gz", ("image", "flair")),
        ("BraTS-GLI-00000-000-seg.nii.gz", ("truth", "seg")),
        ("BraTS2021_00000_t1ce.nii.gz", ("image", "t1c")),
        ("BraTS2021_00000_flair.nii.gz", ("image", "flair")),
        ("BraTS2021_00000_t1.nii.gz", ("image", "t1")),
        ("T1.nii", ("image", "t1")),
        ("sub-01_T1GD.nii.gz", ("image", "t1c")),
        ("case_label.nii.gz", ("truth", "seg")),
        ("seg_tissue.nii.gz", ("truth", "tissue")),
        ("brain_mask_t1c.nii.gz", None),
        ("notes.nii.gz", None),
        ("t1t2.nii.gz", None),  # tokens must match whole
    ],
)
def test_classify_by_whole_tokens(name, expected):
    assert classify_file(name) == expected


def _case(tmp_path, names, shape=(8, 9, 10), affine=None, rng=None):
    rng = rng or np.random.default_rng(0)
    d = tmp_path / "case01"
    d.mkdir()
    for n in names:
        write_nifti(d / n, rng.uniform(1, 10, size=shape).astype(np.float32), affine)
    return d


def test_find_case_brats_layout(tmp_path):
    d = _case(tmp_path, [f"BraTS-GLI-00001-000-{m}.nii.gz" for m in ("t1n", "t1c", "t2w", "t2f", "seg")])
    case = find_case(d)
    assert case.case_id == "case01"
    assert sorted(case.images) == ["flair", "t1", "t1c", "t2"]
    assert set(case.truth) == {"seg"}
    assert case.reference_modality == "t1"


def test_duplicate_modality_is_an_error(tmp_path):
    d = _case(tmp_path, ["t1.nii.gz", "T1w.nii.gz"])
    with pytest.raises(InputError, match="both .* t1"):
        find_case(d)


def test_no_images(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    (d / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="no image found"):
        find_case(d)
    with pytest.raises(InputError, match="not found"):
        find_case(tmp_path / "missing")


def test_load_case_reorients_and_resamples(tmp_path, rng):
    d = tmp_path / "c"
    d.mkdir()
    ref_aff = oblique_las_affine(spacing=(1.0, 1.0, 2.0), angle_deg=0)
    write_nifti(d / "t1.nii.gz", rng.uniform(1, 10, (10, 12, 8)).astype(np.float32), ref_aff)
    other = np.diag([0.5, 0.5, 1.0, 1.0])
    other[:3, 3] = ref_aff[:3, 3] - [5.0, 0.0, 0.0]
    write_nifti(d / "flair.nii.gz", rng.uniform(1, 10, (30, 30, 20)).astype(np.float32), other)
    loaded = load_case(d)
    assert loaded.modalities == ["t1", "flair"]
    assert loaded.resampled == ["flair"]
    assert axcodes(loaded.grid.affine) == "RAS"
    assert loaded.images["flair"].shape == loaded.images["t1"].shape == (10, 12, 8)
    np.testing.assert_allclose(loaded.reference.affine, ref_aff, atol=1e-5)


def test_truth_on_another_grid_is_an_error(tmp_path, rng):
    d = _case(tmp_path, ["t1.nii.gz"], shape=(8, 8, 8))
    write_nifti(d / "seg.nii.gz", rng.integers(0, 4, (8, 8, 9)).astype(np.uint8))
    with pytest.raises(GridError, match="seg.nii.gz.*another grid.*nearest"):
        load_case(d)


def test_non_overlapping_series_is_an_error(tmp_path, rng):
    d = _case(tmp_path, ["t1.nii.gz"], shape=(8, 8, 8))
    far = np.eye(4)
    far[:3, 3] = 1000
    write_nifti(d / "t2.nii.gz", rng.uniform(1, 2, (8, 8, 8)).astype(np.float32), far)
    with pytest.raises(GridError, match="t2.nii.gz.*does not overlap"):
        load_case(d)
