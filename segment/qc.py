"""Quality control of a finished case: measurements read back from its label maps, and flags.

A wrong result must not look like a right one: :func:`qc_flags` turns implausible measurements
(brain volume, an empty class, tumor on the mask's edge, a mixture that did not converge) and
the flags raised by the pipeline's steps (registration, fallbacks) into short review notes that
every output carries (``result.json``, the batch report, the review page, ``segment run``'s
summary).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .config import QCConfig
from .report.tables import as_number

__all__ = ["measure", "qc_flags", "CASE_FLAGS_KEY"]

#: Row key carrying the flags raised by the pipeline's steps (kept in result.json, not a column).
CASE_FLAGS_KEY = "_case_flags"


def measure(outputs: Mapping[str, Path], info: Mapping[str, Any]) -> dict[str, Any]:
    """Quality-control quantities of a finished case, read back from its written label maps."""
    import nibabel as nib
    import numpy as np
    from scipy import ndimage as ndi

    from .types import TISSUE_LABELS, TISSUE_TUMOR_LABEL

    q: dict[str, Any] = {}
    vol_ml = info.get("brain_volume_ml")
    if vol_ml is not None:
        q["brain_volume_ml"] = round(float(vol_ml), 2)
    tissue_p = outputs.get("tissue")
    mask_p = outputs.get("brain_mask")
    if tissue_p is None or not Path(tissue_p).is_file():
        return q
    img = nib.load(str(tissue_p))
    tissue = np.asarray(img.dataobj, dtype=np.uint8)
    vv = float(abs(np.linalg.det(img.affine[:3, :3]))) / 1000.0
    counts = np.bincount(tissue.ravel(), minlength=TISSUE_TUMOR_LABEL + 1)
    labelled = max(int(counts[1:].sum()), 1)
    for value, name in TISSUE_LABELS.items():
        q[f"volume_ml_{name}"] = round(int(counts[value]) * vv, 3)
        q[f"fraction_{name}"] = round(int(counts[value]) / labelled, 5)
    tumor = None
    tumor_p = outputs.get("tumor")
    if tumor_p is not None and Path(tumor_p).is_file():
        tumor = np.asarray(nib.load(str(tumor_p)).dataobj) > 0
    elif counts[TISSUE_TUMOR_LABEL] > 0:
        tumor = tissue == TISSUE_TUMOR_LABEL
    if tumor is not None:
        n_tumor = int(np.count_nonzero(tumor))
        q["tumor_volume_ml"] = round(n_tumor * vv, 3)
        if n_tumor and mask_p is not None and Path(mask_p).is_file():
            mask = np.asarray(nib.load(str(mask_p)).dataobj) > 0
            # the mask's border: mask voxels with a neighbour outside the mask (or the image edge)
            border = mask & ~ndi.binary_erosion(mask, border_value=0)
            q["tumor_edge_fraction"] = round(int(np.count_nonzero(tumor & border)) / n_tumor, 5)
    return q


def qc_flags(row: Mapping[str, Any], qc: QCConfig | None = None) -> list[str]:
    """Review flags of one report row (``failed``, brain volume, empty class, tumor at the edge,
    and the flags the pipeline's steps raised, stored under ``_case_flags``)."""
    qc = qc or QCConfig()
    if row.get("status") != "ok":
        return ["failed"]
    flags = []
    vol = as_number(row.get("brain_volume_ml"))
    lo, hi = qc.brain_volume_ml
    if vol is not None and not lo <= vol <= hi:
        flags.append(f"brain volume {vol:.0f} mL outside [{lo:.0f}, {hi:.0f}]")
    for key, value in row.items():
        if key.startswith("fraction_"):
            f = as_number(value)
            if f is not None and f < qc.min_class_fraction:
                flags.append(f"empty class {key[len('fraction_'):]} ({100 * f:.2f}% of brain)")
    edge = as_number(row.get("tumor_edge_fraction"))
    if edge is not None and edge > qc.tumor_edge_fraction:
        flags.append(f"tumor touches the brain mask edge ({100 * edge:.1f}% of its voxels)")
    low = [k[len("dice_"):] for k, v in row.items()
           if k.startswith("dice_") and (as_number(v) is not None and as_number(v) < qc.min_dice)]
    if low:
        flags.append(f"Dice below {qc.min_dice:g}: {', '.join(low)}")
    if row.get("converged") is False or str(row.get("converged")).lower() == "false":
        flags.append("mixture did not converge")
    flags.extend(_as_list(row.get(CASE_FLAGS_KEY)))
    return list(dict.fromkeys(flags))


def _as_list(value: Any) -> Iterable[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [s.strip() for s in value.split(";") if s.strip()]
    return [str(v) for v in value]


def step_flags(info: Mapping[str, Any]) -> list[str]:
    """Flags raised by the pipeline's steps: ``info["flags"]`` and any step's ``flags`` list
    (``info["brain_mask"]["flags"]``, ``info["mixture"]["flags"]`` ...), in order, once each."""
    out: list[str] = list(_as_list(info.get("flags")))
    for v in info.values():
        if isinstance(v, Mapping):
            out.extend(_as_list(v.get("flags")))
    return list(dict.fromkeys(out))
