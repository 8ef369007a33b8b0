"""Choosing the number of mixture components by an information criterion."""
from __future__ import annotations

import numpy as np

from segment.mixture.gmm import GaussianMixture

__all__ = ["select_n_components"]


def select_n_components(X, n_components_range, criterion="bic", sample_weight=None, **gmm_kwargs):
    """Fit one mixture per K and keep the one with the lowest BIC or AIC.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Data.
    n_components_range : iterable of int
        Candidate numbers of components, e.g. ``range(1, 7)``.
    criterion : {'bic', 'aic'}, default='bic'
        Information criterion to minimise.
    sample_weight : array-like of shape (n_samples,), default=None
        Multiplicities passed to ``fit``; the criterion then counts ``sample_weight.sum()``
        samples, so fitting unique values with counts gives the same scores as the full data.
    **gmm_kwargs
        Other :class:`GaussianMixture` arguments (``covariance_type``, ``random_state``, ...).

    Returns
    -------
    best : GaussianMixture
        The fitted model with the lowest criterion (the smallest K on ties).
    scores : dict of int to float
        Criterion value per K, in the order of ``n_components_range``.

    Examples
    --------
    >>> rng = np.random.RandomState(0)
    >>> X = np.concatenate([rng.normal(0, 1, 200), rng.normal(6, 1, 200)])[:, None]
    >>> best, scores = select_n_components(X, range(1, 4), random_state=0)
    >>> best.n_components
    2
    """
    if criterion not in ("bic", "aic"):
        raise ValueError(f"criterion must be 'bic' or 'aic', got {criterion!r}")
    ks = [int(k) for k in n_components_range]
    if not ks:
        raise ValueError("n_components_range is empty")
    if "n_components" in gmm_kwargs:
        raise ValueError("pass the candidates in n_components_range, not n_components")
    X = np.asarray(X)
    scores: dict[int, float] = {}
    best, best_score = None, np.inf
    for k in ks:
        gm = GaussianMixture(n_components=k, **gmm_kwargs).fit(X, sample_weight=sample_weight)
        fn = gm.bic if criterion == "bic" else gm.aic
        s = float(fn(X, sample_weight=sample_weight))
        scores[k] = s
        if s < best_score:
            best, best_score = gm, s
    return best, scores
