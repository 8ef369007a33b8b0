"""BIDS datasets as input: entity parser, subject/session discovery, modality rules.

A BIDS raw dataset holds ``sub-<label>/[ses-<label>/]anat/`` folders of files named
``sub-01[_ses-1][_acq-x][_ce-gd][_rec-y][_run-2]_<suffix>.nii.gz``. Each ``anat`` folder is one
case, named ``sub-01`` or ``sub-01_ses-1``. Modalities come from the suffix and the ``ce``
entity, never from other tokens of the name:

==========================  ========
file                        modality
==========================  ========
``*_T1w``                   ``t1``
``*_ce-<agent>_*_T1w``      ``t1c``
``*_T2w``                   ``t2``
``*_FLAIR``                 ``flair``
==========================  ========

When several files give one modality (repeated runs, other acquisitions or reconstructions)
one is chosen by this rule, in order, and the others are reported in :attr:`BidsSession.ignored`:

1. no ``acq-`` entity before any ``acq-`` (the protocol's default acquisition), then
   ``acq-`` labels in alphabetical order;
2. no ``rec-`` entity before any ``rec-`` (the scanner's default reconstruction), then ``rec-``
   labels in alphabetical order;
3. the highest ``run-`` index (the last repeat: a series is usually repeated because the earlier
   one was spoiled by motion); no ``run-`` counts as run 0.

Ground truth, only when asked (``truth_from``): ``<root>/derivatives/**/sub-01[/ses-1]/anat/
sub-01[_ses-1]_*dseg.nii.gz`` (a ``desc-`` containing ``tumor`` gives the tumor truth, other
``dseg`` files the tissue / task-dependent truth).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..types import Case
from .formats import image_suffix

__all__ = [
    "ENTITY_ORDER",
    "BidsName",
    "BidsSession",
    "bids_case",
    "build_name",
    "case_id_of",
    "choose_images",
    "find_sessions",
    "find_truth",
    "is_bids_root",
    "modality_of",
    "parse_name",
    "session_of_anat",
]

#: Entities in the order BIDS writes them (the subset of the specification that anatomical
#: raw data and segmentation derivatives use).
ENTITY_ORDER = ("sub", "ses", "task", "acq", "ce", "trc", "rec", "dir", "run", "mod", "echo",
                "flip", "inv", "mt", "part", "space", "res", "den", "label", "desc")
#: Anatomical suffixes read as each modality (``ce-`` turns T1w into t1c).
SUFFIX_MODALITY = {"T1w": "t1", "T2w": "t2", "FLAIR": "flair"}

_LABEL = r"[a-zA-Z0-9]+"
_NAME = re.compile(
    rf"^(?P<entities>sub-{_LABEL}(?:_[a-z]+-{_LABEL})*)_(?P<suffix>[a-zA-Z0-9]+)(?P<ext>\.[a-zA-Z0-9.]+)?$"
)


@dataclass(frozen=True)
class BidsName:
    """A parsed BIDS file name: entities in file order, the suffix and the extension."""

    entities: dict[str, str]
    suffix: str
    extension: str = ""

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.entities.get(key, default)


def parse_name(name: str) -> BidsName | None:
    """Parse ``sub-01_ses-1_ce-gd_T1w.nii.gz``; None when the name is not BIDS-shaped.

    Each entity is ``key-label`` with an alphanumeric label, the first one is ``sub``, keys are
    not repeated, and the suffix follows the last ``_``.

    Examples
    --------
    >>> n = parse_name("sub-01_ses-1_ce-gd_T1w.nii.gz")
    >>> n.entities, n.suffix, n.extension
    ({'sub': '01', 'ses': '1', 'ce': 'gd'}, 'T1w', '.nii.gz')
    >>> parse_name("t1.nii.gz") is None
    True
    """
    m = _NAME.match(Path(name).name)
    if m is None:
        return None
    ents: dict[str, str] = {}
    for part in m.group("entities").split("_"):
        key, _, label = part.partition("-")
        if key in ents:
            return None
        ents[key] = label
    return BidsName(ents, m.group("suffix"), m.group("ext") or "")


def build_name(entities: dict[str, str | None], suffix: str, extension: str = "") -> str:
    """A BIDS name with the entities in :data:`ENTITY_ORDER` (``None`` values left out).

    >>> build_name({"desc": "brain", "sub": "01"}, "mask", ".nii.gz")
    'sub-01_desc-brain_mask.nii.gz'
    """
    unknown = [k for k in entities if k not in ENTITY_ORDER]
    if unknown:
        raise ValueError(f"unknown BIDS entities {unknown}; known: {', '.join(ENTITY_ORDER)}")
    parts = [f"{k}-{entities[k]}" for k in ENTITY_ORDER if entities.get(k) is not None]
    for k in ENTITY_ORDER:
        v = entities.get(k)
        if v is not None and not re.fullmatch(_LABEL, str(v)):
            raise ValueError(f"BIDS label {k}-{v!r} must be alphanumeric")
    return "_".join(parts + [suffix]) + extension


def modality_of(name: BidsName | str) -> str | None:
    """``t1``, ``t1c``, ``t2``, ``flair`` or None for a BIDS image name (see the module table)."""
    b = parse_name(name) if isinstance(name, str) else name
    if b is None or image_suffix("x" + b.extension) is None:
        return None
    mod = SUFFIX_MODALITY.get(b.suffix)
    if mod == "t1" and b.get("ce"):
        return "t1c"
    return mod


def _rank(b: BidsName) -> tuple:
    acq, rec = b.get("acq"), b.get("rec")
    try:
        run = int(b.get("run") or 0)
    except ValueError:
        run = 0
    return (acq is not None, acq or "", rec is not None, rec or "", -run)


def choose_images(files: Iterable[Path]) -> tuple[dict[str, Path], list[tuple[Path, str]]]:
    """The image of each modality among BIDS files, by the rule of the module docstring.

    Returns
    -------
    images : dict modality -> Path
    ignored : list of (Path, reason)
        Other candidates of a chosen modality, with the file chosen instead.
    """
    cands: dict[str, list[tuple[BidsName, Path]]] = {}
    for f in files:
        b = parse_name(f.name)
        if b is None:
            continue
        mod = modality_of(b)
        if mod is not None:
            cands.setdefault(mod, []).append((b, f))
    images: dict[str, Path] = {}
    ignored: list[tuple[Path, str]] = []
    for mod, lst in cands.items():
        lst.sort(key=lambda bf: (_rank(bf[0]), bf[1].name))
        images[mod] = lst[0][1]
        for _, f in lst[1:]:
            ignored.append((f, f"{mod}: {lst[0][1].name} chosen instead (acq-/rec-/run- rule)"))
    return images, ignored


def is_bids_root(path: str | os.PathLike) -> bool:
    """True for a folder with ``dataset_description.json`` or any ``sub-*`` folder."""
    p = Path(path)
    if not p.is_dir():
        return False
    if (p / "dataset_description.json").is_file():
        return True
    return any(d.is_dir() and re.fullmatch(rf"sub-{_LABEL}", d.name) for d in p.iterdir())


@dataclass(frozen=True)
class BidsSession:
    """One ``anat`` folder of a BIDS dataset: a case."""

    root: Path
    subject: str
    session: str | None
    anat: Path
    images: dict[str, Path] = field(default_factory=dict)
    ignored: tuple[tuple[Path, str], ...] = ()

    @property
    def case_id(self) -> str:
        return case_id_of(self.subject, self.session)


def case_id_of(subject: str, session: str | None = None) -> str:
    """``sub-01`` or ``sub-01_ses-1``."""
    return f"sub-{subject}" + (f"_ses-{session}" if session else "")


def _labels(values: Sequence[str] | None, key: str) -> list[str] | None:
    if not values:
        return None
    out = []
    for v in values:
        v = str(v)
        v = v[len(key) + 1:] if v.startswith(f"{key}-") else v
        if not re.fullmatch(_LABEL, v):
            raise InputError(f"--{'participant' if key == 'sub' else 'session'}-label {v!r}: a label is alphanumeric (e.g. 01)")
        out.append(v)
    return out


def session_of_anat(anat: Path) -> tuple[Path, str, str | None] | None:
    """``(root, subject, session)`` of a ``.../sub-X/[ses-Y/]anat`` folder, else None."""
    anat = Path(anat)
    if anat.name != "anat":
        return None
    up = anat.parent
    m = re.fullmatch(rf"ses-({_LABEL})", up.name)
    if m:
        s = re.fullmatch(rf"sub-({_LABEL})", up.parent.name)
        return (up.parent.parent, s.group(1), m.group(1)) if s else None
    s = re.fullmatch(rf"sub-({_LABEL})", up.name)
    return (up.parent, s.group(1), None) if s else None


def find_sessions(
    root: str | os.PathLike,
    *,
    participant_labels: Sequence[str] | None = None,
    session_labels: Sequence[str] | None = None,
) -> list[BidsSession]:
    """Every ``sub-*/[ses-*/]anat`` folder of a BIDS dataset, sorted, optionally filtered.

    Labels are given with or without their prefix (``01`` or ``sub-01``). A requested label
    that matches nothing is an error listing those present.

    Raises
    ------
    InputError
        No subject folder, unknown labels, or no ``anat`` folder after filtering.
    """
    root = Path(root)
    subs = sorted(d for d in root.iterdir() if d.is_dir() and re.fullmatch(rf"sub-{_LABEL}", d.name))
    if not subs:
        raise InputError(f"{root}: no sub-* folder; a BIDS dataset holds sub-<label>/[ses-<label>/]anat/")
    want_sub = _labels(participant_labels, "sub")
    want_ses = _labels(session_labels, "ses")
    present = [d.name[4:] for d in subs]
    if want_sub:
        missing = [s for s in want_sub if s not in present]
        if missing:
            raise InputError(
                f"{root}: no subject {', '.join('sub-' + s for s in missing)}; "
                f"present: {', '.join('sub-' + s for s in present[:12])}{', ...' if len(present) > 12 else ''}"
            )
    out: list[BidsSession] = []
    seen_ses: set[str] = set()
    for sd in subs:
        sub = sd.name[4:]
        if want_sub and sub not in want_sub:
            continue
        sess = sorted(d for d in sd.iterdir() if d.is_dir() and re.fullmatch(rf"ses-{_LABEL}", d.name))
        anats: list[tuple[str | None, Path]] = []
        if (sd / "anat").is_dir():
            anats.append((None, sd / "anat"))
        for d in sess:
            seen_ses.add(d.name[4:])
            if (d / "anat").is_dir():
                anats.append((d.name[4:], d / "anat"))
        for ses, anat in anats:
            if want_ses and ses not in want_ses:
                continue
            files = [f for f in sorted(anat.iterdir()) if f.is_file() and not f.name.startswith(".")]
            images, ignored = choose_images(files)
            out.append(BidsSession(root, sub, ses, anat, images, tuple(ignored)))
    if want_ses:
        missing = [s for s in want_ses if s not in seen_ses]
        if missing:
            raise InputError(
                f"{root}: no session {', '.join('ses-' + s for s in missing)} in the selected subjects; "
                f"present: {', '.join('ses-' + s for s in sorted(seen_ses)) or 'none'}"
            )
    if not out:
        raise InputError(f"{root}: no sub-*/[ses-*/]anat folder{' matches the filters' if want_sub or want_ses else ''}")
    return out


def find_truth(root: str | os.PathLike, subject: str, session: str | None = None,
               *, truth_from: str = "derivatives", exclude: Sequence[str | os.PathLike] = ()) -> dict[str, Path]:
    """Ground-truth ``dseg`` files of one subject/session under ``root/truth_from``.

    ``truth_from`` is a folder relative to ``root`` (``derivatives`` searches every pipeline,
    ``derivatives/manual`` one). Files: ``sub-X[_ses-Y]_*dseg.nii[.gz]`` inside an ``anat``
    folder of that subject (and session). A ``desc-`` label containing ``tumor`` gives kind
    ``tumor``, ``desc-tissue`` kind ``tissue``, anything else ``seg``.

    Raises
    ------
    InputError
        The folder is missing, or two files claim one kind.
    """
    base = Path(root) / truth_from
    if not base.is_dir():
        raise InputError(f"{base}: ground-truth folder not found (--bids-truth {truth_from})")
    skip = [Path(p).resolve() for p in exclude]
    found: dict[str, Path] = {}
    for f in sorted(base.rglob(f"sub-{subject}_*dseg.nii*")):
        if any(f.resolve().is_relative_to(s) for s in skip) or f.parent.name != "anat":
            continue
        b = parse_name(f.name)
        if b is None or b.suffix != "dseg" or b.get("sub") != subject or b.get("ses") != session:
            continue
        desc = (b.get("desc") or "").lower()
        kind = "tumor" if ("tumor" in desc or "tumour" in desc) else ("tissue" if desc == "tissue" else "seg")
        if kind in found:
            raise InputError(
                f"{case_id_of(subject, session)}: both {found[kind]} and {f} look like the {kind} ground "
                f"truth; narrow --bids-truth to one derivatives folder"
            )
        found[kind] = f
    return found


def bids_case(session: BidsSession, *, truth_from: str | None = None,
              exclude: Sequence[str | os.PathLike] = ()) -> Case:
    """The :class:`~segment.types.Case` of one BIDS session (truth only with ``truth_from``)."""
    if not session.images:
        names = ", ".join(sorted(f.name for f in session.anat.iterdir() if not f.name.startswith(".")))[:200]
        raise InputError(
            f"{session.anat}: no T1w, T2w or FLAIR image (found: {names or 'nothing'}); "
            "BIDS anatomical images end in _T1w, _T2w or _FLAIR"
        )
    truth = {}
    if truth_from:
        truth = find_truth(session.root, session.subject, session.session, truth_from=truth_from, exclude=exclude)
    return Case(case_id=session.case_id, images=dict(session.images), truth=truth, root=session.anat)


def anat_case(folder: Path) -> Case | None:
    """A case folder holding BIDS-named images (``sub-01_T1w.nii.gz``...): the case by the BIDS
    rule, named ``sub-01[_ses-1]`` when the folder is a BIDS ``anat`` folder, else by the folder.
    None when no file of the folder has a BIDS anatomical name."""
    files = [f for f in sorted(folder.iterdir()) if f.is_file() and not f.name.startswith(".")]
    images, _ = choose_images(files)
    if not images:
        return None
    where = session_of_anat(folder)
    case_id = case_id_of(where[1], where[2]) if where else folder.name
    return Case(case_id=case_id, images=images, truth={}, root=folder)
