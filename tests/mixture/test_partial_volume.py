"""The partial-volume mixture: known answers on data with mixed voxels."""
from __future__ import annotations

import numpy as np
import pytest

from segment.mixture.gmm import GaussianMixture
from segment.mixture.partial_volume import PartialVolumeMixture


def _three_tissues(rng, n_pure=20000, n_mix=8000, sd=0.08):
    """Pure classes at 0, 1, 2 and voxels mixing neighbours with a uniform fraction."""
    mu = np.array([0.0, 1.0, 2.0])
    pure = np.concatenate([rng.normal(m, sd, n_pure) for m in mu])
    f = rng.uniform(size=2 * n_mix)
    pair = np.repeat([0, 1], n_mix)
    mixed = (1 - f) * mu[pair] + f * mu[pair + 1] + rng.normal(0, sd, 2 * n_mix)
    truth = np.concatenate([np.repeat([0, 1, 2], n_pure), np.where(f < 0.5, pair, pair + 1)])
    return np.concatenate([pure, mixed])[:, None], truth


def test_recovers_pure_means_where_a_plain_mixture_is_pulled():
    rng = np.random.default_rng(0)
    x, truth = _three_tissues(rng)
    g = GaussianMixture(3, random_state=0).fit(x)
    order = np.argsort(g.means_[:, 0])
    pv = PartialVolumeMixture(3, tol=1e-8, max_iter=2000).fit(
        x, means_init=g.means_[order], covariances_init=g.covariances_[order]
    )
    np.testing.assert_allclose(pv.means_.ravel(), [0.0, 1.0, 2.0], atol=0.02)
    # the plain mixture widens the middle class over the mixed voxels; the PV model does not
    assert np.sqrt(pv.covariances_[1, 0, 0]) == pytest.approx(0.08, abs=0.01)
    assert np.sqrt(g.covariances_[order[1], 0, 0]) > 0.12
    # 3 pure + 2 mixed classes; the mixed ones hold about 16000 / 76000 of the samples
    assert pv.class_weights_[3:].sum() == pytest.approx(16000 / 76000, abs=0.03)
    # labels by the larger fraction match the majority tissue
    assert (pv.predict(x) == truth).mean() > 0.95
    frac = pv.predict_fractions(x[:100])
    np.testing.assert_allclose(frac.sum(axis=1), 1.0, atol=1e-12)


def test_weighted_histogram_fit_equals_full_fit():
    rng = np.random.default_rng(1)
    x, _ = _three_tissues(rng, n_pure=3000, n_mix=1000)
    x = np.round(x, 2)
    u, counts = np.unique(x[:, 0], return_counts=True)
    init = dict(means_init=[[0.1], [0.9], [2.1]])
    a = PartialVolumeMixture(3, tol=1e-10, max_iter=300).fit(x, **init)
    b = PartialVolumeMixture(3, tol=1e-10, max_iter=300).fit(u[:, None], sample_weight=counts, **init)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-6, atol=1e-7)  # sums in another order
    assert a.n_iter_ == b.n_iter_


def test_deterministic_and_drift_guard():
    rng = np.random.default_rng(2)
    x, _ = _three_tissues(rng, n_pure=2000, n_mix=500)
    kw = dict(means_init=[[0.0], [1.0], [2.0]])
    a = PartialVolumeMixture(3).fit(x, **kw)
    b = PartialVolumeMixture(3).fit(x, **kw)
    np.testing.assert_array_equal(a.means_, b.means_)
    assert not a.drifted_ and a.drift_.max() < 2
    # started far from the data with a tight spread, the means must move many SDs: flagged
    c = PartialVolumeMixture(3).fit(
        x, means_init=[[-1.0], [0.2], [3.0]], covariances_init=np.full((3, 1, 1), 1e-3), max_drift=2.0
    )
    assert c.drifted_


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        PartialVolumeMixture(3).fit(np.array([[0.0], [np.nan], [1.0]]), means_init=[[0], [1], [2]])
    with pytest.raises(ValueError, match="sample_weight"):
        PartialVolumeMixture(3).fit(np.zeros((4, 1)), means_init=[[0], [1], [2]], sample_weight=-np.ones(4))
