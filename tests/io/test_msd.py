"""Medical Segmentation Decathlon Task01 layout: 4-D images (FLAIR, T1w, T1gd, T2w), labels
1 edema, 2 non-enhancing tumor, 3 enhancing tumor."""
from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from segment.cli import main
from segment.config import config_from_dict
from segment.io.cases import find_case, load_case
from segment.phantom import make_phantom
from segment.pipeline import segment_case

SHAPE, SPACING = (56, 64, 56), (3.4, 3.4, 3.4)
#: the tests are about reading the layout and its labels: no MNI152 registration (brain-only
#: phantoms: the mask is the non-zero region either way), no partial-volume model, no overlay
QUICK = {"mixture": {"partial_volume": False}, "preprocess": {"skullstrip_options": {"template": False}},
         "outputs": {"overlay": False}}


def _msd_arrays(seed):
    ph = make_phantom(seed, shape=SHAPE, spacing=SPACING, tumor=True)
    img = np.stack([ph.images[m] for m in ("flair", "t1", "t1c", "t2")], axis=-1)
    # internal (BraTS 2023) 1 NCR, 2 ED, 3 ET  ->  MSD 1 edema, 2 non-enhancing, 3 enhancing
    lab = np.zeros(SHAPE, np.uint8)
    lab[ph.tumor == 2] = 1
    lab[ph.tumor == 1] = 2
    lab[ph.tumor == 3] = 3
    return ph, img, lab


@pytest.fixture(scope="module")
def msd_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("Task01_BrainTumour")
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    phs = {}
    for i, seed in enumerate((3, 4)):
        ph, img, lab = _msd_arrays(seed)
        aff = np.diag([*SPACING, 1.0])
        nib.save(nib.Nifti1Image(img, aff), str(root / "imagesTr" / f"BRATS_00{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, aff), str(root / "labelsTr" / f"BRATS_00{i}.nii.gz"))
        phs[f"BRATS_00{i}"] = ph
    return root, phs


def test_msd_image_file_is_a_case(msd_root):
    root, phs = msd_root
    case = find_case(root / "imagesTr" / "BRATS_000.nii.gz")
    assert case.case_id == "BRATS_000"
    assert case.channels == {"flair": 0, "t1": 1, "t1c": 2, "t2": 3}
    assert case.tumor_coding == "msd"
    assert case.truth == {"tumor": root / "labelsTr" / "BRATS_000.nii.gz"}
    loaded = load_case(case)
    np.testing.assert_array_equal(loaded.images["t1c"].data, phs["BRATS_000"].images["t1c"])


def test_msd_folder_with_one_4d_image(msd_root, tmp_path):
    root, _ = msd_root
    d = tmp_path / "case7"
    d.mkdir()
    (d / "BRATS_000.nii.gz").write_bytes((root / "imagesTr" / "BRATS_000.nii.gz").read_bytes())
    (d / "label.nii.gz").write_bytes((root / "labelsTr" / "BRATS_000.nii.gz").read_bytes())
    case = find_case(d)
    assert case.case_id == "case7" and case.tumor_coding == "msd"
    assert sorted(case.images) == ["flair", "t1", "t1c", "t2"]
    assert set(case.truth) == {"tumor"}


def test_msd_labels_are_mapped_to_internal_coding(msd_root, tmp_path):
    root, phs = msd_root
    res = segment_case(root / "imagesTr" / "BRATS_001.nii.gz", config_from_dict(QUICK), tmp_path / "out")
    # the labels were recoded on load: a wrong mapping would swap NCR and ED and ruin TC
    assert res.metrics["dice_WT"] > 0.85
    assert res.metrics["dice_TC"] > 0.8
    tumor = np.asarray(nib.load(str(res.outputs["tumor"])).dataobj)
    assert set(np.unique(tumor)) <= {0, 1, 2, 3}


def test_batch_over_msd_root(msd_root, tmp_path):
    root, _ = msd_root
    import yaml

    out = tmp_path / "batch"
    cfg = tmp_path / "quick.yaml"
    cfg.write_text(yaml.safe_dump(QUICK))
    assert main(["batch", "--input", str(root), "--out", str(out), "--workers", "1", "--no-progress",
                 "-c", str(cfg)]) == 0
    rows = list(csv.DictReader(open(out / "report.csv")))
    assert [r["case_id"] for r in rows] == ["BRATS_000", "BRATS_001"]
    assert all(r["status"] == "ok" for r in rows)
    assert (out / "BRATS_000" / "tumor.nii.gz").is_file()
