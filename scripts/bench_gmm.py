"""Benchmark segment.GaussianMixture against scikit-learn on real brain voxels.

Both fit the same data (brain voxels of the four BraTS modalities, each z-scored over the brain)
from the same initial parameters (weights_init / means_init / precisions_init), and the script
prints the final mean log-likelihood of each, the fit times and their ratio.

Usage::

    python scripts/bench_gmm.py [--data DIR] [--k 6] [--dtype float64|float32|both]
                                [--repeat 3] [--compile-times] [--no-sklearn]

``--compile-times`` also measures, in fresh processes, the first fit with an empty Numba cache
(cold compile) and the first fit when the cache is filled (cached load).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "brats_glioma"
ORDER = ("t1n", "t1c", "t2w", "t2f")


def load_voxels(data_dir: Path) -> np.ndarray:
    """Brain voxels (nonzero in every modality), each modality z-scored: (n_voxels, 4) float64."""
    import nibabel as nib

    vols = [np.asarray(nib.load(str(data_dir / f"{m}.nii.gz")).dataobj, dtype=np.float64) for m in ORDER]
    mask = np.all([v != 0 for v in vols], axis=0)
    X = np.stack([v[mask] for v in vols], axis=1)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X


def initial_parameters(X: np.ndarray, k: int, seed: int):
    """Weights, means and precisions from our k-means initialisation (no EM iteration)."""
    from segment.mixture import GaussianMixture

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(k, max_iter=0, random_state=seed).fit(X)
    return gm.weights_.copy(), gm.means_.copy(), gm.precisions_.copy()


def time_fit(make, X, repeat):
    best = np.inf
    model = None
    for _ in range(repeat):
        m = make()
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.fit(X)
        best = min(best, time.perf_counter() - t0)
        model = m
    return best, model


_COMPILE_SNIPPET = r"""
import time, sys
t0 = time.perf_counter()
import numpy as np
from segment.mixture import GaussianMixture
rng = np.random.RandomState(0)
X = rng.normal(size=(2000, 4))
for dt in (np.float64, np.float32):
    GaussianMixture(3, random_state=0, dtype=dt).fit(X).predict_proba(X)
print(f"{time.perf_counter() - t0:.2f}")
"""


def compile_times() -> tuple[float, float]:
    """(cold, cached): seconds of import + first fit/predict in both dtypes, fresh processes."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
        out = []
        for _ in range(2):
            r = subprocess.run(
                [sys.executable, "-c", _COMPILE_SNIPPET], env=env, capture_output=True, text=True, check=True
            )
            out.append(float(r.stdout.strip().splitlines()[-1]))
    return out[0], out[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--max-iter", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=("float64", "float32", "both"), default="both")
    ap.add_argument("--repeat", type=int, default=3, help="best of N fits for ours")
    ap.add_argument("--sk-repeat", type=int, default=1, help="best of N fits for scikit-learn")
    ap.add_argument("--no-sklearn", action="store_true")
    ap.add_argument("--compile-times", action="store_true")
    args = ap.parse_args(argv)

    from segment.mixture import GaussianMixture

    X = load_voxels(args.data)
    n, d = X.shape
    print(f"data: {n} voxels x {d} modalities from {args.data}")
    w0, m0, p0 = initial_parameters(X, args.k, args.seed)
    common = dict(
        n_components=args.k,
        covariance_type="full",
        tol=args.tol,
        max_iter=args.max_iter,
        weights_init=w0,
        means_init=m0,
        precisions_init=p0,
        init_params="random_from_data",
        random_state=args.seed,
    )
    # warm the kernels (compile or load from cache) outside the timings
    for dt in (np.float64, np.float32):
        GaussianMixture(**dict(common, max_iter=1), dtype=dt).fit(X[:5000])

    sk_time = sk_ll = sk_iter = None
    if not args.no_sklearn:
        from sklearn.mixture import GaussianMixture as SkGaussianMixture

        sk_time, sk = time_fit(lambda: SkGaussianMixture(**common), X, args.sk_repeat)
        sk_ll, sk_iter = sk.lower_bound_, sk.n_iter_
        print(f"scikit-learn  float64: {sk_time:8.3f} s  n_iter={sk_iter:3d}  mean loglik={sk_ll:.10f}")

    dtypes = ("float64", "float32") if args.dtype == "both" else (args.dtype,)
    for name in dtypes:
        t, gm = time_fit(lambda: GaussianMixture(**common, dtype=getattr(np, name)), X, args.repeat)
        line = f"segment       {name}: {t:8.3f} s  n_iter={gm.n_iter_:3d}  mean loglik={gm.lower_bound_:.10f}"
        if sk_time is not None:
            rel = abs(gm.lower_bound_ - sk_ll) / abs(sk_ll)
            line += f"  speedup={sk_time / t:5.1f}x  rel.diff loglik={rel:.1e}"
            line += f"  per-iter {1e3 * t / gm.n_iter_:.1f} ms vs {1e3 * sk_time / sk_iter:.0f} ms"
        print(line)
    if args.compile_times:
        cold, cached = compile_times()
        print(f"first fit+predict (f64 and f32), fresh process: cold cache {cold:.1f} s, cached {cached:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
