"""Glioma segmentation (NCR / ED / ET): tumor classes inside a healthy + tumor mixture, named by signature.

After Prastawa et al. (2004: tumor and edema are what the healthy mixture cannot explain) and
Menze et al. (2010/2016: a latent spatial tumor prior, EM over healthy and tumor classes): a
FLAIR detector decides whether and where a tumor is; healthy and tumor classes are then fitted
jointly on all modalities present, with an MRF, and the tumor classes are named by their
signature, never by a component's index. The seed only draws the subsample of healthy voxels.

Steps (all sizes in millimetres, so they hold at any voxel size):

1. **Detection (does a tumor exist?).** FLAIR is smoothed (``detect_smooth_mm``, normalised
   inside the brain mask). Seeds are voxels with smoothed FLAIR above ``seed_z`` (robust z) or
   above ``seed_sd`` of the smoothed image's own robust SDs over its median, whichever is lower
   (a healthy brain's FLAIR, grey matter included, stays below both; noise widens the raw spread
   every robust z is divided by, which the smoothed image does not see, and a large lesion widens
   the smoothed spread, which the raw z does not), opened with a ball of
   ``open_mm`` so thin bright rims vanish, and grouped into 26-connected lesions. A lesion counts
   only if it is at least ``min_tumor_ml``, does not lie mostly on the brain surface
   (``max_surface_fraction``) and, with T2, is T2-bright. No lesion: empty labels. This is why a
   healthy brain comes back empty. A near miss (at least ``min_tumor_ml`` off the surface shell
   with smoothed FLAIR above ``NEAR_MISS`` of the seed threshold) is a QC flag, not a detection.
2. **Joint mixture** (:mod:`segment.labeling.tumor_model`). Healthy CSF/GM/WM Gaussians over all
   modalities present are fitted (trimmed EM) on the brain farther than ``healthy_margin_mm`` from
   every lesion (the whole brain when that leaves less than a fifth of it); with T1c a fourth
   healthy class, ``VES``, explains the healthy brain's own enhancing structures (vessels, choroid
   plexus, dura: enhancing outliers of CSF/GM/WM there, ``healthy_enhancing``), so they are not
   left for the enhancing tumor class; optional per-voxel healthy priors (``healthy_prior``, e.g.
   warped atlas maps) weight them, flat otherwise. Tumor classes ED / ET / NCR are started from the
   voxels whose signature fits them (outliers of every healthy class that are FLAIR-bright / enhancing / T1c-dark and not
   CSF-like; NCR also from whatever the enhancing outliers enclose, since a fluid cyst is
   CSF-like and so no outlier) and fitted by EM jointly with the fixed healthy classes within
   ``grow_mm`` of the lesions (the enhancing class within ``et_grow_mm``: a small seed of a large
   tumor needs a wide reach for its edema and core, and the wider it is the more vessels it takes
   in), with a latent spatial tumor prior (start ``alpha0``, re-estimated
   as the smoothed tumor posterior), local proportions of the tumor classes (``local_mm``,
   ``local_weight``), a partial-volume class for the voxels between healthy CSF and edema
   (``csf_edema_mix``; its voxels are not tumor) and one for those between healthy WM and edema at the
   edema's outline (``wm_edema_mix``; its voxels are edema where FLAIR-brighter than healthy grey
   matter and connected to the whole tumor, never ET or core), soft signature gates on each tumor class's prior
   (``ed_gate_sd``, ``et_gate_sd``; outside an enclosure the core is also FLAIR-brighter than
   healthy CSF), a mean-field Potts MRF (``mrf_beta``) and, in the second round, the core
   enclosed by enhancement (ET or NCR only) or by tumor (tumor classes only; a blob that is a
   section of a larger CSF space, such as a ventricle passing through edema, is not enclosed).
3. **Labels.** Argmax of the posteriors; ET islands under ``min_et_mm3`` dropped; what ET encloses
   (closed by ``core_close_mm``; where the rim reaches the brain surface the outside within
   ``core_cap_mm`` closes it) and thick healthy-looking blobs enclosed by the tumor (not sections
   of a larger CSF space) are NCR; WT is the tumor connected to a detected lesion, islands under
   ``min_island_mm3`` removed. An enhancing island is tumor only where it touches the body
   (edema, core) and the body makes up at least ``et_body_fraction`` of the brain voxels around
   it: vessels, the falx and the dura that touch the edema lie in healthy tissue. When there is
   enhancement, an NCR island that touches neither ET nor an enclosed core (within
   ``et_touch_mm``) is no tumor: partial volume of CSF with edema or grey matter at a sulcus or
   the brain surface; nor is an NCR component of which the rest of the tumor makes up less than
   ``et_body_fraction`` of the brain around it (a slit ventricle through the edema).
   ``want_probabilities`` returns the NCR/ED/ET posteriors (float32) and the voxel-wise entropy
   of the full (healthy + tumor) posterior.

Regions by modality: FLAIR is required for WT (T2 alone cannot separate edema from CSF); T1c
adds TC and ET; T1 refines enhancement (``T1c - T1``); every modality present enters the
mixture. With FLAIR only every WT voxel is labelled ED (2) and ``regions == ["WT"]``.

Examples
--------
>>> from segment.phantom import make_phantom
>>> from segment.preprocess.normalize import robust_zscore
>>> from segment.config import TumorConfig
>>> ph = make_phantom(1, shape=(48, 56, 48), spacing=(4.0, 4.0, 4.0), tumor=True)
>>> feats = {m: robust_zscore(v, ph.brain_mask) for m, v in ph.images.items()}
>>> res = segment_tumor(feats, ph.brain_mask, ph.spacing, config=TumorConfig())
>>> res.regions
['WT', 'TC', 'ET']
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange
from scipy import ndimage as ndi

from ..config import TumorConfig
from ..morphology import bounding_box_of, dilate_mm, erode_mm, remove_small, squared_distance_to
from ..types import MODALITIES
from .tumor_model import (
    HEALTHY, MIX, MIX_WM, VESSEL, csf_sections, enclosed_blobs, enclosed_core, fit_healthy, fit_healthy_enhancing,
    fit_tumor_mixture, fluid_labels, hull_core, surrounded,
)

__all__ = ["TumorResult", "tumor_regions_possible", "should_run_tumor", "segment_tumor", "TUMOR_LABELS"]

#: Internal (BraTS 2023) tumor coding.
NCR, ED, ET = 1, 2, 3
TUMOR_LABELS: dict[int, str] = {NCR: "NCR", ED: "ED", ET: "ET"}
_REGIONS = ("WT", "TC", "ET")
_FULL = ndi.generate_binary_structure(3, 3)
#: A FLAIR-bright region above this fraction of the seed threshold's height over the median is a near miss
#: (2.5 of 3 robust z).
NEAR_MISS = 5.0 / 6.0
#: Least share of the brain beyond healthy_margin_mm the healthy classes are fitted on (else the whole brain).
HEALTHY_FIT_SHARE = 0.2


@dataclass
class TumorResult:
    """Output of :func:`segment_tumor`.

    Attributes
    ----------
    labels : ndarray of shape (X, Y, Z), uint8
        Internal BraTS 2023 coding: 0 none, 1 NCR, 2 ED, 3 ET. With FLAIR only (WT alone) every
        tumor voxel is 2.
    regions : list of str
        Which of ``WT``, ``TC``, ``ET`` were estimated (in that order).
    probabilities : dict of str to ndarray of shape (X, Y, Z), float32, or None
        Soft class maps (``NCR``, ``ED``, ``ET``) when computed.
    info : dict
        Decisions, thresholds and volumes (mL) for the log and ``metrics.json``.
    """

    labels: np.ndarray
    regions: list[str]
    probabilities: dict[str, np.ndarray] | None = None
    info: dict[str, object] = field(default_factory=dict)


# --------------------------------------------------------------------------- task selection


def tumor_regions_possible(modalities: Sequence[str]) -> list[str]:
    """BraTS regions estimable from these modalities, in the order WT, TC, ET.

    WT needs FLAIR; TC and ET need T1c as well (T1 and T2 help but are optional).

    Examples
    --------
    >>> tumor_regions_possible(["flair"])
    ['WT']
    >>> tumor_regions_possible(["t1c", "flair"])
    ['WT', 'TC', 'ET']
    >>> tumor_regions_possible(["t1", "t2"])
    []
    """
    mods = set(modalities)
    if "flair" not in mods:
        return []
    if "t1c" in mods:
        return list(_REGIONS)
    return ["WT"]


def should_run_tumor(modalities: Sequence[str], config: TumorConfig) -> bool:
    """Whether the tumor task runs for a case with these modalities.

    ``on``: whenever a region is estimable (FLAIR present); ``off``: never; ``auto``: when the
    case has both FLAIR and T1c, the minimum glioma protocol (a FLAIR without contrast is as
    likely a white-matter-lesion or tissue study, where a FLAIR-bright region is not a tumor).

    Examples
    --------
    >>> should_run_tumor(["t1", "t1c", "t2", "flair"], TumorConfig())
    True
    >>> should_run_tumor(["t1", "flair"], TumorConfig())
    False
    >>> should_run_tumor(["flair"], TumorConfig(enabled="on"))
    True
    """
    possible = tumor_regions_possible(modalities)
    if config.enabled == "off":
        return False
    if config.enabled == "on":
        return bool(possible)
    mods = set(modalities)
    return "flair" in mods and "t1c" in mods


# --------------------------------------------------------------------------- helpers


def _weighted_em_1d(x: np.ndarray, w: np.ndarray, init_quantiles: Sequence[float], *, max_iter: int = 500,
                    tol: float = 1e-7, min_var: float = 1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EM for a 1-D Gaussian mixture on weighted points (a histogram); deterministic.

    One component per entry of ``init_quantiles``, its mean started at that weighted quantile
    of the data, so the result depends neither on a random seed nor on the order of the data.
    Returns (weights, means, variances).
    """
    k = len(init_quantiles)
    cw = np.cumsum(w) / w.sum()
    mu = np.interp(np.asarray(init_quantiles, dtype=float), cw, x)
    var = np.full(k, max(np.average((x - np.average(x, weights=w)) ** 2, weights=w) / k**2, min_var))
    pi = np.full(k, 1.0 / k)
    prev = -np.inf
    for _ in range(max_iter):
        logp = np.log(pi)[None] - 0.5 * np.log(2 * np.pi * var)[None] - 0.5 * (x[:, None] - mu[None]) ** 2 / var[None]
        mx = logp.max(axis=1, keepdims=True)
        norm = mx[:, 0] + np.log(np.exp(logp - mx).sum(axis=1))
        resp = np.exp(logp - norm[:, None]) * w[:, None]
        ll = float((norm * w).sum() / w.sum())
        nk = resp.sum(axis=0) + 1e-12
        pi = nk / nk.sum()
        mu = (resp * x[:, None]).sum(axis=0) / nk
        var = np.maximum((resp * (x[:, None] - mu[None]) ** 2).sum(axis=0) / nk, min_var)
        if ll - prev < tol:
            break
        prev = ll
    return pi, mu, var


def _smooth(img: np.ndarray, mask: np.ndarray, sigma_mm: float, spacing) -> np.ndarray:
    """Gaussian smoothing normalised inside ``mask`` (no darkening at the brain edge)."""
    if sigma_mm <= 0:
        return img.astype(np.float32, copy=True)
    return _smooth_aniso(img, mask, [sigma_mm] * 3, spacing)


def _smooth_aniso(img: np.ndarray, mask: np.ndarray, sigma_mm: Sequence[float], spacing) -> np.ndarray:
    """Like :func:`_smooth` with one sigma (mm) per axis."""
    sig = [sg / sp for sg, sp in zip(sigma_mm, spacing)]
    m = mask.astype(np.float32)
    num = ndi.gaussian_filter(img.astype(np.float32) * m, sig, mode="constant")
    den = ndi.gaussian_filter(m, sig, mode="constant")
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 1e-3)
    out[~mask] = 0.0
    return out


def _robust_sd(x: np.ndarray) -> float:
    if x.size < 2:
        return 1.0
    q1, q3 = np.percentile(x, [25, 75])
    sd = (q3 - q1) / 1.349
    if not sd > 0:
        sd = float(np.std(x)) or 1.0
    return float(sd)


def _enhancement_split(values: np.ndarray, ref_values: np.ndarray, cfg: TumorConfig, min_count: int) -> dict[str, object]:
    """Enhancement boundary for the lesion region, or why there is none.

    The non-enhancing reference (mean, SD) is the heaviest component of a three-component 1-D
    Gaussian mixture (dark core / bulk / bright tail) fitted by EM on the histogram of
    ``ref_values`` (256 bins, counts as weights; deterministic quantile start, a few
    milliseconds). Candidates are the ``values`` at least ``et_min_sd`` reference SDs and
    ``et_min_delta`` above the reference mean; enhancement exists when there are ``min_count``
    of them. The boundary is then half-way between the reference mean and the plateau of the
    enhancing voxels (their median above the boundary, iterated; never below ``et_floor_sd``
    SDs): a blurred edge is cut in its middle, whatever the enhancing fraction of the region.
    """
    out: dict[str, object] = {"enhancing": False}
    v = values[np.isfinite(values)].astype(np.float64)
    r = ref_values[np.isfinite(ref_values)].astype(np.float64)
    if v.size < 20 or r.size < 20:
        out["reason"] = "too few voxels"
        return out
    lo, hi = np.percentile(r, [0.05, 99.95])
    if not hi > lo:
        out["reason"] = "no spread"
        return out
    counts, edges = np.histogram(np.clip(r, lo, hi), bins=256, range=(lo, hi))
    centres = 0.5 * (edges[1:] + edges[:-1])
    keep = counts > 0
    weights, means, var = _weighted_em_1d(centres[keep], counts[keep].astype(np.float64), (0.02, 0.5, 0.98),
                                          min_var=(edges[1] - edges[0]) ** 2)
    sds = np.sqrt(var)
    ref = int(np.argmax(weights))
    mu, sd = float(means[ref]), float(sds[ref])
    order = np.argsort(means)
    out.update(
        means=[round(float(means[k]), 3) for k in order],
        sds=[round(float(sds[k]), 3) for k in order],
        weights=[round(float(weights[k]), 3) for k in order],
        reference_mean=round(mu, 3),
        reference_sd=round(sd, 3),
    )
    t_cand = mu + max(cfg.et_min_sd * sd, cfg.et_min_delta)
    n_cand = int(np.count_nonzero(v > t_cand))
    out["candidates"] = n_cand
    if n_cand < max(min_count, 2):
        out["reason"] = f"{n_cand} voxels enhance by more than {t_cand - mu:.2f} over the non-enhancing reference"
        return out
    floor = mu + cfg.et_floor_sd * sd
    t = max(0.5 * (mu + float(np.median(v[v > t_cand]))), floor)
    for _ in range(10):
        above = v[v > t]
        if above.size < 2:
            out["reason"] = "no voxel above the boundary"
            return out
        t_new = max(0.5 * (mu + float(np.median(above))), floor)
        if abs(t_new - t) < 1e-3:
            break
        t = t_new
    out["plateau"] = round(float(np.median(v[v > t])), 3)
    out["enhancing"] = True
    out["threshold"] = round(float(t), 3)
    return out


# --------------------------------------------------------------------------- main entry


def non_enhancing_core(et: np.ndarray, edema: np.ndarray, flair: np.ndarray, brain: np.ndarray, spacing,
                       min_mm3: float, sd: float) -> np.ndarray:
    """The edema-labelled regions amid the enhancing tumor that are its non-enhancing solid part.

    Candidates are the ``edema`` voxels inside the convex hull of an enhancing component
    (:func:`hull_core`). A connected region of them is core when its median FLAIR lies more than
    ``sd`` of the edema's SDs under the edema's mean: solid tumor holds less free water than the
    vasogenic edema around it, and is core (TC) in the BraTS protocol. A region as bright as the
    rest of the edema is edema that a curved rim's hull happens to take in.

    Measured (2026-12-07, docs/validation_tumor.md): BRATS 2013 pat0006, 16.8 mL (14.8 manual core)
    at -0.75 SD; pat0005, 7.4 mL (5.5 manual edema) at -0.30; the phantoms' hull edema (no
    non-enhancing core in them) at -0.38 to +0.75.
    """
    out = np.zeros(edema.shape, dtype=bool)
    vals = flair[edema & brain]
    if vals.size < 10:
        return out
    mean, spread = float(vals.mean()), float(vals.std())
    cand = hull_core(et, edema, None, brain, spacing, min_mm3)
    if not cand.any():
        return out
    lab, n = ndi.label(cand, structure=_FULL)
    ids = np.arange(1, n + 1)
    darker = ids[np.asarray(ndi.median(flair, lab, ids)) < mean - sd * spread]
    return np.isin(lab, darker)


def segment_tumor(
    features: Mapping[str, np.ndarray],
    mask: np.ndarray,
    spacing: tuple[float, float, float],
    *,
    config: TumorConfig,
    seed: int = 0,
    healthy_prior: np.ndarray | None = None,
    want_probabilities: bool = False,
) -> TumorResult:
    """Detect a glioma and label it NCR / ED / ET.

    Parameters
    ----------
    features : mapping of str to ndarray of shape (X, Y, Z), float
        Robust z-scored images (median 0, IQR/1.349 scale inside the brain, 0 outside) of any
        subset of ``t1``, ``t1c``, ``t2``, ``flair``, on one grid. Other keys are ignored.
    mask : ndarray of shape (X, Y, Z), bool
        Brain mask.
    spacing : tuple of 3 float
        Voxel size in mm.
    config : TumorConfig
        Method parameters (see :class:`segment.config.TumorConfig`).
    seed : int
        Seed of the subsample of healthy voxels the healthy Gaussians are fitted on (at most
        60 000; smaller brains use every voxel).
    healthy_prior : ndarray of shape (X, Y, Z, 3), optional
        CSF/GM/WM prior probabilities on the mask's grid (e.g. a warped atlas); flat when None.
    want_probabilities : bool
        Also return ``probabilities``: NCR/ED/ET posteriors and ``entropy`` (float32 maps).

    Returns
    -------
    TumorResult
        ``labels`` in BraTS 2023 coding (0, 1 NCR, 2 ED, 3 ET); ``regions`` the estimated
        regions; ``info`` thresholds, decisions and volumes in mL.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3-D, got shape {mask.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive numbers, got {spacing}")
    feats: dict[str, np.ndarray] = {}
    for m in MODALITIES:  # canonical order: the dict's order never matters
        if m in features and features[m] is not None:
            a = np.asarray(features[m])
            if a.shape != mask.shape:
                raise ValueError(f"feature '{m}' has shape {a.shape}, the mask {mask.shape}; put them on one grid")
            feats[m] = a
    modalities = list(feats)
    regions = tumor_regions_possible(modalities)
    labels = np.zeros(mask.shape, dtype=np.uint8)
    vv = float(np.prod(spacing))
    info: dict[str, object] = {
        "modalities": modalities,
        "regions": list(regions),
        "tumor_found": False,
        "flags": [],
    }

    def _finish(lab: np.ndarray, probs=None) -> TumorResult:
        vols = {name: float(np.count_nonzero(lab == k) * vv / 1000.0) for k, name in TUMOR_LABELS.items()}
        vols["WT"] = vols["NCR"] + vols["ED"] + vols["ET"]
        vols["TC"] = vols["NCR"] + vols["ET"]
        info["volumes_ml"] = {k: round(v, 3) for k, v in vols.items()}
        if want_probabilities and probs is None:  # no tumor classes fitted: their posteriors are 0
            probs = {k: np.zeros(mask.shape, np.float32) for k in (*TUMOR_LABELS.values(), "entropy")}
        return TumorResult(labels=lab, regions=list(regions), probabilities=probs, info=info)

    if not regions:
        info["decision"] = (
            f"no tumor region estimable from {modalities or 'no modality'}: WT needs FLAIR, TC/ET also T1c"
        )
        return _finish(labels)
    if not mask.any():
        info["decision"] = "empty brain mask"
        return _finish(labels)

    cfg = config
    # work inside the brain's bounding box
    box = bounding_box_of(mask, 2)
    m = mask[box]
    f = {k: v[box].astype(np.float32, copy=False) for k, v in feats.items()}

    # ---- 1. detection ------------------------------------------------------------------
    # detection: stronger smoothing and an opening of at least about one voxel, so that the
    # noise of healthy grey matter never forms a seed whatever the voxel size
    sig_det = [max(cfg.detect_smooth_mm, 0.75 * sp) for sp in spacing]
    fd = _smooth_aniso(f["flair"], m, sig_det, spacing)
    r_open = max(cfg.open_mm, 1.01 * min(spacing))
    # two scales a healthy brain stays under, the lower threshold wins: robust z (the normalised
    # image's spread, which noise widens: a noisy scan's lesion falls under it, BRATS 2013 pat0005
    # with noise of 0.5 z) and the smoothed image's own spread over the brain (median and MAD; the
    # smoothing has removed the noise, but a large lesion widens it: pat0006)
    fv = fd[m]  # not empty: an empty mask returned above
    f_med = float(np.median(fv))
    f_sd = float(1.4826 * np.median(np.abs(fv - f_med)))
    # (a smoothed FLAIR with no spread, a constant or near-constant image, has no second scale)
    seed_thr = min(cfg.seed_z, f_med + cfg.seed_sd * f_sd) if f_sd > 1e-3 else cfg.seed_z
    info["seed_threshold_z"] = round(seed_thr, 3)
    cand = (fd > seed_thr) & m
    cand = remove_small(cand, cfg.min_tumor_ml * 1000.0, vv)  # opening only shrinks: skip the small
    cand = dilate_mm(erode_mm(cand, r_open, spacing), r_open, spacing) & cand
    lab, n = ndi.label(cand, structure=_FULL)
    lesions: list[int] = []
    lesion_info: list[dict[str, object]] = []
    if n:
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        on_surf = np.zeros(n + 1)
        pad = [int(np.ceil(cfg.surface_mm / sp)) + 1 for sp in spacing]
        for i, sl in enumerate(ndi.find_objects(lab), start=1):
            if sl is None or sizes[i] * vv / 1000.0 < cfg.min_tumor_ml:
                continue
            b = tuple(slice(max(q.start - p, 0), min(q.stop + p, nn)) for q, p, nn in zip(sl, pad, m.shape))
            depth = ndi.distance_transform_edt(m[b], sampling=spacing)
            on_surf[i] = np.count_nonzero((lab[b] == i) & (depth <= cfg.surface_mm))
        t2_med = ndi.median(f["t2"], lab, np.arange(n + 1)) if "t2" in f else None
        for i in np.flatnonzero(sizes[1:] * vv / 1000.0 >= cfg.min_tumor_ml) + 1:
            rec: dict[str, object] = {
                "volume_ml": round(float(sizes[i] * vv / 1000.0), 3),
                "centre_vox": [int(round(c + b.start)) for c, b in zip(ndi.center_of_mass(lab == i), box)],
                "surface_fraction": round(float(on_surf[i] / sizes[i]), 3),
            }
            reasons = []
            if rec["surface_fraction"] > cfg.max_surface_fraction:
                reasons.append("on the brain surface")
            if t2_med is not None:
                rec["t2_median_z"] = round(float(t2_med[i]), 3)
                if t2_med[i] < cfg.min_lesion_t2_z:
                    reasons.append("not bright on T2")
            rec["status"] = "candidate" if not reasons else "rejected: " + ", ".join(reasons)
            lesion_info.append(rec)
            if not reasons:
                lesions.append(int(i))
    info["lesions"] = lesion_info
    if not lesions:
        info["decision"] = (
            f"no tumor: no FLAIR-hyperintense region (smoothed robust z > {seed_thr:.2f}: {cfg.seed_z:g}, or "
            f"{cfg.seed_sd:g} of its SDs over its median if lower; opened by "
            f"{cfg.open_mm:g} mm) of at least {cfg.min_tumor_ml:g} mL, off the brain surface"
            + (" and bright on T2" if "t2" in f else "")
        )
        # a near miss is flagged: a mildly FLAIR-bright glioma (or one in a noisy scan) can fall
        # just under the seed threshold, and an empty result must not look like a confident one
        near_thr = f_med + NEAR_MISS * (seed_thr - f_med)
        near = (fd > near_thr) & m
        near = remove_small(near, cfg.min_tumor_ml * 1000.0, vv)
        if near.any():  # off the brain surface shell, as the seeds
            near &= squared_distance_to(~m, spacing) > cfg.surface_mm ** 2
        near = dilate_mm(erode_mm(near, r_open, spacing), r_open, spacing) & near
        near = remove_small(near, cfg.min_tumor_ml * 1000.0, vv)
        if near.any():
            ml = float(np.count_nonzero(near) * vv / 1000.0)
            info["flags"].append(
                f"no tumor found, but {ml:.1f} mL of the brain is FLAIR-bright just under the seed threshold "
                f"(smoothed robust z > {near_thr:.2f}, not > {seed_thr:.2f}): check for a mildly "
                "FLAIR-bright tumor"
            )
            info["near_miss_ml"] = round(ml, 3)
        return _finish(labels)

    # ---- 2. the joint healthy + tumor mixture -----------------------------------------
    seeds = np.isin(lab, lesions)
    dist = np.sqrt(squared_distance_to(seeds, spacing))  # mm from the nearest seed lesion
    reach = (dist <= cfg.grow_mm) & m
    # the healthy classes are fitted on the brain farther than healthy_margin_mm from the lesions
    # (trimmed EM); when that leaves too little of it, on the whole brain (the far shell alone is
    # mostly cortex and biases them more than the tumor does)
    outside = m & (dist > min(cfg.healthy_margin_mm, cfg.grow_mm))
    if np.count_nonzero(outside) < HEALTHY_FIT_SHARE * np.count_nonzero(m):
        info["flags"].append("tumor reach covers most of the brain: healthy model fitted on the whole brain")
        outside = m
    hmods = list(f)
    Xh = np.stack([f[k][outside] for k in hmods], axis=1)
    healthy = fit_healthy(Xh, hmods, seed=seed)
    healthy["modalities"] = hmods
    info["healthy_means"] = {c: [round(float(x), 3) for x in healthy["means"][j]] for j, c in enumerate(HEALTHY)}
    info["healthy_sds"] = {c: [round(float(np.sqrt(x)), 3) for x in np.diag(healthy["covs"][j])]
                           for j, c in enumerate(HEALTHY)}
    if cfg.healthy_enhancing:
        ves = fit_healthy_enhancing(Xh, healthy, hmods, min_count=max(50, int(round(cfg.min_et_mm3 / vv))))
        if ves is not None:
            healthy["enhancing"] = ves
            info["healthy_means"][VESSEL] = [round(float(x), 3) for x in ves["mean"]]
            info["healthy_enhancing_share"] = round(ves["weight"], 5)
    et_reach = dist <= min(cfg.et_grow_mm, cfg.grow_mm)
    init, tcls, gate = _signature_init(f, m, reach, seeds, healthy, hmods, cfg, spacing, et_reach)
    hp = None
    if healthy_prior is not None:
        hp = np.asarray(healthy_prior, dtype=np.float32)[box]
    if "ET" in gate and cfg.et_grow_mm < cfg.grow_mm:
        # enhancement is tumor only near the lesions: the wider reach of edema and core takes in
        # vessels, the choroid plexus and the dura, which would capture the one enhancing class
        gate["ET"] = gate["ET"] * et_reach
    mix = fit_tumor_mixture(
        f, m, reach, spacing, healthy=healthy, healthy_prior=hp, tumor_classes=tcls, init=init, gate=gate,
        alpha0=cfg.alpha0, beta=cfg.mrf_beta, iterations=cfg.em_iterations, close_mm=cfg.core_close_mm,
        cap_mm=cfg.core_cap_mm, min_et_mm3=cfg.min_et_mm3, local_mm=cfg.local_mm,
        local_weight=cfg.local_weight, csf_edema_mix=cfg.csf_edema_mix, wm_edema_mix=cfg.wm_edema_mix,
        et_body_fraction=cfg.et_body_fraction,
    )
    info["flags"].extend(mix.info.get("flags", []))
    info["mixture"] = {k: v for k, v in mix.info.items() if k != "flags"}
    info["tumor_means"] = mix.means

    # ---- 3. hard labels ------------------------------------------------------------------
    mb = mix.box
    Q = mix.posteriors
    cls = mix.classes
    arg = np.argmax(Q, axis=0)
    inb = m[mb]
    lab_b = {c: (arg == cls.index(c)) & inb for c in TUMOR_LABELS.values() if c in cls}
    et = lab_b.get("ET", np.zeros(inb.shape, bool))
    et = remove_small(et, cfg.min_et_mm3, vv)
    tum = np.zeros(inb.shape, bool)
    for c in lab_b.values():
        tum |= c
    # the FLAIR-brighter-than-grey-matter threshold of the tumor's outline (see the edge layer below)
    jf = hmods.index("flair") if "flair" in hmods else -1
    top = float(healthy["means"][1][jf] + np.sqrt(healthy["covs"][1][jf, jf])) if jf >= 0 else np.inf
    core = enclosed_core(et, inb, spacing, cfg.core_close_mm, cfg.core_cap_mm) if et.any() else np.zeros_like(et)
    fluid = fluid_labels(arg, cls) & inb
    if core.any():
        # healthy CSF in the core that is a section of a ventricle or cistern going on outside
        # it (against the rim, cut off by the closing) is no necrosis; a cyst is a space of its own
        core &= ~csf_sections(core & fluid, fluid, inb, spacing, 1.01 * min(spacing))
    tum |= core
    # a FLAIR-dark / T1c-dark core enclosed by the tumor is necrosis, not CSF
    encl = enclosed_blobs(remove_small(tum, cfg.min_et_mm3, vv), inb, spacing, cfg.core_close_mm, cfg.core_cap_mm, 3.0,
                          csf=fluid)
    core |= encl & (arg < mix.n_healthy)
    tum |= core
    if cfg.core_hull and et.any():
        # ... and what lies inside the enhancing rim's convex hull: a rim broken by thick slices or
        # noise, or thin where it runs along the brain surface, no longer closes, but its cyst
        # still lies within its hull (BRATS 2013 pat0005 at 5 mm: 18 of 27 mL of necrosis missed)
        hc = hull_core(et, fluid & ~tum, fluid, inb, spacing, cfg.min_et_mm3, fill=~tum)
        if cfg.core_hull_edema and "ED" in lab_b and jf >= 0:
            hc |= non_enhancing_core(et, lab_b["ED"] & ~core, f["flair"][mb], inb, spacing, cfg.min_et_mm3,
                                     cfg.core_hull_edema_sd)
        core |= hc
        tum |= hc
    # whole tumor: the tumor voxels connected to a detected lesion
    sb = seeds[mb]
    # the body (edema, core) connected to a lesion without bridging through enhancement; enhancing
    # islands count only where they touch that body (enhancing vessels, dura and choroid plexus
    # that merely chain to the tumor do not)
    body = tum & ~et
    bl, _ = ndi.label(body | sb, structure=_FULL)
    ids = np.unique(bl[sb])
    body = np.isin(bl, ids[ids > 0]) & inb
    el, ne = ndi.label(et, structure=_FULL)
    if ne:
        touch = np.unique(el[dilate_mm(body, cfg.et_touch_mm, spacing) & et])
        # and the tumor surrounds it (tumor_model.surrounded): an enhancing rim or mass lies in
        # its edema and against its core; vessels, the falx and the dura lie in healthy tissue
        et = np.isin(el, touch[touch > 0]) & surrounded(et, body, inb, cfg.et_body_fraction)
    wl, _ = ndi.label(body | et, structure=_FULL)
    ids = np.unique(wl[sb])
    wt = np.isin(wl, ids[ids > 0]) & inb
    wt = remove_small(wt, cfg.min_island_mm3, vv)
    et &= wt
    if "t1c" in f:
        ncr = (lab_b.get("NCR", np.zeros_like(wt)) | core) & wt & ~et
        nl, nn = ndi.label(ncr, structure=_FULL)
        if nn and et.any():
            # the core lies against or inside the enhancing tumor: a necrotic-looking island away
            # from it is no tumor (partial volume of CSF with edema or grey matter at a sulcus or
            # the brain surface, fitted by the core class)
            anchor = dilate_mm(et | core, cfg.et_touch_mm, spacing)
            keep = np.unique(nl[anchor & ncr])
            stray = ncr & ~np.isin(nl, keep[keep > 0])
            # and the tumor surrounds it, as it does an enhancing island (tumor_model.surrounded): a core
            # component whose surroundings are mostly healthy is a CSF space the core class took, such as a
            # ventricle compressed to a slit that runs through the edema against the enhancing rim and on,
            # far outside the tumor (a 2 mm cystic phantom: 7.6 mL of healthy CSF and WM labelled NCR)
            stray |= ncr & ~surrounded(ncr, wt & ~ncr, inb, cfg.et_body_fraction)
            ncr &= ~stray
            wt &= ~stray
    else:
        ncr = np.zeros_like(wt)
    if MIX_WM in cls and jf >= 0 and wt.any():
        # a WM/edema mix voxel is half edema: at the tumor's outline a rater includes it where it is
        # FLAIR-brighter than healthy grey matter, as the edge layer below does. It joins the whole tumor
        # as edema (the mix class kept it out of ET and NCR), not the body that encloses a core
        mixed = (arg == cls.index(MIX_WM)) & inb & (f["flair"][mb] > top) & ~wt
        ml, _ = ndi.label(mixed | wt, structure=_FULL)
        ids = np.unique(ml[wt])
        mixed &= np.isin(ml, ids[ids > 0])
        wt |= mixed
        info["wm_edema_mix_ml"] = round(float(np.count_nonzero(mixed) * vv / 1000.0), 3)
    if cfg.edge_mm > 0 and wt.any():
        # the voxels at the tumor's outline that are brighter on FLAIR than healthy grey matter (its mean
        # plus one SD; the brighter healthy parenchyma) are mixed with the edema, whose signal fades over a
        # millimetre or two: the argmax gives them to grey or white matter, a rater's outline of the
        # hyperintensity includes them. The fade is a width in mm: a voxel coarser than it holds the fade
        # and is labelled by its mean (no layer along that axis)
        layer = dilate_mm(wt, cfg.edge_mm, spacing) & inb & ~wt & (f["flair"][mb] > top)
        wt |= layer
        info["edge_layer_ml"] = round(float(np.count_nonzero(layer) * vv / 1000.0), 3)
    if cfg.edge_mm > 0 and cfg.core_edge and "t1c" in f and (et.any() or ncr.any()):
        et, ncr, core_layers = _core_edge_layers(f, wt, ncr, et, inb, mb, spacing, cfg.edge_mm)
        info["core_edge_ml"] = {k: round(float(v * vv / 1000.0), 3) for k, v in core_layers.items()}
    sub_lab = np.zeros(inb.shape, np.uint8)
    sub_lab[wt] = ED
    sub_lab[ncr] = NCR
    sub_lab[et] = ET
    full = np.zeros(m.shape, np.uint8)
    full[mb] = sub_lab
    labels[box] = full
    kept = [i for i in lesions if np.any(wt & (lab[mb] == i))]
    for rec, i in zip([r for r in lesion_info if r["status"] == "candidate"], lesions):
        rec["status"] = "tumor" if i in kept else "rejected: no tumor class found around it"
    info["enhancing"] = bool(et.any())
    info["tumor_found"] = bool(wt.any())
    info["n_lesions"] = len(kept)
    info["decision"] = (
        f"tumor: {len(kept)} FLAIR-hyperintense lesion(s) of at least {cfg.min_tumor_ml:g} mL, "
        f"classes {', '.join(c for c in cls if c in TUMOR_LABELS.values())} fitted with the healthy mixture"
    )
    if want_probabilities:
        probs = {}
        for c in TUMOR_LABELS.values():
            pm = np.zeros(mask.shape, np.float32)
            if c in cls:
                sub = np.zeros(m.shape, np.float32)
                sub[mb] = Q[cls.index(c)]
                for mx in (MIX, MIX_WM):
                    if c == "ED" and mx in cls:  # a CSF/edema or WM/edema mix voxel is half edema
                        sub[mb] += 0.5 * Q[cls.index(mx)]
                pm[box] = sub
            probs[c] = pm
        ent = np.zeros(mask.shape, np.float32)
        qq = np.clip(Q, 1e-12, 1.0)
        e = -(Q * np.log(qq)).sum(0)
        sub = np.zeros(m.shape, np.float32)
        sub[mb] = np.where(inb, e, 0.0)
        ent[box] = sub
        probs["entropy"] = ent
        return _finish(labels, probs)
    return _finish(labels)


def _core_edge_layers(f, wt, ncr, et, inb, mb, spacing, edge_mm):
    """The outlines of the nested regions inside the whole tumor: the enhancing tumor and the core.

    As at the whole tumor's outline (``edge_mm``), a voxel at the interface of two regions mixes
    them, and a rater outlines each region (ET inside TC inside WT) on its outer edge; the argmax
    gives the mixed voxel to the outer class. Here the outer class is the edema, and a voxel
    within ``edge_mm`` of a region joins it when it carries that region's signal beyond the
    edema's spread (its mean + / - one SD over the voxels labelled edema):

    * enhancing tumor: edema or core voxels next to ET whose T1c is above the edema's;
    * the core (NCR): edema voxels next to the necrotic / non-enhancing core whose T1c or FLAIR
      is below the edema's (the core is T1c-dark; a cyst or necrosis FLAIR-darker too).

    An axis coarser than ``edge_mm`` has no layer (:func:`dilate_mm`). Returns the new ``et``,
    ``ncr`` and the voxel counts of the two layers.
    """
    ed = wt & ~ncr & ~et
    counts = {"ET": 0, "NCR": 0}
    if np.count_nonzero(ed) < 10:
        return et, ncr, counts
    c = f["t1c"][mb]
    mc, sc = float(c[ed].mean()), float(c[ed].std())
    layer = dilate_mm(et, edge_mm, spacing) & inb & wt & ~et & (c > mc + sc)
    et = et | layer
    ncr = ncr & ~layer
    counts["ET"] = int(np.count_nonzero(layer))
    ed = wt & ~ncr & ~et
    if ncr.any() and np.count_nonzero(ed) >= 10:
        dark = c < mc - sc
        if "flair" in f:
            fl = f["flair"][mb]
            dark |= fl < float(fl[ed].mean()) - float(fl[ed].std())
        nl = dilate_mm(ncr, edge_mm, spacing) & inb & ed & dark
        ncr = ncr | nl
        counts["NCR"] = int(np.count_nonzero(nl))
    return et, ncr, counts


@njit(parallel=True, cache=True)
def _min_mahalanobis(X, means, precs, out):
    """out[i] = min over k of (X[:, i] - means[k])^T precs[k] (X[:, i] - means[k])."""
    d, n = X.shape
    K = means.shape[0]
    for i in prange(n):
        best = np.inf
        for k in range(K):
            t = 0.0
            for a in range(d):
                da = X[a, i] - means[k, a]
                for b in range(d):
                    t += da * precs[k, a, b] * (X[b, i] - means[k, b])
            best = min(best, t)
        out[i] = best


def _signature_init(f, m, reach, seeds, healthy, mods, cfg, spacing, et_reach):
    """Voxels whose signature starts each tumor class, and the classes the modalities support."""
    H = healthy["means"]
    sd = np.sqrt(np.stack([np.diag(c) for c in healthy["covs"]]))
    CSF_, GM_ = 0, 1
    j = {k: i for i, k in enumerate(mods)}
    X = np.stack([f[k].ravel() for k in mods], axis=0)
    # outlier of every healthy class (Mahalanobis)
    P = np.stack([np.linalg.inv(c) for c in healthy["covs"]])
    d2 = np.empty(X.shape[1], np.float32)
    _min_mahalanobis(X, np.asarray(H, np.float64), P, d2)
    out = (d2.reshape(m.shape) > 13.8) & reach & m
    init: dict[str, np.ndarray] = {}
    tcls = []
    bright = np.zeros(m.shape, bool)
    if "flair" in j:
        fl = f["flair"]
        bright = fl > H[GM_, j["flair"]] + 2.5 * sd[GM_, j["flair"]]
        tcls.append("ED")
    enh = np.zeros(m.shape, bool)
    if "t1c" in j:
        if "t1" in j:
            e = f["t1c"] - f["t1"]
            he = H[:, j["t1c"]] - H[:, j["t1"]]
            hs = np.sqrt(sd[:, j["t1c"]] ** 2 + sd[:, j["t1"]] ** 2)
            enh = e > (he + 3.0 * hs)[GM_:].max()
        else:
            enh = f["t1c"] > (H[:, j["t1c"]] + 3.0 * sd[:, j["t1c"]])[GM_:].max()
        dark = f["t1c"] < H[GM_, j["t1c"]] - 2.0 * sd[GM_, j["t1c"]]
        if "flair" in j:
            notcsf = f["flair"] > H[CSF_, j["flair"]] + 3.0 * sd[CSF_, j["flair"]]
        else:
            notcsf = f["t1c"] > H[CSF_, j["t1c"]] + 3.0 * sd[CSF_, j["t1c"]]
        init["ET"] = enh & out & et_reach
        # the core: T1c-dark outliers that are not CSF, or whatever the enhancing voxels enclose
        # and is darker on T1c than grey matter (a fluid cyst is CSF-like, so it is no outlier of the healthy classes)
        vv = float(np.prod(spacing))
        enclosed = enclosed_core(remove_small(init["ET"], cfg.min_et_mm3, vv), m, spacing,
                                 cfg.core_close_mm, cfg.core_cap_mm) & reach
        init["NCR"] = ((dark & notcsf & out) | enclosed) & ~enh
        tcls += ["ET", "NCR"]
    if "flair" in j:
        init["ED"] = ((bright & out) | seeds) & ~enh & ~init.get("NCR", np.zeros(m.shape, bool))
    # signature gates (soft, logistic over half an SD): edema is FLAIR-brighter than healthy GM,
    # enhancing tumor brighter on T1c (T1c - T1) than healthy GM and WM, the core darker on T1c than GM
    gate: dict[str, np.ndarray] = {}

    def _sig(x, t, s):
        return (1.0 / (1.0 + np.exp(-(x - t) / max(s, 1e-3)))).astype(np.float32)

    if "flair" in j:
        jf = j["flair"]
        gate["ED"] = _sig(f["flair"], H[GM_, jf] + cfg.ed_gate_sd * sd[GM_, jf], 0.5 * sd[GM_, jf])
    if "t1c" in j:
        jc = j["t1c"]
        if "t1" in j:
            gate["ET"] = _sig(e, float((he + cfg.et_gate_sd * hs)[GM_:].max()), 0.5 * float(hs[GM_:].min()))
        else:
            gate["ET"] = _sig(f["t1c"], float((H[:, jc] + cfg.et_gate_sd * sd[:, jc])[GM_:].max()), 0.5 * float(sd[GM_:, jc].min()))
        gate["NCR"] = _sig(-f["t1c"], -(H[GM_, jc] - 0.5 * sd[GM_, jc]), 0.5 * sd[GM_, jc])
        if "flair" in j:  # not enclosed, a core is not CSF-like: FLAIR above healthy CSF (as its start)
            jf = j["flair"]
            csf_top = _sig(f["flair"], H[CSF_, jf] + 3.0 * sd[CSF_, jf], 0.5 * sd[CSF_, jf])
            gate["NCR"] *= csf_top
            # enhancing tumor is FLAIR-bright too (it sits in the lesion's FLAIR signal); the healthy enhancing
            # structures (choroid plexus, dural sinuses, vessels) lie in CSF and are FLAIR-dark: without this the ET
            # class can settle on them when the reach around the seeds is wide, and the surround rule drops it
            gate["ET"] = gate["ET"] * csf_top
    return init, [c for c in TUMOR_LABELS.values() if c in tcls], gate
