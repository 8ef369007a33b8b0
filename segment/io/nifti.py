"""Reading, writing, reorienting and resampling NIfTI volumes.

Every volume is read as float32 with its affine; one entry point reorients to RAS+
(:func:`reorient_to_ras`) and one undoes it (:func:`from_ras`); resampling between grids goes
through physical (world) coordinates (:func:`resample_to`). Writes are atomic: the file is
written under a temporary name in the target folder and renamed into place.
"""
from __future__ import annotations

import contextlib
import gzip
import logging
import os
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio
from scipy import ndimage as ndi

from ..errors import GridError, InputError
from ..types import Volume

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti_name(path: str | os.PathLike) -> bool:
    """True if the file name ends in ``.nii`` or ``.nii.gz`` (case-insensitive)."""
    name = Path(path).name.lower()
    return name.endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    """``'a.nii.gz' -> 'a'``; names without a NIfTI suffix are returned unchanged."""
    low = name.lower()
    for suf in NIFTI_SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)]
    return name


def load_volume(
    path: str | os.PathLike,
    *,
    channel: int | None = None,
    dtype: type = np.float32,
    check_finite: bool = True,
    allow_empty: bool = False,
) -> Volume:
    """Read a 3-D image as a :class:`~segment.types.Volume`.

    Parameters
    ----------
    path : path-like
        A ``.nii`` or ``.nii.gz`` file; ``.mha``/``.mhd``, ``.nrrd``/``.nhdr``, ``.mgz``/``.mgh``
        files and DICOM series folders are read by :func:`segment.io.formats.load_image`.
    channel : int, optional
        For a 4-D file, the index along the 4th axis to read (MSD layout). Without it a 4-D
        image with more than one volume is an error.
    dtype : numpy dtype
        Output dtype (float32 for images; pass ``np.int16`` etc. for label maps).
    check_finite : bool
        Raise if any voxel is NaN or infinite.
    allow_empty : bool
        Unless true, an image whose voxels are all zero (or all equal) is an error.

    Returns
    -------
    Volume
        ``data`` of shape (X, Y, Z) and the file's affine (sform if set, else qform).

    Raises
    ------
    InputError
        Missing, unreadable, truncated or non-NIfTI file; wrong dimensionality; NaN/Inf voxels;
        an all-zero image.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    if not is_nifti_name(p):
        from .formats import is_dicom_folder, is_image_name, load_image

        if (p.is_dir() and is_dicom_folder(p)) or (p.is_file() and (is_image_name(p) or p.suffix.lower() == ".dcm")):
            return load_image(p, channel=channel, dtype=dtype, check_finite=check_finite, allow_empty=allow_empty)
    if p.is_dir():
        raise InputError(
            f"{p}: is a folder, expected an image file (.nii, .nii.gz, .mha, .mhd, .nrrd, .mgz) "
            "or a folder holding one DICOM series"
        )
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty (0 bytes)")
    try:
        with _nibabel_messages(p):
            img = nib.load(str(p))
    except Exception as exc:  # nibabel raises several types for a bad header
        raise InputError(
            f"{p}: not a readable NIfTI image ({_short(exc)}); expected a .nii or .nii.gz file"
        ) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{p}: is a {type(img).__name__}, expected a NIfTI image (.nii/.nii.gz)")
    check_header(img, p)
    shape = img.shape
    if len(shape) == 4 and channel is None and shape[3] == 1:
        channel = 0
    if len(shape) == 4:
        if channel is None:
            raise InputError(
                f"{p}: is 4-D with shape {tuple(shape)}, expected a 3-D image; "
                "pass one volume per file (or a 4-D MSD image with its channel order)"
            )
        if not 0 <= channel < shape[3]:
            raise InputError(f"{p}: has {shape[3]} channels, channel {channel} requested")
    elif len(shape) != 3:
        raise InputError(f"{p}: is {len(shape)}-D with shape {tuple(shape)}, expected a 3-D image")
    try:
        if len(shape) == 4:
            data = np.asarray(img.dataobj[..., channel], dtype=np.float64 if dtype != np.float32 else np.float32)
        else:
            data = np.asarray(img.dataobj, dtype=np.float64 if dtype != np.float32 else np.float32)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise InputError(
            f"{p}: image data is truncated or corrupt ({_short(exc)}); re-export or re-download the file"
        ) from None
    data = check_values(p, data, dtype=dtype, check_finite=check_finite, allow_empty=allow_empty)
    affine = img.affine
    if affine is None or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{p}: header has an invalid (singular or missing) affine")
    return Volume(data, np.asarray(affine, dtype=np.float64), p)


def check_values(p: Path, data: np.ndarray, *, dtype, check_finite: bool, allow_empty: bool) -> np.ndarray:
    """The voxel-value checks of every reader (NaN/Inf, an empty image, non-integer labels for an
    integer ``dtype``), each a one-line :class:`InputError` naming ``p``; returns the data as a
    contiguous ``dtype`` array."""
    if check_finite and not np.isfinite(data).all():
        n_bad = int((~np.isfinite(data)).sum())
        raise InputError(
            f"{p}: contains {n_bad} NaN/Inf voxels; replace them (e.g. with 0) before segmenting"
        )
    if not allow_empty and (data.size == 0 or not np.any(data != data.flat[0])):
        raise InputError(f"{p}: image is empty (every voxel is {float(data.flat[0]) if data.size else 'absent'})")
    if np.dtype(dtype).kind in "iu":
        rounded = np.rint(data)
        off = np.abs(data - rounded) > 1e-3
        if off.any():
            bad = np.unique(data[off])
            shown = ", ".join(f"{v:g}" for v in bad[:5]) + (" ..." if bad.size > 5 else "")
            raise InputError(
                f"{p}: label map holds non-integer values ({shown}; {int(off.sum())} voxels); "
                "labels must be whole numbers (was it resampled with linear interpolation?)"
            )
        data = rounded
    return np.ascontiguousarray(data.astype(dtype, copy=False))


#: Plausible voxel sizes in millimetres (a header outside this is broken, not a scan).
VOXEL_MM_RANGE = (1e-3, 50.0)
#: gzip cannot compress better than about 1032:1; a header claiming more data than that is corrupt.
_GZIP_MAX_RATIO = 1100


def check_header(img, path: Path) -> None:
    """Refuse a header that cannot describe a usable scan, before any voxel is read.

    The size the header claims is checked against the file (so a corrupt header claiming
    10000^3 voxels fails here instead of allocating terabytes), then the voxel type (RGB and
    other structured types), the voxel sizes (0, negative or absurd) and a missing
    orientation without voxel sizes.
    """
    hdr = img.header
    dt = hdr.get_data_dtype()
    if dt.fields is not None or dt.kind == "V":
        raise InputError(
            f"{path}: voxels are {'RGB colour' if dt.itemsize in (3, 4) else 'structured'} values "
            f"(NIfTI type {hdr['datatype']}), expected one grey value per voxel; convert it to greyscale"
        )
    if dt.kind == "c":
        raise InputError(f"{path}: voxels are complex numbers, expected real grey values (use the magnitude image)")
    shape = tuple(int(s) for s in img.shape)
    n_vox = 1
    for s_ in shape:
        n_vox *= max(s_, 0)
    claimed = n_vox * dt.itemsize
    size = path.stat().st_size
    offset = int(hdr.get("vox_offset", 0) or 0) if hasattr(hdr, "get") else 0
    gz = path.name.lower().endswith(".gz")
    if (not gz and claimed + offset > size) or (gz and claimed > _GZIP_MAX_RATIO * size + 1_000_000):
        raise InputError(
            f"{path}: header claims {'x'.join(map(str, shape))} voxels ({claimed / 1e6:.0f} MB) but the file "
            f"holds {size / 1e6:.1f} MB; the file is truncated or its header is corrupt"
        )
    raw = _raw_header(img, path)  # nibabel "fixes" pixdim 0 to 1 on load: judge the file's own values
    codes = (int(raw["qform_code"]), int(raw["sform_code"]))
    zooms = np.asarray(raw["pixdim"][1:4], dtype=np.float64)
    if codes == (0, 0) and (not np.isfinite(zooms).all() or (zooms[: min(3, len(shape))] <= 0).any()):
        raise InputError(
            f"{path}: header has no orientation (qform and sform codes 0) and voxel sizes "
            f"{tuple(float(z) for z in zooms)}; fix the header (e.g. copy it from the scan's other series)"
        )
    try:
        affine = img.affine
    except Exception:  # pragma: no cover - nibabel refuses the header's transform
        affine = None
    if affine is not None and np.isfinite(affine).all():
        spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
        lo, hi = VOXEL_MM_RANGE
        if ((spacing < lo) | (spacing > hi)).any():
            raise InputError(
                f"{path}: voxel size {tuple(round(float(v), 6) for v in spacing)} mm is implausible "
                f"(outside {lo:g}-{hi:g} mm); check the header's pixdim / sform"
            )


def _raw_header(img, path: Path):
    """The header as stored in the file, without nibabel's automatic fixes."""
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as fh:
            return type(img.header).from_fileobj(fh, check=False)
    except Exception:  # pragma: no cover - it was just read once
        return img.header


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.messages.append(record.getMessage())


@contextlib.contextmanager
def _nibabel_messages(path: Path):
    """Header problems nibabel logs (and prints, then prints again through the root logger)
    while reading ``path``: caught, and re-issued once as warnings that name the file."""
    logger = logging.getLogger("nibabel.global")
    saved = (logger.handlers[:], logger.propagate)
    collect = _Collect()
    logger.handlers[:] = [collect]
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers[:], logger.propagate = saved
        for msg in dict.fromkeys(collect.messages):
            warnings.warn(f"{path}: {msg}", UserWarning, stacklevel=4)


def _short(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg[:160]


def save_volume(
    data: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike,
    *,
    dtype: type | None = None,
) -> Path:
    """Write ``data`` with ``affine`` to ``path`` atomically, with a clean header.

    The header carries the affine as both sform and qform (code 1, scanner), millimetre units and
    the data's dtype; nothing else from any input header. The file is written under a temporary
    name in the same folder and renamed, so a crash never leaves a half-written output.

    Parameters
    ----------
    data : ndarray of shape (X, Y, Z)
    affine : ndarray of shape (4, 4)
    path : path-like ending in ``.nii`` or ``.nii.gz``
    dtype : numpy dtype, optional
        Cast before writing (uint8 for labels and masks, float32 for maps).
    """
    p = Path(path)
    if not is_nifti_name(p):
        raise ValueError(f"{p}: output name must end in .nii or .nii.gz")
    arr = np.asarray(data)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    img = nib.Nifti1Image(np.ascontiguousarray(arr), np.asarray(affine, dtype=np.float64))
    img.set_sform(img.affine, code=1)
    img.set_qform(img.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_data_dtype(arr.dtype)
    p.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if p.name.lower().endswith(".nii.gz") else ".nii"
    tmp = p.parent / f".{strip_nifti_suffix(p.name)}.{os.getpid()}.tmp{suffix}"
    try:
        nib.save(img, str(tmp))
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


# --------------------------------------------------------------------------- orientation


def reorient_to_ras(vol: Volume) -> Volume:
    """The same voxels permuted/flipped so that array axes run Left->Right, Posterior->Anterior,
    Inferior->Superior (closest canonical orientation; no interpolation)."""
    ornt = nio.io_orientation(vol.affine)
    if np.array_equal(ornt, nio.axcodes2ornt(("R", "A", "S"))):
        return vol
    data = nio.apply_orientation(vol.data, ornt)
    aff = vol.affine @ nio.inv_ornt_aff(ornt, vol.shape)
    return Volume(np.ascontiguousarray(data), aff, vol.path)


def from_ras(data_ras: np.ndarray, original: Volume) -> np.ndarray:
    """Undo :func:`reorient_to_ras`: return ``data_ras`` (on the RAS version of ``original``'s grid)
    in ``original``'s array orientation, so it can be written with ``original.affine``."""
    ornt = nio.io_orientation(original.affine)
    back = nio.ornt_transform(nio.axcodes2ornt(("R", "A", "S")), ornt)
    out = nio.apply_orientation(data_ras, back)
    if out.shape != original.shape:  # pragma: no cover - guards against a logic error
        raise RuntimeError(f"reorientation round trip gave {out.shape}, expected {original.shape}")
    return np.ascontiguousarray(out)


def axcodes(affine: np.ndarray) -> str:
    """Orientation code such as ``'RAS'`` or ``'LPS'`` of an affine."""
    return "".join(nio.aff2axcodes(affine))


# --------------------------------------------------------------------------- grids


def same_grid(a: Volume, b: Volume, *, atol: float = 1e-3) -> bool:
    """True if both volumes have the same shape and affine (to ``atol`` mm)."""
    return a.shape == b.shape and np.allclose(a.affine, b.affine, atol=atol)


def world_bounds(vol: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned world-space bounding box (min, max) of the voxel centres' extent."""
    shape = np.array(vol.shape, dtype=np.float64)
    corners = np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in shape], indexing="ij")).reshape(3, -1)
    world = vol.affine[:3, :3] @ corners + vol.affine[:3, 3:4]
    return world.min(axis=1), world.max(axis=1)


def overlap_fraction(moving: Volume, reference: Volume) -> float:
    """Fraction of the reference's world bounding box covered by the moving image's box."""
    lo1, hi1 = world_bounds(moving)
    lo2, hi2 = world_bounds(reference)
    inter = np.clip(np.minimum(hi1, hi2) - np.maximum(lo1, lo2), 0, None)
    ref_vol = np.prod(hi2 - lo2)
    return float(np.prod(inter) / ref_vol) if ref_vol > 0 else 0.0


def resample_to(
    moving: Volume,
    reference: Volume,
    *,
    order: int = 1,
    cval: float = 0.0,
    min_overlap: float = 0.05,
) -> Volume:
    """Resample ``moving`` onto ``reference``'s grid through physical coordinates.

    For every reference voxel, its world position (``reference.affine``) is mapped into the
    moving image's voxel space (``inv(moving.affine)``) and interpolated there.

    Parameters
    ----------
    moving, reference : Volume
    order : int
        Spline order: 0 nearest (labels), 1 linear (images), 3 cubic.
    cval : float
        Value outside the moving image.
    min_overlap : float
        Minimum fraction of the reference box that the moving image must cover.

    Raises
    ------
    GridError
        The two images do not overlap in physical space.
    """
    if same_grid(moving, reference, atol=1e-6):
        return Volume(moving.data, reference.affine, moving.path)
    frac = overlap_fraction(moving, reference)
    if frac < min_overlap:
        name = moving.path or "image"
        ref = reference.path or "the reference image"
        raise GridError(
            f"{name}: does not overlap {ref} in physical space (overlap {frac:.1%}); "
            "check that both series come from the same exam and have correct headers"
        )
    m = np.linalg.inv(moving.affine) @ reference.affine
    data = moving.data
    if order > 1:
        # prefilter once in float64 for accuracy, output float32
        data = ndi.spline_filter(data.astype(np.float64), order=order)
    out = ndi.affine_transform(
        data,
        m[:3, :3],
        offset=m[:3, 3],
        output_shape=reference.shape,
        order=order,
        mode="constant",
        cval=cval,
        prefilter=False,
        output=np.float32 if moving.data.dtype == np.float32 or order > 0 else moving.data.dtype,
    )
    return Volume(out, reference.affine, moving.path)
