"""Gaussian mixture models compiled with Numba.

``GaussianMixture`` (scikit-learn's API plus ``sample_weight``), ``select_n_components``
(choose K by BIC/AIC) and ``unique_with_counts`` (exact compression of repeated values).
"""
from segment.mixture.gmm import FitError, GaussianMixture, unique_with_counts
from segment.mixture.selection import select_n_components

__all__ = ["FitError", "GaussianMixture", "select_n_components", "unique_with_counts"]
