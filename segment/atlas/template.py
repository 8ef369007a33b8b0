"""The bundled head template: FSL's MNI152 T1 head and its brain mask at 2 mm (RAS).

The files in ``segment/atlas/data`` are rebuilt from ``../shared/data/mni152_fsl`` by
``scripts/make_atlas_data.py`` (see ``data/NOTICE`` for the copyright notice).

Examples
--------
>>> from segment.atlas import load_template
>>> tpl = load_template()
>>> tpl.head.shape, tpl.brain_mask.shape
((91, 109, 91), (91, 109, 91))
>>> 1900 < tpl.brain_volume_ml < 2300
True
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..types import Volume

__all__ = ["Template", "load_template", "load_tissue_priors", "DATA_DIR"]

DATA_DIR = Path(__file__).resolve().parent / "data"
_HEAD = "mni152_head_2mm.nii.gz"
_BRAIN = "mni152_brain_2mm.nii.gz"
_PRIORS = "icbm2009a_priors_2mm.nii.gz"


@dataclass(frozen=True, eq=False)
class Template:
    """A head template on one 2 mm RAS grid.

    Attributes
    ----------
    head : Volume
        T1-weighted head with skull (float32, the source's intensity units).
    brain_fraction : Volume
        Fraction (float32, 0..1) of each 2 mm voxel inside the 1 mm brain mask: warp it with
        ``order=1`` and threshold at 0.5 for a mask on a finer grid.
    brain_mask : Volume
        ``brain_fraction > 0.5`` (bool).
    name : str
    """

    head: Volume
    brain_fraction: Volume
    brain_mask: Volume
    name: str = "MNI152 (FSL) 2 mm"

    @property
    def brain(self) -> Volume:
        """The head multiplied by the brain fraction: the template's brain-only image."""
        return self.head.with_data((self.head.data * self.brain_fraction.data).astype(np.float32))

    @property
    def brain_volume_ml(self) -> float:
        return float(self.brain_mask.data.sum() * self.brain_mask.voxel_volume / 1000.0)


@lru_cache(maxsize=1)
def load_template() -> Template:
    """The bundled MNI152 head template (read once, cached; treat the arrays as read-only)."""
    import nibabel as nib

    from ..errors import InputError

    paths = [DATA_DIR / _HEAD, DATA_DIR / _BRAIN]
    for p in paths:
        if not p.is_file():
            raise InputError(f"{p}: bundled template file missing; rebuild it with scripts/make_atlas_data.py")
    h = nib.load(str(paths[0]))
    b = nib.load(str(paths[1]))
    head = np.asarray(h.dataobj, dtype=np.float32)
    frac = np.asarray(b.dataobj, dtype=np.float32) / 255.0
    for a in (head, frac):
        a.setflags(write=False)
    mask = frac > 0.5
    mask.setflags(write=False)
    return Template(
        head=Volume(head, h.affine, paths[0]),
        brain_fraction=Volume(frac, b.affine, paths[1]),
        brain_mask=Volume(mask, b.affine, paths[1]),
    )


@lru_cache(maxsize=1)
def load_tissue_priors() -> tuple[Volume, Volume, Volume]:
    """ICBM 2009a CSF, GM and WM probabilities on the template's 2 mm grid (read once, cached).

    Returns
    -------
    (csf, gm, wm) : tuple of Volume
        float32 probabilities (0..1) on the template grid; all 0 outside the ICBM brain. Warp
        them with :meth:`segment.io.register.TemplateRegistration.warp` (``order=1``).

    Examples
    --------
    >>> csf, gm, wm = load_tissue_priors()
    >>> csf.shape
    (91, 109, 91)
    >>> 800 < float(gm.data.sum()) * gm.voxel_volume / 1000 < 1200  # mL of grey matter
    True
    """
    import nibabel as nib

    from ..errors import InputError

    p = DATA_DIR / _PRIORS
    if not p.is_file():
        raise InputError(f"{p}: bundled tissue priors missing; rebuild them with scripts/make_atlas_data.py")
    img = nib.load(str(p))
    data = np.asarray(img.dataobj, dtype=np.float32) / 255.0
    out = []
    for c in range(3):
        a = np.ascontiguousarray(data[..., c])
        a.setflags(write=False)
        out.append(Volume(a, img.affine, p))
    return tuple(out)  # type: ignore[return-value]
