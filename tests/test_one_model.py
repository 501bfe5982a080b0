"""One model under every engine (property tests over generated scenarios).

* the deterministic engine equals the Monte Carlo engine with every input fixed (costs,
  tokens, requests, replicas, servers), and a fleet that cannot carry its load is flagged by
  both (not serving / ``inf``);
* the deterministic engine, the Monte Carlo engine and the simulator's sizing
  (:func:`planner.model.sizing.size_options`) report the same replicas for the same option;
* a fixed fleet or a ``max_*`` limit bounds every engine, and an undersized one is never
  named cheapest.

Every expected figure comes from the engines, none is typed in.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.catalog import load_catalog
from planner.config import parse_scenario
from planner.engines.deterministic import evaluate
from planner.engines.risk.compiled import compile_scenario
from planner.model.sizing import size_options

CAT = load_catalog()

_profiles = st.sampled_from(["flat", "business", "consumer", "global"])
_klass = st.fixed_dictionaries({
    "requests_per_day": st.floats(1.0, 5e6),
    "diurnal": _profiles,
    "input": st.fixed_dictionaries({"tokens": st.integers(10, 3000)}),
    "output": st.fixed_dictionaries({"tokens": st.integers(5, 800)}),
    "context": st.fixed_dictionaries({"tokens": st.integers(0, 2000)}),
    "cached_share": st.floats(0.0, 1.0),
    "prefix_cache_hit_share": st.floats(0.0, 0.95),
    "batch_share": st.floats(0.0, 1.0),
    "response_cache_hit_share": st.floats(0.0, 0.9),
    "retry_share": st.floats(0.0, 0.2),
    "slo": st.one_of(st.just({}), st.fixed_dictionaries({
        "ttft_s": st.floats(0.5, 10.0), "tpot_s": st.floats(0.05, 0.5)})),
})

_cloud = st.fixed_dictionaries({
    "model": st.sampled_from(["llama-3.1-8b", "qwen2.5-7b", "llama-3.1-70b"]),
    "accelerator": st.just("h100-sxm"),
    "precision": st.sampled_from(["fp8", "bf16"]),
    "billing": st.sampled_from(["always-on", "active-window", "scale-to-zero"]),
    "usd_per_gpu_hour": st.floats(0.5, 8.0),
    "gpus_per_instance": st.sampled_from([1, 2, 8]),
}, optional={"max_replicas": st.integers(1, 40), "replicas": st.integers(1, 20)})

_onprem = st.fixed_dictionaries({
    "model": st.sampled_from(["llama-3.1-8b", "llama-3.1-70b"]),
    "server": st.just("hgx-h100"),
    "precision": st.sampled_from(["fp8", "bf16"]),
    "electricity_usd_per_kwh": st.floats(0.02, 0.4),
    "ops_usd_per_year": st.floats(0.0, 2e5),
}, optional={"servers": st.integers(1, 6), "max_servers": st.integers(1, 6)})


@st.composite
def scenarios(draw):
    classes = draw(st.dictionaries(st.sampled_from(["chat", "rag", "batch"]), _klass,
                                   min_size=1, max_size=2))
    cloud = draw(_cloud)
    onprem = draw(_onprem)
    for dep in (cloud, onprem):
        dep["gpus_per_replica"] = 2 if dep["model"] == "llama-3.1-70b" else 1
    if cloud["billing"] == "active-window":
        cloud["active_hours_per_day"] = draw(st.floats(1.0, 24.0))
    data = {
        "scenario": {"name": "generated", "horizon_months": draw(st.integers(1, 60))},
        "planning": {"utilisation_target": draw(st.floats(0.3, 1.0)),
                     "ha_reserve_replicas": draw(st.integers(0, 2)),
                     "peak_to_average": draw(st.one_of(st.none(), st.floats(1.0, 4.0)))},
        "workload": classes,
        "api": {"mini": {"offering": "openai/gpt-4o-mini"}},
        "cloud": {"gpu": cloud},
        "onprem": {"own": onprem},
    }
    return parse_scenario(data, catalog=CAT)


def _fits(sc) -> bool:
    try:
        evaluate(sc, CAT)
    except Exception:  # a generated model/length pair that does not fit: not this test's job
        return False
    return True


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(scenarios())
def test_engines_agree_on_cost_and_replicas(sc):
    if not _fits(sc):
        return
    det = evaluate(sc, CAT).summary.set_index("deployment")
    mc = compile_scenario(sc, catalog=CAT)
    got = mc.evaluate({}, 3, parts=True)
    sizing = size_options(sc, CAT)
    for dep in det.index:
        row, g = det.loc[dep], got[dep]
        undersized = "fleet too small" in str(row["classes_unserved"])
        if undersized:
            assert np.isinf(g["monthly"]).all()
        else:
            np.testing.assert_allclose(g["monthly"], row["usd_per_month"], rtol=1e-12)
        assert row["usd_per_month"] >= 0
        np.testing.assert_allclose(g["tokens"], row["tokens_per_month"], rtol=1e-12)
        np.testing.assert_allclose(g["rpm"], row["llm_requests_per_month"], rtol=1e-12)
        np.testing.assert_allclose(g["user_rpm"], row["requests_per_month"], rtol=1e-12)
        if row["kind"] == "api":
            continue
        # the same replicas and fleet from every engine
        np.testing.assert_array_equal(g["replicas"], row["replicas"])
        np.testing.assert_array_equal(g["units"], row["units"])
        s = sizing[dep]
        if row["classes_served"] or undersized:
            assert s.replicas == row["replicas"]
        assert set(s.classes_served) == set(filter(None, str(row["classes_served"]).split(",")))
        # a fixed fleet or a limit bounds the sizing
        d = sc.cloud.get(dep) or sc.onprem.get(dep)
        if d.replicas is not None:
            assert row["replicas"] == d.replicas
        if getattr(d, "max_replicas", None) is not None and d.replicas is None:
            assert row["replicas"] <= d.max_replicas
        if row["kind"] == "onprem":
            for cap in (d.servers, d.max_servers):
                if cap is not None and d.servers is None:
                    assert row["units"] <= cap
            if d.servers is not None:
                assert row["units"] == d.servers


def test_undersized_fixed_fleet_is_not_serving_and_never_cheapest():
    """2 servers (16 GPUs) for a load that needs far more: shown as not serving, with the
    shortfall, not ranked cheapest; Monte Carlo prices it as infeasible."""
    data = {
        "scenario": {"name": "undersized"},
        "workload": {"chat": {"requests_per_day": 3e6, "input": {"tokens": 2300},
                              "output": {"tokens": 200}, "diurnal": "business",
                              "slo": {"ttft_s": 1.5, "tpot_s": 0.06}}},
        "api": {"mini": {"offering": "openai/gpt-4o-mini"}},
        "onprem": {"two": {"model": "llama-3.1-70b", "server": "hgx-h100",
                           "gpus_per_replica": 2, "precision": "fp8", "servers": 2}},
    }
    sc = parse_scenario(data, catalog=CAT)
    res = evaluate(sc, CAT)
    s = res.summary.set_index("deployment")
    assert s.loc["two", "classes_served"] == ""
    assert "fleet too small" in s.loc["two", "classes_unserved"]
    assert s.loc["two", "units"] == 2
    assert any("two" in w for w in res.warnings)
    full = s[s["classes_unserved"] == ""]
    assert "two" not in full.index
    mc = compile_scenario(sc, catalog=CAT)
    assert np.isinf(mc.evaluate({}, 2)["two"]["monthly"]).all()
    # a limit (max_servers) bounds the sizing the same way
    data["onprem"]["two"] = {**data["onprem"]["two"], "servers": None, "max_servers": 2}
    data["onprem"]["two"].pop("servers")
    s2 = evaluate(parse_scenario(data, catalog=CAT), CAT).summary.set_index("deployment")
    assert s2.loc["two", "units"] == 2
    assert "fleet too small" in s2.loc["two", "classes_unserved"]


@pytest.mark.parametrize("hit", [0.0, 0.87])
def test_prefix_cache_is_one_figure_for_cost_and_simulation(hit):
    """The customer-service case: the capacity the cost engine sizes with and the share the
    simulator's pools and requests use are the same prefix-cache hit share."""
    from planner.sim.scenario import prefix_cache_shares, scenario_requests

    data = {
        "scenario": {"name": "cs"},
        "workload": {"cs": {"requests_per_day": 3e6, "input": {"tokens": 300},
                            "context": {"tokens": 2000}, "output": {"tokens": 200},
                            "cached_share": 0.5, "prefix_cache_hit_share": hit,
                            "diurnal": "business", "slo": {"ttft_s": 1.5, "tpot_s": 0.06}}},
        "cloud": {"q72": {"model": "qwen2.5-72b", "accelerator": "h100-sxm",
                          "gpus_per_replica": 2, "precision": "fp8"}},
    }
    sc = parse_scenario(data, catalog=CAT)
    res = evaluate(sc, CAT)
    cap = res.capacity.set_index("class")
    assert cap.loc["cs", "prefix_cache_hit_share"] == hit
    sizing = size_options(sc, CAT)["q72"]
    assert sizing.prefix_cache_hit_share["cs"] == hit
    assert sizing.replicas == res.summary.set_index("deployment").loc["q72", "replicas"]
    shares = prefix_cache_shares(sc, {"q72": sizing}, ["q72"])
    assert shares["cs"] == hit
    reqs = scenario_requests(sc, hours=1, rng=np.random.default_rng(0), catalog=CAT,
                             tokenizer=None, prefix_cache_hit_share=shares)
    np.testing.assert_array_equal(reqs.cached_input_tokens,
                                  np.rint(hit * reqs.input_tokens).astype(np.int64))
