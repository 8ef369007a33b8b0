"""Numba kernels of the partial-volume mixture (numpy and numba only).

Both kernels take the component parameters as precision Cholesky factors ``P`` (upper
triangular, ``cov^-1 = P P^T``) and log constants ``log w + log det P - d/2 log 2 pi``, and walk
the samples in fixed chunks so results do not depend on the number of threads.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

CHUNK = 2048


@njit(cache=True, inline="always")
def _logprob_row(x, means, pchol, lconst, out):
    J, d = means.shape
    for j in range(J):
        q = 0.0
        for b in range(d):
            y = 0.0
            for a in range(b + 1):
                y += (x[a] - means[j, a]) * pchol[j, a, b]
            q += y * y
        out[j] = lconst[j] - 0.5 * q


@njit(cache=True, inline="always")
def _softmax_row(lp):
    """Turn log-probabilities into unnormalised probabilities in place; return (max, sum)
    so that ``lp / sum`` are the responsibilities and ``max + log(sum)`` is log p(x)."""
    J = lp.shape[0]
    mx = lp[0]
    for j in range(1, J):
        if lp[j] > mx:
            mx = lp[j]
    tot = 0.0
    for j in range(J):
        lp[j] = math.exp(lp[j] - mx)
        tot += lp[j]
    return mx, tot


@njit(parallel=True, cache=True)
def pv_estep_stats(X, w, means, pchol, lconst, nk, s1, s2, ll):
    """E-step fused with the sufficient statistics, per chunk.

    Parameters
    ----------
    X : (n, d) float64
    w : (n,) float64 sample weights
    means : (J, d); pchol : (J, d, d); lconst : (J,)
    nk : (n_chunks, J) out, sum w r
    s1 : (n_chunks, J, d) out, sum w r x
    s2 : (n_chunks, J, d, d) out, sum w r x x^T
    ll : (n_chunks,) out, sum w log p(x)
    """
    n, d = X.shape
    J = means.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    for c in prange(nch):
        lp = np.empty(J)
        nk[c, :] = 0.0
        s1[c, :, :] = 0.0
        s2[c, :, :, :] = 0.0
        acc = 0.0
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            x = X[i]
            _logprob_row(x, means, pchol, lconst, lp)
            mx, tot = _softmax_row(lp)
            acc += w[i] * (mx + math.log(tot))
            for j in range(J):
                r = w[i] * lp[j] / tot
                if r == 0.0:
                    continue
                nk[c, j] += r
                for a in range(d):
                    ra = r * x[a]
                    s1[c, j, a] += ra
                    for b in range(a + 1):
                        s2[c, j, a, b] += ra * x[b]
        ll[c] = acc
    for c in range(nch):
        for j in range(J):
            for a in range(d):
                for b in range(a):
                    s2[c, j, b, a] = s2[c, j, a, b]


@njit(parallel=True, cache=True)
def pv_fractions(X, means, pchol, lconst, design, out):
    """Expected class fractions ``sum_j r_j design[j]`` for every sample into ``out`` (n, C)."""
    n, d = X.shape
    J = means.shape[0]
    C = design.shape[1]
    nch = (n + CHUNK - 1) // CHUNK
    for c in prange(nch):
        lp = np.empty(J)
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            _logprob_row(X[i], means, pchol, lconst, lp)
            _, tot = _softmax_row(lp)
            for k in range(C):
                v = 0.0
                for j in range(J):
                    v += lp[j] * design[j, k]
                out[i, k] = v / tot


@njit(parallel=True, cache=True)
def interp_rows(x, lo, step, table, out):
    """``out[i] = table`` linearly interpolated at ``x[i]`` on the grid ``lo + k * step``
    (clamped to its ends); ``table`` (G, C), ``out`` (n, C) float32."""
    n = x.shape[0]
    G, C = table.shape
    nch = (n + CHUNK - 1) // CHUNK
    for c in prange(nch):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            pos = (x[i] - lo) / step
            if pos <= 0.0:
                pos = 0.0
            elif pos >= G - 1:
                pos = G - 1.0
            k = int(pos)
            if k > G - 2:
                k = G - 2
            t = pos - k
            for j in range(C):
                out[i, j] = (1.0 - t) * table[k, j] + t * table[k + 1, j]
