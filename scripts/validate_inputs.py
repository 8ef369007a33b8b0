"""Tissue on real subjects stored the ways real scans arrive: clipped (saturated) intensities,
8-bit integers, z-scored floats with a constant background.

For each IBSR18 subject of ``../shared/data/ibsr`` (1.5 mm T1, brain-only, manual CSF/GM/WM labels)
the T1 is rewritten as each variant below, put in a temporary case folder and run through
:func:`segment.pipeline.run_pipeline` (default ``Config()``), once with the defaults and once
with ``preprocess.saturation: off`` (the pipeline before saturated intensities were restored)
for the variants that clip. Dice of CSF/GM/WM against the manual labels; QC flags of the run.

Variants (``brain`` = the subject's non-zero voxels):

* ``clean``: as stored;
* ``saturated p90`` / ``p75``: ``min(t1, percentile(t1[brain], q))``: white matter piles onto one
  value (p90: above its median; p75: under it, most of white matter clipped);
* ``uint8``: rescaled so that the 99.5th brain percentile is 255, rounded, stored as uint8;
* ``uint8 saturated p80``: rescaled so that the 80th brain percentile is 255 (the rest clipped);
* ``z-scored, background 0`` / ``background min``: ``(t1 - mean) / sd`` in the brain, the outside 0
  or one value under the brain's minimum (as another tool's normalisation writes them).

Also the raw clinical T1c of ``../shared/data/tcia_raw`` (with skull) as stored and clipped at its
brain's 90th percentile: mask Dice against HD-BET and tissue against the stored run.

    .venv/bin/python scripts/validate_inputs.py --out docs/validation_inputs.md
    .venv/bin/python scripts/validate_inputs.py --subjects IBSR_01 --variants "saturated p90"
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import NOTES, doc_command, kept_notes, machine_line  # noqa: E402
from segment.config import Config, config_from_dict  # noqa: E402
from segment.pipeline import run_pipeline  # noqa: E402
from validate_ibsr import read_ras, scores  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"
VARIANTS = ("clean", "saturated p90", "saturated p75", "uint8", "uint8 saturated p80",
            "z-scored, background 0", "z-scored, background min")
CLIPS = {"saturated p90", "saturated p75", "uint8 saturated p80"}


def variant(name: str, x: np.ndarray, brain: np.ndarray) -> np.ndarray:
    v = x[brain]
    if name == "clean":
        return x
    if name.startswith("saturated p"):
        return np.minimum(x, np.float32(np.percentile(v, float(name.split("p")[-1]))))
    if name.startswith("uint8"):
        q = 80.0 if "saturated" in name else 99.5
        lo, hi = float(x.min()), float(np.percentile(v, q))
        return np.clip(np.rint((x - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)
    if name.startswith("z-scored"):
        z = ((x - v.mean()) / v.std()).astype(np.float32)
        bg = np.float32(0.0) if name.endswith("0") else np.float32(z[brain].min() - 0.5)
        return np.where(brain, z, bg).astype(np.float32)
    raise ValueError(name)


def run_flags(seg) -> list[str]:
    out = [str(f) for f in (seg.info.get("flags") or [])]
    for v in seg.info.values():
        if isinstance(v, dict):
            out += [str(f) for f in (v.get("flags") or [])]
    return list(dict.fromkeys(out))


def raw_head(folder: Path, configs: dict) -> list[str]:
    """The clinical T1c as stored and clipped at its brain's 90th percentile (rows of the doc)."""
    from segment.metrics import dice

    img = nib.load(str(folder / "t1c.nii.gz"))
    x = np.asarray(img.dataobj).astype(np.float32)
    hd, _ = read_ras(folder / "brain_mask_t1c.nii.gz")
    hd = hd > 0
    hd_native = np.asarray(nib.load(str(folder / "brain_mask_t1c.nii.gz")).dataobj) > 0
    rows, ref = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for name, y in (("as stored", x), ("clipped p90", np.minimum(x, np.float32(np.percentile(x[hd_native], 90))))):
            d = Path(tmp) / name.replace(" ", "_")
            d.mkdir()
            nib.save(nib.Nifti1Image(y, img.affine, img.header), str(d / "t1c.nii.gz"))
            for cname, cfg in configs.items():
                if name == "as stored" and cname != "segment (defaults)":
                    continue
                t = time.perf_counter()
                seg = run_pipeline(d, cfg)
                secs = time.perf_counter() - t
                tis = np.asarray(seg.tissue)
                if ref is None:
                    ref = tis
                both = (tis >= 1) & (tis <= 3) & (ref >= 1) & (ref <= 3)
                ml = float(np.count_nonzero(seg.brain_mask)) * float(np.prod(seg.loaded.spacing)) / 1000.0
                fl = run_flags(seg)
                rows.append(f"| {name} | {cname} | {ml:.0f} | {dice(seg.brain_mask, hd):.3f} | "
                            f"{dice((tis == 2) & both, (ref == 2) & both):.3f} | {dice((tis == 3) & both, (ref == 3) & both):.3f} | "
                            f"{'; '.join(fl) or 'none'} | {secs:.1f} |")
                print(f"tcia_raw t1c {name:12s} {cname:26s} brain {ml:.0f} mL mask Dice {dice(seg.brain_mask, hd):.3f}", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (holds ibsr/)")
    ap.add_argument("--subjects", default=None, help="comma-separated IBSR subject folders (default: all)")
    ap.add_argument("--variants", default=None, help=f"comma-separated variants (default: all of {', '.join(VARIANTS)})")
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    args = ap.parse_args(argv)
    root = args.data / "ibsr"
    subjects = sorted(p.name for p in root.iterdir() if (p / "t1.nii.gz").is_file() and (p / "seg_tissue.nii.gz").is_file())
    if args.subjects:
        subjects = [s.strip() for s in args.subjects.split(",") if s.strip()]
    variants = VARIANTS if not args.variants else tuple(v.strip() for v in args.variants.split(","))
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variant(s) {bad}; known: {', '.join(VARIANTS)}")
    config = Config()
    d = config.to_dict()
    d["preprocess"] = {**d["preprocess"], "saturation": "off"}
    configs = {"segment (defaults)": config, "segment, saturation: off": config_from_dict(d)}
    rows = []
    per_variant: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for s in subjects:
            img = nib.load(str(root / s / "t1.nii.gz"))
            x = np.squeeze(np.asarray(img.dataobj)).astype(np.float32)
            brain = x > 0
            tr, _ = read_ras(root / s / "seg_tissue.nii.gz")  # on the pipeline's RAS grid
            tr = np.rint(tr).astype(np.uint8)
            for name in variants:
                y = variant(name, x, brain)
                folder = tmp / f"{s}_{name.replace(' ', '_').replace(',', '')}"
                folder.mkdir()
                nib.save(nib.Nifti1Image(y, img.affine), str(folder / "t1.nii.gz"))
                for cname, cfg in configs.items():
                    if cname != "segment (defaults)" and name not in CLIPS:
                        continue  # the two configs differ only on clipped inputs
                    t = time.perf_counter()
                    seg = run_pipeline(folder, cfg)
                    secs = time.perf_counter() - t
                    lab = np.asarray(seg.tissue)
                    pred = np.where(lab <= 3, lab, 0)
                    sc = scores(pred, tr)  # as validate_ibsr.py scores them
                    dc = (sc["CSF"], sc["GM"], sc["WM"])
                    per_variant.setdefault((name, cname), []).append(dc)
                    fl = run_flags(seg)
                    notes = [n for n in seg.loaded.notes if "background" in n]
                    rows.append(f"| {s} | {name} | {cname} | {dc[0]:.3f} | {dc[1]:.3f} | {dc[2]:.3f} | "
                                f"{seg.info.get('mask_method')} | {'; '.join(fl + notes) or 'none'} | {secs:.1f} |")
                    print(f"{s} {name:26s} {cname:26s} CSF {dc[0]:.3f} GM {dc[1]:.3f} WM {dc[2]:.3f} "
                          f"{seg.info.get('mask_method')} {secs:.1f}s", flush=True)
    raw_rows = raw_head(args.data / "tcia_raw", configs) if (args.data / "tcia_raw" / "t1c.nii.gz").is_file() else []
    total = time.perf_counter() - t_all
    summary = ["| variant | method | mean CSF | mean GM | mean WM |", "|---|---|---|---|---|"]
    for (name, cname), v in per_variant.items():
        m = np.mean(np.asarray(v), axis=0)
        summary.append(f"| {name} | {cname} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} |")
    text = "\n".join([
        "## Tissue on inputs stored the ways real scans arrive",
        "",
        f"Command: `{doc_command('scripts/validate_inputs.py', sys.argv[1:] if argv is None else list(argv))}`  ",
        f"Machine: {machine_line()}  ",
        f"Total: {total:.0f} s for {len(rows)} pipeline runs",
        "",
        f"Data: `../shared/data/ibsr` ({', '.join(subjects)}; 1.5 mm coronal T1, brain-only, manual labels). "
        "Each subject's T1 is rewritten as each variant and run through `run_pipeline` with the defaults, and for "
        "the clipped variants also with `preprocess.saturation: off` (the method before saturated intensities were "
        "restored). Dice on the manual labels, scored as `scripts/validate_ibsr.py` scores them. Variants: " + "; ".join(
            ["clean: as stored", "saturated pQ: min(t1, Q-th brain percentile)",
             "uint8: 99.5th brain percentile -> 255, rounded", "uint8 saturated p80: 80th percentile -> 255, the rest clipped",
             "z-scored: (t1 - mean) / sd in the brain, the outside 0 or one value under the brain's minimum"]) + ".",
        "",
        "### Means over the subjects",
        "",
        *summary,
        "",
        "### A raw head clipped",
        "",
        "`../shared/data/tcia_raw/t1c.nii.gz` alone (raw clinical T1c with skull, 0.9 x 0.9 x 5.5 mm; no manual tissue "
        "labels): as stored, and clipped at the 90th percentile of the HD-BET brain (`brain_mask_t1c.nii.gz`). Mask Dice "
        "against HD-BET; GM / WM Dice against the run on the stored image (tissue voxels of both).",
        "",
        "| variant | method | brain mL | mask Dice vs HD-BET | GM vs stored | WM vs stored | QC flags | seconds |",
        "|---|---|---|---|---|---|---|---|",
        *raw_rows,
        "",
        "### Per subject",
        "",
        "| subject | variant | method | Dice CSF | Dice GM | Dice WM | mask | QC flags and notes | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])
    if args.out is not None:
        text += "\n" + NOTES + kept_notes(args.out)
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
