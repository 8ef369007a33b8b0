"""Rebuild the bundled head template of ``segment.atlas`` from ``../shared/data/mni152_fsl``.

FSL's MNI152 T1 1 mm head (182 x 218 x 182) and its brain mask are reoriented to RAS and
block-averaged 2 x 2 x 2 to a 2 mm grid (91 x 109 x 91):

* ``mni152_head_2mm.nii.gz``: the head, int16 (the source is int16; the 2 mm means are rounded);
* ``mni152_brain_2mm.nii.gz``: the fraction of each 2 mm voxel inside the brain mask, uint8
  0..255 (= 0..1); ``> 127`` is the binary brain mask.

The tissue priors come from the ICBM 2009a symmetric template in ``../shared/data/mni152``
(1 mm, its GM and WM probability maps; CSF = 1 - GM - WM inside its brain), resampled by world
(MNI) coordinates onto the same 2 mm grid, each 2 mm voxel the mean of its eight 1 mm
sub-voxels (trilinear):

* ``icbm2009a_priors_2mm.nii.gz``: uint8 0..255 (= 0..1), shape (91, 109, 91, 3), the last axis
  CSF, GM, WM; 0 outside the ICBM brain.

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


def _priors(src: Path, aff2: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """ICBM 2009a CSF/GM/WM probabilities on the 2 mm grid ``aff2`` (uint8, last axis the class)."""
    from scipy import ndimage as ndi

    t1 = nib.load(src / "t1.nii.gz")
    inside = (np.asarray(t1.dataobj) > 0).astype(np.float32)
    gm = np.asarray(nib.load(src / "gm_prob.nii.gz").dataobj, dtype=np.float32) / 255.0 * inside
    wm = np.asarray(nib.load(src / "wm_prob.nii.gz").dataobj, dtype=np.float32) / 255.0 * inside
    csf = np.clip(inside - gm - wm, 0.0, 1.0)
    out = np.zeros(tuple(shape) + (3,), np.float64)
    for c, a in enumerate((csf, gm, wm)):
        for off in np.array(np.meshgrid(*[[-0.5, 0.5]] * 3, indexing="ij")).reshape(3, -1).T:
            # 2 mm voxel index -> MNI mm of one 1 mm sub-voxel -> ICBM voxel index
            m = np.linalg.inv(t1.affine) @ aff2
            offset = m[:3, :3] @ (off / 2.0) + m[:3, 3]
            out[..., c] += ndi.affine_transform(a, m[:3, :3], offset=offset, output_shape=tuple(shape),
                                                order=1, mode="constant", cval=0.0) / 8.0
    return np.rint(255.0 * np.clip(out, 0.0, 1.0)).astype(np.uint8)


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
    pri = _priors(args.data / "mni152", aff2, m.shape)
    img = nib.Nifti1Image(pri, aff2)
    img.set_qform(aff2, code=4)
    img.set_sform(aff2, code=4)
    nib.save(img, OUT / "icbm2009a_priors_2mm.nii.gz")
    print(f"{OUT / 'icbm2009a_priors_2mm.nii.gz'}: {pri.shape} {pri.dtype}")
    ml = float((m > 127).sum() * 8 / 1000)
    print(f"brain mask {ml:.0f} mL at 2 mm (1 mm source: "
          f"{float((np.asarray(mask.dataobj) > 0.5).sum() / 1000):.0f} mL)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
