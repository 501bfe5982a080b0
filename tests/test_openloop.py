"""Open-loop replica capacity at an SLO percentile (planner.perf.openloop).

Level 2 (queueing theory): the waiting-time tail the model uses is exact for M/M/1
(``P(W > w) = rho exp(-(mu - lam) w)``, so the q-quantile of the wait is
``ln(rho / (1 - q)) / (mu - lam)``); Kingman's mean reduces to Pollaczek-Khinchine.
Invariants (hypothesis): latency percentiles never fall as the arrival rate rises; capacity
never rises when the SLO tightens, arrivals get burstier or lengths spread more; a prefix cache
never lowers it; it never exceeds the closed-loop maximum throughput.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.catalog import load_catalog
from planner.config import parse_scenario
from planner.engines.deterministic import evaluate
from planner.perf import AcceleratorSpec, LLMSpec, replica_capacity, step_model
from planner.perf.openloop import _wait_plus_service_quantile, open_loop, slo_capacity

CAT = load_catalog()


def _sm(model="llama-3.1-8b", acc="h100-sxm", gpus=1, precision="fp8"):
    return step_model(LLMSpec.from_row(CAT.llm(model)), AcceleratorSpec.from_row(
        CAT.accelerator(acc)), gpus, precision)


@pytest.mark.parametrize("rho,q", [(0.3, 0.9), (0.7, 0.95), (0.9, 0.99)])
def test_wait_quantile_is_exact_for_mm1(rho, q):
    mu = 2.0
    lam = rho * mu
    ew = rho / (mu - lam)  # M/M/1 mean wait (Kingman with c_a^2 = c_s^2 = 1 is exact here)
    got = _wait_plus_service_quantile(np.array([rho]), np.array([ew]), np.zeros((1, 1)), q)
    want = math.log(rho / (1.0 - q)) / (mu - lam)
    assert float(got[0]) == pytest.approx(want, rel=1e-6)
    # below the atom at zero the quantile is 0 (no wait)
    low = _wait_plus_service_quantile(np.array([rho]), np.array([ew]), np.zeros((1, 1)),
                                      1.0 - rho - 0.01)
    assert float(low[0]) == pytest.approx(0.0, abs=1e-9)


def test_low_load_latencies_are_one_request_alone():
    sm = _sm()
    pt = open_loop(sm, [1e-6], input_tokens=1000, output_tokens=100, quantile=0.9)
    t1 = float(sm.step_time_s(1.0, 1.0 * 1050))
    assert float(pt.tpot_s[0]) == pytest.approx(t1, rel=1e-3)
    own = float(sm.step_time_s(0.0, 0.0, 1000, sm.prefill_pairs(1000)))
    assert own <= float(pt.ttft_s[0]) <= own + t1


@settings(max_examples=40, deadline=None)
@given(isl=st.integers(100, 6000), osl=st.integers(20, 800),
       lam=st.lists(st.floats(0.01, 60.0), min_size=2, max_size=6))
def test_percentiles_never_fall_as_load_rises(isl, osl, lam):
    lam = np.sort(np.asarray(lam))
    pt = open_loop(_sm(), lam, input_tokens=isl, output_tokens=osl, quantile=0.95)
    ok = pt.stable
    assert np.all(np.diff(pt.ttft_s[ok]) >= -1e-9)
    assert np.all(np.diff(pt.tpot_s[ok]) >= -1e-9)
    assert np.all(np.diff(pt.prefill_utilisation) >= -1e-12)


@settings(max_examples=25, deadline=None)
@given(isl=st.integers(200, 4000), osl=st.integers(20, 500),
       ttft=st.floats(0.3, 5.0), tpot=st.floats(0.02, 0.2))
def test_capacity_is_monotone_in_slo_burstiness_spread_and_cache(isl, osl, ttft, tpot):
    sm = _sm()
    kw = dict(input_tokens=isl, output_tokens=osl)
    base = slo_capacity(sm, ttft_slo_s=ttft, tpot_slo_s=tpot, **kw).requests_per_s
    tol = 0.02 * base + 1e-9  # the search resolves the rate to ~1/32^3 of its bracket
    assert slo_capacity(sm, ttft_slo_s=ttft / 2, tpot_slo_s=tpot, **kw).requests_per_s <= \
        base + tol
    assert slo_capacity(sm, ttft_slo_s=ttft, tpot_slo_s=tpot, percentile=99,
                        **kw).requests_per_s <= base + tol
    assert slo_capacity(sm, ttft_slo_s=ttft, tpot_slo_s=tpot, arrival_cv=3.0,
                        **kw).requests_per_s <= base + tol
    assert slo_capacity(sm, ttft_slo_s=ttft, tpot_slo_s=tpot, cv_in=1.0, cv_out=1.0,
                        **kw).requests_per_s <= base + tol
    assert slo_capacity(sm, ttft_slo_s=ttft, tpot_slo_s=tpot, prefix_cache_hit_share=0.8,
                        **kw).requests_per_s >= base - tol
    closed = replica_capacity(sm.llm, sm.acc, gpus=1, precision="fp8", input_tokens=isl,
                              output_tokens=osl)
    assert base <= closed.requests_per_s * 1.02


CS = {
    "scenario": {"name": "customer service"},
    "workload": {"cs": {"requests_per_day": 3e6, "diurnal": "business",
                        "input": {"tokens": 300}, "context": {"tokens": 2000},
                        "output": {"tokens": 200}, "slo": {"ttft_s": 1.5, "tpot_s": 0.06}}},
    "cloud": {"q72": {"model": "qwen2.5-72b", "accelerator": "h100-sxm",
                      "gpus_per_replica": 2, "precision": "fp8"}},
}


def test_open_loop_sizing_is_a_planning_choice_with_its_limit_shown():
    closed = evaluate(parse_scenario({**CS, "planning": {"capacity": "closed-loop"}},
                                     catalog=CAT), CAT)
    default = evaluate(parse_scenario(CS, catalog=CAT), CAT)
    assert default.capacity.iloc[0]["capacity_basis"].startswith("open-loop p90")
    data = {**CS, "planning": {"capacity": "open-loop"},
            "simulation": {"burstiness_cv": 2.0, "length_cv": 0.5}}
    opened = evaluate(parse_scenario(data, catalog=CAT), CAT)
    c0 = closed.capacity.iloc[0]
    c1 = opened.capacity.iloc[0]
    assert c1["capacity_basis"].startswith("open-loop p90")
    assert c1["limited_by"] in {"prefill compute", "decode", "KV memory", "TTFT queueing",
                                "TPOT"}
    assert c1["requests_per_s_per_replica"] < c0["requests_per_s_per_replica"]
    r0 = closed.summary.set_index("deployment").loc["q72", "replicas"]
    r1 = opened.summary.set_index("deployment").loc["q72", "replicas"]
    assert r1 > r0
    # the p90 latencies at the operating point meet the SLO
    assert c1["ttft_s"] <= 1.5 and c1["tpot_s"] <= 0.06


@pytest.mark.parametrize("servers", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("arrival_cv", [1.0, 2.0, 4.0])
def test_per_replica_wait_is_the_conservative_bound(servers, arrival_cv):
    """``[planning] prefill_wait = "per-replica"``: the TTFT miss share of a replica's own
    GI/G/1 queue (a random split of the arrivals) is never below the pooled GI/G/c one where
    sizing looks (miss shares up to 50%), and the two agree for one replica (the same
    queue)."""
    sm = _sm("llama-3.1-70b", gpus=2)
    lam = np.geomspace(0.002, 1.2, 80)
    kw = dict(input_tokens=12300.0, output_tokens=300.0, cv_out=0.5, arrival_cv=arrival_cv,
              servers=servers, quantile=0.9, ttft_slo_s=3.0, tpot_slo_s=0.05)
    pooled = open_loop(sm, lam, **kw)
    alone = open_loop(sm, lam, pooled_wait=False, **kw)
    ok = pooled.stable & (pooled.ttft_miss <= 0.5)
    assert ok.sum() > 10
    if servers == 1:
        np.testing.assert_allclose(alone.ttft_miss[ok], pooled.ttft_miss[ok], rtol=1e-12)
    else:
        assert np.all(alone.ttft_miss[ok] >= pooled.ttft_miss[ok] - 1e-12)
        assert alone.ttft_miss[ok].sum() > pooled.ttft_miss[ok].sum()
    np.testing.assert_array_equal(alone.tpot_miss, pooled.tpot_miss)  # TPOT is untouched


def test_queued_prompt_shares_its_last_step():
    """A prompt that waits gets its first token at the end of the step holding its last token:
    with nobody behind it, its fluid share ``n t_f / (C - d)``; with a full step's worth behind
    it, half a full step more on average (its last token sits uniformly in the step)."""
    from planner.perf.openloop import _queued_service

    n_nodes = np.array([[1000.0]])
    args = dict(n=np.array([1000.0]), t_f=np.array([1.0]), chunk=np.array([8000.0]),
                p_wait=np.array([0.5]), ew=np.array([0.0]))
    alone = _queued_service(n_nodes, lam=np.array([0.0]), ca2_rep=1.0, **args)
    np.testing.assert_allclose(alone, 1000.0 / 8000.0)  # own share, nothing behind
    crowd = _queued_service(n_nodes, lam=np.array([0.0]), ca2_rep=1.0 + 2 * 8.0, **args)
    np.testing.assert_allclose(crowd, 1000.0 / 8000.0 + 0.5)  # a clump of 8 prompts behind
    # B = 4,000 tokens behind (a clump of 4): E[min(U C, B)] = B - B^2 / (2 C) = 3,000 tokens
    half = _queued_service(n_nodes, lam=np.array([0.0]), ca2_rep=1.0 + 2 * 4.0, **args)
    np.testing.assert_allclose(half, 1000.0 / 8000.0 + 3000.0 / 8000.0)


def test_step_granularity_lifts_a_bursty_single_replica_ttft_to_the_simulator():
    """Design case 20 of ``studies/sizing-vs-simulation`` (Llama-3.1-405B on 8x H100, one
    replica, chat lengths, arrival CV 4): clumps of prompts share 1.1 s full steps, so their
    first tokens come at the ends of those steps. The simulated share of requests over the
    3 s TTFT bound in the busiest hour and the model's at the simulated rate agree within 25%
    (the fluid share alone, without :func:`_queued_service`, gave 40% too few)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies"
                           / "sizing-vs-simulation"))
    from cases import CAT, cases

    from planner.config import parse_scenario
    from planner.model.evaluate import Model
    from planner.model.sizing import size_options
    from planner.perf import AcceleratorSpec, LLMSpec
    from planner.perf.step import step_model
    from planner.sim.scenario import simulate_scenario
    from planner.workload import busiest_hour, diurnal_weights

    sc = parse_scenario(cases(21, seed=7)[20], catalog=CAT)
    reps = size_options(sc, CAT)["gpu"].replicas
    assert reps == 1
    m = Model(sc, CAT)
    o = m.by_name["gpu"]
    isl, osl, ttft, tpot, hit, tr = m._capacity_inputs(m.ctx(), o, "w")
    hour = busiest_hour(diurnal_weights(sc.workload["w"].diurnal))[0]
    (run,) = simulate_scenario(sc, catalog=CAT, deployments=["gpu"], hours=1,
                               start_hour=hour, seed=0, replicas={"gpu": reps})
    ok, n = run.result.slo_bound_counts()[("w", "ttft_s")]
    simulated = 1.0 - ok / n
    sm = step_model(LLMSpec.from_row(o.llm_row), AcceleratorSpec.from_row(o.acc_row),
                    o.dep.gpus_per_replica, o.dep.precision, None)
    pt = open_loop(sm, n / 3600.0, input_tokens=isl, output_tokens=osl, cv_in=tr.cv_in,
                   cv_out=tr.cv_out, arrival_cv=tr.arrival_cv, quantile=0.9,
                   ttft_slo_s=ttft, tpot_slo_s=tpot, quantiles=False)
    assert simulated > 0.02  # the bound binds
    assert abs(float(pt.ttft_miss[0]) / simulated - 1.0) < 0.25


def test_router_aware_wait_sizes_a_long_prompt_pool_the_simulator_confirms():
    """A held-out case of ``studies/sizing-vs-simulation`` (seed 11, case 2: Llama-3.1-70B on
    2x H100, 12,300-token prompts, arrival CV 4, 1-3 decodes per replica): the router counts
    decodes and prompts alike, so it pools the prefill queues only in part
    (:func:`planner.perf.openloop._router_sees_prefill`); the fully pooled GI/G/c wait sized 14
    replicas, which miss the p90 SLO in the simulated busiest hour. The default now sizes
    replicas that meet it, one fewer misses it, and ``per-replica`` (the conservative bound)
    sizes at least as many, which meet it too."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies"
                           / "sizing-vs-simulation"))
    from cases import cases, check

    case = cases(3, seed=11)[2]
    pooled = check(case)
    case["planning"]["prefill_wait"] = "per-replica"
    alone = check(case)
    assert pooled["attainment_at"] >= pooled["target"]
    assert pooled["attainment_below"] < pooled["target"]
    assert alone["replicas"] >= pooled["replicas"]
    assert alone["attainment_at"] >= alone["target"]


def _overlap_batches(lam: float, life: float, ca2: float, seed: int) -> tuple:
    """A seeded Gamma-renewal stream (rate ``lam``, squared CV ``ca2``) of requests of equal
    life ``life``: per request (away from the ends) the others overlapping its life, each
    for the share ``1 - |s| / life`` (by prefix sums), and the arrivals during its life."""
    rng = np.random.default_rng(seed)
    k = 1.0 / ca2
    t = np.cumsum(rng.gamma(k, 1.0 / (lam * k), size=400_000))
    csum = np.concatenate([[0.0], np.cumsum(t)])
    lo = np.searchsorted(t, t - life, side="right")
    hi = np.searchsorted(t, t + life, side="left")
    idx = np.arange(len(t))
    n_before, n_after = idx - lo, hi - idx - 1
    s_before = n_before * t - (csum[idx] - csum[lo])
    s_after = (csum[hi] - csum[idx + 1]) - n_after * t
    batch = (n_before + n_after) - (s_before + s_after) / life
    keep = (t > 2 * life) & (t < t[-1] - 2 * life)
    return batch[keep], n_after[keep]


@pytest.mark.parametrize("ca2", [1.0, 0.25])
def test_life_averaged_batch_variance_matches_a_renewal_stream(ca2):
    """The decode batch a request's life averages over (:func:`_batch_swing`): requests of
    equal life ``L`` arriving as a renewal stream (squared CV ``ca2``; 0.25 is one replica's
    share of a Poisson pool of 4) overlap a request's life for the share ``1 - |s| / L``. The
    variance of that overlap count, measured on a seeded stream, matches the model's
    ``(2 / 3) d c^2`` within 5% where the step time does not depend on the batch (elasticity 1)."""
    from planner.perf.openloop import _batch_swing

    lam, life = 4.0, 5.0  # d = lam L = 20 requests
    batch, _ = _overlap_batches(lam, life, ca2, seed=11)
    d = np.array([lam * life])

    def terms(dd, ll):  # steps per second independent of the batch: elasticity 1
        return None, None, None, None, np.full_like(np.asarray(dd, dtype=float), 10.0)

    swing2 = _batch_swing(terms, np.array([lam]), d, np.array([life * 10.0]), ca2)
    # (a smooth stream keeps its neighbours away: a little under d for ca2 < 1)
    assert float(batch.mean()) == pytest.approx(float(d[0]), rel=0.05)
    assert float(swing2[0]) * float(d[0]) ** 2 == pytest.approx(float(batch.var()), rel=0.05)


def test_batch_swing_is_amplified_by_the_batch_feedback():
    """Where the mean step time grows with the batch, ``1 / s = a + b d``, the fixed point
    ``d = lam O (a + b d)`` is ``d = lam O a / (1 - lam O b)`` and its elasticity to the
    arrival rate is ``G = 1 / (1 - lam O b)``: the swing is ``G^2`` times the direct one."""
    from planner.perf.openloop import _batch_swing

    a, b, osl = 0.02, 0.001, 300.0

    def terms(dd, ll):
        return None, None, None, None, 1.0 / (a + b * np.asarray(dd, dtype=float))

    for lam in (0.5, 1.5, 2.5):
        d = lam * osl * a / (1.0 - lam * osl * b)
        gain = 1.0 / (1.0 - lam * osl * b)
        got = _batch_swing(terms, np.array([lam]), np.array([d]), np.array([osl]), 1.0)
        assert float(got[0]) == pytest.approx((2.0 / 3.0) * gain ** 2 / d, rel=1e-3)


@pytest.mark.parametrize("ca2", [4.0, 1.0])
def test_a_request_decodes_with_its_clump_and_meets_its_prompts(ca2):
    """:func:`_clump_batch`: on a seeded renewal stream of equal lives, the batch a request's
    life averages over, itself included, exceeds the time-average ``d = lam L`` by the index
    of dispersion ``c^2`` (the Palm mean: 1 for Poisson, itself; ``c^2 - 1`` clump-mates
    more for a Gamma stream of squared CV 4), the model's centre at elasticity 1; the
    arrivals during its life (the prompts it meets) rise with that batch at the regression
    slope ``3 / 4``, of which the model carries the clump's share ``(c^2 - 1) / c^2`` (none
    for Poisson)."""
    from planner.perf.openloop import _clump_batch

    lam, life = 4.0, 5.0  # d = 20 requests, a clump of ~1.5 gaps against 20
    others, met = _overlap_batches(lam, life, ca2, seed=5)
    batch = 1.0 + others  # the request itself decodes through its whole life
    d = lam * life
    centre, elasticity = _clump_batch(np.array([d]), ca2, np.array([1.0]))
    assert float(batch.mean()) - d == pytest.approx(float(centre[0]) - d, rel=0.1)
    assert float(centre[0]) - d == pytest.approx(ca2)
    slope = np.cov(batch, met)[0, 1] / batch.var()
    assert slope == pytest.approx(0.75, rel=0.05)
    # the model carries only the clump's share of it (the Poisson part as before)
    assert float(elasticity[0]) == pytest.approx(0.75 * (ca2 - 1.0) / ca2)
    # the feedback amplifies the excess like the swing; a smoother stream sees less of it
    c_g, _ = _clump_batch(np.array([d]), ca2, np.array([3.0]))
    assert float(c_g[0]) - d == pytest.approx(3.0 * ca2)
    c_s, e_s = _clump_batch(np.array([d]), 0.25, np.array([3.0]))
    assert float(c_s[0]) - d == pytest.approx(0.75) and float(e_s[0]) == 0.0


@pytest.mark.parametrize("cv", [0.0, 0.5, 1.0])
def test_residual_prefill_is_the_rest_of_a_length_biased_prefill(cv):
    """:func:`_residual_prefill_tail`: a random moment of a replica's prefill work falls in a
    prefill with probability proportional to its length and uniformly within it; the rest of
    that prefill, sampled from seeded lognormal prefill times, has the model's tail and mean
    (:func:`_residual_mean`)."""
    from planner.perf.openloop import (
        _lognormal_nodes,
        _residual_mean,
        _residual_prefill_tail,
    )

    rng = np.random.default_rng(3)
    mean_s = 0.8
    s2 = math.log1p(cv * cv)
    s = mean_s * np.exp(-s2 / 2 + math.sqrt(s2) * rng.standard_normal(200_000))
    pick = rng.choice(s.size, size=200_000, p=s / s.sum())  # length-biased
    rest = s[pick] * rng.uniform(size=pick.size)
    nodes = _lognormal_nodes(np.array([mean_s]), cv) if cv > 0 else np.array([[mean_s]])
    y = np.array([[0.1, 0.4, 0.8, 1.2]])
    got = _residual_prefill_tail(nodes, y)[0]
    want = np.array([(rest > v).mean() for v in y[0]])
    # 24 equal-weight nodes carry the lognormal's upper tail to about 0.02 at cv 1
    np.testing.assert_allclose(got, want, atol=0.025)
    assert float(_residual_mean(np.array([mean_s]), cv * cv)[0]) == pytest.approx(
        rest.mean(), rel=0.02)


def test_hidden_prompts_wait_at_most_the_prefill_in_progress(monkeypatch):
    """The router's decode counts hide a prompt's queue for the share ``1 - v`` of prompts;
    an isolated one (Poisson arrivals, output lengths spread so no echo) then waits only the
    rest of its replica's prefill in progress, so a long-prompt pool's TTFT miss share falls
    below the one it has when they queue as on their own replica (GI/G/1), and the TPOT tail is
    untouched; a fixed-length pool (every prompt in an echo run) and a single replica are
    unchanged."""
    import planner.perf.openloop as ol

    sm = _sm("llama-3.1-70b", gpus=2)
    lam = np.geomspace(0.05, 0.6, 12)
    kw = dict(input_tokens=12300.0, output_tokens=300.0, quantile=0.9, ttft_slo_s=3.0,
              tpot_slo_s=0.05, quantiles=False, servers=8)
    spread = open_loop(sm, lam, cv_out=0.5, **kw)
    fixed = open_loop(sm, lam, **kw)
    one = open_loop(sm, lam, cv_out=0.5, **{**kw, "servers": 1})
    monkeypatch.setattr(ol, "_HIDDEN_WAIT_ONE_PREFILL", False)
    spread_q = open_loop(sm, lam, cv_out=0.5, **kw)
    fixed_q = open_loop(sm, lam, **kw)
    one_q = open_loop(sm, lam, cv_out=0.5, **{**kw, "servers": 1})
    ok = spread.stable & (spread_q.ttft_miss > 1e-3)
    assert ok.sum() > 4
    assert np.all(spread.ttft_miss[ok] < spread_q.ttft_miss[ok])
    np.testing.assert_array_equal(spread.tpot_miss, spread_q.tpot_miss)
    np.testing.assert_allclose(fixed.ttft_miss, fixed_q.ttft_miss, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(one.ttft_miss, one_q.ttft_miss)


def test_kv_limited_capacity_follows_the_memory_the_device_reports():
    # the catalog's device reading (H100: 81,559 MiB = 85.5e9 B) against the data sheet's
    # 80e9 B: Llama-3.1-70B in bf16 on 2 GPUs keeps 70.6 GB of weights per GPU, so the KV
    # cache grows from ~5.8 to ~10.7 GB per GPU; more requests fit, the capacity where KV binds
    # rises, and the step times stay the same (memory size is not in the step model)
    from dataclasses import replace

    from planner.perf.memory import memory_plan

    dev = _sm("llama-3.1-70b", "h100-sxm", 2, "bf16")
    sheet = step_model(dev.llm, replace(dev.acc, device_mem_mib=None), 2, "bf16")
    assert dev.acc.device_mem_mib and dev.acc.mem_bytes == dev.acc.device_mem_mib * 2**20
    assert sheet.acc.mem_bytes == sheet.acc.mem_gb * 1e9 < dev.acc.mem_bytes
    m_dev, m_sheet = (memory_plan(s.llm, s.acc, 2, "bf16", s.params) for s in (dev, sheet))
    assert m_dev.kv_gb_per_gpu - m_sheet.kv_gb_per_gpu == pytest.approx(
        (dev.acc.mem_bytes - sheet.acc.mem_bytes) * dev.params.kv_mem_fraction / 1e9, rel=1e-9)
    kw = dict(input_tokens=4000.0, output_tokens=1000.0, ttft_slo_s=10.0, tpot_slo_s=0.3)
    c_dev, c_sheet = slo_capacity(dev, **kw), slo_capacity(sheet, **kw)
    assert c_sheet.limited_by == "KV memory"
    assert c_dev.requests_per_s > c_sheet.requests_per_s
    assert dev.step_time_s(8.0, 8.0 * 4500.0) == sheet.step_time_s(8.0, 8.0 * 4500.0)


@pytest.mark.parametrize("cv", [0.2, 0.5, 1.0])
def test_echo_coherence_is_the_chance_two_lives_end_within_one_gap(cv):
    """:func:`planner.perf.openloop._echo_coherence`: two requests of a run, lognormal lives
    of mean ``L`` and coefficient of variation ``cv`` (the output lengths'), end within one
    gap ``1 / Lambda`` between the pool's arrivals with the probability the model gives
    (measured on a seeded sample of pairs, within 5% where it is small); equal lives always
    do (coherence 1)."""
    from planner.perf.openloop import _echo_coherence

    life, rate = 12.0, 2.0
    s2 = math.log1p(cv * cv)
    rng = np.random.default_rng(3)
    lives = life * np.exp(-s2 / 2.0 + math.sqrt(s2) * rng.standard_normal((2, 2_000_000)))
    gap = 1.0 / rate
    measured = float(np.mean(np.abs(lives[0] - lives[1]) < gap))
    got = float(_echo_coherence(np.array([rate]), np.array([life]), cv)[0])
    assert 0.0 < got < 0.3  # the short-gap regime the formula is for
    assert got == pytest.approx(measured, rel=0.05)
    assert float(_echo_coherence(np.array([rate]), np.array([life]), 0.0)[0]) == 1.0
    # a busier pool's gap is shorter: fewer lives end within it
    assert float(_echo_coherence(np.array([4.0 * rate]), np.array([life]), cv)[0]) < got
    # a bursty pool's clumps are spread over the replicas one each: fewer runs
    bursty = [float(_echo_coherence(np.array([rate]), np.array([life]), 0.0, a2)[0])
              for a2 in (1.0, 4.0, 16.0)]
    assert bursty[0] == 1.0 and bursty[0] > bursty[1] > bursty[2] > 0.0


def test_equal_lives_hide_a_pools_prefill_queues_from_the_router(monkeypatch):
    """With equal output lengths a pool's departures echo its arrivals in runs (the router
    refills the replica whose clump of requests just left), so the pooled wait holds for fewer
    prompts: the TTFT miss share of a pool of 8 with fixed lengths lies above the same pool
    with the echo removed and within the per-replica bound; one replica is unchanged."""
    import planner.perf.openloop as ol

    sm = _sm("qwen2.5-7b", "l40s")
    lam = np.geomspace(0.3, 0.9, 12)
    kw = dict(input_tokens=12300.0, output_tokens=300.0, quantile=0.9, ttft_slo_s=3.0,
              tpot_slo_s=0.05, quantiles=False)
    echo = open_loop(sm, lam, servers=8, **kw)
    alone = open_loop(sm, lam, servers=8, pooled_wait=False, **kw)
    one = open_loop(sm, lam, **kw)
    monkeypatch.setattr(ol, "_echo_coherence", lambda rate, *a: np.zeros_like(rate))
    plain = open_loop(sm, lam, servers=8, **kw)
    one_plain = open_loop(sm, lam, **kw)
    ok = echo.stable & (echo.ttft_miss > 1e-4)
    assert ok.sum() > 5
    assert np.all(echo.ttft_miss[ok] > plain.ttft_miss[ok])
    assert np.all(echo.ttft_miss[ok] <= alone.ttft_miss[ok] + 1e-12)
    np.testing.assert_array_equal(echo.tpot_miss, plain.tpot_miss)  # TTFT only
    np.testing.assert_array_equal(one.ttft_miss, one_plain.ttft_miss)


def _jsq_waits(c: int, rho: float, service_s: float, n: int, seed: int) -> np.ndarray:
    """Waits of ``n`` Poisson arrivals sent on arrival to the server with the fewest requests
    (lowest index on ties; each server first come, first served, equal service times): the
    router the simulator runs, without the decodes."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(service_s / (c * rho), n))
    ends = [[] for _ in range(c)]  # completion times of each server's requests, in order
    waits = np.empty(n)
    for i, now in enumerate(t):
        for q in ends:
            while q and q[0] <= now:
                q.pop(0)
        j = min(range(c), key=lambda s: len(ends[s]))
        start = ends[j][-1] if ends[j] else now
        waits[i] = start - now
        ends[j].append(start + service_s)
    return waits


def test_a_prompt_that_waits_waits_at_least_the_rest_of_its_replicas_prefill():
    """The router sends a prompt to a replica when it arrives, so one that waits waits for
    the prefill in progress at its own replica, not the first of ``c`` to free
    (:func:`planner.perf.openloop._renewal_wait`): in a large pool the conditional wait is the
    equilibrium residual ``E[S] (1 + c_s^2) / 2``, not ``E[S] / (c (1 - sigma))``. Checked
    against seeded Poisson arrivals to a count router over 8 servers of equal service (about
    the residual ``S / 2``: the arrival finds every server busy and joins one mid-service;
    the pooled form is 1.8-2.1 times too short there); one server and
    smooth arrivals keep the GI/G/1 and pooled forms."""
    from planner.perf.openloop import _renewal_wait, gamma_sigma

    es, rho = 2.0, np.array([0.45, 0.6])
    p, ew = _renewal_wait(8.0, rho, np.full(2, es), 1.0, 0.0)
    np.testing.assert_allclose(ew / p, es / 2.0)  # the floor binds: 8 (1 - rho) > 2
    pooled = es / (8.0 * (1.0 - rho))
    assert np.all(pooled < es / 2.0)
    for r in rho:
        w = _jsq_waits(8, float(r), es, 40_000, seed=11)[2_000:]
        cond = w[w > 1e-9].mean()
        # the measured conditional wait is about the residual's (0.98 and 1.11 s against
        # 1 s; more at higher load, when some join a queue), far above the pooled
        assert cond >= 0.9 * es / 2.0
        assert cond > 1.5 * es / (8.0 * (1.0 - r))
    # one server: Pollaczek-Khinchine's E[S] (1 + c_s^2) / (2 (1 - rho)), above the floor
    p1, ew1 = _renewal_wait(1.0, rho, np.full(2, es), 1.0, 0.0)
    np.testing.assert_allclose(ew1 / p1, es / (2.0 * (1.0 - rho)))
    # smooth arrivals (c_a^2 < 1) see no equilibrium residual: the pooled form is kept
    ps, ews = _renewal_wait(8.0, rho, np.full(2, es), 0.25, 0.0)
    sigma = gamma_sigma(rho, 0.25)
    np.testing.assert_allclose(ews / ps, es / (8.0 * (1.0 - sigma)) * 0.25 / 1.25)
