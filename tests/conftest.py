"""Shared fixtures: small synthetic volumes written to temporary folders."""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


def oblique_las_affine(spacing=(1.2, 1.0, 2.5), angle_deg=12.0) -> np.ndarray:
    """An LAS-oriented affine rotated about the z axis: a realistic non-canonical header."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    flip = np.diag([-1.0, 1.0, 1.0])  # L instead of R on axis 0
    aff = np.eye(4)
    aff[:3, :3] = rot @ flip @ np.diag(spacing)
    aff[:3, 3] = [40.0, -30.0, -20.0]
    return aff


def write_nifti(path, data, affine=None, dtype=None):
    data = np.asarray(data)
    if dtype is not None:
        data = data.astype(dtype)
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    nib.save(img, str(path))
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)
