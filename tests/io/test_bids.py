"""BIDS input (entity parser, subjects/sessions, modality rule) and BIDS-derivatives output.

The end-to-end test builds a BIDS dataset in code (sub-01 with sessions 1 and 2, sub-02 without
sessions; T1w, ce-gd T1w, T2w, FLAIR; a manual dseg under derivatives/) and runs
``segment batch`` on it once; the tests share that run.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segment.batch.bids import run_bids_batch
from segment.cli import main
from segment.config import config_from_dict
from segment.errors import InputError
from segment.io.bids import (
    bids_case,
    build_name,
    choose_images,
    find_sessions,
    find_truth,
    is_bids_root,
    modality_of,
    parse_name,
)
from segment.io.cases import find_case
from segment.io.nifti import save_volume
from segment.phantom import make_phantom
from segment.report.bids_derivatives import derivative_names, write_session

SHAPE = (48, 56, 48)
# quick: plain GMM labelling, no MNI152 registration (brain-only phantoms: the mask is their
# non-zero region either way; registration is tested in tests/io/test_register.py), no overlay
# figures (not BIDS files; tested in tests/test_batch.py and tests/report/)
FAST = {"mixture": {"partial_volume": False, "max_iter": 100},
        "preprocess": {"skullstrip_options": {"template": False}},
        "outputs": {"overlay": False},
        "batch": {"qc": {"brain_volume_ml": [100, 2100]}}}

# ----------------------------------------------------------------------------- naming rules
_L = r"[a-zA-Z0-9]+"
_PREFIX = rf"sub-(?P<sub>{_L})(_ses-(?P<ses>{_L}))?"
#: BIDS derivatives naming rules for what segment writes (BIDS 1.10, "Imaging data types" and
#: "Common data types": masks, discrete and probabilistic segmentations), one regex per kind.
BIDS_RULES = {
    "mask": rf"^{_PREFIX}(_space-{_L})?(_res-{_L})?(_label-{_L})?_desc-{_L}_mask\.(nii\.gz|json)$",
    "dseg": rf"^{_PREFIX}(_space-{_L})?(_res-{_L})?(_den-{_L})?(_desc-{_L})?_dseg\.(nii\.gz|json|tsv)$",
    "probseg": rf"^{_PREFIX}(_space-{_L})?(_res-{_L})?(_den-{_L})?_label-{_L}(_desc-{_L})?_probseg\.(nii\.gz|json)$",
}
TOP_LEVEL = {
    "dataset_description.json": r"^dataset_description\.json$",
    "lookup tables": rf"^(desc-{_L}_)?dseg\.tsv$",
    "ignore file": r"^\.bidsignore$",
}


def bids_violations(root: Path) -> list[str]:
    """Files of a derivatives tree that break the naming rules (ignoring .bidsignore'd entries)."""
    ignore = []
    if (root / ".bidsignore").is_file():
        ignore = [ln.strip().rstrip("/") for ln in (root / ".bidsignore").read_text().splitlines() if ln.strip()]
    bad = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if rel.parts[0] in ignore or p.is_dir():
            continue
        if len(rel.parts) == 1:
            if not any(re.match(rx, p.name) for rx in TOP_LEVEL.values()):
                bad.append(f"{rel}: not a top-level file of a derivatives dataset")
            continue
        m = next((re.match(rx, p.name) for rx in BIDS_RULES.values() if re.match(rx, p.name)), None)
        if m is None:
            bad.append(f"{rel}: matches no rule")
            continue
        want = [f"sub-{m['sub']}"] + ([f"ses-{m['ses']}"] if m["ses"] else []) + ["anat", p.name]
        if list(rel.parts) != want:
            bad.append(f"{rel}: should be {'/'.join(want)}")
        if p.name.endswith(".nii.gz") and not p.with_name(p.name[:-7] + ".json").is_file():
            bad.append(f"{rel}: no JSON sidecar")
    return bad


# ----------------------------------------------------------------------------- parser


def test_parse_and_build_names():
    n = parse_name("sub-01_ses-pre_acq-mprage_ce-gd_run-2_T1w.nii.gz")
    assert n.entities == {"sub": "01", "ses": "pre", "acq": "mprage", "ce": "gd", "run": "2"}
    assert (n.suffix, n.extension) == ("T1w", ".nii.gz")
    assert parse_name("sub-01_T1w.json").extension == ".json"
    for not_bids in ("t1.nii.gz", "BraTS-GLI-00000-000-t1n.nii.gz", "sub-01.nii.gz", "sub-01_ses-1_ses-2_T1w.nii.gz",
                     "sub-0_1_T1w.nii.gz", "ses-1_sub-01_T1w.nii.gz"):
        assert parse_name(not_bids) is None, not_bids
    assert build_name({"desc": "tumor", "ses": "1", "sub": "01"}, "dseg", ".nii.gz") == "sub-01_ses-1_desc-tumor_dseg.nii.gz"
    assert build_name({"sub": "01", "label": "GM"}, "probseg") == "sub-01_label-GM_probseg"
    with pytest.raises(ValueError, match="unknown BIDS entities"):
        build_name({"sub": "01", "colour": "red"}, "dseg")
    with pytest.raises(ValueError, match="alphanumeric"):
        build_name({"sub": "0_1"}, "dseg")


def test_modality_from_suffix_and_ce():
    assert modality_of("sub-01_T1w.nii.gz") == "t1"
    assert modality_of("sub-01_ce-gd_T1w.nii.gz") == "t1c"
    assert modality_of("sub-01_ce-gadolinium_acq-3d_T1w.nii") == "t1c"
    assert modality_of("sub-01_T2w.nii.gz") == "t2"
    assert modality_of("sub-01_FLAIR.nii.gz") == "flair"
    assert modality_of("sub-01_T1w.json") is None  # a sidecar, not an image
    assert modality_of("sub-01_T2star.nii.gz") is None
    assert modality_of("sub-01_desc-brain_mask.nii.gz") is None


def test_acq_rec_run_rule():
    names = ["sub-01_run-1_T1w.nii.gz", "sub-01_run-2_T1w.nii.gz", "sub-01_acq-fast_T1w.nii.gz",
             "sub-01_rec-norm_T2w.nii.gz", "sub-01_T2w.nii.gz", "sub-01_acq-b_FLAIR.nii.gz",
             "sub-01_acq-a_FLAIR.nii.gz", "sub-01_ce-gd_run-1_T1w.nii.gz", "sub-01_ce-gd_run-3_T1w.nii.gz"]
    images, ignored = choose_images([Path("/x") / n for n in names])
    got = {m: p.name for m, p in images.items()}
    assert got == {"t1": "sub-01_run-2_T1w.nii.gz",  # no acq first, then the last run
                   "t2": "sub-01_T2w.nii.gz",  # no rec first
                   "flair": "sub-01_acq-a_FLAIR.nii.gz",  # acq labels alphabetically
                   "t1c": "sub-01_ce-gd_run-3_T1w.nii.gz"}
    assert sorted(p.name for p, _ in ignored) == sorted(set(names) - set(got.values()))
    assert all("BIDS rule" in why for _, why in ignored)


# ----------------------------------------------------------------------------- a dataset in code


def _write_session(anat: Path, prefix: str, seed: int, *, with_t1: bool = True):
    ph = make_phantom(seed, shape=SHAPE, spacing=(4.0, 4.0, 4.0), tumor=True)
    files = {"ce-gd_T1w": "t1c", "T2w": "t2", "FLAIR": "flair"}
    if with_t1:
        files["T1w"] = "t1"
    for suffix, mod in files.items():
        save_volume(ph.images[mod], ph.affine, anat / f"{prefix}_{suffix}.nii.gz", dtype=np.float32)
        (anat / f"{prefix}_{suffix}.json").write_text(json.dumps({"MagneticFieldStrength": 3}))
    return ph


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bids") / "ds"
    (root).mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.10.0"}))
    (root / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\n")
    truth = {}
    for i, (sub, ses) in enumerate([("01", "1"), ("01", "2"), ("02", None)]):
        anat = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "anat"
        anat.mkdir(parents=True)
        prefix = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
        ph = _write_session(anat, prefix, seed=i)
        truth[prefix] = ph
        man = root / "derivatives" / "manual" / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "anat"
        man.mkdir(parents=True)
        save_volume(ph.tumor, ph.affine, man / f"{prefix}_desc-tumor_dseg.nii.gz", dtype=np.uint8)
    return root


def test_is_bids_root(dataset, tmp_path):
    assert is_bids_root(dataset) and not is_bids_root(dataset / "sub-01")
    plain = tmp_path / "plain"
    (plain / "sub-01").mkdir(parents=True)  # plain case folders named sub-*: not BIDS
    (plain / "sub-01" / "t1.nii.gz").write_bytes(b"")
    assert not is_bids_root(plain)
    (plain / "sub-02" / "ses-a" / "anat").mkdir(parents=True)
    assert is_bids_root(plain)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "dataset_description.json").write_text("{}")
    assert is_bids_root(bare)


def test_discovery_one_case_per_subject_session(dataset):
    sessions = find_sessions(dataset)
    assert [s.case_id for s in sessions] == ["sub-01_ses-1", "sub-01_ses-2", "sub-02"]
    for s in sessions:
        assert {m: p.name for m, p in s.images.items()} == {
            "t1": f"{s.case_id}_T1w.nii.gz", "t1c": f"{s.case_id}_ce-gd_T1w.nii.gz",
            "t2": f"{s.case_id}_T2w.nii.gz", "flair": f"{s.case_id}_FLAIR.nii.gz"}
    assert [s.case_id for s in find_sessions(dataset, participant_labels=["sub-02"])] == ["sub-02"]
    assert [s.case_id for s in find_sessions(dataset, session_labels=["2"])] == ["sub-01_ses-2"]
    with pytest.raises(InputError, match="no subject sub-07; present: sub-01, sub-02"):
        find_sessions(dataset, participant_labels=["07"])
    with pytest.raises(InputError, match="no session ses-9"):
        find_sessions(dataset, session_labels=["9"])


def test_truth_only_when_asked(dataset):
    s = find_sessions(dataset, participant_labels=["01"], session_labels=["2"])[0]
    assert bids_case(s).truth == {}
    case = bids_case(s, truth_from="derivatives")
    assert case.truth == {"tumor": dataset / "derivatives/manual/sub-01/ses-2/anat/sub-01_ses-2_desc-tumor_dseg.nii.gz"}
    assert find_truth(dataset, "02", None, truth_from="derivatives/manual")["tumor"].name == "sub-02_desc-tumor_dseg.nii.gz"
    with pytest.raises(InputError, match="ground-truth folder not found"):
        find_truth(dataset, "02", None, truth_from="derivatives/none")


def test_segment_run_on_an_anat_folder_finds_the_case(dataset):
    """The issue's failure: 'both sub-01_ce-gd_T1w and sub-01_T1w look like the t1 image'."""
    case = find_case(dataset / "sub-01" / "ses-1" / "anat")
    assert case.case_id == "sub-01_ses-1"
    assert {m: p.name for m, p in case.images.items()} == {
        "t1": "sub-01_ses-1_T1w.nii.gz", "t1c": "sub-01_ses-1_ce-gd_T1w.nii.gz",
        "t2": "sub-01_ses-1_T2w.nii.gz", "flair": "sub-01_ses-1_FLAIR.nii.gz"}


@pytest.fixture(scope="module")
def batch_out(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bids_out") / "derivatives_segment"
    cfg = tmp_path_factory.mktemp("cfg") / "fast.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(FAST))
    code = main(["batch", "--input", str(dataset), "--out", str(out), "--workers", "1", "--no-progress",
                 "--bids-truth", "derivatives/manual", "--config", str(cfg)])
    assert code == 0
    return out


def test_batch_gives_one_case_per_session_with_the_right_modalities(batch_out):
    with open(batch_out / "segment" / "report.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["case_id"] for r in rows] == ["sub-01_ses-1", "sub-01_ses-2", "sub-02"]
    assert all(r["status"] == "ok" for r in rows)
    for r in rows:  # tumor scored against the derivatives' manual dseg
        assert float(r["dice_WT"]) > 0.6  # tumor mixture (issue 13) at 4 mm: 0.68 measured on one session
        man = json.loads((batch_out / "segment" / r["case_id"] / "result.json").read_text())
        names = sorted(n for n, *_ in man["inputs"])
        prefix = r["case_id"]
        assert names == sorted([f"{prefix}_FLAIR.nii.gz", f"{prefix}_T1w.nii.gz", f"{prefix}_T2w.nii.gz",
                                f"{prefix}_ce-gd_T1w.nii.gz", f"{prefix}_desc-tumor_dseg.nii.gz"])


def test_derivatives_tree_passes_the_naming_rules(batch_out, dataset):
    assert bids_violations(batch_out) == []
    anat = batch_out / "sub-01" / "ses-2" / "anat"
    expected = {"sub-01_ses-2_desc-brain_mask", "sub-01_ses-2_dseg", "sub-01_ses-2_desc-tumor_dseg",
                "sub-01_ses-2_label-CSF_probseg", "sub-01_ses-2_label-GM_probseg", "sub-01_ses-2_label-WM_probseg"}
    assert {p.name[:-7] for p in anat.glob("*.nii.gz")} == expected
    assert (batch_out / "sub-02" / "anat" / "sub-02_dseg.nii.gz").is_file()
    assert not (batch_out / "anat").exists()  # the 'every subject written to OUT/anat/'
    desc = json.loads((batch_out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "segment"
    assert re.fullmatch(r"[0-9a-f]{16}", desc["GeneratedBy"][0]["ConfigDigest"])
    assert (batch_out / Path(desc["DatasetLinks"]["raw"])).resolve() == dataset.resolve()
    side = json.loads((anat / "sub-01_ses-2_dseg.json").read_text())
    assert "bids:raw:sub-01/ses-2/anat/sub-01_ses-2_ce-gd_T1w.nii.gz" in side["Sources"]
    for src in side["Sources"]:
        if src.startswith("bids:raw:"):
            assert (dataset / src[len("bids:raw:"):]).is_file()
    tsv = (batch_out / "dseg.tsv").read_text().splitlines()
    assert tsv[0] == "index\tname\tabbreviation" and tsv[2].split("\t")[::2] == ["2", "GM"]
    # the files are the segmentation: same voxels as segment's own outputs, input's affine
    dseg = nib.load(str(anat / "sub-01_ses-2_dseg.nii.gz"))
    plain = nib.load(str(batch_out / "segment" / "sub-01_ses-2" / "tissue.nii.gz"))
    np.testing.assert_array_equal(np.asarray(dseg.dataobj), np.asarray(plain.dataobj))
    src = nib.load(str(dataset / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_T1w.nii.gz"))
    np.testing.assert_allclose(dseg.affine, src.affine)
    gm = nib.load(str(anat / "sub-01_ses-2_label-GM_probseg.nii.gz"))
    assert gm.get_data_dtype() == np.float32 and 0 <= float(np.min(gm.dataobj)) and float(np.max(gm.dataobj)) <= 1


def test_rerun_skips_finished_cases_and_rewrites_derivatives(batch_out, dataset, tmp_path):
    cfg = config_from_dict(FAST)
    (batch_out / "sub-02" / "anat" / "sub-02_dseg.nii.gz").unlink()
    report = run_bids_batch(dataset, batch_out, cfg, truth_from="derivatives/manual", workers=1, progress=False)
    assert sorted(report.skipped) == ["sub-01_ses-1", "sub-01_ses-2", "sub-02"]
    assert (batch_out / "sub-02" / "anat" / "sub-02_dseg.nii.gz").is_file()
    assert bids_violations(batch_out) == []


def test_filters_and_plain_layout(dataset, tmp_path):
    out = tmp_path / "plain"
    report = run_bids_batch(dataset, out, config_from_dict(FAST), participant_labels=["02"],
                            output_layout="plain", workers=1, progress=False)
    assert [r["case_id"] for r in report.rows] == ["sub-02"]
    assert (out / "sub-02" / "tissue.nii.gz").is_file() and not (out / "dataset_description.json").exists()
    assert main(["batch", "--input", str(dataset), "--out", str(tmp_path / "x"), "--participant-label", "09"]) == 2


def test_bids_options_need_a_bids_dataset(tmp_path, capsys):
    (tmp_path / "in" / "case1").mkdir(parents=True)
    assert main(["batch", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "o"),
                 "--participant-label", "01"]) == 2
    assert "need a BIDS dataset" in capsys.readouterr().err


def test_writer_is_atomic_and_replaces_a_session_whole(tmp_path):
    ph = make_phantom(0, shape=(16, 16, 16), spacing=(12.0, 12.0, 12.0))
    src = tmp_path / "plain"
    outs = {"brain_mask": save_volume(ph.brain_mask, ph.affine, src / "brain_mask.nii.gz", dtype=np.uint8),
            "tissue": save_volume(ph.tissue, ph.affine, src / "tissue.nii.gz", dtype=np.uint8)}
    der = tmp_path / "der"
    got = write_session(der, "01", "a", outs, sources=["bids:raw:sub-01/ses-a/anat/sub-01_ses-a_T1w.nii.gz"])
    assert {k: p.relative_to(der).as_posix() for k, p in got.items()} == {
        k: v for k, v in derivative_names("01", "a").items() if k in outs}
    (der / "sub-01" / "ses-a" / "anat" / "stale.txt").write_text("x")
    del outs["tissue"]
    write_session(der, "01", "a", outs)
    left = sorted(p.name for p in (der / "sub-01" / "ses-a" / "anat").iterdir())
    assert left == ["sub-01_ses-a_desc-brain_mask.json", "sub-01_ses-a_desc-brain_mask.nii.gz"]
    assert [p.name for p in (der / "sub-01" / "ses-a").iterdir()] == ["anat"]  # no temporary left
    with pytest.raises(FileNotFoundError):
        write_session(der, "01", "a", {"tissue": tmp_path / "missing.nii.gz"})
    assert (der / "sub-01" / "ses-a" / "anat" / "sub-01_ses-a_desc-brain_mask.nii.gz").is_file()  # old kept


def test_output_inside_the_dataset_derivatives_is_not_read_back_as_truth(dataset, tmp_path):
    """The usual BIDS-app call, OUT = BIDS_ROOT/derivatives/segment, run twice with --bids-truth:
    segment's own dseg files under derivatives/ are never taken for ground truth."""
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds, ignore=shutil.ignore_patterns("sub-01"))
    out = ds / "derivatives" / "segment"
    for _ in range(2):
        report = run_bids_batch(ds, out, config_from_dict(FAST), truth_from="derivatives", workers=1, progress=False)
        assert [r["status"] for r in report.rows] == ["ok"]
    assert report.skipped == ["sub-02"]
    assert (out / "sub-02" / "anat" / "sub-02_desc-tumor_dseg.nii.gz").is_file()
    assert find_sessions(ds)[0].case_id == "sub-02"  # derivatives/ is not a subject
    assert bids_violations(out) == []


def test_plain_case_folders_into_the_bids_layout(tmp_path):
    from segment.phantom import write_phantom_case

    root = tmp_path / "in"
    write_phantom_case(root, make_phantom(4, shape=SHAPE, spacing=(4.0, 4.0, 4.0)), "case_1")
    out = tmp_path / "out"
    report = run_bids_batch(root, out, config_from_dict(FAST), output_layout="bids", workers=1, progress=False)
    assert report.rows[0]["status"] == "ok"
    anat = out / "sub-case1" / "anat"
    assert (anat / "sub-case1_dseg.nii.gz").is_file() and bids_violations(out) == []
    side = json.loads((anat / "sub-case1_dseg.json").read_text())
    assert "bids:raw:case_1/t1.nii.gz" in side["Sources"]


def test_left_out_runs_become_case_warnings(tmp_path):
    """Two T1w runs: the last is used and the other is named in the case's notes (warnings)."""
    from segment.io.cases import load_case

    anat = tmp_path / "ds" / "sub-07" / "anat"
    anat.mkdir(parents=True)
    ph = make_phantom(2, shape=(24, 28, 24), spacing=(8.0, 8.0, 8.0))
    for run, scale in (("1", 1.0), ("2", 2.0)):
        save_volume(ph.images["t1"] * scale, ph.affine, anat / f"sub-07_run-{run}_T1w.nii.gz", dtype=np.float32)
    case = find_case(anat)
    assert case.case_id == "sub-07" and case.images["t1"].name == "sub-07_run-2_T1w.nii.gz"
    lc = load_case(case, register="never")
    assert lc.notes == ["sub-07_run-1_T1w.nii.gz: not used, t1 is sub-07_run-2_T1w.nii.gz "
                        "(BIDS rule: no acq- first, no rec- first, last run)"]
    np.testing.assert_allclose(lc.images["t1"].data.max(), 2 * ph.images["t1"].max(), rtol=1e-6)


def test_segment_run_output_layout_bids(dataset, tmp_path, capsys):
    out = tmp_path / "one"
    assert main(["run", str(dataset / "sub-02" / "anat"), "--out", str(out), "--output-layout", "bids",
                 "--config", str(_fast_yaml(tmp_path))]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["case"] == "sub-02"
    assert Path(summary["outputs"]["bids_tissue"]) == out / "sub-02" / "anat" / "sub-02_dseg.nii.gz"
    assert (out / "segment" / "sub-02" / "tissue.nii.gz").is_file()
    assert bids_violations(out) == []
    desc = json.loads((out / "dataset_description.json").read_text())
    assert (out / desc["DatasetLinks"]["raw"]).resolve() == dataset.resolve()


def _fast_yaml(tmp_path: Path) -> Path:
    import yaml

    p = tmp_path / "fast.yaml"
    p.write_text(yaml.safe_dump(FAST))
    return p
