"""Healthy + tumor Gaussian mixture with a latent spatial tumor prior and an MRF.

The model of :func:`fit_tumor_mixture` (after Prastawa et al. 2004 and Menze et al. 2010/2016):

* **Healthy classes** CSF, GM, WM: one full-covariance Gaussian each over all modalities
  present, fitted by EM on the brain *outside* the region where a tumor may lie, so the tumor
  cannot pull them. Their per-voxel mixing weights are a prior array (e.g. warped atlas
  probabilities), flat (the fitted global weights) when none is given.
* **Tumor classes** ED (edema), ET (enhancing), NCR (necrotic / cystic / non-enhancing core):
  Gaussians started from the voxels whose *signature* fits them (relative to the healthy WM and
  GM: FLAIR/T2 above GM -> edema; T1c above WM, or T1c - T1 above healthy -> enhancing; T1c
  below GM and not CSF-like, or inside the enhancing rim -> core), then re-estimated by EM.
  They only exist where the latent tumor prior ``alpha`` is positive: ``alpha`` starts flat
  (``alpha0``) inside the reach region, 0 elsewhere, and is re-estimated each iteration as the
  smoothed tumor posterior (the latent atlas of Menze et al.), clipped to ``[alpha_min,
  alpha_max]``.
* **Enclosed core.** A core enclosed by enhancement (ET closed, its holes filled in 3-D and per
  slice; the brain surface caps a rim that reaches it) cannot be healthy tissue or edema: its
  prior is given to ET and NCR only. This is what turns a FLAIR-dark, CSF-like cyst inside an
  enhancing rim into necrosis.
* **MRF.** A mean-field Potts term couples each voxel's class with its 26 neighbours' current
  posteriors (weight ``beta``).

Class names are fixed by the signature each class was started from and checked afterwards by
:func:`name_tumor_classes` (ET = the most enhancing, NCR = the darkest on T1c, ED = the rest); no
name depends on an index or on the seed. Everything is deterministic: the only random step, the
subsample of healthy voxels used to fit the healthy Gaussians, is drawn from ``seed``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "HEALTHY",
    "TUMOR",
    "fit_healthy",
    "name_healthy_classes",
    "name_tumor_classes",
    "TumorMixtureResult",
    "fit_tumor_mixture",
]

HEALTHY = ("CSF", "GM", "WM")
TUMOR = ("NCR", "ED", "ET")

#: Sign of each modality in the CSF-likeness and the WM-vs-GM scores used to name healthy classes.
_CSF_SIGN = {"t1": -1.0, "t1c": -1.0, "t2": 1.0, "flair": -1.0}
_WM_SIGN = {"t1": 1.0, "t1c": 1.0, "t2": -1.0, "flair": -1.0}


# --------------------------------------------------------------------------- Gaussians


def _logpdf(X: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Log density of N(mean, cov) at the rows of X (float64 out)."""
    d = X.shape[1]
    L = np.linalg.cholesky(cov)
    Linv = np.linalg.inv(L).astype(X.dtype)
    Z = (X - mean.astype(X.dtype)) @ Linv.T  # (N, d)
    maha = np.einsum("ij,ij->i", Z, Z)
    logdet = 2.0 * np.log(np.diag(L)).sum()
    return -0.5 * (d * np.log(2 * np.pi) + logdet + maha)


def _moments(X: np.ndarray, w: np.ndarray, reg: float) -> tuple[np.ndarray, np.ndarray]:
    s = float(w.sum())
    if s <= 0:
        raise ValueError("empty class")
    mu = (w @ X) / s
    D = X - mu
    cov = (D.T * w) @ D / s
    cov = 0.5 * (cov + cov.T) + reg * np.eye(X.shape[1])
    return mu, cov


def name_healthy_classes(means: np.ndarray, modalities: Sequence[str]) -> list[int]:
    """Indices of the CSF, GM and WM components among three healthy means, by signature.

    CSF is the component with the highest CSF-likeness (dark on FLAIR, T1 and T1c, bright on
    T2); of the other two, WM is the one with the higher WM score (bright on T1/T1c, dark on
    T2/FLAIR). Independent of the components' order.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.array([[0.5, -0.2], [-3.0, -2.5], [-0.3, 0.4]])  # flair, t1c
    >>> name_healthy_classes(m, ["flair", "t1c"])  # CSF, GM, WM
    [1, 0, 2]
    """
    c = np.array([_CSF_SIGN[m] for m in modalities])
    g = np.array([_WM_SIGN[m] for m in modalities])
    csf = int(np.argmax(means @ c))
    rest = [k for k in range(len(means)) if k != csf]
    wm = max(rest, key=lambda k: float(means[k] @ g))
    gm = [k for k in rest if k != wm][0]
    return [csf, gm, wm]


def name_tumor_classes(means: Mapping[str, np.ndarray], modalities: Sequence[str], wm: np.ndarray) -> dict[str, str]:
    """Rename fitted tumor classes by signature: returns {current name: signature name}.

    ET is the class most enhancing over healthy WM (T1c - T1 when T1 exists, else T1c); of the
    others NCR is the darker on T1c (T1 when T1c is absent), ED the brighter on FLAIR. Classes
    that are absent keep their names. Independent of the order of ``means``.

    Examples
    --------
    >>> import numpy as np
    >>> m = {"NCR": np.array([2.0, 2.0]), "ED": np.array([1.5, -1.0]), "ET": np.array([2.5, 0.0])}
    >>> sorted(name_tumor_classes(m, ["flair", "t1c"], np.array([0.0, 0.0])).items())
    [('ED', 'NCR'), ('ET', 'ED'), ('NCR', 'ET')]
    """
    mods = list(modalities)
    names = sorted(means)  # alphabetical: the result never depends on the dict's order
    if len(names) <= 1:
        return {n: n for n in names}

    def enh(v):
        if "t1c" in mods and "t1" in mods:
            return (v[mods.index("t1c")] - wm[mods.index("t1c")]) - (v[mods.index("t1")] - wm[mods.index("t1")])
        if "t1c" in mods:
            return v[mods.index("t1c")] - wm[mods.index("t1c")]
        return -np.inf

    out: dict[str, str] = {}
    rest = list(names)
    if "ET" in means and "t1c" in mods:
        et = max(rest, key=lambda n: (enh(means[n]), n))
        out[et] = "ET"
        rest.remove(et)
    if len(rest) == 2 and "NCR" in means and "ED" in means:
        dark = "t1c" if "t1c" in mods else ("t1" if "t1" in mods else None)
        if dark is not None:
            j = mods.index(dark)
            ncr = min(rest, key=lambda n: (means[n][j], n))
        else:
            j = mods.index("flair")
            ncr = min(rest, key=lambda n: (means[n][j], n))
        out[ncr] = "NCR"
        rest.remove(ncr)
        out[rest[0]] = "ED"
    else:
        for n in rest:
            out[n] = n
    return out


def fit_healthy(
    X: np.ndarray, modalities: Sequence[str], *, seed: int = 0, max_samples: int = 60_000, iterations: int = 40,
    reg: float = 1e-3, trim: float = 0.05,
) -> dict[str, object]:
    """Three-Gaussian EM on healthy brain voxels; returns means, covs and weights as CSF, GM, WM.

    Started from signatures (CSF = the 12 % most CSF-like voxels, the rest split at the median of
    the WM score), so neither the result nor the names depend on a random start. At most
    ``max_samples`` rows (a seeded subsample) are used.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.shape[0] > max_samples:
        rng = np.random.default_rng(seed)
        X = X[np.sort(rng.choice(X.shape[0], max_samples, replace=False))]
    c = X @ np.array([_CSF_SIGN[m] for m in modalities])
    g = X @ np.array([_WM_SIGN[m] for m in modalities])
    csf0 = c >= np.quantile(c, 0.88)
    gmed = np.median(g[~csf0])
    R = np.stack([csf0, ~csf0 & (g < gmed), ~csf0 & (g >= gmed)], axis=1).astype(np.float64)
    means = np.zeros((3, X.shape[1]))
    covs = np.zeros((3, X.shape[1], X.shape[1]))
    w = R.mean(0)
    prev = -np.inf
    for _ in range(iterations):
        for k in range(3):
            means[k], covs[k] = _moments(X, R[:, k], reg)
        w = np.maximum(R.mean(0), 1e-6)
        logp = np.stack([np.log(w[k]) + _logpdf(X, means[k], covs[k]) for k in range(3)], axis=1)
        mx = logp.max(1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(logp - mx).sum(1))
        R = np.exp(logp - lse[:, None])
        if trim > 0:  # trimmed EM: the least likely voxels (outliers, tails) do not shape the classes
            R[lse < np.quantile(lse, trim)] = 0.0
        ll = float(lse.mean())
        if ll - prev < 1e-6:
            break
        prev = ll
    order = name_healthy_classes(means, modalities)
    return {"means": means[order], "covs": covs[order], "weights": w[order] / w[order].sum(), "loglik": prev}


# --------------------------------------------------------------------------- geometry


def _ball(radius_mm: float, spacing) -> np.ndarray:
    r = [max(int(np.floor(radius_mm / s)), 0) for s in spacing]
    grids = np.meshgrid(*[np.arange(-ri, ri + 1) * s for ri, s in zip(r, spacing)], indexing="ij")
    return sum(q * q for q in grids) <= radius_mm * radius_mm + 1e-6


def _fill_all_axes(mask: np.ndarray) -> np.ndarray:
    out = ndi.binary_fill_holes(mask)
    for ax in range(3):
        for i in np.flatnonzero(out.any(axis=tuple(a for a in range(3) if a != ax))):
            sl = [slice(None)] * 3
            sl[ax] = i
            sl = tuple(sl)
            out[sl] |= ndi.binary_fill_holes(out[sl])
    return out


def enclosed_core(et: np.ndarray, brain: np.ndarray, spacing, close_mm: float, cap_mm: float) -> np.ndarray:
    """Voxels enclosed by the enhancing rim ``et`` (not ET themselves), within ``brain``.

    ET is closed with a ball of ``close_mm``; where the rim reaches the brain surface, the
    outside of the brain within ``cap_mm`` of ET closes it (a cyst at the cortex is enclosed by
    its rim and the surface). Holes are filled in 3-D and in every slice along each axis.
    """
    if not et.any():
        return np.zeros_like(et)
    pad = int(np.ceil(max(close_mm, cap_mm) / min(spacing))) + 2
    idx = np.nonzero(et)
    box = tuple(slice(max(int(i.min()) - pad, 0), min(int(i.max()) + pad + 1, n)) for i, n in zip(idx, et.shape))
    e = et[box]
    b = brain[box]
    near = ndi.distance_transform_edt(~e, sampling=spacing) <= cap_mm
    wall = ndi.binary_closing(e, structure=_ball(close_mm, spacing)) | e | (near & ~b)
    core = _fill_all_axes(wall) & ~e & b
    core &= ~(near & ~b)
    out = np.zeros_like(et)
    out[box] = core
    return out


# --------------------------------------------------------------------------- the joint model


@dataclass
class TumorMixtureResult:
    """Posteriors (K, X, Y, Z) over ``classes`` inside ``box``, plus parameters and flags."""

    classes: list[str]
    posteriors: np.ndarray  # float32, (K,) + box shape, sums to 1 over K inside the brain
    box: tuple[slice, ...]
    means: dict[str, list[float]]
    info: dict[str, object] = field(default_factory=dict)


def _mrf_field(Q: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Mean of each class's posterior over the 26 neighbours (inside the brain)."""
    out = np.empty_like(Q)
    bf = brain.astype(np.float32)
    den = ndi.uniform_filter(bf, 3, mode="constant") * 27.0 - bf
    den = np.maximum(den, 1.0)
    for k in range(Q.shape[0]):
        out[k] = (ndi.uniform_filter(Q[k] * bf, 3, mode="constant") * 27.0 - Q[k] * bf) / den
    return out


def _smooth_in(a: np.ndarray, brain: np.ndarray, sigma_mm: float, spacing) -> np.ndarray:
    sig = [sigma_mm / s for s in spacing]
    bf = brain.astype(np.float32)
    num = ndi.gaussian_filter(a * bf, sig, mode="constant")
    den = ndi.gaussian_filter(bf, sig, mode="constant")
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 1e-3)
    return out


def fit_tumor_mixture(
    features: Mapping[str, np.ndarray],
    brain: np.ndarray,
    reach: np.ndarray,
    spacing,
    *,
    healthy: Mapping[str, object],
    healthy_prior: np.ndarray | None = None,
    tumor_classes: Sequence[str] = TUMOR,
    init: Mapping[str, np.ndarray] | None = None,
    alpha0: float = 0.5,
    alpha_min: float = 0.02,
    alpha_max: float = 0.95,
    alpha_smooth_mm: float = 2.0,
    beta: float = 1.5,
    iterations: int = 12,
    core_rounds: int = 2,
    close_mm: float = 3.0,
    cap_mm: float = 4.0,
    min_et_mm3: float = 50.0,
    reg: float = 1e-2,
) -> TumorMixtureResult:
    """EM over healthy (fixed) and tumor (estimated) classes inside the bounding box of ``reach``.

    Parameters
    ----------
    features : mapping of str to ndarray of shape (X, Y, Z)
        Normalised modalities (canonical order is taken from ``healthy["modalities"]``).
    brain, reach : ndarray of shape (X, Y, Z), bool
        Brain mask; where tumor classes may exist (their prior is 0 outside).
    healthy : mapping
        Output of :func:`fit_healthy` (CSF, GM, WM) plus ``modalities``.
    healthy_prior : ndarray of shape (X, Y, Z, 3), optional
        Per-voxel CSF/GM/WM prior probabilities; flat (the fitted weights) when None.
    tumor_classes : sequence of str
        Subset of ``NCR``, ``ED``, ``ET`` the modalities support.
    init : mapping of str to bool ndarray of shape (X, Y, Z)
        Voxels whose signature starts each tumor class.
    """
    mods = list(healthy["modalities"])
    pad = 2
    idx = np.nonzero(reach)
    box = tuple(slice(max(int(i.min()) - pad, 0), min(int(i.max()) + pad + 1, n)) for i, n in zip(idx, reach.shape))
    b = brain[box]
    r = reach[box] & b
    X = np.stack([np.asarray(features[m][box], dtype=np.float64)[b] for m in mods], axis=1)
    n = X.shape[0]
    classes = list(HEALTHY) + [c for c in TUMOR if c in tumor_classes]
    K = len(classes)
    nh = len(HEALTHY)
    # healthy log-likelihoods are fixed
    logL = np.empty((n, K))
    for k in range(nh):
        logL[:, k] = _logpdf(X, healthy["means"][k], healthy["covs"][k])
    if healthy_prior is not None:
        hp = np.asarray(healthy_prior, dtype=np.float64)[box][b]
        hp = np.clip(hp, 1e-4, None)
        hp /= hp.sum(1, keepdims=True)
    else:
        hp = np.broadcast_to(np.asarray(healthy["weights"], dtype=np.float64), (n, nh))
    # tumor classes started from their signature voxels
    means: dict[str, np.ndarray] = {}
    covs: dict[str, np.ndarray] = {}
    tw: dict[str, float] = {}
    info: dict[str, object] = {"flags": []}
    init = init or {}
    dropped = []
    for c in classes[nh:]:
        sel = init.get(c)
        sel = sel[box][b] if sel is not None else np.zeros(n, bool)
        if np.count_nonzero(sel) < max(10, X.shape[1] + 2):
            dropped.append(c)
            continue
        means[c], covs[c] = _moments(X[sel], np.ones(int(sel.sum())), reg)
        tw[c] = float(sel.sum())
    for c in dropped:
        classes.remove(c)
        info["flags"].append(f"tumor class {c}: too few voxels with its signature, not modelled")
    K = len(classes)
    logL = logL[:, :K]
    tcls = classes[nh:]
    if not tcls:
        Q = np.zeros((K,) + b.shape, np.float32)
        P = hp / hp.sum(1, keepdims=True)
        Q[:, b] = P.T
        return TumorMixtureResult(classes, Q, box, {}, info)
    s = sum(tw.values())
    tw = {c: v / s for c, v in tw.items()}
    alpha = np.where(r, alpha0, 0.0).astype(np.float32)
    core = np.zeros(b.shape, bool)
    Qv = np.zeros((n, K))
    vv = float(np.prod(spacing))
    total_iter = iterations * (core_rounds + 1)
    history = []
    for it in range(total_iter):
        for j, c in enumerate(tcls):
            logL[:, nh + j] = _logpdf(X, means[c], covs[c])
        a = alpha[b].astype(np.float64)
        incore = core[b]
        prior = np.empty((n, K))
        prior[:, :nh] = (1.0 - a)[:, None] * hp
        for j, c in enumerate(tcls):
            prior[:, nh + j] = a * tw[c]
        if incore.any():  # enclosed by enhancement: only ET or NCR
            for j, c in enumerate(classes):
                if c not in ("ET", "NCR"):
                    prior[incore, j] = 0.0
            prior[incore] = np.where(prior[incore].sum(1, keepdims=True) > 0, prior[incore], 1.0)
        logp = logL + np.log(np.maximum(prior, 1e-300))
        if it > 0 and beta > 0:
            Qmap = np.zeros((K,) + b.shape, np.float32)
            Qmap[:, b] = Qv.T
            F = _mrf_field(Qmap, b)
            logp = logp + beta * F[:, b].T
        logp[prior <= 0] = -np.inf
        mx = logp.max(1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(logp - mx).sum(1))
        Qv = np.exp(logp - lse[:, None])
        # M-step: tumor parameters only
        for j, c in enumerate(tcls):
            wj = Qv[:, nh + j]
            if wj.sum() * vv < 1.0:
                continue
            means[c], covs[c] = _moments(X, wj, reg)
        sw = {c: float(Qv[:, nh + j][a > 0].sum()) for j, c in enumerate(tcls)}
        tot = sum(sw.values())
        if tot > 0:
            tw = {c: max(v / tot, 1e-3) for c, v in sw.items()}
        # latent tumor prior: smoothed tumor posterior, clipped, zero outside the reach
        qt = np.zeros(b.shape, np.float32)
        qt[b] = Qv[:, nh:].sum(1)
        alpha = np.where(r, np.clip(_smooth_in(qt, b, alpha_smooth_mm, spacing), alpha_min, alpha_max), 0.0)
        alpha = alpha.astype(np.float32)
        history.append(round(float(qt.sum() * vv / 1000.0), 2))
        # after each round: the core enclosed by enhancement
        if "ET" in tcls and (it + 1) % iterations == 0 and it + 1 < total_iter:
            lab = np.argmax(Qv, 1)
            et = np.zeros(b.shape, bool)
            et[b] = lab == classes.index("ET")
            et = _remove_small(et, min_et_mm3, vv)
            core = enclosed_core(et, b, spacing, close_mm, cap_mm) & r
    # names checked by signature (the fit may have drifted)
    rename = name_tumor_classes(means, mods, np.asarray(healthy["means"][2]))
    if any(k != v for k, v in rename.items()):
        info["flags"].append(f"tumor classes renamed by signature after the fit: {rename}")
        newc = list(classes)
        for j, c in enumerate(classes):
            if c in rename:
                newc[j] = rename[c]
        classes = newc
        means = {rename.get(k, k): v for k, v in means.items()}
    Q = np.zeros((K,) + b.shape, np.float32)
    Q[:, b] = Qv.T
    info["tumor_ml_per_iteration"] = history
    info["core_ml"] = round(float(core.sum() * vv / 1000.0), 2)
    info["tumor_weights"] = {c: round(v, 3) for c, v in tw.items()}
    return TumorMixtureResult(
        classes, Q, box, {c: [round(float(x), 3) for x in v] for c, v in means.items()}, info
    )


def _remove_small(mask: np.ndarray, min_mm3: float, voxel_mm3: float) -> np.ndarray:
    if min_mm3 <= 0 or not mask.any():
        return mask
    lab, n = ndi.label(mask, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(lab.ravel())
    keep = sizes * voxel_mm3 >= min_mm3
    keep[0] = False
    return keep[lab]
