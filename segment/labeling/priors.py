"""Spatial tissue priors in the mixture: warped atlas probabilities name the components, weight
the E-step and check the labels.

The ICBM 2009a CSF/GM/WM probabilities (:func:`segment.atlas.load_tissue_priors`) are put on
the subject's grid with the template registration of the brain-mask step
(:func:`warp_tissue_priors`). Then, as in SPM's unified segmentation and Atropos' prior mode:

* **naming** (:func:`name_by_priors`): a component is grey matter because its voxels lie where
  grey matter lies, whatever the contrast or the subset of modalities (the intensity rule of
  :mod:`segment.labeling.tissue` is kept as a cross-check: when the two disagree, a QC flag);
* **E-step weights** (:func:`prior_em`): one Gaussian per class, the mixing weight of class ``c``
  at voxel ``i`` is ``alpha_c * ((1 - w) + w * 3 * prior_ic)`` (``w`` = ``mixture.prior_weight``;
  0 is the intensity-only mixture); ``alpha`` is re-estimated as SPM does (Ashburner & Friston
  2005, eq. 27), so a subject with more CSF than the atlas keeps it;
* **posteriors** (:func:`apply_priors`): class probabilities of another model (the partial-volume
  fractions) are multiplied by the same spatial factor and renormalised;
* **agreement** (:func:`prior_agreement`): Dice of each label with the prior's argmax, which
  becomes a QC flag when a class lands where the atlas does not put it.

The registration is affine: the priors are blurred versions of the subject's anatomy, which is
why they enter with a weight and never decide a voxel alone.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
from numba import njit, prange

__all__ = [
    "warp_tissue_priors",
    "name_by_priors",
    "prior_em",
    "robust_class_init",
    "apply_priors",
    "prior_agreement",
    "spatial_factor",
]

#: floor of a prior probability (a voxel where the atlas says 0 can still take the class)
PRIOR_FLOOR = 0.02


def warp_tissue_priors(registration, reference, mask: np.ndarray) -> np.ndarray:
    """ICBM CSF/GM/WM priors of the voxels of ``mask`` on ``reference``'s grid.

    Parameters
    ----------
    registration : segment.io.register.TemplateRegistration
        Template -> subject transform (the brain-mask step's ``info["registration"]``).
    reference : segment.types.Volume
        The subject grid.
    mask : ndarray of bool, shape reference.shape

    Returns
    -------
    ndarray of shape (mask.sum(), 3), float32
        Rows sum to 1. Where the warped atlas covers less than the whole voxel (outside the ICBM
        brain: the extracerebral CSF another tool's mask keeps, or a registration error) the
        rest is spread evenly over the three classes, so the image decides there.
    """
    from ..atlas import load_tissue_priors

    maps = load_tissue_priors()
    p = np.stack([registration.warp(m.data, 1, reference)[mask] for m in maps], axis=1).astype(np.float32)
    np.clip(p, 0.0, 1.0, out=p)
    s = p.sum(axis=1, keepdims=True)
    over = s[:, 0] > 1.0
    p[over] /= s[over]
    p += np.clip(1.0 - p.sum(axis=1, keepdims=True), 0.0, 1.0) / 3.0
    return p


def spatial_factor(priors: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - w) + w * 3 * max(prior, floor)``: 1 everywhere at ``w = 0``, the prior (times 3, so
    a flat prior is 1) at ``w = 1``."""
    w = np.float32(weight)
    p = np.maximum(np.asarray(priors, np.float32), np.float32(PRIOR_FLOOR))
    p *= np.float32(3.0) * w
    p += np.float32(1.0) - w
    return p


def name_by_priors(resp: np.ndarray, priors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tissue class (1 CSF, 2 GM, 3 WM) of every component from where its voxels lie.

    ``M[k, c] = mean_i resp_ik log(3 prior_ic)``: the log prior odds of class ``c`` summed over
    component ``k``'s voxels. One component per class is chosen by the assignment that maximises
    ``sum_k M[k, class(k)]``; extra components take the class of their
    largest ``M``.

    Parameters
    ----------
    resp : ndarray of shape (n_voxels, n_components)
    priors : ndarray of shape (n_voxels, 3)

    Returns
    -------
    classes : ndarray of shape (n_components,), int
    score : ndarray of shape (n_components, 3)
        ``M``.

    Examples
    --------
    >>> pri = np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]])
    >>> resp = np.array([[0, 0, 1.0], [1.0, 0, 0], [0, 1.0, 0]])  # component 2 lives where CSF does
    >>> name_by_priors(resp, pri)[0].tolist()
    [2, 3, 1]
    """
    resp = np.asarray(resp, np.float64)
    k = resp.shape[1]
    if k < 3:
        raise ValueError(f"need at least 3 components to name CSF, GM and WM, got {k}")
    lp = np.log(3.0 * np.maximum(np.asarray(priors, np.float64), PRIOR_FLOOR))
    m = (resp.T @ lp) / resp.shape[0]
    best, best_score = None, -np.inf
    for comps in itertools.permutations(range(k), 3):
        score = m[comps[0], 0] + m[comps[1], 1] + m[comps[2], 2]
        if score > best_score:
            best, best_score = comps, score
    classes = np.argmax(m, axis=1) + 1
    for c, comp in enumerate(best):
        classes[comp] = c + 1
    return classes.astype(np.int64), m


def name_by_affinity(resp: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Tissue class of every component by its mean prior relative to the class's mean prior over
    the brain (a small class is not out-voted by a large one); the assignment maximises the sum
    of the log ratios, extra components take their largest ratio."""
    resp = np.asarray(resp, np.float64)
    priors = np.asarray(priors, np.float64)
    a = (resp.T @ priors) / np.maximum(resp.sum(axis=0), 1e-12)[:, None]
    a /= np.maximum(priors.mean(axis=0), 1e-12)[None, :]
    la = np.log(np.maximum(a, 1e-12))
    k = resp.shape[1]
    best = max(itertools.permutations(range(k), 3), key=lambda c: la[c[0], 0] + la[c[1], 1] + la[c[2], 2])
    classes = np.argmax(a, axis=1) + 1
    for c, comp in enumerate(best):
        classes[comp] = c + 1
    return classes.astype(np.int64)


def _logpdf(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    d = x.shape[1]
    chol = np.linalg.cholesky(cov)
    z = (x - mean) @ np.linalg.inv(chol).T  # whitened rows: one small inverse, one product
    return -0.5 * (np.einsum("ij,ij->i", z, z) + d * np.log(2 * np.pi)) - np.sum(np.log(np.diag(chol)))


#: share of the voxels, inside every class's robust ellipsoid, that robust_class_init keeps per class
ROBUST_COVERAGE = 0.95

#: an atypical class is modelled when at least this share of the voxels fits no tissue class
ATYPICAL_MIN_SHARE = 0.01


def _mahalanobis2(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    z = (x - mean) @ np.linalg.inv(np.linalg.cholesky(cov)).T
    return np.einsum("ij,ij->i", z, z)


def _weighted_moments(x: np.ndarray, w: np.ndarray, reg_covar: float) -> tuple[np.ndarray, np.ndarray]:
    sw = max(float(w.sum()), 1e-12)
    m = (w[:, None] * x).sum(axis=0) / sw
    diff = x - m
    return m, (w[:, None] * diff).T @ diff / sw + np.eye(x.shape[1]) * reg_covar


def _weighted_quantile(v: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(v)
    cw = np.cumsum(w[order])
    return float(v[order][min(int(np.searchsorted(cw, q * cw[-1])), v.size - 1)])


def robust_class_init(
    x: np.ndarray,
    priors: np.ndarray,
    *,
    power: float = 4.0,
    coverage: float = ROBUST_COVERAGE,
    rounds: int = 5,
    reg_covar: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class Gaussians from where the atlas puts each class, robust to a lesion.

    As SPM initialises its tissue classes from the priors (no component to name: a class is GM
    because it is estimated where GM lives), class ``c`` is estimated from the voxels weighted by
    ``prior_c ** power`` (the confident voxels: deep WM, ventricles, cortex). A tumor or lesion
    inside the WM prior would pull plain weighted moments, so the estimate starts from the
    weighted median and MAD of every modality, and the weighted moments are then re-estimated for
    ``rounds`` rounds on the voxels inside the class's ``coverage`` ellipsoid only (a reweighted
    minimum-covariance estimate, with the consistency factor that undoes the trimming), as in Van
    Leemput et al.'s (2001) outlier detection. ``rounds=0`` gives the plain weighted moments.

    Returns
    -------
    means : ndarray of shape (3, d)
    covariances : ndarray of shape (3, d, d)
    atypical : ndarray of shape (n,), bool
        Voxels outside every class's ellipsoid: intensities no tissue class explains.
    """
    from scipy.stats import chi2

    x = np.asarray(x, np.float64)
    pw = np.maximum(np.asarray(priors, np.float64), 0.0) ** power
    d = x.shape[1]
    thr = float(chi2.ppf(coverage, d))
    factor = coverage / float(chi2.cdf(thr, d + 2))  # E[trimmed covariance] = cov / factor
    # start from the weighted median and MAD (robust to a lesion of up to half a class's
    # weight), then the trimmed moments restore the correlations between modalities
    means = np.empty((3, d))
    covs = np.empty((3, d, d))
    for c in range(3):
        if rounds > 0:
            med = np.array([_weighted_quantile(x[:, j], pw[:, c], 0.5) for j in range(d)])
            mad = np.array([_weighted_quantile(np.abs(x[:, j] - med[j]), pw[:, c], 0.5) for j in range(d)])
            means[c], covs[c] = med, np.diag((1.4826 * mad) ** 2 + reg_covar)
        else:
            means[c], covs[c] = _weighted_moments(x, pw[:, c], reg_covar)
    inside = np.ones((x.shape[0], 3), bool)
    for _ in range(rounds):
        inside = np.stack([_mahalanobis2(x, means[c], covs[c]) < thr for c in range(3)], axis=1)
        for c in range(3):
            w = pw[:, c] * inside[:, c]
            if w.sum() <= 0:
                continue
            means[c], covs[c] = _weighted_moments(x, w, reg_covar)
            covs[c] = (covs[c] - np.eye(d) * reg_covar) * factor + np.eye(d) * reg_covar
    inside = np.stack([_mahalanobis2(x, means[c], covs[c]) < thr for c in range(3)], axis=1)
    return means, covs, ~inside.any(axis=1)


def prior_em(
    x: np.ndarray,
    priors: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    weight: float,
    *,
    atypical: tuple[np.ndarray, np.ndarray] | None = None,
    sample_weight: np.ndarray | None = None,
    max_iter: int = 100,
    tol: float = 1e-5,
    reg_covar: float = 1e-6,
) -> dict[str, np.ndarray]:
    """EM of one full-covariance Gaussian per class with per-voxel mixing weights from the priors.

    Parameters
    ----------
    x : ndarray of shape (n, d)
    priors : ndarray of shape (n, 3)
    means, covariances : initial class parameters, shapes (3, d) and (3, d, d)
    weight : float in [0, 1]
        ``mixture.prior_weight``.
    atypical : (mean, covariance), optional
        Initial Gaussian of a fourth, **atypical** class with a flat spatial prior (a tumor or
        lesion the tissue classes should not absorb: Prastawa et al. 2004, Van Leemput et al.
        2001). Its voxels do not pull the tissue classes' parameters; the tissue posteriors
        (:func:`class_posteriors`) still label them with the best tissue class.
    sample_weight : ndarray of shape (n,), optional

    Returns
    -------
    dict with ``means`` (3, d), ``covariances`` (3, d, d), ``alpha`` (3 or 4,), ``resp``
    (n, 3 or 4), ``tissue_share`` (3,: the tissue classes' shares of the typical voxels),
    ``atypical_share`` (mean posterior of the atypical class, 0 without it), ``atypical_mean``
    and ``atypical_covariance`` (or None), ``n_iter`` and ``log_likelihood`` (mean per sample).
    """
    x = np.asarray(x, np.float64)
    n, d = x.shape
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
    q = spatial_factor(priors, weight).astype(np.float64)
    k = 3
    means = np.array(means, np.float64)
    covs = np.array(covariances, np.float64)
    if atypical is not None:
        k = 4
        q = np.concatenate([q, np.ones((n, 1))], axis=1)
        means = np.concatenate([means, np.asarray(atypical[0], np.float64).reshape(1, d)])
        covs = np.concatenate([covs, np.asarray(atypical[1], np.float64).reshape(1, d, d)])
    alpha = np.full(k, 1.0 / k)
    eye = np.eye(d) * reg_covar
    logq = np.log(q)
    prev = -np.inf
    resp = np.full((n, k), 1.0 / k)
    winv = np.empty((k, d, d))
    logc = np.empty(k)
    it = 0
    ll = prev
    for it in range(1, max_iter + 1):
        for c in range(k):
            chol = np.linalg.cholesky(covs[c])
            winv[c] = np.linalg.inv(chol)
            logc[c] = -0.5 * d * np.log(2 * np.pi) - np.sum(np.log(np.diag(chol)))
        # E-step, log-likelihood, responsibilities' sums and SPM's alpha denominator in one pass
        ll, nk, sx, denom = _prior_e_step(x, q, logq, np.log(alpha), alpha, means, winv, logc, sw, resp)
        ll /= sw.sum()
        nk += 1e-12
        means = sx / nk[:, None]
        covs = _prior_covariances(x, resp, sw, means) / nk[:, None, None] + eye
        # SPM's update of the mixing proportions under spatial priors
        alpha = nk / np.maximum(denom, 1e-12)
        alpha /= alpha.sum()
        if abs(ll - prev) < tol:
            break
        prev = ll
    tissue = (resp[:, :3] * sw[:, None]).sum(axis=0)
    return {"means": means[:3], "covariances": covs[:3], "alpha": alpha, "resp": resp, "n_iter": it,
            "log_likelihood": ll, "tissue_share": tissue / max(float(tissue.sum()), 1e-12),
            "atypical_share": float((resp[:, 3] * sw).sum() / sw.sum()) if k == 4 else 0.0,
            "atypical_mean": means[3] if k == 4 else None,
            "atypical_covariance": covs[3] if k == 4 else None}


#: Rows per chunk of the class mixture's parallel passes (fixed: the sums do not depend on the
#: number of threads).
EM_CHUNK = 2048


@njit(parallel=True, cache=True)
def _prior_e_step(x, q, logq, log_alpha, alpha, means, winv, logc, sw, resp):
    """One E-step of :func:`prior_em` over the rows of ``x``.

    Writes the responsibilities into ``resp``; returns the weighted log-likelihood sum, the
    classes' weighted responsibility sums ``nk`` and first moments ``sx``, and SPM's alpha
    denominator ``sum_i sw_i q_ic / sum_c alpha_c q_ic``. Chunks of ``EM_CHUNK`` rows sum into
    their own rows, merged in chunk order: the same result for any number of threads.
    """
    n, d = x.shape
    k = means.shape[0]
    n_chunks = (n + EM_CHUNK - 1) // EM_CHUNK
    acc = np.zeros((n_chunks, k * (d + 2) + 1))
    for ch in prange(n_chunks):
        lp = np.empty(k)
        diff = np.empty(d)
        row = acc[ch]
        for i in range(ch * EM_CHUNK, min(n, (ch + 1) * EM_CHUNK)):
            mx = -np.inf
            for c in range(k):
                for b in range(d):
                    diff[b] = x[i, b] - means[c, b]
                qq = 0.0
                for a in range(d):
                    z = 0.0
                    for b in range(a + 1):
                        z += winv[c, a, b] * diff[b]
                    qq += z * z
                v = -0.5 * qq + logc[c] + log_alpha[c] + logq[i, c]
                lp[c] = v
                if v > mx:
                    mx = v
            s = 0.0
            nrm = 0.0
            for c in range(k):
                e = math.exp(lp[c] - mx)
                lp[c] = e
                s += e
                nrm += alpha[c] * q[i, c]
            w = sw[i]
            row[0] += w * (math.log(s) + mx - math.log(nrm))
            for c in range(k):
                r = lp[c] / s
                resp[i, c] = r
                rw = r * w
                o = 1 + c * (d + 2)
                row[o] += rw
                for b in range(d):
                    row[o + 1 + b] += rw * x[i, b]
                row[o + 1 + d] += w * q[i, c] / nrm
    tot = np.zeros(k * (d + 2) + 1)
    for ch in range(n_chunks):
        tot += acc[ch]
    nk = np.empty(k)
    sx = np.empty((k, d))
    denom = np.empty(k)
    for c in range(k):
        o = 1 + c * (d + 2)
        nk[c] = tot[o]
        sx[c] = tot[o + 1:o + 1 + d]
        denom[c] = tot[o + 1 + d]
    return tot[0], nk, sx, denom


@njit(parallel=True, cache=True)
def _prior_covariances(x, resp, sw, means):
    """``sum_i sw_i resp_ic (x_i - mu_c)(x_i - mu_c)^T`` per class, shape (k, d, d) (chunks as in
    :func:`_prior_e_step`)."""
    n, d = x.shape
    k = means.shape[0]
    n_chunks = (n + EM_CHUNK - 1) // EM_CHUNK
    acc = np.zeros((n_chunks, k, d, d))
    for ch in prange(n_chunks):
        diff = np.empty(d)
        out = acc[ch]
        for i in range(ch * EM_CHUNK, min(n, (ch + 1) * EM_CHUNK)):
            for c in range(k):
                rw = resp[i, c] * sw[i]
                for b in range(d):
                    diff[b] = x[i, b] - means[c, b]
                for a in range(d):
                    ra = rw * diff[a]
                    for b in range(a + 1):
                        out[c, a, b] += ra * diff[b]
    out = np.zeros((k, d, d))
    for ch in range(n_chunks):
        out += acc[ch]
    for c in range(k):
        for a in range(d):
            for b in range(a):
                out[c, b, a] = out[c, a, b]
    return out

def class_posteriors(x: np.ndarray, priors: np.ndarray, fit: dict[str, np.ndarray], weight: float,
                     chunk: int = 500_000) -> np.ndarray:
    """Posteriors (n, 3) of the classes of :func:`prior_em`'s result at voxels ``x``."""
    x = np.asarray(x, np.float64)
    out = np.empty((x.shape[0], 3), np.float32)
    la = np.log(np.asarray(fit["alpha"])[:3])[None, :]
    for s in range(0, x.shape[0], chunk):
        xs = x[s:s + chunk]
        logp = np.stack([_logpdf(xs, fit["means"][c], fit["covariances"][c]) for c in range(3)], axis=1)
        logp += la + np.log(spatial_factor(priors[s:s + chunk], weight))
        logp -= logp.max(axis=1, keepdims=True)
        e = np.exp(logp)
        out[s:s + chunk] = e / e.sum(axis=1, keepdims=True)
    return out


def apply_priors(probs: np.ndarray, priors: np.ndarray, weight: float) -> np.ndarray:
    """``probs * spatial_factor(priors, weight)``, rows renormalised (float32)."""
    p = np.asarray(probs, np.float32) * spatial_factor(priors, weight)
    p /= np.maximum(p.sum(axis=1, keepdims=True), np.float32(1e-30))
    return p


def prior_agreement(labels: np.ndarray, priors: np.ndarray) -> dict[str, float]:
    """Dice of each label (1..3) with the argmax of the priors, on the same voxels."""
    from ..types import TISSUE_LABELS

    pl = np.argmax(priors, axis=1) + 1
    out = {}
    for c, name in TISSUE_LABELS.items():
        a, b = labels == c, pl == c
        den = int(a.sum() + b.sum())
        out[name] = round(2.0 * float((a & b).sum()) / den, 4) if den else 1.0
    return out
