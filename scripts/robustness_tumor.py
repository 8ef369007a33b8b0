#!/usr/bin/env python
"""Robustness of the tumor step to what held-out scans do differently: thick slices and noise.

Usage (from the repository root)::

    .venv/bin/python scripts/robustness_tumor.py [--data ../shared/data] [--baseline JSON] [--write]

(``--data`` defaults to ``../shared/data`` next to the repository root.)

Each BRATS 2013 case with manual labels (``DATA/brats2013``, FLAIR + T1c) is loaded, masked and
normalised as the pipeline does (``scripts/validate_tumor.py``'s ``prepare``), then degraded in
ways that keep its labels: axial slices averaged to 3 mm and to 5 mm (the labels take the middle
slice of each group), and Gaussian noise of 0.5 robust-z units added inside the brain. The
degraded features are z-scored again inside the (degraded) brain mask and ``segment_tumor`` runs
with the default ``TumorConfig``; WT / TC / ET Dice against the degraded labels. Nothing is tuned
here: a variant far below the 1 mm row points to a rule that is not general.

With ``--baseline '{"grow_mm": 40, ...}'`` every variant also runs with those ``TumorConfig``
fields changed (e.g. a previous version's defaults), in the same run. With ``--write`` the table
writes docs/validation_tumor_robustness.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from segment.config import Config, TumorConfig  # noqa: E402
from segment.labeling.tumor import segment_tumor  # noqa: E402
from segment.metrics import evaluate_brats  # noqa: E402
from segment.preprocess.normalize import robust_zscore  # noqa: E402
from validate_thick import thick  # noqa: E402
from validate_tumor import case_dirs, prepare, truth_of  # noqa: E402

TITLE = "# Tumor robustness: thick slices and noise (`scripts/robustness_tumor.py`)"
MODS = ("t1c", "flair")


def middle_slices(a: np.ndarray, k: int) -> np.ndarray:
    """The middle slice of every ``k`` consecutive axial slices (labels; as ``thick`` drops a partial block)."""
    n = a.shape[2] // k
    return a[:, :, k // 2: n * k: k]


def variants(feats, mask, truth, spacing, seed: int = 0):
    """(name, features, mask, truth, spacing) of each degraded version."""
    yield "1 mm (as given)", feats, mask, truth, spacing
    for k in (3, 5):
        m = thick(mask.astype(np.float32), k) > 0.5
        f = {c: robust_zscore(thick(v, k), m) for c, v in feats.items()}
        yield (f"{k} mm slices (mean of {k})", f, m, middle_slices(truth, k).astype(np.uint8),
               (spacing[0], spacing[1], spacing[2] * k))
    rng = np.random.default_rng(seed)
    f = {c: robust_zscore(np.where(mask, v + 0.5 * rng.standard_normal(v.shape), 0.0), mask) for c, v in feats.items()}
    yield "noise 0.5 z", f, mask, truth, spacing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--baseline", default=None, help="JSON of TumorConfig fields for a second column")
    ap.add_argument("--write", action="store_true", help="write docs/validation_tumor_robustness.md")
    args = ap.parse_args()
    config = Config()
    runs = [("defaults", config.tumor)]
    if args.baseline:
        runs.append(("baseline", TumorConfig(**{**config.tumor.model_dump(), **json.loads(args.baseline)})))
    folder = args.data / "brats2013"
    if not folder.is_dir():
        print(f"{folder}: not found", file=sys.stderr)
        return 2
    rows = []
    for cdir in case_dirs(folder):
        loaded, mask, feats, _ = prepare(cdir, config)
        truth = truth_of(loaded, mask, config, "auto")
        f0 = {m: feats[m] for m in MODS}
        for name, f, m, g, sp in variants(f0, mask, truth, loaded.spacing):
            row = {"case": cdir.name, "variant": name}
            for key, tcfg in runs:
                t = time.perf_counter()
                res = segment_tumor(f, m, sp, config=tcfg, seed=config.seed)
                e = evaluate_brats(res.labels, g, sp)
                row[key] = (e["dice_WT"], e["dice_TC"], e["dice_ET"], time.perf_counter() - t)
                if key == "defaults":  # an empty or doubtful result must say so: the QC flags of the run
                    row["flags"] = "; ".join(res.info.get("flags", [])) or "-"
            rows.append(row)
            print(cdir.name, name, " | ".join(f"{k} {row[k][0]:.3f}/{row[k][1]:.3f}/{row[k][2]:.3f}" for k, _ in runs),
                  flush=True)
    head = "| case | variant | Dice WT / TC / ET (defaults) |"
    sep = "|---|---|---|"
    if args.baseline:
        head += f" baseline `{args.baseline}` |"
        sep += "---|"
    head += " QC flags (defaults) |"
    sep += "---|"
    lines = [TITLE, "",
             f"Command: `python scripts/robustness_tumor.py{' --baseline ' + repr(args.baseline) if args.baseline else ''}"
             " --write`. FLAIR + T1c of the BRATS 2013 manual cases, degraded (slices averaged along the axial axis, the "
             "labels' middle slice; or noise of 0.5 robust z inside the brain), z-scored again, default `TumorConfig`.",
             "", head, sep]
    for r in rows:
        cells = [f"{r['case']}", r["variant"]] + [f"{r[k][0]:.3f} / {r[k][1]:.3f} / {r[k][2]:.3f}" for k, _ in runs]
        cells.append(r["flags"])
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        doc = ROOT / "docs" / "validation_tumor_robustness.md"
        tmp = doc.with_suffix(".md.tmp")
        tmp.write_text(text)
        tmp.replace(doc)
        print(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
