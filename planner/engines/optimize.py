"""Optimiser: the cheapest mix of API, rented and bought capacity, routing and fine-tunes.

Given the workload classes (with their diurnal profiles, SLOs and quality needs) and the
deployment candidates of a scenario, choose

- on-prem servers per option (bought, amortised) and cloud fleets billed always-on, for an
  active window, reserved or committed (first stage: one count for the horizon),
- scale-to-zero (on-demand / spot) replicas in every hour of the profile,
- the share of each class sent to each model (API, self-hosted, fine-tuned, cascade),
- which fine-tunes to run (a yes/no with its one-off cost, retries included),

at the least monthly cost, subject to demand, per-class SLO capacity (performance model),
quality, budget, API rate limits, on-prem power/rack limits, a minimum on-prem share and a
maximum share per provider. The mixed-integer program is built, solved (HiGHS through
``scipy.optimize.milp``) and decoded as separate steps (:mod:`.optimize_milp`); every returned
solution is re-checked against all constraints from the problem's data, its LP relaxation bound
and gap are reported, and an infeasible problem is explained.

Uncertainty (``stochastic=True``): a sample-average approximation over Monte Carlo scenarios of
the scenario's distributions (demand, prices, lengths ...; drawn by the Monte Carlo sampler,
:func:`sample_inputs`, and priced all at once by the one model): first stage = servers, fixed
cloud fleets, fine-tunes; second stage per scenario = scale-to-zero replicas (continuous, a
fluid approximation, in the solve) and routing. The plan returned is whole replicas: each
scenario's hourly counts are then re-solved in whole replicas at the chosen first stage
(:func:`.optimize_stochastic.whole_replicas`; expected counts are reported apart from the
whole-replica decision in :func:`plan_view` and :func:`hourly_view`). Objective: expected monthly cost, or expected + lambda x CVaR_alpha
(Rockafellar & Uryasev 2000: CVaR = min_eta eta + E[(cost - eta)+] / (1 - alpha)). The value of
the stochastic solution VSS = EEV - RP (Birge 1982): RP is the stochastic optimum, EEV the
expected cost of fixing the first stage planned for the mean scenario and adapting the second
stage in every scenario. Small sample-average problems are solved as one MILP (the extensive
form); larger ones by L-shaped (Benders) decomposition (:mod:`.optimize_stochastic`), which
solves one small LP per scenario and a master MILP over the first stage.

Verification (``verify=True``): the plan is simulated (:mod:`planner.sim`) in every hour of
the planned day (:func:`.optimize_verify.verify_day`; each hour's window capped to a few
thousand requests); when a class misses its SLO target in some hour, the utilisation target is lowered step by step
(more headroom), re-optimised and re-simulated until it passes, and the extra cost is reported.

Sensitivity: :func:`sensitivity` scans traffic and price multipliers and bisects to where the
optimal mix changes. :func:`compare_subsets` prices the mix against each GPU type (or kind,
or model) alone.

Public API: :func:`optimize`, :func:`optimize_problem`, :func:`sensitivity`,
:func:`compare_subsets`, :func:`diagnose_infeasibility`, :class:`OptimizeOptions`,
:class:`OptimizeResult`; the pieces (``build_problem``, ``build_milp``, ``solve_milp``,
``decode``, ``check_plan``) live in :mod:`.optimize_data` and :mod:`.optimize_milp`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from planner.catalog import Catalog, load_catalog
from planner.config import Scenario
from planner.distributions import sample_many, spawn_generators
from planner.engines.optimize_data import (
    CascadeSpec,
    OptimizeOptions,
    Problem,
    build_problem,
    problem_model,
)
from planner.engines.optimize_milp import (
    OPTIONAL_GROUPS,
    CheckReport,
    Milp,
    PlanArrays,
    build_milp,
    check_plan,
    decode,
    option_loads,
    plan_costs,
    solve_milp,
)
from planner.engines.optimize_multiyear import solve_multiyear
from planner.engines.optimize_stochastic import (
    _objective,
    scenario_raw_violations,
    solve_benders,
    whole_replicas,
)
from planner.engines.optimize_verify import (
    MAX_REQUESTS_PER_HOUR,
    busiest_hour,
    scenario_traffic,
    verify_day,
)
from planner.engines.optimize_year import YearSettings, solve_year
from planner.engines.risk.compiled import compile_scenario
from planner.errors import PlannerError
from planner.model.evaluate import Model
from planner.stats import cvar
from planner.uncertain import scenario_at, uncertain_inputs

__all__ = [
    "CascadeSpec",
    "OptimizeOptions",
    "OptimizeResult",
    "SensitivityResult",
    "compare_subsets",
    "diagnose_infeasibility",
    "hourly_view",
    "optimize",
    "optimize_long",
    "optimize_problem",
    "optimize_years",
    "plan_view",
    "report_tables",
    "sample_inputs",
    "sample_scenarios",
    "sensitivity",
    "status_line",
]

_EMPTY = pd.DataFrame()


@dataclass
class OptimizeResult:
    """What the optimiser decided, and how far to trust it.

    Attributes
    ----------
    status : str
        ``optimal`` (within the gap), ``time_limit`` (best plan found when time ran out),
        ``infeasible`` (see ``infeasibility`` and ``messages``), or ``error``.
    objective_usd_per_month : float
        Solver objective: the monthly cost (expected cost in the stochastic version; plus
        lambda x CVaR with ``objective = "cvar"``). NaN without a plan.
    gap : float
        Relative MIP gap reported by HiGHS.
    lp_bound : float
        Objective of the LP relaxation (a lower bound on any plan's cost).
    time_s, lp_time_s, solve_time_s : float
        Wall time of the whole call, of the LP relaxation, and of building and solving
        (without the verification by simulation).
    check : CheckReport
        The plan re-checked against every constraint (``check.passed``; False when there is
        no plan). ``trusted`` combines it with the status.
    plan : one row per deployment: blocks/replicas/GPUs, share of requests, cost.
    hourly : scenario, hour, deployment: replicas, load, utilisation, requests/s.
    routing : class x route: share of the class's requests, requests/month, quality score.
    flows : scenario, hour, class, route: requests/s (non-zero only).
    finetune : fine-tune options: chosen, one-off cost, monthly share.
    costs : deployment x component: USD/month (mean over scenarios).
    scenarios : stochastic: monthly cost of the plan in each sampled scenario.
    stochastic : stochastic: RP, EV, EEV, VSS, cost quantiles and CVaR.
    verification : simulated SLO attainment per class over the planned day (every hour of
        the profile; ``hour`` is the worst one, ``passed`` every hour meets the target).
    verification_hours : the same per simulated hour and class.
    year, aggregation : long horizon (``horizon_hours``): the typical-day rounds (plan,
        full-year cost, lower bound, gap) and the aggregation error (:mod:`.optimize_year`).
    purchases, years : multi-year plan (``plan_years``, :mod:`.optimize_multiyear`): the
        reserved blocks bought in each year and each year's cost and fleet; the plan tables
        are year 1's, ``objective_usd_per_month`` the horizon's total over its months.
    headroom : utilisation targets tried when the simulated plan missed its SLO.
    infeasibility : constraint groups and whether dropping each restores feasibility.
    messages : plain-language notes (explanations, warnings).
    objective : str
        ``expected`` (the expected monthly cost) or ``cvar`` (expected + lambda x CVaR).
    """

    scenario: str
    status: str
    objective_usd_per_month: float
    gap: float
    lp_bound: float
    time_s: float
    lp_time_s: float
    check: CheckReport
    plan: pd.DataFrame = field(default_factory=pd.DataFrame)
    hourly: pd.DataFrame = field(default_factory=pd.DataFrame)
    routing: pd.DataFrame = field(default_factory=pd.DataFrame)
    flows: pd.DataFrame = field(default_factory=pd.DataFrame)
    finetune: pd.DataFrame = field(default_factory=pd.DataFrame)
    costs: pd.DataFrame = field(default_factory=pd.DataFrame)
    scenarios: pd.DataFrame = field(default_factory=pd.DataFrame)
    stochastic: pd.DataFrame = field(default_factory=pd.DataFrame)
    verification: pd.DataFrame = field(default_factory=pd.DataFrame)
    verification_hours: pd.DataFrame = field(default_factory=pd.DataFrame)
    headroom: pd.DataFrame = field(default_factory=pd.DataFrame)
    infeasibility: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: long horizon (``horizon_hours``): one row per typical-day aggregation tried
    year: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: long horizon: aggregation error and bounds as (metric, value)
    aggregation: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: multi-year plan (``plan_years``): reserved blocks bought per option and year
    purchases: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: multi-year plan: one row per year (traffic factor, cost) and its fleet per option
    years: pd.DataFrame = field(default_factory=pd.DataFrame)
    messages: tuple[str, ...] = ()
    n_scenarios: int = 1
    gap_target: float = math.nan
    milp_shape: tuple[int, int] = (0, 0)
    objective: str = "expected"  # what objective_usd_per_month is: "expected" or "cvar"
    solve_time_s: float = math.nan  # building and solving (time_s less simulation)
    problem: Problem | None = field(default=None, repr=False)
    solution: PlanArrays | None = field(default=None, repr=False)

    @property
    def trusted(self) -> bool:
        """A plan exists, the solver finished or hit its time limit, and the re-check passed."""
        return self.status in ("optimal", "time_limit") and self.check.passed

    def summary(self) -> pd.DataFrame:
        """Key figures as a tidy (metric, value) table."""
        rows = [
            ("status", self.status), ("objective_usd_per_month", self.objective_usd_per_month),
            ("gap", self.gap), ("lp_bound_usd_per_month", self.lp_bound),
            ("time_s", self.time_s), ("lp_time_s", self.lp_time_s),
            ("check_passed", self.check.passed), ("scenarios", self.n_scenarios),
            ("rows", self.milp_shape[0]), ("columns", self.milp_shape[1]),
        ]
        return pd.DataFrame(rows, columns=["metric", "value"])

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table by name (for writing tidy outputs)."""
        return {
            "summary": self.summary(), "plan": self.plan, "hourly": self.hourly,
            "routing": self.routing, "flows": self.flows, "finetune": self.finetune,
            "costs": self.costs, "scenarios": self.scenarios, "stochastic": self.stochastic,
            "verification": self.verification,
            "verification_hours": self.verification_hours, "headroom": self.headroom,
            "infeasibility": self.infeasibility, "violations": self.check.violations,
            "messages": pd.DataFrame({"message": list(self.messages)}),
            **({"year": self.year, "aggregation": self.aggregation} if len(self.year) else {}),
            **({"purchases": self.purchases, "years": self.years} if len(self.years) else {}),
        }


# --------------------------------------------------------------------------------------------
# scenarios for the stochastic version


def sample_inputs(
    sc: Scenario, n: int, seed: int | None, catalog: Catalog
) -> tuple[dict[str, np.ndarray], pd.DataFrame, list[str], Model | None]:
    """Draw ``n`` values of the scenario's distribution-valued inputs.

    Uses the Monte Carlo engine's sampler (:func:`planner.engines.risk.compiled.compile_scenario`,
    correlations included; same seed, same draws). Returns the values (key path -> (n,)
    array), the same as a table (one row per scenario), notes, and the model they were drawn
    with (``None`` when the scenario has no distributions), to price them all at once with
    :func:`build_problem` (``values=``, ``model=``).
    """
    if n < 1:
        raise PlannerError(f"n_scenarios: expected at least 1, got {n}")
    known = uncertain_inputs(sc)
    if not known:
        return {}, pd.DataFrame(index=[0]), [
            "the scenario has no distributions: the stochastic plan is the deterministic one"
        ], None
    notes = []
    try:
        model: Model = compile_scenario(sc, catalog=catalog)
        vals = model.draw(np.random.SeedSequence(seed), 0, n)
    except PlannerError as exc:  # the sampler could not compile the scenario
        notes.append(f"correlations ignored ({exc}); inputs sampled independently")
        rng = spawn_generators(seed, 1)[0]
        vals = sample_many(rng, {k: u.dist for k, u in known.items()}, n)
        model = None
    return dict(vals), pd.DataFrame(vals), notes, model


def sample_scenarios(
    sc: Scenario, n: int, seed: int | None, catalog: Catalog
) -> tuple[list[Scenario], pd.DataFrame, list[str]]:
    """The draws of :func:`sample_inputs` materialised as scenarios
    (:func:`planner.uncertain.scenario_at`, one pydantic parse each): the optimiser prices the
    values directly; this is for checks against the deterministic problem of one sample."""
    vals, drawn, notes, _ = sample_inputs(sc, n, seed, catalog)
    if not vals:
        return [sc], drawn, notes
    scen = [scenario_at(sc, {k: float(v[i]) for k, v in vals.items()}, catalog=catalog)
            for i in range(n)]
    return scen, drawn, notes


# --------------------------------------------------------------------------------------------
# infeasibility


def _no_check() -> CheckReport:
    """No plan, nothing checked: ``passed`` stays False (see :meth:`CheckReport.summary`)."""
    return CheckReport(False, pd.DataFrame(columns=["constraint", "item", "lhs", "rhs",
                                                    "excess"]))


def _structurally_infeasible(pb: Problem, t0: float,
                             messages: Sequence[str] = ()) -> OptimizeResult | None:
    """The result for a problem infeasible before any solve (:func:`_structural` names why),
    else None."""
    structural = _structural(pb)
    if not structural:
        return None
    return OptimizeResult(pb.name, "infeasible", math.nan, math.nan, math.nan,
                          time.perf_counter() - t0, 0.0, _no_check(),
                          messages=tuple([*messages, *("infeasible: " + s for s in structural)]),
                          n_scenarios=pb.n_scenarios, problem=pb)


def _structural(pb: Problem) -> list[str]:
    """Reasons no plan can exist that need no solver: unservable classes, quality out of reach."""
    out = []
    for i, c in enumerate(pb.classes):
        if pb.demand[:, i, :].max() <= 0:
            continue
        routes = [r for r in pb.routes if c in r.classes]
        reasons = pb.excluded.get(c, {})
        if not routes:
            detail = "; ".join(f"{d}: {w}" for d, w in reasons.items()) or "no candidates"
            slo_kinds = sorted({k for w in reasons.values() for k in ("TTFT", "TPOT")
                                if f"{k} SLO" in w})
            if reasons and all("SLO" in w for w in reasons.values()):
                which = " and ".join(slo_kinds) or "latency"
                out.append(f"class {c}'s {which} SLO cannot be met by any candidate ({detail})")
            else:
                out.append(f"class {c} cannot be served by any candidate ({detail})")
            continue
        if c in pb.min_quality:
            best = max(routes, key=lambda r: r.quality[c])
            if best.quality[c] < pb.min_quality[c] - 1e-9:
                out.append(
                    f"class {c} needs quality {pb.min_quality[c]:g} but the best candidate "
                    f"reaches {best.quality[c]:g} ({best.name}); lower min_quality, or add a "
                    "stronger model or a fine-tune that qualifies"
                )
    return out


_GROUP_TEXT = {
    "quality": "the classes' minimum quality (min_quality)",
    "tpm": "the API rate limits (tpm_limit)",
    "budget": "the budget (budget_usd_per_month)",
    "onprem_share": "the minimum on-prem share (min_onprem_share)",
    "provider_share": "the maximum share per provider (max_share_per_provider)",
    "power": "the on-prem power limit (onprem_max_kw)",
    "limits": "the caps on replicas/servers (max_replicas, max_servers, max_kw)",
    "min_replicas": "the minimum replicas while serving (min_replicas)",
    "min_run": "the minimum run length of hourly rentals (min_run_hours)",
    "ramp": "the maximum change per hour (max_change_per_hour)",
}


def diagnose_infeasibility(
    pb: Problem, *, time_limit_s: float = 30.0, objective: str = "expected",
    cvar_lambda: float = 0.0, cvar_alpha: float = 0.95,
) -> tuple[pd.DataFrame, list[str]]:
    """Which constraint group makes the problem infeasible.

    Re-solves with each optional group (:data:`OPTIONAL_GROUPS`) dropped in turn; a group
    whose removal restores feasibility is to blame. For the budget, the cheapest plan meeting
    everything else is reported.
    """
    kw = {"objective": objective, "cvar_lambda": cvar_lambda, "cvar_alpha": cvar_alpha}
    base = build_milp(pb, **kw)
    present = [g for g in OPTIONAL_GROUPS if g in set(base.row_group)]
    if any(math.isfinite(o.cap_blocks) and not o.fixed_fleet
           for o in pb.options.values() if o.selfhosted):
        present.append("limits")
    rows, msgs = [], []
    for g in present:
        info = solve_milp(build_milp(pb, drop={g}, **kw),
                          gap=0.01 if g == "budget" else 1.0, time_limit_s=time_limit_s)
        ok = info.x is not None
        detail = ""
        if ok and g == "budget":
            detail = (f"the budget {pb.budget_usd_per_month:,.0f} USD/month is below the "
                      f"cheapest plan that meets every other constraint: "
                      f"{info.objective:,.0f} USD/month")
        elif ok and g == "onprem_share":
            onp = [o for o in pb.options.values() if o.kind == "onprem" and o.classes]
            detail = (f"min_onprem_share {pb.min_onprem_share:.0%} cannot be met: "
                      + ("no on-prem deployment can serve the classes" if not onp else
                         "on-prem capacity is capped (max_servers / max_kw / onprem_max_kw) "
                         "or the on-prem models cannot serve enough of the traffic"))
        elif ok:
            detail = f"{_GROUP_TEXT[g]} cannot be met together with the other constraints"
        rows.append({"group": g, "feasible_without": ok, "detail": detail})
        if ok:
            msgs.append(detail)
    if not msgs:
        info = solve_milp(build_milp(pb, drop=set(present), **kw), gap=1.0,
                          time_limit_s=time_limit_s)
        if info.x is not None and present:
            msgs.append("no single constraint is to blame; together "
                        + ", ".join(_GROUP_TEXT[g] for g in present) + " cannot all be met")
        else:
            msgs.append("infeasible even without the optional limits: the candidates cannot "
                        "carry the demand (check capacities, fine-tune eligibility and the "
                        "classes each deployment may serve)")
    return pd.DataFrame(rows, columns=["group", "feasible_without", "detail"]), msgs


# --------------------------------------------------------------------------------------------
# tables


def _share_by_option(pb: Problem, plan: PlanArrays) -> dict[str, np.ndarray]:
    """(S,) share of all requests each option handles (cascade escalations count)."""
    S = pb.n_scenarios
    total = np.maximum(pb.demand.sum(axis=(1, 2)), 1e-300)
    out = {d: np.zeros(S) for d in pb.options}
    for k, (r, _) in enumerate(plan.pairs):
        f = plan.flows[:, k, :].sum(axis=1)
        for leg, mult in pb.routes[r].legs:
            out[leg] += f * mult / total
    return out


def _tables(pb: Problem, plan: PlanArrays, costs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    S, C, P = pb.demand.shape
    w = pb.hour_weight
    prob = pb.prob
    load = option_loads(pb, plan)
    share = _share_by_option(pb, plan)
    mean_cost = (costs.assign(p=costs["scenario"].map(dict(enumerate(prob))))
                 .assign(usd=lambda d: d["usd_per_month"] * d["p"])
                 .groupby(["deployment", "component"], sort=False)["usd"].sum()
                 .rename("usd_per_month").reset_index()) if len(costs) else \
        pd.DataFrame(columns=["deployment", "component", "usd_per_month"])
    dep_cost = mean_cost.groupby("deployment")["usd_per_month"].sum()
    # requests per option per scenario/hour
    rps = {d: np.zeros((S, P)) for d in pb.options}
    for k, (r, _) in enumerate(plan.pairs):
        for leg, mult in pb.routes[r].legs:
            rps[leg] += plan.flows[:, k, :] * mult[:, None]
    total_rpm = pb.demand.sum(axis=(1, 2)) * 3600.0 * w
    plan_rows, hourly = [], []
    for d, o in pb.options.items():
        j = plan.options.index(d) if d in plan.options else None
        blocks = plan.blocks[:, j, :] if j is not None else np.zeros((S, P))
        # whole blocks as whole numbers in the tables (the solver returns integers to within
        # its tolerance, e.g. 1.9999999999999998; the check ran on the values as returned)
        near = np.abs(blocks - np.rint(blocks)) < 1e-6
        blocks = np.where(near, np.rint(blocks), blocks)
        reps = blocks * o.load_replicas_per_block if o.selfhosted else blocks
        if o.selfhosted:
            # replicas the load needs (the cost engine's ``replicas``): ceil(load / U) plus
            # the HA reserve in the busiest hour; the blocks may hold more (whole instances)
            used = plan.used[:, j, :]
            need = np.ceil(load[:, j, :] / pb.utilisation_target - 1e-9) + pb.ha_reserve * used
            need = np.where(load[:, j, :] > 0, need, pb.ha_reserve * used)
        plan_rows.append({
            "deployment": d, "kind": o.kind, "stage": o.stage, "provider": o.provider,
            "model": o.model, "accelerator": o.accelerator, "offering": o.offering,
            "price_plan": o.price_plan, "billing": o.billing,
            "finetune": o.finetune,
            "blocks_fixed": float(blocks[0, 0]) + 0.0 if o.stage == "fixed" else np.nan,
            "replicas_needed": float(need.max()) if o.selfhosted else np.nan,
            "replicas_peak": float(reps.max()) if o.selfhosted else np.nan,
            "replicas_mean": float(np.dot(prob, reps.mean(axis=1))) if o.selfhosted else np.nan,
            "gpus_peak": float(blocks.max() * o.gpus_per_block) if o.selfhosted else np.nan,
            "units_peak": float(blocks.max() * o.units_per_block) if o.selfhosted else np.nan,
            "requests_share": float(np.dot(prob, share[d])),
            "requests_per_month": float(np.dot(prob, share[d] * total_rpm)),
            "usd_per_month": float(dep_cost.get(d, 0.0)),
            "chosen": bool(np.dot(prob, share[d]) > 1e-9 or blocks.max() > 0.5),
        })
        for s in range(S):
            for h in range(P):
                if o.selfhosted:
                    rp = float(reps[s, h])
                    ld = float(load[s, j, h])
                    util = ld / rp if rp > 0 else (np.nan if ld == 0 else np.inf)
                else:
                    rp, ld, util = np.nan, np.nan, np.nan
                hourly.append((s, h, d, o.kind, float(blocks[s, h]) if o.selfhosted else np.nan,
                               rp, float(blocks[s, h] * o.gpus_per_block) if o.selfhosted
                               else np.nan, ld, util, float(rps[d][s, h])))
    hourly_df = pd.DataFrame(hourly, columns=[
        "scenario", "hour", "deployment", "kind", "blocks", "replicas", "gpus",
        "load_replicas", "utilisation", "requests_per_s"])
    routing, flows = [], []
    cls_rpm = pb.demand.sum(axis=2) * 3600.0 * w  # (S, C)
    for k, (r, c) in enumerate(plan.pairs):
        rt = pb.routes[r]
        cname = pb.classes[c]
        f = plan.flows[:, k, :]
        rpm = f.sum(axis=1) * 3600.0 * w
        with np.errstate(invalid="ignore", divide="ignore"):
            sh = np.where(cls_rpm[:, c] > 0, rpm / cls_rpm[:, c], 0.0)
        routing.append({
            "class": cname, "route": rt.name, "kind": rt.kind,
            "legs": " -> ".join(o for o, _ in rt.legs),
            "share": float(np.dot(prob, sh)),
            "requests_per_month": float(np.dot(prob, rpm)),
            "quality": rt.quality.get(cname, np.nan),
        })
        for s, h in zip(*np.nonzero(f > 1e-12), strict=True):
            flows.append((int(s), int(h), cname, rt.name, float(f[s, h])))
    routing_df = pd.DataFrame(routing, columns=["class", "route", "kind", "legs", "share",
                                                "requests_per_month", "quality"])
    routing_df = routing_df[routing_df["share"] > 1e-9].sort_values(
        ["class", "share"], ascending=[True, False]).reset_index(drop=True)
    ft_rows = []
    for f, usd in pb.finetune_usd.items():
        enables = [d for d, o in pb.options.items() if o.finetune == f]
        chosen = plan.finetune.get(f, 0.0) > 0.5
        one = float(np.dot(prob, usd))
        ft_rows.append({"finetune": f, "chosen": chosen, "usd_one_off": one,
                        "usd_per_month": one / pb.horizon_months if chosen else 0.0,
                        "enables": ",".join(enables)})
    per_s = costs.groupby("scenario")["usd_per_month"].sum().reindex(range(S), fill_value=0.0)
    return {
        "plan": pd.DataFrame(plan_rows), "hourly": hourly_df, "routing": routing_df,
        "flows": pd.DataFrame(flows, columns=["scenario", "hour", "class", "route",
                                              "requests_per_s"]),
        "finetune": pd.DataFrame(ft_rows, columns=["finetune", "chosen", "usd_one_off",
                                                   "usd_per_month", "enables"]),
        "costs": mean_cost,
        "scenarios": pd.DataFrame({"scenario": range(S), "usd_per_month": per_s.to_numpy()}),
    }


def _first_stage(m: Milp, x: np.ndarray) -> dict[str, np.ndarray]:
    return {name: np.round(x[m.cols[name]]) + 0.0 for name in ("blocks_fixed", "used",
                                                                  "finetune")}


# --------------------------------------------------------------------------------------------
# the optimiser


def optimize(
    scenario: Scenario,
    *,
    catalog: Catalog | None = None,
    gap: float | None = None,
    time_limit_s: float | None = None,
    stochastic: bool = False,
    n_scenarios: int = 200,
    seed: int | None = None,
    verify: bool = False,
    options: OptimizeOptions | None = None,
    verify_window_s: float = 600.0,
    method: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> OptimizeResult:
    """Choose the cheapest mix of API, cloud and on-prem capacity, routing and fine-tunes.

    Parameters
    ----------
    scenario : Scenario
    catalog : Catalog, optional
    gap, time_limit_s : float, optional
        Relative MIP gap and time limit in seconds (default: the scenario's ``[optimize]``
        values, else 0.01 and 30 s). ``time_limit_s = math.inf``: no wall-clock limit; every
        solve runs to the gap and the steps otherwise bounded in seconds are bounded in
        solver nodes (:func:`.optimize_milp.solve_milp`), so the plan does not depend on the
        machine's load.
    stochastic : bool
        Sample-average version over ``n_scenarios`` Monte Carlo scenarios (``seed``).
    verify : bool
        Simulate the plan in every hour of its day; on an SLO miss, search the headroom that fixes
        it.
    options : OptimizeOptions, optional
        Limits and settings (default: :meth:`OptimizeOptions.from_scenario`).
    verify_window_s : float
        Simulated seconds of each hour (busy hours are cut to about
        :data:`.optimize_verify.MAX_REQUESTS_PER_HOUR` requests, at least 120 s).
    method : {"auto", "extensive", "benders"}
        How the stochastic version is solved (see :func:`optimize_problem`).
    progress : callable, optional
        Called with a short text at each stage (sampling, solving, Benders iterations,
        simulation, headroom tries); the CLI prints it. The engine itself prints nothing.

    Returns
    -------
    OptimizeResult
        Never None: an infeasible or unsolved problem comes back with its status and an
        explanation in ``messages``.
    """
    t0 = time.perf_counter()
    cat = catalog or load_catalog()
    opts = options or OptimizeOptions.from_scenario(scenario)
    if stochastic and opts.horizon_hours is not None:
        raise PlannerError("optimize.horizon_hours: a long horizon is planned at the medians; "
                           "drop --stochastic (or horizon_hours)")
    if stochastic and opts.plan_years is not None:
        raise PlannerError("optimize.plan_years: a multi-year plan is made at the medians; "
                           "drop --stochastic (or plan_years)")
    gap = opts.gap if gap is None else float(gap)
    tl = opts.time_limit_s if time_limit_s is None else float(time_limit_s)
    if not 0.0 <= gap <= 1.0:
        raise PlannerError(f"gap: expected a relative gap in [0, 1], got {gap}")
    if not tl > 0:
        raise PlannerError(f"time_limit_s: expected > 0 seconds, got {tl}")
    notes: list[str] = []
    drawn = pd.DataFrame()
    say = progress or (lambda _text: None)
    # one compile of the scenario: the problem's prices and the verification's traffic
    model = None if stochastic else problem_model(scenario, cat)
    if stochastic:
        say(f"sampling {int(n_scenarios)} Monte Carlo scenarios")
        values, drawn, notes, model = sample_inputs(scenario, int(n_scenarios), seed, cat)
        if model is None:
            model = problem_model(scenario, cat, uncertain=bool(values))
        say("pricing the candidates in every scenario")
        pb = build_problem(scenario, cat, opts, values=values,
                           n=int(n_scenarios) if values else 1, model=model)
    elif opts.plan_years is not None:
        pb = build_problem(scenario, cat, opts, model=model)
        res = optimize_years(pb, opts, gap=gap, time_limit_s=tl)
        res.solve_time_s = res.time_s = time.perf_counter() - t0
        if verify:
            res.messages += ("--verify simulates a one-year plan; not run on a multi-year "
                             "plan",)
        return res
    elif opts.horizon_hours is not None:
        pb = build_problem(scenario, cat, opts, model=model)
        res = optimize_long(pb, opts, gap=gap, time_limit_s=tl, progress=progress)
        res.solve_time_s = time.perf_counter() - t0
        if verify and res.solution is not None:
            _verify_year(res, cat, gap=gap, time_limit_s=min(tl, 30.0),
                         window_s=verify_window_s, seed=0 if seed is None else seed, say=say,
                         traffic=scenario_traffic(scenario, cat, model=model))
        res.time_s = time.perf_counter() - t0
        return res
    else:
        pb = build_problem(scenario, cat, opts, model=model)
    res = optimize_problem(pb, gap=gap, time_limit_s=tl, objective=opts.objective,
                           cvar_lambda=opts.cvar_lambda, cvar_alpha=opts.cvar_alpha,
                           stochastic=stochastic, method=method, progress=progress)
    res.messages = tuple(notes) + res.messages
    res.solve_time_s = time.perf_counter() - t0
    if stochastic and len(drawn.columns) and len(res.scenarios):
        res.scenarios = pd.concat([res.scenarios, drawn.reset_index(drop=True)], axis=1)
    if verify and res.solution is not None:
        _verify(res, cat, gap=gap, time_limit_s=tl, window_s=verify_window_s,
                seed=0 if seed is None else seed, say=say,
                traffic=scenario_traffic(scenario, cat, model=model))
    res.time_s = time.perf_counter() - t0
    return res


def optimize_problem(
    pb: Problem,
    *,
    gap: float = 0.01,
    time_limit_s: float = 30.0,
    objective: str = "expected",
    cvar_lambda: float = 1.0,
    cvar_alpha: float = 0.95,
    stochastic: bool | None = None,
    method: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> OptimizeResult:
    """Solve a built :class:`Problem` (``optimize`` without the scenario handling).

    ``method`` (stochastic problems): ``extensive`` (one MILP over all scenarios),
    ``benders`` (L-shaped decomposition, :mod:`.optimize_stochastic`), or ``auto``: the
    extensive form while it is small (scenarios x columns per scenario <= 30,000), else
    Benders.
    """
    t0 = time.perf_counter()
    say = progress or (lambda _text: None)
    stochastic = pb.n_scenarios > 1 if stochastic is None else stochastic
    if method not in ("auto", "extensive", "benders"):
        raise PlannerError(f"method: expected auto, extensive or benders, got {method!r}")
    obj = objective if stochastic else "expected"
    kw = {"objective": obj, "cvar_lambda": cvar_lambda, "cvar_alpha": cvar_alpha}
    msgs = list(pb.messages)
    empty = _no_check()
    early = _structurally_infeasible(pb, t0, msgs)
    if early is not None:
        return early
    if stochastic and pb.n_scenarios > 1:
        per_scen = len(pb.pairs()) * pb.periods + sum(
            o.stage == "hourly" for o in pb.options.values()) * pb.periods
        if method == "benders" or (method == "auto" and pb.n_scenarios * per_scen > 30_000):
            say(f"L-shaped (Benders) decomposition over {pb.n_scenarios} scenarios")
            res = _solve_by_benders(pb, gap=gap, time_limit_s=time_limit_s, t0=t0,
                                    progress=progress, **kw)
            if res is not None:
                res.messages = tuple(msgs) + res.messages
                res.objective = obj
                return res
            msgs.append("the decomposition found no plan that serves every scenario; "
                        "re-solving the extensive form to explain why")
    m = build_milp(pb, **kw)
    say(f"solving the MILP ({m.shape[0]:,} rows x {m.shape[1]:,} columns, gap {gap:g}, "
        f"time limit {time_limit_s:g} s)")
    lp = solve_milp(m, gap=gap, time_limit_s=time_limit_s, relax=True)
    info = solve_milp(m, gap=gap, time_limit_s=time_limit_s)
    if info.x is None:
        status = "infeasible" if info.status in ("infeasible",) or lp.status == "infeasible" \
            else info.status
        table, why = _EMPTY, []
        if status == "infeasible":
            say("infeasible: re-solving without each group of limits to find the one to blame")
            table, why = diagnose_infeasibility(pb, time_limit_s=time_limit_s, **kw)
        msgs += [f"{status}: " + s for s in why] or [f"{status}: {info.message}"]
        return OptimizeResult(pb.name, status, math.nan, math.nan, lp.objective,
                              time.perf_counter() - t0, lp.time_s, empty,
                              infeasibility=table, messages=tuple(msgs),
                              n_scenarios=pb.n_scenarios, milp_shape=m.shape, problem=pb)
    plan = decode(m, info.x)
    if info.status == "time_limit":
        msgs.append(f"time limit reached: best plan found has a gap of {info.gap:.2%} "
                    f"(bound {info.dual_bound:,.0f} USD/month)")
    w = _whole(pb, plan, info.objective, info.dual_bound, gap=gap, time_limit_s=time_limit_s,
               say=say, **kw)
    status = info.status
    if w is None:
        check = check_plan(pb, plan, objective=info.objective if obj == "expected" else None,
                           milp_=m)
        pbr, objective, g = pb, info.objective, info.gap
        costs = plan_costs(pb, plan)
        tabs = _tables(pb, plan, costs)
    else:
        pbr, plan, check, costs, tabs, objective, g, more, cut_short = w
        msgs += more
        if cut_short and status == "optimal":
            status = "time_limit"
    res = OptimizeResult(
        pb.name, status, objective, g, lp.objective,
        time.perf_counter() - t0, lp.time_s, check, n_scenarios=pb.n_scenarios,
        milp_shape=m.shape, problem=pbr, solution=plan, messages=(), gap_target=gap, **tabs,
    )
    if stochastic and pb.n_scenarios > 1:
        say("value of the stochastic solution: solving the mean-value problem (EV, EEV)")
        ev, eev = _ev_eev_extensive(pb, gap=gap, time_limit_s=time_limit_s, **kw)
        res.stochastic, more = _stochastic_report(pb, info.objective, tabs["scenarios"], ev,
                                                  eev, cvar_alpha, "extensive form")
        msgs += more
    _warn_check(check, msgs)
    res.messages = tuple(msgs)
    res.objective = obj
    res.time_s = time.perf_counter() - t0
    return res


def optimize_long(pb: Problem, opts: OptimizeOptions, *, gap: float = 0.01,
                  time_limit_s: float = 90.0,
                  progress: Callable[[str], None] | None = None) -> OptimizeResult:
    """Plan the long horizon of ``opts.horizon_hours`` for the profile problem ``pb`` on
    typical days, re-checked and re-priced on every hour (:func:`.optimize_year.solve_year`).

    The result is the full-horizon plan: ``objective_usd_per_month`` its cost re-priced on
    every hour (the average month), ``lp_bound`` a proven lower bound on the full-horizon
    optimum (the mean-day or lower-envelope problem's dual bound), ``gap`` their relative
    difference, ``check`` the hour-by-hour re-check; ``year`` and ``aggregation`` the rounds
    and the aggregation error. Never None.
    """
    t0 = time.perf_counter()
    empty = _no_check()
    early = _structurally_infeasible(pb, t0)
    if early is not None:
        return early
    settings = _year_settings(opts)
    ys = solve_year(pb, settings, gap=gap, time_limit_s=time_limit_s, progress=progress)
    msgs = list(pb.messages) + list(ys.messages)
    agg_rows = []
    if ys.aggregation is not None:
        agg_rows = [("horizon_hours", settings.horizon_hours),
                    ("typical_days", ys.aggregation.k),
                    ("peak_or_repaired_days", len(ys.aggregation.forced_days)),
                    *ys.error.items(),
                    ("aggregated_objective_usd_per_month", ys.agg_objective),
                    ("full_year_usd_per_month", ys.cost),
                    ("lower_bound_usd_per_month", ys.bound), ("gap", ys.gap),
                    ("check_passed", ys.check.passed)]
    aggregation = pd.DataFrame(agg_rows, columns=["metric", "value"])
    if ys.plan is None:
        return OptimizeResult(pb.name, ys.status, math.nan, math.nan, ys.bound,
                              time.perf_counter() - t0, 0.0, empty, messages=tuple(msgs),
                              milp_shape=ys.milp_shape, problem=ys.year, year=ys.rounds,
                              aggregation=aggregation, gap_target=gap)
    costs = plan_costs(ys.year, ys.plan)
    tabs = _tables(ys.year, ys.plan, costs)
    H = settings.horizon_hours
    msgs.append(
        f"{H:,} hours planned on {ys.aggregation.k} typical days (upper envelopes; "
        f"{len(ys.aggregation.forced_days)} peak or repaired day(s) kept apart): re-checked "
        f"and re-priced on every hour at {ys.cost:,.0f} USD/month (the typical-day problem "
        f"said {ys.agg_objective:,.0f}); the bound {ys.bound:,.0f} USD/month is a proven "
        f"lower bound on the full-horizon optimum (mean-day problem with the hourly counts "
        f"relaxed, or lower-envelope problem), gap {ys.gap:.2%}; "
        f"aggregation error of the hourly load: RMSE {ys.error['upper_rmse_share_of_mean']:.2%}"
        f" of the mean, largest {ys.error['upper_max_abs_share_of_peak']:.2%} of the peak")
    _warn_check(ys.check, msgs)
    return OptimizeResult(
        pb.name, ys.status, ys.cost, ys.gap, ys.bound, time.perf_counter() - t0, 0.0,
        ys.check, milp_shape=ys.milp_shape, problem=ys.year, solution=ys.plan,
        messages=tuple(msgs), gap_target=gap, year=ys.rounds, aggregation=aggregation,
        **tabs)


def optimize_years(pb: Problem, opts: OptimizeOptions, *, gap: float = 0.01,
                   time_limit_s: float = 30.0) -> OptimizeResult:
    """Plan ``opts.plan_years`` years of the profile problem ``pb`` at once
    (:func:`.optimize_multiyear.solve_multiyear`): reserved terms bought in a given year,
    traffic growing by ``opts.growth_per_year``, costs discounted at
    ``opts.discount_rate_per_year``. The plan tables are year 1's; ``purchases`` and
    ``years`` hold the purchases and every year's cost and fleet; the objective, bound and
    gap are the horizon's (total over the horizon's months). Never None."""
    t0 = time.perf_counter()
    early = _structurally_infeasible(pb, t0)
    if early is not None:
        return early
    if pb.n_scenarios != 1:
        raise PlannerError("optimize.plan_years: a multi-year plan is made at the medians; "
                           "drop --stochastic (or plan_years)")
    years = int(opts.plan_years or 1)
    my = solve_multiyear(pb, years, growth_per_year=opts.growth_per_year,
                         discount_rate_per_year=opts.discount_rate_per_year, gap=gap,
                         time_limit_s=time_limit_s)
    months = 12.0 * years
    msgs = list(pb.messages) + list(my.messages)
    viol = [ch.violations.assign(item="year " + str(t + 1) + ": " + ch.violations["item"])
            for t, ch in enumerate(my.checks) if not ch.violations.empty]
    vdf = pd.concat(viol, ignore_index=True) if viol else pd.DataFrame(
        columns=["constraint", "item", "lhs", "rhs", "excess"])
    check = CheckReport(my.passed, vdf, float(vdf["excess"].max()) if len(vdf) else 0.0,
                        n_checked=sum(ch.n_checked for ch in my.checks))
    fleet = my.fleet.pivot_table(index="year", columns="deployment", values="blocks",
                                 aggfunc="first") if len(my.fleet) else pd.DataFrame()
    years_t = my.yearly.merge(fleet.add_prefix("blocks:").reset_index(), on="year") \
        if len(my.yearly) and len(fleet) else my.yearly
    if not my.plans:
        return OptimizeResult(pb.name, my.status, math.nan, math.nan, math.nan,
                              time.perf_counter() - t0, 0.0, check, messages=tuple(msgs),
                              problem=my.problems[0] if my.problems else pb, gap_target=gap)
    p0, plan0 = my.problems[0], my.plans[0]
    tabs = _tables(p0, plan0, plan_costs(p0, plan0))
    msgs.append(f"{years} year(s) planned at once: traffic x{1 + opts.growth_per_year:g} a "
                f"year, costs discounted at {opts.discount_rate_per_year:.1%} a year; "
                f"{my.objective_usd:,.0f} USD over the horizon (reserved terms past it "
                f"included), {my.objective_usd / months:,.0f} USD per month on average; the "
                f"plan tables are year 1's, the purchases and yearly tables the rest")
    return OptimizeResult(
        pb.name, my.status, my.objective_usd / months, my.gap, my.bound_usd / months,
        time.perf_counter() - t0, 0.0, check, problem=p0, solution=plan0,
        messages=tuple(msgs), gap_target=gap, purchases=my.purchases, years=years_t, **tabs)


def _verify_year(res: OptimizeResult, cat: Catalog, *, gap: float, time_limit_s: float,
                 window_s: float, seed: int, say: Callable[[str], None],
                 traffic: dict | None = None) -> None:
    """Simulate the busiest day of a long-horizon plan (the day holding its busiest hour),
    every hour of it, as :func:`_verify` does for a profile (headroom search included)."""
    pb, plan = res.problem, res.solution
    # the hour of the highest load on the self-hosted pools; among equals (a fleet full in
    # many hours), the one with the most requests
    load = option_loads(pb, plan)[0].sum(axis=0)
    top = np.flatnonzero(load >= load.max() * (1 - 1e-9)) if load.max() > 0 else \
        np.arange(pb.periods)
    h = int(top[np.argmax(pb.demand[0].sum(axis=0)[top])])
    day = h // 24
    sl = slice(24 * day, 24 * day + 24)
    opts = {n: replace(o, ub_hourly=None if o.ub_hourly is None else o.ub_hourly[:, sl])
            for n, o in pb.options.items()}
    dpb = replace(pb, demand=pb.demand[:, :, sl], periods=24, options=opts, messages=[])
    dplan = replace(plan, blocks=plan.blocks[:, :, sl], used=plan.used[:, :, sl],
                    flows=plan.flows[:, :, sl], x=None)
    tmp = replace(res, problem=dpb, solution=dplan, messages=())
    say(f"simulating the busiest day of the horizon (day {day}, hours {sl.start}-"
        f"{sl.stop - 1})")
    _verify(tmp, cat, gap=gap, time_limit_s=time_limit_s, window_s=window_s, seed=seed,
            say=say, traffic=traffic)
    res.verification, res.headroom = tmp.verification, tmp.headroom
    res.verification_hours = tmp.verification_hours.assign(
        day=day, horizon_hour=tmp.verification_hours["hour"] + 24 * day) \
        if len(tmp.verification_hours) else tmp.verification_hours
    res.messages = res.messages + (f"verification: the busiest day of the horizon (day {day}, "
                                   f"horizon hours {sl.start}-{sl.stop - 1})",) + tmp.messages


def _whole(pb: Problem, plan: PlanArrays, fluid: float, bound: float, *, gap: float,
           time_limit_s: float, objective: str, cvar_lambda: float, cvar_alpha: float,
           say: Callable[[str], None]) -> tuple | None:
    """A plan solved with continuous hourly counts (the stochastic fluid) made whole
    (:func:`whole_replicas`), re-checked, costed and tabled; None when it already is whole
    (integer hourly counts, or no hourly option). Returns (problem, plan, check, costs,
    tables, objective, gap against ``bound``, messages, whether the time limit cut a
    scenario's re-solve short: the plan is then not proven within the gap)."""
    if pb.integer_hourly or not any(o.stage == "hourly" for o in pb.options.values()):
        return None
    say("whole replicas: re-solving each scenario's hourly counts in whole replicas")
    w = whole_replicas(pb, plan, gap=gap, time_limit_s=max(5.0, time_limit_s / 2))
    check = check_plan(w.problem, w.plan, extra=w.extra)
    check.n_checked += w.n_checked
    costs = plan_costs(w.problem, w.plan)
    tabs = _tables(w.problem, w.plan, costs)
    q = tabs["scenarios"]["usd_per_month"].to_numpy()
    obj = _objective(q, pb.prob, objective == "cvar" and cvar_lambda > 0, cvar_lambda,
                     cvar_alpha)
    lo = min(bound, fluid) if np.isfinite(bound) else fluid
    g = max(0.0, (obj - lo) / abs(obj)) if obj else 0.0
    how = f"{w.resolved} re-solved" + (f", {w.rounded} rounded up (no time left or no whole "
                                       f"plan)" if w.rounded else "") + (
        f"; {w.limited} cut short by the time limit" if w.limited else "")
    msgs = [f"whole replicas: the first stage was chosen with continuous hourly counts (a "
            f"fluid); every scenario's hourly counts are whole replicas ({how}): "
            f"{obj:,.0f} USD/month against {fluid:,.0f} for the fluid plan "
            f"({(obj - fluid) / abs(fluid) if fluid else 0.0:+.1%}); gap {g:.2%} against the "
            f"fluid bound"]
    return w.problem, w.plan, check, costs, tabs, obj, g, msgs, w.limited > 0


def _warn_check(check: CheckReport, msgs: list[str]) -> None:
    if not check.passed:
        msgs.append("WARNING: " + check.summary() + "; the solver's plan is NOT trustworthy "
                    "(see the violations table)")


def _solve_by_benders(pb: Problem, *, gap: float, time_limit_s: float, t0: float,
                      objective: str, cvar_lambda: float, cvar_alpha: float,
                      progress: Callable[[str], None] | None = None
                      ) -> OptimizeResult | None:
    b = solve_benders(pb, gap=gap, time_limit_s=time_limit_s, objective=objective,
                      cvar_lambda=cvar_lambda, cvar_alpha=cvar_alpha, progress=progress)
    if b.plan is None or b.status in ("infeasible", "error"):
        return None
    plan = b.plan
    say = progress or (lambda _text: None)
    w = _whole(pb, plan, b.objective, b.lower_bound, gap=gap, time_limit_s=time_limit_s,
               say=say, objective=objective, cvar_lambda=cvar_lambda, cvar_alpha=cvar_alpha)
    pbr, obj, g, status = pb, b.objective, b.gap, b.status
    if w is None:
        check = check_plan(pb, plan, extra=scenario_raw_violations(b))
        check.n_checked += sum(m.A.shape[0] + x.size + int(np.count_nonzero(m.integrality))
                               for m, x in zip(b.milps, b.xs, strict=True))
        costs = plan_costs(pb, plan)
        tabs = _tables(pb, plan, costs)
        more_w: list[str] = []
    else:
        pbr, plan, check, costs, tabs, obj, g, more_w, cut_short = w
        if cut_short and status == "optimal":
            status = "time_limit"
    msgs = [f"solved by L-shaped (Benders) decomposition over {pb.n_scenarios} scenarios: "
            f"{b.iterations} iterations, bound {b.lower_bound:,.0f} USD/month, gap "
            f"{b.gap:.2%}"]
    if b.status == "time_limit":
        msgs.append(f"time limit reached: best plan found has a gap of {b.gap:.2%}")
    msgs += more_w
    if objective == "expected":
        recomputed = float(np.dot(pb.prob, tabs["scenarios"]["usd_per_month"]))
        if abs(recomputed - obj) > 1e-6 * max(1.0, abs(obj)):
            check.violations.loc[len(check.violations)] = [
                "objective", "objective vs recomputed cost", obj, recomputed,
                obj - recomputed]
            check.passed = False
    rows = sum(m.A.shape[0] for m in b.milps)
    cols = sum(m.A.shape[1] for m in b.milps)
    res = OptimizeResult(
        pb.name, status, obj, g, b.lp_bound, time.perf_counter() - t0, 0.0,
        check, n_scenarios=pb.n_scenarios, milp_shape=(rows, cols), problem=pbr,
        solution=plan, messages=(), gap_target=gap, **tabs,
    )
    res.stochastic, more = _stochastic_report(pb, b.objective, tabs["scenarios"],
                                              b.ev_objective, b.eev, cvar_alpha,
                                              "L-shaped decomposition")
    res.stochastic = pd.concat([res.stochastic, pd.DataFrame([
        ("iterations", float(b.iterations), "Benders iterations"),
        ("lower_bound", b.lower_bound, "master problem bound"),
    ], columns=["metric", "value", "note"])], ignore_index=True)
    msgs += more
    _warn_check(check, msgs)
    res.messages = tuple(msgs)
    return res


def _ev_eev_extensive(pb: Problem, *, gap: float, time_limit_s: float, objective: str,
                      cvar_lambda: float, cvar_alpha: float) -> tuple[float, float]:
    """EV (mean-value problem's optimum) and EEV (its first stage fixed, second stage
    re-optimised in every scenario) with the extensive form."""
    kw = {"objective": objective, "cvar_lambda": cvar_lambda, "cvar_alpha": cvar_alpha}
    ev_m = build_milp(pb.mean_problem(), objective="expected")
    ev = solve_milp(ev_m, gap=gap, time_limit_s=time_limit_s)
    if ev.x is None:
        return math.nan, math.nan
    eev = solve_milp(build_milp(pb, fix=_first_stage(ev_m, ev.x), **kw), gap=gap,
                     time_limit_s=time_limit_s)
    return ev.objective, (eev.objective if eev.x is not None else math.inf)


def _stochastic_report(pb: Problem, rp: float, per_s: pd.DataFrame, ev: float, eev: float,
                       cvar_alpha: float, how: str) -> tuple[pd.DataFrame, list[str]]:
    """RP, EV, EEV, VSS and the cost distribution of the stochastic plan."""
    x = per_s["usd_per_month"].to_numpy()
    p = pb.prob
    rows = [
        ("RP_objective", rp, f"stochastic (recourse) problem optimum ({how})"),
        ("expected_usd_per_month", float(np.dot(p, x)), "mean monthly cost over scenarios"),
        ("p5_usd_per_month", float(np.quantile(x, 0.05)), ""),
        ("p50_usd_per_month", float(np.quantile(x, 0.5)), ""),
        ("p95_usd_per_month", float(np.quantile(x, 0.95)), ""),
        (f"cvar{int(round(cvar_alpha * 100))}_usd_per_month", cvar(x, cvar_alpha, weights=p),
         "mean of the worst (1 - alpha) of scenarios"),
        ("EV_objective", ev, "plan for the mean scenario (its own estimate)"),
    ]
    msgs = []
    if math.isinf(eev):
        rows.append(("EEV_objective", math.inf,
                     "the mean-value plan's first stage is infeasible in some scenarios"))
        rows.append(("VSS_usd_per_month", math.inf, "EEV - RP"))
        msgs.append("the plan made for the mean scenario cannot serve every sampled scenario "
                    "(its first stage is infeasible in some): the stochastic plan is needed")
    elif not math.isnan(eev):
        vss = max(0.0, eev - rp) if abs(eev - rp) < 1e-9 * max(1.0, abs(rp)) else eev - rp
        rows.append(("EEV_objective", eev,
                     "mean-value first stage, second stage re-optimised per scenario"))
        rows.append(("VSS_usd_per_month", vss, "EEV - RP (value of the stochastic solution)"))
        rows.append(("VSS_share", vss / eev if eev else math.nan, "VSS / EEV"))
        if eev:
            msgs.append(f"value of the stochastic solution: {vss:,.0f} USD/month "
                        f"({vss / eev:.1%} of planning for the mean)")
    return pd.DataFrame(rows, columns=["metric", "value", "note"]), msgs


# --------------------------------------------------------------------------------------------
# verification by simulation


def _verify(res: OptimizeResult, cat: Catalog, *, gap: float, time_limit_s: float,
            window_s: float, seed: int, say: Callable[[str], None] = lambda _t: None,
            traffic: dict | None = None) -> None:
    """Simulate every hour of the planned day (:func:`verify_day`, the scenario with the
    busiest hour); on an SLO miss, lower the utilisation target step by step, re-optimise and
    re-simulate the hours that missed until they pass. ``traffic``: the lengths and arrivals
    the capacities were sized for (:func:`.optimize_verify.scenario_traffic`)."""
    traffic = dict(traffic or {})
    pb, plan = res.problem, res.solution
    s, _ = busiest_hour(pb, plan)
    say(f"simulating the planned day: {pb.periods} hours, up to {window_s:g} s of each "
        f"(about {MAX_REQUESTS_PER_HOUR:,} requests an hour at most)")
    vd = verify_day(pb, plan, cat, scenario=s, window_s=window_s, seed=seed, **traffic)
    worst = int(vd.hours.loc[vd.hours["slo_attainment"].idxmin(), "hour"]) \
        if len(vd.hours) and vd.hours["slo_attainment"].notna().any() else 0
    table = vd.summary.assign(scenario=s, hour=worst,
                              utilisation_target=pb.utilisation_target)
    cols = ["scenario", "hour", "utilisation_target"] + list(vd.summary.columns)
    table = table[cols] if len(table) else table
    res.verification_hours = vd.hours
    msgs = list(res.messages) + vd.messages
    where = f"{vd.hours['hour'].nunique() if len(vd.hours) else 0} simulated hours" + (
        f" of scenario {s}" if pb.n_scenarios > 1 else "")
    if vd.hours.empty:  # verify_day said why (API only, stated capacities, no traffic)
        res.messages = tuple(msgs)
        return
    if vd.passed:
        msgs.append(f"simulated the planned day ({where}): every class meets its SLO target "
                    "in every hour; lowest hourly attainment " + ", ".join(
                        f"{r['class']} {r['worst_hour_attainment']:.1%} (hour "
                        f"{r['worst_hour']})" for _, r in vd.summary.iterrows()))
        res.verification, res.messages = table, tuple(msgs)
        return
    fails = vd.summary[~vd.summary["passed"]]
    bad_hours = vd.failed_hours
    msgs.append(f"the plan FAILS its SLO in simulation in {len(bad_hours)} of {where} "
                f"(hours {_hours_text(bad_hours)}): " + ", ".join(
                    f"{r['class']} {r['worst_hour_attainment']:.1%} within SLO in hour "
                    f"{r['worst_hour']} (target {r['target']:.0%}; "
                    f"{r['hours_passed']}/{r['hours']} hours pass)"
                    for _, r in fails.iterrows()))
    base = replace(pb.take(s), integer_hourly=True)
    ref = solve_milp(build_milp(base), gap=gap, time_limit_s=time_limit_s)
    base_cost = ref.objective if ref.x is not None else _slice_cost(res, s)
    tries = []
    u0 = pb.utilisation_target
    for f in (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3):
        u = round(u0 * f, 4)
        say(f"headroom: re-optimising and re-simulating at utilisation_target {u:g}")
        pb2 = base.with_utilisation(u)
        m2 = build_milp(pb2)
        info = solve_milp(m2, gap=gap, time_limit_s=time_limit_s)
        if info.x is None:
            tries.append({"utilisation_target": u, "usd_per_month": math.nan,
                          "min_slo_attainment": math.nan, "passed": False,
                          "note": f"no plan: {info.status}"})
            break
        plan2 = decode(m2, info.x)
        vd2 = verify_day(pb2, plan2, cat, scenario=0, hours=bad_hours, window_s=window_s,
                         seed=seed, **traffic)
        tries.append({"utilisation_target": u, "usd_per_month": info.objective,
                      "min_slo_attainment": float(vd2.hours["slo_attainment"].min())
                      if len(vd2.hours) else math.nan,
                      "passed": vd2.passed,
                      "note": f"hours {_hours_text(bad_hours)} re-simulated"})
        if vd2.passed:
            extra = info.objective - base_cost
            msgs.append(f"headroom that fixes it: utilisation_target {u:g} (instead of {u0:g}) "
                        f"passes in simulation at {info.objective:,.0f} USD/month "
                        f"({extra:+,.0f} USD/month for this scenario)")
            break
    else:
        msgs.append("no utilisation target down to 30% of the original passes: the SLO may "
                    "not be reachable on these candidates at this load")
    res.verification = table
    res.headroom = pd.DataFrame(tries)
    res.messages = tuple(msgs)


def _hours_text(hours: Sequence[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``1-3, 7``."""
    out, run = [], []
    for h in list(hours) + [None]:
        if run and (h is None or h != run[-1] + 1):
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}")
            run = []
        if h is not None:
            run.append(h)
    return ", ".join(out)


def _slice_cost(res: OptimizeResult, s: int) -> float:
    sc = res.scenarios
    if len(sc) and "usd_per_month" in sc:
        return float(sc.loc[sc["scenario"] == s, "usd_per_month"].sum())
    return res.objective_usd_per_month


# --------------------------------------------------------------------------------------------
# sensitivity and break-even of the decision


@dataclass
class SensitivityResult:
    """grid: one row per (axis, multiplier) with the optimal cost and mix;
    breakpoints: where the set of deployments used changes, bisected to ``rtol``."""

    grid: pd.DataFrame
    breakpoints: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"grid": self.grid, "breakpoints": self.breakpoints}


def _year_settings(opts: OptimizeOptions) -> YearSettings:
    """The long horizon of ``opts`` (``[optimize] horizon_hours`` and its keys)."""
    return YearSettings(int(opts.horizon_hours or 8760), opts.monthly_factors,
                        float(opts.growth_per_year), opts.typical_days)


def _mix(pb: Problem, gap: float, tl: float, min_share: float,
         horizon: YearSettings | None = None) -> tuple[float, dict[str, float]]:
    """Cost (USD/month) and request shares of the optimal plan of ``pb``; on the long
    horizon ``horizon`` when given (:func:`.optimize_year.solve_year`: the plan re-priced
    on every hour, as ``planner optimize`` states it)."""
    if horizon is not None:
        ys = solve_year(pb, horizon, gap=gap, time_limit_s=tl)
        if ys.plan is None or not ys.check.passed:
            return math.nan, {}
        sh = {d: float(v[0]) for d, v in _share_by_option(ys.year, ys.plan).items()}
        return ys.cost, {d: v for d, v in sh.items() if v > 1e-9}
    m = build_milp(pb)
    info = solve_milp(m, gap=gap, time_limit_s=tl)
    if info.x is None:
        return math.nan, {}
    plan = decode(m, info.x)
    sh = {d: float(v[0]) for d, v in _share_by_option(pb, plan).items()}
    return info.objective, {d: v for d, v in sh.items() if v > 1e-9}


def _used(mix: dict[str, float], min_share: float) -> set[str]:
    """The deployments of a mix with at least ``min_share`` of the requests (what a
    breakpoint compares)."""
    return {d for d, v in mix.items() if v >= min_share}


def _mix_text(mix: dict[str, float]) -> str:
    """Every deployment of a mix with its share of the requests, to three significant
    digits, the largest first (small shares are stated, not dropped)."""
    if not mix:
        return "(no plan)"
    return " + ".join(f"{d} {100 * v:.3g}%"
                      for d, v in sorted(mix.items(), key=lambda kv: -kv[1]))


def plan_mix(res: OptimizeResult) -> dict[str, float]:
    """Share of the requests each chosen deployment of a plan serves: the ``requests_share``
    of its ``plan`` table, the numbers ``planner optimize`` prints."""
    p = res.plan
    if p.empty or "requests_share" not in p.columns:
        return {}
    p = p[p["chosen"].fillna(False).astype(bool)] if "chosen" in p.columns else p
    return {str(r.deployment): float(r.requests_share) for r in p.itertuples()
            if np.isfinite(r.requests_share) and r.requests_share > 1e-9}


def sensitivity(
    scenario: Scenario | Problem,
    *,
    traffic: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
    api_price: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
    gpu_price: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
    catalog: Catalog | None = None,
    options: OptimizeOptions | None = None,
    gap: float = 0.01,
    time_limit_s: float = 30.0,
    rtol: float = 0.05,
    min_share: float = 0.01,
    current: OptimizeResult | None = None,
) -> SensitivityResult:
    """Where does the optimal mix change as traffic or prices move?

    Each axis is scanned alone (the others at 1): traffic multiplies every class's demand,
    ``api_price`` every API price, ``gpu_price`` every self-hosted rental, purchase and
    per-server cost. Between neighbouring grid points whose *set* of deployments used (share
    of requests >= ``min_share``) differs, the multiplier is bisected (geometric mean) until
    the interval is narrower than ``1 + rtol``: the break-even point of the decision.
    Mixes are stated with every deployment's share of the requests.

    ``current``: the plan already solved for this scenario (what ``planner optimize``
    printed); its shares (:func:`plan_mix`) and cost stand for the x1 point of every axis
    instead of a re-solve, so the sensitivity states the same current mix as the plan.

    With ``[optimize] horizon_hours`` (in ``options``, else the scenario's), every point is
    the long-horizon plan (typical days, re-priced on every hour; the traffic multiplier
    scales the whole horizon), each solve within ``time_limit_s``.
    """
    if isinstance(scenario, Problem):
        pb = scenario
        opts = options
    else:
        cat = catalog or load_catalog()
        opts = options or OptimizeOptions.from_scenario(scenario)
        pb = build_problem(scenario, cat, opts)
    horizon = _year_settings(opts) if opts is not None and opts.horizon_hours is not None \
        else None
    if pb.n_scenarios > 1:
        if horizon is not None:
            raise PlannerError("optimize.horizon_hours: a long horizon is planned at the "
                               "medians (one scenario), not on sampled scenarios")
        pb = pb.mean_problem()
    axes = {"traffic": traffic, "api_price": api_price, "gpu_price": gpu_price}
    grid, breaks = [], []
    for axis, values in axes.items():
        pts = []
        for v in sorted({float(x) for x in values}):
            if v == 1.0 and current is not None and current.solution is not None:
                cost, mix = current.objective_usd_per_month, plan_mix(current)
            else:
                cost, mix = _mix(pb.scaled(**{axis: v}), gap, time_limit_s, min_share,
                                 horizon)
            pts.append((v, cost, mix))
            grid.append({"axis": axis, "multiplier": v, "usd_per_month": cost,
                         "mix": _mix_text(mix),
                         "deployments": ",".join(sorted(_used(mix, min_share)))})
        for (lo, _, mlo), (hi, _, mhi) in zip(pts, pts[1:], strict=False):
            if _used(mlo, min_share) == _used(mhi, min_share):
                continue
            a, b, ma, mb = lo, hi, mlo, mhi
            while b / a > 1.0 + rtol:
                mid = math.sqrt(a * b)
                _, mm = _mix(pb.scaled(**{axis: mid}), gap, time_limit_s, min_share, horizon)
                if _used(mm, min_share) == _used(ma, min_share):
                    a, ma = mid, mm
                else:
                    b, mb = mid, mm
            breaks.append({"axis": axis, "multiplier_low": a, "multiplier_high": b,
                           "multiplier": math.sqrt(a * b), "mix_below": _mix_text(ma),
                           "mix_above": _mix_text(mb)})
    return SensitivityResult(
        pd.DataFrame(grid, columns=["axis", "multiplier", "usd_per_month", "mix", "deployments"]),
        pd.DataFrame(breaks, columns=["axis", "multiplier_low", "multiplier_high", "multiplier",
                                      "mix_below", "mix_above"]),
    )


# --------------------------------------------------------------------------------------------
# does a mix beat the best single type?


def compare_subsets(
    scenario: Scenario,
    groups: str | dict[str, Sequence[str]] = "accelerator",
    *,
    catalog: Catalog | None = None,
    options: OptimizeOptions | None = None,
    gap: float = 0.001,
    time_limit_s: float = 30.0,
) -> pd.DataFrame:
    """Optimal cost with every candidate (the mix) vs with each subset alone.

    ``groups="accelerator"`` (or ``"kind"``, ``"model"``) makes one subset per value of that
    attribute of the self-hosted deployments; API deployments stay available in every subset.
    Or give ``{name: [deployment, ...]}``. Returns one row per subset (``mix`` first):
    usd_per_month, status, deployments used, and ``mix_saving`` = 1 - mix / subset cost
    (the share the mix saves against that subset alone). With ``[optimize] horizon_hours``
    every subset is planned on the long horizon (:func:`optimize_long`: typical days,
    re-priced on every hour), as ``planner optimize`` plans it.
    """
    cat = catalog or load_catalog()
    opts = options or OptimizeOptions.from_scenario(scenario)
    base = build_problem(scenario, cat, opts)
    if isinstance(groups, str):
        attr = groups
        if attr not in ("accelerator", "kind", "model"):
            raise PlannerError(f"groups: expected accelerator, kind, model or a mapping, got "
                               f"{attr!r}")
        subsets: dict[str, list[str]] = {}
        for d, o in base.options.items():
            if o.selfhosted:
                subsets.setdefault(str(getattr(o, attr)), []).append(d)
    else:
        subsets = {k: list(v) for k, v in groups.items()}
    apis = [d for d, o in base.options.items() if not o.selfhosted]
    rows = []

    def solve(name: str, keep: list[str]) -> None:
        ex = tuple(sorted(set(opts.exclude) | (set(base.options) - set(keep) - set(apis))))
        pb = build_problem(scenario, cat, opts.replace(exclude=ex))
        r = optimize_long(pb, opts, gap=gap, time_limit_s=time_limit_s) \
            if opts.horizon_hours is not None else \
            optimize_problem(pb, gap=gap, time_limit_s=time_limit_s)
        used = r.plan[r.plan["chosen"]]["deployment"].tolist() if len(r.plan) else []
        rows.append({"subset": name, "deployments": ",".join(keep), "status": r.status,
                     "usd_per_month": r.objective_usd_per_month, "used": ",".join(used),
                     "check_passed": r.check.passed})

    solve("mix", list(base.options))
    for name, keep in subsets.items():
        solve(name, keep)
    df = pd.DataFrame(rows)
    mix = float(df.loc[0, "usd_per_month"])
    df["mix_saving"] = 1.0 - mix / df["usd_per_month"]
    return df


# --------------------------------------------------------------------------------------------
# views for people: the CLI and the report


def status_line(res: OptimizeResult) -> str:
    """One line: status, objective, gap to the MILP's best bound, the LP relaxation, solve
    time and the re-check."""
    if res.solution is None:
        what = ("no plan meets every constraint" if res.status == "infeasible"
                else "the solver returned no plan")
        return f"{res.status}: {what} ({res.time_s:.1f} s)"
    obj = "expected cost" if res.n_scenarios > 1 else "cost"
    if res.objective == "cvar":
        obj = "expected cost + lambda x CVaR"
    status = res.status
    if status == "optimal" and res.gap > res.gap_target + 1e-9:
        # e.g. a stochastic plan made whole after a fluid solve: a valid plan, not proven
        # within the gap asked for
        status = f"feasible (gap above the {res.gap_target:.2%} asked for)"
    return (f"{status}: {obj} {res.objective_usd_per_month:,.0f} USD/month, "
            f"{_bound_text(res)}, solved in "
            f"{res.time_s if math.isnan(res.solve_time_s) else res.solve_time_s:.1f} s; "
            f"{res.check.summary()}")


def best_bound(res: OptimizeResult) -> float:
    """The MILP solver's best (dual) bound: no plan costs less. The gap is measured against
    it, ``gap = (objective - bound) / objective``, so ``bound = objective x (1 - gap)``."""
    return res.objective_usd_per_month * (1.0 - res.gap)


def _bound_text(res: OptimizeResult) -> str:
    """How close to optimal, in words that keep the MILP's bound (what the gap is measured
    against) apart from the weaker LP-relaxation bound."""
    # a long horizon's bound is the typical days' lower bound on the full-horizon optimum
    # (planner.engines.optimize_year), kept in ``lp_bound``; there is no LP relaxation apart
    year = len(res.year) > 0
    what = "lower bound on the full horizon" if year else "best bound"
    if not math.isfinite(res.gap):
        within = "no bound proven"
    elif res.gap <= 1e-9:
        within = f"proven optimal ({what} {best_bound(res):,.0f} USD/month)"
    else:
        pct = "0.01%" if res.gap < 1e-4 else f"{res.gap:.2%}"
        within = (f"proven within {pct} of optimal ({what} "
                  f"{best_bound(res):,.0f} USD/month)")
    lp = (f"; LP relaxation {res.lp_bound:,.0f} USD/month, a weaker bound"
          if math.isfinite(res.lp_bound) and not year else "")
    return f"{within}{lp}"


def _decision(r: pd.Series, reps: np.ndarray, expected: np.ndarray | None = None) -> str:
    """What to do about one chosen deployment, in words (``reps``: its whole replicas in
    every scenario and hour; ``expected``: stochastic plans, the mean over scenarios of each
    hour's count)."""
    if r["kind"] == "api":
        return f"call {r['offering'] or r['deployment']} (pay per token)"
    n_rep, gpus = float(r["replicas_peak"]), float(r["gpus_peak"])
    if r["stage"] == "fixed":
        units = float(r["units_peak"])
        inst = f"{units:g} instance{'s' * (units != 1)}"
        plan = f" ({r['price_plan']})" if r["price_plan"] else ""
        if r["kind"] == "onprem":
            what = f"buy {units:g} {r['offering'] or 'server'} server{'s' * (units != 1)}"
        elif str(r["price_plan"] or "").startswith("reserved") or \
                r.get("billing") not in ("always-on", "active-window"):
            what = f"reserve {inst}{plan}"
        elif r["billing"] == "active-window":
            what = f"rent {inst} for the active window{plan}"
        else:
            what = f"rent {inst} always on{plan}"
        return f"{what}: {n_rep:g} replicas on {gpus:g} GPUs"
    lo, hi = (float(reps.min()), float(reps.max())) if reps.size else (0.0, n_rep)
    rng = f"{lo:g}-{hi:g}" if abs(hi - lo) > 1e-9 else f"{hi:g}"
    if reps.size and np.any(np.abs(reps - np.round(reps)) > 1e-6):
        rng = f"{lo:.1f}-{hi:.1f}"  # not whole: a plan made outside optimize()
    plan = f" {r['price_plan']}" if r["price_plan"] else ""
    exp = ""
    if expected is not None and expected.size:
        e0, e1 = float(expected.min()), float(expected.max())
        exp = f"; expected {e0:.1f}-{e1:.1f} over the scenarios"
    return f"rent {rng}{plan} replicas per hour ({gpus:g} GPUs at peak{exp})"


def plan_view(res: OptimizeResult) -> pd.DataFrame:
    """The chosen deployments and what to buy, reserve, rent or call.

    Columns: deployment, kind, model, decision, replicas_peak (whole replicas: the most in
    any hour and scenario), expected_replicas (the probability-weighted mean over scenarios
    and hours; what the plan rents on average, not a count to rent), gpus_peak,
    requests_share, usd_per_month (mean over scenarios when stochastic). A chosen fine-tune is
    a row of its own (``finetune:NAME``, its one-off cost spread over the horizon), so the rows add up to
    the plan's cost. Empty without a plan.
    """
    cols = ["deployment", "kind", "model", "decision", "replicas_peak", "expected_replicas",
            "gpus_peak", "requests_share", "usd_per_month"]
    if res.plan.empty:
        return pd.DataFrame(columns=cols)
    chosen = res.plan[res.plan["chosen"]]
    h = res.hourly
    prob = res.problem.prob if res.problem is not None else np.ones(1)
    rows = []
    for _, r in chosen.iterrows():
        hd = h[h["deployment"] == r["deployment"]]
        reps = hd["replicas"].to_numpy(float)
        exp = None
        if res.n_scenarios > 1 and r["kind"] != "api" and r["stage"] == "hourly":
            exp = (hd.assign(w=hd["scenario"].map(dict(enumerate(prob))))
                   .assign(x=lambda d: d["replicas"] * d["w"])
                   .groupby("hour")["x"].sum().to_numpy(float))
        rows.append({**{c: r[c] for c in cols if c in r.index},
                     "expected_replicas": r["replicas_mean"],
                     "decision": _decision(r, reps[np.isfinite(reps)], exp)})
    horizon = res.problem.horizon_months if res.problem is not None else math.nan
    ft = res.finetune
    for _, f in (ft[ft["chosen"].astype(bool)] if "chosen" in ft else ft).iterrows():
        rows.append({"deployment": f"finetune:{f['finetune']}", "kind": "finetune",
                     "model": None, "replicas_peak": np.nan, "gpus_peak": np.nan,
                     "requests_share": np.nan, "usd_per_month": f["usd_per_month"],
                     "decision": f"run fine-tune {f['finetune']} once: "
                                 f"{f['usd_one_off']:,.0f} USD (retries included) over "
                                 f"{horizon:g} months; enables {f['enables']}"})
    return pd.DataFrame(rows, columns=cols).sort_values(
        "usd_per_month", ascending=False, kind="stable").reset_index(drop=True)


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    """The lower weighted median (a value of ``x``: whole when ``x`` is)."""
    ok = np.isfinite(x)
    if not ok.any():
        return math.nan
    x, w = x[ok], w[ok]
    o = np.argsort(x, kind="stable")
    c = np.cumsum(w[o])
    return float(x[o][np.searchsorted(c, 0.5 * c[-1] - 1e-12)])


def hourly_view(res: OptimizeResult, max_rows: int = 24) -> pd.DataFrame:
    """The hourly mix, compact: one row per hour (or per group of hours when the profile
    has more than ``max_rows``), requests/s per chosen deployment and replicas of the
    self-hosted ones: ``replicas`` is the decision, whole replicas (stochastic: the
    probability-weighted median over scenarios, each scenario's count being whole), and with
    several scenarios ``expected_replicas`` the probability-weighted mean (the maximum within
    a group of hours for replicas, the mean for requests/s)."""
    if res.hourly.empty or res.plan.empty:
        return pd.DataFrame()
    chosen = res.plan.loc[res.plan["chosen"], "deployment"].tolist()
    h = res.hourly[res.hourly["deployment"].isin(chosen)]
    prob = res.problem.prob if res.problem is not None else np.ones(1)
    h = h.assign(w=h["scenario"].map(dict(enumerate(prob))))
    g = (h.assign(rps=h["requests_per_s"] * h["w"], exp=h["replicas"] * h["w"])
         .groupby(["hour", "deployment"], sort=False)[["rps", "exp"]].sum(min_count=1)
         .reset_index())
    med = h.groupby(["hour", "deployment"], sort=False)[["replicas", "w"]].apply(
        lambda d: _weighted_median(d["replicas"].to_numpy(float), d["w"].to_numpy(float)))
    g["reps"] = med.reindex(pd.MultiIndex.from_frame(g[["hour", "deployment"]])).to_numpy()
    periods = int(g["hour"].max()) + 1
    step = max(1, math.ceil(periods / max_rows))
    g["bucket"] = g["hour"] // step
    agg = g.groupby(["bucket", "deployment"], sort=False).agg(
        rps=("rps", "mean"), reps=("reps", "max"), exp=("exp", "max")).reset_index()
    out = pd.DataFrame({"hour": [f"{b * step}" if step == 1 else
                                 f"{b * step}-{min(periods, (b + 1) * step) - 1}"
                                 for b in sorted(agg["bucket"].unique())]})
    kind = res.plan.set_index("deployment")["kind"]
    stage = res.plan.set_index("deployment")["stage"]
    for d in chosen:
        a = agg[agg["deployment"] == d].set_index("bucket").sort_index()
        out[f"{d} req/s"] = a["rps"].to_numpy()
        if kind[d] != "api":
            out[f"{d} replicas"] = a["reps"].to_numpy()
            if res.n_scenarios > 1 and stage[d] == "hourly":
                out[f"{d} expected_replicas"] = a["exp"].to_numpy()
    return out


def report_tables(scenario: Scenario, catalog: Catalog | None = None
                  ) -> dict[str, pd.DataFrame]:
    """The report's optimiser tables (contract in :mod:`planner.report.providers`).

    Runs the deterministic optimiser at the scenario's ``[optimize]`` gap, with its time
    limit capped at 20 s (the report must stay fast). Returns ``plan`` (chosen deployments:
    deployment, decision, ..., usd_per_month), ``hourly`` (hour, deployment, kind, replicas,
    gpus, utilisation, requests_per_s of the chosen deployments), ``routing``, ``finetune``
    (when the scenario has fine-tune options), ``summary`` (metric, value) and ``notes``
    (the status line, then the optimiser's messages).

    Raises
    ------
    PlannerError
        When there is nothing to optimise (no workload classes, no deployment candidates, no
        requests), or no trusted plan exists (infeasible, with the explanation).
    """
    opts = OptimizeOptions.from_scenario(scenario)
    res = optimize(scenario, catalog=catalog, options=opts,
                   time_limit_s=min(opts.time_limit_s, 20.0))
    pb = res.problem
    if pb is not None and not pb.demand.sum() > 0:
        raise PlannerError("optimize: the workload has no requests to serve")
    if not res.trusted:
        why = "; ".join(m for m in res.messages if m) or res.check.summary()
        raise PlannerError(f"optimize: no trusted plan ({res.status}): {why}")
    h = res.hourly[(res.hourly["scenario"] == 0)
                   & res.hourly["deployment"].isin(res.plan.loc[res.plan["chosen"],
                                                                "deployment"])]
    out = {
        "plan": plan_view(res),
        "hourly": h[["hour", "deployment", "kind", "replicas", "gpus", "utilisation",
                     "requests_per_s"]].reset_index(drop=True),
        "routing": res.routing,
        "summary": res.summary(),
        "notes": pd.DataFrame({"note": [status_line(res), *res.messages]}),
    }
    if not res.finetune.empty:
        out["finetune"] = res.finetune
    return out
