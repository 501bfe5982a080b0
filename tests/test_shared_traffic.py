"""One traffic model for the sizing, ``planner simulate`` and ``planner optimize --verify``
(issue 11): the fixed-context share of a class's prompt and the latency of a hosted API.

- The share of a prompt that varies per request (the input; the fixed context does not) is
  one pure function, :func:`planner.model.capacity.variable_prompt_share`. The open-loop
  capacity (:func:`planner.model.capacity.class_traffic` via the model), the verification
  (:func:`planner.engines.optimize_verify.scenario_traffic`) and the simulator's request
  streams (:func:`planner.sim.scenario.scenario_streams`) must give the same per-class lengths
  and shares, per deployment (the tokenizer can change the split), on every bundled study and
  template.
- An API's latency is :func:`planner.model.structure.api_latency` (``[simulation]`` figures,
  else the catalog's, else the defaults), for ``planner simulate``'s spillover API, for the API
  traffic ``optimize --verify`` replays and for the cost model's SLO check (tests/test_api_slo.py).
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from planner.api import scenario_path
from planner.catalog import load_catalog
from planner.config import load_scenario, parse_scenario
from planner.engines.optimize_verify import (
    plan_api_latency,
    scenario_traffic,
    verify_plan,
    verify_streams,
)
from planner.model.capacity import variable_prompt_share
from planner.model.evaluate import Model
from planner.model.structure import (
    DEFAULT_API_OUTPUT_TOKENS_PER_S,
    DEFAULT_API_TTFT_S,
    api_latency,
)
from planner.sim.scenario import build_plan, scenario_streams

ROOT = Path(__file__).resolve().parent.parent
CAT = load_catalog()
STUDIES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "studies").rglob("*.toml"))
TEMPLATES = sorted(f"example:{p.stem}" for p in (ROOT / "planner" / "templates").glob("*.toml"))


@functools.cache
def _scenario(name: str):
    return load_scenario(scenario_path(name) if name.startswith("example:")
                         else str(ROOT / name), catalog=CAT)


def _model_split(m: Model, o, cname: str) -> tuple[float, float]:
    """(input tokens, prompt tokens) of a class as the model sizes option ``o`` for it."""
    ctx = m.ctx()
    wc = m.sc.workload[cname]
    inp = float(m.length(ctx, wc.input, f"workload.{cname}.input", o.tokenizer))
    prompt = float(m.klass(ctx, cname, o.tokenizer)[1])
    return inp, prompt


def _check_paths(sc) -> int:
    """Compare the three paths for every option and class the model serves; return how many
    (option, class) pairs had a fixed context and a length spread (the informative ones)."""
    m = Model(sc, CAT)
    tr = scenario_traffic(sc, CAT)
    cv = float(sc.simulation.length_cv)
    informative = 0
    for o in m.options:
        for cname in o.served:
            inp, prompt = _model_split(m, o, cname)
            fixed = tr["fixed_context_share"][f"{cname}@{o.name}"]
            assert fixed == pytest.approx(1.0 - variable_prompt_share(inp, prompt), abs=1e-12)
            # the verification's stream at the model's prompt: context and input as the model
            assert round(prompt * fixed) == round(prompt - inp), (o.name, cname)
            if o.kind == "api":
                continue
            if sc.planning.capacity == "open-loop" and m.sc.workload[cname].slo is not None:
                traffic = m._capacity_inputs(m.ctx(), o, cname)[5]
                assert traffic is not None
                assert traffic.cv_in == pytest.approx(cv * (1.0 - fixed), abs=1e-12)
            # what planner simulate generates in this deployment's tokenizer
            st = scenario_streams(sc, hours=1, catalog=CAT, tokenizer=o.tokenizer,
                                  classes=[cname])[0]
            assert st.fixed_context_tokens == round(prompt - inp)
            assert st.input.mean_tokens == pytest.approx(inp, rel=1e-12)
            informative += bool(cv > 0 and 0 < fixed < 1)
    return informative


#: the studies and templates with workload classes (the cost-formula studies have none, so
#: there is no traffic to compare)
WITH_WORKLOAD = [n for n in STUDIES + TEMPLATES if _scenario(n).workload]


def test_the_workload_scenarios_include_the_bundled_self_hosted_ones():
    assert {"studies/customer-service/scenario.toml", "example:quickstart"} <= set(WITH_WORKLOAD)


@pytest.mark.parametrize("name", WITH_WORKLOAD)
def test_fixed_context_share_is_the_models_on_every_study(name):
    _check_paths(_scenario(name))


def test_a_bundled_study_exercises_the_split():
    # customer-service: 300 question tokens + 2,000 fixed context, length CV 0.5: the spread
    # of the prompt is 0.5 x 300 / 2,300 in the capacity and in the verification
    assert _check_paths(_scenario("studies/customer-service/scenario.toml")) >= 1


_MIXED = """
[scenario]
name = "rag in two tokenizers"

[workload.rag]
requests_per_day = 200_000
input = { words = 300, lang = "en" }
context = { tokens = 2000 }
output = { tokens = 150 }
slo = { ttft_s = 3.0, tpot_s = 0.1 }

[cloud.qwen]
model = "qwen2.5-7b"
accelerator = "h100-sxm"
gpus_per_replica = 1
precision = "bf16"
plan = "on-demand"

[cloud.llama-cl100k]
model = "llama-3.1-8b"
tokenizer = "cl100k"
accelerator = "h100-sxm"
gpus_per_replica = 1
precision = "bf16"
plan = "on-demand"

[simulation]
length_cv = 0.5
"""


def test_the_split_follows_each_deployments_tokenizer():
    # the question is in words, the context in tokens: the fixed share depends on the
    # tokenizer (qwen2 1 token/word, cl100k 1.33), so it is kept per class@deployment
    sc = parse_scenario(tomllib.loads(_MIXED), catalog=CAT)
    _check_paths(sc)
    share = scenario_traffic(sc, CAT)["fixed_context_share"]
    assert share["rag@qwen"] != pytest.approx(share["rag@llama-cl100k"], rel=1e-3)
    # the verification's streams carry each option's own context and input
    from planner.engines.optimize import optimize

    res = optimize(sc, catalog=CAT)
    pb, plan = res.problem, res.solution
    m = Model(sc, CAT)
    h = int(np.argmax(pb.demand[0].sum(axis=0)))
    streams, _ = verify_streams(pb, plan, 0, h, length_cv=0.5, fixed_context_share=share)
    assert streams
    for st in streams:
        cname, opt = st.name.split("@")
        inp, prompt = _model_split(m, m.by_name[opt], cname)
        assert st.fixed_context_tokens == round(prompt - inp)
        assert st.input.mean_tokens == pytest.approx(prompt - round(prompt - inp), rel=1e-12)


# ------------------------------------------------------------------------------------------
# API latency: one builder for planner simulate and optimize --verify


def test_api_latency_precedence():
    row = CAT.api("openai/gpt-4o")
    assert np.isfinite(float(row["ttft_s"])) and np.isfinite(float(row["output_tokens_per_s"]))
    # the catalog's figures when the scenario gives none
    assert api_latency(row, SimpleNamespace(api_ttft_s=None, api_output_tokens_per_s=None)) == (
        float(row["ttft_s"]), float(row["output_tokens_per_s"]))
    # the scenario's own win, one by one
    assert api_latency(row, SimpleNamespace(api_ttft_s=2.5, api_output_tokens_per_s=None)) == (
        2.5, float(row["output_tokens_per_s"]))
    # a row without figures: the simulator's defaults
    blank = {k: (np.nan if k in ("ttft_s", "output_tokens_per_s") else v) for k, v in row.items()}
    assert api_latency(blank) == (DEFAULT_API_TTFT_S, DEFAULT_API_OUTPUT_TOKENS_PER_S)


_HYBRID = "studies/hybrid-support-bot/scenario.toml"


def _with_simulation(name: str, **sim) -> object:
    data = tomllib.loads(Path(ROOT / name).read_text())
    data.setdefault("simulation", {}).update(sim)
    return parse_scenario(data, path=str(ROOT / name), catalog=CAT)


def test_simulate_spillover_api_takes_the_catalog_latency():
    sc = _with_simulation(_HYBRID, spillover="gpt-4o")
    plan, _, _ = build_plan(sc, ["llama8-ft-hgx"], catalog=CAT)
    assert (plan.api.ttft_s, plan.api.output_tokens_per_s) == api_latency(
        CAT.api(sc.api["gpt-4o"].offering), sc.simulation)
    assert plan.api.ttft_s == float(CAT.api("openai/gpt-4o")["ttft_s"])
    sc2 = _with_simulation(_HYBRID, spillover="gpt-4o", api_ttft_s=1.25)
    plan2, _, _ = build_plan(sc2, ["llama8-ft-hgx"], catalog=CAT)
    assert plan2.api.ttft_s == 1.25


@functools.cache
def _hybrid_plan(**sim):
    from planner.engines.optimize import optimize

    sc = _with_simulation(_HYBRID, **sim)
    return sc, optimize(sc, catalog=CAT)


def test_verify_simulates_the_plans_apis_with_simulates_latency(monkeypatch):
    # hybrid-support-bot routes part of chat and summarise to gpt-4o-mini and deepseek while
    # its fleet serves the rest: the simulated API has the slowest of those two's latency,
    # each as planner simulate would take it
    import planner.sim as sim_pkg

    sc, res = _hybrid_plan()
    pb, plan = res.problem, res.solution
    kw = scenario_traffic(sc, CAT)
    assert set(kw["api_latency"]) == set(sc.api)
    for name, lat in kw["api_latency"].items():
        assert lat == api_latency(CAT.api(sc.api[name].offering), sc.simulation)
    seen = {}
    real = sim_pkg.simulate

    def spy(sp, reqs, **k):
        seen["api"] = sp.api
        return real(sp, reqs, **k)

    monkeypatch.setattr(sim_pkg, "simulate", spy)
    h = int(np.argmax(pb.demand[0].sum(axis=0)))
    vr = verify_plan(pb, plan, CAT, scenario=0, hour=h, window_s=90, warmup_s=15, **kw)
    streams, api_labels = verify_streams(pb, plan, 0, h, **{
        k: kw[k] for k in ("length_cv", "fixed_context_share")})
    assert api_labels and len(vr.table)
    ttft, tps, names = plan_api_latency(pb, plan, 0, h, CAT,
                                        {lab.split("@")[0] for lab in api_labels},
                                        kw["api_latency"])
    assert names and all(pb.options[d].kind == "api" for d in names)
    assert ttft == max(kw["api_latency"][d][0] for d in names)
    assert tps == min(kw["api_latency"][d][1] for d in names)
    assert (seen["api"].ttft_s, seen["api"].output_tokens_per_s) == (ttft, tps)


def test_a_slow_api_fails_the_verification_of_the_classes_it_serves():
    # the same plan with the APIs' TTFT set above the chat SLO (1.5 s) in [simulation]: the
    # chat requests the plan sends to the API now miss it, so chat's attainment falls below
    # its target; the fleet-only class (search) is untouched
    sc, res = _hybrid_plan()
    pb, plan = res.problem, res.solution
    h = int(np.argmax(pb.demand[0].sum(axis=0)))
    slow_sc = _with_simulation(_HYBRID, api_ttft_s=2.0)
    ok = verify_plan(pb, plan, CAT, scenario=0, hour=h, window_s=90, warmup_s=15,
                     **scenario_traffic(sc, CAT))
    slow = verify_plan(pb, plan, CAT, scenario=0, hour=h, window_s=90, warmup_s=15,
                       **scenario_traffic(slow_sc, CAT))
    a = ok.table.set_index("class")
    b = slow.table.set_index("class")
    assert a.loc["chat", "passed"] and not b.loc["chat", "passed"]
    assert b.loc["chat", "slo_attainment"] < a.loc["chat", "slo_attainment"]
    assert b.loc["search", "slo_attainment"] == a.loc["search", "slo_attainment"]
    # and it says why: the API's latency, not the GPU count
    said = [m for m in slow.messages if "the requests the API serves miss the SLO" in m]
    assert said and said[0].startswith("chat:") and "TTFT 2 s" in said[0]
    assert not any("the requests the API serves miss" in m for m in ok.messages)


def test_simulate_spillover_api_serves_the_classes_the_cost_model_lets_it():
    # the catalog's gpt-4o TTFT is over this class's 0.3 s TTFT SLO: the cost model does not
    # let gpt-4o serve it, and planner simulate's spillover API must not serve it either
    from planner.model.structure import api_classes

    ttft = float(CAT.api("openai/gpt-4o")["ttft_s"])
    sc = parse_scenario(tomllib.loads(f"""
[scenario]
name = "tight TTFT"
[workload.fast]
requests_per_day = 10000
input = {{ tokens = 200 }}
output = {{ tokens = 100 }}
slo = {{ ttft_s = {ttft * 0.5}, tpot_s = 0.05 }}
[workload.slow]
requests_per_day = 10000
input = {{ tokens = 200 }}
output = {{ tokens = 100 }}
slo = {{ ttft_s = {ttft * 4}, tpot_s = 0.05 }}
[api.gpt-4o]
offering = "openai/gpt-4o"
"""), catalog=CAT)
    o = Model(sc, CAT).by_name["gpt-4o"]
    assert o.served == ("slow",) and "fast" in o.unserved
    assert api_classes(sc, CAT, "gpt-4o") == o.served
