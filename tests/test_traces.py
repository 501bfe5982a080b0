"""Trace import, replay through the simulator, and fitting a workload class."""

from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from planner.errors import PlannerError
from planner.sim import LinearStepModel, PoolSpec, SimPlan, simulate
from planner.traces import (
    TraceColumns,
    azure_trace,
    discrete_lognormal_ks,
    fit_trace,
    load_trace,
    replay,
)


@pytest.fixture(scope="module")
def conv():
    return azure_trace("conv")


def test_shipped_azure_traces_load(conv):
    # counts and spans as documented in planner/data/traces/README.md
    assert len(conv) == 19_366
    assert conv.duration_s == pytest.approx(3501.72, abs=0.01)
    assert str(conv.start) == "2023-11-16 18:15:46.680590+00:00"
    assert conv.rate_per_s == pytest.approx(5.53, abs=0.01)
    code = azure_trace("code")
    assert len(code) == 8_819
    assert (np.diff(conv.arrival_s) >= 0).all() and conv.arrival_s[0] == 0.0
    raw = pd.read_csv(resources.files("planner") / "data/traces/azure_llm_2023_conv.csv")
    assert conv.input_tokens.sum() == raw.ContextTokens.sum()
    assert conv.output_tokens.sum() == raw.GeneratedTokens.sum()


def test_column_mapping_csv_jsonl_and_units(tmp_path):
    df = pd.DataFrame(
        {
            "ts_ms": [1_700_000_002_500, 1_700_000_000_000, 1_700_000_001_000],
            "prompt": [10, 20, 30],
            "completion": [1, 2, 3],
            "tenant": ["a", "b", "a"],
        }
    )
    csv = tmp_path / "t.csv"
    df.to_csv(csv, index=False)
    cols = TraceColumns(
        timestamp="ts_ms",
        timestamp_unit="ms",
        input_tokens="prompt",
        output_tokens="completion",
        class_column="tenant",
    )
    tr = load_trace(csv, cols)
    assert tr.arrival_s.tolist() == [0.0, 1.0, 2.5]  # sorted by time
    assert tr.input_tokens.tolist() == [20, 30, 10]
    assert tr.classes.tolist() == ["b", "a", "a"]
    jl = tmp_path / "t.jsonl"
    with jl.open("w") as f:
        for ts, p, c in [("16/11/2023 10:00:01", 5, 6), ("16/11/2023 10:00:00", 7, 8)]:
            f.write(json.dumps({"time": ts, "in": p, "out": c}) + "\n")
    tr2 = load_trace(
        jl,
        TraceColumns(
            timestamp="time",
            timestamp_format="%d/%m/%Y %H:%M:%S",
            input_tokens="in",
            output_tokens="out",
        ),
    )
    assert tr2.arrival_s.tolist() == [0.0, 1.0] and tr2.input_tokens.tolist() == [7, 5]
    reqs = replay(tr)  # keeps the class column
    assert list(reqs.class_names) == ["a", "b"]


def test_parquet_needs_pyarrow_or_roundtrips(tmp_path):
    p = tmp_path / "t.parquet"
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        p.write_bytes(b"PAR1")
        with pytest.raises(PlannerError, match="pip install pyarrow"):
            load_trace(p)
        return
    pd.DataFrame(
        {
            "TIMESTAMP": ["2023-01-01 00:00:00", "2023-01-01 00:00:02"],
            "ContextTokens": [1, 2],
            "GeneratedTokens": [3, 4],
        }
    ).to_parquet(p)
    assert load_trace(p).arrival_s.tolist() == [0.0, 2.0]


def test_trace_errors_name_the_problem(tmp_path):
    p = tmp_path / "bad.csv"
    pd.DataFrame(
        {
            "TIMESTAMP": ["2023-01-01 00:00:00", "yesterday"],
            "ContextTokens": [1, 2],
            "GeneratedTokens": [3, 4],
        }
    ).to_csv(p, index=False)
    with pytest.raises(PlannerError, match="row 1"):
        load_trace(p)
    with pytest.raises(PlannerError, match="missing column"):
        load_trace(p, TraceColumns(input_tokens="prompt"))
    pd.DataFrame(
        {"TIMESTAMP": ["2023-01-01 00:00:00"], "ContextTokens": [1.5], "GeneratedTokens": [3]}
    ).to_csv(p, index=False)
    with pytest.raises(PlannerError, match="whole number"):
        load_trace(p)
    with pytest.raises(PlannerError, match="not found"):
        load_trace(tmp_path / "missing.csv")
    with pytest.raises(PlannerError, match="format"):
        load_trace(p, fmt="xlsx")


def test_replay_on_the_simulator_reproduces_the_trace_exactly(conv):
    model = LinearStepModel(
        0.004, 6e-5, 0.007, 6e-5, 2.5e-8, kv_capacity_tokens=400_000, max_batch=256
    )
    plan = SimPlan(pools=(PoolSpec("h100", model, replicas=2, usd_per_replica_hour=3.0),))
    res = simulate(plan, replay(conv, class_name="conv"))
    df = res.requests
    assert len(df) == len(conv)
    assert (df.status == "completed").all()
    assert np.array_equal(df.arrival_s.to_numpy(), conv.arrival_s)
    assert np.array_equal(df.input_tokens.to_numpy(), conv.input_tokens)
    assert np.array_equal(df.output_tokens.to_numpy(), conv.output_tokens)
    n = len(df)
    assert (n - 1) / (df.arrival_s.iloc[-1] - df.arrival_s.iloc[0]) == conv.rate_per_s
    for q in (0.5, 0.9, 0.99):
        assert df.input_tokens.quantile(q) == np.quantile(conv.input_tokens, q)
        assert df.output_tokens.quantile(q) == np.quantile(conv.output_tokens, q)
    # per-hour arrivals in the summary are the trace's
    s = res.summary()
    hourly = s[(s.section == "hourly") & (s["class"] == "all") & (s.metric == "requests")]
    assert hourly.value.sum() == len(conv)


def test_rate_scaled_replay(conv):
    fast = replay(conv, rate_scale=2.0)
    assert len(fast) == len(conv)
    assert fast.arrival_s[-1] == pytest.approx(conv.arrival_s[-1] / 2)
    day = replay(conv, rate_scale=1.5, duration_s=86_400)
    assert day.arrival_s.max() < 86_400
    rate = len(day) / 86_400
    assert rate == pytest.approx(1.5 * conv.rate_per_s, rel=0.001)
    assert np.mean(day.output_tokens) == pytest.approx(conv.output_tokens.mean(), rel=0.01)
    with pytest.raises(PlannerError, match="rate_scale"):
        replay(conv, rate_scale=0)


def test_discrete_ks_matches_brute_force():
    rng = np.random.default_rng(0)
    v = np.rint(np.exp(rng.normal(4.0, 0.8, 500))).astype(np.int64)
    mu, s = 4.1, 0.7
    grid = np.arange(0, v.max() + 2)
    emp = np.array([(v <= k).mean() for k in grid])
    model = np.array(
        [0.5 * math.erfc(-(math.log(k + 0.5) - mu) / (s * math.sqrt(2))) for k in grid]
    )
    assert discrete_lognormal_ks(v, mu, s) == pytest.approx(np.abs(emp - model).max(), abs=1e-12)


def test_fit_recovers_a_known_workload():
    rng = np.random.default_rng(1)
    n = 20_000
    t = np.cumsum(rng.exponential(0.2, n))
    from planner.traces import Trace

    inp = np.maximum(1, np.rint(np.exp(rng.normal(6.0, 0.9, n)))).astype(np.int64)
    out = np.maximum(1, np.rint(np.exp(rng.normal(4.5, 0.6, n)))).astype(np.int64)
    fit = fit_trace(Trace(t - t[0], inp, out, source="synthetic"))
    assert fit.rate_per_s == pytest.approx(5.0, rel=0.02)
    assert fit.interarrival_cv == pytest.approx(1.0, abs=0.03)
    assert fit.input_mu == pytest.approx(6.0, abs=0.02) and fit.input_sigma == pytest.approx(
        0.9, abs=0.02
    )
    assert fit.output_mu == pytest.approx(4.5, abs=0.02)
    assert fit.input_ks < 0.02 and fit.output_ks < 0.03
    assert fit.gap_ks_exponential < 0.02
    assert fit.dispersion_60s == pytest.approx(1.0, abs=0.3)
    tab = fit.table()
    assert set(tab.columns) == {"trace", "metric", "value"}
    assert tab.set_index("metric").loc["requests", "value"] == n


def test_fit_azure_traces_and_regenerate(conv):
    f_conv = fit_trace(conv, name="conv")
    f_code = fit_trace(azure_trace("code"), name="code")
    # conversation: near-Poisson gaps; code: very bursty (see planner/data/traces/README.md)
    assert f_conv.interarrival_cv == pytest.approx(1.09, abs=0.02)
    assert f_code.interarrival_cv > 10
    assert f_code.gap_ks_exponential > 5 * f_conv.gap_ks_exponential
    cls = f_conv.to_class(lengths="empirical")
    assert cls.burstiness is not None and cls.burstiness.cv == pytest.approx(f_conv.interarrival_cv)
    reqs = cls.generate(2, np.random.default_rng(3))
    assert len(reqs) / 7200 == pytest.approx(conv.rate_per_s, rel=0.03)
    assert np.mean(reqs.input_tokens) == pytest.approx(conv.input_tokens.mean(), rel=0.05)
    ln = f_conv.to_class(lengths="lognormal", burstiness=False)
    assert ln.burstiness is None
    assert ln.input_tokens.median == pytest.approx(math.exp(f_conv.input_mu))
