"""One model of cost and capacity: the optimiser, given a single deployment option, must plan
exactly what the cost engine prices for that option.

The cost engine (:func:`planner.engines.deterministic.evaluate`) is the reference: it sizes a
self-hosted option for its peak hour (``ceil(peak load / U) + HA`` replicas, packed into whole
instances or servers) and bills it by its ``billing``; the optimiser with that one option and
nothing else to route to must reach the same monthly cost (within ``RTOL``) and the same
fleet. Scenarios are generated as dicts and parsed by :func:`planner.config.parse_scenario`.

Scope: cloud options billed ``always-on`` (on-demand, spot or reserved plans) or for an
``active-window``, on-prem options with ``servers`` unset (TCO and marginal lens), and an
API; one or two classes, flat or peaked profiles, batch shares, lengths, SLOs (with the
performance model) or stated capacities, peak-to-average, HA reserve and utilisation target.
Not in scope: ``scale-to-zero`` billing, where the optimiser rents whole replicas per hour
and the cost engine bills a fluid busy-time estimate (they are different models).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from planner.catalog import load_catalog
from planner.config import parse_scenario
from planner.engines.deterministic import evaluate
from planner.engines.optimize import optimize

CAT = load_catalog()

#: Relative tolerance on the monthly cost: both engines add the same linear terms in a
#: different order (HiGHS meets the demand rows to ~1e-9 relative), so 1e-6 leaves margin.
RTOL = 1e-6

# Every optimisation here runs to a 0 gap with no wall-clock limit (time_limit_s = inf): the
# plan and its status ("optimal") cannot depend on how loaded the machine is.

PROFILES = ("flat", "business", "consumer")

#: Performance-model configurations (capacity from the model at the class's SLO); the others
#: state ``capacity_requests_per_s``.
PERF = (
    {"model": "llama-3.1-8b", "accelerator": "h100-sxm", "gpus_per_replica": 1,
     "precision": "fp8"},
    {"model": "llama-3.1-8b", "accelerator": "a100-80gb", "gpus_per_replica": 1},
    {"model": "llama-3.1-70b", "accelerator": "h100-sxm", "gpus_per_replica": 2,
     "precision": "fp8"},
)

nice = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def workload(draw, perf: bool, api: bool):
    out = {}
    for name in draw(st.sampled_from((("chat",), ("chat", "docs")))):
        wc = {
            "requests_per_day": draw(st.floats(500.0, 3e6)),
            "diurnal": draw(st.sampled_from(PROFILES)),
            "input": draw(st.integers(20, 3000)),
            "output": draw(st.integers(5, 600)),
        }
        if draw(st.booleans()):
            wc["batch_share"] = draw(st.sampled_from((0.3, 1.0)))
        if draw(st.booleans()):  # API billing share and self-hosted KV reuse, independent
            wc["cached_share"] = draw(st.floats(0.0, 1.0))
            wc["prefix_cache_hit_share"] = draw(st.floats(0.0, 0.9))
        if perf and draw(st.booleans()):
            # loose enough for the configurations in PERF to meet with one request
            wc["slo"] = {"ttft_s": draw(st.floats(2.0, 10.0)),
                         "tpot_s": draw(st.floats(0.08, 0.3))}
        elif not api and draw(st.booleans()):
            wc["slo"] = {"ttft_s": draw(st.floats(0.05, 5.0))}  # ignored: stated capacity
        out[name] = wc
    return out


@st.composite
def single_option_scenario(draw):
    kind = draw(st.sampled_from(("cloud", "cloud", "onprem", "onprem", "api")))
    perf = kind != "api" and draw(st.integers(0, 3)) == 0
    data: dict = {"scenario": {"name": "one option", "horizon_months": draw(
        st.sampled_from((12, 24, 36)))},
                  "workload": draw(workload(perf, kind == "api"))}
    planning = {"utilisation_target": draw(st.floats(0.4, 1.0)),
                "ha_reserve_replicas": draw(st.integers(0, 2))}
    if draw(st.booleans()):
        planning["peak_to_average"] = draw(st.floats(1.0, 3.0))
    if kind == "api":
        dep = {"offering": draw(st.sampled_from(("openai/gpt-4o-mini", "openai/gpt-4o"))),
               "discount": draw(st.sampled_from((0.0, 0.1)))}
        if draw(st.booleans()):
            dep["request_fees"] = [{"name": "gateway", "usd_per_million_requests":
                                    draw(st.floats(0.1, 5.0))}]
        data["api"] = {"opt": dep}
    else:
        if perf:
            dep = dict(draw(st.sampled_from(PERF)))
        else:
            dep = {"model": "llama-3.1-8b", "accelerator": "h100-sxm",
                   "gpus_per_replica": draw(st.sampled_from((1, 2, 3, 4, 8, 16))),
                   "capacity_requests_per_s": draw(st.floats(0.05, 40.0))}
        if draw(st.booleans()):
            dep["request_fees"] = [{"name": "gateway", "usd_per_million_requests":
                                    draw(st.floats(0.1, 5.0))}]
        if kind == "cloud":
            dep["usd_per_gpu_hour"] = draw(st.floats(0.3, 6.0))
            dep["gpus_per_instance"] = draw(st.sampled_from((1, 2, 4, 8)))
            dep["plan"] = draw(st.sampled_from(("on-demand", "spot", "reserved-1y")))
            if dep["plan"] == "spot":
                dep["interruption_overhead"] = draw(st.floats(0.0, 0.3))
            if draw(st.integers(0, 3)) == 0:
                dep["billing"] = "active-window"
                dep["active_hours_per_day"] = draw(st.floats(1.0, 24.0))
            else:
                dep["billing"] = "always-on"
            if draw(st.integers(0, 4)) == 0:
                dep["committed"] = True
        else:
            dep.update({
                "server_price_usd": draw(st.floats(5e4, 5e5)),
                "gpus_per_server": draw(st.sampled_from((4, 8))),
                "server_base_w": draw(st.floats(300.0, 3000.0)),
                "gpu_tdp_w": draw(st.floats(200.0, 1000.0)),
                "gpu_idle_power_share": draw(st.floats(0.0, 1.0)),
                "pue": draw(st.floats(1.0, 2.0)),
                "electricity_usd_per_kwh": draw(st.floats(0.0, 0.4)),
                "amortisation_years": draw(st.floats(2.0, 6.0)),
                "cost_of_capital": draw(st.sampled_from((0.0, 0.08))),
                "residual_share": draw(st.sampled_from((0.0, 0.1))),
                "maintenance_share_per_year": draw(st.floats(0.0, 0.15)),
                "facilities_usd_per_server_year": draw(st.floats(0.0, 5000.0)),
                "ops_usd_per_year": draw(st.sampled_from((0.0, 60000.0))),
                "implementation_usd": draw(st.sampled_from((0.0, 25000.0))),
            })
            if draw(st.integers(0, 3)) == 0:
                dep["committed"] = True
                planning["lens"] = draw(st.sampled_from(("tco", "marginal")))
        data[kind] = {"opt": dep}
    data["planning"] = planning
    return parse_scenario(data, catalog=CAT)


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(sc=single_option_scenario())
def test_single_option_plan_is_what_the_cost_engine_prices(sc):
    ref = evaluate(sc, CAT).summary.set_index("deployment").loc["opt"]
    kind, dep = sc.deployments()["opt"]
    event(f"{kind} {getattr(dep, 'billing', '')} {getattr(dep, 'plan', '')} "
          f"{'perf' if getattr(dep, 'capacity_requests_per_s', 1) is None else 'stated'}"
          f"{' unserved' if ref['classes_unserved'] else ''}")
    if ref["classes_unserved"]:
        # the cost engine cannot serve a class (SLO): the optimiser has no plan either
        res = optimize(sc, catalog=CAT, gap=0.0, time_limit_s=math.inf)
        assert res.status == "infeasible"
        return
    res = optimize(sc, catalog=CAT, gap=0.0, time_limit_s=math.inf)
    assert res.status == "optimal" and res.check.passed, (res.status, res.messages)
    want = float(ref["usd_per_month"])
    assert res.objective_usd_per_month == pytest.approx(want, rel=RTOL, abs=1e-9)
    assert res.costs["usd_per_month"].sum() == pytest.approx(want, rel=RTOL, abs=1e-9)
    plan = res.plan.set_index("deployment").loc["opt"]
    if plan["kind"] == "api":
        return
    # the fleet: whole instances / servers, and the replicas the load needs
    assert plan["stage"] == "fixed"
    assert plan["replicas_needed"] == ref["replicas"]
    if res.problem.options["opt"].block_usd_per_month[0] > 1e-6:
        assert plan["units_peak"] == ref["units"]
        assert plan["gpus_peak"] == ref["gpus"]
    else:
        # a block that costs nothing, or less than the solver can tell from nothing
        # (committed hardware under the marginal lens, with no maintenance, idle power or
        # facilities): any fleet at least as large is optimal
        assert plan["units_peak"] >= ref["units"]
    reps = res.hourly.loc[res.hourly["deployment"] == "opt", "replicas"]
    assert reps.nunique() == 1  # one fleet, every hour


# ------------------------------------------------------------------------------------------
# fixed fleet vs hourly rental (the hourly table)


def _two_options(billing: str) -> dict:
    return {
        "scenario": {"name": "billing"},
        "workload": {"chat": {"requests_per_day": 400_000, "diurnal": "business",
                              "input": 1000, "output": 50}},
        "cloud": {"gpu": {"model": "llama-3.1-8b", "accelerator": "h100-sxm",
                          "usd_per_gpu_hour": 2.0, "gpus_per_instance": 1,
                          "capacity_requests_per_s": 1.0, "billing": billing}},
        "planning": {"utilisation_target": 1.0},
    }


def test_always_on_replicas_are_the_same_in_every_hour():
    sc = parse_scenario(_two_options("always-on"), catalog=CAT)
    res = optimize(sc, catalog=CAT, gap=0.0, time_limit_s=math.inf)
    assert res.status == "optimal" and res.check.passed
    reps = res.hourly.loc[res.hourly["deployment"] == "gpu", "replicas"]
    peak = res.problem.demand[0, 0].max()
    assert reps.nunique() == 1 and reps.iloc[0] == math.ceil(peak - 1e-9)
    assert res.objective_usd_per_month == pytest.approx(
        math.ceil(peak - 1e-9) * 2.0 * 730.0, rel=1e-12)


def test_scale_to_zero_replicas_follow_the_hours():
    sc = parse_scenario(_two_options("scale-to-zero"), catalog=CAT)
    res = optimize(sc, catalog=CAT, gap=0.0, time_limit_s=math.inf)
    assert res.status == "optimal" and res.check.passed
    assert res.problem.options["gpu"].stage == "hourly"
    reps = res.hourly.loc[res.hourly["deployment"] == "gpu", "replicas"].to_numpy()
    need = np.ceil(res.problem.demand[0, 0] - 1e-9)
    np.testing.assert_array_equal(reps, need)  # whole replicas, hour by hour
    assert len(set(reps)) > 1
    # plus the start-ups: each replica started (cyclic over the day) is billed the default
    # 120 s start-up at $2/h, every day of the month
    starts = np.maximum(0.0, need - np.roll(need, 1)).sum()
    assert starts > 0
    assert res.objective_usd_per_month == pytest.approx(
        (need.sum() * 2.0 + starts * 2.0 * 120.0 / 3600.0) * 730.0 / 24, rel=1e-12)


def test_active_window_is_a_fleet_paid_for_its_hours():
    data = _two_options("active-window")
    data["cloud"]["gpu"]["active_hours_per_day"] = 10
    sc = parse_scenario(data, catalog=CAT)
    res = optimize(sc, catalog=CAT, gap=0.0, time_limit_s=math.inf)
    assert res.status == "optimal" and res.check.passed
    reps = res.hourly.loc[res.hourly["deployment"] == "gpu", "replicas"]
    n = math.ceil(res.problem.demand[0, 0].max() - 1e-9)
    assert reps.nunique() == 1 and reps.iloc[0] == n
    # paid 10 h a day x 730 / 24 days, the cost engine's active-window bill
    ref = evaluate(sc, CAT).summary.set_index("deployment").loc["gpu", "usd_per_month"]
    assert res.objective_usd_per_month == pytest.approx(n * 2.0 * 10 * 730.0 / 24, rel=1e-12)
    assert res.objective_usd_per_month == pytest.approx(ref, rel=1e-12)


def test_the_recheck_catches_an_always_on_option_rented_per_hour():
    from planner.engines.optimize_data import OptimizeOptions, build_problem
    from planner.engines.optimize_milp import build_milp, check_plan, decode, solve_milp

    sc = parse_scenario(_two_options("always-on"), catalog=CAT)
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc))
    # a formulation bug: the always-on option given the hourly stage (priced per hour)
    o = pb.options["gpu"]
    o.stage, o.block_usd_per_hour = "hourly", o.block_usd_per_month / pb.hours_per_month
    m = build_milp(pb)
    info = solve_milp(m, gap=0.0)
    rep = check_plan(pb, decode(m, info.x), milp_=m)
    assert not rep.passed
    assert {"billing", "first_stage"} <= set(rep.violations["constraint"])


# ------------------------------------------------------------------------------------------
# stated fleets: what the scenario fixes is what the optimiser plans and pays


def _stated(kind: str, **dep) -> dict:
    base = {"model": "llama-3.1-8b", "accelerator": "h100-sxm",
            "capacity_requests_per_s": 1.0, **dep}
    if kind == "cloud":
        base.update(usd_per_gpu_hour=2.0)
    else:
        base.update(server_price_usd=100_000, server_base_w=1000, gpu_tdp_w=700)
    return {
        "scenario": {"name": "stated fleet"},
        "workload": {"chat": {"requests_per_day": 2.5 * 86400, "input": 100, "output": 10}},
        kind: {"fleet": base},
        "api": {"api": {"offering": "openai/gpt-4o-mini"}},
        "planning": {"utilisation_target": 1.0},
    }


def test_stated_replicas_cap_the_capacity_of_their_instances():
    # 2 replicas stated on one 8-GPU instance: the instance has 8 slots, but only the 2
    # stated replicas serve (the cost engine's replicas = 2); the rest goes to the API
    sc = parse_scenario(_stated("cloud", gpus_per_instance=8, replicas=2), catalog=CAT)
    res = optimize(sc, catalog=CAT, gap=0.0, time_limit_s=math.inf)
    assert res.status == "optimal" and res.check.passed
    plan = res.plan.set_index("deployment")
    ref = evaluate(sc, CAT).summary.set_index("deployment").loc["fleet"]
    assert plan.loc["fleet", "replicas_peak"] == ref["replicas"] == 2
    assert plan.loc["fleet", "units_peak"] == ref["units"] == 1
    assert plan.loc["fleet", "usd_per_month"] == pytest.approx(ref["usd_per_month"], rel=RTOL)
    assert plan.loc["api", "requests_share"] == pytest.approx(0.5 / 2.5, rel=1e-9)


def test_stated_servers_are_all_paid():
    # 3 servers stated for replicas spanning 2 servers each: one replica fits, the third
    # server holds none but is paid (as the cost engine prices 3 servers)
    sc = parse_scenario(_stated("onprem", gpus_per_replica=16, gpus_per_server=8, servers=3),
                        catalog=CAT)
    res = optimize(sc, catalog=CAT, gap=0.0, time_limit_s=math.inf)
    assert res.status == "optimal" and res.check.passed
    ref = evaluate(sc, CAT).summary.set_index("deployment").loc["fleet"]
    plan = res.plan.set_index("deployment")
    assert plan.loc["fleet", "replicas_peak"] == 1
    # the cost engine bills 3 servers (its energy differs: it puts all the load on them);
    # the optimiser pays the block of 2 and the spare server whenever the fleet is used
    o = res.problem.options["fleet"]
    assert o.block_usd_per_month[0] + o.fixed_usd_per_month[0] == pytest.approx(
        3 / 2 * o.block_usd_per_month[0], rel=1e-12)
    assert ref["units"] == 3
