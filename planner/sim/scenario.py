"""From a scenario file to a simulation: requests per workload class and a plan of GPU pools.

What is simulated (``[simulation]`` in the scenario, ``planner simulate`` flags override it):

* **Plans.** Each self-hosted deployment candidate (``[cloud.*]``, ``[onprem.*]``) on its own,
  as ``planner cost`` compares them; or the ``deployments`` listed in ``[simulation]`` (or
  ``--deployment``) together, one pool each, in that order: a request goes to the first pool
  serving its class and moves to the next only when the first refuses it (``max_queue``, or
  the SLO rule when a spillover API is set: :func:`planner.sim.routing.spill_decision`, the
  one spillover decision). A pool serves the classes the model sizes it for
  (``classes_served`` of :func:`planner.model.sizing.size_options`: its ``classes``, quality
  tier, capacity).
* **Replicas** of a pool: ``[simulation] replicas`` / ``--replicas``, else the model's sizing
  (``OptionSizing.replicas``: the deployment's fixed ``replicas``, else peak-hour load /
  utilisation target + HA reserve).
* **Step times** of a replica: the performance model (:func:`planner.perf.step_model`) with
  the deployment's model, accelerator, GPUs, precision and ``perf`` parameters. Its decode
  step is affine in the cached tokens at a fixed batch, so it is tabulated per batch size
  (:class:`~planner.sim.stepmodel.TabulatedStepModel`, exact to rounding) and the engine jumps
  over decode iterations in closed form; a model for which the table is not exact (e.g.
  sliding-window attention) runs step by step.
* **Prefill**: chunked, as vLLM V1 schedules by default (:mod:`planner.sim.replica`): each
  iteration carries every running decode and up to ``max_tokens_per_step - decodes`` prompt
  tokens (the deployment's ``perf`` parameter, default 8192), timed by the performance
  model's mixed step (:meth:`planner.perf.step.StepModel.step_time_s`), the same step the
  sizing's batching model assumes. ``perf = { chunked_prefill = false }`` on a deployment
  simulates prefill-only iterations instead, during which the running decodes stall.
* **Price of a replica-hour**: the model's ``OptionSizing.usd_per_replica_hour`` (capex,
  energy and operations included for on-prem, under the scenario's cost lens).
* **Spillover** (optional): ``[simulation] spillover = "<api name>"`` sends a request to that
  API when its predicted TTFT breaks the class SLO or the queue is full; the API also serves
  classes no pool serves. Its prices are the offering's (with the scenario's overrides and
  discount, :func:`planner.model.price.api_prices`); its latency ``api_ttft_s`` +
  ``output_tokens / api_output_tokens_per_s``. It serves the classes the cost model lets
  it serve (:func:`planner.model.structure.api_classes`: its ``classes``, quality tier and
  fine-tune); which request goes there is :func:`planner.sim.routing.spill_decision`.
* **Requests** per class (:func:`scenario_requests`, the generator
  :func:`planner.sim.requests_from_scenario.generate_class_requests` that ``planner optimize
  --verify`` uses too): Poisson arrivals (or Gamma renewal with ``burstiness_cv``) at the
  model's hourly volumes, :func:`planner.workload.hourly_rates`: ``requests_per_day`` x
  (1 - response cache hits) x (1 + retries) on the class's diurnal profile, batch-eligible
  requests spread evenly over the day; prompt = input + calls x the class's fixed context,
  output = calls x samples x output, in the serving model's tokenizer (the first pool's)
  (:func:`~planner.sim.requests_from_scenario.token_length`); a length given as a
  distribution is drawn per request, a fixed length is used as is (or spread lognormally
  with ``length_cv``). **Prefix cache**: ``round(prefix_cache_hit_share x prompt)`` tokens of
  each request are KV-cache hits, not prefilled (the model's share for the first pool
  serving the class, i.e. the workload's ``prefix_cache_hit_share``). ``cached_share`` is the
  API *billing* share and is not simulated as a cache; the run's notes say which applies. (A
  request spilled to the API is billed at the cached price for its prefix-cache tokens.)
  Classes no pool or API of the plan serves are left out (and named in the notes).
* **Busiest hour** (report and ``planner risk --simulate``): the profile hour with the most
  expected requests of the simulated classes (:func:`profile_busiest_hour`, i.e.
  :func:`planner.workload.busiest_hour` of :func:`planner.workload.hourly_rates`).
* **Traces** (``[[simulation.trace]]`` or ``--trace``) replace the generated arrivals: each
  file is replayed as recorded (:func:`planner.traces.replay`), optionally scaled in rate or
  repeated to fill the period.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from planner.config import Scenario, SimTrace, med
from planner.errors import PlannerError
from planner.model.price import api_prices
from planner.model.sizing import OptionSizing, size_options
from planner.model.structure import (  # noqa: F401  (the API latency: one rule, re-exported)
    DEFAULT_API_OUTPUT_TOKENS_PER_S,
    DEFAULT_API_TTFT_S,
    api_latency,
)
from planner.model.structure import api_classes as model_api_classes
from planner.requests import RequestTable
from planner.sim.plan import SLO, ApiTarget, PoolSpec, SimPlan
from planner.sim.requests_from_scenario import ClassStream, generate_class_requests, token_length
from planner.sim.results import SimResult
from planner.workload import busiest_hour, class_load

__all__ = [
    "ScenarioRun",
    "api_latency",
    "build_plan",
    "plan_groups",
    "run_tables",
    "report_tables",
    "scenario_burstiness",
    "scenario_requests",
    "scenario_streams",
    "simulate_scenario",
    "trace_requests",
]

#: Largest relative error of the tabulated decode steps accepted for the closed-form path.
TABLE_TOLERANCE = 1e-6
BUNDLED = {"bundled:azure-conv": "conv", "bundled:azure-code": "code"}
_METRICS = ("ttft_s", "tpot_s", "e2e_s")


# ---------------------------------------------------------------------- plan
def _catalog(catalog: Any):
    from planner.catalog import load_catalog

    return catalog or load_catalog()


def plan_groups(sc: Scenario, deployments: Sequence[str] | None = None) -> list[tuple[str, ...]]:
    """The plans to simulate, each a tuple of self-hosted deployment names (its pools).

    ``deployments`` (or ``[simulation] deployments``) gives one plan of those pools together;
    otherwise every self-hosted candidate is its own plan.
    """
    hosted = [*sc.cloud, *sc.onprem]
    chosen = tuple(deployments) if deployments else tuple(sc.simulation.deployments)
    if chosen:
        for d in chosen:
            if d not in hosted:
                kind = sc.deployments().get(d, ("",))[0]
                why = " (an API is simulated as the spillover target: --spillover)" if (
                    kind == "api") else ""
                raise PlannerError(
                    f"simulate: {d!r} is not a self-hosted (cloud/onprem) deployment of the "
                    f"scenario{why}; self-hosted: {', '.join(hosted) or 'none'}"
                )
        if len(set(chosen)) != len(chosen):
            raise PlannerError(f"simulate: deployments listed twice in {list(chosen)}")
        return [chosen]
    if not hosted:
        raise PlannerError(
            "nothing to simulate: the scenario has no self-hosted ([cloud.*] or [onprem.*]) "
            "deployment; the simulation replays requests on GPU pools"
        )
    return [(d,) for d in hosted]


def _step_model(sc: Scenario, name: str, cat: Any):
    """(step model for the simulator, exact model, fit error or NaN)."""
    from planner.perf import AcceleratorSpec, LLMSpec, PerfParams, step_model
    from planner.sim.stepmodel import TabulatedStepModel

    kind, dep = sc.deployments()[name]
    if dep.capacity_requests_per_s is not None:
        raise PlannerError(
            f"simulate: {kind}.{name} states capacity_requests_per_s instead of using the "
            "performance model, so it has no step times to simulate; remove it or pick "
            "another deployment"
        )
    acc_id = dep.accelerator
    if acc_id is None:
        row = cat.cloud(dep.offering) if kind == "cloud" else cat.server(dep.server)
        acc_id = row.get("accelerator")
    params = PerfParams.from_mapping(dep.perf) if dep.perf else None
    exact = step_model(LLMSpec.from_row(cat.llm(dep.model)),
                       AcceleratorSpec.from_row(cat.accelerator(acc_id)),
                       dep.gpus_per_replica, dep.precision, params)
    if exact.kv_capacity_tokens < 1:
        raise PlannerError(
            f"simulate: {dep.model} does not fit in {dep.gpus_per_replica} x {acc_id} at "
            f"{dep.precision} ({kind}.{name}): no KV-cache memory left"
        )
    table, err = TabulatedStepModel.from_model(exact)
    return (table if err <= TABLE_TOLERANCE else exact), exact, float(err), acc_id


def _api_target(sc: Scenario, name: str, cat: Any, classes: Sequence[str]) -> ApiTarget:
    dep = sc.api[name]
    row = cat.api(dep.offering)
    p = api_prices(dep, row, dep.fine_tune is not None)
    keep = 1.0 - float(med(dep.discount))
    ttft_s, tokens_per_s = api_latency(row, sc.simulation)
    return ApiTarget(
        name=name,
        ttft_s=ttft_s,
        output_tokens_per_s=tokens_per_s,
        input_usd_per_mtok=p.input_usd_per_mtok * keep,
        output_usd_per_mtok=p.output_usd_per_mtok * keep,
        cached_input_usd_per_mtok=(None if p.cached_input_usd_per_mtok is None
                                   else p.cached_input_usd_per_mtok * keep),
        classes=tuple(classes),
    )


def _slos(sc: Scenario) -> tuple[dict[str, SLO], dict[str, float]]:
    slos, targets = {}, {}
    for cname, wc in sc.workload.items():
        s = wc.slo
        if s is None:
            continue
        slos[cname] = SLO(**{k: float(med(getattr(s, k))) if getattr(s, k) is not None
                             else math.inf for k in _METRICS})
        targets[cname] = float(s.percentile) / 100.0
    return slos, targets


def _tokenizer(sc: Scenario, name: str, cat: Any) -> str | None:
    dep = sc.deployments()[name][1]
    return dep.tokenizer or cat.llm(dep.model).get("tokenizer")


def build_plan(
    sc: Scenario,
    deployments: Sequence[str],
    *,
    catalog: Any = None,
    sizing: Mapping[str, OptionSizing] | None = None,
    replicas: Mapping[str, int] | int | None = None,
    spillover: str | None = None,
) -> tuple[SimPlan, pd.DataFrame, list[str]]:
    """A :class:`SimPlan` with one pool per deployment in ``deployments``.

    A pool serves the option's ``classes_served`` and is priced at its
    ``usd_per_replica_hour``, both from the model's sizing
    (:func:`planner.model.sizing.size_options`).

    Parameters
    ----------
    replicas : int or mapping, optional
        Replicas of every pool (int) or per deployment; default ``[simulation] replicas``,
        then the model's sizing (the deployment's fixed ``replicas`` when it has them).
    spillover : str, optional
        An ``[api.NAME]`` absorbing spillover (default ``[simulation] spillover``).
    sizing : mapping, optional
        ``size_options(sc, catalog)`` (computed when not given).

    Returns
    -------
    (plan, pools table, classes served by the plan's pools or API)
    """
    cat = _catalog(catalog)
    sizing = sizing if sizing is not None else size_options(sc, cat)
    sim = sc.simulation
    spill = spillover if spillover is not None else sim.spillover
    if spill is not None and spill not in sc.api:
        raise PlannerError(f"simulate: spillover {spill!r} is not an [api.*] deployment of the "
                           f"scenario; APIs: {', '.join(sc.api) or 'none'}")
    pools, rows = [], []
    covered: list[str] = []
    for name in deployments:
        kind, dep = sc.deployments()[name]
        size = sizing[name]
        served = list(size.classes_served)
        if not served:
            why = "; ".join(f"{c}: {w}" for c, w in size.classes_unserved.items())
            raise PlannerError(f"simulate: {kind}.{name} serves none of the workload classes"
                               + (f" ({why})" if why else ""))
        if isinstance(replicas, int):
            n, basis = replicas, "given"
        elif isinstance(replicas, Mapping) and name in replicas:
            n, basis = int(replicas[name]), "given"
        elif name in sim.replicas:
            n, basis = sim.replicas[name], "[simulation] replicas"
        else:
            n = int(size.replicas)
            basis = f"{kind}.{name}.replicas" if dep.replicas is not None else "model sizing"
        if n < 1:
            raise PlannerError(f"simulate: {name} needs at least one replica, got {n}")
        model, exact, err, acc_id = _step_model(sc, name, cat)
        usd_rh = float(size.usd_per_replica_hour)
        params = exact.params
        pools.append(PoolSpec(name, model, replicas=n, usd_per_replica_hour=usd_rh,
                              classes=tuple(served), routing=sim.routing,
                              max_queue=sim.max_queue,
                              chunked_prefill=bool(params.chunked_prefill),
                              max_tokens_per_step=int(params.max_tokens_per_step)))
        rows.append({
            "deployment": name, "kind": kind, "model": dep.model, "accelerator": acc_id,
            "gpus_per_replica": dep.gpus_per_replica, "precision": dep.precision,
            "replicas": n, "replicas_basis": basis, "usd_per_replica_hour": usd_rh,
            "classes": ",".join(served),
            "prefix_cache_hit_share": ",".join(
                f"{c}={size.prefix_cache_hit_share.get(c, 0.0):g}" for c in served),
            "max_batch": model.max_batch,
            "kv_capacity_tokens": model.kv_capacity_tokens,
            "decode_table_max_rel_error": err,
            "step_times": "decode tabulated per batch size, exact prefill"
            if err <= TABLE_TOLERANCE else "exact performance model (per-step evaluation)",
            "prefill": (f"chunked, {int(params.max_tokens_per_step)} tokens per step"
                        if params.chunked_prefill else "prefill-only iterations (not chunked)"),
        })
        covered += [c for c in served if c not in covered]
    api = None
    if spill is not None:
        api_classes = list(model_api_classes(sc, cat, spill))  # the cost model's rule
        api = _api_target(sc, spill, cat, api_classes)
        covered += [c for c in api_classes if c not in covered]
        rows.append({"deployment": spill, "kind": "api", "model": sc.api[spill].offering,
                     "replicas": np.nan, "replicas_basis": "spillover",
                     "classes": ",".join(api_classes)})
    slos, _ = _slos(sc)
    plan = SimPlan(pools=tuple(pools), api=api, slos=slos, spill_on_slo=True,
                   util_interval_s=300.0)
    return plan, pd.DataFrame(rows), [c for c in sc.workload if c in covered]


# ---------------------------------------------------------------------- requests
def prefix_cache_shares(sc: Scenario, sizing: Mapping[str, OptionSizing] | None = None,
                        deployments: Sequence[str] = ()) -> dict[str, float]:
    """Per class, the share of each prompt a self-hosted replica does not prefill.

    The model's ``prefix_cache_hit_share`` of the first of ``deployments`` serving the class
    (what its capacity was sized at), else the workload's ``prefix_cache_hit_share``. The API
    billing share ``cached_share`` is never used.
    """
    out = {c: float(med(wc.prefix_cache_hit_share)) for c, wc in sc.workload.items()}
    done: set[str] = set()
    for d in deployments:
        size = (sizing or {}).get(d)
        for c, v in (size.prefix_cache_hit_share.items() if size is not None else ()):
            if c in out and c not in done:
                out[c] = float(v)
                done.add(c)
    return out


def scenario_streams(
    sc: Scenario,
    *,
    hours: int,
    catalog: Any = None,
    tokenizer: str | None = None,
    start_hour: int = 0,
    classes: Sequence[str] | None = None,
    prefix_cache_hit_share: Mapping[str, float] | None = None,
) -> list[ClassStream]:
    """What :func:`scenario_requests` generates, per class: rates, lengths, prefix cache.

    Rates: :meth:`planner.workload.ClassLoad.hourly_rates` (requests_per_day x (1 - response
    cache hits) x (1 + retries) on the profile, batch-eligible requests spread evenly) for the
    ``hours`` hours from profile hour ``start_hour``. Lengths: :func:`token_length` of input
    (``length_cv`` spread), context (x calls, fixed) and output (x calls x samples).
    ``prefix_cache_hit_share``: per class (default :func:`prefix_cache_shares`).
    """
    cat = _catalog(catalog)
    sim = sc.simulation
    names = list(classes) if classes is not None else list(sc.workload)
    if not names:
        raise PlannerError("simulate: the scenario has no workload classes")
    shares = prefix_cache_shares(sc)
    shares.update(prefix_cache_hit_share or {})
    streams = []
    for cname in names:
        wc = sc.workload[cname]
        cl = class_load(sc, cname, wc, tokenizer, cat)
        calls, samples = float(med(wc.calls_per_request)), float(med(wc.samples_per_call))
        day = cl.hourly_rates()
        rates = day[(start_hour + np.arange(hours)) % day.size]
        ctx = token_length(wc.context, tokenizer, cat, factor=calls)
        streams.append(ClassStream(
            cname, tuple(float(r) for r in rates),
            token_length(wc.input, tokenizer, cat, cv=sim.length_cv),
            token_length(wc.output, tokenizer, cat, factor=calls * samples, cv=sim.length_cv),
            fixed_context_tokens=int(round(ctx.mean_tokens)),
            prefix_cache_hit_share=shares[cname],
        ))
    return streams


def scenario_requests(
    sc: Scenario,
    *,
    hours: int,
    rng: np.random.Generator,
    catalog: Any = None,
    tokenizer: str | None = None,
    start_hour: int = 0,
    classes: Sequence[str] | None = None,
    prefix_cache_hit_share: Mapping[str, float] | None = None,
) -> RequestTable:
    """Generated requests of the scenario's workload classes over ``hours`` hours.

    Hour 0 of the table is hour ``start_hour`` of the classes' profiles (24 or 168 weights).
    :func:`scenario_streams` then :func:`~planner.sim.requests_from_scenario.
    generate_class_requests` (``[simulation] burstiness_cv``); see the module docstring.
    """
    streams = scenario_streams(sc, hours=hours, catalog=catalog, tokenizer=tokenizer,
                               start_hour=start_hour, classes=classes,
                               prefix_cache_hit_share=prefix_cache_hit_share)
    return generate_class_requests(streams, hours, rng, burstiness=scenario_burstiness(sc))


def scenario_burstiness(sc: Scenario):
    """The arrival process of the scenario's classes: a
    :class:`planner.arrivals.GammaRenewal` with ``[simulation] burstiness_cv``, or None
    (Poisson) when it is unset."""
    cv = sc.simulation.burstiness_cv
    if cv is None:
        return None
    from planner.arrivals import GammaRenewal

    return GammaRenewal(cv)


def _trace_columns(t: SimTrace, keys=None):
    """The entry's ``trace_format`` preset (default azure) overridden by the keys it sets."""
    from planner.traces import CLI_KEYS, trace_columns

    set_ = t.model_fields_set
    cols = {k: getattr(t, k) for k in ("timestamp", "input_tokens", "output_tokens",
                                       "class_column") if k in set_}
    return trace_columns(
        t.trace_format, columns=cols,
        timestamp_unit=t.timestamp_unit if "timestamp_unit" in set_ else None,
        timestamp_format=t.timestamp_format if "timestamp_format" in set_ else None,
        keys=keys or CLI_KEYS)


def trace_requests(
    sc: Scenario,
    traces: Sequence[SimTrace],
    *,
    hours: int | None = None,
    base_dir: str | Path | None = None,
) -> RequestTable:
    """Requests replayed from trace files (see :class:`planner.config.SimTrace`).

    Relative paths resolve against ``base_dir`` (default: the scenario file's folder). With
    ``hours``, a trace is cut at ``hours`` (or, with ``repeat``, repeated to fill them).
    """
    from planner.traces import CLI_KEYS, azure_trace, load_trace, replay, toml_keys

    if base_dir is None:
        base_dir = Path(sc.source_path).parent if sc.source_path else Path.cwd()
    tables = []
    for i, t in enumerate(traces):
        keys = CLI_KEYS if t._from_cli else toml_keys(i)
        if t.file.startswith("bundled:"):
            if t.file not in BUNDLED:
                raise PlannerError(f"simulate: unknown bundled trace {t.file!r}; "
                                   f"available: {', '.join(BUNDLED)}")
            tr = azure_trace(BUNDLED[t.file])
        else:
            p = Path(t.file)
            p = p if p.is_absolute() else Path(base_dir) / p
            columns, kind = _trace_columns(t, keys)
            fmt = t.format or (None if p.suffix.lower() in (
                ".csv", ".txt", ".jsonl", ".ndjson", ".json", ".parquet", ".pq") else kind)
            tr = load_trace(p, columns, fmt=fmt, keys=keys)
        cname = t.workload_class
        if tr.classes is not None and cname is None:
            unknown = sorted(set(tr.classes) - set(sc.workload))
            if unknown:
                raise PlannerError(
                    f"simulate: trace {t.file} has classes {unknown[:5]} in column "
                    f"{t.class_column!r} that are not workload classes of the scenario "
                    f"({', '.join(sc.workload)})"
                )
        elif cname is None:
            if len(sc.workload) != 1:
                raise PlannerError(
                    f"simulate: say which workload class trace {t.file} holds: "
                    f"--trace CLASS=FILE or class = \"...\" in [[simulation.trace]] "
                    f"(classes: {', '.join(sc.workload)})"
                )
            cname = next(iter(sc.workload))
        span = hours * 3600.0 if hours is not None else None
        req = replay(tr, rate_scale=t.rate_scale, class_name=cname or "trace",
                     duration_s=span if t.repeat else None)
        if span is not None and not t.repeat and len(req) and req.arrival_s[-1] >= span:
            keep = req.arrival_s < span
            req = RequestTable(req.arrival_s[keep], req.class_idx[keep], req.class_names,
                               req.input_tokens[keep], req.output_tokens[keep],
                               req.cached_input_tokens[keep])
        tables.append(req)
    if not tables:
        raise PlannerError("simulate: no trace files given")
    return RequestTable.concat(tables)


# ---------------------------------------------------------------------- runs
@dataclass(eq=False)
class ScenarioRun:
    """One simulated plan of a scenario.

    Attributes
    ----------
    name : str
        Plan label: its deployments joined with ``+``.
    plan : SimPlan
    requests : RequestTable
    result : SimResult
    pools : DataFrame
        One row per pool (and the spillover API): replicas and where they came from, step
        model, price per replica-hour, classes.
    targets : dict
        SLO attainment target (the SLO percentile as a share) per class.
    start_hour : int
        Hour of the profile where the simulation starts (hour labels add it).
    notes : list of str
    """

    name: str
    plan: SimPlan
    requests: RequestTable
    result: SimResult
    pools: pd.DataFrame
    targets: dict[str, float] = field(default_factory=dict)
    start_hour: int = 0
    notes: list[str] = field(default_factory=list)
    #: :func:`run_tables` of this run alone (``records=False``) when the worker that
    #: simulated it made them (:func:`simulate_scenario` on worker processes), else None
    tables: dict[str, pd.DataFrame] | None = field(default=None, repr=False)

    def latency(self) -> pd.DataFrame:
        """Per class (and ``all``): requests, latency percentiles, SLO attainment, spillover."""
        lat = self.result.latency_table().reset_index()
        lat.columns.name = None
        lat.insert(0, "plan", self.name)
        lat["slo_target"] = lat["class"].map(self.targets)
        cols = ["plan", "class", "requests", "completed", "dropped",
                *[f"{m}_p{q}_s" for m in ("ttft", "tpot", "e2e") for q in (50, 90, 99)],
                "queue_mean_s", "slo_attainment", "slo_target", "spillover_share",
                "goodput_rps", "goodput_tokens_per_s"]
        for c in cols:
            if c not in lat.columns:
                lat[c] = np.nan
        for c in ("requests", "completed", "dropped"):
            lat[c] = lat[c].astype(np.int64)
        return lat[cols]

    def deployments(self) -> pd.DataFrame:
        """Per pool, API and total: replicas, GPU-hours, tokens, utilisation, cost."""
        dep = self.result.deployments.copy()
        info = self.pools.set_index("deployment")
        gpus = dep["deployment"].map(info["gpus_per_replica"]) if "gpus_per_replica" in info \
            else np.nan
        dep["replicas"] = dep["deployment"].map(info["replicas"])
        dep["gpu_hours"] = dep["replica_hours"] * gpus
        tot = dep["deployment"] == "total"
        dep.loc[tot, "gpu_hours"] = dep.loc[~tot & (dep["kind"] == "gpu_pool"), "gpu_hours"].sum()
        dep.loc[tot, "replicas"] = dep.loc[~tot, "replicas"].sum()
        dep.insert(0, "plan", self.name)
        for c in ("requests", "completed"):
            dep[c] = dep[c].astype(np.int64)
        cols = ["plan", "deployment", "kind", "replicas", "replica_hours", "gpu_hours",
                "requests", "completed", "input_tokens", "output_tokens", "busy_share",
                "mean_batch", "usd", "share_of_usd", "usd_per_1k_requests"]
        return dep[[c for c in cols if c in dep.columns]]

    def totals(self) -> pd.DataFrame:
        """One row: requests by status, spillover share, SLO attainment, goodput, cost."""
        t = self.result.totals()
        met_tok = self.result.met_output_tokens()
        period = self.result.period_s
        t.update({k: int(t[k]) for k in ("requests", "completed", "dropped", "in_flight",
                                          "pending")})
        return pd.DataFrame([{
            "plan": self.name, "start_hour": self.start_hour,
            "simulated_hours": period / 3600.0, **t,
            "goodput_tokens_per_s": met_tok / period if period > 0 else np.nan,
            "usd_per_1k_requests": t["usd"] / t["requests"] * 1000 if t["requests"] else np.nan,
        }])

    def slo(self) -> pd.DataFrame:
        """Share of requests meeting each SLO bound (completed + dropped), per class."""
        counts = self.result.slo_bound_counts()  # full or aggregate-only results alike
        rows = []
        for cname, s in self.plan.slos.items():
            for m in _METRICS:
                if (cname, m) not in counts:
                    continue
                ok, done = counts[(cname, m)]
                rows.append({"class": cname, "metric": m, "slo_s": getattr(s, m),
                             "attainment": ok / done,
                             "target": self.targets.get(cname, np.nan)})
        return pd.DataFrame(rows, columns=["class", "metric", "slo_s", "attainment", "target"])

    def hourly_utilisation(self) -> pd.DataFrame:
        """``hour, pool, utilisation`` (busy share of paid replica time), plus mean batch."""
        u = self.result.utilisation
        if u.empty:
            return pd.DataFrame(columns=["hour", "pool", "utilisation", "mean_batch"])
        hour = self.start_hour + (u["interval_start_s"] // 3600).astype(int)
        g = u.assign(hour=hour, batch_s=u["mean_batch"].fillna(0) * u["paid_s"]).groupby(
            ["hour", "pool"], sort=True)[["busy_s", "paid_s", "batch_s"]].sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            g["utilisation"] = g["busy_s"] / g["paid_s"]
            g["mean_batch"] = g["batch_s"] / g["paid_s"]
        return g.reset_index()[["hour", "pool", "utilisation", "mean_batch"]]


def simulate_scenario(
    sc: Scenario,
    *,
    catalog: Any = None,
    deployments: Sequence[str] | None = None,
    hours: int | None = None,
    start_hour: int | None = None,
    seed: int | None = None,
    replicas: Mapping[str, int] | int | None = None,
    spillover: str | None = None,
    traces: Sequence[SimTrace] | None = None,
    trace_dir: str | Path | None = None,
    progress: Any = None,
    scheduler: str | None = None,
    n_workers: int | None = 1,
    client: Any = None,
    records: str = "full",
) -> list[ScenarioRun]:
    """Simulate the scenario's plans (see the module docstring); one :class:`ScenarioRun` each.

    Arguments left ``None`` come from ``[simulation]``. ``traces`` (or ``[simulation] trace``)
    replaces the generated arrivals; ``trace_dir`` resolves their relative paths (default: the
    scenario's folder). The same ``seed`` gives every plan the same arrivals.

    The plans are independent tasks run by :func:`planner.parallel.map_tasks`: one after
    another by default (``n_workers=1``), on ``n_workers`` local processes (``None``: one per
    core), or on a Dask ``scheduler`` (``"tcp://host:port"``) or ``client``. Each task is sent
    the scenario, its plan and the seed and generates its own arrivals, so the runs are
    bit-identical to serial ones whatever the runner; they come back in plan order.
    ``records``: ``"aggregate"`` keeps no per-request rows (:func:`planner.sim.simulate`).
    ``progress(done, total)`` counts routed requests when serial, finished plans otherwise.
    """
    from planner.parallel import map_tasks, runs_serially

    cat = _catalog(catalog)
    sim = sc.simulation
    hours = sim.hours if hours is None else int(hours)
    if hours < 1:
        raise PlannerError(f"simulate: hours must be >= 1, got {hours}")
    start_hour = sim.start_hour if start_hour is None else int(start_hour)
    seed = sim.seed if seed is None else int(seed)
    if seed < 0:
        raise PlannerError(f"simulate: seed must be >= 0, got {seed}")
    traces = tuple(traces) if traces else tuple(sim.trace)
    groups = plan_groups(sc, deployments)
    sizing = size_options(sc, cat)
    _, targets = _slos(sc)
    trace_reqs = None
    if traces:
        trace_reqs = trace_requests(sc, traces, hours=hours, base_dir=trace_dir)
        if len(trace_reqs) == 0:
            raise PlannerError("simulate: the trace files hold no requests")
    built, tasks = [], []
    for group in groups:
        plan, pools, covered = build_plan(sc, group, catalog=cat, sizing=sizing,
                                          replicas=replicas, spillover=spillover)
        name = "+".join(group)
        notes = []
        shares = prefix_cache_shares(sc, sizing, group)
        left = [c for c in sc.workload if c not in covered]
        if trace_reqs is not None:
            miss = [c for c in trace_reqs.class_names if c not in covered]
            if miss:
                raise PlannerError(
                    f"simulate: {name} does not serve trace class(es) {', '.join(miss)}"
                    + (" (add a spillover API that does)" if plan.api is None else "")
                )
            notes.append(f"{name}: {len(trace_reqs):,} requests replayed from "
                         f"{', '.join(t.file for t in traces)}")
        else:
            if left:
                notes.append(f"{name}: class(es) {', '.join(left)} not simulated (no pool or "
                             "API of this plan serves them)")
            notes.append(_cache_note(name, sc, {c: shares[c] for c in covered}))
        built.append((name, plan, pools, notes))
        tasks.append((plan, tuple(covered), _tokenizer(sc, group[0], cat), shares))
    shared = (sc, cat, trace_reqs, hours, start_hour, seed, records)
    start = 0 if trace_reqs is not None else start_hour
    if runs_serially(len(tasks), scheduler=scheduler, n_workers=n_workers, client=client):
        out = [_simulate_plan(shared, *t, progress=progress) for t in tasks]
    else:
        # longest first (the estimated requests of each plan): with more plans than workers,
        # a long plan started last would leave the other workers idle at the end
        order = _longest_first(sc, [t[1] for t in tasks], trace_reqs is not None)
        done = map_tasks(_simulate_plan_summarised,
                         [(*tasks[k], (*built[k], targets, start)) for k in order],
                         shared=shared, scheduler=scheduler, n_workers=n_workers,
                         client=client, progress=progress, name="planner-simulate")
        out = [None] * len(tasks)
        for k, r in zip(order, done, strict=True):
            out[k] = r
    return [ScenarioRun(name, plan, trace_reqs if r[0] is None else r[0], r[1], pools,
                        targets, start, notes, tables=r[2] if len(r) > 2 else None)
            for (name, plan, pools, notes), r in zip(built, out, strict=True)]


def _simulate_plan(shared: tuple, plan: SimPlan, covered: tuple[str, ...],
                   tokenizer: str | None, shares: Mapping[str, float],
                   progress: Any = None) -> tuple[RequestTable | None, SimResult]:
    """One task of :func:`simulate_scenario`: generate the plan's arrivals from the seed (or
    take the trace's) and simulate them. Returns (generated requests or None for the trace's,
    result). Module level: pickled to worker processes."""
    from planner.sim.run import simulate

    sc, cat, trace_reqs, hours, start_hour, seed, records = shared
    reqs = trace_reqs
    if trace_reqs is None:
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        reqs = scenario_requests(sc, hours=hours, rng=rng, catalog=cat, tokenizer=tokenizer,
                                 start_hour=start_hour, classes=list(covered),
                                 prefix_cache_hit_share=shares)
        if len(reqs) == 0:
            raise PlannerError(f"simulate: no requests arrive in the {hours} simulated "
                               "hour(s); check requests_per_day and the diurnal profile")
    res = simulate(plan, reqs, seed=seed, progress=progress, records=records)
    return (None if trace_reqs is not None else reqs), res


def _simulate_plan_summarised(shared: tuple, plan: SimPlan, covered: tuple[str, ...],
                              tokenizer: str | None, shares: Mapping[str, float], meta: tuple,
                              progress: Any = None) -> tuple[RequestTable | None, SimResult,
                                                             dict[str, pd.DataFrame] | None]:
    """:func:`_simulate_plan` on a worker, which also makes what the caller would otherwise
    make one run after another: the run's summary rows (the latency rows of
    :meth:`SimResult.summary`, cached in the result) and, without per-request records, the
    run's own :func:`run_tables` (``meta``: the :class:`ScenarioRun`'s name, pools, notes,
    targets and start hour). Returns (requests as :func:`_simulate_plan`, result, tables or
    None)."""
    reqs, res = _simulate_plan(shared, plan, covered, tokenizer, shares, progress)
    if res.requests is not None:
        res.summary()
    if shared[-1] == "full":  # per-request tables asked for: the caller makes every table
        return reqs, res, None
    name, _, pools, notes, targets, start = meta
    run = ScenarioRun(name, plan, shared[2] if reqs is None else reqs, res, pools, targets,
                      start, notes)
    return reqs, res, run_tables([run], records=False)


def _longest_first(sc: Scenario, covered: Sequence[tuple[str, ...]], trace: bool
                   ) -> list[int]:
    """Task indexes, most estimated requests first (a stable order: ties keep plan order).
    The estimate of a plan: its classes' requests per day (replayed traces: the same for
    every plan)."""
    if trace:
        return list(range(len(covered)))
    wl = sc.workload
    est = [sum(float(med(wl[c].requests_per_day)) * float(med(wl[c].calls_per_request))
               for c in cov if c in wl) for cov in covered]
    return sorted(range(len(covered)), key=lambda k: -est[k])


def _cache_note(name: str, sc: Scenario, shares: Mapping[str, float]) -> str:
    """Which cache the simulated requests carry (prefix cache, not the API billing share)."""
    used = ", ".join(f"{c} {v:.0%}" for c, v in shares.items()) or "none"
    billed = [c for c in shares if float(med(sc.workload[c].cached_share)) > 0]
    return (f"{name}: prefix (KV) cache hits per class, not prefilled (prefix_cache_hit_share): "
            f"{used}" + (f"; cached_share ({', '.join(billed)}) is API billing only and is not "
                         "simulated as a cache" if billed else ""))


# ---------------------------------------------------------------------- report hook
def _report_plan(sc: Scenario, sizing: Mapping[str, OptionSizing]) -> tuple[str, ...]:
    """The plan the report simulates: ``[simulation] deployments``, else the cheapest
    (replicas x price per replica-hour) self-hosted option that serves every class (else the
    one serving most classes)."""
    if sc.simulation.deployments:
        return tuple(sc.simulation.deployments)
    cands = [o for o in sizing.values() if o.classes_served]
    if not cands:
        hosted = [*sc.cloud, *sc.onprem]
        if not hosted:
            raise PlannerError("the scenario has no self-hosted (cloud/onprem) deployment to "
                               "simulate")
        raise PlannerError("no self-hosted deployment of the scenario serves any workload "
                           "class")
    best = min(cands, key=lambda o: (-len(o.classes_served),
                                     o.replicas * o.usd_per_replica_hour))
    return (best.deployment,)


def profile_busiest_hour(loads: Sequence[Any]) -> tuple[int]:
    """``(hour,)`` of the profile with the most expected requests of ``loads``
    (:class:`~planner.workload.ClassLoad`), batch-eligible requests spread evenly
    (:func:`planner.workload.busiest_hour` of the summed :func:`~planner.workload.hourly_rates`;
    a 24-hour profile is repeated over a week when another class has 168 weights)."""
    periods = max(cl.weights.size for cl in loads)
    return busiest_hour(sum(cl.hourly_rates(periods) for cl in loads))


@dataclass(eq=False)
class BusiestHour:
    """A simulation of a plan's busiest hour: the run, the hour and the window simulated."""

    run: ScenarioRun
    hour: int
    window_s: float
    note: str


def simulate_busiest_hour(sc: Scenario, catalog: Any = None, *,
                          deployments: Sequence[str] | None = None,
                          seed: int | None = None,
                          max_requests: int | None = None,
                          sizing: Mapping[str, OptionSizing] | None = None) -> BusiestHour:
    """Simulate one plan during the busiest hour of its classes' diurnal profiles.

    The plan is ``deployments``, else ``[simulation] deployments``, else the cheapest
    self-hosted candidate serving every class; replicas as :func:`build_plan` sizes them.
    Arrivals are cut after ``max_requests`` (default ``[simulation] report_max_requests``);
    the window simulated is then shorter than the hour and the note says so. ``sizing``: the
    scenario's :func:`size_options`, when the caller has it already.
    """
    from planner.sim.run import simulate

    cat = _catalog(catalog)
    sizing = size_options(sc, cat) if sizing is None else sizing
    group = tuple(deployments) if deployments else _report_plan(sc, sizing)
    plan, pools, covered = build_plan(sc, group, catalog=cat, sizing=sizing)
    name = "+".join(group)
    tok = _tokenizer(sc, group[0], cat)
    loads = [class_load(sc, c, sc.workload[c], tok, cat) for c in covered]
    (hour,) = profile_busiest_hour(loads)
    seed = sc.simulation.seed if seed is None else int(seed)
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    reqs = scenario_requests(sc, hours=1, rng=rng, catalog=cat, tokenizer=tok,
                             start_hour=hour, classes=covered,
                             prefix_cache_hit_share=prefix_cache_shares(sc, sizing, group))
    cap = sc.simulation.report_max_requests if max_requests is None else int(max_requests)
    window_s = 3600.0
    if len(reqs) > cap:
        window_s = float(reqs.arrival_s[cap])
        keep = slice(0, cap)
        reqs = RequestTable(reqs.arrival_s[keep], reqs.class_idx[keep], reqs.class_names,
                            reqs.input_tokens[keep], reqs.output_tokens[keep],
                            reqs.cached_input_tokens[keep])
    if len(reqs) == 0:
        raise PlannerError("no requests arrive in the busiest hour (all volumes are zero)")
    res = simulate(plan, reqs, seed=seed)
    _, targets = _slos(sc)
    run = ScenarioRun(name, plan, reqs, res, pools, targets, hour)
    reps = ", ".join(f"{r.deployment} x {r.replicas} ({r.replicas_basis})"
                     for r in pools.itertuples() if r.kind != "api")
    cut = f", first {window_s:.0f} s" if window_s < 3600 else ""
    note = (f"simulated {len(reqs):,} requests of the busiest hour (hour {hour} of the "
            f"profile{cut}) on {reps}"
            + (f", spillover to {plan.api.name}" if plan.api is not None else ""))
    return BusiestHour(run, hour, window_s, note)


def draw_seeds(seed: int, draws: int) -> list[int]:
    """Arrival seeds of ``draws`` independent simulated hours: ``seed`` itself first (one draw
    is the single check), then integers drawn from the children of ``SeedSequence(seed)``
    (independent streams, the same for the same seed)."""
    kids = np.random.SeedSequence(seed).spawn(max(draws - 1, 0))
    return [int(seed), *(int(k.generate_state(1, dtype=np.uint32)[0]) for k in kids)]


def _hour_draws(sc: Scenario, cat: Any, name: str, seeds: Sequence[int], sizing: Any,
                max_requests: int | None, tick: Any) -> tuple:
    """``(worst attainment - target pair, draws meeting, hour, requests of the first draw)``
    of option ``name`` simulated alone in its busiest hour, one run per seed."""
    worst_att = worst_tgt = np.nan
    met, hour, n_req = 0, 0, 0
    for j, s in enumerate(seeds):
        b = simulate_busiest_hour(sc, cat, deployments=[name], seed=s,
                                  max_requests=max_requests, sizing=sizing)
        lat = b.run.latency()
        lat = lat[(lat["class"] != "all") & lat["slo_target"].notna()]
        att = lat["slo_attainment"].astype(float)
        tgt = lat["slo_target"].astype(float)
        dropped = int(lat["dropped"].sum()) if "dropped" in lat else 0
        met += bool(len(lat) and (att >= tgt - 1e-12).all() and dropped == 0)
        if len(lat):
            w = int(np.nanargmin((att - tgt).to_numpy()))
            if not np.isfinite(worst_att) or att.iloc[w] - tgt.iloc[w] < worst_att - worst_tgt:
                worst_att, worst_tgt = float(att.iloc[w]), float(tgt.iloc[w])
        if j == 0:
            hour, n_req = b.hour, int(len(b.run.requests))
        tick()
    return worst_att, worst_tgt, met, hour, n_req


def _with_replicas(sc: Scenario, name: str, replicas: int) -> Scenario:
    """``sc`` with option ``name`` simulated at ``replicas`` (``[simulation] replicas``)."""
    sim = sc.simulation.model_copy(update={"replicas": {**sc.simulation.replicas,
                                                        name: int(replicas)}})
    return sc.model_copy(update={"simulation": sim})


#: most replica counts ``check_sizing(search=True)`` simulates above or below the sizing
SEARCH_STEPS = 12


def check_sizing(sc: Scenario, catalog: Any = None, *, seed: int | None = None,
                 max_requests: int | None = None, progress: Any = None,
                 draws: int = 1, search: bool = False) -> pd.DataFrame:
    """Simulate each self-hosted option alone at the cost engine's sizing during the busiest
    hour of its classes (:func:`simulate_busiest_hour`) and report its SLO attainment.

    ``draws`` independent arrival draws of that hour (:func:`draw_seeds`): an hour's count
    and bursts are random, so a pool sized at the margin meets the SLO in some draws and not
    in others (``[planning] hour_quantile``). With ``search``, also the fewest replicas whose
    simulated hour meets the SLO in every draw: one replica at a time down from the sizing
    while it meets, else up until it does (at most :data:`SEARCH_STEPS` counts; NaN when none
    within them meets).

    Returns one row per self-hosted option that serves a class: ``deployment``,
    ``simulated_hour``, ``simulated_requests`` (the first draw's), ``simulated_slo_attainment``
    (the worst class's share of requests meeting TTFT and TPOT, in the worst draw),
    ``slo_target`` (that class's percentile), ``simulated_meets_slo`` (attainment >= target
    in every class, no request dropped, in every draw), ``simulated_draws``,
    ``simulated_draws_meeting`` (the draws that meet it) and ``simulated_replicas_needed``
    (with ``search``; else NaN). ``progress(done, total)`` is called after each simulation.
    """
    cat = _catalog(catalog)
    sizing = size_options(sc, cat)
    names = [n for n, o in sizing.items() if o.classes_served and o.replicas >= 1]
    seeds = draw_seeds(sc.simulation.seed if seed is None else int(seed), int(draws))
    done = [0, len(names) * len(seeds)]

    def tick() -> None:
        done[0] += 1
        done[1] = max(done)
        if progress is not None:
            progress(done[0], done[1])

    rows = []
    for name in names:
        at = int(sc.simulation.replicas.get(name, sizing[name].replicas))
        worst_att, worst_tgt, met, hour, n_req = _hour_draws(sc, cat, name, seeds, sizing,
                                                             max_requests, tick)
        needed = np.nan
        if search:
            ok = met == len(seeds)
            step = -1 if ok else 1
            needed = float(at) if ok else np.nan
            r = at
            for _ in range(SEARCH_STEPS):
                r += step
                if r < 1:
                    break
                done[1] += len(seeds)
                m = _hour_draws(_with_replicas(sc, name, r), cat, name, seeds, sizing,
                                max_requests, tick)[2]
                if (m == len(seeds)) != ok:  # down: r misses; up: r meets
                    needed = float(r) if not ok else needed
                    break
                if ok:
                    needed = float(r)
        rows.append({
            "deployment": name, "simulated_hour": hour, "simulated_requests": n_req,
            "simulated_slo_attainment": worst_att, "slo_target": worst_tgt,
            "simulated_meets_slo": met == len(seeds), "simulated_draws": len(seeds),
            "simulated_draws_meeting": met, "simulated_replicas_needed": needed,
        })
    return pd.DataFrame(rows, columns=["deployment", "simulated_hour", "simulated_requests",
                                       "simulated_slo_attainment", "slo_target",
                                       "simulated_meets_slo", "simulated_draws",
                                       "simulated_draws_meeting",
                                       "simulated_replicas_needed"])


def report_tables(sc: Scenario, catalog: Any = None) -> dict[str, pd.DataFrame]:
    """Tables for the report's simulation section (contract in planner/report/providers.py).

    Simulates one plan (``[simulation] deployments``, else the cheapest self-hosted option
    serving every class) during the busiest hour of its classes' profiles, cut to
    ``[simulation] report_max_requests`` requests (:func:`simulate_busiest_hour`); the ``slo``
    table's ``note`` column says what was simulated. ``planner simulate`` runs whole days.
    """
    b = simulate_busiest_hour(sc, catalog)
    run, hour, res = b.run, b.hour, b.run.result
    note = b.note + "; planner simulate runs whole days"
    df = res.requests
    requests = df[["class", "route", "status", "ttft_s", "tpot_s", "e2e_s"]].copy()
    for c in ("class", "route", "status"):
        requests[c] = requests[c].astype(str)
    slo = run.slo()
    targets_df = slo[["class", "metric", "slo_s"]].copy()
    slo = slo.drop(columns=["slo_s"])
    slo["note"] = note
    util = run.hourly_utilisation()
    util = util[util["hour"] == hour]  # the drain after the window is not part of the hour
    summary = run.totals()
    summary["note"] = note
    return {
        "requests": requests,
        "slo": slo if not slo.empty else None,
        "slo_targets": targets_df if not targets_df.empty else None,
        "utilisation": util[["hour", "pool", "utilisation", "mean_batch"]],
        "latency": run.latency(),
        "deployments": run.deployments(),
        "summary": summary,
    }


# ---------------------------------------------------------------------- tables of runs
def run_tables(runs: Sequence[ScenarioRun], *, records: bool = True) -> dict[str, pd.DataFrame]:
    """Tidy tables of several runs, each with a ``plan`` column.

    ``latency`` (per class: p50/p90/p99 of TTFT, TPOT, e2e, SLO attainment and target,
    spillover share, goodput), ``slo`` (attainment per SLO bound), ``deployments`` (per pool
    and API: replicas, GPU-hours, tokens, busy share, mean batch, cost), ``totals``,
    ``pools`` (how each pool was built), ``hourly`` (per class and hour), ``utilisation``
    (per pool and hour); with ``records`` also ``requests`` (one row per request) and
    ``replica_utilisation`` (per replica and 5-minute interval).
    """

    def cat(frames):
        frames = [f for f in frames if f is not None and len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def with_plan(run, df):
        df = df.copy()
        df.insert(0, "plan", run.name)
        return df

    out = {
        "latency": cat(r.latency() for r in runs),
        "slo": cat(with_plan(r, r.slo()) for r in runs),
        "deployments": cat(r.deployments() for r in runs),
        "totals": cat(r.totals() for r in runs),
        "pools": cat(with_plan(r, r.pools) for r in runs),
    }
    hourly = []
    for r in runs:
        s = r.result.summary()
        h = s[s["section"] == "hourly"].pivot_table(
            index=["class", "hour"], columns="metric", values="value", sort=False).reset_index()
        h.columns.name = None
        h["hour"] = h["hour"].astype(int) + r.start_hour
        hourly.append(with_plan(r, h))
    out["hourly"] = cat(hourly)
    out["utilisation"] = cat(with_plan(r, r.hourly_utilisation()) for r in runs)
    if records and all(r.result.requests is not None for r in runs):
        out["requests"] = cat(with_plan(r, r.result.requests) for r in runs)
        out["replica_utilisation"] = cat(with_plan(r, r.result.utilisation) for r in runs)
    return {k: v for k, v in out.items() if len(v)}
