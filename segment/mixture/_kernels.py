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
CHUNK = 256


#: Chunks per parallel work item (buffers are allocated once per item; fixed as well).
GROUP = 32

# fastmath without nnan/ninf: lets LLVM vectorise reductions and contract to FMA. The exp and
# log helpers get only "contract": reassociation would fold away their magic-number rounding.
_FM = {"reassoc", "contract", "nsz", "arcp"}
_FMA = {"contract"}

# Layout of the constant arrays built by ``segment.mixture.gmm._kernel_constants``:
# fc (data dtype): 0 zero, 1 half, 2 one, 3 log2(e), 4 shifter 1.5*2**mant, 5 ln2_hi, 6 ln2_lo,
#    7 lowest exp argument, 8 sqrt(2), 9 ln2, 10 2**mant + bias, 11..23 exp Taylor coefficients
#    1/j! (j = 0..12), 24..34 log series coefficients 2/(2j+1) (j = 0..10)
# ic (int dtype of the same width): 0 exponent bias, 1 mantissa bits, 2 exponent mask,
#    3 mantissa mask, 4 bits of 1.0, 5 bits of 2**mant
_EXP0 = 11
_LOG0 = 24


@njit(cache=True, fastmath=_FMA)
def _chunk_logprob(xb, m, means, pchol, lconst, fc, lp, dbuf, ybuf, qbuf):
    """lp[k, :m] = log w_k + log N(x_i | mu_k, Sigma_k) for the chunk ``xb[:, :m]``."""
    d = xb.shape[0]
    K = means.shape[0]
    zero = fc[0]
    half = fc[1]
    for k in range(K):
        for l in range(d):
            mu = means[k, l]
            for i in range(m):
                dbuf[l, i] = xb[l, i] - mu
        for i in range(m):
            qbuf[i] = zero
        for j in range(d):
            p0 = pchol[k, 0, j]
            for i in range(m):
                ybuf[i] = dbuf[0, i] * p0
            for l in range(1, j + 1):
                p = pchol[k, l, j]
                for i in range(m):
                    ybuf[i] += dbuf[l, i] * p
            for i in range(m):
                qbuf[i] += ybuf[i] * ybuf[i]
        lc = lconst[k]
        for i in range(m):
            lp[k, i] = lc - half * qbuf[i]


@njit(cache=True, fastmath=_FMA)
def _chunk_logprob4(xb, m, means, pchol, lconst, fc, lp):
    """Same as ``_chunk_logprob`` for 4 features (fewer are zero-padded), in registers."""
    K = means.shape[0]
    half = fc[1]
    x0 = xb[0]
    x1 = xb[1]
    x2 = xb[2]
    x3 = xb[3]
    for k in range(K):
        m0 = means[k, 0]
        m1 = means[k, 1]
        m2 = means[k, 2]
        m3 = means[k, 3]
        p00 = pchol[k, 0, 0]
        p01 = pchol[k, 0, 1]
        p11 = pchol[k, 1, 1]
        p02 = pchol[k, 0, 2]
        p12 = pchol[k, 1, 2]
        p22 = pchol[k, 2, 2]
        p03 = pchol[k, 0, 3]
        p13 = pchol[k, 1, 3]
        p23 = pchol[k, 2, 3]
        p33 = pchol[k, 3, 3]
        lc = lconst[k]
        lk = lp[k]
        for i in range(m):
            d0 = x0[i] - m0
            d1 = x1[i] - m1
            d2 = x2[i] - m2
            d3 = x3[i] - m3
            y0 = d0 * p00
            y1 = d0 * p01 + d1 * p11
            y2 = d0 * p02 + d1 * p12 + d2 * p22
            y3 = d0 * p03 + d1 * p13 + d2 * p23 + d3 * p33
            lk[i] = lc - half * (y0 * y0 + y1 * y1 + y2 * y2 + y3 * y3)


@njit(cache=True, fastmath=_FM)
def _chunk_accumulate4(xb, m, means, lp, gbuf, fc, st):
    """Add sum r, sum r d and the packed sum r d d^T (d = x - old mean) of 4 features to st."""
    K = means.shape[0]
    zero = fc[0]
    x0 = xb[0]
    x1 = xb[1]
    x2 = xb[2]
    x3 = xb[3]
    for k in range(K):
        m0 = means[k, 0]
        m1 = means[k, 1]
        m2 = means[k, 2]
        m3 = means[k, 3]
        lk = lp[k]
        a = zero
        s0 = zero
        s1 = zero
        s2 = zero
        s3 = zero
        q00 = zero
        q10 = zero
        q11 = zero
        q20 = zero
        q21 = zero
        q22 = zero
        q30 = zero
        q31 = zero
        q32 = zero
        q33 = zero
        for i in range(m):
            r = lk[i] * gbuf[i]
            d0 = x0[i] - m0
            d1 = x1[i] - m1
            d2 = x2[i] - m2
            d3 = x3[i] - m3
            r0 = r * d0
            r1 = r * d1
            r2 = r * d2
            r3 = r * d3
            a += r
            s0 += r0
            s1 += r1
            s2 += r2
            s3 += r3
            q00 += r0 * d0
            q10 += r1 * d0
            q11 += r1 * d1
            q20 += r2 * d0
            q21 += r2 * d1
            q22 += r2 * d2
            q30 += r3 * d0
            q31 += r3 * d1
            q32 += r3 * d2
            q33 += r3 * d3
        st[k, 0] += a
        st[k, 1] += s0
        st[k, 2] += s1
        st[k, 3] += s2
        st[k, 4] += s3
        st[k, 5] += q00
        st[k, 6] += q10
        st[k, 7] += q11
        st[k, 8] += q20
        st[k, 9] += q21
        st[k, 10] += q22
        st[k, 11] += q30
        st[k, 12] += q31
        st[k, 13] += q32
        st[k, 14] += q33


@njit(cache=True, fastmath=_FM)
def _chunk_accumulate(xb, m, means, lp, gbuf, fc, st, dbuf, rdbuf, rbuf):
    """General-d version of ``_chunk_accumulate4`` (buffers of shape (d, CHUNK))."""
    K, d = means.shape
    zero = fc[0]
    for k in range(K):
        a0 = zero
        lk = lp[k]
        for i in range(m):
            r = lk[i] * gbuf[i]
            rbuf[i] = r
            a0 += r
        st[k, 0] += a0
        for l in range(d):
            mu = means[k, l]
            a1 = zero
            xl = xb[l]
            dl = dbuf[l]
            rdl = rdbuf[l]
            for i in range(m):
                dv = xl[i] - mu
                dl[i] = dv
                rd = rbuf[i] * dv
                rdl[i] = rd
                a1 += rd
            st[k, 1 + l] += a1
        pos = 1 + d
        for l in range(d):
            rdl = rdbuf[l]
            for q in range(l + 1):
                dq = dbuf[q]
                a2 = zero
                for i in range(m):
                    a2 += rdl[i] * dq[i]
                st[k, pos] += a2
                pos += 1


@njit(cache=True, fastmath=_FMA)
def _chunk_softmax(lp, K, m, fc, ic, mx, ssum, tbuf, tbits):
    """lp[k, :m] <- exp(lp[k, :m] - mx), mx = max_k lp, ssum = sum_k of the exponentials.

    The exponential is a Cody-Waite range reduction and a degree-12 Taylor polynomial with the
    power of two built from the bits of a shifted float (``tbits`` is an integer view of
    ``tbuf``), so every loop vectorises; relative error below 1e-15 in float64.
    """
    zero = fc[0]
    log2e = fc[3]
    shifter = fc[4]
    ln2hi = fc[5]
    ln2lo = fc[6]
    lo = fc[7]
    c0 = fc[_EXP0]
    c1 = fc[_EXP0 + 1]
    c2 = fc[_EXP0 + 2]
    c3 = fc[_EXP0 + 3]
    c4 = fc[_EXP0 + 4]
    c5 = fc[_EXP0 + 5]
    c6 = fc[_EXP0 + 6]
    c7 = fc[_EXP0 + 7]
    c8 = fc[_EXP0 + 8]
    c9 = fc[_EXP0 + 9]
    c10 = fc[_EXP0 + 10]
    c11 = fc[_EXP0 + 11]
    c12 = fc[_EXP0 + 12]
    bias = ic[0]
    sh = ic[1]
    for i in range(m):
        mx[i] = lp[0, i]
        ssum[i] = zero
    for k in range(1, K):
        for i in range(m):
            v = lp[k, i]
            mx[i] = v if v > mx[i] else mx[i]
    for k in range(K):
        for i in range(m):
            x = lp[k, i] - mx[i]
            under = x < lo
            x = lo if under else x
            t = x * log2e + shifter
            nd = t - shifter
            r = x - nd * ln2hi
            r = r - nd * ln2lo
            p = c12 * r + c11
            p = p * r + c10
            p = p * r + c9
            p = p * r + c8
            p = p * r + c7
            p = p * r + c6
            p = p * r + c5
            p = p * r + c4
            p = p * r + c3
            p = p * r + c2
            p = p * r + c1
            p = p * r + c0
            lp[k, i] = zero if under else p
            tbuf[i] = t
        for i in range(m):
            tbits[i] = (tbits[i] + bias) << sh
        for i in range(m):
            e = lp[k, i] * tbuf[i]
            lp[k, i] = e
            ssum[i] += e


@njit(cache=True, fastmath=_FMA)
def _chunk_log(v, m, fc, ic, out, abuf, abits, bbuf, bbits, vbits):
    """out[:m] = log(v[:m]) for positive normal v (``vbits`` is an integer view of ``v``)."""
    one = fc[2]
    half = fc[1]
    sqrt2 = fc[8]
    ln2 = fc[9]
    eoff = fc[10]
    g0 = fc[_LOG0]
    g1 = fc[_LOG0 + 1]
    g2 = fc[_LOG0 + 2]
    g3 = fc[_LOG0 + 3]
    g4 = fc[_LOG0 + 4]
    g5 = fc[_LOG0 + 5]
    g6 = fc[_LOG0 + 6]
    g7 = fc[_LOG0 + 7]
    g8 = fc[_LOG0 + 8]
    g9 = fc[_LOG0 + 9]
    g10 = fc[_LOG0 + 10]
    sh = ic[1]
    emask = ic[2]
    mmask = ic[3]
    onebits = ic[4]
    magic = ic[5]
    for i in range(m):
        b = vbits[i]
        abits[i] = (b & mmask) | onebits
        bbits[i] = ((b >> sh) & emask) | magic
    for i in range(m):
        mant = abuf[i]
        ex = bbuf[i] - eoff
        big = mant > sqrt2
        mant = mant * half if big else mant
        ex = ex + one if big else ex
        s = (mant - one) / (mant + one)
        z = s * s
        p = g10 * z + g9
        p = p * z + g8
        p = p * z + g7
        p = p * z + g6
        p = p * z + g5
        p = p * z + g4
        p = p * z + g3
        p = p * z + g2
        p = p * z + g1
        p = p * z + g0
        out[i] = ex * ln2 + s * p


@njit(parallel=True, cache=True, fastmath=_FM)
def em_pass(Xt, w, means, pchol, lconst, fc, ic, stats, ll):
    """One fused E-step and M-step-statistics pass over the data, never storing (n, K).

    Parameters
    ----------
    Xt : ndarray of shape (d, n), float32 or float64
    w : ndarray of shape (n,) or (0,) for unit weights, dtype of Xt
    means : ndarray of shape (K, D), D = 4 when d <= 4 (zero-padded) else d
    pchol : ndarray of shape (K, D, D), upper-triangular precision Cholesky (zero-padded)
    lconst : ndarray of shape (K,), log weight + log det(pchol) - d/2 log(2 pi)
    fc, ic : constants (see module comment)
    stats : ndarray of shape (n_groups, K, 1 + D + D (D + 1) / 2), float64, output: per group
        sum r, sum r (x - mu), packed lower triangle of sum r (x - mu)(x - mu)^T (old means)
    ll : ndarray of shape (n_groups,), float64, output: per group sum w log p(x)
    """
    d, n = Xt.shape
    K, D = means.shape
    ngroups = stats.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    weighted = w.shape[0] == n
    fast = D == 4
    dt = Xt.dtype
    zero = fc[0]
    one = fc[2]
    for g in prange(ngroups):
        st = stats[g]
        st[:] = 0.0
        lsum = 0.0
        lp = np.empty((K, CHUNK), dt)
        xb = np.zeros((D, CHUNK), dt)
        dbuf = np.empty((D, CHUNK), dt)
        rdbuf = np.empty((D, CHUNK), dt)
        ybuf = np.empty(CHUNK, dt)
        qbuf = np.empty(CHUNK, dt)
        mx = np.empty(CHUNK, dt)
        ssum = np.empty(CHUNK, dt)
        tbuf = np.empty(CHUNK, dt)
        tbits = tbuf.view(ic.dtype)
        sbits = ssum.view(ic.dtype)
        bbuf = np.empty(CHUNK, dt)
        bbits = bbuf.view(ic.dtype)
        gbuf = np.empty(CHUNK, dt)
        c_end = min(nch, (g + 1) * GROUP)
        for c in range(g * GROUP, c_end):
            s = c * CHUNK
            m = min(CHUNK, n - s)
            for l in range(d):
                xb[l, :m] = Xt[l, s : s + m]
            if fast:
                _chunk_logprob4(xb, m, means, pchol, lconst, fc, lp)
            else:
                _chunk_logprob(xb, m, means, pchol, lconst, fc, lp, dbuf, ybuf, qbuf)
            _chunk_softmax(lp, K, m, fc, ic, mx, ssum, tbuf, tbits)
            _chunk_log(ssum, m, fc, ic, qbuf, tbuf, tbits, bbuf, bbits, sbits)
            acc = zero
            if weighted:
                wb = w[s : s + m]
                for i in range(m):
                    wi = wb[i]
                    acc += wi * (mx[i] + qbuf[i])
                    gbuf[i] = wi / ssum[i]
            else:
                for i in range(m):
                    acc += mx[i] + qbuf[i]
                    gbuf[i] = one / ssum[i]
            lsum += acc
            if fast:
                _chunk_accumulate4(xb, m, means, lp, gbuf, fc, st)
            else:
                _chunk_accumulate(xb, m, means, lp, gbuf, fc, st, dbuf, rdbuf, ybuf)
        ll[g] = lsum


@njit(parallel=True, cache=True, fastmath=_FM)
def score_pass(Xt, means, pchol, lconst, fc, ic, resp, lpn, labels):
    """Per-sample outputs; each is skipped when given with length 0.

    resp : (n, K) responsibilities; lpn : (n,) log p(x); labels : (n,) int64 argmax component.
    Other arguments as for :func:`em_pass`.
    """
    d, n = Xt.shape
    K, D = means.shape
    nch = (n + CHUNK - 1) // CHUNK
    ngroups = (nch + GROUP - 1) // GROUP
    fast = D == 4
    dt = Xt.dtype
    one = fc[2]
    want_resp = resp.shape[0] == n
    want_lpn = lpn.shape[0] == n
    want_lab = labels.shape[0] == n
    for g in prange(ngroups):
        lp = np.empty((K, CHUNK), dt)
        xb = np.zeros((D, CHUNK), dt)
        dbuf = np.empty((D, CHUNK), dt)
        ybuf = np.empty(CHUNK, dt)
        qbuf = np.empty(CHUNK, dt)
        mx = np.empty(CHUNK, dt)
        ssum = np.empty(CHUNK, dt)
        tbuf = np.empty(CHUNK, dt)
        tbits = tbuf.view(ic.dtype)
        sbits = ssum.view(ic.dtype)
        bbuf = np.empty(CHUNK, dt)
        bbits = bbuf.view(ic.dtype)
        c_end = min(nch, (g + 1) * GROUP)
        for c in range(g * GROUP, c_end):
            s = c * CHUNK
            m = min(CHUNK, n - s)
            for l in range(d):
                xb[l, :m] = Xt[l, s : s + m]
            if fast:
                _chunk_logprob4(xb, m, means, pchol, lconst, fc, lp)
            else:
                _chunk_logprob(xb, m, means, pchol, lconst, fc, lp, dbuf, ybuf, qbuf)
            if want_lab:
                lo = labels[s : s + m]
                for i in range(m):
                    best = lp[0, i]
                    bk = 0
                    for k in range(1, K):
                        if lp[k, i] > best:
                            best = lp[k, i]
                            bk = k
                    lo[i] = bk
            if want_resp or want_lpn:
                _chunk_softmax(lp, K, m, fc, ic, mx, ssum, tbuf, tbits)
            if want_lpn:
                _chunk_log(ssum, m, fc, ic, qbuf, tbuf, tbits, bbuf, bbits, sbits)
                lo2 = lpn[s : s + m]
                for i in range(m):
                    lo2[i] = mx[i] + qbuf[i]
            if want_resp:
                for i in range(m):
                    ybuf[i] = one / ssum[i]
                ro = resp[s : s + m]
                for i in range(m):
                    for k in range(K):
                        ro[i, k] = lp[k, i] * ybuf[i]


@njit(parallel=True, cache=True, fastmath=_FM)
def kmeans_pass(Xt, w, centers, fc, labels, mind, sums):
    """Assign each sample to its nearest center and accumulate the hard-assignment statistics.

    centers : (K, D) in the dtype of Xt, zero-padded to D = 4 when d <= 4 (as for em_pass);
    labels : (n,) int64 and mind : (n,) squared distance, outputs; sums : (n_groups, K,
    1 + D + D (D + 1) / 2) float64 output: per group sum w, sum w (x - c) and the packed
    sum w (x - c)(x - c)^T over the samples of each cluster (the EM statistics of the hard
    assignment, centred on the centers).
    """
    d, n = Xt.shape
    K, D = centers.shape
    ngroups = sums.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    weighted = w.shape[0] == n
    fast = D == 4
    dt = Xt.dtype
    zero = fc[0]
    one = fc[2]
    for g in prange(ngroups):
        st = sums[g]
        st[:] = 0.0
        xb = np.zeros((D, CHUNK), dt)
        ind = np.empty((K, CHUNK), dt)
        db = np.empty(CHUNK, dt)
        best = np.empty(CHUNK, dt)
        bk = np.empty(CHUNK, np.int64)
        gbuf = np.empty(CHUNK, dt)
        dbuf = np.empty((D, CHUNK), dt)
        rdbuf = np.empty((D, CHUNK), dt)
        rbuf = np.empty(CHUNK, dt)
        c_end = min(nch, (g + 1) * GROUP)
        for c in range(g * GROUP, c_end):
            s = c * CHUNK
            m = min(CHUNK, n - s)
            for l in range(d):
                xb[l, :m] = Xt[l, s : s + m]
            for k in range(K):
                for i in range(m):
                    db[i] = zero
                for l in range(d):
                    cl = centers[k, l]
                    xl = xb[l]
                    for i in range(m):
                        t = xl[i] - cl
                        db[i] += t * t
                if k == 0:
                    for i in range(m):
                        best[i] = db[i]
                        bk[i] = 0
                else:
                    for i in range(m):
                        better = db[i] < best[i]
                        best[i] = db[i] if better else best[i]
                        bk[i] = k if better else bk[i]
            lo = labels[s : s + m]
            mo = mind[s : s + m]
            for i in range(m):
                lo[i] = bk[i]
                mo[i] = best[i]
            for k in range(K):
                ik = ind[k]
                for i in range(m):
                    ik[i] = one if bk[i] == k else zero
            if weighted:
                wb = w[s : s + m]
                for i in range(m):
                    gbuf[i] = wb[i]
            else:
                for i in range(m):
                    gbuf[i] = one
            if fast:
                _chunk_accumulate4(xb, m, centers, ind, gbuf, fc, st)
            else:
                _chunk_accumulate(xb, m, centers, ind, gbuf, fc, st, dbuf, rdbuf, rbuf)


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
