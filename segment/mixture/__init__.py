"""Gaussian mixture models compiled with Numba."""
