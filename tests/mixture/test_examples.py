"""The notebook examples in scripts/examples give the documented numbers."""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

EXAMPLES = Path(__file__).resolve().parents[2] / "scripts" / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_two_gaussians_fit_predict_sample(tmp_path):
    mod = load("two_gaussians")
    r = mod.run()
    np.testing.assert_allclose(r["means"], [0.0, 5.0], atol=0.15)
    np.testing.assert_allclose(r["weights"], [0.3, 0.7], atol=0.02)
    np.testing.assert_allclose(r["variances"], [1.0, 1.0], atol=0.15)
    assert abs(r["frac_high"] - 0.7) < 0.02
    assert r["samples"].shape == (1000, 1) and r["sample_labels"].shape == (1000,)
    assert abs(np.mean(r["samples"]) - (0.3 * 0 + 0.7 * 5)) < 0.3
    pytest.importorskip("matplotlib")
    mod.plot(r, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_iris_petal_width_setosa_component():
    mod = load("iris_petal_width")
    r = mod.run("full")
    X, target = r["X"], r["target"]
    setosa = X[target == 0, 0]
    assert r["setosa_mean"] == pytest.approx(0.26, abs=0.02)
    # with full covariances the setosa component is setosa itself: its variance is setosa's
    assert r["setosa_mean"] == pytest.approx(setosa.mean(), abs=0.005)
    assert r["setosa_variance"] == pytest.approx(setosa.var(), rel=0.1)
    assert r["setosa_recall"] == 1.0
    # the variance near 0.04 is the tied (pooled) one, and the versicolor component's
    tied = mod.run("tied")
    assert tied["setosa_variance"] == pytest.approx(0.04, abs=0.006)
    assert r["variances"][1] == pytest.approx(0.04, abs=0.006)


def test_iris_matches_sklearn_from_same_seed():
    from sklearn.mixture import GaussianMixture as SkGM

    mod = load("iris_petal_width")
    X, _ = mod.load_petal_width()
    kw = dict(init_params="random_from_data", random_state=1)
    from segment.mixture import GaussianMixture

    a = GaussianMixture(3, **kw).fit(X)
    b = SkGM(3, **kw).fit(X)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-8)


def test_choose_k_by_bic_and_silhouette():
    mod = load("choose_k")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = mod.run(ks=range(1, 6))
    assert r["best_bic"] == 2
    assert r["best_silhouette"] == 2
    assert r["bic"][2] < r["bic"][3] < r["bic"][1]
    assert r["silhouette"][2] > 0.5
