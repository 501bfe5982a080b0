"""Check an optimised plan by simulation (planner.sim): every hour of the planned day
(:func:`verify_day`), or one hour (:func:`verify_plan`, by default the most loaded).

The optimiser sizes replicas with the performance model's capacity at each class's SLO, a
closed-loop figure without queueing. Here the chosen plan is replayed request by request: the
hour where some self-hosted pool is most loaded (over all sampled scenarios;
:func:`busiest_hour`, i.e. :func:`planner.workload.busiest_hour` of the pools' hourly loads,
whose demand spreads batch-eligible requests evenly) is generated at that hour's routed rates
(x the serving option's intra-hour peak factor), each routed as the plan routes it (a cascade sends every
request to the small model and the escalated share to the large one as well), on pools with
the plan's replicas and the perf model's step times.
Requests a pool cannot serve within the class TTFT SLO spill to an API when the plan has an API
eligible for the class (``spill_on_slo``); the share that spilled is reported. The plan's API
traffic and the spillover meet one simulated API whose latency is ``planner simulate``'s
(:func:`planner.sim.scenario.api_latency`: ``[simulation] api_ttft_s`` /
``api_output_tokens_per_s``, else the catalog's ``ttft_s`` / ``output_tokens_per_s``, else
0.5 s and 60 tokens/s), the slowest of the plan's APIs when several serve
(:func:`plan_api_latency`).

A class passes when the share of its requests meeting every SLO bound is at least the SLO
percentile (p90 -> 90%). Requests arriving in the first ``warmup_s`` are simulated but not
counted (the pools start empty).

Requests (:func:`verify_requests`) come from the generator ``planner simulate`` uses,
:func:`planner.sim.requests_from_scenario.generate_class_requests`: Poisson arrivals at the
hour's routed rate (or bursty, ``burstiness``), one stream per class and serving option
(``class@option``); each request has the class's mean input/output tokens for the serving
option's tokenizer (the lengths the capacity was computed at;
:class:`~planner.sim.requests_from_scenario.TokenLength`), or lognormal lengths with
coefficient of variation ``length_cv`` around them (a fixed context share of the prompt kept
fixed). ``optimize --verify`` takes ``length_cv``, the burstiness and the fixed context from
the scenario (:func:`scenario_traffic`), the traffic the open-loop capacity was sized for.
An hour in which no pool with a performance model carries traffic (API only, stated
capacities) is not simulated and says why. ``round(prefix_cache_hit_share x input)``
tokens of each request are prefix (KV) cache hits that are not prefilled: the workload's
self-hosted ``prefix_cache_hit_share`` (the API billing share ``cached_share`` is not a cache
here), taken from ``verify_plan(prefix_cache_hit_share=...)`` or else from the problem's
``ClassCoef.prefix_cache_hit_share`` (per option, per scenario) when it carries one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from planner.catalog import Catalog
from planner.engines.optimize_data import Problem
from planner.engines.optimize_milp import PlanArrays, option_loads
from planner.errors import PlannerError
from planner.requests import RequestTable
from planner.sim.requests_from_scenario import ClassStream, TokenLength, generate_class_requests
from planner.workload import busiest_hour as _busiest

API_POOL = "api"


@dataclass
class VerifyResult:
    """Simulated SLO attainment of a plan at one hour.

    table : one row per class: requests, slo_attainment, target, spillover_share,
        ttft_p90_s, tpot_p90_s, passed.
    """

    scenario: int
    hour: int
    table: pd.DataFrame
    passed: bool
    messages: list[str] = field(default_factory=list)
    pools: pd.DataFrame = field(default_factory=pd.DataFrame)


def busiest_hour(pb: Problem, plan: PlanArrays) -> tuple[int, int]:
    """(scenario, hour) where a self-hosted pool runs closest to its capacity; else the hour
    with the most requests (:func:`planner.workload.busiest_hour` of the pools' load in
    replicas / their replicas, else of the demand)."""
    load = option_loads(pb, plan)
    reps = np.ceil(plan.blocks - 1e-6) * np.array(
        [pb.options[d].replicas_per_block for d in plan.options])[None, :, None]
    if load.size and np.any(reps > 0):
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(reps > 0, load / reps, 0.0)
        s, _, h = _busiest(u)
        return s, h
    s, h = _busiest(pb.demand.sum(axis=1))
    return s, h


def _prefix_share(kc, s: int) -> float:
    """The problem's prefix-cache hit share of one option serving one class in scenario s."""
    v = getattr(kc, "prefix_cache_hit_share", None)
    if v is None:
        return 0.0
    v = np.asarray(v, dtype=float)
    return float(v[s] if v.ndim else v)


def scenario_traffic(sc, cat: Catalog, *, model=None) -> dict:
    """The request traffic a scenario's capacities are sized for, and its APIs' latency, as
    :func:`verify_plan` keyword arguments.

    - ``length_cv`` and ``burstiness``: ``[simulation] length_cv`` and ``burstiness_cv`` (a
      Gamma renewal, :func:`planner.sim.scenario.scenario_burstiness`; Poisson when unset);
    - ``fixed_context_share``: per ``class@deployment`` (and per class, in the catalog's
      default tokenizer), the share of the prompt that is fixed context, ``1 -``
      :func:`planner.model.capacity.variable_prompt_share` of the class's input tokens
      (:meth:`Model.length <planner.model.evaluate.Model.length>`) and prompt tokens
      (:meth:`Model.klass <planner.model.evaluate.Model.klass>`) at the medians, in the
      deployment's tokenizer (the option's, as the model compiled it): the share the
      open-loop capacity (:func:`planner.model.capacity.class_traffic`) does not spread with
      ``length_cv``;
    - ``api_latency``: per API deployment, ``(ttft_s, output_tokens_per_s)`` as ``planner
      simulate`` takes it (:func:`planner.sim.scenario.api_latency`: ``[simulation]
      api_ttft_s`` / ``api_output_tokens_per_s``, else the catalog's, else the simulator's
      defaults).

    ``model``: the scenario's compiled :class:`~planner.model.evaluate.Model` (the one the
    problem was priced with, :func:`planner.engines.optimize_data.problem_model`); default: one
    compiled here. ``planner simulate`` (:func:`planner.sim.scenario.scenario_streams`)
    generates the same lengths and arrivals, so the verification replays the traffic the plan
    was sized for."""
    from planner.model.capacity import variable_prompt_share
    from planner.sim.scenario import api_latency, scenario_burstiness

    if model is None:
        from planner.engines.optimize_data import problem_model

        model = problem_model(sc, cat)
    ctx = model.ctx()
    tokenizers: dict[str, str | None] = {"": None}  # "" -> the class-level default
    tokenizers.update((o.name, o.tokenizer) for o in model.options)
    latency = {o.name: api_latency(o.row, sc.simulation) for o in model.options
               if o.kind == "api"}
    ctx_share = {}
    for cname, wc in sc.workload.items():
        for name, tok in tokenizers.items():
            inp = float(model.length(ctx, wc.input, f"workload.{cname}.input", tok))
            prompt = float(model.klass(ctx, cname, tok)[1])
            share = 1.0 - variable_prompt_share(inp, prompt) if prompt else 0.0
            ctx_share[f"{cname}@{name}" if name else cname] = share
    return {"length_cv": float(sc.simulation.length_cv), "burstiness": scenario_burstiness(sc),
            "fixed_context_share": ctx_share, "api_latency": latency}


def plan_api_latency(pb: Problem, plan: PlanArrays, s: int, h: int, cat: Catalog, classes,
                     api_latency: Mapping[str, tuple[float, float]] | None = None,
                     ) -> tuple[float, float, list[str]]:
    """Latency of the simulator's one API target for the API traffic of ``classes`` in
    scenario ``s``, hour ``h``: the slowest (largest TTFT, fewest output tokens/s) of the API
    deployments the plan routes them to in that hour, or, when it routes them to none (they
    only spill), of every API deployment that may serve one of them. Each deployment's
    ``(ttft_s, output_tokens_per_s)`` comes from ``api_latency`` (:func:`scenario_traffic`),
    else :func:`planner.sim.scenario.api_latency` of its catalog row (the catalog's figures,
    else the simulator's defaults). Returns ``(ttft_s, output_tokens_per_s, deployments)``."""
    from planner.sim.scenario import api_latency as catalog_latency

    classes = set(classes)
    used = []
    for k, (r, c) in enumerate(plan.pairs):
        if pb.classes[c] not in classes or float(plan.flows[s, k, h]) <= 0:
            continue
        used += [leg for leg, _ in pb.routes[r].legs
                 if pb.options[leg].kind == "api" and leg not in used]
    names = used or [d for d, o in pb.options.items()
                     if o.kind == "api" and any(c in o.classes for c in classes)]
    figs = []
    for d in names:
        lat = (api_latency or {}).get(d)
        if lat is None:
            lat = catalog_latency(cat.api(pb.options[d].offering))
        figs.append((float(lat[0]), float(lat[1])))
    if not figs:  # no API of the plan serves them: the simulator's defaults
        figs = [catalog_latency({})]
    return max(f[0] for f in figs), min(f[1] for f in figs), names


def verify_streams(
    pb: Problem,
    plan: PlanArrays,
    s: int,
    h: int,
    *,
    length_cv: float = 0.0,
    prefix_cache_hit_share: Mapping[str, float] | None = None,
    fixed_context_share: Mapping[str, float] | None = None,
) -> tuple[list[ClassStream], list[str]]:
    """What :func:`verify_requests` generates in scenario ``s``, hour ``h`` of the plan: one
    :class:`ClassStream` per class and serving option (label ``class@option``, ``class@api``
    for every API offering of the class together) at the plan's routed rate x the serving
    option's peak factor (requests in the hour), and the API labels.

    Lengths: the option's prompt and output tokens for the class (``ClassCoef``, the
    capacity's); the prompt's fixed context is ``round(prompt x fixed_context_share)`` with
    the share of ``class@option``, else of the class (0 when neither is given), and only the
    rest spreads with ``length_cv``. No streams when the plan routes no traffic in that hour.
    """
    rates: dict[tuple[str, str], float] = {}
    for k, (r, c) in enumerate(plan.pairs):
        f = float(plan.flows[s, k, h])
        if f <= 0:
            continue
        for leg, mult in pb.routes[r].legs:
            key = (pb.classes[c], leg)
            pf = pb.options[leg].peak_factor
            rates[key] = rates.get(key, 0.0) + f * float(mult[s]) * (
                1.0 if pf is None else float(pf[s]))
    shares = fixed_context_share or {}
    pseudo_api: list[str] = []
    merged: dict[str, list] = {}
    for (cname, opt), lam in rates.items():
        o = pb.options[opt]
        kc = o.classes[cname]
        label = f"{cname}@{API_POOL if o.kind == 'api' else opt}"
        if o.kind == "api" and label not in pseudo_api:
            pseudo_api.append(label)
        share = (float(prefix_cache_hit_share[cname])
                 if prefix_cache_hit_share is not None and cname in prefix_cache_hit_share
                 else _prefix_share(kc, s))
        i_tok = float(kc.input_tokens[s])
        fixed = shares.get(f"{cname}@{opt}", shares.get(cname, 0.0))
        ctx = float(round(i_tok * float(fixed)))
        # several API offerings of one class share the simulator's single API target
        m = merged.setdefault(label, [0.0, i_tok - ctx, ctx, float(kc.output_tokens[s]), share])
        m[0] += lam
    streams = [ClassStream(label, (lam * 3600.0,), TokenLength(i_tok, cv=length_cv),
                           TokenLength(o_tok, cv=length_cv), fixed_context_tokens=int(ctx),
                           prefix_cache_hit_share=share)
               for label, (lam, i_tok, ctx, o_tok, share) in merged.items()]
    return streams, pseudo_api


def verify_requests(
    pb: Problem,
    plan: PlanArrays,
    s: int,
    h: int,
    rng: np.random.Generator,
    *,
    window_s: float = 3600.0,
    length_cv: float = 0.0,
    burstiness=None,
    prefix_cache_hit_share: Mapping[str, float] | None = None,
    fixed_context_share: Mapping[str, float] | None = None,
) -> tuple[RequestTable | None, list[str]]:
    """The requests of scenario ``s``, hour ``h`` of the plan, cut to ``window_s``.

    The streams of :func:`verify_streams` (see there and the module docstring), one hour of
    arrivals (``burstiness``: a bursty arrival process, else Poisson). Returns the requests
    (None when the plan routes no traffic in that hour) and the API labels.
    """
    streams, pseudo_api = verify_streams(pb, plan, s, h, length_cv=length_cv,
                                         prefix_cache_hit_share=prefix_cache_hit_share,
                                         fixed_context_share=fixed_context_share)
    if not streams:
        return None, []
    # one hour of arrivals at the busiest hour's rates, cut to the window
    full = generate_class_requests(streams, 1, rng, burstiness=burstiness)
    keep = full.arrival_s < window_s
    reqs = RequestTable.from_arrays(full.arrival_s[keep], full.input_tokens[keep],
                                    full.output_tokens[keep], full.classes[keep],
                                    cached_input_tokens=full.cached_input_tokens[keep])
    return reqs, pseudo_api


def verify_plan(
    pb: Problem,
    plan: PlanArrays,
    cat: Catalog,
    *,
    scenario: int | None = None,
    hour: int | None = None,
    window_s: float = 600.0,
    warmup_s: float = 60.0,
    length_cv: float = 0.0,
    seed: int = 0,
    spill: bool = True,
    burstiness=None,
    prefix_cache_hit_share: Mapping[str, float] | None = None,
    fixed_context_share: Mapping[str, float] | None = None,
    api_latency: Mapping[str, tuple[float, float]] | None = None,
) -> VerifyResult:
    """Simulate the plan at its busiest (or the given) hour; see the module docstring.

    ``spill=False`` forbids spilling pool traffic to an API (only planned API traffic goes
    there). ``burstiness``: a :class:`planner.arrivals.GammaRenewal` or ``MMPP2`` for
    burstier-than-Poisson arrivals. ``prefix_cache_hit_share``: class -> share of each prompt
    not prefilled (default: the problem's, else none). ``fixed_context_share``: class -> share
    of the prompt that is fixed context (see :func:`verify_requests`);
    ``api_latency``: API deployment -> ``(ttft_s, output_tokens_per_s)`` of the simulated
    API (:func:`plan_api_latency`; default the catalog's figures, else the simulator's).
    :func:`scenario_traffic` gives all four from a scenario.
    """
    from planner.perf import AcceleratorSpec, LLMSpec, PerfParams, step_model
    from planner.sim import SLO, ApiTarget, PoolSpec, SimPlan, simulate

    if window_s <= warmup_s:
        raise PlannerError(f"verify: window_s ({window_s}) must exceed warmup_s ({warmup_s})")
    s0, h0 = busiest_hour(pb, plan)
    s = s0 if scenario is None else scenario
    h = h0 if hour is None else hour
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    msgs: list[str] = []

    reqs, pseudo_api = verify_requests(pb, plan, s, h, rng, window_s=window_s,
                                       length_cv=length_cv, burstiness=burstiness,
                                       prefix_cache_hit_share=prefix_cache_hit_share,
                                       fixed_context_share=fixed_context_share)
    if reqs is None:
        return VerifyResult(s, h, pd.DataFrame(), True, ["no traffic in the simulated hour"])

    pools = []
    pool_rows = []
    spill_classes: set[str] = set()
    api_eligible = {c for c in pb.classes
                    if any(o.kind == "api" and c in o.classes for o in pb.options.values())}
    for j, d in enumerate(plan.options):
        o = pb.options[d]
        labels = tuple(lab for lab in reqs.class_names if lab.endswith(f"@{d}"))
        # the stochastic plan's hourly counts are continuous (a fluid): round them up
        reps = int(math.ceil(plan.blocks[s, j, h] - 1e-6)) * o.replicas_per_block
        if not labels:
            continue
        if reps <= 0:
            raise PlannerError(f"verify: {d} carries traffic in hour {h} but has no replicas")
        if "model" not in o.perf or o.perf.get("stated"):
            msgs.append(f"{d}: no performance model (stated capacity); not simulated")
            continue
        llm = LLMSpec.from_row(cat.llm(o.perf["model"]))
        acc = AcceleratorSpec.from_row(cat.accelerator(o.perf["accelerator"]))
        params = PerfParams.from_mapping(o.perf["perf"]) if o.perf.get("perf") else None
        sm = step_model(llm, acc, o.perf["gpus"], o.perf["precision"], params)
        # the same iteration model as planner simulate (chunked prefill unless the
        # deployment's perf parameters say otherwise)
        pools.append(PoolSpec(d, sm, replicas=reps, classes=labels,
                              chunked_prefill=bool(sm.params.chunked_prefill),
                              max_tokens_per_step=int(sm.params.max_tokens_per_step)))
        pool_rows.append({"deployment": d, "replicas": reps, "classes": ",".join(labels)})
        if spill:
            spill_classes.update(lab for lab in labels if lab.split("@")[0] in api_eligible)
    if not pools:
        # nothing runs on a GPU pool the simulator models: the planned API traffic would only
        # meet the API's fixed latency (no queue: the provider's capacity is not modelled), and
        # a pool with a stated capacity is taken as given
        why = ("every request goes to an API" if all(lab.endswith(f"@{API_POOL}")
                                                      for lab in reqs.class_names)
               else "no pool with a performance model carries traffic")
        return VerifyResult(s, h, pd.DataFrame(), True, msgs + [
            f"hour {h}: {why}; nothing simulated"])
    api = None
    if pseudo_api or spill_classes:
        api_labels = tuple(pseudo_api) + tuple(sorted(spill_classes))
        ttft_s, tokens_per_s, names = plan_api_latency(
            pb, plan, s, h, cat, {lab.split("@")[0] for lab in api_labels}, api_latency)
        api = ApiTarget(name=API_POOL, ttft_s=ttft_s, output_tokens_per_s=tokens_per_s,
                        classes=api_labels)
        if len(names) > 1:
            msgs.append(f"API traffic meets the slowest of {', '.join(names)}: TTFT "
                        f"{ttft_s:g} s, {tokens_per_s:g} output tokens/s")
    slos = {}
    for lab in reqs.class_names:
        v = pb.slo[lab.split("@")[0]]
        slos[lab] = SLO(ttft_s=v["ttft_s"], tpot_s=v["tpot_s"], e2e_s=v["e2e_s"])
    res = simulate(SimPlan(pools=tuple(pools), api=api, slos=slos), reqs, seed=seed)

    df = res.requests
    df = df[df["arrival_s"] >= warmup_s]
    base = df["class"].astype(str).str.split("@").str[0]
    planned_api = df["class"].astype(str).str.endswith(f"@{API_POOL}")
    rows = []
    for cname in pb.classes:
        m = base == cname
        if not m.any():
            continue
        sub = df[m]
        target = pb.slo[cname]["percentile"] / 100.0
        done = sub["status"].isin(["completed", "dropped"])
        att = float(sub.loc[done, "meets_slo"].mean()) if done.any() else math.nan
        pool_req = ~planned_api[m]
        at_api = sub["route_kind"] == "api"
        spilled = at_api & pool_req
        if api is not None and (at_api & done).any() and \
                float(sub.loc[at_api & done, "meets_slo"].mean()) < target - 1e-12:
            # the API's fixed latency breaks the class SLO: GPUs cannot fix that, and the
            # optimiser's cost model only compares the catalog's median TTFT with the SLO
            v = pb.slo[cname]
            bounds = ", ".join(f"{k.removesuffix('_s').upper()} {v[k]:g} s"
                               for k in ("ttft_s", "tpot_s", "e2e_s")
                               if v.get(k) is not None and math.isfinite(v[k]))
            msg = (f"{cname}: the requests the API serves miss the SLO ({bounds}) at the "
                   f"simulated API's latency (TTFT {api.ttft_s:g} s, "
                   f"{api.output_tokens_per_s:g} output tokens/s): more GPUs do not fix that")
            if msg not in msgs:
                msgs.append(msg)
        rows.append({
            "class": cname, "requests": int(len(sub)), "slo_attainment": att,
            "target": target,
            "spillover_share": float(spilled.sum() / max(1, pool_req.sum())),
            "dropped": int((sub["status"] == "dropped").sum()),
            "ttft_p90_s": float(sub["ttft_s"].quantile(0.9)),
            "tpot_p90_s": float(sub["tpot_s"].quantile(0.9)),
            "queue_mean_s": float(sub["queue_s"].mean()),
            "passed": bool(att >= target - 1e-12) if not math.isnan(att) else False,
        })
    table = pd.DataFrame(rows)
    passed = bool(table["passed"].all()) if len(table) else True
    return VerifyResult(s, h, table, passed, msgs, pd.DataFrame(pool_rows))


#: Requests simulated per hour by :func:`verify_day` (each hour's window is cut so that
#: about this many requests arrive in it, but never below :data:`MIN_WINDOW_S`).
MAX_REQUESTS_PER_HOUR = 3000
#: The shortest window :func:`verify_day` simulates of an hour, seconds.
MIN_WINDOW_S = 120.0


@dataclass
class DayVerifyResult:
    """Simulated SLO attainment of a plan in every hour of its profile (one scenario).

    hours : one row per (hour, class): scenario, hour, window_s, class, requests,
        slo_attainment, target, spillover_share, dropped, ttft_p90_s, tpot_p90_s,
        queue_mean_s, passed.
    summary : one row per class over the day: requests, slo_attainment (all simulated
        requests), worst_hour, worst_hour_attainment, target, spillover_share, dropped,
        ttft_p90_s and tpot_p90_s (worst hour), passed (every hour meets the target).
    """

    scenario: int
    hours: pd.DataFrame
    summary: pd.DataFrame
    passed: bool
    messages: list[str] = field(default_factory=list)

    @property
    def failed_hours(self) -> list[int]:
        if self.hours.empty:
            return []
        return sorted(int(h) for h in self.hours.loc[~self.hours["passed"], "hour"].unique())


def hour_window(rate_per_s: float, window_s: float,
                max_requests: int | None = MAX_REQUESTS_PER_HOUR) -> float:
    """Seconds of an hour :func:`verify_day` simulates: ``window_s``, cut to about
    ``max_requests`` arrivals at ``rate_per_s`` but not below :data:`MIN_WINDOW_S` (nor above
    ``window_s``); the whole ``window_s`` when ``max_requests`` is None."""
    if max_requests is None or rate_per_s <= 0:
        return float(window_s)
    return float(min(window_s, max(MIN_WINDOW_S, max_requests / rate_per_s)))


def verify_day(
    pb: Problem,
    plan: PlanArrays,
    cat: Catalog,
    *,
    scenario: int | None = None,
    hours: list[int] | None = None,
    window_s: float = 600.0,
    warmup_s: float = 60.0,
    max_requests_per_hour: int | None = MAX_REQUESTS_PER_HOUR,
    seed: int = 0,
    **kw,
) -> DayVerifyResult:
    """Simulate every hour of the planned day (or week: every profile hour; or ``hours``)
    of one scenario (default: the one with the busiest hour, :func:`busiest_hour`) with
    :func:`verify_plan`, the plan's replicas and routing of that hour.

    Each hour simulates ``window_s`` seconds, cut to about ``max_requests_per_hour``
    arrivals (at least :data:`MIN_WINDOW_S`; None: no cap) so a whole day stays fast; the
    warm-up is ``min(warmup_s, window / 4)``. The plan passes when every class meets its SLO
    percentile in every simulated hour. ``kw`` goes to :func:`verify_plan`.
    """
    s = busiest_hour(pb, plan)[0] if scenario is None else scenario
    P = pb.periods
    rate = plan.flows[s].sum(axis=0)  # routed requests/s per hour (all routes)
    rows, msgs = [], []
    idle: dict[str, int] = {}  # why hours were not simulated -> how many
    capped = shared = 0
    done: dict[tuple, pd.DataFrame] = {}
    peak = max((float(o.peak_factor[s]) for o in pb.options.values()
                if o.peak_factor is not None), default=1.0)
    for h in (range(P) if hours is None else hours):
        if rate[h] <= 0:
            continue
        # an hour with the same routed rates and replicas as one simulated already has the
        # same request and pool distribution: it shares that hour's result
        key = (tuple(np.round(plan.flows[s, :, h], 9)), tuple(np.round(plan.blocks[s, :, h], 6)))
        win = hour_window(float(rate[h]) * peak, window_s, max_requests_per_hour)
        if key in done:
            shared += 1
            rows.append(done[key].assign(hour=int(h)))
            continue
        vr = verify_plan(pb, plan, cat, scenario=s, hour=int(h), window_s=win,
                         warmup_s=min(warmup_s, win / 4.0), seed=seed + int(h), **kw)
        for m in vr.messages:
            if m.endswith("; nothing simulated"):
                why = m.split(": ", 1)[1].removesuffix("; nothing simulated")
                idle[why] = idle.get(why, 0) + 1
            elif m not in msgs:
                msgs.append(m)
        if len(vr.table):
            capped += win < window_s
            t = vr.table.assign(scenario=s, hour=int(h), window_s=win)
            done[key] = t
            rows.append(t)
    if shared:
        msgs.append(f"{shared} hour(s) with the same routed rates and replicas as a simulated "
                    "hour share its result")
    if capped:
        msgs.append(f"{capped} busy hour(s) simulated for less than {window_s:g} s: about "
                    f"{max_requests_per_hour:,} requests an hour (at least "
                    f"{MIN_WINDOW_S:g} s) keep the whole-day check fast")
    why = ("the simulator checks self-hosted pools with a performance model: an API's "
           "latency is the provider's, a stated capacity is taken as given")
    if not rows:
        msgs.append("verification: nothing simulated: " + (
            "; ".join(idle) if idle else "no traffic") + f" ({why})")
    elif idle:
        msgs.append("; ".join(f"{n} hour(s) not simulated: {w}" for w, n in idle.items())
                    + f" ({why})")
    cols = ["scenario", "hour", "window_s", "class", "requests", "slo_attainment", "target",
            "spillover_share", "dropped", "ttft_p90_s", "tpot_p90_s", "queue_mean_s", "passed"]
    table = pd.concat(rows, ignore_index=True)[cols] if rows else pd.DataFrame(columns=cols)
    summ = []
    for cname, g in table.groupby("class", sort=False):
        n = g["requests"].to_numpy(float)
        att = g["slo_attainment"].to_numpy(float)
        ok = np.isfinite(att)
        worst = g.iloc[int(np.nanargmin(np.where(ok, att, np.inf)))] if ok.any() else g.iloc[0]
        summ.append({
            "class": cname, "requests": int(n.sum()),
            "slo_attainment": float(np.sum(att[ok] * n[ok]) / max(n[ok].sum(), 1.0))
            if ok.any() else math.nan,
            "worst_hour": int(worst["hour"]),
            "worst_hour_attainment": float(worst["slo_attainment"]),
            "target": float(g["target"].iloc[0]),
            "spillover_share": float(np.sum(g["spillover_share"].to_numpy(float) * n) /
                                     max(n.sum(), 1.0)),
            "dropped": int(g["dropped"].sum()),
            "ttft_p90_s": float(g["ttft_p90_s"].max()),
            "tpot_p90_s": float(g["tpot_p90_s"].max()),
            "hours": int(len(g)), "hours_passed": int(g["passed"].sum()),
            "passed": bool(g["passed"].all()),
        })
    summary = pd.DataFrame(summ)
    passed = bool(table["passed"].all()) if len(table) else True
    return DayVerifyResult(s, table, summary, passed, msgs)
