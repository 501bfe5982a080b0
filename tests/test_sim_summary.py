"""Simulator summaries: the group quantiles against pandas, and the summary rows of a run
against a pandas group-by of its per-request frame (the way they were computed before)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from planner.sim import LinearStepModel, PoolSpec, RequestTable, SimPlan, simulate
from planner.sim.plan import SLO
from planner.sim.results import group_quantiles

QS = (0.5, 0.9, 0.99)


@pytest.mark.parametrize("n_groups", [1, 3, 40, 300])
def test_group_quantiles_are_pandas_groupby_quantiles_bit_for_bit(n_groups):
    rng = np.random.default_rng(n_groups)
    n = 5_000
    # ties (rounded values), NaNs, a group with only NaNs, groups with 0, 1 and 2 values
    v = np.round(rng.lognormal(0.0, 1.0, n), 2)
    v[rng.random(n) < 0.05] = np.nan
    g = rng.integers(0, n_groups, n)
    if n_groups > 3:
        v[g == 1] = np.nan  # all NaN
        keep = g != 2  # no value at all
        v, g = v[keep], g[keep]
        g[: 1] = 3
        v = np.where(g == 3, np.nan, v)
        v[0] = 7.25  # group 3: one value
    got = group_quantiles(v, g, n_groups, QS)
    ref = pd.Series(v).groupby(g).quantile(list(QS)).unstack()
    ref = ref.reindex(index=range(n_groups), columns=list(QS)).to_numpy()
    assert got.shape == (n_groups, len(QS))
    np.testing.assert_array_equal(got, ref)  # NaN where pandas has NaN, same floats elsewhere


def _reference_rows(res, by_hour):
    """The per-class latency rows by a pandas group-by of the requests frame."""
    df = res.requests
    hour = (df["arrival_s"] // 3600).astype(np.int64) if by_hour else pd.Series(-1, df.index)
    out = {}
    for cname in ["all", *df["class"].cat.categories]:
        sub = df if cname == "all" else df[df["class"] == cname]
        if not len(sub):
            continue
        keys = hour[sub.index]
        comp = sub["status"] == "completed"
        g = sub.groupby(keys)
        agg = pd.DataFrame({
            "requests": g.size(),
            "completed": comp.groupby(keys).sum(),
            "queue_mean_s": g["queue_s"].mean(),
        })
        for m in ("ttft_s", "tpot_s", "e2e_s"):
            q = sub.loc[comp, m].groupby(keys[comp]).quantile(list(QS)).unstack()
            for p in QS:
                agg[f"{m[:-2]}_p{int(round(p * 100))}_s"] = q[p] if p in q.columns else np.nan
        out[cname] = agg
    return out


@pytest.mark.parametrize("by_hour", [False, True])
def test_summary_rows_equal_a_pandas_groupby_of_the_records(by_hour):
    rng = np.random.default_rng(5)
    n = 6_000
    t = np.sort(rng.uniform(0.0, 3 * 3600.0, n))
    cls = rng.choice(["chat", "batch"], n, p=[0.7, 0.3])
    reqs = RequestTable.from_arrays(t, rng.integers(50, 2_000, n), rng.integers(1, 300, n), cls)
    model = LinearStepModel(0.01, 1e-4, 0.01, 1e-4, 1e-7, kv_capacity_tokens=60_000,
                            max_batch=32)
    plan = SimPlan(pools=(PoolSpec("gpu", model, replicas=1, usd_per_replica_hour=2.0),),
                   slos={"chat": SLO(ttft_s=2.0)})
    res = simulate(plan, reqs, seed=1, until_s=2.9 * 3600.0)
    assert (res.requests["status"] != "completed").any()  # in flight / pending ones too
    rows = res.summary()
    rows = rows[rows["section"] == ("hourly" if by_hour else "latency")]
    ref = _reference_rows(res, by_hour)
    assert set(rows["class"]) == set(ref)
    for cname, agg in ref.items():
        mine = rows[rows["class"] == cname].pivot_table(index="hour", columns="metric",
                                                        values="value", dropna=False)
        for col in agg.columns:
            np.testing.assert_array_equal(mine[col].to_numpy(), agg[col].to_numpy(float),
                                          err_msg=f"{cname} {col}")


def test_one_class_holding_every_request_repeats_the_all_rows():
    rng = np.random.default_rng(2)
    n = 3_000
    reqs = RequestTable.from_arrays(np.sort(rng.uniform(0, 7200.0, n)),
                                    rng.integers(50, 900, n), rng.integers(1, 200, n))
    model = LinearStepModel(0.01, 1e-4, 0.01, 1e-4, 1e-7, kv_capacity_tokens=60_000,
                            max_batch=32)
    res = simulate(SimPlan(pools=(PoolSpec("gpu", model, replicas=1,
                                           usd_per_replica_hour=2.0),)), reqs)
    s = res.summary()
    for sec in ("latency", "hourly"):
        a = s[(s.section == sec) & (s["class"] == "all")].drop(columns="class")
        only = [c for c in s["class"].unique() if c != "all"]
        assert len(only) == 1
        b = s[(s.section == sec) & (s["class"] == only[0])].drop(columns="class")
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
        assert len(a) and a["value"].notna().any()
