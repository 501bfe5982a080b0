"""Simulate a request table on a plan: the simulator's entry point (re-exported as
:func:`planner.sim.simulate`).

Builds an :class:`~planner.sim.engine.Engine` (event loop; routing and the spillover
decision in :mod:`planner.sim.routing`, replicas in :mod:`planner.sim.replica`), runs it and
turns its records into a :class:`~planner.sim.results.SimResult`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from planner.errors import PlannerError
from planner.requests import RequestTable
from planner.sim.engine import Engine
from planner.sim.plan import SimPlan
from planner.sim.results import RECORDS, SimResult, build_result

__all__ = ["simulate"]


def simulate(
    plan: SimPlan,
    requests: RequestTable,
    *,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
    until_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    records: str = "full",
) -> SimResult:
    """Simulate ``requests`` on ``plan``.

    Parameters
    ----------
    plan : SimPlan
        Pools, API spillover target, SLOs, mode.
    requests : RequestTable
        Requests sorted by arrival.
    seed, rng : optional
        Randomness for ``random`` routing and API latency jitter (give one; the engine is
        otherwise deterministic). Default seed 0.
    until_s : float, optional
        Stop the clock here; requests still queued or running are ``in_flight``, later
        arrivals ``pending``. Default: run until every request has finished.
    progress : callable, optional
        Called as ``progress(routed, total)`` as requests are routed (the simulator prints
        nothing; the CLI draws a bar).
    records : {"full", "aggregate"}
        ``full`` keeps one row per request (:attr:`SimResult.requests`); ``aggregate`` keeps
        only the summaries (latency percentiles per class and hour, counts, SLO attainment,
        utilisation, cost), identical to those of ``full``, for very long runs
        (:mod:`planner.sim.results`).

    Returns
    -------
    SimResult
    """
    if not isinstance(plan, SimPlan):
        raise PlannerError(f"simulate: plan must be a SimPlan, got {type(plan).__name__}")
    if not isinstance(requests, RequestTable):
        raise PlannerError(
            f"simulate: requests must be a RequestTable, got {type(requests).__name__}"
        )
    if seed is not None and rng is not None:
        raise PlannerError("simulate: give seed or rng, not both")
    if rng is None:
        rng = np.random.default_rng(np.random.SeedSequence(0 if seed is None else seed))
    if records not in RECORDS:
        raise PlannerError(f"simulate: records must be 'full' or 'aggregate', got {records!r}")
    if until_s is not None and not until_s > 0:
        raise PlannerError(f"simulate: until_s must be > 0, got {until_s}")
    eng = Engine(plan, requests, rng, until_s=until_s, progress=progress or None)
    eng.run()
    eng.release_columns()  # the event loop's lists go before the frames are built
    return build_result(eng, records=records)
