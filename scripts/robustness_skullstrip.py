#!/usr/bin/env python
"""Robustness of ``skullstrip`` to label-preserving transforms of one raw exam.

Usage (from the repository root)::

    .venv/bin/python scripts/robustness_skullstrip.py [--data ../shared/data] [--write]

(``--data`` defaults to ``../shared/data`` next to the repository root.)

Takes the raw clinical t1c of ``tcia_raw`` (reoriented to RAS as segment's loader does) and its
HD-BET mask, applies the same transform to both (axis order and flips of the stored file,
resampling to 1 mm and 2 mm, a different field of view, intensity scale and offset, a smooth
bias, Rician noise), strips the transformed image and reports Dice against the transformed mask
and the seconds of ``skullstrip``. Nothing is tuned here: a case that falls well below the
untransformed Dice points to a rule that is not general (voxels instead of millimetres, an axis
assumption, an intensity constant).

Orientation cases are run twice: through what ``segment skullstrip FILE`` does (the stored array
is reoriented to RAS first; the command itself is run on a written file and its output file is
scored in the file's own orientation), and with the stored array passed straight to
``skullstrip()``, which documents RAS input (axis 2 superior) - that row shows what a Python
caller who skips the reorientation gets.

With ``--baseline FILE`` (another version of ``segment/preprocess/skullstrip.py``, e.g. from
``git show HEAD:segment/preprocess/skullstrip.py > skullstrip_head.py``) every case is also
run with that version and its Dice is added as a column.

This measures ``skullstrip()`` without a template prior (``--no-template``, the fallback of a
poor registration). With ``--write`` the table replaces (or appends) its section of
docs/validation_skullstrip.md.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from segment.cli import main as cli_main  # noqa: E402
from segment.io.nifti import from_ras, load_volume, reorient_to_ras, resample_to  # noqa: E402
from segment.preprocess.skullstrip import skullstrip  # noqa: E402
from segment.types import Volume  # noqa: E402

SECTION = "## Image-only method (`--no-template`): robustness to label-preserving transforms"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


# ------------------------------------------------------------------------------ transforms
def reorder(vol: Volume, perm: tuple[int, int, int], flips: tuple[int, ...] = ()) -> Volume:
    """The same voxels stored with array axes ``perm`` of ``vol`` (then ``flips`` reversed),
    with the affine changed so every voxel keeps its world position."""
    data = np.transpose(vol.data, perm)
    aff = vol.affine.copy()
    aff[:3, :3] = vol.affine[:3, list(perm)]
    for ax in flips:
        data = np.flip(data, axis=ax)
        col = aff[:3, ax].copy()
        aff[:3, 3] = aff[:3, 3] + col * (data.shape[ax] - 1)
        aff[:3, ax] = -col
    return Volume(np.ascontiguousarray(data), aff, vol.path)


def regrid(vol: Volume, mask: Volume, step: float) -> tuple[Volume, Volume]:
    """Resample image (trilinear) and mask (trilinear > 0.5) onto an isotropic grid of ``step``
    mm covering the same physical box, axes along the voxel axes of ``vol``."""
    sp = np.asarray(vol.spacing)
    extent = sp * np.asarray(vol.shape)
    shape = tuple(int(np.round(e / step)) for e in extent)
    aff = vol.affine.copy()
    dirs = vol.affine[:3, :3] / sp
    aff[:3, :3] = dirs * step
    # first voxel centre: same box corner as the original grid
    corner = vol.affine[:3, 3] - 0.5 * vol.affine[:3, :3].sum(axis=1)
    aff[:3, 3] = corner + 0.5 * aff[:3, :3].sum(axis=1)
    ref = Volume(np.zeros(shape, np.float32), aff)
    img = resample_to(vol, ref, order=1)
    m = resample_to(Volume(mask.data.astype(np.float32), mask.affine), ref, order=1)
    return img, Volume((m.data > 0.5).astype(np.float32), aff)


def crop_or_pad(vol: Volume, before_mm, after_mm, fill: str = "zero", seed: int = 0) -> Volume:
    """Remove (negative) or add (positive) millimetres on each side; added voxels are 0 or air
    noise drawn from the image's own corner voxels (``fill='air'``)."""
    sp = np.asarray(vol.spacing)
    b = [int(round(v / s)) for v, s in zip(before_mm, sp)]
    a = [int(round(v / s)) for v, s in zip(after_mm, sp)]
    data = vol.data
    sl = tuple(slice(max(-bb, 0), n - max(-aa, 0)) for bb, aa, n in zip(b, a, data.shape))
    data = data[sl]
    pads = [(max(bb, 0), max(aa, 0)) for bb, aa in zip(b, a)]
    shift = np.array([s.start for s in sl], float) - np.array([p[0] for p in pads], float)
    out = np.pad(data, pads)
    if fill == "air" and any(p != (0, 0) for p in pads):
        rng = np.random.default_rng(seed)
        c = 10
        corners = np.concatenate([vol.data[i, j, :].ravel() for i in (slice(0, c), slice(-c, None))
                                  for j in (slice(0, c), slice(-c, None))])
        inner = np.zeros(out.shape, bool)
        inner[tuple(slice(p[0], p[0] + n) for p, n in zip(pads, data.shape))] = True
        out[~inner] = rng.choice(corners, size=int((~inner).sum()))
    aff = vol.affine.copy()
    aff[:3, 3] = vol.affine[:3, :3] @ shift + vol.affine[:3, 3]
    return Volume(np.ascontiguousarray(out, dtype=vol.data.dtype), aff, vol.path)


def bias_field(shape, spacing, kind: str) -> np.ndarray:
    """Smooth multiplicative field, about 30 % from its lowest to its highest value."""
    c = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)]
    x, y, z = np.meshgrid(*c, indexing="ij", sparse=True)
    if kind == "linear":  # oblique ramp across the head
        r = (x + 0.5 * y + 0.8 * z) / 100.0
        f = 1.0 + 0.15 * np.clip(r, -1, 1)
    else:  # centre-bright (a head coil), falling 30 % to the edges of the box
        half = np.array([n * s / 2.0 for n, s in zip(shape, spacing)])
        r2 = (x / half[0]) ** 2 + (y / half[1]) ** 2 + (z / half[2]) ** 2
        f = 1.15 - 0.3 * np.clip(r2 / 3.0, 0, 1) * 1.0
    return np.broadcast_to(f, shape).astype(np.float32)


def rician(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = img.astype(np.float64)
    return np.sqrt((a + rng.normal(0, sigma, a.shape)) ** 2 + rng.normal(0, sigma, a.shape) ** 2).astype(np.float32)


# ------------------------------------------------------------------------------ runner
def load_strip(path: Path):
    """``skullstrip`` from another version of the module file."""
    spec = importlib.util.spec_from_file_location("skullstrip_baseline", str(path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.skullstrip


def run_direct(img: np.ndarray, spacing, truth: np.ndarray, strip=skullstrip) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    m = strip(img, spacing, modalities=["t1c"])
    sec = time.perf_counter() - t0
    return dice(m, truth), sec, float(m.sum()) * float(np.prod(spacing)) / 1000.0


def run_via_ras(vol: Volume, truth: Volume, strip=skullstrip) -> tuple[float, float, float]:
    """What the pipeline and ``segment skullstrip`` do: reorient to RAS, strip, back."""
    ras = reorient_to_ras(vol)
    t0 = time.perf_counter()
    m = strip(ras.data, ras.spacing, modalities=["t1c"])
    sec = time.perf_counter() - t0
    back = from_ras(m.astype(np.uint8), vol) > 0
    return dice(back, truth.data > 0.5), sec, float(m.sum()) * float(np.prod(ras.spacing)) / 1000.0


def run_cli(vol: Volume, truth: Volume, tmp: Path, tag: str) -> float:
    """``segment skullstrip`` on a written file; the written mask scored in file orientation."""
    src, out = tmp / f"{tag}.nii.gz", tmp / f"{tag}_mask.nii.gz"
    nib.save(nib.Nifti1Image(vol.data.astype(np.float32), vol.affine), str(src))
    with contextlib.redirect_stdout(io.StringIO()):  # the command prints a JSON line
        rc = cli_main(["skullstrip", str(src), "--out", str(out)])
    if rc != 0:
        return float("nan")
    m = np.asarray(nib.load(str(out)).dataobj) > 0
    return dice(m, truth.data > 0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "validation_skullstrip.md")
    ap.add_argument("--write", action="store_true", help="write the table into --doc")
    ap.add_argument("--only", default=None, help="comma-separated case-name prefixes to run")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another skullstrip.py to run on every case for comparison")
    args = ap.parse_args()
    base_strip = load_strip(args.baseline) if args.baseline else None
    raw = args.data / "tcia_raw"
    img0 = reorient_to_ras(load_volume(raw / "t1c.nii.gz"))
    msk0 = reorient_to_ras(load_volume(raw / "brain_mask_t1c.nii.gz"))
    msk0 = Volume((msk0.data > 0.5).astype(np.float32), msk0.affine)
    truth0 = msk0.data > 0.5
    sp0 = img0.spacing
    brain_med = float(np.median(img0.data[truth0]))

    rows: list[dict] = []
    wanted = None if args.only is None else [s.strip() for s in args.only.split(",")]

    def add(name: str, what: str, fn) -> None:
        """``fn(strip)`` runs one case with a skullstrip function and returns (Dice, seconds,
        mL, grid, spacing, note)."""
        if wanted is not None and not any(name.startswith(w) for w in wanted):
            return
        try:
            d, sec, ml, shape, sp, extra = fn(skullstrip)
        except Exception as exc:  # report, keep going
            rows.append(dict(name=name, what=what, dice=float("nan"), sec=float("nan"), ml=float("nan"),
                             shape="-", sp="-", extra=f"error: {type(exc).__name__}: {exc}"))
        else:
            rows.append(dict(name=name, what=what, dice=d, sec=sec, ml=ml, shape=shape, sp=sp, extra=extra))
        r = rows[-1]
        r["base"] = float("nan")
        if base_strip is not None:
            try:
                r["base"] = fn(base_strip, cli=False)[0]
            except Exception:  # noqa: BLE001 - the baseline may fail where the new one does not
                pass
        print(f"{name:28s} Dice {r['dice']:.3f} (baseline {r['base']:.3f})  {r['sec']:5.1f} s  "
              f"{r['ml']:6.0f} mL  {r['shape']} {r['extra']}", flush=True)

    def fmt_sp(sp) -> str:
        return "x".join(f"{s:.2g}" for s in sp)

    def direct(strip, img: np.ndarray, sp, truth: np.ndarray, extra: str = ""):
        d, sec, ml = run_direct(img, sp, truth, strip)
        return d, sec, ml, "x".join(map(str, img.shape)), fmt_sp(sp), extra

    add("reference", "RAS t1c as loaded", lambda st, cli=True: direct(st, img0.data, sp0, truth0))

    # (a) stored orientation
    orients = [
        ("sagittal", (1, 2, 0), (1,), "stored as a sagittal acquisition (A-P, S-I, L-R axes)"),
        ("coronal", (0, 2, 1), (2,), "stored as a coronal acquisition (L-R, S-I, A-P axes)"),
        ("flipped LPI", (0, 1, 2), (1, 2), "axes kept, A-P and S-I reversed"),
    ]
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for tag, perm, flips, what in orients:
            v, t = reorder(img0, perm, flips), reorder(msk0, perm, flips)

            def via(st, cli=True, v=v, t=t, tag=tag):
                d, sec, ml = run_via_ras(v, t, st)
                note = "-"
                if cli:
                    note = f"`segment skullstrip` file: Dice {run_cli(v, t, tmp, tag.replace(' ', '_')):.3f}"
                return d, sec, ml, "x".join(map(str, v.shape)), fmt_sp(v.spacing), note

            add(f"a. {tag}, via RAS", what + "; reoriented to RAS first (pipeline, CLI)", via)
            add(f"a. {tag}, array as stored", what + "; array passed to skullstrip() as stored",
                lambda st, cli=True, v=v, t=t: direct(st, v.data, v.spacing, t.data > 0.5))

    # (b, c) isotropic grids
    for step in (1.0, 2.0):
        def iso(st, cli=True, step=step):
            v, t = regrid(img0, msk0, step)
            return direct(st, v.data, v.spacing, t.data > 0.5)
        add(f"{'b' if step == 1 else 'c'}. {step:g} mm isotropic", f"resampled to {step:g} mm (trilinear; mask "
            "trilinear > 0.5)", iso)

    # (d) field of view
    fovs = [
        ("d. 20 mm less inferior", (0, 0, -20), (0, 0, 0), "zero", "20 mm more cut off at the bottom"),
        ("d. 30 mm zero padding", (30, 30, 30), (30, 30, 30), "zero", "30 mm of exact zeros on every side"),
        ("d. 40 mm air padding", (40, 40, 40), (40, 40, 40), "air",
         "40 mm of air noise (drawn from the image's corners) on every side"),
        ("d. tight in-plane crop", (-20, -15, 0), (-20, -15, 0), "zero",
         "20 mm (L-R) and 15 mm (A-P) cut off on each side: scalp touches the border"),
    ]
    for name, b, a, fill, what in fovs:
        def fov(st, cli=True, b=b, a=a, fill=fill):
            v, t = crop_or_pad(img0, b, a, fill), crop_or_pad(msk0, b, a, "zero")
            return direct(st, v.data, v.spacing, t.data > 0.5)
        add(name, what, fov)

    # (e) intensities
    add("e. x1000 + offset", "intensities x1000, + 20 % of the brain median",
        lambda st, cli=True: direct(st, img0.data * 1000.0 + 0.2 * brain_med * 1000.0, sp0, truth0))
    add("e. x0.001", "intensities x0.001", lambda st, cli=True: direct(st, img0.data * 1e-3, sp0, truth0))
    add("e. bias 30 % oblique ramp", "smooth multiplicative ramp, 0.85-1.15 across the head",
        lambda st, cli=True: direct(st, img0.data * bias_field(img0.shape, sp0, "linear"), sp0, truth0))
    add("e. bias 30 % centre-bright", "smooth multiplicative field, 1.15 at the centre to 0.85",
        lambda st, cli=True: direct(st, img0.data * bias_field(img0.shape, sp0, "radial"), sp0, truth0))

    # (f) noise
    for pct in (3, 6, 10):
        add(f"f. Rician noise {pct} %", f"Rician noise, sigma {pct} % of the brain median",
            lambda st, cli=True, pct=pct: direct(st, rician(img0.data, pct / 100.0 * brain_med, pct), sp0, truth0))

    ref = rows[0]["dice"] if rows and rows[0]["name"] == "reference" else float("nan")
    lines = [
        SECTION,
        "",
        "Generated by `scripts/robustness_skullstrip.py --write`. The tcia_raw t1c and its HD-BET "
        "mask undergo the same transform; Dice of `skullstrip(..., modalities=['t1c'])` against the "
        "transformed mask, and its seconds. Rows marked 'array as stored' pass a non-RAS array "
        "straight to `skullstrip()`; the pipeline and `segment skullstrip` reorient to RAS first "
        "(rows 'via RAS', with the Dice of the file written by the command). The field of view of "
        "this exam cuts the vertex, so the neck rule (the one step that needs axis 2 superior) is "
        "off here; the synthetic heads of tests/preprocess/test_skullstrip_robustness.py check "
        "axis order and flips with the whole head in view.",
        "",
    ]
    has_base = base_strip is not None
    if has_base:
        lines += [
            f"Column 'baseline': the same case with `{args.baseline.name}`, the module before the "
            "robustness changes (`git show c4bf9e1:segment/preprocess/skullstrip.py`), run with "
            "`--baseline`.",
            "",
        ]
    head = "| case | transform | grid | spacing (mm) | Dice | vs reference | "
    head += "baseline | " if has_base else ""
    head += "seconds | mask (mL) | note |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        delta = r["dice"] - ref
        line = (f"| {r['name']} | {r['what']} | {r['shape']} | {r['sp']} | {r['dice']:.3f} | "
                f"{delta:+.3f} | ")
        line += f"{r['base']:.3f} | " if has_base else ""
        line += f"{r['sec']:.1f} | {r['ml']:.0f} | {r['extra'] or '-'} |"
        lines.append(line)
    table = "\n".join(lines) + "\n"
    print()
    print(table)
    if args.write:
        text = args.doc.read_text()
        start = text.find(SECTION)
        if start >= 0:
            end = text.find("\n## ", start + len(SECTION))
            text = text[:start] + table + ("\n" + text[end + 1:] if end >= 0 else "")
        else:
            text = text + "\n" + table
        args.doc.write_text(text)
        print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
