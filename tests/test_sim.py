"""Request-level simulation: closed form vs reference, conservation, routing, spillover, costs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from planner.errors import PlannerError
from planner.sim import (
    SLO,
    ApiTarget,
    Autoscale,
    DecodeKernel,
    LinearStepModel,
    PoolSpec,
    RequestTable,
    SimPlan,
    simulate,
)
from planner.sim.stepmodel import TabulatedStepModel

# a small 8B-on-one-GPU-like model: prefill ~17k tok/s, decode step ~7 ms + per-seq + KV reads
MODEL = LinearStepModel(
    prefill_base_s=0.004,
    prefill_s_per_token=6e-5,
    decode_base_s=0.007,
    decode_s_per_seq=6e-5,
    decode_s_per_kv_token=2.5e-8,
    kv_capacity_tokens=60_000,
    max_batch=24,
)


def _workload(n: int, rate_per_s: float, seed: int, classes=("a", "b")) -> RequestTable:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / rate_per_s, n))
    inp = rng.integers(1, 3000, n)
    out = rng.integers(1, 300, n)
    out[rng.random(n) < 0.05] = 1  # single-token outputs finish at the end of their prefill
    cached = np.where(rng.random(n) < 0.3, np.minimum(inp, 200), 0)
    labels = np.asarray(classes)[rng.integers(0, len(classes), n)]
    return RequestTable.from_arrays(t, inp, out, labels, cached_input_tokens=cached)


def _plan(mode: str, routing: str, **kw) -> SimPlan:
    pool = PoolSpec("gpu", MODEL, replicas=3, usd_per_replica_hour=2.0, routing=routing, **kw)
    return SimPlan(pools=(pool,), mode=mode)


# ---------------------------------------------------------------------- closed form
@pytest.mark.parametrize(
    ("routing", "limit", "rate"),
    [
        ("shared", None, 20.0),  # overloaded: long queues, KV and batch caps bind
        ("shared", 4000, 6.0),  # moderate load, prefill-token limit
        ("jsq", None, 6.0),
        ("least_kv", 4000, 20.0),
        ("random", None, 3.0),  # light load: idle replicas, inline admissions
    ],
)
def test_closed_form_matches_per_iteration_reference(routing, limit, rate):
    reqs = _workload(1500, rate, seed=11)
    fast = simulate(_plan("closed_form", routing, max_prefill_tokens=limit), reqs, seed=3)
    ref = simulate(_plan("reference", routing, max_prefill_tokens=limit), reqs, seed=3)
    a, b = fast.requests, ref.requests
    assert (a["status"] == "completed").all() and (b["status"] == "completed").all()
    assert (a["replica"] == b["replica"]).all()
    for col in ("start_s", "first_token_s", "finish_s"):
        assert np.max(np.abs(a[col] - b[col])) < 1e-6, col
    # the reference really is per iteration: a decode step can't be shorter than c + d
    assert a["tpot_s"].dropna().min() >= MODEL.decode_base_s + MODEL.decode_s_per_seq - 1e-12


class _CurvedModel:
    """A non-linear StepModel (no closed form): exercises the vectorised kernel."""

    kv_capacity_tokens = 50_000
    max_batch = 16

    def prefill_time_s(self, n):
        return 0.003 + 5e-5 * np.asarray(n, dtype=float) ** 1.05

    def decode_step_time_s(self, batch, kv_tokens):
        return 0.006 + 1e-4 * np.sqrt(batch) + 3e-8 * np.asarray(kv_tokens, dtype=float)


def test_generic_step_model_matches_reference():
    reqs = _workload(600, 8.0, seed=5)
    res = {}
    for mode in ("closed_form", "reference"):
        plan = SimPlan(pools=(PoolSpec("g", _CurvedModel(), replicas=2, routing="jsq"),), mode=mode)
        res[mode] = simulate(plan, reqs).requests
    for col in ("start_s", "first_token_s", "finish_s"):
        assert np.max(np.abs(res["closed_form"][col] - res["reference"][col])) < 1e-6


def test_decode_kernel_closed_form_equals_step_sum():
    k = DecodeKernel(MODEL)
    b, kv0, steps = 7, 12_345, 40
    direct = sum(MODEL.decode_step_time_s(b, kv0 + b * i) for i in range(steps))
    assert k.span(b, kv0, steps) == pytest.approx(direct, rel=1e-12)
    # cover: the first step boundary at or after dt
    for dt in (1e-4, 0.05, 0.2, 5.0):
        kk, s = k.cover(b, kv0, dt, 10_000)
        assert s >= dt and (kk == 1 or k.span(b, kv0, kk - 1) < dt)
        assert s == pytest.approx(k.span(b, kv0, kk), rel=1e-12)


def _perf_model(max_batch: int = 48):
    from planner.catalog import load_catalog
    from planner.perf import AcceleratorSpec, LLMSpec, PerfParams, step_model

    cat = load_catalog()
    return step_model(LLMSpec.from_row(cat.llm("llama-3.1-8b")),
                      AcceleratorSpec.from_row(cat.accelerator("h100-sxm")), 1, "fp8",
                      PerfParams(max_batch=max_batch))


def test_tabulated_step_model_is_the_perf_model():
    exact = _perf_model(1024)
    tab, err = TabulatedStepModel.from_model(exact)
    assert err < 1e-12  # decode is affine in the cached tokens at a fixed batch
    rng = np.random.default_rng(4)
    b = rng.integers(1, 1025, 200)
    kv = rng.integers(0, exact.kv_capacity_tokens, 200)
    np.testing.assert_allclose(tab.decode_step_time_s(b, kv), exact.decode_step_time_s(b, kv),
                               rtol=1e-12)
    assert tab.prefill_time_s(3000) == exact.prefill_time_s(3000)
    # closed form over k steps = the sum of the perf model's own steps
    k = DecodeKernel(tab)
    assert k.closed
    direct = float(np.sum(exact.decode_step_time_s(300, 50_000 + 300 * np.arange(25))))
    assert k.span(300, 50_000, 25) == pytest.approx(direct, rel=1e-12)
    # no affine fit in the batch holds over the whole range (why the table exists)
    assert LinearStepModel.fit(exact, exact_prefill=True)[1] > 0.05


def test_tabulated_model_closed_form_matches_reference():
    tab, _ = TabulatedStepModel.from_model(_perf_model(48))
    reqs = _workload(800, 40.0, seed=8)
    res = {}
    for mode in ("closed_form", "reference"):
        plan = SimPlan(pools=(PoolSpec("g", tab, replicas=2, routing="shared"),), mode=mode)
        res[mode] = simulate(plan, reqs).requests
    assert (res["closed_form"]["status"] == "completed").all()
    for col in ("start_s", "first_token_s", "finish_s"):
        assert np.max(np.abs(res["closed_form"][col] - res["reference"][col])) < 1e-6


def test_linear_fit_of_a_step_model():
    fitted, err = LinearStepModel.fit(MODEL)
    assert err < 1e-9
    assert fitted.decode_s_per_kv_token == pytest.approx(MODEL.decode_s_per_kv_token, rel=1e-6)


# ---------------------------------------------------------------------- invariants
def test_conservation_and_in_flight_at_horizon():
    reqs = _workload(3000, 25.0, seed=2)
    plan = SimPlan(
        pools=(PoolSpec("gpu", MODEL, replicas=2, max_queue=40),),
    )
    until = float(reqs.arrival_s[2000])
    r = simulate(plan, reqs, until_s=until)
    st = r.requests["status"].value_counts()
    assert st.sum() == len(reqs)
    assert st["completed"] + st["dropped"] + st["in_flight"] + st["pending"] == len(reqs)
    assert (
        st["dropped"] > 0
        and st["in_flight"] > 0
        and st["pending"] == (reqs.arrival_s >= until).sum()
    )
    df = r.requests
    assert (df.loc[df.status == "dropped", "drop_reason"] == "queue_full").all()
    assert (df.loc[df.status != "dropped", "drop_reason"] == "").all()
    done = df[df.status == "completed"]
    assert (done.finish_s <= until).all()
    assert (done.arrival_s <= done.start_s).all()
    assert (done.start_s <= done.first_token_s).all() and (
        done.first_token_s <= done.finish_s
    ).all()
    # nothing in flight has a time after the horizon
    assert not (df[["start_s", "first_token_s", "finish_s"]] > until).any().any()


def test_kv_and_batch_caps_are_never_exceeded():
    reqs = _workload(2000, 30.0, seed=9)
    r = simulate(_plan("closed_form", "shared"), reqs)
    df = r.requests
    for _, g in df.groupby("replica"):
        ev_t = np.concatenate([g.start_s, g.finish_s])
        ev_n = np.concatenate([np.ones(len(g)), -np.ones(len(g))])
        ev_kv = np.concatenate(
            [g.input_tokens + g.output_tokens, -(g.input_tokens + g.output_tokens)]
        )
        order = np.lexsort((ev_n, ev_t))  # completions before admissions at equal times
        assert np.cumsum(ev_n[order]).max() <= MODEL.max_batch
        assert np.cumsum(ev_kv[order]).max() <= MODEL.kv_capacity_tokens


def test_fcfs_within_a_shared_pool():
    reqs = _workload(2000, 30.0, seed=4)
    df = simulate(_plan("closed_form", "shared"), reqs).requests.sort_values("arrival_s")
    # each replica admits in arrival order
    for _, g in df.groupby("replica"):
        assert (np.diff(g.start_s.to_numpy()) >= 0).all()
    # requests that waited in the pool queue (longer than any step + prefill here) leave it
    # in arrival order, whichever replica takes them
    waited = df[df.queue_s > 5.0]
    assert len(waited) > 100
    assert (np.diff(waited.start_s.to_numpy()) >= 0).all()


def test_determinism_same_seed_same_records():
    reqs = _workload(1500, 12.0, seed=8)
    api = ApiTarget(
        ttft_s=0.4,
        output_tokens_per_s=50,
        input_usd_per_mtok=1,
        output_usd_per_mtok=4,
        latency_cv=0.3,
    )
    plan = SimPlan(
        pools=(PoolSpec("gpu", MODEL, replicas=2, routing="random", usd_per_replica_hour=2.0),),
        api=api,
        slos={"a": SLO(ttft_s=0.5)},
    )
    a = simulate(plan, reqs, seed=42).requests
    b = simulate(plan, reqs, seed=42).requests
    c = simulate(plan, reqs, seed=43).requests
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


# ---------------------------------------------------------------------- spillover, routing
def test_spillover_to_api_on_slo_and_its_latency_and_cost():
    reqs = _workload(3000, 40.0, seed=6, classes=("chat",))
    api = ApiTarget(
        name="hosted",
        ttft_s=0.6,
        output_tokens_per_s=80.0,
        input_usd_per_mtok=3.0,
        output_usd_per_mtok=15.0,
        cached_input_usd_per_mtok=0.3,
    )
    plan = SimPlan(
        pools=(PoolSpec("gpu", MODEL, replicas=1, usd_per_replica_hour=4.0),),
        api=api,
        slos={"chat": SLO(ttft_s=2.0)},
    )
    r = simulate(plan, reqs)
    df = r.requests
    spilled = df[df.route == "hosted"]
    assert 0.05 < len(spilled) / len(df) < 0.95
    assert (spilled.spill_reason == "slo").all()
    assert np.allclose(spilled.ttft_s, 0.6)
    assert np.allclose(spilled.e2e_s, 0.6 + spilled.output_tokens / 80.0)
    usd = (
        (spilled.input_tokens - spilled.cached_input_tokens) * 3.0
        + spilled.cached_input_tokens * 0.3
        + spilled.output_tokens * 15.0
    ) / 1e6
    assert np.allclose(spilled.cost_usd, usd)
    # without the API, the same load queues up far beyond the SLO
    r0 = simulate(SimPlan(pools=plan.pools, slos=plan.slos), reqs)
    assert r0.requests.ttft_s.quantile(0.9) > 4 * df.ttft_s.quantile(0.9)
    # cost split: GPU-hours x price + API tokens = total = sum of per-request costs
    dep = r.deployments.set_index("deployment")
    assert dep.loc["gpu", "usd"] == pytest.approx(dep.loc["gpu", "replica_hours"] * 4.0)
    assert dep.loc["gpu", "replica_hours"] == pytest.approx(r.period_s / 3600.0)
    assert dep.loc["hosted", "usd"] == pytest.approx(usd.sum())
    assert dep.loc["total", "usd"] == pytest.approx(df.cost_usd.sum())
    assert r.totals()["spillover_share"] == pytest.approx(len(spilled) / len(df))


def test_queue_limit_spills_or_drops():
    reqs = _workload(2000, 60.0, seed=3, classes=("x",))
    pool = PoolSpec("gpu", MODEL, replicas=1, routing="jsq", max_queue=5)
    dropped = simulate(SimPlan(pools=(pool,)), reqs).requests
    assert (dropped.drop_reason == "queue_full").sum() > 100
    spilled = simulate(SimPlan(pools=(pool,), api=ApiTarget()), reqs).requests
    assert (spilled.status == "dropped").sum() == 0
    assert (spilled.spill_reason == "queue_full").sum() == (
        dropped.drop_reason == "queue_full"
    ).sum()


def test_class_routing_to_pools_and_api_only_classes():
    reqs = _workload(1500, 10.0, seed=1, classes=("chat", "code", "batch"))
    small = PoolSpec("small", MODEL, replicas=1, classes=("chat",))
    big = PoolSpec("big", MODEL, replicas=2, classes=("code",))
    plan = SimPlan(pools=(small, big), api=ApiTarget(name="api", classes=("batch",)))
    df = simulate(plan, reqs).requests
    assert set(df[df["class"] == "chat"].route) == {"small"}
    assert set(df[df["class"] == "code"].route) == {"big"}
    assert set(df[df["class"] == "batch"].route) == {"api"}
    assert set(df[df["class"] == "batch"].spill_reason) == {"api_class"}
    # no API and no pool for a class: dropped with reason
    df2 = simulate(SimPlan(pools=(small,)), reqs).requests
    assert set(df2[df2["class"] != "chat"].drop_reason) == {"no_route"}


def test_request_larger_than_kv_capacity_is_dropped():
    reqs = RequestTable.from_arrays([0.0, 1.0], [100, 70_000], [10, 10])
    df = simulate(SimPlan(pools=(PoolSpec("gpu", MODEL),)), reqs).requests
    assert list(df.status) == ["completed", "dropped"]
    assert df.drop_reason.iloc[1] == "exceeds_kv_capacity"


def test_jsq_balances_and_least_kv_prefers_light_replicas():
    reqs = _workload(3000, 15.0, seed=12)
    for routing in ("jsq", "least_kv"):
        df = simulate(_plan("closed_form", routing), reqs).requests
        counts = df.replica.value_counts()
        assert counts.min() > 0.25 * len(df)


# ---------------------------------------------------------------------- autoscaling, outputs
def test_autoscaling_adds_replicas_after_startup_delay():
    rng = np.random.default_rng(0)
    # quiet hour, then a 10x surge
    t = np.sort(np.concatenate([rng.uniform(0, 1800, 900), rng.uniform(1800, 3600, 9000)]))
    n = t.size
    reqs = RequestTable.from_arrays(t, rng.integers(100, 1500, n), rng.integers(20, 200, n))
    auto = Autoscale(min_replicas=1, max_replicas=6, interval_s=60, startup_s=180, target_share=0.5)
    pool = PoolSpec("gpu", MODEL, replicas=1, usd_per_replica_hour=3.0, max_batch=8, autoscale=auto)
    r = simulate(SimPlan(pools=(pool,)), reqs)
    ev = r.scale_events
    starts = ev[ev.action == "start"]
    ready = ev[ev.action == "ready"]
    assert len(starts) >= 1 and len(ready) >= 1
    assert starts.time_s.min() >= 1800 - 60
    first = starts.sort_values("time_s").iloc[0]
    assert ready[ready.replica == first.replica].time_s.iloc[0] == pytest.approx(first.time_s + 180)
    df = r.requests
    assert df.replica.nunique() > 1
    late = df[df.replica == first.replica]
    assert late.start_s.min() >= first.time_s + 180
    # GPU hours include the extra replicas from their start decision
    hours = r.deployments.set_index("deployment").loc["gpu", "replica_hours"]
    assert hours > r.period_s / 3600.0
    assert (df.status == "completed").all()


def test_summary_and_utilisation_frames():
    reqs = _workload(4000, 2.0, seed=10)  # spans ~33 minutes
    plan = SimPlan(
        pools=(PoolSpec("gpu", MODEL, replicas=2, usd_per_replica_hour=2.5),),
        slos={"a": SLO(ttft_s=0.5, tpot_s=0.05), "b": SLO(e2e_s=30.0)},
        util_interval_s=600,
    )
    r = simulate(plan, reqs)
    s = r.summary()
    assert list(s.columns) == ["section", "class", "hour", "deployment", "metric", "value"]
    lat = s[(s.section == "latency") & (s["class"] == "all")].set_index("metric").value
    df = r.requests
    assert lat["requests"] == len(df)
    assert lat["ttft_p99_s"] == pytest.approx(df.ttft_s.quantile(0.99))
    assert lat["e2e_p50_s"] == pytest.approx(df.e2e_s.quantile(0.5))
    met = ((df["class"] == "a") & (df.ttft_s <= 0.5) & ~(df.tpot_s > 0.05)) | (
        (df["class"] == "b") & (df.e2e_s <= 30.0)
    )
    assert lat["slo_attainment"] == pytest.approx(met.mean())
    assert lat["goodput_rps"] == pytest.approx(met.sum() / r.period_s)
    hourly = s[s.section == "hourly"]
    assert set(hourly.hour) == set((df.arrival_s // 3600).astype(int))
    u = r.utilisation
    assert set(u.replica) == {0, 1}
    assert u.paid_s.sum() == pytest.approx(2 * r.period_s)
    # time-averaged running requests x paid time = total request residence time
    resid = (df.finish_s - df.start_s).sum()
    assert (u.mean_batch * u.paid_s).sum() == pytest.approx(resid, rel=1e-9)
    assert ((u.busy_share >= 0) & (u.busy_share <= 1 + 1e-12)).all()
    assert u.completed.sum() == len(df)


def test_progress_goes_to_a_callback_and_nothing_is_printed(capsys):
    reqs = _workload(200, 5.0, seed=1)
    seen = []
    r = simulate(SimPlan(pools=(PoolSpec("gpu", MODEL),)), reqs,
                 progress=lambda done, total: seen.append((done, total)))
    assert (r.requests.status == "completed").all()
    assert seen and seen[-1] == (len(reqs), len(reqs))
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_bad_inputs_raise_planner_errors():
    with pytest.raises(PlannerError, match="routing"):
        PoolSpec("p", MODEL, routing="round_robin")
    with pytest.raises(PlannerError, match="arrival_s"):
        RequestTable(
            np.array([2.0, 1.0]), np.zeros(2, np.int32), ("a",), np.ones(2), np.ones(2), np.zeros(2)
        )
    with pytest.raises(PlannerError, match="output_tokens"):
        RequestTable.from_arrays([0.0], [10], [0])
    with pytest.raises(PlannerError, match="mode"):
        SimPlan(pools=(PoolSpec("p", MODEL),), mode="fast")
    with pytest.raises(PlannerError, match="seed or rng"):
        simulate(
            SimPlan(pools=(PoolSpec("p", MODEL),)),
            RequestTable.empty(),
            seed=1,
            rng=np.random.default_rng(),
        )
    assert math.isinf(SLO().ttft_s)


def test_write_result_and_requests_from_traces(tmp_path):
    from planner.sim import requests_from_traces, write_result

    src = tmp_path / "t.csv"
    pd.DataFrame(
        {
            "TIMESTAMP": [
                "2023-11-16 18:00:00.5",
                "2023-11-16 18:00:01.0",
                "2023-11-16 18:00:03.0",
            ],
            "ContextTokens": [100, 200, 300],
            "GeneratedTokens": [5, 6, 7],
        }
    ).to_csv(src, index=False)
    reqs = requests_from_traces([src, src], class_names=["x", "y"])
    assert len(reqs) == 6 and set(reqs.class_names) == {"x", "y"}
    r = simulate(SimPlan(pools=(PoolSpec("gpu", MODEL),)), reqs)
    paths = write_result(r, tmp_path / "out")
    assert set(paths) == {"requests", "utilisation", "summary", "deployments"}
    back = pd.read_csv(paths["requests"])
    assert len(back) == 6 and back.finish_s.notna().all()
    with pytest.raises(PlannerError, match="fmt"):
        write_result(r, tmp_path / "o2", fmt="xlsx")


def test_modes_agree_with_autoscaling_spillover_and_horizon():
    rng = np.random.default_rng(0)
    t = np.sort(np.concatenate([rng.uniform(0, 600, 300), rng.uniform(600, 1200, 3000)]))
    n = t.size
    reqs = RequestTable.from_arrays(t, rng.integers(100, 1500, n), rng.integers(20, 200, n))
    auto = Autoscale(min_replicas=1, max_replicas=4, interval_s=60, startup_s=120, target_share=0.5)
    out = {}
    for mode in ("closed_form", "reference"):
        pool = PoolSpec("gpu", MODEL, replicas=1, max_batch=8, autoscale=auto, routing="jsq")
        plan = SimPlan(pools=(pool,), api=ApiTarget(), slos={"default": SLO(ttft_s=3.0)}, mode=mode)
        out[mode] = simulate(plan, reqs, until_s=1150.0)
    a, b = out["closed_form"].requests, out["reference"].requests
    assert (a.route == "api").sum() > 0 and (a.status == "in_flight").sum() > 0
    assert len(out["closed_form"].scale_events) > 0
    pd.testing.assert_frame_equal(out["closed_form"].scale_events, out["reference"].scale_events)
    assert (
        (a.status == b.status).all()
        and (a.route == b.route).all()
        and (a.replica == b.replica).all()
    )
    for col in ("start_s", "first_token_s", "finish_s"):
        assert np.nanmax(np.abs(a[col] - b[col])) < 1e-6
