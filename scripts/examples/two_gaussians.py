"""1-D mixture of two Gaussians: 30% around 0 and 70% around 5.

Fits ``segment.GaussianMixture(2)``, predicts labels, draws 1000 samples from the fit and saves
``two_gaussians.png`` next to this script (histogram, fitted density, samples).

Run: ``python scripts/examples/two_gaussians.py``
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from segment.mixture import GaussianMixture  # noqa: E402


def make_data(seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    return np.concatenate([rng.normal(0.0, 1.0, 300), rng.normal(5.0, 1.0, 700)])[:, None]


def run(seed: int = 0) -> dict:
    """Fit, predict and sample; returns the numbers the figure shows."""
    X = make_data(seed)
    gm = GaussianMixture(2, random_state=seed).fit(X)
    order = np.argsort(gm.means_.ravel())
    labels = gm.predict(X)
    samples, sample_labels = gm.sample(1000)
    return {
        "X": X,
        "model": gm,
        "means": gm.means_.ravel()[order],
        "weights": gm.weights_[order],
        "variances": gm.covariances_.ravel()[order],
        "labels": labels,
        # fraction of samples labelled as the component at 5
        "frac_high": float(np.mean(labels == order[1])),
        "samples": samples,
        "sample_labels": sample_labels,
    }


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    X, gm = res["X"], res["model"]
    grid = np.linspace(-4, 9, 400)[:, None]
    dens = np.exp(gm.score_samples(grid))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(X.ravel(), bins=50, density=True, alpha=0.5, label="data")
    ax.hist(res["samples"].ravel(), bins=50, density=True, histtype="step", label="sample(1000)")
    ax.plot(grid.ravel(), dens, "k", lw=2, label="fitted density")
    ax.set_title("weights {:.2f}/{:.2f}, means {:.2f}/{:.2f}".format(*res["weights"], *res["means"]))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    r = run()
    print("means", r["means"], "weights", r["weights"], "variances", r["variances"])
    print("labelled high:", r["frac_high"], "samples:", r["samples"].shape)
    plot(r, HERE / "two_gaussians.png")
