"""Scoring folders of predictions against folders of ground truths (results of any tool)."""
from __future__ import annotations

import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

from ..errors import InputError, SegmentError
from ..io.nifti import is_nifti_name, strip_nifti_suffix
from ..qc import CASE_FLAGS_KEY
from .discovery import BatchUsageError
from .reports import BatchReport, _Progress, write_reports
from .running import one_line

__all__ = ["evaluate_folders", "evaluate_pair", "guess_label_kind"]

#: Name tokens that mark a file as a prediction or ground truth rather than part of the case id.
_ROLE_TOKENS = ("seg", "label", "labels", "gt", "truth", "pred", "prediction", "predictions",
                "tissue", "tumor", "tumour", "mask", "output")
_ROLE_TAIL = re.compile(r"(?:[-_.](?:%s))+$" % "|".join(_ROLE_TOKENS), re.IGNORECASE)


def _case_key(name: str) -> str:
    """Case id of a file or folder name: NIfTI suffix and trailing role words removed, lower case."""
    stem = strip_nifti_suffix(name) if is_nifti_name(name) else name
    return (_ROLE_TAIL.sub("", stem) or stem).lower()


def _label_files(folder: Path, role: str) -> dict[str, Path]:
    """Label maps in one case folder by kind ('tissue', 'tumor' or '?' when the name does not say)."""
    from ..io.cases import classify_file, tokens

    found: dict[str, Path] = {}
    unknown: list[Path] = []
    for f in sorted(folder.iterdir()):
        if not f.is_file() or not is_nifti_name(f.name) or f.name.startswith("."):
            continue
        toks = tokens(f.name)
        if "mask" in toks or "prob" in toks or "probs" in toks or "entropy" in toks:
            continue
        if role == "truth":
            c = classify_file(f.name)
            if c is None or c[0] != "truth":
                continue
            kind = {"tissue": "tissue", "tumor": "tumor"}.get(c[1], "?")
        else:
            if any(m in toks for m in ("t1", "t1n", "t1c", "t1ce", "t2", "t2w", "flair", "t2f")):
                continue
            kind = "tissue" if "tissue" in toks else "tumor" if ("tumor" in toks or "tumour" in toks) else "?"
        if kind == "?":
            unknown.append(f)
        else:
            found.setdefault(kind, f)
    if unknown:
        found.setdefault("?", unknown[0])
    return found


def _collect(root: Path, role: str) -> dict[str, tuple[str, dict[str, Path]]]:
    """Entries of a predictions or truths folder: case key -> (display name, label files by kind)."""
    out: dict[str, tuple[str, dict[str, Path]]] = {}
    for p in sorted(root.iterdir()):
        if p.name.startswith((".", "__")):
            continue
        if p.is_dir():
            files = _label_files(p, role)
            if files:
                out.setdefault(_case_key(p.name), (p.name, files))
        elif p.is_file() and is_nifti_name(p.name):
            stem = strip_nifti_suffix(p.name)
            out.setdefault(_case_key(p.name), (_ROLE_TAIL.sub("", stem) or stem, {"?": p}))
    return out


def guess_label_kind(labels) -> str:
    """'tissue' or 'tumor' for an unnamed label map: a tissue map labels most of the head's
    non-background with 3+ classes; a tumor map labels a small compact region."""
    import numpy as np

    arr = np.asarray(labels)
    present = set(int(v) for v in np.unique(arr)) - {0}
    frac = float(np.count_nonzero(arr)) / max(arr.size, 1)
    if {1, 2, 3} <= present and frac >= 0.08:
        return "tissue"
    return "tumor"


def evaluate_pair(pred_path: Path, gt_path: Path, kind: str, *, tumor_coding: str = "auto",
                  expect: str | None = None) -> dict[str, Any] | None:
    """Metrics of one prediction file against one ground truth file (same grid required).

    ``kind`` is ``tissue`` (Dice, IoU, sensitivity, specificity, HD95, volume difference per
    label 1 CSF, 2 GM, 3 WM and 4 tumor when present), ``tumor`` (BraTS WT/TC/ET with lesion-wise
    scores) or ``auto`` (decided from the ground truth, see :func:`guess_label_kind`). With
    ``expect``, an ``auto`` decision other than ``expect`` returns None (nothing to score).
    """
    import numpy as np

    from ..io.nifti import load_volume, same_grid
    from ..metrics import evaluate_brats, evaluate_labels, map_tumor_labels
    from ..types import TISSUE_LABELS, TISSUE_TUMOR_LABEL

    pred = load_volume(pred_path, dtype=np.int16, allow_empty=True)
    gt = load_volume(gt_path, dtype=np.int16, allow_empty=True)
    if not same_grid(pred, gt, atol=1e-2):
        raise InputError(
            f"{pred_path.name}: prediction grid (shape {pred.shape}) differs from {gt_path.name} (shape {gt.shape}); "
            "resample the prediction onto the ground truth's grid"
        )
    if kind == "auto":
        kind = guess_label_kind(gt.data)
        if expect is not None and kind != expect:
            return None
    if not np.any(gt.data):
        warnings.warn(f"{gt_path}: ground truth is empty (every voxel 0): its scores only say whether "
                      "the prediction is empty too", UserWarning, stacklevel=2)
    if kind == "tumor":
        p = map_tumor_labels(pred.data, tumor_coding, source=pred_path.name)
        g = map_tumor_labels(gt.data, tumor_coding, source=gt_path.name)
        out: dict[str, Any] = {"kind": "tumor"}
        out.update(evaluate_brats(p, g, gt.spacing))
        return out
    names = dict(TISSUE_LABELS)
    if np.any(gt.data == TISSUE_TUMOR_LABEL) or np.any(pred.data == TISSUE_TUMOR_LABEL):
        names[TISSUE_TUMOR_LABEL] = "tumor"
    bad = sorted(int(v) for v in np.union1d(np.unique(pred.data), np.unique(gt.data)) if v not in (0, *names))
    if bad:
        raise InputError(
            f"{gt_path.name}: labels {bad} are not tissue labels (0 background, 1 CSF, 2 GM, 3 WM, 4 tumor); "
            "use --kind tumor for tumor label maps"
        )
    out = {"kind": "tissue"}
    out.update(evaluate_labels(pred.data, gt.data, names, gt.spacing))
    return out


def evaluate_folders(pred_root: str | os.PathLike, gt_root: str | os.PathLike,
                     out_root: str | os.PathLike | None = None, *, kind: str = "auto",
                     progress: bool | None = None) -> BatchReport:
    """Score every prediction under ``pred_root`` against the ground truth of the same case.

    Entries of either folder are NIfTI files (``<case>.nii.gz``, ``<case>_seg.nii.gz`` ...) or
    case folders (a ``segment batch`` output with ``tissue.nii.gz`` / ``tumor.nii.gz``, or a data
    folder with ``seg.nii.gz`` / ``seg_tissue.nii.gz`` ...). They are matched by case id: the
    name without NIfTI suffix and trailing words such as ``seg``, ``pred``, ``label``,
    ``tissue``, ``tumor``, case-insensitively. Cases found on one side only are failed rows.

    ``kind`` is ``tissue``, ``tumor`` or ``auto``: with case folders, auto scores every kind that
    both sides hold, named by file name, else decides from the ground truth's content.

    Writes ``report.csv``, ``summary.csv`` and ``index.html`` into ``out_root`` when given.
    """
    if kind not in ("auto", "tissue", "tumor"):
        raise BatchUsageError(f"--kind {kind!r}: allowed values are auto, tissue, tumor")
    pred_root, gt_root = Path(pred_root), Path(gt_root)
    for p, what in ((pred_root, "predictions"), (gt_root, "ground truth")):
        if not p.is_dir():
            raise BatchUsageError(f"{p}: {what} folder not found")
    preds = _collect(pred_root, "pred")
    gts = _collect(gt_root, "truth")
    if not preds:
        raise BatchUsageError(f"{pred_root}: no NIfTI label maps or case folders with label maps found")
    keys = sorted(set(preds) | set(gts), key=lambda k: (preds.get(k) or gts[k])[0])
    bar = _Progress(len(keys), progress)
    rows: list[dict[str, Any]] = []
    interrupted = False
    t_start = time.perf_counter()
    try:
        for key in keys:
            t0 = time.perf_counter()
            name = (preds.get(key) or gts[key])[0]
            row: dict[str, Any] = {"case_id": name, "status": "ok", "error": ""}
            try:
                if key not in gts:
                    raise InputError(f"no ground truth for this case in {gt_root}")
                if key not in preds:
                    raise InputError(f"no prediction for this case in {pred_root}")
                pf, gf = preds[key][1], gts[key][1]
                pairs = _pairs(pf, gf, kind)
                if not pairs:
                    raise InputError(
                        f"no matching label maps: prediction has {sorted(pf)}, ground truth {sorted(gf)}; "
                        "set --kind tissue or --kind tumor"
                    )
                kinds = []
                for k, expect, pp, gp in pairs:
                    with warnings.catch_warnings(record=True) as wlist:
                        warnings.simplefilter("always")
                        m = evaluate_pair(pp, gp, k, expect=expect)
                    if wlist:
                        row.setdefault(CASE_FLAGS_KEY, []).extend(str(w.message) for w in wlist)
                    if m is None:
                        continue
                    kinds.append(m.pop("kind"))
                    row.update(m)
                if not kinds:
                    raise InputError(
                        f"the ground truth's labels do not match the predictions {sorted(pf)}; "
                        "set --kind tissue or --kind tumor"
                    )
                row["kind"] = "+".join(kinds)
            except SegmentError as exc:
                row.update(status="failed", error=one_line(str(exc)))
            except Exception as exc:  # keep going, keep the reason
                row.update(status="failed", error=one_line(f"{type(exc).__name__}: {exc}"))
            row["seconds"] = round(time.perf_counter() - t0, 3)
            rows.append(row)
            bar.step(row)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    out = Path(out_root) if out_root is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        rows = write_reports(rows, out, title=f"segment evaluate: {pred_root.name} vs {gt_root.name}",
                             image_name=None, links={"report.csv": "report.csv", "summary.csv": "summary.csv"})
    return BatchReport(out or pred_root, rows, [], interrupted, time.perf_counter() - t_start)


def _pairs(pf: dict[str, Path], gf: dict[str, Path], kind: str) -> list[tuple[str, str | None, Path, Path]]:
    """(kind, expected kind, prediction, truth) to score for one case.

    ``kind`` may be ``auto`` (decide from the truth's content); ``expected`` not None means the
    pair is scored only when the content agrees (a truth whose name does not say its kind).
    """
    if kind in ("tissue", "tumor"):
        p = pf.get(kind) or pf.get("?")
        g = gf.get(kind) or gf.get("?")
        return [(kind, None, p, g)] if p is not None and g is not None else []
    out: list[tuple[str, str | None, Path, Path]] = []
    for k in ("tissue", "tumor"):
        if k in pf:
            if k in gf:
                out.append((k, None, pf[k], gf[k]))
            elif "?" in gf:
                out.append(("auto", k, pf[k], gf["?"]))
    if out:
        return out
    p = pf.get("?")
    if p is None:
        return []
    if "?" in gf:
        return [("auto", None, p, gf["?"])]
    if len(gf) == 1:
        return [("auto", None, p, next(iter(gf.values())))]
    return [("auto", None, p, g) for g in gf.values()][:1]