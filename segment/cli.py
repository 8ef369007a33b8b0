"""The ``segment`` command line: parse, load config, call the pipeline, set the exit code.

Exit codes: 0 success, 1 a case or input failed, 2 usage or configuration error.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

from . import __version__
from .errors import ConfigError, SegmentError
from .publish import OutputError

log = logging.getLogger("segment")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", type=Path, default=None, help="YAML config file (see configs/)")
    p.add_argument("--seed", type=int, default=None, help="random seed (overrides the config)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segment",
        description="Brain MRI segmentation with Gaussian mixture models: tissue (CSF/GM/WM), "
        "brain masks, metrics and overlay figures.",
    )
    parser.add_argument("--version", action="version", version=f"segment {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="segment one case folder")
    p.add_argument("case_dir", type=Path, help="folder holding one case's NIfTI files (t1, t1c, t2, flair, seg)")
    p.add_argument("--out", "-o", type=Path, required=True, help="output root; writes OUT/<case name>/")
    p.add_argument("--output-layout", choices=("plain", "bids"), default="plain",
                   help="bids: also a BIDS-derivatives dataset, OUT/sub-X/[ses-Y/]anat/ (segment's own files in "
                   "OUT/segment/<case>/)")
    _add_config(p)

    p = sub.add_parser(
        "batch", help="segment every case folder under a root folder",
        description="Segment every case folder under ROOT into OUT/<case>/ and write OUT/report.csv, "
        "OUT/summary.csv, OUT/index.html (review page), OUT/config.yaml and OUT/run.log. A rerun skips "
        "cases whose outputs are complete. Exit code 0: all cases ok; 1: any case failed; 2: usage error; "
        "130: interrupted (the report lists what finished).",
    )
    p.add_argument("--input", "-i", type=Path, required=True, metavar="ROOT",
                   help="folder of case folders, an MSD task folder or a BIDS dataset")
    p.add_argument("--out", "-o", type=Path, required=True, help="output root")
    p.add_argument("--workers", "-j", type=int, default=None,
                   help="parallel worker processes (default: batch.workers of the config, else the number of cores)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the cases on this Dask cluster, e.g. tcp://host:8786 (needs segment[distributed] "
                   "and a file system shared with the workers)")
    p.add_argument("--force", action="store_true", default=None, help="redo cases whose outputs are already complete")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar or per-case lines")
    p.add_argument("--participant-label", nargs="+", default=None, metavar="LABEL",
                   help="BIDS input: only these subjects (01 or sub-01)")
    p.add_argument("--session-label", nargs="+", default=None, metavar="LABEL",
                   help="BIDS input: only these sessions (1 or ses-1)")
    p.add_argument("--output-layout", choices=("plain", "bids"), default=None,
                   help="plain: OUT/<case>/ folders; bids: a BIDS-derivatives dataset, segment's reports in "
                   "OUT/segment/ (default: bids for a BIDS dataset, else plain)")
    p.add_argument("--bids-truth", nargs="?", const="derivatives", default=None, metavar="FOLDER",
                   help="BIDS input: score against *_dseg.nii.gz ground truth found under this folder of the "
                   "dataset (default when given without a value: derivatives)")
    _add_config(p)

    p = sub.add_parser(
        "skullstrip", help="write a brain mask (and the brain, the N4-corrected image) for one image",
        description="Brain extraction of one image, as BET / SynthStrip / HD-BET users expect. --out is a "
        "mask file name (.nii or .nii.gz; the other outputs beside it: X_mask.nii.gz -> X_brain.nii.gz, "
        "X_biascorr.nii.gz), an existing folder or one ending in / (DIR/<image stem>_mask.nii.gz, ...), "
        "or a prefix (PREFIX_mask.nii.gz, PREFIX_brain.nii.gz, PREFIX_biascorr.nii.gz). Every output is "
        "on the input's grid with its affine. The output paths are checked before any computing.",
    )
    p.add_argument("image", type=Path)
    p.add_argument("--out", "-o", type=str, required=True, metavar="PREFIX_OR_DIR_OR_FILE",
                   help="mask file (.nii/.nii.gz), output folder, or prefix")
    p.add_argument("--brain", action="store_true", help="also write the skull-stripped image (input x mask)")
    p.add_argument("--bias-corrected", action="store_true",
                   help="also write the N4 bias-corrected image (field estimated inside the brain mask)")
    p.add_argument("--modality", choices=["t1", "t1c", "t2", "flair"], default=None,
                   help="the image's contrast (sets the brain intensity range); default: from the file name "
                   "(e.g. sub-01_T2w.nii.gz, flair.nii.gz), else t1")
    p.add_argument("--no-template", dest="template", action="store_false",
                   help="image-only method, without the registered head template as the prior")

    p = sub.add_parser(
        "evaluate", help="compare a label map with a ground truth (JSON), or two folders (report.csv)",
        description="PRED and GT files: print Dice, IoU, sensitivity, specificity, HD95 and volume difference "
        "per label as JSON. PRED and GT folders: match predictions to ground truths by case id (file or "
        "folder names, ignoring words like seg/pred/label) and write report.csv and summary.csv to --out "
        "(the summary is printed without --out). Exit code 1 when a case could not be scored.",
    )
    p.add_argument("pred", type=Path, help="label map, or folder of label maps / case folders")
    p.add_argument("gt", type=Path, help="ground truth, or folder of ground truths / case folders")
    p.add_argument("--out", "-o", type=Path, default=None, help="folder mode: write report.csv, summary.csv, index.html here")
    p.add_argument("--kind", choices=("auto", "tissue", "tumor"), default="auto",
                   help="tissue labels (1 CSF, 2 GM, 3 WM) or tumor labels (BraTS WT/TC/ET, lesion-wise); "
                   "auto: by file names (tissue/tumor), else by the ground truth's content; for a pair "
                   "of files as for folders")

    p = sub.add_parser("phantom", help="write synthetic cases with exact ground truth")
    p.add_argument("out", type=Path, help="output folder; one sub-folder per case")
    p.add_argument("--n", type=int, default=1, help="number of cases")
    p.add_argument("--seed", type=int, default=0, help="seed of the first case")
    p.add_argument("--skull", action="store_true", help="add a skull and scalp around the brain")
    p.add_argument("--tumor", action="store_true", help="add a tumor (necrosis, enhancement, edema)")
    p.add_argument("--shape", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"))
    return parser


def _config(args: argparse.Namespace):
    from .config import load_config

    overrides = {}
    if getattr(args, "seed", None) is not None:
        overrides["seed"] = args.seed
    return load_config(args.config, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from .io.cases import find_case
    from .publish import check_output_root, write_case
    from .report.tables import to_jsonable as jsonable

    config = _config(args)
    case = find_case(args.case_dir)
    # checked before any computing: a bad --out fails in a second, not after the segmentation
    out_root = check_output_root(args.out, inputs=[case.root] if case.root is not None else [])
    inputs = None
    if case.root is not None and case.root.is_dir():
        from .batch.discovery import input_fingerprint

        inputs = input_fingerprint(case.root)
    bids = getattr(args, "output_layout", "plain") == "bids"
    if bids:
        from .batch.bids import ENGINE_DIR, bids_config, write_run_derivatives

        config = bids_config(config)
    result, row, caught = write_case(case, config, out_root / ENGINE_DIR if bids else out_root, inputs=inputs)
    if bids:
        result.outputs.update({f"bids_{k}": v for k, v in
                               write_run_derivatives(case, result.outputs, out_root, config).items()})
    flags = [f for f in row.get("flags", "").split("; ") if f]
    for f in flags:
        print(f"segment: warning: {case.case_id}: {f}", file=sys.stderr)
    summary = {
        "case": result.case_id,
        "seconds": round(result.seconds, 2),
        "outputs": {k: str(v) for k, v in result.outputs.items()},
        "metrics": {k: v for k, v in result.metrics.items() if k.startswith("dice_")},
        "flags": flags,
        "warnings": caught,
    }
    print(json.dumps(jsonable(summary), indent=2))
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from .batch import BatchUsageError, run_batch
    from .config import load_config

    overrides: dict = {}
    if getattr(args, "seed", None) is not None:
        overrides["seed"] = args.seed
    batch = {k: v for k, v in (("workers", args.workers), ("scheduler", args.scheduler), ("force", args.force))
             if v is not None}
    if batch:
        overrides["batch"] = batch
    config = load_config(args.config, overrides)  # flags override the file; errors exit 2
    from .batch.bids import ENGINE_DIR, is_bids_input, run_bids_batch

    bids_opts = {"participant_labels": args.participant_label, "session_labels": args.session_label,
                 "output_layout": args.output_layout, "truth_from": args.bids_truth}
    bids = is_bids_input(args.input) or any(v is not None for v in bids_opts.values())
    reports = args.out
    try:
        if bids:
            report = run_bids_batch(args.input, args.out, config, progress=args.progress, **bids_opts)
            if (args.output_layout or ("bids" if is_bids_input(args.input) else "plain")) == "bids":
                reports = args.out / ENGINE_DIR
        else:
            report = run_batch(args.input, args.out, config, progress=args.progress)
    except BatchUsageError as exc:
        print(f"segment: error: {exc}", file=sys.stderr)
        return 2
    extra = f", {len(report.skipped)} skipped as complete" if report.skipped else ""
    stop = " (interrupted)" if report.interrupted else ""
    print(f"{report.n_ok} ok, {report.n_failed} failed{extra}{stop}; report: {reports / 'report.csv'}, "
          f"review: {reports / 'index.html'}")
    return report.exit_code


def skullstrip_outputs(image: Path, out: str | Path) -> dict[str, Path]:
    """Output files of ``segment skullstrip IMAGE --out OUT`` (BET/SynthStrip conventions).

    ``OUT`` ending in ``.nii``/``.nii.gz`` is the mask itself (a trailing ``_mask`` is dropped to
    name the others); an existing folder, or a name ending in ``/``, gets
    ``<image stem>_mask.nii.gz``; anything else is a prefix (``OUT_mask.nii.gz``). Returns
    ``{"mask", "brain", "biascorr"}`` paths; nothing is created.
    """
    from .io.nifti import is_nifti_name, strip_nifti_suffix

    text = str(out)  # a str keeps a trailing "/" (a Path drops it)
    out = Path(out)
    if is_nifti_name(out):
        stem = strip_nifti_suffix(out.name)
        base = stem[: -len("_mask")] if stem.endswith("_mask") and len(stem) > 5 else stem
        ext = ".nii.gz" if out.name.lower().endswith(".nii.gz") else ".nii"
        return {"mask": out, "brain": out.with_name(f"{base}_brain{ext}"),
                "biascorr": out.with_name(f"{base}_biascorr{ext}")}
    if out.is_dir() or text.endswith(("/", "\\")):
        folder, base = out, strip_nifti_suffix(image.name)
    else:
        folder, base = out.parent, out.name
    return {k: folder / f"{base}_{k}.nii.gz" for k in ("mask", "brain", "biascorr")}


def _check_writable(paths: list[Path], image: Path) -> None:
    """Refuse, before computing, outputs that would overwrite the input or cannot be written."""
    import os

    for p in paths:
        if p.exists() and p.resolve() == image.resolve():
            raise SegmentError(f"{p}: output would overwrite the input image; choose another --out")
        if p.is_dir():
            raise SegmentError(f"{p}: is a folder; give a file name, a folder or a prefix as --out")
        parent = p.parent
        probe = parent
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK):
            raise SegmentError(f"{p}: cannot write into {parent} (not a writable folder)")


def cmd_skullstrip(args: argparse.Namespace) -> int:
    import numpy as np

    from .io.nifti import from_ras, load_volume, reorient_to_ras, save_volume
    from .postprocess import fill_holes
    from .preprocess.skullstrip import brain_mask_nonzero, skullstrip, zero_background_kind

    if not args.image.is_file():
        raise SegmentError(f"{args.image}: image file not found")
    paths = skullstrip_outputs(args.image, args.out)
    wanted = ["mask"] + (["brain"] if args.brain else []) + (["biascorr"] if args.bias_corrected else [])
    _check_writable([paths[k] for k in wanted], args.image)
    vol = load_volume(args.image)
    ras = reorient_to_ras(vol)
    flags: list[str] = []
    from .config import SkullstripConfig

    background = zero_background_kind(ras.data, spacing=ras.spacing, max_ml=SkullstripConfig().max_volume_ml)
    if background == "brain":
        mask = brain_mask_nonzero(ras.data, ras.spacing)
    else:
        modality = args.modality
        if modality is None:
            from .io.cases import classify_file

            kind = classify_file(args.image.name)
            modality = kind[1] if kind and kind[0] == "image" else "t1"
        if getattr(args, "template", True):
            from .preprocess.skullstrip import template_brain_mask

            mask, info = template_brain_mask([ras], [modality])
            flags = list(info["flags"])
        else:
            mask = skullstrip([ras.data], ras.spacing, modalities=[modality])
        if background == "head":  # zeros around a region larger than a brain: a head with its air zeroed
            flags.append("zero_background_head")
    mask = fill_holes(mask)
    if not mask.any():
        raise SegmentError(f"{args.image}: empty brain mask")
    mask_file = from_ras(mask.astype(np.uint8), vol)
    written = {"mask": str(save_volume(mask_file, vol.affine, paths["mask"], dtype=np.uint8))}
    if args.brain:
        brain = np.where(mask_file > 0, vol.data, 0).astype(np.float32)
        written["brain"] = str(save_volume(brain, vol.affine, paths["brain"], dtype=np.float32))
    if args.bias_corrected:
        from .config import N4Config
        from .preprocess.bias import n4_correct

        n4 = N4Config()
        corrected = n4_correct(ras.data, mask, ras.spacing, shrink=n4.shrink, iterations=n4.iterations,
                               convergence=n4.convergence, method=n4.method)
        written["bias_corrected"] = str(save_volume(from_ras(corrected, vol), vol.affine, paths["biascorr"],
                                                    dtype=np.float32))
    ml = float(mask.sum() * vol.voxel_volume / 1000)
    for f in flags:
        print(f"segment: warning: {args.image}: {f} (brain mask {ml:.0f} mL)", file=sys.stderr)
    print(json.dumps({**written, "brain_volume_ml": round(ml, 1), "flags": flags}))
    return 0


def _kind_from_names(*paths: Path) -> str | None:
    """``tissue`` or ``tumor`` when a file name says so by a whole word (``seg_tumor``,
    ``BraTS-..._tissue``), else None."""
    import re

    from .io.nifti import strip_nifti_suffix

    found = set()
    for p in paths:
        tokens = set(re.split(r"[^a-z0-9]+", strip_nifti_suffix(p.name).lower()))
        found |= tokens & {"tissue", "tumor", "tumour"}
    found = {"tumor" if k == "tumour" else k for k in found}
    return found.pop() if len(found) == 1 else None


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.pred.is_dir() or args.gt.is_dir():
        return _evaluate_folders(args)
    from .batch import evaluate_pair
    from .report.tables import to_jsonable as jsonable

    for p in (args.pred, args.gt):
        if not p.is_file():
            raise SegmentError(f"{p}: file not found")
    kind = args.kind
    if kind == "auto":
        kind = _kind_from_names(args.gt, args.pred) or "auto"  # else decided from the truth's content
    metrics = evaluate_pair(args.pred, args.gt, kind)
    print(json.dumps(jsonable(metrics), indent=2))
    return 0


def _evaluate_folders(args: argparse.Namespace) -> int:
    from .batch import BatchUsageError, evaluate_folders
    from .report.tables import summarize

    if not (args.pred.is_dir() and args.gt.is_dir()):
        print(f"segment: error: {args.pred} and {args.gt}: give two files or two folders", file=sys.stderr)
        return 2
    try:
        report = evaluate_folders(args.pred, args.gt, args.out, kind=args.kind, progress=False)
    except BatchUsageError as exc:
        print(f"segment: error: {exc}", file=sys.stderr)
        return 2
    for r in report.rows:
        if r["status"] != "ok":
            print(f"{r['case_id']}: failed: {r['error']}", file=sys.stderr)
    if args.out is not None:
        print(f"{report.n_ok} scored, {report.n_failed} failed; report: {args.out / 'report.csv'}")
    else:
        ok = [r for r in report.rows if r["status"] == "ok"]
        cols = [k for k in (ok[0] if ok else {}) if k.startswith(("dice_", "hd95_"))]
        summary = {s["metric"]: {k: s[k] for k in ("n", "mean", "std", "median", "iqr")} for s in summarize(ok, cols)}
        from .report.tables import to_jsonable as jsonable

        print(json.dumps(jsonable({"cases": len(report.rows), "failed": report.n_failed, "summary": summary}), indent=2))
    return 130 if report.interrupted else (1 if report.n_failed else 0)


def cmd_phantom(args: argparse.Namespace) -> int:
    from .phantom import write_phantom_cases

    if args.n < 1:
        raise ConfigError(f"--n {args.n}: must be at least 1")
    if args.seed < 0:
        raise ConfigError(f"--seed {args.seed}: must be 0 or more")
    if args.shape is not None and not (24 <= min(args.shape) and max(args.shape) <= 512):
        raise ConfigError(f"--shape {' '.join(map(str, args.shape))}: each side must be 24 to 512 voxels")
    from .publish import check_output_root

    check_output_root(args.out)  # an unusable folder fails before any phantom is made
    kwargs = {"skull": args.skull, "tumor": args.tumor}
    if args.shape:
        kwargs["shape"] = tuple(args.shape)
    paths = write_phantom_cases(args.out, n=args.n, seed=args.seed, **kwargs)
    for p in paths:
        print(p)
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line on stderr (``segment: warning: ...``), without source lines."""
    print(f"segment: warning: {message}", file=sys.stderr if file is None else file)


COMMANDS = {
    "run": cmd_run,
    "batch": cmd_batch,
    "skullstrip": cmd_skullstrip,
    "evaluate": cmd_evaluate,
    "phantom": cmd_phantom,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    warnings.showwarning = _show_warning
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, OutputError) as exc:  # usage: a bad config, flag or output location
        print(f"segment: error: {exc}", file=sys.stderr)
        return 2
    except SegmentError as exc:
        print(f"segment: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("segment: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"segment: error: out of memory ({args.command}); check the sizes of the images "
              "(and what their headers claim) and the number of --workers", file=sys.stderr)
        return 1
    except OSError as exc:
        from .batch.running import failure_message

        where = exc.filename or getattr(args, "out", None) or getattr(args, "case_dir", None) or "segment"
        print(f"segment: error: {failure_message(exc, Path(str(where)))}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
