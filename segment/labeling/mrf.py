"""Spatial regularisation of class probabilities: a mean-field hidden Markov random field.

The voxel classes form a Potts Markov random field on the 6-neighbourhood of the grid, each
neighbour weighted by ``1 / distance`` in mm (so thick slices couple less). Mean-field
inference replaces every voxel's class distribution ``q_i`` by

    q_i(c)  ∝  p_i(c) · exp(beta · Σ_j w_ij q_j(c))

where ``p_i`` are the given (mixture) class probabilities, clipped at ``EPS`` before the log,
and ``j`` runs over the voxel's neighbours inside the mask (outside voxels do not vote). This
is the update of FSL FAST's and ANTs Atropos' MRF step, written here without the mixture
re-fit.

Updates run red-black (Gauss-Seidel on the two colours of the 6-neighbourhood
checkerboard): voxels of one colour read only voxels of the other colour, so a colour's
update is order free, the parallel loop over slices cannot race, the result does not depend
on the number of threads, and the damping a Jacobi mean field needs against checkerboard
oscillation is not needed.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

#: Class probabilities are clipped to at least this before the log (a zero would veto a class).
EPS = 1e-4


@njit(parallel=True, cache=True, fastmath=True)
def _mean_field(idx, unary, q, w, beta, iterations):
    """In-place red-black mean-field sweeps on ``q`` (n, C), float32.

    idx : (X, Y, Z) int32, row of each voxel in ``q``/``unary`` or -1 outside the mask
    unary : (n, C) float32, log of the clipped class probabilities
    w : (3,) float64, neighbour weight along each axis
    """
    X, Y, Z = idx.shape
    C = q.shape[1]
    w0 = np.float32(w[0] * beta)
    w1 = np.float32(w[1] * beta)
    w2 = np.float32(w[2] * beta)
    one = np.float32(1.0)
    for _ in range(iterations):
        for colour in range(2):
            for x in prange(X):
                s = np.empty(C, np.float32)
                for y in range(Y):
                    z0 = (x + y + colour) & 1
                    for z in range(z0, Z, 2):
                        i = idx[x, y, z]
                        if i < 0:
                            continue
                        for c in range(C):
                            s[c] = unary[i, c]
                        if x > 0:
                            j = idx[x - 1, y, z]
                            if j >= 0:
                                for c in range(C):
                                    s[c] += w0 * q[j, c]
                        if x < X - 1:
                            j = idx[x + 1, y, z]
                            if j >= 0:
                                for c in range(C):
                                    s[c] += w0 * q[j, c]
                        if y > 0:
                            j = idx[x, y - 1, z]
                            if j >= 0:
                                for c in range(C):
                                    s[c] += w1 * q[j, c]
                        if y < Y - 1:
                            j = idx[x, y + 1, z]
                            if j >= 0:
                                for c in range(C):
                                    s[c] += w1 * q[j, c]
                        if z > 0:
                            j = idx[x, y, z - 1]
                            if j >= 0:
                                for c in range(C):
                                    s[c] += w2 * q[j, c]
                        if z < Z - 1:
                            j = idx[x, y, z + 1]
                            if j >= 0:
                                for c in range(C):
                                    s[c] += w2 * q[j, c]
                        top = s[0]
                        for c in range(1, C):
                            if s[c] > top:
                                top = s[c]
                        tot = np.float32(0.0)
                        for c in range(C):
                            s[c] = math.exp(s[c] - top)
                            tot += s[c]
                        inv = one / tot
                        for c in range(C):
                            q[i, c] = s[c] * inv


@njit(parallel=True, cache=True)
def _prepare(probs, eps, q, unary):
    """Rows of ``probs`` (negatives as 0) normalised into ``q``; ``unary = log(max(q, eps))``.
    An all-zero row becomes uniform."""
    n, C = probs.shape
    for i in prange(n):
        tot = 0.0
        for c in range(C):
            v = probs[i, c]
            if v > 0:
                tot += v
        for c in range(C):
            v = probs[i, c]
            v = v / tot if (tot > 0 and v > 0) else (0.0 if tot > 0 else 1.0 / C)
            q[i, c] = v
            unary[i, c] = math.log(max(v, eps))


def mrf_smooth(
    probs: np.ndarray,
    mask: np.ndarray,
    spacing: tuple[float, float, float],
    *,
    beta: float,
    iterations: int = 5,
) -> np.ndarray:
    """Regularise per-voxel class probabilities with a mean-field Potts MRF.

    Parameters
    ----------
    probs : ndarray of shape (n, C), float
        Class probabilities (or fractions) of the ``n`` mask voxels, rows in C order of the
        mask's voxels (``volume[mask]``). Rows need not be normalised.
    mask : ndarray of shape (X, Y, Z), bool
        The voxels the rows belong to; neighbours outside it do not vote.
    spacing : tuple of 3 floats
        Voxel size in mm; a neighbour along axis ``a`` has weight ``1 / spacing[a]``.
    beta : float
        Weight of the prior (>= 0); 0 returns the (normalised) input. With 1 mm voxels a voxel
        whose six neighbours all agree gains ``6 * beta`` in log-odds for their class.
    iterations : int
        Mean-field sweeps (each updates every voxel once).

    Returns
    -------
    ndarray of shape (n, C), float32
        Posterior class probabilities, rows summing to one.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.ones((3, 3, 3), bool)
    >>> p = np.tile([0.9, 0.1], (27, 1)); p[13] = [0.3, 0.7]   # one odd voxel in the centre
    >>> out = mrf_smooth(p, mask, (1.0, 1.0, 1.0), beta=1.0, iterations=3)
    >>> int(out[13].argmax())
    0
    """
    probs = np.asarray(probs)
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be a 3-D volume, got shape {mask.shape}")
    if mask.dtype != bool:
        raise ValueError(f"mask must be boolean, got dtype {mask.dtype}")
    if probs.ndim != 2 or probs.shape[1] < 1:
        raise ValueError(f"probs must have shape (n_voxels, n_classes), got {probs.shape}")
    n = int(np.count_nonzero(mask))
    if probs.shape[0] != n:
        raise ValueError(f"probs has {probs.shape[0]} rows but the mask has {n} voxels; rows must be volume[mask]")
    sp = np.asarray(spacing, dtype=np.float64)
    if sp.shape != (3,) or not np.all(sp > 0) or not np.all(np.isfinite(sp)):
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {spacing}")
    if not (np.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be >= 0, got {beta}")
    iterations = int(iterations)
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")

    if not probs.dtype == np.float32:
        probs = probs.astype(np.float32)
    if not np.isfinite(probs).all():
        raise ValueError("probs has NaN or infinite values")
    q = np.empty(probs.shape, np.float32)
    unary = np.empty(probs.shape, np.float32)
    _prepare(np.ascontiguousarray(probs), np.float32(EPS), q, unary)
    if beta == 0 or iterations == 0 or n == 0:
        return q

    # work on the mask's bounding box (+1 voxel is not needed: outside voxels never vote)
    from ..postprocess import bounding_box

    box = bounding_box(mask, pad=0)
    sub = mask[box]
    idx = np.full(sub.shape, -1, dtype=np.int32)
    idx[sub] = np.arange(n, dtype=np.int32)  # C order of the box = C order of the volume
    _mean_field(idx, unary, q, 1.0 / sp, float(beta), np.int64(iterations))
    return q
