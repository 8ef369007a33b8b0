"""Many cases: a local process pool (or a Dask cluster), one report row per case.

:func:`run_batch` segments every case folder under a root folder into ``OUT/<case>/`` (the same
files as ``segment run``) and writes, beside them::

    OUT/report.csv    one row per case: case_id, status (ok/failed), error, seconds, flags, metrics
    OUT/summary.csv   mean, std, median, IQR ... of every metric over the cases that succeeded
    OUT/index.html    self-contained review page (sortable table, overlays, quality flags)
    OUT/config.yaml   the resolved configuration, so the run can be reproduced
    OUT/run.log       one line per case and event, appended by every run

Faults. A case that fails (unreadable file, missing modality, any exception) becomes a failed row
with the reason and the others go on. Each case is written into a hidden staging folder
``OUT/.staging-<case>-<id>/`` whose last file is ``result.json``; the folder is then renamed to
``OUT/<case>``, so ``OUT/<case>`` only ever holds a complete result. A rerun skips a case whose
``result.json`` records status ok, the same configuration and input files, and outputs that
are all present with their recorded sizes (``force`` redoes it); anything else, e.g. a case
killed mid-write or whose files were damaged afterwards, is redone. Ctrl-C stops the workers and
still writes the report of what finished (unfinished cases are rows failed with ``interrupted``).

:func:`evaluate_folders` scores a folder of predictions against a folder of ground truths and
writes the same report, so results of other tools are scored the same way.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .config import Config, QCConfig, config_from_dict
from .errors import InputError, SegmentError
from .io.nifti import is_nifti_name, strip_nifti_suffix
from .report.tables import as_number

__all__ = [
    "BatchReport",
    "BatchUsageError",
    "LEADING_COLUMNS",
    "available_cores",
    "evaluate_folders",
    "find_case_dirs",
    "qc_flags",
    "run_batch",
    "run_case",
]

#: First columns of ``report.csv``, in order; metric columns follow.
LEADING_COLUMNS = ["case_id", "status", "error", "seconds", "flags"]
#: Written last into a finished case's folder; its presence (and validity) marks the case done.
RESULT_FILE = "result.json"
_STAGING = ".staging-"
_TRASH = ".old-"
#: Quality-control measurements stored in each row (not metrics against ground truth).
QC_PREFIXES = ("brain_volume_ml", "volume_ml_", "fraction_", "tumor_edge_fraction", "tumor_volume_ml")
_NON_METRIC = set(LEADING_COLUMNS) | {"kind"}
#: Environment variables that size thread pools of numerical libraries in worker processes.
_THREAD_ENV = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class BatchUsageError(SegmentError):
    """A batch cannot start: bad input root, unreachable scheduler, missing optional dependency."""


def available_cores() -> int:
    """Cores this process may use (CPU affinity where the OS reports it, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------- discovery


def find_case_dirs(root: str | os.PathLike, *, exclude: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Case folders under ``root``: every non-hidden sub-folder holding at least one file, by name.

    A sub-folder with no NIfTI file is still listed, so that it shows up in the report as a
    failed case with the reason (e.g. DICOM or PNG files) instead of silently disappearing.
    Folders in ``exclude`` (e.g. the output folder when it lies inside ``root``) are skipped.

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
    dirs = []
    for d in sorted(root.iterdir()):
        if not d.is_dir() or d.name.startswith((".", "__")) or d.resolve() in skip:
            continue
        try:
            if any(f.is_file() and not f.name.startswith(".") for f in d.iterdir()):
                dirs.append(d)
        except OSError:
            dirs.append(d)  # unreadable folder: let the case fail with the reason
    if not dirs:
        if any(is_nifti_name(f.name) for f in root.iterdir() if f.is_file()):
            raise BatchUsageError(
                f"{root}: holds NIfTI files but no case folders; --input takes a folder of case folders "
                "(use 'segment run' for a single case)"
            )
        raise BatchUsageError(f"{root}: no case folders found; --input takes a folder of case folders")
    return dirs


def case_name(case: Path) -> str:
    """Name of a case: its folder's name, or an MSD image file's name without its suffix."""
    return strip_nifti_suffix(case.name) if case.is_file() else case.name


def _input_fingerprint(case_dir: Path) -> list[list[Any]]:
    """Name, size and modification time of every file of a case (to notice changed inputs)."""
    out = []
    if case_dir.is_file():  # an MSD image: itself and its label file
        label = case_dir.parent.parent / "labelsTr" / case_dir.name
        files = [case_dir] + ([label] if label.is_file() else [])
    else:
        files = sorted(case_dir.iterdir())
    for f in files:
        if f.is_file() and not f.name.startswith("."):
            st = f.stat()
            out.append([f.name, st.st_size, st.st_mtime_ns])
    return out


def config_digest(config: Config | Mapping[str, Any]) -> str:
    """Hash of the settings that change a case's outputs (everything but the ``batch`` section)."""
    d = dict(config.to_dict() if isinstance(config, Config) else config)
    d.pop("batch", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def completed_row(out_dir: Path, digest: str | None = None,
                  inputs: list[list[Any]] | None = None) -> dict[str, Any] | None:
    """The stored report row of a finished case, or None when the case must be (re)done.

    A case is complete when ``out_dir/result.json`` parses, says ``ok``, was made with the same
    configuration digest and input files (when given), and every output it lists exists with
    the size it had when written.
    """
    f = out_dir / RESULT_FILE
    try:
        rec = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("row"), dict):
        return None
    row = rec["row"]
    if row.get("status") != "ok":
        return None
    if digest is not None and rec.get("config_digest") != digest:
        return None
    if inputs is not None and rec.get("inputs") != inputs:
        return None
    outputs = rec.get("outputs")
    if not isinstance(outputs, dict) or not outputs:
        return None
    for name, size in outputs.items():
        p = out_dir / name
        try:
            if p.stat().st_size != size:
                return None
        except OSError:
            return None
    return row


# --------------------------------------------------------------------------- one case


def _set_numba_threads(n: int | None) -> None:
    if not n:
        return
    try:
        import numba

        numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    except Exception:  # pragma: no cover - numba refuses (threading layer) or is absent
        pass


def _dask_worker_threads() -> int | None:
    """Numba threads for a task running on a Dask worker: the machine's cores / the worker's threads."""
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import get_worker

        w = get_worker()
    except (ImportError, ValueError):
        return None
    nthreads = getattr(getattr(w, "state", None), "nthreads", None) or getattr(w, "nthreads", 1) or 1
    return max(1, available_cores() // int(nthreads))


def _measure(out_dir: Path, outputs: Mapping[str, Path], info: Mapping[str, Any]) -> dict[str, Any]:
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


def run_case(case_dir: str | os.PathLike, out_root: str | os.PathLike, config_dict: Mapping[str, Any],
             numba_threads: int | None = None) -> dict[str, Any]:
    """Segment one case folder into ``out_root/<case>``; never raises for a bad case.

    Returns the report row: ``case_id``, ``status`` (``ok``/``failed``), ``error`` (the reason,
    one line), ``seconds``, metric columns and quality-control measurements. Private keys
    ``_traceback`` and ``_warnings`` carry details for the run log.
    """
    from .pipeline import segment_case
    from .report.tables import write_json

    case_dir = Path(case_dir)
    out_root = Path(out_root)
    name = case_name(case_dir)
    t0 = time.perf_counter()
    row: dict[str, Any] = {"case_id": name, "status": "ok", "error": ""}
    _set_numba_threads(numba_threads or _dask_worker_threads())
    staging = out_root / f"{_STAGING}{name}-{uuid.uuid4().hex[:8]}"
    caught: list[str] = []
    try:
        config = config_from_dict(dict(config_dict))
        inputs = _input_fingerprint(case_dir)
        with warnings.catch_warnings(record=True) as wlist:
            warnings.simplefilter("always")
            result = segment_case(case_dir, config, staging)
        caught = sorted({f"{w.category.__name__}: {w.message}" for w in wlist})
        row.update(result.metrics)
        row.update(_measure(staging, result.outputs, result.info))
        mix = result.info.get("mixture")
        if isinstance(mix, dict) and "converged" in mix:
            row["converged"] = bool(mix["converged"])
        row["seconds"] = round(time.perf_counter() - t0, 3)
        outputs = {
            str(Path(p).relative_to(staging)): Path(p).stat().st_size
            for p in result.outputs.values() if Path(p).is_file()
        }
        write_json(
            {"row": row, "outputs": outputs, "config_digest": config_digest(config), "inputs": inputs,
             "warnings": caught, "segment_version": __version__, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")},
            staging / RESULT_FILE,
        )
        _publish(staging, out_root / name)
    except SegmentError as exc:
        row.update(status="failed", error=_one_line(str(exc)))
    except Exception as exc:  # a bug or an unexpected library error: keep going, keep the reason
        row.update(status="failed", error=_one_line(f"{type(exc).__name__}: {exc}"))
        row["_traceback"] = traceback.format_exc()
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    row["seconds"] = round(time.perf_counter() - t0, 3)
    if caught:
        row["_warnings"] = caught
    return row


def _one_line(msg: str) -> str:
    return " ".join(msg.split())


def _publish(staging: Path, final: Path) -> None:
    """Move a finished staging folder to its final name, replacing an older result."""
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f"{_TRASH}{final.name}-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _clean_stale(out_root: Path) -> list[str]:
    """Remove staging and replaced folders left by an interrupted run; return their names."""
    gone = []
    if out_root.is_dir():
        for d in out_root.iterdir():
            if d.is_dir() and d.name.startswith((_STAGING, _TRASH)):
                shutil.rmtree(d, ignore_errors=True)
                gone.append(d.name)
    return gone


# --------------------------------------------------------------------------- quality flags


def qc_flags(row: Mapping[str, Any], qc: QCConfig | None = None) -> list[str]:
    """Review flags of one report row (``failed``, brain volume, empty class, tumor at the edge ...)."""
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
    return flags


# --------------------------------------------------------------------------- progress and log


class _RunLog:
    """``OUT/run.log``: timestamped lines, appended by every run (line-buffered)."""

    def __init__(self, path: Path | None):
        self._fh = open(path, "a", encoding="utf-8", buffering=1) if path is not None else None

    def __call__(self, msg: str) -> None:
        if self._fh is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            for i, line in enumerate(msg.rstrip("\n").splitlines() or [""]):
                self._fh.write(f"{stamp} {line}\n" if i == 0 else f"    {line}\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _terminal(stream) -> bool:
    """True for an interactive terminal with a size (a pty without one, as in some CI, gets plain lines)."""
    try:
        if not stream.isatty():
            return False
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return size.columns > 0 and size.lines > 0


class _Progress:
    """A tqdm bar with ETA on a terminal; plain lines on stderr otherwise (logs, CI, pipes)."""

    def __init__(self, total: int, enabled: bool | None = None, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.total = total
        self.done = 0
        self.t0 = time.perf_counter()
        self.bar = None
        self.quiet = enabled is False
        if total and enabled is not False and _terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="case", file=self.stream, dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]")

    def step(self, row: Mapping[str, Any]) -> None:
        self.done += 1
        msg = f"{row['case_id']}: {row['status']}"
        if row["status"] != "ok":
            msg += f" ({row.get('error', '')})"
        if self.bar is not None:
            self.bar.set_postfix_str(str(row["case_id"])[:24], refresh=False)
            if row["status"] != "ok":
                self.bar.write(msg, file=self.stream)
            self.bar.update(1)
        elif not self.quiet:
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / self.done * (self.total - self.done)
            print(f"[{self.done}/{self.total}] {msg}  elapsed {elapsed:.0f} s, eta {eta:.0f} s",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------- executors


@contextlib.contextmanager
def _thread_env(threads: int) -> Iterator[None]:
    """Environment inherited by spawned workers: each numerical library uses ``threads`` threads."""
    saved = {k: os.environ.get(k) for k in _THREAD_ENV}
    try:
        for k in _THREAD_ENV:
            os.environ[k] = str(threads)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _worker_init(numba_threads: int) -> None:
    # Ctrl-C reaches the whole process group; the parent handles it and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_numba_threads(numba_threads)


def _run_serial(todo: list[Path], out_root: Path, cfg: dict, threads: int,
                on_row: Callable[[Path, dict], None]) -> None:
    prev = None
    try:
        import numba

        prev = numba.get_num_threads()
    except Exception:  # pragma: no cover
        pass
    try:
        for d in todo:
            on_row(d, run_case(d, out_root, cfg, threads))
    finally:
        _set_numba_threads(prev)


def _run_pool(todo: list[Path], out_root: Path, cfg: dict, n_workers: int, threads: int,
              on_row: Callable[[Path, dict], None]) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with _thread_env(threads):
        pool = ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn"),
                                   initializer=_worker_init, initargs=(threads,))
        futs = {pool.submit(run_case, str(d), str(out_root), cfg, threads): d for d in todo}
    try:
        for fut in as_completed(futs):
            d = futs[fut]
            try:
                row = fut.result()
            except Exception as exc:  # the worker process died (out of memory, a crash in C code)
                row = {"case_id": case_name(d), "status": "failed", "seconds": None,
                       "error": _one_line(f"worker process died ({type(exc).__name__}: {exc}); "
                                          "out of memory? try fewer --workers")}
            on_row(d, row)
    except BaseException:
        # Ctrl-C (or a bug here): stop now; cases in flight leave only staging folders, removed later
        procs = list((getattr(pool, "_processes", None) or {}).values())
        for p in procs:
            with contextlib.suppress(Exception):
                p.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            with contextlib.suppress(Exception):
                p.join(5)
        raise
    else:
        pool.shutdown(wait=True)


def _run_dask(todo: list[Path], out_root: Path, cfg: dict, scheduler: str, threads: int | None,
              on_row: Callable[[Path, dict], None], log: Callable[[str], None]) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise BatchUsageError(
            "--scheduler needs Dask distributed, which is not installed: pip install 'segment[distributed]'"
        ) from None
    try:
        client = Client(scheduler, timeout="15s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise BatchUsageError(f"cannot connect to the Dask scheduler at {scheduler}: {_one_line(str(exc))}") from None
    futs = {}
    try:
        info = client.scheduler_info()
        nw = len(info.get("workers", {}))
        log(f"dask scheduler {scheduler}: {nw} workers, "
            f"{sum(w.get('nthreads', 0) for w in info.get('workers', {}).values())} threads")
        tag = uuid.uuid4().hex[:8]
        for d in todo:
            fut = client.submit(run_case, str(d), str(out_root), cfg, threads, key=f"segment-{case_name(d)}-{tag}", pure=False)
            futs[fut] = d
        for fut in as_completed(list(futs), loop=client.loop):
            d = futs[fut]
            try:
                row = fut.result()
            except Exception as exc:  # the worker died or the task was lost
                row = {"case_id": case_name(d), "status": "failed", "seconds": None,
                       "error": _one_line(f"dask task failed ({type(exc).__name__}: {exc})")}
            on_row(d, row)
    except BaseException:
        for fut in futs:
            with contextlib.suppress(Exception):
                fut.cancel()
        raise
    finally:
        with contextlib.suppress(Exception):
            client.close(timeout=10)


# --------------------------------------------------------------------------- the batch


@dataclass
class BatchReport:
    """What :func:`run_batch` (or :func:`evaluate_folders`) did."""

    out: Path
    rows: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def n_failed(self) -> int:
        return sum(1 for r in self.rows if r.get("status") != "ok")

    @property
    def n_ok(self) -> int:
        return len(self.rows) - self.n_failed

    @property
    def exit_code(self) -> int:
        """130 when interrupted, 1 when any case failed, else 0."""
        return 130 if self.interrupted else (1 if self.n_failed else 0)


def metric_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Numeric columns of the rows other than the leading ones, in order of first appearance:
    metrics against ground truth first, then quality-control measurements."""
    seen: dict[str, None] = {}
    for r in rows:
        for k, v in r.items():
            if k in _NON_METRIC or k.startswith("_") or k == "converged":
                continue
            if as_number(v) is not None:
                seen.setdefault(k, None)
    cols = list(seen)
    qc = [c for c in cols if c.startswith(QC_PREFIXES)]
    return [c for c in cols if c not in qc] + qc


def write_reports(rows: list[dict[str, Any]], out_root: Path, *, title: str,
                  qc: QCConfig | None = None, links: Mapping[str, str] | None = None,
                  image_name: str | None = "overlay.png") -> list[dict[str, Any]]:
    """Write ``report.csv``, ``summary.csv`` and ``index.html`` for the rows; return the clean rows."""
    from .report.html import write_index
    from .report.tables import summarize, write_csv

    clean = []
    for r in rows:
        c = {k: v for k, v in r.items() if not k.startswith("_") and k != "converged"}
        if "flags" not in c:
            c["flags"] = "; ".join(qc_flags(r, qc))
        clean.append(c)
    cols = metric_columns(clean)
    ordered = [{**{k: c.get(k) for k in LEADING_COLUMNS},
                **{k: v for k, v in c.items() if k not in LEADING_COLUMNS and k not in cols},
                **{k: c.get(k) for k in cols}} for c in clean]
    _publish_mode(write_csv(ordered, out_root / "report.csv", leading=LEADING_COLUMNS))
    summary = summarize([r for r in clean if r.get("status") == "ok"], cols)
    _publish_mode(write_csv(summary, out_root / "summary.csv", leading=["metric"]))
    _publish_mode(write_index(ordered, out_root / "index.html", title=title, summary=summary,
                              links=links or {}, image_name=image_name))
    return ordered


def _publish_mode(path: Path) -> Path:
    """Give a report file the usual permissions (temporary files are created private)."""
    with contextlib.suppress(OSError):
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(path, 0o666 & ~umask)
    return path


def run_batch(
    input_root: str | os.PathLike,
    out_root: str | os.PathLike,
    config: Config | None = None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    force: bool | None = None,
    numba_threads: int | None = None,
    progress: bool | None = None,
) -> BatchReport:
    """Segment every case folder under ``input_root`` into ``out_root``.

    Parameters
    ----------
    input_root : folder of case folders (any layout :func:`segment.io.cases.find_case` reads)
    out_root : output folder (created)
    config : Config, optional
        Pipeline settings; its ``batch`` section gives the defaults of the keyword arguments.
    workers : int, optional
        Local worker processes (default ``config.batch.workers``, else the number of cores).
        One worker runs the cases in this process.
    scheduler : str, optional
        Dask scheduler address (``tcp://host:port``); the cases then run on that cluster, which
        must see ``input_root`` and ``out_root`` at the same paths (a shared file system).
    force : bool, optional
        Redo cases whose outputs are already complete.
    numba_threads : int, optional
        Numba threads per worker (default: cores // workers; on Dask: the worker machine's cores
        // the worker's threads).
    progress : bool, optional
        None: a progress bar on a terminal, plain lines otherwise; False: silent.

    Returns
    -------
    BatchReport
        ``rows`` in case order; ``exit_code`` is 0 (all ok), 1 (any failed) or 130 (interrupted).

    Raises
    ------
    BatchUsageError
        No case folders under ``input_root``, Dask missing or its scheduler unreachable.
    """
    import yaml

    from .report.tables import atomic_write_text

    t_start = time.perf_counter()
    config = config or Config()
    bc = config.batch
    workers = workers or bc.workers
    scheduler = scheduler or bc.scheduler
    force = bc.force if force is None else force
    numba_threads = numba_threads or bc.numba_threads
    out_root = Path(out_root).absolute()
    case_dirs = [d.absolute() for d in find_case_dirs(input_root, exclude=[out_root])]
    out_root.mkdir(parents=True, exist_ok=True)
    lock = _lock(out_root)
    runlog = _RunLog(out_root / "run.log")
    try:
        runlog(f"segment {__version__} batch: input {Path(input_root).absolute()}, out {out_root}, "
               f"{len(case_dirs)} cases, pid {os.getpid()}")
        stale = _clean_stale(out_root)
        if stale:
            runlog(f"removed {len(stale)} unfinished folder(s) of an interrupted run: {', '.join(sorted(stale))}")
        cfg = config.to_dict()
        _publish_mode(atomic_write_text(out_root / "config.yaml",
                                        "# resolved configuration of this batch (segment batch --config this-file)\n"
                                        + yaml.safe_dump(cfg, sort_keys=False)))
        digest = config_digest(cfg)
        rows: dict[str, dict[str, Any]] = {}
        todo: list[Path] = []
        skipped: list[str] = []
        for d in case_dirs:
            prev = None
            if not force:
                try:
                    prev = completed_row(out_root / case_name(d), digest, _input_fingerprint(d))
                except OSError:
                    prev = None
            if prev is not None:
                rows[case_name(d)] = prev
                skipped.append(case_name(d))
            else:
                todo.append(d)
        if skipped:
            runlog(f"skipped {len(skipped)} complete case(s): {', '.join(skipped)}")

        cores = available_cores()
        n_workers = max(1, min(workers or cores, len(todo) or 1))
        threads = numba_threads or max(1, cores // n_workers)
        where = f"dask {scheduler}" if scheduler else (
            "this process" if n_workers == 1 else f"{n_workers} worker processes")
        runlog(f"running {len(todo)} case(s) on {where}, numba threads per worker: "
               f"{numba_threads or ('auto' if scheduler else threads)}")
        bar = _Progress(len(todo), progress)

        def on_row(d: Path, row: dict[str, Any]) -> None:
            rows[case_name(d)] = row
            msg = f"{row['case_id']}: {row['status']} in {row.get('seconds') or 0:.1f} s"
            if row["status"] != "ok":
                msg += f": {row.get('error', '')}"
            for w in row.get("_warnings", []):
                msg += f"\nwarning: {w}"
            if row.get("_traceback"):
                msg += "\n" + row["_traceback"]
            runlog(msg)
            bar.step(row)

        interrupted = False
        try:
            if not todo:
                pass
            elif scheduler:
                _run_dask(todo, out_root, cfg, scheduler, numba_threads, on_row, runlog)
            elif n_workers == 1:
                _run_serial(todo, out_root, cfg, threads, on_row)
            else:
                _run_pool(todo, out_root, cfg, n_workers, threads, on_row)
        except KeyboardInterrupt:
            interrupted = True
            runlog("interrupted (Ctrl-C): stopping; the report lists what finished")
        finally:
            bar.close()
            if interrupted:
                _clean_stale(out_root)
        report_rows = []
        for d in case_dirs:
            r = rows.get(case_name(d))
            if r is None:
                r = {"case_id": case_name(d), "status": "failed", "error": "interrupted before this case finished",
                     "seconds": None}
            report_rows.append(r)
        ordered = write_reports(report_rows, out_root, title=f"segment batch: {Path(input_root).name or input_root}",
                                qc=bc.qc, links=_links(out_root))
        report = BatchReport(out_root, ordered, skipped, interrupted, time.perf_counter() - t_start)
        runlog(f"done in {report.seconds:.1f} s: {report.n_ok} ok, {report.n_failed} failed"
               + (f" ({len(skipped)} skipped as complete)" if skipped else "")
               + (", interrupted" if interrupted else ""))
        return report
    finally:
        runlog.close()
        with contextlib.suppress(OSError):
            lock.unlink()


_LOCK = ".segment-batch.lock"


def _lock(out_root: Path) -> Path:
    """Claim ``out_root`` for this run: two batches writing one folder would remove each other's work.

    A lock left by a process that no longer runs (killed with SIGKILL, machine restarted) is taken over.
    """
    path = out_root / _LOCK
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(path.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pid = -1
            if pid > 0 and pid != os.getpid() and _alive(pid):
                raise BatchUsageError(
                    f"{out_root}: another segment batch (pid {pid}) is writing here; wait for it or "
                    f"choose another --out (remove {path.name} if that process is gone)"
                ) from None
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        return path
    raise BatchUsageError(f"{out_root}: cannot create {path.name}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # pragma: no cover
        return False
    return True


def _links(out_root: Path) -> dict[str, str]:
    return {name: name for name in ("report.csv", "summary.csv", "config.yaml", "run.log")}


# --------------------------------------------------------------------------- evaluate folders

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
    from .io.cases import classify_file, tokens

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

    from .io.nifti import load_volume, same_grid
    from .metrics import evaluate_brats, evaluate_labels, map_tumor_labels
    from .types import TISSUE_LABELS, TISSUE_TUMOR_LABEL

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
                    m = evaluate_pair(pp, gp, k, expect=expect)
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
                row.update(status="failed", error=_one_line(str(exc)))
            except Exception as exc:  # keep going, keep the reason
                row.update(status="failed", error=_one_line(f"{type(exc).__name__}: {exc}"))
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
