"""Writing a case's outputs as a BIDS-derivatives dataset (as fMRIPrep / sMRIPrep name theirs).

::

    OUT/dataset_description.json       DatasetType derivative, GeneratedBy segment (version, config digest)
    OUT/dseg.tsv                       index, name, abbreviation of sub-*_dseg.nii.gz (tissue)
    OUT/desc-tumor_dseg.tsv            the same for sub-*_desc-tumor_dseg.nii.gz
    OUT/.bidsignore                    segment's own files (reports, overlays, manifests)
    OUT/sub-01/[ses-1/]anat/
        sub-01[_ses-1]_desc-brain_mask.nii.gz   (+ .json)   brain mask, uint8 0/1
        sub-01[_ses-1]_dseg.nii.gz              (+ .json)   0 bg, 1 CSF, 2 GM, 3 WM, 4 tumor
        sub-01[_ses-1]_label-CSF_probseg.nii.gz (+ .json)   float32 partial-volume fractions
        sub-01[_ses-1]_label-GM_probseg.nii.gz, ..._label-WM_probseg.nii.gz
        sub-01[_ses-1]_desc-tumor_dseg.nii.gz   (+ .json)   1 NCR, 2 ED, 3 ET (BraTS 2023) when run

Each JSON sidecar lists its ``Sources``: BIDS URIs ``bids:raw:sub-01/anat/sub-01_T1w.nii.gz`` of
the input images (``raw`` resolved by ``DatasetLinks`` in ``dataset_description.json``), or
``bids::sub-01/anat/...`` for the derivatives it was computed from. Images keep the input
reference image's grid and affine, so no ``space-`` entity is written (BIDS: same space as the
raw T1w). A session's ``anat`` folder is written into a temporary folder and renamed into place,
so it is complete or absent, and rewriting it replaces it whole.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..io.bids import build_name, case_id_of

__all__ = [
    "BIDS_VERSION",
    "TISSUE_DSEG",
    "derivative_names",
    "tumor_dseg",
    "write_dataset_description",
    "write_session",
]

BIDS_VERSION = "1.10.0"
#: Labels of ``*_dseg.nii.gz`` (index -> (name, abbreviation)).
TISSUE_DSEG = {1: ("Cerebrospinal fluid", "CSF"), 2: ("Gray matter", "GM"), 3: ("White matter", "WM"),
               4: ("Tumor", "TUM")}
_PROB = {"csf": "CSF", "gm": "GM", "wm": "WM"}


def tumor_dseg(coding: str = "brats2023") -> dict[int, tuple[str, str]]:
    """Labels of ``*_desc-tumor_dseg.nii.gz`` in the given coding."""
    et = 4 if coding == "brats2021" else 3
    return {1: ("Necrosis and non-enhancing tumor core", "NCR"), 2: ("Peritumoral edema", "ED"),
            et: ("Enhancing tumor", "ET")}


def derivative_names(subject: str, session: str | None = None) -> dict[str, str]:
    """Output key (as in ``CaseResult.outputs``) -> path relative to the derivatives root."""
    ents = {"sub": subject, "ses": session}
    folder = f"sub-{subject}" + (f"/ses-{session}" if session else "") + "/anat"
    names = {
        "brain_mask": build_name({**ents, "desc": "brain"}, "mask", ".nii.gz"),
        "tissue": build_name(ents, "dseg", ".nii.gz"),
        "tumor": build_name({**ents, "desc": "tumor"}, "dseg", ".nii.gz"),
    }
    for key, lab in _PROB.items():
        names[f"pve_{key}"] = build_name({**ents, "label": lab}, "probseg", ".nii.gz")
    return {k: f"{folder}/{v}" for k, v in names.items()}


def _write_json(path: Path, doc: Mapping) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _dseg_tsv(labels: Mapping[int, tuple[str, str]]) -> str:
    rows = ["index\tname\tabbreviation"] + [f"{i}\t{n}\t{a}" for i, (n, a) in sorted(labels.items())]
    return "\n".join(rows) + "\n"


def write_dataset_description(
    out_root: str | os.PathLike,
    *,
    config_digest: str,
    raw_root: str | os.PathLike | None = None,
    tumor_coding: str = "brats2023",
    ignore: Sequence[str] = (),
) -> Path:
    """Write ``dataset_description.json``, the ``dseg.tsv`` look-up tables and ``.bidsignore``.

    Parameters
    ----------
    out_root : the derivatives root
    config_digest : digest of the configuration that made the outputs (``segment.publish.config_digest``)
    raw_root : the input BIDS dataset, linked as ``raw`` (relative to ``out_root`` when possible)
    ignore : entries of ``.bidsignore`` (segment's non-BIDS files and folders)
    """
    from .. import __version__

    out = Path(out_root)
    out.mkdir(parents=True, exist_ok=True)
    doc: dict = {
        "Name": "segment: brain mask, tissue and tumor segmentations",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": "segment",
            "Version": __version__,
            "Description": f"Gaussian-mixture brain MRI segmentation; configuration digest {config_digest}",
            "ConfigDigest": config_digest,
        }],
    }
    if raw_root is not None:
        raw = Path(raw_root).absolute()
        try:
            link = os.path.relpath(raw, out.absolute())
        except ValueError:  # another drive (Windows)
            link = raw.as_uri()
        doc["DatasetLinks"] = {"raw": link}
        doc["SourceDatasets"] = [{"URL": "bids:raw:"}]
    _atomic_text(out / "dataset_description.json", json.dumps(doc, indent=2) + "\n")
    _atomic_text(out / "dseg.tsv", _dseg_tsv(TISSUE_DSEG))
    _atomic_text(out / "desc-tumor_dseg.tsv", _dseg_tsv(tumor_dseg(tumor_coding)))
    if ignore:
        _atomic_text(out / ".bidsignore", "".join(f"{e}\n" for e in ignore))
    return out / "dataset_description.json"


def _place(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (no copy of the voxels), else copy it."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_session(
    out_root: str | os.PathLike,
    subject: str,
    session: str | None,
    outputs: Mapping[str, str | os.PathLike],
    *,
    sources: Sequence[str] = (),
    tumor_coding: str = "brats2023",
) -> dict[str, Path]:
    """Write one subject/session's outputs under ``out_root/sub-X/[ses-Y/]anat/``, atomically.

    Parameters
    ----------
    outputs : key -> file, as ``CaseResult.outputs`` (``brain_mask``, ``tissue``, ``tumor``,
        ``pve_csf``/``pve_gm``/``pve_wm`` or, without partial volumes, ``prob_*``); other keys
        (metrics, overlay) are not BIDS files and are left out.
    sources : BIDS URIs (or paths) of the input images, written as ``Sources`` of every sidecar.

    Returns
    -------
    dict key -> written file
    """
    out = Path(out_root)
    names = derivative_names(subject, session)
    files = {k: Path(v) for k, v in outputs.items()}
    for key, lab in _PROB.items():  # partial-volume fractions preferred, as fMRIPrep (FAST _pve)
        if f"pve_{key}" not in files and f"prob_{key}" in files:
            files[f"pve_{key}"] = files[f"prob_{key}"]
    final = out / Path(names["tissue"]).parent
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    written: dict[str, Path] = {}
    try:
        mask_uri = f"bids::{names['brain_mask']}"
        for key in ("brain_mask", "tissue", "tumor", "pve_csf", "pve_gm", "pve_wm"):
            if key not in files:
                continue
            src = files[key]
            if not src.is_file():
                raise FileNotFoundError(f"{src}: output of {case_id_of(subject, session)} missing")
            name = names[key].rsplit("/", 1)[1]
            _place(src, tmp / name)
            side: dict = {"Sources": list(sources)}
            if key == "brain_mask":
                side["Type"] = "Brain"
            elif key == "tissue":
                side["Description"] = "Tissue classes of the brain (see dseg.tsv); 4 = tumor"
                side["Sources"] = list(sources) + [mask_uri]
            elif key == "tumor":
                side["Description"] = f"Tumor sub-regions, {tumor_coding} coding (see desc-tumor_dseg.tsv)"
                side["Sources"] = list(sources) + [mask_uri]
            else:
                lab = _PROB[key[4:]]
                what = "partial-volume fraction" if key in outputs else "posterior probability"
                side["Description"] = f"{lab} {what} per voxel, float32 in [0, 1]"
                side["Sources"] = list(sources) + [mask_uri]
            _write_json(tmp / name.replace(".nii.gz", ".json"), side)
            written[key] = final / name
        if final.exists():
            trash = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return written
