"""One model under the simulator: request volumes, prefix cache and pool sizing.

* ``planner simulate``'s request generator reproduces the workload model's hourly volumes
  (:func:`planner.workload.class_volumes` and :func:`planner.workload.hourly_rates`), checked
  on the rates it is given (property test) and on generated counts (statistical check);
* the prefix cache the simulator applies is ``prefix_cache_hit_share`` (never the API billing
  share ``cached_share``), for ``planner simulate`` and ``planner optimize --verify``;
* pools take their replicas and price from :func:`planner.model.sizing.size_options`.

Every expected figure is computed by the model's functions, none is typed in.
"""

from __future__ import annotations

import ast
import math
import tomllib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.catalog import load_catalog
from planner.config import med, parse_scenario
from planner.model.sizing import size_options
from planner.sim.requests_from_scenario import generate_class_requests
from planner.sim.scenario import (
    build_plan,
    prefix_cache_shares,
    scenario_requests,
    scenario_streams,
    simulate_scenario,
)
from planner.workload import (
    PROFILES,
    busiest_hour,
    class_load,
    class_volumes,
    diurnal_weights,
    hourly_rates,
)
from tests.conftest import ROOT

CAT = load_catalog()


def _scenario(classes: dict, extra: str = "") -> object:
    data = {
        "scenario": {"name": "requests"},
        "workload": classes,
        "cloud": {"gpu": {"model": "llama-3.1-8b", "accelerator": "h100-sxm",
                          "precision": "fp8", "usd_per_gpu_hour": 2.5}},
    }
    if extra:
        data.update(tomllib.loads(extra))
    return parse_scenario(data, catalog=CAT)


def _expected_rates(wc: dict, hours: int, start_hour: int) -> np.ndarray:
    """The model's expected requests per simulated hour of one class (workload functions)."""
    req, _, _ = class_volumes(wc["requests_per_day"], 0.0, 0.0,
                              response_cache_hit_share=wc["response_cache_hit_share"],
                              retry_share=wc["retry_share"])
    day = hourly_rates(req, diurnal_weights(wc["diurnal"]), wc["batch_share"])
    return day[(start_hour + np.arange(hours)) % day.size]


# ---------------------------------------------------------------------- hourly volumes
_share = st.floats(0.0, 1.0, allow_nan=False)
_profile = st.one_of(
    st.sampled_from(sorted(PROFILES)),
    st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=24, max_size=24).filter(
        lambda w: sum(w) > 1e-3),
)
_class = st.fixed_dictionaries({
    "requests_per_day": st.floats(0.0, 1e8, allow_nan=False),
    "diurnal": _profile,
    "batch_share": _share,
    "response_cache_hit_share": st.floats(0.0, 0.99, allow_nan=False),
    "retry_share": st.floats(0.0, 1.0, allow_nan=False),
    "input": st.integers(1, 20_000),
    "output": st.integers(1, 4_000),
})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(classes=st.lists(_class, min_size=1, max_size=3), start_hour=st.integers(0, 23),
       hours=st.integers(1, 48))
def test_generator_rates_are_the_models_hourly_volumes(classes, start_hour, hours):
    named = {f"c{i}": wc for i, wc in enumerate(classes)}
    sc = _scenario({k: dict(v) for k, v in named.items()})
    streams = scenario_streams(sc, hours=hours, catalog=CAT, start_hour=start_hour)
    assert [s.name for s in streams] == list(named)
    for s in streams:
        wc = named[s.name]
        want = _expected_rates(wc, hours, start_hour)
        np.testing.assert_allclose(s.rates_per_hour, want, rtol=1e-9, atol=1e-9)
        # a whole day of the profile carries the day's LLM requests
        day = _expected_rates(wc, 24, 0)
        req = class_volumes(wc["requests_per_day"], 0.0, 0.0,
                            response_cache_hit_share=wc["response_cache_hit_share"],
                            retry_share=wc["retry_share"])[0]
        assert day.sum() == pytest.approx(req, rel=1e-9, abs=1e-9)
        # fixed lengths are used as they are; no prefix cache unless the workload has one
        rng = np.random.default_rng(0)
        assert (s.input.sample(rng, 3) + s.fixed_context_tokens == wc["input"]).all()
        assert (s.output.sample(rng, 3) == wc["output"]).all()
        assert s.prefix_cache_hit_share == 0.0


# 5 sigma of a Poisson count per hour: a false alarm has probability ~6e-7 per hour checked
SIGMAS = 5.0


@pytest.mark.parametrize(("wc", "seed"), [
    ({"requests_per_day": 480_000, "diurnal": "business", "batch_share": 0.3,
      "response_cache_hit_share": 0.2, "retry_share": 0.05, "input": 500, "output": 50}, 1),
    ({"requests_per_day": 300_000, "diurnal": [float(1 + (h % 5)) for h in range(24)],
      "batch_share": 0.0, "response_cache_hit_share": 0.0, "retry_share": 0.5,
      "input": 100, "output": 10}, 2),
    ({"requests_per_day": 200_000, "diurnal": "consumer", "batch_share": 1.0,
      "response_cache_hit_share": 0.5, "retry_share": 0.0, "input": 10, "output": 1}, 3),
])
def test_generated_counts_follow_the_models_hourly_volumes(wc, seed):
    sc = _scenario({"x": dict(wc)})
    start = 5
    (stream,) = scenario_streams(sc, hours=24, catalog=CAT, start_hour=start)
    reqs = generate_class_requests([stream], 24, np.random.default_rng(seed))
    counts = np.bincount((reqs.arrival_s // 3600).astype(int), minlength=24)
    want = _expected_rates(wc, 24, start)
    assert np.all(np.abs(counts - want) <= SIGMAS * np.sqrt(want))


def test_one_hourly_volume_under_every_engine():
    """workload.hourly_rates is the one model's hourly load (replica-equivalents x capacity x
    3600) and the optimiser's demand."""
    from planner.engines.optimize_data import _hourly
    from planner.model.evaluate import Model

    sc = _scenario({"a": {"requests_per_day": 86_400, "diurnal": "business",
                          "batch_share": 0.4, "input": 100, "output": 10}})
    cl = class_load(sc, "a", sc.workload["a"], None, CAT)
    for periods in (24, 168):
        np.testing.assert_allclose(cl.hourly_rates(periods), _hourly(cl, periods) * 3600,
                                   rtol=1e-12)
    m = Model(sc, CAT)
    o = m.options[0]
    coefs, const, weights, _, _ = m.load(m.ctx(), o)
    rps = float(m.rps(m.ctx(), o, "a"))
    model_load = (const + coefs[0] * weights[0]) * rps * 3600.0
    np.testing.assert_allclose(model_load, cl.hourly_rates(o.periods), rtol=1e-12)


def test_busiest_hour_is_the_highest_load_first_on_ties():
    assert busiest_hour([1.0, 3.0, 2.0, 3.0]) == (1,)
    load = np.zeros((2, 3, 24))
    load[1, 2, 7] = 5.0
    assert busiest_hour(load) == (1, 2, 7)
    # batch-eligible requests spread evenly move the busiest hour off the interactive peak
    w = diurnal_weights("business")
    assert busiest_hour(hourly_rates(100.0, w, 0.0)) == (int(np.argmax(w)),)


# ---------------------------------------------------------------------- prefix cache
CACHED = """
[scenario]
name = "prefix cache"
[workload.chat]
requests_per_day = 2400
input = 1001
context = 300
output = 20
cached_share = 0.5
prefix_cache_hit_share = {share}
slo = {{ ttft_s = 2.0, tpot_s = 0.1 }}
[cloud.gpu]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
precision = "fp8"
usd_per_gpu_hour = 2.5
[simulation]
hours = 1
"""


def _cached(share: float):
    return parse_scenario(tomllib.loads(CACHED.format(share=share)), catalog=CAT)


@pytest.mark.parametrize("share", [0.5, 0.0])
def test_simulate_requests_carry_the_prefix_cache_not_the_billing_share(share):
    sc = _cached(share)
    (run,) = simulate_scenario(sc, catalog=CAT)
    reqs = run.requests
    assert len(reqs) > 0
    want = np.rint(share * reqs.input_tokens).astype(np.int64)
    np.testing.assert_array_equal(reqs.cached_input_tokens, want)
    if share == 0.0:
        assert (reqs.cached_input_tokens == 0).all()
    # the generator on its own, and the notes say which share applies
    alone = scenario_requests(sc, hours=1, rng=np.random.default_rng(0), catalog=CAT)
    np.testing.assert_array_equal(alone.cached_input_tokens,
                                  np.rint(share * alone.input_tokens).astype(np.int64))
    assert any("prefix_cache_hit_share" in n and "billing" in n for n in run.notes)


def _verify_requests(sc, **kw):
    from planner.engines.optimize import optimize
    from planner.engines.optimize_verify import busiest_hour as plan_busiest_hour
    from planner.engines.optimize_verify import verify_requests

    res = optimize(sc, catalog=CAT)
    pb, plan = res.problem, res.solution
    s, h = plan_busiest_hour(pb, plan)
    reqs, _ = verify_requests(pb, plan, s, h, np.random.default_rng(0), window_s=3600, **kw)
    assert reqs is not None and len(reqs) > 0
    return reqs


@pytest.mark.parametrize("share", [0.5, 0.0])
def test_verify_requests_carry_the_prefix_cache_not_the_billing_share(share):
    sc = _cached(share)
    reqs = _verify_requests(sc, prefix_cache_hit_share=prefix_cache_shares(sc))
    assert set(reqs.class_names) == {"chat@gpu"}
    np.testing.assert_array_equal(reqs.cached_input_tokens,
                                  np.rint(share * reqs.input_tokens).astype(np.int64))


def test_verify_takes_the_prefix_cache_from_the_problem():
    sc = _cached(0.5)
    reqs = _verify_requests(sc)
    np.testing.assert_array_equal(reqs.cached_input_tokens,
                                  np.rint(0.5 * reqs.input_tokens).astype(np.int64))


# ---------------------------------------------------------------------- pools
def test_pools_take_replicas_and_price_from_the_model_sizing():
    sc = _cached(0.5)
    sizing = size_options(sc, CAT)
    plan, pools, covered = build_plan(sc, ["gpu"], catalog=CAT)
    (pool,) = plan.pools
    size = sizing["gpu"]
    assert pool.replicas == size.replicas
    assert pool.usd_per_replica_hour == size.usd_per_replica_hour
    assert tuple(pool.classes) == size.classes_served and covered == list(size.classes_served)
    row = pools.set_index("deployment").loc["gpu"]
    assert row["replicas"] == size.replicas
    assert row["usd_per_replica_hour"] == size.usd_per_replica_hour
    # the shares the plan's requests carry are the model's
    shares = prefix_cache_shares(sc, sizing, ["gpu"])
    assert shares == {c: size.prefix_cache_hit_share[c] for c in size.classes_served}
    assert shares["chat"] == med(sc.workload["chat"].prefix_cache_hit_share)


def test_the_simulator_imports_no_engine():
    """planner.sim codes against the model (planner.model), not the engines."""
    for path in sorted((ROOT / "planner" / "sim").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for m in mods:
                assert not m.startswith("planner.engines"), f"{path.name} imports {m}"


def test_report_hour_is_the_busiest_hour_of_the_simulated_classes():
    sc = _scenario({"a": {"requests_per_day": 24_000, "diurnal": "business", "input": 100,
                          "output": 10, "slo": {"ttft_s": 5.0}},
                    "b": {"requests_per_day": 48_000, "diurnal": "consumer", "batch_share": 0.5,
                          "input": 100, "output": 10}})
    from planner.sim.scenario import simulate_busiest_hour

    b = simulate_busiest_hour(sc, CAT, max_requests=50)
    total = sum(class_load(sc, c, sc.workload[c], None, CAT).hourly_rates() for c in "ab")
    assert b.hour == int(np.argmax(total))
    assert math.isfinite(b.window_s)
