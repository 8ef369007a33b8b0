"""N4 bias correction: segment's own implementation vs SimpleITK's filter, in one run.

On the MNI152 template (brain = t1 > 0) under the degraded-MNI bias fields and noise of
``validate_degraded.py`` (same seeds), both methods with the pipeline's settings (shrink 6, one
level, 50 iterations, convergence 1e-4). Printed per variant and method:

* seconds of ``n4_correct`` (best of ``--repeats``);
* residual bias: coefficient of variation, inside the brain, of ``corrected / clean`` smoothed
  (the field left in the image; 0 is perfect). The clean template itself has
  ``corrected / clean = 1 / estimated field``, so on it this is the anatomy taken for bias;
* white-matter CV: spread of intensities inside the template's white matter after correction.

    .venv/bin/python scripts/bench_bias.py --data ../shared/data
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validate_degraded import VARIANTS, degrade  # noqa: E402
from validate_tissue import mni_truth  # noqa: E402

from segment.preprocess.bias import n4_correct  # noqa: E402


def residual_cv(corrected: np.ndarray, clean: np.ndarray, brain: np.ndarray) -> float:
    """CV inside ``brain`` of the smooth part of ``corrected / clean`` (noise averaged out by a
    10-voxel Gaussian, normalised by the smoothed mask)."""
    ratio = np.where(brain, corrected / np.maximum(clean, 1e-6), 0.0)
    num = ndi.gaussian_filter(ratio, 10)
    den = ndi.gaussian_filter(brain.astype(np.float64), 10)
    r = num[brain] / np.maximum(den[brain], 1e-6)
    return float(r.std() / r.mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    t1_img, truth = mni_truth(args.data)
    t1 = np.asarray(t1_img.dataobj).astype(np.float32)
    brain = t1 > 0
    wm = truth == 3
    wm_mean = float(t1[wm].mean())
    spacing = tuple(float(s) for s in t1_img.header.get_zooms()[:3])
    n4_correct(t1, brain, spacing, method="native")  # imports, caches
    n4_correct(t1, brain, spacing, method="simpleitk")
    print(f"# {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| variant | method | seconds | residual bias CV | WM CV | speed-up |")
    print("|---|---|---|---|---|---|")
    for vi, (name, b, s) in enumerate(VARIANTS):
        if s > 4 and b == 0:
            continue  # noise-only variants: the field is not the point; keep 1 and 3 %
        img = degrade(t1, brain, wm_mean, b, s, args.seed + vi) if (b or s) else t1
        row = {}
        for method in ("simpleitk", "native"):
            best = np.inf
            for _ in range(args.repeats):
                t = time.perf_counter()
                out = n4_correct(img, brain, spacing, method=method)
                best = min(best, time.perf_counter() - t)
            v = out[wm]
            row[method] = (best, residual_cv(out, t1, brain), float(v.std() / v.mean()))
        ref = row["simpleitk"][0]
        for method, (sec, cv, wcv) in row.items():
            speed = "" if method == "simpleitk" else f"{ref / sec:.1f}x"
            print(f"| {name} | {method} | {sec:.3f} | {cv:.4f} | {wcv:.4f} | {speed} |", flush=True)
        raw = img[wm]
        print(f"| {name} | (uncorrected) | | {residual_cv(img, t1, brain):.4f} | {float(raw.std() / raw.mean()):.4f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
