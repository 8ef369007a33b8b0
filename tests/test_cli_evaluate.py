"""segment evaluate PRED GT --kind for a single pair, as folder mode."""
from __future__ import annotations

import json

import numpy as np
import pytest

from segment.cli import main
from segment.io.nifti import save_volume


def _tumor_pair(tmp_path, pred_name="pred.nii.gz", gt_name="gt.nii.gz"):
    gt = np.zeros((24, 24, 24), np.uint8)
    gt[6:16, 6:16, 6:16] = 2  # edema
    gt[9:13, 9:13, 9:13] = 3  # enhancing
    gt[10:12, 10:12, 10:12] = 1  # necrosis
    pred = gt.copy()
    pred[6:8, 6:16, 6:16] = 0  # 200 of 1000 WT voxels missed
    save_volume(gt, np.eye(4), tmp_path / gt_name, dtype=np.uint8)
    save_volume(pred, np.eye(4), tmp_path / pred_name, dtype=np.uint8)
    return tmp_path / pred_name, tmp_path / gt_name


def _tissue_pair(tmp_path):
    gt = np.zeros((12, 12, 12), np.uint8)
    gt[1:11, 1:11, 1:4] = 1
    gt[1:11, 1:11, 4:8] = 2
    gt[1:11, 1:11, 8:11] = 3
    pred = gt.copy()
    pred[1:11, 1:11, 4] = 1  # 100 GM voxels called CSF
    save_volume(gt, np.eye(4), tmp_path / "gt.nii.gz", dtype=np.uint8)
    save_volume(pred, np.eye(4), tmp_path / "pred.nii.gz", dtype=np.uint8)
    return tmp_path / "pred.nii.gz", tmp_path / "gt.nii.gz"


def _run(capsys, *args):
    assert main(["evaluate", *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out)


def test_kind_tumor_gives_brats_regions(tmp_path, capsys):
    p, g = _tumor_pair(tmp_path)
    m = _run(capsys, p, g, "--kind", "tumor")
    assert m["kind"] == "tumor"
    assert not any(k.endswith(("_CSF", "_GM", "_WM")) for k in m)
    assert m["dice_WT"] == pytest.approx(2 * 800 / 1800)
    assert m["dice_ET"] == pytest.approx(1.0) and m["dice_TC"] == pytest.approx(1.0)
    assert "lesion_dice_WT" in m


def test_kind_tissue_on_the_same_files_scores_labels(tmp_path, capsys):
    p, g = _tumor_pair(tmp_path)
    m = _run(capsys, p, g, "--kind", "tissue")
    assert m["kind"] == "tissue" and "dice_GM" in m and "dice_WT" not in m


def test_auto_by_file_name_then_by_content(tmp_path, capsys):
    p, g = _tumor_pair(tmp_path, "case_tumor.nii.gz", "case_seg_tumor.nii.gz")
    assert _run(capsys, p, g)["kind"] == "tumor"
    (tmp_path / "plain").mkdir()
    p, g = _tumor_pair(tmp_path / "plain", "a.nii.gz", "b.nii.gz")  # no name hint: a small compact region
    assert _run(capsys, p, g)["kind"] == "tumor"
    p, g = _tissue_pair(tmp_path)  # labels 1-3 covering most of the volume
    m = _run(capsys, p, g)
    assert m["kind"] == "tissue"
    assert m["dice_CSF"] == pytest.approx(2 * 300 / 700)
    assert m["dice_WM"] == pytest.approx(1.0)


def test_tissue_kind_rejects_tumor_codes(tmp_path, capsys):
    p, g = _tumor_pair(tmp_path)
    gt = np.zeros((24, 24, 24), np.uint8)
    gt[5:10, 5:10, 5:10] = 7
    save_volume(gt, np.eye(4), g, dtype=np.uint8)
    assert main(["evaluate", str(p), str(g), "--kind", "tissue"]) == 1
    err = capsys.readouterr().err
    assert "not tissue labels" in err and len(err.strip().splitlines()) == 1


def test_missing_file_is_one_line(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope.nii.gz"), str(tmp_path / "gt.nii.gz")]) == 1
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err
