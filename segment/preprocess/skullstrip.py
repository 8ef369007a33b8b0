"""Brain extraction (skull stripping) for T1, T1c, T2 and FLAIR MRI, classical and CPU only.

Two situations are handled:

* Images that are already brain-only (BraTS, the MNI152 template: an exactly-zero background
  around one compact non-zero region) are detected by :func:`is_brain_only` and masked by
  :func:`brain_mask_nonzero`.
* Images with skull, scalp, eyes and neck go through :func:`skullstrip`, a morphological method
  that works in millimetres so thick (5 mm) slices and isotropic 1 mm volumes behave alike:

  1. head mask: Otsu threshold of the smoothed log image taken relative to the image's offset
     (estimated from the air as a shifted Rayleigh, so an intensity offset changes nothing and
     noise is not mistaken for one), 3-D hole filling sealed
     where the field of view cuts the head, largest component; its Euclidean depth map (distance
     to air, in mm). Air cavities open to the outside (nasal airway, sinuses connected to it)
     stay air, so the face around them is shallow and does not seed the brain. No array axis
     is special in this step;
  2. brain-tissue intensity model per series: median and MAD of the lightly smoothed image
     (the one the thresholds are applied to) in the deepest part of the head (depth >= half the
     maximum depth), which is mostly brain whatever the contrast; the MAD is floored at 12 % of
     the median above the offset;
  3. brain-tissue candidate voxels: every series inside a modality-aware range around its brain
     median (fat-bright scalp and marrow excluded on T1/T1c/FLAIR, dark bone excluded everywhere;
     bright CSF allowed on T2; on FLAIR the upper bound uses the floored SD, since grey matter
     is brighter than the white-matter-rich deep median);
  4. seed: candidate voxels deeper than ``seed_depth_mm`` in the head, eroded by ``erosion_mm``
     (this cuts the thin bridges between brain and scalp, eyes, muscles), largest component, and
     with the vertex visible, anything more than ``max_brain_height_mm`` below the seed's top
     (neck) removed (the only step that needs axis 2 to point superior);
  5. reconstruction: the seed dilated back by the erosion radius inside the candidate, holes
     filled, a closing that takes in sulci, CSF and tumors touching the surface, an opening by
     reconstruction (largest component of the mask eroded by ``opening_mm``, dilated back inside
     the mask) that drops thin attached shells and parts attached through necks narrower than
     twice that radius, and a dilation of ``rim_mm`` for the outer CSF rim (the mask edge
     of tools such as HD-BET lies on the inner table of the skull).

Tumors inside the brain are kept by the hole filling and closing: they may fall outside the
intensity range, but they are enclosed by brain tissue. All radii are millimetres converted with
the voxel spacing, so anisotropic grids such as 0.9 x 0.9 x 5.5 mm are handled.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from segment.errors import InputError
from segment.morphology import close_mm, dilate_mm, erode_mm, squared_distance_to
from segment.postprocess import bounding_box, fill_holes, fill_holes_nd

__all__ = [
    "is_brain_only",
    "zero_background_kind",
    "brain_mask_nonzero",
    "skullstrip",
    "mask_quality_flags",
    "template_brain_mask",
    "brain_mask_flags",
]

# Brain-tissue intensity range per modality, in robust standard deviations (1.4826 MAD) of the
# deep-head intensities around their median: (below, above). ``None`` = no bound.
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "t1": (3.5, 2.5),
    "t1c": (3.5, 2.5),
    "flair": (3.5, 2.5),
    "t2": (2.0, None),
}
# Contrasts where grey matter is brighter than white matter: the upper bound of the range (around
# a deep, white-matter-rich median) uses the floored SD so grey matter stays inside it. On T1/T1c
# grey matter is darker than white matter and the upper bound keeps the plain MAD (it must
# exclude fat, marrow and enhancing vessels just above white matter).
_GM_ABOVE_WM = frozenset({"flair", "t2"})
# Which series leads the geometry (head mask, depth), best first.
_PRIMARY_ORDER = ("t1c", "t1", "flair", "t2")
_ALIASES = {
    "t1n": "t1", "t1w": "t1", "t1ce": "t1c", "t1gd": "t1c", "t1post": "t1c",
    "t2w": "t2", "t2f": "flair", "flair": "flair",
}


# --------------------------------------------------------------------------------------------
# small helpers (millimetre morphology through Euclidean distance transforms)
# --------------------------------------------------------------------------------------------
def _largest_component(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    structure = ndi.generate_binary_structure(mask.ndim, connectivity)
    lab, n = ndi.label(mask, structure)
    if n <= 1:
        return mask.astype(bool, copy=True)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(sizes.argmax())


def _check_spacing(spacing) -> np.ndarray:
    sp = np.asarray(spacing, dtype=np.float64).ravel()
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(f"spacing must be three positive numbers in mm, got {spacing!r}")
    return sp


def _check_volume(data: np.ndarray, what: str = "image") -> np.ndarray:
    a = np.asarray(data)
    if a.ndim != 3:
        raise InputError(f"{what} must be 3-D (X, Y, Z), got shape {a.shape}; split 4-D files first")
    if a.size == 0:
        raise InputError(f"{what} is empty (shape {a.shape})")
    a = a.astype(np.float32, copy=False)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{what} holds NaN or Inf voxels; replace them (e.g. by 0) first")
    return a


# --------------------------------------------------------------------------------------------
# brain-only images
# --------------------------------------------------------------------------------------------
def zero_background_kind(
    data: np.ndarray,
    *,
    min_zero_fraction: float = 0.25,
    max_border_nonzero: float = 0.05,
    min_fill: float = 0.85,
    spacing: Sequence[float] | None = None,
    max_ml: float = 2200.0,
) -> str | None:
    """What a zero background surrounds: ``"brain"`` (an already skull-stripped image), ``"head"``
    (one larger than any brain: a head whose air was set to zero) or None (no such background).

    Brain-only images (BraTS, the MNI152 brain template) have a large region of *exactly* zero
    voxels that surrounds one compact non-zero region. Raw scans have noise in the air, so exact
    zeros are rare or form only thin bands (zero padding, a cropped field of view). A head whose
    air was set to zero (by a converter, a defacing or background-removal tool, or
    :func:`segment.io.cases.load_case` for a constant background) is compact and surrounded by
    zeros too; only its size tells it from a brain.

    Parameters
    ----------
    data : ndarray of shape (X, Y, Z)
        The image.
    min_zero_fraction : float
        Minimum fraction of voxels that must be exactly zero.
    max_border_nonzero : float
        Maximum fraction of the array's faces that may be non-zero (the brain must be surrounded
        by zeros).
    min_fill : float
        Minimum fraction of the non-zero region's filled largest component covered by non-zero
        voxels (a brain is a compact blob, not scattered noise).
    spacing : sequence of 3 floats, optional
        Voxel size in mm. Without it every zero-surrounded region is a ``"brain"``.
    max_ml : float
        The largest brain-only region (mL; an adult brain with its CSF is 1000-2000 mL, a head
        holding the whole brain 2500-5000 mL).

    Examples
    --------
    >>> img = np.zeros((20, 20, 20)); img[5:15, 5:15, 5:15] = 1.0
    >>> zero_background_kind(img), zero_background_kind(img, spacing=(15, 15, 15))  # 1000 voxels: 3375 mL
    ('brain', 'head')
    """
    a = _check_volume(data)
    nz = a != 0
    n = nz.sum()
    if n == 0 or (1.0 - n / a.size) < min_zero_fraction:
        return None
    faces = [nz[0], nz[-1], nz[:, 0], nz[:, -1], nz[:, :, 0], nz[:, :, -1]]
    border = np.mean(np.concatenate([f.ravel() for f in faces]))
    if border > max_border_nonzero:
        return None
    box = bounding_box(nz)
    main = _largest_component(nz[box])
    if main.sum() < 0.9 * n:
        return None
    filled = fill_holes_nd(main)
    if main.sum() < min_fill * filled.sum():
        return None
    # the zero region must surround the brain: what is not the filled brain is (mostly) zero
    outside_nonzero = n - np.count_nonzero(nz[box] & filled)
    outside = nz.size - np.count_nonzero(filled)
    if not outside or outside_nonzero >= 0.01 * outside:
        return None
    if spacing is not None and n * float(np.prod(_check_spacing(spacing))) / 1000.0 > max_ml:
        return "head"
    return "brain"


def is_brain_only(data: np.ndarray, **kwargs) -> bool:
    """Whether an image is already skull-stripped: :func:`zero_background_kind` is ``"brain"``
    (same keyword arguments; with ``spacing``, a zero-surrounded head is not brain-only).

    Examples
    --------
    >>> img = np.zeros((20, 20, 20)); img[5:15, 5:15, 5:15] = 1.0
    >>> is_brain_only(img)
    True
    >>> is_brain_only(img + np.random.default_rng(0).random(img.shape))
    False
    """
    return zero_background_kind(data, **kwargs) == "brain"


def brain_mask_nonzero(
    data: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    min_island_ml: float = 0.5,
) -> np.ndarray:
    """Brain mask of a brain-only image: its non-zero region, holes filled, tiny islands removed.

    Parameters
    ----------
    data : ndarray of shape (X, Y, Z)
        A skull-stripped image (background exactly 0).
    spacing : sequence of 3 float
        Voxel size in mm, used to express ``min_island_ml``.
    min_island_ml : float
        Connected components smaller than this (millilitres) are dropped; the largest one is
        always kept.

    Returns
    -------
    ndarray of shape (X, Y, Z), bool

    Raises
    ------
    InputError
        If the image has no non-zero voxel.

    Examples
    --------
    >>> img = np.zeros((10, 10, 10)); img[2:8, 2:8, 2:8] = 1.0; img[5, 5, 5] = 0.0
    >>> int(brain_mask_nonzero(img).sum())
    216
    """
    a = _check_volume(data)
    sp = _check_spacing(spacing)
    nz = a != 0
    if not nz.any():
        raise InputError("empty brain mask: the image has no non-zero voxel")
    box = bounding_box(nz)
    lab, n = ndi.label(nz[box], ndi.generate_binary_structure(3, 1))
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    min_vox = min_island_ml * 1000.0 / float(np.prod(sp))
    keep = sizes >= min_vox
    keep[int(sizes.argmax())] = True
    keep[0] = False
    mask = np.zeros(nz.shape, dtype=bool)
    mask[box] = keep[lab]
    return fill_holes(mask)


# --------------------------------------------------------------------------------------------
# skull stripping
# --------------------------------------------------------------------------------------------
def _canonical_modality(name: str | None) -> str | None:
    if name is None:
        return None
    key = str(name).strip().lower()
    return _ALIASES.get(key, key)


def _fill_holes_sealed(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of a head mask in 3-D, sealing it where the field of view cuts the head.

    Background counts as outside (air) when it is connected to the array border. Where the
    head itself touches a face of the array (the field of view cuts the neck or the vertex),
    that face is closed by the head's 2-D hole-filled footprint, so dark tissue that reaches the
    cut (bone, CSF, an airway cut at the bottom) is filled but air that reaches the open air
    elsewhere (nasal airway through the nostrils, the outside) is not. No axis plays a special
    role, so the result does not depend on how the array is oriented.
    """
    m = np.pad(mask, 1)
    for ax in range(3):
        for k in (0, -1):
            face = np.take(mask, k, axis=ax)
            if face.any():
                idx = [slice(1, -1)] * 3
                idx[ax] = k
                m[tuple(idx)] = fill_holes_nd(face)
    # air = background connected to the (partly sealed) border
    return fill_holes_nd(m)[1:-1, 1:-1, 1:-1]


def _foreground(image: np.ndarray, spacing: np.ndarray, offset: float) -> np.ndarray:
    shifted = image - offset
    pos = shifted[shifted > 0]
    if pos.size == 0:
        raise InputError("empty brain mask: the image has no positive voxel")
    scale = float(np.percentile(pos, 99.5))
    if not scale > 0:
        raise InputError("empty brain mask: the image is constant")
    x = np.clip(shifted / scale, 0.0, None)
    ls = np.log1p(ndi.gaussian_filter(x, 1.5 / spacing) * 100.0)
    if float(ls.max() - ls.min()) < 1e-6:
        raise InputError("empty brain mask: the image is constant, no head can be found")
    fg = ls > threshold_otsu(ls)
    # fill before taking the largest component: a scalp shell separated from the brain by dark
    # bone and CSF encloses them
    return _largest_component(_fill_holes_sealed(fg))


def _air_offset(values: np.ndarray) -> float:
    """Additive intensity offset of an image, from its air voxels (outside the head).

    Magnitude MR air is Rayleigh noise: its 5th percentile and median are 0.3203 and 1.1774
    times the noise sigma. A shifted Rayleigh fitted to those two quantiles gives the shift,
    about 0 for an ordinary scan however noisy it is, and the offset when one was added to the
    whole image. Exact zeros (padding, zero-filled background) are left out: they are not
    measurements.
    """
    v = values[values != 0]
    if v.size < 1000:
        return 0.0
    p5, p50 = np.percentile(v, [5.0, 50.0])
    sigma = max(float(p50 - p5), 0.0) / (1.1774 - 0.3203)
    return float(p5 - 0.3203 * sigma)


def _head_mask(image: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, float]:
    """Head mask (Otsu threshold of the smoothed log intensity, holes filled, largest component)
    and the image's intensity offset (:func:`_air_offset`); with an offset the mask is made again
    on the image minus the offset, so an offset added to the whole image changes nothing."""
    head = _foreground(image, spacing, 0.0)
    offset = _air_offset(image[~head])
    top = float(np.percentile(image[head], 99.5)) if head.any() else 0.0
    if abs(offset) > 0.01 * abs(top - offset):
        head = _foreground(image, spacing, offset)
        offset = _air_offset(image[~head])
    return head, offset


def _robust_stats(values: np.ndarray, offset: float = 0.0) -> tuple[float, float, float]:
    """Median, robust SD (1.4826 MAD) and floored robust SD of the deep-head intensities.

    The floor (12 % of the median above the image's offset) keeps the range wide enough when
    the deep head is nearly pure white matter (a small MAD): grey matter lies below white matter
    on T1 and above it on FLAIR. It is measured from the offset, not from 0, so it does not change
    when an offset is added to the image.
    """
    med = float(np.median(values))
    mad = max(1.4826 * float(np.median(np.abs(values - med))), 1e-6)
    return med, mad, max(mad, 0.12 * abs(med - offset))


def _block_mean(a: np.ndarray, f: tuple[int, int, int]) -> np.ndarray:
    n = [s // k * k for s, k in zip(a.shape, f)]
    a = a[: n[0], : n[1], : n[2]]
    return a.reshape(n[0] // f[0], f[0], n[1] // f[1], f[1], n[2] // f[2], f[2]).mean(axis=(1, 3, 5))


def skullstrip(
    images: Sequence[np.ndarray] | np.ndarray,
    spacing: Sequence[float],
    *,
    modalities: Sequence[str] | None = None,
    erosion_mm: float = 5.0,
    seed_depth_mm: float = 10.0,
    closing_mm: float = 6.0,
    opening_mm: float = 6.0,
    rim_mm: float = 1.5,
    max_brain_height_mm: float = 140.0,
    secondary_widening: float = 1.5,
    max_voxels: int = 6_000_000,
    prior: np.ndarray | None = None,
    band_mm: float = 3.0,
    band_inner_mm: float = 6.0,
    prior_closing_mm: float = 4.0,
    prior_rim_mm: float = 0.0,
) -> np.ndarray:
    """Brain mask of a head MRI with skull (one series or several on one grid).

    Parameters
    ----------
    images : ndarray of shape (X, Y, Z) or sequence of them
        The series, all on one common grid, in RAS array orientation (axis 2 points superior),
        as :func:`segment.io.nifti.reorient_to_ras` gives them. Only the neck rule
        (``max_brain_height_mm``) uses the axis order; everything else works the same on any
        axis order or flip.
        Voxels exactly 0 inside the head in a secondary series are treated as outside its field
        of view and ignored for that series.
    spacing : sequence of 3 float
        Voxel size in mm along the array axes (anisotropic spacing such as 0.9 x 0.9 x 5.5 is fine).
    modalities : sequence of str, optional
        Names of the series (``t1``, ``t1c``, ``t2``, ``flair`` and common aliases such as
        ``t1n``, ``t1ce``, ``t2w``, ``t2f``). Selects the intensity model per series and which
        series leads the geometry (T1c, then T1, FLAIR, T2). Without names every series is treated
        as T1-weighted and the first one leads.
    erosion_mm : float
        Erosion radius (mm) that separates brain from scalp, eyes and muscles before the largest
        component is taken.
    seed_depth_mm : float
        Seed voxels must lie at least this deep (mm) below the head surface.
    closing_mm : float
        Closing radius (mm) that takes sulci, surface CSF and tumors at the surface into the mask.
    opening_mm : float
        Radius (mm) of the opening by reconstruction that removes thin shells and parts attached
        to the brain through necks narrower than twice the radius (the brain's own narrowest
        parts, such as the brainstem, are wider).
    rim_mm : float
        Final dilation (mm) adding the CSF rim up to the inner table of the skull.
    secondary_widening : float
        Factor widening the intensity ranges of the non-leading series, which only veto voxels
        that most of them see as non-brain.
    max_brain_height_mm : float
        When the top of the head is inside the field of view, seed voxels more than this far
        below the seed's top are removed (neck, spinal cord).
    max_voxels : int
        Grids larger than this are processed at half resolution along axes finer than 1.5 mm
        (block means) and the mask is interpolated back, which keeps 1 mm volumes fast.
    prior : ndarray of shape (X, Y, Z), optional
        A brain probability on the grid (the registered template's brain fraction, see
        :func:`template_brain_mask`). With it, the brain is the prior's mask eroded by
        ``band_mm`` (always kept) plus the candidate tissue connected to it inside the prior's
        mask dilated by ``band_mm`` (nothing beyond): the template decides where the brain is,
        the image decides its last millimetres. The intensity model is then measured inside
        the eroded prior, and the depth seed and neck rule are not used.
    band_mm, band_inner_mm : float
        Width (mm) of the band outside and inside the prior's edge where the image decides: the
        image may take away up to ``band_inner_mm`` of the template's brain (a smaller or
        atrophied brain, wider CSF spaces) but add at most ``band_mm`` (never the skull).
    prior_closing_mm, prior_rim_mm : float
        Closing radius and final rim (mm) used with a prior instead of ``closing_mm`` and
        ``rim_mm`` (the template already gives the shape; its brain edge already includes the
        outer CSF).

    Returns
    -------
    ndarray of shape (X, Y, Z), bool
        The brain mask.

    Raises
    ------
    InputError
        Wrong shapes, NaN/Inf voxels, an empty or constant image, or no brain found
        ("empty brain mask").

    Examples
    --------
    >>> from segment.preprocess.skullstrip import skullstrip
    >>> mask = skullstrip(t1c, (0.9, 0.9, 5.5), modalities=["t1c"])  # doctest: +SKIP
    """
    sp = _check_spacing(spacing)
    if isinstance(images, np.ndarray) and images.ndim == 3:
        imgs = [images]
    else:
        imgs = list(images)
    if not imgs:
        raise InputError("skullstrip needs at least one image")
    imgs = [_check_volume(im, f"image {i}") for i, im in enumerate(imgs)]
    shape = imgs[0].shape
    for i, im in enumerate(imgs):
        if im.shape != shape:
            raise InputError(
                f"image {i} has shape {im.shape} but image 0 has {shape}; resample all series "
                "onto one grid first"
            )
    if prior is not None:
        prior = np.asarray(prior, dtype=np.float32)
        if prior.shape != shape:
            raise InputError(f"prior has shape {prior.shape} but the images have {shape}")
    if len(imgs[0].ravel()) > max_voxels and np.any(sp < 1.5):
        f = tuple(2 if s < 1.5 else 1 for s in sp)
        small = skullstrip(
            [_block_mean(im, f) for im in imgs], sp * np.array(f), modalities=modalities,
            erosion_mm=erosion_mm, seed_depth_mm=seed_depth_mm, closing_mm=closing_mm,
            opening_mm=opening_mm, rim_mm=rim_mm, max_brain_height_mm=max_brain_height_mm,
            secondary_widening=secondary_widening, max_voxels=np.iinfo(np.int64).max,
            prior=None if prior is None else _block_mean(prior, f), band_mm=band_mm,
            band_inner_mm=band_inner_mm, prior_closing_mm=prior_closing_mm, prior_rim_mm=prior_rim_mm,
        )
        # back to the full grid: linear interpolation of the mask at voxel centres, inside the
        # small mask's bounding box (plus one coarse voxel) only
        out = np.zeros(shape, dtype=bool)
        if not small.any():
            return out
        idx = np.nonzero(small)
        lo = [max(int(i.min()) - 1, 0) for i in idx]
        hi = [min(int(i.max()) + 2, n) for i, n in zip(idx, small.shape)]
        flo = [a * k for a, k in zip(lo, f)]
        fhi = [min(b * k, n) for b, k, n in zip(hi, f, shape)]
        coords = [(np.arange(a, b) + 0.5) / k - 0.5 for a, b, k in zip(flo, fhi, f)]
        grid = np.meshgrid(*coords, indexing="ij", sparse=True)
        up = ndi.map_coordinates(small.astype(np.float32), np.broadcast_arrays(*grid),
                                 order=1, mode="nearest")
        out[tuple(slice(a, b) for a, b in zip(flo, fhi))] = up > 0.5
        return out
    if modalities is None:
        mods: list[str | None] = [None] * len(imgs)
    else:
        mods = [_canonical_modality(m) for m in modalities]
        if len(mods) != len(imgs):
            raise InputError(f"got {len(imgs)} images but {len(mods)} modality names")

    # the leading series: the best T1-like one
    order = list(range(len(imgs)))
    rank = {m: k for k, m in enumerate(_PRIMARY_ORDER)}
    order.sort(key=lambda i: (rank.get(mods[i], len(rank)) if mods[i] else -1, i))
    primary = order[0]

    # 1. head mask and depth, on the head's bounding box (speed on large grids)
    head_full, offset = _head_mask(imgs[primary], sp)
    if head_full.sum() * np.prod(sp) < 50_000:  # < 50 mL: no head here
        raise InputError("empty brain mask: no head found in the image (foreground < 50 mL)")
    idx = np.nonzero(head_full)
    margin = [int(np.ceil(5.0 / s)) + 1 for s in sp]
    if prior is not None and (prior > 0.5).any():
        # only the template brain's box (+ the band and 10 mm) is needed: faster morphology
        idx = np.nonzero(head_full & (prior > 0.5))
        margin = [int(np.ceil((band_mm + 10.0) / s)) + 1 for s in sp]
    box = tuple(
        slice(max(int(ix.min()) - m, 0), min(int(ix.max()) + m + 1, n))
        for ix, m, n in zip(idx, margin, shape)
    )
    head = head_full[box]
    crops = [im[box] for im in imgs]
    # depth: the array border is not air (cut field of view), so only true air counts
    depth = np.sqrt(squared_distance_to(~head, sp))
    core = depth >= 0.5 * depth.max()
    if prior is not None:
        pm = prior[box] > 0.5
        d_in = np.sqrt(squared_distance_to(~pm, sp))
        inner = (d_in > band_inner_mm) & head
        outer = pm | dilate_mm(pm, band_mm, sp)
        if inner.sum() * np.prod(sp) > 50_000:  # the intensity model from the template's brain
            core = (d_in > band_inner_mm + 6.0) & head
            if core.sum() * np.prod(sp) < 50_000:
                core = inner

    # 2-3. intensity model and candidate brain tissue. The leading series decides; the others
    # (wider ranges, since they may be slightly misregistered) veto a voxel only when most of
    # them call it non-brain.
    cand = head.copy()
    votes = np.zeros(head.shape, dtype=np.float32)
    n_votes = np.zeros(head.shape, dtype=np.float32)
    min_core = int(np.ceil(1000.0 / float(np.prod(sp))))  # voxels in 1 mL
    for i, (im, mod) in enumerate(zip(crops, mods)):
        valid = (im != 0) if i != primary else np.ones_like(head)
        sel = core & valid
        if sel.sum() < min_core:
            continue  # this series does not cover the head's centre: ignore it
        # the thresholds apply to the lightly smoothed image, so its statistics are used
        sm = ndi.gaussian_filter(im, 0.5 / sp)
        if i == primary:
            im_off = offset
        else:  # its own offset, from its air
            im_off = _air_offset(imgs[i][~head_full])
        med, sd, sd_lo = _robust_stats(sm[sel], im_off)
        sd_hi = sd_lo if mod in _GM_ABOVE_WM else sd
        lo, hi = _RANGES.get(mod or "t1", _RANGES["t1"])
        widen = 1.0 if i == primary else secondary_widening
        ok = np.ones_like(head)
        if lo is not None:
            ok &= sm > med - widen * lo * sd_lo
        if hi is not None:
            ok &= sm < med + widen * hi * sd_hi
        if i == primary:
            cand &= ok
        else:
            votes += ok & valid
            n_votes += valid
    if n_votes.any():
        cand &= (n_votes == 0) | (votes >= 0.5 * n_votes)

    if prior is not None:
        brain = _prior_refined(cand, head, inner, outer, sp, erosion_mm, prior_closing_mm, prior_rim_mm)
        out = np.zeros(shape, dtype=bool)
        out[box] = brain
        return out

    # 4. seed: deep, eroded candidate, largest component, no neck
    seed = erode_mm(cand & (depth > seed_depth_mm), erosion_mm, sp)
    seed = _largest_component(seed, connectivity=3)
    if not seed.any():
        raise InputError(
            "empty brain mask: no brain-like tissue found deep in the head; check that the "
            "image is a head MRI with skull (use brain_mask_nonzero for brain-only images)"
        )
    zs = np.nonzero(seed.any(axis=(0, 1)))[0]
    head_top_inside = not head[..., -1].any()
    if head_top_inside:
        z_min = zs.max() - int(np.floor(max_brain_height_mm / sp[2]))
        if z_min > 0:
            seed[..., :z_min] = False
            seed = _largest_component(seed, connectivity=3)

    # 5. reconstruction of the brain around the seed
    brain = dilate_mm(seed, erosion_mm + 0.5 * float(sp.min()), sp) & cand
    brain = fill_holes_nd(_largest_component(brain))
    brain = fill_holes_nd(close_mm(brain, closing_mm, sp))
    # opening by reconstruction: the largest component of the eroded mask, dilated back inside
    # the mask; parts attached through necks narrower than twice the radius (orbits, skull-base
    # tissue) are cut off at the eroded stage and are not re-attached by the dilation
    kept = _largest_component(erode_mm(brain, opening_mm, sp), connectivity=3)
    if kept.any():
        brain = _largest_component(dilate_mm(kept, opening_mm, sp) & brain)
    brain = dilate_mm(brain, rim_mm, sp) & head
    brain = fill_holes_nd(brain)
    if not brain.any():
        raise InputError("empty brain mask: skull stripping removed every voxel")

    out = np.zeros(shape, dtype=bool)
    out[box] = brain
    return out


def _prior_refined(cand: np.ndarray, head: np.ndarray, inner: np.ndarray, outer: np.ndarray,
                   sp: np.ndarray, erosion_mm: float, closing_mm: float, rim_mm: float) -> np.ndarray:
    """Brain = the template's eroded brain (``inner``) plus the band's candidate tissue that the
    image-only method would keep, never beyond the dilated template brain (``outer``).

    The candidate tissue is opened by reconstruction (eroded by ``erosion_mm``, largest
    component, dilated back inside the candidate), which drops what is attached to the brain
    only through bridges thinner than twice the radius (scalp, marrow, dura next to CSF and bone);
    what is left inside the band and connected to ``inner`` is brain. A closing takes in sulci,
    a dilation of ``rim_mm`` the outer CSF rim.
    """
    if not inner.any():
        raise InputError("empty brain mask: the registered template's brain does not cover the head")
    c = cand | inner
    seed = _largest_component(erode_mm(c, erosion_mm, sp), connectivity=3)
    if seed.any():
        c = (dilate_mm(seed, erosion_mm + 0.5 * float(sp.min()), sp) & c) | inner
    brain = fill_holes_nd(_largest_component((c & outer) | inner))
    if closing_mm > 0:
        brain = fill_holes_nd(close_mm(brain, closing_mm, sp) & outer)
    if rim_mm > 0:
        brain = dilate_mm(brain, rim_mm, sp) & head & outer
    return fill_holes_nd(brain | inner)


def mask_quality_flags(
    mask: np.ndarray,
    spacing: Sequence[float],
    *,
    min_ml: float = 800.0,
    max_ml: float = 2000.0,
) -> list[str]:
    """Plausibility checks of an adult brain mask.

    Parameters
    ----------
    mask : ndarray of shape (X, Y, Z), bool
        The brain mask.
    spacing : sequence of 3 float
        Voxel size in mm.
    min_ml, max_ml : float
        Plausible adult brain volume range in millilitres.

    Returns
    -------
    list of str
        Human-readable warnings, empty when the mask looks plausible.

    Examples
    --------
    >>> m = np.zeros((10, 10, 10), bool); m[2:8, 2:8, 2:8] = True
    >>> mask_quality_flags(m, (1, 1, 1))[0].startswith("brain volume")
    True
    """
    m = np.asarray(mask, dtype=bool)
    sp = _check_spacing(spacing)
    flags: list[str] = []
    vol = float(m.sum() * np.prod(sp) / 1000.0)
    if m.sum() == 0:
        return ["empty brain mask"]
    if vol < min_ml or vol > max_ml:
        flags.append(f"brain volume {vol:.0f} mL outside the plausible {min_ml:.0f}-{max_ml:.0f} mL")
    faces = {
        "left": m[0], "right": m[-1], "posterior": m[:, 0], "anterior": m[:, -1],
        "inferior": m[:, :, 0], "superior": m[:, :, -1],
    }
    touching = [k for k, f in faces.items() if f.any()]
    if touching:
        flags.append("mask touches the image border (" + ", ".join(touching) + ")")
    lab, n = ndi.label(m, ndi.generate_binary_structure(3, 3))
    if n > 1:
        sizes = np.bincount(lab.ravel())[1:]
        extra = float(sizes.sum() - sizes.max()) / float(sizes.sum())
        if n > 5 or extra > 0.01:
            flags.append(f"mask has {n} components ({100 * extra:.1f}% outside the largest)")
    return flags


def brain_mask_flags(
    mask: np.ndarray,
    spacing: Sequence[float],
    *,
    template: np.ndarray | None = None,
    min_ml: float = 800.0,
    max_ml: float = 2200.0,
    min_template_dice: float = 0.85,
) -> list[str]:
    """QC flags (short strings) of a brain mask.

    ``"brain_volume_implausible"``: volume outside [``min_ml``, ``max_ml``] (a whole head is
    about 3000 mL, an adult brain 1000-1800 mL, the MNI152 brain mask about 2100 mL);
    ``"mask_template_disagree"``: Dice with ``template`` (the warped template brain, bool)
    below ``min_template_dice``.

    Examples
    --------
    >>> m = np.zeros((20, 20, 20), bool); m[2:18, 2:18, 2:18] = True    # 4096 voxels of 1 mm^3
    >>> brain_mask_flags(m, (1, 1, 1))
    ['brain_volume_implausible']
    """
    m = np.asarray(mask, dtype=bool)
    sp = _check_spacing(spacing)
    flags: list[str] = []
    ml = float(m.sum()) * float(np.prod(sp)) / 1000.0
    if not min_ml <= ml <= max_ml:
        flags.append("brain_volume_implausible")
    if template is not None:
        t = np.asarray(template, dtype=bool)
        denom = float(m.sum() + t.sum())
        if (2.0 * float((m & t).sum()) / denom if denom else 0.0) < min_template_dice:
            flags.append("mask_template_disagree")
    return flags


def template_brain_mask(
    volumes: Sequence,
    modalities: Sequence[str] | None = None,
    *,
    seed: int = 0,
    band_mm: float = 3.0,
    band_inner_mm: float = 6.0,
    min_ml: float = 800.0,
    max_ml: float = 2200.0,
    min_template_dice: float = 0.85,
    registration=None,
    fallback: bool = True,
    poor_metric: float = -0.25,
    **kwargs,
) -> tuple[np.ndarray, dict[str, object]]:
    """Brain mask of a head with skull from the registered head template refined by the image.

    The bundled MNI152 head (:func:`segment.atlas.load_template`) is registered to the series
    (:func:`segment.io.register.register_template`, affine), its brain fraction warped onto the
    grid and passed to :func:`skullstrip` as ``prior``: the eroded template brain is kept, the
    band of ``band_mm`` around its edge is decided by the intensity model and the morphology,
    every series voting as without a prior.

    Parameters
    ----------
    volumes : sequence of segment.types.Volume
        The series, all on one grid (RAS array orientation, as the pipeline's loader gives).
    modalities : sequence of str, optional
    seed : int
        Registration seed.
    band_mm, band_inner_mm : float
        Widths of the band outside and inside the template brain's edge where the image decides.
    min_ml, max_ml : float
        Plausible brain volume; outside it the flag ``"brain_volume_implausible"``.
    min_template_dice : float
        Dice between the mask and the warped template brain below this: ``"mask_template_disagree"``.
    registration : TemplateRegistration, optional
        A registration already computed for these images (reused, not repeated).
    poor_metric : float
        Registration metric above which the registration counts as poor (see
        :func:`segment.io.register.register_template`).
    fallback : bool
        When the registration is poor, use the image-only method (flag
        ``"skullstrip_without_template"``) instead of a prior that is probably wrong.
    **kwargs
        Passed to :func:`skullstrip`.

    Returns
    -------
    mask : ndarray of shape (X, Y, Z), bool
    info : dict
        ``flags`` (QC strings, also the registration's), ``registration`` (the result object),
        ``brain_volume_ml``, ``template_dice`` (mask vs warped template brain), ``prior_ml``.
    """
    from ..atlas import load_template
    from ..io.register import register_template

    vols = list(volumes)
    if not vols:
        raise InputError("template_brain_mask needs at least one image")
    ref = vols[0]
    mods = list(modalities) if modalities is not None else None
    if registration is None:
        registration = register_template(vols, mods, seed=seed, poor_metric=poor_metric)
    flags = list(registration.flags)
    tpl = load_template()
    prior = registration.warp(tpl.brain_fraction.data, 1, ref)
    sp = np.asarray(ref.spacing, float)
    use_prior = not (fallback and "registration_poor" in flags)
    if use_prior:
        mask = skullstrip([v.data for v in vols], sp, modalities=mods, prior=prior, band_mm=band_mm,
                          band_inner_mm=band_inner_mm, **kwargs)
    else:
        flags.append("skullstrip_without_template")
        mask = skullstrip([v.data for v in vols], sp, modalities=mods, **kwargs)
    vox_ml = float(np.prod(sp)) / 1000.0
    ml = float(mask.sum()) * vox_ml
    pm = prior > 0.5
    denom = float(mask.sum() + pm.sum())
    tdice = 2.0 * float((mask & pm).sum()) / denom if denom else 0.0
    flags += brain_mask_flags(mask, sp, template=pm, min_ml=min_ml, max_ml=max_ml,
                              min_template_dice=min_template_dice)
    info: dict[str, object] = {
        "flags": flags,
        "registration": registration,
        "brain_volume_ml": round(ml, 1),
        "prior_ml": round(float(pm.sum()) * vox_ml, 1),
        "template_dice": round(tdice, 4),
    }
    return mask, info
