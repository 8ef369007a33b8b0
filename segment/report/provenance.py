"""What happened in one run: provenance record, volumes table and the case's log.

Three pieces that every writer of a case's outputs (``segment run``, ``segment batch``) uses:

- :func:`build_provenance` -> ``provenance.json``: segment and dependency versions, the resolved
  config, every input file with its size and SHA-256, which file became which modality, the
  registration transforms applied, every warning and fallback, the QC flags and the time of
  each step.
- :func:`volumes_rows` -> ``volumes.csv``: millilitres per class, from the label map
  (``volume_ml_label``: voxels whose final label is the class) and from the partial-volume
  fractions (``volume_ml_pve``: the sum of the class's fraction over the brain, as FSL FAST's
  ``_pve_N`` maps give). Both columns of the ``brain`` rows (CSF + GM + WM + tumor) add up
  to the brain mask's volume.
- :class:`CaseLog` (a context manager): captures the ``segment`` logger's records and every
  Python warning raised while a case runs, for ``segment.log`` and the provenance's warnings,
  and passes warnings on to whoever listens outside (the batch, the terminal).

QC flags are short strings in a step's info dict under the key ``"flags"`` (e.g. the
partial-volume model falling back to the plain mixture); :func:`collect_flags` gathers them.
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import platform
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CaseLog",
    "build_provenance",
    "collect_flags",
    "dependency_versions",
    "file_record",
    "sha256_file",
    "volumes_rows",
    "write_volumes_csv",
    "VOLUME_COLUMNS",
]

#: Distributions whose versions are recorded (the runtime dependencies and optional peers).
DEPENDENCIES = ("numpy", "scipy", "numba", "nibabel", "scikit-image", "SimpleITK", "matplotlib",
                "pyyaml", "pydantic", "tqdm", "dask", "distributed")

#: Columns of ``volumes.csv``, in order.
VOLUME_COLUMNS = ("structure", "part_of", "label", "map", "volume_ml_label", "volume_ml_pve",
                  "fraction_of_brain_label", "fraction_of_brain_pve")

_CHUNK = 1 << 20


# --------------------------------------------------------------------------- files and versions


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "size_bytes", "sha256"}`` of one input file (absolute path)."""
    p = Path(path)
    return {"path": str(p.resolve()), "size_bytes": int(p.stat().st_size), "sha256": sha256_file(p)}


def dependency_versions(names: Iterable[str] = DEPENDENCIES) -> dict[str, str | None]:
    """Installed version of each distribution (None when not installed), plus Python's."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def collect_flags(info: Any, _path: str = "") -> list[str]:
    """Every QC flag found under a ``"flags"`` key anywhere in a (nested) info dict, in order,
    without duplicates."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                if k == "flags" and isinstance(v, (list, tuple)):
                    for f in v:
                        if str(f) not in out:
                            out.append(str(f))
                else:
                    walk(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v)

    walk(info)
    return out


# --------------------------------------------------------------------------- the case's log


class _Capture(logging.Handler):
    """Keeps the records of one thread; passes those the terminal would have shown to the root."""

    def __init__(self, sink: list[logging.LogRecord], thread: int, pass_level: int, label: str = ""):
        super().__init__(logging.DEBUG)
        self.sink = sink
        self.thread = thread
        self.pass_level = pass_level
        self.label = label

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            # another thread's case (threaded Dask worker): not ours, let it through unchanged
            logging.getLogger().handle(record)
            return
        self.sink.append(record)
        if record.levelno >= self.pass_level:
            msg = record.getMessage()
            if self.label and not msg.startswith(self.label):
                # the terminal (a batch's many workers) needs to know which case spoke
                record = logging.makeLogRecord({**record.__dict__, "msg": f"{self.label}: {msg}", "args": None})
            logging.getLogger().handle(record)


class CaseLog:
    """Context manager capturing one case's log records and warnings.

    While active, the ``segment`` logger records INFO and above into :attr:`records` (the
    terminal still shows only what it showed before: ``-v`` or WARNING and above) and every
    Python warning into :attr:`warnings`; on exit the warnings are re-issued to the handler that
    was active before (so a batch or the terminal still sees them).

    Attributes
    ----------
    records : list of logging.LogRecord
    warnings : list of str
        ``"Category: message"`` of each Python warning, and the message of every WARNING-level
        log record, in order, without duplicates.

    Examples
    --------
    >>> import logging
    >>> with CaseLog() as cl:
    ...     logging.getLogger("segment").warning("partial-volume model fell back")
    >>> cl.warnings
    ['partial-volume model fell back']
    """

    def __init__(self, logger: str = "segment", level: int = logging.INFO, label: str = ""):
        self.label = label
        self.logger_name = logger
        self.level = level
        self.records: list[logging.LogRecord] = []
        self._caught: list[warnings.WarningMessage] = []
        self.started = time.time()

    def __enter__(self) -> "CaseLog":
        lg = logging.getLogger(self.logger_name)
        self._saved = (lg.level, lg.propagate)
        pass_level = lg.getEffectiveLevel()
        self._handler = _Capture(self.records, threading.get_ident(), pass_level, self.label)
        lg.addHandler(self._handler)
        lg.setLevel(min(self.level, pass_level))
        lg.propagate = False
        self._cw = warnings.catch_warnings(record=True)
        self._caught = self._cw.__enter__()
        warnings.simplefilter("always")
        self.started = time.time()
        return self

    def __exit__(self, *exc) -> None:
        lg = logging.getLogger(self.logger_name)
        self._cw.__exit__(*exc)
        lg.removeHandler(self._handler)
        lg.setLevel(self._saved[0])
        lg.propagate = self._saved[1]
        for w in self._caught:  # to the outer listener (batch's recorder or the terminal)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    @property
    def warnings(self) -> list[str]:
        out: list[str] = []
        for r in self.records:
            if r.levelno >= logging.WARNING:
                out.append(r.getMessage())
        for w in self._caught:
            out.append(f"{w.category.__name__}: {w.message}")
        return list(dict.fromkeys(out))

    def text(self) -> str:
        """The case's log as text (``segment.log``): one line per record and warning, in time order."""
        lines = []
        events = [(r.created, f"{r.levelname} {r.getMessage()}") for r in self.records]
        t_end = time.time()
        events += [(t_end, f"WARNING {w.category.__name__}: {w.message} ({Path(w.filename).name}:{w.lineno})")
                   for w in self._caught]
        for t, msg in sorted(events, key=lambda e: e[0]):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{int((t % 1) * 1000):03d}"
            lines.append(f"{stamp} {msg}")
        return "\n".join(lines) + ("\n" if lines else "")


# --------------------------------------------------------------------------- volumes


def volumes_rows(seg, *, tumor_names: Mapping[int, str] | None = None) -> list[dict[str, Any]]:
    """Rows of ``volumes.csv`` for one segmentation (a :class:`segment.pipeline.Segmentation`).

    ``part_of == "brain"`` rows (CSF, GM, WM, tumor) partition the brain mask: their
    ``volume_ml_label`` and their ``volume_ml_pve`` each add up to the ``brain`` row. Tumor
    voxels are not in the tissue model, so their PVE volume equals their label volume.
    ``part_of == "tumor"`` rows (NCR, ED, ET) split the tumor row (labels of ``tumor.nii.gz``).
    ``volume_ml_pve`` is empty where no fractions exist (the partial-volume model did not run).

    Label volume: voxels whose final label (after the MRF and the island clean-up) is the class.
    PVE volume: the class's partial-volume fractions (before the MRF) summed over the healthy
    brain. They differ (e.g. MNI152 GM) because a border voxel that is 60 % GM counts whole
    for GM in the first and 0.6 in the second.
    """
    from ..types import TISSUE_LABELS, TISSUE_TUMOR_LABEL

    vox = float(seg.loaded.grid.voxel_volume) / 1000.0
    mask = np.asarray(seg.brain_mask, dtype=bool)
    n_brain = int(np.count_nonzero(mask))
    brain_ml = n_brain * vox
    counts = np.bincount(np.asarray(seg.tissue, dtype=np.uint8)[mask].ravel(), minlength=TISSUE_TUMOR_LABEL + 1)
    healthy = mask & (np.asarray(seg.tissue) != TISSUE_TUMOR_LABEL)
    pve = _pve_sums(seg, healthy)
    n_tumor = int(counts[TISSUE_TUMOR_LABEL])

    def row(name, part_of, label, map_name, ml_label, ml_pve):
        return {
            "structure": name, "part_of": part_of, "label": label, "map": map_name,
            "volume_ml_label": round(ml_label, 3),
            "volume_ml_pve": "" if ml_pve is None else round(ml_pve, 3),
            "fraction_of_brain_label": round(ml_label / brain_ml, 5) if brain_ml else "",
            "fraction_of_brain_pve": "" if ml_pve is None or not brain_ml else round(ml_pve / brain_ml, 5),
        }

    rows = []
    for value, name in TISSUE_LABELS.items():
        rows.append(row(name, "brain", value, "tissue.nii.gz", int(counts[value]) * vox,
                        None if pve is None else float(pve[value - 1]) * vox))
    if seg.tumor is not None or n_tumor:
        rows.append(row("tumor", "brain", TISSUE_TUMOR_LABEL, "tissue.nii.gz", n_tumor * vox,
                        None if pve is None else n_tumor * vox))
    rows.append(row("brain", "", "", "brain_mask.nii.gz", brain_ml, None if pve is None else brain_ml))
    if seg.tumor is not None:
        names = dict(tumor_names or {1: "NCR", 2: "ED", 3: "ET"})
        t = np.asarray(seg.tumor)
        tc = np.bincount(t[mask].ravel().astype(np.int64), minlength=4)
        for value, name in names.items():
            ml = int(tc[value]) * vox
            rows.append(row(name, "tumor", value, "tumor.nii.gz", ml, None if pve is None else ml))
    return rows


def _pve_sums(seg, healthy: np.ndarray) -> np.ndarray | None:
    """Sum of each class's partial-volume fraction over the healthy brain (voxel counts)."""
    sums = seg.info.get("pve_sums") if isinstance(seg.info, Mapping) else None
    if sums is not None:
        return np.asarray(sums, dtype=np.float64)
    if seg.fractions is not None:
        return seg.fractions[healthy].sum(axis=0, dtype=np.float64)
    return None


def write_volumes_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write :func:`volumes_rows` to ``path`` (atomically)."""
    from .tables import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(VOLUME_COLUMNS), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return atomic_write_text(Path(path), buf.getvalue())


# --------------------------------------------------------------------------- provenance


def _brain_ml(seg) -> float:
    return float(np.count_nonzero(seg.brain_mask) * seg.loaded.grid.voxel_volume / 1000.0)


def _version() -> str:
    from .. import __version__

    return __version__


def _matrix(m: Any) -> list[list[float]]:
    return np.round(np.asarray(m, dtype=np.float64), 6).tolist()


def build_provenance(
    case,
    config,
    *,
    loaded=None,
    info: Mapping[str, Any] | None = None,
    timings: Mapping[str, float] | None = None,
    warnings: Sequence[str] = (),
    flags: Sequence[str] = (),
    outputs: Mapping[str, Any] | None = None,
    seconds: float | None = None,
    hash_inputs: bool = True,
) -> dict[str, Any]:
    """The provenance record of one case (``provenance.json``), JSON-ready.

    Parameters
    ----------
    case : segment.types.Case
        The files found (modality -> path, truth kinds, 4-D channels).
    config : segment.config.Config
        The resolved config (every default filled in).
    loaded : segment.io.cases.LoadedCase, optional
        For the reference grid, the registration transforms, resampled series and load notes.
    info : dict, optional
        The steps' info (``Segmentation.info`` or ``CaseResult.info``); its QC flags are
        collected, its ``mixture``/``partial_volume``/``tumor`` summaries kept.
    timings : dict of step -> seconds, optional
    warnings : every warning and fallback of the case (e.g. :attr:`CaseLog.warnings`)
    flags : QC flags computed outside the steps (e.g. the batch's thresholds)
    outputs : name -> path of the files written, optional
    seconds : total wall time, optional
    hash_inputs : bool
        SHA-256 of every input (reads each file once more; ~0.1 s for a 4-modality case).
    """
    from .. import __version__

    info = dict(info or {})
    modality_files = {}
    for m, p in case.images.items():
        rec = file_record(p) if hash_inputs else {"path": str(Path(p).resolve()), "size_bytes": Path(p).stat().st_size}
        if case.channels:
            rec["channel"] = int(case.channels.get(m, 0))
        modality_files[m] = rec
    truth_files = {}
    for k, p in case.truth.items():
        truth_files[k] = file_record(p) if hash_inputs else {"path": str(Path(p).resolve()),
                                                             "size_bytes": Path(p).stat().st_size}
    reg: dict[str, Any] = {"mode": config.registration, "applied": {}}
    resampled: list[str] = []
    notes: list[str] = []
    reference: dict[str, Any] = {}
    if loaded is not None:
        reg["applied"] = {m: {"matrix_ras_mm": _matrix(t), "convention": "new_affine = matrix @ affine"}
                          for m, t in (loaded.registered or {}).items()}
        resampled = list(loaded.resampled)
        notes = list(loaded.notes)
        ref = loaded.reference
        reference = {"modality": case.reference_modality, "shape": list(ref.shape),
                     "spacing_mm": [round(s, 6) for s in ref.spacing], "affine": _matrix(ref.affine)}
        try:
            from ..io.nifti import axcodes

            reference["orientation"] = axcodes(ref.affine)
        except Exception:  # pragma: no cover - orientation is informative only
            pass
    else:
        resampled = list(info.get("resampled") or [])
        notes = list(info.get("notes") or [])
    all_warnings = list(dict.fromkeys([*notes, *warnings]))
    all_flags = list(dict.fromkeys([*collect_flags(info), *flags]))
    steps = {k: info[k] for k in ("mask_method", "saturation", "features", "tumor_regions", "mixture", "tumor") if k in info}
    if hasattr(info.get("registration"), "to_dict"):  # the head template (brain_mask step)
        steps["template_registration"] = {**info["registration"].to_dict(),
                                          "mask_prior": info.get("mask_prior"),
                                          "template_dice": info.get("template_dice")}
    doc: dict[str, Any] = {
        "case_id": case.case_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "segment_version": __version__,
        "dependencies": dependency_versions(),
        "platform": {"system": platform.system(), "machine": platform.machine(),
                     "python": sys.version.split()[0]},
        "command": list(sys.argv),
        "config": config.to_dict(),
        "inputs": {"root": str(Path(case.root).resolve()) if case.root else None,
                   "modalities": modality_files, "truth": truth_files,
                   "tumor_coding": case.tumor_coding},
        "modality_mapping": {m: Path(p).name + (f"[{case.channels[m]}]" if m in case.channels else "")
                             for m, p in case.images.items()},
        "reference": reference,
        "registration": reg,
        "resampled": resampled,
        "warnings": all_warnings,
        "qc_flags": all_flags,
        "steps": steps,
        "timings_s": {k: round(float(v), 3) for k, v in (timings or info.get("timings") or {}).items()},
    }
    if seconds is not None:
        doc["seconds"] = round(float(seconds), 3)
    if outputs:
        doc["outputs"] = {k: Path(v).name for k, v in outputs.items()}
    from .tables import to_jsonable

    return to_jsonable(doc)


# --------------------------------------------------------------------------- one case's records


def case_flags(outputs: Mapping[str, Any], info: Mapping[str, Any], metrics: Mapping[str, Any] | None,
               config) -> list[str]:
    """Every QC flag of one case, as the report row of :func:`segment.publish.write_case` gets
    them: :func:`segment.qc.measure` of the written maps, the metrics, the mixture's convergence
    and the steps' own flags (fallbacks) under the thresholds ``batch.qc`` of the config."""
    from ..qc import CASE_FLAGS_KEY, measure, qc_flags, step_flags

    measured = info.get("qc_measures")
    if not isinstance(measured, Mapping):
        measured = measure(outputs, info)
    row: dict[str, Any] = {"status": "ok", **dict(metrics or {}), **measured}
    mix = info.get("mixture")
    if isinstance(mix, Mapping) and "converged" in mix:
        row["converged"] = bool(mix["converged"])
    row[CASE_FLAGS_KEY] = list(dict.fromkeys([*step_flags(info), *collect_flags(info)]))
    return qc_flags(row, config.batch.qc)


def write_case_records(seg, out_dir: str | os.PathLike, config, *, caselog: CaseLog | None = None,
                       metrics: Mapping[str, Any] | None = None, outputs: Mapping[str, Any] | None = None,
                       seconds: float | None = None, flags: Sequence[str] | None = None) -> dict[str, Path]:
    """Write ``volumes.csv``, ``provenance.json`` and ``segment.log`` of one case into
    ``out_dir``; return their paths by name (``volumes``, ``provenance``, ``log``).

    The provenance's ``warnings`` are the case log's (every Python warning, every WARNING log
    record, e.g. a partial-volume fallback) and the load notes; ``qc_flags`` those of
    :func:`case_flags` (computed unless given).
    """
    from .tables import atomic_write_text, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["volumes"] = write_volumes_csv(volumes_rows(seg), out / "volumes.csv")
    if flags is None:
        from ..qc import measure

        # measured once: kept in seg.info["qc_measures"] for the report row (segment.publish.write_case)
        seg.info["qc_measures"] = measure(outputs or {}, {"brain_volume_ml": _brain_ml(seg)})
        flags = case_flags(outputs or {}, seg.info, metrics, config)
    caught = caselog.warnings if caselog is not None else []
    head = [f"# segment {_version()} case {seg.loaded.case.case_id}: {' '.join(sys.argv)}"]
    tail = [f"# step {k}: {v:.3f} s" for k, v in seg.timings.items()]
    tail += [f"# QC flag: {f}" for f in flags] or ["# QC flags: none"]
    body = caselog.text() if caselog is not None else ""
    log_text = "\n".join(head) + "\n" + body + "\n".join(tail) + "\n"
    paths["log"] = atomic_write_text(out / "segment.log", log_text)
    outs = {**dict(outputs or {}), **paths, "provenance": out / "provenance.json"}
    doc = build_provenance(seg.loaded.case, config, loaded=seg.loaded, info=seg.info, timings=seg.timings,
                           warnings=caught, flags=flags, outputs=outs, seconds=seconds)
    paths["provenance"] = write_json(doc, out / "provenance.json")
    return paths
