"""Segmentation metrics: overlap, surface distance, volumes, BraTS regions and lesion-wise scores.

Pure numpy/scipy. Every function takes plain arrays (boolean masks or integer label maps) and
returns Python floats, so results go straight into JSON.

Conventions (chosen so that every value is a number, never NaN, except where stated):

============================  ===========================================================
situation                     value
============================  ===========================================================
dice / iou, both empty        1.0 (perfect agreement on "nothing there")
dice / iou, one empty         0.0
sensitivity, gt empty         1.0 if pred is empty too, else 0.0 (BraTS 2023 evaluation)
specificity, gt everywhere    1.0 (no negatives, so no false positives are possible)
hd95, both empty              0.0
hd95, exactly one empty       ``empty_value`` (NaN by default; BraTS uses 374.0 mm)
============================  ===========================================================

HD95 follows MONAI ``compute_hausdorff_distance(percentile=95)`` and the BraTS 2023
evaluation (DeepMind ``surface_distance.compute_robust_hausdorff``): the surface of a mask is
its boundary voxels (mask minus its 6-connected erosion); the two *directed* sets of distances
(every pred surface voxel to the nearest gt surface voxel, and the reverse) are computed with a
Euclidean distance transform in millimetres, the 95th percentile of each is taken
(``np.percentile``, linear interpolation) and the larger of the two is returned. Unlike the
DeepMind code we do not weight surface elements by their area.

Lesion-wise scores reproduce the public BraTS 2023 evaluation (``rachitsaluja/BraTS-2023-Metrics``,
``eval.py``), see :func:`lesion_wise`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from segment.errors import InputError

__all__ = [
    "dice",
    "iou",
    "sensitivity",
    "specificity",
    "hd95",
    "volume_difference",
    "relative_volume_difference",
    "evaluate_labels",
    "brats_regions",
    "evaluate_brats",
    "lesion_wise",
    "LesionWiseResult",
    "map_tumor_labels",
    "to_coding",
    "BRATS_REGIONS",
    "BRATS_MAX_DISTANCE",
    "TUMOR_CODINGS",
]

#: HD95 (mm) given to a missed or spurious lesion, and to an empty-vs-non-empty region, by BraTS.
BRATS_MAX_DISTANCE = 374.0
#: BraTS regions in the internal (BraTS 2023) coding 1 NCR, 2 ED, 3 ET.
BRATS_REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}

#: For each tumor label coding: file label -> internal (BraTS 2023) label. 0 is background.
TUMOR_CODINGS: dict[str, dict[int, int]] = {
    "brats2023": {0: 0, 1: 1, 2: 2, 3: 3},  # 1 NCR, 2 ED, 3 ET
    "brats2021": {0: 0, 1: 1, 2: 2, 4: 3},  # 1 NCR, 2 ED, 4 ET
    "msd": {0: 0, 1: 2, 2: 1, 3: 3},  # 1 edema, 2 non-enhancing tumor, 3 enhancing tumor
}

_FACE = ndimage.generate_binary_structure(3, 1)  # 6-connectivity (surface definition)
_EDGE = ndimage.generate_binary_structure(3, 2)  # 18-connectivity (BraTS dilation element)
_FULL = ndimage.generate_binary_structure(3, 3)  # 26-connectivity (lesions)


# --------------------------------------------------------------------------- helpers


def _pair(a, b, names: tuple[str, str] = ("a", "b")) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as bool, after checking that their shapes agree."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {names[0]} {a.shape} "
            f"and {names[1]} {b.shape}; resample one onto the other's grid first"
        )
    return a.astype(bool, copy=False), b.astype(bool, copy=False)


def _union_box(boxes: Sequence[tuple[slice, ...]]) -> tuple[slice, ...]:
    """Smallest box (tuple of slices) containing all ``boxes``."""
    return tuple(
        slice(min(b[i].start for b in boxes), max(b[i].stop for b in boxes))
        for i in range(len(boxes[0]))
    )


def _spacing(spacing, ndim: int) -> tuple[float, ...]:
    if np.isscalar(spacing):
        sp = (float(spacing),) * ndim
    else:
        sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim:
        raise ValueError(f"spacing must have one value per axis ({ndim}), got {spacing!r}")
    if not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be positive and finite, got {spacing!r}")
    return sp


def _counts(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) voxel counts of two boolean arrays of the same shape."""
    tp = int(np.count_nonzero(pred & gt))
    n_pred = int(np.count_nonzero(pred))
    n_gt = int(np.count_nonzero(gt))
    fp = n_pred - tp
    fn = n_gt - tp
    tn = int(pred.size) - tp - fp - fn
    return tp, fp, fn, tn


def _bbox(mask: np.ndarray, pad: int = 0) -> tuple[slice, ...] | None:
    """Slices of the bounding box of ``mask`` grown by ``pad`` voxels (clipped), or None if empty."""
    slices = []
    for axis in range(mask.ndim):
        other = tuple(i for i in range(mask.ndim) if i != axis)
        nz = np.flatnonzero(mask.any(axis=other))
        if nz.size == 0:
            return None
        slices.append(slice(max(int(nz[0]) - pad, 0), min(int(nz[-1]) + 1 + pad, mask.shape[axis])))
    return tuple(slices)


# --------------------------------------------------------------------------- overlap


def dice(a, b) -> float:
    """Dice similarity coefficient ``2|A & B| / (|A| + |B|)``.

    Parameters
    ----------
    a, b : array_like of bool, same shape (any)
        Masks; non-boolean input is cast with ``astype(bool)``.

    Returns
    -------
    float
        In [0, 1]. Both empty gives 1.0.

    Raises
    ------
    ValueError
        If the shapes differ (the message names both shapes).

    Examples
    --------
    >>> dice([1, 1, 0, 0], [0, 1, 1, 0])
    0.5
    >>> dice([0, 0], [0, 0])
    1.0
    """
    a, b = _pair(a, b)
    tp, fp, fn, _ = _counts(a, b)
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else 2.0 * tp / denom


def iou(a, b) -> float:
    """Intersection over union (Jaccard index) ``|A & B| / |A | B|``.

    Parameters
    ----------
    a, b : array_like of bool, same shape (any)

    Returns
    -------
    float
        In [0, 1]. Both empty gives 1.0. Related to Dice by ``dice = 2 iou / (1 + iou)``.

    Examples
    --------
    >>> round(iou([1, 1, 0, 0], [0, 1, 1, 0]), 4)
    0.3333
    """
    a, b = _pair(a, b)
    tp, fp, fn, _ = _counts(a, b)
    union = tp + fp + fn
    return 1.0 if union == 0 else tp / union


def sensitivity(pred, gt) -> float:
    """True positive rate ``TP / (TP + FN)`` (recall).

    Parameters
    ----------
    pred, gt : array_like of bool, same shape (any)

    Returns
    -------
    float
        In [0, 1]. Undefined when ``gt`` is empty; we then return 1.0 if ``pred`` is also empty and
        0.0 otherwise, as the BraTS 2023 evaluation does.

    Examples
    --------
    >>> sensitivity([1, 0, 0, 0], [1, 1, 0, 0])
    0.5
    >>> sensitivity([0, 1], [0, 0])
    0.0
    """
    pred, gt = _pair(pred, gt, ("pred", "gt"))
    tp, fp, fn, _ = _counts(pred, gt)
    if tp + fn == 0:
        return 1.0 if fp == 0 else 0.0
    return tp / (tp + fn)


def specificity(pred, gt) -> float:
    """True negative rate ``TN / (TN + FP)`` over the whole array.

    Parameters
    ----------
    pred, gt : array_like of bool, same shape (any)

    Returns
    -------
    float
        In [0, 1]. Undefined when ``gt`` covers every voxel (no negatives); we then return 1.0
        (no false positive is possible). The BraTS code would return 0.0 there.

    Examples
    --------
    >>> specificity([1, 1, 0, 0], [1, 0, 0, 0])
    0.6666666666666666
    """
    pred, gt = _pair(pred, gt, ("pred", "gt"))
    _, fp, _, tn = _counts(pred, gt)
    return 1.0 if tn + fp == 0 else tn / (tn + fp)


# --------------------------------------------------------------------------- surface distance


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels: the mask minus its 6-connected erosion (outside the array is background)."""
    struct = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=struct, border_value=0)


def _directed_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) pred surface -> nearest gt surface and gt surface -> nearest pred surface.

    Both masks must be non-empty. Work is done on the bounding box of the union (padded by one
    voxel): every surface voxel lies inside it, so the result is exact.
    """
    box = _bbox(pred | gt, pad=1)
    assert box is not None
    p = pred[box]
    g = gt[box]
    sp = _surface(p)
    sg = _surface(g)
    # distance_transform_edt gives each non-zero voxel its distance to the nearest zero voxel.
    dt_to_g = ndimage.distance_transform_edt(~sg, sampling=spacing)
    dt_to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return dt_to_g[sp], dt_to_p[sg]


def hd95(pred, gt, spacing=(1.0, 1.0, 1.0), *, percentile: float = 95.0,
         empty_value: float = float("nan")) -> float:
    """95th percentile symmetric Hausdorff distance between the surfaces of two masks, in mm.

    The surface of a mask is its boundary voxels (voxels with a 6-neighbour outside the mask).
    For each surface voxel of one mask, the Euclidean distance (in mm, honouring ``spacing``) to
    the nearest surface voxel of the other is computed with
    :func:`scipy.ndimage.distance_transform_edt`; the result is the **maximum of the two directed
    95th percentiles** (MONAI ``compute_hausdorff_distance(percentile=95)``, the BraTS 2023
    evaluation's ``compute_robust_hausdorff``). Work is confined to the bounding box of the union,
    so small structures in a 240x240x155 volume take milliseconds.

    Parameters
    ----------
    pred, gt : array_like of bool, same shape (N-D, usually (X, Y, Z))
    spacing : float or sequence of float, one per axis
        Voxel size in mm along each array axis.
    percentile : float
        100 gives the classic Hausdorff distance.
    empty_value : float
        Returned when exactly one mask is empty (the distance is undefined). NaN by default;
        BraTS uses 374.0 (:data:`BRATS_MAX_DISTANCE`). Both empty gives 0.0.

    Returns
    -------
    float

    Examples
    --------
    >>> a = np.zeros((1, 1, 10), bool); b = a.copy()
    >>> a[0, 0, 2] = True; b[0, 0, 5] = True
    >>> hd95(a, b, spacing=(1, 1, 2))
    6.0
    """
    pred, gt = _pair(pred, gt, ("pred", "gt"))
    sp = _spacing(spacing, pred.ndim)
    has_p, has_g = bool(pred.any()), bool(gt.any())
    if not has_p and not has_g:
        return 0.0
    if has_p != has_g:
        return float(empty_value)
    d_pg, d_gp = _directed_distances(pred, gt, sp)
    return float(max(np.percentile(d_pg, percentile), np.percentile(d_gp, percentile)))


# --------------------------------------------------------------------------- volumes


def _voxel_volume(voxel_volume) -> float:
    if np.isscalar(voxel_volume):
        v = float(voxel_volume)
    else:
        v = float(np.prod([float(s) for s in voxel_volume]))
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"voxel_volume must be positive, got {voxel_volume!r}")
    return v


def volume_difference(pred, gt, voxel_volume=1.0) -> float:
    """Signed volume difference, predicted minus true, in millilitres.

    Parameters
    ----------
    pred, gt : array_like of bool, same shape (any)
    voxel_volume : float or sequence of float
        Volume of one voxel in mm^3, or the spacing (mm per axis) whose product it is.

    Returns
    -------
    float
        ``(|pred| - |gt|) * voxel_volume / 1000``; positive means over-segmentation.

    Examples
    --------
    >>> pred = np.zeros((10, 10, 30), bool); pred[:, :, :20] = True   # 2000 voxels
    >>> gt = np.zeros((10, 10, 30), bool); gt[:, :, :10] = True       # 1000 voxels
    >>> volume_difference(pred, gt, voxel_volume=(1.0, 1.0, 2.0))     # (2000 - 1000) * 2 / 1000
    2.0
    """
    pred, gt = _pair(pred, gt, ("pred", "gt"))
    v = _voxel_volume(voxel_volume)
    return (int(np.count_nonzero(pred)) - int(np.count_nonzero(gt))) * v / 1000.0


def relative_volume_difference(pred, gt) -> float:
    """Relative volume difference ``(|pred| - |gt|) / |gt|`` (unitless, signed).

    Both empty gives 0.0; ``gt`` empty and ``pred`` not gives ``inf`` (undefined: callers that
    write JSON should drop or replace it).

    Examples
    --------
    >>> relative_volume_difference([1, 1, 1, 0], [1, 1, 0, 0])
    0.5
    """
    pred, gt = _pair(pred, gt, ("pred", "gt"))
    n_p, n_g = int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
    if n_g == 0:
        return 0.0 if n_p == 0 else float("inf")
    return (n_p - n_g) / n_g


# --------------------------------------------------------------------------- per label


def evaluate_labels(pred, gt, labels: Mapping[int, str], spacing=(1.0, 1.0, 1.0), *,
                    hd95_empty_value: float = float("nan")) -> dict[str, float]:
    """Overlap, distance and volume metrics for every label of two label maps.

    Parameters
    ----------
    pred, gt : ndarray of shape (X, Y, Z), int
        Label maps on the same grid.
    labels : dict of int to str
        Label value -> name, e.g. ``{1: "CSF", 2: "GM", 3: "WM"}``.
    spacing : sequence of 3 float
        Voxel size in mm (from the affine: :attr:`segment.types.Volume.spacing`).
    hd95_empty_value : float
        HD95 when a label is present in only one of the maps (NaN by default, written as null
        in JSON; pass 374.0 for BraTS-style scoring).

    Returns
    -------
    dict of str to float
        For every label ``name``: ``dice_<name>``, ``iou_<name>``, ``sensitivity_<name>``,
        ``specificity_<name>``, ``hd95_<name>`` (mm) and ``voldiff_ml_<name>`` (pred minus gt, mL).

    Raises
    ------
    ValueError
        If the shapes differ.

    Examples
    --------
    >>> p = np.zeros((4, 4, 4), int); p[:2] = 1
    >>> m = evaluate_labels(p, p, {1: "A"})
    >>> m["dice_A"], m["hd95_A"], m["voldiff_ml_A"]
    (1.0, 0.0, 0.0)
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(
            f"pred and gt must have the same shape, got pred {pred.shape} and gt {gt.shape}; "
            "resample one onto the other's grid first"
        )
    sp = _spacing(spacing, pred.ndim)
    vv = float(np.prod(sp))
    out: dict[str, float] = {}
    for value, name in labels.items():
        p = pred == value
        g = gt == value
        out[f"dice_{name}"] = dice(p, g)
        out[f"iou_{name}"] = iou(p, g)
        out[f"sensitivity_{name}"] = sensitivity(p, g)
        out[f"specificity_{name}"] = specificity(p, g)
        out[f"hd95_{name}"] = hd95(p, g, sp, empty_value=hd95_empty_value)
        out[f"voldiff_ml_{name}"] = volume_difference(p, g, vv)
    return out


# --------------------------------------------------------------------------- BraTS


def brats_regions(labels) -> dict[str, np.ndarray]:
    """The three BraTS evaluation regions of a tumor label map in BraTS 2023 coding.

    Parameters
    ----------
    labels : ndarray of shape (X, Y, Z), int
        0 background, 1 NCR (necrotic core), 2 ED (edema), 3 ET (enhancing tumor).

    Returns
    -------
    dict of str to ndarray of shape (X, Y, Z), bool
        ``WT`` (whole tumor) = 1|2|3, ``TC`` (tumor core) = 1|3, ``ET`` = 3.

    Examples
    --------
    >>> r = brats_regions(np.array([0, 1, 2, 3]))
    >>> r["WT"].tolist(), r["TC"].tolist(), r["ET"].tolist()
    ([False, True, True, True], [False, True, False, True], [False, False, False, True])
    """
    labels = np.asarray(labels)
    return {name: np.isin(labels, values) for name, values in BRATS_REGIONS.items()}


@dataclass
class LesionWiseResult:
    """Outcome of :func:`lesion_wise` for one region.

    ``lesions`` holds one dict per ground-truth lesion (after merging by dilation), with keys
    ``volume_mm3``, ``dice``, ``hd95``, ``n_matched`` and ``counted`` (False when the lesion is
    at or below the volume threshold and therefore left out of the scores).
    """

    dice: float
    hd95: float
    n_tp: int  # counted gt lesions matched by at least one predicted component
    n_fn: int  # counted gt lesions matched by none
    n_fp: int  # predicted components touching no dilated gt lesion
    lesions: list[dict] = field(default_factory=list)


def lesion_wise(pred, gt, spacing=(1.0, 1.0, 1.0), *, dilation_iterations: int = 3,
                min_lesion_volume: float = 50.0,
                max_distance: float = BRATS_MAX_DISTANCE) -> LesionWiseResult:
    """BraTS 2023 lesion-wise Dice and HD95 of one binary region.

    Reproduces the public BraTS 2023 evaluation (``rachitsaluja/BraTS-2023-Metrics``,
    ``get_LesionWiseScores`` / ``get_LesionWiseResults``):

    1. Predicted lesions are the 26-connected components of ``pred``.
    2. Ground-truth lesions are the 26-connected components of ``gt`` dilated
       ``dilation_iterations`` times with the 18-connected (3x3x3 minus corners) element, restricted
       back to ``gt`` voxels: gt pieces closer than the dilation are one lesion. The ground truth
       itself is never changed.
    3. A predicted component matches a gt lesion when it overlaps that lesion's dilation. For each
       gt lesion, Dice and HD95 are computed between the lesion and the union of its matched
       components; an unmatched lesion scores Dice 0 and HD95 ``max_distance`` (374 mm).
    4. Gt lesions with volume ``<= min_lesion_volume`` mm^3 are dropped from the scores (the
       components they match are not false positives either).
    5. Every predicted component matching no gt lesion is a false positive, adding an entry
       with Dice 0 and HD95 ``max_distance``.
    6. Scores are means over counted lesions plus false positives. With nothing to count (both
       empty, or only dropped lesions and no false positive) Dice is 1 and HD95 is 0.

    Parameters
    ----------
    pred, gt : ndarray of shape (X, Y, Z), bool
    spacing : sequence of 3 float
        Voxel size in mm; used for HD95 and lesion volumes (dilation is in voxels, as in BraTS).
    dilation_iterations : int
        BraTS 2023 ``dil_factor``: 3 for glioma (GLI), SSA and PED; 1 for MEN and MET.
    min_lesion_volume : float
        BraTS 2023 ``lesion_volume_thresh`` in mm^3: 50 for GLI, SSA, MEN, PED; 2 for MET.
    max_distance : float
        HD95 given to a missed or spurious lesion.

    Returns
    -------
    LesionWiseResult

    Examples
    --------
    >>> gt = np.zeros((20, 20, 20), bool); gt[2:8, 2:8, 2:8] = True      # 216 voxels
    >>> r = lesion_wise(gt, gt)
    >>> r.dice, r.hd95, r.n_tp, r.n_fp
    (1.0, 0.0, 1, 0)
    """
    pred, gt = _pair(pred, gt, ("pred", "gt"))
    if pred.ndim != 3:
        raise ValueError(f"lesion_wise expects 3-D masks, got shape {pred.shape}")
    sp = _spacing(spacing, 3)
    vv = float(np.prod(sp))
    if dilation_iterations < 0:
        raise ValueError(f"dilation_iterations must be >= 0, got {dilation_iterations}")

    box = _bbox(pred | gt, pad=int(dilation_iterations) + 1)
    if box is None:
        return LesionWiseResult(1.0, 0.0, 0, 0, 0, [])
    p = pred[box]
    g = gt[box]

    pred_cc, n_pred = ndimage.label(p, structure=_FULL)
    if dilation_iterations > 0 and g.any():
        g_dil = ndimage.binary_dilation(g, structure=_EDGE, iterations=int(dilation_iterations))
    else:
        g_dil = g
    # Components of the dilated gt. Component k of the dilated mask is exactly the dilation of the
    # gt voxels it contains (dilation distributes over union), so one labelling gives both the
    # merged gt lesions and the region each lesion matches in.
    dil_cc, n_gt = ndimage.label(g_dil, structure=_FULL)
    gt_cc = np.where(g, dil_cc, 0)

    # Pairs (gt lesion, pred component) that overlap in the dilated region.
    both = (dil_cc > 0) & (pred_cc > 0)
    pairs = np.unique(np.stack([dil_cc[both], pred_cc[both]]), axis=1) if both.any() else np.zeros((2, 0), int)
    matched_by: dict[int, list[int]] = {k: [] for k in range(1, n_gt + 1)}
    for k, c in pairs.T:
        matched_by[int(k)].append(int(c))
    matched_any = np.zeros(n_pred + 1, bool)
    matched_any[pairs[1]] = True
    n_fp = int(n_pred - np.count_nonzero(matched_any[1:]))

    gt_sizes = np.bincount(gt_cc.ravel(), minlength=n_gt + 1)
    lesions: list[dict] = []
    n_tp = n_fn = 0
    scores_d: list[float] = []
    scores_h: list[float] = []
    gt_boxes = ndimage.find_objects(dil_cc)
    pred_boxes = ndimage.find_objects(pred_cc)
    for k in range(1, n_gt + 1):
        vol = float(gt_sizes[k]) * vv
        comps = matched_by[k]
        counted = vol > min_lesion_volume
        entry: dict = {"volume_mm3": vol, "n_matched": len(comps), "counted": counted}
        if not counted:  # at or below the volume threshold: left out of the scores
            entry["dice"] = entry["hd95"] = float("nan")
        elif not comps:  # missed lesion
            entry["dice"], entry["hd95"] = 0.0, float(max_distance)
        else:
            # Work inside the box holding the lesion's dilation and its matched components.
            sub = _union_box([gt_boxes[k - 1]] + [pred_boxes[c - 1] for c in comps])
            lesion = gt_cc[sub] == k
            pk = np.isin(pred_cc[sub], comps)
            entry["dice"] = dice(pk, lesion)
            entry["hd95"] = hd95(pk, lesion, sp, empty_value=max_distance)
        lesions.append(entry)
        if counted:
            scores_d.append(entry["dice"])
            scores_h.append(entry["hd95"])
            if comps:
                n_tp += 1
            else:
                n_fn += 1

    n = len(scores_d) + n_fp
    if n == 0:
        return LesionWiseResult(1.0, 0.0, n_tp, n_fn, n_fp, lesions)
    d = float(sum(scores_d)) / n
    h = (float(sum(scores_h)) + n_fp * float(max_distance)) / n
    return LesionWiseResult(d, h, n_tp, n_fn, n_fp, lesions)


def evaluate_brats(pred, gt, spacing=(1.0, 1.0, 1.0), *, regions: Sequence[str] = ("WT", "TC", "ET"),
                   dilation_iterations: int = 3, min_lesion_volume: float = 50.0,
                   max_distance: float = BRATS_MAX_DISTANCE) -> dict[str, float]:
    """BraTS 2023 metrics of a tumor label map for the regions WT, TC and ET.

    Parameters
    ----------
    pred, gt : ndarray of shape (X, Y, Z), int
        Label maps in the internal BraTS 2023 coding (1 NCR, 2 ED, 3 ET); use
        :func:`map_tumor_labels` first for other codings.
    spacing : sequence of 3 float
        Voxel size in mm.
    regions : sequence of str
        Regions to score, a subset of WT, TC, ET (e.g. only ``("WT",)`` when the modalities
        present allow no more).
    dilation_iterations, min_lesion_volume, max_distance
        Lesion-wise parameters, see :func:`lesion_wise` (defaults: BraTS 2023 glioma).

    Returns
    -------
    dict of str to float
        For each region ``R`` in WT, TC, ET: ``dice_R``, ``hd95_R`` (mm; 0 when both empty,
        ``max_distance`` when exactly one is empty), ``sensitivity_R``, ``specificity_R``,
        ``voldiff_ml_R``, ``volume_ml_R`` (predicted), ``lesion_dice_R``, ``lesion_hd95_R``,
        and the lesion counts ``lesion_tp_R``, ``lesion_fn_R``, ``lesion_fp_R``.

    Examples
    --------
    >>> t = np.zeros((16, 16, 16), np.uint8); t[4:12, 4:12, 4:12] = 2; t[6:10, 6:10, 6:10] = 3
    >>> m = evaluate_brats(t, t)
    >>> m["dice_WT"], m["lesion_dice_ET"], m["hd95_TC"]
    (1.0, 1.0, 0.0)
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(
            f"pred and gt must have the same shape, got pred {pred.shape} and gt {gt.shape}; "
            "resample one onto the other's grid first"
        )
    unknown = [r for r in regions if r not in BRATS_REGIONS]
    if unknown:
        raise ValueError(f"unknown BraTS regions {unknown}; use a subset of {list(BRATS_REGIONS)}")
    sp = _spacing(spacing, pred.ndim)
    vv = float(np.prod(sp))
    pr = brats_regions(pred)
    gr = brats_regions(gt)
    out: dict[str, float] = {}
    for name in regions:
        p, g = pr[name], gr[name]
        out[f"dice_{name}"] = dice(p, g)
        out[f"hd95_{name}"] = hd95(p, g, sp, empty_value=max_distance)
        out[f"sensitivity_{name}"] = sensitivity(p, g)
        out[f"specificity_{name}"] = specificity(p, g)
        out[f"voldiff_ml_{name}"] = volume_difference(p, g, vv)
        out[f"volume_ml_{name}"] = int(np.count_nonzero(p)) * vv / 1000.0
        lw = lesion_wise(p, g, sp, dilation_iterations=dilation_iterations,
                         min_lesion_volume=min_lesion_volume, max_distance=max_distance)
        out[f"lesion_dice_{name}"] = lw.dice
        out[f"lesion_hd95_{name}"] = lw.hd95
        out[f"lesion_tp_{name}"] = float(lw.n_tp)
        out[f"lesion_fn_{name}"] = float(lw.n_fn)
        out[f"lesion_fp_{name}"] = float(lw.n_fp)
    return out


# --------------------------------------------------------------------------- label codings


def _present_labels(arr: np.ndarray) -> np.ndarray:
    """Sorted distinct values of ``arr`` (fast path for small non-negative integers)."""
    if arr.dtype.kind in "ub" or (arr.dtype.kind == "i" and arr.size and arr.min() >= 0):
        if arr.size == 0:
            return np.zeros(0, arr.dtype)
        top = int(arr.max())
        if top < 65536:
            counts = np.bincount(arr.ravel().astype(np.intp, copy=False), minlength=top + 1)
            return np.flatnonzero(counts)
    return np.unique(arr)


def _fmt(values) -> str:
    return ", ".join(str(int(v)) if float(v).is_integer() else repr(float(v)) for v in values)


def map_tumor_labels(arr, coding: str = "auto", *, source: str | None = None) -> np.ndarray:
    """Map a tumor label map from a file's coding to the internal BraTS 2023 coding.

    ============  ===========================================  ====================
    coding        file labels                                  internal labels
    ============  ===========================================  ====================
    brats2023     1 NCR, 2 ED, 3 ET                            1, 2, 3 (unchanged)
    brats2021     1 NCR, 2 ED, 4 ET                            1, 2, 3
    msd           1 edema, 2 non-enhancing tumor, 3 enhancing  2, 1, 3
    auto          brats2021 if label 4 is present, else brats2023
    ============  ===========================================  ====================

    ``auto`` cannot tell MSD from BraTS 2023 (both use 0-3): pass ``"msd"`` explicitly for MSD
    Task01 files.

    Parameters
    ----------
    arr : ndarray of shape (X, Y, Z), int or float holding integers
    coding : {"auto", "brats2023", "brats2021", "msd"}
    source : str, optional
        File name used in error messages.

    Returns
    -------
    ndarray of shape (X, Y, Z), uint8

    Raises
    ------
    InputError
        If ``arr`` holds labels not valid in ``coding``; the message lists the unexpected labels.
    ValueError
        If ``coding`` is unknown.

    Examples
    --------
    >>> map_tumor_labels(np.array([0, 1, 2, 4]), "brats2021").tolist()
    [0, 1, 2, 3]
    >>> map_tumor_labels(np.array([0, 1, 2, 3]), "msd").tolist()
    [0, 2, 1, 3]
    """
    arr = np.asarray(arr)
    where = f"{source}: " if source else ""
    present = _present_labels(arr)
    if coding == "auto":
        coding = "brats2021" if np.any(present == 4) else "brats2023"
    if coding not in TUMOR_CODINGS:
        raise ValueError(f"unknown tumor coding {coding!r}; use one of {sorted(TUMOR_CODINGS)} or 'auto'")
    table = TUMOR_CODINGS[coding]
    bad = [v for v in present if not (float(v).is_integer() and int(v) in table)]
    if bad:
        raise InputError(
            f"{where}unexpected tumor labels {_fmt(bad)} for coding {coding!r} "
            f"(expected {_fmt(sorted(table))}); check the ground truth file or set the tumor coding"
        )
    lut = np.zeros(max(table) + 1, np.uint8)
    for k, v in table.items():
        lut[k] = v
    return lut[arr.astype(np.intp)]


def to_coding(arr, coding: str = "brats2023") -> np.ndarray:
    """Map an internal (BraTS 2023 coded) tumor label map to ``coding`` for writing.

    Parameters
    ----------
    arr : ndarray of shape (X, Y, Z), int
        Labels 0-3 in BraTS 2023 coding.
    coding : {"brats2023", "brats2021", "msd"}

    Returns
    -------
    ndarray of shape (X, Y, Z), uint8

    Raises
    ------
    ValueError
        If ``coding`` is unknown or ``arr`` holds labels outside 0-3.

    Examples
    --------
    >>> to_coding(np.array([0, 1, 2, 3]), "brats2021").tolist()
    [0, 1, 2, 4]
    """
    if coding not in TUMOR_CODINGS:
        raise ValueError(f"unknown tumor coding {coding!r}; use one of {sorted(TUMOR_CODINGS)}")
    arr = np.asarray(arr)
    present = _present_labels(arr)
    bad = [v for v in present if not (float(v).is_integer() and 0 <= int(v) <= 3)]
    if bad:
        raise ValueError(f"internal tumor labels must be 0-3, found {_fmt(bad)}")
    lut = np.zeros(4, np.uint8)
    for file_label, internal in TUMOR_CODINGS[coding].items():
        lut[internal] = file_label
    return lut[arr.astype(np.intp)]
