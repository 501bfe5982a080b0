"""Horizons of the optimiser (issue 15): identical hours solved once, and the long horizon
honoured by the sensitivity scan and the subset comparison."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from planner.catalog import load_catalog
from planner.config import parse_scenario
from planner.engines.optimize import (
    OptimizeOptions,
    compare_subsets,
    optimize,
    sensitivity,
)
from planner.engines.optimize_data import build_problem
from planner.engines.optimize_milp import (
    _hour_classes,
    _solve_milp,
    build_milp,
    check_plan,
    decode,
    solve_milp,
)
from planner.workload import PROFILES

CAT = load_catalog()

WEEK = """
[scenario]
name = "toy-week"
[workload.chat]
requests_per_day = {rpd}
input = 1000
output = 100
diurnal = [{weights}]
[workload.batch]
requests_per_day = {rpd2}
input = 3000
output = 50
diurnal = "flat"
[api.mini]
offering = "openai/gpt-4o-mini"
[api.flash]
offering = "google/gemini-2.5-flash"
[cloud.gpu]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = 2.0
plan = "on-demand"
billing = "{billing}"
{window}
[cloud.gpu-1y]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = 1.4
plan = "reserved-1y"
[planning]
utilisation_target = 0.8
[optimize]
max_share_per_provider = 0.7
"""


def week(days=(1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5), billing="always-on", rpd=3_000_000,
         rpd2=1_000_000):
    """A 168-hour profile: the business day times a factor per weekday."""
    day = np.asarray(PROFILES["business"], float)
    w = np.concatenate([day * f for f in days])
    window = "active_hours_per_day = 10" if billing == "active-window" else ""
    text = WEEK.format(rpd=rpd * len(days), rpd2=rpd2, billing=billing, window=window,
                       weights=", ".join(f"{x:.6g}" for x in w))
    return parse_scenario(tomllib.loads(text), catalog=CAT)


def _milp(sc):
    return build_milp(build_problem(sc, CAT, OptimizeOptions.from_scenario(sc)))


@pytest.mark.parametrize("billing", ["always-on", "active-window"])
def test_identical_hours_are_merged_and_the_plan_is_the_full_optimum(billing):
    # active-window: a fleet priced for 10 hours a day (it serves every hour), so the merge
    # is checked against the unmerged optimum with that billing's prices too
    m = _milp(week(billing=billing))
    hc = _hour_classes(m)
    first, inverse = hc.first, hc.inverse
    # five identical weekdays and two identical weekend days: one class per distinct
    # demand of the hours of a weekday and a weekend day (every other column agrees)
    d = m.problem.demand.reshape(-1, 168).T
    assert len(np.unique(d[np.r_[0:24, 120:144]], axis=0)) <= first.size < 48
    assert np.array_equal(d[first][inverse], d)
    assert np.array_equal(inverse[:24], inverse[24:48])
    assert np.array_equal(inverse[5 * 24:6 * 24], inverse[6 * 24:])
    info = solve_milp(m, gap=0.0, time_limit_s=60)
    assert info.status == "optimal" and "distinct ones" in info.message
    # the whole 168-hour MILP solved without merging has the same optimum
    full = _solve_milp(m, gap=0.0, time_limit_s=60)
    assert full.status == "optimal"
    assert info.objective == pytest.approx(full.objective, rel=1e-6)
    # and the merged bound is a bound of the full problem
    assert info.dual_bound <= full.objective * (1 + 1e-6)
    # the plan laid over the 168 hours passes the independent check, objective included
    plan = decode(m, info.x)
    assert plan.flows.shape[-1] == 168
    assert check_plan(m.problem, plan, objective=info.objective, milp_=m).passed


def test_hours_are_not_merged_when_rows_tie_them_together_or_counts_are_whole():
    # rented per hour (scale-to-zero): whole hourly counts and start-up rows
    m = _milp(week(billing="scale-to-zero"))
    assert _hour_classes(m) is None
    # a week whose days all differ: nothing to merge beyond the repeated hours of a day
    m2 = _milp(week(days=(1.0, 0.97, 0.94, 0.99, 0.91, 0.5, 0.45)))
    first = _hour_classes(m2).first
    assert first.size == len(np.unique(m2.problem.demand.reshape(-1, 168).T, axis=0)) > 48


# ------------------------------------------------------------------------------------------
# the long horizon in the sensitivity scan and the subset comparison

YEAR = "horizon_hours = 720\nmonthly_factors = [2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"


def long_week(**kw):
    sc = week(**kw)
    opt = sc.optimize.model_copy(update={"horizon_hours": 720, "monthly_factors": (
        2.0,) + (1.0,) * 11})
    return sc.model_copy(update={"optimize": opt})


def test_compare_subsets_plans_each_subset_on_the_long_horizon():
    sc = long_week()
    df = compare_subsets(sc, groups={"gpu": ["gpu", "gpu-1y"]}, catalog=CAT, gap=0.01)
    mix = df.iloc[0]
    assert mix["check_passed"] and df["check_passed"].all()
    # the mix row is the long-horizon plan (January at twice the profile's traffic)...
    long = optimize(sc, catalog=CAT, gap=0.01)
    assert long.problem.periods == 720
    assert mix["usd_per_month"] == pytest.approx(long.objective_usd_per_month, rel=1e-9)
    # ...not the profile's, which is cheaper by the doubled January
    short = optimize(week(), catalog=CAT, gap=0.01)
    assert mix["usd_per_month"] > short.objective_usd_per_month * 1.2


def test_sensitivity_scans_the_long_horizon():
    sc = long_week()
    opts = OptimizeOptions.from_scenario(sc)
    s = sensitivity(sc, traffic=(1.0, 0.5), api_price=(), gpu_price=(), catalog=CAT,
                    options=opts, gap=0.01, time_limit_s=60)
    g = s.grid.set_index("multiplier")["usd_per_month"]
    long = optimize(sc, catalog=CAT, gap=0.01)
    assert g[1.0] == pytest.approx(long.objective_usd_per_month, rel=1e-9)
    # half the traffic on the same horizon: the long-horizon plan of the halved scenario
    half = optimize(long_week(rpd=1_500_000, rpd2=500_000), catalog=CAT, gap=0.01)
    assert g[0.5] == pytest.approx(half.objective_usd_per_month, rel=0.011)
    assert g[0.5] < 0.75 * g[1.0]


# ------------------------------------------------------------------------------------------
# multi-year plans: reserved terms bought in a year, traffic growing

RESERVED = """
[scenario]
name = "toy-terms"
[workload.q]
requests_per_day = 86400
input = 1000
output = 10
diurnal = "flat"
[cloud.r1]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = {p1}
gpus_per_instance = 1
capacity_requests_per_s = 1.0
plan = "reserved-1y"
[cloud.r3]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = {p3}
gpus_per_instance = 1
capacity_requests_per_s = 1.0
plan = "reserved-3y"
[planning]
utilisation_target = 1.0
peak_to_average = 1.0
"""


def _terms(p1=1.4, p3=1.0):
    sc = parse_scenario(tomllib.loads(RESERVED.format(p1=p1, p3=p3)), catalog=CAT)
    return build_problem(sc, CAT, OptimizeOptions.from_scenario(sc))


def test_multiyear_reserved_terms_by_hand():
    """1 request/s doubling each year on replicas of 1 request/s: 1, 2 then 4 replicas.
    A 3-year term at 1.0 USD/h against 1-year terms at 1.4 USD/h: the first replica is
    worth three years (3.0 < 3 x 1.4); the second, needed in years 2 and 3, is cheaper on
    two 1-year terms (2.8) than on a 3-year term bought in year 2 (3.0: its third year,
    past the horizon, is paid too); the two more of year 3 on 1-year terms (1.4 < 3.0).
    Total: (1.0) + (1.0 + 1.4) + (1.0 + 3 x 1.4) = 8.6 USD per hour-of-a-year."""
    from planner.engines.optimize_multiyear import solve_multiyear

    pb = _terms()
    res = solve_multiyear(pb, 3, growth_per_year=1.0, gap=0.0)
    assert res.status == "optimal" and res.passed, res.messages
    hours_per_year = 12 * pb.hours_per_month
    assert res.objective_usd == pytest.approx(8.6 * hours_per_year, rel=1e-9)
    buys = {(r.deployment, r.year): r.blocks for r in res.purchases.itertuples()}
    assert buys == {("r3", 1): 1.0, ("r1", 2): 1.0, ("r1", 3): 3.0}
    fleet = res.fleet.pivot(index="year", columns="deployment", values="blocks")
    np.testing.assert_array_equal(fleet["r3"], [1, 1, 1])
    np.testing.assert_array_equal(fleet["r1"], [0, 1, 3])
    assert res.bound_usd <= res.objective_usd * (1 + 1e-9)
    assert all(ch.passed for ch in res.checks)


def test_multiyear_terms_past_the_horizon_are_paid_and_discounted():
    """A 3-year term cheaper than one 1-year term per hour (0.4 vs 1.4 USD/h) is bought even
    for the last year of a 2-year plan; its two years past the horizon are paid."""
    from planner.engines.optimize_multiyear import solve_multiyear

    pb = _terms(p1=1.4, p3=0.4)
    r = 0.1
    res = solve_multiyear(pb, 2, growth_per_year=1.0, discount_rate_per_year=r, gap=0.0)
    assert res.passed
    hy = 12 * pb.hours_per_month
    buys = {(p.deployment, p.year): p.blocks for p in res.purchases.itertuples()}
    assert buys == {("r3", 1): 1.0, ("r3", 2): 1.0}
    # year 1: one block; year 2: two; past the horizon: year 3 (both terms), year 4 (the
    # second); year t discounted by 1.1 ** t
    want = 0.4 * hy * (1 + 2 / (1 + r) + 2 / (1 + r) ** 2 + 1 / (1 + r) ** 3)
    assert res.objective_usd == pytest.approx(want, rel=1e-9)


def test_cli_optimize_plan_years_prints_purchases_and_years(tmp_path, capsys):
    from planner.cli import main

    text = RESERVED.format(p1=1.4, p3=1.0) + \
        "[optimize]\nplan_years = 3\ngap = 0\n[trends]\ntraffic_growth_per_year = 1.0\n"
    f = tmp_path / "terms.toml"
    f.write_text(text)
    assert main(["optimize", str(f), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "reserved blocks bought" in out and "each year's traffic" in out
    import pandas as pd

    years = pd.read_csv(tmp_path / "out" / "years.csv")
    np.testing.assert_array_equal(years["traffic_factor"], [1.0, 2.0, 4.0])
    np.testing.assert_array_equal(years["blocks:r3"] + years["blocks:r1"], [1, 2, 4])
    buys = pd.read_csv(tmp_path / "out" / "purchases.csv")
    assert buys["blocks"].sum() == 5  # 1 three-year block, 1 + 3 one-year blocks
    # the same plan through the engine: the objective is the horizon's total / 36 months
    from planner.engines.optimize_multiyear import solve_multiyear

    sc = parse_scenario(tomllib.loads(text), catalog=CAT)
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc))
    res = optimize(sc, catalog=CAT)
    my = solve_multiyear(pb, 3, growth_per_year=1.0, gap=0.0)
    assert res.objective_usd_per_month == pytest.approx(my.objective_usd / 36, rel=1e-9)
    assert res.trusted


@pytest.mark.parametrize("extra, key", [
    ("plan_years = 0", "plan_years"),
    ("plan_years = 2\nhorizon_hours = 720", "plan_years"),
])
def test_bad_plan_years_exit_2_naming_the_key(tmp_path, capsys, extra, key):
    from planner.cli import main

    f = tmp_path / "bad.toml"
    f.write_text(RESERVED.format(p1=1.4, p3=1.0) + f"[optimize]\n{extra}\n")
    assert main(["optimize", str(f)]) == 2
    assert key in capsys.readouterr().err


def test_hours_differing_only_in_a_first_stage_coefficient_are_kept_apart():
    # the classes are read from the matrix: change the coefficient of a fixed fleet in one
    # hour's capacity row (same demand, same prices) and that hour leaves its class
    from dataclasses import replace

    m = _milp(week())
    hc = _hour_classes(m)
    sizes = np.bincount(hc.inverse)
    h = int(np.flatnonzero(sizes[hc.inverse] >= 2)[0])
    fixed = set(m.cols["blocks_fixed"].ravel().tolist())
    A = m.A.tocsr(copy=True)
    row = next(i for i, lab in enumerate(m.row_label)
               if m.row_group[i] == "capacity" and lab.endswith(f"h={h}]") and
               fixed & set(A.indices[A.indptr[i]:A.indptr[i + 1]].tolist()))
    k = next(k for k in range(A.indptr[row], A.indptr[row + 1]) if A.indices[k] in fixed)
    A.data[k] *= 1.5
    hc2 = _hour_classes(replace(m, A=A))
    assert np.sum(hc2.inverse == hc2.inverse[h]) == 1
    assert hc2.first.size == hc.first.size + 1


def test_lower_bound_keeps_provider_shares_and_stays_below_the_full_optimum(monkeypatch):
    # ten days, all different (a steep ramp), a provider-share cap: the lower-envelope
    # bound with the caps kept (of the full horizon's requests) is still below the optimum
    # of the whole 240-hour problem solved directly, and not below the bound without them
    import planner.engines.optimize_year as oy
    from planner.engines.optimize_year import YearSettings, solve_year, year_demand, year_problem

    sc = week(days=(1.0,), rpd=3_000_000)
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc))
    st = YearSettings(horizon_hours=10 * 24, growth_per_year=30.0, typical_days=3)
    kept = solve_year(pb, st, gap=1e-4, time_limit_s=60)
    full = year_problem(pb, year_demand(pb.demand, st))
    m = build_milp(full)
    info = solve_milp(m, gap=0.0, time_limit_s=120)
    assert info.status == "optimal" and kept.check.passed
    assert kept.bound <= info.objective * (1 + 1e-7)
    assert info.objective <= kept.cost * (1 + 1e-7)
    monkeypatch.setattr(oy, "keep_provider_shares", lambda lower, year: lower)
    dropped = solve_year(pb, st, gap=1e-4, time_limit_s=60)
    assert kept.bound >= dropped.bound * (1 - 1e-7)
    assert kept.gap <= dropped.gap
