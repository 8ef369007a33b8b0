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
from segment.metrics import dice

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


#: for tests that need a run to finish but check neither the segmentation nor these features: the
#: plain mixture (no partial-volume model), no MNI152 registration (the phantom is brain-only: its
#: mask is the non-zero region either way) and, unless a test looks at it, no overlay figure
FAST = {"mixture": {"partial_volume": False}, "preprocess": {"skullstrip_options": {"template": False}}}


def _config_args(tmp_path_factory, name: str, cfg: dict) -> list[str]:
    import yaml

    p = tmp_path_factory.mktemp("cfg") / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return ["-c", str(p)]


@pytest.fixture(scope="module")
def fast(tmp_path_factory) -> list[str]:
    """``-c FILE`` arguments: the quick configuration without the overlay."""
    return _config_args(tmp_path_factory, "fast", {**FAST, "outputs": {"overlay": False}})


@pytest.fixture(scope="module")
def fast_overlay(tmp_path_factory) -> list[str]:
    """``-c FILE`` arguments: the quick configuration with the overlay."""
    return _config_args(tmp_path_factory, "fast_overlay", FAST)


@pytest.fixture(scope="module")
def no_template(tmp_path_factory) -> list[str]:
    """``-c FILE`` arguments: the default segmentation without the MNI152 registration or overlay."""
    return _config_args(tmp_path_factory, "no_template", {"preprocess": FAST["preprocess"],
                                                          "outputs": {"overlay": False}})


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
    assert main(["run", str(case), "--out", str(case)]) == 2
    assert "input" in _one_error_line(capsys)
    assert _files(case) == before


def test_force_keeps_a_users_own_files_and_refuses_to_overwrite_them(case, tmp_path, capsys, fast):
    out = tmp_path / "out"
    assert main(["batch", "--input", str(case.parent), "--out", str(out), "--no-progress", *fast]) == 0
    notes = out / case.name / "my_notes.txt"
    notes.write_text("reviewed by me")
    assert main(["batch", "--input", str(case.parent), "--out", str(out), "--force", "--no-progress", *fast]) == 0
    assert notes.read_text() == "reviewed by me"
    assert (out / case.name / "tissue.nii.gz").is_file()
    # a file segment did not write, under a name segment wants: never overwritten
    other = tmp_path / "out2"
    (other / case.name).mkdir(parents=True)
    (other / case.name / "tissue.nii.gz").write_bytes(b"my own tissue map")
    capsys.readouterr()
    assert main(["batch", "--input", str(case.parent), "--out", str(other), "--no-progress", *fast]) == 1
    assert (other / case.name / "tissue.nii.gz").read_bytes() == b"my own tissue map"
    report = (other / "report.csv").read_text()
    assert "was not written by segment" in report


# --------------------------------------------------------------------------- 5. atomic run outputs


def test_run_output_set_is_replaced_whole_without_stale_files(case, tmp_path):
    out = tmp_path / "out"
    cfg = tmp_path / "probs.yaml"
    no_tpl = "preprocess:\n  skullstrip_options:\n    template: false\n"  # brain-only phantom: quicker
    cfg.write_text(no_tpl + "outputs:\n  probabilities: true\n  overlay: false\n")
    assert main(["run", str(case), "--out", str(out), "-c", str(cfg)]) == 0
    first = {p.name for p in (out / case.name).iterdir()}
    assert "prob_gm.nii.gz" in first and "result.json" in first
    (out / case.name / "my_notes.txt").write_text("mine")
    plain = tmp_path / "plain.yaml"
    plain.write_text(no_tpl + "outputs:\n  overlay: false\n")
    assert main(["run", str(case), "--out", str(out), "-c", str(plain)]) == 0
    second = {p.name for p in (out / case.name).iterdir()}
    assert not any(n.startswith(("prob_", "pve_")) for n in second)  # the previous run's files are gone
    assert "my_notes.txt" in second  # the user's file is not
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left


def test_run_interrupted_while_writing_leaves_no_partial_case(case, tmp_path, monkeypatch, capsys, fast_overlay):
    import segment.pipeline as pipeline

    real = pipeline.write_overlay

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device", "overlay.png")

    monkeypatch.setattr(pipeline, "write_overlay", disk_full)
    out = tmp_path / "out"
    rc = main(["run", str(case), "--out", str(out), *fast_overlay])
    assert rc == 1
    line = _one_error_line(capsys)
    assert "No space left on device" in line or "disk full" in line
    assert not (out / case.name).exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(pipeline, "write_overlay", real)


def test_report_files_follow_the_umask(case, tmp_path, fast_overlay):
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        assert main(["run", str(case), "--out", str(out), *fast_overlay]) == 0
    finally:
        os.umask(old)
    for name in ("metrics.json", "overlay.png", "result.json", "tissue.nii.gz"):
        mode = stat.S_IMODE((out / case.name / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))


# --------------------------------------------------------------------------- 2. series on another grid


def _shifted_copy(case: Path, dst: Path, shift_mm: float = 0.0, crop_from: int = 0) -> Path:
    dst.mkdir(parents=True)
    for n in ("t1.nii.gz", "seg.nii.gz"):
        shutil.copy(case / n, dst / n)
    img = nib.load(str(case / "flair.nii.gz"))
    data = np.asarray(img.dataobj)[:, :, crop_from:]
    aff = img.affine.copy()
    aff[:3, 3] += aff[:3, 2] * crop_from
    aff[0, 3] += shift_mm
    nib.save(nib.Nifti1Image(data, aff), str(dst / "flair.nii.gz"))
    return dst


def _dice(out: Path, name: str) -> dict[str, float]:
    return json.loads((out / name / "metrics.json").read_text())


@pytest.mark.parametrize("shift_mm, crop_from", [(0.1, 0), (0.1, 30)])
def test_series_on_a_shifted_or_cropped_grid_keeps_the_tissue(case, tmp_path, shift_mm, crop_from, capsys,
                                                              no_template):
    # before: the resampled FLAIR's rim enlarged the brain mask (GM Dice 0.81, CSF 0.0), and a
    # FLAIR covering half the brain narrowed the mask to its field of view (Dice 0.67)
    d = _shifted_copy(case, tmp_path / "in" / "shifted", shift_mm, crop_from)
    out = tmp_path / "out"
    assert main(["run", str(d), "--out", str(out), *no_template]) == 0
    m = _dice(out, "shifted")
    assert m["dice_GM"] > 0.9 and m["dice_CSF"] > 0.8 and m["dice_WM"] > 0.95
    mask = np.asarray(nib.load(str(out / "shifted" / "brain_mask.nii.gz")).dataobj) > 0
    t1 = np.asarray(nib.load(str(d / "t1.nii.gz")).dataobj)
    assert mask.sum() == np.count_nonzero(t1)  # the reference alone defines the brain
    flags = json.loads(capsys.readouterr().out)["flags"]
    if crop_from:
        assert any("outside the field of view of flair" in f for f in flags)
        rec = json.loads((out / "shifted" / "result.json").read_text())
        assert any("field of view" in f for f in rec["flags"])


# --------------------------------------------------------------------------- 3. float labels


def test_non_integer_labels_are_an_error_naming_file_and_values(case, tmp_path, capsys, fast):
    seg = nib.load(str(case / "seg.nii.gz"))
    data = np.asarray(seg.dataobj).astype(np.float32)
    data[data == 1] = 0.5
    nib.save(nib.Nifti1Image(data, seg.affine), str(case / "seg.nii.gz"))
    out = tmp_path / "out"
    assert main(["run", str(case), "--out", str(out), *fast]) == 1
    line = _one_error_line(capsys)
    assert "seg.nii.gz" in line and "0.5" in line
    assert not (out / case.name).exists()
    assert main(["evaluate", str(case / "seg.nii.gz"), str(TISSUE / "seg.nii.gz")]) == 1
    assert "0.5" in _one_error_line(capsys)
    assert main(["batch", "--input", str(case.parent), "--out", str(tmp_path / "b"), "--no-progress", *fast]) == 1
    assert "non-integer" in (tmp_path / "b" / "report.csv").read_text()


# --------------------------------------------------------------------------- 4. a modality dropped


@pytest.mark.parametrize("kind", ["broken_link", "folder"])
def test_image_name_that_is_not_a_file_is_an_error(case, tmp_path, kind, capsys):
    if kind == "broken_link":
        os.symlink(tmp_path / "nowhere.nii.gz", case / "t2.nii.gz")
    else:
        (case / "t2.nii.gz").mkdir()
    assert main(["run", str(case), "--out", str(tmp_path / "out")]) == 1
    line = _one_error_line(capsys)
    assert "t2.nii.gz" in line and ("broken" in line if kind == "broken_link" else "folder" in line)


# --------------------------------------------------------------------------- 6. one line, not a traceback


def _patched(src: Path, dst: Path, patch) -> Path:
    import gzip

    raw = bytearray(gzip.open(src).read())
    patch(raw)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(dst, "wb") as fh:
        fh.write(bytes(raw))
    return dst


def _dims(n):
    import struct

    def patch(raw):
        raw[42:48] = struct.pack("<hhh", n, n, n)
    return patch


@pytest.mark.parametrize("n", [10000, 1000])
def test_header_claiming_more_voxels_than_the_file_holds(case, tmp_path, n, capsys):
    _patched(TISSUE / "t1.nii.gz", case / "t1.nii.gz", _dims(n))
    assert main(["run", str(case), "--out", str(tmp_path / "out")]) == 1
    line = _one_error_line(capsys)
    assert "t1.nii.gz" in line and f"{n}x{n}x{n}" in line


def test_rgb_image_is_refused(case, tmp_path, capsys):
    rgb = np.zeros((16, 16, 16), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(case / "t1.nii.gz"))
    assert main(["run", str(case), "--out", str(tmp_path / "out")]) == 1
    assert "RGB" in _one_error_line(capsys)


def test_bad_output_locations_fail_before_segmenting(case, tmp_path, monkeypatch, capsys):
    import segment.pipeline as pipeline

    def never(*a, **k):  # the check must come first
        raise AssertionError("segmented before checking --out")

    monkeypatch.setattr(pipeline, "run_pipeline", never)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for out in (a_file, a_file / "sub", Path("/proc/segment-test/out")):
        assert main(["run", str(case), "--out", str(out)]) == 2
        line = _one_error_line(capsys)
        assert str(out) in line
        assert main(["batch", "--input", str(case.parent), "--out", str(out), "--no-progress"]) == 2
        _one_error_line(capsys)
        assert main(["phantom", str(out)]) == 2
        _one_error_line(capsys)
    assert a_file.read_text() == "x"


def test_config_not_utf8_and_duplicate_keys_are_usage_errors(case, tmp_path, capsys):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("# r\xe9sum\xe9\nseed: 1\n".encode("latin-1"))
    assert main(["run", str(case), "--out", str(tmp_path / "o"), "-c", str(bad)]) == 2
    assert "UTF-8" in _one_error_line(capsys)
    dup = tmp_path / "dup.yaml"
    dup.write_text("mixture:\n  n_components: 3\nmixture:\n  covariance_type: diag\n")
    assert main(["run", str(case), "--out", str(tmp_path / "o"), "-c", str(dup)]) == 2
    assert "twice" in _one_error_line(capsys)


@pytest.mark.parametrize("args", [["--seed", "-1"], ["--shape", "3", "3", "3"], ["--n", "0"],
                                  ["--shape", "100000", "100000", "100000"]])
def test_phantom_bad_arguments_are_usage_errors(tmp_path, args, capsys):
    assert main(["phantom", str(tmp_path / "ph"), *args]) == 2
    _one_error_line(capsys)
    assert not (tmp_path / "ph").exists()


def test_disk_full_in_run_is_one_line(case, tmp_path, monkeypatch, capsys, fast):
    import segment.pipeline as pipeline

    def full(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "out" / "x.nii.gz"))

    monkeypatch.setattr(pipeline, "save_volume", full)
    assert main(["run", str(case), "--out", str(tmp_path / "out"), *fast]) == 1
    assert "No space left" in _one_error_line(capsys) or "disk full" in capsys.readouterr().err
    assert not (tmp_path / "out" / case.name).exists()


# --------------------------------------------------------------------------- 8. blame the right file


def test_header_without_orientation_or_voxel_size_is_named(case, tmp_path, capsys):
    import struct

    def patch(raw):
        for k in (1, 2, 3):
            raw[76 + 4 * k:80 + 4 * k] = struct.pack("<f", 0.0)
        raw[252:256] = struct.pack("<hh", 0, 0)

    _patched(TISSUE / "t1.nii.gz", case / "t1.nii.gz", patch)
    assert main(["run", str(case), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = [ln for ln in err.splitlines() if ln.startswith("segment: error:")][0]
    assert "t1.nii.gz" in line and "seg.nii.gz" not in line and "orientation" in line
    assert err.count("pixdim") <= 1  # nibabel's message at most once, never twice


# --------------------------------------------------------------------------- 9. smaller ones


def test_errors_name_the_file_for_tiny_and_negative_images(case, tmp_path, capsys):
    img = nib.load(str(case / "t1.nii.gz"))
    a = np.asarray(img.dataobj)
    # no positive voxel and no constant background: nothing says where the brain is
    noisy = -1.0 - a / max(float(a.max()), 1.0) - np.random.default_rng(1).random(a.shape)
    nib.save(nib.Nifti1Image(noisy.astype(np.float32), img.affine), str(case / "t1.nii.gz"))
    os.remove(case / "flair.nii.gz")
    os.remove(case / "seg.nii.gz")
    assert main(["run", str(case), "--out", str(tmp_path / "out")]) == 1
    assert "t1.nii.gz" in _one_error_line(capsys)
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((3, 3, 3)).astype(np.float32), np.eye(4)),
             str(tiny / "t1.nii.gz"))
    assert main(["run", str(tiny), "--out", str(tmp_path / "out")]) == 1
    assert "t1.nii.gz" in _one_error_line(capsys)


def test_shifted_brain_only_image_is_segmented_like_the_original(case, tmp_path, fast):
    """All intensities negative, the outside one constant value (a brain-only image shifted or
    z-scored by another tool): read as brain-only (it was refused: 'no positive voxel')."""
    img = nib.load(str(case / "t1.nii.gz"))
    a = np.asarray(img.dataobj)
    os.remove(case / "flair.nii.gz")
    shifted = tmp_path / "data2" / "phantom_tissue_0"
    shifted.mkdir(parents=True)
    nib.save(nib.Nifti1Image((a - a.max() - 1).astype(np.float32), img.affine), str(shifted / "t1.nii.gz"))
    assert main(["run", str(case), "--out", str(tmp_path / "a"), *fast]) == 0
    assert main(["run", str(shifted), "--out", str(tmp_path / "b"), *fast]) == 0
    la = np.asarray(nib.load(str(tmp_path / "a" / case.name / "tissue.nii.gz")).dataobj)
    lb = np.asarray(nib.load(str(tmp_path / "b" / case.name / "tissue.nii.gz")).dataobj)
    assert np.array_equal(la > 0, lb > 0)  # the same brain
    for c in (1, 2, 3):
        assert dice(la == c, lb == c) > 0.95


def test_absurd_voxel_size_is_refused(case, tmp_path, capsys):
    img = nib.load(str(case / "t1.nii.gz"))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), np.diag([1e9, 1e9, 1e9, 1.0])), str(case / "t1.nii.gz"))
    assert main(["run", str(case), "--out", str(tmp_path / "out")]) == 1
    assert "voxel size" in _one_error_line(capsys)


def test_verbose_logs_every_step_with_its_time(case, tmp_path, caplog, fast):
    import logging

    with caplog.at_level(logging.INFO, logger="segment"):
        assert main(["-v", "run", str(case), "--out", str(tmp_path / "out"), *fast]) == 0
    text = caplog.text
    for step in ("load", "brain_mask", "normalize", "mixture"):
        assert f"{case.name}: {step} done in" in text


def test_empty_and_nested_case_folders_get_a_row(case, tmp_path, fast):
    root = case.parent
    (root / "empty_case").mkdir()
    (root / "site_b" / "case_x").mkdir(parents=True)
    shutil.copy(TISSUE / "t1.nii.gz", root / "site_b" / "case_x" / "t1.nii.gz")
    out = tmp_path / "out"
    # one worker: the process pool's failed rows are tested in tests/test_batch.py
    assert main(["batch", "--input", str(root), "--out", str(out), "--no-progress", "--workers", "1", *fast]) == 1
    import csv

    rows = {r["case_id"]: r for r in csv.DictReader(open(out / "report.csv"))}
    assert rows["phantom_tissue_0"]["status"] == "ok"
    assert rows["empty_case"]["status"] == "failed" and "empty" in rows["empty_case"]["error"]
    assert rows["site_b"]["status"] == "failed" and "case_x" in rows["site_b"]["error"]


def test_all_zero_tumor_truth_is_flagged_not_a_silent_perfect_score(tmp_path, capsys, fast):
    src = SAMPLE / "phantom_tumor_2"
    d = tmp_path / "in" / "zero_truth"
    d.mkdir(parents=True)
    for f in src.glob("*.nii.gz"):
        shutil.copy(f, d / f.name)
    seg = nib.load(str(d / "seg.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros(seg.shape, np.uint8), seg.affine), str(d / "seg.nii.gz"))
    assert main(["run", str(d), "--out", str(tmp_path / "out"), *fast]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert any("holds no tumor label" in f for f in summary["flags"])
    # folder mode: the empty truth is a flag of the case's row
    preds, truths = tmp_path / "preds", tmp_path / "truths"
    (preds / "zero_truth").mkdir(parents=True)
    (truths / "zero_truth").mkdir(parents=True)
    shutil.copy(d / "seg.nii.gz", preds / "zero_truth" / "tumor.nii.gz")
    shutil.copy(d / "seg.nii.gz", truths / "zero_truth" / "seg.nii.gz")
    assert main(["evaluate", str(preds), str(truths), "--kind", "tumor", "--out", str(tmp_path / "ev")]) == 0
    report = (tmp_path / "ev" / "report.csv").read_text()
    assert "ground truth is empty" in report


def test_more_workers_than_cores_is_capped_with_a_warning(case, tmp_path, capsys, monkeypatch, fast):
    import segment.batch.run as run_mod

    monkeypatch.setattr(run_mod, "available_cores", lambda: 1)
    assert main(["batch", "--input", str(case.parent), "--out", str(tmp_path / "out"), "--workers", "64",
                 "--no-progress", *fast]) == 0
    err = capsys.readouterr().err
    assert "64 workers requested" in err and "using 1" in err
    assert "this process" in (tmp_path / "out" / "run.log").read_text()


# --------------------------------------------------------------------------- 7. orphans and SIGTERM


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _start_batch(case: Path, tmp_path: Path):
    import subprocess
    import sys
    import time

    root = tmp_path / "many"
    for i in range(4):
        shutil.copytree(case, root / f"case_{i}")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "segment.cli", "batch", "--input", str(root), "--out", str(out), "-j", "2",
         "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    deadline = time.time() + 120
    workers: set[int] = set()
    while time.time() < deadline and len(workers) < 2:
        time.sleep(0.2)
        workers = {c for c in _children(proc.pid)
                   if "spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")}
    assert len(workers) >= 2, "the pool did not start"
    time.sleep(1.0)
    return proc, workers, out


def _wait_gone(pids: set[int], seconds: float = 20.0) -> set[int]:
    import time

    deadline = time.time() + seconds
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    return {p for p in pids if _alive(p)}


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_workers_die_with_a_killed_parent(case, tmp_path):
    import signal

    proc, workers, _ = _start_batch(case, tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    left = _wait_gone(workers)
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, "workers outlived their killed parent"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_sigterm_stops_the_batch_like_ctrl_c(case, tmp_path):
    import signal

    proc, workers, out = _start_batch(case, tmp_path)
    os.kill(proc.pid, signal.SIGTERM)
    rc = proc.wait(60)
    assert rc == 130
    assert not _wait_gone(workers)
    assert (out / "report.csv").is_file()
    assert not (out / ".segment-batch.lock").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".staging-")]


@pytest.mark.parametrize("air", ["zero", "constant"])
def test_head_with_zeroed_or_constant_air_is_skull_stripped_not_taken_whole(tmp_path, air):
    """Bug: a head whose air is exactly 0, or one constant value (which load_case sets to 0), was
    taken for a skull-stripped brain: the whole head became the brain mask, with no flag but the
    implausible volume. A zero-surrounded region larger than a brain is now skull-stripped as a
    head, with the ``zero_background_head`` QC flag."""
    from segment.config import Config
    from segment.io.cases import find_case, load_case
    from segment.phantom import make_phantom, write_phantom_case
    from segment.pipeline import brain_mask_step
    from scipy import ndimage as ndi

    ph = make_phantom(1, skull=True, modalities=("t1", "flair"))
    head = ph.images["t1"] > 0.1 * np.percentile(ph.images["t1"], 99)
    head = ndi.binary_fill_holes(ndi.binary_closing(head, iterations=2))
    for m, v in ph.images.items():
        v[~head] = 0.0 if air == "zero" else 1234.5
    loaded = load_case(find_case(write_phantom_case(tmp_path, ph, f"head_{air}")))
    v_ml = float(np.prod(ph.spacing)) / 1000.0
    assert head.sum() * v_ml > Config().preprocess.skullstrip_options.max_volume_ml  # a head, not a brain
    mask, info = brain_mask_step(loaded, Config())
    assert "zero_background_head" in info["flags"]
    assert info["mask_method"] == "skullstrip"
    assert dice(mask, ph.brain_mask) > 0.9
    assert mask.sum() * v_ml < 1.2 * ph.brain_mask.sum() * v_ml

