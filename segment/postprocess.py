"""Label clean-up with sizes in millimetres (scipy.ndimage)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes of a 3-D mask, then of every axial slice (ventricles that touch the
    mask edge in 3-D are closed in 2-D).

    Parameters
    ----------
    mask : ndarray of shape (X, Y, Z), bool

    Returns
    -------
    ndarray of shape (X, Y, Z), bool

    Examples
    --------
    >>> m = np.ones((5, 5, 3), bool); m[2, 2, :] = False   # a tube open at both ends
    >>> bool(fill_holes(m)[2, 2, 1])
    True
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    out = np.zeros_like(mask)
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(mask))
    m = ndi.binary_fill_holes(mask[box])
    # every slice at once: label the background with in-plane connectivity only; a background
    # component that does not reach its slice's border is a hole of that slice
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[:, :, 1] = ndi.generate_binary_structure(2, 1)
    padded = np.pad(m, ((1, 1), (1, 1), (0, 0)))
    comp, _ = ndi.label(~padded, structure=in_plane)
    border = np.unique(np.concatenate([comp[0].ravel(), comp[-1].ravel(), comp[:, 0].ravel(), comp[:, -1].ravel()]))
    holes = (comp > 0) & ~np.isin(comp, border)
    out[box] = (padded | holes)[1:-1, 1:-1, :]
    return out


def remove_small_islands(
    labels: np.ndarray,
    mask: np.ndarray,
    spacing: tuple[float, float, float],
    min_size_mm3: float,
) -> np.ndarray:
    """Give every connected island of a label smaller than ``min_size_mm3`` the label of the
    nearest voxel outside small islands (its surroundings).

    Parameters
    ----------
    labels : ndarray of shape (X, Y, Z), int
        Labels >= 1 inside ``mask``.
    mask : ndarray of shape (X, Y, Z), bool
    spacing : tuple of 3 floats
        Voxel size in mm.
    min_size_mm3 : float
        Islands (6-connected) smaller than this are relabelled; 0 returns a copy.

    Returns
    -------
    ndarray of shape (X, Y, Z), same dtype as ``labels``
    """
    out = labels.copy()
    voxel = float(np.prod(spacing))
    min_vox = int(np.ceil(min_size_mm3 / voxel))
    if min_vox <= 1 or not mask.any():
        return out
    # work on the mask's bounding box (plus one voxel) only
    box = tuple(
        slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(mask)
    )
    out[box] = _relabel_small(labels[box], mask[box], spacing, min_vox)
    return out


def _relabel_small(labels: np.ndarray, mask: np.ndarray, spacing, min_vox: int) -> np.ndarray:
    out = labels.copy()
    small = np.zeros(labels.shape, dtype=bool)
    for c in np.unique(labels[mask]):
        comp, n = ndi.label((labels == c) & mask)
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel())
        sizes[0] = np.iinfo(np.int64).max
        small |= (sizes < min_vox)[comp]
    if not small.any():
        return out
    keep = mask & ~small
    if not keep.any():
        return out
    # nearest kept voxel for every small-island voxel, in millimetres
    _, idx = ndi.distance_transform_edt(~keep, sampling=spacing, return_indices=True)
    where = np.nonzero(small)
    out[where] = labels[idx[0][where], idx[1][where], idx[2][where]]
    return out
