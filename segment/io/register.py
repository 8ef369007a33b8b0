"""Rigid registration of one series onto another (SimpleITK), for series of one exam.

Patients move between the series of a clinical exam, so resampling by the scanner's physical
coordinates alone can leave series several millimetres (here up to ~1 cm) apart.
:func:`rigid_register` finds the rigid motion that aligns a moving series to a fixed one by
maximising Mattes mutual information (works across contrasts: T2 or FLAIR onto T1):

* a versor rigid 3-D transform (3 rotations + 3 translations), centre of rotation at the fixed
  image's geometric centre, starting from the identity in world space (the headers already share
  the scanner's coordinates; moving the image centres onto each other, as a geometric
  initialisation does, would add the difference of the fields of view, tens of mm on a
  T2 that covers the neck and a T1 that does not);
* a coarse-to-fine pyramid built here with per-axis block averaging to about ``levels_mm``
  (so 0.9 x 0.9 x 5.5 mm voxels become roughly isotropic, never thinner than one slice);
* regular-step gradient descent with scales from physical shifts;
* deterministic: random metric sampling with a fixed seed and a fixed thread count.

The result is a 4x4 matrix in world (RAS+) millimetres that is composed into the moving
series' affine: ``new_affine = result.matrix @ moving.affine``; resampling that onto the
fixed grid (:func:`segment.io.nifti.resample_to`) gives the aligned series. A guard rejects
implausible results (large motion, a metric that got worse) and says why, so the caller can
keep the physical-coordinate alignment.

Examples
--------
>>> from segment.io.register import rigid_register, apply_rigid   # doctest: +SKIP
>>> res = rigid_register(t2, t1)                                    # doctest: +SKIP
>>> t2_on_t1 = resample_to(apply_rigid(t2, res), t1)                # doctest: +SKIP
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..types import Volume

__all__ = ["RigidResult", "rigid_register", "apply_rigid", "rigid_matrix", "motion_of"]

# RAS <-> LPS (ITK's world convention)
_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class RigidResult:
    """Outcome of :func:`rigid_register`.

    Attributes
    ----------
    matrix : ndarray of shape (4, 4)
        Rigid transform in world (RAS+) mm that moves the moving series onto the fixed one:
        ``new_affine = matrix @ moving.affine``. The identity when ``accepted`` is False.
    found : ndarray of shape (4, 4)
        The transform the optimiser found, even when rejected.
    translation_mm : ndarray of shape (3,)
        Displacement (RAS mm) of the fixed image's centre under ``found``.
    rotation_deg : float
        Rotation angle of ``found`` in degrees.
    metric_before, metric_after : float
        Mattes mutual information metric (negative MI, lower is better) at the identity and at
        ``found``, on the finest pyramid level with every voxel sampled.
    accepted : bool
        False when the guard rejected the result (see ``warning``).
    warning : str or None
        Why the result was rejected.
    seconds : float
        Wall time.
    iterations : list of int
        Optimiser iterations per pyramid level.
    """

    matrix: np.ndarray
    found: np.ndarray
    translation_mm: np.ndarray
    rotation_deg: float
    metric_before: float
    metric_after: float
    accepted: bool
    warning: str | None = None
    seconds: float = 0.0
    iterations: list[int] = field(default_factory=list)

    def summary(self) -> str:
        t = ", ".join(f"{v:+.1f}" for v in self.translation_mm)
        return (f"translation ({t}) mm = {np.linalg.norm(self.translation_mm):.1f} mm, rotation "
                f"{self.rotation_deg:.1f} deg, metric {self.metric_before:.4f} -> {self.metric_after:.4f}"
                + ("" if self.accepted else f" (rejected: {self.warning})"))


def _to_sitk(vol: Volume, data: np.ndarray | None = None):
    """A SimpleITK image (LPS world) of a Volume whose affine is voxel -> RAS mm."""
    import SimpleITK as sitk

    a = vol.data if data is None else data
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(a, np.float32).transpose(2, 1, 0)))
    aff = _FLIP @ vol.affine
    sp = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    direction = aff[:3, :3] / sp
    img.SetSpacing([float(s) for s in sp])
    img.SetOrigin([float(v) for v in aff[:3, 3]])
    img.SetDirection([float(v) for v in direction.ravel()])
    return img


def _shrink(img, spacing: np.ndarray, target_mm: float):
    """Block-average to about ``target_mm`` per axis (never coarser along an already coarse axis)."""
    import SimpleITK as sitk

    f = [max(1, int(round(target_mm / s))) for s in spacing]
    # keep at least 8 voxels along every axis
    f = [max(1, min(k, n // 8)) for k, n in zip(f, img.GetSize())]
    return sitk.BinShrink(img, f) if any(k > 1 for k in f) else img


def _affine_of(tx) -> np.ndarray:
    """4x4 matrix (LPS) of an ITK rigid transform: x -> R (x - c) + c + t."""
    r = np.asarray(tx.GetMatrix(), float).reshape(3, 3)
    c = np.asarray(tx.GetCenter(), float)
    t = np.asarray(tx.GetTranslation(), float)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = -r @ c + c + t
    return m


def rigid_matrix(rotation_deg: tuple[float, float, float], translation_mm: tuple[float, float, float],
                 center: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 rigid matrix (world mm): rotations about x, y, z (degrees, applied x then y then z)
    about ``center``, then a translation. Handy for tests and simulations."""
    ax, ay, az = np.deg2rad(rotation_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    r = rz @ ry @ rx
    c = np.asarray(center, float)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c - r @ c + np.asarray(translation_mm, float)
    return m


def motion_of(matrix: np.ndarray, center: np.ndarray) -> tuple[np.ndarray, float]:
    """(displacement of ``center`` in mm, rotation angle in degrees) of a rigid 4x4 matrix."""
    c = np.append(np.asarray(center, float), 1.0)
    disp = (matrix @ c)[:3] - c[:3]
    cos = (np.trace(matrix[:3, :3]) - 1.0) / 2.0
    return disp, float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _center(vol: Volume) -> np.ndarray:
    return (vol.affine @ np.append((np.asarray(vol.shape) - 1) / 2.0, 1.0))[:3]


def rigid_register(
    moving: Volume,
    fixed: Volume,
    *,
    levels_mm: tuple[float, ...] = (6.0, 3.0),
    sampling: float = 0.2,
    bins: int = 32,
    iterations: int = 150,
    seed: int = 0,
    threads: int = 1,
    max_translation_mm: float = 40.0,
    max_rotation_deg: float = 30.0,
    worse_tolerance: float = 0.01,
) -> RigidResult:
    """Rigidly register ``moving`` onto ``fixed`` (Mattes mutual information, SimpleITK).

    Parameters
    ----------
    moving, fixed : Volume
        3-D images with voxel -> RAS mm affines (any orientation, any grid). Values exactly 0 are
        treated like any other intensity.
    levels_mm : tuple of float
        Approximate voxel size (mm) of each pyramid level, coarse to fine (per-axis block means
        of the fixed and moving images).
    sampling : float
        Fraction of the fixed image's voxels sampled (randomly, with ``seed``) by the metric.
    bins : int
        Histogram bins of the mutual information.
    iterations : int
        Maximum optimiser iterations per level.
    seed : int
        Seed of the metric's random sampling (same inputs and seed give the same result).
    threads : int
        Threads used by SimpleITK (fixed, for reproducibility).
    max_translation_mm, max_rotation_deg : float
        Guard: a motion of the fixed image's centre larger than this, or a larger rotation, is
        rejected as a divergence, as is a metric that got worse. Real motion between the series
        of one exam can be large: in tcia_raw (TCGA-FG-6692) T2 sits 18 mm and 15.6 degrees
        from T1, FLAIR 4.7 mm and 17.9 degrees from T2 (consistent to 0.5 mm / 0.25 degrees
        when composed through T1c), so the limits sit well above that.
    worse_tolerance : float
        The metric may end this fraction of its magnitude above its start before the result
        counts as worse (series already aligned on one grid lose a little MI to interpolation
        under any sub-voxel move).

    Returns
    -------
    RigidResult
        ``matrix`` composes into the moving affine: ``matrix @ moving.affine``.

    Examples
    --------
    >>> res = rigid_register(t2, t1)          # doctest: +SKIP
    >>> res.accepted, res.translation_mm      # doctest: +SKIP
    """
    import SimpleITK as sitk

    t0 = time.perf_counter()
    # the metric's threads follow the global default, not the method's own setting; a fixed
    # count makes the sums (and so the result) reproducible
    old_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    try:
        return _register(sitk, moving, fixed, t0, levels_mm, sampling, bins, iterations, seed, threads,
                         max_translation_mm, max_rotation_deg, worse_tolerance)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(old_threads)


def _register(sitk, moving, fixed, t0, levels_mm, sampling, bins, iterations, seed, threads,
              max_translation_mm, max_rotation_deg, worse_tolerance) -> RigidResult:
    fixed_img = _to_sitk(fixed)
    moving_img = _to_sitk(moving)
    fsp = np.asarray(fixed_img.GetSpacing())
    msp = np.asarray(moving_img.GetSpacing())

    center_lps = (_FLIP @ np.append(_center(fixed), 1.0))[:3]
    tx = sitk.VersorRigid3DTransform()
    tx.SetCenter([float(v) for v in center_lps])

    def method(n_iter: int, pct: float | None):
        r = sitk.ImageRegistrationMethod()
        r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
        if pct is None:
            r.SetMetricSamplingStrategy(r.NONE)
        else:
            r.SetMetricSamplingStrategy(r.RANDOM)
            # SimpleITK reads seed 0 as 'use the wall clock': shift by one to stay deterministic
            r.SetMetricSamplingPercentage(float(pct), int(seed) + 1)
        r.SetInterpolator(sitk.sitkLinear)
        r.SetOptimizerAsRegularStepGradientDescent(
            learningRate=2.0, minStep=0.01, numberOfIterations=int(n_iter),
            relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6,
        )
        r.SetOptimizerScalesFromPhysicalShift()
        r.SetNumberOfThreads(int(threads))
        return r

    def evaluate(f_img, m_img, transform) -> float:
        r = method(1, None)
        r.SetInitialTransform(sitk.VersorRigid3DTransform(transform), inPlace=False)
        return float(r.MetricEvaluate(f_img, m_img))

    finest = min(levels_mm) if levels_mm else 2.0
    f_fine = _shrink(fixed_img, fsp, finest)
    m_fine = _shrink(moving_img, msp, finest)
    before = evaluate(f_fine, m_fine, tx)

    its: list[int] = []
    for level in levels_mm:
        f_l = _shrink(fixed_img, fsp, level)
        m_l = _shrink(moving_img, msp, level)
        r = method(iterations, sampling)
        r.SetInitialTransform(tx, inPlace=True)
        r.Execute(f_l, m_l)
        its.append(int(r.GetOptimizerIteration()))
    after = evaluate(f_fine, m_fine, tx)

    # ITK's transform maps fixed points to moving points (LPS). The motion that carries the
    # moving image onto the fixed one is its inverse, in RAS.
    t_lps = _affine_of(tx)
    found = _FLIP @ np.linalg.inv(t_lps) @ _FLIP
    disp, angle = motion_of(found, _center(fixed))
    warning = None
    if not np.all(np.isfinite(found)):
        warning = "registration failed (non-finite transform)"
    elif np.linalg.norm(disp) > max_translation_mm:
        warning = f"registration diverged: translation {np.linalg.norm(disp):.1f} mm > {max_translation_mm:g} mm"
    elif angle > max_rotation_deg:
        warning = f"registration diverged: rotation {angle:.1f} deg > {max_rotation_deg:g} deg"
    elif after > before + worse_tolerance * abs(before):
        warning = f"registration made the metric worse ({before:.4f} -> {after:.4f})"
    accepted = warning is None
    return RigidResult(
        matrix=found if accepted else np.eye(4),
        found=found,
        translation_mm=disp,
        rotation_deg=angle,
        metric_before=before,
        metric_after=after,
        accepted=accepted,
        warning=warning,
        seconds=time.perf_counter() - t0,
        iterations=its,
    )


def apply_rigid(moving: Volume, result: RigidResult | np.ndarray) -> Volume:
    """``moving`` with the rigid transform composed into its affine (no resampling)."""
    m = result.matrix if isinstance(result, RigidResult) else np.asarray(result, float)
    return Volume(moving.data, m @ moving.affine, moving.path)
