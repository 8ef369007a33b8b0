"""Choosing the number of components for standardized tabular data: BIC and silhouette.

Iris (4 features, each standardized to zero mean and unit variance), K = 1..8, full covariances.
BIC comes from ``segment.mixture.select_n_components``; the silhouette of each K's hard labels
from ``sklearn.metrics.silhouette_score`` (scikit-learn is needed for the data and the metric).
Both choose K = 2 (setosa vs the rest). Saves ``choose_k.png`` next to this script.

Run: ``python scripts/examples/choose_k.py``
"""
from __future__ import annotations

import sys
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from segment.mixture import GaussianMixture, select_n_components  # noqa: E402


def load_standardized():
    from sklearn.datasets import load_iris

    X = load_iris().data
    return (X - X.mean(axis=0)) / X.std(axis=0)


def run(ks=range(1, 9), seed: int = 0) -> dict:
    from sklearn.metrics import silhouette_score

    X = load_standardized()
    best, bic = select_n_components(X, ks, criterion="bic", random_state=seed)
    _, aic = select_n_components(X, ks, criterion="aic", random_state=seed)
    sil = {}
    for k in ks:
        if k >= 2:
            labels = GaussianMixture(k, random_state=seed).fit_predict(X)
            sil[k] = float(silhouette_score(X, labels))
    return {
        "bic": bic,
        "aic": aic,
        "silhouette": sil,
        "best_bic": best.n_components,
        "best_aic": min(aic, key=aic.get),
        "best_silhouette": max(sil, key=sil.get),
    }


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.2))
    ks = list(res["bic"])
    a1.plot(ks, [res["bic"][k] for k in ks], "o-", label="BIC")
    a1.plot(ks, [res["aic"][k] for k in ks], "s--", label="AIC")
    a1.axvline(res["best_bic"], color="k", lw=0.8)
    a1.set_xlabel("K")
    a1.legend()
    a1.set_title(f"BIC chooses K = {res['best_bic']}")
    ks2 = list(res["silhouette"])
    a2.plot(ks2, [res["silhouette"][k] for k in ks2], "o-")
    a2.axvline(res["best_silhouette"], color="k", lw=0.8)
    a2.set_xlabel("K")
    a2.set_title(f"silhouette chooses K = {res['best_silhouette']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    r = run()
    print("BIC", {k: round(v, 1) for k, v in r["bic"].items()}, "-> K =", r["best_bic"])
    print("AIC", {k: round(v, 1) for k, v in r["aic"].items()}, "-> K =", r["best_aic"])
    print("silhouette", {k: round(v, 3) for k, v in r["silhouette"].items()}, "-> K =", r["best_silhouette"])
    plot(r, HERE / "choose_k.png")
