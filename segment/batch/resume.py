"""Resuming and locking: which cases of an output folder are complete, and one batch per folder."""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from ..publish import MANIFEST
from .discovery import BatchUsageError

__all__ = ["completed_row", "lock", "LOCK_FILE"]

LOCK_FILE = ".segment-batch.lock"


def completed_row(out_dir: Path, digest: str | None = None,
                  inputs: list[list[Any]] | None = None) -> dict[str, Any] | None:
    """The stored report row of a finished case, or None when the case must be (re)done.

    A case is complete when ``out_dir/result.json`` parses, says ``ok``, was made with the same
    configuration digest and input files (when given), and every output it lists exists with
    the size it had when written.
    """
    f = out_dir / MANIFEST
    try:
        rec = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("row"), dict):
        return None
    row = rec["row"]
    if row.get("status") != "ok":
        return None
    if digest is not None and rec.get("config_digest") != digest:
        return None
    if inputs is not None and rec.get("inputs") != inputs:
        return None
    outputs = rec.get("outputs")
    if not isinstance(outputs, dict) or not outputs:
        return None
    for name, size in outputs.items():
        p = out_dir / name
        try:
            if p.stat().st_size != size:
                return None
        except OSError:
            return None
    return row


def lock(out_root: Path) -> Path:
    """Claim ``out_root`` for this run: two batches writing one folder would remove each other's work.

    A lock left by a process that no longer runs (killed with SIGKILL, machine restarted) is taken over.
    """
    path = out_root / LOCK_FILE
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(path.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pid = -1
            if pid > 0 and pid != os.getpid() and _alive(pid):
                raise BatchUsageError(
                    f"{out_root}: another segment batch (pid {pid}) is writing here; wait for it or "
                    f"choose another --out (remove {path.name} if that process is gone)"
                ) from None
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        return path
    raise BatchUsageError(f"{out_root}: cannot create {path.name}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # pragma: no cover
        return False
    return True
