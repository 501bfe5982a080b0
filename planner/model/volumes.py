"""Volumes: profile length, hourly load, the one flatness rule and the peak.

Every engine (and the simulator's request generator) takes hourly volumes from here or from
the functions it re-exports: :func:`planner.workload.hourly_rates` (requests per hour,
batch-eligible ones spread evenly) and :func:`planner.workload.busiest_hour`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from planner.workload import (
    FLAT_ATOL,
    FLAT_RTOL,
    busiest_hour,
    hourly_load_extremes,
    hourly_rates,
    hourly_rates_rows,
    is_flat,
)

__all__ = ["busiest_hour", "hourly_rates", "hourly_rates_rows", "is_flat", "peak_load", "profile_periods",
           "tile_profile"]

def profile_periods(sc: Any) -> int:
    """Hours in the planning profile: 168 when any class has a weekly profile, else 24."""
    return 168 if any(
        not isinstance(w.diurnal, str) and len(w.diurnal) == 168 for w in sc.workload.values()
    ) else 24


def tile_profile(weights: np.ndarray, periods: int) -> np.ndarray:
    """A 24-hour profile repeated to ``periods`` hours (a weekly one unchanged)."""
    w = np.asarray(weights, dtype=float)
    return np.tile(w, periods // w.size) if w.size != periods else w


def peak_load(coefs, const, weights, mean_load, peak_to_average: float | None) -> Any:
    """Peak-hour load (replica-equivalents) of a pool: the one rule every engine uses.

    The hourly load is ``L_h = const + sum_c coefs[c] x weights[c, h]``; the peak is its
    maximum over the hours, except when the profile is flat and the scenario states a
    ``peak_to_average``: then ``mean_load x peak_to_average``.
    """
    if not len(coefs):
        return 0.0
    if peak_to_average is None:
        return hourly_load_extremes(coefs, const, weights)
    peak, low, first = hourly_load_extremes(coefs, const, weights, need_min=True)
    tol = FLAT_ATOL + FLAT_RTOL * np.abs(first)
    flat = (peak - first <= tol) & (first - low <= tol)
    return np.where(flat, mean_load * peak_to_average, peak)
