"""Optimiser studies: studies/hybrid-support-bot and studies/gpu-mix (issue 6).

The figures in the studies' READMEs come from these scenarios run through the optimiser; the
tests check the claims the READMEs make (structure of the plan, limits met, what drives the
savings), with the tolerances stated next to each assertion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from planner.catalog import load_catalog
from planner.config import load_scenario
from planner.engines.optimize import (
    OptimizeOptions,
    compare_subsets,
    optimize,
    optimize_problem,
)
from planner.engines.optimize_data import build_problem
from planner.engines.optimize_verify import verify_plan

ROOT = Path(__file__).resolve().parent.parent
HYBRID = ROOT / "studies" / "hybrid-support-bot" / "scenario.toml"
GPUMIX = ROOT / "studies" / "gpu-mix" / "scenario.toml"
CAT = load_catalog()


# ------------------------------------------------------------------------------------------
# hybrid support bot


@pytest.fixture(scope="module")
def hybrid():
    sc = load_scenario(HYBRID, catalog=CAT)
    return sc, optimize(sc, catalog=CAT)


def test_hybrid_plan_respects_every_limit(hybrid):
    sc, res = hybrid
    assert res.status == "optimal" and res.check.passed
    assert res.gap <= 0.01 + 1e-12 and res.lp_bound <= res.objective_usd_per_month
    plan = res.plan.set_index("deployment")
    # data residency: >= 15% of requests on-prem; no provider above 60%
    assert plan.loc[plan["kind"] == "onprem", "requests_share"].sum() >= 0.15 - 1e-9
    by_provider = plan.dropna(subset=["provider"]).groupby("provider")["requests_share"].sum()
    assert (by_provider <= 0.6 + 1e-9).all()
    # per-class average quality >= the class minimum, every hour
    for cname, qmin in {"chat": 84, "summarise": 75, "search": 80}.items():
        r = res.routing[res.routing["class"] == cname]
        assert (r["share"] * r["quality"]).sum() >= qmin - 1e-6
    # on-prem power: <= 30 kW at full load
    kw = sum(plan.loc[d, "blocks_fixed"] * res.problem.options[d].kw_per_block
             for d in plan.index if plan.loc[d, "kind"] == "onprem")
    assert kw <= 30 + 1e-9


def test_hybrid_answer_mixes_onprem_finetune_and_api(hybrid):
    sc, res = hybrid
    ft = res.finetune.set_index("finetune")
    assert bool(ft.loc["support-lora", "chosen"])  # the LoRA pays for itself many times over
    used = res.plan[res.plan["chosen"]]
    assert {"onprem", "api"} <= set(used["kind"])
    # chat mixes the fine-tuned 8B (82) with a stronger model to reach 84 on average
    chat = res.routing[res.routing["class"] == "chat"].set_index("route")["share"]
    assert chat.get("llama8-ft-hgx", 0) > 0.5 and len(chat) >= 2
    # without the fine-tuned model the best plan costs more (by more than the 1% gap)
    no_ft = optimize(sc, catalog=CAT, options=OptimizeOptions.from_scenario(
        sc, exclude=("llama8-ft-h100", "llama8-ft-hgx")))
    assert no_ft.status == "optimal"
    assert no_ft.objective_usd_per_month > res.objective_usd_per_month * 1.01


def test_hybrid_variants_move_the_decision():
    base = optimize(load_scenario(HYBRID, catalog=CAT), catalog=CAT)
    no_ds = optimize(load_scenario(HYBRID, catalog=CAT, variants=["no-deepseek"]), catalog=CAT)
    free = optimize(load_scenario(HYBRID, catalog=CAT, variants=["no-residency"]), catalog=CAT)
    # without DeepSeek the cascade (fine-tuned 8B, 10-25% escalated to GPT-4o) carries chat
    assert "ft-then-4o" in set(no_ds.routing["route"])
    assert no_ds.objective_usd_per_month > base.objective_usd_per_month
    # dropping the residency floor can only make the plan cheaper (1% MIP gap tolerance)
    assert free.objective_usd_per_month <= base.objective_usd_per_month * 1.01


def test_hybrid_stochastic_cost_range_and_vss():
    sc = load_scenario(HYBRID, catalog=CAT)
    # a generous time limit: the answer is checked, not the speed (a loaded CI machine took
    # 18 s of the default 30)
    res = optimize(sc, catalog=CAT, stochastic=True, n_scenarios=30, seed=1, time_limit_s=180)
    assert res.status == "optimal" and res.check.passed
    st = res.stochastic.set_index("metric")["value"]
    assert st["p5_usd_per_month"] < st["p50_usd_per_month"] < st["p95_usd_per_month"]
    assert st["RP_objective"] <= st["EEV_objective"] * (1 + 0.011)  # within the 1% gap
    # the first stage is one plan for every scenario
    fixed = res.hourly[res.hourly["deployment"] == "llama8-ft-hgx"]["blocks"]
    assert fixed.nunique() == 1


def test_hybrid_plan_meets_its_slo_in_simulation(hybrid):
    sc, res = hybrid
    vr = verify_plan(res.problem, res.solution, CAT, window_s=150, warmup_s=30)
    assert vr.passed
    assert (vr.table["slo_attainment"] >= vr.table["target"]).all()
    assert (vr.table["spillover_share"] <= 0.01).all()


# ------------------------------------------------------------------------------------------
# GPU mix


def test_gpumix_mix_never_costs_more_than_the_best_single_type():
    for variant in ([], ["tight-slo"], ["high-rate"], ["short-only"], ["long-only"]):
        sc = load_scenario(GPUMIX, catalog=CAT, variants=variant)
        df = compare_subsets(sc, catalog=CAT, gap=0.0)
        solved = df["status"] == "optimal"
        assert solved.iloc[0]
        assert df.loc[solved, "check_passed"].all()
        # a subset the SLO rules out is reported infeasible, never given a cost
        assert df.loc[~solved, "usd_per_month"].isna().all()
        single = df.iloc[1:]
        best = single.loc[single["status"] == "optimal", "usd_per_month"].min()
        assert df.iloc[0]["usd_per_month"] <= best * (1 + 1e-7)


def test_gpumix_saving_comes_from_granularity_not_request_size():
    """At these prices the H100-SXM has the lowest cost per request for short AND long
    requests (perf model at the TPOT SLO), so with fractional replicas (the LP relaxation) the
    mix is no cheaper than H100-SXM alone; the integer plan's saving over the best single type
    comes from covering the hours between whole H100s with cheap A10Gs."""
    sc = load_scenario(GPUMIX, catalog=CAT)
    pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc))
    per_req = {d: {c: float(o.block_usd_per_hour[0] / (3600 * k.capacity_rps[0]))
                   for c, k in o.classes.items()} for d, o in pb.options.items()}
    best = {c: min(per_req, key=lambda d: per_req[d].get(c, np.inf)) for c in ("short", "long")}
    assert best["short"] == best["long"] == "h100-sxm"
    mix = optimize_problem(pb, gap=0.0)
    only = optimize_problem(build_problem(sc, CAT, OptimizeOptions(
        exclude=("a10g", "a100", "h100-pcie"))), gap=0.0)
    assert mix.lp_bound == pytest.approx(only.lp_bound, rel=1e-9)
    a10g = optimize_problem(build_problem(sc, CAT, OptimizeOptions(
        exclude=("h100-sxm", "a100", "h100-pcie"))), gap=0.0)
    best_single = min(only.objective_usd_per_month, a10g.objective_usd_per_month)
    saving = 1 - mix.objective_usd_per_month / best_single
    assert 0.10 < saving < 0.25  # README: 18.6% at the base rate
    used = set(mix.plan.loc[mix.plan["chosen"], "deployment"])
    assert used == {"a10g", "h100-sxm"}


def test_gpumix_tight_slo_shrinks_the_small_gpu_not_the_large_one():
    """At TPOT 40 ms the A10G decodes one long request at ~40 ms per token, so it can take
    almost no concurrent requests: its long-request capacity falls by more than 4x, while the
    H100-SXM (a decode step well under 40 ms at its batch) keeps its capacity (within 6%:
    the swing of its decode batch, ``planner.perf.openloop._batch_swing``, about the batch a
    request meets, itself counted (``_clump_batch``), puts a few requests over 40 ms; measured
    5.7%, 4.0% with the batch centred on the time average, 2.5% with the KV cache sized on the
    data sheet's 80e9 bytes instead of the 85.5e9 the H100 reports)."""
    caps = {}
    for v in ((), ("tight-slo",)):
        sc = load_scenario(GPUMIX, catalog=CAT, variants=list(v))
        pb = build_problem(sc, CAT, OptimizeOptions.from_scenario(sc))
        caps[v] = {d: {c: float(k.capacity_rps[0]) for c, k in o.classes.items()}
                   for d, o in pb.options.items()}
    loose, tight = caps[()], caps[("tight-slo",)]
    assert tight["a10g"]["long"] < loose["a10g"]["long"] / 4
    assert tight["a10g"]["short"] < loose["a10g"]["short"] / 2
    assert tight["h100-sxm"]["long"] == pytest.approx(loose["h100-sxm"]["long"], rel=0.06)
