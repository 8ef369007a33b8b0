"""Brain extraction with the registered head template (segment.preprocess.skullstrip)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from segment.atlas import load_template
from segment.io.register import rigid_matrix
from segment.preprocess.skullstrip import brain_mask_flags, skullstrip, template_brain_mask
from segment.types import Volume


def _dice(a, b):
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def moved_head():
    """The template head moved by a known affine onto a 2.5 mm grid, with noise and a bias
    field, and its true brain mask."""
    tpl = load_template()
    truth_m = rigid_matrix((6.0, -4.0, 12.0), (5.0, -7.0, 9.0))
    truth_m[:3, :3] = truth_m[:3, :3] @ np.diag([0.95, 0.92, 0.94])  # a smaller head
    sp = 2.5
    shape = (72, 86, 72)
    aff = np.diag([sp, sp, sp, 1.0])
    centre = truth_m @ np.append(tpl.head.affine[:3, :3] @ ((np.asarray(tpl.head.shape) - 1) / 2)
                                 + tpl.head.affine[:3, 3], 1.0)
    aff[:3, 3] = centre[:3] - sp * (np.asarray(shape) - 1) / 2.0
    vox = np.linalg.inv(tpl.head.affine) @ np.linalg.inv(truth_m) @ aff
    warp = lambda a: ndi.affine_transform(a, vox[:3, :3], offset=vox[:3, 3], output_shape=shape, order=1)
    head = warp(tpl.head.data)
    brain = warp(tpl.brain_fraction.data) > 0.5
    rng = np.random.default_rng(1)
    x = np.linspace(-1, 1, shape[0])[:, None, None]
    head = head * (1.0 + 0.2 * x) + rng.normal(0, 0.03 * head.max(), shape)
    return Volume(np.abs(head).astype(np.float32), aff), brain


def test_template_mask_matches_the_moved_brain(moved_head):
    vol, truth = moved_head
    mask, info = template_brain_mask([vol], ["t1"])
    assert _dice(mask, truth) > 0.93, info
    assert info["flags"] == [], info["flags"]
    assert info["template_dice"] > 0.9
    ml = truth.sum() * 2.5 ** 3 / 1000
    assert abs(info["brain_volume_ml"] - ml) < 0.1 * ml
    # deterministic: the same mask again, bit for bit
    again, info2 = template_brain_mask([vol], ["t1"])
    np.testing.assert_array_equal(mask, again)
    np.testing.assert_array_equal(info["registration"].matrix, info2["registration"].matrix)


def test_prior_limits_the_mask(moved_head):
    """The image can take brain away inside the band but never add beyond band_mm."""
    vol, truth = moved_head
    prior = truth.astype(np.float32)
    sp = np.array(vol.spacing)
    mask = skullstrip([vol.data], sp, modalities=["t1"], prior=prior, band_mm=2.5, band_inner_mm=5.0)
    dist_out = ndi.distance_transform_edt(~ndi.binary_fill_holes(truth), sampling=sp)
    dist_in = ndi.distance_transform_edt(truth, sampling=sp)
    # nothing beyond the band, except clefts that the dilated prior encloses (filled as holes)
    assert (dist_out[mask] > 2.5 + 1e-6).mean() < 0.002
    assert mask[dist_in > 5.0 + 1e-6].mean() > 0.995  # the eroded prior is kept (inside the head)
    with pytest.raises(Exception, match="prior has shape"):
        skullstrip([vol.data], sp, prior=prior[:-1])


def test_whole_head_mask_is_flagged():
    # an ellipsoid of ~2956 mL: what an image-only stripper returned for a whole 1 mm head
    sp = (1.0, 1.0, 1.0)
    g = np.mgrid[:200, :230, :200].astype(np.float32)
    r = np.array([80.0, 95.0, 93.0])
    e = (((g - np.array([100, 115, 100])[:, None, None, None]) / r[:, None, None, None]) ** 2).sum(0) <= 1
    ml = e.sum() / 1000
    assert 2900 < ml < 3000
    assert "brain_volume_implausible" in brain_mask_flags(e, sp)
    ok = ndi.binary_erosion(e, iterations=12)
    assert 1000 < ok.sum() / 1000 < 2200
    assert brain_mask_flags(ok, sp) == []
    assert "mask_template_disagree" in brain_mask_flags(ok, sp, template=e)


def test_poor_registration_falls_back_and_flags():
    rng = np.random.default_rng(0)
    noise = Volume(rng.random((40, 48, 40)).astype(np.float32) * 100, np.diag([4.0, 4.0, 4.0, 1.0]))
    try:
        mask, info = template_brain_mask([noise], ["t1"])
    except Exception as exc:  # the image-only method may find no head in noise: a clear error
        assert "empty brain mask" in str(exc) or "no head" in str(exc)
        return
    assert "registration_poor" in info["flags"] and "skullstrip_without_template" in info["flags"]


def _loaded(tmp_path, vol: Volume, name: str = "t1"):
    from segment.io.cases import find_case, load_case
    from segment.io.nifti import save_volume

    d = tmp_path / "case"
    d.mkdir(exist_ok=True)
    save_volume(vol.data, vol.affine, d / f"{name}.nii.gz", dtype=np.float32)
    return load_case(find_case(d))


def test_brain_mask_step_gives_flags_and_registration(tmp_path, moved_head):
    from segment.config import Config, config_from_dict
    from segment.io.register import TemplateRegistration
    from segment.pipeline import brain_mask_step

    vol, truth = moved_head
    loaded = _loaded(tmp_path, vol)
    mask, info = brain_mask_step(loaded, Config())
    assert isinstance(info["registration"], TemplateRegistration)
    assert info["mask_method"] == "skullstrip" and info["mask_prior"] == "template"
    assert info["flags"] == []
    assert _dice(mask, truth) > 0.93
    # a threshold that this brain breaks is flagged, not silent
    cfg = config_from_dict({"preprocess": {"skullstrip_options": {"max_volume_ml": 1000}}})
    _, info2 = brain_mask_step(loaded, cfg)
    assert "brain_volume_implausible" in info2["flags"]
    # the image-only method on request
    cfg = config_from_dict({"preprocess": {"skullstrip_options": {"template": False}}})
    _, info3 = brain_mask_step(loaded, cfg)
    assert info3["mask_prior"] == "none" and "registration" not in info3


def test_brain_only_input_is_registered_too(tmp_path):
    """A brain-only image keeps its non-zero mask; the template's brain is registered to it."""
    from segment.config import Config
    from segment.pipeline import brain_mask_step

    tpl = load_template()
    m = rigid_matrix((0.0, 0.0, 8.0), (4.0, -3.0, 5.0))
    vox = np.linalg.inv(tpl.head.affine) @ np.linalg.inv(m) @ tpl.head.affine
    brain = ndi.affine_transform(tpl.brain.data, vox[:3, :3], offset=vox[:3, 3], order=1)
    brain[brain < 0.05 * brain.max()] = 0
    loaded = _loaded(tmp_path, Volume(brain.astype(np.float32), tpl.head.affine))
    mask, info = brain_mask_step(loaded, Config())
    assert info["mask_method"] == "nonzero"
    nonzero = loaded.images["t1"].data != 0
    assert mask[nonzero].all() and mask.sum() < 1.01 * nonzero.sum()  # the non-zero region, holes filled
    reg = info["registration"]
    assert reg.brain_only and "registration_poor" not in info["flags"]
    idx = np.argwhere(tpl.brain_mask.data)[::11]
    pts = tpl.head.affine @ np.c_[idx, np.ones(len(idx))].T
    assert np.linalg.norm((reg.matrix @ pts - m @ pts)[:3], axis=0).max() < 2.0


def test_cli_skullstrip_uses_the_template_and_warns(tmp_path, moved_head, capsys):
    import json

    import nibabel as nib

    from segment.cli import main
    from segment.io.nifti import save_volume

    vol, truth = moved_head
    src = tmp_path / "head_t1.nii.gz"
    save_volume(vol.data, vol.affine, src, dtype=np.float32)
    out = tmp_path / "mask.nii.gz"
    assert main(["skullstrip", str(src), "--out", str(out)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["flags"] == []
    mask = np.asarray(nib.load(str(out)).dataobj) > 0
    assert _dice(mask, truth) > 0.93
    # a whole head passed as 'brain' would be flagged on stderr: here, a mask made implausible by
    # a tiny voxel size in the header (same voxels, 1/8 of the volume)
    small = vol.affine.copy()
    small[:3, :3] /= 2.0
    save_volume(vol.data, small, src, dtype=np.float32)
    assert main(["skullstrip", str(src), "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "brain_volume_implausible" in json.loads(cap.out)["flags"]
    assert "warning" in cap.err and "brain_volume_implausible" in cap.err
