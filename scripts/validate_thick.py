"""Tissue on MNI152 resampled to clinical thick slices, against scikit-learn and ANTs Atropos.

Clinical exams are often 0.9 x 0.9 x 5-6 mm. This script averages every ``--thick`` (default 5)
consecutive axial slices of the 1 mm MNI152 T1 and of its GM/WM probability maps (the truth is
the argmax of the averaged maps, so it carries the same partial volume), optionally adds the
degraded-MNI bias field and Rician noise (``validate_degraded.degrade``), and runs in one go:

* ``segment_case`` with the defaults (N4, partial volume, MRF weighted 1/distance in mm);
* scikit-learn ``GaussianMixture`` (3 components on T1 inside the mask);
* ANTs Atropos (k-means init, MRF) in the peers' environment ``.venv-peers/`` (created on first
  use by ``scripts/_peers.py``; ``--ants-python`` overrides it), as in ``validate_degraded.py``.

    .venv/bin/python scripts/validate_thick.py
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import atropos_available  # noqa: E402
from validate_degraded import degrade, run_atropos, run_segment  # noqa: E402
from validate_tissue import sklearn_gmm  # noqa: E402

from segment.config import config_from_dict  # noqa: E402
from segment.io.nifti import save_volume  # noqa: E402
from segment.metrics import dice  # noqa: E402


def thick(a: np.ndarray, k: int) -> np.ndarray:
    """Mean of every ``k`` consecutive slices along the last axis (a trailing partial block is dropped)."""
    n = a.shape[2] // k
    return a[:, :, : n * k].reshape(a.shape[0], a.shape[1], n, k).mean(axis=3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--thick", type=int, default=5, help="slice thickness in mm (slices averaged)")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--ants-python", default=None,
                    help="python of a venv with antspyx (default: .venv-peers/, created if missing)")
    ap.add_argument("--config", default=None,
                    help="segment config overrides as JSON (e.g. '{\"mixture\": {\"partial_volume\": false}}')")
    ap.add_argument("--no-peers", action="store_true", help="segment only (skip scikit-learn and Atropos)")
    args = ap.parse_args(argv)

    src = args.data / "mni152"
    t1_img = nib.load(str(src / "t1.nii.gz"))
    t1 = np.asarray(t1_img.dataobj).astype(np.float32)
    gm = np.asarray(nib.load(str(src / "gm_prob.nii.gz")).dataobj) / 255.0
    wm = np.asarray(nib.load(str(src / "wm_prob.nii.gz")).dataobj) / 255.0
    inside = (t1 > 0).astype(np.float32)
    k = args.thick
    cover = thick(inside, k)
    brain = cover >= 0.5  # a thick voxel is brain when at least half of it was
    t1k = thick(t1, k) / np.maximum(cover, 1e-6)  # mean of the brain part (a stripped scan's edge)
    gmk, wmk = thick(gm * inside, k) / np.maximum(cover, 1e-6), thick(wm * inside, k) / np.maximum(cover, 1e-6)
    truth = (np.argmax(np.stack([1 - gmk - wmk, gmk, wmk]), axis=0) + 1).astype(np.uint8)
    truth[~brain] = 0
    t1k[~brain] = 0
    aff = t1_img.affine.copy()
    aff[:3, 2] *= k
    aff[:3, 3] += aff[:3, 2] * (k - 1) / (2.0 * k)  # centre of the first block
    wm_mean = float(t1k[truth == 3].mean())
    ants_py, ants_note = (None, "") if args.no_peers else atropos_available(args.ants_python)
    ok = ants_py is not None
    if not ok and ants_note:
        print(ants_note, file=sys.stderr)
    over = json.loads(args.config) if args.config else {}
    over.setdefault("outputs", {})["overlay"] = False
    cfg = config_from_dict(over)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mask_path = save_volume(brain.astype(np.uint8), aff, tmp / "mask.nii.gz", dtype=np.uint8)
        for vi, (name, b, s) in enumerate([("clean", 0, 0), ("noise 3 %", 0, 3), ("bias 20 % + noise 4 %", 20, 4)]):
            img = degrade(t1k, brain, wm_mean, b, s, args.seed + 100 + vi) if (b or s) else t1k
            case = tmp / f"case{vi}"
            path = save_volume(img.astype(np.float32), aff, case / "t1.nii.gz", dtype=np.float32)
            run_segment(case, cfg, tmp / "warm")  # kernels loaded
            lab, sec = run_segment(case, cfg, tmp / f"out{vi}")
            res = {"segment (defaults)" if not args.config else "segment (--config)": (lab, sec)}
            if not args.no_peers:
                res["scikit-learn GaussianMixture"] = sklearn_gmm(img, args.seed)
            if ok:
                alab, asec, _ = run_atropos(ants_py, path, mask_path, tmp / f"a{vi}.nii.gz", "[0.2,1x1x1]", "[5,0]")
                res["ANTs Atropos, kmeans[3], m=[0.2,1x1x1], c=[5,0]"] = (alab, asec)
            for method, (lab, sec) in res.items():
                d = [dice(lab == c, truth == c) for c in (1, 2, 3)]
                rows.append((name, method, d, sec))
                print(f"{name:22s} {method:50s} CSF {d[0]:.3f} GM {d[1]:.3f} WM {d[2]:.3f} {sec:6.1f} s", flush=True)
    print(f"\nMNI152 averaged to 1 x 1 x {k} mm ({brain.shape[0]}x{brain.shape[1]}x{brain.shape[2]}), "
          f"{int(brain.sum())} brain voxels\n")
    print("| variant | method | Dice CSF | Dice GM | Dice WM | seconds |")
    print("|---|---|---|---|---|---|")
    for name, method, d, sec in rows:
        print(f"| {name} | {method} | {d[0]:.3f} | {d[1]:.3f} | {d[2]:.3f} | {sec:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
