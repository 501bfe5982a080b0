"""Optimiser (issue 6): hand-checkable optima, infeasibility explanations, the solution checker,
properties, fine-tune, cascade, TPM, stochastic and sensitivity behaviour."""

from __future__ import annotations

import math
import tomllib
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.catalog import load_catalog
from planner.config import parse_scenario
from planner.engines.deterministic import evaluate
from planner.engines.optimize import (
    OptimizeOptions,
    optimize,
    optimize_problem,
    sensitivity,
)
from planner.engines.optimize_data import build_problem
from planner.engines.optimize_milp import build_milp, check_plan, decode, solve_milp
from planner.errors import PlannerError

CAT = load_catalog()
HPM = 730.0


def scenario(text: str):
    return parse_scenario(tomllib.loads(text), catalog=CAT)


def toy(requests_per_day=216_000, api_usd_per_mtok=1.0, gpu_usd_per_hour=2.0, cap_rps=1.0,
        extra="", plan="on-demand"):
    """One class, 1000 input + 10 output tokens; an API at api_usd_per_mtok per 1M input
    tokens (output free) and one cloud GPU at gpu_usd_per_hour with a stated capacity."""
    return scenario(f"""
[scenario]
name = "toy"
[workload.q]
requests_per_day = {requests_per_day}
input = 1000
output = 10
[api.api]
offering = "openai/gpt-4o-mini"
input_usd_per_mtok = {api_usd_per_mtok}
output_usd_per_mtok = 0
[cloud.gpu]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = {gpu_usd_per_hour}
gpus_per_instance = 1
capacity_requests_per_s = {cap_rps}
plan = "{plan}"
[planning]
utilisation_target = 1.0
{extra}
""")


# ------------------------------------------------------------------------------------------
# hand-checkable optima


def test_api_vs_replica_exact_optimum():
    # 2.5 req/s all day; a replica serves 1 req/s for $2/h; the API costs $0.001/request.
    # A full replica saves 3600 x 1 x 0.001 = $3.6/h > $2 -> 2 replicas; the 0.5 req/s left
    # costs $1.8/h on the API < $2 for a third replica. Hourly: 2 x 2 + 1.8 = $5.8.
    res = optimize(toy(), gap=0.0)
    assert res.status == "optimal" and res.check.passed
    assert res.objective_usd_per_month == pytest.approx(5.8 * HPM, rel=1e-9)
    h = res.hourly[res.hourly["deployment"] == "gpu"]
    assert (h["replicas"] == 2).all()
    api = res.plan.set_index("deployment").loc["api", "requests_share"]
    assert api == pytest.approx(0.5 / 2.5, rel=1e-9)
    assert res.lp_bound <= res.objective_usd_per_month + 1e-6
    # LP relaxation: every request on fractional replicas at $2 per 1 req/s-hour
    assert res.lp_bound == pytest.approx(2.5 * 2.0 * HPM, rel=1e-9)


def test_reserved_fixed_stage_uses_peak_not_mean():
    # business profile: a reserved (fixed-stage) block is paid all 730 h; with no other option
    # the optimum holds ceil(peak load) replicas
    data = tomllib.loads("""
[scenario]
name = "toy"
[workload.q]
requests_per_day = 216000
diurnal = "business"
input = 1000
output = 10
[cloud.gpu]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = 2.0
gpus_per_instance = 1
capacity_requests_per_s = 1.0
plan = "reserved-1y"
[planning]
utilisation_target = 1.0
""")
    sc = parse_scenario(data, catalog=CAT)
    res = optimize(sc, gap=0.0)
    peak = res.problem.demand[0, 0].max()
    n = math.ceil(peak / 1.0 - 1e-9)
    assert res.plan.set_index("deployment").loc["gpu", "blocks_fixed"] == n
    assert res.objective_usd_per_month == pytest.approx(n * 2.0 * HPM, rel=1e-9)
    # the deterministic engine prices the same fleet the same way
    det = evaluate(sc, CAT).summary.set_index("deployment").loc["gpu", "usd_per_month"]
    assert res.objective_usd_per_month == pytest.approx(det, rel=1e-9)


@pytest.mark.parametrize("keep", ["gpt-4o-mini", "llama-70b-hgx"])
def test_single_option_matches_deterministic_engine(keep):
    # quickstart restricted to one API or to the on-prem servers: the optimiser's cost is the
    # deterministic engine's (same capacity, ceil, HA reserve, capex, energy, staff)
    from planner.config import load_scenario
    from planner.templates import __path__ as tp

    sc = load_scenario(tp[0] + "/quickstart.toml", catalog=CAT)
    others = tuple(d for d in sc.deployments() if d != keep)
    res = optimize(sc, catalog=CAT, gap=0.0,
                   options=OptimizeOptions.from_scenario(sc, exclude=others))
    det = evaluate(sc, CAT).summary.set_index("deployment").loc[keep, "usd_per_month"]
    assert res.check.passed
    assert res.objective_usd_per_month == pytest.approx(det, rel=1e-6)


def test_finetune_decision_and_breakeven():
    # article 000 set-up: only GPT-4o (tier 1) or a fine-tuned mini (tier 1 once tuned) serve
    text = """
[scenario]
name = "ft"
horizon_months = 12
[workload.support]
requests_per_day = {rpd}
input = 800
output = 200
min_quality_tier = 1
[api.big]
offering = "openai/gpt-4o-2024-08-06"
[api.mini-ft]
offering = "openai/gpt-4o-mini-2024-07-18"
fine_tune = "mini"
[finetune.mini]
method = "api"
base_model = "openai/gpt-4o-mini-2024-07-18"
training_tokens = 2e6
epochs = 3
retry_multiplier = 15
qualifies_for = ["support"]
quality_tier = 1
"""
    for rpd, chosen in ((20_000, True), (10, False)):
        sc = scenario(text.format(rpd=rpd))
        res = optimize(sc, gap=0.0)
        det = evaluate(sc, CAT).summary.set_index("deployment")["usd_per_month"]
        assert res.finetune.set_index("finetune").loc["mini", "chosen"] == chosen
        # the deterministic engine charges the one-off to the fine-tuned deployment
        assert res.objective_usd_per_month == pytest.approx(det.min(), rel=1e-9)
        assert res.check.passed


def test_cascade_and_average_quality_exact():
    # small: $0.1/request, quality 70; large: $1/request, quality 90; class needs 85 on average.
    # cascade (small, escalate 20% to large) scores 88 and costs 0.1 + 0.2 x 1 = 0.3.
    # LP optimum: k cascade + (1 - k) small with 88k + 70(1 - k) = 85 -> k = 5/6:
    # cost = 5/6 x 0.3 + 1/6 x 0.1 = 0.26667 per request (vs 0.775 mixing small and large).
    sc = scenario("""
[scenario]
name = "cascade"
[workload.q]
requests_per_day = 86400
input = 1000000
output = 1
min_quality = 85
[api.small]
offering = "openai/gpt-4o-mini"
input_usd_per_mtok = 0.1
output_usd_per_mtok = 0
quality = { q = 70 }
[api.large]
offering = "openai/gpt-4o"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 0
quality = { q = 90 }
[cascade.try-small]
small = "small"
large = "large"
escalation_share = 0.2
quality = { q = 88 }
""")
    res = optimize(sc, gap=0.0)
    per_req = res.objective_usd_per_month / (86400 * HPM / 24)
    assert per_req == pytest.approx(0.3 * 5 / 6 + 0.1 / 6, rel=1e-9)
    shares = res.routing.set_index("route")["share"]
    assert shares["try-small"] == pytest.approx(5 / 6, rel=1e-9)
    assert shares["small"] == pytest.approx(1 / 6, rel=1e-9)
    # without the cascade: small <= 25%, large >= 75%
    res2 = optimize(sc, gap=0.0, options=OptimizeOptions.from_scenario(sc).replace(
        cascades={}, quality={"small": {"q": 70}, "large": {"q": 90}}))
    per_req2 = res2.objective_usd_per_month / (86400 * HPM / 24)
    assert per_req2 == pytest.approx(0.25 * 0.1 + 0.75 * 1.0, rel=1e-9)


def test_tpm_limit_spills_to_the_next_option():
    # cheap API capped at 60,000 tokens/min = 1 request/s of 1000 tokens; 2.5 req/s demand
    sc = scenario("""
[scenario]
name = "tpm"
[workload.q]
requests_per_day = 216000
input = 1000
output = 0
[api.cheap]
offering = "openai/gpt-4o-mini"
input_usd_per_mtok = 1
output_usd_per_mtok = 0
tpm_limit = 60000
[api.dear]
offering = "openai/gpt-4o"
input_usd_per_mtok = 3
output_usd_per_mtok = 0
""")
    res = optimize(sc, gap=0.0)
    hourly = 3600 * (1.0 * 0.001 + 1.5 * 0.003)
    assert res.objective_usd_per_month == pytest.approx(hourly * HPM, rel=1e-9)
    assert res.plan.set_index("deployment").loc["cheap", "requests_share"] == \
        pytest.approx(0.4, rel=1e-9)


def test_provider_share_and_onprem_share_limits():
    from planner.config import load_scenario
    from planner.templates import __path__ as tp

    sc = load_scenario(tp[0] + "/quickstart.toml", catalog=CAT, variants=["high-volume"])
    free = optimize(sc, catalog=CAT)
    capped = optimize(sc, catalog=CAT, options=OptimizeOptions.from_scenario(
        sc, max_share_per_provider=0.5, min_onprem_share=0.3))
    assert capped.check.passed
    assert capped.objective_usd_per_month >= free.objective_usd_per_month - 1e-6
    plan = capped.plan.set_index("deployment")
    by_provider = plan.groupby("provider")["requests_share"].sum()
    assert (by_provider <= 0.5 + 1e-6).all()
    assert plan.loc[plan["kind"] == "onprem", "requests_share"].sum() >= 0.3 - 1e-6


# ------------------------------------------------------------------------------------------
# infeasibility


# a single-class scenario whose only candidate cannot meet the TTFT SLO (also used by the CLI
# tests)
SLO_INFEASIBLE = """
[scenario]
name = "impossible latency"
[workload.chat]
requests_per_day = 100000
input = 2000
output = 200
slo = { ttft_s = 0.001 }
[cloud.big]
model = "llama-3.1-70b"
accelerator = "h100-sxm"
gpus_per_replica = 2
precision = "fp8"
"""


def test_infeasible_slo_is_explained():
    data = tomllib.loads(SLO_INFEASIBLE)
    sc = parse_scenario(data, catalog=CAT)
    res = optimize(sc)
    assert res.status == "infeasible"
    assert res.solution is None and math.isnan(res.objective_usd_per_month)
    assert not res.trusted and not res.check.passed
    assert res.check.summary() == "no plan to check"
    assert any("class chat's TTFT SLO cannot be met by any candidate" in m
               for m in res.messages)


def test_infeasible_budget_and_caps_are_explained():
    res = optimize(toy(extra="[optimize]\nbudget_usd_per_month = 100"))
    assert res.status == "infeasible"
    msg = " ".join(res.messages)
    assert "budget 100 USD/month is below the cheapest plan" in msg
    assert "4,234 USD/month" in msg  # 5.8 x 730
    row = res.infeasibility.set_index("group").loc["budget"]
    assert bool(row["feasible_without"])
    # on-prem share with no on-prem candidate
    res = optimize(toy(extra="[optimize]\nmin_onprem_share = 0.2"))
    assert res.status == "infeasible"
    assert any("no on-prem deployment" in m for m in res.messages)


def test_unreachable_quality_is_explained():
    sc = scenario("""
[scenario]
name = "q"
[workload.q]
requests_per_day = 1000
input = 100
output = 10
min_quality = 95
[api.a]
offering = "openai/gpt-4o-mini"
""")
    res = optimize(sc)
    assert res.status == "infeasible"
    assert any("needs quality 95 but the best candidate reaches 82" in m for m in res.messages)


# ------------------------------------------------------------------------------------------
# the checker and the named indices


def _solved_quickstart():
    from planner.config import load_scenario
    from planner.templates import __path__ as tp

    sc = load_scenario(tp[0] + "/quickstart.toml", catalog=CAT, variants=["high-volume"],
                       overrides=SCALE_TO_ZERO)
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc))
    m = build_milp(pb)
    info = solve_milp(m)
    return pb, m, info


#: The quickstart's rented GPUs billed per hour rented (scale-to-zero), so that the optimiser
#: chooses their replicas hour by hour (always-on ones are a fleet fixed for the month).
SCALE_TO_ZERO = {"cloud.llama-8b-h100.billing": "scale-to-zero",
                 "cloud.llama-70b-h100.billing": "scale-to-zero"}


def test_checker_catches_tampered_solutions():
    pb, m, info = _solved_quickstart()
    plan = decode(m, info.x)
    assert check_plan(pb, plan, objective=info.objective, milp_=m).passed
    # one replica fewer in the busiest hour of the on-demand pool
    j = plan.options.index("llama-8b-h100")
    h = int(np.argmax(plan.blocks[0, j]))
    x = info.x.copy()
    x[m.cols.at("blocks_hourly", scenario=0, option="llama-8b-h100", hour=h)] -= 1
    rep = check_plan(pb, decode(m, x), milp_=m)
    assert not rep.passed
    assert set(rep.violations["constraint"]) >= {"capacity", "row:capacity"}
    # demand not served: drop one flow
    x = info.x.copy()
    k = int(np.argmax(x[m.cols["flow"]][0, :, h]))
    x[m.cols["flow"][0, k, h]] = 0.0
    rep = check_plan(pb, decode(m, x), milp_=m)
    assert "demand" in set(rep.violations["constraint"])
    # a fractional replica count
    x = info.x.copy()
    x[m.cols.at("blocks_hourly", scenario=0, option="llama-8b-h100", hour=h)] += 0.5
    rep = check_plan(pb, decode(m, x), milp_=m)
    assert "integrality" in set(rep.violations["constraint"])
    # a wrong objective value
    rep = check_plan(pb, plan, objective=info.objective * 1.1, milp_=m)
    assert "objective" in set(rep.violations["constraint"])


def test_fixed_fleet_is_kept_and_checked():
    # 2.5 req/s all day on a stated fleet of 3 always-on replicas (1 req/s each, $2/h):
    # the fleet is paid either way, so it serves everything and the API nothing
    text = toy().model_dump(mode="python")
    text["cloud"]["gpu"]["replicas"] = 3
    sc = parse_scenario(text, catalog=CAT)
    res = optimize(sc, catalog=CAT, gap=0.0)
    assert res.status == "optimal" and res.check.passed, res.check.violations
    assert res.objective_usd_per_month == pytest.approx(3 * 2.0 * HPM, rel=1e-9)
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc))
    m = build_milp(pb)
    info = solve_milp(m, gap=0.0)
    plan = decode(m, info.x)
    assert (plan.blocks[0, plan.options.index("gpu")] == 3).all()
    # always-on: the fleet is one first-stage count, the same in every hour
    assert pb.options["gpu"].stage == "fixed"
    # a plan with one replica fewer breaks the fleet's lower bound
    x = info.x.copy()
    x[m.cols.at("blocks_fixed", option="gpu")] = 2
    rep = check_plan(pb, decode(m, x), milp_=m)
    assert "option=gpu (fixed fleet)" in set(rep.violations["item"])
    # a plan that drops one replica of the fleet in one hour is not one fleet
    plan5 = decode(m, info.x)
    plan5.blocks[0, plan5.options.index("gpu"), 5] = 2
    rep = check_plan(pb, plan5)
    assert {"option=gpu (fixed fleet)", "option=gpu"} <= set(rep.violations["item"])
    assert "first_stage" in set(rep.violations["constraint"])


def test_named_columns_round_trip():
    pb, m, info = _solved_quickstart()
    j = m.cols.at("blocks_hourly", scenario=0, option="llama-8b-h100", hour=7)
    assert m.cols.label(j) == "blocks_hourly[scenario=0, option=llama-8b-h100, hour=7]"
    f = m.cols["flow"]
    assert f.shape == (1, len(m.pairs), 24)
    assert m.A.shape == (len(m.lo), m.cols.n)


def test_result_reports_gap_and_lp_bound():
    pb, m, info = _solved_quickstart()
    res = optimize_problem(pb, gap=0.01)
    assert res.status == "optimal"
    assert res.gap <= 0.01 + 1e-9
    assert res.lp_bound <= res.objective_usd_per_month * (1 + 1e-9)
    assert set(res.tables()) >= {"plan", "hourly", "routing", "finetune", "costs", "summary"}
    assert res.costs["usd_per_month"].sum() == pytest.approx(res.objective_usd_per_month,
                                                             rel=1e-6)


def test_options_validation_and_from_scenario():
    with pytest.raises(PlannerError, match="objective"):
        OptimizeOptions(objective="median")
    with pytest.raises(PlannerError, match="unknown setting"):
        OptimizeOptions.from_scenario(toy(), budget=1)
    o = OptimizeOptions.from_scenario(toy(extra="[optimize]\ngap = 0.05\nbudget_usd_per_month = 9"),
                                      tpm_limit={"api": 5.0})
    assert o.gap == 0.05 and o.budget_usd_per_month == 9 and o.tpm_limit == {"api": 5.0}


# ------------------------------------------------------------------------------------------
# properties


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rpd=st.floats(1_000, 2_000_000),
    api_price=st.floats(0.05, 5.0),
    prices=st.lists(st.floats(0.5, 8.0), min_size=2, max_size=2),
    caps=st.lists(st.floats(0.2, 20.0), min_size=2, max_size=2),
    reserved=st.booleans(),
)
def test_adding_an_option_never_increases_the_optimal_cost(rpd, api_price, prices, caps,
                                                           reserved):
    sc = scenario(f"""
[scenario]
name = "prop"
[workload.q]
requests_per_day = {rpd}
diurnal = "consumer"
input = 1000
output = 10
[api.api]
offering = "openai/gpt-4o-mini"
input_usd_per_mtok = {api_price}
output_usd_per_mtok = 0
[cloud.a]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = {prices[0]}
gpus_per_instance = 1
capacity_requests_per_s = {caps[0]}
[cloud.b]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = {prices[1]}
gpus_per_instance = 1
capacity_requests_per_s = {caps[1]}
plan = "{'reserved-1y' if reserved else 'on-demand'}"
""")
    full = build_problem(sc, CAT, OptimizeOptions())
    less = build_problem(sc, CAT, OptimizeOptions(exclude=("b",)))
    c_full = optimize_problem(full, gap=0.0).objective_usd_per_month
    c_less = optimize_problem(less, gap=0.0).objective_usd_per_month
    assert c_full <= c_less * (1 + 1e-7) + 1e-6


# ------------------------------------------------------------------------------------------
# stochastic version and sensitivity


STOCH = """
[scenario]
name = "stoch"
[workload.q]
requests_per_day = {{ dist = "lognormal", median = 400000, p90 = 800000 }}
diurnal = "business"
input = 1000
output = 10
[api.api]
offering = "openai/gpt-4o-mini"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 0
[cloud.od]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = 3.0
gpus_per_instance = 1
capacity_requests_per_s = 1.0
billing = "scale-to-zero"
[cloud.rsv]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = 1.6
gpus_per_instance = 1
capacity_requests_per_s = 1.0
plan = "reserved-1y"
[planning]
utilisation_target = 1.0
[optimize]
objective = "{objective}"
cvar_lambda = 1.0
"""


def test_stochastic_recourse_beats_planning_for_the_mean():
    sc = scenario(STOCH.format(objective="expected"))
    # no wall-clock limit (time_limit_s=inf: every solve to the gap, the quick attempt and
    # the polish bounded in solver nodes): the plan does not depend on the machine's load
    res = optimize(sc, stochastic=True, n_scenarios=40, seed=3, gap=1e-4,
                   time_limit_s=math.inf)
    assert res.status == "optimal" and res.check.passed and res.n_scenarios == 40
    assert not any("time limit" in m for m in res.messages)
    st_ = res.stochastic.set_index("metric")["value"]
    assert st_["VSS_usd_per_month"] >= -1e-6 * st_["EEV_objective"]
    assert st_["RP_objective"] <= st_["EEV_objective"] * (1 + 1e-6)
    assert st_["p5_usd_per_month"] <= st_["p50_usd_per_month"] <= st_["p95_usd_per_month"]
    assert len(res.scenarios) == 40 and "workload.q.requests_per_day" in res.scenarios
    # the first stage is one number for all scenarios
    rsv = res.hourly[res.hourly["deployment"] == "rsv"]["blocks"]
    assert rsv.nunique() == 1
    # the same seed gives the same scenarios and, with no wall-clock limit, the same plan
    again = optimize(sc, stochastic=True, n_scenarios=40, seed=3, gap=1e-4,
                     time_limit_s=math.inf)
    pd.testing.assert_frame_equal(again.scenarios, res.scenarios)
    assert again.objective_usd_per_month == res.objective_usd_per_month
    pd.testing.assert_frame_equal(again.hourly, res.hourly)


@pytest.mark.parametrize("objective", ["expected", "cvar"])
def test_benders_decomposition_matches_the_extensive_form(objective):
    sc = scenario(STOCH.format(objective=objective))
    opts = OptimizeOptions.from_scenario(sc)
    from planner.engines.optimize import sample_inputs

    values, _, _, model = sample_inputs(sc, 30, 11, CAT)
    pb = build_problem(sc, CAT, opts, values=values, model=model)
    # no wall-clock limit: under a time limit on a loaded machine the per-scenario whole-
    # replica re-solves (each a share of the limit) stopped with worse plans, 0.01-12% apart
    kw = {"gap": 1e-5, "objective": objective, "cvar_lambda": 1.0, "time_limit_s": math.inf}
    ext = optimize_problem(pb, method="extensive", **kw)
    ben = optimize_problem(pb, method="benders", **kw)
    assert ext.status == ben.status == "optimal"
    assert ext.check.passed and ben.check.passed
    assert ben.objective_usd_per_month == pytest.approx(ext.objective_usd_per_month, rel=1e-4)
    assert ben.lp_bound <= ben.objective_usd_per_month * (1 + 1e-9)
    b = ben.stochastic.set_index("metric")["value"]
    e = ext.stochastic.set_index("metric")["value"]
    assert b["EEV_objective"] == pytest.approx(e["EEV_objective"], rel=1e-4)
    assert any("L-shaped" in m for m in ben.messages)


def test_a_stochastic_plan_the_time_limit_cut_short_is_not_called_optimal(monkeypatch):
    # whole replicas: each scenario's hourly counts are re-solved in whole replicas within a
    # share of the time limit; a scenario left without time is rounded up and counted
    import planner.engines.optimize as opt
    from planner.engines.optimize import sample_inputs
    from planner.engines.optimize_stochastic import whole_replicas

    sc = scenario(STOCH.format(objective="expected"))
    values, _, _, model = sample_inputs(sc, 6, 11, CAT)
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc), values=values, model=model)
    m = build_milp(pb)
    plan = decode(m, solve_milp(m, gap=1e-4, time_limit_s=math.inf).x)
    full = whole_replicas(pb, plan, gap=1e-4, time_limit_s=math.inf)
    assert (full.resolved, full.rounded, full.limited) == (pb.n_scenarios, 0, 0)
    none = whole_replicas(pb, plan, gap=1e-4, time_limit_s=0.0)
    assert (none.resolved, none.rounded, none.limited) == (0, pb.n_scenarios, pb.n_scenarios)
    ok = optimize_problem(pb, gap=1e-4, time_limit_s=math.inf, method="extensive")
    assert ok.status == "optimal"
    # the same solve with every whole-replica re-solve cut short: a plan, not proven
    monkeypatch.setattr(opt, "whole_replicas",
                        lambda pb_, plan_, **kw: whole_replicas(pb_, plan_, gap=kw["gap"],
                                                                time_limit_s=0.0))
    for method in ("extensive", "benders"):
        cut = optimize_problem(pb, gap=1e-4, time_limit_s=math.inf, method=method)
        assert cut.status == "time_limit" and cut.trusted, method
        assert any(f"{pb.n_scenarios} cut short by the time limit" in msg
                   for msg in cut.messages), cut.messages
        assert cut.objective_usd_per_month >= ok.objective_usd_per_month * (1 - 1e-9)


def test_cvar_objective_trades_mean_for_tail():
    # two plans compared: each solved with no wall-clock limit (the load cannot cut one short)
    exp = optimize(scenario(STOCH.format(objective="expected")), stochastic=True,
                   n_scenarios=40, seed=5, gap=1e-4, time_limit_s=math.inf)
    cv = optimize(scenario(STOCH.format(objective="cvar")), stochastic=True,
                  n_scenarios=40, seed=5, gap=1e-4, time_limit_s=math.inf)
    assert exp.status == cv.status == "optimal"
    e = exp.stochastic.set_index("metric")["value"]
    c = cv.stochastic.set_index("metric")["value"]
    assert c["cvar95_usd_per_month"] <= e["cvar95_usd_per_month"] * (1 + 1e-6)
    assert c["expected_usd_per_month"] >= e["expected_usd_per_month"] * (1 - 1e-6)
    # objective = E + lambda x CVaR of the chosen plan
    assert cv.objective_usd_per_month == pytest.approx(
        c["expected_usd_per_month"] + 1.0 * c["cvar95_usd_per_month"], rel=1e-6)


def test_sensitivity_finds_the_traffic_break_even():
    # 0.25 req/s base; a replica (1 req/s, $2/h) beats the API ($0.001/request) from
    # 2/3.6 = 0.5556 req/s on, i.e. traffic x 2.222 (hourly demand is flat)
    sc = toy(requests_per_day=21_600)
    res = sensitivity(sc, traffic=(1.0, 4.0), api_price=(1.0,), gpu_price=(1.0,), gap=0.0,
                      rtol=0.01)
    b = res.breakpoints
    assert len(b) == 1
    row = b.iloc[0]
    assert row["axis"] == "traffic"
    assert row["multiplier_low"] <= 2.0 / 3.6 / 0.25 <= row["multiplier_high"]
    assert row["multiplier_high"] / row["multiplier_low"] <= 1.01 + 1e-12
    assert "gpu" in row["mix_above"] and "gpu" not in row["mix_below"]


def test_sensitivity_finds_the_price_break_evens():
    # toy(): 2.5 req/s flat, a replica serves cap = 1 req/s for gpu = $2/h, the API costs
    # api = $0.001/request. A full replica is worth it while gpu x g < 3600 x cap x api x a;
    # the third, serving the last 0.5 req/s, while gpu x g < 3600 x 0.5 x api x a. So on the
    # GPU-price axis the mix changes at g = 0.9 ({gpu} -> {gpu, api}) and g = 1.8 (-> {api}),
    # and on the API-price axis at a = 2/3.6 ({api} -> {gpu, api}) and a = 2/1.8 (-> {gpu}).
    rps, cap, gpu, api = 2.5, 1.0, 2.0, 1000 * 1.0 / 1e6
    sc = toy()
    res = sensitivity(sc, traffic=(1.0,), api_price=(0.25, 1.0, 4.0),
                      gpu_price=(0.25, 1.0, 4.0), gap=0.0, rtol=0.01)
    full = 3600 * cap * api  # USD/h a full replica saves
    part = 3600 * (rps - math.floor(rps / cap) * cap) * api  # ... the last, partial one
    want = {"gpu_price": sorted([part / gpu, full / gpu]),
            "api_price": sorted([gpu / full, gpu / part])}
    b = res.breakpoints
    assert sorted(b["axis"]) == ["api_price", "api_price", "gpu_price", "gpu_price"]
    for axis, points in want.items():
        rows = b[b["axis"] == axis].sort_values("multiplier")
        for (_, r), x in zip(rows.iterrows(), points, strict=True):
            assert r["multiplier_low"] <= x <= r["multiplier_high"], (axis, x)
            assert r["multiplier_high"] / r["multiplier_low"] <= 1.01 + 1e-12
    cheap_gpu = b[b["axis"] == "gpu_price"].sort_values("multiplier").iloc[0]
    assert cheap_gpu["mix_below"] == "gpu 100%" and "api 20%" in cheap_gpu["mix_above"]
    # the grid's cost at x1 is the base optimum
    base = res.grid[(res.grid["axis"] == "gpu_price") & (res.grid["multiplier"] == 1.0)]
    assert base["usd_per_month"].iloc[0] == pytest.approx(
        optimize(sc, gap=0.0).objective_usd_per_month, rel=1e-9)


def test_problem_scaling_helpers():
    pb = build_problem(toy(), CAT, OptimizeOptions())
    s = pb.scaled(traffic=2.0, api_price=3.0, gpu_price=0.5)
    assert np.allclose(s.demand, 2 * pb.demand)
    assert np.allclose(s.options["api"].classes["q"].usd_per_request,
                       3 * pb.options["api"].classes["q"].usd_per_request)
    assert np.allclose(s.options["gpu"].block_usd_per_hour,
                       0.5 * pb.options["gpu"].block_usd_per_hour)
    assert replace(pb).n_scenarios == 1


# ------------------------------------------------------------------------------------------
# verification by simulation


def test_verify_reports_slo_attainment_and_flags_an_underprovisioned_plan():
    from planner.engines.optimize_verify import verify_plan

    pb, m, info = _solved_quickstart()
    plan = decode(m, info.x)
    ok = verify_plan(pb, plan, CAT, window_s=120, warmup_s=20)
    assert ok.passed and set(ok.table.columns) >= {"class", "slo_attainment",
                                                    "spillover_share", "target"}
    # a third of the replicas in the simulated hour: the SLO must fail
    j = plan.options.index("llama-8b-h100")
    thin = replace(plan, blocks=plan.blocks.copy())
    thin.blocks[0, j, ok.hour] = max(1, int(thin.blocks[0, j, ok.hour]) // 3)
    bad = verify_plan(pb, thin, CAT, scenario=0, hour=ok.hour, window_s=120, warmup_s=20,
                      spill=False)
    assert not bad.passed
    chat = bad.table.set_index("class").loc["chat"]
    assert chat["slo_attainment"] < chat["target"]


# 90 requests/s flat on Llama-3.1-8B replicas at utilisation 1.0 (also used by the CLI tests);
# the replicas run prefill-only iterations (no chunked prefill), so a fully busy plan queues
HEADROOM = """
[scenario]
name = "headroom"
[workload.chat]
requests_per_day = 7776000
input = 1500
output = 200
slo = { ttft_s = 2.0, tpot_s = 0.1 }
[cloud.gpu]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
precision = "fp8"
perf = { chunked_prefill = false }
[planning]
utilisation_target = 1.0
"""


def test_verify_finds_the_headroom_that_fixes_a_failing_plan():
    # 90 requests/s flat on a Llama-3.1-8B H100 replica the perf model rates at ~30.5
    # requests/s at the SLO: at utilisation_target 1.0 the optimiser buys 3 replicas (98%
    # busy) and the simulation queues (the perf model's capacity has no queueing); one step
    # of headroom (0.9 -> 4 replicas) passes
    sc = scenario(HEADROOM)
    res = optimize(sc, verify=True, verify_window_s=150)
    assert res.plan.set_index("deployment").loc["gpu", "replicas_peak"] == 3
    v = res.verification.set_index("class").loc["chat"]
    assert not v["passed"] and v["slo_attainment"] < 0.9
    assert any("FAILS its SLO in simulation" in m for m in res.messages)
    h = res.headroom
    assert bool(h.iloc[-1]["passed"]) and h.iloc[-1]["utilisation_target"] == pytest.approx(0.9)
    assert h.iloc[-1]["usd_per_month"] == pytest.approx(4 * 3.29 * HPM, rel=1e-9)
    assert any("headroom that fixes it: utilisation_target 0.9" in m for m in res.messages)
