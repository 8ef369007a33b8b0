"""Tests of segment.mixture.select_n_components."""
from __future__ import annotations

import numpy as np
import pytest

from segment.mixture import GaussianMixture, select_n_components, unique_with_counts


def two_clusters(seed=0):
    rng = np.random.RandomState(seed)
    return np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(6, 1, (200, 2))])


@pytest.mark.parametrize("criterion", ["bic", "aic"])
def test_selects_two_components(criterion):
    X = two_clusters()
    best, scores = select_n_components(X, range(1, 5), criterion=criterion, random_state=0)
    assert isinstance(best, GaussianMixture) and best.n_components == 2
    assert list(scores) == [1, 2, 3, 4]
    assert min(scores, key=scores.get) == 2
    ref = GaussianMixture(2, random_state=0).fit(X)
    expected = ref.bic(X) if criterion == "bic" else ref.aic(X)
    assert scores[2] == pytest.approx(expected, rel=1e-12)


def test_weighted_scores_equal_full_data_scores():
    rng = np.random.RandomState(2)
    x = np.round(np.concatenate([rng.normal(0, 1, 2000), rng.normal(5, 1, 3000)]), 1)[:, None]
    U, c = unique_with_counts(x)
    kw = dict(means_init=None, random_state=0)
    _, full = select_n_components(x, [2], **kw)
    best, hist = select_n_components(U, [2], sample_weight=c, **kw)
    # same model family, data counted with multiplicity: scores agree to fit tolerance
    assert hist[2] == pytest.approx(full[2], rel=1e-3)
    assert best.bic(U, sample_weight=c) == pytest.approx(hist[2], rel=1e-12)


def test_bad_arguments():
    X = two_clusters()
    with pytest.raises(ValueError, match="criterion"):
        select_n_components(X, [1, 2], criterion="xic")
    with pytest.raises(ValueError, match="empty"):
        select_n_components(X, [])
    with pytest.raises(ValueError, match="n_components_range"):
        select_n_components(X, [1], n_components=3)
