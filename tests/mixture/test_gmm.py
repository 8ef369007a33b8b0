"""Tests of segment.mixture.GaussianMixture: scikit-learn parity, weights, determinism, edge cases."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from segment.errors import ConvergenceWarning, SegmentError
from segment.mixture import FitError, GaussianMixture, unique_with_counts
from segment.mixture import _kernels as K_
from segment.mixture.gmm import _CONSTS

sk_mixture = pytest.importorskip("sklearn.mixture")
SkGM = sk_mixture.GaussianMixture

COV_TYPES = ("full", "tied", "diag", "spherical")
RTOL = 1e-8


def blobs(n=600, d=3, k=3, seed=0, spread=3.0):
    rng = np.random.RandomState(seed)
    centers = rng.normal(scale=spread, size=(k, d))
    labels = rng.randint(k, size=n)
    scales = rng.uniform(0.5, 1.5, size=(k, d))
    return centers[labels] + rng.normal(size=(n, d)) * scales[labels], labels


def assert_same_model(ours, sk, rtol=RTOL):
    assert ours.n_iter_ == sk.n_iter_
    assert ours.converged_ == sk.converged_
    np.testing.assert_allclose(ours.lower_bound_, sk.lower_bound_, rtol=rtol)
    np.testing.assert_allclose(ours.weights_, sk.weights_, rtol=rtol)
    np.testing.assert_allclose(ours.means_, sk.means_, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(ours.covariances_, sk.covariances_, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(ours.precisions_cholesky_, sk.precisions_cholesky_, rtol=rtol, atol=1e-10)
    np.testing.assert_allclose(ours.precisions_, sk.precisions_, rtol=rtol, atol=1e-10)


def quiet_fit(model, X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X, **kw)


# ---------------------------------------------------------------- parity with scikit-learn
@pytest.mark.parametrize("cov", COV_TYPES)
@pytest.mark.parametrize("init", ["random", "random_from_data"])
def test_parity_same_random_start(cov, init):
    # 'random' and 'random_from_data' consume the random stream exactly as scikit-learn does,
    # so both start from the same responsibilities
    X, _ = blobs()
    kw = dict(covariance_type=cov, init_params=init, random_state=3, tol=1e-6, max_iter=300)
    ours = quiet_fit(GaussianMixture(3, **kw), X)
    sk = quiet_fit(SkGM(3, **kw), X)
    assert_same_model(ours, sk)
    np.testing.assert_array_equal(ours.predict(X), sk.predict(X))
    np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(ours.score_samples(X), sk.score_samples(X), rtol=RTOL)
    np.testing.assert_allclose(ours.score(X), sk.score(X), rtol=RTOL)
    np.testing.assert_allclose(ours.bic(X), sk.bic(X), rtol=RTOL)
    np.testing.assert_allclose(ours.aic(X), sk.aic(X), rtol=RTOL)


@pytest.mark.parametrize("cov", COV_TYPES)
@pytest.mark.parametrize("d", [1, 2, 6])
def test_parity_explicit_init(cov, d):
    # d = 6 exercises the general-d kernels, d <= 4 the padded register path
    X, labels = blobs(n=500, d=d, k=3, seed=d)
    K = 3
    means = np.stack([X[labels == k].mean(axis=0) for k in range(K)]) + 0.3
    weights = np.array([0.2, 0.3, 0.5])
    var = X.var(axis=0)
    prec = {
        "full": np.stack([np.diag(1 / var)] * K),
        "tied": np.diag(1 / var),
        "diag": np.stack([1 / var] * K),
        "spherical": np.full(K, 1 / var.mean()),
    }[cov]
    kw = dict(covariance_type=cov, weights_init=weights, means_init=means, precisions_init=prec,
              tol=1e-7, max_iter=500, random_state=0)
    ours = quiet_fit(GaussianMixture(K, **kw), X)
    sk = quiet_fit(SkGM(K, **kw), X)
    assert_same_model(ours, sk)
    np.testing.assert_array_equal(ours.fit_predict(X), sk.fit_predict(X))


def test_float32_close_to_float64():
    X, _ = blobs(n=3000)
    kw = dict(init_params="random_from_data", random_state=1, tol=1e-9, max_iter=300)
    a = quiet_fit(GaussianMixture(3, **kw), X)
    b = quiet_fit(GaussianMixture(3, dtype=np.float32, **kw), X)
    np.testing.assert_allclose(b.lower_bound_, a.lower_bound_, rtol=1e-5)
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-3, atol=1e-3)
    assert b.means_.dtype == np.float64
    assert b.predict_proba(X).dtype == np.float32
    assert (a.predict(X) == b.predict(X)).mean() > 0.999


def test_kernel_exp_and_log_accuracy():
    for dt, tol_exp, tol_log in ((np.float64, 1e-15, 1e-15), (np.float32, 2e-7, 3e-7)):
        fc, ic = _CONSTS[np.dtype(dt)]
        m = K_.CHUNK
        x = -np.linspace(0, 80 if dt == np.float64 else 60, m)
        lp = np.zeros((2, m), dt)
        lp[1] = x
        mx, ssum, tbuf = (np.empty(m, dt) for _ in range(3))
        K_._chunk_softmax(lp, 2, m, fc, ic, mx, ssum, tbuf, tbuf.view(ic.dtype))
        ref = np.exp(x.astype(dt).astype(np.float64))
        assert np.max(np.abs(lp[1] / ref - 1)) < tol_exp
        v = np.linspace(1.0, 40.0, m).astype(dt)
        out, a, b = (np.empty(m, dt) for _ in range(3))
        K_._chunk_log(v, m, fc, ic, out, a, a.view(ic.dtype), b, b.view(ic.dtype), v.view(ic.dtype))
        ref = np.log(v.astype(np.float64))
        assert np.max(np.abs(out[1:] - ref[1:]) / ref[1:]) < tol_log
        assert out[0] == 0


# ---------------------------------------------------------------- sample weights
def test_integer_weights_equal_repeated_samples():
    X, _ = blobs(n=300, d=2)
    rng = np.random.RandomState(0)
    w = rng.randint(0, 4, size=len(X)).astype(float)
    Xr = np.repeat(X, w.astype(int), axis=0)
    init = dict(means_init=X[:3] + 0.1, weights_init=[0.3, 0.3, 0.4],
                precisions_init=np.stack([np.eye(2)] * 3), tol=1e-9, max_iter=400)
    a = quiet_fit(GaussianMixture(3, **init), X, sample_weight=w)
    b = quiet_fit(GaussianMixture(3, **init), Xr)
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(a.lower_bound_, b.lower_bound_, rtol=1e-10)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-9)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-9)
    np.testing.assert_allclose(a.score(X, sample_weight=w), b.score(Xr), rtol=1e-12)
    np.testing.assert_allclose(a.bic(X, sample_weight=w), b.bic(Xr), rtol=1e-12)


def test_unique_with_counts_exact_histogram_fit():
    rng = np.random.RandomState(1)
    x = np.round(np.concatenate([rng.normal(0, 1, 3000), rng.normal(5, 1, 7000)]), 1)
    U, counts, inv = unique_with_counts(x, return_inverse=True)
    assert U.shape == (len(np.unique(x)), 1) and counts.sum() == len(x)
    np.testing.assert_array_equal(U[inv, 0], x)
    init = dict(means_init=[[0.5], [4.0]], weights_init=[0.5, 0.5],
                precisions_init=[[[1.0]], [[1.0]]], tol=1e-10, max_iter=500)
    full = GaussianMixture(2, **init).fit(x[:, None])
    hist = GaussianMixture(2, **init).fit(U, sample_weight=counts)
    assert full.n_iter_ == hist.n_iter_
    np.testing.assert_allclose(hist.means_, full.means_, rtol=1e-10)
    np.testing.assert_allclose(hist.covariances_, full.covariances_, rtol=1e-10)
    np.testing.assert_array_equal(hist.predict(U)[inv], full.predict(x[:, None]))
    U2, c2 = unique_with_counts(np.array([[1, 2], [1, 2], [3, 4]]))
    assert U2.tolist() == [[1, 2], [3, 4]] and c2.tolist() == [2.0, 1.0]


def test_weight_scale_invariance_and_validation():
    X, _ = blobs(n=200, d=2)
    w = np.random.RandomState(0).uniform(0.5, 2, len(X))
    a = GaussianMixture(2, random_state=0).fit(X, sample_weight=w)
    b = GaussianMixture(2, random_state=0).fit(X, sample_weight=w * 7.0)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-10)
    for bad in (-w, w[:-1], np.full(len(X), np.nan), np.zeros(len(X))):
        with pytest.raises(ValueError):
            GaussianMixture(2).fit(X, sample_weight=bad)


# ---------------------------------------------------------------- determinism
def test_same_seed_bit_identical_across_runs_and_threads():
    import numba

    X, _ = blobs(n=3 * K_.CHUNK * K_.GROUP + 17, d=4, k=4, seed=5)  # several parallel groups
    fits = []
    n0 = numba.get_num_threads()
    try:
        for nt in sorted({1, n0}) + [n0]:
            numba.set_num_threads(nt)
            for dt in (np.float64, np.float32):
                gm = quiet_fit(GaussianMixture(4, random_state=7, dtype=dt, max_iter=20), X)
                fits.append((nt, dt, gm.means_.copy(), gm.covariances_.copy(), gm.lower_bound_,
                             gm.predict_proba(X)))
    finally:
        numba.set_num_threads(n0)
    for dt in (np.float64, np.float32):
        same = [f for f in fits if f[1] is dt]
        for f in same[1:]:
            assert np.array_equal(f[2], same[0][2])
            assert np.array_equal(f[3], same[0][3])
            assert f[4] == same[0][4]
            assert np.array_equal(f[5], same[0][5])


def test_different_seeds_give_same_components_on_clear_data():
    X, _ = blobs(n=900, d=2, k=3, spread=6.0)
    m = [np.sort(GaussianMixture(3, random_state=s).fit(X).means_[:, 0]) for s in range(3)]
    np.testing.assert_allclose(m[0], m[1], rtol=1e-6)
    np.testing.assert_allclose(m[0], m[2], rtol=1e-6)


# ---------------------------------------------------------------- initialisation
@pytest.mark.parametrize("init", ["kmeans", "k-means++"])
def test_init_methods_recover_separated_clusters(init):
    # ('random' and 'random_from_data' can end in the same poor optimum as scikit-learn's: they
    # are parity-tested above)
    X, labels = blobs(n=600, d=2, k=3, spread=8.0)
    gm = GaussianMixture(3, init_params=init, random_state=0, n_init=1 if init == "kmeans" else 2,
                         max_iter=300).fit(X)
    true = np.stack([X[labels == k].mean(axis=0) for k in range(3)])
    dist = np.linalg.norm(true[:, None, :] - gm.means_[None, :, :], axis=2)
    assert np.all(dist.min(axis=1) < 0.3)
    assert gm.converged_


def test_weighted_kmeans_init_uses_weights():
    X = np.array([[0.0], [0.1], [10.0], [10.1], [20.0]])
    w = np.array([1.0, 1.0, 1.0, 1.0, 1e-9])
    gm = GaussianMixture(2, random_state=0).fit(X, sample_weight=w)
    np.testing.assert_allclose(np.sort(gm.means_.ravel()), [0.05, 10.05], atol=1e-3)


# ---------------------------------------------------------------- API behaviour
def test_init_only_stores_and_params():
    gm = GaussianMixture(3, covariance_type="diag", tol=1e-4, dtype=np.float32)
    assert not hasattr(gm, "means_")
    p = gm.get_params()
    assert p["n_components"] == 3 and p["covariance_type"] == "diag" and p["dtype"] is np.float32
    assert gm.set_params(n_components=4).n_components == 4
    assert "n_components=4" not in repr(gm) or "GaussianMixture(4" in repr(gm)
    with pytest.raises(AttributeError, match="not fitted"):
        gm.predict(np.zeros((3, 2)))


@pytest.mark.parametrize(
    "kwargs",
    [dict(covariance_type="bogus"), dict(init_params="nope"), dict(n_init=0), dict(tol=-1),
     dict(reg_covar=-1), dict(max_iter=-1), dict(dtype=np.int32), dict(n_components=0),
     dict(weights_init=[0.5, 0.6]), dict(means_init=np.zeros((3, 2))),
     dict(precisions_init=np.zeros((2, 2, 2)))],
)
def test_invalid_parameters(kwargs):
    X, _ = blobs(n=50, d=2)
    with pytest.raises(ValueError):
        GaussianMixture(**{"n_components": 2, **kwargs}).fit(X)


def test_fit_predict_predict_proba_score_sample():
    X, _ = blobs(n=400, d=2)
    gm = GaussianMixture(3, random_state=0)
    labels = gm.fit_predict(X)
    np.testing.assert_array_equal(labels, gm.predict(X))
    P = gm.predict_proba(X)
    assert P.shape == (400, 3)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(P.argmax(axis=1), labels)
    assert gm.score(X) == pytest.approx(gm.score_samples(X).mean(), rel=1e-12)
    assert gm.lower_bounds_[-1] == gm.lower_bound_ and len(gm.lower_bounds_) == gm.n_iter_
    assert gm.n_features_in_ == 2
    Xs, ys = gm.sample(500)
    assert Xs.shape == (500, 2) and ys.shape == (500,) and set(np.unique(ys)) <= {0, 1, 2}
    with pytest.raises(ValueError, match="features"):
        gm.predict(np.zeros((3, 5)))
    with pytest.raises(ValueError):
        gm.sample(0)


def test_sample_matches_sklearn_stream():
    X, _ = blobs(n=300, d=2)
    kw = dict(init_params="random_from_data", random_state=4)
    ours = GaussianMixture(3, **kw).fit(X)
    sk = SkGM(3, **kw).fit(X)
    a, la = ours.sample(50)
    b, lb = sk.sample(50)
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_allclose(a, b, rtol=1e-7)


def test_warm_start_and_n_init():
    X, _ = blobs(n=500, d=2)
    gm = GaussianMixture(3, random_state=0, max_iter=2, warm_start=True)
    with pytest.warns(ConvergenceWarning):
        gm.fit(X)
    lb1 = gm.lower_bound_
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(X)
    assert gm.lower_bound_ >= lb1
    one = GaussianMixture(3, init_params="random", random_state=0).fit(X)
    many = GaussianMixture(3, init_params="random", random_state=0, n_init=4).fit(X)
    assert many.lower_bound_ >= one.lower_bound_ - 1e-12


def test_convergence_warning_and_max_iter_zero():
    X, _ = blobs(n=200, d=2)
    with pytest.warns(ConvergenceWarning):
        gm = GaussianMixture(3, max_iter=1, random_state=0).fit(X)
    assert not gm.converged_ and gm.n_iter_ == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gm0 = GaussianMixture(3, max_iter=0, random_state=0).fit(X)
    assert gm0.n_iter_ == 0


# ---------------------------------------------------------------- degenerate data
def test_nan_and_inf_rejected_with_named_problem():
    X, _ = blobs(n=50, d=2)
    Xn = X.copy()
    Xn[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*row 7, column 1"):
        GaussianMixture(2).fit(Xn)
    Xi = X.copy()
    Xi[3, 0] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        GaussianMixture(2).fit(Xi)
    gm = GaussianMixture(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="NaN"):
        gm.predict(Xn)


def test_constant_column():
    X, _ = blobs(n=300, d=3)
    X[:, 1] = 2.5
    for cov in COV_TYPES:
        gm = GaussianMixture(2, covariance_type=cov, random_state=0).fit(X)
        assert np.all(np.isfinite(gm.means_)) and np.isfinite(gm.lower_bound_)
        np.testing.assert_allclose(gm.means_[:, 1], 2.5, rtol=1e-12)
        assert np.all(np.isfinite(gm.predict_proba(X)))


def test_all_constant_data():
    X = np.ones((50, 2))
    with pytest.warns(UserWarning, match="distinct"):
        gm = GaussianMixture(2, random_state=0).fit(X)
    np.testing.assert_allclose(gm.means_, 1.0)
    assert np.all(np.isfinite(gm.predict_proba(X)))


def test_fewer_distinct_points_than_components():
    X = np.repeat([[0.0, 0.0], [1.0, 1.0]], 30, axis=0)
    with pytest.warns(UserWarning, match="only 2 distinct points"):
        gm = GaussianMixture(3, random_state=0).fit(X)
    assert np.all(np.isfinite(gm.covariances_)) and np.all(gm.weights_ > 0)
    assert set(map(tuple, np.round(gm.means_, 6))) == {(0.0, 0.0), (1.0, 1.0)}
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixture(5).fit(X[:3])


def test_empty_component_is_reseeded_with_warning():
    X, _ = blobs(n=400, d=2, k=2, spread=5.0)
    means = np.array([X.mean(axis=0) - 1, X.mean(axis=0) + 1, [1e3, 1e3]])
    with pytest.warns(UserWarning, match=r"component 2 emptied.*re-seeded by splitting"):
        gm = GaussianMixture(3, means_init=means, random_state=0).fit(X)
    assert np.all(gm.weights_ > 0.05)
    assert np.all(np.abs(gm.means_) < 50)


def test_ill_conditioned_covariance_error_names_the_fix():
    X, _ = blobs(n=100, d=2)
    X[:, 1] = 0.0  # singular without regularisation
    with pytest.raises(FitError, match="reg_covar") as err:
        GaussianMixture(2, reg_covar=0.0, random_state=0).fit(X)
    assert isinstance(err.value, ValueError) and isinstance(err.value, SegmentError)
    assert "number of components" in str(err.value)
    with pytest.raises(FitError):
        GaussianMixture(2, covariance_type="diag", reg_covar=0.0, random_state=0).fit(X)


def test_bad_shapes():
    with pytest.raises(ValueError, match="2-D"):
        GaussianMixture(1).fit(np.zeros(5))
    with pytest.raises(ValueError):
        GaussianMixture(1).fit(np.zeros((0, 2)))
    with pytest.raises(ValueError):
        GaussianMixture(1).fit(np.array([["a", "b"]]))
