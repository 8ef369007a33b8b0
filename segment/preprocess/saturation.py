"""Intensities saturated at the top: detect the ceiling, restore the tail above it.

A scanner or an export that clips (a window set too low, an 8-bit conversion with a narrow
range) piles every voxel above the ceiling onto one value. On a T1 the ceiling falls inside the
white-matter peak: a tenth of the brain at one intensity. A Gaussian mixture then fits the spike
(a class of zero width, or the atypical class) and the white-matter class shrinks to the voxels
below the ceiling, which moves the grey/white boundary: on IBSR_01 clipped at its 90th brain
percentile, white-matter Dice falls from 0.87 to 0.67.

The clipped voxels are censored observations: each is known only to be at least the ceiling
``c``. The saturated class's Gaussian is estimated from the voxels below the ceiling and the
count above it: on the atlas core of the class with the largest clipped share, from the
quantiles just under the ceiling against the normal ones (a censored probability plot,
:func:`censored_qq`); without a registration, from a three-class mixture of the brain fitted by
EM with the clipped voxels censored (:func:`censored_mixture`). The clipped voxels then get the
quantiles of that Gaussian above ``c``, in the order of their smoothed neighbourhood (a voxel
deep inside the saturated region is given the higher values). Every value stays at or above
``c``, so no voxel changes rank against an unclipped one; the mixture downstream sees a class of
its true width. When the ceiling is under the class's median, its upper half was never seen and
its width is a guess that moves the class boundaries more than the spike does: the image is
left as read (and flagged).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy import special

__all__ = ["detect_saturation", "restore_saturated", "censored_mixture", "censored_qq"]

#: Restore only when at most this share of the saturated class lies above the ceiling (its median seen).
MAX_CLASS_CLIPPED = 0.5
#: The ceiling value must hold at least this share of the masked voxels...
MIN_SHARE = 0.002
#: ...and this many times the largest count of one of the distinct values just below it.
SPIKE_RATIO = 2.0


def detect_saturation(data: np.ndarray, mask: np.ndarray) -> dict[str, float] | None:
    """The ceiling of ``data`` inside ``mask`` when it is a spike, else None.

    Returns ``{"ceiling": c, "share": fraction of the masked voxels at c, "n": their count}``.
    """
    v = np.asarray(data)[mask]
    v = v[np.isfinite(v)]
    if v.size < 1000:
        return None
    c = float(v.max())
    rng = c - float(v.min())
    if rng <= 0:
        return None
    at = v >= c
    n = int(np.count_nonzero(at))
    if n < MIN_SHARE * v.size:
        return None
    below = v[~at]
    # counts of the distinct values just below the ceiling (integer data: levels; floats: ones)
    vals, counts = np.unique(below[below >= np.quantile(below, 0.95)], return_counts=True)
    top = counts[-5:] if counts.size else np.array([1])
    if n < SPIKE_RATIO * float(top.max()):
        return None
    return {"ceiling": c, "share": n / v.size, "n": n}


def censored_mixture(x: np.ndarray, h: np.ndarray, c: float, n_c: float, k: int = 3, iters: int = 300,
                     tol: float = 1e-7, tied: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EM of a 1-D ``k``-Gaussian mixture on binned values (centres ``x``, counts ``h``, all < c)
    and ``n_c`` values right-censored at ``c`` (known only to be >= c).

    The censored values' expected sufficient statistics are the truncated-normal moments above
    ``c`` of each component (Dempster, Laird & Rubin 1977, section 4.4). ``tied``: one SD for
    every component (an untied fit lets one wide component explain the censored mass). Returns
    the weights, means and SDs.
    """
    x = np.asarray(x, np.float64)
    h = np.asarray(h, np.float64)
    n = h.sum() + n_c
    cdf = np.cumsum(h) / n
    qs = (np.arange(k) + 0.5) / k
    mu = np.array([x[min(int(np.searchsorted(cdf, q)), x.size - 1)] if q < cdf[-1] else c for q in qs])
    sd = np.full(k, max((c - float(x[0])) / (2.0 * k), 1e-6))
    w = np.full(k, 1.0 / k)
    floor = max(float(x[1] - x[0]) if x.size > 1 else 1e-6, 1e-9)
    prev = -np.inf
    for _ in range(iters):
        z = (x[:, None] - mu) / sd
        logp = np.log(w) - np.log(sd) - 0.5 * z * z
        alpha = (c - mu) / sd
        logt = np.log(w) + special.log_ndtr(-alpha)
        m = np.maximum(logp.max(1, keepdims=True), -1e300)
        pb = np.exp(logp - m)
        sb = pb.sum(1, keepdims=True)
        rb = pb / sb
        mt = logt.max()
        pt = np.exp(logt - mt)
        rt = pt / pt.sum()
        ll = float(np.sum(h * (np.log(sb[:, 0]) + m[:, 0])) + n_c * (np.log(pt.sum()) + mt))
        lam = np.exp(-0.5 * alpha ** 2 - 0.5 * np.log(2 * np.pi) - special.log_ndtr(-alpha))  # phi / (1 - Phi)
        e1 = mu + sd * lam
        e2 = mu ** 2 + sd ** 2 + sd * (mu + c) * lam
        nk = (rb * h[:, None]).sum(0) + rt * n_c
        s1 = (rb * (h * x)[:, None]).sum(0) + rt * n_c * e1
        s2 = (rb * (h * x * x)[:, None]).sum(0) + rt * n_c * e2
        nk = np.maximum(nk, 1e-12)
        w = nk / n
        mu = s1 / nk
        if tied:  # one SD for every class (noise and mixing alike), as the tissue classes of a T1 share it
            sd = np.full(k, np.sqrt(max(float(np.sum(s2 - nk * mu ** 2)) / float(nk.sum()), floor ** 2)))
        else:
            sd = np.sqrt(np.maximum(s2 / nk - mu ** 2, floor ** 2))
        w = np.maximum(w, 1e-12)
        if abs(ll - prev) <= tol * abs(ll):
            break
        prev = ll
    return w, mu, sd


def censored_qq(values: np.ndarray, c: float, tol: float = 0.0) -> tuple[float, float] | None:
    """Mean and SD of one Gaussian from its quantiles below the ceiling ``c`` (values at or above
    ``c - tol`` are censored): the least-squares line of the observed quantiles against the
    normal ones (a probability plot), over the 15 % of quantiles just under the ceiling (the
    lower ones hold the neighbouring class's voxels an affine atlas core lets in). None when
    fewer than 5 % of the values are unclipped."""
    v = np.sort(np.asarray(values, np.float64))
    share = float(np.mean(v >= c - tol))
    q_hi = (1.0 - share) - 0.01
    q_lo = max(0.02, q_hi - 0.15)
    if q_hi - q_lo < 0.02:
        return None
    q = np.linspace(q_lo, q_hi, 25)
    xq = np.quantile(v, q)
    zq = special.ndtri(q)
    slope, icpt = np.polyfit(zq, xq, 1)
    if not np.isfinite(slope) or slope <= 0:
        return None
    return float(icpt), float(slope)


def restore_saturated(data: np.ndarray, mask: np.ndarray, spacing, found: dict[str, float] | None = None,
                      cores: list[np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, float] | None]:
    """``data`` with the voxels of ``mask`` at the ceiling given values above it (a float32 copy).

    Parameters
    ----------
    data, mask : ndarrays of one shape
    spacing : voxel sizes (mm), for the neighbourhood that orders the clipped voxels
    found : the output of :func:`detect_saturation` (computed when None)
    cores : list of bool ndarrays, optional
        Where each tissue class is nearly pure (the atlas priors' cores). The class whose core
        holds the largest clipped share is the saturated one: its Gaussian is fitted on its
        core's values alone (:func:`censored_qq`), which a mixture of the whole brain cannot pin
        down when the ceiling is under the class's mode. Without cores
        (or none with a clipped share), a three-class censored mixture of the brain.

    Returns the image and the fit (``ceiling``, ``share``, ``mean`` and ``sd`` of the Gaussian
    the clipped voxels are given values from, ``method``, ``class_clipped``: the share of that
    class above the ceiling, ``restored``: False, and ``data`` returned as given, when that share
    exceeds ``MAX_CLASS_CLIPPED``), or ``data`` and None when nothing is saturated.
    """
    found = found if found is not None else detect_saturation(data, mask)
    if found is None:
        return data, None
    x = np.asarray(data, np.float32)
    c = float(found["ceiling"])
    v = x[mask]
    sat = mask & (x >= c)
    u = v[v < c]
    method = "mixture"
    best = None
    for core in cores or []:
        cv = x[core & mask]
        if cv.size < 500:
            continue
        share = float(np.mean(cv >= c))
        if share > 0.01 and (best is None or share > best[0]):
            best = (share, cv)
    if best is not None:
        fit = censored_qq(best[1], c)
        if fit is not None:
            w, mu, sd = np.array([1.0]), np.array([fit[0]]), np.array([fit[1]])
            method = "class core"
    if method == "mixture":  # a three-class mixture of the brain's intensities with the clipped voxels censored
        h, edges = np.histogram(u, bins=256, range=(float(u.min()), c))
        mid = 0.5 * (edges[:-1] + edges[1:])
        w, mu, sd = censored_mixture(mid, h, c, float(found["n"]))
    j = int(np.argmax(w * special.ndtr(-(c - mu) / sd)))  # the class most of the clipped voxels belong to
    clipped = best[0] if method == "class core" else float(special.ndtr(-(c - mu[j]) / sd[j]))
    fit = {**found, "mean": float(mu[j]), "sd": float(sd[j]), "method": method,
           "class_clipped": round(clipped, 4), "restored": clipped <= MAX_CLASS_CLIPPED}
    if not fit["restored"]:
        # the ceiling is under the class's median: its upper half was never seen, and a guess at
        # its width moves the class boundaries more than the spike does (IBSR at the 75th
        # percentile: white-matter Dice 0.87 -> 0.69 with a guessed width, 0.86 left as read)
        return data, fit
    # the clipped voxels in the order of their neighbourhood, given the quantiles above c
    sm = ndi.gaussian_filter(np.where(mask, x, 0).astype(np.float32), [1.0 / s for s in spacing])
    order = np.argsort(sm[sat], kind="stable")
    n = order.size
    # the mixture's distribution above c, inverted on a grid: the values the clipped voxels had
    top = float(np.max(mu + 6.0 * sd))
    grid = np.linspace(c, max(top, c + 1e-6), 4097)
    tail = (w[:, None] * (special.ndtr((grid[None, :] - mu[:, None]) / sd[:, None])
                          - special.ndtr((c - mu[:, None]) / sd[:, None]))).sum(0)
    tail /= max(float(tail[-1]), 1e-300)
    q = (np.arange(n) + 0.5) / n
    vals = np.interp(q, tail, grid)
    out = x.copy()
    idx = np.flatnonzero(sat.ravel())
    flat = out.reshape(-1)
    flat[idx[order]] = vals.astype(np.float32)
    return out, fit
