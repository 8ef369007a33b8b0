"""Tissue accuracy and speed on MNI152 under simulated bias fields and Rician noise, in one run.

Compares, on the same degraded images and the same brain mask (``t1 > 0`` of the template):

* ``segment`` with several settings (plain mixture, N4, MRF, N4 + MRF; the package defaults are
  marked), through :func:`segment.pipeline.segment_case` on a temporary case folder;
* scikit-learn ``GaussianMixture`` (3 components on T1 inside the mask);
* ANTs Atropos (``antspyx``, k-means init and MRF) run in the peers' environment ``.venv-peers/``
  (created on first use by ``scripts/_peers.py``; ``--ants-python`` overrides it) in a subprocess
  per variant; skipped, and said so, when unavailable.

Ground truth: inside ``t1 > 0``, argmax of (CSF = 1 - GM - WM, GM, WM) of the template's
probability maps.

Degradations (all seeded):

* bias ``b`` %: a multiplicative field ``1 + (b/200) * f`` where ``f`` is a random smooth
  field (a seeded 3rd-order polynomial of the normalised coordinates plus two random
  low-frequency cosines), rescaled to span [-1, 1] over the brain, so the field spans
  ``1 +/- b/2`` % (BrainWeb's "INU b %" convention);
* Rician noise ``s`` %: ``sqrt((I + n1)^2 + n2^2)`` with ``n1, n2 ~ N(0, sigma)``,
  ``sigma = s % of the mean white-matter intensity`` (BrainWeb's convention), then the
  background is set to zero again (a skull-stripped scan).

    .venv/bin/python scripts/validate_degraded.py --out docs/validation_degraded.md
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from segment.config import Config, config_from_dict
from segment.io.nifti import save_volume
from segment.metrics import dice
from segment.pipeline import segment_case

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import atropos_available  # noqa: E402
from _peers import run_atropos as _run_atropos  # noqa: E402
from validate_tissue import mni_truth, sklearn_gmm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: (name, bias %, noise %)
VARIANTS = [
    ("clean", 0, 0),
    ("bias 20 %", 20, 0),
    ("bias 40 %", 40, 0),
    ("noise 1 %", 0, 1),
    ("noise 3 %", 0, 3),
    ("noise 5 %", 0, 5),
    ("noise 7 %", 0, 7),
    ("noise 9 %", 0, 9),
    ("bias 20 % + noise 4 %", 20, 4),
]

#: Hand-written findings after this marker in --out survive a re-run.
NOTES = "<!-- notes: kept when the script rewrites this file -->"


def smooth_field(shape: tuple[int, int, int], brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random smooth field spanning [-1, 1] over ``brain``."""
    axes = [np.linspace(-1, 1, n) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    f = np.zeros(shape)
    for i in range(4):
        for j in range(4 - i):
            for k in range(4 - i - j):
                if i + j + k:
                    f = f + rng.normal() / (i + j + k) * x**i * y**j * z**k
    for _ in range(2):
        kx, ky, kz = rng.uniform(0.5, 1.5, 3) * np.pi / 2
        f = f + rng.normal() * np.cos(kx * x + ky * y + kz * z + rng.uniform(0, 2 * np.pi))
    lo, hi = f[brain].min(), f[brain].max()
    return (2 * (f - lo) / (hi - lo) - 1).astype(np.float32)


def degrade(t1: np.ndarray, brain: np.ndarray, wm_mean: float, bias: float, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = t1.astype(np.float32)
    if bias:
        out = out * (1 + bias / 200.0 * smooth_field(t1.shape, brain, rng))
    if noise:
        sigma = noise / 100.0 * wm_mean
        n1 = rng.normal(0, sigma, t1.shape).astype(np.float32)
        n2 = rng.normal(0, sigma, t1.shape).astype(np.float32)
        out = np.sqrt((out + n1) ** 2 + n2**2)
    out[~brain] = 0
    return out.astype(np.float32)


def run_segment(case: Path, config: Config, out: Path) -> tuple[np.ndarray, float]:
    """Labels and wall time of ``segment_case`` (load, segment, write label maps)."""
    t = time.perf_counter()
    res = segment_case(case, config, out)
    secs = time.perf_counter() - t
    return np.asarray(nib.load(str(res.outputs["tissue"])).dataobj), secs


def run_atropos(python: str | None, img: Path, mask: Path, out: Path, mrf: str, conv: str) -> tuple[np.ndarray, float, str]:
    """Atropos (k-means init) through ``scripts/_peers.py``; ``python`` None = ``.venv-peers/``.
    Labels 1..3 by increasing mean T1."""
    return _run_atropos(python, img, mask, out, mrf=mrf, conv=conv)


def overlay(path: Path, img: np.ndarray, truth: np.ndarray, preds: dict[str, np.ndarray], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap([(0, 0, 0, 0), (0.2, 0.5, 1, 0.55), (0.2, 0.85, 0.3, 0.55), (1, 0.85, 0.2, 0.55)])
    panels = {"image": None, "truth": truth, **preds}
    zs = [int(truth.shape[2] * 0.55), int(truth.shape[2] * 0.40)]
    fig, axs = plt.subplots(len(zs), len(panels), figsize=(2.6 * len(panels), 3.0 * len(zs)))
    for r, z in enumerate(zs):
        for c, (name, lab) in enumerate(panels.items()):
            ax = axs[r, c]
            ax.imshow(img[:, :, z].T, origin="lower", cmap="gray")
            if lab is not None:
                ax.imshow(lab[:, :, z].T, origin="lower", cmap=cmap, vmin=0, vmax=3, interpolation="nearest")
            ax.set_axis_off()
            if r == 0:
                ax.set_title(name, fontsize=8)
    fig.suptitle(f"MNI152, {title}  (blue CSF, green GM, yellow WM)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def noise_plot(path: Path, table: dict, methods: list[str], names: dict[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [(0, "clean")] + [(n, v) for v, b, n in VARIANTS if b == 0 and n > 0]
    fig, axs = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, (cls, name) in zip(axs, ((2, "GM"), (3, "WM"))):
        for m in methods:
            xs = [n for n, v in levels if (v, m) in table]
            ys = [table[(v, m)]["dice"][cls - 1] for n, v in levels if (v, m) in table]
            ax.plot(xs, ys, marker="o", label=names[m].split(",")[0])
        ax.axhline({2: 0.90, 3: 0.93}[cls], color="grey", ls=":", lw=1)
        ax.set_title(f"{name} Dice vs Rician noise (MNI152)")
        ax.set_xlabel("noise sigma, % of mean WM intensity")
        ax.grid(alpha=0.3)
    axs[0].set_ylabel("Dice")
    axs[1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    ap.add_argument("--figures", type=Path, default=Path("docs/figures"))
    ap.add_argument("--seed", type=int, default=2024, help="seed of the bias fields and noise")
    ap.add_argument("--beta", type=float, default=None, help="MRF beta of the MRF rows (default: the config default, else 0.3)")
    ap.add_argument("--ants-python", default=None,
                    help="python of a venv with antspyx (default: .venv-peers/, created if missing)")
    ap.add_argument("--atropos-mrf", default="[0.2,1x1x1]")
    ap.add_argument("--atropos-conv", default="[5,0]")
    ap.add_argument("--variants", default=None, help="comma-separated subset of variant names (default all)")
    ap.add_argument("--methods", default=None, help="comma-separated subset of method keys: plain,n4,mrf,n4mrf,sklearn,atropos")
    args = ap.parse_args(argv)

    t1_img, truth = mni_truth(args.data)
    t1 = np.asarray(t1_img.dataobj).astype(np.float32)
    brain = t1 > 0
    wm_mean = float(t1[truth == 3].mean())
    defaults = Config()
    beta = args.beta if args.beta is not None else (defaults.postprocess.mrf_beta or 0.3)
    seg_methods = {
        "plain": ("segment without N4 or MRF", {"preprocess": {"bias_correction": False}, "postprocess": {"mrf_beta": 0.0}}),
        "n4": ("segment + N4", {"preprocess": {"bias_correction": True}, "postprocess": {"mrf_beta": 0.0}}),
        "mrf": (f"segment + MRF {beta:g}", {"preprocess": {"bias_correction": False}, "postprocess": {"mrf_beta": beta}}),
        "n4mrf": (f"segment + N4 + MRF {beta:g}", {"preprocess": {"bias_correction": True}, "postprocess": {"mrf_beta": beta}}),
    }
    dflt = {"preprocess": {"bias_correction": defaults.preprocess.bias_correction},
            "postprocess": {"mrf_beta": defaults.postprocess.mrf_beta}}
    keys = args.methods.split(",") if args.methods else [*seg_methods, "sklearn", "atropos"]
    names: dict[str, str] = {}
    configs: dict[str, Config] = {}
    for k, (name, over) in seg_methods.items():
        if k not in keys:
            continue
        over = {"outputs": {"overlay": False}, **over}
        if all(over[s][f] == dflt[s][f] for s in dflt for f in dflt[s]):
            name += " (defaults)"
        names[k] = name
        configs[k] = config_from_dict(over)
    names["sklearn"] = "scikit-learn GaussianMixture"
    names["atropos"] = f"ANTs Atropos kmeans[3] m={args.atropos_mrf} c={args.atropos_conv}"

    ants_ok, ants_note, ants_py = False, "", None
    if "atropos" in keys:
        ants_py, ants_note = atropos_available(args.ants_python)
        if ants_py is not None:
            ants_ok = True
            v = ants_note.split()[-1]
            ants_note += f" ({'.venv-peers' if args.ants_python is None else args.ants_python})"
            names["atropos"] = f"ANTs Atropos {v}, kmeans[3], m={args.atropos_mrf}, c={args.atropos_conv}"
        else:
            print(ants_note, file=sys.stderr)

    variants = VARIANTS
    if args.variants:
        want = [s.strip() for s in args.variants.split(",")]
        variants = [v for v in VARIANTS if v[0] in want]
    table: dict[tuple[str, str], dict] = {}
    figs = args.figures
    figs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mask_path = save_volume(brain.astype(np.uint8), t1_img.affine, tmp / "mask.nii.gz", dtype=np.uint8)
        warm = True
        for vi, (vname, b, s) in enumerate(variants):
            # the seed follows the variant's place in VARIANTS, so --variants reproduces the rows of a full run
            img = degrade(t1, brain, wm_mean, b, s, args.seed + VARIANTS.index((vname, b, s))) if (b or s) else t1
            case = tmp / f"case{vi}"
            t1_path = save_volume(img, t1_img.affine, case / "t1.nii.gz",
                                  dtype=np.uint8 if not (b or s) else np.float32)
            # no ground truth in the case folder: the timed run is the segmentation and its
            # outputs, as Atropos' is; Dice is computed here, outside the timing
            preds: dict[str, np.ndarray] = {}
            for k, cfg in configs.items():
                if warm:
                    segment_case(case, cfg)  # compile / load cached kernels once
                lab, secs = run_segment(case, cfg, tmp / f"out{vi}_{k}")
                preds[k] = lab
                table[(vname, k)] = {"seconds": secs}
            warm = False
            if "sklearn" in keys:
                lab, secs = sklearn_gmm(img, args.seed)
                preds["sklearn"] = lab
                table[(vname, "sklearn")] = {"seconds": secs}
            if ants_ok:
                lab, secs, _ = run_atropos(ants_py, t1_path, mask_path, tmp / f"atropos{vi}.nii.gz",
                                           args.atropos_mrf, args.atropos_conv)
                preds["atropos"] = lab
                table[(vname, "atropos")] = {"seconds": secs}
            for k, lab in preds.items():
                table[(vname, k)]["dice"] = [dice(lab == c, truth == c) for c in (1, 2, 3)]
                d, sec = table[(vname, k)]["dice"], table[(vname, k)]["seconds"]
                print(f"{vname:24s} {names[k]:55s} CSF {d[0]:.3f} GM {d[1]:.3f} WM {d[2]:.3f} {sec:6.1f} s", flush=True)
            if b == 20 and s == 4:
                show = {names[k].split(",")[0].replace(" (defaults)", "*"): preds[k] for k in preds}
                overlay(figs / "degraded_overlay_bias20_noise4.png", img, truth, show, vname)

    methods = [k for k in [*configs, "sklearn", "atropos"] if any((v[0], k) in table for v in variants)]
    noise_plot(figs / "degraded_dice_vs_noise.png", table, methods, names)
    lines = []
    for vname, _, _ in variants:
        lines += [f"### {vname}", "", "| method | Dice CSF | Dice GM | Dice WM | seconds |", "|---|---|---|---|---|"]
        for k in methods:
            r = table.get((vname, k))
            if r is None:
                continue
            d = r["dice"]
            lines.append(f"| {names[k]} | {d[0]:.3f} | {d[1]:.3f} | {d[2]:.3f} | {r['seconds']:.1f} |")
        lines.append("")
    # compact GM/WM summary across variants
    head = "| variant | " + " | ".join(names[k] for k in methods) + " |"
    summ = [head, "|---|" + "---|" * len(methods)]
    for vname, _, _ in variants:
        cells = []
        for k in methods:
            r = table.get((vname, k))
            cells.append("" if r is None else f"{r['dice'][1]:.3f} / {r['dice'][2]:.3f} ({r['seconds']:.1f} s)")
        summ.append(f"| {vname} | " + " | ".join(cells) + " |")
    text = "\n".join(summ) + "\n\n" + "\n".join(lines)
    print(text)
    if args.out:
        cmd = "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])])
        machine = f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        notes = ""
        if args.out.is_file() and NOTES in args.out.read_text():
            notes = args.out.read_text().split(NOTES, 1)[1]
        args.out.write_text(
            "## Tissue on MNI152 under bias and noise\n\n"
            f"Command: `{cmd}`  \nMachine: {machine}  \nAtropos: {ants_note or 'not requested'}\n\n"
            "Seconds: for segment, the wall time of `segment_case` (load, brain mask, N4, mixture, MRF, "
            "clean-up, writing the label maps; Dice computed outside it); for scikit-learn, its fit and "
            "predict; for Atropos, the `ants.atropos` call alone (no reading or writing). One process "
            "at a time on the 2-core machine.\n\n"
            "GM / WM Dice (seconds) per variant:\n\n" + text
            + "\n![Dice vs noise](figures/degraded_dice_vs_noise.png)\n\n"
            "![overlay, bias 20 % + noise 4 %](figures/degraded_overlay_bias20_noise4.png)\n\n"
            + NOTES + (notes or "\n")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
