"""The command line: outputs, exit codes, one-line errors without tracebacks."""
from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from segment import __version__
from segment.cli import main
from segment.io.nifti import save_volume
from segment.phantom import make_phantom, write_phantom_case

SHAPE, SPACING = (48, 56, 48), (4.0, 4.0, 4.0)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return write_phantom_case(root, make_phantom(1, shape=SHAPE, spacing=SPACING), "case_one")


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("run", "batch", "skullstrip", "evaluate", "phantom"):
        assert cmd in out
    assert main([]) == 2


def test_run_writes_case_folder(case, tmp_path, capsys):
    assert main(["run", str(case), "--out", str(tmp_path)]) == 0
    out = tmp_path / "case_one"
    for f in ("brain_mask.nii.gz", "tissue.nii.gz", "metrics.json", "overlay.png"):
        assert (out / f).is_file(), f
    summary = json.loads(capsys.readouterr().out)
    assert summary["case"] == "case_one"
    assert summary["metrics"]["dice_WM"] > 0.85


def test_run_with_config_file(case, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mixture:\n  modalities: [t1]\noutputs:\n  overlay: false\n  probabilities: true\n"
                   "preprocess:\n  skullstrip_options:\n    template: false\n")  # brain-only phantom: quicker
    assert main(["run", str(case), "--out", str(tmp_path / "o"), "--config", str(cfg)]) == 0
    out = tmp_path / "o" / "case_one"
    assert not (out / "overlay.png").exists()
    probs = [np.asarray(nib.load(str(out / f"prob_{c}.nii.gz")).dataobj) for c in ("csf", "gm", "wm")]
    assert probs[0].dtype == np.float32
    total = probs[0] + probs[1] + probs[2]
    brain = np.asarray(nib.load(str(out / "brain_mask.nii.gz")).dataobj) > 0
    np.testing.assert_allclose(total[brain], 1.0, atol=1e-4)
    # partial-volume fractions (before the MRF), FAST-style
    pve = [np.asarray(nib.load(str(out / f"pve_{c}.nii.gz")).dataobj) for c in ("csf", "gm", "wm")]
    np.testing.assert_allclose((pve[0] + pve[1] + pve[2])[brain], 1.0, atol=1e-4)
    assert ((pve[1] > 0.05) & (pve[1] < 0.95)).any()  # mixed voxels exist at tissue borders


def test_bad_config_exits_2_with_one_line(case, tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("mixture:\n  n_components: two\n")
    assert main(["run", str(case), "--out", str(tmp_path), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mixture.n_components" in err and "two" in err
    assert not (tmp_path / "case_one").exists()


@pytest.mark.parametrize("problem", ["missing", "not_nifti", "truncated", "four_d", "nan", "zeros", "truth_grid"])
def test_bad_input_is_one_line_no_traceback(problem, case, tmp_path):
    d = tmp_path / "bad_case"
    d.mkdir()
    img = nib.load(str(case / "t1.nii.gz"))
    data = np.asarray(img.dataobj)
    save_volume(data, img.affine, d / "t2.nii.gz")
    target = d / "t1.nii.gz"
    if problem == "missing":
        target = tmp_path / "nowhere"
        d = target
    elif problem == "not_nifti":
        target.write_text("hello, I am a text file")
    elif problem == "truncated":
        save_volume(data, img.affine, target)
        raw = target.read_bytes()
        target.write_bytes(raw[: len(raw) // 3])
    elif problem == "four_d":
        nib.save(nib.Nifti1Image(np.stack([data, data], -1), img.affine), str(target))
    elif problem == "nan":
        bad = data.copy()
        bad[5, 5, 5] = np.nan
        save_volume(bad, img.affine, target)
    elif problem == "zeros":
        save_volume(np.zeros_like(data), img.affine, target)
    elif problem == "truth_grid":
        save_volume(data, img.affine, target)
        save_volume(np.zeros((10, 10, 10), np.uint8), np.eye(4), d / "seg.nii.gz")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "segment.cli", "run", str(d), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in err
    assert err.startswith("segment: error: ") and err.count("\n") == 0, err
    expected = {
        "missing": "nowhere", "not_nifti": "t1.nii.gz", "truncated": "t1.nii.gz",
        "four_d": "4-D", "nan": "NaN", "zeros": "empty", "truth_grid": "seg.nii.gz",
    }[problem]
    assert expected in err
    assert not any(out.rglob("*.nii.gz")) if out.exists() else True


def test_skullstrip_command(tmp_path, capsys):
    ph = make_phantom(2, shape=SHAPE, spacing=SPACING, skull=True)
    src = write_phantom_case(tmp_path, ph, "head")
    out = tmp_path / "mask.nii.gz"
    assert main(["skullstrip", str(src / "t1.nii.gz"), "--out", str(out)]) == 0
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, nib.load(str(src / "t1.nii.gz")).affine, atol=1e-5)
    mask = np.asarray(img.dataobj) > 0
    inter = (mask & ph.brain_mask).sum()
    assert 2 * inter / (mask.sum() + ph.brain_mask.sum()) > 0.8
    assert json.loads(capsys.readouterr().out)["brain_volume_ml"] > 0


def test_skullstrip_command_takes_the_contrast_from_the_name_or_flag(tmp_path, capsys):
    ph = make_phantom(2, shape=(64, 76, 64), spacing=(3.0, 3.0, 3.0), skull=True)
    src = write_phantom_case(tmp_path, ph, "head")

    def dice_of(extra):
        out = tmp_path / "mask.nii.gz"
        # image-only method: the intensity range is what the contrast selects (the template prior
        # would hide most of the difference)
        assert main(["skullstrip", str(src / "flair.nii.gz"), "--out", str(out), "--no-template", *extra]) == 0
        m = np.asarray(nib.load(str(out)).dataobj) > 0
        return 2 * (m & ph.brain_mask).sum() / (m.sum() + ph.brain_mask.sum())

    by_name, as_flair, as_t1 = dice_of([]), dice_of(["--modality", "flair"]), dice_of(["--modality", "t1"])
    assert by_name == as_flair > 0.9  # flair.nii.gz is read as FLAIR
    assert as_t1 < as_flair  # a T1 intensity range on a FLAIR loses grey matter
    with pytest.raises(SystemExit) as exc:
        main(["skullstrip", str(src / "flair.nii.gz"), "--out", str(tmp_path / "x.nii.gz"), "--modality", "pd"])
    assert exc.value.code == 2
    capsys.readouterr()


def test_evaluate_prints_metrics(tmp_path, capsys):
    gt = np.zeros((10, 10, 10), np.uint8)
    gt[2:6, 2:6, 2:6] = 1
    gt[6:9, 2:6, 2:6] = 2
    pred = gt.copy()
    pred[2, 2:6, 2:6] = 0  # 16 of 64 CSF voxels missed -> Dice = 2*48/(48+64)
    save_volume(gt, np.eye(4), tmp_path / "gt.nii.gz", dtype=np.uint8)
    save_volume(pred, np.eye(4), tmp_path / "pred.nii.gz", dtype=np.uint8)
    # two classes on a tenth of the volume: auto would read it as a tumor map, so say tissue
    assert main(["evaluate", str(tmp_path / "pred.nii.gz"), str(tmp_path / "gt.nii.gz"), "--kind", "tissue"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["dice_CSF"] == pytest.approx(96 / 112)
    assert m["dice_GM"] == pytest.approx(1.0)


def test_phantom_command(tmp_path, capsys):
    assert main(["phantom", str(tmp_path), "--n", "2", "--seed", "7", "--shape", "32", "36", "32"]) == 0
    dirs = sorted(p.name for p in tmp_path.iterdir())
    assert dirs == ["phantom_7", "phantom_8"]
    assert (tmp_path / "phantom_7" / "seg.nii.gz").is_file()
