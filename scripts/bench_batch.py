"""Batch scaling: throughput of `segment batch` over phantom cases with 1 and 2 workers.

Writes N phantom cases (default 8, 96x112x96 at 2 mm, four modalities with tissue ground truth),
warms the Numba cache with one case, then runs the whole batch once per worker count into a fresh
output folder and prints wall time, throughput (cases per minute) and the speed-up ratio.

    .venv/bin/python scripts/bench_batch.py                 # 8 cases, 1 and 2 workers
    .venv/bin/python scripts/bench_batch.py --cases 8 --workers 1 2 --shape 96 112 96

The machine's load average is printed before and after: on a shared machine other jobs take cores
and lower the ratio, so read it together with the load.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segment.batch import available_cores, run_batch  # noqa: E402
from segment.config import load_config  # noqa: E402
from segment.phantom import write_phantom_cases  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--shape", type=int, nargs=3, default=[96, 112, 96])
    ap.add_argument("--config", type=Path, default=None, help="pipeline config (default: the defaults)")
    ap.add_argument("--keep", type=Path, default=None, help="write cases and outputs here and keep them")
    args = ap.parse_args(argv)

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_batch_"))
    work.mkdir(parents=True, exist_ok=True)
    config = load_config(args.config)
    try:
        cases = work / "cases"
        if cases.exists():
            shutil.rmtree(cases)
        t = time.perf_counter()
        write_phantom_cases(cases, n=args.cases, shape=tuple(args.shape))
        print(f"wrote {args.cases} phantom cases {tuple(args.shape)} in {time.perf_counter() - t:.1f} s")

        warm = work / "warm"
        warm_in = work / "warm_in"
        warm_in.mkdir(exist_ok=True)
        shutil.copytree(cases / "phantom_0", warm_in / "phantom_0", dirs_exist_ok=True)
        t = time.perf_counter()
        run_batch(warm_in, warm, config, workers=1, force=True, progress=False)
        print(f"warm-up (Numba cache, imports): 1 case in {time.perf_counter() - t:.1f} s")

        print(f"machine: {available_cores()} cores, {platform.processor() or platform.machine()}, "
              f"Python {platform.python_version()}; load average before: {_load()}")
        results = {}
        for w in args.workers:
            out = work / f"out_w{w}"
            if out.exists():
                shutil.rmtree(out)
            t = time.perf_counter()
            rep = run_batch(cases, out, config, workers=w, force=True, progress=False)
            wall = time.perf_counter() - t
            per_case = sorted(float(r["seconds"]) for r in rep.rows if r.get("seconds") not in (None, ""))
            results[w] = wall
            print(f"workers={w}: {rep.n_ok}/{len(rep.rows)} ok in {wall:.1f} s -> "
                  f"{60 * len(rep.rows) / wall:.1f} cases/min (median case {per_case[len(per_case) // 2]:.1f} s); "
                  f"load average after: {_load()}")
        if len(results) > 1:
            base = min(results)
            for w in sorted(results):
                if w != base:
                    print(f"throughput ratio {w} vs {base} worker(s): {results[base] / results[w]:.2f}x")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


if __name__ == "__main__":
    sys.exit(main())
