"""Synthetic multi-modal brain MRI with exact ground truth.

A phantom is generated entirely in code, deterministically from one seed:

* **Layout.** The brain is an ellipsoid (size and shape varied by seed) whose surface is bent by a
  low-frequency random field. A depth map (millimetres below the brain surface) defines the
  layers: a thin outer CSF layer, a cortical grey-matter ribbon whose inner boundary (the GM/WM
  interface) undulates with a mid-frequency random field so that white-matter gyri reach out into
  the cortex, and sulci cut in from the surface as thin CSF sheets (zero level sets of another
  random field) lined by grey matter. Inside lie white matter, an interhemispheric fissure, deep
  grey nuclei (thalami, basal ganglia) and curved lateral ventricles plus a third ventricle, their
  size varied by seed.
* **Random fields** are sums of Gaussians on a fixed lattice in brain-normalised coordinates, with
  random weights. They are separable, so they cost a few matrix products, and they do not depend
  on the voxel grid: one seed gives the same anatomy at any shape or spacing.
* **Intensities.** Each tissue has a mean per modality (with realistic contrasts: T1 CSF < GM < WM,
  T2 CSF > GM > WM, FLAIR CSF dark and WM < GM) jittered by seed, a faint smooth texture, a slight
  blur of the noise-free image (partial volume at boundaries), a smooth multiplicative bias field
  (a random cubic polynomial, +-``bias``) and Rician noise (sigma = ``noise`` x the brightest healthy
  tissue's mean in that modality). Values are rounded to integers (like a scanner's output) and
  stored as float32.
* **Skull** (``skull=True``): dark bone, bright fat/scalp and a thin skin layer around the brain,
  plus a neck blob below; Rician noise everywhere, so the background is not zero. Without a
  skull the image is brain-only: exactly zero outside the brain mask (like BraTS data).
* **Tumor** (``tumor=True``): a necrotic core (NCR) inside an enhancing rim (ET), surrounded by
  edema (ED), each an irregular (randomly deformed) sphere, placed by seed mostly in white matter.

Ground truth is the label that generated each voxel (labels are evaluated at voxel centres;
the blur only affects intensities). Arrays are in RAS orientation (axis 0 left->right, 1
posterior->anterior, 2 inferior->superior) with an axis-aligned affine centred on the origin.

Examples
--------
>>> from segment.phantom import make_phantom
>>> ph = make_phantom(0, shape=(48, 56, 48), spacing=(4.0, 4.0, 4.0))
>>> sorted(ph.images)
['flair', 't1', 't1c', 't2']
>>> int(ph.tissue.max())
3
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .types import MODALITIES

__all__ = ["Phantom", "make_phantom", "write_phantom_case", "write_phantom_cases", "INTENSITIES"]

#: Label values in ``Phantom.tissue``.
BG, CSF, GM, WM, TUMOR = 0, 1, 2, 3, 4
#: BraTS 2023 tumor coding in ``Phantom.tumor``.
NCR, ED, ET = 1, 2, 3

#: Mean intensity (before bias and noise, x 1000) of each class per modality. Keys: tissue
#: classes, tumor sub-regions and extra-cerebral tissues used with ``skull=True``.
INTENSITIES: dict[str, dict[str, float]] = {
    #            t1     t1c    t2     flair
    "csf":   dict(t1=0.30, t1c=0.32, t2=1.00, flair=0.12),
    "gm":    dict(t1=0.60, t1c=0.63, t2=0.64, flair=0.72),
    "wm":    dict(t1=0.88, t1c=0.90, t2=0.46, flair=0.55),
    "ncr":   dict(t1=0.33, t1c=0.36, t2=0.92, flair=0.60),
    "ed":    dict(t1=0.72, t1c=0.75, t2=0.80, flair=1.00),
    "et":    dict(t1=0.60, t1c=1.35, t2=0.74, flair=0.86),
    "cyst":  dict(t1=0.27, t1c=0.30, t2=0.98, flair=0.28),
    "bone":  dict(t1=0.07, t1c=0.08, t2=0.06, flair=0.05),
    "fat":   dict(t1=1.10, t1c=1.10, t2=0.78, flair=0.80),
    "skin":  dict(t1=0.55, t1c=0.60, t2=0.45, flair=0.45),
    "muscle": dict(t1=0.50, t1c=0.55, t2=0.38, flair=0.40),
}
_SCALE = 1000.0

#: Brain semi-axes (mm) for the default field of view 192 x 224 x 192 mm.
_BRAIN_RADII = np.array([68.0, 82.0, 58.0])
_DEFAULT_FOV = np.array([192.0, 224.0, 192.0])
#: Extent of the random-field lattice in brain-normalised coordinates.
_LATTICE_HALF = 1.7


@dataclass(frozen=True, eq=False)
class Phantom:
    """A synthetic case.

    Attributes
    ----------
    images : dict of str -> ndarray of shape (X, Y, Z), float32
        One image per modality (``t1``, ``t1c``, ``t2``, ``flair``).
    tissue : ndarray of shape (X, Y, Z), uint8
        0 background, 1 CSF, 2 GM, 3 WM, 4 tumor (edema included).
    tumor : ndarray of shape (X, Y, Z), uint8, or None
        BraTS 2023 coding: 1 NCR, 2 ED, 3 ET; None without a tumor.
    brain_mask : ndarray of shape (X, Y, Z), bool
        ``tissue > 0``.
    affine : ndarray of shape (4, 4)
        Voxel -> RAS+ mm; diagonal (spacing), centred on the origin.
    seed : int
        The seed that made it.
    skull : bool
        Whether the images hold a skull, scalp and neck (else they are brain-only).
    """

    images: dict[str, np.ndarray]
    tissue: np.ndarray
    tumor: np.ndarray | None
    brain_mask: np.ndarray
    affine: np.ndarray
    seed: int = 0
    skull: bool = False

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.tissue.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]


# --------------------------------------------------------------------------- random fields


class _Fields:
    """Smooth random fields on a separable grid of brain-normalised coordinates."""

    def __init__(self, u: tuple[np.ndarray, np.ndarray, np.ndarray]):
        self.u = u

    def field(self, rng: np.random.Generator, step: float, *, centre=None, half=None) -> np.ndarray:
        """Unit-variance smooth field with correlation length ~``step`` (normalised units).

        The lattice of Gaussians spans ``centre +- half`` (default: the whole head), with node
        spacing ``step``; its weights are drawn from ``rng``, so the field depends only on the
        seed and the lattice, never on the voxel grid.
        """
        if centre is None:
            centre = np.zeros(3)
        if half is None:
            half = np.full(3, _LATTICE_HALF)
        mats = []
        for k in range(3):
            n = int(np.ceil(half[k] / step))
            nodes = centre[k] + step * np.arange(-n, n + 1)
            w = np.exp(-0.5 * ((self.u[k][:, None] - nodes[None, :]) / step) ** 2)
            # row normalisation makes the variance 1 everywhere (the field is separable)
            w /= np.maximum(np.sqrt((w**2).sum(axis=1, keepdims=True)), 1e-6)
            mats.append(w)
        coef = rng.standard_normal(tuple(m.shape[1] for m in mats))
        wx, wy, wz = mats
        a = np.tensordot(wx, coef, axes=(1, 0))  # (X, b, c)
        a = np.tensordot(wy, a, axes=(1, 1)).transpose(1, 0, 2)  # (X, Y, c)
        return np.ascontiguousarray(a @ wz.T)  # (X, Y, Z)


def _grid_coords(shape, spacing):
    """World coordinates (mm) along each axis of a centred RAS grid, and its affine."""
    shape = np.asarray(shape, dtype=int)
    spacing = np.asarray(spacing, dtype=float)
    origin = -(shape - 1) / 2.0 * spacing
    axes = tuple(origin[k] + spacing[k] * np.arange(shape[k]) for k in range(3))
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = origin
    return axes, affine


def _ellipsoid(u, centre, radii, deform=None):
    """Normalised radius (< 1 inside) of an ellipsoid on the separable grid ``u``."""
    x = ((u[0] - centre[0]) / radii[0])[:, None, None]
    y = ((u[1] - centre[1]) / radii[1])[None, :, None]
    z = ((u[2] - centre[2]) / radii[2])[None, None, :]
    r = np.sqrt(x * x + y * y + z * z)
    if deform is not None:
        r = r * deform
    return r


# --------------------------------------------------------------------------- layout


def _layout(u, R, k, rng):
    """Tissue labels (uint8), depth below the brain surface (mm) and brain 'rho' map."""
    ux, uy, uz = u
    X = ux[:, None, None]
    Y = uy[None, :, None]
    Z = uz[None, None, :]
    rho0 = np.sqrt(X * X + Y * Y + Z * Z)
    f = _Fields(u)
    shape_field = f.field(rng, 0.45)
    fold = f.field(rng, 0.085)
    sulc = f.field(rng, 0.09)
    csf_var = f.field(rng, 0.3)
    vent_def = f.field(rng, 0.2)
    # flatter base (temporal lobes/brainstem region), bumpy surface
    flatten = 1.0 + 0.12 * np.clip(-Z - 0.55, 0, None) / 0.45
    rho = rho0 * flatten * (1.0 + 0.035 * shape_field)
    # depth below the surface in mm: (1 - rho) / |grad rho|
    grad = np.sqrt((X / R[0]) ** 2 + (Y / R[1]) ** 2 + (Z / R[2]) ** 2) / np.maximum(rho0, 1e-6)
    depth = (1.0 - rho) / np.maximum(grad, 1e-6)
    brain = rho <= 1.0
    tissue = np.zeros(rho.shape, np.uint8)
    tissue[brain] = WM
    # cortical ribbon: sulci are the zero sheets of ``sulc``; the GM/WM boundary lies deep
    # (~17 mm) along a sulcus and shallow (~5 mm) under a gyral crown, wobbling with ``fold``
    d_gm = k * np.clip(7.0 + 13.0 * np.exp(-((sulc / 0.7) ** 2)) + 2.0 * fold, 4.0, 24.0)
    tissue[brain & (depth < d_gm)] = GM
    # interhemispheric fissure lined by GM, above the corpus callosum and at the poles
    xmm = X * R[0]
    fissure_zone = ((Z > 0.30) | (np.abs(Y) > 0.6)) & (Z > -0.45)
    lining = brain & fissure_zone & (np.abs(xmm) < k * 4.5)
    tissue[lining & (tissue == WM)] = GM
    # deep grey nuclei
    for side in (-1.0, 1.0):
        thal = _ellipsoid(u, (side * 0.11, -0.14, -0.02), (0.10, 0.15, 0.12))
        basal = _ellipsoid(u, (side * 0.28, 0.10, 0.02), (0.085, 0.20, 0.15))
        tissue[(thal < 1.0) & brain] = GM
        tissue[(basal < 1.0) & brain] = GM
    # CSF: outer layer, sulci, fissure, ventricles
    d_csf = k * np.clip(2.2 + 0.8 * csf_var, 1.0, 3.5)
    tissue[brain & (depth < d_csf)] = CSF
    sulcus = brain & (np.abs(sulc) < 0.12) & (depth < d_gm - 3.0 * k)
    tissue[sulcus] = CSF
    tissue[lining & (np.abs(xmm) < k * 1.2)] = CSF
    vscale = rng.uniform(0.8, 1.35)
    for side in (-1.0, 1.0):
        # curved lateral ventricle: centre height bends down towards the front and back
        zc = 0.16 - 0.55 * Y**2
        xc = side * (0.11 + 0.08 * Y**2)
        v = np.sqrt(((X - xc) / (0.075 * vscale)) ** 2 + (Y / 0.42) ** 2 + ((Z - zc) / (0.085 * vscale)) ** 2)
        v = v * (1.0 + 0.12 * vent_def)
        tissue[brain & (v < 1.0)] = CSF
    third = (np.abs(xmm) < k * 1.5 * vscale) & (np.abs(Y + 0.1) < 0.16) & (Z > -0.18) & (Z < 0.1)
    tissue[brain & third] = CSF
    return tissue, depth, rho


def _tumor(u, R, k, tissue, depth, spacing, rng, kind="standard"):
    """BraTS 2023 tumor labels placed in white matter, with irregular nested shapes.

    ``kind="cortical"``: the centre lies a little under the brain surface, so the enhancing rim
    reaches the cortex and the edema is cut by the surface; otherwise the core sits deep in WM.
    """
    r_core = k * rng.uniform(9.0, 20.0)
    rim = k * rng.uniform(2.5, 4.5) + 0.1 * r_core
    r_ncr = max(r_core - rim, 0.45 * r_core)
    r_ed = r_core + k * rng.uniform(5.0, 16.0)
    X = u[0][:, None, None] * R[0]
    if kind == "cortical":
        # centre under the cortex: the rim (not the necrosis) crosses the brain surface
        cand = (tissue > 0) & (depth > 0.55 * r_core) & (depth < 0.85 * r_core) & (np.abs(X) > 20.0 * k)
    else:
        # candidate centres: WM deep enough for the core, away from the midline
        cand = (tissue == WM) & (depth > r_core + 6.0 * k) & (np.abs(X) > 10.0 * k)
    if not cand.any():
        cand = tissue == WM
    idx = np.flatnonzero(cand)
    i, j, l = np.unravel_index(idx[rng.integers(idx.size)], tissue.shape)
    centre_mm = np.array([u[0][i] * R[0], u[1][j] * R[1], u[2][l] * R[2]])
    # distances in mm from the centre, deformed by smooth fields of scale ~ the tumor size
    f = _Fields(u)
    c_u = centre_mm / R
    half = np.full(3, (2.0 * r_ed + 10.0 * k) / R.min())  # lattice well beyond the largest radius
    step = max(r_core * 0.8, 6.0 * k) / R.mean()
    g_core = f.field(rng, step, centre=c_u, half=half)
    g_ncr = f.field(rng, step * 0.8, centre=c_u, half=half)
    g_ed = f.field(rng, step * 1.5, centre=c_u, half=half)
    dx = (u[0] * R[0] - centre_mm[0])[:, None, None]
    dy = (u[1] * R[1] - centre_mm[1])[None, :, None]
    dz = (u[2] * R[2] - centre_mm[2])[None, None, :]
    dist = np.sqrt(dx * dx + dy * dy + dz * dz)
    core = dist < r_core * (1.0 + 0.22 * np.clip(g_core, -2.0, 2.0))
    ncr = dist < r_ncr * (1.0 + 0.18 * np.clip(g_ncr, -2.0, 2.0))
    ed = dist < r_ed * (1.0 + 0.25 * np.clip(g_ed, -2.0, 2.0))
    inside = tissue > 0
    not_csf = inside & (tissue != CSF)
    tumor = np.zeros(tissue.shape, np.uint8)
    tumor[ed & not_csf] = ED
    core &= inside
    tumor[core] = ET
    # necrosis stays at least ~2 mm (and one voxel) inside the core, so ET encloses it
    if core.any():
        box = ndi.find_objects(core.astype(np.uint8))[0]
        box = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
        inner = ndi.distance_transform_edt(core[box], sampling=spacing) > max(2.0 * k, max(spacing))
        sub = tumor[box]
        sub[inner & ncr[box]] = NCR
    return tumor


def _polynomial_bias(axes_mm, fov_half, amplitude, rng):
    """Smooth multiplicative field 1 + amplitude * p(x), p a random cubic scaled to max |p| = 1."""
    if amplitude <= 0:
        return None
    t = [a / h for a, h in zip(axes_mm, fov_half)]
    deg = np.arange(4)
    total = deg[:, None, None] + deg[None, :, None] + deg[None, None, :]
    coef = rng.normal(0.0, 1.0, (4, 4, 4)) / (1.0 + total)
    coef[(total == 0) | (total > 3)] = 0.0
    vx, vy, vz = (ti[:, None] ** deg[None, :] for ti in t)  # Vandermonde matrices
    a = np.tensordot(vx, coef, axes=(1, 0))
    a = np.tensordot(vy, a, axes=(1, 1)).transpose(1, 0, 2)
    p = a @ vz.T
    p /= max(np.abs(p).max(), 1e-9)
    return (1.0 + amplitude * p).astype(np.float32)


# --------------------------------------------------------------------------- public API


def make_phantom(
    seed: int = 0,
    *,
    shape: tuple[int, int, int] = (96, 112, 96),
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0),
    skull: bool = False,
    tumor: bool | str = False,
    bias: float = 0.2,
    noise: float = 0.03,
    modalities: tuple[str, ...] = MODALITIES,
) -> Phantom:
    """A synthetic multi-modal brain MRI with exact tissue (and tumor) labels.

    Parameters
    ----------
    seed : int
        Everything random derives from ``np.random.default_rng`` streams of this seed. The
        anatomy does not depend on ``skull``, ``tumor``, ``bias``, ``noise`` or the grid.
    shape : (X, Y, Z)
        Grid size. The brain is scaled to fit the field of view ``shape * spacing`` (it is
        136 x 164 x 116 mm in the default 192 x 224 x 192 mm field of view).
    spacing : (sx, sy, sz)
        Voxel size in mm.
    skull : bool
        Add bone, fat/scalp and skin around the brain and a neck below; noise in the background.
        Without it the images are brain-only (exactly 0 outside the brain).
    tumor : bool or {"standard", "cystic", "cortical"}
        Add a glioma (NCR core, ET rim, ED around). True or ``"standard"``: deep in white
        matter, a necrotic core bright on FLAIR. ``"cystic"``: the core is a fluid-filled cyst,
        dark on FLAIR, T1 and T1c and bright on T2 (close to CSF, a little brighter on FLAIR).
        ``"cortical"``: a standard tumor just under the cortex, its rim reaching the brain surface.
    bias : float
        Amplitude of the multiplicative bias field (0.2 = +-20 %); 0 for none.
    noise : float
        Rician noise sigma as a fraction of the brightest healthy tissue's mean per modality.
    modalities : tuple of str
        Which of ``t1``, ``t1c``, ``t2``, ``flair`` to generate.

    Returns
    -------
    Phantom
    """
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be 3 integers >= 8, got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive numbers, got {spacing}")
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise ValueError(f"unknown modalities {unknown}; choose from {MODALITIES}")
    if bias < 0 or bias >= 1:
        raise ValueError(f"bias must be in [0, 1), got {bias}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")

    ss = np.random.SeedSequence(int(seed))
    r_anat, r_int, r_tum, r_skull, r_bias, r_noise = (np.random.default_rng(s) for s in ss.spawn(6))

    axes_mm, affine = _grid_coords(shape, spacing)
    fov = np.asarray(shape) * np.asarray(spacing)
    scale = float(min(1.0, (fov / _DEFAULT_FOV).min()) if (fov < _DEFAULT_FOV).any() else 1.0)
    R = _BRAIN_RADII * scale * r_anat.uniform(0.93, 1.07, 3)
    k = scale
    u = tuple(axes_mm[i] / R[i] for i in range(3))

    tissue, depth, rho = _layout(u, R, k, r_anat)
    brain = tissue > 0
    tum = None
    kind = "standard" if tumor is True else (str(tumor) if tumor else "")
    if kind and kind not in ("standard", "cystic", "cortical"):
        raise ValueError(f"tumor must be a bool or one of 'standard', 'cystic', 'cortical', got {tumor!r}")
    if kind:
        tum = _tumor(u, R, k, tissue, depth, spacing, r_tum, kind=kind)
        tissue[tum > 0] = TUMOR

    # extra-cerebral layers (labels stay 0 there)
    extra = None
    if skull:
        extra = np.zeros(shape, np.uint8)  # 1 bone, 2 fat, 3 skin, 4 muscle
        f = _Fields(u)
        thick = f.field(r_skull, 0.35)
        outside = -depth  # mm outside the brain surface (approximate)
        bone_t = k * np.clip(5.0 + 1.2 * thick, 3.0, 8.0)
        fat_t = bone_t + k * np.clip(5.0 + 1.5 * thick, 3.0, 8.0)
        skin_t = fat_t + 1.8 * k
        extra[(rho > 1.0) & (outside < skin_t)] = 3
        extra[(rho > 1.0) & (outside < fat_t)] = 2
        extra[(rho > 1.0) & (outside < bone_t)] = 1
        # neck and jaw below the brain
        neck = _ellipsoid(u, (0.0, 0.12, -1.45), (0.42, 0.48, 0.55))
        jaw = _ellipsoid(u, (0.0, 0.62, -1.2), (0.55, 0.3, 0.25))
        low = (neck < 1.0) | (jaw < 1.0)
        low &= extra == 0
        low &= rho > 1.0
        extra[low & ((neck < 0.85) | (jaw < 0.8))] = 4
        extra[low & (extra == 0)] = 2

    # intensities
    classes = ["csf", "gm", "wm", "ncr", "ed", "et", "bone", "fat", "skin", "muscle"]
    jitter = {c: r_int.uniform(0.97, 1.03, len(MODALITIES)) for c in classes}
    gain = r_int.uniform(0.85, 1.15, len(MODALITIES))
    texture_field = _Fields(u).field(r_int, 0.12)
    cyst_jitter = r_tum.uniform(0.97, 1.03, len(MODALITIES))  # own stream: other phantoms unchanged
    blur_sigma = 0.6  # voxels: partial volume at boundaries

    label_map = np.zeros(shape, np.uint8)  # index into classes + 1
    label_map[tissue == CSF] = 1
    label_map[tissue == GM] = 2
    label_map[tissue == WM] = 3
    if tum is not None:
        label_map[tum == NCR] = 11 if kind == "cystic" else 4
        label_map[tum == ED] = 5
        label_map[tum == ET] = 6
    if extra is not None:
        for code, cls in ((1, 7), (2, 8), (3, 9), (4, 10)):
            label_map[extra == code] = cls

    if not skull:
        # A brain-only image is a head image masked after acquisition: voxels at the brain's
        # edge are blurred with the CSF and meninges around it, never with empty space.
        label_map[label_map == 0] = 1

    images: dict[str, np.ndarray] = {}
    for mi, mod in enumerate(MODALITIES):
        # draw every modality's bias and noise, in order, so a subset of modalities does not
        # change the others
        bias_field = _polynomial_bias(axes_mm, fov / 2.0, bias, r_bias)
        g1 = r_noise.standard_normal(shape, dtype=np.float32)
        g2 = r_noise.standard_normal(shape, dtype=np.float32)
        if mod not in modalities:
            continue
        lut = np.zeros(len(classes) + 2, np.float32)
        for ci, cls in enumerate(classes):
            lut[ci + 1] = INTENSITIES[cls][mod] * jitter[cls][mi] * gain[mi] * _SCALE
        lut[len(classes) + 1] = INTENSITIES["cyst"][mod] * cyst_jitter[mi] * gain[mi] * _SCALE
        clean = lut[label_map]
        clean *= (1.0 + 0.04 * texture_field).astype(np.float32)
        clean = ndi.gaussian_filter(clean, blur_sigma, mode="constant")
        if bias_field is not None:
            clean *= bias_field
        ref = lut[1:4].max()  # brightest healthy tissue (CSF, GM or WM)
        sigma = np.float32(noise * ref)
        img = np.sqrt((clean + sigma * g1) ** 2 + (sigma * g2) ** 2)
        if not skull:
            img[~brain] = 0.0
        images[mod] = np.rint(img).astype(np.float32)

    return Phantom(
        images=images,
        tissue=tissue,
        tumor=tum,
        brain_mask=brain,
        affine=affine,
        seed=int(seed),
        skull=bool(skull),
    )


def write_phantom_case(out_dir: str | os.PathLike, phantom: Phantom, case_id: str) -> Path:
    """Write a phantom as a case folder ``out_dir/case_id``.

    Files: one ``<modality>.nii.gz`` per image (float32); ``seg.nii.gz`` with the tissue labels
    (0-3) for a tissue-only phantom, or with the BraTS 2023 tumor labels (1 NCR, 2 ED, 3 ET) for a
    tumor phantom, which then also gets ``seg_tissue.nii.gz`` (tissue labels, 4 = tumor). A
    phantom with a skull also gets ``brain_mask.nii.gz`` (ignored by the case finder; useful to
    score skull stripping).

    Returns
    -------
    Path
        The case folder.
    """
    from .io.nifti import save_volume

    case_dir = Path(out_dir) / case_id
    case_dir.mkdir(parents=True, exist_ok=True)
    for mod, img in phantom.images.items():
        save_volume(img, phantom.affine, case_dir / f"{mod}.nii.gz", dtype=np.float32)
    if phantom.tumor is None:
        save_volume(phantom.tissue, phantom.affine, case_dir / "seg.nii.gz", dtype=np.uint8)
    else:
        save_volume(phantom.tumor, phantom.affine, case_dir / "seg.nii.gz", dtype=np.uint8)
        save_volume(phantom.tissue, phantom.affine, case_dir / "seg_tissue.nii.gz", dtype=np.uint8)
    if phantom.skull:
        save_volume(phantom.brain_mask, phantom.affine, case_dir / "brain_mask.nii.gz", dtype=np.uint8)
    return case_dir


def write_phantom_cases(
    out: str | os.PathLike,
    *,
    n: int = 1,
    seed: int = 0,
    skull: bool = False,
    tumor: bool = False,
    shape: tuple[int, int, int] | None = None,
    **kw,
) -> list[Path]:
    """Write ``n`` phantom cases ``out/phantom_<seed>`` for seeds ``seed .. seed + n - 1``.

    Extra keyword arguments go to :func:`make_phantom`. Returns the case folders.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if shape is not None:
        kw["shape"] = tuple(shape)
    paths = []
    for s in range(seed, seed + n):
        ph = make_phantom(s, skull=skull, tumor=tumor, **kw)
        paths.append(write_phantom_case(out, ph, f"phantom_{s}"))
    return paths
