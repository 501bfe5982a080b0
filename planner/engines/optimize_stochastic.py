"""Two-stage stochastic optimiser by L-shaped (Benders) decomposition, multi-cut.

The sample-average problem over S scenarios has a small first stage x (servers bought,
reserved blocks, "used" binaries, fine-tunes: integers) and, once x is fixed, S independent
second-stage LPs (on-demand/spot replicas as a fluid, routing), one per scenario. Its
extensive form grows with S and HiGHS spends most of its time re-solving that large LP; the
L-shaped method (Van Slyke & Wets 1969; multi-cut: Birge & Louveaux 1988) solves instead

- a master MILP over x and one variable theta_s per scenario:
  ``min sum_s p_s theta_s`` (+ lambda x (eta + sum_s p_s z_s / (1 - alpha)),
  ``z_s >= theta_s - eta``, for CVaR), subject to the first-stage rows (links, power, budget
  on ``sum_s p_s theta_s``) and the optimality cuts collected so far;
- for each candidate x^, the S scenario LPs with x fixed through its bounds (HiGHS through
  ``scipy.optimize.linprog``): their optimal value Q_s(x^) (the scenario's monthly cost, first
  stage included) and the reduced costs of the fixed columns, a subgradient g_s, give the cut
  ``theta_s >= Q_s(x^) + g_s (x - x^)``, valid because an LP's optimal value is convex in its
  bounds.

The master's optimum is a lower bound, the best evaluated x an upper bound; iterations stop
when they are within the relative ``gap``. A candidate the master proposes twice is optimal.

Complete recourse: the scenario LPs carry penalised slacks (unserved demand, quality, TPM and
share shortfalls; :func:`build_milp` ``recourse_penalty``) so a first stage that cannot serve
some scenario yields a large cost, and a cut, instead of an infeasible LP. A final plan with a
positive slack is reported as infeasible for that scenario.

Whole replicas (:func:`whole_replicas`): the hourly counts are continuous in the scenario LPs
(a fluid); the plan returned re-solves each scenario's hourly counts in whole replicas at the
chosen first stage, so the decision is whole replicas everywhere; the fluid optimum stays a
lower bound on its cost.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from planner import stats
from planner._runtime import solver_output_guard
from planner.engines.optimize_data import Problem
from planner.engines.optimize_milp import (
    Milp,
    PlanArrays,
    build_milp,
    decode,
    raw_violations,
    solve_milp,
)

FIRST = ("blocks_fixed", "used", "finetune")
SLACKS = ("slack_demand", "slack_quality", "slack_tpm", "slack_onprem_share",
          "slack_provider_share")


def recourse_penalty(pb: Problem) -> float:
    """USD per unserved request: 10 x the dearest route's price per request, at least $1."""
    worst = 0.0
    for r, rt in enumerate(pb.routes):
        for c in rt.classes:
            worst = max(worst, float(np.max(pb.route_usd_per_request(r, c))))
    return max(1.0, 10.0 * worst)


class _Sub:
    """One scenario's LP with the first stage fixed through bounds."""

    def __init__(self, m: Milp):
        self.m = m
        self.first = np.concatenate([m.cols[n].ravel() for n in FIRST])
        self.slack = np.concatenate([m.cols[n].ravel() for n in SLACKS if n in m.cols])
        eq = m.lo == m.hi
        up = np.isfinite(m.hi) & ~eq
        lo = np.isfinite(m.lo) & ~eq
        self.A_ub = sparse.vstack([m.A[up], -m.A[lo]]).tocsr()
        self.b_ub = np.concatenate([m.hi[up], -m.lo[lo]])
        self.A_eq = m.A[eq].tocsr()
        self.b_eq = m.lo[eq]

    def solve(self, xf: np.ndarray):
        lb, ub = self.m.lb.copy(), self.m.ub.copy()
        lb[self.first] = xf
        ub[self.first] = xf
        with solver_output_guard():
            res = linprog(self.m.c, A_ub=self.A_ub, b_ub=self.b_ub, A_eq=self.A_eq,
                          b_eq=self.b_eq, bounds=np.column_stack([lb, ub]), method="highs")
        if res.status != 0:
            return None
        g = np.asarray(res.lower.marginals)[self.first] + \
            np.asarray(res.upper.marginals)[self.first]
        return float(res.fun), g, np.asarray(res.x)


@dataclass
class BendersResult:
    """Outcome of :func:`solve_benders`."""

    status: str  # optimal | time_limit | infeasible
    objective: float  # best plan's objective (upper bound)
    lower_bound: float
    gap: float
    lp_bound: float
    iterations: int
    time_s: float
    first: np.ndarray | None
    plan: PlanArrays | None
    scenario_cost: np.ndarray | None  # (S,) monthly cost of the best plan
    milps: list[Milp] = field(default_factory=list, repr=False)
    xs: list[np.ndarray] = field(default_factory=list, repr=False)
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    slack_usd: float = 0.0
    ev_first: np.ndarray | None = None
    eev: float = math.nan
    ev_objective: float = math.nan


def _objective(q: np.ndarray, p: np.ndarray, cvar: bool, lam: float, alpha: float) -> float:
    if not cvar:
        return float(np.dot(p, q))
    return float(np.dot(p, q)) + lam * stats.cvar(q, alpha, weights=p)


def solve_benders(
    pb: Problem,
    *,
    gap: float = 0.01,
    time_limit_s: float = 30.0,
    objective: str = "expected",
    cvar_lambda: float = 0.0,
    cvar_alpha: float = 0.95,
    max_iterations: int = 100,
    progress: Callable[[str], None] | None = None,
) -> BendersResult:
    """Solve the sample-average problem by multi-cut L-shaped decomposition.

    The first candidate is the first stage of the mean-value (EV) problem, so its evaluation
    gives the EEV of the value of the stochastic solution for free. ``progress`` is called
    with a short text after every iteration.
    """
    t0 = time.perf_counter()
    S = pb.n_scenarios
    p = pb.prob
    cvar = objective == "cvar" and cvar_lambda > 0
    pen = recourse_penalty(pb)
    subs = [_Sub(build_milp(pb.take(s), drop={"budget"}, recourse_penalty=pen))
            for s in range(S)]
    s0 = subs[0]
    first = s0.first
    nf = first.size
    m0 = s0.m

    # -- master -------------------------------------------------------------------------------
    # columns: x (nf) | theta (S) | eta (1) | z (S)   (eta, z only with CVaR)
    ncv = 1 + S if cvar else 0
    nm = nf + S + ncv
    lbm = np.concatenate([m0.lb[first], np.zeros(S), np.full(ncv, 0.0)])
    ubm = np.concatenate([m0.ub[first], np.full(S, np.inf), np.full(ncv, np.inf)])
    if cvar:
        lbm[nf + S] = -np.inf
    integ = np.concatenate([m0.integrality[first], np.zeros(S + ncv, int)])
    cm = np.concatenate([np.zeros(nf), p, np.zeros(ncv)])
    if cvar:
        cm[nf + S] = cvar_lambda
        cm[nf + S + 1:] = cvar_lambda * p / (1.0 - cvar_alpha)
    base_rows: list[tuple[sparse.csr_matrix, np.ndarray, np.ndarray]] = []
    # first-stage-only rows of the scenario model (links, fine-tune gating of bought servers,
    # power): identical in every scenario
    a0 = m0.A.tocsc()
    mask = np.zeros(m0.A.shape[1], bool)
    mask[first] = True
    touched = np.asarray((abs(a0[:, ~mask]) > 0).sum(axis=1)).ravel() == 0
    touched &= np.asarray((abs(a0[:, mask]) > 0).sum(axis=1)).ravel() > 0
    if touched.any():
        a = m0.A[touched][:, first]
        base_rows.append((sparse.hstack([a, sparse.csr_matrix((a.shape[0], nm - nf))]).tocsr(),
                          m0.lo[touched], m0.hi[touched]))
    if pb.budget_usd_per_month is not None:
        row = np.zeros((1, nm))
        row[0, nf:nf + S] = p
        base_rows.append((sparse.csr_matrix(row), np.array([-np.inf]),
                          np.array([pb.budget_usd_per_month])))
    if cvar:
        # z_s - theta_s + eta >= 0
        r = sparse.hstack([sparse.csr_matrix((S, nf)), -sparse.identity(S),
                           sparse.csr_matrix(np.ones((S, 1))), sparse.identity(S)]).tocsr()
        base_rows.append((r, np.zeros(S), np.full(S, np.inf)))
    cut_rows: list[sparse.csr_matrix] = []
    cut_lo: list[float] = []

    def master(relax: bool = False):
        mats = [b[0] for b in base_rows] + ([sparse.vstack(cut_rows)] if cut_rows else [])
        lo = np.concatenate([b[1] for b in base_rows] + [np.asarray(cut_lo)])
        hi = np.concatenate([b[2] for b in base_rows] + [np.full(len(cut_lo), np.inf)])
        cons = [LinearConstraint(sparse.vstack(mats).tocsr(), lo, hi)] if mats else []
        left = max(1.0, time_limit_s - (time.perf_counter() - t0))
        with solver_output_guard():
            res = milp(cm, integrality=np.zeros_like(integ) if relax else integ,
                       bounds=Bounds(lbm, ubm), constraints=cons,
                       options={"mip_rel_gap": min(gap / 10.0, 1e-4), "time_limit": left})
        return res

    def evaluate(xf: np.ndarray):
        out = [sub.solve(xf) for sub in subs]
        if any(o is None for o in out):
            return None
        q = np.array([o[0] for o in out])
        g = np.stack([o[1] for o in out])
        return q, g, [o[2] for o in out]

    # -- the mean-value problem gives the first candidate (and the EEV) -----------------------
    ev_m = build_milp(pb.mean_problem())
    ev = solve_milp(ev_m, gap=gap, time_limit_s=time_limit_s)  # to the gap: the same start
    ev_first = None
    if ev.x is not None:
        ev_first = np.round(np.concatenate([ev.x[ev_m.cols[n].ravel()] for n in FIRST])) + 0.0
    x_hat = ev_first if ev_first is not None else m0.lb[first].copy()

    best = (math.inf, None, None, None)  # objective, x, q, xs
    seen: set[tuple] = set()
    hist = []
    lb_val = -math.inf
    status = "optimal"
    eev = math.nan
    it = 0
    for it in range(1, max_iterations + 1):
        key = tuple(np.round(x_hat, 6))
        if key in seen:
            lb_val = max(lb_val, best[0])  # the master proposes an evaluated point: optimal
            break
        seen.add(key)
        ev_out = evaluate(x_hat)
        if ev_out is None:
            status = "error"
            break
        q, g, xs = ev_out
        val = _objective(q, p, cvar, cvar_lambda, cvar_alpha)
        if it == 1 and ev_first is not None:
            eev = val
        if val < best[0]:
            best = (val, x_hat.copy(), q, xs)
        # multi-cut: theta_s - g_s x >= Q_s - g_s x^
        rows = sparse.hstack([sparse.csr_matrix(-g), sparse.identity(S),
                              sparse.csr_matrix((S, ncv))]).tocsr()
        cut_rows.append(rows)
        cut_lo.extend((q - g @ x_hat).tolist())
        res = master()
        if res.x is None:
            status = "error" if res.status != 1 else "time_limit"
            break
        lb_val = max(lb_val, float(res.fun) if res.status == 0 else
                     float(getattr(res, "mip_dual_bound", -math.inf) or -math.inf))
        hist.append({"iteration": it, "upper_bound": best[0], "lower_bound": lb_val,
                     "candidate_value": val, "time_s": time.perf_counter() - t0})
        if progress is not None:
            progress(f"Benders iteration {it}: best plan {best[0]:,.0f} USD/month, bound "
                     f"{lb_val:,.0f} USD/month")
        if best[0] - lb_val <= gap * abs(best[0]) + 1e-9:
            break
        if time.perf_counter() - t0 > time_limit_s:
            status = "time_limit"
            break
        x_hat = np.round(res.x[:nf]) + 0.0
    else:
        status = "time_limit"
    if hist:
        hist[-1]["lower_bound"] = lb_val
    lp = master(relax=True)
    lp_bound = float(lp.fun) if lp.x is not None else math.nan
    val, xf, q, xs = best
    if xf is None:
        return BendersResult("error", math.nan, lb_val, math.nan, lp_bound, it,
                             time.perf_counter() - t0, None, None, None,
                             history=pd.DataFrame(hist), ev_first=ev_first)
    plans = [decode(sub.m, x) for sub, x in zip(subs, xs, strict=True)]
    plan = PlanArrays(
        plans[0].options, np.concatenate([pl.blocks for pl in plans]),
        np.concatenate([pl.used for pl in plans]), np.concatenate([pl.flows for pl in plans]),
        plans[0].finetune, plans[0].pairs, None,
    )
    slack_usd = float(sum(np.dot(sub.m.c[sub.slack], x[sub.slack]) for sub, x in
                          zip(subs, xs, strict=True))) if s0.slack.size else 0.0
    scen_cost = q - np.array([np.dot(sub.m.c[sub.slack], x[sub.slack]) for sub, x in
                              zip(subs, xs, strict=True)]) if s0.slack.size else q
    if slack_usd > 1e-6 * max(1.0, abs(val)):
        status = "infeasible"
    g_rel = (val - lb_val) / abs(val) if val else 0.0
    return BendersResult(
        status, val, lb_val, max(0.0, g_rel), lp_bound, it, time.perf_counter() - t0, xf,
        plan, scen_cost, [sub.m for sub in subs], xs, pd.DataFrame(hist), slack_usd,
        ev_first, eev, ev.objective if ev.x is not None else math.nan,
    )


def scenario_raw_violations(res: BendersResult, tol: float = 1e-6) -> list[dict]:
    """Rows, bounds and integrality of every scenario LP at the returned plan."""
    out = []
    for s, (m, x) in enumerate(zip(res.milps, res.xs, strict=True)):
        for v in raw_violations(m, x, tol):
            v["item"] = f"s={s}: {v['item']}"
            out.append(v)
            if len(out) >= 50:
                return out
    return out


@dataclass
class WholePlan:
    """Outcome of :func:`whole_replicas`: the plan in whole replicas and how it was made."""

    problem: Problem  # the problem with integer hourly counts (what the plan is checked on)
    plan: PlanArrays
    resolved: int  # scenarios whose hourly counts were re-solved as a MILP
    rounded: int  # scenarios rounded up instead (no time left, or no whole plan found)
    extra: list[dict] = field(default_factory=list)  # raw violations of the re-solves
    n_checked: int = 0
    limited: int = 0  # scenarios the time limit cut short (re-solve stopped, or not started)


def _fixed_values(m: Milp, pb: Problem, plan: PlanArrays) -> dict[str, np.ndarray]:
    """The plan's first stage (servers, fleets, 'used', fine-tunes) in ``m``'s column order."""
    out = {}
    for name in FIRST:
        keys = m.cols.blocks[name].axes[0][1]
        vals = []
        for k in keys:
            if name == "finetune":
                vals.append(plan.finetune.get(k, 0.0))
            else:
                j = plan.options.index(k)
                arr = plan.blocks if name == "blocks_fixed" else plan.used
                vals.append(arr[0, j, 0])
        out[name] = np.round(np.asarray(vals, float)) + 0.0
    return out


def whole_replicas(pb: Problem, plan: PlanArrays, *, gap: float = 0.01,
                   time_limit_s: float = 30.0) -> WholePlan:
    """The stochastic plan in whole replicas: each scenario's hourly (scale-to-zero) counts
    re-solved as a MILP with integer counts (routing re-optimised, start-ups, minimum
    replicas, run length and ramp rules enforced) at the plan's first stage, which stays as
    decided. A scenario the time limit leaves no time for, or whose re-solve finds no plan,
    has its fluid counts rounded up (capacity, links and whole-block ramp limits still hold;
    :func:`check_plan` re-checks the rest); a re-solve that stops at the time limit keeps
    the best plan it found (both counted in ``limited``). Each re-solve may use all the time
    left (not a share of it), so below the limit every scenario is re-solved to ``gap`` and
    the plan does not depend on the machine's load; ``time_limit_s = math.inf``: no
    wall-clock limit (:func:`.optimize_milp.solve_milp`). Never None.
    """
    from planner.engines.optimize_milp import solve_milp

    t0 = time.perf_counter()
    pbw = replace(pb, integer_hourly=True)
    S = pb.n_scenarios
    blocks, used, flows = plan.blocks.copy(), plan.used.copy(), plan.flows.copy()
    hourly = [j for j, d in enumerate(plan.options) if pb.options[d].stage == "hourly"]
    resolved = rounded = limited = 0
    extra: list[dict] = []
    n_checked = 0
    for s in range(S):
        left = time_limit_s - (time.perf_counter() - t0)
        info = None
        limited += left <= 0.05  # no time left: rounded up below
        if left > 0.05:
            m = build_milp(pbw.take(s))
            for name, vals in _fixed_values(m, pbw, plan).items():
                idx = m.cols[name].ravel()
                m.lb[idx] = m.ub[idx] = vals
            # all the time left, not a share of it: a re-solve runs to ``gap`` (bounded by
            # work, the same on any machine load); the limit is a safety net, counted below
            info = solve_milp(m, gap=gap, time_limit_s=max(0.05, left))
        if info is not None and info.x is not None:
            ps = decode(m, info.x)
            blocks[s], used[s], flows[s] = ps.blocks[0], ps.used[0], ps.flows[0]
            resolved += 1
            limited += info.status == "time_limit"
            for v in raw_violations(m, info.x):
                v["item"] = f"s={s}: {v['item']}"
                extra.append(v)
            n_checked += m.A.shape[0] + info.x.size + int(np.count_nonzero(m.integrality))
        else:
            for j in hourly:
                o = pb.options[plan.options[j]]
                b = np.ceil(blocks[s, j] - 1e-6)
                blocks[s, j] = np.where(b > 0, np.maximum(b, o.min_blocks), 0.0)
                if pb.ha_reserve > 0:
                    used[s, j] = np.maximum(used[s, j], blocks[s, j] > 0)
            rounded += 1
    out = PlanArrays(plan.options, blocks, used, flows, dict(plan.finetune), plan.pairs, None)
    return WholePlan(pbw, out, resolved, rounded, extra[:50], n_checked, limited)
