"""Multi-year horizon: price paths, traffic growth, hardware purchases and net present cost.

Buying GPUs now versus paying falling API prices is a risk question: this engine prices every
option year by year over the scenario's horizon under sampled trends and discounts the cash
flows to a net present cost (NPC).

Trends (the scenario's ``[trends]`` table, :class:`planner.config.Trends`, every field a number
or a distribution)::

    [trends]
    api_price_decline_per_year = { dist = "triangular", low = 0.1, mode = 0.3, high = 0.5 }
    gpu_price_decline_per_year = 0.15       # cloud GPU rental prices
    hardware_price_decline_per_year = 0.1   # price of servers bought in later years
    traffic_growth_per_year = 0.3           # every class's requests per day

The source articles report a ~80% fall in the cost of GPT-3-level capability in 2.5 years:
:func:`annual_decline` turns that into 1 - 0.2 ** (1 / 2.5) = 47.5% a year.

Year ``y = 0 .. Y-1`` (``Y = ceil(horizon_months / 12)``; the last year may be partial, share
``f_y`` of a year), per sample:

* volume multiple ``g_y = (1 + traffic_growth)^y`` (constant within a year); the option is
  re-sized for it (whole replicas, instances, servers) by compiled scenario's formulas (:mod:`planner.engines.risk.compiled`);
* API: ``12 f_y (token bill x (1 - api_decline)^y + request fees)``;
* cloud: ``12 f_y (GPU rental x (1 - gpu_decline)^y + request fees)``;
* on-prem, a cash view: servers are bought when the fleet must grow (never sold before the
  end), at ``price x (1 - hardware_decline)^y``, and replaced when they reach their
  amortisation life; running costs ``12 f_y`` x (maintenance share x purchase value of the
  fleet / 12 + energy of the needed servers + idle energy of spare ones + facilities per
  server + staff + fees); implementation paid in year 0; at the end of the horizon each server
  is credited its book value, straight-line from its price to ``residual_share`` x price over
  its life. ``cost_of_capital`` is not used in this view: the discount rate prices capital;
* fine-tune one-offs are paid in year 0.

NPC = sum of cash flows discounted at ``scenario.discount_rate_per_year`` (``r``): purchases
and one-offs at the start of their year, ``(1 + r)^-y``; running costs mid-year,
``(1 + r)^-(y + f_y / 2)``; the end-of-horizon credit at ``(1 + r)^-H``, ``H = horizon / 12``.
With no trends, ``r = 0`` and a horizon equal to the amortisation life, the NPC equals the
deterministic engine's ``usd_horizon`` (straight-line capex, no cost of capital).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError

from planner.catalog import Catalog
from planner.config import Scenario, Trends
from planner.distributions import is_distribution
from planner.engines.risk.compiled import CompiledScenario, compile_scenario
from planner.engines.risk.sampling import (
    CHUNK_SIZE,
    build_sampler,
    chunk_generator,
    chunk_sizes,
    root_seed,
)
from planner.engines.risk.stats import tail_stats
from planner.errors import PlannerError
from planner.uncertain import as_correlations, uncertain_inputs

__all__ = ["MultiYearResults", "annual_decline", "run_multiyear"]


_TREND_FIELDS = ("api_price_decline_per_year", "gpu_price_decline_per_year",
                 "hardware_price_decline_per_year", "traffic_growth_per_year")


def annual_decline(total_decline: float, years: float) -> float:
    """Yearly decline rate equivalent to a total decline over ``years``.

    ``d = 1 - (1 - total)^(1 / years)``; e.g. the articles' 80% in 2.5 years gives 0.475.
    """
    if not 0.0 <= total_decline < 1.0 or not years > 0:
        raise PlannerError(
            f"annual_decline: expected a total decline in [0, 1) and years > 0, got "
            f"{total_decline!r}, {years!r}"
        )
    return 1.0 - (1.0 - total_decline) ** (1.0 / years)


def _trends(sc: Scenario, trends: Any) -> Trends:
    if trends is None:
        return sc.trends
    if isinstance(trends, BaseModel):
        return trends
    if not isinstance(trends, Mapping):
        raise PlannerError(f"trends: expected a table of trend rates, got {trends!r}")
    try:
        return Trends.model_validate(dict(trends))
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"] if p not in (
            "float", "lognormal", "normal", "uniform", "triangular", "pert", "beta", "choice",
            "empirical", "fixed")
            and "[" not in str(p))
        msg = err["msg"].removeprefix("Value error, ")
        raise PlannerError(f"trends.{loc}: {msg}") from None


@dataclass(frozen=True)
class MultiYearResults:
    """Year-by-year cash and net present cost per option.

    Attributes
    ----------
    yearly : per (deployment, year): mean, p5, p50, p95 of the year's cash cost (nominal USD)
        and ``at_median`` (all inputs and trends at their medians)
    cumulative : per (deployment, year): p5, p50, p95 of the cash paid from the start to the
        end of that year *before* the end-of-horizon residual-value credit of on-prem servers
        (quantiles of each sample's running total, so never negative), ``residual_credit_p50``
        (median credit, on the last year's row; 0 elsewhere and for rented options) and
        ``net_p50`` (median running total net of the credit)
    npc : per deployment: mean, se_mean, p5, p50, p95, cvar95 of the net present cost,
        ``at_median``, and ``p_lowest`` (probability of the lowest NPC among the options that
        serve every class)
    samples : NPC per sample, one column per deployment
    """

    scenario: str
    n: int
    years: int
    discount_rate: float | None
    yearly: pd.DataFrame
    npc: pd.DataFrame
    samples: pd.DataFrame | None = None
    cumulative: pd.DataFrame = field(default_factory=pd.DataFrame)


class _Path:
    """Year-by-year cash flows of every option for one block of samples."""

    def __init__(self, model: CompiledScenario, values: Mapping[str, Any], m: int,
                 trends: Mapping[str, Any], rate: Any):
        self.model, self.values, self.m = model, values, m
        self.t = trends
        self.rate = rate
        months = model.horizon
        self.years = int(math.ceil(months / 12.0))
        self.frac = [min(1.0, months / 12.0 - y) for y in range(self.years)]
        self.h_years = months / 12.0
        #: end-of-horizon residual-value credit per on-prem option (m,), set by :meth:`run`
        self.credit: dict[str, np.ndarray] = {}

    def run(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(npc per option (m,), cash per option (years, m))."""
        model, m = self.model, self.m
        g = 1.0 + np.asarray(self.t["traffic_growth_per_year"], dtype=float)
        d_api = 1.0 - np.asarray(self.t["api_price_decline_per_year"], dtype=float)
        d_gpu = 1.0 - np.asarray(self.t["gpu_price_decline_per_year"], dtype=float)
        d_hw = 1.0 - np.asarray(self.t["hardware_price_decline_per_year"], dtype=float)
        r = np.asarray(self.rate, dtype=float)
        per_year = [model.evaluate(self.values, m, volume_scale=np.broadcast_to(g**y, (m,)),
                                   parts=True) for y in range(self.years)]
        npc: dict[str, np.ndarray] = {}
        cash: dict[str, np.ndarray] = {}
        for o in model.options:
            flows = np.zeros((self.years, m))
            total = np.zeros(m)
            res = [py[o.name] for py in per_year]
            once = res[0]["once"]
            flows[0] += once
            total += once
            if o.kind == "onprem":
                f, t, self.credit[o.name] = self._onprem(res, d_hw, r)
                flows += f
                total += t
            for y in range(self.years):
                ry = res[y]
                if o.kind == "api":
                    month = ry["api_tokens_usd"] * d_api**y + ry["fees_usd"]
                elif o.kind == "cloud":
                    month = ry["rental_usd"] * d_gpu**y + ry["fees_usd"]
                else:
                    continue
                yearly = 12.0 * self.frac[y] * month
                flows[y] += yearly
                total += yearly * (1.0 + r) ** -(y + self.frac[y] / 2.0)
            npc[o.name] = total
            cash[o.name] = flows
        return npc, cash

    def _onprem(self, res, d_hw, r):
        """Cash flows (years, m), their present value (m,) and the end-of-horizon
        residual-value credit (m,, already subtracted from the last year's flow) of an
        on-prem option."""
        m, years = self.m, self.years
        flows = np.zeros((years, m))
        pv = np.zeros(m)
        first = res[0]
        capex_on = bool(first["include_capex"])
        life = np.broadcast_to(np.asarray(first["life_years"], dtype=float), (m,))
        resid = np.broadcast_to(np.asarray(first["residual_share"], dtype=float), (m,))
        fleet = np.zeros(m)
        credit = np.zeros(m)
        cohorts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (units, price, bought)
        for y in range(years):
            ry = res[y]
            need = np.asarray(ry["units"], dtype=float)
            price_y = np.asarray(ry["server_price_usd"], dtype=float) * d_hw**y
            start = (1.0 + r) ** -float(y)
            # replacements of cohorts that reached their life during the previous year
            for i, (units, _, bought) in enumerate(cohorts):
                due = (y - bought) >= life - 1e-9
                if due.any():
                    cost = np.where(due, units * price_y, 0.0)
                    if capex_on:
                        flows[y] += cost
                        pv += cost * start
                    cohorts[i] = (units, np.where(due, price_y, cohorts[i][1]),
                                  np.where(due, float(y), bought))
            add = np.maximum(need - fleet, 0.0)
            if add.any():
                cohorts.append((add, np.broadcast_to(price_y, (m,)).copy(), np.full(m, float(y))))
                if capex_on:
                    flows[y] += add * price_y
                    pv += add * price_y * start
                fleet = fleet + add
            value = sum((u * p for u, p, _ in cohorts), np.zeros(m))
            spare = fleet - need
            month = (value * np.asarray(ry["maintenance_share_per_year"], dtype=float) / 12.0
                     + ry["onprem_energy_usd"] + spare * ry["idle_server_energy_usd"]
                     + fleet * np.asarray(ry["facilities_usd_per_server_year"], dtype=float) / 12.0
                     + ry["onprem_operations_usd"] + ry["fees_usd"])
            yearly = 12.0 * self.frac[y] * month
            flows[y] += yearly
            pv += yearly * (1.0 + r) ** -(y + self.frac[y] / 2.0)
        if capex_on:
            impl = np.broadcast_to(np.asarray(first["implementation_once_usd"], dtype=float), (m,))
            flows[0] += impl
            pv += impl
            for units, price, bought in cohorts:
                age = self.h_years - bought
                book = 1.0 - (1.0 - resid) * np.minimum(age / life, 1.0)
                credit += units * price * book
            flows[years - 1] -= credit
            pv -= credit * (1.0 + r) ** -self.h_years
        return flows, pv, credit


def run_multiyear(
    scenario: Scenario,
    *,
    trends: Any = None,
    n: int = 20_000,
    seed: int | np.random.SeedSequence | None = None,
    catalog: Catalog | None = None,
    correlations: Any = None,
    discount_rate: float | None = None,
    compiled: CompiledScenario | None = None,
    keep_samples: bool = True,
) -> MultiYearResults:
    """Year-by-year cost and net present cost of every option under sampled trends.

    Parameters
    ----------
    scenario : Scenario
    trends : Trends or mapping, optional
        Trend rates (numbers or distributions); default the scenario's ``trends`` table.
    n : int
        Monte Carlo samples (chunks of :data:`CHUNK_SIZE`, seeded as in
        :func:`planner.engines.risk.run.run_montecarlo`).
    correlations : optional
        Rank correlations; may name ``trends.*`` inputs (e.g. API and GPU price declines).
    discount_rate : float, optional
        Overrides ``scenario.discount_rate_per_year`` (which may be a distribution).

    Returns
    -------
    MultiYearResults
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise PlannerError(f"n: expected a positive integer number of samples, got {n!r}")
    tr = _trends(scenario, trends)
    model = compiled or compile_scenario(scenario, catalog=catalog, correlations=[])
    if correlations is None:
        correlations = scenario.correlation
    extra = uncertain_inputs(tr, prefix=("trends",))
    rate_field = scenario.scenario.discount_rate_per_year if discount_rate is None else float(
        discount_rate)
    if discount_rate is None and is_distribution(rate_field):
        extra.update(uncertain_inputs(scenario.scenario, prefix=("scenario",)))
        extra = {k: u for k, u in extra.items() if k.startswith(("trends.",
                                                                  "scenario.discount_rate"))}
    dists = {k: u.dist for k, u in model.inputs.items()}
    dists.update({k: u.dist for k, u in extra.items()})
    known = dict(model.all_inputs)
    known.update(extra)
    sampler = build_sampler(dists, known, as_correlations(correlations))
    root = root_seed(seed)

    def fixed(values: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
        t = {}
        for f in _TREND_FIELDS:
            key = f"trends.{f}"
            v = getattr(tr, f)
            t[f] = values[key] if key in values else (v.median() if is_distribution(v) else v)
        key = "scenario.discount_rate_per_year"
        if key in values:
            rate = values[key]
        else:
            rate = rate_field.median() if is_distribution(rate_field) else float(rate_field)
        return t, rate

    npc_parts: dict[str, list[np.ndarray]] = {o.name: [] for o in model.options}
    cash_parts: dict[str, list[np.ndarray]] = {o.name: [] for o in model.options}
    credit_parts: dict[str, list[np.ndarray]] = {o.name: [] for o in model.options}
    for c, size in enumerate(chunk_sizes(int(n), CHUNK_SIZE)):
        vals = sampler.draw(chunk_generator(root, c), size)
        t, rate = fixed(vals)
        path = _Path(model, vals, size, t, rate)
        npc, cash = path.run()
        for k in npc:
            npc_parts[k].append(npc[k])
            cash_parts[k].append(cash[k])
            credit_parts[k].append(path.credit.get(k, np.zeros(size)))
    t0, rate0 = fixed({})
    npc0, cash0 = _Path(model, {}, 1, t0, rate0).run()
    years = int(math.ceil(model.horizon / 12.0))
    comp = model.comparable()
    npc_all = {k: np.concatenate(v) for k, v in npc_parts.items()}
    wins = np.zeros(len(model.options))
    best = np.zeros(0)
    if comp:
        stack = np.vstack([npc_all[c] for c in comp])
        best = np.bincount(np.argmin(stack, axis=0), minlength=len(comp)) / stack.shape[1]
    rows, yrows, crows = [], [], []
    for j, o in enumerate(model.options):
        st = tail_stats(npc_all[o.name])
        wins[j] = best[comp.index(o.name)] if o.name in comp else np.nan
        rows.append({"deployment": o.name, "kind": o.kind, **st,
                     "at_median": float(npc0[o.name][0]), "p_lowest": wins[j]})
        flows = np.concatenate(cash_parts[o.name], axis=1)
        for y in range(years):
            q = np.quantile(flows[y], [0.05, 0.5, 0.95])
            yrows.append({"deployment": o.name, "kind": o.kind, "year": y + 1,
                          "mean": float(flows[y].mean()), "p5": q[0], "p50": q[1], "p95": q[2],
                          "at_median": float(cash0[o.name][y, 0])})
        credit = np.concatenate(credit_parts[o.name])
        gross = flows.copy()
        gross[-1] += credit  # the credit is part of the last year's flow: take it out
        run_gross, run_net = np.cumsum(gross, axis=0), np.cumsum(flows, axis=0)
        q = np.quantile(run_gross, [0.05, 0.5, 0.95], axis=1)
        for y in range(years):
            last = y == years - 1
            crows.append({"deployment": o.name, "kind": o.kind, "year": y + 1,
                          "p5": q[0, y], "p50": q[1, y], "p95": q[2, y],
                          "residual_credit_p50": float(np.median(credit)) if last else 0.0,
                          "net_p50": float(np.median(run_net[y]))})
    return MultiYearResults(
        scenario=scenario.name, n=int(n), years=years,
        discount_rate=None if is_distribution(rate_field) else float(rate_field),
        yearly=pd.DataFrame(yrows, columns=["deployment", "kind", "year", "mean", "p5", "p50",
                                            "p95", "at_median"]),
        npc=pd.DataFrame(rows, columns=["deployment", "kind", "mean", "se_mean", "p5", "p50",
                                        "p95", "p95_se", "cvar95", "at_median", "p_lowest"]),
        samples=pd.DataFrame(npc_all) if keep_samples else None,
        cumulative=pd.DataFrame(crows, columns=["deployment", "kind", "year", "p5", "p50",
                                                "p95", "residual_credit_p50", "net_p50"]),
    )
