"""Seconds the case records (volumes.csv, provenance.json, segment.log, QC measures) add to a run.

    .venv/bin/python scripts/bench_records.py [CASE_DIR]    # default ../shared/data/brats_glioma

Runs the pipeline once in memory, then times ``write_outputs`` (label maps, overlay),
``write_case_records`` (QC measures read back from the maps, volumes, flags, provenance with
the inputs' SHA-256, log) and ``build_provenance`` alone.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segment.config import Config  # noqa: E402
from segment.pipeline import run_pipeline, write_outputs  # noqa: E402
from segment.report.provenance import CaseLog, build_provenance, write_case_records  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    case = Path(argv[0]) if argv else ROOT.parent / "shared" / "data" / "brats_glioma"
    cfg = Config()
    with CaseLog() as cl, tempfile.TemporaryDirectory() as tmp:
        seg = run_pipeline(case, cfg)
        t = time.perf_counter()
        outs = write_outputs(seg, Path(tmp), cfg, {})
        t_out = time.perf_counter() - t
        t = time.perf_counter()
        write_case_records(seg, Path(tmp), cfg, caselog=cl, outputs=outs)
        t_rec = time.perf_counter() - t
        t = time.perf_counter()
        build_provenance(seg.loaded.case, cfg, loaded=seg.loaded, info=seg.info)
        t_prov = time.perf_counter() - t
    print(f"{case.name}: write_outputs {t_out:.2f} s; write_case_records {t_rec:.2f} s "
          f"(build_provenance with hashing {t_prov:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
