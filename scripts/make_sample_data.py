#!/usr/bin/env python
"""Regenerate ``sample_data/`` from the phantom generator and the reference scans.

Usage::

    python scripts/make_sample_data.py [--data ../shared/data] [--out sample_data]

Writes (each folder is one case that ``segment.io.cases.find_case`` recognises):

* ``phantom_tissue_0``, ``phantom_skull_1``, ``phantom_tumor_2``: synthetic cases from
  :func:`segment.phantom.make_phantom` (see ``PHANTOMS`` below for the exact calls).
* ``mni152_2mm``: the ICBM 2009a template T1 average-pooled 2x2x2 to 2 mm (over brain voxels), with tissue labels
  (argmax of CSF = 1 - GM - WM, GM, WM inside t1 > 0) from the probability maps pooled the same way.
* ``BraTS-GLI-demo-000``: the BraTS glioma example cropped to the brain's bounding box (plus a
  margin) and average-pooled 2x2x2 to 2 mm, BraTS 2023 file names; no ground truth.
* ``tcga_fg_6692_small``: the raw TCIA exam, each series on its own grid, average-pooled 2x2
  in-plane (slices unchanged); the HD-BET brain mask on the t1c grid (block majority) as
  ``brain_mask_hdbet.nii.gz``.

Every affine is adjusted for the crop (origin moves to the first kept voxel) and the pooling
(voxel size doubles; the new voxel centre is the centre of its block, i.e. old index 2i + 0.5).
The output is deterministic.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segment.io.cases import find_case  # noqa: E402
from segment.io.nifti import save_volume  # noqa: E402
from segment.phantom import make_phantom, write_phantom_case  # noqa: E402

#: case id -> keyword arguments of make_phantom
PHANTOMS: dict[str, dict] = {
    "phantom_tissue_0": dict(seed=0, shape=(64, 76, 64), spacing=(3.0, 3.0, 3.0)),
    "phantom_skull_1": dict(seed=1, shape=(64, 76, 64), spacing=(3.0, 3.0, 3.0), skull=True),
    "phantom_tumor_2": dict(seed=2, shape=(64, 76, 64), spacing=(3.0, 3.0, 3.0), tumor=True),
}


def pool(data: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Block mean over ``factors`` (trailing voxels that do not fill a block are dropped)."""
    fx, fy, fz = factors
    X, Y, Z = (s // f for s, f in zip(data.shape, factors))
    d = np.asarray(data, dtype=np.float64)[: X * fx, : Y * fy, : Z * fz]
    return d.reshape(X, fx, Y, fy, Z, fz).mean(axis=(1, 3, 5))


def pool_brain(data: np.ndarray, factors: tuple[int, int, int], brain: np.ndarray) -> np.ndarray:
    """Block mean over the brain voxels of each block; a block is brain when at least half of
    it is, else 0. A skull-stripped scan is masked after acquisition, so its edge must stay a
    hard cut: averaging zeros into the edge blocks would make a dark rim that no real scan has."""
    num = pool(np.where(brain, data, 0), factors)
    frac = pool(brain.astype(np.float64), factors)
    out = np.where(frac >= 0.5, num / np.maximum(frac, 1e-12), 0.0)
    return out


def pooled_affine(affine: np.ndarray, factors: tuple[int, int, int], start=(0, 0, 0)) -> np.ndarray:
    """Affine of ``pool(data[start:], factors)``: new index i maps to old index
    ``start + factors * i + (factors - 1) / 2`` (the centre of the block)."""
    f = np.asarray(factors, dtype=float)
    m = np.eye(4)
    m[:3, :3] = np.diag(f)
    m[:3, 3] = np.asarray(start, dtype=float) + (f - 1.0) / 2.0
    return np.asarray(affine, dtype=np.float64) @ m


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def make_phantoms(out: Path) -> None:
    for case_id, kw in PHANTOMS.items():
        ph = make_phantom(**kw)
        write_phantom_case(out, ph, case_id)


def make_mni(src: Path, out: Path) -> None:
    t1, aff = load(src / "t1.nii.gz")
    gm, _ = load(src / "gm_prob.nii.gz")
    wm, _ = load(src / "wm_prob.nii.gz")
    f = (2, 2, 2)
    t1p = pool_brain(t1, f, t1 > 0).astype(np.float32)
    gmp = pool(gm, f) / 255.0
    wmp = pool(wm, f) / 255.0
    csfp = np.clip(1.0 - gmp - wmp, 0.0, 1.0)
    seg = (np.argmax(np.stack([csfp, gmp, wmp]), axis=0) + 1).astype(np.uint8)
    seg[t1p <= 0] = 0
    a = pooled_affine(aff, f)
    d = out / "mni152_2mm"
    save_volume(t1p, a, d / "t1.nii.gz", dtype=np.float32)
    save_volume(seg, a, d / "seg.nii.gz", dtype=np.uint8)


def make_brats(src: Path, out: Path, margin: int = 4) -> None:
    names = {"t1n": "t1n", "t1c": "t1c", "t2w": "t2w", "t2f": "t2f"}
    vols = {k: load(src / f"{v}.nii.gz") for k, v in names.items()}
    aff = vols["t1n"][1]
    nonzero = np.zeros(vols["t1n"][0].shape, bool)
    for data, a in vols.values():
        assert np.allclose(a, aff), "BraTS modalities must share one grid"
        nonzero |= data != 0
    idx = np.argwhere(nonzero)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + 1 + margin, nonzero.shape)
    # even extent so that 2x2x2 blocks tile the crop
    hi = np.minimum(lo + 2 * ((hi - lo + 1) // 2), nonzero.shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    f = (2, 2, 2)
    new_aff = pooled_affine(aff, f, start=lo)
    case_id = "BraTS-GLI-demo-000"
    d = out / case_id
    for k, (data, _) in vols.items():
        pooled = pool_brain(data[sl], f, nonzero[sl])
        save_volume(np.rint(pooled).astype(np.int16), new_aff, d / f"{case_id}-{k}.nii.gz")


def make_tcia(src: Path, out: Path) -> None:
    d = out / "tcga_fg_6692_small"
    f = (2, 2, 1)
    for mod in ("t1", "t1c", "t2", "flair"):
        data, aff = load(src / f"{mod}.nii.gz")
        zooms = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
        assert zooms[2] > 2 * zooms[0], f"{mod}: expected the slice axis last"
        pooled = pool(data, f)
        save_volume(np.rint(pooled).astype(np.int16), pooled_affine(aff, f), d / f"{mod}.nii.gz")
    mask, aff = load(src / "brain_mask_t1c.nii.gz")
    pooled = pool(mask > 0, f) >= 0.5
    save_volume(pooled.astype(np.uint8), pooled_affine(aff, f), d / "brain_mask_hdbet.nii.gz")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "sample_data")
    args = ap.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for p in out.iterdir():  # regenerate case folders, keep SOURCES.md
        if p.is_dir():
            shutil.rmtree(p)
    make_phantoms(out)
    make_mni(args.data / "mni152", out)
    make_brats(args.data / "brats_glioma", out)
    make_tcia(args.data / "tcia_raw", out)
    total = 0
    for case_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        case = find_case(case_dir)
        size = sum(f.stat().st_size for f in case_dir.iterdir())
        total += size
        print(f"{case_dir.name:24s} {size / 1e6:5.2f} MB  images={sorted(case.images)} truth={sorted(case.truth)}")
    print(f"{'total':24s} {total / 1e6:5.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
