"""Tissue on the IBSR18 subjects with manual labels: segment vs scikit-learn vs ANTs Atropos, in one run.

Every subject folder under ``<data>/ibsr`` (``t1.nii.gz``: skull-stripped T1, 256x128x256 with
1.5 mm coronal slices and a trailing singleton 4th axis; ``seg_tissue.nii.gz``: manual 1 CSF,
2 GM, 3 WM) is segmented by

* ``segment``: :func:`segment.pipeline.run_pipeline` on the subject folder with the default
  ``Config()`` (or ``--config FILE``), in memory (seconds: the whole pipeline, loading included);
* scikit-learn ``GaussianMixture(3, covariance_type='full', random_state=0)`` on the brain voxels
  (T1 > 0), classes named by increasing mean (seconds: fit + predict);
* ANTs Atropos (``kmeans[3]``, MRF ``[0.2,1x1x1]``, ``c=[5,0]``) on the same mask (T1 > 0), run in
  the peers' environment ``.venv-peers/`` (created on first use, see ``scripts/_peers.py``;
  seconds: the ``ants.atropos`` call alone).

Dice of GM and WM (and CSF, reported only: IBSR's CSF is mostly the ventricles, its sulcal CSF is
0) is scored inside the labelled brain (manual label > 0). Bar of issue 12: mean GM >= 0.88 and
WM >= 0.89, ahead of both peers on both classes. Overlays (a coronal slice: truth, segment and
where they disagree on GM/WM) go to ``docs/figures/ibsr_<subject>.png``.

    .venv/bin/python scripts/validate_ibsr.py --out docs/validation_ibsr.md
    .venv/bin/python scripts/validate_ibsr.py --subjects IBSR_01 --no-peers      # fast, development
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import NOTES, doc_command, kept_notes, load_config_file, machine_line  # noqa: E402
from _peers import ATROPOS_CONV, ATROPOS_INIT, ATROPOS_MRF, atropos_available, run_atropos  # noqa: E402

from segment.io.nifti import load_volume, reorient_to_ras, save_volume  # noqa: E402
from segment.metrics import dice  # noqa: E402
from segment.pipeline import run_pipeline  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"
BAR_GM, BAR_WM = 0.88, 0.89
CLASSES = {1: "CSF", 2: "GM", 3: "WM"}


def squeeze3(a: np.ndarray) -> np.ndarray:
    while a.ndim > 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return a


def read_ras(path: Path, dtype=np.float32):
    """A volume on its RAS grid (the loader's orientation), trailing singleton axes dropped."""
    vol = reorient_to_ras(load_volume(path, dtype=dtype))
    return squeeze3(np.asarray(vol.data)), vol.affine


def sklearn_gmm(t1: np.ndarray, brain: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float]:
    from sklearn.mixture import GaussianMixture

    x = t1[brain][:, None].astype(np.float64)
    t = time.perf_counter()
    g = GaussianMixture(3, covariance_type="full", random_state=seed).fit(x)
    pred = g.predict(x)
    secs = time.perf_counter() - t
    lab = np.empty(3, np.uint8)
    lab[np.argsort(g.means_[:, 0])] = [1, 2, 3]
    out = np.zeros(t1.shape, np.uint8)
    out[brain] = lab[pred]
    return out, secs


def scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice per class inside the labelled brain (truth > 0)."""
    inside = truth > 0
    p = np.where(inside, pred, 0)
    return {name: dice(p == c, truth == c) for c, name in CLASSES.items()}


def confusion(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Where the manual WM and GM went (fractions of the manual class)."""
    out = {}
    for tc, tn in ((3, "WM"), (2, "GM")):
        t = truth == tc
        n = max(int(t.sum()), 1)
        for pc, pn in ((0, "bg"), *CLASSES.items()):
            if pc != tc:
                out[f"{tn}->{pn}"] = float(np.count_nonzero(t & (pred == pc))) / n
    return out


def overlay(path: Path, t1: np.ndarray, truth: np.ndarray, pred: np.ndarray, title: str) -> int:
    """A coronal slice: T1, manual labels, segment, and the GM/WM disagreement. Returns the slice index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    lab = truth > 0
    ys = np.nonzero(lab.any(axis=(0, 2)))[0]
    j = int(round(ys.min() + 0.45 * (ys.max() - ys.min())))  # just behind the middle: ventricles, deep WM
    xs = np.nonzero(lab[:, j, :].any(axis=1))[0]
    zs = np.nonzero(lab[:, j, :].any(axis=0))[0]
    box = (slice(max(xs.min() - 4, 0), xs.max() + 5), slice(max(zs.min() - 4, 0), zs.max() + 5))
    img = t1[:, j, :][box].T
    tru = truth[:, j, :][box].T
    prd = np.where(lab, pred, 0)[:, j, :][box].T
    cmap = ListedColormap([(0, 0, 0, 0), (0.2, 0.5, 1, 0.6), (0.2, 0.85, 0.3, 0.6), (1, 0.85, 0.2, 0.6)])
    err = np.zeros(tru.shape, np.uint8)
    err[(tru == 3) & (prd == 2)] = 1  # WM lost to GM
    err[(tru == 2) & (prd == 3)] = 2  # GM taken by WM
    err[(tru >= 2) & (prd <= 1)] = 3  # GM/WM called CSF or background
    ecmap = ListedColormap([(0, 0, 0, 0), (1, 0.1, 0.1, 0.9), (0.1, 0.9, 1, 0.9), (0.8, 0.3, 1, 0.9)])
    fig, axs = plt.subplots(1, 4, figsize=(10, 3.3))
    vmax = float(np.percentile(t1[lab], 99.5))
    panels = [("T1", None, None), ("manual", tru, cmap), ("segment", prd, cmap),
              ("red: WM->GM, cyan: GM->WM\nviolet: GM/WM->CSF", err, ecmap)]
    for ax, (name, lab2, cm) in zip(axs, panels):
        ax.imshow(img, origin="lower", cmap="gray", vmin=0, vmax=vmax)
        if lab2 is not None:
            ax.imshow(lab2, origin="lower", cmap=cm, vmin=0, vmax=3, interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"{title}, coronal slice {j} (blue CSF, green GM, yellow WM)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return j


#: How the tables name each method.
NAMES = {"segment": "segment", "sklearn": "scikit-learn GMM", "atropos": "Atropos"}


def peer_setup(no_peers: bool, ants_python: str | None) -> tuple[str | None, str, list[str]]:
    """``(atropos python or None, note on antspyx, methods to run)``."""
    apy, ants_note = (None, "not run (--no-peers)")
    if not no_peers:
        apy, ants_note = atropos_available(ants_python)
        if apy is None:
            print(ants_note, file=sys.stderr)
    return apy, ants_note, ["segment"] + ([] if no_peers else ["sklearn"]) + (["atropos"] if apy else [])


def ibsr_subjects(root: Path) -> list[str]:
    """The subject folders of ``root`` holding a T1 and its manual labels."""
    return sorted(p.name for p in root.iterdir() if (p / "t1.nii.gz").is_file() and (p / "seg_tissue.nii.gz").is_file())


def run_flags(info: dict) -> list[str]:
    """A run's QC flags: the pipeline's and every step's, each once."""
    fl = list(info.get("flags") or [])
    for v in info.values():
        if isinstance(v, dict):
            fl += [str(f) for f in (v.get("flags") or [])]
    return list(dict.fromkeys(fl))


def segment_timed(folder: Path, config, warm: bool):
    """``(result, labels 0-3, seconds)`` of ``run_pipeline`` on ``folder``; with ``warm``, one untimed
    run first (compiles / loads the cached kernels)."""
    if warm:
        run_pipeline(folder, config)
    t = time.perf_counter()
    seg = run_pipeline(folder, config)
    secs = time.perf_counter() - t
    pred = np.asarray(seg.tissue).astype(np.uint8)
    return seg, np.where(pred <= 3, pred, 0), secs  # (no tumor expected: a lone T1)


def fmt(d: dict[str, float] | None, secs: float | None) -> list[str]:
    if d is None:
        return ["", "", "", ""]
    return [f"{d['GM']:.3f}", f"{d['WM']:.3f}", f"{d['CSF']:.3f}", f"{secs:.1f}"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (holds ibsr/)")
    ap.add_argument("--config", type=Path, default=None, help="segment config YAML (default: Config())")
    ap.add_argument("--subjects", default=None, help="comma-separated subject folders (default: all)")
    ap.add_argument("--no-peers", action="store_true", help="skip scikit-learn and Atropos (fast)")
    ap.add_argument("--ants-python", default=None, help="python with antspyx (default: .venv-peers/, created)")
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    ap.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    args = ap.parse_args(argv)

    root = args.data / "ibsr"
    subjects = ibsr_subjects(root)
    if args.subjects:
        want = [s.strip() for s in args.subjects.split(",") if s.strip()]
        missing = [s for s in want if s not in subjects]
        if missing:
            ap.error(f"no such subject under {root}: {', '.join(missing)} (have {', '.join(subjects)})")
        subjects = want
    config = load_config_file(args.config)
    apy, ants_note, methods = peer_setup(args.no_peers, args.ants_python)
    names = NAMES
    res: dict[tuple[str, str], tuple[dict[str, float], float]] = {}
    conf: dict[str, dict[str, float]] = {}
    flags: dict[str, list[str]] = {}
    slices: dict[str, int] = {}
    args.figures.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm = True
        for s in subjects:
            folder = root / s
            t1, aff = read_ras(folder / "t1.nii.gz")
            truth, _ = read_ras(folder / "seg_tissue.nii.gz", dtype=np.float32)
            truth = np.rint(truth).astype(np.uint8)
            brain = t1 > 0
            seg, pred, secs = segment_timed(folder, config, warm)
            warm = False
            if pred.shape != truth.shape:
                raise RuntimeError(f"{s}: segment's labels {pred.shape} vs truth {truth.shape}")
            res[(s, "segment")] = (scores(pred, truth), secs)
            conf[s] = confusion(np.where(truth > 0, pred, 0), truth)
            flags[s] = run_flags(seg.info)
            slices[s] = overlay(args.figures / f"ibsr_{s.lower().replace('ibsr_', '')}.png", t1, truth, pred, s)
            if "sklearn" in methods:
                lab, sec = sklearn_gmm(t1, brain, 0)
                res[(s, "sklearn")] = (scores(lab, truth), sec)
            if apy:
                img_p = save_volume(t1.astype(np.float32), aff, tmp / f"{s}_t1.nii.gz", dtype=np.float32)
                mask_p = save_volume(brain.astype(np.uint8), aff, tmp / f"{s}_mask.nii.gz", dtype=np.uint8)
                lab, sec, ver = run_atropos(apy, img_p, mask_p, tmp / f"{s}_atropos.nii.gz")
                res[(s, "atropos")] = (scores(lab, truth), sec)
            line = f"{s}: " + "  ".join(
                f"{names[m]} GM {res[(s, m)][0]['GM']:.3f} WM {res[(s, m)][0]['WM']:.3f} "
                f"CSF {res[(s, m)][0]['CSF']:.3f} ({res[(s, m)][1]:.1f} s)" for m in methods if (s, m) in res)
            print(line + (f"  flags: {'; '.join(flags[s])}" if flags[s] else ""), flush=True)

    head = "| subject | " + " | ".join(f"{names[m]} GM | {names[m]} WM | {names[m]} CSF | {names[m]} s" for m in methods) + " |"
    lines = [head, "|---|" + "---|" * (4 * len(methods))]
    for s in subjects:
        cells = []
        for m in methods:
            d, sec = res.get((s, m), (None, None))
            cells += fmt(d, sec)
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    mean = {m: {c: float(np.mean([res[(s, m)][0][c] for s in subjects])) for c in CLASSES.values()} for m in methods}
    msec = {m: float(np.mean([res[(s, m)][1] for s in subjects])) for m in methods}
    cells = []
    for m in methods:
        cells += [f"**{x}**" for x in fmt(mean[m], msec[m])]
    lines.append("| **mean** | " + " | ".join(cells) + " |")
    table = "\n".join(lines)

    gm, wm = mean["segment"]["GM"], mean["segment"]["WM"]
    peers = [m for m in methods if m != "segment"]
    ahead = all(gm > mean[p]["GM"] and wm > mean[p]["WM"] for p in peers)
    met = gm >= BAR_GM and wm >= BAR_WM and ahead and len(peers) == 2
    parts = [f"mean GM {gm:.3f} {'>=' if gm >= BAR_GM else '<'} {BAR_GM}",
             f"mean WM {wm:.3f} {'>=' if wm >= BAR_WM else '<'} {BAR_WM}"]
    for p in peers:
        parts.append(f"vs {names[p]} {mean[p]['GM']:.3f} / {mean[p]['WM']:.3f}: "
                     f"GM {'ahead' if gm > mean[p]['GM'] else 'behind'}, WM {'ahead' if wm > mean[p]['WM'] else 'behind'}")
    if len(peers) < 2:
        parts.append("peers not run: 'ahead of both peers' not checked")
    verdict = f"**Bar {'met' if met else 'not met'}**: " + "; ".join(parts) + "."

    ctab = ["| subject | manual WM -> GM | WM -> CSF | WM -> outside | manual GM -> WM | GM -> CSF | GM -> outside | QC flags |",
            "|---|---|---|---|---|---|---|---|"]
    for s in subjects:
        c = conf[s]
        ctab.append(f"| {s} | {100 * c['WM->GM']:.1f} % | {100 * c['WM->CSF']:.1f} % | {100 * c['WM->bg']:.1f} % | "
                    f"{100 * c['GM->WM']:.1f} % | {100 * c['GM->CSF']:.1f} % | {100 * c['GM->bg']:.1f} % | "
                    f"{'; '.join(flags[s]) or 'none'} |")
    ctext = "\n".join(ctab)
    print("\n" + table + "\n\n" + verdict + "\n\n" + ctext)

    if args.out:
        cmd = doc_command("scripts/validate_ibsr.py", list(argv if argv is not None else sys.argv[1:]))
        machine = machine_line()
        notes = kept_notes(args.out)
        figs = "\n".join(
            f"![{s}](figures/ibsr_{s.lower().replace('ibsr_', '')}.png)" for s in subjects)
        cfg = f"`{args.config.as_posix()}`" if args.config else "the defaults (`Config()`)"
        args.out.write_text(
            "## Tissue on IBSR18 (manual labels, 1.5 mm coronal T1)\n\n"
            f"Command: `{cmd}`  \nMachine: {machine}  \nsegment config: {cfg}  \n"
            f"Atropos: {ants_note}, `{ATROPOS_INIT}`, m=`{ATROPOS_MRF}`, c=`{ATROPOS_CONV}`\n\n"
            "Data: `../shared/data/ibsr` (IBSR18 subjects, CMA/MGH; skull-stripped T1, 256x128x256, "
            "0.94 x 1.5 x 0.94 mm). Truth: the manual labels (1 CSF, 2 GM, 3 WM); its CSF is mostly the "
            "ventricles (sulcal CSF is 0), so CSF Dice is low for every method and only GM/WM carry the bar. "
            "Every method is scored inside the labelled brain (manual label > 0); scikit-learn "
            "(`GaussianMixture(3, covariance_type='full', random_state=0)`, classes by mean) and Atropos "
            "see the brain voxels T1 > 0, segment its own mask of the same image.\n\n"
            "Seconds: segment, the whole `run_pipeline` (loading, mask, N4, mixture, MRF; after one untimed "
            "warm-up run); scikit-learn, fit + predict; Atropos, the `ants.atropos` call alone. The methods run "
            "one after the other, but other jobs share the 2-core machine (see the load average above).\n\n"
            f"Dice per subject:\n\n{table}\n\n{verdict}\n\n"
            "Where segment's errors go (fractions of the manual class, inside the labelled brain), and the "
            "QC flags of each run:\n\n" + ctext + "\n\n"
            "Overlays (coronal slice just behind the middle of the labelled brain; the right panel shows "
            "manual WM labelled GM in red, manual GM labelled WM in cyan, GM/WM labelled CSF or outside in violet):\n\n"
            + figs + "\n\n" + NOTES + (notes or "\n")
        )
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
