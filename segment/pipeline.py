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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import Config
from .errors import InputError
from .io.cases import LoadedCase, find_case, load_case
from .io.nifti import from_ras, save_volume
from .types import MODALITIES, TISSUE_LABELS, Case, CaseResult

log = logging.getLogger("segment")

#: Voxels drawn (seeded) to fit the partial-volume model when no exact histogram is available.
PV_MAX_SAMPLES = 20_000


@dataclass
class Segmentation:
    """In-memory result of :func:`run_pipeline`, on the RAS reference grid."""

    loaded: LoadedCase
    brain_mask: np.ndarray
    tissue: np.ndarray
    features: dict[str, np.ndarray]
    probabilities: np.ndarray | None = None
    info: dict[str, object] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- steps


def brain_mask_step(loaded: LoadedCase, config: Config) -> tuple[np.ndarray, dict[str, object]]:
    """Brain mask on the RAS grid: the non-zero region for brain-only images, else skull stripping."""
    from .preprocess.skullstrip import brain_mask_nonzero, is_brain_only, skullstrip

    mode = config.preprocess.skullstrip
    vols = [loaded.images[m].data for m in loaded.modalities]
    ref = loaded.images[loaded.modalities[0]]
    if mode == "never":
        brain_only = True
    elif mode == "always":
        brain_only = False
    else:
        brain_only = is_brain_only(ref.data)
    if brain_only:
        nonzero = np.zeros(ref.shape, dtype=bool)
        for v in vols:
            nonzero |= v != 0
        mask = brain_mask_nonzero(nonzero.astype(np.float32), ref.spacing)
        method = "nonzero"
    else:
        mask = skullstrip(vols, ref.spacing, modalities=loaded.modalities)
        method = "skullstrip"
    if config.postprocess.fill_holes:
        from .postprocess import fill_holes

        mask = fill_holes(mask)
    if not mask.any():
        raise InputError(f"{ref.path}: empty brain mask; check the image or set preprocess.skullstrip")
    return mask.astype(bool), {"mask_method": method}


def normalize_step(loaded: LoadedCase, mask: np.ndarray, config: Config) -> dict[str, np.ndarray]:
    """Optional N4, then robust z-score inside the brain, for every modality."""
    from .preprocess.normalize import robust_zscore

    pp = config.preprocess
    out: dict[str, np.ndarray] = {}
    for m in loaded.modalities:
        data = loaded.images[m].data
        if pp.bias_correction:
            from .preprocess.bias import n4_correct

            data = n4_correct(
                data, mask, loaded.spacing, shrink=pp.n4.shrink,
                iterations=pp.n4.iterations, convergence=pp.n4.convergence,
            )
        # voxels outside the field of view of a resampled series are 0 there; they stay in
        # the mask (the reference defines the brain) and take the clipped low value.
        out[m] = robust_zscore(
            data, mask, lower_percentile=pp.lower_percentile, upper_percentile=pp.upper_percentile
        )
    return out


def fit_tissue_mixture(
    features: np.ndarray,
    modalities: list[str],
    config: Config,
) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    """Fit the tissue GMM on brain voxels and return (labels 1..3, class probabilities, info).

    Parameters
    ----------
    features : ndarray of shape (n_voxels, n_features)
    modalities : the features' modality names

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
    info: dict[str, object] = {"n_voxels": int(n)}
    fit_x, weights = features, None
    uniq, inverse, counts = None, None, None
    if features.shape[1] == 1:
        uniq, inverse, counts = np.unique(features[:, 0], return_inverse=True, return_counts=True)
        if uniq.size <= max(n // 4, 1):
            fit_x, weights = uniq[:, None].astype(np.float64), counts.astype(np.float64)
            info["fit"] = f"histogram of {uniq.size} unique values"
        else:
            uniq = None
    if weights is None and mc.max_samples is not None and n > mc.max_samples:
        rng = np.random.default_rng(config.seed)
        idx = np.sort(rng.choice(n, size=mc.max_samples, replace=False))
        fit_x = features[idx]
        info["fit"] = f"random subset of {mc.max_samples} voxels"
    info.setdefault("fit", f"all {n} voxels")
    gmm.fit(fit_x, sample_weight=weights)
    classes = name_tissue_components(gmm.means_, modalities)
    predict_x = uniq[:, None].astype(np.float64) if uniq is not None else features
    if mc.partial_volume:
        from .mixture.partial_volume import PartialVolumeMixture

        covs = _full_covariances(gmm)
        w = gmm.weights_
        means0 = np.stack([np.average(gmm.means_[classes == c], axis=0, weights=w[classes == c]) for c in (1, 2, 3)])
        covs0 = np.stack([np.average(covs[classes == c], axis=0, weights=w[classes == c]) for c in (1, 2, 3)])
        # The partial-volume EM converges slowly (the pure means move a little each step), so
        # it runs to a tight tolerance; without an exact histogram it is fitted on a seeded
        # subset, which fixes a handful of parameters as well as all voxels would.
        pv_x, pv_w = fit_x, weights
        if pv_w is None and pv_x.shape[0] > PV_MAX_SAMPLES:
            rng = np.random.default_rng(config.seed)
            pv_x = pv_x[np.sort(rng.choice(pv_x.shape[0], size=PV_MAX_SAMPLES, replace=False))]
        pv = PartialVolumeMixture(3, tol=1e-7, max_iter=1000, reg_covar=max(mc.reg_covar, 1e-6))
        pv.fit(pv_x, means_init=means0, covariances_init=covs0, sample_weight=pv_w)
        probs = pv.predict_fractions(predict_x)
        info["partial_volume"] = {
            "n_iter": int(pv.n_iter_),
            "class_means": np.round(pv.means_, 4).tolist(),
            "class_weights": np.round(pv.class_weights_, 4).tolist(),
        }
    else:
        probs = class_probabilities(gmm.predict_proba(predict_x), classes)
    if uniq is not None:
        probs = probs[inverse]
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


def run_pipeline(case: Case | LoadedCase | str | os.PathLike, config: Config | None = None) -> Segmentation:
    """Run every step in memory (no files written) and return the RAS-grid result."""
    config = config or Config()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if isinstance(case, LoadedCase):
        loaded = case
    else:
        loaded = load_case(case if isinstance(case, Case) else find_case(case))
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    mask, info = brain_mask_step(loaded, config)
    timings["brain_mask"] = time.perf_counter() - t

    t = time.perf_counter()
    feats = normalize_step(loaded, mask, config)
    timings["normalize"] = time.perf_counter() - t

    mods = [m for m in (config.mixture.modalities or loaded.modalities) if m in feats]
    if not mods:
        raise InputError(
            f"{loaded.case.root or loaded.case.case_id}: none of mixture.modalities "
            f"{list(config.mixture.modalities or [])} is present (found {loaded.modalities})"
        )
    t = time.perf_counter()
    X = np.stack([feats[m][mask] for m in mods], axis=1).astype(np.float64)
    labels, probs, mix_info = fit_tissue_mixture(X, mods, config)
    timings["mixture"] = time.perf_counter() - t
    info.update(mixture=mix_info, features=mods)

    t = time.perf_counter()
    tissue = np.zeros(mask.shape, dtype=np.uint8)
    tissue[mask] = labels
    if config.postprocess.min_island_mm3 > 0:
        from .postprocess import remove_small_islands

        tissue = remove_small_islands(tissue, mask, loaded.spacing, config.postprocess.min_island_mm3)
    timings["postprocess"] = time.perf_counter() - t

    prob_maps = None
    if config.outputs.probabilities:
        prob_maps = np.zeros(mask.shape + (probs.shape[1],), dtype=np.float32)
        prob_maps[mask] = probs
    return Segmentation(loaded, mask, tissue, feats, prob_maps, info, timings)


# --------------------------------------------------------------------------- metrics & outputs


def tissue_truth(loaded: LoadedCase) -> np.ndarray | None:
    """The tissue ground truth on the RAS grid, if the case has one (labels 0..4)."""
    vol = loaded.truth.get("tissue") or loaded.truth.get("seg")
    if vol is None:
        return None
    labels = np.unique(vol.data)
    bad = [int(v) for v in labels if v not in (0, 1, 2, 3, 4)]
    if bad:
        raise InputError(
            f"{vol.path}: ground truth has labels {bad} outside the tissue coding "
            "(0 background, 1 CSF, 2 GM, 3 WM, 4 tumor)"
        )
    return vol.data.astype(np.uint8)


def compute_metrics(seg: Segmentation) -> dict[str, float]:
    """Per-class metrics of the tissue labels against the case's ground truth ({} without one)."""
    from .metrics import evaluate_labels

    truth = tissue_truth(seg.loaded)
    if truth is None:
        return {}
    return evaluate_labels(seg.tissue, truth, TISSUE_LABELS, seg.loaded.spacing)


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
    if seg.probabilities is not None:
        for c, name in TISSUE_LABELS.items():
            outputs[f"prob_{name}"] = save_volume(
                from_ras(seg.probabilities[..., c - 1], ref), ref.affine,
                out_dir / f"prob_{name.lower()}.nii.gz", dtype=np.float32,
            )
    if metrics:
        outputs["metrics"] = write_json(metrics, out_dir / "metrics.json")
    if config.outputs.overlay:
        from .report.figures import overlay_figure

        truth = tissue_truth(seg.loaded)
        base = seg.loaded.images[seg.loaded.modalities[0]].data
        outputs["overlay"] = overlay_figure(
            base,
            seg.tissue,
            out_dir / "overlay.png",
            spacing=seg.loaded.spacing,
            truth=truth,
            label_names=TISSUE_LABELS,
            title=f"{seg.loaded.case.case_id}: tissue",
        )
    return outputs


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
    seg = run_pipeline(case, config)
    metrics = compute_metrics(seg)
    outputs: dict[str, Path] = {}
    if out_dir is not None:
        outputs = write_outputs(seg, Path(out_dir), config, metrics)
    info = dict(seg.info)
    info["timings"] = {k: round(v, 3) for k, v in seg.timings.items()}
    info["brain_volume_ml"] = float(seg.brain_mask.sum() * seg.loaded.grid.voxel_volume / 1000.0)
    info["resampled"] = seg.loaded.resampled
    return CaseResult(
        case_id=case.case_id,
        status="ok",
        seconds=time.perf_counter() - t0,
        outputs=outputs,
        metrics=metrics,
        info=info,
    )
