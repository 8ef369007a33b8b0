"""Running the cases of a batch: one case in a worker (never raises), serial, process pool or Dask.

Workers die with their parent: each pool worker watches its parent process and exits when it is
gone (the parent killed with SIGKILL), so no orphan keeps computing or idling.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..config import config_from_dict
from ..errors import InputError, SegmentError
from ..types import Case
from .discovery import BatchUsageError, case_name, case_root, input_fingerprint

__all__ = ["available_cores", "run_case"]

#: Environment variables that size thread pools of numerical libraries in worker processes.
_THREAD_ENV = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def available_cores() -> int:
    """Cores this process may use (CPU affinity where the OS reports it, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def failure_message(exc: BaseException, case: Path) -> str:
    """One line for an unexpected error of a case, naming the file (or the case folder)."""
    if isinstance(exc, MemoryError):
        return one_line(f"{case}: out of memory while segmenting this case; try fewer --workers, "
                        "or check the image size its header claims")
    if isinstance(exc, OSError):
        where = exc.filename or case
        what = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or type(exc).__name__)
        return one_line(f"{where}: {what} ({type(exc).__name__}: {exc})")
    return one_line(f"{case}: {type(exc).__name__}: {exc}")


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


def run_case(case_dir: str | os.PathLike, out_root: str | os.PathLike, config_dict: Mapping[str, Any],
             numba_threads: int | None = None) -> dict[str, Any]:
    """Segment one case folder into ``out_root/<case>`` with :func:`segment.publish.write_case`;
    never raises for a bad case.

    Returns the report row: ``case_id``, ``status`` (``ok``/``failed``), ``error`` (the reason,
    one line naming the file), ``seconds``, metric columns, quality-control measurements and
    ``flags``. Private keys ``_traceback`` and ``_warnings`` carry details for the run log.
    """
    from ..publish import write_case

    case_dir = case_dir if isinstance(case_dir, Case) else Path(case_dir)
    name = case_name(case_dir)
    t0 = time.perf_counter()
    row: dict[str, Any] = {"case_id": name, "status": "ok", "error": ""}
    _set_numba_threads(numba_threads or _dask_worker_threads())
    caught: list[str] = []
    outer: list = []
    try:
        # every warning of this case (also from reading its files) goes to the run log with the
        # case's name, never bare to the worker's stderr
        with warnings.catch_warnings(record=True) as outer:
            warnings.simplefilter("always")
            config = config_from_dict(dict(config_dict))
            if isinstance(case_dir, Case) and not case_dir.images and case_dir.root is not None:
                from ..io.cases import find_case

                find_case(case_dir.root)  # raises the finder's one-line reason (no image of a known name)
                raise InputError(f"{case_dir.root}: no T1w, T2w or FLAIR image with a BIDS name")
            inputs = input_fingerprint(case_dir)
            _, row, caught = write_case(case_dir, config, out_root, name=name, inputs=inputs)
    except SegmentError as exc:
        row.update(status="failed", error=one_line(str(exc)))
    except Exception as exc:  # a bug or an unexpected library error: keep going, keep the reason
        row.update(status="failed", error=failure_message(exc, case_root(case_dir) or Path(name)))
        row["_traceback"] = traceback.format_exc()
    row["seconds"] = round(time.perf_counter() - t0, 3)
    caught = list(dict.fromkeys([*caught, *(f"{w.category.__name__}: {w.message}" for w in outer or [])]))
    if caught:
        row["_warnings"] = caught
    return row


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


def _worker_init(numba_threads: int, parent_pid: int | None = None) -> None:
    # Ctrl-C reaches the whole process group; the parent handles it and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM ends a worker at once (the parent sends it when it stops the batch)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _set_numba_threads(numba_threads)
    if parent_pid is not None:
        _watch_parent(parent_pid)


def _watch_parent(parent_pid: int, interval: float = 0.5) -> threading.Thread:
    """Exit this process as soon as ``parent_pid`` is no longer its parent (the parent died,
    e.g. killed with SIGKILL): a worker never outlives its batch."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(70)
            time.sleep(interval)

    t = threading.Thread(target=watch, name="segment-parent-watch", daemon=True)
    t.start()
    return t


def _job(d: Path | Case) -> str | Case:
    """What a worker receives: a case folder's path, or the Case a discovery found (picklable)."""
    return d if isinstance(d, Case) else str(d)


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
                                   initializer=_worker_init, initargs=(threads, os.getpid()))
        futs = {pool.submit(run_case, _job(d), str(out_root), cfg, threads): d for d in todo}
    try:
        for fut in as_completed(futs):
            d = futs[fut]
            try:
                row = fut.result()
            except Exception as exc:  # the worker process died (out of memory, a crash in C code)
                row = {"case_id": case_name(d), "status": "failed", "seconds": None,
                       "error": one_line(f"worker process died ({type(exc).__name__}: {exc}); "
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
        raise BatchUsageError(f"cannot connect to the Dask scheduler at {scheduler}: {one_line(str(exc))}") from None
    futs = {}
    try:
        info = client.scheduler_info()
        nw = len(info.get("workers", {}))
        log(f"dask scheduler {scheduler}: {nw} workers, "
            f"{sum(w.get('nthreads', 0) for w in info.get('workers', {}).values())} threads")
        tag = uuid.uuid4().hex[:8]
        for d in todo:
            fut = client.submit(run_case, _job(d), str(out_root), cfg, threads, key=f"segment-{case_name(d)}-{tag}",
                                pure=False)
            futs[fut] = d
        for fut in as_completed(list(futs), loop=client.loop):
            d = futs[fut]
            try:
                row = fut.result()
            except Exception as exc:  # the worker died or the task was lost
                row = {"case_id": case_name(d), "status": "failed", "seconds": None,
                       "error": one_line(f"dask task failed ({type(exc).__name__}: {exc})")}
            on_row(d, row)
    except BaseException:
        for fut in futs:
            with contextlib.suppress(Exception):
                fut.cancel()
        raise
    finally:
        with contextlib.suppress(Exception):
            client.close(timeout=10)

