"""Finding the cases of a batch: the case folders under an input root (or an MSD ``imagesTr``)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import SegmentError
from ..io.nifti import is_nifti_name, strip_nifti_suffix
from ..types import Case

__all__ = ["BatchUsageError", "case_name", "find_case_dirs", "input_fingerprint"]


class BatchUsageError(SegmentError):
    """A batch cannot start: bad input root, unreachable scheduler, missing optional dependency."""


def find_case_dirs(root: str | os.PathLike, *, exclude: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Case folders under ``root``: every non-hidden sub-folder, by name.

    Every sub-folder is listed, also one that is empty or holds only folders (a nested layout)
    or no NIfTI file (DICOM, PNG), so that it shows up in the report as a failed case with the
    reason instead of silently disappearing. Folders in ``exclude`` (e.g. the output folder when
    it lies inside ``root``) are skipped.

    Raises
    ------
    BatchUsageError
        ``root`` is not a folder, holds no case folder, or is itself a single case.
    """
    root = Path(root)
    if not root.is_dir():
        raise BatchUsageError(f"{root}: input folder not found; --input takes a folder of case folders")
    msd_images = root / "imagesTr"
    if msd_images.is_dir():
        # Medical Segmentation Decathlon layout: imagesTr/X.nii.gz (4-D), labelsTr/X.nii.gz
        files = [f for f in sorted(msd_images.iterdir()) if is_nifti_name(f.name) and not f.name.startswith(".")]
        if files:
            return files
    skip = {Path(p).resolve() for p in exclude}
    dirs = [d for d in sorted(root.iterdir())
            if d.is_dir() and not d.name.startswith((".", "__")) and d.resolve() not in skip]
    if not dirs:
        if any(is_nifti_name(f.name) for f in root.iterdir() if f.is_file()):
            raise BatchUsageError(
                f"{root}: holds NIfTI files but no case folders; --input takes a folder of case folders "
                "(use 'segment run' for a single case)"
            )
        raise BatchUsageError(f"{root}: no case folders found; --input takes a folder of case folders")
    return dirs


def case_name(case: Path | Case) -> str:
    """Name of a case: its folder's name, an MSD image file's name without its suffix, or the
    ``case_id`` of a :class:`~segment.types.Case` found by a discovery (BIDS: ``sub-01_ses-1``)."""
    if isinstance(case, Case):
        return case.case_id
    return strip_nifti_suffix(case.name) if case.is_file() else case.name


def case_root(case: Path | Case) -> Path | None:
    """The folder (or MSD file) a case is read from."""
    return case.root if isinstance(case, Case) else case


def input_fingerprint(case_dir: Path) -> list[list[Any]]:
    """Name, size and modification time of every file of a case (to notice changed inputs)."""
    out = []
    if isinstance(case_dir, Case):  # found by a discovery (BIDS): its images and truth files
        files = sorted(set(case_dir.images.values()) | set(case_dir.truth.values()))
    elif case_dir.is_file():  # an MSD image: itself and its label file
        label = case_dir.parent.parent / "labelsTr" / case_dir.name
        files = [case_dir] + ([label] if label.is_file() else [])
    else:
        files = sorted(case_dir.iterdir())
    for f in files:
        if f.is_file() and not f.name.startswith("."):
            st = f.stat()
            out.append([f.name, st.st_size, st.st_mtime_ns])
    return out
