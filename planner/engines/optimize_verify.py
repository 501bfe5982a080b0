"""Check an optimised plan by simulation (planner.sim) at its most loaded hour.

The optimiser sizes replicas with the performance model's capacity at each class's SLO, a
closed-loop figure without queueing. Here the chosen plan is replayed request by request: the
hour where some self-hosted pool is most loaded (over all sampled scenarios) is generated as
Poisson arrivals at that hour's routed rates (x the intra-hour peak factor), each routed as the
plan routes it (a cascade sends every request to the small model and the escalated share to
the large one as well), on pools with the plan's replicas and the perf model's step times.
Requests a pool cannot serve within the class TTFT SLO spill to an API when the plan has an API
eligible for the class (``spill_on_slo``); the share that spilled is reported.

A class passes when the share of its requests meeting every SLO bound is at least the SLO
percentile (p90 -> 90%). Requests arriving in the first ``warmup_s`` are simulated but not
counted (the pools start empty).

Arrivals and lengths (:mod:`planner.arrivals`): Poisson arrivals at the hour's mean rate (or
bursty, ``burstiness``); each request has the class's mean input/output tokens for the serving
option's tokenizer (the lengths the capacity was computed at), or lognormal lengths with
coefficient of variation ``length_cv`` around them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from planner.catalog import Catalog
from planner.engines.optimize_data import Problem
from planner.engines.optimize_milp import PlanArrays, option_loads
from planner.errors import PlannerError

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
    with the most requests."""
    load = option_loads(pb, plan)
    reps = np.ceil(plan.blocks - 1e-6) * np.array(
        [pb.options[d].replicas_per_block for d in plan.options])[None, :, None]
    if load.size and np.any(reps > 0):
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(reps > 0, load / reps, 0.0)
        s, _, h = np.unravel_index(int(np.argmax(u)), u.shape)
        return int(s), int(h)
    tot = pb.demand.sum(axis=1)
    s, h = np.unravel_index(int(np.argmax(tot)), tot.shape)
    return int(s), int(h)


def _length(mean: float, cv: float, minimum: int):
    """A length sampler (planner.arrivals) with this mean: fixed, or lognormal with
    coefficient of variation ``cv`` (sigma^2 = ln(1 + cv^2), median = mean / exp(sigma^2 / 2))."""
    from planner.arrivals import FixedLength, LognormalLength

    if cv <= 0:
        return FixedLength(max(minimum, int(round(mean))))
    sigma = math.sqrt(math.log1p(cv * cv))
    median = max(mean, 1.0) / math.exp(0.5 * sigma * sigma)
    return LognormalLength(median, median * math.exp(sigma * 1.2815515655446004),
                           min_tokens=minimum)


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
) -> VerifyResult:
    """Simulate the plan at its busiest (or the given) hour; see the module docstring.

    ``spill=False`` forbids spilling pool traffic to an API (only planned API traffic goes
    there). ``burstiness``: a :class:`planner.arrivals.GammaRenewal` or ``MMPP2`` for
    burstier-than-Poisson arrivals.
    """
    from planner.perf import AcceleratorSpec, LLMSpec, PerfParams, step_model
    from planner.sim import SLO, ApiTarget, PoolSpec, RequestTable, SimPlan, simulate

    if window_s <= warmup_s:
        raise PlannerError(f"verify: window_s ({window_s}) must exceed warmup_s ({warmup_s})")
    s0, h0 = busiest_hour(pb, plan)
    s = s0 if scenario is None else scenario
    h = h0 if hour is None else hour
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    msgs: list[str] = []

    # rates per (pseudo-class) = class routed to one option
    rates: dict[tuple[str, str], float] = {}
    for k, (r, c) in enumerate(plan.pairs):
        f = float(plan.flows[s, k, h]) * pb.peak_factor
        if f <= 0:
            continue
        for leg, mult in pb.routes[r].legs:
            key = (pb.classes[c], leg)
            rates[key] = rates.get(key, 0.0) + f * float(mult[s])
    if not rates:
        return VerifyResult(s, h, pd.DataFrame(), True, ["no traffic in the simulated hour"])

    from planner.arrivals import ArrivalClass, generate_requests

    pseudo_api: list[str] = []
    arrival_classes = []
    merged: dict[str, list] = {}
    for (cname, opt), lam in rates.items():
        o = pb.options[opt]
        kc = o.classes[cname]
        label = f"{cname}@{API_POOL if o.kind == 'api' else opt}"
        if o.kind == "api" and label not in pseudo_api:
            pseudo_api.append(label)
        # several API offerings of one class share the simulator's single API target
        m = merged.setdefault(label, [0.0, float(kc.input_tokens[s]),
                                      float(kc.output_tokens[s])])
        m[0] += lam
    for label, (lam, i_tok, o_tok) in merged.items():
        arrival_classes.append(ArrivalClass(
            label, 0.0, _length(i_tok, length_cv, 0), _length(o_tok, length_cv, 1),
            rates_per_hour=(lam * 3600.0,), burstiness=burstiness))
    # one hour of arrivals at the busiest hour's rates (planner.arrivals), cut to the window
    full = generate_requests(arrival_classes, 1, rng)
    keep = full.arrival_s < window_s
    reqs = RequestTable.from_arrays(full.arrival_s[keep], full.input_tokens[keep],
                                    full.output_tokens[keep], full.classes[keep])

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
        pools.append(PoolSpec(d, sm, replicas=reps, classes=labels))
        pool_rows.append({"deployment": d, "replicas": reps, "classes": ",".join(labels)})
        if spill:
            spill_classes.update(lab for lab in labels if lab.split("@")[0] in api_eligible)
    api = None
    if pseudo_api or spill_classes:
        api = ApiTarget(name=API_POOL, classes=tuple(pseudo_api) + tuple(sorted(spill_classes)))
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
        spilled = (sub["route_kind"] == "api") & pool_req
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
