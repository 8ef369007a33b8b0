#!/usr/bin/env python
"""Validate segment's skull stripping on ../shared/data and write docs/validation_skullstrip.md.

Usage (from the repository root)::

    .venv/bin/python scripts/validate_skullstrip.py [--data /work/shared/data]

Measures, in one run: Dice against the HD-BET mask of the raw clinical exam (tcia_raw) when
stripping from t1c, t1, t2, flair (each resampled onto the t1c grid by physical coordinates after
reorientation to RAS) and from all four together; brain-only detection on BraTS, MNI152 and the
raw series; skull stripping applied to brain-only images (sanity). Writes overlay PNGs to
docs/figures/skullstrip_*.png.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from segment.io.nifti import load_volume, reorient_to_ras  # noqa: E402
from segment.io.nifti import resample_to as resample_volume  # noqa: E402
from segment.io.register import apply_rigid, rigid_register  # noqa: E402
from segment.preprocess.skullstrip import (  # noqa: E402
    brain_mask_nonzero,
    is_brain_only,
    mask_quality_flags,
    skullstrip,
)

SERIES = ["t1c", "t1", "t2", "flair"]



#: Text after this marker in --out (robustness table, known limitations) is kept on a re-run.
NOTES = "<!-- notes: kept when the script rewrites this file -->"
DEFAULT_TAIL = """## Known limitations

- Only one raw exam is available here; the defaults were chosen on it plus synthetic heads (tests),
  so held-out scans may behave differently.
"""

def load_ras(path: Path) -> nib.Nifti1Image:
    return nib.as_closest_canonical(nib.load(str(path)))


def resample_to(img: nib.Nifti1Image, ref: nib.Nifti1Image, order: int = 1) -> np.ndarray:
    """img's voxels sampled on ref's grid by physical (RAS mm) coordinates; 0 outside img."""
    m = np.linalg.inv(img.affine) @ ref.affine
    data = np.asarray(img.dataobj, dtype=np.float32)
    return ndi.affine_transform(data, m[:3, :3], m[:3, 3], output_shape=ref.shape, order=order,
                                mode="constant", cval=0.0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def spacing_of(img: nib.Nifti1Image) -> tuple[float, float, float]:
    return tuple(float(s) for s in np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0)))


def overlay(path: Path, image: np.ndarray, mask: np.ndarray, spacing, title: str,
            truth: np.ndarray | None = None, ref_name: str = "HD-BET") -> None:
    """Mask contour (green; reference in red) over axial slices and one coronal, one sagittal."""
    zs = np.nonzero(mask.any(axis=(0, 1)))[0]
    if truth is not None:
        zs = np.union1d(zs, np.nonzero(truth.any(axis=(0, 1)))[0])
    axial = np.unique(np.linspace(zs.min(), zs.max(), 6).round().astype(int))
    cx, cy, _ = (int(round(c)) for c in ndi.center_of_mass(mask))
    vmax = float(np.percentile(image, 99.5)) or 1.0
    panels = [("axial z=%d" % z, image[:, :, z], mask[:, :, z],
               None if truth is None else truth[:, :, z], spacing[1] / spacing[0]) for z in axial]
    panels.append(("coronal y=%d" % cy, image[:, cy, :], mask[:, cy, :],
                   None if truth is None else truth[:, cy, :], spacing[2] / spacing[0]))
    panels.append(("sagittal x=%d" % cx, image[cx, :, :], mask[cx, :, :],
                   None if truth is None else truth[cx, :, :], spacing[2] / spacing[1]))
    fig, axes = plt.subplots(2, 4, figsize=(16, 8.5))
    for ax, (name, im, m, t, aspect) in zip(axes.flat, panels):
        ax.imshow(im.T, origin="lower", cmap="gray", vmin=0, vmax=vmax, aspect=aspect,
                  interpolation="nearest")
        if t is not None and t.any():
            ax.contour(t.T.astype(float), [0.5], colors="red", linewidths=0.9)
        if m.any():
            ax.contour(m.T.astype(float), [0.5], colors="lime", linewidths=0.9)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title + (f"  (green: segment, red: {ref_name})" if truth is not None else
                          "  (green: segment)"), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "validation_skullstrip.md")
    args = ap.parse_args()
    figdir = args.out.parent / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    raw = args.data / "tcia_raw"

    ref = load_ras(raw / "t1c.nii.gz")
    sp = spacing_of(ref)
    vox_ml = float(np.prod(sp)) / 1000.0
    truth = resample_to(load_ras(raw / "brain_mask_t1c.nii.gz"), ref, order=0) > 0.5
    # every series rigidly registered onto t1c first, as segment's loader does (the patient
    # moved between series), then resampled onto its grid
    ref_vol = reorient_to_ras(load_volume(raw / "t1c.nii.gz"))
    images, motion = {}, {}
    for s in SERIES:
        vol = reorient_to_ras(load_volume(raw / f"{s}.nii.gz"))
        if s != "t1c":
            res = rigid_register(vol, ref_vol)
            vol = apply_rigid(vol, res)
            motion[s] = res.summary()
        images[s] = resample_volume(vol, ref_vol).data

    rows = []
    runs = [[s] for s in SERIES] + [SERIES]
    for combo in runs:
        t0 = time.perf_counter()
        mask = skullstrip([images[s] for s in combo], sp, modalities=combo)
        sec = time.perf_counter() - t0
        name = "+".join(combo)
        # where the (first) series has data: t2 and flair do not cover the top of the head
        fov = np.ones_like(truth)
        for s in combo:
            fov &= images[s] != 0 if len(combo) == 1 else True
        fov = ndi.binary_fill_holes(fov) if len(combo) == 1 else fov
        rows.append(dict(input=name, dice=dice(mask, truth), dice_fov=dice(mask & fov, truth & fov),
                         sec=sec, ml=float(mask.sum()) * vox_ml,
                         flags="; ".join(mask_quality_flags(mask, sp)) or "-"))
        tag = name.replace("+", "_") if len(combo) == 1 else "all4"
        overlay(figdir / f"skullstrip_tcia_{tag}.png", images[combo[0]], mask, sp,
                f"tcia_raw, stripped from {name}: Dice {rows[-1]['dice']:.3f}", truth)
        print(f"{name:24s} Dice {rows[-1]['dice']:.4f}  {sec:5.2f} s  {rows[-1]['ml']:7.0f} mL",
              flush=True)
    truth_ml = float(truth.sum()) * vox_ml

    # brain-only detection
    detect = []
    for f in sorted((args.data / "brats_glioma").glob("*.nii.gz")) + [args.data / "mni152" / "t1.nii.gz"]:
        detect.append((f, True, is_brain_only(np.asarray(load_ras(f).dataobj, dtype=np.float32))))
    for s in SERIES:
        f = raw / f"{s}.nii.gz"
        detect.append((f, False, is_brain_only(np.asarray(load_ras(f).dataobj, dtype=np.float32))))

    # skull stripping on brain-only images must not be absurd
    sanity = []
    for f, mod in [(args.data / "brats_glioma" / "BraTS-GLI-00000-000-t1c.nii.gz", "t1c"),
                   (args.data / "mni152" / "t1.nii.gz", "t1")]:
        if not f.exists():
            f = sorted(f.parent.glob(f"*{mod}*.nii.gz"))[0]
        img = load_ras(f)
        a = np.asarray(img.dataobj, dtype=np.float32)
        s2 = spacing_of(img)
        ref_mask = brain_mask_nonzero(a, s2)
        t0 = time.perf_counter()
        m = skullstrip(a, s2, modalities=[mod])
        sec = time.perf_counter() - t0
        v = float(np.prod(s2)) / 1000.0
        sanity.append(dict(file=f"{f.parent.name}/{f.name}", dice=dice(m, ref_mask), sec=sec,
                           ml=float(m.sum()) * v, ref_ml=float(ref_mask.sum()) * v))
        overlay(figdir / f"skullstrip_brainonly_{f.parent.name}.png", a, m, s2,
                f"{f.parent.name}/{f.name}: skullstrip", ref_mask, ref_name="non-zero region")
        print(f"brain-only {f.name}: Dice vs non-zero {sanity[-1]['dice']:.4f} {sec:.2f} s", flush=True)

    lines = [
        "# Skull stripping: validation",
        "",
        "Generated by `scripts/validate_skullstrip.py`; reproduce with",
        "",
        "```",
        ".venv/bin/python scripts/validate_skullstrip.py --data /work/shared/data",
        "```",
        "",
        "Method: `segment.preprocess.skullstrip.skullstrip` (module docstring). All defaults.",
        "",
        "## Raw clinical exam (tcia_raw, TCGA-FG-6692) vs the HD-BET mask",
        "",
        f"Every series reoriented to RAS, rigidly registered onto t1c (`segment.io.register`, as the "
        f"pipeline's loader does) and resampled (trilinear) onto the "
        f"t1c grid {ref.shape}, spacing {tuple(round(s, 2) for s in sp)} mm. HD-BET mask volume "
        f"{truth_ml:.0f} mL. 'Dice in FOV' restricts both masks to the series' field of view "
        "(t2 and flair do not cover the top ~25 mm of the head). Seconds: wall time of "
        f"`skullstrip` alone (2-core machine).",
        "",
        "| input | Dice | Dice in FOV | seconds | mask volume (mL) | quality flags |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['input']} | {r['dice']:.3f} | {r['dice_fov']:.3f} | {r['sec']:.1f} | "
                     f"{r['ml']:.0f} | {r['flags']} |")
    lines += ["", "Registration onto t1c: " + "; ".join(f"{k}: {v}" for k, v in motion.items()) + "."]
    lines += [
        "",
        "Reference points: ROBEX reaches Dice 0.943 on t1c in about 55 s. The 'touches the image "
        "border' flag is expected here: the exam's field of view cuts the brain at the top and "
        "bottom.",
        "",
        "Overlays (green: segment, red: HD-BET):",
        "",
    ]
    for combo in runs:
        tag = combo[0] if len(combo) == 1 else "all4"
        lines.append(f"![{'+'.join(combo)}](figures/skullstrip_tcia_{tag}.png)")
    lines += [
        "",
        "## Brain-only detection (`is_brain_only`)",
        "",
        "| file | expected | result |",
        "|---|---|---|",
    ]
    for f, exp, got in detect:
        lines.append(f"| {f.parent.name}/{f.name} | {exp} | {got} {'ok' if exp == got else 'WRONG'} |")
    lines += [
        "",
        "## Skull stripping applied to brain-only images (sanity)",
        "",
        "The pipeline uses `brain_mask_nonzero` for such images; this checks that `skullstrip` "
        "does not do something absurd when given one anyway.",
        "",
        "| file | Dice vs non-zero region | seconds | mask (mL) | non-zero region (mL) |",
        "|---|---|---|---|---|",
    ]
    for s in sanity:
        lines.append(f"| {s['file']} | {s['dice']:.3f} | {s['sec']:.1f} | {s['ml']:.0f} | "
                     f"{s['ref_ml']:.0f} |")
    lines += [
        "",
        "`skullstrip` is not meant for brain-only images: without skull and scalp, its seed "
        "(>= 10 mm below the head surface, eroded 5 mm) is reconstructed only 5.5 mm outward, so "
        "it drops a 4-5 mm band of cortex and the thin inferior structures; the mask stays "
        "compact and inside the brain. Use `is_brain_only` + `brain_mask_nonzero` for these.",
        "",
    ]
    for s in sanity:
        lines.append(f"![{s['file']}](figures/skullstrip_brainonly_{s['file'].split('/')[0]}.png)")
    lines += ["", NOTES]
    # the robustness section (scripts/robustness_skullstrip.py --write) and the hand-written
    # known limitations follow the marker and survive a re-run
    tail = "\n" + DEFAULT_TAIL
    if args.out.is_file() and NOTES in args.out.read_text():
        tail = args.out.read_text().split(NOTES, 1)[1]
    args.out.write_text("\n".join(lines) + tail)
    print(f"wrote {args.out}")
    ok = all(exp == got for _, exp, got in detect)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
