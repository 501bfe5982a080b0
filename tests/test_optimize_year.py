"""Long-horizon optimisation (issue 15): a year on typical days, re-checked hour by hour,
with a proven lower bound on the full-horizon optimum."""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest

from planner.catalog import load_catalog
from planner.cli import main
from planner.config import parse_scenario
from planner.engines.optimize import OptimizeOptions, optimize
from planner.engines.optimize_data import build_problem
from planner.engines.optimize_milp import build_milp, check_plan, decode, plan_costs, solve_milp
from planner.engines.optimize_year import (
    DAYS_PER_MONTH,
    YearSettings,
    aggregate,
    aggregated_problem,
    solve_year,
    year_demand,
    year_problem,
)
from planner.errors import PlannerError

CAT = load_catalog()

TOY = """
[scenario]
name = "toy-year"
[workload.q]
requests_per_day = {rpd}
input = 1000
output = 10
diurnal = "{profile}"
[api.api]
offering = "openai/gpt-4o-mini"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 0
[cloud.gpu]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = 2.0
gpus_per_instance = 1
capacity_requests_per_s = 1.0
plan = "on-demand"
billing = "{billing}"
[planning]
utilisation_target = 1.0
[optimize]
startup_usd_per_replica = 0
{extra}
"""


def toy(rpd=216_000, profile="flat", extra="", billing="scale-to-zero"):
    """One class, 1000 input + 10 output tokens; an API at 1 USD per 1M input tokens and one
    cloud GPU at 2 USD/hour serving 1 request/s, rented per hour (``billing``)."""
    return parse_scenario(tomllib.loads(TOY.format(rpd=rpd, profile=profile, extra=extra,
                                                   billing=billing)), catalog=CAT)


HALF = [1.0] * 6 + [2.0] * 6  # January-June at the profile's traffic, July-December doubled


def test_two_load_levels_aggregate_exactly_and_match_the_profile_optimum():
    # a flat profile with two monthly levels: the year has two distinct days, so the
    # aggregation is exact, and each hour's optimum is that of the day problem at its level
    factors = ", ".join(f"{f:g}" for f in HALF)
    sc = toy(extra=f"horizon_hours = 8760\nmonthly_factors = [{factors}]")
    res = optimize(sc, gap=1e-4)
    assert res.status == "optimal" and res.check.passed and res.trusted
    agg = res.aggregation.set_index("metric")["value"]
    assert agg["upper_max_abs_rps"] == pytest.approx(0.0, abs=1e-9)
    assert agg["lower_max_abs_rps"] == pytest.approx(0.0, abs=1e-9)
    # the same plan priced day by day with the existing 24-hour optimiser at each level
    lo = optimize(toy(216_000), gap=0.0).objective_usd_per_month
    hi = optimize(toy(432_000), gap=0.0).objective_usd_per_month
    days_lo = sum(DAYS_PER_MONTH[:6])
    expected = (days_lo * lo + (365 - days_lo) * hi) / 365
    assert res.objective_usd_per_month == pytest.approx(expected, rel=1e-9)
    # proven: the bound is within the gap asked for, below the cost
    assert res.lp_bound <= res.objective_usd_per_month * (1 + 1e-9)
    assert res.gap <= 1e-4 + 1e-9
    # and the re-priced cost is what plan_costs says of the full-year plan
    total = plan_costs(res.problem, res.solution)["usd_per_month"].sum()
    assert total == pytest.approx(res.objective_usd_per_month, rel=1e-12)


def test_exact_aggregation_equals_the_full_horizon_milp():
    # two weeks, two levels (growth off, a one-week step): the full 336-hour MILP solved
    # directly has the cost of the typical-day plan
    sc = toy(profile="business", billing="always-on")
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc))
    st = YearSettings(horizon_hours=14 * 24, typical_days=2)
    ys = solve_year(pb, st, gap=1e-4, time_limit_s=60)
    full = year_problem(pb, year_demand(pb.demand, st))
    m = build_milp(full)
    info = solve_milp(m, gap=0.0, time_limit_s=60)
    assert info.status == "optimal"
    assert ys.check.passed
    assert ys.cost == pytest.approx(info.objective, rel=1e-6)
    assert ys.bound <= info.objective * (1 + 1e-9)


def test_lower_bound_is_below_the_full_horizon_optimum_with_growth_and_ramps():
    # days all different (a steep ramp), ramp and minimum-run rules on the rented fleet: the
    # lower-envelope bound must stay below the optimum of the whole horizon solved directly,
    # and the typical-day plan above it, re-checked on every hour
    sc = toy(rpd=400_000, profile="business",
             extra="max_change_per_hour = 2\nmin_run_hours = 3")
    opts = OptimizeOptions.from_scenario(sc)
    pb = build_problem(sc, CAT, opts)
    st = YearSettings(horizon_hours=10 * 24, growth_per_year=40.0, typical_days=3)
    ys = solve_year(pb, st, gap=1e-3, time_limit_s=60)
    assert ys.check.passed
    full = year_problem(pb, year_demand(pb.demand, st))
    m = build_milp(full)
    info = solve_milp(m, gap=0.0, time_limit_s=120)
    assert info.x is not None
    opt_lo = info.dual_bound if math.isfinite(info.dual_bound) else info.objective
    assert ys.bound <= opt_lo * (1 + 1e-7)
    assert info.objective <= ys.cost * (1 + 1e-7)
    # the plan is whole and passes the independent check of the full horizon
    assert check_plan(full, ys.plan).passed
    again = check_plan(full, decode(m, info.x), objective=info.objective, milp_=m)
    assert again.passed


@pytest.mark.parametrize("growth", [0.0, 0.5])
def test_year_plan_passes_the_hourly_recheck(growth):
    factors = ", ".join(f"{f:g}" for f in (1.0, 0.9, 0.95, 1.0, 1.1, 1.2, 0.8, 0.7, 1.0,
                                            1.1, 1.3, 1.5))
    sc = toy(rpd=300_000, profile="business",
             extra=f"horizon_hours = 8760\nmonthly_factors = [{factors}]\n"
                   f"year_growth = true\nmax_change_per_hour = 3\n"
                   f"[trends]\ntraffic_growth_per_year = {growth}")
    res = optimize(sc, gap=0.01)
    assert res.solution is not None and res.check.passed
    assert res.problem.periods == 8760 and res.solution.flows.shape[-1] == 8760
    # every hour's demand is served by the plan (the independent check of the year)
    served = np.zeros_like(res.problem.demand)
    for k, (_, c) in enumerate(res.solution.pairs):
        served[:, c, :] += res.solution.flows[:, k, :]
    np.testing.assert_allclose(served, res.problem.demand, rtol=1e-9, atol=1e-12)
    assert res.lp_bound <= res.objective_usd_per_month * (1 + 1e-9)
    assert res.gap == pytest.approx(
        (res.objective_usd_per_month - res.lp_bound) / res.objective_usd_per_month, abs=1e-12)
    rounds = res.year
    assert len(rounds) >= 1 and rounds["check_passed"].iloc[-1]


def test_year_demand_tiles_the_profile_with_monthly_factors_and_ramp():
    sc = toy(profile="business")
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc))
    factors = tuple(float(i + 1) for i in range(12))
    d = year_demand(pb.demand, YearSettings(8760, factors, 0.0))
    assert d.shape == (1, 1, 8760)
    day = pb.demand[0, 0]
    jan1, feb1 = d[0, 0, :24], d[0, 0, 31 * 24:32 * 24]
    np.testing.assert_allclose(jan1, day * factors[0])
    np.testing.assert_allclose(feb1, day * factors[1])
    g = year_demand(pb.demand, YearSettings(8760, None, 1.0))
    np.testing.assert_allclose(g[0, 0, -1] / day[-1], 2.0 ** (8759 / 8760))


def test_aggregation_keeps_the_peak_day_and_bounds_every_day():
    sc = toy(profile="business")
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc))
    d = year_demand(pb.demand, YearSettings(8760, tuple(np.linspace(0.5, 1.5, 12)), 0.2))
    agg = aggregate(d, 6)
    peak_day = int(np.argmax(d[0, 0])) // 24
    assert agg.counts[agg.labels[peak_day]] == 1  # the peak day stands for itself
    assert np.all(agg.expanded("upper") >= d - 1e-12)
    assert np.all(agg.expanded("lower") <= d + 1e-12)
    assert agg.counts.sum() == 365
    # the upper problem's weights add up to the month
    year = year_problem(pb, d)
    up = aggregated_problem(year, agg, "upper")
    assert up.block_weights().sum() == pytest.approx(pb.hours_per_month, rel=1e-12)


def test_profile_problems_are_unchanged_by_the_weights():
    # a 24-hour problem with explicit equal weights builds the same MILP as without them
    sc = toy(profile="business", extra="max_change_per_hour = 2\nmin_run_hours = 2")
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc))
    from dataclasses import replace

    w = np.full(pb.periods, pb.hour_weight)
    pw = replace(pb, hour_weights=w, cycle_hours=24)
    a, b = build_milp(pb), build_milp(pw)
    np.testing.assert_allclose(a.c, b.c, rtol=1e-12)
    assert (a.A != b.A).nnz == 0


@pytest.mark.parametrize("bad, key", [
    ("horizon_hours = 100", "optimize.horizon_hours"),
    ("horizon_hours = 8760\nmonthly_factors = [1, 2]", "optimize.monthly_factors"),
    ("horizon_hours = 8760\nmonthly_factors = [1,1,1,1,1,1,1,1,1,1,1,-1]",
     "optimize.monthly_factors"),
    ("horizon_hours = 8760\ntypical_days = 0", "optimize.typical_days"),
    ("monthly_factors = [1,1,1,1,1,1,1,1,1,1,1,1]", "monthly_factors"),
    ("year_growth = true", "year_growth"),
])
def test_bad_horizon_settings_exit_2_naming_the_key(tmp_path, capsys, bad, key):
    p = tmp_path / "s.toml"
    p.write_text(TOY.format(rpd=1000, profile="flat", extra=bad, billing="always-on"))
    assert main(["validate", str(p)]) == 2
    assert key in capsys.readouterr().err


def test_stochastic_long_horizon_is_refused():
    sc = toy(extra="horizon_hours = 8760")
    with pytest.raises(PlannerError, match="horizon_hours"):
        optimize(sc, stochastic=True, n_scenarios=4, seed=1)


def test_cli_optimize_year_with_verify(tmp_path, capsys):
    p = tmp_path / "s.toml"
    p.write_text(TOY.format(rpd=216_000, profile="business", billing="always-on",
                            extra="horizon_hours = 8760\ntime_limit_s = 60"))
    code = main(["optimize", str(p), "--verify", "--verify-window", "60", "--quiet",
                 "--format", "table", "--out", str(tmp_path / "out")])
    out = capsys.readouterr()
    assert code in (0, 4), out.err
    assert (tmp_path / "out").exists()
    files = {f.stem for f in (tmp_path / "out").iterdir()}
    assert {"year", "aggregation", "plan"} <= files


def test_fluid_typical_days_round_up_to_a_runnable_plan(monkeypatch):
    # force the fluid path (continuous hourly counts on the typical days): the plan laid over
    # the horizon is whole, keeps the ramp and minimum run, passes the check of every hour,
    # and the bound stays below the optimum of the whole horizon solved directly
    import planner.engines.optimize_year as oy

    monkeypatch.setattr(oy, "MAX_WHOLE_HOURLY_COLUMNS", 0)
    sc = toy(rpd=400_000, profile="business",
             extra="max_change_per_hour = 2\nmin_run_hours = 4")
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc))
    st = YearSettings(horizon_hours=8 * 24, growth_per_year=30.0, typical_days=2)
    ys = solve_year(pb, st, gap=1e-3, time_limit_s=60)
    assert any("fluid" in m for m in ys.messages)
    assert ys.check.passed
    b = ys.plan.blocks
    assert np.array_equal(b, np.round(b))
    full = year_problem(pb, year_demand(pb.demand, st))
    m = build_milp(full)
    info = solve_milp(m, gap=0.0, time_limit_s=120)
    assert info.x is not None
    assert ys.bound <= info.dual_bound * (1 + 1e-7)
    assert info.objective <= ys.cost * (1 + 1e-7)


@pytest.mark.parametrize("run, step", [(1, 2.0), (3, math.inf), (4, 2.0), (6, 1.0)])
def test_runnable_repair_keeps_the_minimum_run_and_ramp(run, step):
    from planner.engines.optimize_year import _runnable

    rng = np.random.default_rng(run)
    x = rng.integers(0, 12, (2, 500)).astype(float)
    y = _runnable(x, run, step)
    assert np.all(y >= x)  # only raised: never less capacity
    starts = np.maximum(0.0, y - np.roll(y, 1, axis=-1))
    started = sum(np.roll(starts, t, axis=-1) for t in range(run))
    assert np.all(started <= y + 1e-9)
    if np.isfinite(step):
        assert np.all(np.abs(y - np.roll(y, 1, axis=-1)) <= step + 1e-9)
    # a series that keeps both rules is left as it is
    np.testing.assert_array_equal(y, _runnable(y, run, step))


def test_api_only_year_is_bounded_exactly_by_the_excess_price():
    # pay-per-request only: the cost is linear in the demand, so the lower envelopes plus
    # the cheapest price of the requests above them bound the full horizon exactly
    sc = toy(profile="business", extra='exclude = ["gpu"]')
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc))
    st = YearSettings(horizon_hours=10 * 24, growth_per_year=20.0, typical_days=2)
    ys = solve_year(pb, st, gap=1e-3, time_limit_s=60)
    assert ys.check.passed
    assert ys.error["envelope_width_share"] > 0.01  # the days differ
    full = year_problem(pb, year_demand(pb.demand, st))
    info = solve_milp(build_milp(full), gap=0.0, time_limit_s=60)
    assert ys.bound <= info.objective * (1 + 1e-9)
    assert ys.cost == pytest.approx(info.objective, rel=1e-9)
    assert ys.gap <= 1e-9


RENTALS = """
[scenario]
name = "rentals"
[workload.q]
requests_per_day = 300000
input = 1000
output = 10
diurnal = "business"
[api.api]
offering = "openai/gpt-4o-mini"
input_usd_per_mtok = 0.9
output_usd_per_mtok = 0
provider = "a"
[cloud.small]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = 2.0
gpus_per_instance = 1
capacity_requests_per_s = 1.0
plan = "on-demand"
billing = "scale-to-zero"
provider = "b"
[cloud.big]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = 1.7
gpus_per_instance = 1
gpus_per_replica = 4
capacity_requests_per_s = 4.0
plan = "on-demand"
billing = "scale-to-zero"
provider = "c"
[cloud.fleet]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = 1.5
gpus_per_instance = 1
capacity_requests_per_s = 1.0
plan = "on-demand"
billing = "always-on"
provider = "d"
[planning]
utilisation_target = 1.0
[optimize]
startup_usd_per_replica = 0.4
max_share_per_provider = 0.7
"""


def test_hourly_rentals_bound_below_the_exact_optimum_and_day_by_day_plan_feasible():
    # rented per hour (two block sizes, start-ups priced) beside an always-on fleet and an
    # API, a provider-share cap tying the hours, every day different (a steep ramp): the
    # reported bound (mean days, hourly counts relaxed) is below the optimum of the whole
    # horizon solved exactly, and the plan re-solved day by day is whole, passes the check
    # of every hour, costs no less than that optimum and no more than the plan laid out
    sc = parse_scenario(tomllib.loads(RENTALS), catalog=CAT)
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc))
    st = YearSettings(horizon_hours=4 * 24, growth_per_year=60.0, typical_days=2)
    ys = solve_year(pb, st, gap=1e-4, time_limit_s=60)
    full = year_problem(pb, year_demand(pb.demand, st))
    m = build_milp(full)
    info = solve_milp(m, gap=0.0, time_limit_s=120)
    assert info.status == "optimal"
    assert ys.check.passed and check_plan(full, ys.plan).passed
    assert np.array_equal(ys.plan.blocks, np.round(ys.plan.blocks))
    assert ys.bound <= info.dual_bound * (1 + 1e-7)
    assert info.objective <= ys.cost * (1 + 1e-7)
    last = ys.rounds.iloc[-1]
    assert last["days_resolved"] == 4
    assert ys.cost <= last["laid_out_usd_per_month"] * (1 + 1e-9)
    # the reported gap is the plan's against that bound, and the cost is the plan's
    assert ys.gap == pytest.approx((ys.cost - ys.bound) / ys.cost, rel=1e-9, abs=1e-12)
    assert plan_costs(full, ys.plan)["usd_per_month"].sum() == pytest.approx(ys.cost,
                                                                             rel=1e-12)
    # the shares the cap asks for hold over the horizon (the days' shares add up)
    assert check_plan(full, ys.plan).violations.empty


def test_mean_bound_is_between_the_lower_envelope_bound_and_the_relaxed_optimum():
    # the mean days sit above the lower envelopes (an optimum non-decreasing in the demand)
    # and, hourly counts relaxed, below the relaxed full-horizon optimum (Jensen)
    from planner.engines.optimize_year import lower_bound, mean_bound, relax_hourly

    sc = parse_scenario(tomllib.loads(RENTALS), catalog=CAT)
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc, startup_usd_per_replica=0))
    st = YearSettings(horizon_hours=6 * 24, growth_per_year=60.0)
    demand = year_demand(pb.demand, st)
    full = year_problem(pb, demand)
    agg = aggregate(demand, 2)
    mb, note = mean_bound(full, agg, gap=0.0, time_limit_s=60)
    assert note == ""
    low = lower_bound(full, agg, fluid=True, gap=0.0, time_limit_s=60)
    relaxed = solve_milp(relax_hourly(build_milp(full)), gap=0.0, time_limit_s=120)
    assert relaxed.status == "optimal"
    assert low <= mb * (1 + 1e-9)
    assert mb <= relaxed.dual_bound * (1 + 1e-7)
    assert low < relaxed.objective * (1 - 1e-4)  # the days differ: not all exact


def test_dive_day_returns_whole_counts_that_keep_every_row():
    # covering rows with two block sizes and a continuous overflow: the dive's solution is
    # whole where asked, within its bounds and rows, and costs no less than the LP
    from scipy import sparse

    from planner.engines.optimize_year import _lp, dive_day

    rng = np.random.default_rng(7)
    for _ in range(20):
        n = 6
        A = sparse.csr_matrix(np.hstack([rng.uniform(0.5, 4.0, (4, n)), np.eye(4)]))
        lo = rng.uniform(1.0, 9.0, 4)
        hi = np.full(4, np.inf)
        c = np.concatenate([rng.uniform(1.0, 5.0, n), np.full(4, 20.0)])
        lb, ub = np.zeros(n + 4), np.concatenate([np.full(n, 10.0), np.full(4, np.inf)])
        integer = np.arange(n + 4) < n
        x, n_lp = dive_day(c, A, lo, hi, lb, ub, integer)
        assert x is not None and n_lp >= 1
        assert np.array_equal(x[integer], np.round(x[integer]))
        ax = A @ x
        assert np.all(ax >= lo - 1e-7) and np.all(x >= lb - 1e-9) and np.all(x <= ub + 1e-9)
        assert c @ x >= c @ _lp(c, A, lo, hi, lb, ub) - 1e-9
