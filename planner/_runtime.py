"""Process-wide tweaks, in one place, that only the command line turns on.

Engines never change the process on their own: the CLI (:func:`planner.cli.main`) calls
:func:`configure` once, and library users may too.

* :func:`tune_allocator` -- glibc ``mallopt`` so the Monte Carlo engine's temporaries are
  reused instead of returned to the OS (the engine calls it only when passed
  ``tune_malloc=True``).
* :func:`solver_output_guard` -- the context manager the optimiser wraps every HiGHS call in.
  It silences file descriptor 1 while the solver runs (some HiGHS builds print MIP debug
  lines straight to stdout even with ``disp=False``, which would corrupt machine-readable
  output), but only after :func:`configure` turned it on; otherwise it does nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["configure", "solver_output_guard", "tune_allocator"]

_ALLOCATOR_TUNED: list[bool] = []
_SILENCE_SOLVER_STDOUT = [False]


def configure(*, tune_malloc: bool = False, silence_solver_stdout: bool = False) -> None:
    """Opt the process in to the tweaks (the CLI calls this once at start-up)."""
    if tune_malloc:
        tune_allocator()
    _SILENCE_SOLVER_STDOUT[0] = bool(silence_solver_stdout)


def tune_allocator() -> bool:
    """Keep freed array memory in the heap instead of returning it to the OS (glibc only).

    A run allocates and frees thousands of 256 KB temporaries; with glibc's defaults many are
    served by fresh ``mmap`` pages or re-grown heap, and the page faults cost ~40 % of the
    run. This sets ``M_MMAP_THRESHOLD`` to 32 MB and ``M_TRIM_THRESHOLD`` to 256 MB
    (``mallopt``, process-wide, once; the process keeps up to that much freed memory for
    reuse). Does nothing on other C libraries or when ``PLANNER_NO_MALLOPT`` is set.
    Returns True when the settings were applied.
    """
    if _ALLOCATOR_TUNED:
        return _ALLOCATOR_TUNED[0]
    ok = False
    if not os.environ.get("PLANNER_NO_MALLOPT"):
        try:
            import ctypes

            # the process's own symbols hold the C library's; ctypes.util.find_library would
            # run ``ldconfig -p`` in a subprocess (~30 ms of every command's start-up)
            libc = ctypes.CDLL(None)
            if not hasattr(libc, "mallopt"):
                import ctypes.util

                name = ctypes.util.find_library("c")
                libc = ctypes.CDLL(name) if name else None
            if libc is not None and hasattr(libc, "mallopt"):
                m_trim_threshold, m_mmap_threshold = -1, -3
                ok = bool(libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)) and bool(
                    libc.mallopt(m_trim_threshold, 256 * 1024 * 1024))
        except (OSError, AttributeError):  # pragma: no cover - platform dependent
            ok = False
    _ALLOCATOR_TUNED.append(ok)
    return ok


@contextmanager
def solver_output_guard() -> Iterator[None]:
    """Silence file descriptor 1 for the duration, if :func:`configure` asked for it."""
    if not _SILENCE_SOLVER_STDOUT[0]:
        yield
        return
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
