"""The peers' environment: ANTs Atropos (``antspyx``) in its own virtual environment.

``antspyx`` pins its own numpy and ITK wheels, so it lives apart from the project's ``.venv``:
:func:`peers_python` creates ``.venv-peers/`` at the repository root on first use
(``python3 -m venv`` then ``pip install antspyx scikit-learn nibabel numpy``; pip needs the
package registry once) and returns its python. :func:`run_atropos` runs Atropos on a T1 NIfTI
inside a mask NIfTI through that python in a subprocess and returns the label array
(1..3 by increasing mean T1, 0 outside the mask).

    python scripts/_peers.py          # create .venv-peers/ (if missing) and print antspyx's version
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PEERS_VENV = ROOT / ".venv-peers"
PACKAGES = ["antspyx", "scikit-learn", "nibabel", "numpy"]

#: Atropos' settings used by every validation script: k-means init, 3 classes, MRF, convergence.
ATROPOS_INIT = "kmeans[3]"
ATROPOS_MRF = "[0.2,1x1x1]"
ATROPOS_CONV = "[5,0]"

ATROPOS_CODE = r"""
import json, sys, time
import ants
img = ants.image_read(sys.argv[1])
mask = ants.image_read(sys.argv[2])
t = time.perf_counter()
res = ants.atropos(a=img, x=mask, i=sys.argv[6], m=sys.argv[4], c=sys.argv[5])
secs = time.perf_counter() - t
ants.image_write(res["segmentation"], sys.argv[3])
print(json.dumps({"seconds": secs, "version": ants.__version__}))
"""


def _venv_python(root: Path) -> Path:
    return root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def peers_python(override: str | os.PathLike | None = None, create: bool = True) -> str:
    """Python of the peers' environment (``override`` if given, else ``.venv-peers/``, created if missing).

    Raises ``RuntimeError`` when the environment cannot be created or ``ants`` does not import.
    """
    if override:
        py = Path(override)
    else:
        py = _venv_python(PEERS_VENV)
        marker = PEERS_VENV / ".installed"
        if not marker.is_file():
            if not create:
                raise RuntimeError(f"{PEERS_VENV} is missing (run `python scripts/_peers.py`)")
            print(f"creating {PEERS_VENV.name}/ (pip install {' '.join(PACKAGES)}) ...", file=sys.stderr, flush=True)
            if not py.is_file():
                subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
            proc = subprocess.run([str(py), "-m", "pip", "install", "--quiet", *PACKAGES])
            if proc.returncode != 0:
                raise RuntimeError(f"pip install {' '.join(PACKAGES)} into {PEERS_VENV} failed")
            marker.write_text("\n".join(PACKAGES) + "\n")
    if not py.is_file():
        raise RuntimeError(f"no python at {py}")
    return str(py)


def ants_version(python: str) -> str:
    """``ants.__version__`` in ``python`` (raises ``RuntimeError`` when antspyx does not import)."""
    proc = subprocess.run([python, "-c", "import ants; print(ants.__version__)"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"antspyx does not import in {python}: {proc.stderr.strip()[-300:]}")
    return proc.stdout.strip()


def atropos_available(override: str | None = None) -> tuple[str | None, str]:
    """``(python, note)``: the peers' python and a note naming antspyx's version, or ``(None, why not)``."""
    try:
        py = peers_python(override)
        return py, f"antspyx {ants_version(py)}"
    except (OSError, RuntimeError) as exc:
        return None, f"antspyx not available ({exc}); Atropos not run"


def run_atropos(
    python: str | None,
    img: str | os.PathLike,
    mask: str | os.PathLike,
    out: str | os.PathLike,
    mrf: str = ATROPOS_MRF,
    conv: str = ATROPOS_CONV,
    init: str = ATROPOS_INIT,
) -> tuple[np.ndarray, float, str]:
    """Atropos on ``img`` inside ``mask`` (NIfTI paths); labels written to ``out``.

    Returns ``(labels, seconds, version)``: labels 1..3 by increasing mean intensity (uint8, the
    image's shape with any trailing singleton axes dropped), the seconds of the ``ants.atropos``
    call alone, and antspyx's version. ``python`` None = the peers' environment.
    """
    import nibabel as nib

    py = python or peers_python()
    env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(os.cpu_count() or 1))
    proc = subprocess.run(
        [py, "-c", ATROPOS_CODE, str(img), str(mask), str(out), mrf, conv, init],
        capture_output=True, text=True, env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"Atropos failed: {proc.stderr.strip()[-500:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    seg = np.asarray(nib.load(str(out)).dataobj).astype(np.uint8)
    while seg.ndim > 3 and seg.shape[-1] == 1:
        seg = seg[..., 0]
    return seg, float(info["seconds"]), str(info["version"])


if __name__ == "__main__":
    p = peers_python(sys.argv[1] if len(sys.argv) > 1 else None)
    print(p, ants_version(p))
