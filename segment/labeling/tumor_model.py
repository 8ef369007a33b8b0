"""Healthy + tumor Gaussian mixture with a latent spatial tumor prior and an MRF.

The model of :func:`fit_tumor_mixture` (after Prastawa et al. 2004 and Menze et al. 2010/2016):

* **Healthy classes** CSF, GM, WM: one full-covariance Gaussian each over all modalities
  present, fitted by EM on the brain *outside* the region where a tumor may lie, so the tumor
  cannot pull them. Their per-voxel mixing weights are a prior array (e.g. warped atlas
  probabilities), flat (the fitted global weights) when none is given. Optionally a fourth
  healthy class ``VES`` (:func:`fit_healthy_enhancing`) for the healthy brain's enhancing
  structures, with its share of the healthy brain as its weight everywhere: the tumor is what a
  *complete* healthy model cannot explain, and vessels are part of a healthy brain.
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
  enhancing rim into necrosis. What the tumor as a whole encloses (thick blobs, see
  :func:`enclosed_blobs`) is given to the tumor classes, unless it is a section of a larger CSF
  space (a ventricle through edema).
* **Local class proportions.** A tumor class's mixing weight is, in part (``local_weight``),
  its share of the tumor posterior smoothed over ``local_mm`` around the voxel (spatially
  varying mixing proportions, the per-class form of the latent atlas): a non-enhancing core
  next to the enhancing rim is drawn to the core class, edema far from it to edema.
* **CSF/edema partial volume.** Where a ventricle or a sulcus meets edema, the voxels are a
  blur of the two; they lie between CSF and edema on FLAIR and T1c, where the core class
  would take them. A class of their own (mean half-way between healthy CSF and the current
  edema, covariance of an even mix plus the spread of the mixing fraction) explains them; its
  prior exists only where a CSF and an edema posterior are both within one voxel, so a thick
  cyst is never a "mix". Its voxels are no tumor in the hard labels; in the posterior maps
  half of its posterior goes to edema.
* **WM/edema partial volume.** The same at the edema's outline in white matter (``MIX_WM``,
  prior where a WM and an edema posterior are within one voxel). Without it, with T1c and FLAIR
  alone, a WM voxel in the bright tail of T1c that is half edema on FLAIR looks like weak
  enhancement, and the enhancing class widens over the whole outline (a T1c + FLAIR phantom:
  14.5 mL of healthy WM as ET around 8.7 mL of true ET). Its voxels join the whole tumor as edema
  where they are FLAIR-brighter than healthy grey matter (the outline rule of
  :func:`segment.labeling.tumor.segment_tumor`), never the enhancing tumor or the core.
* **Enhancement the tumor surrounds.** Between rounds, an enhancing island of which less than
  ``et_body_fraction`` of the brain around it is tumor (vessels, the falx, the dura touching the
  edema; :func:`surrounded`) loses the ET class, so ET is re-fitted on the tumor's own rim.
* **MRF.** A mean-field Potts term couples each voxel's class with its 26 neighbours' current
  posteriors (weight ``beta``).

Class names are fixed by the signature each class was started from and checked afterwards by
:func:`name_tumor_classes` (ET = the most enhancing, NCR = the darkest on T1c, ED = the rest); no
name depends on an index or on the seed. Everything is deterministic: the only random step, the
subsample of healthy voxels used to fit the healthy Gaussians, is drawn from ``seed``.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import math

import numpy as np
from numba import njit, prange
from scipy import ndimage as ndi

from .. import morphology as morph
from .mrf import _mean_field

__all__ = [
    "HEALTHY",
    "TUMOR",
    "fit_healthy",
    "name_healthy_classes",
    "name_tumor_classes",
    "TumorMixtureResult",
    "fit_tumor_mixture",
    "surrounded",
    "fit_healthy_enhancing",
    "fluid_labels",
    "csf_sections",
    "VESSEL",
    "MIX",
    "MIX_WM",
]

HEALTHY = ("CSF", "GM", "WM")
#: The healthy enhancing class (vessels, choroid plexus, dura, sinuses): bright on T1c in healthy brain.
VESSEL = "VES"
TUMOR = ("NCR", "ED", "ET")
#: The partial-volume class between healthy CSF and edema (ventricle and sulcal walls in edema).
MIX = "CSF|ED"
#: The partial-volume class between healthy WM and edema (the edema's outline in white matter).
MIX_WM = "WM|ED"
#: Each partial-volume class and the healthy class (index into HEALTHY) it mixes with edema.
_MIXES = {MIX: 0, MIX_WM: 2}

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


def enclosed_core(et: np.ndarray, brain: np.ndarray, spacing, close_mm: float, cap_mm: float) -> np.ndarray:
    """Voxels enclosed by the enhancing rim ``et`` (not ET themselves), within ``brain``.

    ET is closed with a ball of ``close_mm``; where the rim reaches the brain surface, the
    outside of the brain within ``cap_mm`` of ET closes it (a cyst at the cortex is enclosed by
    its rim and the surface). Holes are filled in 3-D and in every slice along each axis.
    """
    if not et.any():
        return np.zeros_like(et)
    pad = int(np.ceil(max(close_mm, cap_mm) / min(spacing))) + 2
    box = morph.bounding_box_of(et, pad)
    e = et[box]
    b = brain[box]
    near = morph.dilate_mm(e, cap_mm, spacing)
    wall = morph.close_mm(e, close_mm, spacing) | (near & ~b)
    core = morph.fill_holes_all_axes(wall) & ~e & b
    core &= ~(near & ~b)
    out = np.zeros_like(et)
    out[box] = core
    return out


def enclosed_blobs(tumor: np.ndarray, brain: np.ndarray, spacing, close_mm: float, cap_mm: float,
                   blob_mm: float, csf: np.ndarray | None = None) -> np.ndarray:
    """The thick parts of what ``tumor`` encloses (see :func:`enclosed_core`): opened with a
    ball of ``blob_mm`` (at least one voxel), so a cyst inside edema counts and the thin sheets
    of sulcal CSF or a few-voxel gap do not.

    With ``csf`` (the voxels labelled healthy CSF, or CSF-like), a blob that is a section of a
    larger CSF space is not enclosed (:func:`csf_sections`): a ventricle passing through edema is
    cut into enclosed sections by the slice-wise filling, but its CSF goes on outside the tumor,
    more of it outside the blob than inside.
    """
    enc = enclosed_core(tumor, brain, spacing, close_mm, cap_mm)
    if not enc.any():
        return enc
    r = max(blob_mm, 1.01 * min(spacing))
    enc = morph.open_mm(enc, r, spacing)
    if csf is None or not enc.any():
        return enc
    return enc & ~csf_sections(enc, csf, brain, spacing, 1.01 * min(spacing))


def _inside_hull(comp: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Which ``points`` (voxel indices, shape (n, 3)) lie inside the convex hull of the voxel
    centres of ``comp``. Each centre is spread by +-0.01 voxel, so a flat component (one slice of
    a thick-sliced scan) spans its plane and gives the hull within it."""
    from scipy.spatial import ConvexHull

    edge = comp & ~ndi.binary_erosion(comp)  # the hull of the boundary voxels is the hull
    vox = np.argwhere(edge).astype(np.float64)
    spread = np.array(list(itertools.product((-0.01, 0.01), repeat=3)))
    pts = np.unique((vox[:, None, :] + spread[None]).reshape(-1, 3), axis=0)
    eq = ConvexHull(pts).equations  # (facets, 4): normal . x + offset <= 0 inside
    out = np.ones(points.shape[0], dtype=bool)
    for k in range(0, points.shape[0], 65536):
        p = points[k:k + 65536].astype(np.float64)
        out[k:k + 65536] = np.all(p @ eq[:, :3].T + eq[:, 3] <= 1e-9, axis=1)
    return out


def hull_core(et: np.ndarray, candidates: np.ndarray, fluid: np.ndarray | None, brain: np.ndarray, spacing,
              min_mm3: float, fill: np.ndarray | None = None) -> np.ndarray:
    """The ``candidates`` inside the convex hull of a 26-connected component of ``et`` (of at
    least ``min_mm3``), within ``brain``, less the sections of a larger CSF space
    (:func:`csf_sections` with ``fluid``; ``None``: none left out); with ``fill``, also the
    ``fill`` voxels that this core and ``et`` enclose (:func:`segment.morphology.fill_holes_all_axes`):
    the specks of a noisy cyst that do not look like fluid.

    A necrotic or cystic core lies inside its enhancing rim. Where the rim is whole,
    :func:`enclosed_core` fills it; slices thicker than the rim, noise, or a rim thinned to a line
    where it runs along the brain surface break it, and the filling leaks. The hull does not: a
    crescent of rim still spans its cyst. What the hull takes from the healthy CSF beside a rim
    (a ventricle, a sulcus at the cortex) goes on outside it, and is left out.
    """
    out = np.zeros(et.shape, dtype=bool)
    cand = candidates & brain & ~et
    if not et.any() or not cand.any():
        return out
    vv = float(np.prod(spacing))
    # one hull per component: grouping the pieces of a rim within 5 mm gave the same cores on
    # the BRATS cases and took the sulcal CSF between a cortical rim and the vessels near it
    lab, _ = ndi.label(et, structure=np.ones((3, 3, 3), bool))
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        comp = lab[sl] == i
        if comp.sum() * vv < min_mm3:
            continue
        pts = np.argwhere(cand[sl])
        if pts.size:
            box = out[sl]
            box[tuple(pts[_inside_hull(comp, pts)].T)] = True
    if fluid is not None and out.any():
        # CSF joined to the candidates by bridges under 2 mm wide (noise) is not one space with
        # them; on coarser grids every voxel-wide bridge counts (a sulcus at a cortical rim)
        out &= ~csf_sections(out, fluid, brain, spacing, 1.01)
    if fill is not None and out.any():
        box = morph.bounding_box_of(out, 1)
        holes = morph.fill_holes_all_axes(out[box] | et[box]) & ~et[box] & fill[box] & brain[box]
        out[box] |= holes
    return out


def fluid_labels(labels: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Where ``labels`` (indices into ``classes``) is healthy CSF or the CSF/edema mix."""
    out = labels == classes.index("CSF")
    if MIX in classes:
        out |= labels == classes.index(MIX)
    return out


def csf_sections(enc: np.ndarray, csf: np.ndarray, brain: np.ndarray, spacing, r: float) -> np.ndarray:
    """The parts of ``enc`` that are sections of a larger CSF space: their component of the
    CSF (with ``enc``, both opened with a ball of ``r`` mm) lies more outside ``enc`` than inside.

    A ventricle that passes through the tumor, or lies against its rim, is cut into enclosed
    sections by the filling; its CSF goes on outside. A cyst is a CSF-like space of its own.
    """
    space = morph.open_mm((csf & brain) | enc, r, spacing) | enc
    lab, n = ndi.label(space, structure=np.ones((3, 3, 3), bool))
    inside = np.bincount(lab[enc], minlength=n + 1)
    total = np.bincount(lab.ravel(), minlength=n + 1)
    drop = inside < (total - inside)
    drop[0] = False
    return enc & drop[lab]


def surrounded(islands: np.ndarray, body: np.ndarray, inside: np.ndarray, fraction: float) -> np.ndarray:
    """The 26-connected islands of ``islands`` of which at least ``fraction`` of the ``inside``
    voxels around them (their 26-neighbour shell) are ``body``.

    An enhancing rim or mass lies in its edema and against its core; vessels, the falx and the
    dura that merely touch the edema are surrounded by healthy tissue and CSF.
    """
    el, ne = ndi.label(islands, structure=np.ones((3, 3, 3), bool))
    if ne == 0:
        return np.zeros_like(islands, dtype=bool)
    ring = ndi.maximum_filter(el, size=3) * ((el == 0) & inside)
    tot = np.bincount(ring.ravel(), minlength=ne + 1)
    onb = np.bincount(ring[body].ravel(), minlength=ne + 1)
    keep = onb >= fraction * np.maximum(tot, 1)
    keep[0] = False
    return keep[el]


def fit_healthy_enhancing(
    X: np.ndarray, healthy: Mapping[str, object], modalities: Sequence[str], *, min_count: int = 200,
    reg: float = 1e-3, z: float = 3.0,
) -> dict[str, object] | None:
    """A Gaussian for the healthy brain's enhancing structures, or None when there are too few.

    Healthy brain also enhances: vessels, the choroid plexus, the dura and the venous sinuses are
    bright on T1c (T1c - T1 with T1) and none of CSF, GM and WM explains them. Fitted on the
    voxels of ``X`` (healthy brain, away from the tumor) that are outliers of every healthy class
    (Mahalanobis^2 > 13.8) and enhance more than ``z`` SDs above GM and WM, it lets the joint
    model explain them as healthy, so the enhancing tumor class is not drawn to them (Prastawa et
    al. 2004: the tumor is what a *complete* healthy model cannot explain). Needs T1c.

    Returns ``{"mean", "cov", "weight"}`` (weight: the share of the rows of ``X``).
    """
    mods = list(modalities)
    if "t1c" not in mods:
        return None
    X = np.asarray(X, dtype=np.float64)
    H = np.asarray(healthy["means"], dtype=np.float64)
    C = np.asarray(healthy["covs"], dtype=np.float64)
    sd = np.sqrt(np.stack([np.diag(c) for c in C]))
    jc = mods.index("t1c")
    if "t1" in mods:
        jt = mods.index("t1")
        e = X[:, jc] - X[:, jt]
        he = H[:, jc] - H[:, jt]
        hs = np.sqrt(sd[:, jc] ** 2 + sd[:, jt] ** 2)
        enh = e > float((he + z * hs)[1:].max())
    else:
        enh = X[:, jc] > float((H[:, jc] + z * sd[:, jc])[1:].max())
    if np.count_nonzero(enh) < min_count:
        return None
    Xe = X[enh]
    d2 = np.full(Xe.shape[0], np.inf)
    for k in range(len(H)):
        L = np.linalg.cholesky(C[k])
        Z = np.linalg.solve(L, (Xe - H[k]).T)
        d2 = np.minimum(d2, (Z * Z).sum(0))
    sel = d2 > 13.8
    if np.count_nonzero(sel) < min_count:
        return None
    mu, cov = _moments(Xe[sel], np.ones(int(sel.sum())), reg)
    return {"mean": mu, "cov": cov, "weight": float(sel.sum() / X.shape[0])}


# --------------------------------------------------------------------------- the joint model


@dataclass
class TumorMixtureResult:
    """Posteriors (K, X, Y, Z) over ``classes`` inside ``box``, plus parameters and flags."""

    classes: list[str]
    posteriors: np.ndarray  # float32, (K,) + box shape, sums to 1 over K inside the brain
    box: tuple[slice, ...]
    means: dict[str, list[float]]
    info: dict[str, object] = field(default_factory=dict)
    n_healthy: int = len(HEALTHY)  # the first classes are healthy: CSF, GM, WM (and VES)


#: Per-voxel prior modes of :func:`_unary`: free, enclosed by enhancement, enclosed by tumor.
_FREE, _IN_CORE, _IN_TUMOR = 0, 1, 2


@njit(parallel=True, cache=True, fastmath=True)
def _unary(X, means, linv, logdet, alpha, hp, gates, tw, mode, ncr, et, out):
    """out[i, k] = log N(X[i]; means[k], (L L^T)) + log prior[i, k], float32.

    The prior of voxel i: ``(1 - alpha_i) hp[i, k]`` for the healthy classes k < nh and
    ``alpha_i tw[i, j] gates[i, j]`` for the tumor class nh + j. Enclosed by enhancement
    (``mode`` 1) only ET and NCR keep a prior, NCR without its gate; enclosed by tumor (``mode`` 2)
    the healthy classes have none and NCR has no gate. A zero prior gives -1e4. ``ncr`` and
    ``et`` are the tumor indices of NCR and ET, or -1.
    """
    n, d = X.shape
    K = means.shape[0]
    nh = hp.shape[1]
    c0 = -0.5 * d * math.log(2.0 * math.pi)
    for i in prange(n):
        z = np.empty(d, np.float64)
        a = alpha[i]
        md = mode[i]
        for k in range(K):
            if k < nh:
                pr = 0.0 if md != _FREE else (1.0 - a) * hp[i, k]
            else:
                j = k - nh
                if j == ncr and md != _FREE:
                    pr = a * tw[i, j]
                elif md == _IN_CORE and j != et:
                    pr = 0.0
                else:
                    pr = a * tw[i, j] * gates[i, j]
            if pr <= 0.0:
                out[i, k] = np.float32(-1e4)
                continue
            for b in range(d):
                z[b] = X[i, b] - means[k, b]
            m = 0.0
            for b in range(d):
                t = 0.0
                for c in range(b + 1):
                    t += linv[k, b, c] * z[c]
                m += t * t
            out[i, k] = np.float32(c0 - 0.5 * logdet[k] - 0.5 * m + math.log(max(pr, 1e-30)))


@njit(parallel=True, cache=True, fastmath=True)
def _softmax(unary, q):
    """q[i] = softmax(unary[i]) row by row (float32 in and out)."""
    n, K = unary.shape
    for i in prange(n):
        mx = unary[i, 0]
        for k in range(1, K):
            mx = max(mx, unary[i, k])
        s = 0.0
        for k in range(K):
            e = math.exp(unary[i, k] - mx)
            q[i, k] = e
            s += e
        for k in range(K):
            q[i, k] = np.float32(q[i, k] / s)


#: Chunks of the moment sums; a fixed number, so the sums (and the fit) do not depend on the
#: number of threads.
_CHUNKS = 16


@njit(parallel=True, cache=True)
def _weighted_moments(X, Q, cols):
    """Sum of weights, weighted means and covariances of X for the classes ``cols`` of Q."""
    n, d = X.shape
    K = cols.shape[0]
    step = (n + _CHUNKS - 1) // _CHUNKS
    p0 = np.zeros((_CHUNKS, K))
    p1 = np.zeros((_CHUNKS, K, d))
    p2 = np.zeros((_CHUNKS, K, d, d))
    for ch in prange(_CHUNKS):
        for i in range(ch * step, min((ch + 1) * step, n)):
            for kk in range(K):
                w = Q[i, cols[kk]]
                if w <= 0:
                    continue
                p0[ch, kk] += w
                for a in range(d):
                    wa = w * X[i, a]
                    p1[ch, kk, a] += wa
                    for b in range(a + 1):
                        p2[ch, kk, a, b] += wa * X[i, b]
    s0 = np.zeros(K)
    s1 = np.zeros((K, d))
    s2 = np.zeros((K, d, d))
    for ch in range(_CHUNKS):
        s0 += p0[ch]
        s1 += p1[ch]
        s2 += p2[ch]
    mu = np.zeros((K, d))
    cov = np.zeros((K, d, d))
    for kk in range(K):
        if s0[kk] <= 0:
            continue
        for a in range(d):
            mu[kk, a] = s1[kk, a] / s0[kk]
        for a in range(d):
            for b in range(a + 1):
                v = s2[kk, a, b] / s0[kk] - mu[kk, a] * mu[kk, b]
                cov[kk, a, b] = v
                cov[kk, b, a] = v
    return s0, mu, cov


@njit(parallel=True, cache=True)
def _tumor_sum_to(idxmap, q, nh, out):
    """out[x, y, z] = sum of the tumor columns (nh on) of q at that voxel, 0 outside the brain."""
    X, Y, Z = idxmap.shape
    K = q.shape[1]
    for x in prange(X):
        for y in range(Y):
            for z in range(Z):
                i = idxmap[x, y, z]
                t = 0.0
                if i >= 0:
                    for k in range(nh, K):
                        t += q[i, k]
                out[x, y, z] = t


@njit(parallel=True, cache=True)
def _alpha_update(idxmap, num, den, reach, amin, amax, alpha):
    """alpha[i] = the smoothed tumor posterior num / den at voxel i, clipped to [amin, amax],
    0 outside the reach."""
    X, Y, Z = idxmap.shape
    for x in prange(X):
        for y in range(Y):
            for z in range(Z):
                i = idxmap[x, y, z]
                if i < 0:
                    continue
                if not reach[i]:
                    alpha[i] = 0.0
                    continue
                v = num[x, y, z] / den[x, y, z] if den[x, y, z] > 1e-3 else 0.0
                alpha[i] = min(max(v, amin), amax)


@njit(parallel=True, cache=True)
def _neighbour_max_product(idxmap, q, ka, kb, out, j):
    """out[i, j] = max of q[:, ka] over voxel i's 3x3x3 neighbourhood x the same max of q[:, kb]."""
    X, Y, Z = idxmap.shape
    for x in prange(X):
        for y in range(Y):
            for z in range(Z):
                i = idxmap[x, y, z]
                if i < 0:
                    continue
                ma = 0.0
                mb = 0.0
                for dx in range(max(x - 1, 0), min(x + 2, X)):
                    for dy in range(max(y - 1, 0), min(y + 2, Y)):
                        for dz in range(max(z - 1, 0), min(z + 2, Z)):
                            k = idxmap[dx, dy, dz]
                            if k >= 0:
                                ma = max(ma, q[k, ka])
                                mb = max(mb, q[k, kb])
                out[i, j] = ma * mb


@njit(parallel=True, cache=True)
def _block_sums(idxmap, q, k0, f0, f1, f2, out):
    """out[j, cx, cy, cz] = sum of q[i, k0 + j] over the voxels i of each f0 x f1 x f2 block."""
    X, Y, Z = idxmap.shape
    T = out.shape[0]
    for cx in prange(out.shape[1]):  # one slab of blocks per thread: no two write one block
        for x in range(cx * f0, min((cx + 1) * f0, X)):
            for y in range(Y):
                for z in range(Z):
                    i = idxmap[x, y, z]
                    if i < 0:
                        continue
                    for j in range(T):
                        out[j, cx, y // f1, z // f2] += q[i, k0 + j]


@njit(parallel=True, cache=True)
def _trilinear_at(idxmap, coarse, f0, f1, f2, fallback, out):
    """out[i] = the classes' shares of coarse[:] interpolated (linearly, block centres as nodes)
    at voxel i; ``fallback`` where their sum is under 1e-3."""
    X, Y, Z = idxmap.shape
    T, cx, cy, cz = coarse.shape
    for x in prange(X):
        u = min(max((x + 0.5) / f0 - 0.5, 0.0), cx - 1.0)
        u0 = min(int(u), cx - 2) if cx > 1 else 0
        wu = u - u0 if cx > 1 else 0.0
        u1 = min(u0 + 1, cx - 1)
        for y in range(Y):
            v = min(max((y + 0.5) / f1 - 0.5, 0.0), cy - 1.0)
            v0 = min(int(v), cy - 2) if cy > 1 else 0
            wv = v - v0 if cy > 1 else 0.0
            v1 = min(v0 + 1, cy - 1)
            for z in range(Z):
                i = idxmap[x, y, z]
                if i < 0:
                    continue
                w = min(max((z + 0.5) / f2 - 0.5, 0.0), cz - 1.0)
                w0 = min(int(w), cz - 2) if cz > 1 else 0
                ww = w - w0 if cz > 1 else 0.0
                w1 = min(w0 + 1, cz - 1)
                tot = 0.0
                for j in range(T):
                    c00 = coarse[j, u0, v0, w0] * (1 - ww) + coarse[j, u0, v0, w1] * ww
                    c01 = coarse[j, u0, v1, w0] * (1 - ww) + coarse[j, u0, v1, w1] * ww
                    c10 = coarse[j, u1, v0, w0] * (1 - ww) + coarse[j, u1, v0, w1] * ww
                    c11 = coarse[j, u1, v1, w0] * (1 - ww) + coarse[j, u1, v1, w1] * ww
                    c0 = c00 * (1 - wv) + c01 * wv
                    c1 = c10 * (1 - wv) + c11 * wv
                    val = c0 * (1 - wu) + c1 * wu
                    out[i, j] = val
                    tot += val
                for j in range(T):
                    out[i, j] = out[i, j] / tot if tot > 1e-3 else fallback[j]


def _local_proportions(q: np.ndarray, k0: int, idxmap: np.ndarray, spacing, sigma_mm: float,
                       fallback: np.ndarray) -> np.ndarray:
    """Each tumor class's share of the smoothed tumor posterior around every voxel, (n, T).

    The posteriors ``q[:, k0:]`` (n, T) of the voxels of ``idxmap`` (their row, -1 outside) are
    block-averaged to a grid of about half a sigma, smoothed there with a Gaussian of
    ``sigma_mm`` and interpolated back linearly: the local proportions of a full-resolution
    smoothing at a small fraction of its cost. Where almost no tumor posterior is around,
    ``fallback`` (the global weights).
    """
    f = [max(1, int(sigma_mm / (2.0 * sp))) for sp in spacing]
    cs = tuple(-(-n // k) for n, k in zip(idxmap.shape, f))
    T = q.shape[1] - k0
    coarse = np.zeros((T,) + cs, np.float64)
    _block_sums(idxmap, q, k0, f[0], f[1], f[2], coarse)
    coarse /= float(np.prod(f))
    sig = [sigma_mm / (k * sp) for k, sp in zip(f, spacing)]
    for j in range(T):
        coarse[j] = ndi.gaussian_filter(coarse[j], sig, mode="constant", truncate=2.0)
    out = np.empty((q.shape[0], T), np.float64)
    _trilinear_at(idxmap, coarse, f[0], f[1], f[2], np.asarray(fallback, np.float64), out)
    return out


@njit(parallel=True, cache=True)
def _blend_local(tw, local, gates, lw, out):
    """out[i] = (1 - lw) tw + lw local[i], rescaled so that sum_j out[i, j] gates[i, j] equals
    sum_j tw[j] gates[i, j]: the local proportions share the tumor prior out among the tumor
    classes, and the gated total (tumor vs healthy) stays that of the global weights."""
    n, T = local.shape
    for i in prange(n):
        tg = 0.0
        tl = 0.0
        for j in range(T):
            v = (1.0 - lw) * tw[j] + lw * local[i, j]
            out[i, j] = v
            tg += tw[j] * gates[i, j]
            tl += v * gates[i, j]
        if tl > 1e-12:
            r = tg / tl
            for j in range(T):
                out[i, j] *= r


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
    gate: Mapping[str, np.ndarray] | None = None,
    alpha0: float = 0.5,
    alpha_min: float = 0.02,
    alpha_max: float = 0.95,
    alpha_smooth_mm: float = 2.0,
    beta: float = 0.3,
    iterations: int = 10,
    core_rounds: int = 1,
    close_mm: float = 3.0,
    cap_mm: float = 4.0,
    blob_mm: float = 3.0,
    min_et_mm3: float = 50.0,
    reg: float = 1e-2,
    local_mm: float = 0.0,
    local_weight: float = 0.0,
    csf_edema_mix: bool = False,
    wm_edema_mix: bool = False,
    et_body_fraction: float = 0.0,
) -> TumorMixtureResult:
    """EM over healthy (fixed) and tumor (estimated) classes inside the bounding box of ``reach``.

    Parameters
    ----------
    features : mapping of str to ndarray of shape (X, Y, Z)
        Normalised modalities (canonical order is taken from ``healthy["modalities"]``).
    brain, reach : ndarray of shape (X, Y, Z), bool
        Brain mask; where tumor classes may exist (their prior is 0 outside).
    healthy : mapping
        Output of :func:`fit_healthy` (CSF, GM, WM) plus ``modalities``, and optionally
        ``enhancing`` (:func:`fit_healthy_enhancing`): the fourth healthy class ``VES``.
    healthy_prior : ndarray of shape (X, Y, Z, 3), optional
        Per-voxel CSF/GM/WM prior probabilities (on the same grid); flat (the fitted weights)
        when None.
    tumor_classes : sequence of str
        Subset of ``NCR``, ``ED``, ``ET`` the modalities support.
    init : mapping of str to bool ndarray of shape (X, Y, Z)
        Voxels whose signature starts each tumor class.
    gate : mapping of str to float ndarray of shape (X, Y, Z), optional
        Per-voxel factor in [0, 1] of each tumor class's prior: how well the voxel fits the
        class's signature (e.g. FLAIR above GM for edema); it keeps a class from drifting onto
        healthy tissue. Not applied inside an enclosed core for NCR.
    alpha0, alpha_min, alpha_max, alpha_smooth_mm
        Latent tumor prior: start value inside ``reach``, clipping range and smoothing (mm)
        of the tumor posterior that re-estimates it.
    beta : float
        MRF weight (per neighbour, times 1 / distance in mm; 6-neighbourhood, red-black mean
        field as in :mod:`segment.labeling.mrf`).
    iterations, core_rounds
        EM iterations per round; rounds after the first give the enclosed core to ET/NCR.
    local_mm, local_weight
        Gaussian sigma (mm) of the local tumor-class proportions and their share of each
        tumor class's weight (0: the global weights alone).
    csf_edema_mix : bool
        Add the CSF/edema partial-volume class ``MIX`` (needs ED).
    wm_edema_mix : bool
        Add the WM/edema partial-volume class ``MIX_WM`` (needs ED): the voxels at the edema's
        outline in white matter, between the two on every modality. Without it they are explained
        by whichever class is widest; with T1c and FLAIR alone that is the enhancing class (a
        bright-tailed WM voxel that is half edema on FLAIR looks like weak enhancement).
    et_body_fraction : float
        Between rounds, enhancing islands that the tumor does not surround by this share
        (:func:`surrounded`) lose the ET class for the next round (0: off).
    """
    mods = list(healthy["modalities"])
    pad = 2
    idx = np.nonzero(reach)
    box = tuple(slice(max(int(i.min()) - pad, 0), min(int(i.max()) + pad + 1, n)) for i, n in zip(idx, reach.shape))
    b = brain[box]
    r = reach[box] & b
    X = np.ascontiguousarray(np.stack([np.asarray(features[m][box], dtype=np.float64)[b] for m in mods], axis=1))
    n, d = X.shape
    ves = healthy.get("enhancing")
    hnames = list(HEALTHY) + ([VESSEL] if ves is not None else [])
    classes = hnames + [c for c in TUMOR if c in tumor_classes]
    nh = len(hnames)
    if healthy_prior is not None:
        hp = np.asarray(healthy_prior, dtype=np.float64)[box][b]
        hp = np.clip(hp, 1e-4, None)
        hp /= hp.sum(1, keepdims=True)
    else:
        hp = np.broadcast_to(np.asarray(healthy["weights"], dtype=np.float64), (n, len(HEALTHY)))
    if ves is not None:  # the enhancing healthy structures: their share everywhere, the rest as before
        wv = float(ves["weight"])
        hp = np.concatenate([hp * (1.0 - wv), np.full((n, 1), wv)], axis=1)
    means: dict[str, np.ndarray] = {}
    covs: dict[str, np.ndarray] = {}
    tw: dict[str, float] = {}
    info: dict[str, object] = {"flags": []}
    init = init or {}
    for c in list(classes[nh:]):
        sel = init.get(c)
        sel = sel[box][b] if sel is not None else np.zeros(n, bool)
        if np.count_nonzero(sel) < max(10, d + 2):
            classes.remove(c)
            info["flags"].append(f"tumor class {c}: too few voxels with its signature, not modelled")
            continue
        means[c], covs[c] = _moments(X[sel], np.ones(int(sel.sum())), reg)
        tw[c] = float(sel.sum())
    hmeans = np.asarray(healthy["means"], dtype=np.float64)
    hcovs = np.asarray(healthy["covs"], dtype=np.float64)
    if ves is not None:
        hmeans = np.concatenate([hmeans, np.asarray(ves["mean"], np.float64)[None]])
        hcovs = np.concatenate([hcovs, np.asarray(ves["cov"], np.float64)[None]])

    def _mix_params(h):
        dlt = means["ED"] - hmeans[h]
        return 0.5 * (hmeans[h] + means["ED"]), 0.25 * (hcovs[h] + covs["ED"]) + np.outer(dlt, dlt) / 48.0

    mixes = [c for c, on in ((MIX, csf_edema_mix), (MIX_WM, wm_edema_mix)) if on and "ED" in means]
    t0 = sum(tw.values())
    for c in mixes:
        classes.append(c)
        means[c], covs[c] = _mix_params(_MIXES[c])
        tw[c] = 0.1 * t0
    K = len(classes)
    tcls = classes[nh:]
    idxmap = np.full(b.shape, -1, np.int32)
    idxmap[b] = np.arange(n, dtype=np.int32)
    w_axes = np.array([1.0 / s for s in spacing])
    if not tcls:
        Q = np.zeros((K,) + b.shape, np.float32)
        Q[:, b] = (hp / hp.sum(1, keepdims=True)).T
        return TumorMixtureResult(classes, Q, box, {}, info, n_healthy=nh)
    s = sum(tw.values())
    tw = {c: v / s for c, v in tw.items()}
    gate_arr = np.ones((n, len(tcls)))  # each tumor class's signature gate, per voxel
    for j, c in enumerate(tcls):
        if gate and c in gate:
            gate_arr[:, j] = np.asarray(gate[c], dtype=np.float64)[box][b]
    for c in mixes:
        gate_arr[:, tcls.index(c)] = 0.0  # no mix before the first posteriors
    r_flat = r[b]
    alpha = np.where(r_flat, alpha0, 0.0).astype(np.float32)  # per brain voxel of the box
    qt = np.zeros(b.shape, np.float32)
    sig_a = [alpha_smooth_mm / sp for sp in spacing]
    den_a = ndi.gaussian_filter(b.astype(np.float32), sig_a, mode="constant", truncate=2.0)
    core = np.zeros(b.shape, bool)
    core_wt = np.zeros(b.shape, bool)
    vv = float(np.prod(spacing))
    q = np.empty((n, K), np.float32)
    unary = np.empty((n, K), np.float32)
    history = []
    rounds = core_rounds + 1
    hp = np.ascontiguousarray(hp)
    ncr = tcls.index("NCR") if "NCR" in tcls else -1
    et_j = tcls.index("ET") if "ET" in tcls else -1
    mode = np.zeros(n, np.int8)
    twl = None
    twa = np.empty((n, len(tcls)))
    for it in range(iterations * rounds):
        allm = np.concatenate([hmeans, np.stack([means[c] for c in tcls])])
        allc = np.concatenate([hcovs, np.stack([covs[c] for c in tcls])])
        L = np.linalg.cholesky(allc)
        linv = np.ascontiguousarray(np.linalg.inv(L))
        logdet = 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(1)
        twg = np.array([tw[c] for c in tcls])
        if twl is None:
            twa[:] = twg[None, :]
        else:
            _blend_local(twg, twl, gate_arr, float(local_weight), twa)
        _unary(X, allm, linv, logdet, alpha, hp, gate_arr, twa, mode, ncr, et_j, unary)
        if it == 0 or beta <= 0:
            _softmax(unary, q)
        if beta > 0:
            _mean_field(idxmap, unary, q, w_axes, float(beta), 1)
        # M-step: tumor parameters only
        s0, mu, cv = _weighted_moments(X, q, np.arange(nh, K, dtype=np.int64))
        for j, c in enumerate(tcls):
            if c not in _MIXES and s0[j] * vv >= 1000.0 * 0.05:  # keep a class's last parameters below 0.05 mL
                means[c] = mu[j]
                covs[c] = cv[j] + reg * np.eye(d)
        for c in mixes:
            means[c], covs[c] = _mix_params(_MIXES[c])
        tot = float(s0.sum())
        if tot > 0:
            tw_new = {c: max(float(s0[j]) / tot, 1e-3) for j, c in enumerate(tcls)}
            if it == 0:  # the mixes had no gate yet: keep their start weights
                tw_new.update({c: tw[c] for c in mixes})
            tw = tw_new
        _tumor_sum_to(idxmap, q, nh, qt)
        for c in mixes:  # a mix lies next to its healthy class and next to edema
            _neighbour_max_product(idxmap, q, _MIXES[c], nh + tcls.index("ED"), gate_arr, tcls.index(c))
        if local_mm > 0 and local_weight > 0:
            twl = _local_proportions(q, nh, idxmap, spacing, local_mm, twg)
        num = ndi.gaussian_filter(qt, sig_a, mode="constant", truncate=2.0)
        _alpha_update(idxmap, num, den_a, r_flat, float(alpha_min), float(alpha_max), alpha)
        history.append(round(float(qt.sum() * vv / 1000.0), 2))
        if (it + 1) % iterations == 0 and it + 1 < iterations * rounds:
            lab = np.argmax(q, 1)
            tum = np.zeros(b.shape, bool)
            tum[b] = (lab >= nh) & ~np.isin(lab, [classes.index(c) for c in mixes])  # a mix is no tumor
            tum = morph.remove_small(tum, min_et_mm3, vv)
            if "ET" in tcls:
                et = np.zeros(b.shape, bool)
                et[b] = lab == classes.index("ET")
                et = morph.remove_small(et, min_et_mm3, vv)
                core = enclosed_core(et, b, spacing, close_mm, cap_mm) & r
            csf = np.zeros(b.shape, bool)
            csf[b] = fluid_labels(lab, classes)
            if core.any():  # a ventricle against the rim, cut off by the closing, is no core
                core &= ~csf_sections(core & csf, csf, b, spacing, 1.01 * min(spacing))
            core_wt = enclosed_blobs(tum, b, spacing, close_mm, cap_mm, blob_mm, csf=csf) & r & ~core
            if "ET" in tcls and et_body_fraction > 0 and et.any():
                # enhancing islands the tumor does not surround (vessels, dura) lose the ET class
                # for the next round, so it is re-fitted on the tumor's own enhancement
                stray = et & ~surrounded(et, (tum & ~et) | core | core_wt, b, et_body_fraction)
                stray = morph.dilate_mm(stray, 1.01 * min(spacing), spacing) & ~core
                gate_arr[stray[b], et_j] = 0.0
                info["et_off_ml"] = round(float(stray.sum() * vv / 1000.0), 2)
            mode = np.where(core[b], _IN_CORE, np.where(core_wt[b], _IN_TUMOR, _FREE)).astype(np.int8)
    rename = name_tumor_classes({k: v for k, v in means.items() if k not in _MIXES}, mods, hmeans[2])
    if any(k != v for k, v in rename.items()):
        info["flags"].append(f"tumor classes renamed by signature after the fit: {rename}")
        classes = [rename.get(c, c) for c in classes]
        means = {rename.get(k, k): v for k, v in means.items()}
    Q = np.zeros((K,) + b.shape, np.float32)
    Q[:, b] = q.T
    info["tumor_ml_per_iteration"] = history
    info["core_ml"] = round(float(core.sum() * vv / 1000.0), 2)
    info["enclosed_by_tumor_ml"] = round(float(core_wt.sum() * vv / 1000.0), 2)
    info["tumor_weights"] = {c: round(v, 3) for c, v in tw.items()}
    return TumorMixtureResult(
        classes, Q, box, {c: [round(float(x), 3) for x in v] for c, v in means.items()}, info, n_healthy=nh
    )
