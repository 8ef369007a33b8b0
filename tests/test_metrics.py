"""Tests of segment.metrics: hand-computed cases (arithmetic in the comments), invariants, BraTS rules."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from segment.errors import InputError
from segment.metrics import (
    brats_regions,
    dice,
    evaluate_brats,
    evaluate_labels,
    hd95,
    iou,
    lesion_wise,
    map_tumor_labels,
    relative_volume_difference,
    sensitivity,
    specificity,
    to_coding,
    volume_difference,
)


def cube(shape, lo, size, value=True, dtype=bool):
    """An array of ``shape`` with a box of ``size`` starting at ``lo`` set to ``value``."""
    a = np.zeros(shape, dtype)
    sl = tuple(slice(l, l + s) for l, s in zip(lo, size if isinstance(size, tuple) else (size,) * 3))
    a[sl] = value
    return a


# --------------------------------------------------------------------------- overlap, hand computed


def test_overlap_hand_computed():
    a = np.array([1, 1, 1, 0, 0, 0], bool)
    b = np.array([0, 1, 1, 1, 1, 0], bool)
    # |A| = 3, |B| = 4, |A & B| = 2, |A | B| = 5
    assert dice(a, b) == pytest.approx(2 * 2 / (3 + 4))  # 4/7
    assert iou(a, b) == pytest.approx(2 / 5)
    # pred = a, gt = b: TP 2, FN 2, FP 1, TN 1
    assert sensitivity(a, b) == pytest.approx(2 / 4)
    assert specificity(a, b) == pytest.approx(1 / (1 + 1))


def test_overlap_empty_conventions():
    z = np.zeros((3, 3, 3), bool)
    o = z.copy()
    o[1, 1, 1] = True
    assert dice(z, z) == 1.0 and iou(z, z) == 1.0
    assert dice(o, z) == 0.0 and iou(z, o) == 0.0
    assert sensitivity(z, z) == 1.0  # gt empty, pred empty
    assert sensitivity(o, z) == 0.0  # gt empty, pred not (BraTS convention)
    assert sensitivity(z, o) == 0.0  # missed everything
    full = np.ones((2, 2), bool)
    assert specificity(full, full) == 1.0  # no negatives at all
    assert specificity(z, z) == 1.0


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        dice(np.zeros((2, 3)), np.zeros((3, 2)))
    for f in (iou, sensitivity, specificity, hd95):
        with pytest.raises(ValueError, match=r"\(4,\).*\(5,\)"):
            f(np.zeros(4), np.zeros(5))
    with pytest.raises(ValueError, match=r"\(2, 2, 2\).*\(2, 2, 3\)"):
        evaluate_labels(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), {1: "A"})
    with pytest.raises(ValueError, match=r"\(2, 2, 2\).*\(2, 2, 3\)"):
        evaluate_brats(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))


# --------------------------------------------------------------------------- HD95, hand computed


def test_hd95_two_points_anisotropic():
    a = np.zeros((1, 1, 10), bool)
    b = a.copy()
    a[0, 0, 2] = True
    b[0, 0, 5] = True
    # 3 voxels apart along axis 2: 3 * 2 mm = 6 mm in both directions
    assert hd95(a, b, spacing=(1, 1, 2)) == pytest.approx(6.0)
    assert hd95(a, b, spacing=(5, 5, 1)) == pytest.approx(3.0)


def test_hd95_is_max_of_directed_percentiles():
    # One-voxel-thick structures: every voxel is a surface voxel.
    gt = np.zeros((1, 1, 30), bool)
    gt[0, 0, 0:10] = True  # z = 0..9
    pred = gt.copy()
    pred[0, 0, 20] = True  # one outlier, 11 voxels from z = 9
    # pred -> gt: ten 0s and one 11. np.percentile(linear), 95th of 11 sorted values sits at
    # index 10 * 0.95 = 9.5, halfway between 0 and 11 -> 5.5.  gt -> pred: all 0.
    # max(5.5, 0) = 5.5.  (Pooling both sets would give index 20*0.95 = 19 -> 0.)
    assert hd95(pred, gt) == pytest.approx(5.5)
    assert hd95(gt, pred) == pytest.approx(5.5)
    assert hd95(pred, gt, percentile=100) == pytest.approx(11.0)


def test_hd95_shifted_cube_anisotropic():
    # 3x3x3 cube at z = 0..2 (gt) and z = 1..3 (pred). Surface = 26 voxels (all but the centre).
    gt = cube((5, 5, 6), (1, 1, 0), 3)
    pred = cube((5, 5, 6), (1, 1, 1), 3)
    # pred -> gt with spacing (1, 1, 3):
    #   z=1 layer: 8 voxels on gt surface -> 0; its centre (2,2,1) is gt's centre, nearest gt
    #              surface voxel 1 voxel away along axis 0 -> 1 mm
    #   z=2 layer: 8 ring voxels, on gt's top face -> 0
    #   z=3 layer: 9 voxels, nearest gt surface at z=2 -> 1 voxel * 3 mm = 3
    # sorted: 16 x 0, 1 x 1, 9 x 3; index 25 * 0.95 = 23.75 -> 3.  By symmetry gt -> pred = 3.
    assert hd95(pred, gt, spacing=(1, 1, 3)) == pytest.approx(3.0)
    # With the thick axis elsewhere every distance is one 1-mm step: 1.
    assert hd95(pred, gt, spacing=(3, 1, 1)) == pytest.approx(1.0)
    assert hd95(pred, gt) == pytest.approx(1.0)


def test_hd95_empty_conventions():
    z = np.zeros((4, 4, 4), bool)
    o = cube((4, 4, 4), (1, 1, 1), 2)
    assert hd95(z, z) == 0.0
    assert math.isnan(hd95(o, z))
    assert math.isnan(hd95(z, o))
    assert hd95(z, o, empty_value=374.0) == 374.0


def test_hd95_bad_spacing():
    o = cube((4, 4, 4), (1, 1, 1), 2)
    with pytest.raises(ValueError, match="spacing"):
        hd95(o, o, spacing=(1, 1))
    with pytest.raises(ValueError, match="spacing"):
        hd95(o, o, spacing=(1, 0, 1))


def test_hd95_on_brats_sized_volume():
    shape = (240, 240, 155)
    x, y, z = np.ogrid[: shape[0], : shape[1], : shape[2]]
    gt = (x - 120) ** 2 + (y - 110) ** 2 + (z - 80) ** 2 < 30**2
    pred = np.roll(gt, 2, axis=0)
    d = hd95(pred, gt, spacing=(1, 1, 1))
    assert d == pytest.approx(2.0)  # a rigid 2-voxel shift moves every surface point by <= 2


# --------------------------------------------------------------------------- HD95, brute force


def _surface_coords(mask: np.ndarray) -> np.ndarray:
    """Surface voxels by definition: in the mask with a 6-neighbour outside (or off the array)."""
    p = np.pad(mask, 1)
    inner = p[1:-1, 1:-1, 1:-1]
    all_in = inner.copy()
    for axis in range(3):
        for step in (-1, 1):
            all_in &= np.roll(p, step, axis=axis)[1:-1, 1:-1, 1:-1]
    return np.argwhere(inner & ~all_in)


def _brute_hd95(a, b, spacing):
    pa = _surface_coords(a) * np.asarray(spacing)
    pb = _surface_coords(b) * np.asarray(spacing)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))


masks = arrays(bool, (6, 5, 4), elements=st.booleans())
spacings = st.tuples(*[st.floats(0.5, 3.0, allow_nan=False)] * 3)


@settings(max_examples=60, deadline=None)
@given(masks, masks, spacings)
def test_hd95_matches_brute_force(a, b, spacing):
    if not a.any() or not b.any():
        return
    assert hd95(a, b, spacing) == pytest.approx(_brute_hd95(a, b, spacing), rel=1e-9, abs=1e-9)


# --------------------------------------------------------------------------- invariants


@settings(max_examples=80, deadline=None)
@given(masks, masks)
def test_dice_invariants(a, b):
    d = dice(a, b)
    j = iou(a, b)
    assert 0.0 <= d <= 1.0 and 0.0 <= j <= 1.0
    assert d == pytest.approx(dice(b, a))
    assert d == pytest.approx(2 * j / (1 + j))
    assert dice(a, a) == 1.0
    assert 0.0 <= sensitivity(a, b) <= 1.0 and 0.0 <= specificity(a, b) <= 1.0


@settings(max_examples=60, deadline=None)
@given(masks, masks, spacings, st.floats(0.25, 4.0))
def test_hd95_invariants(a, b, spacing, k):
    h = hd95(a, b, spacing)
    if a.any() != b.any():
        assert math.isnan(h)
        return
    assert h >= 0.0
    assert h == pytest.approx(hd95(b, a, spacing))
    assert hd95(a, a, spacing) == 0.0
    assert hd95(a, b, tuple(k * s for s in spacing)) == pytest.approx(k * h)
    assert h <= hd95(a, b, spacing, percentile=100) + 1e-12


# --------------------------------------------------------------------------- volumes, per label


def test_volume_difference():
    pred = cube((10, 10, 10), (0, 0, 0), (5, 10, 10))  # 500 voxels
    gt = cube((10, 10, 10), (0, 0, 0), (2, 10, 10))  # 200 voxels
    # (500 - 200) voxels * 0.5 * 1 * 2 mm^3 = 300 mm^3 = 0.3 mL
    assert volume_difference(pred, gt, (0.5, 1.0, 2.0)) == pytest.approx(0.3)
    assert volume_difference(gt, pred, 1.0) == pytest.approx(-0.3)
    assert relative_volume_difference(pred, gt) == pytest.approx(1.5)  # (500 - 200) / 200
    z = np.zeros_like(gt)
    assert relative_volume_difference(z, z) == 0.0
    assert relative_volume_difference(gt, z) == math.inf


def test_evaluate_labels_keys_and_values():
    gt = np.zeros((8, 8, 8), np.uint8)
    gt[:4] = 1
    gt[4:] = 2
    pred = gt.copy()
    pred[3] = 2  # one 8x8 slab of label 1 predicted as 2
    m = evaluate_labels(pred, gt, {1: "CSF", 2: "GM", 3: "WM"}, spacing=(1.0, 1.0, 2.0))
    for name in ("CSF", "GM", "WM"):
        for key in ("dice", "iou", "sensitivity", "specificity", "hd95", "voldiff_ml"):
            assert f"{key}_{name}" in m
    # CSF: |P| = 192, |G| = 256, TP = 192 -> dice = 384 / 448
    assert m["dice_CSF"] == pytest.approx(384 / 448)
    assert m["sensitivity_CSF"] == pytest.approx(192 / 256)
    # voxel = 2 mm^3: CSF lost 64 voxels = -128 mm^3 = -0.128 mL; GM gained it
    assert m["voldiff_ml_CSF"] == pytest.approx(-0.128)
    assert m["voldiff_ml_GM"] == pytest.approx(0.128)
    # WM absent from both: perfect by convention
    assert m["dice_WM"] == 1.0 and m["hd95_WM"] == 0.0
    # label only in gt: hd95 undefined -> NaN by default, or the value asked for
    pred2 = np.where(gt == 1, 2, gt)
    assert math.isnan(evaluate_labels(pred2, gt, {1: "CSF"})["hd95_CSF"])
    assert evaluate_labels(pred2, gt, {1: "CSF"}, hd95_empty_value=374.0)["hd95_CSF"] == 374.0


# --------------------------------------------------------------------------- BraTS regions


def test_brats_regions():
    lab = np.array([0, 1, 2, 3, 0])
    r = brats_regions(lab)
    assert r["WT"].tolist() == [False, True, True, True, False]
    assert r["TC"].tolist() == [False, True, False, True, False]
    assert r["ET"].tolist() == [False, False, False, True, False]


def test_evaluate_brats_identical_and_missing_et():
    gt = cube((24, 24, 24), (4, 4, 4), 14, 2, np.uint8)  # ED shell
    gt[7:15, 7:15, 7:15] = 3  # ET
    gt[9:13, 9:13, 9:13] = 1  # NCR
    m = evaluate_brats(gt, gt)
    for r in ("WT", "TC", "ET"):
        assert m[f"dice_{r}"] == 1.0 and m[f"hd95_{r}"] == 0.0
        assert m[f"lesion_dice_{r}"] == 1.0 and m[f"lesion_hd95_{r}"] == 0.0
        assert m[f"sensitivity_{r}"] == 1.0 and m[f"specificity_{r}"] == 1.0
    pred = np.where(gt == 3, 1, gt)  # ET called NCR: TC and WT unchanged, ET missed
    m = evaluate_brats(pred, gt)
    assert m["dice_WT"] == 1.0 and m["dice_TC"] == 1.0
    assert m["dice_ET"] == 0.0 and m["hd95_ET"] == 374.0 and m["sensitivity_ET"] == 0.0
    # ET lesion: 8^3 - 4^3 = 448 voxels > 50, missed -> Dice 0, HD95 374
    assert m["lesion_dice_ET"] == 0.0 and m["lesion_hd95_ET"] == 374.0
    assert m["lesion_fn_ET"] == 1.0 and m["lesion_tp_ET"] == 0.0
    # ET volume: gt 448 voxels = 0.448 mL, pred 0
    assert m["voldiff_ml_ET"] == pytest.approx(-0.448)
    assert m["volume_ml_ET"] == 0.0
    # only the regions asked for
    m = evaluate_brats(pred, gt, regions=("WT",))
    assert {k.rsplit("_", 1)[1] for k in m} == {"WT"}
    with pytest.raises(ValueError, match="XX"):
        evaluate_brats(pred, gt, regions=("XX",))


# --------------------------------------------------------------------------- lesion-wise, worked examples

SHAPE = (40, 40, 40)


def test_lesion_two_gt_one_matched_one_missed():
    l1 = cube(SHAPE, (5, 5, 5), 4)  # 64 voxels
    l2 = cube(SHAPE, (25, 5, 5), 4)  # 64 voxels, 16 voxels away: not merged by 3 dilations
    gt = l1 | l2
    r = lesion_wise(l1, gt)
    # L1: Dice 1, HD95 0.  L2: missed -> Dice 0, HD95 374.  No false positives.
    # lesion Dice = (1 + 0) / 2 = 0.5;  lesion HD95 = (0 + 374) / 2 = 187
    assert (r.n_tp, r.n_fn, r.n_fp) == (1, 1, 0)
    assert r.dice == pytest.approx(0.5)
    assert r.hd95 == pytest.approx(187.0)
    # the legacy (whole-image) Dice is 2 * 64 / (64 + 128) = 2/3
    assert dice(l1, gt) == pytest.approx(2 / 3)


def test_lesion_false_positive():
    l1 = cube(SHAPE, (5, 5, 5), 4)
    fp = cube(SHAPE, (30, 30, 30), 3)  # 27 voxels: predictions are never size-filtered
    r = lesion_wise(l1 | fp, l1)
    # entries: L1 (Dice 1, HD95 0) and one FP (Dice 0, HD95 374): Dice 1/2, HD95 374/2
    assert (r.n_tp, r.n_fn, r.n_fp) == (1, 0, 1)
    assert r.dice == pytest.approx(0.5)
    assert r.hd95 == pytest.approx(187.0)


def test_lesion_empty_cases():
    z = np.zeros(SHAPE, bool)
    l1 = cube(SHAPE, (5, 5, 5), 4)
    r = lesion_wise(z, z)
    assert (r.dice, r.hd95) == (1.0, 0.0)
    r = lesion_wise(l1, z)  # only a false positive: 0 / 1, 374 / 1
    assert (r.dice, r.hd95, r.n_fp) == (0.0, 374.0, 1)
    r = lesion_wise(z, l1)  # only a missed lesion
    assert (r.dice, r.hd95, r.n_fn) == (0.0, 374.0, 1)


def test_lesion_small_gt_dropped():
    l1 = cube(SHAPE, (5, 5, 5), 4)  # 64 voxels > 50
    small = cube(SHAPE, (30, 30, 30), 3)  # 27 voxels <= 50: dropped
    gt = l1 | small
    r = lesion_wise(l1, gt)  # small lesion missed, but it does not count
    assert (r.dice, r.hd95, r.n_tp, r.n_fn, r.n_fp) == (1.0, 0.0, 1, 0, 0)
    r = lesion_wise(gt, gt)  # prediction of the small lesion is not a false positive either
    assert (r.dice, r.hd95, r.n_fp) == (1.0, 0.0, 0)
    assert [les["counted"] for les in r.lesions] == [True, False]
    # the threshold is a volume: at 2 mm isotropic the small lesion is 27 * 8 = 216 mm^3 > 50
    r = lesion_wise(l1, gt, spacing=(2, 2, 2))
    assert (r.n_tp, r.n_fn) == (1, 1)
    assert r.dice == pytest.approx(0.5) and r.hd95 == pytest.approx(187.0)
    # exactly at the threshold is dropped (BraTS keeps volume > threshold)
    r = lesion_wise(l1, gt, min_lesion_volume=27)
    assert r.n_fn == 0
    r = lesion_wise(l1, gt, min_lesion_volume=26.9)
    assert r.n_fn == 1


def test_lesion_matched_through_dilation_without_overlap():
    gt = cube(SHAPE, (5, 5, 5), 4)  # x = 5..8
    # 3 dilations reach x = 11: a prediction starting at x = 11 matches, at x = 12 does not.
    near = cube(SHAPE, (11, 5, 5), 4)
    far = cube(SHAPE, (12, 5, 5), 4)
    r = lesion_wise(near, gt)
    # matched, no overlap: Dice 0. HD95: pred surface (56 voxels) -> gt face x = 8:
    # x=11: 16 x 3 mm, x=12: 12 x 4, x=13: 12 x 5, x=14: 16 x 6; index 55 * .95 = 52.25 -> 6
    assert (r.n_tp, r.n_fn, r.n_fp) == (1, 0, 0)
    assert r.dice == 0.0
    assert r.hd95 == pytest.approx(6.0)
    r = lesion_wise(far, gt)  # one missed lesion and one false positive
    assert (r.n_tp, r.n_fn, r.n_fp) == (0, 1, 1)
    assert (r.dice, r.hd95) == (0.0, 374.0)


def test_lesion_dilation_uses_18_connected_element():
    # 3 dilations with the 18-connected element reach offset (2, 2, 2) from a corner but not
    # (3, 3, 3) (each step moves at most 2 in L1 norm: 3 steps <= 6 < 9).
    gt = cube(SHAPE, (5, 5, 5), 4)  # corner at (8, 8, 8)
    diag2 = cube(SHAPE, (10, 10, 10), 4)  # corner (10,10,10): offset (2,2,2) -> matched
    diag3 = cube(SHAPE, (11, 11, 11), 4)  # corner (11,11,11): offset (3,3,3) -> not matched
    assert lesion_wise(diag2, gt).n_tp == 1
    r = lesion_wise(diag3, gt)
    assert (r.n_tp, r.n_fp) == (0, 1)
    assert lesion_wise(diag3, gt, dilation_iterations=5).n_tp == 1


def test_lesion_gt_pieces_merged_by_dilation():
    l1 = cube(SHAPE, (5, 5, 5), 4)  # x = 5..8, dilated to x = 11
    l2 = cube(SHAPE, (13, 5, 5), 4)  # x = 13..16, dilated down to x = 10: overlap -> one lesion
    r = lesion_wise(l1, l1 | l2)
    # one lesion of 128 voxels, matched by L1: Dice = 2 * 64 / (64 + 128) = 2/3
    assert (r.n_tp, r.n_fn, len(r.lesions)) == (1, 0, 1)
    assert r.dice == pytest.approx(2 / 3)
    l3 = cube(SHAPE, (16, 5, 5), 4)  # x = 16..19 dilated to x = 13; L1 reaches 11; x=12 empty
    r = lesion_wise(l1, l1 | l3)
    assert (r.n_tp, r.n_fn, len(r.lesions)) == (1, 1, 2)
    assert r.dice == pytest.approx(0.5)


def test_lesion_wise_at_array_border():
    gt = cube(SHAPE, (0, 0, 0), 4)
    pred = cube(SHAPE, (36, 36, 36), 4)
    r = lesion_wise(pred, gt)
    assert (r.n_tp, r.n_fn, r.n_fp) == (0, 1, 1)


@settings(max_examples=40, deadline=None)
@given(arrays(bool, (10, 9, 8), elements=st.booleans()))
def test_lesion_identical_is_perfect(m):
    r = lesion_wise(m, m, min_lesion_volume=2)
    assert r.dice == pytest.approx(1.0) and r.hd95 == pytest.approx(0.0) and r.n_fp == 0


# --------------------------------------------------------------------------- label codings


def test_map_tumor_labels():
    assert map_tumor_labels(np.array([0, 1, 2, 4]), "brats2021").tolist() == [0, 1, 2, 3]
    assert map_tumor_labels(np.array([0, 1, 2, 3]), "msd").tolist() == [0, 2, 1, 3]
    assert map_tumor_labels(np.array([0, 1, 2, 3]), "brats2023").tolist() == [0, 1, 2, 3]
    assert map_tumor_labels(np.array([0, 2, 4]), "auto").tolist() == [0, 2, 3]
    assert map_tumor_labels(np.array([0, 2, 3]), "auto").tolist() == [0, 2, 3]
    out = map_tumor_labels(np.array([[0.0, 4.0]], np.float32), "brats2021")
    assert out.dtype == np.uint8 and out.tolist() == [[0, 3]]


def test_map_tumor_labels_errors_name_labels():
    with pytest.raises(InputError, match=r"^seg\.nii\.gz: unexpected tumor labels 3, 7 .*brats2021"):
        map_tumor_labels(np.array([0, 1, 3, 7]), "brats2021", source="seg.nii.gz")
    with pytest.raises(InputError, match=r"labels 4 .*msd"):
        map_tumor_labels(np.array([0, 4]), "msd")
    with pytest.raises(InputError, match=r"1\.5"):
        map_tumor_labels(np.array([0, 1.5]), "brats2023")
    with pytest.raises(InputError, match=r"-1"):
        map_tumor_labels(np.array([0, -1]), "auto")
    with pytest.raises(ValueError, match="coding"):
        map_tumor_labels(np.array([0]), "brats2019")


@pytest.mark.parametrize("coding", ["brats2023", "brats2021", "msd"])
def test_coding_round_trip(coding):
    internal = np.arange(4, dtype=np.uint8).repeat(3).reshape(3, 2, 2)
    assert np.array_equal(map_tumor_labels(to_coding(internal, coding), coding), internal)


def test_to_coding():
    assert to_coding(np.array([0, 1, 2, 3]), "brats2021").tolist() == [0, 1, 2, 4]
    assert to_coding(np.array([0, 1, 2, 3]), "msd").tolist() == [0, 2, 1, 3]
    with pytest.raises(ValueError, match="4"):
        to_coding(np.array([0, 4]), "brats2021")


# --------------------------------------------------------------------------- lesion-wise, reference


def _reference_lesion_wise(pred, gt, iterations, threshold):
    """The BraTS 2023 procedure written out step by step (one dilation per lesion)."""
    from scipy import ndimage

    s18 = ndimage.generate_binary_structure(3, 2)
    s26 = ndimage.generate_binary_structure(3, 3)

    def dilate(m):  # scipy reads iterations=0 as "until nothing changes": 0 means none here
        return ndimage.binary_dilation(m, s18, iterations) if iterations else m

    dil_cc, n_gt = ndimage.label(dilate(gt), s26)
    merged = np.where(gt, dil_cc, 0)  # gt pieces joined by their dilations
    pred_cc, n_pred = ndimage.label(pred, s26)
    matched, kept_d, kept_h = set(), [], []
    for k in range(1, n_gt + 1):
        lesion = merged == k
        hit = set(np.unique(pred_cc[dilate(lesion)])) - {0}
        matched |= hit
        pk = np.isin(pred_cc, list(hit))
        if lesion.sum() > threshold:
            kept_d.append(2 * (pk & lesion).sum() / (pk.sum() + lesion.sum()))
            kept_h.append(hd95(pk, lesion, empty_value=374.0))
    n_fp = len(set(range(1, n_pred + 1)) - matched)
    n = len(kept_d) + n_fp
    if n == 0:
        return 1.0, 0.0
    return sum(kept_d) / n, (sum(kept_h) + 374.0 * n_fp) / n


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.02, 0.3), st.floats(0.02, 0.3),
       st.integers(0, 2), st.sampled_from([0.0, 2.0, 5.0]))
def test_lesion_wise_matches_reference(seed, dens_p, dens_g, iterations, threshold):
    rng = np.random.default_rng(seed)
    gt = rng.random((12, 10, 9)) < dens_g
    pred = rng.random((12, 10, 9)) < dens_p
    r = lesion_wise(pred, gt, dilation_iterations=iterations, min_lesion_volume=threshold)
    d, h = _reference_lesion_wise(pred, gt, iterations, threshold)
    assert r.dice == pytest.approx(d) and r.hd95 == pytest.approx(h)
