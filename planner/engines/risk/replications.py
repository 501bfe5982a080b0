"""Simulation-backed risk: SimPy replications over a subset of the Monte Carlo samples.

:func:`simulation_replications` picks samples spread over the cost distribution of one option
(from a :class:`planner.engines.risk.run.RiskResults` that kept its samples and inputs),
materialises each as a fixed scenario (:func:`planner.uncertain.scenario_at`) and calls a
``simulate_fn`` for it: by default :func:`busiest_hour_metrics`, the busiest hour simulated
with :mod:`planner.sim`. The replications are independent tasks of
:func:`planner.parallel.map_tasks` (serial, local processes or Dask), bit-identical whatever
the runner.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from planner.catalog import Catalog
from planner.config import Scenario
from planner.engines.risk.run import RiskResults
from planner.errors import PlannerError
from planner.parallel import map_tasks
from planner.uncertain import scenario_at

__all__ = ["MAX_REQUESTS", "busiest_hour_metrics", "simulation_replications"]

#: Default cut of a replication's busiest hour, requests.
MAX_REQUESTS = 20_000


def busiest_hour_metrics(scenario: Scenario, rng: np.random.Generator, *,
                         deployment: str | None, catalog: Catalog | None = None,
                         max_requests: int = MAX_REQUESTS) -> dict[str, float]:
    """Latency and spillover of one fixed scenario: its busiest hour simulated with SimPy.

    Returns ``replicas``, ``requests``, ``slo_attainment`` (share of requests meeting every
    SLO bound of their class), ``spillover_share``, ``dropped_share`` and ``ttft_p99_s``.
    The arrivals' seed is drawn from ``rng``.
    """
    from planner.sim.scenario import simulate_busiest_hour

    if deployment is None or deployment not in {**scenario.cloud, **scenario.onprem}:
        raise PlannerError(
            f"simulation replications need a cloud or on-prem deployment, got {deployment!r}; "
            f"choose one of {', '.join([*scenario.cloud, *scenario.onprem]) or '(none)'}"
        )
    b = simulate_busiest_hour(scenario, catalog, deployments=[deployment],
                              seed=int(rng.integers(2**32)), max_requests=max_requests)
    t = b.run.result.totals()
    ttft = b.run.result.requests["ttft_s"].to_numpy(dtype=float)
    ttft = ttft[np.isfinite(ttft)]
    pools = b.run.pools
    return {
        "hour": float(b.hour),
        "replicas": float(pools.loc[pools["kind"] != "api", "replicas"].sum()),
        "requests": t["requests"],
        "slo_attainment": t["slo_attainment"],
        "spillover_share": t["spillover_share"],
        "dropped_share": t["dropped"] / t["requests"] if t["requests"] else math.nan,
        "ttft_p99_s": float(np.quantile(ttft, 0.99)) if ttft.size else math.nan,
    }


def simulation_replications(
    results: RiskResults,
    scenario: Scenario,
    *,
    simulate_fn: Callable[[Scenario, np.random.Generator], Mapping[str, float]] | None = None,
    deployment: str | None = None,
    replications: int = 8,
    seed: int | None = 0,
    catalog: Catalog | None = None,
    max_requests: int = MAX_REQUESTS,
    scheduler: str | None = None,
    n_workers: int | None = 1,
    client: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """SimPy replications over a subset of the sampled scenarios (latency / spillover risk).

    Picks ``replications`` samples spread evenly over the quantiles of ``deployment``'s monthly
    cost (the sample nearest each of the (i + 0.5) / replications quantiles, among the samples
    whose inputs were kept), fixes the scenario at each
    (:func:`planner.uncertain.scenario_at`) and calls ``simulate_fn(fixed_scenario, rng)``
    with an independent generator per replication. Returns one row per replication: the
    sample index, its monthly cost, and the metrics ``simulate_fn`` returned.

    The default ``simulate_fn`` (:func:`busiest_hour_metrics`) simulates ``deployment`` (a
    cloud or on-prem option, default the first one; sized by the cost engine at that sample) during the busiest hour
    of the sample's traffic, cut to ``max_requests`` arrivals.

    Replication ``i`` draws from child ``i`` of ``SeedSequence(seed)`` and gets only its
    sample's input values, the scenario and ``simulate_fn`` (sent once per worker), so the
    table is the same run one after another (default, ``n_workers=1``), on ``n_workers``
    local processes (``None``: one per core) or on a Dask ``scheduler``/``client``
    (:func:`planner.parallel.map_tasks`; ``simulate_fn`` must then be picklable).
    ``progress(done, total)`` is called as replications finish.
    """
    if simulate_fn is None:
        hosted = [d for d in results.samples.columns if d in {**scenario.cloud, **scenario.onprem}]
        deployment = deployment or (hosted[0] if hosted else None)
        simulate_fn = functools.partial(busiest_hour_metrics, deployment=deployment,
                                        catalog=catalog, max_requests=max_requests)
    if results.inputs is None or results.samples is None:
        raise PlannerError(
            "simulation_replications: the run kept no inputs/samples; run with keep_samples=True"
        )
    dep = deployment or results.samples.columns[0]
    if dep not in results.samples.columns:
        raise PlannerError(
            f"deployment: unknown option {dep!r}; options: {', '.join(results.samples.columns)}"
        )
    m = len(results.inputs)
    cost = results.samples[dep].to_numpy()[:m]
    order = np.argsort(cost, kind="stable")
    picks = [int(order[min(int((i + 0.5) / replications * m), m - 1)])
             for i in range(replications)]
    gens = np.random.SeedSequence(seed).spawn(replications)
    tasks = [({k: float(results.inputs[k].iloc[idx]) for k in results.inputs.columns}, gens[i])
             for i, idx in enumerate(picks)]
    out = map_tasks(_replication, tasks, shared=(scenario, simulate_fn, catalog),
                    scheduler=scheduler, n_workers=n_workers, client=client, progress=progress,
                    name="planner-risk-replication")
    rows = [{"replication": i, "sample": idx, "deployment": dep,
             "usd_per_month": float(cost[idx]), **metrics}
            for i, (idx, metrics) in enumerate(zip(picks, out, strict=True))]
    return pd.DataFrame(rows)


def _replication(shared: tuple, values: Mapping[str, float],
                 seed: np.random.SeedSequence) -> dict[str, float]:
    """One task: the scenario fixed at one sample's input values, simulated with its own
    generator (module level: pickled to worker processes)."""
    scenario, simulate_fn, catalog = shared
    fixed = scenario_at(scenario, dict(values), catalog=catalog)
    return dict(simulate_fn(fixed, np.random.default_rng(seed)))
