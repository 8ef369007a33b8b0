"""A partial-volume mixture: pure tissue classes plus voxels that mix two of them.

At a resolution of a millimetre or more, many brain voxels hold two tissues (the cortex is
2-4 mm thick). Their intensity lies between the pure classes' means, which skews a plain
Gaussian mixture: the components widen and move, and the boundaries between classes move
with them. Following the partial-volume models of Santago & Gage (1993), Shattuck et al.
(2001) and FSL FAST, each pair of adjacent classes ``(a, b)`` gets a partial-volume class
whose voxels have intensity ``(1 - f) * mu_a + f * mu_b`` plus noise, the fraction ``f``
uniform in (0, 1) (discretised in ``n_levels`` steps). The pure means are fitted jointly by
least squares over all components, so partial-volume voxels inform the pure means instead of
distorting them.

A voxel's class fractions are the expected fractions under the posterior; its hard label is
the class with the largest fraction.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import ConvergenceWarning
from . import _pv_kernels as K
from ._threads import run_parallel

_LOG_2PI = np.log(2 * np.pi)


class PartialVolumeMixture:
    """Mixture of ``n_classes`` pure Gaussian classes and partial-volume classes between pairs.

    Parameters
    ----------
    n_classes : int
        Pure classes, ordered (e.g. 0 CSF, 1 GM, 2 WM).
    pairs : sequence of (int, int)
        Pairs of classes that mix; default adjacent pairs ``(0, 1), (1, 2), ...``.
    n_levels : int
        Discrete fractions per pair, ``f = (j + 0.5) / n_levels``.
    tol : float
        Stop when the weighted mean log-likelihood changes by less than this.
    max_iter : int
    reg_covar : float
        Added to the covariance diagonals.
    shared_noise : bool or float
        True: one covariance (the scanner's noise) for every class and mix, estimated from every
        component's scatter about its own mean (Shattuck et al. 2001), instead of one per pure
        class: a class's spread then cannot grow over the mixed voxels next to it. A float ``nu``: per-class covariances
        with a conjugate prior centred on that shared covariance, worth ``nu`` times the
        samples in pseudo-counts (``(scatter_c + nu N S) / (N_c + nu N)``).

    Attributes
    ----------
    means_ : ndarray of shape (n_classes, n_features)
        Pure-class means.
    covariances_ : ndarray of shape (n_classes, n_features, n_features)
    class_weights_ : ndarray of shape (n_classes + n_pairs,)
        Proportions of pure classes, then of each pair's partial-volume class.
    n_iter_, converged_, lower_bound_

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> f = rng.uniform(size=2000)
    >>> x = np.concatenate([rng.normal(0, .1, 3000), rng.normal(1, .1, 3000),
    ...                     (1 - f) * 0 + f * 1 + rng.normal(0, .1, 2000)])[:, None]
    >>> pv = PartialVolumeMixture(2).fit(x, means_init=[[0.2], [0.8]])
    >>> np.round(pv.means_.ravel(), 1).tolist()
    [0.0, 1.0]
    """

    def __init__(
        self,
        n_classes: int = 3,
        *,
        pairs: tuple[tuple[int, int], ...] | None = None,
        n_levels: int = 6,
        tol: float = 1e-5,
        max_iter: int = 200,
        reg_covar: float = 1e-6,
        shared_noise: bool | float = False,
    ) -> None:
        self.shared_noise = shared_noise
        self.n_classes = n_classes
        self.pairs = pairs
        self.n_levels = n_levels
        self.tol = tol
        self.max_iter = max_iter
        self.reg_covar = reg_covar

    # ------------------------------------------------------------------ structure

    def _design(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``a_j`` (mixing coefficients over classes) of every component, and the group
        (pure class or pair index offset by ``n_classes``) each component belongs to."""
        C = self.n_classes
        pairs = self.pairs if self.pairs is not None else tuple((c, c + 1) for c in range(C - 1))
        self.pairs_ = tuple((int(a), int(b)) for a, b in pairs)
        rows = [np.eye(C)[c] for c in range(C)]
        group = list(range(C))
        fs = (np.arange(self.n_levels) + 0.5) / self.n_levels
        for p, (a, b) in enumerate(self.pairs_):
            for f in fs:
                r = np.zeros(C)
                r[a], r[b] = 1 - f, f
                rows.append(r)
                group.append(C + p)
        return np.array(rows), np.array(group)

    def _kernel_params(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every component's mean, precision Cholesky (upper, ``cov^-1 = P P^T``) and log
        constant ``log w + log det P - d/2 log 2 pi``."""
        A = self.design_
        means = A @ self.means_
        # covariance of a mix: interpolate the pure covariances with the mixing coefficients
        covs = np.einsum("jc,cfg->jfg", A, self.covariances_)
        counts = np.bincount(self.groups_, minlength=self.n_classes + len(self.pairs_))
        log_w = np.log(np.maximum(self.class_weights_[self.groups_] / counts[self.groups_], 1e-300))
        d = means.shape[1]
        pchol = np.swapaxes(np.linalg.inv(np.linalg.cholesky(covs)), 1, 2)
        logdet = np.log(np.diagonal(pchol, axis1=1, axis2=2)).sum(axis=1)
        return (
            np.ascontiguousarray(means),
            np.ascontiguousarray(pchol),
            np.ascontiguousarray(log_w + logdet - 0.5 * d * _LOG_2PI),
        )

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        X: np.ndarray,
        *,
        means_init: np.ndarray,
        covariances_init: np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
        max_drift: float | None = None,
    ) -> "PartialVolumeMixture":
        """Fit by EM from initial pure-class means (and covariances).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
        means_init : ndarray of shape (n_classes, n_features)
            Pure-class means in class order; typically a plain GMM's named components.
        covariances_init : ndarray of shape (n_classes, n_features, n_features), optional
        sample_weight : ndarray of shape (n_samples,), optional
            Non-negative weights (e.g. counts of unique values).
        max_drift : float, optional
            Stop early, with ``drifted_`` set, once a pure mean has moved more than this many
            standard deviations (Mahalanobis, initial covariance) from its initial value.
            ``drift_`` holds every class's final distance.
        """
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or infinite values")
        n, d = X.shape
        w = np.ones(n) if sample_weight is None else np.ascontiguousarray(sample_weight, dtype=np.float64)
        if w.shape != (n,) or (w < 0).any() or w.sum() <= 0:
            raise ValueError("sample_weight must be non-negative with shape (n_samples,) and a positive sum")
        C = self.n_classes
        self.means_ = np.array(means_init, dtype=np.float64).reshape(C, d)
        reg = self.reg_covar * np.eye(d)
        if covariances_init is None:
            cov = np.cov(X.T, aweights=w).reshape(d, d) / C**2
            self.covariances_ = np.repeat(cov[None] + reg, C, axis=0)
        else:
            self.covariances_ = np.array(covariances_init, dtype=np.float64).reshape(C, d, d)
        self.design_, self.groups_ = self._design()
        G = C + len(self.pairs_)
        self.class_weights_ = np.full(G, 1.0 / G)
        wsum = w.sum()
        prev = -np.inf
        self.converged_ = False
        A = self.design_
        J = A.shape[0]
        nch = (n + K.CHUNK - 1) // K.CHUNK
        nk = np.empty((nch, J))
        s1 = np.empty((nch, J, d))
        s2 = np.empty((nch, J, d, d))
        ll = np.empty(nch)
        means0 = self.means_.copy()
        prec0 = np.linalg.inv(self.covariances_)
        self.drifted_ = False
        for it in range(1, self.max_iter + 1):
            if max_drift is not None and it % 10 == 0:
                diff = self.means_ - means0
                if np.sqrt(np.einsum("cf,cfg,cg->c", diff, prec0, diff)).max() > max_drift:
                    self.drifted_ = True
                    break
            run_parallel(K.pv_estep_stats, nch, X, w, *self._kernel_params(), nk, s1, s2, ll)
            lb = float(ll.sum() / wsum)
            self.n_iter_ = it
            self.lower_bound_ = lb
            if abs(lb - prev) < self.tol:
                self.converged_ = True
                break
            prev = lb
            Nj, Sj, S2j = nk.sum(axis=0), s1.sum(axis=0), s2.sum(axis=0)
            # pure means: least squares over every component that involves them
            gram = (A.T * Nj) @ A + 1e-12 * np.eye(C)
            self.means_ = np.linalg.solve(gram, A.T @ Sj)
            pooled = None
            if self.shared_noise is not False:
                # the noise covariance shared by every class and mix (Shattuck et al. 2001): the
                # scatter of each component, pure or mixed, about its own mean
                mus = A @ self.means_
                sc = (S2j - np.einsum("jf,jg->jfg", Sj, mus) - np.einsum("jf,jg->jfg", mus, Sj)
                      + np.einsum("j,jf,jg->jfg", Nj, mus, mus)).sum(axis=0)
                pooled = sc / max(Nj.sum(), 1e-300)
            for c in range(C):
                if self.shared_noise is True:
                    cov = pooled + reg
                elif Nj[c] <= 1e-8 * wsum:
                    continue  # an (almost) empty pure class keeps its previous covariance
                else:
                    mu = self.means_[c]
                    scatter = S2j[c] - np.outer(Sj[c], mu) - np.outer(mu, Sj[c]) + Nj[c] * np.outer(mu, mu)
                    if pooled is not None:
                        # per class, with a conjugate (inverse-Wishart) prior centred on the
                        # shared noise, worth ``shared_noise`` of the data in pseudo-counts
                        nu = float(self.shared_noise) * Nj.sum()
                        cov = (scatter + nu * pooled) / (Nj[c] + nu) + reg
                    else:
                        cov = scatter / Nj[c] + reg
                self.covariances_[c] = 0.5 * (cov + cov.T)
            Ng = np.bincount(self.groups_, weights=Nj, minlength=G)
            self.class_weights_ = np.maximum(Ng / Ng.sum(), 1e-12)
        else:
            warnings.warn(
                f"partial-volume mixture did not converge in {self.max_iter} iterations; "
                "raise max_iter or tol",
                ConvergenceWarning,
                stacklevel=2,
            )
        diff = self.means_ - means0
        self.drift_ = np.sqrt(np.einsum("cf,cfg,cg->c", diff, prec0, diff))
        return self

    # ------------------------------------------------------------------ predict

    def predict_fractions(self, X: np.ndarray) -> np.ndarray:
        """Expected fraction of each pure class in every sample.

        Returns
        -------
        ndarray of shape (n_samples, n_classes), rows sum to one.
        """
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        out = np.empty((X.shape[0], self.n_classes))
        nch = (X.shape[0] + K.CHUNK - 1) // K.CHUNK
        run_parallel(K.pv_fractions, nch, X, *self._kernel_params(), np.ascontiguousarray(self.design_), out)
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Index of the pure class with the largest expected fraction."""
        return np.argmax(self.predict_fractions(X), axis=1)
