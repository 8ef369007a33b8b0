"""Saturated (clipped) intensities and constant backgrounds: detected, restored, flagged."""
from __future__ import annotations

import numpy as np
import pytest

from segment.config import config_from_dict
from segment.io.nifti import save_volume
from segment.metrics import dice
from segment.phantom import make_phantom, write_phantom_case
from segment.pipeline import run_pipeline
from segment.preprocess.saturation import (censored_mixture, censored_qq, detect_saturation,
                                           restore_saturated)

SHAPE, SPACING = (56, 64, 56), (3.4, 3.4, 3.4)
QUICK = {"preprocess": {"skullstrip_options": {"template": False}}, "outputs": {"overlay": False}}


def _two_classes(seed=0, n=200_000):
    """A 1-D 'brain': 60 % of N(80, 10) and 40 % of N(110, 8), as a (n, 1, 1) volume."""
    rng = np.random.default_rng(seed)
    k = rng.random(n) < 0.4
    v = np.where(k, rng.normal(110.0, 8.0, n), rng.normal(80.0, 10.0, n)).astype(np.float32)
    return v.reshape(-1, 1, 1), k.reshape(-1, 1, 1)


def test_no_spike_no_detection():
    x, _ = _two_classes()
    mask = np.ones(x.shape, bool)
    assert detect_saturation(x, mask) is None
    # integer levels (8-bit) without clipping are no spike either
    q = np.clip(np.rint((x - x.min()) / (x.max() - x.min()) * 255), 0, 255).astype(np.uint8)
    assert detect_saturation(q, mask) is None
    out, fit = restore_saturated(x, mask, (1, 1, 1))
    assert fit is None and out is x


def test_clipped_top_is_detected_and_restored_in_order():
    x, bright = _two_classes()
    c = np.float32(np.percentile(x, 90))  # inside the bright class, above its median
    y = np.minimum(x, c)
    mask = np.ones(x.shape, bool)
    found = detect_saturation(y, mask)
    assert found is not None and found["ceiling"] == pytest.approx(float(c))
    assert found["share"] == pytest.approx(0.10, abs=0.01)
    # the bright class's core: where it is nearly pure (here: its true members)
    out, fit = restore_saturated(y, mask, (1, 1, 1), found, cores=[bright])
    assert fit["restored"] and fit["method"] == "class core"
    assert fit["mean"] == pytest.approx(110.0, abs=2.0) and fit["sd"] == pytest.approx(8.0, abs=1.5)
    clipped = y >= c
    assert np.all(out[~clipped] == y[~clipped])  # only the clipped voxels change
    assert np.all(out[clipped] >= c)  # and stay at or above the ceiling
    # the restored tail has the true tail's spread
    assert np.percentile(out[clipped], 50) == pytest.approx(np.percentile(x[clipped], 50), abs=2.0)
    assert np.percentile(out[clipped], 95) == pytest.approx(np.percentile(x[clipped], 95), abs=3.0)


def test_censored_mixture_recovers_classes_under_the_ceiling():
    x, _ = _two_classes(1)
    c = float(np.percentile(x, 90))
    v = x.ravel()
    h, e = np.histogram(v[v < c], bins=256, range=(float(v.min()), c))
    w, mu, sd = censored_mixture(0.5 * (e[1:] + e[:-1]), h, c, float(np.sum(v >= c)), k=2, tied=False)
    o = np.argsort(mu)
    assert mu[o] == pytest.approx([80.0, 110.0], abs=2.0)
    assert sd[o] == pytest.approx([10.0, 8.0], abs=1.5)
    assert w[o] == pytest.approx([0.6, 0.4], abs=0.03)


def test_censored_qq_needs_the_class_median():
    rng = np.random.default_rng(2)
    v = rng.normal(100.0, 10.0, 100_000)
    m, s = censored_qq(np.minimum(v, 108.0), 108.0)
    assert m == pytest.approx(100.0, abs=1.0) and s == pytest.approx(10.0, abs=1.0)
    assert censored_qq(np.minimum(v, 70.0), 70.0) is None  # 99.9 % clipped: nothing to fit


def test_ceiling_under_the_class_median_is_not_restored_but_reported():
    x, bright = _two_classes(3)
    c = np.float32(105.0)  # under the bright class's mean: most of it is clipped
    y = np.minimum(x, c)
    mask = np.ones(x.shape, bool)
    out, fit = restore_saturated(y, mask, (1, 1, 1), cores=[bright])
    assert fit is not None and not fit["restored"] and fit["class_clipped"] > 0.5
    assert out is y


@pytest.fixture(scope="module")
def t1_phantom():
    ph = make_phantom(5, shape=SHAPE, spacing=SPACING, modalities=("t1",))
    return ph


def _run_t1(tmp_path, ph, data, name):
    root = tmp_path / name
    root.mkdir()
    save_volume(data.astype(np.float32), ph.affine, root / "t1.nii.gz")
    return run_pipeline(root, config_from_dict(QUICK))


def test_pipeline_restores_a_clipped_t1_and_flags_it(tmp_path, t1_phantom):
    ph = t1_phantom
    t1 = ph.images["t1"]
    brain = ph.brain_mask
    ref = _run_t1(tmp_path, ph, t1, "clean")
    # white matter is the bright class: clip at the 90th brain percentile (inside WM, above its median)
    c = np.percentile(t1[brain], 90)
    clipped = np.where(brain, np.minimum(t1, c), t1)
    off = config_from_dict({**QUICK, "preprocess": {**QUICK["preprocess"], "saturation": "off"}})
    root = tmp_path / "clip"
    root.mkdir()
    save_volume(clipped.astype(np.float32), ph.affine, root / "t1.nii.gz")
    seg = run_pipeline(root, config_from_dict(QUICK))
    seg_off = run_pipeline(root, off)
    assert "saturation" in seg.info and seg.info["saturation"]["t1"]["restored"]
    assert any("intensity ceiling" in f for f in seg.info["flags"])
    assert "saturation" not in seg_off.info and "saturation" not in ref.info
    d = {c: dice(np.asarray(seg.tissue) == c, ph.tissue == c) for c in (2, 3)}
    d_off = {c: dice(np.asarray(seg_off.tissue) == c, ph.tissue == c) for c in (2, 3)}
    d_ref = {c: dice(np.asarray(ref.tissue) == c, ph.tissue == c) for c in (2, 3)}
    # as read, the spike narrows white matter (0.92 here); restored, it is as good as unclipped
    assert d[3] > d_off[3] + 0.02, (d, d_off)
    assert d[3] > d_ref[3] - 0.02 and d[2] > d_ref[2] - 0.02, (d, d_ref)


def test_constant_background_is_brain_only(tmp_path, t1_phantom):
    """A z-scored brain-only image (background one negative value, not 0) is masked by its
    non-zero region like the original, and gets the same labels (it was skull-stripped before)."""
    ph = t1_phantom
    t1 = ph.images["t1"].astype(np.float32)
    brain = t1 != 0
    z = (t1 - t1[brain].mean()) / t1[brain].std()
    bg = np.float32(z[brain].min() - 0.5)
    zs = np.where(brain, z, bg).astype(np.float32)
    a = _run_t1(tmp_path, ph, t1, "orig")
    b = _run_t1(tmp_path, ph, zs, "zscored")
    assert a.info["mask_method"] == "nonzero" and b.info["mask_method"] == "nonzero"
    assert np.array_equal(a.brain_mask, b.brain_mask)
    assert any("constant background" in n for n in b.loaded.notes)
    assert dice(np.asarray(a.tissue) == 3, np.asarray(b.tissue) == 3) > 0.98


def test_written_case_round_trip_unchanged(tmp_path):
    """A phantom case as written (zero background, no clipping) is not touched by either rule."""
    ph = make_phantom(6, shape=SHAPE, spacing=SPACING, modalities=("t1",))
    case = write_phantom_case(tmp_path, ph, "p6")
    seg = run_pipeline(case, config_from_dict(QUICK))
    assert "saturation" not in seg.info
    assert not any("constant background" in n for n in seg.loaded.notes)


def test_saturation_fit_and_flag_reach_the_written_outputs(tmp_path, t1_phantom):
    import json

    from segment.pipeline import segment_case

    ph = t1_phantom
    t1 = ph.images["t1"]
    c = np.percentile(t1[ph.brain_mask], 90)
    root = tmp_path / "in" / "clip"
    root.mkdir(parents=True)
    save_volume(np.where(ph.brain_mask, np.minimum(t1, c), t1).astype(np.float32), ph.affine, root / "t1.nii.gz")
    segment_case(root, config_from_dict(QUICK), tmp_path / "out")
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert prov["steps"]["saturation"]["t1"]["restored"] is True
    assert any("intensity ceiling" in f for f in prov["qc_flags"])


def test_flair_clipped_under_the_seed_threshold_flags_the_tumor_result(tmp_path):
    """BRATS 2013 pat0005 with its FLAIR clipped at the brain's 98th percentile lost its tumor
    (WT 0.87 -> 0) and said nothing: now a QC flag says the tumor result is unreliable."""
    import nibabel as nib

    ph = make_phantom(2, shape=SHAPE, spacing=SPACING, tumor=True)
    case = write_phantom_case(tmp_path, ph, "t2")
    fl = case / "flair.nii.gz"
    img = nib.load(str(fl))
    x = np.asarray(img.dataobj).astype(np.float32)
    c = np.percentile(x[ph.brain_mask], 90)  # the lesion's FLAIR signal flattened
    nib.save(nib.Nifti1Image(np.minimum(x, c).astype(np.float32), img.affine), str(fl))
    seg = run_pipeline(case, config_from_dict(QUICK))
    assert seg.info["saturation"]["flair"]["share"] > 0.05
    assert any("under the tumor seed threshold" in f for f in seg.info["flags"])
    clean = run_pipeline(write_phantom_case(tmp_path / "c", ph, "t2"), config_from_dict(QUICK))
    assert not any("seed threshold" in f for f in clean.info.get("flags", []))
