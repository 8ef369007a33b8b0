"""Many cases: a local process pool, one row per case, failures recorded and the rest going on.

Each finished case leaves ``OUT/<case>/result.json`` (written last, atomically); a rerun skips a
case whose ``result.json`` and listed outputs exist, unless ``force``.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from .config import Config, config_from_dict
from .errors import InputError, SegmentError
from .io.nifti import is_nifti_name

log = logging.getLogger("segment")

LEADING_COLUMNS = ["case_id", "status", "error", "seconds"]


def find_case_dirs(root: str | os.PathLike) -> list[Path]:
    """Sub-folders of ``root`` that hold at least one NIfTI file, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: input folder not found")
    dirs = [
        d for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith(".")
        and any(is_nifti_name(f.name) or f.suffix.lower() in {".gz", ".nii"} for f in d.iterdir())
    ]
    if not dirs:
        raise InputError(f"{root}: no case folders with NIfTI files found")
    return dirs


def _done(out_dir: Path) -> dict[str, Any] | None:
    f = out_dir / "result.json"
    if not f.is_file():
        return None
    try:
        row = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    if row.get("status") != "ok":
        return None
    if not all(Path(out_dir / p).is_file() for p in row.get("outputs", [])):
        return None
    return row


def _worker_init(numba_threads: int) -> None:
    try:
        import numba

        numba.set_num_threads(max(1, min(numba_threads, numba.config.NUMBA_NUM_THREADS)))
    except Exception:  # pragma: no cover - numba absent or threading layer refuses
        pass


def run_one(case_dir: str, out_root: str, config_dict: dict[str, Any]) -> dict[str, Any]:
    """Segment one case folder; never raises: failures become a row with status ``failed``."""
    from .pipeline import segment_case

    case_dir_p = Path(case_dir)
    out_dir = Path(out_root) / case_dir_p.name
    t0 = time.perf_counter()
    row: dict[str, Any] = {"case_id": case_dir_p.name, "status": "ok", "error": ""}
    try:
        config = config_from_dict(config_dict)
        result = segment_case(case_dir_p, config, out_dir)
        row.update({f"{k}": v for k, v in result.metrics.items()})
        row["brain_volume_ml"] = round(float(result.info.get("brain_volume_ml", 0.0)), 2)
        outputs = sorted(str(p.relative_to(out_dir)) for p in result.outputs.values())
        row["seconds"] = round(time.perf_counter() - t0, 3)
        from .report.tables import write_json

        write_json({**row, "outputs": outputs}, out_dir / "result.json")
    except SegmentError as exc:
        row.update(status="failed", error=str(exc))
    except Exception as exc:  # a bug or an unexpected library error: keep going, keep the reason
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        log.debug("case %s failed:\n%s", case_dir_p.name, traceback.format_exc())
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


def run_batch(
    input_root: str | os.PathLike,
    out_root: str | os.PathLike,
    config: Config | None = None,
    *,
    workers: int | None = None,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Segment every case folder under ``input_root`` into ``out_root``.

    Writes ``report.csv`` (one row per case), ``summary.csv`` (statistics per metric) and
    ``config.yaml`` (the resolved configuration) into ``out_root``.

    Returns
    -------
    list of dict
        The report rows, in case order.
    """
    import yaml

    from .report.tables import summarize, write_csv

    config = config or Config()
    out_root = Path(out_root)
    case_dirs = find_case_dirs(input_root)
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    cfg = config.to_dict()
    rows: dict[str, dict[str, Any]] = {}
    todo: list[Path] = []
    for d in case_dirs:
        prev = None if force else _done(out_root / d.name)
        if prev is not None:
            prev.pop("outputs", None)
            prev["skipped"] = True
            rows[d.name] = prev
        else:
            todo.append(d)
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    progress = _progress(len(todo))
    if n_workers == 1:
        _worker_init(threads)
        for d in todo:
            rows[d.name] = run_one(str(d), str(out_root), cfg)
            progress(rows[d.name])
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(
            n_workers, mp_context=mp.get_context("spawn"), initializer=_worker_init, initargs=(threads,)
        ) as pool:
            futs = {pool.submit(run_one, str(d), str(out_root), cfg): d for d in todo}
            for fut in as_completed(futs):
                d = futs[fut]
                try:
                    rows[d.name] = fut.result()
                except Exception as exc:  # worker died (e.g. out of memory)
                    rows[d.name] = {"case_id": d.name, "status": "failed", "error": f"worker died: {exc}"}
                progress(rows[d.name])
    report = [rows[d.name] for d in case_dirs]
    write_csv(report, out_root / "report.csv", leading=LEADING_COLUMNS)
    metric_cols = sorted({k for r in report for k, v in r.items()
                          if k not in LEADING_COLUMNS and k != "skipped" and isinstance(v, (int, float))})
    write_csv(summarize(report, metric_cols), out_root / "summary.csv", leading=["metric"])
    return report


def _progress(total: int):
    state = {"done": 0, "t0": time.perf_counter()}

    def step(row: dict[str, Any]) -> None:
        state["done"] += 1
        elapsed = time.perf_counter() - state["t0"]
        eta = elapsed / state["done"] * (total - state["done"])
        msg = f"[{state['done']}/{total}] {row['case_id']}: {row['status']}"
        if row["status"] == "failed":
            msg += f" ({row['error']})"
        msg += f"  elapsed {elapsed:.0f}s, eta {eta:.0f}s"
        print(msg, file=sys.stderr, flush=True)

    return step
