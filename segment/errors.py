"""Exceptions raised by segment.

Every error a user can cause derives from :class:`SegmentError`; the command line prints its
message as one line and exits non-zero, without a traceback. Messages name the file and the fix.
"""
from __future__ import annotations


class SegmentError(Exception):
    """Base class of every error caused by input, configuration or data."""


class InputError(SegmentError):
    """An input file is missing, unreadable, of the wrong shape or holds invalid values."""


class ConfigError(SegmentError):
    """The configuration is invalid: an unknown key, a wrong type or an impossible value."""


class GridError(InputError):
    """Images that must share physical space do not (grids that do not overlap, wrong shape)."""


class ConvergenceWarning(UserWarning):
    """An iterative fit stopped at ``max_iter`` before meeting its tolerance."""


class NotFittedError(SegmentError, ValueError, AttributeError):
    """A method that needs a fitted model was called before ``fit``.

    A ``ValueError`` and an ``AttributeError``, as scikit-learn's ``NotFittedError``; once
    scikit-learn is imported, the error :class:`segment.GaussianMixture` raises is also an
    instance of ``sklearn.exceptions.NotFittedError``.
    """
