"""The stochastic optimiser prices its sampled scenarios with one model (no scenario per sample).

Oracle: the deterministic problem of one sample, materialised as a scenario
(:func:`planner.uncertain.scenario_at`), must have the coefficients of that sample's slice of
the stochastic problem. Exact (rtol 1e-9) where the capacity is exact; within the capacity
grid's stated 1% where a class's lengths are uncertain (capacity interpolated on the grid of
length quantiles, :class:`planner.model.capacity.CapacityGrid`).
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
import tomllib

import numpy as np
import pytest

from planner.catalog import load_catalog
from planner.config import parse_scenario
from planner.engines.deterministic import evaluate
from planner.engines.optimize import optimize, sample_inputs, sample_scenarios
from planner.engines.optimize_data import OptimizeOptions, build_problem
from planner.engines.optimize_milp import build_milp, solve_milp

CAT = load_catalog()

#: every kind of coefficient uncertain: volumes, lengths (the grid), API prices and fees,
#: cloud and on-prem prices, energy, stated capacity, fine-tune one-off, escalation share
SCEN = """
[scenario]
name = "stoch-model"
horizon_months = 24
[workload.chat]
requests_per_day = { dist = "lognormal", median = 300000, p90 = 500000 }
diurnal = "consumer"
input = { tokens = { dist = "triangular", low = 600, mode = 900, high = 1400 } }
output = { tokens = { dist = "uniform", low = 120, high = 260 } }
batch_share = { dist = "uniform", low = 0.0, high = 0.3 }
slo = { ttft_s = 2.0, tpot_s = 0.1 }
[workload.tag]
requests_per_day = { dist = "normal", mean = 800000, sd = 80000, low = 0 }
diurnal = "flat"
input = 300
output = 5
[api.mini]
offering = "openai/gpt-4o-mini"
input_usd_per_mtok = { dist = "uniform", low = 0.12, high = 0.2 }
discount = { dist = "uniform", low = 0.0, high = 0.1 }
request_fees = [{ name = "gw", usd_per_million_requests = FEE }]
[api.big]
offering = "openai/gpt-4o"
fine_tune = "ft"
[cloud.od]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = { dist = "uniform", low = 2.0, high = 4.0 }
gpus_per_instance = 1
billing = "scale-to-zero"
[cloud.rsv]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = { dist = "uniform", low = 1.2, high = 2.0 }
gpus_per_instance = 1
plan = "reserved-1y"
capacity_requests_per_s = { dist = "uniform", low = 20, high = 40 }
[onprem.dgx]
model = "llama-3.1-8b"
server = "dgx-h100"
electricity_usd_per_kwh = { dist = "uniform", low = 0.08, high = 0.2 }
server_price_usd = { dist = "uniform", low = 250000, high = 350000 }
[finetune.ft]
method = "api"
base_model = "openai/gpt-4o-2024-08-06"
training_tokens = { dist = "uniform", low = 1e6, high = 3e6 }
epochs = 2
qualifies_for = ["chat"]
[cascade.casc]
small = "mini"
large = "big"
escalation_share = 0.2
[planning]
utilisation_target = 0.8
peak_to_average = 1.5
"""


def scenario(text: str, fee: str = "2.0"):
    return parse_scenario(tomllib.loads(text.replace("FEE", fee)), catalog=CAT)


def _close(a, b, rtol):
    np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=rtol, atol=0.0)


def test_stochastic_coefficients_equal_the_deterministic_problem_of_each_sample():
    sc = scenario(SCEN)
    opts = OptimizeOptions.from_scenario(sc)
    n = 6
    values, drawn, _, model = sample_inputs(sc, n, 7, CAT)
    assert "workload.chat.input.tokens" in values and "cloud.od.usd_per_gpu_hour" in values
    pb = build_problem(sc, CAT, opts, values=values, model=model)
    assert pb.n_scenarios == n
    # the oracle: one pydantic scenario per sample, the deterministic problem of each
    scens, drawn2, _ = sample_scenarios(sc, n, 7, CAT)
    assert drawn.equals(drawn2)  # same seed, same draws
    grid_classes = {"chat"}  # uncertain lengths: capacity from the grid
    for i in (0, 2, 5):
        one = build_problem(scens[i], CAT, opts)
        got = pb.take(i)
        _close(got.demand, one.demand, 1e-9)
        assert got.excluded == one.excluded
        assert set(got.options) == set(one.options)
        for name, o in one.options.items():
            g = got.options[name]
            assert set(g.classes) == set(o.classes), name
            for attr in ("block_usd_per_hour", "block_usd_per_month", "fixed_usd_per_month",
                         "peak_factor"):
                _close(getattr(g, attr), getattr(o, attr), 1e-9)
            assert (g.lb_blocks, g.cap_blocks, g.kw_per_block) == pytest.approx(
                (o.lb_blocks, o.cap_blocks, o.kw_per_block), rel=1e-9)
            for c, k in o.classes.items():
                kg = g.classes[c]
                for attr in ("tokens_per_request", "input_tokens", "output_tokens",
                             "prefix_cache_hit_share"):
                    if getattr(k, attr) is not None:
                        _close(getattr(kg, attr), getattr(k, attr), 1e-9)
                grid = o.selfhosted and c in grid_classes and \
                    not model.by_name[name].capacity[c][0] == "key"
                rtol = 0.01 if grid else 1e-9
                _close(kg.capacity_rps, k.capacity_rps, rtol)
                # API bills and fees exact; on-prem energy per request follows the capacity
                _close(kg.usd_per_request, k.usd_per_request,
                       rtol if o.kind == "onprem" else 1e-9)
                assert kg.quality == k.quality or (np.isnan(kg.quality) and np.isnan(k.quality))
        for f, usd in one.finetune_usd.items():
            _close(got.finetune_usd[f], usd, 1e-9)
        assert [r.name for r in got.routes] == [r.name for r in one.routes]
        for rg, ro in zip(got.routes, one.routes, strict=True):
            assert rg.classes == ro.classes
            for (lg, mg), (lo, mo) in zip(rg.legs, ro.legs, strict=True):
                assert lg == lo
                _close(mg, mo, 1e-9)
    # the grid really is used, and its capacity stays within its stated 1%
    assert model.by_name["od"].capacity["chat"][0] == "grid"


def test_sampled_request_fees_priced_per_scenario():
    """Uncertain request fees (a tuple entry, which scenario_at cannot materialise) are priced
    per scenario from the model: API USD per request moves by the fee's change / 1e6."""
    sc = scenario(SCEN, fee='{ dist = "uniform", low = 1, high = 3 }')
    values, _, _, model = sample_inputs(sc, 5, 1, CAT)
    key = "api.mini.request_fees.0.usd_per_million_requests"
    assert key in values
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc), values=values, model=model)
    fixed = dict(values)
    fixed[key] = np.full(5, 2.0)
    ref = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc), values=fixed, model=model)
    for c, k in pb.options["mini"].classes.items():
        _close(k.usd_per_request - ref.options["mini"].classes[c].usd_per_request,
               (values[key] - 2.0) / 1e6, 1e-6)


def test_deterministic_problem_is_the_model_at_its_medians():
    """S = 1 without values: the same code, the model at the medians."""
    sc = scenario(SCEN)
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc))
    assert pb.n_scenarios == 1 and pb.integer_hourly
    det = evaluate(sc)
    cap = det.capacity.set_index(["deployment", "class"])["requests_per_s_per_replica"]
    for name in ("od", "dgx"):
        for c, k in pb.options[name].classes.items():
            assert float(k.capacity_rps[0]) == pytest.approx(cap[(name, c)], rel=1e-12)


def test_stochastic_optimum_reproducible_with_one_model():
    sc = scenario(SCEN)
    # no wall-clock limit: under load a limit cuts the re-solves short at different points
    a = optimize(sc, stochastic=True, n_scenarios=8, seed=2, gap=1e-3, time_limit_s=math.inf)
    b = optimize(sc, stochastic=True, n_scenarios=8, seed=2, gap=1e-3, time_limit_s=math.inf)
    assert a.check.passed and b.check.passed
    assert a.status == b.status == "optimal"
    assert a.objective_usd_per_month == pytest.approx(b.objective_usd_per_month, rel=1e-12)


def _same_plan(a, b) -> None:
    assert a.status == b.status
    assert a.objective_usd_per_month == b.objective_usd_per_month
    np.testing.assert_array_equal(a.solution.blocks, b.solution.blocks)
    np.testing.assert_array_equal(a.solution.used, b.solution.used)
    np.testing.assert_array_equal(a.solution.flows, b.solution.flows)


def test_stochastic_plan_does_not_depend_on_machine_load():
    """Same inputs, same plan: every step is bounded by work (nodes, the gap, first stages
    tried), not by a share of the wall-clock limit, which is only a safety net. At default
    settings, with a busy process competing for the CPU or not, and with no wall-clock
    limit at all, the plan (first stage and every scenario's whole re-solve) is the same."""
    sc = scenario(SCEN)
    kw = {"stochastic": True, "n_scenarios": 8, "seed": 2, "gap": 1e-3}
    quiet = optimize(sc, **kw)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        loaded = optimize(sc, **kw)
    finally:
        busy.kill()
        busy.wait()
    unlimited = optimize(sc, time_limit_s=math.inf, **kw)
    assert quiet.status == "optimal" and quiet.check.passed
    assert any(m.startswith("whole replicas:") and "re-solved" in m for m in quiet.messages)
    _same_plan(quiet, loaded)
    _same_plan(quiet, unlimited)


@pytest.mark.parametrize("slowdown", [50.0])
def test_stochastic_plan_does_not_depend_on_a_slower_machine(monkeypatch, slowdown):
    """A machine ``slowdown`` times slower, as HiGHS sees it: every wall-clock limit handed
    to HiGHS is divided by ``slowdown`` (the same work must fit in less time). Steps bounded
    by work do not notice; steps given a slice of seconds (a quarter-second attempt, a share
    of the limit per scenario) are cut at a different point and keep another plan (before
    the work bounds, 50 made 15 of the 576 hourly counts differ)."""
    import planner.engines.optimize_milp as om
    import planner.engines.optimize_stochastic as ost

    sc = scenario(SCEN)
    kw = {"stochastic": True, "n_scenarios": 8, "seed": 2, "gap": 1e-3}
    ref = optimize(sc, time_limit_s=math.inf, **kw)

    def slow(real):
        def milp_(*a, options=None, **k):
            options = dict(options or {})
            if "time_limit" in options:
                options["time_limit"] = options["time_limit"] / slowdown
            return real(*a, options=options, **k)
        return milp_

    monkeypatch.setattr(om, "milp", slow(om.milp))
    monkeypatch.setattr(ost, "milp", slow(ost.milp))
    slowed = optimize(sc, **kw)
    assert slowed.status == "optimal"
    _same_plan(slowed, ref)


def test_a_wall_clock_limit_that_bites_is_reported_as_such():
    sc = scenario(SCEN)
    m = build_milp(build_problem(sc, CAT, OptimizeOptions.from_scenario(sc)))
    full = solve_milp(m, gap=0.0, time_limit_s=math.inf)
    assert full.status == "optimal"
    cut = solve_milp(m, gap=0.0, time_limit_s=full.time_s / 1e3)
    assert cut.status in ("time_limit", "time_limit_no_solution")
    if cut.x is not None:
        assert cut.objective >= full.objective - 1e-9 * abs(full.objective)


PEAK = """
[scenario]
name = "peak-per-option"
[workload.live]
requests_per_day = 8000000
diurnal = "consumer"
input = 800
output = 150
slo = {{ ttft_s = 2.0, tpot_s = 0.1 }}
[workload.bulk]
requests_per_day = 40000000
diurnal = "flat"
input = 400
output = 20
slo = {{ ttft_s = 5.0, tpot_s = 0.2 }}
[cloud.live-pool]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = 2.5
gpus_per_instance = 1
classes = ["live"]
[cloud.bulk-pool]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = 2.5
gpus_per_instance = 1
classes = ["bulk"]
[planning]
utilisation_target = 0.8
{p2a}
"""


@pytest.mark.parametrize("p2a", [None, 2.0])
def test_peak_to_average_applies_per_option_as_the_model_does(p2a):
    """A pool serving only a flat class is sized at peak_to_average x its mean (the model's
    rule, per option), even when another class is peaked; the peaked pool is sized by its
    busiest hour. (Before: the factor applied only when every class was flat, and the flat
    pool got 6 replicas where the cost engine sizes 12.)"""
    sc = scenario(PEAK.format(p2a="" if p2a is None else f"peak_to_average = {p2a}"))
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc))
    assert pb.peak_factor == 1.0  # not every class is flat
    assert float(pb.options["live-pool"].peak_factor[0]) == 1.0
    assert float(pb.options["bulk-pool"].peak_factor[0]) == (p2a or 1.0)
    res = optimize(sc, catalog=CAT, gap=0.0)
    assert res.status == "optimal" and res.check.passed
    det = evaluate(sc, CAT).summary.set_index("deployment")
    plan = res.plan.set_index("deployment")
    # each single-class pool (an always-on fleet) is sized as the cost engine sizes it
    for name in ("live-pool", "bulk-pool"):
        assert plan.loc[name, "replicas_peak"] == det.loc[name, "replicas"]
        assert plan.loc[name, "usd_per_month"] == pytest.approx(det.loc[name, "usd_per_month"],
                                                                rel=1e-9)


API_TTFT = """
[scenario]
name = "api-ttft"
[workload.fast]
requests_per_day = 100000
input = 500
output = 100
slo = { ttft_s = 0.5 }
[workload.slow]
requests_per_day = 100000
input = 500
output = 100
slo = { ttft_s = 5.0 }
[api.laggy]
offering = "openai/gpt-4o-mini"
"""


def test_api_slower_than_the_ttft_slo_serves_the_class_in_no_engine(tmp_path):
    """An API whose catalog TTFT exceeds a class's TTFT SLO does not serve that class: the
    model decides it (planner.model.structure.eligible), the cost engine shows the reason, the
    optimiser excludes it with the same reason."""
    import shutil

    from planner.catalog import load_catalog as load

    cat_dir = tmp_path / "cat"
    shutil.copytree(CAT.directory, cat_dir)
    path = cat_dir / "api_prices.csv"
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    j = rows[0].index("ttft_s")
    for r in rows[1:]:
        if r[0] == "openai/gpt-4o-mini":
            r[j] = "1.2"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    cat = load(cat_dir)
    assert cat.api("openai/gpt-4o-mini")["ttft_s"] == 1.2
    sc = parse_scenario(tomllib.loads(API_TTFT), catalog=cat)
    det = evaluate(sc, catalog=cat)
    row = det.summary.set_index("deployment").loc["laggy"]
    text = " ".join(str(v) for v in row.to_dict().values())
    assert "TTFT SLO 0.5 s cannot be met (the API's catalog TTFT is 1.2 s)" in text
    pb = build_problem(sc, cat, OptimizeOptions.from_scenario(sc))
    assert "slow" in pb.options["laggy"].classes and "fast" not in pb.options["laggy"].classes
    assert pb.excluded["fast"]["laggy"].startswith("TTFT SLO 0.5 s cannot be met")
