"""Bias-field correction: N4 (Tustison et al. 2010), our own implementation or SimpleITK's.

Both estimate a smooth multiplicative field on a shrunk copy of the image and apply it at full
resolution. The field lives in log space and is a tensor-product cubic B-spline over the brain's
bounding box; each iteration sharpens the histogram of the corrected log intensities (Wiener
deconvolution of a Gaussian of ``fwhm``), maps every voxel to its expected sharpened value, and
adds the smooth part of the residual to the field.

``method="native"`` (the default) follows that scheme with numpy: the residual is fitted by
least squares in the B-spline space (64 functions for one span), whose normal matrix is factored
once, and the full-resolution field is evaluated separably, axis by axis. SimpleITK's filter
fits the residual with the multilevel B-spline approximation of Lee et al. instead, and spends
most of its time in per-iteration image and thread set-up on an image of a few ten thousand
voxels. ``scripts/bench_bias.py`` compares the two (fields, timings).
"""
from __future__ import annotations

from typing import Literal

import numpy as np

_LN2 = float(np.log(2.0))


def n4_correct(
    data: np.ndarray,
    mask: np.ndarray | None,
    spacing: tuple[float, float, float],
    *,
    shrink: int = 6,
    iterations: tuple[int, ...] = (50,),
    fitting_levels: int | None = None,
    convergence: float = 1e-4,
    method: Literal["native", "simpleitk"] = "native",
) -> np.ndarray:
    """N4 bias-field correction, estimated on a shrunk copy and applied at full resolution.

    Parameters
    ----------
    data : ndarray of shape (X, Y, Z), float
        Intensities (non-negative; shifted if not).
    mask : ndarray of shape (X, Y, Z), bool, optional
        Where to estimate the field (the brain or head). Without it, the voxels above the
        image's mean (native) or Otsu foreground (simpleitk).
    spacing : tuple of 3 floats
        Voxel size in mm.
    shrink : int
        Shrink factor in-plane; slices thicker than the in-plane size are shrunk less along
        their axis so the shrunk grid stays roughly isotropic.
    iterations : tuple of int
        Maximum iterations per fitting level (its length is the number of levels; each level
        doubles the B-spline spans per axis). One level (the default) fits one cubic span over
        the brain: a field as smooth as a scanner's, which does not absorb anatomy (on the
        MNI152 template three levels removed as much "bias" from the clean image as a 20 %
        field puts in; see docs/validation_degraded.md).
    fitting_levels : int, optional
        Number of levels; default ``len(iterations)``.
    convergence : float
        Stop a level when the coefficient of variation of the field's last update inside the
        mask falls below this.
    method : {"native", "simpleitk"}
        Our implementation (default) or SimpleITK's ``N4BiasFieldCorrectionImageFilter``.

    Returns
    -------
    ndarray of shape (X, Y, Z), float32
        ``data / field``, with the field's mean inside the mask scaled to one; with a mask, the
        field is estimated over the mask's bounding box and voxels outside it are unchanged.
    """
    from ..postprocess import bounding_box

    x = np.asarray(data, dtype=np.float32)
    offset = 0.0
    if x.min() < 0:
        offset = -float(x.min())
    out = x.copy()
    if mask is not None and mask.any():
        box = bounding_box(mask, pad=2)
        sel = np.asarray(mask[box], dtype=bool)
    else:
        box = tuple(slice(None) for _ in x.shape)
        sel = None
    # the field is estimated and applied on the mask's bounding box only: voxels outside the
    # mask are not used by the estimate, and the B-spline span then covers the brain itself
    work = x[box] + np.float32(offset + 1e-3)
    smin = min(spacing)
    factors = [max(1, int(round(shrink * smin / s))) for s in spacing]
    levels = fitting_levels if fitting_levels is not None else len(iterations)
    its = [int(iterations[min(i, len(iterations) - 1)]) for i in range(levels)]
    # without a mask: the native fit and the field's normalisation use the voxels above the mean
    est = sel if sel is not None else work > work.mean()
    if method == "simpleitk":
        field = _n4_simpleitk(work, sel, spacing, factors, its, convergence)
    elif method == "native":
        field = np.exp(_n4_native(work, est, factors, its, convergence), dtype=np.float32)
    else:
        raise ValueError(f"method must be 'native' or 'simpleitk', got {method!r}")
    if est.any():
        field /= np.float32(np.mean(field[est]))
    out[box] = work / field - offset
    return out


# --------------------------------------------------------------------------- native N4


def bspline_basis(t: np.ndarray, spans: int) -> np.ndarray:
    """Uniform cubic B-spline basis with ``spans`` spans on [0, 1] at positions ``t``.

    Returns
    -------
    ndarray of shape (len(t), spans + 3); rows sum to one.
    """
    u = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0) * spans
    k = np.minimum(np.floor(u).astype(np.intp), spans - 1)
    s = u - k
    out = np.zeros((u.size, spans + 3))
    rows = np.arange(u.size)
    out[rows, k] = (1 - s) ** 3 / 6
    out[rows, k + 1] = (3 * s**3 - 6 * s**2 + 4) / 6
    out[rows, k + 2] = (-3 * s**3 + 3 * s**2 + 3 * s + 1) / 6
    out[rows, k + 3] = s**3 / 6
    return out


def _axis_positions(n: int, first: int, last: int) -> np.ndarray:
    """Parametric positions of voxels 0..n-1 when the B-spline domain spans voxels first..last
    (the sampled grid, as ITK's fit on the shrunk image); outside it they are clamped."""
    return (np.arange(n) - first) / max(last - first, 1)


def sharpen_log_intensities(
    u: np.ndarray, *, bins: int = 200, fwhm: float = 0.15, wiener_noise: float = 0.01
) -> np.ndarray:
    """N4's histogram sharpening: every value mapped to its expected value under the histogram
    deconvolved by a Gaussian of ``fwhm`` (Wiener filter), linearly between bins."""
    lo, hi = float(u.min()), float(u.max())
    if not hi > lo:
        return u.copy()
    slope = (hi - lo) / (bins - 1)
    c = (u - lo) / slope
    i = np.minimum(np.floor(c).astype(np.intp), bins - 2)
    f = c - i
    hist = np.bincount(i, weights=1 - f, minlength=bins) + np.bincount(i + 1, weights=f, minlength=bins)
    npad = 1 << (int(np.ceil(np.log2(bins))) + 1)
    off = (npad - bins) // 2
    v = np.zeros(npad)
    v[off:off + bins] = hist
    scaled = fwhm / slope
    n = np.arange(npad)
    dist = np.minimum(n, npad - n).astype(np.float64)
    kernel = 2 * np.sqrt(_LN2 / np.pi) / scaled * np.exp(-4 * _LN2 * dist**2 / scaled**2)
    kf = np.fft.fft(kernel)
    deconv = np.fft.ifft(np.fft.fft(v) * np.conj(kf) / (np.abs(kf) ** 2 + wiener_noise)).real
    deconv = np.maximum(deconv, 0.0)
    centres = lo + (n - off) * slope
    num = np.fft.ifft(np.fft.fft(centres * deconv) * kf).real
    den = np.fft.ifft(np.fft.fft(deconv) * kf).real
    expect = np.where(den > 1e-12 * max(den.max(), 1e-300), num / np.where(den == 0, 1, den), centres)
    expect = expect[off:off + bins]
    return expect[i] * (1 - f) + expect[i + 1] * f


def _centred_samples(n: int, f: int) -> np.ndarray:
    """Indices of every ``f``-th of ``n`` voxels, ``n // f`` of them, centred in 0..n-1."""
    m = max(n // f, 1)
    first = (n - f * m + f) // 2 if n >= f else (n - 1) // 2
    return first + f * np.arange(m)


def _n4_native(
    work: np.ndarray, sel: np.ndarray, factors: list[int], iterations: list[int], convergence: float
) -> np.ndarray:
    """Log field (float32, shape of ``work``) by N4 iterations on every ``factors``-th voxel."""
    shape = work.shape
    # every f-th voxel on a grid centred in the box, as ITK's ShrinkImageFilter samples: the
    # B-spline domain spans the samples, so an off-centre grid would skew the field
    idx = [_centred_samples(n, f) for f, n in zip(factors, shape)]
    sub = np.ix_(*idx)
    small = work[sub]
    use = sel[sub] & (small > 0)
    if np.count_nonzero(use) < 64:  # too few shrunk samples (a tiny mask): use every voxel
        use = sel & (work > 0)
        idx = [np.arange(n) for n in shape]
        sub = np.ix_(*idx)
        small = work
    coords = np.nonzero(use)
    v = np.log(small[use].astype(np.float64))
    pos = [_axis_positions(n, ix[0], ix[-1])[ix] for n, ix in zip(shape, idx)]
    coefs: list[tuple[int, np.ndarray]] = []
    f = np.zeros_like(v)
    for level, n_iter in enumerate(iterations):
        spans = 2**level
        bases = [bspline_basis(p, spans)[c] for p, c in zip(pos, coords)]
        m = spans + 3
        b0, b1, b2 = bases  # per-axis basis rows of every sample
        design = (b0[:, :, None, None] * b1[:, None, :, None] * b2[:, None, None, :]).reshape(v.size, -1)
        # multilevel B-spline approximation (Lee, Wolberg & Shin 1997), one level: every
        # point proposes values for the control points it touches, which average them
        # weighted by the squared basis values
        w2 = design**2
        w3 = w2 * design
        point_norm = w2.sum(axis=1)
        den = w2.sum(axis=0)
        den[den == 0] = 1.0
        total = np.zeros(m**3)
        for _ in range(n_iter):
            u = v - f
            resid = u - sharpen_log_intensities(u)
            # einsum, not BLAS: these products are small, and a threaded BLAS waking its
            # threads 100 times costs more than the arithmetic (6x slower on a busy machine)
            step = np.einsum("ij,i->j", w3, resid / point_norm, optimize=False) / den
            update = np.einsum("ij,j->i", design, step, optimize=False)
            total += step
            f += update
            ratio = np.exp(update - update.mean())
            if ratio.std() / ratio.mean() < convergence:
                break
        coefs.append((spans, total.reshape(m, m, m)))
    # evaluate the field at full resolution, axis by axis
    log_field = np.zeros(shape, dtype=np.float32)
    for spans, c in coefs:
        bx, by, bz = (bspline_basis(_axis_positions(n, ix[0], ix[-1]), spans) for n, ix in zip(shape, idx))
        t = np.tensordot(bz, c, axes=([1], [2]))  # (nz, mx, my)
        t = np.tensordot(by, t, axes=([1], [2]))  # (ny, nz, mx)
        t = np.tensordot(bx, t, axes=([1], [2]))  # (nx, ny, nz)
        log_field += t.astype(np.float32)
    # keep the field within what it takes inside the mask (no runaway in the box's corners)
    inside = log_field[sel]
    if inside.size:
        np.clip(log_field, inside.min(), inside.max(), out=log_field)
    return log_field


# --------------------------------------------------------------------------- SimpleITK


def _n4_simpleitk(
    work: np.ndarray, sel: np.ndarray | None, spacing, factors: list[int], iterations: list[int], convergence: float
) -> np.ndarray:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(work.transpose(2, 1, 0)))
    img.SetSpacing(tuple(float(s) for s in spacing))
    if sel is None:
        m = sitk.OtsuThreshold(img, 0, 1, 200)
    else:
        m = sitk.GetImageFromArray(np.ascontiguousarray(sel.astype(np.uint8).transpose(2, 1, 0)))
        m.CopyInformation(img)
    small = sitk.Shrink(img, factors)
    small_m = sitk.Shrink(m, factors)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(i) for i in iterations])
    corrector.SetConvergenceThreshold(convergence)
    corrector.Execute(small, small_m)
    log_field = corrector.GetLogBiasFieldAsImage(img)
    return np.exp(sitk.GetArrayFromImage(log_field).transpose(2, 1, 0)).astype(np.float32)
