"""Rebuild the bundled head template of ``segment.atlas`` from ``../shared/data/mni152_fsl``.

FSL's MNI152 T1 1 mm head (182 x 218 x 182) and its brain mask are reoriented to RAS and
block-averaged 2 x 2 x 2 to a 2 mm grid (91 x 109 x 91):

* ``mni152_head_2mm.nii.gz``: the head, int16 (the source is int16; the 2 mm means are rounded);
* ``mni152_brain_2mm.nii.gz``: the fraction of each 2 mm voxel inside the brain mask, uint8
  0..255 (= 0..1); ``> 127`` is the binary brain mask.

Usage (from the repository root)::

    python scripts/make_atlas_data.py [--data ../shared/data]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "segment" / "atlas" / "data"


def _block2(a: np.ndarray) -> np.ndarray:
    n = [s // 2 * 2 for s in a.shape]
    a = a[: n[0], : n[1], : n[2]].astype(np.float64)
    return a.reshape(n[0] // 2, 2, n[1] // 2, 2, n[2] // 2, 2).mean(axis=(1, 3, 5))


def _ras(img: nib.Nifti1Image) -> nib.Nifti1Image:
    return nib.as_closest_canonical(img)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args(argv)
    src = args.data / "mni152_fsl"
    head = _ras(nib.load(src / "t1_head.nii.gz"))
    mask = _ras(nib.load(src / "brain_mask.nii.gz"))
    if head.shape != mask.shape or not np.allclose(head.affine, mask.affine):
        raise SystemExit("head and brain mask are on different grids")
    aff = head.affine.copy()
    # a 2x2x2 block's centre sits half a 1 mm voxel beyond the first voxel's centre
    aff2 = aff.copy()
    aff2[:3, :3] = aff[:3, :3] * 2.0
    aff2[:3, 3] = aff[:3, :3] @ np.array([0.5, 0.5, 0.5]) + aff[:3, 3]
    h = np.rint(_block2(np.asarray(head.dataobj, dtype=np.float32))).astype(np.int16)
    m = np.rint(255.0 * _block2(np.asarray(mask.dataobj, dtype=np.float32) > 0.5)).astype(np.uint8)
    OUT.mkdir(parents=True, exist_ok=True)
    for arr, name in ((h, "mni152_head_2mm.nii.gz"), (m, "mni152_brain_2mm.nii.gz")):
        img = nib.Nifti1Image(arr, aff2)
        img.set_qform(aff2, code=4)  # MNI152
        img.set_sform(aff2, code=4)
        nib.save(img, OUT / name)
        print(f"{OUT / name}: {arr.shape} {arr.dtype}")
    ml = float((m > 127).sum() * 8 / 1000)
    print(f"brain mask {ml:.0f} mL at 2 mm (1 mm source: "
          f"{float((np.asarray(mask.dataobj) > 0.5).sum() / 1000):.0f} mL)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
