"""Compiled kernels of the Gaussian mixture engine (``@njit`` functions only).

The Python wrappers in :mod:`segment.mixture.gmm` validate and convert; these kernels trust
their inputs. Data are channel-major: ``Xt`` has shape ``(n_features, n_samples)``.

Parallel kernels loop ``prange`` over chunks of ``CHUNK`` samples whose boundaries do not
depend on the number of threads; every chunk writes only its own accumulator row, and rows are
merged in chunk order by the caller, so results are bit-identical for any thread count.
"""
import math

import numpy as np
from numba import njit, prange

#: Samples per chunk of the parallel passes (fixed: determinism depends on it).
CHUNK = 1024


@njit(parallel=True, cache=True)
def em_pass(Xt, w, means, pchol, lconst, stats, ll):
    """One fused E-step + sufficient-statistics pass (simple reference version)."""
    d, n = Xt.shape
    K = means.shape[0]
    nch = stats.shape[0]
    weighted = w.shape[0] == n
    for c in prange(nch):
        s = c * CHUNK
        e = min(n, s + CHUNK)
        st = stats[c]
        st[:] = 0.0
        lp = np.empty(K)
        x = np.empty(d)
        df = np.empty(d)
        acc = 0.0
        for i in range(s, e):
            for l in range(d):
                x[l] = Xt[l, i]
            mx = -np.inf
            for k in range(K):
                q = 0.0
                for j in range(d):
                    t = 0.0
                    for l in range(j + 1):
                        t += (x[l] - means[k, l]) * pchol[k, l, j]
                    q += t * t
                lp[k] = lconst[k] - 0.5 * q
                if lp[k] > mx:
                    mx = lp[k]
            ssum = 0.0
            for k in range(K):
                lp[k] = math.exp(lp[k] - mx)
                ssum += lp[k]
            wi = w[i] if weighted else 1.0
            acc += wi * (mx + math.log(ssum))
            for k in range(K):
                r = lp[k] / ssum * wi
                st[k, 0] += r
                for l in range(d):
                    df[l] = x[l] - means[k, l]
                    st[k, 1 + l] += r * df[l]
                for l in range(d):
                    rl = r * df[l]
                    for m in range(d):
                        st[k, 1 + d + l * d + m] += rl * df[m]
        ll[c] = acc


@njit(parallel=True, cache=True)
def logresp_pass(Xt, means, pchol, lconst, log_resp, lpn):
    """Log-responsibilities ``log_resp`` (n, K) and per-sample log-likelihood ``lpn`` (n,)."""
    d, n = Xt.shape
    K = means.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    for c in prange(nch):
        s = c * CHUNK
        e = min(n, s + CHUNK)
        lp = np.empty(K)
        for i in range(s, e):
            mx = -np.inf
            for k in range(K):
                q = 0.0
                for j in range(d):
                    t = 0.0
                    for l in range(j + 1):
                        t += (Xt[l, i] - means[k, l]) * pchol[k, l, j]
                    q += t * t
                lp[k] = lconst[k] - 0.5 * q
                if lp[k] > mx:
                    mx = lp[k]
            ssum = 0.0
            for k in range(K):
                ssum += math.exp(lp[k] - mx)
            lse = mx + math.log(ssum)
            lpn[i] = lse
            for k in range(K):
                log_resp[i, k] = lp[k] - lse


@njit(parallel=True, cache=True)
def kmeans_pass(Xt, w, centers, labels, mind, sums):
    """Assign each sample to its nearest center; per-chunk weighted sums (nch, K, d + 1)."""
    d, n = Xt.shape
    K = centers.shape[0]
    nch = sums.shape[0]
    weighted = w.shape[0] == n
    for c in prange(nch):
        s = c * CHUNK
        e = min(n, s + CHUNK)
        st = sums[c]
        st[:] = 0.0
        for i in range(s, e):
            best = np.inf
            bk = 0
            for k in range(K):
                q = 0.0
                for l in range(d):
                    t = Xt[l, i] - centers[k, l]
                    q += t * t
                if q < best:
                    best = q
                    bk = k
            labels[i] = bk
            mind[i] = best
            wi = w[i] if weighted else 1.0
            st[bk, 0] += wi
            for l in range(d):
                st[bk, 1 + l] += wi * Xt[l, i]


@njit(cache=True)
def precision_cholesky(cov, out):
    """Upper-triangular ``out[k]`` with ``out[k] @ out[k].T == inv(cov[k])``.

    Returns the index of the first component whose covariance is not positive definite,
    or -1 when all succeed.
    """
    K, d, _ = cov.shape
    L = np.empty((d, d))
    for k in range(K):
        # Cholesky cov = L L^T (lower)
        for j in range(d):
            s = cov[k, j, j]
            for p in range(j):
                s -= L[j, p] * L[j, p]
            if not (s > 0.0):
                return k
            L[j, j] = math.sqrt(s)
            for i in range(j + 1, d):
                t = cov[k, i, j]
                for p in range(j):
                    t -= L[i, p] * L[j, p]
                L[i, j] = t / L[j, j]
            for i in range(j):
                L[i, j] = 0.0
        # out = inv(L)^T : solve L Z = I (forward substitution), out = Z^T
        for col in range(d):
            for i in range(d):
                t = 1.0 if i == col else 0.0
                for p in range(i):
                    t -= L[i, p] * out[k, col, p]
                out[k, col, i] = t / L[i, i]
    return -1
