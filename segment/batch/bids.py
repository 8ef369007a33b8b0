"""A batch over a BIDS dataset, written as a BIDS-derivatives dataset.

:func:`run_bids_batch` finds one case per ``sub-*/[ses-*/]anat`` folder (:mod:`segment.io.bids`;
participant and session filters, ground truth from ``derivatives/`` when asked), runs them with
:func:`segment.batch.run.run_batch` and, in the ``bids`` output layout (the default for BIDS
input), writes the derivatives tree of :mod:`segment.report.bids_derivatives`::

    OUT/dataset_description.json, dseg.tsv, desc-tumor_dseg.tsv, .bidsignore
    OUT/sub-01/[ses-1/]anat/sub-01[_ses-1]_{desc-brain_mask,dseg,label-GM_probseg,...}.nii.gz
    OUT/segment/            segment's own per-case folders (metrics.json, overlay.png, result.json),
                            report.csv, summary.csv, index.html, config.yaml, run.log

Finished cases are skipped on a rerun as in any batch (their manifests live in ``OUT/segment``);
the derivatives of every case that succeeded are (re)written from them. The ``plain`` layout
writes ``OUT/sub-01_ses-1/`` case folders as for any other input. The probability maps are part
of the BIDS layout, so ``outputs.probabilities`` is switched on for it.
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from ..config import Config, config_from_dict
from ..errors import InputError
from ..io.bids import BidsSession, bids_case, find_sessions, is_bids_root, session_of_anat
from ..publish import MANIFEST, config_digest, manifest_of
from ..types import Case
from .discovery import BatchUsageError, find_case_dirs
from .reports import BatchReport, _RunLog
from .run import run_batch

__all__ = ["ENGINE_DIR", "is_bids_input", "run_bids_batch"]

#: Folder of the derivatives root holding segment's own (non-BIDS) outputs and reports.
ENGINE_DIR = "segment"
#: Plain output file -> output key of the derivatives writer.
_PLAIN_FILES = {"brain_mask.nii.gz": "brain_mask", "tissue.nii.gz": "tissue", "tumor.nii.gz": "tumor",
                **{f"{p}_{c}.nii.gz": f"{p}_{c}" for p in ("pve", "prob") for c in ("csf", "gm", "wm")}}


def is_bids_input(root: str | os.PathLike) -> bool:
    """A BIDS dataset (``dataset_description.json`` or ``sub-*`` folders), not an MSD root."""
    p = Path(root)
    return is_bids_root(p) and not (p / "imagesTr").is_dir()


def _bids_cases(root: Path, sessions: list[BidsSession], truth_from: str | None,
                exclude: Sequence[Path]) -> tuple[list[Case], list[str]]:
    cases, notes = [], []
    for s in sessions:
        for f, why in s.ignored:
            notes.append(f"{s.case_id}: ignored {f.name} ({why})")
        try:
            cases.append(bids_case(s, truth_from=truth_from, exclude=exclude))
        except InputError as exc:
            if "ground truth" in str(exc) or "ground-truth" in str(exc):
                raise BatchUsageError(str(exc)) from None
            # no usable image: still a case, so that it shows up as a failed row with the reason
            cases.append(Case(case_id=s.case_id, images={}, root=s.anat))
    return cases, notes


def _subject_session(case: Case | Path) -> tuple[str, str | None]:
    root = case.root if isinstance(case, Case) else case
    where = session_of_anat(root) if root is not None else None
    if where is not None:
        return where[1], where[2]
    name = case.case_id if isinstance(case, Case) else Path(case).name
    label = re.sub(r"[^a-zA-Z0-9]", "", name)
    if not label:
        raise BatchUsageError(f"{name}: case name has no letter or digit to make a BIDS subject label from")
    return label, None


def _sources(case: Case | Path, raw_root: Path | None) -> list[str]:
    if not isinstance(case, Case):
        return []
    out = []
    for m in ("t1", "t1c", "t2", "flair"):
        p = case.images.get(m)
        if p is None:
            continue
        if raw_root is not None:
            try:
                out.append(f"bids:raw:{Path(p).absolute().relative_to(raw_root).as_posix()}")
                continue
            except ValueError:
                pass
        out.append(str(p))
    return out


def run_bids_batch(
    input_root: str | os.PathLike,
    out_root: str | os.PathLike,
    config: Config | None = None,
    *,
    participant_labels: Sequence[str] | None = None,
    session_labels: Sequence[str] | None = None,
    output_layout: str | None = None,
    truth_from: str | None = None,
    **batch_kwargs,
) -> BatchReport:
    """Segment a BIDS dataset (or any batch input into the BIDS layout); see the module docstring.

    Parameters
    ----------
    input_root : a BIDS dataset, or a folder of case folders (then only ``output_layout='bids'``)
    out_root : output folder (the derivatives root in the ``bids`` layout)
    participant_labels, session_labels : keep these subjects / sessions (``01`` or ``sub-01``)
    output_layout : ``'bids'`` (default for BIDS input) or ``'plain'``
    truth_from : folder under ``input_root`` searched for ``*_dseg.nii.gz`` ground truth
        (``derivatives`` or ``derivatives/<pipeline>``); None: no ground truth
    batch_kwargs : passed to :func:`segment.batch.run.run_batch` (workers, force, ...)
    """
    in_root = Path(input_root).absolute()
    out = Path(out_root).absolute()
    bids_in = is_bids_input(in_root)
    layout = output_layout or ("bids" if bids_in else "plain")
    if layout not in ("bids", "plain"):
        raise BatchUsageError(f"--output-layout {layout!r}: allowed values are 'bids', 'plain'")
    if not bids_in and (participant_labels or session_labels or truth_from):
        raise BatchUsageError(
            f"{in_root}: --participant-label, --session-label and --bids-truth need a BIDS dataset "
            "(sub-*/[ses-*/]anat/ folders or dataset_description.json)"
        )
    config = config or Config()
    if layout == "bids" and not config.outputs.probabilities:
        d = config.to_dict()
        d.setdefault("outputs", {})["probabilities"] = True
        config = config_from_dict(d)
    notes: list[str] = []
    if bids_in:
        try:
            sessions = find_sessions(in_root, participant_labels=participant_labels, session_labels=session_labels)
        except InputError as exc:
            raise BatchUsageError(str(exc)) from None
        cases: list = []
        cases, notes = _bids_cases(in_root, sessions, truth_from, exclude=[out])
    else:
        cases = None
    engine = out / ENGINE_DIR if layout == "bids" else out
    for n in notes:
        print(f"segment: note: {n}", file=sys.stderr)
    report = run_batch(in_root, engine, config, cases=cases, **batch_kwargs)
    if notes:
        log = _RunLog(engine / "run.log")
        try:
            for n in notes:
                log(f"bids: {n}")
        finally:
            log.close()
    if layout == "bids":
        _write_derivatives(in_root if bids_in else None, out, engine, report, config,
                           cases if cases is not None else find_case_dirs(in_root, exclude=[out]))
    return report


def _write_derivatives(raw_root: Path | None, out: Path, engine: Path, report: BatchReport, config: Config,
                       cases: list) -> None:
    from ..report.bids_derivatives import write_dataset_description, write_session
    from .discovery import case_name

    write_dataset_description(out, config_digest=config_digest(config), raw_root=raw_root,
                              tumor_coding=config.tumor.coding, ignore=[f"{ENGINE_DIR}/"])
    status = {r["case_id"]: r.get("status") for r in report.rows}
    seen: dict[tuple[str, str | None], str] = {}
    for c in cases:
        name = case_name(c)
        sub, ses = _subject_session(c)
        if (sub, ses) in seen:
            raise BatchUsageError(f"{name} and {seen[(sub, ses)]} both map to BIDS subject sub-{sub}; rename one")
        seen[(sub, ses)] = name
        if status.get(name) != "ok":
            continue
        folder = engine / name
        listed = manifest_of(folder) or {}
        outputs = {_PLAIN_FILES[f]: folder / f for f in listed if f in _PLAIN_FILES and f != MANIFEST}
        write_session(out, sub, ses, outputs, sources=_sources(c, raw_root), tumor_coding=config.tumor.coding)
