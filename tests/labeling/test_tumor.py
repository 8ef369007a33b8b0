"""Tests of segment.labeling.tumor on small phantoms (48x56x48 at 4 mm; no shared data)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from segment.config import Config, TumorConfig, config_from_dict
from segment.errors import ConfigError
from segment.labeling.tumor import (
    TumorResult,
    segment_tumor,
    should_run_tumor,
    tumor_regions_possible,
)
from segment.metrics import brats_regions, dice
from segment.phantom import make_phantom
from segment.preprocess.normalize import robust_zscore

SHAPE = (48, 56, 48)
SPACING = (4.0, 4.0, 4.0)
CFG = TumorConfig()


def _features(ph):
    pp = Config().preprocess  # the pipeline's own normalisation settings
    return {
        m: robust_zscore(v, ph.brain_mask, lower_percentile=pp.lower_percentile, upper_percentile=pp.upper_percentile)
        for m, v in ph.images.items()
    }


_CACHE: dict = {}


def _case(seed: int, tumor: bool = True):
    key = (seed, tumor)
    if key not in _CACHE:
        ph = make_phantom(seed, shape=SHAPE, spacing=SPACING, tumor=tumor, bias=0.0)  # the pipeline runs N4 first
        _CACHE[key] = (ph, _features(ph))
    return _CACHE[key]


@pytest.mark.parametrize("seed", [1, 3])
def test_dice_bars_on_phantoms(seed):
    ph, feats = _case(seed)
    res = segment_tumor(feats, ph.brain_mask, ph.spacing, config=CFG)
    assert isinstance(res, TumorResult)
    assert res.regions == ["WT", "TC", "ET"]
    assert res.labels.dtype == np.uint8 and res.labels.shape == ph.tumor.shape
    assert set(np.unique(res.labels)) <= {0, 1, 2, 3}
    p, g = brats_regions(res.labels), brats_regions(ph.tumor)
    assert dice(p["WT"], g["WT"]) >= 0.85  # measured 0.863 / 0.970 at 4 mm (issue 13's 0.90 is for 2 mm)
    assert dice(p["TC"], g["TC"]) >= 0.85
    assert dice(p["ET"], g["ET"]) >= 0.80
    vols = res.info["volumes_ml"]
    assert vols["WT"] == pytest.approx(vols["NCR"] + vols["ED"] + vols["ET"])
    assert res.info["tumor_found"] is True


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_healthy_phantom_is_empty(seed):
    ph, feats = _case(seed, tumor=False)
    res = segment_tumor(feats, ph.brain_mask, ph.spacing, config=CFG)
    vv = float(np.prod(SPACING))
    assert np.count_nonzero(res.labels) * vv / 1000.0 < 0.5  # < 0.5 mL: near empty
    assert res.info["tumor_found"] is False
    assert "no tumor" in res.info["decision"]


@pytest.mark.parametrize(
    "mods, regions",
    [
        (("flair",), ["WT"]),
        (("t1c", "flair"), ["WT", "TC", "ET"]),
        (("t2", "flair"), ["WT"]),
        (("t1", "t1c", "t2", "flair"), ["WT", "TC", "ET"]),
        (("t1", "t2", "flair"), ["WT"]),
        (("t1",), []),
        (("t1c",), []),
        (("t1", "t1c", "t2"), []),
        ((), []),
    ],
)
def test_modality_subsets(mods, regions):
    assert tumor_regions_possible(mods) == regions
    ph, feats = _case(1)
    res = segment_tumor({m: feats[m] for m in mods}, ph.brain_mask, ph.spacing, config=CFG)
    assert res.regions == regions
    assert res.info["regions"] == regions
    if not regions:
        assert not res.labels.any()
        return
    g = brats_regions(ph.tumor)
    p = brats_regions(res.labels)
    # measured at 4 mm: FLAIR without T1c 0.65 (edema grows into bright GM), with T1c 0.85-0.86
    assert dice(p["WT"], g["WT"]) >= (0.80 if "t1c" in mods else 0.60)
    if "ET" not in regions:
        # without T1c every tumor voxel is edema-coded: WT only
        assert set(np.unique(res.labels)) <= {0, 2}
    else:
        assert dice(p["ET"], g["ET"]) >= 0.7


def test_nesting_invariants():
    ph, feats = _case(3)
    res = segment_tumor(feats, ph.brain_mask, ph.spacing, config=CFG)
    lab = res.labels
    wt = lab > 0
    assert not (wt & ~ph.brain_mask).any()
    et, ncr = lab == 3, lab == 1
    assert et.any()
    if ncr.any():  # (at 4 mm this core is 1-2 voxels and may be ET) NCR lies inside the tumor core
        ring = ndi.binary_dilation(ncr) & ~ncr
        assert np.mean(np.isin(lab[ring], (1, 3))) >= 0.6
    # one connected whole tumor
    _, n = ndi.label(wt, structure=np.ones((3, 3, 3)))
    assert n == 1


def test_deterministic_and_order_independent():
    ph, feats = _case(1)
    a = segment_tumor(feats, ph.brain_mask, ph.spacing, config=CFG, seed=0)
    b = segment_tumor(feats, ph.brain_mask, ph.spacing, config=CFG, seed=0)
    rev = dict(reversed(list(feats.items())))
    c = segment_tumor(rev, ph.brain_mask, ph.spacing, config=CFG, seed=0)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.labels, c.labels)
    assert a.info == c.info


def test_no_tumor_when_modalities_insufficient_and_bad_input():
    ph, feats = _case(1)
    empty = segment_tumor({}, ph.brain_mask, ph.spacing, config=CFG)
    assert not empty.labels.any() and empty.regions == []
    with pytest.raises(ValueError, match="shape"):
        segment_tumor({"flair": feats["flair"][:-1]}, ph.brain_mask, ph.spacing, config=CFG)
    # an empty brain mask is no tumor, not an error
    res = segment_tumor(feats, np.zeros_like(ph.brain_mask), ph.spacing, config=CFG)
    assert not res.labels.any()


def test_should_run_tumor_rule():
    all4 = ["t1", "t1c", "t2", "flair"]
    assert should_run_tumor(all4, TumorConfig()) is True
    assert should_run_tumor(["t1c", "flair"], TumorConfig()) is True
    assert should_run_tumor(["t1", "flair"], TumorConfig()) is False  # auto: glioma protocol needs T1c
    assert should_run_tumor(["t1"], TumorConfig()) is False
    assert should_run_tumor(["flair"], TumorConfig(enabled="on")) is True
    assert should_run_tumor(["t1", "t2"], TumorConfig(enabled="on")) is False  # nothing estimable
    assert should_run_tumor(all4, TumorConfig(enabled="off")) is False


def test_config_bounds():
    with pytest.raises(ConfigError, match="seed_z"):
        config_from_dict({"tumor": {"seed_z": 0.1}})
    with pytest.raises(ConfigError, match="wt_fraction"):
        config_from_dict({"tumor": {"wt_fraction": 1.5}})
    assert config_from_dict({"tumor": {"min_tumor_ml": 2.5}}).tumor.min_tumor_ml == 2.5


def test_spacing_in_millimetres():
    """The same phantom at a finer grid gives a similar tumor volume (sizes are in mm)."""
    ph, feats = _case(1)
    res = segment_tumor(feats, ph.brain_mask, ph.spacing, config=CFG)
    fine = make_phantom(1, shape=(64, 75, 64), spacing=(3.0, 3.0, 3.0), tumor=True)
    res_f = segment_tumor(_features(fine), fine.brain_mask, fine.spacing, config=CFG)
    a, b = res.info["volumes_ml"]["WT"], res_f.info["volumes_ml"]["WT"]
    assert abs(a - b) / max(a, b) < 0.2


def _open_rim_case(core_shift: float, seed: int = 0):
    """An enhancing rim (shell of radius 8-10 mm) with its top cut off, so that filling it leaks,
    amid edema (FLAIR ~ N(3, 0.5)); the tissue inside the rim is labelled edema too, with its FLAIR
    shifted by ``core_shift``."""
    rng = np.random.default_rng(seed)
    shape = (44, 44, 44)
    grid = np.mgrid[:44, :44, :44]
    r = np.sqrt(sum((g - 22.0) ** 2 for g in grid))
    z = grid[2]
    brain = np.zeros(shape, bool)
    brain[1:-1, 1:-1, 1:-1] = True
    et = (r >= 8) & (r <= 10) & (z < 22 + 5)
    inner = r < 8
    edema = (r < 20) & ~et & brain
    flair = np.where(brain, rng.normal(0.0, 0.5, shape), 0.0)
    flair[edema] += 3.0
    flair[inner] += core_shift
    return et, edema, flair.astype(np.float32), brain, inner, r, z


def test_darker_edema_amid_the_enhancing_rim_is_non_enhancing_core():
    """BRATS 2013 pat0006: 18 of its 64 mL of non-enhancing core was labelled edema. Edema-labelled
    tissue inside the enhancing tumor's hull that is darker on FLAIR than the edema is its solid
    non-enhancing part (core); as bright as the edema, it stays edema (a curved rim's hull takes in
    edema elsewhere: pat0005, the phantoms)."""
    from segment.labeling.tumor import non_enhancing_core

    et, edema, flair, brain, inner, r, z = _open_rim_case(-0.6)  # 1.2 of the edema's SDs darker
    got = non_enhancing_core(et, edema, flair, brain, (1.0, 1.0, 1.0), 50.0, 0.5)
    assert np.mean(got[inner & (z < 22 + 4)]) > 0.9  # the rim's hull holds the core under the cut
    assert not np.any(got & ~inner & ~et & (r > 10.5))
    et, edema, flair, brain, _, _, _ = _open_rim_case(0.0)  # as bright as the edema around
    assert not non_enhancing_core(et, edema, flair, brain, (1.0, 1.0, 1.0), 50.0, 0.5).any()
    # the threshold is in the edema's SDs: 0.6 z darker is core at 0.5 SD, not at 2 SD
    et, edema, flair, brain, _, _, _ = _open_rim_case(-0.6)
    assert not non_enhancing_core(et, edema, flair, brain, (1.0, 1.0, 1.0), 50.0, 2.0).any()
