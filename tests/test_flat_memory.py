"""Flat memory: what the Monte Carlo engine and the simulator keep per sample / per request.

Monte Carlo: :class:`planner.engines.risk.stats.CostColumns` gives the statistics of the full
cost array exactly, however the samples are split into chunks, and keeps less than it.
Simulator: compact per-request records, and aggregate-only results equal to the full ones.
"""

from __future__ import annotations

import pickle
import tomllib
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from planner.config import parse_scenario
from planner.engines.risk.compiled import compile_scenario
from planner.engines.risk.run import run_montecarlo
from planner.engines.risk.sampling import chunk_sizes, root_seed
from planner.engines.risk.stats import CostColumns, summarise, win_probability
from planner.errors import PlannerError
from planner.sim import SLO, ApiTarget, LinearStepModel, PoolSpec, RequestTable, SimPlan, simulate
from planner.sim.engine import _int_list
from planner.sim.output import write_result
from planner.uncertain import risk_tables

TEMPLATE = Path(__file__).resolve().parents[1] / "planner" / "templates" / "risk-example.toml"


@pytest.fixture(scope="module")
def risk():
    rest, corr, _ = risk_tables(tomllib.loads(TEMPLATE.read_text(encoding="utf-8")))
    sc = parse_scenario(rest, path=str(TEMPLATE))
    return sc, corr, compile_scenario(sc, correlations=corr)


def _costs(model, n, seed=7):
    root = root_seed(seed)
    return np.concatenate([model.run_chunk(root, c, s)[0]
                           for c, s in enumerate(chunk_sizes(n))], axis=2)


def _filled(costs, comparable, step):
    store = CostColumns(costs.shape[1], costs.shape[2], comparable)
    for lo in range(0, costs.shape[2], step):
        store.add(costs[:, :, lo:lo + step])
    return store


# ---------------------------------------------------------------------- Monte Carlo
def test_cost_columns_statistics_equal_the_full_array_for_any_chunking(risk):
    _, _, model = risk
    costs = _costs(model, 70_000)
    comp = [model.option_names.index(c) for c in model.comparable()]
    ref_sum = summarise(model, costs)
    ref_win = win_probability(model, costs[0])
    for step in (997, 32_768, 70_000):
        store = _filled(costs, comp, step)
        pd.testing.assert_frame_equal(summarise(model, store), ref_sum, check_exact=True)
        pd.testing.assert_frame_equal(win_probability(model, store), ref_win, check_exact=True)
        for kind in (0, 1, 2):
            for j in range(costs.shape[1]):
                assert np.array_equal(store.column(kind, j), costs[kind, j])


def test_cost_columns_keep_less_than_the_full_array(risk):
    _, _, model = risk
    costs = _costs(model, 40_000)
    store = _filled(costs, [], 32_768)
    own = {k: [j for j in range(costs.shape[1]) if store.state[k][j][0] == "own"]
           for k in (1, 2)}
    for k in (1, 2):  # a stored column is one that varies and equals no earlier one
        for j in own[k]:
            assert costs[k, j].min() < costs[k, j].max()
            assert not any(np.array_equal(costs[k, i], costs[k, j]) for i in range(j))
    assert store.stored_bytes() == costs[0].nbytes + 8 * costs.shape[2] * (
        len(own[1]) + len(own[2]))
    assert store.stored_bytes() < costs.nbytes


def test_cost_columns_materialise_exactly_when_a_column_starts_to_vary():
    rng = np.random.default_rng(3)
    n = 10_000
    costs = np.empty((3, 3, n))
    costs[0] = rng.random((3, n))
    costs[1, 0] = 5.0
    costs[1, 0, 6_000:] = rng.random(n - 6_000)  # constant, then varies
    costs[1, 1] = 0.0
    costs[1, 2] = -0.0  # equal to 0.0, not the same bits: kept apart from option 1
    costs[2, 0] = rng.random(n)
    costs[2, 1] = costs[2, 0]
    costs[2, 1, 8_500:] += 1.0  # equal to option 0's tokens, then differs
    costs[2, 2] = costs[2, 0]  # equal throughout
    for step in (1_000, 3_333, n):
        store = _filled(costs, [0, 1, 2], step)
        for kind in (0, 1, 2):
            for j in range(3):
                col = store.column(kind, j)
                assert np.array_equal(col.view(np.uint64), costs[kind, j].view(np.uint64))
        assert store.state[2][2] == ("alias", 0)
        assert store.state[1][1][0] == "const" and store.state[1][0][0] == "own"
        assert store.win_counts.sum() == n
        assert np.array_equal(store.win_counts,
                              np.bincount(np.argmin(costs[0], axis=0), minlength=3))


def test_run_is_independent_of_threads(risk):
    sc, corr, _ = risk
    a = run_montecarlo(sc, n=100_000, seed=5, correlations=corr, threads=1)
    b = run_montecarlo(sc, n=100_000, seed=5, correlations=corr, threads=3)
    for name, t in a.tables().items():
        pd.testing.assert_frame_equal(t, b.tables()[name], check_exact=True)
    assert np.array_equal(a.samples.to_numpy(), b.samples.to_numpy())


def test_run_peak_memory_per_sample_is_bounded(risk):
    """Peak traced memory of a run (numpy buffers included) per extra sample (the slope
    between two run sizes, so that a chunk's pricing temporaries, a constant, drop out): the
    kept monthly costs (8 bytes per option), the one-off and token columns that vary, and one
    summary job's arrays (the metric, a finite-mask copy and a temporary); the previous engine
    kept 3 x 8 bytes per option plus a copy of the monthly costs and win-count temporaries."""
    sc, corr, model = risk
    n_opt = len(model.options)

    def peak(n):
        tracemalloc.start()
        try:
            run_montecarlo(sc, n=n, seed=1, correlations=corr, threads=1, compiled=model,
                           sensitivity=False)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(1_000)
    lo, hi = 100_000, 300_000
    slope = (peak(hi) - peak(lo)) / (hi - lo)
    store = _filled(_costs(model, 40_000), [], 32_768)
    stored = store.stored_bytes() / 40_000  # bytes per sample kept
    assert slope <= stored + 3 * 8 + 2, (slope, stored)
    assert slope < 3 * 8 * n_opt + 8 * n_opt


# ---------------------------------------------------------------------- simulator
MODEL = LinearStepModel(0.02, 1e-4, 0.01, 1e-4, 1e-7, kv_capacity_tokens=12_000, max_batch=4)


def _requests(n=8_000, seed=11, hours=2.0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0.0, hours * 3600.0, n))
    cls = rng.choice(["chat", "batch", "rare"], n, p=[0.6, 0.39, 0.01])
    return RequestTable.from_arrays(t, rng.integers(50, 3_000, n), rng.integers(1, 400, n), cls)


def _plan(**kw):
    # "rare" has no pool and the API does not take it: dropped
    pools = (PoolSpec("gpu", MODEL, replicas=1, usd_per_replica_hour=2.5, max_queue=10,
                      classes=("chat", "batch")),)
    api = ApiTarget(input_usd_per_mtok=1.0, output_usd_per_mtok=3.0, latency_cv=0.3,
                    classes=("chat",))
    slos = {"chat": SLO(ttft_s=1.5, tpot_s=0.05), "batch": SLO(e2e_s=60.0)}
    return SimPlan(pools=pools, api=api, slos=slos, **kw)


@pytest.mark.parametrize("until_s", [None, 1.8 * 3600.0])
def test_aggregate_results_equal_the_full_records(until_s):
    reqs = _requests()
    full = simulate(_plan(), reqs, seed=4, until_s=until_s)
    agg = simulate(_plan(), reqs, seed=4, until_s=until_s, records="aggregate")
    assert full.records == "full" and agg.records == "aggregate" and agg.requests is None
    st = full.requests["status"].value_counts()
    assert st.get("completed", 0) and st.get("dropped", 0)
    assert (full.requests.route_kind == "api").sum()
    if until_s is not None:
        assert st.get("in_flight", 0) + st.get("pending", 0) > 0
    # same code on the same columns: identical, counts and quantiles alike
    pd.testing.assert_frame_equal(agg.summary(), full.summary(), check_exact=True)
    pd.testing.assert_frame_equal(agg.latency_table(), full.latency_table(), check_exact=True)
    assert agg.totals() == full.totals()
    assert agg.met_output_tokens() == full.met_output_tokens()
    assert agg.slo_bound_counts() == full.slo_bound_counts()
    pd.testing.assert_frame_equal(agg.deployments, full.deployments, check_exact=True)
    pd.testing.assert_frame_equal(agg.utilisation, full.utilisation, check_exact=True)
    # SLO bound counts agree with the records
    df = full.requests
    done = df[df.status.isin(["completed", "dropped"]) & (df["class"] == "chat")]
    ok = ((done.status == "completed") & ~(done.ttft_s > 1.5)).sum()
    assert full.slo_bound_counts()[("chat", "ttft_s")] == (ok, len(done))
    back = pickle.loads(pickle.dumps(agg))
    pd.testing.assert_frame_equal(back.summary(), agg.summary())


def test_compact_records_per_request():
    reqs = _requests()
    res = simulate(_plan(), reqs, seed=4)
    df = res.requests
    assert df.memory_usage(deep=True, index=True).sum() / len(df) <= 150
    for c in ("class", "route", "route_kind", "status", "drop_reason", "spill_reason"):
        assert isinstance(df[c].dtype, pd.CategoricalDtype)
    # derived columns are the definitions of planner.sim.results
    np.testing.assert_array_equal(df.queue_s, df.start_s - df.arrival_s)
    np.testing.assert_array_equal(df.e2e_s, df.finish_s - df.arrival_s)
    # the frame does not share memory with the caller's request table
    assert not np.shares_memory(df["arrival_s"].to_numpy(), reqs.arrival_s)


def test_aggregate_output_writes_no_request_table(tmp_path):
    res = simulate(_plan(), _requests(800), seed=1, records="aggregate")
    written = write_result(res, tmp_path)
    assert "requests" not in written and "summary" in written
    back = pd.read_csv(written["summary"])
    assert len(back) == len(res.summary())


def test_records_option_is_checked():
    with pytest.raises(PlannerError, match="records"):
        simulate(_plan(), _requests(50), records="some")


def test_int_list_shares_objects_and_keeps_values():
    a = np.array([300, 5000, 300, 5000, 12, 300], dtype=np.int64)
    out = _int_list(a)
    assert out == a.tolist()
    assert out[0] is out[2] is out[5]
    wide = np.array([0, 10**12], dtype=np.int64)  # too many distinct values for a table
    assert _int_list(wide) == wide.tolist()
    assert _int_list(np.array([], dtype=np.int64)) == []


def test_cli_aggregate_only_prints_and_writes_the_same_figures(capsys, write_toml, tmp_path):
    from planner.cli import main
    from tests.test_sim_cli import SMALL

    path = write_toml(SMALL)
    outs = {}
    for flag in ((), ("--aggregate-only",)):
        d = tmp_path / ("agg" if flag else "full")
        code = main(["simulate", str(path), "--format", "json", "-q", "--out", str(d), *flag])
        assert code == 0
        outs[bool(flag)] = (capsys.readouterr().out, d)
    (full_out, full_dir), (agg_out, agg_dir) = outs[False], outs[True]
    assert agg_out == full_out
    written = {p.name for p in agg_dir.iterdir()}
    assert "requests.csv" not in written and "requests.csv" in {p.name for p in full_dir.iterdir()}
    for name in written:  # every table written by both is the same
        pd.testing.assert_frame_equal(pd.read_csv(agg_dir / name), pd.read_csv(full_dir / name))
