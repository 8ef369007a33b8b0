"""Calling Numba parallel kernels with no more threads than they have work items.

A parallel region costs a wake-up of every worker thread; when the machine is busy (another
process, a second batch worker) OpenMP workers that must be rescheduled make a region of
trivial work take milliseconds (5 ms instead of 0.1 ms measured for a 512-row partial-volume
E-step on 2 busy cores). The mixtures run such regions hundreds of times on histograms of a few
thousand bins, so a kernel whose ``prange`` has fewer items than threads runs on that many
threads (one for a single item). Results do not depend on the thread count (fixed chunks).
"""
from __future__ import annotations

import numba


def run_parallel(kernel, n_items: int, *args):
    """``kernel(*args)`` with at most ``n_items`` Numba threads (at least one)."""
    current = numba.get_num_threads()
    want = max(1, min(current, int(n_items)))
    if want == current:
        return kernel(*args)
    numba.set_num_threads(want)
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(current)
