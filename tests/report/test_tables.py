"""Tests of segment.report.tables: CSV/JSON writers and summaries."""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from segment.report.tables import atomic_write_text, summarize, to_jsonable, write_csv, write_json


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_write_csv_union_of_keys_and_leading_columns(tmp_path):
    rows = [
        {"dice_GM": 0.9, "case_id": "a", "seconds": 1.5},
        {"case_id": "b", "status": "failed", "error": "bad file"},
        {"dice_WM": np.float32(0.25), "dice_GM": np.float64(0.8), "case_id": "c", "n": np.int64(7)},
    ]
    out = write_csv(rows, tmp_path / "m.csv")
    table = _read_csv(out)
    # leading columns first (those present), then order of first appearance
    assert table[0] == ["case_id", "status", "dice_GM", "seconds", "error", "dice_WM", "n"]
    assert table[1] == ["a", "", "0.9", "1.5", "", "", ""]
    assert table[2] == ["b", "failed", "", "", "bad file", "", ""]
    assert table[3] == ["c", "", "0.8", "", "", "0.25", "7"]
    table = _read_csv(write_csv(rows, tmp_path / "m2.csv", leading=["n", "case_id"]))
    assert table[0][:2] == ["n", "case_id"]


def test_write_csv_nan_and_precision(tmp_path):
    rows = [{"x": float("nan"), "y": 1 / 3, "z": None, "w": float("inf")}]
    table = _read_csv(write_csv(rows, tmp_path / "t.csv"))
    assert table[1][0] == "" and table[1][2] == "" and table[1][3] == ""
    assert float(table[1][1]) == 1 / 3  # full precision round trip


def test_write_csv_quotes_commas_and_empty(tmp_path):
    rows = [{"case_id": "a,b", "error": 'say "hi"\nthen'}]
    table = _read_csv(write_csv(rows, tmp_path / "q.csv"))
    assert table[1] == ["a,b", 'say "hi"\nthen']
    assert _read_csv(write_csv([], tmp_path / "e.csv")) == [[]]


def test_write_json_numpy_and_nan(tmp_path):
    obj = {
        "dice": np.float32(0.5),
        "n": np.int64(3),
        "ok": np.bool_(True),
        "hd95": float("nan"),
        "inf": np.float64(np.inf),
        "arr": np.array([1.0, np.nan]),
        "path": tmp_path / "x.nii.gz",
        "nested": [{"a": (1, 2)}],
        3: "int key",
    }
    out = write_json(obj, tmp_path / "sub" / "m.json")
    text = Path(out).read_text()
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text)
    assert back == {
        "dice": 0.5,
        "n": 3,
        "ok": True,
        "hd95": None,
        "inf": None,
        "arr": [1.0, None],
        "path": str(tmp_path / "x.nii.gz"),
        "nested": [{"a": [1, 2]}],
        "3": "int key",
    }


def test_to_jsonable_dataclass():
    from dataclasses import dataclass

    @dataclass
    class R:
        a: float
        b: list

    assert to_jsonable(R(np.float64(1.5), [np.nan])) == {"a": 1.5, "b": [None]}


def test_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.json"
    write_json({"v": 1}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temp file left

    # a failure while replacing leaves the old file intact and no temporary file behind
    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_json({"v": 2}, path)
    with pytest.raises(OSError):
        write_csv([{"v": 2}], tmp_path / "m.csv")
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_unserializable_value_fails_before_writing(tmp_path):
    path = tmp_path / "bad.json"
    with pytest.raises(TypeError):
        write_json({"z": 1j}, path)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_atomic_write_text_overwrites(tmp_path):
    p = atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"


def test_summarize_hand_computed():
    rows = [
        {"case_id": "a", "dice": 0.5, "hd95": 2.0, "status": "ok"},
        {"case_id": "b", "dice": 0.7, "hd95": float("nan")},
        {"case_id": "c", "dice": np.float32(0.9), "hd95": None},
        {"case_id": "d", "dice": 1.0, "hd95": "n/a", "flag": True},
        {"case_id": "e", "status": "failed"},
    ]
    s = {e["metric"]: e for e in summarize(rows)}
    assert list(s) == ["dice", "hd95"]  # numeric columns only; booleans and strings skipped
    d = s["dice"]
    # values 0.5, 0.7, 0.9, 1.0: mean 3.1/4 = 0.775; median (0.7 + 0.9) / 2 = 0.8
    # q1 at index 0.75: 0.5 + 0.75 * 0.2 = 0.65; q3 at index 2.25: 0.9 + 0.25 * 0.1 = 0.925
    assert d["n"] == 4
    assert d["mean"] == pytest.approx(0.775)
    assert d["median"] == pytest.approx(0.8)
    assert d["q1"] == pytest.approx(0.65) and d["q3"] == pytest.approx(0.925)
    assert d["iqr"] == pytest.approx(0.275)
    assert d["std"] == pytest.approx(np.std([0.5, 0.7, 0.9, 1.0], ddof=1), rel=1e-6)
    assert (d["min"], d["max"]) == (0.5, 1.0)
    h = s["hd95"]
    assert h["n"] == 1 and h["mean"] == 2.0 and math.isnan(h["std"])


def test_summarize_explicit_columns_and_empty():
    s = summarize([{"a": 1}, {"a": 3}], ["a", "missing"])
    assert [e["metric"] for e in s] == ["a", "missing"]
    assert s[0]["mean"] == 2.0 and s[0]["std"] == pytest.approx(math.sqrt(2))
    assert s[1]["n"] == 0 and math.isnan(s[1]["mean"])
    assert summarize([]) == []


def test_summary_round_trips_through_writers(tmp_path):
    s = summarize([{"a": 1.0}])
    table = _read_csv(write_csv(s, tmp_path / "s.csv", leading=["metric", "n"]))
    assert table[0][:3] == ["metric", "n", "mean"]
    assert table[1][:3] == ["a", "1", "1.0"]
    assert json.loads(write_json(s, tmp_path / "s.json").read_text())[0]["std"] is None
