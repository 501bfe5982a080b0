"""Request-level discrete-event simulation of LLM serving (SimPy).

Replays a day or a week of requests against a deployment plan -- pools of replicas running
continuous batching, an optional API to spill to -- and reports latency percentiles, SLO
attainment, utilisation, spillover and cost.

Modules (one job each):

* :mod:`~planner.sim.plan` -- what is simulated (:class:`SimPlan`: pools, API, SLOs);
* :mod:`~planner.sim.routing` -- pools, per-class routers and **the spillover decision**,
  :func:`planner.sim.routing.spill_decision`: the one function that decides whether a pool
  takes a request or refuses it (it then goes to the next pool, the API, or is dropped);
* :mod:`~planner.sim.replica` -- replicas and their iteration model (continuous batching;
  closed-form and per-iteration reference implementations);
* :mod:`~planner.sim.engine` -- the event loop (SimPy), the order of events, autoscaling;
* :mod:`~planner.sim.stepmodel` -- step-time models and closed-form decode spans;
* :mod:`~planner.sim.run` (:func:`simulate`), :mod:`~planner.sim.results` (DataFrames,
  summaries), :mod:`~planner.sim.output` (files);
* :mod:`~planner.sim.scenario` and :mod:`~planner.sim.requests_from_scenario` -- plans and
  requests from a scenario file, sized and priced by the one model (:mod:`planner.model`).

>>> from planner.sim import LinearStepModel, PoolSpec, RequestTable, SimPlan, simulate
>>> m = LinearStepModel(0.02, 1e-4, 0.01, 1e-4, 1e-7, kv_capacity_tokens=200_000, max_batch=64)
>>> reqs = RequestTable.from_arrays([0.0, 0.5, 1.0], [100, 200, 300], [10, 20, 30])
>>> res = simulate(SimPlan(pools=(PoolSpec("gpu", m, replicas=1, usd_per_replica_hour=2.0),)), reqs)
>>> res.requests["status"].tolist()
['completed', 'completed', 'completed']
"""

from __future__ import annotations

from planner.requests import RequestTable
from planner.sim.output import requests_from_traces, write_result
from planner.sim.plan import ROUTING_POLICIES, SLO, ApiTarget, Autoscale, PoolSpec, SimPlan
from planner.sim.results import REASONS, STATUSES, SimResult
from planner.sim.run import simulate
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
