"""Writing a case's outputs: one writer for ``segment run`` and ``segment batch``.

A case is written into a hidden staging folder ``OUT/.staging-<case>-<id>/`` (marked by a file of
its own, so that only folders this module made are ever cleaned up); its last file is
``result.json``, the manifest: every file of the case with its size, the configuration digest,
the input files, the warnings. :func:`publish` then moves the staged files to ``OUT/<case>/``:

- a new case folder: the staging folder is renamed, so ``OUT/<case>`` appears complete or not at all;
- an earlier result of segment: the files listed in its manifest are replaced, files of that
  manifest that this run did not write (e.g. ``prob_*`` of a run with other outputs) are
  removed, and nothing else in the folder is touched (a user's own notes stay);
- a file of that name that segment did not write (no manifest lists it) is never overwritten:
  the run fails with a message naming it.

:func:`check_output_root` checks, before any computing, that an output root can be written and
is not inside an input case folder, so a run never destroys its own inputs.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import SegmentError

__all__ = [
    "MANIFEST",
    "OutputError",
    "Stage",
    "check_output_root",
    "clean_stale",
    "config_digest",
    "manifest_of",
    "publish",
]

#: The manifest written last into every case folder.
MANIFEST = "result.json"
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".old-"
#: File that marks a folder as a staging folder made by this module.
_MARKER = ".segment-staging"


class OutputError(SegmentError):
    """The output location cannot be used: unwritable, a file, inside an input folder, or would
    overwrite a file segment did not write."""


def config_digest(config: Any) -> str:
    """Hash of the settings that change a case's outputs (everything but the ``batch`` section)."""
    d = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    d.pop("batch", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def public_mode(path: Path) -> Path:
    """Give a file the permissions of a normally created file (temporary files start private)."""
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~_umask())
    return path


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def check_output_root(out_root: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = (),
                      create: bool = True) -> Path:
    """The absolute output root, made sure to be usable before any case is computed.

    Raises :class:`OutputError` when ``out_root`` is an existing file, lies under a regular
    file, cannot be created or written, or is (or is inside) one of the ``inputs`` case folders
    (writing there would mix outputs with, or replace, the input images). With ``create`` the
    folder is created (and left, empty, if nothing is written later).
    """
    out = Path(os.path.abspath(out_root))
    real = Path(os.path.realpath(out))
    for inp in inputs:
        ip = Path(os.path.realpath(inp))
        if ip.is_dir() and (real == ip or _inside(real, ip)):
            raise OutputError(
                f"{out_root}: output folder is inside the input case folder {inp}; "
                "choose an --out outside the input data (outputs would mix with, or replace, the inputs)"
            )
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out_root}: exists and is not a folder; --out takes a folder")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{out_root}: {parent} is a file, so the output folder cannot be created under it")
    if create:
        try:
            out.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=out, prefix=".segment-write-test.")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise OutputError(f"{out_root}: cannot write the output folder ({exc.strerror or exc})") from None
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{out_root}: cannot write the output folder ({parent} is not writable)")
    return out


class Stage:
    """A staging folder for one case under ``out_root``; ``path`` is where the case is written.

    Use as a context manager: the folder is removed on exit unless :meth:`publish` moved it.
    """

    def __init__(self, out_root: str | os.PathLike, name: str):
        self.out_root = Path(out_root)
        self.name = name
        self.out_root.mkdir(parents=True, exist_ok=True)
        self.path = self.out_root / f"{STAGING_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()
        (self.path / _MARKER).touch()
        self.published: Path | None = None

    def files(self) -> dict[str, int]:
        """Relative name -> size of every file written into the staging folder so far."""
        out = {}
        for p in sorted(self.path.rglob("*")):
            if p.is_file() and p.name != _MARKER and p.name != MANIFEST:
                out[str(p.relative_to(self.path))] = p.stat().st_size
        return out

    def write_manifest(self, record: Mapping[str, Any]) -> dict[str, int]:
        """Write ``result.json`` (``record`` plus ``outputs``: every staged file and its size)."""
        from .report.tables import write_json

        outputs = self.files()
        write_json({**record, "outputs": outputs}, self.path / MANIFEST)
        public_mode(self.path / MANIFEST)
        return outputs

    def publish(self) -> Path:
        """Move the staged case to ``out_root/<name>`` (see :func:`publish`)."""
        self.published = publish(self.path, self.out_root / self.name)
        return self.published

    def discard(self) -> None:
        if self.path.exists() and (self.path / _MARKER).exists():
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def manifest_of(folder: Path) -> dict[str, int] | None:
    """The files (relative name -> size) that segment wrote into a case folder, from its
    ``result.json``; None when the folder holds no readable manifest."""
    try:
        rec = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    outputs = rec.get("outputs") if isinstance(rec, dict) else None
    if not isinstance(outputs, dict):
        return None
    names = {}
    for k, v in outputs.items():
        k = str(k)
        if not k or os.path.isabs(k) or ".." in Path(k).parts:
            continue  # never follow a manifest outside its folder
        names[k] = v
    return names


def publish(staging: Path, final: Path) -> Path:
    """Move the files of ``staging`` into ``final`` and remove ``staging``.

    Only files segment wrote are replaced or removed (see the module docstring). Raises
    :class:`OutputError` (``staging`` left for the caller to discard) when a staged file would
    overwrite a file that no manifest of segment lists.
    """
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise OutputError(f"{final}: exists and is not a folder; remove it or choose another --out")
    with contextlib.suppress(OSError):
        (staging / _MARKER).unlink()
    if not final.exists():
        os.replace(staging, final)
        return final
    old = manifest_of(final) or {}
    ours = set(old) | ({MANIFEST} if old else set())
    new = [str(p.relative_to(staging)) for p in sorted(staging.rglob("*")) if p.is_file()]
    foreign = [n for n in new if (final / n).exists() and n not in ours]
    if foreign:
        (staging / _MARKER).touch()
        raise OutputError(
            f"{final / foreign[0]}: exists and was not written by segment; move it away or choose another --out"
        )
    present = [n for n in ours if (final / n).is_file() or (final / n).is_symlink()]
    if set(present) >= {p.name for p in final.iterdir()} and all("/" not in n for n in present):
        # the folder holds only our files: swap it whole, so readers never see a mix
        trash = final.with_name(f"{TRASH_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}")
        os.replace(final, trash)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
        return final
    # the folder also holds other files: replace ours one by one, the manifest last
    with contextlib.suppress(OSError):
        (final / MANIFEST).unlink()
    for n in new:
        if n == MANIFEST:
            continue
        (final / n).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / n, final / n)
    for n in ours - set(new):
        with contextlib.suppress(OSError):
            (final / n).unlink()
    if (staging / MANIFEST).exists():
        os.replace(staging / MANIFEST, final / MANIFEST)
    shutil.rmtree(staging, ignore_errors=True)
    return final


def clean_stale(out_root: Path) -> list[str]:
    """Remove staging and replaced folders that this module left behind (a run killed with
    SIGKILL); only folders carrying its marker or named as its replaced folders are touched."""
    gone = []
    if out_root.is_dir():
        for d in out_root.iterdir():
            if not d.is_dir() or d.is_symlink():
                continue
            if (d.name.startswith(STAGING_PREFIX) and (d / _MARKER).exists()) or (
                d.name.startswith(TRASH_PREFIX) and (manifest_of(d) is not None or not any(d.iterdir()))
            ):
                shutil.rmtree(d, ignore_errors=True)
                gone.append(d.name)
    return gone


def write_case(case: Any, config: Any, out_root: str | os.PathLike, *, name: str | None = None,
               inputs: list[list[Any]] | None = None) -> tuple[Any, dict[str, Any], list[str]]:
    """Segment one case and publish its outputs whole into ``out_root/<name>``.

    The writer of both ``segment run`` and ``segment batch``: the case is computed and written
    into a staging folder, measured (:func:`segment.qc.measure`), flagged
    (:func:`segment.qc.qc_flags`), its manifest written last, then published with
    :func:`publish`. On any error (bad input, disk full, Ctrl-C) the staging folder is removed
    and ``out_root/<name>`` is left as it was.

    Returns
    -------
    (CaseResult, row, warnings)
        ``result.outputs`` point at the published files; ``row`` is the report row (metrics,
        QC measurements, ``flags``); ``warnings`` the warnings raised while computing.
    """
    import time
    import warnings

    from . import __version__
    from .io.cases import find_case
    from .pipeline import segment_case
    from .qc import CASE_FLAGS_KEY, measure, qc_flags, step_flags
    from .types import Case

    t0 = time.perf_counter()
    if not isinstance(case, Case):
        case = find_case(case)
    name = name or case.case_id
    out_root = Path(out_root)
    with Stage(out_root, name) as stage:
        with warnings.catch_warnings(record=True) as wlist:
            warnings.simplefilter("always")
            result = segment_case(case, config, stage.path)
        caught = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in wlist))
        # the case's own record: its fallbacks (log warnings) and load notes besides Python warnings
        caught = list(dict.fromkeys([*result.info.get("warnings", []), *caught]))
        row: dict[str, Any] = {"case_id": name, "status": "ok", "error": ""}
        row.update(result.metrics)
        row.update(result.info.get("qc_measures") or measure(result.outputs, result.info))  # measured once
        mix = result.info.get("mixture")
        if isinstance(mix, dict) and "converged" in mix:
            row["converged"] = bool(mix["converged"])
        case_flags = step_flags(result.info)
        if case_flags:
            row[CASE_FLAGS_KEY] = case_flags
        row["flags"] = "; ".join(qc_flags(row, config.batch.qc))
        row["warnings"] = " | ".join(caught)  # shown on the review page beside the flags (a warning may hold "; ")
        row["seconds"] = round(time.perf_counter() - t0, 3)
        stage.write_manifest({
            "row": row, "config_digest": config_digest(config), "inputs": inputs,
            "warnings": caught, "flags": [f for f in row["flags"].split("; ") if f],
            "segment_version": __version__, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
        staged = {k: Path(p).relative_to(stage.path) for k, p in result.outputs.items()}
        final = stage.publish()
    result.outputs = {k: final / rel for k, rel in staged.items()}
    return result, row, caught
