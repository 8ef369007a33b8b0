"""The raw clinical exam (tcia_raw) through the whole pipeline: series, brain mask, tissue, tumor.

Runs ``segment_case`` with the default configuration on ``../shared/data/tcia_raw`` (four
series with skull and neck on different grids: registered rigidly onto T1, resampled, skull
stripped, N4, mixtures, MRF, tumor), then draws one montage a reviewer can scan:

* one row per series (FLAIR, T1c, T2, T1) as resampled onto the T1 grid, with the brain mask
  (green) and the HD-BET reference mask (red, carried from the t1c grid by the same rigid
  transform the pipeline applied to t1c);
* a row of the tissue labels (CSF blue, GM green, WM yellow, tumor red) over T1;
* a row of the tumor sub-regions (NCR red, ED yellow, ET cyan) over FLAIR.

Writes ``docs/figures/clinical_tcia_montage.png`` and ``docs/validation_clinical.md`` with the
mask Dice against HD-BET on the T1 grid, tissue and tumor volumes, and the timings of every step.

    .venv/bin/python scripts/figure_clinical.py --data ../shared/data
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from segment.config import Config  # noqa: E402
from segment.io.cases import find_case  # noqa: E402
from segment.io.nifti import load_volume, reorient_to_ras, resample_to  # noqa: E402
from segment.metrics import dice  # noqa: E402
from segment.pipeline import run_pipeline, write_outputs, compute_metrics  # noqa: E402
from segment.types import Volume  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TISSUE_CMAP = ListedColormap([(0, 0, 0, 0), (0.2, 0.5, 1, 0.5), (0.2, 0.85, 0.3, 0.5), (1, 0.85, 0.2, 0.5),
                              (1, 0.1, 0.1, 0.7)])
TUMOR_COLORS = {1: "red", 2: "yellow", 3: "cyan"}


def reference_mask_on_grid(data: Path, seg) -> np.ndarray:
    """HD-BET's t1c mask carried onto the pipeline's RAS grid (the t1c registration applied)."""
    ref = reorient_to_ras(load_volume(data / "tcia_raw" / "brain_mask_t1c.nii.gz", allow_empty=False))
    matrix = seg.loaded.registered.get("t1c")
    affine = ref.affine if matrix is None else matrix @ ref.affine
    moved = Volume(ref.data.astype(np.float32), affine)
    return resample_to(moved, seg.loaded.grid, order=0).data > 0.5


def montage(seg, ref_mask: np.ndarray, out: Path, n: int = 6) -> Path:
    mask = seg.brain_mask
    zs = np.flatnonzero(mask.any(axis=(0, 1)))
    zsel = np.unique(np.linspace(zs.min(), zs.max(), n + 2)[1:-1].round().astype(int))
    xy = np.argwhere(mask.any(axis=2) | ref_mask.any(axis=2))
    (x0, y0), (x1, y1) = np.maximum(xy.min(0) - 8, 0), xy.max(0) + 9
    images = seg.loaded.images
    mods = [m for m in ("flair", "t1c", "t2", "t1") if m in images]
    rows = mods + ["tissue"] + (["tumor"] if seg.tumor is not None else [])
    sp = seg.loaded.spacing
    aspect = sp[1] / sp[0]
    fig, axes = plt.subplots(len(rows), len(zsel), figsize=(2.6 * len(zsel), 2.8 * len(rows)), squeeze=False)
    fig.patch.set_facecolor("black")

    def show(a, m, z):
        vol = images[m].data
        lo, hi = np.percentile(vol[mask], [1, 99.5])
        a.imshow(vol[x0:x1, y0:y1, z].T, origin="lower", cmap="gray", vmin=lo, vmax=hi, aspect=aspect)

    for i, row in enumerate(rows):
        for j, z in enumerate(zsel):
            a = axes[i, j]
            if row in mods:
                show(a, row, z)
                for m, c in ((ref_mask, "red"), (mask, "lime")):
                    sl = m[x0:x1, y0:y1, z].T
                    if sl.any():
                        a.contour(sl.astype(float), levels=[0.5], colors=c, linewidths=0.8)
            elif row == "tissue":
                show(a, "t1" if "t1" in images else mods[0], z)
                a.imshow(seg.tissue[x0:x1, y0:y1, z].T, origin="lower", cmap=TISSUE_CMAP, vmin=0, vmax=4,
                         interpolation="nearest", aspect=aspect)
            else:
                show(a, "flair" if "flair" in images else mods[0], z)
                for k, c in TUMOR_COLORS.items():
                    sl = seg.tumor[x0:x1, y0:y1, z].T == k
                    if sl.any():
                        a.contour(sl.astype(float), levels=[0.5], colors=c, linewidths=0.9)
            a.set_title(f"{row}  axial {z}", color="white", fontsize=8)
            a.axis("off")
    fig.suptitle("tcia_raw (TCGA-FG-6692) through `segment run`: series registered + resampled onto T1; "
                 "mask green (HD-BET red); tissue CSF blue / GM green / WM yellow / tumor red; "
                 "tumor NCR red, ED yellow, ET cyan. Patient's left on the image left.",
                 color="white", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, facecolor="black")
    plt.close(fig)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "validation_clinical.md")
    ap.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    args = ap.parse_args(argv)
    config = Config()
    case = find_case(args.data / "tcia_raw")
    run_pipeline(case, config)  # compile / load cached kernels once
    t = time.perf_counter()
    seg = run_pipeline(case, config)
    with tempfile.TemporaryDirectory() as tmp:
        write_outputs(seg, Path(tmp), config, compute_metrics(seg, config))
    seconds = time.perf_counter() - t
    ref_mask = reference_mask_on_grid(args.data, seg)
    d = dice(seg.brain_mask, ref_mask)
    vox_ml = float(np.prod(seg.loaded.spacing)) / 1000.0
    vols = {name: float((seg.tissue == k).sum() * vox_ml) for k, name in ((1, "CSF"), (2, "GM"), (3, "WM"), (4, "tumor"))}
    fig = montage(seg, ref_mask, args.figures / "clinical_tcia_montage.png")
    info = seg.info
    tumor_ml = info.get("tumor", {}).get("volumes_ml") if isinstance(info.get("tumor"), dict) else None
    from segment.io.register import motion_of

    grid = seg.loaded.grid
    centre = (grid.affine @ np.append((np.asarray(grid.shape) - 1) / 2.0, 1.0))[:3]
    motion = {}
    for m, mat in seg.loaded.registered.items():
        disp, angle = motion_of(mat, centre)
        motion[m] = f"{np.linalg.norm(disp):.1f} mm, {angle:.1f} deg"
    print(f"mask Dice vs HD-BET {d:.3f}; volumes {vols}; tumor {tumor_ml}; {seconds:.1f} s; timings {seg.timings}")
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])])
    machine = f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [
        "# The raw clinical exam through the whole pipeline",
        "",
        f"Command: `{cmd}`  \nMachine: {machine}",
        "",
        "`tcia_raw` (TCGA-FG-6692): T1, T1c, T2, FLAIR with skull and neck, 0.9 x 0.9 x 5.5 mm, every series on "
        "its own grid. `segment run` with the default configuration: every series rigidly registered onto T1 "
        "and resampled onto its grid, skull stripping from all four series, N4, robust z-score, tumor "
        "detection, the tissue mixture (partial volume, MRF) on the healthy brain, clean-up, outputs written.",
        "",
        f"Grid {'x'.join(map(str, seg.brain_mask.shape))}, spacing "
        f"{', '.join(f'{s:.2f}' for s in seg.loaded.spacing)} mm (T1, RAS). "
        f"Series motion corrected (displacement of the grid centre, rotation): {json.dumps(motion)}.",
        "",
        "| brain mask Dice vs HD-BET (T1 grid) | brain mL | HD-BET mL | CSF mL | GM mL | WM mL | tumor mL | seconds |",
        "|---|---|---|---|---|---|---|---|",
        f"| {d:.3f} | {seg.brain_mask.sum() * vox_ml:.0f} | {ref_mask.sum() * vox_ml:.0f} | {vols['CSF']:.0f} | "
        f"{vols['GM']:.0f} | {vols['WM']:.0f} | {vols['tumor']:.1f} | {seconds:.1f} |",
        "",
        "Seconds: `run_pipeline` plus writing the outputs, after a warm-up run (kernels compiled / loaded). Steps: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in seg.timings.items()) + ".",
        "",
        f"Tumor volumes (mL): {json.dumps(tumor_ml)}" if tumor_ml else "No tumor found.",
        "",
        f"![clinical montage](figures/{fig.name})",
        "",
        "The HD-BET mask lives on the t1c grid; here it is carried onto the T1 grid with the rigid transform "
        "the pipeline estimated for t1c, so the Dice also contains that registration's error and nearest-"
        "neighbour resampling across 5.5 mm slices (the same masks on the t1c grid: docs/validation_skullstrip.md).",
        "",
    ]
    notes = ""
    marker = "<!-- notes: kept when the script rewrites this file -->"
    if args.out.is_file() and marker in args.out.read_text():
        notes = args.out.read_text().split(marker, 1)[1]
    args.out.write_text("\n".join(lines) + "\n" + marker + (notes or "\n"))
    print(f"wrote {args.out} and {fig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
