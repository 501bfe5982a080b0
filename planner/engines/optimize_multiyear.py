"""Multi-year capacity plans: reserved terms bought in a given year, traffic growing each year.

The optimiser's MILP (:mod:`.optimize_milp`) plans one average month of a profile. Over
several years, traffic grows and a reserved cloud block (``plan = "reserved-1y"`` or
``"reserved-3y"``) is a commitment: bought at the start of a year, it is paid for every year
of its term, used or not, and a term may run past the planning horizon (those years are
paid too). This module stacks one copy of the profile problem per year and ties the
reserved fleets together:

- year ``t`` (0-based) has the profile's demand times ``(1 + g) ** t`` (``g``:
  ``growth_per_year``, e.g. ``[trends] traffic_growth_per_year``), and every decision of the
  one-year problem (on-prem servers, always-on fleets, hourly rentals, API traffic) is taken
  again each year;
- ``buy[d, y]`` (integer) reserved blocks of option ``d`` bought at the start of year ``y``;
  the reserved fleet of year ``t`` is what was bought in the ``term`` years up to ``t``:
  ``blocks_fixed_t[d] = sum_{t - term < y <= t} buy[d, y]`` (one row per option and year);
- the objective is the total cost over the horizon: each year's monthly cost x 12,
  discounted by ``(1 + r) ** t``, plus the years of a term past the horizon (block
  USD/month x 12 each, discounted the same way).

Solved by HiGHS as one MILP; the plan of every year is decoded and re-checked against every
constraint of that year (:func:`.optimize_milp.check_plan`), and the purchase rows are
re-checked from the decoded purchases. Never returns None: without a plan the status says
why.

Public API: :func:`solve_multiyear`, :class:`MultiYearResult`, :func:`term_years`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from planner._runtime import solver_output_guard
from planner.engines.optimize_data import Problem
from planner.engines.optimize_milp import (
    CheckReport,
    PlanArrays,
    build_milp,
    check_plan,
    decode,
)
from planner.errors import PlannerError

__all__ = ["MultiYearResult", "solve_multiyear", "term_years"]

MONTHS_PER_YEAR = 12.0

_STATUS = {0: "optimal", 1: "time_limit", 2: "infeasible", 3: "unbounded", 4: "error"}


def term_years(price_plan: str | None) -> int:
    """Years of a reserved term (``reserved-1y``: 1, ``reserved-3y``: 3); 0: not reserved."""
    return {"reserved-1y": 1, "reserved-3y": 3}.get(price_plan or "", 0)


@dataclass
class MultiYearResult:
    """Outcome of :func:`solve_multiyear`.

    Attributes
    ----------
    status : "optimal", "time_limit", "infeasible", "time_limit_no_solution" or "error"
    objective_usd : total cost over the horizon (discounted), terms past it included
    bound_usd : HiGHS's proven lower bound on that total
    gap : (objective - bound) / objective
    years : years planned
    purchases : one row per (option, year) with blocks bought: term_years, runs_to_year
        (last year paid, 1-based), beyond_horizon_usd (the discounted years past the horizon)
    fleet : one row per (year, self-hosted option): blocks held (reserved: the active terms)
    yearly : one row per year: traffic factor, usd_per_month (that year's average month),
        usd (x 12), usd_discounted
    plans, problems : each year's decoded plan and problem
    checks : each year's re-check; ``passed`` also needs the purchase rows to hold
    """

    status: str
    objective_usd: float
    bound_usd: float
    gap: float
    years: int
    purchases: pd.DataFrame
    fleet: pd.DataFrame
    yearly: pd.DataFrame
    plans: list[PlanArrays] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    checks: list[CheckReport] = field(default_factory=list)
    passed: bool = False
    time_s: float = 0.0
    messages: list[str] = field(default_factory=list)


def solve_multiyear(pb: Problem, years: int, *, growth_per_year: float = 0.0,
                    discount_rate_per_year: float = 0.0, gap: float = 0.01,
                    time_limit_s: float = 60.0) -> MultiYearResult:
    """Plan ``years`` years of the profile problem ``pb`` (one scenario: the medians), with
    reserved terms bought in a given year and run to their end (see the module docstring).

    Parameters
    ----------
    pb : Problem
        The one-year (profile) problem, priced at the medians.
    years : int
        Years to plan (1..30).
    growth_per_year : float
        Traffic of year ``t`` (0-based) is the profile's x ``(1 + g) ** t``; > -1.
    discount_rate_per_year : float
        Year ``t``'s costs are divided by ``(1 + r) ** t``; >= 0.
    gap, time_limit_s : float
        HiGHS's relative gap and time limit.
    """
    t0 = time.perf_counter()
    if int(years) != years or not 1 <= years <= 30:
        raise PlannerError(f"years: expected a whole number of years in 1..30, got {years}")
    years = int(years)
    if not (math.isfinite(growth_per_year) and growth_per_year > -1):
        raise PlannerError(f"trends.traffic_growth_per_year: expected > -1, got "
                           f"{growth_per_year}")
    if not (math.isfinite(discount_rate_per_year) and discount_rate_per_year >= 0):
        raise PlannerError(f"scenario.discount_rate_per_year: expected >= 0, got "
                           f"{discount_rate_per_year}")
    if pb.n_scenarios != 1:
        raise PlannerError("a multi-year plan is made at the medians (one scenario), not on "
                           "sampled scenarios")
    factors = [(1.0 + growth_per_year) ** t for t in range(years)]
    disc = [(1.0 + discount_rate_per_year) ** -t for t in range(years + 3)]
    pbs = [pb.scaled(traffic=f) for f in factors]
    ms = [build_milp(p) for p in pbs]
    offs = np.cumsum([0] + [m.c.size for m in ms])
    reserved = [d for d, o in pb.options.items() if o.kind == "cloud" and o.stage == "fixed"
                and term_years(o.price_plan) > 0]
    nb = len(reserved) * years
    n = int(offs[-1]) + nb
    buy = (int(offs[-1]) + np.arange(nb)).reshape(len(reserved), years) if nb else \
        np.zeros((0, years), int)
    c = np.concatenate([m.c * MONTHS_PER_YEAR * disc[t] for t, m in enumerate(ms)] +
                       [np.zeros(nb)])
    lb = np.concatenate([m.lb for m in ms] + [np.zeros(nb)])
    ub = np.concatenate([m.ub for m in ms] + [np.full(nb, np.inf)])
    integ = np.concatenate([m.integrality for m in ms] + [np.ones(nb, int)])
    blocks = []  # each year's A
    lo = [m.lo for m in ms]
    hi = [m.hi for m in ms]
    A = sparse.block_diag([m.A for m in ms], format="csr") if ms else sparse.csr_matrix((0, 0))
    A = sparse.hstack([A, sparse.csr_matrix((A.shape[0], nb))], format="csr")
    blocks.append(A)
    # purchase rows: blocks_fixed_t[d] - sum of the active terms' purchases = 0
    rr, cc, vv = [], [], []
    row = 0
    for i, d in enumerate(reserved):
        term = term_years(pb.options[d].price_plan)
        usd_month = float(np.asarray(pb.options[d].block_usd_per_month, float)[0])
        ub[buy[i]] = max(float(m.ub[m.cols.at("blocks_fixed", option=d)]) for m in ms)
        for y in range(years):
            # years of this purchase's term past the horizon: paid, discounted
            c[buy[i, y]] = sum(usd_month * MONTHS_PER_YEAR * (1.0 + discount_rate_per_year)
                               ** -k for k in range(years, y + term))
        for t, m in enumerate(ms):
            rr.append(row)
            cc.append(int(offs[t]) + m.cols.at("blocks_fixed", option=d))
            vv.append(1.0)
            for y in range(max(0, t - term + 1), t + 1):
                rr.append(row)
                cc.append(int(buy[i, y]))
                vv.append(-1.0)
            row += 1
    if row:
        blocks.append(sparse.csr_matrix((vv, (rr, cc)), shape=(row, n)))
        lo.append(np.zeros(row))
        hi.append(np.zeros(row))
    A = sparse.vstack(blocks, format="csr")
    lo_all, hi_all = np.concatenate(lo), np.concatenate(hi)
    with solver_output_guard():
        r = milp(c, integrality=integ, bounds=Bounds(lb, ub),
                 constraints=[LinearConstraint(A, lo_all, hi_all)] if A.shape[0] else [],
                 options={"mip_rel_gap": gap, "time_limit": max(time_limit_s, 0.05),
                          "disp": False})
    status = _STATUS.get(r.status, "error")
    empty = pd.DataFrame()
    if r.x is None:
        if status == "time_limit":
            status = "time_limit_no_solution"
        return MultiYearResult(status, math.nan, math.nan, math.nan, years, empty, empty,
                               empty, problems=pbs, time_s=time.perf_counter() - t0,
                               messages=[f"{status}: no multi-year plan ({r.message})"])
    x = np.asarray(r.x, float)
    obj = float(c @ x)
    bound = getattr(r, "mip_dual_bound", None)
    bound = float(bound) if bound is not None and np.isfinite(bound) else obj
    g = max(0.0, (obj - bound) / max(abs(obj), 1e-300))
    plans, checks, yearly, fleet = [], [], [], []
    for t, m in enumerate(ms):
        xt = x[offs[t]:offs[t + 1]]
        plan = decode(m, xt)
        plans.append(plan)
        checks.append(check_plan(pbs[t], plan, objective=float(m.c @ xt), milp_=m))
        usd_m = float(m.c @ xt)
        yearly.append({"year": t + 1, "traffic_factor": factors[t], "usd_per_month": usd_m,
                       "usd": usd_m * MONTHS_PER_YEAR,
                       "usd_discounted": usd_m * MONTHS_PER_YEAR * disc[t]})
        for j, d in enumerate(plan.options):
            fleet.append({"year": t + 1, "deployment": d,
                          "stage": pbs[t].options[d].stage,
                          "term_years": term_years(pbs[t].options[d].price_plan),
                          "blocks": float(plan.blocks[0, j, :].max(initial=0.0))})
    bought = np.round(x[buy]) if nb else np.zeros((0, years))
    purchases = []
    link_ok = True
    for i, d in enumerate(reserved):
        term = term_years(pb.options[d].price_plan)
        for y in range(years):
            if bought[i, y] > 0:
                purchases.append({
                    "deployment": d, "year": y + 1, "blocks": float(bought[i, y]),
                    "term_years": term, "runs_to_year": y + term,
                    "beyond_horizon_usd": float(c[buy[i, y]] * bought[i, y])})
        j = plans[0].options.index(d)
        for t in range(years):
            held = float(plans[t].blocks[0, j, 0])
            active = float(bought[i, max(0, t - term + 1):t + 1].sum())
            link_ok &= abs(held - active) <= 1e-6
    # the total from the decoded plans and purchases (what the plan costs)
    total = sum(y["usd_discounted"] for y in yearly) + sum(
        p["beyond_horizon_usd"] for p in purchases)
    msgs = []
    if not link_ok:
        msgs.append("WARNING: a year's reserved fleet is not the sum of the terms bought")
    if abs(total - obj) > 1e-6 * max(1.0, abs(obj)):
        msgs.append(f"WARNING: the plan's recomputed total {total:,.2f} differs from the "
                    f"solver's objective {obj:,.2f}")
    passed = link_ok and all(ch.passed for ch in checks) and not msgs
    return MultiYearResult(
        status if passed else "error", obj, bound, g, years,
        pd.DataFrame(purchases, columns=["deployment", "year", "blocks", "term_years",
                                         "runs_to_year", "beyond_horizon_usd"]),
        pd.DataFrame(fleet, columns=["year", "deployment", "stage", "term_years", "blocks"]),
        pd.DataFrame(yearly), plans, pbs, checks, passed, time.perf_counter() - t0, msgs)
