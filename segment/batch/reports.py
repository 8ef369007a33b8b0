"""What a batch reports: quality flags per row, the run log, progress, report.csv/summary.csv/index.html."""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import QCConfig
from ..publish import public_mode
from ..qc import qc_flags
from ..report.tables import as_number

__all__ = ["BatchReport", "LEADING_COLUMNS", "QC_PREFIXES", "metric_columns", "qc_flags", "write_reports"]

#: First columns of ``report.csv``, in order; metric columns follow.
LEADING_COLUMNS = ["case_id", "status", "error", "seconds", "flags"]
#: Quality-control measurements stored in each row (not metrics against ground truth).
QC_PREFIXES = ("brain_volume_ml", "volume_ml_", "fraction_", "tumor_edge_fraction", "tumor_volume_ml")
_NON_METRIC = set(LEADING_COLUMNS) | {"kind"}

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
    from ..report.html import write_index
    from ..report.tables import summarize, write_csv

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
    public_mode(write_csv(ordered, out_root / "report.csv", leading=LEADING_COLUMNS))
    summary = summarize([r for r in clean if r.get("status") == "ok"], cols)
    public_mode(write_csv(summary, out_root / "summary.csv", leading=["metric"]))
    public_mode(write_index(ordered, out_root / "index.html", title=title, summary=summary,
                              links=links or {}, image_name=image_name))
    return ordered

