"""The ``segment`` command line: parse, load config, call the pipeline, set the exit code.

Exit codes: 0 success, 1 a case or input failed, 2 usage or configuration error.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import __version__
from .errors import ConfigError, SegmentError

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
    _add_config(p)

    p = sub.add_parser(
        "batch", help="segment every case folder under a root folder",
        description="Segment every case folder under ROOT into OUT/<case>/ and write OUT/report.csv, "
        "OUT/summary.csv, OUT/index.html (review page), OUT/config.yaml and OUT/run.log. A rerun skips "
        "cases whose outputs are complete. Exit code 0: all cases ok; 1: any case failed; 2: usage error; "
        "130: interrupted (the report lists what finished).",
    )
    p.add_argument("--input", "-i", type=Path, required=True, metavar="ROOT", help="folder of case folders")
    p.add_argument("--out", "-o", type=Path, required=True, help="output root")
    p.add_argument("--workers", "-j", type=int, default=None,
                   help="parallel worker processes (default: batch.workers of the config, else the number of cores)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the cases on this Dask cluster, e.g. tcp://host:8786 (needs segment[distributed] "
                   "and a file system shared with the workers)")
    p.add_argument("--force", action="store_true", default=None, help="redo cases whose outputs are already complete")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar or per-case lines")
    _add_config(p)

    p = sub.add_parser("skullstrip", help="write a brain mask for one image")
    p.add_argument("image", type=Path)
    p.add_argument("--out", "-o", type=Path, required=True, help="mask file (.nii.gz)")
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
                   help="folder mode: tissue labels (1 CSF, 2 GM, 3 WM) or tumor labels (BraTS WT/TC/ET); "
                   "auto: by file names, else by the ground truth's content")

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
    from .pipeline import segment_case
    from .report.tables import to_jsonable as jsonable

    config = _config(args)
    case = find_case(args.case_dir)
    out_dir = args.out / case.case_id
    result = segment_case(case, config, out_dir)
    summary = {
        "case": result.case_id,
        "seconds": round(result.seconds, 2),
        "outputs": {k: str(v) for k, v in result.outputs.items()},
        "metrics": {k: v for k, v in result.metrics.items() if k.startswith("dice_")},
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
    try:
        report = run_batch(args.input, args.out, config, progress=args.progress)
    except BatchUsageError as exc:
        print(f"segment: error: {exc}", file=sys.stderr)
        return 2
    extra = f", {len(report.skipped)} skipped as complete" if report.skipped else ""
    stop = " (interrupted)" if report.interrupted else ""
    print(f"{report.n_ok} ok, {report.n_failed} failed{extra}{stop}; report: {args.out / 'report.csv'}, "
          f"review: {args.out / 'index.html'}")
    return report.exit_code


def cmd_skullstrip(args: argparse.Namespace) -> int:
    import numpy as np

    from .io.nifti import from_ras, load_volume, reorient_to_ras, save_volume
    from .postprocess import fill_holes
    from .preprocess.skullstrip import brain_mask_nonzero, is_brain_only, skullstrip

    vol = load_volume(args.image)
    ras = reorient_to_ras(vol)
    flags: list[str] = []
    if is_brain_only(ras.data):
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
    mask = fill_holes(mask)
    if not mask.any():
        raise SegmentError(f"{args.image}: empty brain mask")
    save_volume(from_ras(mask.astype(np.uint8), vol), vol.affine, args.out, dtype=np.uint8)
    ml = float(mask.sum() * vol.voxel_volume / 1000)
    for f in flags:
        print(f"segment: warning: {args.image}: {f} (brain mask {ml:.0f} mL)", file=sys.stderr)
    print(json.dumps({"mask": str(args.out), "brain_volume_ml": round(ml, 1), "flags": flags}))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.pred.is_dir() or args.gt.is_dir():
        return _evaluate_folders(args)
    import numpy as np

    from .io.nifti import load_volume, same_grid
    from .metrics import evaluate_labels
    from .report.tables import to_jsonable as jsonable
    from .types import TISSUE_LABELS

    pred = load_volume(args.pred, dtype=np.int16, allow_empty=True)
    gt = load_volume(args.gt, dtype=np.int16, allow_empty=True)
    if not same_grid(pred, gt, atol=1e-2):
        raise SegmentError(
            f"{args.pred}: prediction grid (shape {pred.shape}) differs from {args.gt} (shape {gt.shape}); "
            "resample the prediction onto the ground truth's grid"
        )
    values = sorted(int(v) for v in np.union1d(np.unique(pred.data), np.unique(gt.data)) if v != 0)
    names = {v: TISSUE_LABELS.get(v, str(v)) if set(values) <= {1, 2, 3} else str(v) for v in values}
    metrics = evaluate_labels(pred.data, gt.data, names, gt.spacing)
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
        raise SegmentError("--n must be at least 1")
    kwargs = {"skull": args.skull, "tumor": args.tumor}
    if args.shape:
        kwargs["shape"] = tuple(args.shape)
    paths = write_phantom_cases(args.out, n=args.n, seed=args.seed, **kwargs)
    for p in paths:
        print(p)
    return 0


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
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"segment: error: {exc}", file=sys.stderr)
        return 2
    except SegmentError as exc:
        print(f"segment: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("segment: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
