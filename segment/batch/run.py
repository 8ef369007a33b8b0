"""The batch: every case of an input root into an output root, with reports, resume and a lock."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import Config
from ..publish import OutputError, check_output_root, clean_stale, config_digest, public_mode
from .discovery import BatchUsageError, case_name, case_root, find_case_dirs, input_fingerprint
from .reports import BatchReport, _Progress, _RunLog, write_reports
from .resume import completed_row, lock
from .running import _run_dask, _run_pool, _run_serial, available_cores

__all__ = ["run_batch"]


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
    cases: list | None = None,
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
    cases : list of Case, optional
        Cases already found (e.g. the sessions of a BIDS dataset, :mod:`segment.batch.bids`)
        instead of the case folders under ``input_root``.

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

    from ..report.tables import atomic_write_text

    t_start = time.perf_counter()
    config = config or Config()
    bc = config.batch
    workers = workers or bc.workers
    scheduler = scheduler or bc.scheduler
    force = bc.force if force is None else force
    numba_threads = numba_threads or bc.numba_threads
    out_root = Path(out_root).absolute()
    if cases is not None:
        case_dirs = list(cases)
        if not case_dirs:
            raise BatchUsageError(f"{input_root}: no cases to run")
    else:
        case_dirs = [d.absolute() for d in find_case_dirs(input_root, exclude=[out_root])]
    _check_out(out_root, case_dirs)
    lock_path = lock(out_root)
    runlog = _RunLog(out_root / "run.log")
    old_term = _on_sigterm_interrupt()
    try:
        runlog(f"segment {__version__} batch: input {Path(input_root).absolute()}, out {out_root}, "
               f"{len(case_dirs)} cases, pid {os.getpid()}")
        stale = clean_stale(out_root)
        if stale:
            runlog(f"removed {len(stale)} unfinished folder(s) of an interrupted run: {', '.join(sorted(stale))}")
        cfg = config.to_dict()
        public_mode(atomic_write_text(out_root / "config.yaml",
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
                    prev = completed_row(out_root / case_name(d), digest, input_fingerprint(d))
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
        if workers and workers > cores and not scheduler:
            msg = (f"{workers} workers requested but this machine has {cores} cores; using {cores} "
                   "(each worker holds a whole case in memory)")
            print(f"segment: warning: {msg}", file=sys.stderr)
            runlog(f"warning: {msg}")
            workers = cores
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
            runlog("interrupted (Ctrl-C or SIGTERM): stopping; the report lists what finished")
        finally:
            bar.close()
            if interrupted:
                clean_stale(out_root)
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
        _restore_sigterm(old_term)
        runlog.close()
        with contextlib.suppress(OSError):
            lock_path.unlink()


def _links(out_root: Path) -> dict[str, str]:
    return {name: name for name in ("report.csv", "summary.csv", "config.yaml", "run.log")}


def _check_out(out_root: Path, case_dirs: list[Path]) -> None:
    """Refuse an output root where a case's outputs would land in (or replace) an input case folder."""
    try:
        check_output_root(out_root, inputs=[r for r in map(case_root, case_dirs) if r is not None and r.is_dir()])
    except OutputError as exc:
        raise BatchUsageError(str(exc)) from None
    for c in case_dirs:
        d = case_root(c)
        if d is not None and d.is_dir() and os.path.realpath(out_root / case_name(c)) == os.path.realpath(d):
            raise BatchUsageError(
                f"{out_root}: is the input folder, so OUT/{case_name(c)} would be the input case folder "
                f"{d}; choose an --out outside the input data"
            )


def _on_sigterm_interrupt():
    """SIGTERM (``kill``, a scheduler's time limit) stops the batch as Ctrl-C does: workers are
    stopped, the report of what finished is written and the lock released."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # pragma: no cover - not the main thread of the interpreter
        return None


def _restore_sigterm(old) -> None:
    if old is not None:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signal.SIGTERM, old)
