"""Plain data types that travel through the pipeline.

The affine always travels with the voxels: a :class:`Volume` is an array plus the 4x4 matrix that
maps voxel indices to millimetres in scanner (RAS+) space, as in nibabel.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Canonical modality names, in the order used as mixture features.
MODALITIES: tuple[str, ...] = ("t1", "t1c", "t2", "flair")

#: Tissue label coding written to ``tissue.nii.gz``.
TISSUE_LABELS: dict[int, str] = {1: "CSF", 2: "GM", 3: "WM"}
#: Label written into the tissue map for tumor voxels (when a tumor task runs).
TISSUE_TUMOR_LABEL = 4


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D image with its voxel-to-world affine.

    Parameters
    ----------
    data : ndarray of shape (X, Y, Z)
        Voxel values (float32 for images, uint8/bool for masks and labels).
    affine : ndarray of shape (4, 4)
        Voxel index -> RAS+ millimetres.
    path : Path or None
        The file the volume came from, used in error messages.
    """

    data: np.ndarray
    affine: np.ndarray
    path: Path | None = None

    def __post_init__(self) -> None:
        if self.data.ndim != 3:
            raise ValueError(f"Volume data must be 3-D, got shape {self.data.shape}")
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {aff.shape}")
        object.__setattr__(self, "affine", aff)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in millimetres along each array axis, derived from the affine."""
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]

    @property
    def voxel_volume(self) -> float:
        """Volume of one voxel in mm^3."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    def with_data(self, data: np.ndarray) -> "Volume":
        """A new Volume on the same grid holding ``data``."""
        return Volume(data, self.affine, self.path)


@dataclass(frozen=True)
class Case:
    """One subject's files, found on disk.

    ``images`` maps canonical modality names (``t1``, ``t1c``, ``t2``, ``flair``) to files;
    ``channels`` maps a modality to its channel index when several modalities share one 4-D
    file (MSD layout), else is empty. ``truth`` maps a ground-truth kind to a file: ``"tissue"``
    (0 bg, 1 CSF, 2 GM, 3 WM, 4 tumor), ``"tumor"`` (BraTS 2023 coding 1 NCR, 2 ED, 3 ET after
    mapping) or ``"seg"`` (kind decided by the task that runs: tumor when the tumor task runs,
    else tissue). ``tumor_coding`` names the tumor file's convention: ``brats2023``,
    ``brats2021`` (1/2/4), ``msd`` (1 ED, 2 NET, 3 ET) or ``auto``.
    """

    case_id: str
    images: dict[str, Path]
    truth: dict[str, Path] = field(default_factory=dict)
    root: Path | None = None
    channels: dict[str, int] = field(default_factory=dict)
    tumor_coding: str = "auto"

    @property
    def reference_modality(self) -> str:
        """The modality whose grid every output lies on: T1 if present, else the first found."""
        for m in MODALITIES:
            if m in self.images:
                return m
        raise ValueError(f"case {self.case_id} has no images")


@dataclass
class CaseResult:
    """What running the pipeline on one case produced."""

    case_id: str
    status: str = "ok"  # "ok" or "failed"
    error: str = ""
    seconds: float = 0.0
    outputs: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, object] = field(default_factory=dict)
