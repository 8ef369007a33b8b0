"""Reading images in the formats other than NIfTI that brain MRI comes in.

=================  =================================  ==========================================
format             names                              reader
=================  =================================  ==========================================
NIfTI              ``.nii``, ``.nii.gz``              nibabel (:func:`segment.io.nifti.load_volume`)
MetaImage          ``.mha``, ``.mhd`` (+ ``.raw``)    SimpleITK (BraTS 2012-2015 ship ``.mha``)
NRRD               ``.nrrd``, ``.nhdr``               SimpleITK (3D Slicer)
FreeSurfer MGH     ``.mgz``, ``.mgh``                 nibabel (FreeSurfer's ``orig.mgz``, ...)
DICOM series       a folder of one series' slices     SimpleITK's ``ImageSeriesReader`` (GDCM)
=================  =================================  ==========================================

Every reader returns a :class:`~segment.types.Volume`: float32 voxels indexed ``[i, j, k]`` and
the nibabel-style affine mapping them to RAS+ millimetres. ITK describes an image in LPS
(origin, spacing, direction cosines, array ``[k, j, i]``); :func:`sitk_to_volume` converts, so an
image gives the same voxels and world coordinates whichever format it was saved in. The checks
and one-line errors are those of NIfTI (missing, empty, unreadable, not 3-D, NaN/Inf, all-zero,
singular geometry), naming the file. Outputs stay NIfTI, written with the reference image's
affine, so they lie in the input's physical space.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..types import Volume

__all__ = [
    "IMAGE_SUFFIXES",
    "image_suffix",
    "is_dicom_folder",
    "is_image_name",
    "load_image",
    "save_image",
    "sitk_to_volume",
    "strip_image_suffix",
    "volume_to_sitk",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
MGH_SUFFIXES = (".mgz", ".mgh")
#: Every file suffix read as an image (longest first, so ``.nii.gz`` wins over ``.gz``).
IMAGE_SUFFIXES = NIFTI_SUFFIXES + SITK_SUFFIXES + MGH_SUFFIXES
_FORMAT_NAMES = {".mha": "MetaImage", ".mhd": "MetaImage", ".nrrd": "NRRD", ".nhdr": "NRRD",
                 ".mgz": "FreeSurfer MGH", ".mgh": "FreeSurfer MGH"}
_LPS = np.diag([-1.0, -1.0, 1.0])


def image_suffix(name: str | os.PathLike) -> str | None:
    """The image suffix of a file name (lower case), or None: ``'a.NII.GZ' -> '.nii.gz'``."""
    low = Path(name).name.lower()
    for suf in IMAGE_SUFFIXES:
        if low.endswith(suf):
            return suf
    return None


def is_image_name(name: str | os.PathLike) -> bool:
    """True if the name ends in a suffix of :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return image_suffix(name) is not None


def strip_image_suffix(name: str) -> str:
    """``'a.nii.gz' -> 'a'``, ``'b.mha' -> 'b'``; other names are returned unchanged."""
    suf = image_suffix(name)
    return name[: -len(suf)] if suf else name


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom_folder(path: str | os.PathLike, *, probe: int = 8) -> bool:
    """True if ``path`` is a folder whose files (the first ``probe`` non-hidden ones) include a
    DICOM file (``DICM`` at byte 128, or a ``.dcm`` name)."""
    p = Path(path)
    if not p.is_dir():
        return False
    files = [f for f in sorted(p.iterdir()) if f.is_file() and not f.name.startswith(".")][:probe]
    return any(f.suffix.lower() == ".dcm" or _is_dicom_file(f) for f in files)


# --------------------------------------------------------------------------- ITK geometry


def sitk_to_volume(img, path: Path | None = None, *, channel: int | None = None) -> Volume:
    """A SimpleITK image as a RAS :class:`Volume` (float32 unless integer data are wanted later).

    Raises
    ------
    InputError
        Not 3-D, or several components per voxel without ``channel``.
    """
    import SimpleITK as sitk

    name = path if path is not None else "image"
    dim = img.GetDimension()
    ncomp = img.GetNumberOfComponentsPerPixel()
    if dim == 4:
        size = img.GetSize()
        if channel is None and size[3] == 1:
            channel = 0
        if channel is None:
            raise InputError(
                f"{name}: is 4-D with shape {tuple(size)}, expected a 3-D image; pass one volume per file"
            )
        if not 0 <= channel < size[3]:
            raise InputError(f"{name}: has {size[3]} volumes, volume {channel} requested")
        ext = sitk.ExtractImageFilter()
        ext.SetSize([size[0], size[1], size[2], 0])
        ext.SetIndex([0, 0, 0, channel])
        img = ext.Execute(img)
        channel = None
        dim = 3
    if dim != 3:
        raise InputError(f"{name}: is {dim}-D with size {tuple(img.GetSize())}, expected a 3-D image")
    arr = sitk.GetArrayViewFromImage(img)  # (k, j, i[, c])
    if ncomp > 1:
        if channel is None:
            raise InputError(
                f"{name}: has {ncomp} components per voxel (a vector or RGB image), expected one "
                "intensity per voxel"
            )
        if not 0 <= channel < ncomp:
            raise InputError(f"{name}: has {ncomp} components, component {channel} requested")
        arr = arr[..., channel]
    data = np.ascontiguousarray(np.asarray(arr).transpose(2, 1, 0))
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
    origin = np.asarray(img.GetOrigin(), dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = _LPS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS @ origin
    return Volume(data, affine, path)


def volume_to_sitk(data: np.ndarray, affine: np.ndarray):
    """A SimpleITK image holding ``data`` (indexed ``[i, j, k]``) with the geometry of ``affine``.

    The affine must be a rotation times positive spacings (no shear), as ITK requires.
    """
    import SimpleITK as sitk

    a = np.asarray(affine, dtype=np.float64)
    lin = _LPS @ a[:3, :3]
    spacing = np.sqrt((lin**2).sum(axis=0))
    if np.any(spacing <= 0):
        raise ValueError("affine has a zero-length axis")
    direction = lin / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-5):
        raise ValueError("affine has shear; ITK formats store only rotations and spacings")
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data).transpose(2, 1, 0)))
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in direction.ravel()])
    img.SetOrigin([float(v) for v in _LPS @ a[:3, 3]])
    return img


def save_image(data: np.ndarray, affine: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a volume as ``.mha``/``.mhd``/``.nrrd``/``.nhdr`` (SimpleITK), ``.mgz``/``.mgh``
    (nibabel) or NIfTI (:func:`segment.io.nifti.save_volume`), from its RAS affine.

    For converting and for tests; segment's own outputs are always NIfTI.
    """
    p = Path(path)
    suf = image_suffix(p)
    if suf is None:
        raise ValueError(f"{p}: unknown image format; use one of {', '.join(IMAGE_SUFFIXES)}")
    p.parent.mkdir(parents=True, exist_ok=True)
    if suf in NIFTI_SUFFIXES:
        from .nifti import save_volume

        return save_volume(data, affine, p)
    if suf in MGH_SUFFIXES:
        import nibabel as nib

        arr = np.asarray(data)
        if arr.dtype not in (np.uint8, np.int16, np.int32, np.float32):
            arr = arr.astype(np.float32)
        nib.save(nib.MGHImage(np.ascontiguousarray(arr), np.asarray(affine, dtype=np.float64)), str(p))
        return p
    import SimpleITK as sitk

    sitk.WriteImage(volume_to_sitk(data, affine), str(p), useCompression=suf in (".mha", ".nrrd"))
    return p


# --------------------------------------------------------------------------- reading


def _short(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    # ITK messages end with the useful line ("... Could not create IO object for reading file")
    msg = lines[-1] if lines else type(exc).__name__
    return msg[:160]


def load_image(
    path: str | os.PathLike,
    *,
    channel: int | None = None,
    dtype: type = np.float32,
    check_finite: bool = True,
    allow_empty: bool = False,
) -> Volume:
    """Read a non-NIfTI image file or a DICOM series folder (see the module docstring).

    Same parameters, result and errors as :func:`segment.io.nifti.load_volume`, which calls
    this for every name that does not end in ``.nii``/``.nii.gz``.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    if p.is_dir():
        vol = _read_dicom_series(p)
    else:
        if p.stat().st_size == 0:
            raise InputError(f"{p}: file is empty (0 bytes)")
        suf = image_suffix(p)
        if suf in MGH_SUFFIXES:
            vol = _read_mgh(p, channel)
        elif suf in SITK_SUFFIXES:
            vol = _read_sitk(p, channel, _FORMAT_NAMES[suf])
        elif _is_dicom_file(p) or p.suffix.lower() == ".dcm":
            vol = _read_sitk(p, channel, "DICOM")
        else:
            raise InputError(
                f"{p}: unknown image format; expected {', '.join(IMAGE_SUFFIXES)} or a folder "
                "holding one DICOM series"
            )
    return _checked(p, vol.data, vol.affine, dtype=dtype, check_finite=check_finite, allow_empty=allow_empty)


def _read_sitk(p: Path, channel: int | None, fmt: str) -> Volume:
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise InputError(f"{p}: not a readable {fmt} image ({_short(exc)}); re-export or re-download the file") from None
    return sitk_to_volume(img, p, channel=channel)


def _read_mgh(p: Path, channel: int | None) -> Volume:
    import gzip
    import zlib

    import nibabel as nib

    try:
        img = nib.load(str(p))
        shape = img.shape
        if len(shape) == 4 and channel is None and shape[3] == 1:
            channel = 0
        if len(shape) == 4:
            if channel is None:
                raise InputError(f"{p}: is 4-D with shape {tuple(shape)}, expected a 3-D image; "
                                 "pass one volume per file")
            if not 0 <= channel < shape[3]:
                raise InputError(f"{p}: has {shape[3]} volumes, volume {channel} requested")
            data = np.asarray(img.dataobj[..., channel], dtype=np.float32)
        elif len(shape) == 3:
            data = np.asarray(img.dataobj, dtype=np.float32)
        else:
            raise InputError(f"{p}: is {len(shape)}-D with shape {tuple(shape)}, expected a 3-D image")
    except InputError:
        raise
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise InputError(f"{p}: not a readable FreeSurfer MGH image or truncated ({_short(exc)}); "
                         "re-export or re-download the file") from None
    except Exception as exc:  # nibabel raises several types for a bad header
        raise InputError(f"{p}: not a readable FreeSurfer MGH image ({_short(exc)})") from None
    return Volume(data, np.asarray(img.affine, dtype=np.float64), p)


def _read_dicom_series(p: Path) -> Volume:
    """The one DICOM series of folder ``p``; slices must be evenly spaced."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    try:
        ids = reader.GetGDCMSeriesIDs(str(p))
    except RuntimeError as exc:
        raise InputError(f"{p}: cannot scan the folder for DICOM files ({_short(exc)})") from None
    if not ids:
        raise InputError(
            f"{p}: is a folder without a DICOM series; expected an image file "
            f"({', '.join(IMAGE_SUFFIXES)}) or a folder of one series' DICOM slices"
        )
    if len(ids) > 1:
        counts = [f"{s} ({len(reader.GetGDCMSeriesFileNames(str(p), s))} files)" for s in ids[:4]]
        raise InputError(
            f"{p}: holds {len(ids)} DICOM series ({', '.join(counts)}{', ...' if len(ids) > 4 else ''}); "
            "put each series in its own folder"
        )
    files = reader.GetGDCMSeriesFileNames(str(p), ids[0])
    if len(files) < 2:
        return _read_sitk(Path(files[0]), None, "DICOM")  # one multi-frame file
    _check_slice_spacing(p, files)
    reader.SetFileNames(files)
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{p}: DICOM series could not be read ({_short(exc)})") from None
    return sitk_to_volume(img, p)


def _check_slice_spacing(p: Path, files) -> None:
    """Refuse a series whose slice positions are not evenly spaced (missing or mixed slices)."""
    import SimpleITK as sitk

    pos = []
    for f in files:
        r = sitk.ImageFileReader()
        r.SetFileName(f)
        try:
            r.ReadImageInformation()
            pos.append([float(v) for v in r.GetMetaData("0020|0032").replace(" ", "").split("\\")])
        except (RuntimeError, ValueError):
            return  # no positions recorded: ITK's own ordering is all there is
    pos = np.asarray(pos)
    if pos.shape[1] != 3:
        return
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    med = float(np.median(steps))
    if med <= 0 or np.any(np.abs(steps - med) > 0.01 * med + 1e-3):
        raise InputError(
            f"{p}: DICOM slices are not evenly spaced (steps {steps.min():.3g}-{steps.max():.3g} mm); "
            "a slice is missing or two series share the folder"
        )


def _checked(p: Path, data: np.ndarray, affine: np.ndarray, *, dtype, check_finite: bool,
             allow_empty: bool) -> Volume:
    """The value and geometry checks of :func:`segment.io.nifti.load_volume`, same messages."""
    from .nifti import VOXEL_MM_RANGE, check_values

    data = check_values(p, data, dtype=dtype, check_finite=check_finite, allow_empty=allow_empty)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{p}: header has an invalid (singular or missing) geometry")
    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    lo, hi = VOXEL_MM_RANGE
    if ((spacing < lo) | (spacing > hi)).any():
        raise InputError(
            f"{p}: voxel size {tuple(round(float(v), 6) for v in spacing)} mm is implausible "
            f"(outside {lo:g}-{hi:g} mm); check the header's spacing"
        )
    return Volume(data, np.asarray(affine, dtype=np.float64), p)
