"""Synthetic phantoms: determinism, anatomy, contrasts, tumor nesting, skull, files on disk."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from segment.io.cases import find_case, load_case
from segment.phantom import (
    CSF,
    ED,
    ET,
    GM,
    NCR,
    TUMOR,
    WM,
    make_phantom,
    write_phantom_case,
    write_phantom_cases,
)

SMALL = dict(shape=(48, 56, 48), spacing=(4.0, 4.0, 4.0))


@pytest.fixture(scope="module")
def tissue_phantom():
    return make_phantom(0)


@pytest.fixture(scope="module")
def tumor_phantom():
    return make_phantom(2, tumor=True)


@pytest.fixture(scope="module")
def skull_phantom():
    return make_phantom(1, skull=True, shape=(64, 76, 64), spacing=(3.0, 3.0, 3.0))


def _means(ph, mod, labels):
    return [float(ph.images[mod][ph.tissue == lab].mean()) for lab in labels]


def test_default_case_with_tumor_and_skull():
    ph = make_phantom(6, tumor=True, skull=True)
    assert ph.tumor is not None and ph.tumor.any()
    assert np.all(ph.brain_mask[ph.tumor > 0])  # the tumor lies inside the brain
    head = ph.images["t1"] > 0
    assert np.count_nonzero(head & ~ph.brain_mask) > 0.2 * np.count_nonzero(ph.brain_mask)  # a skull


def test_shapes_dtypes_affine(tissue_phantom):
    ph = tissue_phantom
    assert ph.tissue.shape == (96, 112, 96) and ph.tissue.dtype == np.uint8
    assert ph.brain_mask.dtype == bool and np.array_equal(ph.brain_mask, ph.tissue > 0)
    assert ph.tumor is None
    assert sorted(ph.images) == ["flair", "t1", "t1c", "t2"]
    for img in ph.images.values():
        assert img.dtype == np.float32 and img.shape == ph.tissue.shape
        assert np.isfinite(img).all() and img.min() >= 0
    assert nib.aff2axcodes(ph.affine) == ("R", "A", "S")
    assert ph.spacing == (2.0, 2.0, 2.0)
    # centred: the world origin lies at the middle of the grid
    centre = ph.affine @ np.r_[(np.array(ph.shape) - 1) / 2.0, 1.0]
    assert np.allclose(centre[:3], 0.0)
    assert set(np.unique(ph.tissue)) == {0, CSF, GM, WM}


def test_deterministic_and_seed_dependent():
    a = make_phantom(3, tumor=True, **SMALL)
    b = make_phantom(3, tumor=True, **SMALL)
    c = make_phantom(4, tumor=True, **SMALL)
    for m in a.images:
        assert np.array_equal(a.images[m], b.images[m])
    assert np.array_equal(a.tissue, b.tissue) and np.array_equal(a.tumor, b.tumor)
    assert not np.array_equal(a.tissue, c.tissue)
    assert not np.array_equal(a.tumor, c.tumor)
    assert not np.array_equal(a.images["t1"], c.images["t1"])


def test_global_random_state_untouched():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    make_phantom(0, **SMALL)
    assert np.array_equal(np.random.get_state()[1], before)


def test_anatomy_shared_across_options():
    plain = make_phantom(7, **SMALL)
    skull = make_phantom(7, skull=True, bias=0.0, noise=0.0, **SMALL)
    assert np.array_equal(plain.tissue, skull.tissue)
    sub = make_phantom(7, modalities=("t1", "flair"), **SMALL)
    assert sorted(sub.images) == ["flair", "t1"]
    assert np.array_equal(sub.images["flair"], plain.images["flair"])


@pytest.mark.parametrize("seed", [None, 1, 2])
def test_label_fractions_plausible(seed, tissue_phantom):
    ph = tissue_phantom if seed is None else make_phantom(seed, **SMALL)
    n = ph.brain_mask.sum()
    frac = {lab: (ph.tissue == lab).sum() / n for lab in (CSF, GM, WM)}
    assert frac[GM] > 0.20 and frac[WM] > 0.20 and frac[CSF] > 0.05
    # the brain fills a plausible part of the field of view and does not touch its edges
    assert 0.15 < ph.brain_mask.mean() < 0.6
    for ax in range(3):
        prof = ph.brain_mask.any(axis=tuple(i for i in range(3) if i != ax))
        assert not prof[0] and not prof[-1]
    # ventricles: a CSF component deep inside the brain
    deep = ndi.distance_transform_edt(ph.brain_mask) > 8
    assert (deep & (ph.tissue == CSF)).sum() > 50


def test_tissue_contrasts(tissue_phantom):
    ph = tissue_phantom
    csf, gm, wm = _means(ph, "t1", (CSF, GM, WM))
    assert csf < gm < wm
    csf, gm, wm = _means(ph, "t1c", (CSF, GM, WM))
    assert csf < gm < wm
    csf, gm, wm = _means(ph, "t2", (CSF, GM, WM))
    assert csf > gm > wm
    csf, gm, wm = _means(ph, "flair", (CSF, GM, WM))
    assert csf < wm < gm
    # brain-only: exactly zero outside the brain
    for img in ph.images.values():
        assert not img[~ph.brain_mask].any()


def test_bias_and_noise_levels():
    flat = make_phantom(0, bias=0.0, noise=0.0, **SMALL)
    noisy = make_phantom(0, bias=0.0, noise=0.05, **SMALL)
    biased = make_phantom(0, bias=0.3, noise=0.0, **SMALL)
    core = ndi.binary_erosion(flat.tissue == WM, iterations=2)
    wm = flat.images["t1"][core]
    assert wm.std() / wm.mean() < 0.05  # only texture left
    diff = noisy.images["t1"][core] - flat.images["t1"][core]
    assert 0.03 < diff.std() / wm.mean() < 0.07
    ratio = biased.images["t1"][core] / np.maximum(flat.images["t1"][core], 1)
    assert ratio.max() - ratio.min() > 0.1 and ratio.min() > 0.6 and ratio.max() < 1.4


def test_tumor_labels_and_nesting(tumor_phantom):
    ph = tumor_phantom
    t = ph.tumor
    assert t is not None and t.dtype == np.uint8
    assert set(np.unique(t)) == {0, NCR, ED, ET}
    whole = t > 0
    # tumor voxels are label 4 in the tissue map, and lie inside the brain
    assert np.array_equal(ph.tissue == TUMOR, whole)
    assert not (whole & ~ph.brain_mask).any()
    # NCR is enclosed by ET: dilating NCR touches ET/NCR, almost never edema or healthy tissue
    ncr = t == NCR
    shell = ndi.binary_dilation(ncr) & ~ncr
    assert np.isin(t[shell], [ET]).mean() > 0.9
    # edema surrounds the core: the core's outer shell is mostly edema
    core = (t == NCR) | (t == ET)
    shell = ndi.binary_dilation(core, iterations=2) & ~core
    assert (t[shell] == ED).mean() > 0.6
    # one core component
    _, n = ndi.label(core)
    assert n == 1
    # sizes: edema larger than the core; everything non-trivial
    assert (t == ED).sum() > core.sum() > ncr.sum() > 20


@pytest.mark.parametrize("seed", [10, 11, 12, 13])
def test_tumor_varies_and_sits_mostly_in_white_matter(seed):
    base = make_phantom(seed, **SMALL)
    ph = make_phantom(seed, tumor=True, **SMALL)
    core = (ph.tumor == NCR) | (ph.tumor == ET)
    assert core.sum() > 20
    assert (base.tissue[core] == WM).mean() > 0.5
    # outside the tumor the anatomy is unchanged
    outside = ph.tumor == 0
    assert np.array_equal(ph.tissue[outside], base.tissue[outside])


def test_tumor_sizes_and_places_differ():
    centres, sizes = [], []
    for seed in range(4):
        t = make_phantom(seed, tumor=True, **SMALL).tumor
        centres.append(np.argwhere(t > 0).mean(axis=0))
        sizes.append((t > 0).sum())
    assert len(set(sizes)) == 4
    d = [np.linalg.norm(a - b) for i, a in enumerate(centres) for b in centres[i + 1:]]
    assert max(d) > 5


def test_tumor_contrasts(tumor_phantom):
    ph = tumor_phantom
    m = {
        mod: {
            "ncr": float(img[ph.tumor == NCR].mean()),
            "ed": float(img[ph.tumor == ED].mean()),
            "et": float(img[ph.tumor == ET].mean()),
            "csf": float(img[ph.tissue == CSF].mean()),
            "gm": float(img[ph.tissue == GM].mean()),
            "wm": float(img[ph.tissue == WM].mean()),
        }
        for mod, img in ph.images.items()
    }
    t1, t1c, t2, fl = m["t1"], m["t1c"], m["t2"], m["flair"]
    assert t1["ncr"] < t1["gm"] and t1["ed"] < t1["wm"] and t1["ncr"] < t1["et"] < t1["wm"]
    assert t1c["et"] > 1.2 * t1c["wm"] and t1c["ncr"] < t1c["gm"]
    assert t1c["et"] > 1.5 * t1["et"]  # enhancement
    assert t2["ncr"] > t2["ed"] > t2["gm"] and t2["ed"] < t2["csf"] and t2["et"] > t2["gm"]
    assert fl["ed"] > fl["gm"] and fl["et"] > fl["gm"] and fl["ed"] > fl["ncr"] > fl["csf"]


def test_skull_shell_and_background(skull_phantom):
    ph = skull_phantom
    t1 = ph.images["t1"]
    brain = ph.brain_mask
    # background (far corner) is noise, not zero
    corner = t1[:6, :6, -6:]
    assert (corner > 0).mean() > 0.9 and corner.mean() < 0.1 * t1[ph.tissue == WM].mean()
    # a dark shell (bone) then a bright shell (fat/scalp) outward from the brain
    dist = ndi.distance_transform_edt(~brain, sampling=ph.spacing)
    wm = t1[ph.tissue == WM].mean()
    upper = np.zeros_like(brain)
    upper[:, :, ph.shape[2] // 2:] = True  # above the centre: no neck
    bone = t1[upper & (dist > 1) & (dist < 4)].mean()
    fat = np.percentile(t1[upper & (dist > 5) & (dist < 12)], 75)
    assert bone < 0.35 * wm
    assert fat > 0.9 * wm
    # lots of non-brain signal: the image is clearly not skull-stripped
    assert ((t1 > 0.5 * wm) & ~brain).sum() > 0.1 * brain.sum()
    assert set(np.unique(ph.tissue)) == {0, CSF, GM, WM}


def test_write_case_recognised_and_round_trip(tmp_path, tumor_phantom):
    case_dir = write_phantom_case(tmp_path, tumor_phantom, "tumor_case")
    case = find_case(case_dir)
    assert set(case.images) == {"t1", "t1c", "t2", "flair"}
    assert set(case.truth) == {"seg", "tissue"}
    seg = nib.load(str(case.truth["seg"]))
    assert seg.get_data_dtype() == np.uint8
    assert np.allclose(seg.affine, tumor_phantom.affine)
    assert np.array_equal(np.asarray(seg.dataobj), tumor_phantom.tumor)
    tis = nib.load(str(case.truth["tissue"]))
    assert np.array_equal(np.asarray(tis.dataobj), tumor_phantom.tissue)
    t1 = nib.load(str(case.images["t1"]))
    assert t1.get_data_dtype() == np.float32
    assert np.array_equal(np.asarray(t1.dataobj), tumor_phantom.images["t1"])
    loaded = load_case(case)
    assert np.allclose(loaded.grid.affine, tumor_phantom.affine)
    assert np.array_equal(loaded.truth["tissue"].data, tumor_phantom.tissue)


def test_write_cases_names_and_truth(tmp_path):
    paths = write_phantom_cases(tmp_path, n=2, seed=4, skull=True, **SMALL)
    assert [p.name for p in paths] == ["phantom_4", "phantom_5"]
    for p in paths:
        case = find_case(p)
        assert set(case.images) == {"t1", "t1c", "t2", "flair"}
        assert set(case.truth) == {"seg"}
        assert (p / "brain_mask.nii.gz").exists()  # skipped by the finder, kept for validation
        seg = np.asarray(nib.load(str(case.truth["seg"])).dataobj)
        assert set(np.unique(seg)) <= {0, 1, 2, 3}
    with pytest.raises(ValueError):
        write_phantom_cases(tmp_path, n=0)


def test_cli_phantom(tmp_path):
    from segment.cli import main

    rc = main(["phantom", str(tmp_path), "--n", "1", "--seed", "3", "--shape", "48", "56", "48"])
    assert rc == 0
    case = find_case(tmp_path / "phantom_3")
    assert nib.load(str(case.images["t1"])).shape == (48, 56, 48)


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_phantom(0, shape=(4, 4, 4))
    with pytest.raises(ValueError):
        make_phantom(0, modalities=("dwi",))
    with pytest.raises(ValueError):
        make_phantom(0, bias=1.5)


SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="sample_data/ not present")
def test_sample_data_cases_recognised():
    expected = {
        "phantom_tissue_0": ({"t1", "t1c", "t2", "flair"}, {"seg"}),
        "phantom_skull_1": ({"t1", "t1c", "t2", "flair"}, {"seg"}),
        "phantom_tumor_2": ({"t1", "t1c", "t2", "flair"}, {"seg", "tissue"}),
        "mni152_2mm": ({"t1"}, {"seg"}),
        "BraTS-GLI-demo-000": ({"t1", "t1c", "t2", "flair"}, set()),
        "tcga_fg_6692_small": ({"t1", "t1c", "t2", "flair"}, set()),
    }
    found = {p.name for p in SAMPLE.iterdir() if p.is_dir()}
    assert found == set(expected)
    total = 0
    for name, (images, truth) in expected.items():
        case = find_case(SAMPLE / name)
        assert set(case.images) == images and set(case.truth) == truth, name
        total += sum(f.stat().st_size for f in (SAMPLE / name).iterdir())
        for kind, path in case.truth.items():  # ground truth on the reference image's grid
            ref = nib.load(str(case.images[case.reference_modality]))
            seg = nib.load(str(path))
            assert seg.shape == ref.shape and np.allclose(seg.affine, ref.affine), (name, kind)
    assert total < 7e6
    # the raw exam keeps its series on different grids
    raw = find_case(SAMPLE / "tcga_fg_6692_small")
    shapes = {m: nib.load(str(p)).shape for m, p in raw.images.items()}
    assert len(set(shapes.values())) == 3
    assert (SAMPLE / "SOURCES.md").exists()
