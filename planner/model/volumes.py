"""Volumes: profile length, hourly load, the one flatness rule and the peak.

Every engine (and the simulator's request generator) takes hourly volumes from here or from
the functions it re-exports: :func:`planner.workload.hourly_rates` (requests per hour,
batch-eligible ones spread evenly) and :func:`planner.workload.busiest_hour`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from planner.workload import busiest_hour, hourly_load_extremes, hourly_rates

__all__ = ["busiest_hour", "hourly_rates", "hourly_rates_rows", "is_flat", "peak_load", "profile_periods",
           "tile_profile"]

#: Tolerances of the one flatness test (as :func:`numpy.allclose`).
FLAT_RTOL, FLAT_ATOL = 1e-5, 1e-8


def profile_periods(sc: Any) -> int:
    """Hours in the planning profile: 168 when any class has a weekly profile, else 24."""
    return 168 if any(
        not isinstance(w.diurnal, str) and len(w.diurnal) == 168 for w in sc.workload.values()
    ) else 24


def tile_profile(weights: np.ndarray, periods: int) -> np.ndarray:
    """A 24-hour profile repeated to ``periods`` hours (a weekly one unchanged)."""
    w = np.asarray(weights, dtype=float)
    return np.tile(w, periods // w.size) if w.size != periods else w


def hourly_rates_rows(requests_per_day: Any, weights: Any, batch_share: Any,
                      periods: int) -> np.ndarray:
    """:func:`planner.workload.hourly_rates` for ``n`` values at once: ``(n, periods)``
    requests per hour from ``requests_per_day`` and ``batch_share`` (scalars or ``(n,)``),
    the same arithmetic in the same order (row ``i`` equals ``hourly_rates(req[i], weights,
    batch[i], periods)``)."""
    req = np.atleast_1d(np.asarray(requests_per_day, dtype=float))[:, None]
    b = np.atleast_1d(np.asarray(batch_share, dtype=float))[:, None]
    w = np.asarray(weights, dtype=float)
    w = w / w.sum()
    d = req * (w.size / 24.0) * w
    if periods != w.size:
        if periods % w.size:
            raise ValueError(f"a {w.size}-hour profile does not tile {periods} hours")
        d = np.tile(d, (1, periods // w.size))
    return (1.0 - b) * d + b * d.mean(axis=-1, keepdims=True)


def is_flat(hourly: Any) -> Any:
    """True where a load profile is the same in every hour (last axis), to the tolerances."""
    h = np.asarray(hourly, dtype=float)
    first = h[..., :1]
    return (np.abs(h - first) <= FLAT_ATOL + FLAT_RTOL * np.abs(first)).all(axis=-1)


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
