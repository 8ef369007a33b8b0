"""Finding a case's files on disk and loading them onto one grid.

File names are split into tokens (on ``-``, ``_``, ``.`` and spaces) and matched
case-insensitively as whole tokens, so ``BraTS-GLI-00000-000-t1n.nii.gz``,
``BraTS2021_00000_t1ce.nii.gz`` and ``t1.nii.gz`` are all recognised.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import GridError, InputError
from ..types import MODALITIES, Case, Volume
from .nifti import (
    is_nifti_name,
    load_volume,
    overlap_fraction,
    reorient_to_ras,
    resample_to,
    same_grid,
    strip_nifti_suffix,
)
from .formats import is_dicom_folder, is_image_name, strip_image_suffix
from .register import apply_rigid

#: Tokens that name each modality.
MODALITY_TOKENS: dict[str, tuple[str, ...]] = {
    "t1": ("t1", "t1n", "t1w", "t1native"),
    "t1c": ("t1c", "t1ce", "t1gd", "t1post", "t1wce"),
    "t2": ("t2", "t2w"),
    "flair": ("flair", "t2f"),
}
#: Channel order of the Medical Segmentation Decathlon's Task01 (BraTS) 4-D images.
MSD_CHANNELS: dict[str, int] = {"flair": 0, "t1": 1, "t1c": 2, "t2": 3}

#: Tokens that mark a ground-truth file.
TRUTH_TOKENS = ("seg", "label", "labels", "gt", "truth")
#: Tokens that mark a file we do not read as an image (masks, our own outputs).
SKIP_TOKENS = ("mask", "overlay", "prob", "probs", "pve", "entropy", "tissue_pred")

_SPLIT = re.compile(r"[-_.\s]+")


def tokens(name: str) -> list[str]:
    """Lower-case tokens of a file name without its image suffix (.nii.gz, .mha, .nrrd, .mgz...)."""
    return [t for t in _SPLIT.split(strip_image_suffix(name).lower()) if t]


def classify_file(name: str) -> tuple[str, str] | None:
    """``('image', modality)``, ``('truth', kind)`` or None for a file name.

    ``kind`` is ``'tissue'``, ``'tumor'`` or ``'seg'`` (decided later by the task).
    """
    toks = tokens(name)
    if any(t in SKIP_TOKENS for t in toks):
        return None
    if any(t in TRUTH_TOKENS for t in toks):
        if "tissue" in toks:
            return ("truth", "tissue")
        if "tumor" in toks or "tumour" in toks:
            return ("truth", "tumor")
        return ("truth", "seg")
    found = [m for m, alts in MODALITY_TOKENS.items() if any(t in alts for t in toks)]
    if len(found) == 1:
        return ("image", found[0])
    return None


def _n_channels(path: Path) -> int:
    """Length of the 4th axis of a NIfTI file (1 for 3-D), read from the header only."""
    import nibabel as nib

    try:
        shape = nib.load(str(path)).shape
    except Exception:
        return 0
    return int(shape[3]) if len(shape) == 4 else 1


def msd_case(image: Path, label: Path | None = None) -> Case:
    """A Medical Segmentation Decathlon Task01 case: one 4-D image whose channels are FLAIR,
    T1w, T1gd and T2w, and a label map coded 1 edema, 2 non-enhancing tumor, 3 enhancing."""
    if label is None:
        guess = image.parent.parent / "labelsTr" / image.name
        label = guess if guess.is_file() else None
    return Case(
        case_id=strip_nifti_suffix(image.name),
        images={m: image for m in MSD_CHANNELS},
        truth={"tumor": label} if label is not None else {},
        root=image.parent,
        channels=dict(MSD_CHANNELS),
        tumor_coding="msd",
    )


def _nested_metaimage(folder: Path) -> Path | None:
    """The one MetaImage file of a sub-folder (the BraTS 2012-2015 layout puts each series in a
    folder of its own name), else None."""
    files = [f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")]
    mha = [f for f in files if f.name.lower().endswith((".mha", ".mhd"))]
    return mha[0] if len(mha) == 1 else None


def find_case(case_dir: str | os.PathLike) -> Case:
    """Find the modality and ground-truth files of one case.

    ``case_dir`` is a folder of images named by modality (BraTS 2023, BraTS 2021, plain
    names; NIfTI, MetaImage, NRRD, MGH files or DICOM series sub-folders), a BIDS ``anat`` folder
    (modality from the suffix and ``ce-``, see :mod:`segment.io.bids`; case ``sub-01[_ses-1]``), or a folder holding a single four-channel 4-D image (MSD Task01 order FLAIR, T1w,
    T1gd, T2w) with an optional label file, or an MSD image file itself (``imagesTr/X.nii.gz``,
    its labels taken from ``labelsTr/X.nii.gz``).

    Raises
    ------
    InputError
        The folder does not exist, holds no recognised image, or two files claim one modality.
    """
    root = Path(case_dir)
    if not root.exists():
        raise InputError(f"{root}: case folder not found")
    if root.is_file():
        if is_nifti_name(root.name) and _n_channels(root) == len(MSD_CHANNELS):
            return msd_case(root)
        raise InputError(f"{root}: is a file, expected a folder holding one case's NIfTI files")
    from .bids import anat_case

    bids = anat_case(root)  # BIDS names (sub-01_ce-gd_T1w...): modality from suffix and entities
    if bids is not None:
        return bids
    images: dict[str, Path] = {}
    truth: dict[str, Path] = {}
    others: list[str] = []
    entries = sorted(root.iterdir())
    for p in entries:
        if p.name.startswith("."):
            continue
        if p.is_dir() and not is_image_name(p.name) and is_dicom_folder(p):
            pass  # a DICOM series folder named by modality (t1/, flair/ ...)
        elif p.is_dir() and (inner := _nested_metaimage(p)) is not None:
            p = inner  # BraTS 2012-2015: VSD.Brain.XX.O.MR_T1c.54513/VSD.Brain.XX.O.MR_T1c.54513.mha
        elif not p.is_file():
            # a name that claims an image but is a folder or a dangling link: never drop it silently
            if is_image_name(p.name) and classify_file(p.name) is not None:
                what = "a broken symbolic link" if p.is_symlink() and not p.exists() else (
                    "a folder" if p.is_dir() else "not a regular file")
                raise InputError(f"{p}: is {what}, expected an image file; fix or remove it")
            continue
        elif not is_image_name(p.name):
            others.append(p.name)
            continue
        kind = classify_file(p.name)
        if kind is None:
            continue
        what, key = kind
        target = images if what == "image" else truth
        if key in target:
            raise InputError(
                f"{root}: both {target[key].name} and {p.name} look like the {key} "
                f"{'image' if what == 'image' else 'ground truth'}; keep one per case"
            )
        target[key] = p
    if not images:
        unnamed = [
            p for p in sorted(root.iterdir())
            if p.is_file() and not p.name.startswith(".") and is_nifti_name(p.name) and classify_file(p.name) is None
            and not any(t in SKIP_TOKENS for t in tokens(p.name))
        ]
        four_d = [p for p in unnamed if _n_channels(p) == len(MSD_CHANNELS)]
        if len(four_d) == 1:
            label = truth.get("seg") or truth.get("tumor")
            return replace(msd_case(four_d[0], label), case_id=root.name, root=root)
        visible = [p for p in entries if not p.name.startswith(".")]
        if not visible:
            raise InputError(f"{root}: case folder is empty")
        subdirs = [p.name for p in visible if p.is_dir()]
        hint = f" (found files of no image format: {', '.join(others[:4])})" if others else ""
        if subdirs and not others:
            hint = (f" (it holds folders: {', '.join(subdirs[:4])}; is it a folder of cases? "
                    "point --input or the case path at them)")
        raise InputError(
            f"{root}: no image found; expected images (.nii/.nii.gz/.mha/.mhd/.nrrd/.mgz, or DICOM "
            f"series folders) named by modality (t1/t1n, t1c/t1ce, t2/t2w, flair/t2f), or BIDS names "
            f"(sub-01_T1w, sub-01_ce-gd_T1w, sub-01_T2w, sub-01_FLAIR){hint}"
        )
    return Case(case_id=root.name, images=images, truth=truth, root=root)


@dataclass
class LoadedCase:
    """A case's volumes on one grid, in RAS orientation.

    ``images`` are float32 on the RAS version of the reference grid; ``reference`` is the
    reference image as read from disk (its original orientation and affine), used to write
    outputs in input space; ``truth`` maps kinds to integer label volumes on the RAS grid.
    """

    case: Case
    reference: Volume
    images: dict[str, Volume]
    truth: dict[str, Volume] = field(default_factory=dict)
    resampled: list[str] = field(default_factory=list)
    #: Voxels of the reference grid inside every series' field of view (None: all of them).
    coverage: np.ndarray | None = None
    #: Warnings raised while loading (e.g. a rejected registration), one sentence each.
    notes: list[str] = field(default_factory=list)
    #: Rigid world-space (RAS mm) transforms applied to series before resampling, by modality
    #: (``new_affine = matrix @ affine``); series absent here kept their physical alignment.
    registered: dict[str, np.ndarray] = field(default_factory=dict)
    #: Field of view of each resampled series on the reference grid (True inside): voxels
    #: outside it hold no measurement of that series (series absent here cover every voxel).
    fov: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def grid(self) -> Volume:
        """Any one of the RAS images (all share the grid)."""
        return next(iter(self.images.values()))

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.grid.spacing

    @property
    def modalities(self) -> list[str]:
        return [m for m in MODALITIES if m in self.images]


def load_case(
    case: Case | str | os.PathLike,
    *,
    modalities: list[str] | None = None,
    register: str = "auto",
    register_seed: int = 0,
) -> LoadedCase:
    """Load every modality of a case onto the reference grid (T1 if present), in RAS.

    Each other series is first rigidly registered onto the reference (see ``register``), the
    transform composed into its affine, then resampled linearly by physical coordinates. Series
    on the reference grid that need no motion are only reoriented (no interpolation). Ground
    truth must lie on the reference grid.

    Parameters
    ----------
    case : Case or path to a case folder
    modalities : list of str, optional
        Restrict to these modalities (those absent from the case are ignored).
    register : {"auto", "always", "never"}
        Rigid registration of each series onto the reference (:mod:`segment.io.register`).
        ``"auto"``: series on another grid, and series on the reference grid unless the reference
        is brain-only (exactly-zero background, as BraTS: already co-registered); a series on the
        reference grid keeps its voxels unless the motion found exceeds 0.5 mm or 0.5 degrees.
        ``"always"``: every series. ``"never"``: physical coordinates only.
        A registration that fails or diverges is discarded (physical alignment kept) and
        recorded in ``LoadedCase.notes``.
    register_seed : int
        Seed of the registration metric's sampling.

    Raises
    ------
    InputError, GridError
    """
    if register not in ("auto", "always", "never"):
        raise InputError(f"register = {register!r}: allowed values are 'auto', 'always', 'never'")
    if not isinstance(case, Case):
        case = find_case(case)
    wanted = [m for m in MODALITIES if m in case.images and (modalities is None or m in modalities)]
    if not wanted:
        raise InputError(
            f"{case.root or case.case_id}: none of the requested modalities {modalities} "
            f"is present (found {sorted(case.images)})"
        )
    ref_mod = next(m for m in MODALITIES if m in wanted)
    raw: dict[str, Volume] = {
        m: load_volume(case.images[m], channel=case.channels.get(m)) for m in wanted
    }
    from .bids import ignored_notes

    notes: list[str] = ignored_notes(case.root) if case.root is not None else []
    for m in wanted:
        b = _constant_background(raw[m].data)
        if b is not None:
            # a z-scored or shifted brain-only image: its outside is one value, not 0; it becomes 0
            # (the brain-only convention every step reads), the brain's values are kept
            notes.append(f"{case.images[m].name}: constant background {b:g} (not 0) taken as outside the brain")
            d = raw[m].data
            raw[m] = raw[m].with_data(np.where(d == b, np.zeros((), d.dtype), d))
    reference = raw[ref_mod]
    ref_ras = reorient_to_ras(reference)
    images: dict[str, Volume] = {}
    resampled: list[str] = []
    registered: dict[str, np.ndarray] = {}
    coverage: np.ndarray | None = None
    fov: dict[str, np.ndarray] = {}
    ref_preprocessed = _zero_background(ref_ras.data)
    for m in wanted:
        vol = raw[m]
        if m == ref_mod:
            images[m] = ref_ras
            continue
        on_grid = same_grid(vol, reference)
        if not on_grid and overlap_fraction(vol, ref_ras) < 0.05:
            resample_to(vol, ref_ras)  # fails early, naming the file, before any registration
        do_register = register == "always" or (
            register == "auto" and (not on_grid or not ref_preprocessed)
        )
        matrix = None
        if do_register:
            matrix = _register_series(m, vol, ref_ras, register_seed, notes, small_is_identity=on_grid)
        if matrix is not None:
            vol = apply_rigid(vol, matrix)
            registered[m] = matrix
        if matrix is None and on_grid:
            images[m] = reorient_to_ras(vol)
        else:
            images[m] = resample_to(vol, ref_ras, order=1)
            resampled.append(m)
            inside = resample_to(vol.with_data(np.ones(vol.shape, np.float32)), ref_ras, order=1).data > 0.999
            if not inside.all():
                fov[m] = inside
            coverage = inside if coverage is None else coverage & inside
    truth: dict[str, Volume] = {}
    for kind, path in case.truth.items():
        t = load_volume(path, dtype=np.int16, allow_empty=True)
        if not same_grid(t, reference, atol=1e-2):
            raise GridError(
                f"{path}: ground truth is on another grid than {reference.path.name if reference.path else ref_mod} "
                f"(shape {t.shape} vs {reference.shape}); resample it onto the {ref_mod} image "
                "with nearest-neighbour interpolation"
            )
        if t.data.min() < 0:
            raise InputError(f"{path}: ground truth has negative labels {sorted(np.unique(t.data[t.data < 0]))[:5]}")
        truth[kind] = reorient_to_ras(t)
    return LoadedCase(
        case=case, reference=reference, images=images, truth=truth, resampled=resampled,
        coverage=coverage, notes=notes, registered=registered, fov=fov,
    )


#: A background covers at least this share of the array's faces ...
BACKGROUND_FACES = 0.95
#: ... and of all its voxels.
BACKGROUND_SHARE = 0.25


def _faces(a: np.ndarray) -> np.ndarray:
    """The six faces of a 3-D array, flattened into one."""
    return np.concatenate([f.ravel() for f in (a[0], a[-1], a[:, 0], a[:, -1], a[:, :, 0], a[:, :, -1])])


def _constant_background(data: np.ndarray) -> float | None:
    """The value of a constant, non-zero background (a z-scored or shifted brain-only image):
    one exact value on >= 95 % of the array's faces and on >= 25 % of its voxels; else None."""
    faces = _faces(data)
    vals, counts = np.unique(faces, return_counts=True)
    i = int(np.argmax(counts))
    b = vals[i]
    if b == 0 or not np.isfinite(b) or counts[i] < BACKGROUND_FACES * faces.size:
        return None
    if np.count_nonzero(data == b) < BACKGROUND_SHARE * data.size:
        return None
    return float(b)


def _zero_background(data: np.ndarray) -> bool:
    """True for a preprocessed (brain-only, co-registered) image: >= 25 % of voxels exactly 0
    and the array's faces >= 95 % zero. Raw scans have noise in the air."""
    zero = data == 0
    if zero.mean() < BACKGROUND_SHARE:
        return False
    return bool(np.mean(_faces(zero)) >= BACKGROUND_FACES)


def _register_series(
    name: str, vol: Volume, ref: Volume, seed: int, notes: list[str], *, small_is_identity: bool
) -> np.ndarray | None:
    """The accepted rigid matrix of ``vol`` onto ``ref``, or None (identity / rejected, noted)."""
    from .register import rigid_register

    label = vol.path.name if vol.path is not None else name
    try:
        res = rigid_register(vol, ref, seed=seed)
    except Exception as exc:  # SimpleITK raises RuntimeError with long messages
        msg = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else type(exc).__name__
        notes.append(f"{label}: rigid registration failed ({msg}); kept the physical-coordinate alignment")
        return None
    if not res.accepted:
        notes.append(f"{label}: {res.warning}; kept the physical-coordinate alignment")
        return None
    if small_is_identity and np.linalg.norm(res.translation_mm) < 0.5 and res.rotation_deg < 0.5:
        return None
    return res.matrix
