"""One test per defect found by fuzzing the command line (issue: never lose a user's data, never
give a silently wrong result). Every bad file is generated here, from ``sample_data/``."""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segment.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
TISSUE = SAMPLE / "phantom_tissue_0"


@pytest.fixture
def case(tmp_path) -> Path:
    """A private copy of the tissue phantom, T1 and FLAIR only (fast), with its ground truth."""
    d = tmp_path / "data" / "phantom_tissue_0"
    d.mkdir(parents=True)
    for n in ("t1.nii.gz", "flair.nii.gz", "seg.nii.gz"):
        shutil.copy(TISSUE / n, d / n)
    return d


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("segment: error:")]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------- 1. data loss


def test_batch_into_its_own_input_folder_is_refused_and_inputs_survive(case, capsys):
    root = case.parent
    before = _files(root)
    rc = main(["batch", "--input", str(root), "--out", str(root), "--no-progress"])
    assert rc == 2
    assert "input" in _one_error_line(capsys)
    assert _files(root) == before


def test_batch_out_inside_a_case_folder_is_refused(case, capsys):
    before = _files(case)
    rc = main(["batch", "--input", str(case.parent), "--out", str(case / "results"), "--no-progress"])
    assert rc == 2
    _one_error_line(capsys)
    assert _files(case) == before
    assert not (case / "results").exists()


def test_run_out_inside_the_case_folder_is_refused(case, capsys):
    before = _files(case)
    assert main(["run", str(case), "--out", str(case)]) == 1
    assert "input" in _one_error_line(capsys)
    assert _files(case) == before


def test_force_keeps_a_users_own_files_and_refuses_to_overwrite_them(case, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["batch", "--input", str(case.parent), "--out", str(out), "--no-progress"]) == 0
    notes = out / case.name / "my_notes.txt"
    notes.write_text("reviewed by me")
    assert main(["batch", "--input", str(case.parent), "--out", str(out), "--force", "--no-progress"]) == 0
    assert notes.read_text() == "reviewed by me"
    assert (out / case.name / "tissue.nii.gz").is_file()
    # a file segment did not write, under a name segment wants: never overwritten
    other = tmp_path / "out2"
    (other / case.name).mkdir(parents=True)
    (other / case.name / "tissue.nii.gz").write_bytes(b"my own tissue map")
    capsys.readouterr()
    assert main(["batch", "--input", str(case.parent), "--out", str(other), "--no-progress"]) == 1
    assert (other / case.name / "tissue.nii.gz").read_bytes() == b"my own tissue map"
    report = (other / "report.csv").read_text()
    assert "was not written by segment" in report


# --------------------------------------------------------------------------- 5. atomic run outputs


def test_run_output_set_is_replaced_whole_without_stale_files(case, tmp_path):
    out = tmp_path / "out"
    cfg = tmp_path / "probs.yaml"
    cfg.write_text("outputs:\n  probabilities: true\n  overlay: false\n")
    assert main(["run", str(case), "--out", str(out), "-c", str(cfg)]) == 0
    first = {p.name for p in (out / case.name).iterdir()}
    assert "prob_gm.nii.gz" in first and "result.json" in first
    (out / case.name / "my_notes.txt").write_text("mine")
    plain = tmp_path / "plain.yaml"
    plain.write_text("outputs:\n  overlay: false\n")
    assert main(["run", str(case), "--out", str(out), "-c", str(plain)]) == 0
    second = {p.name for p in (out / case.name).iterdir()}
    assert not any(n.startswith(("prob_", "pve_")) for n in second)  # the previous run's files are gone
    assert "my_notes.txt" in second  # the user's file is not
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left


def test_run_interrupted_while_writing_leaves_no_partial_case(case, tmp_path, monkeypatch, capsys):
    import segment.pipeline as pipeline

    real = pipeline.write_overlay

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device", "overlay.png")

    monkeypatch.setattr(pipeline, "write_overlay", disk_full)
    out = tmp_path / "out"
    rc = main(["run", str(case), "--out", str(out)])
    assert rc == 1
    line = _one_error_line(capsys)
    assert "No space left on device" in line or "disk full" in line
    assert not (out / case.name).exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(pipeline, "write_overlay", real)


def test_report_files_follow_the_umask(case, tmp_path):
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        assert main(["run", str(case), "--out", str(out)]) == 0
    finally:
        os.umask(old)
    for name in ("metrics.json", "overlay.png", "result.json", "tissue.nii.gz"):
        mode = stat.S_IMODE((out / case.name / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))
