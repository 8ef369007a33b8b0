"""Naming mixture components as CSF, grey matter and white matter by their means.

A component's class follows from where its mean lies on a CSF -> GM -> WM axis built from the
modalities' known contrasts (T1 and T1c: CSF dark, WM bright; T2: CSF bright, WM dark; FLAIR:
CSF dark, WM darker than GM), never from its index or the random seed.
"""
from __future__ import annotations

import numpy as np

#: Sign of each modality along the CSF -> WM axis.
_T1_LIKE_SIGN = {"t1": 1.0, "t1c": 1.0, "t2": -1.0}

CSF, GM, WM = 1, 2, 3


def tissue_axis_score(means: np.ndarray, modalities: list[str] | tuple[str, ...]) -> np.ndarray:
    """Position of each component on the CSF (low) -> WM (high) axis.

    Parameters
    ----------
    means : ndarray of shape (n_components, n_features)
        Component means of normalised intensities, features in the order of ``modalities``.
    modalities : sequence of str

    Returns
    -------
    ndarray of shape (n_components,)
    """
    means = np.atleast_2d(np.asarray(means, dtype=np.float64))
    if means.shape[1] != len(modalities):
        raise ValueError(f"means have {means.shape[1]} features but {len(modalities)} modalities were named")
    score = np.zeros(means.shape[0])
    used = False
    for j, m in enumerate(modalities):
        if m in _T1_LIKE_SIGN:
            score += _T1_LIKE_SIGN[m] * means[:, j]
            used = True
    if used:
        return score
    # FLAIR only: CSF is darkest, then WM, then GM. Put CSF first, then invert the rest.
    f = means[:, list(modalities).index("flair")]
    order = np.argsort(f)
    score = np.empty_like(f)
    score[order[0]] = -np.inf
    rest = order[1:]
    score[rest] = -f[rest]
    return score


def name_tissue_components(means: np.ndarray, modalities: list[str] | tuple[str, ...]) -> np.ndarray:
    """Tissue class (1 CSF, 2 GM, 3 WM) of every mixture component.

    The component lowest on the CSF -> WM axis is CSF, the highest is WM, and every component
    in between is GM (with more than three components the extra ones model partial volume
    between the classes and are counted as grey matter, the class in the middle).

    Parameters
    ----------
    means : ndarray of shape (n_components, n_features)
    modalities : sequence of str

    Returns
    -------
    ndarray of shape (n_components,), int

    Examples
    --------
    >>> name_tissue_components([[0.5], [-2.0], [1.2]], ["t1"]).tolist()
    [2, 1, 3]
    """
    score = tissue_axis_score(means, modalities)
    k = score.shape[0]
    if k < 3:
        raise ValueError(f"need at least 3 components to name CSF, GM and WM, got {k}")
    order = np.argsort(score, kind="stable")
    classes = np.full(k, GM, dtype=np.int64)
    classes[order[0]] = CSF
    classes[order[-1]] = WM
    return classes


def class_probabilities(resp: np.ndarray, classes: np.ndarray, n_classes: int = 3) -> np.ndarray:
    """Sum component responsibilities ``(N, K)`` into class probabilities ``(N, n_classes)``
    (column ``c - 1`` is class ``c``)."""
    out = np.zeros((resp.shape[0], n_classes), dtype=resp.dtype)
    for k, c in enumerate(classes):
        out[:, c - 1] += resp[:, k]
    return out
