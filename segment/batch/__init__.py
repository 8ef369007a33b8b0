"""Many cases: a local process pool (or a Dask cluster), one report row per case.

:func:`run_batch` segments every case folder under a root folder into ``OUT/<case>/`` (the same
files as ``segment run``, written by the same writer, :func:`segment.publish.write_case`) and
writes, beside them::

    OUT/report.csv    one row per case: case_id, status (ok/failed), error, seconds, flags, metrics
    OUT/summary.csv   mean, std, median, IQR ... of every metric over the cases that succeeded
    OUT/index.html    self-contained review page (sortable table, overlays, quality flags)
    OUT/config.yaml   the resolved configuration, so the run can be reproduced
    OUT/run.log       one line per case and event, appended by every run

Faults. A case that fails (unreadable file, missing modality, any exception) becomes a failed row
with the reason and the others go on. Each case is written into a hidden staging folder and
published whole; only files segment wrote (listed in a case's ``result.json``) are ever replaced
or removed, and an output folder that is (or is inside) an input case folder is refused. A rerun
skips a case whose ``result.json`` records status ok, the same configuration and input files, and
outputs that are all present with their recorded sizes (``force`` redoes it). Ctrl-C or SIGTERM
stops the workers and still writes the report of what finished (unfinished cases are rows failed
with ``interrupted``); workers exit when their parent dies.

:func:`evaluate_folders` scores a folder of predictions against a folder of ground truths and
writes the same report, so results of other tools are scored the same way.

The package is split by job: :mod:`.discovery` (which cases), :mod:`.running` (one case, the
executors), :mod:`.resume` (complete cases, the lock), :mod:`.reports` (report files, progress),
:mod:`.evaluate` (folder scoring) and :mod:`.run` (the batch itself).
"""
from __future__ import annotations

from ..publish import MANIFEST as RESULT_FILE
from ..publish import config_digest
from ..qc import qc_flags
from .discovery import BatchUsageError, case_name, find_case_dirs, input_fingerprint
from .evaluate import evaluate_folders, evaluate_pair, guess_label_kind
from .reports import LEADING_COLUMNS, BatchReport, metric_columns, write_reports
from .resume import completed_row
from .run import run_batch
from .running import available_cores, run_case

__all__ = [
    "BatchReport",
    "BatchUsageError",
    "LEADING_COLUMNS",
    "RESULT_FILE",
    "available_cores",
    "case_name",
    "completed_row",
    "config_digest",
    "evaluate_folders",
    "evaluate_pair",
    "find_case_dirs",
    "guess_label_kind",
    "input_fingerprint",
    "metric_columns",
    "qc_flags",
    "run_batch",
    "run_case",
    "write_reports",
]
