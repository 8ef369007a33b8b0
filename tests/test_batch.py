"""segment batch / segment evaluate (folder mode): reports, faults, resume, Dask, review page.

One small batch (three 48x56x48 phantoms, a truncated NIfTI and a non-NIfTI case) is run once
with the process pool and shared by the tests; tests that change outputs work on a copy.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import nibabel as nib
import numpy as np
import pytest
import yaml

from segment import batch as batch_mod
from segment.batch import completed_row, find_case_dirs, qc_flags
from segment.cli import main
from segment.config import Config, QCConfig, load_config
from segment.phantom import write_phantom_cases

SHAPE = (48, 56, 48)
PHANTOMS = ["phantom_0", "phantom_1", "phantom_2"]
BROKEN = {"notnifti": "not a readable NIfTI", "trunc": "truncated"}
# keep the test quick: plain GMM labelling; the tiny phantoms' brains are ~180 mL and they are
# not human (no template registration, no atlas priors; their WM outweighs their GM)
FAST_CONFIG = {
    "mixture": {"partial_volume": False, "max_iter": 100, "prior_weight": 0.0},
    "preprocess": {"skullstrip_options": {"template": False, "min_volume_ml": 100}},
    "batch": {"qc": {"brain_volume_ml": [100, 2100], "gm_wm_ratio": [0.3, 3.0]}},
}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def metric_cols(rows: list[dict[str, str]]) -> list[str]:
    return [c for c in rows[0] if c.startswith(("dice_", "iou_", "sensitivity_", "specificity_", "hd95_", "voldiff_"))]


@pytest.fixture(scope="module")
def cases_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cases")
    write_phantom_cases(root, n=len(PHANTOMS), shape=SHAPE)
    trunc = root / "trunc"
    trunc.mkdir()
    raw = (root / "phantom_0" / "t1.nii.gz").read_bytes()
    (trunc / "t1.nii.gz").write_bytes(raw[: len(raw) // 3])  # killed mid-download
    shutil.copy(root / "phantom_0" / "t2.nii.gz", trunc / "t2.nii.gz")
    bad = root / "notnifti"
    bad.mkdir()
    (bad / "t1.nii.gz").write_text("this is a text file, not an image\n")
    (bad / "notes.txt").write_text("exported from PACS\n")
    return root


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "fast.yaml"
    p.write_text(yaml.safe_dump(FAST_CONFIG))
    return p


@pytest.fixture(scope="module")
def pool_run(cases_root, config_file, tmp_path_factory) -> tuple[int, Path]:
    out = tmp_path_factory.mktemp("pool") / "out"
    rc = main(["batch", "--input", str(cases_root), "--out", str(out), "--config", str(config_file),
               "--workers", "2", "--no-progress"])
    return rc, out


# --------------------------------------------------------------------------- one batch


def test_batch_rows_failures_and_exit_code(pool_run, config_file):
    rc, out = pool_run
    assert rc == 1  # two cases failed
    rows = read_csv(out / "report.csv")
    assert [r["case_id"] for r in rows] == sorted(PHANTOMS + list(BROKEN))
    assert list(rows[0])[:5] == ["case_id", "status", "error", "seconds", "flags"]
    by = {r["case_id"]: r for r in rows}
    for name, reason in BROKEN.items():
        assert by[name]["status"] == "failed"
        assert reason in by[name]["error"] and name in by[name]["error"]
        assert "\n" not in by[name]["error"]
        assert not (out / name).exists()  # no partial output for a failed case
    for name in PHANTOMS:
        r = by[name]
        assert r["status"] == "ok" and r["error"] == ""
        assert float(r["dice_WM"]) > 0.8 and float(r["seconds"]) > 0
        assert 100 < float(r["brain_volume_ml"]) < 400
        assert r["flags"] == ""
        for f in ("tissue.nii.gz", "brain_mask.nii.gz", "overlay.png", "metrics.json", "result.json"):
            assert (out / name / f).is_file(), f
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folders left

    summary = {r["metric"]: r for r in read_csv(out / "summary.csv")}
    dice = [float(by[n]["dice_GM"]) for n in PHANTOMS]
    s = summary["dice_GM"]
    assert int(s["n"]) == 3
    assert math.isclose(float(s["mean"]), np.mean(dice))
    assert math.isclose(float(s["median"]), np.median(dice))
    assert math.isclose(float(s["std"]), np.std(dice, ddof=1))
    q1, q3 = np.percentile(dice, [25, 75])
    assert math.isclose(float(s["iqr"]), q3 - q1)

    saved = load_config(out / "config.yaml")  # the resolved config reproduces the run
    assert saved == load_config(config_file, {"batch": {"workers": 2}})
    assert saved.mixture.partial_volume is False and saved.batch.workers == 2
    log = (out / "run.log").read_text()
    for name in PHANTOMS + list(BROKEN):
        assert f"{name}: " in log
    assert "2 worker processes" in log


def test_index_html_self_contained_and_every_linked_image_exists(pool_run):
    _, out = pool_run
    page = (out / "index.html").read_text()

    class Links(HTMLParser):
        def __init__(self):
            super().__init__()
            self.imgs, self.hrefs, self.external = [], [], []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            for key in ("src", "href"):
                v = a.get(key)
                if v is None:
                    continue
                if urlparse(v).scheme or v.startswith("//"):
                    self.external.append(v)
                elif tag == "img":
                    self.imgs.append(v)
                else:
                    self.hrefs.append(v)
            if tag in ("link", "script") and (a.get("src") or a.get("href")):
                self.external.append(a.get("src") or a.get("href"))

    p = Links()
    p.feed(page)
    assert p.external == []  # inline CSS/JS, no network
    assert "<script>" in page and "<style>" in page
    assert len(p.imgs) == len(PHANTOMS)
    for src in p.imgs + [h for h in p.hrefs if h]:
        assert (out / unquote(src)).is_file(), src
    for name in PHANTOMS:
        assert f"{name}/overlay.png" in p.imgs
    for name in BROKEN:  # failed cases are listed with their reason
        assert f'data-case="{name}"' in page
    assert "truncated" in page


def test_rerun_skips_finished_and_redoes_interrupted(pool_run, cases_root, config_file, tmp_path):
    _, first = pool_run
    out = tmp_path / "out"
    shutil.copytree(first, out)
    before = {n: (out / n / "result.json").stat().st_mtime_ns for n in PHANTOMS}
    # phantom_1 was made with another configuration and its tissue map was damaged afterwards
    rec = json.loads((out / "phantom_1" / "result.json").read_text())
    rec["config_digest"] = "another-config"
    (out / "phantom_1" / "result.json").write_text(json.dumps(rec))
    (out / "phantom_1" / "tissue.nii.gz").write_bytes(b"\x1f\x8b partial")
    # phantom_2's overlay was damaged after the run: result.json no longer matches its outputs
    (out / "phantom_2" / "overlay.png").write_bytes(b"\x89PNG")
    # a staging folder left by a killed worker
    (out / ".staging-phantom_0-deadbeef").mkdir()
    (out / ".staging-phantom_0-deadbeef" / ".segment-staging").touch()
    (out / ".staging-phantom_0-deadbeef" / "tissue.nii.gz").write_bytes(b"partial")
    # a user's folder that merely looks like one (no marker): never removed
    (out / ".staging-notes").mkdir()
    (out / ".staging-notes" / "mine.txt").write_text("keep")

    rc = main(["batch", "--input", str(cases_root), "--out", str(out), "-c", str(config_file),
               "--workers", "1", "--no-progress"])
    assert rc == 1
    assert (out / "phantom_0" / "result.json").stat().st_mtime_ns == before["phantom_0"]  # skipped
    for n in ("phantom_1", "phantom_2"):
        assert (out / n / "result.json").stat().st_mtime_ns != before[n]  # redone
        assert completed_row(out / n) is not None
    nib.load(str(out / "phantom_1" / "tissue.nii.gz")).get_fdata()  # a complete file again
    assert not (out / ".staging-phantom_0-deadbeef").exists()
    assert (out / ".staging-notes" / "mine.txt").read_text() == "keep"
    log = (out / "run.log").read_text()
    assert "skipped 1 complete case(s): phantom_0" in log
    rows = read_csv(out / "report.csv")
    old = read_csv(first / "report.csv")
    assert [r["case_id"] for r in rows] == [r["case_id"] for r in old]
    for a, b in zip(rows, old):  # the same result whether skipped or redone
        assert a["status"] == b["status"]
        for c in metric_cols(old):
            assert a[c] == b[c] or math.isclose(float(a[c]), float(b[c]), rel_tol=1e-6), (a["case_id"], c)

    # a changed configuration makes finished cases stale; --force redoes them regardless
    digest = batch_mod.config_digest(load_config(config_file))
    assert completed_row(out / "phantom_0", digest) is not None
    assert completed_row(out / "phantom_0", batch_mod.config_digest(Config())) is None


def test_ctrl_c_writes_report_of_what_finished(pool_run, cases_root, config_file, tmp_path, monkeypatch):
    _, first = pool_run
    out = tmp_path / "out"
    calls = []
    real = batch_mod.run_case

    def fake_run_case(case_dir, out_root, cfg, threads=None):
        calls.append(Path(case_dir).name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(case_dir, out_root, cfg, threads)

    monkeypatch.setattr(batch_mod.running, "run_case", fake_run_case)
    rc = main(["batch", "--input", str(cases_root), "--out", str(out), "-c", str(config_file), "--workers", "1",
               "--no-progress"])
    assert rc == 130
    rows = {r["case_id"]: r for r in read_csv(out / "report.csv")}
    assert len(rows) == 5
    assert rows["notnifti"]["status"] == "failed" and "NIfTI" in rows["notnifti"]["error"]
    for n in PHANTOMS + ["trunc"]:
        assert rows[n]["status"] == "failed" and "interrupted" in rows[n]["error"]
    assert (out / "index.html").is_file() and "interrupted" in (out / "run.log").read_text()


def test_dask_cluster_gives_the_same_report(pool_run, cases_root, config_file, tmp_path):
    distributed = pytest.importorskip("distributed")
    _, first = pool_run
    out = tmp_path / "dask"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        rc = main(["batch", "--input", str(cases_root), "--out", str(out), "-c", str(config_file),
                   "--scheduler", cluster.scheduler_address, "--no-progress"])
    assert rc == 1
    rows, ref = read_csv(out / "report.csv"), read_csv(first / "report.csv")
    assert [(r["case_id"], r["status"], r["error"]) for r in rows] == [(r["case_id"], r["status"], r["error"]) for r in ref]
    cols = metric_cols(ref)
    assert "dice_GM" in cols and "hd95_WM" in cols
    for a, b in zip(rows, ref):
        for c in cols:
            assert a[c] == b[c] or math.isclose(float(a[c]), float(b[c]), rel_tol=1e-6), (a["case_id"], c)
    assert "dask tcp://127.0.0.1" in (out / "run.log").read_text()


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    "extra, config_text, expect",
    [
        ([], "mixture:\n  n_componets: 3\n", "unknown key 'mixture.n_componets'"),
        ([], "batch:\n  workers: many\n", "'batch.workers' = 'many'"),
        ([], "batch:\n  scheduler: localhost\n", "'batch.scheduler'"),
        ([], "preprocess:\n  skullstrip: sometimes\n", "allowed values are 'auto', 'always' or 'never'"),
        (["--workers", "0"], "", "'batch.workers' = 0"),
    ],
)
def test_config_errors_are_one_line_and_exit_2(tmp_path, capsys, cases_root, extra, config_text, expect):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config_text)
    rc = main(["batch", "--input", str(cases_root), "--out", str(tmp_path / "o"), "-c", str(cfg), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and expect in err, err
    assert not (tmp_path / "o").exists()


def test_input_errors_exit_2(tmp_path, capsys):
    assert main(["batch", "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "input folder not found" in capsys.readouterr().err
    single = tmp_path / "single"
    single.mkdir()
    (single / "t1.nii.gz").write_bytes(b"")
    assert main(["batch", "--input", str(single), "--out", str(tmp_path / "o")]) == 2
    assert "segment run" in capsys.readouterr().err


def test_find_case_dirs_skips_hidden_and_output_folder(tmp_path):
    for d in ("b", "a", ".hidden", "out", "empty"):
        (tmp_path / d).mkdir()
    for d in ("a", "b", ".hidden", "out"):
        (tmp_path / d / "t1.nii.gz").write_bytes(b"x")
    # an empty folder is a case too: it gets a failed row with the reason, it does not vanish
    assert [d.name for d in find_case_dirs(tmp_path, exclude=[tmp_path / "out"])] == ["a", "b", "empty"]


def test_qc_flags():
    qc = QCConfig()
    ok = {"status": "ok", "brain_volume_ml": 1200, "fraction_CSF": 0.2, "fraction_GM": 0.4, "fraction_WM": 0.4}
    assert qc_flags(ok, qc) == []
    assert qc_flags({"status": "failed"}, qc) == ["failed"]
    flags = qc_flags({**ok, "brain_volume_ml": 300, "fraction_GM": 0.0, "tumor_volume_ml": 12.0,
                      "tumor_edge_fraction": 0.2, "converged": False}, qc)
    assert any(f.startswith("brain volume 300 mL") for f in flags)
    assert any(f.startswith("empty class GM") for f in flags)
    assert any(f.startswith("tumor touches the brain mask edge") for f in flags)
    assert "mixture did not converge" in flags
    assert qc_flags({**ok, "tumor_volume_ml": 0.0}, qc) == []  # no tumor is not a problem
    assert qc_flags({**ok, "dice_CSF": 0.1, "dice_GM": 0.9, "dice_WM": ""}, qc) == ["Dice below 0.5: CSF"]


# --------------------------------------------------------------------------- evaluate folder mode


def test_evaluate_folders_scores_batch_outputs_like_the_batch(pool_run, cases_root, tmp_path):
    _, out = pool_run
    ev = tmp_path / "ev"
    rc = main(["evaluate", str(out), str(cases_root), "--out", str(ev), "--kind", "tissue"])
    assert rc == 0
    rows = {r["case_id"]: r for r in read_csv(ev / "report.csv")}
    ref = {r["case_id"]: r for r in read_csv(out / "report.csv")}
    assert sorted(rows) == PHANTOMS  # broken cases have neither prediction nor truth
    for n in PHANTOMS:
        assert rows[n]["status"] == "ok" and rows[n]["kind"] == "tissue"
        for c in ("dice_CSF", "dice_GM", "dice_WM", "hd95_GM", "sensitivity_WM"):
            assert math.isclose(float(rows[n][c]), float(ref[n][c]), rel_tol=1e-9), c
    summary = {r["metric"]: r for r in read_csv(ev / "summary.csv")}
    assert int(summary["dice_GM"]["n"]) == 3
    assert (ev / "index.html").is_file()


def _save(path: Path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data, np.uint8), np.eye(4) if affine is None else affine), str(path))


def test_evaluate_folders_matches_file_names_and_reports_unmatched(tmp_path, capsys):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    t = np.zeros((40, 40, 40), np.uint8)  # a tumor is a few percent of the volume
    t[10:22, 10:22, 10:22] = 2  # edema
    t[13:19, 13:19, 13:19] = 3  # enhancing
    t[15:17, 15:17, 15:17] = 1  # necrosis
    p = t.copy()
    p[10:12] = 0
    _save(gt / "BraTS-GLI-00001-000-seg.nii.gz", t)
    _save(pred / "BraTS-GLI-00001-000.nii.gz", p)
    _save(gt / "BraTS-GLI-00002-000-seg.nii.gz", t)
    _save(pred / "brats-gli-00002-000_pred.nii.gz", t)
    _save(pred / "BraTS-GLI-00003-000.nii.gz", t)  # no truth
    _save(gt / "BraTS-GLI-00004-000-seg.nii.gz", t)  # no prediction
    _save(pred / "BraTS-GLI-00005-000.nii.gz", t[:30])  # another grid
    _save(gt / "BraTS-GLI-00005-000-seg.nii.gz", t)
    out = tmp_path / "ev"
    rc = main(["evaluate", str(pred), str(gt), "--out", str(out)])  # --kind auto: tumor by content
    assert rc == 1
    rows = {r["case_id"]: r for r in read_csv(out / "report.csv")}
    assert len(rows) == 5
    r1 = next(r for k, r in rows.items() if "00001" in k)
    r2 = next(r for k, r in rows.items() if "00002" in k)
    assert r1["status"] == "ok" and r1["kind"] == "tumor"
    assert 0.5 < float(r1["dice_WT"]) < 1.0 and float(r1["dice_ET"]) == 1.0
    assert float(r2["dice_WT"]) == 1.0 and float(r2["hd95_TC"]) == 0.0
    fails = {k: r["error"] for k, r in rows.items() if r["status"] == "failed"}
    assert any("no ground truth" in e for k, e in fails.items() if "00003" in k)
    assert any("no prediction" in e for k, e in fails.items() if "00004" in k)
    assert any("grid" in e for k, e in fails.items() if "00005" in k)
    # without --out: a JSON summary on stdout
    capsys.readouterr()
    assert main(["evaluate", str(pred), str(gt), "--kind", "tumor"]) == 1
    assert '"dice_WT"' in capsys.readouterr().out


def test_evaluate_single_file_mode_unchanged(tmp_path, capsys):
    t = np.zeros((12, 12, 12), np.uint8)
    t[2:10, 2:10, 2:6], t[2:10, 2:10, 6:8], t[2:10, 2:10, 8:10] = 1, 2, 3
    _save(tmp_path / "p.nii.gz", t)
    _save(tmp_path / "g.nii.gz", t)
    assert main(["evaluate", str(tmp_path / "p.nii.gz"), str(tmp_path / "g.nii.gz")]) == 0
    assert '"dice_GM": 1.0' in capsys.readouterr().out


# --------------------------------------------------------------------------- example configs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _keys(model, prefix=""):
    from pydantic import BaseModel

    for name, f in type(model).model_fields.items():
        v = getattr(model, name)
        if isinstance(v, BaseModel):
            yield from _keys(v, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


@pytest.mark.parametrize("name", ["tissue.yaml", "tumor.yaml", "demo.yaml"])
def test_example_configs_validate(name):
    config = load_config(CONFIGS / name)
    assert isinstance(config, Config)


def test_example_configs_document_every_key():
    """Every config key appears (set or commented out) in configs/tissue.yaml or configs/tumor.yaml."""
    import re

    text = (CONFIGS / "tissue.yaml").read_text() + (CONFIGS / "tumor.yaml").read_text()
    named = set(re.findall(r"^[ #]*(\w+):", text, re.M))
    missing = [k for k in _keys(Config()) if k.rsplit(".", 1)[-1] not in named]
    assert not missing, f"document these keys in configs/tissue.yaml or configs/tumor.yaml: {missing}"


def test_progress_plain_lines_off_a_terminal():
    import io

    stream = io.StringIO()
    bar = batch_mod.reports._Progress(2, None, stream)
    assert bar.bar is None  # no tqdm bar when the stream is not a terminal
    bar.step({"case_id": "a", "status": "ok"})
    bar.step({"case_id": "b", "status": "failed", "error": "t1.nii.gz: truncated"})
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[1/2] a: ok") and "eta" in lines[0]
    assert lines[1].startswith("[2/2] b: failed (t1.nii.gz: truncated)")
    quiet = io.StringIO()
    batch_mod.reports._Progress(1, False, quiet).step({"case_id": "a", "status": "ok"})
    assert quiet.getvalue() == ""


def test_a_second_batch_on_the_same_output_folder_is_refused(cases_root, tmp_path, capsys):
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (out / ".segment-batch.lock").write_text(f"{sleeper.pid} now\n")
        assert main(["batch", "--input", str(cases_root), "--out", str(out), "--no-progress"]) == 2
        assert f"another segment batch (pid {sleeper.pid})" in capsys.readouterr().err
    finally:
        sleeper.kill()
        sleeper.wait()
    # a stale lock (its process is gone) is taken over; the lock is removed at the end
    (out / ".segment-batch.lock").write_text(f"{sleeper.pid} earlier\n")
    lone = tmp_path / "in"
    (lone / "x").mkdir(parents=True)
    (lone / "x" / "notes.txt").write_text("no image\n")
    assert main(["batch", "--input", str(lone), "--out", str(out), "--no-progress"]) == 1
    assert not (out / ".segment-batch.lock").exists()
    assert os.path.isfile(out / "report.csv")
