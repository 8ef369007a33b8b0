"""segment.GaussianMixture as a scikit-learn estimator: checks, clone, Pipeline, GridSearchCV."""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError as SkNotFittedError  # noqa: E402
from sklearn.mixture import GaussianMixture as SkGaussianMixture  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils import get_tags  # noqa: E402
from sklearn.utils.validation import check_is_fitted  # noqa: E402

from segment import GaussianMixture  # noqa: E402
from segment.mixture.gmm import NotFittedError  # noqa: E402

#: Checks that scikit-learn itself skips in some environments, and why. Nothing else may be
#: skipped and nothing may fail.
ENVIRONMENT_SKIPS = {
    "check_sample_weights_pandas_series": "pandas is not installed (not a dependency of segment)",
    "check_dataframe_column_names_consistency": "pandas is not installed (not a dependency of segment)",
    "check_array_api_input": "SCIPY_ARRAY_API is not set; segment's kernels take numpy arrays only",
}


def _blobs(seed=0, n=600):
    rng = np.random.RandomState(seed)
    centres = np.array([[0.0, 0.0], [6.0, 1.0], [2.0, 7.0]])
    sizes = [n // 2, n // 3, n - n // 2 - n // 3]
    return np.vstack([rng.normal(c, [1.0, 0.7], size=(s, 2)) for c, s in zip(centres, sizes)])


def test_check_estimator_passes_every_applicable_check():
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(GaussianMixture(), on_fail=None, on_skip=None)
    assert len(results) > 40
    failed = {r["check_name"]: repr(r["exception"]) for r in results if r["status"] == "failed"}
    assert failed == {}
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert skipped <= set(ENVIRONMENT_SKIPS), skipped - set(ENVIRONMENT_SKIPS)


def test_tags_say_density_estimator():
    tags = get_tags(GaussianMixture())
    assert tags.estimator_type == "density_estimator"
    assert tags.requires_fit and not tags.input_tags.allow_nan and not tags.input_tags.sparse
    assert tags.target_tags.required is False


def test_not_fitted_error_is_ours_and_scikit_learns():
    gm = GaussianMixture(2)
    with pytest.raises(SkNotFittedError):
        check_is_fitted(gm)
    for method in (gm.predict, gm.predict_proba, gm.score_samples, gm.score):
        with pytest.raises(NotFittedError, match="not fitted"):
            method(np.zeros((3, 2)))
        with pytest.raises(SkNotFittedError):
            method(np.zeros((3, 2)))
    with pytest.raises(NotFittedError):
        gm.sample(3)
    # scikit-learn's own contract: NotFittedError is both a ValueError and an AttributeError
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)
    gm.fit(_blobs())
    check_is_fitted(gm)


def test_get_set_params_and_clone():
    gm = GaussianMixture(4, covariance_type="diag", random_state=3, verbose_interval=5)
    params = gm.get_params()
    assert params["n_components"] == 4 and params["verbose_interval"] == 5
    assert set(params) == set(SkGaussianMixture().get_params()) | {"dtype"}
    assert gm.set_params(tol=1e-5) is gm and gm.tol == 1e-5
    with pytest.raises(ValueError, match="Invalid parameter 'n_comp'"):
        gm.set_params(n_comp=2)
    gm.fit(_blobs())
    c = clone(gm)
    assert c is not gm and c.get_params() == gm.get_params()
    assert not hasattr(c, "means_")
    again = pickle.loads(pickle.dumps(gm))
    np.testing.assert_array_equal(again.predict(_blobs(1)), gm.predict(_blobs(1)))


def test_pipeline_with_standard_scaler():
    X = _blobs() * [100.0, 0.01] + [5000.0, -3.0]  # very different scales per feature
    pipe = make_pipeline(StandardScaler(), GaussianMixture(3, random_state=0))
    pipe.fit(X)
    labels = pipe.predict(X)
    assert sorted(np.bincount(labels).tolist()) == [100, 200, 300]
    proba = pipe.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    # score = mean log-likelihood of the standardised data, as the bare estimator gives it
    Z = StandardScaler().fit_transform(X)
    gm = GaussianMixture(3, random_state=0).fit(Z)
    assert pipe.score(X) == pytest.approx(gm.score(Z), rel=1e-10)
    # sample weights reach the mixture through the pipeline: zero weight on the smallest blob
    # leaves two components where the data are and one without support
    from sklearn.metrics import adjusted_rand_score

    w = np.ones(len(X))
    pipe.fit(X, gaussianmixture__sample_weight=w)
    assert adjusted_rand_score(pipe.predict(X), labels) == 1.0
    w[500:] = 0.0
    pipe2 = make_pipeline(StandardScaler(), GaussianMixture(2, random_state=0))
    pipe2.fit(X, gaussianmixture__sample_weight=w)
    assert sorted(np.bincount(pipe2.predict(X[:500])).tolist()) == [200, 300]


def test_grid_search_over_n_components_picks_scikit_learns_k():
    X = _blobs(seed=5, n=900)
    cv = KFold(5, shuffle=True, random_state=0)
    grid = {"n_components": [1, 2, 3, 4, 5, 6]}
    ours = GridSearchCV(GaussianMixture(random_state=0), grid, cv=cv).fit(X)
    theirs = GridSearchCV(SkGaussianMixture(random_state=0), grid, cv=cv).fit(X)
    assert ours.best_params_ == theirs.best_params_ == {"n_components": 3}
    # held-out scores are mean log-likelihoods: at the true K both reach the same optimum (other
    # K can end in other local optima, since the k-means initialisations differ)
    assert ours.cv_results_["mean_test_score"][2] == pytest.approx(theirs.cv_results_["mean_test_score"][2],
                                                                     abs=2e-3)
    assert isinstance(ours.best_estimator_, GaussianMixture)
    assert ours.best_estimator_.n_components == 3


def test_score_is_mean_log_likelihood():
    X = _blobs()
    gm = GaussianMixture(3, random_state=0).fit(X)
    assert gm.score(X) == pytest.approx(float(gm.score_samples(X).mean()), rel=1e-12)
    from scipy.stats import multivariate_normal

    dens = sum(w * multivariate_normal(m, c).pdf(X) for w, m, c in zip(gm.weights_, gm.means_, gm.covariances_))
    assert gm.score(X) == pytest.approx(float(np.log(dens).mean()), rel=1e-9)


def test_verbose_prints_like_scikit_learn(capsys):
    X = _blobs()
    GaussianMixture(3, random_state=0, verbose=1).fit(X)
    out = capsys.readouterr().out.splitlines()
    assert out == ["Initialization 0", "Initialization converged."]
    gm = GaussianMixture(3, random_state=0, verbose=2, verbose_interval=1, tol=0.0, max_iter=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(X)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Initialization 0"
    assert [line.split("\t")[0] for line in out[1:5]] == [f"  Iteration {i}" for i in range(1, 5)]
    assert "ll change" in out[1] and out[5].startswith("Initialization did not converge. time lapse")
    # printing changes nothing
    quiet = GaussianMixture(3, random_state=0, tol=0.0, max_iter=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet.fit(X)
    np.testing.assert_array_equal(quiet.means_, gm.means_)
    with pytest.raises(ValueError, match="verbose_interval"):
        GaussianMixture(verbose_interval=0).fit(X)
