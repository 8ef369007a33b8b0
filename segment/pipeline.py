"""One case from files to label maps, metrics and a figure.

:func:`segment_case` owns the order of the steps::

    load (RAS, one grid) -> brain mask -> [N4] -> robust z-score -> GMM on brain voxels
    -> name components -> clean labels -> write outputs in the reference image's space
    -> metrics against ground truth -> overlay figure
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import Config
from .errors import InputError
from .io.cases import LoadedCase, find_case, load_case
from .io.nifti import from_ras, save_volume
from .types import TISSUE_LABELS, TISSUE_TUMOR_LABEL, Case, CaseResult

log = logging.getLogger("segment")

#: Voxels drawn (seeded) to fit the partial-volume model on several features.
PV_MAX_SAMPLES = 12_000
#: Bins of the histogram both mixtures of one continuous feature are fitted on, and grid
#: points (+1) their posteriors are evaluated at and interpolated from: the bin width is
#: ~1/2000 of the clipped range (~0.005 SD of the brain's intensities), far below the noise.
HIST_BINS = 2048
#: Adjacent bins of that histogram merged for the partial-volume fit (HIST_BINS / 4 bins).
PV_BIN_MERGE = 4
#: Largest accepted move of a pure class mean from its plain-mixture estimate, in that class's SD.
PV_MAX_DRIFT = 2.0
#: Most a pure class of the partial-volume model may hold, relative to its plain-mixture class.
PV_MAX_GAIN = 1.25
#: Largest accepted move of the GM/WM boundary (the pure means' midpoint) from the class mixture's,
#: as a fraction of the GM-WM distance: at a quarter, a voxel three quarters one tissue changes class.
PV_MAX_SHIFT = 0.25
#: ``mixture.pv_noise: auto``: below this GM/WM contrast, in noise SDs (neighbouring voxels'
#: differences inside the atlas's white matter), a class's width is mostly noise and the
#: partial-volume model keeps one covariance per class; at or above it, the widths are mostly
#: mixing and are shrunk towards one shared noise. Measured 2026-12-07 (docs/validation.md):
#: MNI152 with 4 % noise 4.7-5.0 SDs and 7 % 2.9, where the shrunk noise lets pure CSF empty;
#: the IBSR subjects 11-22, clean MNI152 43, the four-modality BraTS cases 7.4-8.2.
PV_NOISY_CNR = 7.0


@dataclass
class Segmentation:
    """In-memory result of :func:`run_pipeline`, on the RAS reference grid."""

    loaded: LoadedCase
    brain_mask: np.ndarray
    tissue: np.ndarray
    features: dict[str, np.ndarray]
    probabilities: np.ndarray | None = None  # (X, Y, Z, 3) final class probabilities (after the MRF)
    fractions: np.ndarray | None = None  # (X, Y, Z, 3) partial-volume fractions (before the MRF)
    tumor: np.ndarray | None = None  # internal BraTS 2023 coding, or None when the task did not run
    tumor_regions: list[str] = field(default_factory=list)
    info: dict[str, object] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    bias_corrected: dict[str, np.ndarray] | None = None  # N4-corrected images, with outputs.bias_corrected
    tumor_probabilities: dict[str, np.ndarray] | None = None  # NCR/ED/ET posteriors + entropy (float32)


# --------------------------------------------------------------------------- steps


def brain_mask_step(loaded: LoadedCase, config: Config) -> tuple[np.ndarray, dict[str, object]]:
    """Brain mask on the RAS grid: the non-zero region for brain-only images, else the registered
    head template refined by the image (``preprocess.skullstrip_options``).

    The info dict holds ``mask_method`` (``nonzero`` or ``skullstrip``), ``mask_prior``
    (``template`` or ``none``), ``flags`` (QC strings: ``brain_volume_implausible``, ``zero_background_head``,
    ``mask_template_disagree``, ``registration_poor`` ...), ``brain_volume_ml`` and, when the
    template was registered (also for brain-only inputs), ``registration`` (a
    :class:`segment.io.register.TemplateRegistration`: template mm -> subject mm, ``warp``).
    """
    from .io.register import register_template
    from .preprocess.skullstrip import brain_mask_nonzero, skullstrip, template_brain_mask, zero_background_kind

    mode = config.preprocess.skullstrip
    opts = config.preprocess.skullstrip_options
    vols = [loaded.images[m] for m in loaded.modalities]
    ref = loaded.images[loaded.modalities[0]]
    background = None
    if mode == "never":
        brain_only = True
    elif mode == "always":
        brain_only = False
    else:
        background = zero_background_kind(ref.data, spacing=ref.spacing, max_ml=opts.max_volume_ml)
        brain_only = background == "brain"
    info: dict[str, object] = {}
    flags: list[str] = []
    if background == "head":
        # zeros around one compact region, but a region larger than any brain: a head whose air
        # was set to zero (or a constant background load_case set to zero), skull-stripped
        ml = float(np.count_nonzero(ref.data)) * float(np.prod(ref.spacing)) / 1000.0
        flags.append("zero_background_head")
        info["zero_background_head"] = (
            f"{ref.path}: zero background around {ml:.0f} mL, more than a brain "
            f"(preprocess.skullstrip_options.max_volume_ml {opts.max_volume_ml:g}): skull-stripped as a head"
        )
        log.warning("%s", info["zero_background_head"])
    if brain_only:
        # the reference image alone defines the brain: a series resampled from another grid
        # has an interpolated rim (and its own field of view) that would enlarge the mask
        nonzero = ref.data != 0
        for m in loaded.modalities:
            if m not in loaded.resampled:
                nonzero |= loaded.images[m].data != 0
        mask = brain_mask_nonzero(nonzero.astype(np.float32), ref.spacing)
        method, prior = "nonzero", "none"
        if opts.template and opts.register_brain_only:
            # the mask is the non-zero region; the transform is kept for tissue priors
            try:
                reg = register_template(vols, list(loaded.modalities), brain_only=True, seed=config.seed,
                                        poor_metric=opts.poor_metric)
                info["registration"] = reg
                flags += reg.flags
            except InputError as exc:
                flags.append("registration_failed")
                log.warning("%s: template registration failed: %s", ref.path, exc)
    elif opts.template:
        mask, tinfo = template_brain_mask(
            vols, list(loaded.modalities), seed=config.seed, band_mm=opts.band_mm,
            band_inner_mm=opts.band_inner_mm,
            min_ml=opts.min_volume_ml, max_ml=opts.max_volume_ml,
            min_template_dice=opts.min_template_dice, poor_metric=opts.poor_metric,
        )
        info["registration"] = tinfo["registration"]
        info["template_dice"] = tinfo["template_dice"]
        flags += list(tinfo["flags"])
        method = "skullstrip"
        prior = "none" if "skullstrip_without_template" in flags else "template"
    else:
        mask = skullstrip([v.data for v in vols], ref.spacing, modalities=loaded.modalities)
        method, prior = "skullstrip", "none"
    if config.postprocess.fill_holes and method != "nonzero":  # brain_mask_nonzero fills its holes
        from .postprocess import fill_holes

        mask = fill_holes(mask)
    if not mask.any():
        raise InputError(f"{ref.path}: empty brain mask; check the image or set preprocess.skullstrip")
    ml = float(mask.sum()) * ref.voxel_volume / 1000.0
    if not opts.min_volume_ml <= ml <= opts.max_volume_ml and "brain_volume_implausible" not in flags:
        flags.append("brain_volume_implausible")
    for f in flags:
        log.warning("%s: brain mask QC: %s (%.0f mL)", ref.path or loaded.case.case_id, f, ml)
    info.update(mask_method=method, mask_prior=prior, flags=flags, brain_volume_ml=round(ml, 1))
    return mask.astype(bool), info


def normalize_step(loaded: LoadedCase, mask: np.ndarray, config: Config,
                   corrected: dict[str, np.ndarray] | None = None,
                   report: dict[str, dict[str, float]] | None = None,
                   registration=None) -> dict[str, np.ndarray]:
    """Saturated intensities restored, optional N4, then robust z-score inside the brain, for
    every modality; ``corrected`` (a dict), when given, receives each N4-corrected image, and
    ``report`` the saturation found in each modality (:mod:`segment.preprocess.saturation`; the
    template ``registration``, when given, puts the atlas classes' cores on the grid for it)."""
    from .preprocess.normalize import robust_zscore

    pp = config.preprocess
    out: dict[str, np.ndarray] = {}
    cores = None  # the atlas classes' cores, warped when a saturated modality needs them
    for m in loaded.modalities:
        data = loaded.images[m].data
        # voxels outside a resampled series' field of view hold no measurement of it: its
        # statistics come from the voxels it covers; the others are set to 0 here, kept out of
        # the fit and labelled from the series that do cover them (see label_outside_fov)
        m_mask = mask
        fov = getattr(loaded, "fov", {}).get(m)
        if fov is not None and np.count_nonzero(mask & fov) >= 0.05 * np.count_nonzero(mask):
            m_mask = mask & fov
        if pp.saturation == "restore":
            from .preprocess.saturation import detect_saturation, restore_saturated

            found = detect_saturation(data, m_mask)
            if found is not None:
                if cores is None:
                    cores = atlas_cores(registration, loaded.grid)
                data, fit = restore_saturated(data, m_mask, loaded.spacing, found, cores)
                if report is not None:
                    report[m] = {k: (v if isinstance(v, (str, bool)) else round(float(v), 4)) for k, v in fit.items()}
        if pp.bias_correction:
            from .preprocess.bias import n4_correct

            data = n4_correct(
                data, m_mask, loaded.spacing, shrink=pp.n4.shrink,
                iterations=pp.n4.iterations, convergence=pp.n4.convergence, method=pp.n4.method,
            )
            if corrected is not None:
                corrected[m] = data
        out[m] = robust_zscore(
            data, m_mask, lower_percentile=pp.lower_percentile, upper_percentile=pp.upper_percentile
        )
    return out


#: Share of the brain at an intensity ceiling from which the restoration of saturated values is a QC flag.
SATURATION_FLAG_SHARE = 0.01


def clipped_flair_flag(feats: dict[str, np.ndarray], mask: np.ndarray, fit: dict | None,
                       seed_z: float | None) -> str | None:
    """A QC flag when FLAIR was clipped under the tumor step's seed threshold.

    The ceiling's normalised value is the FLAIR at the quantile of the brain the clipped share
    leaves under it (N4 spreads the ceiling a little). Under the seed threshold, a lesion brighter
    than the ceiling looks like the brightest healthy tissue: a tumor found or missed there is not
    to be trusted (BRATS 2013 pat0005 with FLAIR clipped at its brain's 98th percentile: no
    tumor found, WT 0.87 -> 0)."""
    if fit is None or seed_z is None or "flair" not in feats:
        return None
    z = float(np.quantile(feats["flair"][mask], 1.0 - float(fit["share"])))
    if z >= float(seed_z):
        return None
    return (f"flair clipped at normalised {z:.2f}, under the tumor seed threshold {float(seed_z):.2f}: "
            "lesions brighter than the ceiling cannot be told from the brightest healthy tissue; "
            "the tumor result is unreliable")


def atlas_cores(registration, grid) -> list[np.ndarray]:
    """Where the warped ICBM CSF, GM and WM priors reach ``ATLAS_CORE_P`` (none without a usable
    registration)."""
    if registration is None or "registration_poor" in (registration.flags or []):
        return []
    from .atlas import load_tissue_priors

    return [registration.warp(p.data, 1, grid) >= ATLAS_CORE_P for p in load_tissue_priors()]


#: Prior probability from which a voxel is in a class's core (:func:`atlas_cores`).
ATLAS_CORE_P = 0.8


def fit_core(mask: np.ndarray, spacing: tuple[float, float, float], margin_mm: float) -> np.ndarray:
    """The mask eroded by ``margin_mm`` (Euclidean, in mm) and by at least one voxel along
    every axis (so a thick-slice scan loses its first and last slice too)."""
    from scipy import ndimage as ndi

    if margin_mm <= 0:
        return mask
    from .postprocess import bounding_box

    core = ndi.binary_erosion(mask)
    box = bounding_box(mask)
    core[box] &= ndi.distance_transform_edt(mask[box], sampling=spacing) > margin_mm
    return core


def fit_tissue_mixture(
    features: np.ndarray,
    modalities: list[str],
    config: Config,
    fit_rows: np.ndarray | None = None,
    priors: np.ndarray | None = None,
    spacing: tuple[float, float, float] | None = None,
    sample_key: np.ndarray | None = None,
    noise_sd: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    """Fit the tissue GMM on brain voxels and return (labels 1..3, class probabilities, info).

    Parameters
    ----------
    features : ndarray of shape (n_voxels, n_features)
    modalities : the features' modality names

    fit_rows : ndarray of shape (n_voxels,), bool, optional
        Rows the mixture is fitted on (default all); every row is labelled.
    priors : ndarray of shape (n_voxels, 3), optional
        Warped atlas CSF/GM/WM probabilities of the rows (:mod:`segment.labeling.priors`). With
        ``mixture.prior_weight > 0`` they weight the E-step of a class mixture (CSF, GM, WM and an
        atypical class with a flat prior for lesions and residual non-brain), started either
        from the plain mixture's components named by contrast or by the priors, or from the
        classes estimated robustly where the atlas puts them (the start that explains the
        voxels best and obeys the scan's contrast order wins), and weight the final class
        probabilities.
    spacing : voxel size in mm, optional
        With a side over ``mixture.pv_max_voxel_mm`` the partial-volume model is not used (a voxel
        thicker than the cortex mixes three tissues, not two); ``None``: it is used.
    noise_sd : ndarray of shape (n_features,), optional
        Each feature's noise SD (:func:`neighbour_noise_sd`); with ``mixture.pv_noise: auto`` it
        chooses the partial-volume model's noise (``PV_NOISY_CNR``); ``None``: shrunk.
    sample_key : ndarray of shape (n_voxels,), optional
        A random key per row, fixed to the voxel (``run_pipeline`` draws it on the image grid from
        the seed): every seeded subset takes the rows of smallest key, so a few voxels more or less
        in the fit change a few samples, not the whole subset. Default: drawn per row from the seed.

    One feature with few distinct values (e.g. 8-bit images) is fitted exactly on its histogram
    of unique values with ``sample_weight``; otherwise on all voxels, or on a seeded random subset
    of ``mixture.max_samples``.
    """
    from .labeling.tissue import class_probabilities, name_tissue_components
    from .mixture.gmm import GaussianMixture

    mc = config.mixture
    dtype = np.float64 if mc.dtype == "float64" else np.float32
    gmm = GaussianMixture(
        mc.n_components,
        covariance_type=mc.covariance_type,
        tol=mc.tol,
        max_iter=mc.max_iter,
        n_init=mc.n_init,
        reg_covar=mc.reg_covar,
        random_state=config.seed,
        dtype=dtype,
    )
    n = features.shape[0]
    if fit_rows is None:
        fit_rows = np.ones(n, dtype=bool)
    n_fit = int(np.count_nonzero(fit_rows))
    info: dict[str, object] = {"n_voxels": int(n), "n_fit_voxels": n_fit}
    fit_x, weights = features[fit_rows], None
    if sample_key is None:
        sample_key = np.random.default_rng(config.seed).random(n)
    fit_key = np.asarray(sample_key)[fit_rows]
    # One feature: fit on a histogram, predict on its values or grid and map back to voxels.
    uniq, inverse, grid, pv_hist = None, None, None, None
    if features.shape[1] == 1:
        values = features[:, 0]
        if _few_distinct(values, config.seed):
            uniq, inverse = np.unique(values, return_inverse=True)
            if uniq.size <= max(n // 4, 1):
                counts = np.bincount(inverse[fit_rows], minlength=uniq.size).astype(np.float64)
                used = counts > 0
                fit_x, weights = uniq[used][:, None].astype(np.float64), counts[used]
                info["fit"] = f"histogram of {int(used.sum())} unique values"
            else:
                uniq = inverse = None
        if uniq is None and n > 4 * HIST_BINS:
            # the grid spans the data but not far outliers (one voxel at -1e4 would make every
            # bin too wide): values beyond the 0.01-99.99 percentiles +/- half their range fall
            # into the end bins, and are predicted as the grid's ends
            q_lo, q_hi = np.percentile(values, [0.01, 99.99])
            lo = max(float(values.min()), float(q_lo - 0.5 * (q_hi - q_lo)))
            hi = min(float(values.max()), float(q_hi + 0.5 * (q_hi - q_lo)))
            if hi > lo:
                grid = np.linspace(lo, hi, HIST_BINS + 1)
                counts, _ = np.histogram(np.clip(values[fit_rows], lo, hi), bins=grid)
                used = counts > 0
                centres = 0.5 * (grid[:-1] + grid[1:])
                fit_x = centres[used][:, None]
                weights = counts[used].astype(np.float64)
                info["fit"] = f"histogram of {n_fit} voxels in {HIST_BINS} bins"
                # the partial-volume EM runs hundreds of iterations: it sees every
                # PV_BIN_MERGE bins merged (still ~1/500 of the range, below the noise)
                merged = counts.reshape(-1, PV_BIN_MERGE).sum(axis=1)
                pv_centres = (centres * counts).reshape(-1, PV_BIN_MERGE).sum(axis=1) / np.maximum(merged, 1)
                pv_hist = (pv_centres[merged > 0][:, None], merged[merged > 0].astype(np.float64))
    if weights is None and mc.max_samples is not None and n_fit > mc.max_samples:
        keep = _smallest_keys(fit_key, mc.max_samples)
        fit_x, fit_key = fit_x[keep], fit_key[keep]
        info["fit"] = f"random subset of {mc.max_samples} voxels"
    info.setdefault("fit", f"all {n_fit} voxels of the fit region")
    gmm.fit(fit_x, sample_weight=weights)
    classes = name_tissue_components(gmm.means_, modalities)
    use_priors = priors is not None and mc.prior_weight > 0
    prior_fit = None
    if use_priors:
        from .labeling.priors import (ATYPICAL_MIN_SHARE, _weighted_moments, name_by_affinity, name_by_priors,
                                      prior_em, robust_class_init)

        # a seeded subset of the fit rows: the class mixture has a handful of parameters
        idx = np.flatnonzero(fit_rows)
        if idx.size > PRIOR_SAMPLES:
            idx = idx[_smallest_keys(fit_key, PRIOR_SAMPLES)]
        xs, ps = features[idx].astype(np.float64), priors[idx]
        by_contrast = classes
        resp = gmm.predict_proba(xs)
        by_priors, affinity = name_by_priors(resp, ps)
        info["prior_affinity"] = np.round(affinity, 3).tolist()
        # The class mixture's starting points: the plain mixture's components grouped by each
        # naming, and the classes estimated where the atlas puts them (robust to a lesion:
        # robust_class_init). With a lesion, a tumor or residual non-brain, a plain component may
        # hold one of them, or GM and WM together; then no naming of the components is right, so
        # every fit carries a fourth, atypical class with a flat prior for the voxels no tissue
        # class explains (Van Leemput et al. 2001, Prastawa et al. 2004).
        reg = max(mc.reg_covar, 1e-6)
        rob_means, rob_covs, atyp = robust_class_init(xs, ps, reg_covar=reg)
        atyp_share = float(atyp.mean())
        atypical = None
        if atyp_share >= ATYPICAL_MIN_SHARE and int(atyp.sum()) > 2 * xs.shape[1] + 2:
            atypical = _weighted_moments(xs, atyp.astype(np.float64), reg)
        info["atypical_init_share"] = round(atyp_share, 4)

        def class_fit(cls, atyp_init=atypical, max_iter=100):
            m0, c0 = (rob_means, rob_covs) if cls is None else _class_moments(gmm, cls)
            return prior_em(xs, ps, m0, c0, mc.prior_weight, atypical=atyp_init, reg_covar=reg,
                            max_iter=max_iter)

        # the naming the contrasts give and the one the priors give are both fitted with the
        # priors in the E-step; the model that explains the voxels better (intensities and
        # positions) names the classes (a tie keeps the contrast rule)
        prior_fit = class_fit(by_contrast)
        classes = by_contrast
        info["naming"] = "contrast and priors agree"
        msg = None
        cands = [c for c in (by_priors, name_by_affinity(resp, ps)) if not np.array_equal(c, by_contrast)]
        if cands:
            fits = [class_fit(c) for c in cands]
            b = int(np.argmax([f["log_likelihood"] for f in fits]))
            alt, by_priors = fits[b], cands[b]
            gain = alt["log_likelihood"] - prior_fit["log_likelihood"]
            info["naming_gain"] = round(float(gain), 5)
            agree = contrast_agreement(gmm.means_, modalities)
            info["contrast_agreement"] = agree
            if gain > NAMING_MIN_GAIN and agree < 2:
                prior_fit, classes = alt, by_priors
                info["naming"] = "priors"
                msg = ("tissue classes named by the atlas priors, not by the contrast rule "
                       f"(components {[TISSUE_LABELS[int(c)] for c in by_priors]} by priors, "
                       f"{[TISSUE_LABELS[int(c)] for c in by_contrast]} by contrast)")
            else:
                info["naming"] = "contrast"
                why = ("T1 and T2 agree on the contrast order" if agree >= 2
                       else "the priors' naming does not explain the voxels better")
                msg = (f"tissue classes named by the contrast rule ({why}); the atlas priors suggest "
                       f"{[TISSUE_LABELS[int(c)] for c in by_priors]}")
        if PRIOR_INIT != "mixture":
            # The classes estimated where the atlas puts them, with an atypical class started
            # from the voxels outside every class's ellipsoid or from one of the plain mixture's
            # components (a tumor inside the WM prior widens the robust CSF or WM estimate so far
            # that few voxels lie outside them all, while the plain mixture gives it a component).
            # Kept when their means obey the contrast order the scan shows (T1: CSF < GM < WM)
            # and they explain the voxels better than the named components.
            # The components of finer plain mixtures of the class mixture's sample are starts too:
            # the class mixture has several optima of nearly equal likelihood on a glioma case,
            # and with the plain mixture's three components alone which of them is found at all
            # hung on small changes of the fitted voxels.
            eye = np.eye(xs.shape[1]) * reg
            mixes = [(gmm.means_, _full_covariances(gmm))]
            for kk in ROBUST_EXTRA_COMPONENTS:
                g = GaussianMixture(kk, covariance_type="full", tol=mc.tol, max_iter=mc.max_iter,
                                    reg_covar=reg, random_state=config.seed).fit(xs)
                mixes.append((g.means_, _full_covariances(g)))
            starts = ([atypical] if atypical is not None else []) + [
                (mu[k].astype(np.float64), cov[k].astype(np.float64) + eye)
                for mu, cov in mixes for k in range(mu.shape[0])]
            # every start is screened with a few iterations; the best one runs to convergence
            robust = []
            for start in starts:
                f = class_fit(None, start, max_iter=ROBUST_SCREEN_ITER)
                ok = bool(np.array_equal(name_tissue_components(f["means"], modalities), [1, 2, 3]))
                robust.append((ok, f, start))
            ok_fits = [(f, start) for ok, f, start in robust if ok]
            best = None
            if ok_fits:
                best = class_fit(None, max(ok_fits, key=lambda fs: fs[0]["log_likelihood"])[1])
                if not np.array_equal(name_tissue_components(best["means"], modalities), [1, 2, 3]):
                    best = None
            gain = None if best is None else best["log_likelihood"] - prior_fit["log_likelihood"]
            info["robust_init"] = {"contrast_order": [ok for ok, _, _ in robust],
                                   "log_likelihood_gain": None if gain is None else round(float(gain), 5)}
            if best is not None and (PRIOR_INIT == "robust" or gain > NAMING_MIN_GAIN):
                prior_fit, msg = best, None
                info["naming"] = "robust priors"
        if msg is not None:
            log.warning(msg)
            info.setdefault("flags", []).append(msg)
        if prior_fit["atypical_share"] > ATYPICAL_FLAG_SHARE:
            msg = (f"{100 * prior_fit['atypical_share']:.1f}% of the fitted brain fits no tissue class "
                   f"(> {100 * ATYPICAL_FLAG_SHARE:.0f}%: a lesion the tumor step did not take, non-brain left "
                   "in the mask, or atlas priors that do not fit the anatomy); those voxels are labelled with "
                   "their nearest tissue class")
            log.warning(msg)
            info.setdefault("flags", []).append(msg)
        info["prior_em"] = {"n_iter": int(prior_fit["n_iter"]), "weight": mc.prior_weight,
                            "alpha": np.round(prior_fit["alpha"], 4).tolist(),
                            "class_means": np.round(prior_fit["means"], 4).tolist(),
                            "atypical_share": round(float(prior_fit["atypical_share"]), 4)}
    if uniq is not None:
        predict_x = uniq[:, None].astype(np.float64)
    elif grid is not None:
        predict_x = grid[:, None]
    else:
        predict_x = features
    thick = spacing is not None and max(spacing) > mc.pv_max_voxel_mm
    if mc.partial_volume and thick:
        info["partial_volume"] = {
            "used": False,
            "reason": (f"voxels {max(spacing):.2g} mm thick > mixture.pv_max_voxel_mm {mc.pv_max_voxel_mm:g} "
                       "(three tissues per voxel): the class mixture labels them"),
        }
    if mc.partial_volume and not thick:
        from .mixture.partial_volume import PartialVolumeMixture

        if prior_fit is not None:
            means0, covs0 = prior_fit["means"], prior_fit["covariances"]
            share0 = prior_fit["tissue_share"]
        else:
            means0, covs0 = _class_moments(gmm, classes)
            share0 = np.array([gmm.weights_[classes == c].sum() for c in (1, 2, 3)])
        # The partial-volume EM converges slowly (the pure means move a little each step), so
        # it runs to a tight tolerance; on one feature it is fitted on the same histogram as
        # the mixture, on several on a seeded subset, which fixes a handful of parameters as
        # well as all voxels would.
        pv_x, pv_w = pv_hist if pv_hist is not None else (fit_x, weights)
        if pv_w is None and pv_x.shape[0] > PV_MAX_SAMPLES:
            pv_x = pv_x[_smallest_keys(fit_key, PV_MAX_SAMPLES)]
        # The partial-volume model should sharpen the classes the plain mixture found, not
        # replace them: when a pure mean drifts out of its class's own spread (seen on
        # multi-modal real scans, where mixing is not linear in every channel), the plain
        # mixture's posteriors are used instead.
        # Noise: per-class covariances shrunk towards one shared by every class and mix (the
        # width of a class is mostly scanner noise, not mixing, so grey matter cannot widen over
        # the GM/WM mixed voxels; a class with many voxels, or an average template whose class
        # widths are anatomy, keeps its own), or either extreme.
        # With noise close to the GM/WM contrast (auto) the widths are noise: one per class.
        noise_mode, cnr = mc.pv_noise, None
        if noise_mode == "auto":
            cnr = gm_wm_cnr(np.asarray(means0), noise_sd)
            noise_mode = "per_class" if cnr is not None and cnr < PV_NOISY_CNR else "shrunk"
        shared = {"shrunk": float(mc.pv_noise_prior), "shared": True, "per_class": False}[noise_mode]
        pv = PartialVolumeMixture(3, tol=1e-7, max_iter=1000, reg_covar=max(mc.reg_covar, 1e-6),
                                  shared_noise=shared)
        pv.fit(pv_x, means_init=means0, covariances_init=covs0, sample_weight=pv_w, max_drift=PV_MAX_DRIFT)
        # ... nor let a pure class take another over: the mixes take the boundary voxels, so a
        # pure class holds fewer voxels than the plain mixture's class, never many more (with
        # little contrast for the noise, high noise or z-scored multi-modal scans, pure WM
        # swallowed GM while its mean moved less than its own SD). A pure class may empty
        # (the CSF of a skull-stripped scan is mostly mixed voxels).
        kept = pv.class_weights_[:3] / np.maximum(share0, 1e-12)
        collapsed = bool(kept.max() > PV_MAX_GAIN)
        # ... nor move the boundary between grey and white matter, which the labels follow: with
        # noise of half the GM/WM contrast (MNI152 at 9 % noise) the mixed class took the noise's
        # tails and both pure means moved down, by 0.38 and 0.25 of the contrast, so white matter
        # took a third of the grey (GM/WM Dice 0.65 / 0.72); each mean stayed within 2 SD
        shift = boundary_shift(np.asarray(means0), pv.means_)
        moved = abs(shift) > PV_MAX_SHIFT
        drifted = bool(pv.drifted_ or float(pv.drift_.max()) > PV_MAX_DRIFT)
        accepted = not (drifted or collapsed or moved)
        info["partial_volume"] = {
            "noise": noise_mode,
            "gm_wm_contrast_noise_sd": None if cnr is None else round(float(cnr), 2),
            "n_iter": int(pv.n_iter_),
            "class_means": np.round(pv.means_, 4).tolist(),
            "class_weights": np.round(pv.class_weights_, 4).tolist(),
            "drift_sd": np.round(pv.drift_, 3).tolist(),
            "pure_share_kept": np.round(kept, 3).tolist(),
            "gm_wm_boundary_shift": round(float(shift), 3),
            "used": bool(accepted),
        }
        if accepted:
            probs = pv.predict_fractions(predict_x)
        else:
            if drifted:
                msg = (f"partial-volume model fell back to the plain mixture (pure means drifted "
                       f"{max(info['partial_volume']['drift_sd']):.1f} SD > {PV_MAX_DRIFT:g})")
            elif collapsed:
                c = int(np.argmax(kept))
                msg = (f"partial-volume model fell back to the plain mixture (pure {TISSUE_LABELS[c + 1]} took "
                       f"{kept[c]:.2f}x the voxels of its plain-mixture class > {PV_MAX_GAIN:g}x)")
            else:
                msg = (f"partial-volume model fell back to the plain mixture (it moved the GM/WM boundary by "
                       f"{shift:+.2f} of the GM-WM contrast, more than {PV_MAX_SHIFT:g}: high noise)")
            log.warning(msg)
            info.setdefault("flags", []).append(msg)
            probs = None if prior_fit is not None else class_probabilities(gmm.predict_proba(predict_x), classes)
    elif prior_fit is None:
        probs = class_probabilities(gmm.predict_proba(predict_x), classes)
    else:
        probs = None
    if probs is None:  # the class mixture with the priors gives the posteriors, voxel by voxel
        from .labeling.priors import class_posteriors

        probs = class_posteriors(features, priors, prior_fit, mc.prior_weight)
    else:
        if uniq is not None:
            probs = probs[inverse]
        elif grid is not None:
            probs = interp_rows(features[:, 0], grid, probs)
        if prior_fit is not None:  # the partial-volume fractions, weighted by where each class lies
            from .labeling.priors import apply_priors

            probs = apply_priors(probs, priors, mc.prior_weight)
    labels = (np.argmax(probs, axis=1) + 1).astype(np.uint8)
    info.update(
        n_iter=int(gmm.n_iter_),
        converged=bool(gmm.converged_),
        lower_bound=float(gmm.lower_bound_),
        component_classes=[TISSUE_LABELS[int(c)] for c in classes],
        component_means=np.round(gmm.means_, 4).tolist(),
        component_weights=np.round(gmm.weights_, 4).tolist(),
    )
    return labels, probs.astype(np.float32), info


#: Start of the class mixture with priors: "select" (the robust prior-initialised classes when they obey the
#: contrast order and explain the voxels better), "robust" (always), "mixture" (the plain mixture's components).
PRIOR_INIT = "select"

#: Share of the fitted voxels in the class mixture's atypical class above which the run is flagged
#: (measured: healthy 1.5 mm IBSR scans 0.4-5 %, the tails of the classes beyond their Gaussians; MNI152 at
#: 5 mm slices 5-10 %, mixed voxels; a BraTS glioma left in the fit 8-11 %; phantoms whose anatomy the atlas
#: does not fit 15-26 %).
ATYPICAL_FLAG_SHARE = 0.08

#: Components of the finer plain mixtures (of the class mixture's sample) whose components also start the
#: robust class mixture's atypical class.
ROBUST_EXTRA_COMPONENTS = (4, 5)

#: EM iterations each start of the robust class mixture is screened with (the best runs to convergence).
ROBUST_SCREEN_ITER = 20

#: Mean log-likelihood (nats per voxel) by which the priors' naming must beat the contrast rule's.
NAMING_MIN_GAIN = 1e-3

#: Voxels the class mixture with spatial priors is fitted on (a seeded subset of the fit region).
PRIOR_SAMPLES = 30_000

#: Voxels the mixture of the series covering a region outside another's field of view is fitted on.
FOV_FIT_SAMPLES = 200_000


def neighbour_noise_sd(volumes: list[np.ndarray], region: np.ndarray, spacing) -> np.ndarray | None:
    """Each volume's noise SD from the differences of neighbouring voxels inside ``region``.

    Along the finest axis, pairs of voxels both in ``region``: the robust SD (MAD) of their
    difference over sqrt(2), i.e. of one voxel's noise if the anatomy is smooth at that scale
    (inside white matter it is). ``None`` with fewer than 1000 pairs.
    """
    ax = int(np.argmin(np.asarray(spacing, dtype=np.float64)))
    lo = [slice(None)] * 3
    hi = [slice(None)] * 3
    lo[ax], hi[ax] = slice(0, -1), slice(1, None)
    pairs = region[tuple(lo)] & region[tuple(hi)]
    if np.count_nonzero(pairs) < 1000:
        return None
    out = []
    for v in volumes:
        d = (v[tuple(hi)] - v[tuple(lo)])[pairs].astype(np.float64)
        out.append(1.4826 * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(2.0))
    return np.asarray(out)


def gm_wm_cnr(class_means: np.ndarray, noise_sd: np.ndarray | None) -> float | None:
    """Distance of the GM and WM means (class rows 1, 2) in noise SDs, over every feature."""
    if noise_sd is None:
        return None
    sd = np.asarray(noise_sd, dtype=np.float64)
    if not np.all(sd > 0):
        return None
    c = np.asarray(class_means, dtype=np.float64).reshape(3, -1)
    return float(np.sqrt((((c[2] - c[1]) / sd) ** 2).sum()))


def boundary_shift(class_means: np.ndarray, pv_means: np.ndarray) -> float:
    """Move of the GM/WM boundary from the class mixture to the partial-volume model.

    The labels of the two classes split where a voxel is half grey, half white matter: at the
    midpoint of their means. Returns the midpoint's move along the GM -> WM direction as a
    fraction of the GM-WM distance (class rows 0 CSF, 1 GM, 2 WM; negative: towards GM, white
    matter grows); 0 when the class means coincide.
    """
    c = np.asarray(class_means, dtype=np.float64).reshape(3, -1)
    p = np.asarray(pv_means, dtype=np.float64).reshape(3, -1)
    d = c[2] - c[1]
    dd = float(d @ d)
    if not dd > 0:
        return 0.0
    return float(((p[1] + p[2]) - (c[1] + c[2])) @ d / (2.0 * dd))


def contrast_agreement(means: np.ndarray, modalities: list[str]) -> int:
    """How many independent contrasts order the components exactly as the contrast rule's score
    does: the T1 family (T1, T1c: CSF < GM < WM; one vote, since T1c is T1 with contrast agent)
    and T2 (the reverse). Two make the contrast naming trustworthy: the atlas priors (affine,
    blurred) then never overrule it."""
    from .labeling.tissue import _T1_LIKE_SIGN, tissue_axis_score

    means = np.atleast_2d(np.asarray(means, np.float64))
    order = np.argsort(tissue_axis_score(means, modalities), kind="stable")
    votes = set()
    for j, m in enumerate(modalities):
        if m in _T1_LIKE_SIGN and np.array_equal(np.argsort(_T1_LIKE_SIGN[m] * means[:, j], kind="stable"), order):
            votes.add("t2" if m == "t2" else "t1")
    return len(votes)


def tissue_flags(tissue: np.ndarray, healthy: np.ndarray, priors: np.ndarray | None, config: Config) -> list[str]:
    """QC flags of the tissue labels (``batch.qc``): a class under ``min_tissue_fraction`` of the
    healthy brain, a GM/WM volume ratio outside ``gm_wm_ratio``, a class whose labels do not lie
    where the registered atlas puts it (Dice with the priors' argmax under ``min_prior_dice``)."""
    qc = config.batch.qc
    lab = tissue[healthy]
    n = max(int(lab.size), 1)
    counts = {name: int(np.count_nonzero(lab == c)) for c, name in TISSUE_LABELS.items()}
    flags = []
    for name, k in counts.items():
        if k < qc.min_tissue_fraction * n:
            flags.append(f"tissue class {name} labels only {100 * k / n:.1f}% of the brain "
                         f"(< {100 * qc.min_tissue_fraction:g}%)")
    lo, hi = qc.gm_wm_ratio
    if counts["WM"] > 0:
        r = counts["GM"] / counts["WM"]
        if not lo <= r <= hi:
            flags.append(f"GM/WM volume ratio {r:.2f} outside [{lo:g}, {hi:g}]")
    if priors is not None:
        from .labeling.priors import prior_agreement

        for name, d in prior_agreement(lab, priors).items():
            if name != "CSF" and d < qc.min_prior_dice:  # the atlas' CSF is mostly the ventricles
                flags.append(f"{name} labels disagree with the atlas priors (Dice {d:.2f} < {qc.min_prior_dice:g})")
    for f in flags:
        log.warning("%s", f)
    return flags


def label_outside_fov(loaded: LoadedCase, healthy: np.ndarray, feats: dict[str, np.ndarray], mods: list[str],
                      config: Config, fit_rows: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> list[str]:
    """Relabel, in place, brain voxels outside a resampled series' field of view from the series
    that do cover them (a mixture fitted on those features alone), and return QC flags.

    A series on another grid may cover only part of the reference's brain (a cropped or
    shifted field of view); its value there is not a measurement, so the full mixture's label
    would be noise. Rows of ``labels``/``probs`` are the ``healthy`` voxels.
    """
    fov = getattr(loaded, "fov", {}) or {}
    partial = [m for m in mods if m in fov]
    if not partial:
        return []
    cover = np.stack([fov[m][healthy] for m in partial], axis=1)
    outside = ~cover.all(axis=1)
    if not outside.any():
        return []
    vox_ml = loaded.grid.voxel_volume / 1000.0
    flags = []
    for pattern in np.unique(cover[outside], axis=0):
        rows = outside & (cover == pattern).all(axis=1)
        absent = [m for m, c in zip(partial, pattern) if not c]
        sub = [m for m in mods if m not in absent]
        ml = float(np.count_nonzero(rows)) * vox_ml
        if not sub:
            flags.append(f"{ml:.0f} mL of brain outside the field of view of {', '.join(absent)}: "
                         "labelled without a measurement")
            continue
        # fitted on a seeded subset of the fit region (a few parameters), predicted on ``rows`` only
        fit_idx = np.flatnonzero(fit_rows & ~rows)
        if fit_idx.size > FOV_FIT_SAMPLES:
            rng = np.random.default_rng(config.seed)
            fit_idx = np.sort(rng.choice(fit_idx, size=FOV_FIT_SAMPLES, replace=False))
        row_idx = np.flatnonzero(rows)
        take = np.concatenate([fit_idx, row_idx])
        X = np.stack([feats[m][healthy][take] for m in sub], axis=1).astype(np.float64)
        in_fit = np.zeros(take.size, dtype=bool)
        in_fit[: fit_idx.size] = True
        # the plain mixture: a few edge voxels do not need the slower partial-volume EM
        plain = config.model_copy(update={"mixture": config.mixture.model_copy(update={"partial_volume": False})})
        sub_labels, sub_probs, _ = fit_tissue_mixture(X, sub, plain, fit_rows=in_fit)
        labels[row_idx] = sub_labels[fit_idx.size:]
        probs[row_idx] = sub_probs[fit_idx.size:]
        log.info("%.0f mL of brain outside the field of view of %s: labelled from %s", ml, absent, sub)
        if ml >= 0.02 * float(np.count_nonzero(healthy)) * vox_ml:  # a few mL at a series' edge is normal
            flags.append(f"{ml:.0f} mL of brain outside the field of view of {', '.join(absent)}: "
                         f"labelled from {', '.join(sub)} alone")
    return flags


def interp_rows(x: np.ndarray, grid: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Rows of ``table`` (given at the increasing, evenly spaced ``grid``) linearly interpolated
    at every ``x`` (clamped to the grid's ends): posteriors of millions of voxels of one
    feature from a few thousand evaluations, as smooth functions of the intensity."""
    from .mixture._pv_kernels import interp_rows as kernel

    out = np.empty((x.shape[0], table.shape[1]), dtype=np.float32)
    step = (grid[-1] - grid[0]) / (grid.size - 1)
    kernel(np.ascontiguousarray(x, dtype=np.float64), float(grid[0]), float(step),
           np.ascontiguousarray(table, dtype=np.float64), out)
    return out


def _few_distinct(values: np.ndarray, seed: int, probe: int = 20_000) -> bool:
    """False when a seeded probe of the values is mostly distinct (continuous data, where the
    exact histogram cannot be small), which spares sorting millions of values."""
    if values.size <= probe:
        return True
    rng = np.random.default_rng(seed)
    sample = values[rng.choice(values.size, size=probe, replace=False)]
    return np.unique(sample).size <= probe // 2


def _class_moments(gmm, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of each tissue class (1 CSF, 2 GM, 3 WM): the weight-averaged
    parameters of the components named that class."""
    covs = _full_covariances(gmm)
    w = gmm.weights_
    means = np.stack([np.average(gmm.means_[classes == c], axis=0, weights=w[classes == c]) for c in (1, 2, 3)])
    cov = np.stack([np.average(covs[classes == c], axis=0, weights=w[classes == c]) for c in (1, 2, 3)])
    return means, cov


def _smallest_keys(key: np.ndarray, size: int) -> np.ndarray:
    """Sorted positions of the ``size`` smallest entries of ``key`` (a seeded subset that is stable
    when a few rows come or go)."""
    if key.size <= size:
        return np.arange(key.size)
    return np.sort(np.argpartition(key, size - 1)[:size])


def _full_covariances(gmm) -> np.ndarray:
    """Covariances of a fitted GaussianMixture as (K, d, d) whatever its covariance type."""
    k, d = gmm.means_.shape
    cov = np.asarray(gmm.covariances_)
    if gmm.covariance_type == "full":
        return cov
    if gmm.covariance_type == "tied":
        return np.repeat(cov[None], k, axis=0)
    if gmm.covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov])
    return np.stack([np.eye(d) * c for c in cov])  # spherical


class StepTimes(dict):
    """Seconds per pipeline step; each entry is logged as it is recorded (``segment -v``)."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def __setitem__(self, step: str, seconds: float) -> None:
        super().__setitem__(step, seconds)
        log.info("%s: %s done in %.2f s", self.label, step, seconds)


def _case_label(case: object) -> str:
    if isinstance(case, LoadedCase):
        return case.case.case_id
    if isinstance(case, Case):
        return case.case_id
    return Path(str(case)).name


def run_pipeline(case: Case | LoadedCase | str | os.PathLike, config: Config | None = None) -> Segmentation:
    """Run every step in memory (no files written) and return the RAS-grid result."""
    config = config or Config()
    timings: dict[str, float] = StepTimes(_case_label(case))
    t = time.perf_counter()
    if isinstance(case, LoadedCase):
        loaded = case
    else:
        loaded = load_case(
            case if isinstance(case, Case) else find_case(case),
            register=config.registration,
            register_seed=config.seed,
        )
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    try:
        mask, info = brain_mask_step(loaded, config)
    except InputError as exc:
        ref_path = loaded.reference.path
        if ref_path is not None and str(ref_path) not in str(exc) and ref_path.name not in str(exc):
            raise InputError(f"{ref_path}: {exc}") from None  # every error names its file
        raise
    timings["brain_mask"] = time.perf_counter() - t

    t = time.perf_counter()
    corrected: dict[str, np.ndarray] | None = {} if config.outputs.bias_corrected else None
    saturated: dict[str, dict[str, float]] = {}
    feats = normalize_step(loaded, mask, config, corrected, saturated, info.get("registration"))
    if saturated:
        info["saturation"] = saturated
        for m, fit in saturated.items():
            if fit["share"] >= SATURATION_FLAG_SHARE:
                what = ("the values above it were restored from a censored fit of the brightest class"
                        if fit["restored"] else
                        f"not restored: {100 * fit['class_clipped']:.0f}% of the brightest class is above it, "
                        "its width cannot be estimated; the tissue classes next to it are unreliable")
                info.setdefault("flags", []).append(
                    f"{m}: {100 * fit['share']:.1f}% of the brain at the intensity ceiling {fit['ceiling']:g} "
                    f"(saturated); {what}")
    timings["normalize"] = time.perf_counter() - t

    tumor = None
    tumor_probs = None
    regions: list[str] = []
    from .labeling.tumor import segment_tumor, should_run_tumor

    if should_run_tumor(loaded.modalities, config.tumor):
        t = time.perf_counter()
        tres = segment_tumor(feats, mask, loaded.spacing, config=config.tumor, seed=config.seed,
                             want_probabilities=config.outputs.probabilities)
        tumor = tres.labels.astype(np.uint8)
        tumor_probs = tres.probabilities
        regions = list(tres.regions)
        info["tumor"] = tres.info
        timings["tumor"] = time.perf_counter() - t
        flag = clipped_flair_flag(feats, mask, saturated.get("flair"), tres.info.get("seed_threshold_z"))
        if flag:
            info.setdefault("flags", []).append(flag)
    info["tumor_regions"] = regions

    mods = [m for m in (config.mixture.modalities or loaded.modalities) if m in feats]
    if not mods:
        raise InputError(
            f"{loaded.case.root or loaded.case.case_id}: none of mixture.modalities "
            f"{list(config.mixture.modalities or [])} is present (found {loaded.modalities})"
        )
    # the tissue mixture sees healthy brain only: tumor voxels would pull its components
    healthy = mask if tumor is None else mask & (tumor == 0)
    if not healthy.any():
        raise InputError(f"{loaded.case.root or loaded.case.case_id}: no healthy brain voxel left for the tissue model")
    t = time.perf_counter()
    fit_region = healthy.copy()  # (healthy may be the brain mask itself: never narrow it in place)
    if info["mask_method"] == "skullstrip":
        # an estimated mask's edge is uncertain (bits of skull, dura, scalp): keep it out of the fit
        fit_region = healthy & fit_core(mask, loaded.spacing, config.mixture.fit_margin_mm)
    if loaded.coverage is not None:
        fit_region &= loaded.coverage
    fit_flags: list[str] = []
    if np.count_nonzero(fit_region) < max(1000, 0.05 * np.count_nonzero(healthy)):
        if np.count_nonzero(fit_region) < np.count_nonzero(healthy):
            fit_flags.append("tissue fit on the whole brain: the eroded core was too small")
            log.warning("%s: %s", loaded.case.case_id, fit_flags[-1])
        fit_region = healthy  # a tiny or thin brain: use all of it
    X = np.stack([feats[m][healthy] for m in mods], axis=1).astype(np.float64)
    in_fit = fit_region[healthy]
    priors = None
    reg = info.get("registration")
    if config.mixture.prior_weight > 0:
        if reg is not None and "registration_poor" not in (reg.flags or []):
            from .labeling.priors import warp_tissue_priors

            priors = warp_tissue_priors(reg, loaded.grid, healthy)
        else:
            fit_flags.append("tissue without atlas priors: " + (
                "the template registration is poor" if reg is not None else "no template registration"))
            log.warning("%s: %s", loaded.case.case_id, fit_flags[-1])
    # one random key per voxel of the grid: the mixture's seeded subsets keep their voxels when
    # the healthy region changes a little (a tumor a few mL larger)
    key = np.random.default_rng(config.seed).random(mask.shape, dtype=np.float32)[healthy]
    noise_sd = None
    mc = config.mixture
    if mc.pv_noise == "auto" and mc.partial_volume and max(loaded.spacing) <= mc.pv_max_voxel_mm:
        # noise inside the atlas's white matter (else the fitted brain), where anatomy is smooth
        region = fit_region
        if priors is not None:
            wm_core = np.zeros_like(healthy)
            wm_core[healthy] = priors[:, 2] >= 0.9
            if np.count_nonzero(wm_core & fit_region) >= 2000:
                region = wm_core & fit_region
        noise_sd = neighbour_noise_sd([feats[m] for m in mods], region, loaded.spacing)
    labels, probs, mix_info = fit_tissue_mixture(X, mods, config, fit_rows=in_fit, priors=priors,
                                                 spacing=loaded.spacing, sample_key=key, noise_sd=noise_sd)
    fov_flags = label_outside_fov(loaded, healthy, feats, mods, config, in_fit, labels, probs)
    if fov_flags:
        info.setdefault("flags", []).extend(fov_flags)
    timings["mixture"] = time.perf_counter() - t
    if fit_flags:
        mix_info.setdefault("flags", []).extend(fit_flags)
    info.update(mixture=mix_info, features=mods)
    if priors is not None:
        from .labeling.priors import prior_agreement

        mix_info["prior_agreement"] = prior_agreement(labels, priors)

    pp = config.postprocess
    fractions = probs
    info["pve_sums"] = fractions.sum(axis=0, dtype=np.float64).tolist()  # for volumes.csv (PVE-based)
    if pp.mrf_beta > 0:
        from .labeling.mrf import mrf_smooth

        t = time.perf_counter()
        probs = mrf_smooth(probs, healthy, loaded.spacing, beta=pp.mrf_beta, iterations=pp.mrf_iterations)
        labels = (np.argmax(probs, axis=1) + 1).astype(np.uint8)
        timings["mrf"] = time.perf_counter() - t
    t = time.perf_counter()
    tissue = np.zeros(mask.shape, dtype=np.uint8)
    tissue[healthy] = labels
    if config.postprocess.min_island_mm3 > 0:
        from .postprocess import remove_small_islands

        tissue = remove_small_islands(tissue, healthy, loaded.spacing, config.postprocess.min_island_mm3)
    mix_info.setdefault("flags", []).extend(tissue_flags(tissue, healthy, priors, config))
    if tumor is not None:
        tissue[tumor > 0] = TISSUE_TUMOR_LABEL
    timings["postprocess"] = time.perf_counter() - t

    prob_maps = pve_maps = None
    if config.outputs.probabilities:
        prob_maps = np.zeros(mask.shape + (probs.shape[1],), dtype=np.float32)
        prob_maps[healthy] = probs
        pve_maps = np.zeros_like(prob_maps)
        pve_maps[healthy] = fractions
    return Segmentation(
        loaded, mask, tissue, feats, prob_maps, pve_maps, tumor, regions, info, timings, corrected or None,
        tumor_probs,
    )


# --------------------------------------------------------------------------- metrics & outputs


def truth_kinds(loaded: LoadedCase, mask: np.ndarray, config: Config) -> dict[str, str]:
    """Which ground-truth file holds tissue and which holds tumor labels.

    A file named ``seg_tissue``/``seg_tumor`` says so itself; a plain ``seg``/``label`` follows
    ``config.truth``, and with ``auto`` it is tissue when its labels cover most of the brain
    (a tissue map covers all of it, a tumor never does), else tumor.
    """
    out: dict[str, str] = {}
    for kind in ("tissue", "tumor"):
        if kind in loaded.truth:
            out[kind] = kind
    if "seg" in loaded.truth:
        kind = config.truth
        if kind == "auto":
            covered = np.count_nonzero(loaded.truth["seg"].data[mask]) / max(int(mask.sum()), 1)
            kind = "tissue" if covered > 0.5 else "tumor"
        out.setdefault(kind, "seg")
    return out


def tissue_truth(loaded: LoadedCase, key: str) -> np.ndarray:
    """Tissue ground truth on the RAS grid (0 bg, 1 CSF, 2 GM, 3 WM, 4 tumor)."""
    vol = loaded.truth[key]
    bad = [int(v) for v in np.unique(vol.data) if v not in (0, 1, 2, 3, 4)]
    if bad:
        raise InputError(
            f"{vol.path}: ground truth has labels {bad} outside the tissue coding "
            "(0 background, 1 CSF, 2 GM, 3 WM, 4 tumor)"
        )
    return vol.data.astype(np.uint8)


def tumor_truth(loaded: LoadedCase, key: str) -> np.ndarray:
    """Tumor ground truth on the RAS grid in internal BraTS 2023 coding (1 NCR, 2 ED, 3 ET)."""
    from .metrics import map_tumor_labels

    vol = loaded.truth[key]
    return map_tumor_labels(vol.data, loaded.case.tumor_coding, source=str(vol.path)).astype(np.uint8)


def compute_metrics(seg: Segmentation, config: Config | None = None) -> dict[str, float]:
    """Metrics of the tissue labels (per class) and tumor regions against the case's ground truth."""
    from .metrics import evaluate_brats, evaluate_labels

    config = config or Config()
    kinds = truth_kinds(seg.loaded, seg.brain_mask, config)
    metrics: dict[str, float] = {}
    if "tissue" in kinds:
        truth = tissue_truth(seg.loaded, kinds["tissue"])
        metrics.update(evaluate_labels(seg.tissue, truth, TISSUE_LABELS, seg.loaded.spacing))
    if "tumor" in kinds and seg.tumor is not None and seg.tumor_regions:
        truth = tumor_truth(seg.loaded, kinds["tumor"])
        if not truth.any():
            # BraTS scores an empty prediction of an empty truth as Dice 1: true, but it says
            # nothing when the truth file is empty by mistake; make it visible
            path = seg.loaded.case.truth.get(kinds["tumor"])
            msg = (f"ground truth {path.name if path is not None else kinds['tumor']} holds no tumor label "
                   "(every voxel 0): tumor scores only say whether the prediction is empty too")
            warnings.warn(msg, UserWarning, stacklevel=2)
            flags = seg.info.setdefault("flags", [])
            if msg not in flags:
                flags.append(msg)
        metrics.update(evaluate_brats(seg.tumor, truth, seg.loaded.spacing, regions=seg.tumor_regions))
    return metrics


def write_outputs(seg: Segmentation, out_dir: Path, config: Config, metrics: dict[str, float]) -> dict[str, Path]:
    """Write label maps (in the reference image's space), metrics and the overlay."""
    from .report.tables import write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    ref = seg.loaded.reference
    outputs: dict[str, Path] = {}
    outputs["brain_mask"] = save_volume(
        from_ras(seg.brain_mask.astype(np.uint8), ref), ref.affine, out_dir / "brain_mask.nii.gz", dtype=np.uint8
    )
    outputs["tissue"] = save_volume(
        from_ras(seg.tissue, ref), ref.affine, out_dir / "tissue.nii.gz", dtype=np.uint8
    )
    if seg.fractions is not None:
        for c, name in TISSUE_LABELS.items():
            outputs[f"pve_{name}"] = save_volume(
                from_ras(seg.fractions[..., c - 1], ref), ref.affine,
                out_dir / f"pve_{name.lower()}.nii.gz", dtype=np.float32,
            )
    if seg.probabilities is not None:
        for c, name in TISSUE_LABELS.items():
            outputs[f"prob_{name}"] = save_volume(
                from_ras(seg.probabilities[..., c - 1], ref), ref.affine,
                out_dir / f"prob_{name.lower()}.nii.gz", dtype=np.float32,
            )
    for m, data in (seg.bias_corrected or {}).items():
        outputs[f"biascorr_{m}"] = save_volume(
            from_ras(data, ref), ref.affine, out_dir / f"{m}_biascorr.nii.gz", dtype=np.float32
        )
    if seg.tumor is not None:
        from .metrics import to_coding

        coded = to_coding(seg.tumor, config.tumor.coding)
        outputs["tumor"] = save_volume(from_ras(coded, ref), ref.affine, out_dir / "tumor.nii.gz", dtype=np.uint8)
    for name, data in (seg.tumor_probabilities or {}).items():  # tumor_prob_ncr/ed/et, tumor_entropy
        fname = "tumor_entropy" if name == "entropy" else f"tumor_prob_{name.lower()}"
        outputs[fname] = save_volume(from_ras(data, ref), ref.affine, out_dir / f"{fname}.nii.gz", dtype=np.float32)
    if metrics or seg.tumor is not None:
        doc: dict[str, object] = dict(metrics)
        if seg.tumor is not None:
            doc["tumor_regions_estimated"] = list(seg.tumor_regions)
            doc["tumor_volumes_ml"] = _tumor_volumes(seg)
        outputs["metrics"] = write_json(doc, out_dir / "metrics.json")
    if config.outputs.overlay:
        outputs["overlay"] = write_overlay(seg, out_dir / "overlay.png", config)
    return outputs


#: Codes of the combined tissue + tumor map drawn in overlays.
OVERLAY_LABELS = {1: "CSF", 2: "GM", 3: "WM", 5: "NCR", 6: "ED", 7: "ET"}


def _tumor_volumes(seg: Segmentation) -> dict[str, float]:
    vox = seg.loaded.grid.voxel_volume / 1000.0
    t = seg.tumor if seg.tumor is not None else np.zeros(1, np.uint8)
    return {
        "NCR": float((t == 1).sum() * vox),
        "ED": float((t == 2).sum() * vox),
        "ET": float((t == 3).sum() * vox),
        "WT": float((t > 0).sum() * vox),
        "TC": float(((t == 1) | (t == 3)).sum() * vox),
    }


def _overlay_map(tissue: np.ndarray | None, tumor: np.ndarray | None) -> np.ndarray | None:
    """Tissue 1..3 and tumor classes as 5..7 in one map (tissue label 4 gives way to tumor)."""
    if tissue is None and tumor is None:
        return None
    shape = (tissue if tissue is not None else tumor).shape
    out = np.zeros(shape, np.uint8)
    if tissue is not None:
        out[(tissue >= 1) & (tissue <= 3)] = tissue[(tissue >= 1) & (tissue <= 3)]
    if tumor is not None:
        out[tumor > 0] = tumor[tumor > 0] + 4
    return out


def write_overlay(seg: Segmentation, path: Path, config: Config) -> Path:
    """Overlay of tissue (and tumor) labels on the reference image, truth as contours."""
    from .report.figures import overlay_figure

    kinds = truth_kinds(seg.loaded, seg.brain_mask, config)
    t_tissue = tissue_truth(seg.loaded, kinds["tissue"]) if "tissue" in kinds else None
    t_tumor = tumor_truth(seg.loaded, kinds["tumor"]) if "tumor" in kinds else None
    truth = _overlay_map(t_tissue, t_tumor)
    if seg.tumor is not None and (seg.tumor > 0).any():
        base_mod = next((m for m in ("flair", "t1c", "t2") if m in seg.loaded.images), seg.loaded.modalities[0])
        title = f"{seg.loaded.case.case_id}: tissue and tumor on {base_mod}"
    else:
        base_mod = seg.loaded.modalities[0]
        title = f"{seg.loaded.case.case_id}: tissue on {base_mod}"
    return overlay_figure(
        seg.loaded.images[base_mod].data,
        _overlay_map(seg.tissue, seg.tumor),
        path,
        spacing=seg.loaded.spacing,
        truth=truth,
        label_names=OVERLAY_LABELS,
        title=title,
        file_affine=seg.loaded.reference.affine,
        source_name=seg.loaded.reference.path.name if seg.loaded.reference.path else "",
    )


def segment_case(
    case: Case | str | os.PathLike,
    config: Config | None = None,
    out_dir: str | os.PathLike | None = None,
) -> CaseResult:
    """Segment one case and, when ``out_dir`` is given, write its outputs there.

    Parameters
    ----------
    case : Case or path to a case folder
    config : Config, optional (defaults)
    out_dir : path, optional
        Folder for this case's outputs (created); ``brain_mask.nii.gz``, ``tissue.nii.gz``,
        ``metrics.json`` (with ground truth), ``overlay.png``.

    Returns
    -------
    CaseResult
        ``metrics`` holds Dice, IoU, sensitivity, specificity, HD95 and volume difference per
        class when the case has ground truth.

    Raises
    ------
    SegmentError
        Bad input (the message names the file and the problem).
    """
    config = config or Config()
    t0 = time.perf_counter()
    if not isinstance(case, Case):
        case = find_case(case)
    from .report.provenance import CaseLog, write_case_records

    with CaseLog(label=case.case_id) as caselog:  # every log record and warning of this case, for segment.log / provenance
        seg = run_pipeline(case, config)
        metrics = compute_metrics(seg, config)
        outputs: dict[str, Path] = {}
        if out_dir is not None:
            t = time.perf_counter()
            outputs = write_outputs(seg, Path(out_dir), config, metrics)
            seg.timings["write"] = time.perf_counter() - t
            outputs.update(write_case_records(seg, Path(out_dir), config, caselog=caselog, metrics=metrics,
                                              outputs=outputs, seconds=time.perf_counter() - t0))
        case_warnings = list(dict.fromkeys([*seg.loaded.notes, *caselog.warnings]))
    info = dict(seg.info)
    info["warnings"] = case_warnings  # every warning and fallback (recorded in provenance.json too)
    info["timings"] = {k: round(v, 3) for k, v in seg.timings.items()}
    info["brain_volume_ml"] = float(seg.brain_mask.sum() * seg.loaded.grid.voxel_volume / 1000.0)
    info["resampled"] = seg.loaded.resampled
    if getattr(seg.loaded, "notes", None):
        info["notes"] = list(seg.loaded.notes)
    if seg.tumor is not None:
        info["tumor_volumes_ml"] = _tumor_volumes(seg)
    return CaseResult(
        case_id=case.case_id,
        status="ok",
        seconds=time.perf_counter() - t0,
        outputs=outputs,
        metrics=metrics,
        info=info,
    )
