"""The public API: every advertised name resolves; import stays light."""
from __future__ import annotations

import subprocess
import sys

import segment


def test_every_public_name_resolves():
    for name in segment.__all__:
        assert getattr(segment, name) is not None, name
    from segment import GaussianMixture, dice, load_case, segment_case  # noqa: F401


def test_import_does_not_load_numba():
    code = "import sys, segment; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
