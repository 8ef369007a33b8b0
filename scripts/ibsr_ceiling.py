"""How far can a T1 intensity model go on IBSR? Oracle bounds beside segment's white-matter Dice.

Issue 12's IBSR bar (mean WM Dice >= 0.89) is not met (0.876). This script asks which part of the
model could close the gap, by replacing one part with an oracle fitted on the manual labels
(so the oracles are upper bounds, never methods):

* ``segment``: the pipeline's labels (default ``Config()``), as in ``validate_ibsr.py``;
* ``no MRF``: argmax of segment's partial-volume fractions (priors applied, before the MRF);
* ``best global threshold``: the single T1 threshold between GM and WM that maximises WM Dice
  on the manual GM + WM voxels (141 candidate quantiles): the best any one boundary can do, i.e.
  any global intensity model of T1, whatever its classes' shapes;
* ``best block thresholds``: the same, fitted separately in blocks of about 38 x 30 x 38 mm
  (a spatially varying boundary: residual bias field or regional anatomy; overfits the blocks,
  so an optimistic bound for any smooth bias or local-mean model);
* ``oracle priors s=2 / s=4 mm``: segment's intensity fractions (the ICBM prior factor divided
  out) weighted, at the same ``mixture.prior_weight``, by the manual labels smoothed with a
  Gaussian of 2 or 4 mm in place of the affine-registered ICBM maps: what a perfect deformable
  registration of an atlas as sharp as that could give (no MRF, compare with ``no MRF``);
* where the boundaries sit: the best threshold's and segment's (median T1 where its GM and WM
  fractions tie) as a fraction of the way from the manual GM core's median T1 to the WM core's;
* where segment's WM -> GM errors lie in the warped ICBM WM prior (share with prior < 0.4: the
  atlas itself does not put WM there, so no weighting of the affine priors can fix them).

Dice is scored on the voxels the manual labels call GM or WM inside segment's brain mask (the
threshold oracles label only those), so ``segment`` here differs slightly from validate_ibsr.py.

    .venv/bin/python scripts/ibsr_ceiling.py --out docs/validation_ibsr_ceiling.md
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import NOTES, doc_command, kept_notes, machine_line  # noqa: E402
from validate_ibsr import read_ras  # noqa: E402

from segment.config import Config  # noqa: E402
from segment.labeling.priors import spatial_factor, warp_tissue_priors  # noqa: E402
from segment.metrics import dice  # noqa: E402
from segment.pipeline import run_pipeline  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"
BLOCK_MM = 38.0
QUANTILES = np.linspace(0.2, 0.9, 141)


def best_threshold(t1: np.ndarray, wm: np.ndarray) -> tuple[float, float]:
    """(threshold, WM Dice) of the best single threshold ``t1 > thr`` for ``wm`` (1-D arrays)."""
    best = (float("nan"), -1.0)
    for thr in np.quantile(t1, QUANTILES):
        d = dice(t1 > thr, wm)
        if d > best[1]:
            best = (float(thr), float(d))
    return best


def block_thresholds(t1: np.ndarray, wm: np.ndarray, region: np.ndarray, spacing, global_thr: float) -> np.ndarray:
    """WM labels from the best threshold of each block (blocks with < 2000 voxels keep the global one)."""
    pred = np.zeros(region.shape, bool)
    step = [max(int(round(BLOCK_MM / s)), 1) for s in spacing]
    for i in range(0, region.shape[0], step[0]):
        for j in range(0, region.shape[1], step[1]):
            for k in range(0, region.shape[2], step[2]):
                sl = (slice(i, i + step[0]), slice(j, j + step[1]), slice(k, k + step[2]))
                r = region[sl]
                v, w = t1[sl][r], wm[sl][r]
                thr = global_thr if r.sum() < 2000 or not w.any() or w.all() else best_threshold(v, w)[0]
                sub = np.zeros(r.shape, bool)
                sub[r] = v > thr
                pred[sl] |= sub
    return pred


def subject(folder: Path, config: Config) -> dict[str, object]:
    t = time.perf_counter()
    seg = run_pipeline(folder, config)
    truth, _ = read_ras(folder / "seg_tissue.nii.gz", np.int16)
    mask = seg.brain_mask
    region = mask & ((truth == 2) | (truth == 3))
    wm = truth == 3
    t1 = seg.features[list(seg.features)[0]]
    out: dict[str, object] = {"seconds": time.perf_counter() - t}

    def wm_dice(labels_wm: np.ndarray) -> float:
        return float(dice(labels_wm & region, wm & region))

    out["segment"] = wm_dice(seg.tissue == 3)
    healthy = mask & (seg.tissue > 0) & (seg.tissue < 4)
    frac = seg.fractions[healthy]
    fr_lab = np.zeros(mask.shape, np.uint8)
    fr_lab[healthy] = frac.argmax(axis=1) + 1
    out["no MRF"] = wm_dice(fr_lab == 3)
    thr, d = best_threshold(t1[region], wm[region])
    out["best global threshold"] = d
    out["threshold"] = thr
    out["best block thresholds"] = wm_dice(block_thresholds(t1, wm, region, seg.loaded.spacing, thr))
    # the intensity part of the fractions: the ICBM factor divided out
    reg = seg.info.get("registration")
    pri = warp_tissue_priors(reg, seg.loaded.grid, healthy)
    w = config.mixture.prior_weight
    raw = frac / spatial_factor(pri, w)
    raw /= raw.sum(axis=1, keepdims=True)
    onehot = [(truth == c).astype(np.float32) for c in (1, 2, 3)]
    for sigma in (2.0, 4.0):
        sv = [sigma / s for s in seg.loaded.spacing]
        sm = np.stack([ndi.gaussian_filter(o, sv)[healthy] for o in onehot], axis=1)
        tot = sm.sum(axis=1, keepdims=True)
        sm = np.where(tot > 0.5, sm / np.maximum(tot, 1e-6), 1.0 / 3.0).astype(np.float32)
        lab = np.zeros(mask.shape, np.uint8)
        lab[healthy] = (raw * spatial_factor(sm, w)).argmax(axis=1) + 1
        out[f"oracle priors s={sigma:g} mm"] = wm_dice(lab == 3)
    # where the boundaries sit, as a fraction of the way from the manual GM core's median T1 to
    # the WM core's: the best threshold's and segment's (the median T1 of the voxels whose GM and
    # WM fractions are within 0.05 of each other)
    core_wm = ndi.binary_erosion(wm, iterations=2) & mask
    core_gm = ndi.binary_erosion(truth == 2, iterations=1) & mask
    m_gm, m_wm = float(np.median(t1[core_gm])), float(np.median(t1[core_wm]))
    fr = np.zeros(mask.shape + (3,), np.float32)
    fr[healthy] = frac
    tie = region & (np.abs(fr[..., 2] - fr[..., 1]) < 0.05) & (fr[..., 1] + fr[..., 2] > 0.8)
    out["boundary (manual best)"] = (thr - m_gm) / (m_wm - m_gm)
    out["boundary (segment)"] = (float(np.median(t1[tie])) - m_gm) / (m_wm - m_gm) if tie.any() else float("nan")
    err = (wm & region & (seg.tissue == 2))[healthy]
    out["WM->GM with ICBM WM prior < 0.4"] = float((pri[err, 2] < 0.4).mean()) if err.any() else 0.0
    return out


COLUMNS = ["segment", "no MRF", "best global threshold", "best block thresholds",
           "oracle priors s=2 mm", "oracle priors s=4 mm", "WM->GM with ICBM WM prior < 0.4",
           "boundary (manual best)", "boundary (segment)"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--subjects", default=None, help="comma-separated (default: every folder under <data>/ibsr)")
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    args = ap.parse_args(argv)
    folder = args.data / "ibsr"
    if not folder.is_dir():
        print(f"{folder}: not found", file=sys.stderr)
        return 2
    names = args.subjects.split(",") if args.subjects else sorted(p.name for p in folder.iterdir() if p.is_dir())
    config = Config(outputs={"probabilities": True})
    rows = {}
    for s in names:
        rows[s] = subject(folder / s, config)
        print(s, " ".join(f"{c}: {rows[s][c]:.3f}" for c in COLUMNS), flush=True)
    lines = ["## IBSR: oracle bounds on white-matter Dice (T1 intensity models)", "",
             f"Command: `{doc_command('scripts/ibsr_ceiling.py', sys.argv[1:] if argv is None else argv)}`  ",
             f"Machine: {machine_line()}", "",
             "WM Dice on the manual GM + WM voxels inside segment's brain mask. Oracles are fitted on the manual "
             "labels (upper bounds, not methods): see the script's docstring. The last column is a share of "
             "segment's WM -> GM errors, not a Dice; the boundary columns say where the best threshold and "
             "segment's GM/WM boundary lie, as a fraction of the way from the manual GM core's median T1 to the "
             "WM core's (eroded manual classes).", "",
             "| subject | " + " | ".join(COLUMNS) + " | best threshold (robust z) |",
             "|---|" + "---|" * (len(COLUMNS) + 1)]
    for s, r in rows.items():
        lines.append(f"| {s} | " + " | ".join(f"{r[c]:.3f}" for c in COLUMNS) + f" | {r['threshold']:.2f} |")
    mean = {c: float(np.mean([r[c] for r in rows.values()])) for c in COLUMNS}
    lines.append("| **mean** | " + " | ".join(f"**{mean[c]:.3f}**" for c in COLUMNS) + " | |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n" + NOTES + (kept_notes(args.out) or "\n"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
