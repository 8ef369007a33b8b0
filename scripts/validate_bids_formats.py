"""Real scans through BIDS input, BIDS-derivatives output and the non-NIfTI formats.

1. BIDS: the real cases of ``../shared/data`` are laid out as a BIDS dataset (symbolic links,
   nothing copied): ``sub-glioma`` (BraTS: T1w, ce-gd T1w, T2w, FLAIR), ``sub-tcga6692/ses-preop``
   (the raw clinical exam, four grids), ``sub-ibsr01``, ``sub-ibsr03`` (T1w, manual tissue labels
   as ``derivatives/manual/.../*_desc-tissue_dseg.nii.gz``). ``segment batch`` runs on it with
   ``--bids-truth derivatives/manual``; every case's labels are compared voxel by voxel with
   ``segment run`` on the original folder (the same images must give the same labels), the IBSR
   Dice with the plain run's, and every derivatives file name with the official BIDS schema's
   derivative rules (``bidsschematools``, installed into ``.venv-bids`` at the repository root).
2. Formats: the BraTS case written as ``.mha``, ``.nrrd``, ``.mgz`` and DICOM series (int16, one
   file per slice) and run with ``segment run``; labels compared with the NIfTI run's, and the
   output affine with the input's.

Usage (from the repository root)::

    .venv/bin/python scripts/validate_bids_formats.py [--data ../shared/data] [--work results/validate_bids_formats]

Prints a Markdown table per part; ``docs/validation_bids_formats.md`` records one run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segment.io.formats import save_image, volume_to_sitk  # noqa: E402
from segment.io.nifti import load_volume  # noqa: E402

SCHEMA_TOOLS = "bidsschematools==2.0.1"


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("$", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def segment_cmd() -> list[str]:
    return [sys.executable, "-m", "segment.cli"]


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    dst.symlink_to(src.resolve())


def build_bids(data: Path, bids: Path) -> dict[str, Path]:
    """The real cases as a BIDS dataset of links; returns case id -> original case folder."""
    if bids.exists():
        shutil.rmtree(bids)
    bids.mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "segment validation", "BIDSVersion": "1.10.0"}))
    g = data / "brats_glioma"
    for suffix, f in {"T1w": "t1n", "ce-gd_T1w": "t1c", "T2w": "t2w", "FLAIR": "t2f"}.items():
        link(g / f"{f}.nii.gz", bids / "sub-glioma" / "anat" / f"sub-glioma_{suffix}.nii.gz")
    t = data / "tcia_raw"
    for suffix, f in {"T1w": "t1", "ce-gd_T1w": "t1c", "T2w": "t2", "FLAIR": "flair"}.items():
        link(t / f"{f}.nii.gz", bids / "sub-tcga6692" / "ses-preop" / "anat" / f"sub-tcga6692_ses-preop_{suffix}.nii.gz")
    orig = {"sub-glioma": g, "sub-tcga6692_ses-preop": t}
    for n in ("01", "03"):
        s = data / "ibsr" / f"IBSR_{n}"
        link(s / "t1.nii.gz", bids / f"sub-ibsr{n}" / "anat" / f"sub-ibsr{n}_T1w.nii.gz")
        link(s / "seg_tissue.nii.gz",
             bids / "derivatives" / "manual" / f"sub-ibsr{n}" / "anat" / f"sub-ibsr{n}_desc-tissue_dseg.nii.gz")
        orig[f"sub-ibsr{n}"] = s
    return orig


def labels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def agreement(a: np.ndarray, b: np.ndarray) -> str:
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}"
    return f"{np.mean(a == b) * 100:.4f} %"


def schema_check(out: Path, work: Path) -> tuple[int, list[str]]:
    """Names under ``out`` (but segment/ and dot files) checked against the BIDS schema's rules."""
    venv = ROOT / ".venv-bids"
    py = venv / "bin" / "python"
    if not py.exists():
        sh([sys.executable, "-m", "venv", venv])
        sh([py, "-m", "pip", "install", "-q", SCHEMA_TOOLS])
    code = r"""
import json, os, re, sys
import bidsschematools.rules as R, bidsschematools.schema as S
schema = S.load_schema()
regs = []
for group in (schema.rules.files.common, schema.rules.files.deriv):
    regs.extend(R.regexify_filename_rules(group, schema, level=2))
root = sys.argv[1]
files, bad = [], []
for dp, dn, fn in os.walk(root):
    dn[:] = [d for d in dn if not d.startswith(".") and not (dp == root and d == "segment")]
    for f in fn:
        if f.startswith("."):
            continue
        rel = os.path.relpath(os.path.join(dp, f), root)
        files.append(rel)
        if not any(re.match(r["regex"], rel) for r in regs):
            bad.append(rel)
print(json.dumps({"version": schema.bids_version, "n": len(files), "bad": bad}))
"""
    res = subprocess.run([str(py), "-c", code, str(out)], check=True, capture_output=True, text=True)
    doc = json.loads(res.stdout)
    print(f"BIDS schema {doc['version']}: {doc['n']} files, {len(doc['bad'])} not matching a derivative rule")
    return doc["n"], doc["bad"]


def part_bids(data: Path, work: Path) -> list[str]:
    bids = work / "bids"
    orig = build_bids(data, bids)
    out = work / "bids_out"
    t0 = time.perf_counter()
    sh(segment_cmd() + ["batch", "--input", bids, "--out", out, "--bids-truth", "derivatives/manual",
                        "--workers", "1", "--no-progress", "--force"], cwd=ROOT)
    t_bids = time.perf_counter() - t0
    rows = ["| case | modalities | tissue labels = plain run | tumor labels = plain run | Dice GM / WM (BIDS truth) | Dice GM / WM (plain) |",
            "|---|---|---|---|---|---|"]
    for case, folder in orig.items():
        plain = work / "plain"
        sh(segment_cmd() + ["run", folder, "--out", plain], cwd=ROOT, stdout=subprocess.DEVNULL)
        man = json.loads((out / "segment" / case / "result.json").read_text())
        mods = ", ".join(sorted(n for n, *_ in man["inputs"]))
        sub, _, ses = case.partition("_")
        anat = out / sub / (ses if ses else "") / "anat"
        a = labels(anat / f"{case}_dseg.nii.gz")
        b = labels(plain / folder.name / "tissue.nii.gz")
        tum_b = plain / folder.name / "tumor.nii.gz"
        tum = agreement(labels(anat / f"{case}_desc-tumor_dseg.nii.gz"), labels(tum_b)) if tum_b.exists() else "no tumor task"
        m1 = json.loads((out / "segment" / case / "metrics.json").read_text()) if (out / "segment" / case / "metrics.json").exists() else {}
        m2 = json.loads((plain / folder.name / "metrics.json").read_text()) if (plain / folder.name / "metrics.json").exists() else {}
        d = lambda m: (f"{m['dice_GM']:.4f} / {m['dice_WM']:.4f}" if "dice_GM" in m else "-")  # noqa: E731
        rows.append(f"| {case} | {mods} | {agreement(a, b)} | {tum} | {d(m1)} | {d(m2)} |")
    n, bad = schema_check(out, work)
    rows.append("")
    rows.append(f"BIDS batch of {len(orig)} cases: {t_bids:.1f} s. Derivatives tree: {n} files checked against the "
                f"BIDS schema's derivative naming rules, {len(bad)} not matching{': ' + ', '.join(bad) if bad else ''}.")
    return rows


def write_dicom(vol, folder: Path) -> str:
    import SimpleITK as sitk

    data = vol.data
    scale = 1.0
    if not np.allclose(data, np.rint(data)) or data.max() > 32767 or data.min() < -32768:
        scale = 4000.0 / float(np.abs(data).max())
    q = np.rint(data * scale).astype(np.int16)
    img = volume_to_sitk(q, vol.affine)
    folder.mkdir(parents=True, exist_ok=True)
    w = sitk.ImageFileWriter()
    w.KeepOriginalImageUIDOn()
    d = img.GetDirection()
    uid = f"1.2.826.0.1.3680043.2.1125.{abs(hash(folder.name)) % 10**8}"
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        for key, val in {"0008|0060": "MR", "0020|000e": uid, "0020|000d": uid + ".0", "0020|0013": str(k + 1),
                         "0008|0018": f"{uid}.{k + 1}",
                         "0020|0032": "\\".join(f"{v:.6f}" for v in img.TransformIndexToPhysicalPoint((0, 0, k))),
                         "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))}.items():
            sl.SetMetaData(key, val)
        w.SetFileName(str(folder / f"{k:04d}.dcm"))
        w.Execute(sl)
    return "exact" if scale == 1.0 else f"x{scale:.3g}, rounded"


def part_formats(data: Path, work: Path) -> list[str]:
    g = data / "brats_glioma"
    mods = {"t1": "t1n", "t1c": "t1c", "t2": "t2w", "flair": "t2f"}
    ref_out = work / "formats_out" / "nifti"
    sh(segment_cmd() + ["run", g, "--out", ref_out], cwd=ROOT, stdout=subprocess.DEVNULL)
    ref_tissue = labels(ref_out / g.name / "tissue.nii.gz")
    ref_tumor = labels(ref_out / g.name / "tumor.nii.gz")
    ref_aff = nib.load(str(g / "t1n.nii.gz")).affine
    rows = ["| format | values | tissue labels = NIfTI run | tumor labels = NIfTI run | output affine = input's | seconds |",
            "|---|---|---|---|---|---|"]
    for fmt in (".mha", ".nrrd", ".mgz", "dicom"):
        case = work / "formats" / fmt.strip(".") / "glioma"
        if case.exists():
            shutil.rmtree(case)
        values = "exact"
        for m, f in mods.items():
            vol = load_volume(g / f"{f}.nii.gz")
            if fmt == "dicom":
                values = write_dicom(vol, case / m)
            else:
                save_image(vol.data, vol.affine, case / f"{m}{fmt}")
        out = work / "formats_out" / fmt.strip(".")
        t0 = time.perf_counter()
        sh(segment_cmd() + ["run", case, "--out", out], cwd=ROOT, stdout=subprocess.DEVNULL)
        sec = time.perf_counter() - t0
        tis = nib.load(str(out / "glioma" / "tissue.nii.gz"))
        same_aff = np.allclose(tis.affine, ref_aff, atol=1e-3)
        rows.append(f"| {fmt} | {values} | {agreement(np.asarray(tis.dataobj), ref_tissue)} | "
                    f"{agreement(labels(out / 'glioma' / 'tumor.nii.gz'), ref_tumor)} | {same_aff} | {sec:.1f} |")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=ROOT / "results" / "validate_bids_formats")
    ap.add_argument("--part", choices=("bids", "formats", "all"), default="all")
    args = ap.parse_args()
    if not (args.data / "brats_glioma").is_dir():
        raise SystemExit(f"{args.data}: no brats_glioma/ here; pass --data (the shared reference data)")
    args.data = args.data.absolute()
    args.work.mkdir(parents=True, exist_ok=True)
    out = []
    if args.part in ("bids", "all"):
        out += ["## BIDS dataset of real scans", ""] + part_bids(args.data, args.work.absolute()) + [""]
    if args.part in ("formats", "all"):
        out += ["## The BraTS case in other formats", ""] + part_formats(args.data, args.work.absolute()) + [""]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
