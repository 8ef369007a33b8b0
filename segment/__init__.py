"""segment: brain MRI segmentation with Gaussian mixture models.

Public API (imported lazily so that ``import segment`` stays fast and does not compile kernels)::

    from segment import GaussianMixture, segment_case, load_case, dice
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "GaussianMixture": "segment.mixture.gmm",
    "select_n_components": "segment.mixture.selection",
    "segment_case": "segment.pipeline",
    "load_case": "segment.io.cases",
    "load_volume": "segment.io.nifti",
    "save_volume": "segment.io.nifti",
    "skullstrip": "segment.preprocess.skullstrip",
    "dice": "segment.metrics",
    "iou": "segment.metrics",
    "evaluate_labels": "segment.metrics",
    "make_phantom": "segment.phantom",
    "Config": "segment.config",
    "load_config": "segment.config",
    "Volume": "segment.types",
    "Case": "segment.types",
    "CaseResult": "segment.types",
    "SegmentError": "segment.errors",
    "InputError": "segment.errors",
    "ConvergenceWarning": "segment.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'segment' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
