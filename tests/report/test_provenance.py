"""provenance.json, volumes.csv and segment.log of a run; the case log capture."""
from __future__ import annotations

import csv
import json
import logging
import warnings

import nibabel as nib
import numpy as np
import pytest

from segment import pipeline
from segment.config import load_config
from segment.phantom import make_phantom, write_phantom_case
from segment.report.provenance import (
    CaseLog,
    collect_flags,
    file_record,
    sha256_file,
    volumes_rows,
)

SHAPE, SPACING = (48, 56, 48), (4.0, 4.0, 4.0)
#: the default configuration but for the MNI152 registration, which the brain-only phantoms do not
#: need (their mask is the non-zero region either way) and which these tests do not check
CONFIG = load_config(None, {"preprocess": {"skullstrip_options": {"template": False}}})
#: ... with the partial-volume model on these 4 mm phantoms (by default it is kept to voxels up to 2.5 mm)
PV_CONFIG = load_config(None, {"preprocess": {"skullstrip_options": {"template": False}},
                               "mixture": {"pv_max_voxel_mm": 4.0}})


@pytest.fixture(scope="module")
def tumor_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov")
    return write_phantom_case(root, make_phantom(3, shape=SHAPE, spacing=SPACING, tumor=True), "tumor_case")


@pytest.fixture(scope="module")
def tissue_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov_t")
    return write_phantom_case(root, make_phantom(1, shape=SHAPE, spacing=SPACING), "tissue_case")


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_run_writes_provenance_volumes_and_log(tissue_case, tmp_path):
    res = pipeline.segment_case(tissue_case, CONFIG, tmp_path / "o")
    out = tmp_path / "o"
    for f in ("provenance.json", "volumes.csv", "segment.log"):
        assert (out / f).is_file(), f
        assert res.outputs[{"provenance.json": "provenance", "volumes.csv": "volumes", "segment.log": "log"}[f]] == out / f
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["case_id"] == "tissue_case"
    assert prov["config"] == CONFIG.to_dict()  # the resolved config, every default filled in
    assert prov["dependencies"]["numpy"] == np.__version__
    t1 = prov["inputs"]["modalities"]["t1"]
    assert t1["sha256"] == sha256_file(tissue_case / "t1.nii.gz")
    assert t1["size_bytes"] == (tissue_case / "t1.nii.gz").stat().st_size
    assert prov["modality_mapping"]["flair"] == "flair.nii.gz"
    assert "seg" in prov["inputs"]["truth"]
    assert set(prov["timings_s"]) >= {"load", "brain_mask", "normalize", "mixture", "write"}
    assert prov["outputs"]["volumes"] == "volumes.csv"
    assert isinstance(prov["warnings"], list) and isinstance(prov["qc_flags"], list)
    assert prov["registration"]["mode"] == "auto"


def test_fallback_becomes_a_recorded_warning_and_flag(tissue_case, tmp_path, monkeypatch):
    """A partial-volume fit whose means drift beyond the limit falls back to the plain mixture:
    the fallback is in provenance.json (warnings and QC flags), segment.log and the result."""
    clean = pipeline.segment_case(tissue_case, PV_CONFIG, tmp_path / "clean")
    assert not any("fell back" in w for w in clean.info["warnings"])
    monkeypatch.setattr(pipeline, "PV_MAX_DRIFT", 0.0)  # any drift is too much: forces the fallback
    res = pipeline.segment_case(tissue_case, PV_CONFIG, tmp_path / "fb")
    prov = json.loads((tmp_path / "fb" / "provenance.json").read_text())
    assert any("partial-volume model fell back to the plain mixture" in w for w in prov["warnings"])
    assert any("fell back" in f for f in prov["qc_flags"])
    assert prov["steps"]["mixture"]["partial_volume"]["used"] is False
    assert "fell back" in (tmp_path / "fb" / "segment.log").read_text()
    assert any("fell back" in f for f in res.info["mixture"]["flags"])
    assert any("fell back" in w for w in res.info["warnings"])


def test_run_and_batch_writer_carry_the_fallback(tissue_case, tmp_path, monkeypatch, capsys):
    """The one writer of run and batch: result.json's warnings and flags, the report row's flags,
    and segment run's summary all hold the fallback."""
    from segment.cli import main
    from segment.publish import write_case

    monkeypatch.setattr(pipeline, "PV_MAX_DRIFT", 0.0)
    result, row, caught = write_case(tissue_case, PV_CONFIG, tmp_path / "w")
    manifest = json.loads((tmp_path / "w" / "tissue_case" / "result.json").read_text())
    for f in ("provenance.json", "volumes.csv", "segment.log"):
        assert f in manifest["outputs"]
    assert any("fell back" in w for w in manifest["warnings"])
    assert any("fell back" in f for f in manifest["flags"])
    assert "fell back" in row["flags"]
    prov = json.loads((tmp_path / "w" / "tissue_case" / "provenance.json").read_text())
    assert prov["qc_flags"] == manifest["flags"]  # the same flags in every record
    cfg = tmp_path / "no_template.yaml"
    cfg.write_text("preprocess:\n  skullstrip_options:\n    template: false\nmixture:\n  pv_max_voxel_mm: 4.0\n")
    assert main(["run", str(tissue_case), "--out", str(tmp_path / "r"), "-c", str(cfg)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert any("fell back" in f for f in summary["flags"])
    assert any("fell back" in w for w in summary["warnings"])


def test_volumes_csv_sums_to_the_brain_volume(tumor_case, tmp_path):
    pipeline.segment_case(tumor_case, load_config(None, {"tumor": {"enabled": "on"},
                                                         "preprocess": {"skullstrip_options": {"template": False}}}),
                          tmp_path)
    rows = _read_csv(tmp_path / "volumes.csv")
    by = {r["structure"]: r for r in rows}
    assert {"CSF", "GM", "WM", "tumor", "brain", "NCR", "ED", "ET"} <= set(by)
    mask_img = nib.load(str(tmp_path / "brain_mask.nii.gz"))
    vox_ml = abs(np.linalg.det(mask_img.affine[:3, :3])) / 1000
    brain_ml = np.count_nonzero(np.asarray(mask_img.dataobj)) * vox_ml
    assert float(by["brain"]["volume_ml_label"]) == pytest.approx(brain_ml, abs=1e-3)
    parts = [r for r in rows if r["part_of"] == "brain"]
    for col in ("volume_ml_label", "volume_ml_pve"):
        assert sum(float(r[col]) for r in parts) == pytest.approx(brain_ml, rel=1e-4), col
    tumor_parts = [r for r in rows if r["part_of"] == "tumor"]
    assert sum(float(r["volume_ml_label"]) for r in tumor_parts) == pytest.approx(
        float(by["tumor"]["volume_ml_label"]), abs=1e-2)
    # label volumes are the voxel counts of the written maps
    tissue = np.asarray(nib.load(str(tmp_path / "tissue.nii.gz")).dataobj)
    assert float(by["GM"]["volume_ml_label"]) == pytest.approx(np.count_nonzero(tissue == 2) * vox_ml, abs=1e-3)
    # PVE-based and label-based differ (border voxels count fractionally) but stay close
    gm_l, gm_p = float(by["GM"]["volume_ml_label"]), float(by["GM"]["volume_ml_pve"])
    assert gm_l != gm_p and abs(gm_l - gm_p) < 0.25 * gm_l


def test_volumes_rows_without_fractions_leave_pve_empty(tissue_case):
    seg = pipeline.run_pipeline(tissue_case, CONFIG)
    seg.info.pop("pve_sums")
    seg.fractions = None
    rows = volumes_rows(seg)
    assert all(r["volume_ml_pve"] == "" for r in rows)
    assert sum(r["volume_ml_label"] for r in rows if r["part_of"] == "brain") == pytest.approx(
        next(r["volume_ml_label"] for r in rows if r["structure"] == "brain"), abs=1e-2)


def test_case_log_captures_records_and_warnings_and_passes_warnings_on(capsys):
    lg = logging.getLogger("segment")
    with warnings.catch_warnings(record=True) as outer:
        warnings.simplefilter("always")
        with CaseLog() as cl:
            lg.info("step detail")
            lg.warning("fell back to X")
            warnings.warn("not converged", RuntimeWarning)
    assert cl.warnings == ["fell back to X", "RuntimeWarning: not converged"]
    text = cl.text()
    assert "INFO step detail" in text and "WARNING fell back to X" in text and "not converged" in text
    assert [str(w.message) for w in outer] == ["not converged"]  # re-issued to the outer listener
    assert lg.propagate and lg.level == logging.NOTSET  # logger restored


def test_case_log_keeps_the_terminal_quiet_at_info():
    seen = []

    class H(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    root = logging.getLogger()
    h = H()
    old = root.level
    root.addHandler(h)
    root.setLevel(logging.WARNING)
    try:
        with CaseLog() as cl:
            logging.getLogger("segment").info("quiet")
            logging.getLogger("segment").warning("loud")
    finally:
        root.removeHandler(h)
        root.setLevel(old)
    assert seen == ["loud"]  # INFO not shown without -v, but it is in the case's log
    assert "quiet" in cl.text()


def test_collect_flags_and_file_record(tmp_path):
    info = {"mixture": {"flags": ["a"], "partial_volume": {"flags": ["b", "a"]}}, "tumor": [{"flags": ["c"]}]}
    assert collect_flags(info) == ["a", "b", "c"]
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc")
    rec = file_record(p)
    assert rec["size_bytes"] == 3
    assert rec["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_case_log_names_the_case_on_the_terminal():
    seen = []

    class H(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    root = logging.getLogger()
    h = H()
    root.addHandler(h)
    try:
        with CaseLog(label="case7") as cl:
            logging.getLogger("segment").warning("fell back %s", "here")
            logging.getLogger("segment").warning("case7: already named")
    finally:
        root.removeHandler(h)
    assert seen == ["case7: fell back here", "case7: already named"]
    assert cl.warnings == ["fell back here", "case7: already named"]  # the case's own record unprefixed
