"""What the seed changes: labels of seeds 1 and 2 against seed 0 on real scans and sample cases.

    .venv/bin/python scripts/seed_effect.py                     # ../shared/data + sample_data
    .venv/bin/python scripts/seed_effect.py CASE_DIR [CASE_DIR ...]

For each case, ``run_pipeline`` (default config, overlay off) with ``--seed`` 0, 1, 2, and the
share of brain voxels whose tissue label differs from seed 0's, the share of seed 0's tumor
voxels whose tumor label differs, whether the brain mask is identical, and whether the
partial-volume model was used. Prints a Markdown table (the numbers behind the ``seed`` note of
``configs/tissue.yaml``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segment.config import load_config  # noqa: E402
from segment.pipeline import run_pipeline  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
DEFAULT = [DATA / "mni152", DATA / "brats_glioma", DATA / "tcia_raw",
           ROOT / "sample_data" / "BraTS-GLI-demo-000", ROOT / "sample_data" / "tcga_fg_6692_small"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", type=Path, help="case folders (default: the real scans and sample cases)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args(argv)
    cases = [c for c in (args.cases or DEFAULT) if c.is_dir()]
    print("| case | seed | tissue labels differing (% of brain) | tumor labels differing (% of tumor) "
          "| same brain mask | partial-volume model used |")
    print("|---|---|---|---|---|---|")
    for case in cases:
        res = {}
        for seed in args.seeds:
            seg = run_pipeline(case, load_config(None, {"seed": seed, "outputs": {"overlay": False}}))
            pv = seg.info.get("mixture", {}).get("partial_volume", {}).get("used")
            res[seed] = (seg.tissue, seg.tumor, seg.brain_mask, pv)
        t0, u0, m0, _ = res[args.seeds[0]]
        for seed in args.seeds:
            t, u, m, pv = res[seed]
            d = 100 * np.count_nonzero(t[m0] != t0[m0]) / max(int(m0.sum()), 1)
            du = "" if u0 is None or u is None else f"{100 * np.count_nonzero(u != u0) / max(1, np.count_nonzero(u0)):.3f}"
            print(f"| {case.name} | {seed} | {d:.4f} | {du} | {np.array_equal(m, m0)} | {pv} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
