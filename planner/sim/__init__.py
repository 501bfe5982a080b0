"""Request-level discrete-event simulation of LLM serving (SimPy).

Replays a day or a week of requests against a deployment plan -- pools of replicas running
continuous batching, an optional API to spill to -- and reports latency percentiles, SLO
attainment, utilisation, spillover and cost. See :mod:`planner.sim.engine` for the event
structure and the iteration model.

>>> from planner.sim import LinearStepModel, PoolSpec, RequestTable, SimPlan, simulate
>>> m = LinearStepModel(0.02, 1e-4, 0.01, 1e-4, 1e-7, kv_capacity_tokens=200_000, max_batch=64)
>>> reqs = RequestTable.from_arrays([0.0, 0.5, 1.0], [100, 200, 300], [10, 20, 30])
>>> res = simulate(SimPlan(pools=(PoolSpec("gpu", m, replicas=1, usd_per_replica_hour=2.0),)), reqs)
>>> res.requests["status"].tolist()
['completed', 'completed', 'completed']
"""

from __future__ import annotations

import numpy as np

from planner.errors import PlannerError
from planner.requests import RequestTable
from planner.sim.engine import _Engine
from planner.sim.output import requests_from_traces, write_result
from planner.sim.plan import ROUTING_POLICIES, SLO, ApiTarget, Autoscale, PoolSpec, SimPlan
from planner.sim.results import REASONS, STATUSES, SimResult, build_result
from planner.sim.scenario import ScenarioRun, report_tables, simulate_scenario
from planner.sim.stepmodel import (
    DecodeKernel,
    LinearDecodeStepModel,
    LinearStepModel,
    StepModel,
    TabulatedStepModel,
)

__all__ = [
    "REASONS",
    "ROUTING_POLICIES",
    "SLO",
    "STATUSES",
    "ApiTarget",
    "Autoscale",
    "DecodeKernel",
    "LinearDecodeStepModel",
    "LinearStepModel",
    "PoolSpec",
    "RequestTable",
    "SimPlan",
    "ScenarioRun",
    "SimResult",
    "StepModel",
    "TabulatedStepModel",
    "report_tables",
    "requests_from_traces",
    "simulate",
    "simulate_scenario",
    "write_result",
]


def simulate(
    plan: SimPlan,
    requests: RequestTable,
    *,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
    until_s: float | None = None,
    progress: bool = False,
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
    progress : bool
        Show a tqdm progress bar over routed requests.

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
    if until_s is not None and not until_s > 0:
        raise PlannerError(f"simulate: until_s must be > 0, got {until_s}")
    eng = _Engine(plan, requests, rng, until_s=until_s, progress=progress)
    eng.run()
    return build_result(eng)
