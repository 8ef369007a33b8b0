"""What the validation scripts share when they write a doc: the command line without this
machine's paths, the machine line, the hand-written notes kept across re-runs, a YAML config."""
from __future__ import annotations

import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Hand-written findings after this marker in --out survive a re-run.
NOTES = "<!-- notes: kept when the script rewrites this file -->"


def doc_command(script: str, argv: list[str]) -> str:
    """The command line for a doc, without this machine's paths (absolute paths become relative
    to the repository root; a data folder outside it becomes ``../shared/data``)."""
    out = []
    for a in argv:
        key, eq, val = a.partition("=") if a.startswith("--") and "=" in a else ("", "", a)
        p = Path(val)
        if p.is_absolute():
            try:
                val = p.resolve().relative_to(ROOT).as_posix()
            except ValueError:
                val = "../shared/data" if p.parts[-2:] == ("shared", "data") else f"<{p.name}>"
        out.append(f"{key}{eq}{val}" if eq else val)
    return " ".join(["python", script, *out])


def machine_line() -> str:
    return (f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"load average at the end {os.getloadavg()[1]:.1f} (5 min; other jobs share the machine)")


def kept_notes(path: Path) -> str:
    """What follows :data:`NOTES` in ``path`` (empty when the file or the marker is absent)."""
    if path.is_file():
        text = path.read_text()
        if NOTES in text:
            return text.split(NOTES, 1)[1]
    return ""


def load_config_file(path: Path | None):
    from segment.config import Config, config_from_dict

    if path is None:
        return Config()
    import yaml

    return config_from_dict(yaml.safe_load(path.read_text()) or {}, source=str(path))
