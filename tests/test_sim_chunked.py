"""Chunked prefill in the request-level simulator (vLLM-V1-style mixed iterations).

Exact answers on toy step models (every expected time is written as the sum of the
iterations the replica must run), both replica implementations against each other on
chunked pools, and the scenario switch.
"""

from __future__ import annotations

import dataclasses
import tomllib

import numpy as np
import pandas as pd
import pytest

from planner.catalog import load_catalog
from planner.config import parse_scenario
from planner.errors import PlannerError
from planner.perf import PerfParams
from planner.sim import (
    SLO,
    ApiTarget,
    Autoscale,
    LinearStepModel,
    PoolSpec,
    RequestTable,
    SimPlan,
    simulate,
)
from planner.sim.plan import DEFAULT_MAX_TOKENS_PER_STEP
from planner.sim.scenario import build_plan
from planner.sim.stepmodel import (
    TabulatedStepModel,
    mixed_step_function,
    prefill_pairs_function,
)
from tests.test_sim import MODEL, _CurvedModel, _perf_model, _workload

MODES = ("closed_form", "reference")
COLS = ("start_s", "first_token_s", "finish_s")

# prefill(n) = 0.01 + 1e-4 n; decode(B, K) = 0.02 + 0.001 B; mixed(B > 0, p) = decode + 1e-4 p
TOY = LinearStepModel(
    prefill_base_s=0.01,
    prefill_s_per_token=1e-4,
    decode_base_s=0.02,
    decode_s_per_seq=0.001,
    decode_s_per_kv_token=0.0,
    kv_capacity_tokens=10**6,
    max_batch=64,
)


class PairModel:
    """Toy model whose mixed step charges attention pairs:
    ``0.02 + 0.001 B + 1e-4 p + 1e-7 pairs``."""

    kv_capacity_tokens = 10**6
    max_batch = 64

    def prefill_time_s(self, n):
        return 0.01 + 1e-4 * np.asarray(n, dtype=float)

    def decode_step_time_s(self, batch, kv_tokens):
        return 0.02 + 0.001 * np.asarray(batch, dtype=float)

    def mixed_step_time_s(self, d, kv, p, pairs):
        return 0.02 + 0.001 * d + 1e-4 * p + 1e-7 * pairs


def _reqs(arrival, inp, out, cached=None) -> RequestTable:
    return RequestTable.from_arrays(
        np.asarray(arrival, dtype=float), np.asarray(inp), np.asarray(out),
        cached_input_tokens=None if cached is None else np.asarray(cached),
    )


def _run(model, reqs, *, chunked=True, budget=None, replicas=1, **kw):
    """Per-request records in both modes (they must agree); returns the closed-form ones."""
    out = {}
    for mode in MODES:
        pool = PoolSpec("gpu", model, replicas=replicas, chunked_prefill=chunked,
                        max_tokens_per_step=budget, **kw)
        out[mode] = simulate(SimPlan(pools=(pool,), mode=mode), reqs).requests
    a, b = out["closed_form"], out["reference"]
    for col in COLS:
        assert np.nanmax(np.abs(a[col] - b[col])) < 1e-9, col
    return a


# ---------------------------------------------------------------------- exact answers
def test_one_request_prompt_longer_than_the_budget():
    # 100 prompt tokens, C = 64: two prefill-only iterations (64 then 36 tokens), then
    # two decode steps of a batch of one
    df = _run(TOY, _reqs([0.0], [100], [3]), budget=64)
    ft = (0.01 + 64e-4) + (0.01 + 36e-4)
    assert df.first_token_s[0] == pytest.approx(ft, abs=1e-12)
    assert df.finish_s[0] == pytest.approx(ft + 2 * 0.021, abs=1e-12)
    assert df.tpot_s[0] == pytest.approx(0.021, abs=1e-12)


def test_two_requests_decode_rides_along_the_next_prompt():
    # A (50 in, 4 out) at 0; B (100 in, 2 out) at 0.01, during A's prefill; C = 64
    df = _run(TOY, _reqs([0.0, 0.01], [50, 100], [4, 2]), budget=64)
    t1 = 0.01 + 50e-4  # A's prefill iteration: A's first token
    t2 = t1 + 0.02 + 0.001 + 63e-4  # A decodes + 63 of B's tokens (64 - 1 decode)
    t3 = t2 + 0.02 + 0.001 + 37e-4  # A decodes + B's last 37: B's first token
    t4 = t3 + 0.02 + 2 * 0.001  # both decode: A's 4th token, B's 2nd
    np.testing.assert_allclose(df.start_s, [0.0, t1], atol=1e-12)
    np.testing.assert_allclose(df.first_token_s, [t1, t3], atol=1e-12)
    np.testing.assert_allclose(df.finish_s, [t4, t4], atol=1e-12)
    assert df.ttft_s[1] == pytest.approx(t3 - 0.01, abs=1e-12)
    assert df.tpot_s[0] == pytest.approx((t4 - t1) / 3, abs=1e-12)


def test_running_request_finishes_while_a_long_prompt_is_prefilled():
    # A (10 in, 5 out) decodes; B (4000 in, 2 out) arrives during A's prefill. Chunked
    # (C = 512) A makes a token per iteration and finishes before B's first token; not
    # chunked, A stalls for B's whole prefill.
    reqs = _reqs([0.0, 0.005], [10, 4000], [5, 2])
    ch = _run(TOY, reqs, budget=512)
    a_ft = 0.01 + 10e-4
    t = a_ft
    for _ in range(4):  # A's decodes with 511 of B's tokens each
        t += 0.02 + 0.001 + 511e-4
    a_fin = t
    left = 4000 - 4 * 511
    while left:  # B alone: prefill-only iterations of up to 512 tokens
        take = min(left, 512)
        t += 0.01 + take * 1e-4
        left -= take
    b_ft = t
    np.testing.assert_allclose(ch.first_token_s, [a_ft, b_ft], atol=1e-12)
    np.testing.assert_allclose(ch.finish_s, [a_fin, b_ft + 0.021], atol=1e-12)
    assert ch.finish_s[0] < ch.first_token_s[1]

    nc = _run(TOY, reqs, chunked=False)
    b_ft_nc = a_ft + 0.01 + 4000e-4  # one prefill iteration; A stalls through it
    np.testing.assert_allclose(nc.first_token_s, [a_ft, b_ft_nc], atol=1e-12)
    a_fin_nc = b_ft_nc + 0.022 + 3 * 0.021
    assert nc.finish_s[0] == pytest.approx(a_fin_nc, abs=1e-12)
    # A's TPOT no longer includes B's whole prefill
    assert ch.tpot_s[0] == pytest.approx(0.021 + 511e-4, abs=1e-12)
    assert nc.tpot_s[0] == pytest.approx((a_fin_nc - a_ft) / 4, abs=1e-12)
    assert ch.tpot_s[0] < 0.6 * nc.tpot_s[0]


def test_several_prompts_share_a_step_with_attention_pairs():
    # A (200 in, 3 out) at 0; B (30 in, 1 out) and C (40 in, 2 out) arrive during A's first
    # chunk. C = 128. Pairs of a chunk over prompt tokens [a, b): P(b) - P(a), P(L) = L(L+1)/2.
    def P(n):
        return n * (n + 1) / 2

    def step(d, p, pairs):
        return 0.02 + 0.001 * d + 1e-4 * p + 1e-7 * pairs

    df = _run(PairModel(), _reqs([0.0, 0.001, 0.002], [200, 30, 40], [3, 1, 2]), budget=128)
    t1 = step(0, 128, P(128))  # A's first 128 tokens
    # A's last 72, all of B's 30, 26 of C's 40 in one step
    t2 = t1 + step(0, 128, P(200) - P(128) + P(30) + P(26))
    t3 = t2 + step(1, 14, P(40) - P(26))  # A decodes, C's last 14 tokens
    t4 = t3 + 0.02 + 2 * 0.001  # A and C decode
    np.testing.assert_allclose(df.start_s, [0.0, t1, t1], atol=1e-12)
    np.testing.assert_allclose(df.first_token_s, [t2, t2, t3], atol=1e-12)
    np.testing.assert_allclose(df.finish_s, [t4, t2, t4], atol=1e-12)


def test_cached_prefix_is_not_prefilled_but_counts_as_keys():
    # 300 in, 100 cached: chunks over prompt tokens [100, 228) and [228, 300)
    def P(n):
        return n * (n + 1) / 2

    df = _run(PairModel(), _reqs([0.0], [300], [2], cached=[100]), budget=128)
    t1 = 0.02 + 128e-4 + 1e-7 * (P(228) - P(100))
    t2 = t1 + 0.02 + 72e-4 + 1e-7 * (P(300) - P(228))
    assert df.first_token_s[0] == pytest.approx(t2, abs=1e-12)
    assert df.finish_s[0] == pytest.approx(t2 + 0.021, abs=1e-12)
    # a fully cached prompt gets its first token at the end of its (empty) iteration
    df = _run(TOY, _reqs([1.0], [50], [3], cached=[50]), budget=128)
    assert df.first_token_s[0] == pytest.approx(1.0, abs=1e-12)
    assert df.finish_s[0] == pytest.approx(1.0 + 2 * 0.021, abs=1e-12)


def test_kv_limited_admission_waits_for_a_completion():
    # KV for one request at a time: B (arrives during A) starts when A finishes
    tight = dataclasses.replace(TOY, kv_capacity_tokens=150)
    df = _run(tight, _reqs([0.0, 0.001], [100, 100], [3, 2]), budget=64)
    a_ft = (0.01 + 64e-4) + (0.01 + 36e-4)
    a_fin = a_ft + 2 * 0.021
    np.testing.assert_allclose(df.start_s, [0.0, a_fin], atol=1e-12)
    b_ft = a_fin + (0.01 + 64e-4) + (0.01 + 36e-4)
    np.testing.assert_allclose(df.first_token_s, [a_ft, b_ft], atol=1e-12)
    np.testing.assert_allclose(df.finish_s, [a_fin, b_ft + 0.021], atol=1e-12)


def test_decodes_beyond_the_budget_delay_prompts():
    # C = 2 with two decodes running: no prompt tokens fit until one finishes
    df = _run(TOY, _reqs([0.0, 0.0001, 0.02], [1, 1, 2], [3, 2, 2]), budget=2)
    # A alone: 1 token; then B's 1 token + A's decode; then A, B decode (C full)
    t1 = 0.01 + 1e-4
    t2 = t1 + 0.021 + 1e-4
    t3 = t2 + 0.022  # A's 3rd token (done), B's 2nd (done); C waits
    t4 = t3 + 0.01 + 2e-4
    np.testing.assert_allclose(df.first_token_s, [t1, t2, t4], atol=1e-12)
    np.testing.assert_allclose(df.finish_s, [t3, t3, t4 + 0.021], atol=1e-12)


# ---------------------------------------------------------------------- both replicas
@pytest.mark.parametrize(
    ("routing", "budget", "rate"),
    [
        ("shared", 2048, 20.0),  # overloaded: long queues, KV and batch caps bind
        ("shared", 512, 6.0),  # prompts up to 3,000 tokens: split over several steps
        ("jsq", None, 6.0),  # default budget 8192: several prompts per step
        ("least_kv", 1000, 20.0),
        ("random", 300, 3.0),  # light load: idle replicas, inline admissions
        ("shared", 20, 20.0),  # budget below the batch cap: decodes crowd prompts out
    ],
)
def test_chunked_closed_form_matches_per_iteration_reference(routing, budget, rate):
    reqs = _workload(1500, rate, seed=11)
    out = {}
    for mode in MODES:
        pool = PoolSpec("gpu", MODEL, replicas=3, routing=routing, chunked_prefill=True,
                        max_tokens_per_step=budget)
        out[mode] = simulate(SimPlan(pools=(pool,), mode=mode), reqs, seed=3).requests
    a, b = out["closed_form"], out["reference"]
    assert (a.status == "completed").all() and (b.status == "completed").all()
    assert (a.replica == b.replica).all()
    for col in COLS:
        assert np.max(np.abs(a[col] - b[col])) < 1e-6, col


def test_chunked_generic_and_tabulated_models_match_reference():
    for model, rate in ((_CurvedModel(), 8.0), (TabulatedStepModel.from_model(_perf_model(48))[0],
                                                 40.0)):
        reqs = _workload(600, rate, seed=5)
        res = {}
        for mode in MODES:
            pool = PoolSpec("g", model, replicas=2, routing="shared", chunked_prefill=True,
                            max_tokens_per_step=1024)
            res[mode] = simulate(SimPlan(pools=(pool,), mode=mode), reqs).requests
        assert (res["closed_form"].status == "completed").all()
        for col in COLS:
            assert np.max(np.abs(res["closed_form"][col] - res["reference"][col])) < 1e-6


def test_chunked_modes_agree_with_autoscaling_spillover_and_horizon():
    rng = np.random.default_rng(0)
    t = np.sort(np.concatenate([rng.uniform(0, 600, 300), rng.uniform(600, 1200, 3000)]))
    n = t.size
    reqs = RequestTable.from_arrays(t, rng.integers(100, 1500, n), rng.integers(20, 200, n))
    auto = Autoscale(min_replicas=1, max_replicas=4, interval_s=60, startup_s=120,
                     target_share=0.5)
    out = {}
    for mode in MODES:
        pool = PoolSpec("gpu", MODEL, replicas=1, max_batch=8, autoscale=auto, routing="jsq",
                        chunked_prefill=True, max_tokens_per_step=512)
        plan = SimPlan(pools=(pool,), api=ApiTarget(), slos={"default": SLO(ttft_s=3.0)},
                       mode=mode)
        out[mode] = simulate(plan, reqs, until_s=1150.0)
    a, b = out["closed_form"].requests, out["reference"].requests
    assert (a.route == "api").sum() > 0 and (a.status == "in_flight").sum() > 0
    pd.testing.assert_frame_equal(out["closed_form"].scale_events, out["reference"].scale_events)
    assert (a.status == b.status).all() and (a.replica == b.replica).all()
    for col in COLS:
        assert np.nanmax(np.abs(a[col] - b[col])) < 1e-6


def test_chunked_conservation_caps_and_fcfs():
    reqs = _workload(3000, 25.0, seed=2)
    until = float(reqs.arrival_s[2000])
    pool = PoolSpec("gpu", MODEL, replicas=2, max_queue=40, chunked_prefill=True,
                    max_tokens_per_step=1024)
    r = simulate(SimPlan(pools=(pool,)), reqs, until_s=until)
    df = r.requests
    st = df.status.value_counts()
    assert st.sum() == len(reqs)
    assert st["completed"] + st["dropped"] + st["in_flight"] + st["pending"] == len(reqs)
    assert st["in_flight"] > 0 and st["pending"] == (reqs.arrival_s >= until).sum()
    done = df[df.status == "completed"]
    assert (done.arrival_s <= done.start_s).all()
    assert (done.start_s < done.first_token_s).all()  # every prompt here has tokens to prefill
    assert (done.first_token_s <= done.finish_s).all() and (done.finish_s <= until).all()
    assert not (df[list(COLS)] > until).any().any()
    served = df[df.start_s.notna()]
    for _, g in served.groupby("replica"):
        assert (np.diff(g.sort_values("arrival_s").start_s.to_numpy()) >= 0).all()  # FCFS
        end = g.finish_s.fillna(np.inf)
        ev_t = np.concatenate([g.start_s, end])
        ev_n = np.concatenate([np.ones(len(g)), -np.ones(len(g))])
        kv = (g.input_tokens + g.output_tokens).to_numpy()
        order = np.lexsort((ev_n, ev_t))
        assert np.cumsum(ev_n[order]).max() <= MODEL.max_batch
        assert np.cumsum(np.concatenate([kv, -kv])[order]).max() <= MODEL.kv_capacity_tokens
    # tokens: every completed request's output was produced, one per iteration at most
    assert (done.tpot_s.dropna() >= MODEL.decode_base_s + MODEL.decode_s_per_seq - 1e-12).all()


def test_chunked_keeps_decodes_flowing_under_load():
    # the perf model (Llama-3.1-8B, one H100, fp8), same requests: mixing prompt tokens into
    # the decodes' memory-bound steps lowers the TPOT tail; under a heavy load it also keeps
    # the replica ahead of its queue (prefill-only steps waste the decode batch's step)
    tab, _ = TabulatedStepModel.from_model(_perf_model(256))
    for rate in (20.0, 30.0):
        reqs = _workload(3000, rate, seed=7)
        q = {}
        for chunked in (False, True):
            pool = PoolSpec("g", tab, chunked_prefill=chunked,
                            max_tokens_per_step=2048 if chunked else None)
            q[chunked] = simulate(SimPlan(pools=(pool,)), reqs).requests[["tpot_s", "ttft_s"]]
        assert q[True].tpot_s.quantile(0.9) < 0.9 * q[False].tpot_s.quantile(0.9)
        assert q[True].tpot_s.quantile(0.99) < 0.9 * q[False].tpot_s.quantile(0.99)
    assert q[True].ttft_s.quantile(0.9) < 0.2 * q[False].ttft_s.quantile(0.9)


# ---------------------------------------------------------------------- step models
def test_mixed_step_functions():
    mixed = mixed_step_function(TOY)
    assert mixed(0, 0, 0, 0.0) == 0.0
    assert mixed(3, 900, 0, 0.0) == TOY.decode_step_time_s(3, 900)
    assert mixed(0, 0, 500, 1e5) == TOY.prefill_time_s(500)
    assert mixed(3, 900, 500, 1e5) == pytest.approx(0.02 + 0.003 + 500e-4)
    # a model without a mixed step: a decode step plus a prefill iteration of the chunk
    gen = mixed_step_function(_CurvedModel())
    cm = _CurvedModel()
    assert gen(4, 1000, 300, 0.0) == pytest.approx(
        float(cm.decode_step_time_s(4, 1000)) + float(cm.prefill_time_s(300)))
    assert gen(0, 0, 300, 0.0) == pytest.approx(float(cm.prefill_time_s(300)))
    # the tabulated perf model's mixed step is the perf model's own step_time_s
    exact = _perf_model(256)
    tab, _ = TabulatedStepModel.from_model(exact)
    for d, kv, p in ((0, 0, 4000), (17, 40_000, 2000), (200, 300_000, 64)):
        pairs = float(exact.prefill_pairs(p + 100) - exact.prefill_pairs(100))
        want = float(exact.step_time_s(d, kv, p, pairs))
        assert mixed_step_function(tab)(d, kv, p, pairs) == pytest.approx(want, rel=1e-12)
        assert mixed_step_function(exact)(d, kv, p, pairs) == pytest.approx(want, rel=1e-12)
    # a whole uncached prompt alone is the perf model's prefill iteration
    assert mixed_step_function(tab)(0, 0, 3000, float(exact.prefill_pairs(3000))) == (
        pytest.approx(float(exact.prefill_time_s(3000)), rel=1e-12))


def test_prefill_pairs_function_matches_the_perf_model_with_a_sliding_window():
    exact = _perf_model(64)
    win = dataclasses.replace(exact, llm=dataclasses.replace(exact.llm, sliding_window=1000))
    for m in (exact, win, TabulatedStepModel.from_model(exact)[0]):
        f = prefill_pairs_function(m)
        own = m.model if isinstance(m, TabulatedStepModel) else m
        for n in (0, 1, 999, 1000, 1001, 5000):
            assert f(n) == float(own.prefill_pairs(n))
    assert prefill_pairs_function(TOY)(10) == 55.0
    # the decode context of a mixed step is capped at the window, as in a decode step
    d, kv = 4, 100_000
    assert mixed_step_function(win)(d, kv, 10, 55.0) == pytest.approx(
        float(win.step_time_s(d, d * 1000, 10, 55.0)), rel=1e-12)


# ---------------------------------------------------------------------- plan and scenario
def test_poolspec_chunked_fields():
    p = PoolSpec("g", TOY)
    assert not p.chunked_prefill and p.step_token_budget == DEFAULT_MAX_TOKENS_PER_STEP == 8192
    assert PoolSpec("g", TOY, chunked_prefill=True, max_tokens_per_step=77).step_token_budget == 77
    with pytest.raises(PlannerError, match="max_tokens_per_step"):
        PoolSpec("g", TOY, chunked_prefill=True, max_tokens_per_step=0)
    with pytest.raises(PlannerError, match="max_prefill_tokens"):
        PoolSpec("g", TOY, chunked_prefill=True, max_prefill_tokens=100)


def test_perf_param_chunked_prefill():
    assert PerfParams().chunked_prefill is True
    assert PerfParams.from_mapping({"chunked_prefill": 0.0}).chunked_prefill is False
    assert PerfParams.from_mapping({"chunked_prefill": 1}).chunked_prefill is True
    with pytest.raises(PlannerError, match="chunked_prefill"):
        PerfParams(chunked_prefill=0.5)


def _scenario(perf: str = "") -> object:
    text = f"""
[scenario]
name = "chunk"
[workload.chat]
requests_per_day = 100000
input = 1000
output = 100
[cloud.gpu]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
precision = "fp8"
usd_per_gpu_hour = 2.5
{perf}
"""
    return parse_scenario(tomllib.loads(text), catalog=load_catalog())


def test_scenario_pools_are_chunked_with_the_perf_budget_by_default():
    cat = load_catalog()
    plan, pools, _ = build_plan(_scenario(), ["gpu"], catalog=cat, replicas=1)
    (pool,) = plan.pools
    assert pool.chunked_prefill and pool.max_tokens_per_step == PerfParams().max_tokens_per_step
    assert pools.prefill[0].startswith("chunked, 8192")
    plan, pools, _ = build_plan(_scenario("perf = { max_tokens_per_step = 2048 }"), ["gpu"],
                                catalog=cat, replicas=1)
    assert plan.pools[0].chunked_prefill and plan.pools[0].max_tokens_per_step == 2048
    plan, pools, _ = build_plan(_scenario("perf = { chunked_prefill = false }"), ["gpu"],
                                catalog=cat, replicas=1)
    assert not plan.pools[0].chunked_prefill and pools.prefill[0].startswith("prefill-only")
