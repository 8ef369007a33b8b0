#!/usr/bin/env python
"""Validate segment's glioma segmentation (NCR / ED / ET) and write docs/validation_tumor.md.

Usage (from the repository root)::

    .venv/bin/python scripts/validate_tumor.py [--data /work/shared/data] [--seeds 6]

Every case goes through the pipeline's own steps, as ``segment run`` does: files written to a
temporary folder, ``load_case`` (RAS, one grid), ``brain_mask_step``, ``normalize_step`` (robust
z-score with the default config), then :func:`segment.labeling.tumor.segment_tumor` (the tissue
mixture, which the tumor step does not need, is skipped to keep the run short). Measured:

* tumor phantoms ``make_phantom(seed, tumor=True)`` (96x112x96, 2 mm): BraTS Dice / HD95 of
  WT, TC, ET per seed, with all four modalities and with the subsets FLAIR, T1c+FLAIR;
* healthy phantoms ``make_phantom(seed, tumor=False)``: the predicted tumor volume (should be 0);
* the real BraTS case ``brats_glioma`` (no ground truth): volumes, timings and overlays
  ``docs/figures/tumor_brats_glioma_*.png``; the raw clinical exam ``tcia_raw`` likewise
  (``docs/figures/tumor_tcia_raw.png``).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segment.config import Config  # noqa: E402
from segment.io.cases import find_case, load_case  # noqa: E402
from segment.labeling.tumor import TUMOR_LABELS, segment_tumor  # noqa: E402
from segment.metrics import evaluate_brats, map_tumor_labels  # noqa: E402
from segment.phantom import make_phantom, write_phantom_case  # noqa: E402
from segment.pipeline import brain_mask_step, normalize_step  # noqa: E402
from segment.report.figures import overlay_figure  # noqa: E402

#: What a reader sees on the overlays (written after looking at them; update when the method changes).
OBSERVATIONS: dict[str, str] = {
    "brats_glioma": """
**What the overlays show** (montage: axial slices, patient's left on the image left). A ring-enhancing
mass in the right temporal lobe: the ET contour follows the enhancing wall on T1c, the NCR fills the
non-enhancing centre that the wall encloses (dark on T1c and T1, bright on T2), and ED covers the
finger-like FLAIR/T2 hyperintensity spreading through the right frontal, parietal and temporal white
matter up to the centrum semiovale, stopping at the lateral ventricle (CSF stays out: dark on FLAIR).
This is where a radiologist would draw the three regions. Doubtful parts: a thin FLAIR-bright band along
the *left* occipital horn (axial ~64-76) is included as ED because it is joined to the lesion by
FLAIR-hyperintense white matter across the splenium (a separate 1.1 mL periventricular seed there was
rejected as a small non-enhancing secondary lesion); a few ET specks along the right ventricular wall
(axial ~88) are probably enhancing veins / choroid plexus.
""",
    "tcia_raw": """
**What the overlays show.** The raw exam's series are rigidly registered onto the T1 grid and resampled
(`load_case`, registration auto: t2 and flair had moved about 17-18 mm and 5-16 degrees). The right frontal
ring-enhancing lesion then lies at the same place in FLAIR, T1c, T2 and T1 (axial 15-20). ET follows the
enhancing wall on T1c (axial 18-19), NCR fills the non-enhancing centre it encloses, ED the FLAIR-bright
rim around the ring. Doubtful parts: ET contours also run along the lateral cortical surface next to the
lesion (axial 15-16; enhancing vessels or dura at the surface) and a few 1-2 voxel ED specks sit on the
5.5 mm slices around it. The whole exam through `segment run` (mask, tissue, tumor):
docs/validation_clinical.md.
""",
}
LIMITATIONS = """
## Method in one paragraph

Healthy brain = what the robust z-score describes; a tumor is a compact FLAIR outlier. Seeds: FLAIR smoothed
(2 mm, at least 0.75 voxel) above z 3, opened by 2 mm (at least one voxel), lesions >= 1 mL, less than half
in the 5 mm surface shell, median T2 above the brain median (when T2 exists); secondary lesions need 20 % of
the largest or their own enhancement. WT grows from the seeds (within 20 mm) above the half-way FLAIR level
between healthy brain and lesion. ET: enhancement e = T1c - T1 (T1c alone without T1); the non-enhancing
reference is the heaviest component of a 3-component 1-D EM on e's histogram (lesion plus a 5 mm shell of
normal brain when T1 exists); enhancement exists when >= 50 mm^3 lie 3 reference SDs (and 0.8) above it;
the boundary is half-way between the reference and the enhancing plateau. NCR: what ET encloses after a
3 mm closing (3-D and per-slice hole filling). WT holes are filled except FLAIR-dark (CSF) voxels. No
component is named by index; the method has no random step.

## Limitations and what is not done

- T2 without FLAIR: no region is estimated (edema vs CSF is not separable on T2 alone in our model);
  T1c alone: none (normal enhancing structures cannot be told from tumor without an edema context).
- NCR is only what the enhancing rim encloses: non-enhancing tumor core outside an open rim (BraTS 2023
  merges it into NCR) is labelled ED; tumors without enhancement (low grade) come out as ED only.
- Thresholds are in robust-z units of the pipeline's normalisation; a change of its clipping percentiles
  moves the healthy tail a little (defaults validated: `preprocess.lower_percentile` 0, `upper_percentile`
  99.9). No probability maps are returned yet (`probabilities` is None).
- Real-scan validation here is one BraTS case and one raw exam judged by eye; accuracy on held-out BraTS
  cases is unmeasured in this repository.
"""

SUBSETS = {"FLAIR": ("flair",), "T1c+FLAIR": ("t1c", "flair"), "all four": ("t1", "t1c", "t2", "flair")}
COLORS = {1: "#e41a1c", 2: "#ffd92f", 3: "#00e5ff"}


def prepare(case_dir: Path, config: Config):
    """Load, mask and normalise a case exactly as the pipeline does; returns (loaded, mask, feats, seconds)."""
    t = time.perf_counter()
    loaded = load_case(find_case(case_dir))
    mask, _ = brain_mask_step(loaded, config)
    feats = normalize_step(loaded, mask, config)
    return loaded, mask, feats, time.perf_counter() - t


def fmt(x, nd=3):
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{nd}f}"


def montage(feats, labels, out: Path, title: str, n: int = 5) -> Path:
    """Axial slices through the tumor: FLAIR, T1c, T2 rows with label contours."""
    zs = np.flatnonzero(labels.any(axis=(0, 1)))
    if zs.size == 0:
        zs = np.array([labels.shape[2] // 2])
    zsel = np.unique(np.linspace(zs.min(), zs.max(), n + 2)[1:-1].round().astype(int))
    mods = [m for m in ("flair", "t1c", "t2", "t1") if m in feats]
    xy = np.argwhere(np.any([f != 0 for f in feats.values()], axis=0).any(axis=2))
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0) + 1
    fig, axes = plt.subplots(len(mods), len(zsel), figsize=(3.0 * len(zsel), 3.2 * len(mods)), squeeze=False)
    fig.patch.set_facecolor("black")
    for i, m in enumerate(mods):
        for j, z in enumerate(zsel):
            a = axes[i, j]
            img = feats[m][x0:x1, y0:y1, z].T
            lo, hi = np.percentile(feats[m][feats[m] != 0], [1, 99.5])
            a.imshow(img, origin="lower", cmap="gray", vmin=lo, vmax=hi)
            for k, c in COLORS.items():
                sl = labels[x0:x1, y0:y1, z].T == k
                if sl.any():
                    a.contour(sl.astype(float), levels=[0.5], colors=c, linewidths=0.9)
            a.set_title(f"{m}  axial {z}", color="white", fontsize=9)
            a.axis("off")
    fig.suptitle(f"{title}   contours: NCR red, ED yellow, ET cyan   (left of image = patient's left, RAS)",
                 color="white", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, facecolor="black")
    plt.close(fig)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/work/shared/data", type=Path)
    ap.add_argument("--seeds", default=6, type=int, help="phantom seeds 0..N-1")
    ap.add_argument("--out", default=ROOT / "docs" / "validation_tumor.md", type=Path)
    args = ap.parse_args()
    config = Config()
    tcfg = config.tumor
    figdir = ROOT / "docs" / "figures"
    lines: list[str] = []
    P = lines.append

    # ------------------------------------------------------------------ phantoms
    rows, subset_rows, healthy_rows = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for s in range(args.seeds):
            ph = make_phantom(s, tumor=True)
            case = write_phantom_case(tmp, ph, f"tumor_{s}")
            loaded, mask, feats, t_prep = prepare(case, config)
            truth = map_tumor_labels(loaded.truth["seg"].data, "brats2023")
            sp = loaded.spacing
            for name, mods in SUBSETS.items():
                t = time.perf_counter()
                res = segment_tumor({m: feats[m] for m in mods}, mask, sp, config=tcfg, seed=config.seed)
                dt = time.perf_counter() - t
                met = evaluate_brats(res.labels, truth, sp, regions=res.regions)
                rec = {"seed": s, "subset": name, "regions": res.regions, "seconds": dt, **met}
                for r in ("WT", "TC", "ET"):
                    rec[f"gt_ml_{r}"] = float(np.isin(truth, {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}[r]).sum()
                                              * np.prod(sp) / 1000)
                subset_rows.append(rec)
                if name == "all four":
                    rows.append(rec)
                    print(f"seed {s}: Dice WT {met['dice_WT']:.3f} TC {met['dice_TC']:.3f} "
                          f"ET {met['dice_ET']:.3f} ({dt:.2f} s)", flush=True)
        for s in range(args.seeds):
            ph = make_phantom(s, tumor=False)
            case = write_phantom_case(tmp, ph, f"healthy_{s}")
            loaded, mask, feats, _ = prepare(case, config)
            res = segment_tumor(feats, mask, loaded.spacing, config=tcfg, seed=config.seed)
            healthy_rows.append({"seed": s, "wt_ml": res.info["volumes_ml"]["WT"],
                                 "n_candidates": len(res.info.get("lesions", [])),
                                 "decision": res.info["decision"]})
            print(f"healthy {s}: WT {res.info['volumes_ml']['WT']} mL", flush=True)

    # ------------------------------------------------------------------ real cases
    real = {}
    for name, sub in (("brats_glioma", "brats_glioma"), ("tcia_raw", "tcia_raw")):
        path = args.data / sub
        if not path.is_dir():
            print(f"skip {name}: {path} not found")
            continue
        loaded, mask, feats, t_prep = prepare(path, config)
        t = time.perf_counter()
        res = segment_tumor(feats, mask, loaded.spacing, config=tcfg, seed=config.seed)
        dt = time.perf_counter() - t
        lab = res.labels
        figs = []
        for mod in ("flair", "t1c"):
            if mod in feats:
                figs.append(overlay_figure(
                    feats[mod], lab, figdir / f"tumor_{name}_{mod}.png", spacing=loaded.spacing,
                    label_names=TUMOR_LABELS, title=f"{name}: tumor on {mod.upper()}"))
        figs.append(montage(feats, lab, figdir / f"tumor_{name}_montage.png", name))
        real[name] = {"res": res, "seconds": dt, "prep": t_prep, "shape": lab.shape, "spacing": loaded.spacing,
                      "figs": figs}
        print(f"{name}: {res.info['volumes_ml']} tumor step {dt:.2f} s, load+mask+normalise {t_prep:.2f} s")

    # ------------------------------------------------------------------ report
    cmd = ".venv/bin/python scripts/validate_tumor.py" + (
        f" --data {args.data}" if str(args.data) != "/work/shared/data" else "") + (
        f" --seeds {args.seeds}" if args.seeds != 6 else "")
    P("# Validation: glioma segmentation (NCR / ED / ET)\n")
    P(f"Generated by `{cmd}` (from the repository root). Method: `segment/labeling/tumor.py` "
      "(module docstring); parameters: `TumorConfig` in `segment/config.py`, defaults used throughout.\n")
    P("Every case runs through the pipeline's own loading, brain mask and robust z-score "
      "(`load_case`, `brain_mask_step`, `normalize_step`, default `Config`), then `segment_tumor`. "
      "Metrics: `segment.metrics.evaluate_brats` (BraTS 2023 regions WT = NCR+ED+ET, TC = NCR+ET, ET).\n")
    P("## Tumor phantoms, all four modalities\n")
    P("`make_phantom(seed, tumor=True)`, 96x112x96 at 2 mm (necrotic core, enhancing rim, edema; size and "
      "place vary by seed). Volumes are ground truth.\n")
    P("| seed | GT WT mL | GT TC mL | GT ET mL | Dice WT | Dice TC | Dice ET | HD95 WT mm | HD95 TC mm | HD95 ET mm "
      "| lesion Dice ET | seconds |")
    P("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        P(f"| {r['seed']} | {r['gt_ml_WT']:.1f} | {r['gt_ml_TC']:.1f} | {r['gt_ml_ET']:.1f} | {fmt(r['dice_WT'])} | "
          f"{fmt(r['dice_TC'])} | {fmt(r['dice_ET'])} | {fmt(r['hd95_WT'], 1)} | {fmt(r['hd95_TC'], 1)} | "
          f"{fmt(r['hd95_ET'], 1)} | {fmt(r['lesion_dice_ET'])} | {r['seconds']:.2f} |")
    means = {k: float(np.mean([r[f"dice_{k}"] for r in rows])) for k in ("WT", "TC", "ET")}
    P(f"| **mean** | | | | **{means['WT']:.3f}** | **{means['TC']:.3f}** | **{means['ET']:.3f}** | | | | | |\n")
    P("Bars (issue 4): mean Dice WT >= 0.90, TC >= 0.85, ET >= 0.80 — "
      + ("**met**." if means["WT"] >= 0.9 and means["TC"] >= 0.85 and means["ET"] >= 0.8 else "**NOT met**.") + "\n")

    P("## Modality subsets (same phantoms)\n")
    P("Regions a subset cannot support are not estimated (empty cells). With FLAIR only every tumor voxel is "
      "labelled ED (2), so only WT is scored.\n")
    P("| modalities | regions | mean Dice WT | mean Dice TC | mean Dice ET | min Dice WT |")
    P("|---|---|---|---|---|---|")
    for name in SUBSETS:
        rs = [r for r in subset_rows if r["subset"] == name]
        regs = rs[0]["regions"]
        cell = {k: (f"{np.mean([r[f'dice_{k}'] for r in rs]):.3f}" if k in regs else "") for k in ("WT", "TC", "ET")}
        P(f"| {name} | {', '.join(regs)} | {cell['WT']} | {cell['TC']} | {cell['ET']} | "
          f"{min(r['dice_WT'] for r in rs):.3f} |")
    P("")
    P("## Healthy phantoms\n")
    P("`make_phantom(seed, tumor=False)`, same grid, all four modalities: the detector must decide that there is no "
      "tumor.\n")
    P("| seed | predicted WT mL | candidate lesions | decision |")
    P("|---|---|---|---|")
    for r in healthy_rows:
        P(f"| {r['seed']} | {r['wt_ml']:.3f} | {r['n_candidates']} | {r['decision']} |")
    P("")

    for name, d in real.items():
        res = d["res"]
        v = res.info["volumes_ml"]
        P(f"## Real case: `{name}`\n")
        P(f"Grid {d['shape'][0]}x{d['shape'][1]}x{d['shape'][2]}, spacing "
          f"{', '.join(f'{s:.2f}' for s in d['spacing'])} mm. No ground truth: judged by eye on the overlays.\n")
        P("| NCR mL | ED mL | ET mL | WT mL | TC mL | tumor step s | load + mask + normalise s |")
        P("|---|---|---|---|---|---|---|")
        P(f"| {v['NCR']:.1f} | {v['ED']:.1f} | {v['ET']:.1f} | {v['WT']:.1f} | {v['TC']:.1f} | {d['seconds']:.2f} | "
          f"{d['prep']:.2f} |\n")
        P("Decisions (`TumorResult.info`):\n")
        P("```")
        for k in ("decision", "flair_healthy_level_z", "flair_lesion_level_z", "flair_threshold_z", "enhancement",
                  "enhancement_model"):
            if k in res.info:
                P(f"{k}: {res.info[k]}")
        for rec in res.info.get("lesions", []):
            P(f"lesion: {rec}")
        P("```\n")
        for f in d["figs"]:
            P(f"![{f.stem}](figures/{f.name})\n")
        if name in OBSERVATIONS:
            P(OBSERVATIONS[name].strip() + "\n")

    P(LIMITATIONS.strip() + "\n")
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
