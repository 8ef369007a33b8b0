"""segment skullstrip: every output form (file, folder, prefix), --brain, --bias-corrected."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segment.cli import main, skullstrip_outputs
from segment.phantom import make_phantom, write_phantom_case
from tests.conftest import oblique_las_affine

SHAPE, SPACING = (48, 56, 48), (4.0, 4.0, 4.0)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A T1 head phantom with a skull and a bias field, written with an oblique LAS affine (not RAS)."""
    root = tmp_path_factory.mktemp("ss")
    ph = make_phantom(2, shape=SHAPE, spacing=SPACING, skull=True)
    src = write_phantom_case(root, ph, "head")
    img = nib.load(str(src / "t1.nii.gz"))
    # a strong left-right bias field (0.6 .. 1.4), so N4's correction is measurable
    data = (np.asarray(img.dataobj, dtype=np.float32) * np.linspace(0.6, 1.4, SHAPE[0])[:, None, None])
    data = data.astype(np.float32)
    path = root / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(data, oblique_las_affine(SPACING, 10.0)), str(path))
    return path, data, ph.brain_mask, ph.tissue == 3


@pytest.mark.parametrize("out, expect", [
    ("d/m.nii.gz", {"mask": "d/m.nii.gz", "brain": "d/m_brain.nii.gz", "biascorr": "d/m_biascorr.nii.gz"}),
    ("d/x_mask.nii", {"mask": "d/x_mask.nii", "brain": "d/x_brain.nii", "biascorr": "d/x_biascorr.nii"}),
    ("d/", {"mask": "d/sub-01_T1w_mask.nii.gz", "brain": "d/sub-01_T1w_brain.nii.gz",
            "biascorr": "d/sub-01_T1w_biascorr.nii.gz"}),
    ("d/pre", {"mask": "d/pre_mask.nii.gz", "brain": "d/pre_brain.nii.gz", "biascorr": "d/pre_biascorr.nii.gz"}),
])
def test_output_names(out, expect):
    got = skullstrip_outputs(Path("in/sub-01_T1w.nii.gz"), out)
    assert {k: str(v) for k, v in got.items()} == expect


def test_existing_folder_without_slash_is_a_folder(tmp_path):
    got = skullstrip_outputs(Path("a/t1.nii.gz"), str(tmp_path))
    assert got["mask"] == tmp_path / "t1_mask.nii.gz"


def _check_mask(path, src_affine, truth):
    img = nib.load(str(path))
    np.testing.assert_allclose(img.affine, src_affine, atol=1e-5)  # the input's space
    m = np.asarray(img.dataobj)
    assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
    m = m > 0
    assert 2 * (m & truth).sum() / (m.sum() + truth.sum()) > 0.8  # the voxels of the input's array
    return m


@pytest.mark.parametrize("form", ["file", "folder", "new_folder", "prefix"])
def test_every_output_form_writes_mask_brain_and_biascorr(head, tmp_path, form, capsys):
    path, data, truth, wm = head
    out = {"file": str(tmp_path / "brainmask.nii.gz"), "folder": str(tmp_path),
           "new_folder": str(tmp_path / "new") + "/", "prefix": str(tmp_path / "subj")}[form]
    # the output forms do not depend on the method: one with the default (the registered template
    # as the prior), the others with the quicker image-only method
    method = [] if form == "file" else ["--no-template"]
    assert main(["skullstrip", str(path), "--out", out, "--brain", "--bias-corrected", *method]) == 0
    printed = json.loads(capsys.readouterr().out)
    expect = skullstrip_outputs(path, out)
    assert printed["mask"] == str(expect["mask"])
    assert printed["brain"] == str(expect["brain"])
    assert printed["bias_corrected"] == str(expect["biascorr"])
    aff = nib.load(str(path)).affine
    m = _check_mask(expect["mask"], aff, truth)
    brain = nib.load(str(expect["brain"]))
    np.testing.assert_allclose(brain.affine, aff, atol=1e-5)
    b = np.asarray(brain.dataobj)
    np.testing.assert_allclose(b[m], data[m], rtol=1e-6)
    assert not b[~m].any()
    bc = nib.load(str(expect["biascorr"]))
    np.testing.assert_allclose(bc.affine, aff, atol=1e-5)
    c = np.asarray(bc.dataobj)
    assert c.shape == data.shape and c.dtype == np.float32
    # inside the white matter the corrected image varies less, relative to its mean, than the
    # biased input (coefficient of variation 0.145 -> 0.126 with the true mask)
    core = wm & m
    cv = lambda a: a[core].std() / a[core].mean()  # noqa: E731
    assert cv(c) < 0.93 * cv(data)


def test_head_with_zeroed_air_is_skull_stripped_and_flagged(head, tmp_path, capsys):
    """Bug: a head whose air was set to exactly 0 looked brain-only, and its whole head came back
    as the mask. Larger than a brain, it is now skull-stripped, with the zero_background_head flag."""
    from scipy import ndimage as ndi

    path, data, truth, wm = head
    fg = ndi.binary_fill_holes(ndi.binary_closing(data > 0.1 * np.percentile(data, 99), iterations=2))
    src = tmp_path / "zeroed_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.where(fg, data, 0).astype(np.float32), nib.load(str(path)).affine), str(src))
    assert main(["skullstrip", str(src), "--out", str(tmp_path / "m.nii.gz"), "--no-template"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "zero_background_head" in printed["flags"]
    m = _check_mask(tmp_path / "m.nii.gz", nib.load(str(path)).affine, truth)
    assert m.sum() < 1.3 * truth.sum()  # not the whole head


def test_mask_only_by_default(head, tmp_path, capsys):
    path, _, _, _ = head
    assert main(["skullstrip", str(path), "--out", str(tmp_path / "p")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p_mask.nii.gz"]
    assert set(json.loads(capsys.readouterr().out)) == {"mask", "brain_volume_ml", "flags"}


def test_bad_output_is_refused_before_computing(head, tmp_path, capsys, monkeypatch):
    path, _, _, _ = head
    import segment.preprocess.skullstrip as ss

    def boom(*a, **k):  # the mask must not be computed for an impossible output
        raise AssertionError("computed")

    monkeypatch.setattr(ss, "skullstrip", boom)
    monkeypatch.setattr(ss, "brain_mask_nonzero", boom)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert main(["skullstrip", str(path), "--out", str(blocker / "pre")]) == 1
    err = capsys.readouterr().err
    assert "cannot write" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["skullstrip", str(path), "--out", str(path)]) == 1  # would overwrite the input
    assert "overwrite the input" in capsys.readouterr().err
    assert main(["skullstrip", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "m")]) == 1
    assert "not found" in capsys.readouterr().err


def test_run_writes_bias_corrected_images_with_the_output_key(tmp_path):
    from segment.config import load_config
    from segment.errors import ConfigError
    from segment.pipeline import segment_case

    ph = make_phantom(1, shape=SHAPE, spacing=SPACING, modalities=("t1", "flair"))
    case = write_phantom_case(tmp_path, ph, "bc")
    no_template = {"skullstrip_options": {"template": False}}  # brain-only phantom: not needed
    cfg = load_config(None, {"outputs": {"bias_corrected": True, "overlay": False}, "preprocess": no_template})
    res = segment_case(case, cfg, tmp_path / "out")
    for m in ("t1", "flair"):
        p = tmp_path / "out" / f"{m}_biascorr.nii.gz"
        assert res.outputs[f"biascorr_{m}"] == p
        img = nib.load(str(p))
        src = nib.load(str(case / f"{m}.nii.gz"))
        assert img.shape == src.shape and img.get_data_dtype() == np.float32
        np.testing.assert_allclose(img.affine, src.affine, atol=1e-5)
        c = np.asarray(img.dataobj)
        brain = ph.brain_mask
        assert np.corrcoef(c[brain], np.asarray(src.dataobj)[brain])[0, 1] > 0.9  # the image, corrected
    plain = segment_case(case, load_config(None, {"outputs": {"overlay": False}, "preprocess": no_template}),
                         tmp_path / "plain")
    assert not any(k.startswith("biascorr_") for k in plain.outputs)
    with pytest.raises(ConfigError, match="bias_corrected"):
        load_config(None, {"outputs": {"bias_corrected": True}, "preprocess": {"bias_correction": False}})
