"""Per-case tables and batch summaries: CSV and JSON, written atomically.

Every writer renders its whole output in memory, writes it to a temporary file in the destination
folder and moves it into place with :func:`os.replace`, so a reader (or a crashed run) never sees
a half-written file. (Files are not fsync-ed: atomic against readers and failed runs, not
against power loss, which keeps batches of many small files fast.)
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["atomic_write_text", "write_csv", "write_json", "to_jsonable", "summarize", "SUMMARY_COLUMNS"]

#: Columns of each row returned by :func:`summarize`, in order.
SUMMARY_COLUMNS: tuple[str, ...] = ("metric", "n", "mean", "std", "median", "q1", "q3", "iqr", "min", "max")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on success it is renamed to ``path``.

    The parent folder is created if needed. On any error the temporary file is removed and the
    destination is left as it was, so a crash never leaves a half-written output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
        # mkstemp creates the file private (0600); give it the mode a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (temporary file in the same folder, then rename).

    Returns
    -------
    Path
        ``path``.
    """
    with atomic_open(path, "w", encoding=encoding, newline="") as fh:
        fh.write(text)
    return Path(path)


def as_number(value: Any) -> float | None:
    """``value`` (a number or a numeric string, as read back from a CSV) as a finite float;
    None for booleans, empty cells, non-numbers, NaN and infinities."""
    if isinstance(value, bool) or value is None or value == "":
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# --------------------------------------------------------------------------- values


def _plain(value: Any) -> Any:
    """A numpy scalar as the matching Python scalar; other values unchanged."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def to_jsonable(obj: Any) -> Any:
    """``obj`` converted to types :mod:`json` accepts, with NaN and infinities as ``None``.

    Handles numpy scalars and arrays, mappings (keys become strings), sequences and sets,
    :class:`pathlib.Path` and dataclass instances.

    Examples
    --------
    >>> to_jsonable({"dice": np.float32(0.5), "hd95": float("nan"), "n": np.int64(3)})
    {'dice': 0.5, 'hd95': None, 'n': 3}
    """
    obj = _plain(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(_plain(k)): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [to_jsonable(v) for v in items]
    if isinstance(obj, complex):
        raise TypeError(f"cannot write complex value {obj!r} as JSON")
    return str(obj)


def _csv_cell(value: Any) -> Any:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


# --------------------------------------------------------------------------- writers


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike,
              leading: Sequence[str] = ("case_id", "status")) -> Path:
    """Write rows of dicts as CSV, one column per key found in any row.

    Parameters
    ----------
    rows : list of dict
        One dict per row; rows may have different keys (missing cells are left empty).
    path : str or Path
    leading : sequence of str
        Columns placed first, in this order, when present in any row (default ``case_id``,
        ``status``). The remaining columns follow in order of first appearance.

    Notes
    -----
    Floats are written with full precision (``repr``); NaN, infinities and ``None`` become empty
    cells, which pandas and spreadsheets read as missing. Numpy scalars are written as numbers.

    Returns
    -------
    Path
    """
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(str(key), None)
    columns = [c for c in leading if c in seen] + [c for c in seen if c not in leading]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        r = {str(k): v for k, v in row.items()}
        writer.writerow([_csv_cell(r.get(c)) for c in columns])
    return atomic_write_text(path, buf.getvalue())


def write_json(obj: Any, path: str | os.PathLike, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON atomically; numpy values become numbers, NaN and inf become ``null``.

    See :func:`to_jsonable` for the conversions. Returns ``path``.
    """
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


# --------------------------------------------------------------------------- summaries


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None for non-numbers, booleans, NaN and infinities."""
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def summarize(rows: Iterable[Mapping[str, Any]],
              metric_columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Summary statistics of metric columns over rows (cases).

    Parameters
    ----------
    rows : iterable of dict
        Per-case rows, e.g. ``{"case_id": "a", "dice_WT": 0.91, ...}``.
    metric_columns : sequence of str, optional
        Columns to summarize, in output order. By default every column holding at least one
        finite number (booleans excluded), in order of first appearance.

    Returns
    -------
    list of dict
        One dict per metric with keys :data:`SUMMARY_COLUMNS`: ``metric``, ``n`` (values used),
        ``mean``, ``std`` (sample standard deviation, ddof=1), ``median``, ``q1``, ``q3`` (25th and
        75th percentiles, linear interpolation), ``iqr`` (q3 - q1), ``min``, ``max``. Missing,
        non-numeric, NaN and infinite values are ignored. Statistics with too few values (none;
        ``std`` with one) are NaN, written as empty CSV cells or JSON null.

    Examples
    --------
    >>> s = summarize([{"d": 1.0}, {"d": 2.0}, {"d": 3.0}, {"d": float("nan")}, {"d": "n/a"}])
    >>> s[0]["n"], s[0]["mean"], s[0]["median"], s[0]["iqr"]
    (3, 2.0, 2.0, 1.0)
    """
    rows = list(rows)
    if metric_columns is None:
        order: dict[str, None] = {}
        for row in rows:
            for key, value in row.items():
                if _number(value) is not None:
                    order.setdefault(str(key), None)
        metric_columns = list(order)
    out: list[dict[str, Any]] = []
    nan = float("nan")
    for col in metric_columns:
        vals = [v for v in (_number(row.get(col)) for row in rows) if v is not None]
        n = len(vals)
        entry: dict[str, Any] = {"metric": col, "n": n}
        if n == 0:
            entry.update(mean=nan, std=nan, median=nan, q1=nan, q3=nan, iqr=nan, min=nan, max=nan)
        else:
            a = np.asarray(vals, dtype=np.float64)
            q1, med, q3 = (float(x) for x in np.percentile(a, [25, 50, 75]))
            entry.update(
                mean=float(a.mean()),
                std=float(a.std(ddof=1)) if n > 1 else nan,
                median=med,
                q1=q1,
                q3=q3,
                iqr=q3 - q1,
                min=float(a.min()),
                max=float(a.max()),
            )
        out.append(entry)
    return out
