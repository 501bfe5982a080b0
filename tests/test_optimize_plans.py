"""Runnable optimiser plans (issue 11): start-up costs and the GPU type of an hourly fleet,
a minimum number of replicas while serving, a minimum run length, a maximum change per hour,
whole replicas in the stochastic plan and the whole-day verification. Every expected figure
is worked out by hand from the inputs."""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest

from planner.catalog import load_catalog
from planner.config import parse_scenario
from planner.engines.optimize import OptimizeOptions, optimize
from planner.engines.optimize_data import DEFAULT_STARTUP_S, build_problem
from planner.engines.optimize_milp import build_milp, check_plan, decode, plan_starts, solve_milp

CAT = load_catalog()
W = 730.0 / 24  # each profile hour is ~30.4 hours of the month


def _weights(day: list[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in day) + "]"


def two_gpus(startup_s=None, alternate=(2.9, 1.9), optimize_extra="", single=False):
    """One class whose rate alternates hour by hour (alternate[0] req/s in even hours,
    alternate[1] in odd ones); two hourly (scale-to-zero) options of one model:

    - ``l40s``: 1 req/s per replica, $1/h;
    - ``h100``: 3 req/s per replica, $2.5/h (left out with ``single``).

    At 2.9 req/s an H100 ($2.5) beats three L40S ($3); at 1.9 two L40S ($2) beat an H100.
    """
    day = [alternate[h % 2] for h in range(24)]
    rpd = sum(day) * 3600.0
    st = "" if startup_s is None else f"startup_s = {startup_s}\n"
    h100 = "" if single else f"""
[cloud.h100]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = 2.5
gpus_per_instance = 1
capacity_requests_per_s = 3.0
billing = "scale-to-zero"
{st}"""
    return parse_scenario(tomllib.loads(f"""
[scenario]
name = "plans"
[workload.q]
requests_per_day = {rpd}
diurnal = {_weights(day)}
input = 500
output = 50
[cloud.l40s]
model = "llama-3.1-8b"
accelerator = "l40s"
usd_per_gpu_hour = 1.0
gpus_per_instance = 1
capacity_requests_per_s = 1.0
billing = "scale-to-zero"
{st}{h100}
[planning]
utilisation_target = 1.0
[optimize]
gap = 0.0
{optimize_extra}
"""), catalog=CAT)


def counts(res, d: str) -> np.ndarray:
    h = res.hourly[(res.hourly["deployment"] == d) & (res.hourly["scenario"] == 0)]
    return h.sort_values("hour")["replicas"].to_numpy()


def switches(res) -> int:
    """Hours where one GPU type starts replicas while the other stops some."""
    a, b = counts(res, "l40s"), counts(res, "h100")
    da, db = a - np.roll(a, 1), b - np.roll(b, 1)
    return int(np.sum((da > 0) & (db < 0)) + np.sum((da < 0) & (db > 0)))


# ------------------------------------------------------------------------------------------
# start-up costs and the GPU type of an hourly fleet


def test_switching_gpu_types_every_hour_was_the_optimum_without_start_up_costs():
    # start-ups free: an H100 in the 2.9 req/s hours ($2.5), two L40S in the 1.9 req/s hours
    # ($2): 12 x 2.5 + 12 x 2 = $54 a day, switching GPU type every hour
    res = optimize(two_gpus(), options=OptimizeOptions.from_scenario(
        two_gpus(), startup_usd_per_replica=0.0))
    assert res.status == "optimal" and res.check.passed
    assert res.objective_usd_per_month == pytest.approx(54.0 * W, rel=1e-9)
    assert switches(res) == 24


def test_start_up_costs_keep_one_gpu_type_when_switching_does_not_pay():
    # a 30-minute start-up (t = 1800 / 3600 = 0.5 h billed per replica started). Switching
    # starts 1 H100 and 2 L40S a day-pair of hours: 54 + 12 x 2.5 t + 24 x 1 t = 54 + 54 t
    # = $81 a day; one H100 all day (3 req/s >= 2.9) costs 24 x 2.5 = $60 with no start-up;
    # L40S alone 12 x 3 + 12 x 2 + 12 starts x t = $60.5. The optimum keeps the H100.
    sc = two_gpus(startup_s=1800)
    res = optimize(sc)
    assert res.status == "optimal" and res.check.passed
    np.testing.assert_array_equal(counts(res, "h100"), np.ones(24))
    np.testing.assert_array_equal(counts(res, "l40s"), np.zeros(24))
    assert switches(res) == 0
    assert res.objective_usd_per_month == pytest.approx(60.0 * W, rel=1e-9)
    assert plan_starts(res.problem, res.solution).sum() == 0


def test_switching_is_kept_when_it_is_cheaper_after_start_up_costs():
    # the default start-up time (120 s: t = 1/30 h): switching costs 54 + 54 / 30 = $55.8 a
    # day < $60 for the H100 all day: the plan switches, and pays for its start-ups
    assert DEFAULT_STARTUP_S == 120.0
    sc = two_gpus()
    res = optimize(sc)
    assert res.status == "optimal" and res.check.passed
    assert switches(res) == 24
    t = DEFAULT_STARTUP_S / 3600.0
    assert res.objective_usd_per_month == pytest.approx((54.0 + 54.0 * t) * W, rel=1e-9)
    ups = res.costs.set_index(["deployment", "component"])["usd_per_month"]
    assert ups[("h100", "start-ups (billed while starting)")] == pytest.approx(
        12 * 2.5 * t * W, rel=1e-9)
    assert ups[("l40s", "start-ups (billed while starting)")] == pytest.approx(
        24 * 1.0 * t * W, rel=1e-9)


def test_break_even_start_up_time():
    # switching pays while 54 t < 6, i.e. a start-up shorter than 400 s
    for s, switch in ((380, True), (420, False)):
        res = optimize(two_gpus(startup_s=s))
        assert res.check.passed
        assert (switches(res) > 0) is switch, s
        t = s / 3600.0
        assert res.objective_usd_per_month == pytest.approx(
            min(54.0 + 54.0 * t, 60.0) * W, rel=1e-9)


def test_startup_usd_per_replica_overrides_the_start_up_time():
    # $0.3 per replica started: switching 54 + 12 x 0.3 + 24 x 0.3 = $64.8 > $60
    sc = two_gpus(optimize_extra="startup_usd_per_replica = 0.3")
    res = optimize(sc)
    assert switches(res) == 0
    assert res.objective_usd_per_month == pytest.approx(60.0 * W, rel=1e-9)
    pb = res.problem
    assert pb.options["h100"].startup_usd_per_block[0] == pytest.approx(0.3)


# ------------------------------------------------------------------------------------------
# minimum replicas, minimum run length, maximum change per hour


def test_min_replicas_while_serving():
    # one L40S option, 0.5 req/s in even hours and 2.5 in odd ones, start-ups free: 1 and 3
    # replicas ($48 a day); with min_replicas = 2: 2 and 3 ($60 a day)
    free = "startup_usd_per_replica = 0"
    base = optimize(two_gpus(alternate=(0.5, 2.5), single=True, optimize_extra=free))
    np.testing.assert_array_equal(counts(base, "l40s"), [1, 3] * 12)
    assert base.objective_usd_per_month == pytest.approx(48.0 * W, rel=1e-9)
    sc = two_gpus(alternate=(0.5, 2.5), single=True,
                  optimize_extra=free + "\nmin_replicas = 2")
    res = optimize(sc)
    assert res.status == "optimal" and res.check.passed
    np.testing.assert_array_equal(counts(res, "l40s"), [2, 3] * 12)
    assert res.objective_usd_per_month == pytest.approx(60.0 * W, rel=1e-9)
    # the re-check catches a plan below the minimum
    plan = res.solution
    plan.blocks[0, 0, 0] = 1.0
    chk = check_plan(res.problem, plan)
    assert not chk.passed and "min_replicas" in set(chk.violations["constraint"])


def test_per_deployment_min_replicas_overrides_the_default():
    data = two_gpus(alternate=(0.5, 2.5), single=True,
                    optimize_extra="startup_usd_per_replica = 0\nmin_replicas = 2")
    opts = OptimizeOptions.from_scenario(data, min_replicas_by={"l40s": 3})
    res = optimize(data, options=opts)
    np.testing.assert_array_equal(counts(res, "l40s"), [3] * 24)


def test_min_run_hours():
    # 0.9 req/s in hours 6 and 12, nothing otherwise: one replica in each of those hours ($2 a
    # day). A started replica must run 3 hours: each runs 3 hours ($6 a day). (Blocks are
    # identical: a block may stop early when an older one keeps running in its place; the
    # rule is that a count never drops below the blocks started in the last 3 hours.)
    day = [0.0] * 24
    day[6] = day[12] = 0.9
    text = f"""
[scenario]
name = "run"
[workload.q]
requests_per_day = {sum(day) * 3600.0}
diurnal = {_weights(day)}
input = 500
output = 50
[cloud.l40s]
model = "llama-3.1-8b"
accelerator = "l40s"
usd_per_gpu_hour = 1.0
gpus_per_instance = 1
capacity_requests_per_s = 1.0
billing = "scale-to-zero"
[planning]
utilisation_target = 1.0
[optimize]
gap = 0.0
startup_usd_per_replica = 0
"""
    base = optimize(parse_scenario(tomllib.loads(text), catalog=CAT))
    assert base.objective_usd_per_month == pytest.approx(2.0 * W, rel=1e-9)
    res = optimize(parse_scenario(tomllib.loads(text + "min_run_hours = 3\n"), catalog=CAT))
    assert res.status == "optimal" and res.check.passed
    reps = counts(res, "l40s")
    assert res.objective_usd_per_month == pytest.approx(6.0 * W, rel=1e-9)
    assert reps[6] == 1 and reps[12] == 1 and reps.sum() == 6 and reps.max() == 1
    on = np.flatnonzero(reps)
    runs = np.split(on, np.flatnonzero(np.diff(on) > 1) + 1)
    assert sorted(len(r) for r in runs) == [3, 3]
    plan = res.solution
    plan.blocks[0, 0, :] = 0.0
    plan.blocks[0, 0, [6, 12]] = 1.0
    chk = check_plan(res.problem, plan)
    assert "min_run" in set(chk.violations["constraint"])


def test_max_change_per_hour():
    # 2.9 and 0.9 req/s alternating: 3 and 1 replicas ($48 a day), a change of 2 every hour;
    # at most 1 replica a hour: 3 and 2 ($60 a day)
    free = "startup_usd_per_replica = 0"
    base = optimize(two_gpus(alternate=(2.9, 0.9), single=True, optimize_extra=free))
    np.testing.assert_array_equal(counts(base, "l40s"), [3, 1] * 12)
    res = optimize(two_gpus(alternate=(2.9, 0.9), single=True,
                            optimize_extra=free + "\nmax_change_per_hour = 1"))
    assert res.status == "optimal" and res.check.passed
    np.testing.assert_array_equal(counts(res, "l40s"), [3, 2] * 12)
    assert res.objective_usd_per_month == pytest.approx(60.0 * W, rel=1e-9)
    plan = res.solution
    plan.blocks[0, 0, 1] = 1.0
    chk = check_plan(res.problem, plan)
    assert "ramp" in set(chk.violations["constraint"])


def test_new_row_groups_are_named_and_optional():
    sc = two_gpus(optimize_extra="min_run_hours = 2\nmax_change_per_hour = 1\nmin_replicas = 2")
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc))
    m = build_milp(pb)
    groups = set(m.row_group)
    assert {"starts", "min_run", "ramp", "min_replicas"} <= groups
    assert "starts" in m.cols and "used_hourly" in m.cols
    assert m.cols.label(int(m.cols["starts"][0, 0, 0])) == \
        "starts[scenario=0, option=l40s, hour=0]"
    dropped = build_milp(pb, drop={"min_run", "ramp", "min_replicas"})
    assert not {"min_run", "ramp", "min_replicas"} & set(dropped.row_group)
    info = solve_milp(m, gap=0.0)
    plan = decode(m, info.x)
    assert check_plan(pb, plan, objective=info.objective, milp_=m).passed
    assert math.isfinite(info.objective)


# ------------------------------------------------------------------------------------------
# whole replicas in the stochastic plan


STOCH = """
[scenario]
name = "stoch"
[workload.chat]
requests_per_day = {{ dist = "lognormal", median = 300000, p90 = 420000 }}
diurnal = "business"
input = 1000
output = 50
[api.api]
offering = "openai/gpt-4o-mini"
input_usd_per_mtok = 3.0
output_usd_per_mtok = 0
[cloud.od]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = 2.0
gpus_per_instance = 1
capacity_requests_per_s = 1.3
billing = "scale-to-zero"
[cloud.rsv]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = 1.2
gpus_per_instance = 1
capacity_requests_per_s = 1.3
plan = "reserved-1y"
[planning]
utilisation_target = 0.9
{extra}
"""


@pytest.mark.parametrize("method", ["extensive", "benders"])
def test_stochastic_plan_is_whole_replicas(method):
    from planner.engines.optimize import hourly_view, plan_view

    sc = parse_scenario(tomllib.loads(STOCH.format(extra="")), catalog=CAT)
    res = optimize(sc, stochastic=True, n_scenarios=12, seed=3, method=method)
    assert res.trusted, res.messages
    h = res.hourly[res.hourly["deployment"] == "od"]
    reps = h["replicas"].to_numpy()
    assert reps.max() > 0
    np.testing.assert_array_equal(reps, np.round(reps))  # whole in every scenario and hour
    assert res.problem.integer_hourly  # and checked as such
    assert any(m.startswith("whole replicas:") for m in res.messages)
    # every scenario's rented replicas carry its load (capacity re-checked from the data)
    load = h["load_replicas"].to_numpy()
    assert np.all(reps * 0.9 >= load - 1e-6)
    # the objective is the whole plan's expected cost, recomputed
    assert res.objective_usd_per_month == pytest.approx(
        float(np.dot(res.problem.prob, res.scenarios["usd_per_month"])), rel=1e-9)
    # expected counts reported apart from the (whole) decision
    pv = plan_view(res).set_index("deployment")
    exp = float(np.dot(res.problem.prob,
                       h.groupby("scenario")["replicas"].mean().to_numpy()))
    assert pv.loc["od", "expected_replicas"] == pytest.approx(exp, rel=1e-9)
    assert "expected" in pv.loc["od", "decision"]
    lo, hi = int(reps.min()), int(reps.max())
    assert pv.loc["od", "decision"].startswith(f"rent {lo}-{hi} on-demand replicas per hour")
    hv = hourly_view(res)
    dec = hv["od replicas"].to_numpy(float)
    np.testing.assert_array_equal(dec, np.round(dec))
    assert "od expected_replicas" in hv
    mean_h = h.assign(w=h["scenario"].map(dict(enumerate(res.problem.prob)))).assign(
        x=lambda d: d["replicas"] * d["w"]).groupby("hour")["x"].sum().to_numpy()
    np.testing.assert_allclose(hv["od expected_replicas"].to_numpy(float), mean_h, rtol=1e-9)


def test_stochastic_whole_replicas_keep_the_plan_rules():
    sc = parse_scenario(tomllib.loads(STOCH.format(
        extra="[optimize]\nmin_replicas = 2\nmax_change_per_hour = 2\n")), catalog=CAT)
    res = optimize(sc, stochastic=True, n_scenarios=8, seed=1, method="extensive")
    assert res.trusted, res.messages
    b = np.round(res.solution.blocks[:, res.solution.options.index("od"), :], 6)
    np.testing.assert_array_equal(b, np.round(b))
    assert b.max() > 2 and np.all((b == 0) | (b >= 2))
    assert np.all(np.abs(b - np.roll(b, 1, axis=-1)) <= 2)


# ------------------------------------------------------------------------------------------
# --verify simulates the whole planned day


def test_hour_window_caps_the_requests_of_busy_hours():
    from planner.engines.optimize_verify import MIN_WINDOW_S, hour_window

    assert hour_window(1.0, 600.0, 3000) == 600.0  # 600 requests: the whole window
    assert hour_window(10.0, 600.0, 3000) == 300.0  # 3000 requests
    assert hour_window(100.0, 600.0, 3000) == MIN_WINDOW_S == 120.0  # at least 120 s
    assert hour_window(100.0, 600.0, None) == 600.0


def test_verify_simulates_every_hour_of_the_planned_day():
    sc = parse_scenario(tomllib.loads("""
[scenario]
name = "day"
[workload.chat]
requests_per_day = 1000000
diurnal = "business"
input = 800
output = 100
slo = { ttft_s = 2.0, tpot_s = 0.1 }
[cloud.gpu]
model = "llama-3.1-70b"
accelerator = "h100-sxm"
gpus_per_replica = 2
gpus_per_instance = 2
precision = "fp8"
billing = "scale-to-zero"
[planning]
utilisation_target = 0.7
"""), catalog=CAT)
    res = optimize(sc, verify=True, verify_window_s=120)
    assert res.trusted
    hv = res.verification_hours
    busy = np.flatnonzero(res.problem.demand[0].sum(axis=0) > 0)
    assert sorted(hv["hour"].unique()) == busy.tolist()  # every hour with traffic
    assert len(busy) == 24
    v = res.verification.set_index("class").loc["chat"]
    assert v["hours"] == len(busy) and v["requests"] == hv["requests"].sum()
    att = np.sum(hv["slo_attainment"] * hv["requests"]) / hv["requests"].sum()
    assert v["slo_attainment"] == pytest.approx(att, rel=1e-12)
    assert v["worst_hour_attainment"] == pytest.approx(hv["slo_attainment"].min())
    assert bool(v["passed"]) == bool(hv["passed"].all())
    # each hour is simulated with that hour's replicas: the hours differ
    reps = res.hourly.set_index("hour")["replicas"]
    assert reps.nunique() > 1
    # at 70% utilisation the plan meets its p90 SLO in every hour of the day
    assert bool(v["passed"]) and hv["passed"].all()
    assert any(m.startswith("simulated the planned day (24 simulated hours)")
               for m in res.messages)


def test_plan_rule_settings_from_the_scenario_and_their_validation():
    from planner.errors import PlannerError

    data = tomllib.loads("""
[scenario]
name = "cfg"
[workload.q]
requests_per_day = 100000
input = 500
output = 50
[cloud.gpu]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = 2.0
gpus_per_instance = 1
capacity_requests_per_s = 1.0
billing = "scale-to-zero"
min_replicas = 3
startup_s = 300
[optimize]
min_run_hours = 2
max_change_per_hour = 5
""")
    sc = parse_scenario(data, catalog=CAT)
    opts = OptimizeOptions.from_scenario(sc)
    assert opts.min_replicas_by == {"gpu": 3} and opts.min_replicas == 1
    assert opts.min_run_hours == 2 and opts.max_change_per_hour == 5
    o = build_problem(sc, CAT, opts).options["gpu"]
    assert (o.min_blocks, o.min_run_hours, o.max_change_blocks) == (3.0, 2, 5.0)
    # the deployment's start-up time x its USD/hour: 300 s x $2/h
    assert o.startup_s == 300.0
    assert o.startup_usd_per_block[0] == pytest.approx(2.0 * 300.0 / 3600.0)
    for bad in ({"min_replicas": 0}, {"min_run_hours": 0}, {"max_change_per_hour": 0},
                {"startup_usd_per_replica": -1.0}):
        with pytest.raises(PlannerError):
            OptimizeOptions(**bad)
    data["optimize"]["min_run_hours"] = 0
    with pytest.raises(PlannerError):
        parse_scenario(data, catalog=CAT)


def test_verify_without_a_performance_model_is_not_a_crash():
    # stated capacities (no performance model): nothing to simulate, said so (it used to
    # raise "SimPlan: give at least one pool or an API target")
    res = optimize(two_gpus(single=True), verify=True, verify_window_s=150)
    assert res.trusted and res.verification.empty and res.verification_hours.empty
    assert any(m.startswith("verification: nothing simulated") for m in res.messages)
    assert any("no performance model (stated capacity)" in m for m in res.messages)


def test_whole_replicas_rounds_up_when_there_is_no_time_to_re_solve():
    from planner.engines.optimize import optimize_problem, sample_inputs
    from planner.engines.optimize_stochastic import whole_replicas

    sc = parse_scenario(tomllib.loads(STOCH.format(extra="")), catalog=CAT)
    values, _, _, model = sample_inputs(sc, 6, 5, CAT)
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc), values=values, n=6,
                       model=model)
    assert not pb.integer_hourly
    m = build_milp(pb)
    fluid = decode(m, solve_milp(m, gap=0.0).x)
    j = fluid.options.index("od")
    assert np.any(np.abs(fluid.blocks[:, j] - np.round(fluid.blocks[:, j])) > 1e-6)
    w = whole_replicas(pb, fluid, time_limit_s=0.0)
    assert (w.resolved, w.rounded) == (0, 6)
    np.testing.assert_array_equal(w.plan.blocks[:, j], np.ceil(fluid.blocks[:, j] - 1e-6))
    assert check_plan(w.problem, w.plan).passed  # more capacity, same routing: still a plan
    full = whole_replicas(pb, fluid)
    assert full.resolved == 6
    assert check_plan(full.problem, full.plan).passed
    # re-solving costs no more than rounding up (both keep the first stage)
    from planner.engines.optimize_milp import plan_costs

    def cost(p):
        c = plan_costs(w.problem, p).groupby("scenario")["usd_per_month"].sum()
        return float(np.dot(pb.prob, c.reindex(range(6), fill_value=0.0)))

    assert cost(full.plan) <= cost(w.plan) + 1e-6
    assert optimize_problem(pb).problem.integer_hourly


def test_status_line_does_not_call_a_plan_optimal_beyond_the_gap_asked_for():
    """A stochastic plan made whole after the fluid solve carries its gap against the fluid
    bound; above the gap asked for, the status line says feasible, not optimal."""
    from planner.engines.optimize import status_line

    sc = parse_scenario(tomllib.loads(STOCH.format(extra="")), catalog=CAT)
    res = optimize(sc, stochastic=True, n_scenarios=12, seed=3, gap=0.01)
    line = status_line(res)
    assert res.gap_target == 0.01
    if res.gap > 0.01:
        assert line.startswith("feasible (gap above the 1.00% asked for)")
    else:
        assert line.startswith("optimal:")
    # the gap is stated against the MILP's best bound (not the LP relaxation's)
    assert (f"proven within {res.gap:.2%} of optimal" in line if res.gap >= 1e-4
            else "proven" in line)
