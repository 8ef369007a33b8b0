"""Gaussian mixture models fitted by EM, with scikit-learn's API and compiled kernels.

:class:`GaussianMixture` follows ``sklearn.mixture.GaussianMixture`` (same parameters, same
stopping rule, same fitted attributes) and adds ``sample_weight``: a weighted EM in which every
sample counts ``sample_weight[i]`` times, so that data with many repeated values can be fitted
exactly on their unique values and counts (see :func:`unique_with_counts`).
"""
from __future__ import annotations

import inspect
import math
import numbers
import sys
import time
import warnings

import numpy as np

from segment.errors import ConvergenceWarning, SegmentError
from segment.mixture import _kernels as K_
from segment.mixture._threads import run_parallel

__all__ = ["GaussianMixture", "unique_with_counts", "FitError", "NotFittedError"]

_COV_TYPES = ("full", "tied", "diag", "spherical")
_INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")
_LOG_2PI = math.log(2.0 * math.pi)


def _kernel_constants(dt):
    """Constant arrays ``(fc, ic)`` of the vectorised exp/log (layout in ``_kernels``)."""
    dt = np.dtype(dt)
    if dt == np.float64:
        it, mant, bias, emask, lo = np.int64, 52, 1023, 0x7FF, -708.0
    else:
        it, mant, bias, emask, lo = np.int32, 23, 127, 0xFF, -87.0
    ln2 = math.log(2.0)
    if dt == np.float32:  # Cody-Waite split: n * ln2_hi is exact for every |n| < 256
        ln2_hi, ln2_lo = 0.693145751953125, 1.428606765330187045e-06
    else:  # fdlibm split, exact for |n| < 2**20
        ln2_hi, ln2_lo = 6.93147180369123816490e-01, 1.90821492927058770002e-10
    fc = [0.0, 0.5, 1.0, 1.0 / ln2, 1.5 * 2.0**mant, ln2_hi, ln2_lo, lo, math.sqrt(2.0), ln2,
          2.0**mant + bias]
    fc += [1.0 / math.factorial(j) for j in range(13)]
    fc += [2.0 / (2 * j + 1) for j in range(11)]
    one_bits = bias << mant
    magic_bits = (bias + mant) << mant
    ic = [bias, mant, emask, (1 << mant) - 1, one_bits, magic_bits]
    return np.array(fc, dtype=dt), np.array(ic, dtype=it)


_CONSTS = {np.dtype(np.float64): _kernel_constants(np.float64),
           np.dtype(np.float32): _kernel_constants(np.float32)}


class FitError(SegmentError, ValueError):
    """A mixture cannot be fitted to the data as given (ill-defined covariance, bad values)."""


class NotFittedError(SegmentError, ValueError, AttributeError):
    """A method that needs a fitted model was called before :meth:`GaussianMixture.fit`.

    Derives from ``ValueError`` and ``AttributeError`` as scikit-learn's ``NotFittedError``
    does; when scikit-learn is imported, the error raised is also an instance of
    ``sklearn.exceptions.NotFittedError`` (see :func:`_not_fitted_class`), so code written
    for scikit-learn catches it. scikit-learn is not imported here: it takes seconds.
    """


_NOT_FITTED_CLASSES: dict[type, type] = {}


def _not_fitted_class() -> type:
    """:class:`NotFittedError`, combined with scikit-learn's when scikit-learn is loaded."""
    sk = sys.modules.get("sklearn.exceptions")
    base = getattr(sk, "NotFittedError", None) if sk is not None else None
    if base is None:
        return NotFittedError
    cls = _NOT_FITTED_CLASSES.get(base)
    if cls is None:
        cls = type("NotFittedError", (NotFittedError, base), {"__module__": __name__})
        _NOT_FITTED_CLASSES[base] = cls
    return cls


_ILL_MSG = (
    "Fitting the mixture model failed because component {k} has an ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Try to decrease the "
    "number of components, increase reg_covar (now {reg:g}), or scale the input data."
)


def _check_random_state(seed):
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral):
        return np.random.RandomState(int(seed))
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(f"random_state must be None, an int or a numpy RandomState, got {seed!r}")


def unique_with_counts(X, return_inverse=False):
    """Compress data to its distinct rows and their multiplicities.

    Fitting ``GaussianMixture`` on ``(U, sample_weight=counts)`` is the same EM as fitting it
    on ``X`` (up to floating-point summation order), at a fraction of the cost when values
    repeat, e.g. one image channel of integer intensities.

    Parameters
    ----------
    X : array-like of shape (n_samples,) or (n_samples, n_features)
        Data.
    return_inverse : bool, default=False
        Also return indices that rebuild ``X`` from ``U``.

    Returns
    -------
    U : ndarray of shape (n_unique, n_features)
        Distinct rows of ``X`` in sorted order (1-D input gives one column).
    counts : ndarray of shape (n_unique,), float64
        How many times each row occurs, usable as ``sample_weight``.
    inverse : ndarray of shape (n_samples,), intp
        Only when ``return_inverse``: ``U[inverse]`` equals ``X`` (as 2-D).

    Examples
    --------
    >>> U, counts = unique_with_counts(np.array([1.0, 2.0, 2.0, 5.0]))
    >>> U.ravel().tolist(), counts.tolist()
    ([1.0, 2.0, 5.0], [1.0, 2.0, 1.0])
    """
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"X must be 1-D or 2-D, got shape {X.shape}")
    if X.shape[1] == 1:
        U, inv, counts = np.unique(X[:, 0], return_inverse=True, return_counts=True)
        U = U[:, None]
    else:
        U, inv, counts = np.unique(X, axis=0, return_inverse=True, return_counts=True)
    counts = counts.astype(np.float64)
    if return_inverse:
        return U, counts, np.asarray(inv).reshape(-1)
    return U, counts


class GaussianMixture:
    """Gaussian mixture model fitted by expectation-maximisation.

    Drop-in for ``sklearn.mixture.GaussianMixture``: the same parameters, attributes, stopping
    rule (stop when the mean log-likelihood changes by less than ``tol``) and, from the same
    initial parameters, the same iterates. Each EM iteration is one fused, parallel, compiled
    pass over the data that never stores the ``(n_samples, n_components)`` responsibilities.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
        Shape of each component's covariance.
    tol : float, default=1e-3
        Convergence threshold on the change of the (weighted) mean log-likelihood.
    reg_covar : float, default=1e-6
        Non-negative value added to the diagonal of every covariance.
    max_iter : int, default=100
        Number of EM iterations per initialisation.
    n_init : int, default=1
        Number of initialisations; the best (highest lower bound) is kept.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}, default='kmeans'
        How responsibilities are initialised (as in scikit-learn; k-means is our own).
    weights_init : array-like of shape (n_components,), default=None
    means_init : array-like of shape (n_components, n_features), default=None
    precisions_init : array-like, default=None
        Shape (n_components, n_features, n_features) for 'full', (n_features, n_features) for
        'tied', (n_components, n_features) for 'diag', (n_components,) for 'spherical'.
    random_state : int, RandomState or None, default=None
        Seed of every random choice (initialisation and :meth:`sample`).
    warm_start : bool, default=False
        Start the next ``fit`` from the current solution (``n_init`` is then ignored).
    dtype : {numpy.float64, numpy.float32}, default=numpy.float64
        Precision of the E-step arithmetic. Fitted attributes are always float64.
    verbose : int, default=0
        As scikit-learn: 1 prints each initialisation and whether it converged, 2 also prints
        the time and the change of lower bound every ``verbose_interval`` iterations.
    verbose_interval : int, default=10
        Iterations between two lines printed with ``verbose >= 2``.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
        Shape depends on ``covariance_type`` as for ``precisions_init``.
    precisions_ : ndarray
    precisions_cholesky_ : ndarray
        Upper-triangular ``U`` with ``precision = U @ U.T`` (full/tied), else ``sqrt``.
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Weighted mean log-likelihood of the training data at the last E-step.
    lower_bounds_ : list of float
        Lower bound after each iteration of the best initialisation.
    n_features_in_ : int

    Examples
    --------
    >>> rng = np.random.RandomState(0)
    >>> X = np.concatenate([rng.normal(0, 1, 300), rng.normal(5, 1, 700)])[:, None]
    >>> gm = GaussianMixture(2, random_state=0).fit(X)
    >>> np.round(np.sort(gm.means_.ravel()))
    array([0., 5.])
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        dtype=np.float64,
        verbose=0,
        verbose_interval=10,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.dtype = dtype
        self.verbose = verbose
        self.verbose_interval = verbose_interval

    # ------------------------------------------------------------------ parameters / input
    @classmethod
    def _get_param_names(cls):
        """Names of the constructor's arguments, sorted (as scikit-learn's BaseEstimator)."""
        init = cls.__init__
        sig = inspect.signature(init)
        names = []
        for p in sig.parameters.values():
            if p.name == "self":
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise RuntimeError(f"{cls.__name__}.__init__ must not take *args or **kwargs")
            names.append(p.name)
        return sorted(names)

    def get_params(self, deep=True):
        """Constructor arguments as a dict (scikit-learn convention).

        Parameters
        ----------
        deep : bool, default=True
            Unused: no parameter is itself an estimator.

        Returns
        -------
        params : dict
        """
        return {n: getattr(self, n) for n in self._get_param_names()}

    def set_params(self, **params):
        """Set constructor arguments (scikit-learn convention); returns ``self``."""
        valid = self._get_param_names()
        for k, v in params.items():
            if k not in valid:
                raise ValueError(
                    f"Invalid parameter {k!r} for estimator {type(self).__name__}. "
                    f"Valid parameters are: {valid!r}."
                )
            setattr(self, k, v)
        return self

    def __sklearn_tags__(self):
        """Estimator tags for scikit-learn (>= 1.6): a density estimator on dense 2-D data.

        Called only by scikit-learn, so importing it here costs nothing to other users.
        """
        from sklearn.utils import InputTags, Tags, TargetTags

        return Tags(
            estimator_type="density_estimator",
            target_tags=TargetTags(required=False),
            input_tags=InputTags(two_d_array=True, sparse=False, allow_nan=False),
            requires_fit=True,
        )

    def __sklearn_is_fitted__(self):
        return hasattr(self, "means_") and hasattr(self, "precisions_cholesky_")

    def __repr__(self):
        defaults = GaussianMixture().get_params()
        args = [repr(self.n_components)] if self.n_components != 1 else []
        for k, v in self.get_params().items():
            if k == "n_components":
                continue
            dv = defaults[k]
            same = v is dv if (isinstance(v, np.ndarray) or isinstance(dv, np.ndarray)) else v == dv
            if not same:
                args.append(f"{k}={v!r}")
        return f"GaussianMixture({', '.join(args)})"

    def _work_dtype(self):
        dt = np.dtype(self.dtype)
        if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise ValueError(f"dtype must be numpy.float64 or numpy.float32, got {self.dtype!r}")
        return dt

    def _check_parameters(self, n_features):
        if not isinstance(self.n_components, numbers.Integral) or self.n_components < 1:
            raise ValueError(f"n_components must be an integer >= 1, got {self.n_components!r}")
        if self.covariance_type not in _COV_TYPES:
            raise ValueError(
                f"covariance_type must be one of {_COV_TYPES}, got {self.covariance_type!r}"
            )
        if self.init_params not in _INIT_PARAMS:
            raise ValueError(f"init_params must be one of {_INIT_PARAMS}, got {self.init_params!r}")
        if not (self.tol >= 0):
            raise ValueError(f"tol must be >= 0, got {self.tol!r}")
        if not (self.reg_covar >= 0):
            raise ValueError(f"reg_covar must be >= 0, got {self.reg_covar!r}")
        if not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 0:
            raise ValueError(f"max_iter must be an integer >= 0, got {self.max_iter!r}")
        if not isinstance(self.n_init, numbers.Integral) or self.n_init < 1:
            raise ValueError(f"n_init must be an integer >= 1, got {self.n_init!r}")
        if not isinstance(self.verbose, numbers.Integral) or self.verbose < 0:
            raise ValueError(f"verbose must be an integer >= 0, got {self.verbose!r}")
        if not isinstance(self.verbose_interval, numbers.Integral) or self.verbose_interval < 1:
            raise ValueError(f"verbose_interval must be an integer >= 1, got {self.verbose_interval!r}")
        self._work_dtype()
        K, d = self.n_components, n_features
        if self.weights_init is not None:
            w = np.asarray(self.weights_init, dtype=np.float64)
            if w.shape != (K,):
                raise ValueError(f"weights_init must have shape ({K},), got {w.shape}")
            if np.any(w < 0) or np.any(w > 1) or not np.allclose(w.sum(), 1.0, rtol=0, atol=1e-6):
                raise ValueError(
                    "weights_init must lie in [0, 1] and sum to 1, got sum "
                    f"{w.sum():.6f}"
                )
        if self.means_init is not None:
            m = np.asarray(self.means_init, dtype=np.float64)
            if m.shape != (K, d):
                raise ValueError(f"means_init must have shape ({K}, {d}), got {m.shape}")
        if self.precisions_init is not None:
            p = np.asarray(self.precisions_init, dtype=np.float64)
            shape = {
                "full": (K, d, d),
                "tied": (d, d),
                "diag": (K, d),
                "spherical": (K,),
            }[self.covariance_type]
            if p.shape != shape:
                raise ValueError(
                    f"precisions_init for covariance_type={self.covariance_type!r} must have "
                    f"shape {shape}, got {p.shape}"
                )
            if self.covariance_type in ("diag", "spherical"):
                if np.any(p <= 0):
                    raise ValueError("precisions_init must be positive")
            else:
                mats = p if p.ndim == 3 else p[None]
                for k, mat in enumerate(mats):
                    if not np.allclose(mat, mat.T) or np.any(np.linalg.eigvalsh(mat) <= 0):
                        raise ValueError(
                            f"precisions_init[{k}] must be symmetric positive definite"
                        )

    def _validate_X(self, X, reset):
        dt = self._work_dtype()
        if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
            raise TypeError(
                f"{type(self).__name__} does not accept sparse input (got {type(X).__name__}); "
                "pass a dense array, e.g. X.toarray()"
            )
        X = np.asarray(X)
        if X.dtype.kind == "c":
            raise ValueError("Complex data not supported; pass real-valued X")
        if X.dtype.kind == "O":
            X = X.astype(np.float64)  # objects that are not numbers raise TypeError / ValueError
        if X.dtype.kind not in "fiub":
            raise ValueError(f"X must be numeric, got dtype {X.dtype}")
        if X.ndim == 1 and not reset and getattr(self, "n_features_in_", None) == 1:
            X = X[:, None]
        if X.ndim != 2:
            raise ValueError(
                f"X must be 2-D of shape (n_samples, n_features), got shape {X.shape}; "
                "Reshape your data with X[:, None] (one feature) or X[None, :] (one sample)"
            )
        if X.shape[0] < 1:
            raise ValueError(
                f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required."
            )
        if X.shape[1] < 1:
            raise ValueError(
                f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is required."
            )
        X = np.asarray(X, dtype=dt)
        if not np.isfinite(X).all():
            bad = ~np.isfinite(X)
            n_nan = int(np.isnan(X).sum())
            n_inf = int(bad.sum()) - n_nan
            r, c = np.argwhere(bad)[0]
            raise ValueError(
                f"Input X contains {n_nan} NaN and {n_inf} infinite (inf) values (first at row {r}, "
                f"column {c}); remove or impute them before fitting"
            )
        if not reset:
            d = self.means_.shape[1]
            if X.shape[1] != d:
                raise ValueError(
                    f"X has {X.shape[1]} features, but {type(self).__name__} is expecting {d} "
                    "features as input."
                )
        return X

    @staticmethod
    def _validate_weight(sample_weight, n):
        if sample_weight is None:
            return None
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.ndim == 0:
            w = np.full(n, float(w))
        if w.shape != (n,):
            raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
        if not np.isfinite(w).all():
            raise ValueError("sample_weight contains NaN or infinite values")
        if np.any(w < 0):
            raise ValueError("sample_weight must be non-negative")
        if not w.sum() > 0:
            raise ValueError("sample_weight is all zero; the weights must have a positive sum")
        return w

    # ------------------------------------------------------------------ internal forms
    def _full_pchol(self):
        """Precision Cholesky as (K, d, d) upper-triangular for every covariance type."""
        pc = self.precisions_cholesky_
        K, d = self.means_.shape
        ct = self.covariance_type
        if ct == "full":
            return pc
        if ct == "tied":
            return np.broadcast_to(pc, (K, d, d)).copy()
        if ct == "diag":
            out = np.zeros((K, d, d))
            idx = np.arange(d)
            out[:, idx, idx] = pc
            return out
        return pc[:, None, None] * np.eye(d)[None]

    def _kernel_params(self, dt):
        """Means, precision Cholesky and log constants for the kernels, in ``dt``.

        Fewer than 4 features are zero-padded to 4 (the kernels' register path).
        """
        pcf = self._full_pchol()
        K, d = self.means_.shape
        logdet = np.log(np.diagonal(pcf, axis1=1, axis2=2)).sum(axis=1)
        with np.errstate(divide="ignore"):
            lconst = np.log(self.weights_) + logdet - 0.5 * d * _LOG_2PI
        D = 4 if d <= 4 else d
        means = np.zeros((K, D), dtype=dt)
        means[:, :d] = self.means_
        pchol = np.zeros((K, D, D), dtype=dt)
        pchol[:, :d, :d] = pcf
        return means, pchol, np.ascontiguousarray(lconst, dtype=dt)

    def _set_from_covariances(self, covariances):
        """Set ``covariances_`` and ``precisions_cholesky_``; raise FitError when not PD."""
        ct = self.covariance_type
        self.covariances_ = covariances
        if ct in ("full", "tied"):
            cov = covariances if ct == "full" else covariances[None]
            cov = np.ascontiguousarray(cov, dtype=np.float64)
            out = np.zeros_like(cov)
            bad = K_.precision_cholesky(cov, out)
            if bad >= 0:
                raise FitError(_ILL_MSG.format(k=bad, reg=self.reg_covar))
            self.precisions_cholesky_ = out if ct == "full" else out[0]
        else:
            if np.any(~(covariances > 0)):
                bad = int(np.argwhere(~(covariances > 0))[0][0])
                raise FitError(_ILL_MSG.format(k=bad, reg=self.reg_covar))
            self.precisions_cholesky_ = 1.0 / np.sqrt(covariances)

    def _set_precisions(self):
        pc = self.precisions_cholesky_
        ct = self.covariance_type
        if ct == "full":
            self.precisions_ = np.einsum("kij,klj->kil", pc, pc)
        elif ct == "tied":
            self.precisions_ = pc @ pc.T
        else:
            self.precisions_ = pc**2

    # ------------------------------------------------------------------ initialisation
    def _initialize_parameters(self, X, Xt, w, rs):
        n, d = X.shape
        K = self.n_components
        need_resp = not (
            self.weights_init is not None
            and self.means_init is not None
            and self.precisions_init is not None
        )
        resp = None
        if need_resp:
            # the random stream is consumed exactly as scikit-learn does for 'random' and
            # 'random_from_data', so both start from the same responsibilities
            if self.init_params == "kmeans":
                labels, hard = _kmeans(Xt, w, K, rs)
                if hard is None:
                    resp = np.zeros((n, K))
                    resp[np.arange(n), labels] = 1.0
                else:  # statistics of the hard assignment, without an (n, K) matrix
                    tot, centers = hard
                    nraw, nk, means, C = _moments(tot, centers)
                    resp = "stats"
            elif self.init_params == "k-means++":
                idx = _kmeans_plusplus(Xt, w, K, rs)
                resp = np.zeros((n, K))
                resp[idx, np.arange(K)] = 1.0
            elif self.init_params == "random":
                resp = rs.uniform(size=(n, K))
                resp /= resp.sum(axis=1)[:, None]
            else:
                idx = rs.choice(n, size=K, replace=False)
                resp = np.zeros((n, K))
                resp[idx, np.arange(K)] = 1.0
        Xd = np.asarray(X, dtype=np.float64) if resp is not None and not isinstance(resp, str) else X
        if isinstance(resp, str):
            covs = _covariances(C, nk, self.reg_covar, self.covariance_type)
            weights = nk / (n if w is None else w.sum())
        elif resp is not None and need_resp:
            weights, means, covs = _estimate_params_dense(
                Xd, resp, w, self.reg_covar, self.covariance_type
            )
            weights = weights / (n if w is None else w.sum())
        else:
            weights = means = covs = None
        self.weights_ = (
            weights if self.weights_init is None else np.array(self.weights_init, dtype=np.float64)
        )
        self.means_ = means if self.means_init is None else np.array(self.means_init, dtype=np.float64)
        if self.precisions_init is None:
            self._set_from_covariances(covs)
        else:
            self.precisions_cholesky_ = _pchol_from_precisions(
                np.asarray(self.precisions_init, dtype=np.float64), self.covariance_type
            )
            self.covariances_ = _covariances_from_pchol(
                self.precisions_cholesky_, self.covariance_type
            )

    # ------------------------------------------------------------------ EM
    def _em_stats(self, Xt, w):
        """E-step with the current parameters, fused with the M-step statistics.

        Returns the weighted mean log-likelihood, the merged statistics (K, 1 + d + d(d+1)/2)
        and the means they are centred on.
        """
        dt = Xt.dtype
        d, n = Xt.shape
        K = self.n_components
        means, pchol, lconst = self._kernel_params(dt)
        fc, ic = _CONSTS[dt]
        nch = (n + K_.CHUNK - 1) // K_.CHUNK
        ngroups = (nch + K_.GROUP - 1) // K_.GROUP
        D = means.shape[1]
        stats = np.empty((ngroups, K, 1 + D + D * (D + 1) // 2))
        ll = np.empty(ngroups)
        wk = self._wk if w is not None else np.empty(0, dtype=dt)
        run_parallel(K_.em_pass, ngroups, Xt, wk, means, pchol, lconst, fc, ic, stats, ll)
        tot = stats[0].copy()
        for g in range(1, ngroups):  # merge in group order: deterministic
            tot += stats[g]
        wsum = float(n) if w is None else self._wsum
        if D != d:  # drop the padding
            il, iq = np.tril_indices(D)
            keep = np.flatnonzero((il < d) & (iq < d))
            tot = np.concatenate([tot[:, : 1 + d], tot[:, 1 + D + keep]], axis=1)
        return float(ll.sum()) / wsum, tot, np.asarray(self.means_, dtype=dt).astype(np.float64)

    def _m_step(self, tot, m0, wsum):
        nraw, nk, means, C = _moments(tot, m0)
        reseeded = self._reseed_empty(nraw, nk, means, C, wsum)
        covs = _covariances(C, nk, self.reg_covar, self.covariance_type)
        self.weights_ = nk / nk.sum()
        self.means_ = means
        self._set_from_covariances(covs)
        return reseeded

    def _reseed_empty(self, nraw, nk, means, C, wsum):
        """Re-seed components that hold (almost) no weight by splitting the heaviest one.

        A component is empty when its responsibilities sum to less than a thousandth of an
        average sample. The heaviest component is split in two along its principal axis; the
        arrays are modified in place. Returns True when something was re-seeded.
        """
        n = self._n_fit
        empty = np.flatnonzero(nraw < 1e-3 * wsum / n)
        if len(empty) == 0 or len(empty) == len(nraw):
            return False
        if self._n_reseeds >= 4 * self.n_components:
            if not self._reseed_exhausted:
                self._reseed_exhausted = True
                warnings.warn(
                    f"GaussianMixture: components {empty.tolist()} stay empty after "
                    f"{self._n_reseeds} re-seeds; they are kept with zero weight. Use fewer "
                    "components.",
                    UserWarning,
                    stacklevel=4,
                )
            return False
        d = means.shape[1]
        for k in empty:
            was = float(nraw[k])
            big = int(np.argmax(np.where(np.isin(np.arange(len(nk)), empty), -np.inf, nk)))
            cov = C[big] / nk[big] + self.reg_covar * np.eye(d)
            lam, vec = np.linalg.eigh(cov)
            step = 0.5 * math.sqrt(max(lam[-1], 0.0)) * vec[:, -1]
            means[k] = means[big] + step
            means[big] = means[big] - step
            nraw[big] *= 0.5
            nk[big] *= 0.5
            C[big] *= 0.5
            nraw[k], nk[k], C[k] = nraw[big], nk[big], C[big]
            self._n_reseeds += 1
            warnings.warn(
                f"GaussianMixture: component {k} emptied (total responsibility "
                f"{was:.3g}); re-seeded by splitting component "
                f"{big} along its principal axis.",
                UserWarning,
                stacklevel=4,
            )
        return True

    def fit(self, X, y=None, sample_weight=None):
        """Estimate the parameters with EM.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; must be finite.
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sample (multiplicity); ``None`` means all ones.

        Returns
        -------
        self : GaussianMixture
        """
        self._fit(X, sample_weight)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the most probable component of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        labels : ndarray of shape (n_samples,), int64
            Equal to ``fit(X).predict(X)``.
        """
        Xt = self._fit(X, sample_weight)
        return self._score(Xt, labels=True)[2]

    def _fit(self, X, sample_weight):
        X = self._validate_X(X, reset=True)
        n, d = X.shape
        if n < 2:
            raise ValueError(f"Expected n_samples >= 2, got n_samples = {n}")
        if n < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components but got "
                f"n_components = {self.n_components}, n_samples = {n}"
            )
        self._check_parameters(d)
        w = self._validate_weight(sample_weight, n)
        wsum = float(n) if w is None else float(w.sum())
        self._n_fit = n
        self._wk = None if w is None else w.astype(X.dtype)
        self._wsum = wsum
        Xt = np.ascontiguousarray(X.T)
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        n_init = self.n_init if do_init else 1
        max_lower_bound = -np.inf
        best_params = None
        best_n_iter = 0
        best_lbs: list[float] = []
        self.converged_ = False
        rs = _check_random_state(self.random_state)
        for init in range(n_init):
            if self.verbose:
                print(f"Initialization {init}")
                t_init = t_last = time.perf_counter()
            if do_init:
                self._initialize_parameters(X, Xt, w, rs)
            lower_bound = -np.inf if do_init else self.lower_bound_
            self._n_reseeds = 0
            self._reseed_exhausted = False
            lbs: list[float] = []
            if self.max_iter == 0:
                best_params = self._get_parameters()
                best_n_iter = 0
                continue
            converged = False
            n_iter = 0
            for n_iter in range(1, self.max_iter + 1):
                prev = lower_bound
                lower_bound, tot, m0 = self._em_stats(Xt, w)
                reseeded = self._m_step(tot, m0, wsum)
                lbs.append(lower_bound)
                change = lower_bound - prev
                if self.verbose >= 2 and n_iter % self.verbose_interval == 0:
                    now = time.perf_counter()
                    print(f"  Iteration {n_iter}\t time lapse {now - t_last:.5f}s\t ll change {change:.5f}")
                    t_last = now
                if abs(change) < self.tol and not reseeded:
                    converged = True
                    break
            if self.verbose == 1:
                print(f"Initialization {'converged' if converged else 'did not converge'}.")
            elif self.verbose >= 2:
                print(f"Initialization {'converged' if converged else 'did not converge'}. "
                      f"time lapse {time.perf_counter() - t_init:.5f}s\t lower bound {lower_bound:.5f}.")
            if lower_bound > max_lower_bound or max_lower_bound == -np.inf:
                max_lower_bound = lower_bound
                best_params = self._get_parameters()
                best_n_iter = n_iter
                best_lbs = lbs
                self.converged_ = converged
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._set_parameters(best_params)
        self.n_iter_ = best_n_iter
        self.lower_bound_ = max_lower_bound
        self.lower_bounds_ = best_lbs
        self.n_features_in_ = d
        self._wk = None
        return Xt

    def _get_parameters(self):
        return (
            self.weights_.copy(),
            self.means_.copy(),
            np.array(self.covariances_, copy=True),
            self.precisions_cholesky_.copy(),
        )

    def _set_parameters(self, params):
        self.weights_, self.means_, self.covariances_, self.precisions_cholesky_ = params
        self._set_precisions()

    # ------------------------------------------------------------------ inference
    def _check_fitted(self):
        if not self.__sklearn_is_fitted__():
            raise _not_fitted_class()(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )

    def _score(self, Xt, resp=False, lpn=False, labels=False):
        dt = Xt.dtype
        n = Xt.shape[1]
        K = self.n_components
        means, pchol, lconst = self._kernel_params(dt)
        fc, ic = _CONSTS[dt]
        r = np.empty((n, K) if resp else (0, K), dtype=dt)
        lp = np.empty(n if lpn else 0, dtype=dt)
        lab = np.empty(n if labels else 0, dtype=np.int64)
        n_groups = -(-n // (K_.CHUNK * K_.GROUP))
        run_parallel(K_.score_pass, n_groups, Xt, means, pchol, lconst, fc, ic, r, lp, lab)
        return r, lp, lab

    def _prepare(self, X):
        self._check_fitted()
        X = self._validate_X(X, reset=False)
        return np.ascontiguousarray(X.T)

    def predict(self, X):
        """Most probable component of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,), int64
        """
        return self._score(self._prepare(X), labels=True)[2]

    def predict_proba(self, X):
        """Posterior probability of each component for each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        resp : ndarray of shape (n_samples, n_components), rows sum to 1
            In the working ``dtype``.
        """
        return self._score(self._prepare(X), resp=True)[0]

    def score_samples(self, X):
        """Log-likelihood of each sample under the model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_prob : ndarray of shape (n_samples,)
        """
        return self._score(self._prepare(X), lpn=True)[1].astype(np.float64)

    def score(self, X, y=None, sample_weight=None):
        """(Weighted) mean log-likelihood of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        float
        """
        lp = self.score_samples(X)
        w = self._validate_weight(sample_weight, lp.shape[0])
        if w is None:
            return float(lp.mean())
        return float(np.dot(lp, w) / w.sum())

    def _n_parameters(self):
        d = self.means_.shape[1]
        K = self.n_components
        cov_params = {
            "full": K * d * (d + 1) / 2.0,
            "diag": K * d,
            "tied": d * (d + 1) / 2.0,
            "spherical": K,
        }[self.covariance_type]
        return int(cov_params + d * K + K - 1)

    def bic(self, X, sample_weight=None):
        """Bayesian information criterion on ``X`` (lower is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        sample_weight : array-like of shape (n_samples,), default=None
            Multiplicities; the sample count is then ``sample_weight.sum()``.

        Returns
        -------
        float
        """
        n = _n_eff(X, sample_weight)
        return -2 * self.score(X, sample_weight=sample_weight) * n + self._n_parameters() * math.log(n)

    def aic(self, X, sample_weight=None):
        """Akaike information criterion on ``X`` (lower is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        float
        """
        n = _n_eff(X, sample_weight)
        return -2 * self.score(X, sample_weight=sample_weight) * n + 2 * self._n_parameters()

    def sample(self, n_samples=1):
        """Draw samples from the fitted mixture (scikit-learn's random stream).

        Parameters
        ----------
        n_samples : int, default=1

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,), int64
            Component of each sample.
        """
        self._check_fitted()
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        _, d = self.means_.shape
        rng = _check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_)
        ct = self.covariance_type
        if ct == "full":
            parts = [
                rng.multivariate_normal(m, c, int(s))
                for m, c, s in zip(self.means_, self.covariances_, counts)
            ]
        elif ct == "tied":
            parts = [rng.multivariate_normal(m, self.covariances_, int(s)) for m, s in zip(self.means_, counts)]
        else:
            parts = [
                m + rng.standard_normal(size=(s, d)) * np.sqrt(c)
                for m, c, s in zip(self.means_, self.covariances_, counts)
            ]
        X = np.vstack(parts)
        y = np.concatenate([np.full(int(s), j, dtype=np.int64) for j, s in enumerate(counts)])
        return X, y


def _moments(tot, m0):
    """Counts, means and scatter matrices from statistics centred on ``m0``.

    ``tot`` has shape (K, 1 + d + d (d + 1) / 2): sum r, sum r (x - m0), packed lower triangle
    of sum r (x - m0)(x - m0)^T. Returns ``nraw`` (K,), ``nk = nraw + 10 eps`` (as scikit-learn),
    ``means`` (K, d) and ``C`` (K, d, d) = sum r (x - mean)(x - mean)^T.
    """
    K, d = m0.shape
    nraw = tot[:, 0].copy()
    S1 = tot[:, 1 : 1 + d]
    S2 = np.empty((K, d, d))
    il, iq = np.tril_indices(d)
    S2[:, il, iq] = tot[:, 1 + d :]
    S2[:, iq, il] = tot[:, 1 + d :]
    nk = nraw + 10 * np.finfo(np.float64).eps
    means = (S1 + nraw[:, None] * m0) / nk[:, None]
    delta = means - m0
    C = (
        S2
        - S1[:, :, None] * delta[:, None, :]
        - delta[:, :, None] * S1[:, None, :]
        + nraw[:, None, None] * delta[:, :, None] * delta[:, None, :]
    )
    C = 0.5 * (C + np.swapaxes(C, 1, 2))
    return nraw, nk, means, C


def _covariances(C, nk, reg, ct):
    """Covariances of the requested type from scatter matrices (scikit-learn's M-step)."""
    d = C.shape[1]
    if ct == "full":
        covs = C / nk[:, None, None]
        covs[:, np.arange(d), np.arange(d)] += reg
    elif ct == "tied":
        covs = C.sum(axis=0) / nk.sum()
        covs[np.arange(d), np.arange(d)] += reg
    elif ct == "diag":
        covs = np.diagonal(C, axis1=1, axis2=2) / nk[:, None] + reg
    else:
        covs = (np.diagonal(C, axis1=1, axis2=2) / nk[:, None] + reg).mean(axis=1)
    return covs


def _n_eff(X, sample_weight):
    n = np.asarray(X).shape[0]
    if sample_weight is None:
        return n
    return float(np.sum(sample_weight))


# ---------------------------------------------------------------------- helpers
def _estimate_params_dense(X, resp, w, reg, ct):
    """scikit-learn's ``_estimate_gaussian_parameters`` with sample weights folded into resp."""
    if w is not None:
        resp = resp * w[:, None]
    K = resp.shape[1]
    d = X.shape[1]
    nk = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
    means = (resp.T @ X) / nk[:, None]
    if ct == "tied":
        # as scikit-learn: the second moment runs over all samples, whatever resp holds
        covs = (X.T @ X if w is None else (X.T * w) @ X) - (nk * means.T) @ means
        covs /= nk.sum()
        covs[np.arange(d), np.arange(d)] += reg
    else:
        full = np.empty((K, d, d))
        for k in range(K):
            diff = X - means[k]
            full[k] = (resp[:, k] * diff.T) @ diff / nk[k]
        if ct == "full":
            covs = full
            covs[:, np.arange(d), np.arange(d)] += reg
        else:
            covs = np.diagonal(full, axis1=1, axis2=2) + reg
            if ct == "spherical":
                covs = covs.mean(axis=1)
    return nk, means, covs


def _flipudlr(a):
    return a[::-1, ::-1]


def _pchol_from_precisions(P, ct):
    if ct == "full":
        return np.stack([_flipudlr(np.linalg.cholesky(_flipudlr(p))) for p in P])
    if ct == "tied":
        return _flipudlr(np.linalg.cholesky(_flipudlr(P)))
    return np.sqrt(P)


def _covariances_from_pchol(pc, ct):
    if ct == "full":
        return np.stack([np.linalg.inv(u @ u.T) for u in pc])
    if ct == "tied":
        return np.linalg.inv(pc @ pc.T)
    return 1.0 / pc**2


def _sqdist(Xt, c):
    """Squared distances of every sample (columns of Xt, (d, n)) to the point c, float64."""
    out = (Xt[0] - c[0]) ** 2
    out = out.astype(np.float64, copy=False)
    for l in range(1, Xt.shape[0]):
        out += (Xt[l] - c[l]) ** 2
    return out


def _kmeans_plusplus(Xt, w, K, rs):
    """Greedy k-means++ seeding (as scikit-learn's); returns the chosen sample indices.

    Xt : (d, n) channel-major data; w : (n,) weights or None; rs : RandomState.
    """
    n = Xt.shape[1]
    p = None if w is None else w / w.sum()
    n_trials = 2 + int(np.log(K))
    idx = np.empty(K, dtype=np.intp)
    first = rs.choice(n, p=p)
    idx[0] = first
    closest = _sqdist(Xt, Xt[:, first])
    pot = float(closest.sum() if w is None else w @ closest)
    for c in range(1, K):
        if not pot > 0:
            # fewer distinct points than components: reuse a chosen point
            idx[c] = idx[(c - 1) % c]
            continue
        rv = rs.uniform(size=n_trials) * pot
        cands = np.searchsorted(np.cumsum(closest if w is None else w * closest), rv)
        np.clip(cands, None, n - 1, out=cands)
        best_pot, best_cand, best_d = np.inf, -1, None
        for cand in cands:
            dcand = np.minimum(closest, _sqdist(Xt, Xt[:, cand]))
            pc = float(dcand.sum() if w is None else w @ dcand)
            if pc < best_pot:
                best_pot, best_cand, best_d = pc, cand, dcand
        idx[c] = best_cand
        closest, pot = best_d, best_pot
    return idx


def _kmeans(Xt, w, K, rs, max_iter=300, tol=1e-4):
    """Weighted Lloyd k-means from a k-means++ start (deterministic given ``rs``).

    Returns ``(labels, hard)``: labels of shape (n_samples,) and, unless clusters had to be
    filled by hand, ``hard = (stats, centers)``, the EM statistics of the hard assignment
    centred on the final centers (see ``_moments``); else ``hard`` is None.
    """
    d, n = Xt.shape
    idx = _kmeans_plusplus(Xt, w, K, rs)
    centers = np.ascontiguousarray(Xt[:, idx].T, dtype=np.float64)
    n_distinct = len(np.unique(centers, axis=0))
    if n_distinct < K:
        warnings.warn(
            f"X has only {n_distinct} distinct points, fewer than n_components={K}; "
            "the extra components start as copies of others",
            UserWarning,
            stacklevel=5,
        )
    var = np.mean([np.var(Xt[l], dtype=np.float64) for l in range(d)])
    thr = tol * var
    cdt = Xt.dtype
    fc, _ = _CONSTS[np.dtype(cdt)]
    D = 4 if d <= 4 else d
    nch = (n + K_.CHUNK - 1) // K_.CHUNK
    ngroups = (nch + K_.GROUP - 1) // K_.GROUP
    sums = np.empty((ngroups, K, 1 + D + D * (D + 1) // 2))
    labels = np.empty(n, dtype=np.int64)
    mind = np.empty(n, dtype=cdt)
    wk = np.empty(0, dtype=cdt) if w is None else w.astype(cdt)
    cpad = np.zeros((K, D), dtype=cdt)

    def assign(c):
        cpad[:, :d] = c
        run_parallel(K_.kmeans_pass, ngroups, Xt, wk, cpad, fc, labels, mind, sums)
        tot = sums[0].copy()
        for g in range(1, ngroups):  # merge in group order: deterministic
            tot += sums[g]
        if D != d:
            il, iq = np.tril_indices(D)
            keep = np.flatnonzero((il < d) & (iq < d))
            tot = np.concatenate([tot[:, : 1 + d], tot[:, 1 + D + keep]], axis=1)
        return tot

    for _ in range(max_iter):
        c_used = centers.astype(cdt).astype(np.float64)
        tot = assign(c_used)
        cnt = tot[:, 0]
        new = centers.copy()
        nz = cnt > 0
        new[nz] = c_used[nz] + tot[nz, 1 : 1 + d] / cnt[nz, None]
        empty = np.flatnonzero(~nz)
        if len(empty) and n_distinct >= K:
            # relocate empty clusters to the points farthest from their centers
            far = np.argsort(-mind, kind="stable")[: len(empty)]
            new[empty] = Xt[:, far].T
        shift = ((new - centers) ** 2).sum()
        centers = new
        if shift <= thr:
            break
    c_used = centers.astype(cdt).astype(np.float64)
    tot = assign(c_used)
    if n_distinct < K:
        # give every empty cluster half of the largest one so that no component starts empty
        cnt = np.bincount(labels, minlength=K)
        for k in np.flatnonzero(cnt == 0):
            big = int(np.argmax(cnt))
            members = np.flatnonzero(labels == big)
            labels[members[: len(members) // 2]] = k
            cnt = np.bincount(labels, minlength=K)
        return labels, None
    return labels, (tot, c_used)
