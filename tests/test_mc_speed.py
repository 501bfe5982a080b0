"""Monte Carlo speed-ups that must not change a number: the same seed gives the same bits.

Each faster path is compared, bit for bit, with the straightforward computation it replaces
(written out here from its definition): blocked pricing of a chunk against one evaluation of
the whole chunk, and the inverse CDFs against their textbook formulas.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import TypeAdapter

from planner.config import load_scenario, parse_scenario
from planner.distributions import Distribution, _choice_table
from planner.engines.risk.compiled import EVAL_BLOCK, compile_scenario
from planner.engines.risk.run import run_montecarlo
from planner.engines.risk.sampling import CHUNK_SIZE, root_seed
from planner.engines.risk.stats import tail_stats
from planner.engines.risk.tornado import _average_ranks
from planner.stats import cvar
from planner.uncertain import risk_tables
from tests.test_montecarlo import KITCHEN_SINK_A, KITCHEN_SINK_B

ROOT = Path(__file__).resolve().parent.parent


def _bits(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)


def _models():
    path = ROOT / "planner" / "templates" / "risk-example.toml"
    rest, corr, _ = risk_tables(tomllib.loads(path.read_text(encoding="utf-8")))
    yield "risk-example", compile_scenario(parse_scenario(rest, path=str(path)),
                                           correlations=corr)
    yield "quickstart", compile_scenario(load_scenario(ROOT / "planner" / "templates"
                                                       / "quickstart.toml"))
    yield "hybrid-support-bot", compile_scenario(
        load_scenario(ROOT / "studies" / "hybrid-support-bot" / "scenario.toml"))
    for name, text in (("sink-a", KITCHEN_SINK_A), ("sink-b", KITCHEN_SINK_B)):
        yield name, compile_scenario(parse_scenario(tomllib.loads(text)))


MODELS = list(_models())


@pytest.mark.parametrize("name,model", MODELS, ids=[m[0] for m in MODELS])
@pytest.mark.parametrize("size", [2 * EVAL_BLOCK + 77, EVAL_BLOCK, 5])
def test_blocked_chunk_pricing_equals_one_evaluation(name, model, size):
    """run_chunk prices a chunk in blocks of EVAL_BLOCK samples; the costs are the bits of
    one evaluation of the whole chunk on the same draws."""
    root = root_seed(11)
    arr, vals = model.run_chunk(root, 3, size, keep_inputs=True)
    whole = model._evaluate(model.draw(root, 3, size), size, 1.0)
    assert arr.shape == (3, len(model.options), size)
    for j, o in enumerate(model.options):
        for kind, key in enumerate(("monthly", "once", "tokens")):
            want = np.broadcast_to(np.asarray(whole[o.name][key], dtype=float), (size,))
            assert np.array_equal(_bits(arr[kind, j]), _bits(want)), (o.name, key)
    # the inputs handed back are the chunk's draws
    again = model.draw(root, 3, size)
    assert vals.keys() == again.keys()
    assert all(np.array_equal(vals[k], again[k]) for k in vals)


@pytest.mark.parametrize("kw", [{}, {"rank_samples": CHUNK_SIZE + 10, "breakeven_samples": 300},
                                {"tol": 0.5}])
def test_sensitivity_on_the_pool_equals_the_serial_run(kw):
    """With threads the tornado, rank correlations and break-even volumes run on the pool
    as soon as the first samples they read are priced; the tables are those of a serial run
    (which computes them after the last chunk)."""
    model = MODELS[0][1]
    n = 2 * CHUNK_SIZE + 5
    a = run_montecarlo(model.sc, n=n, seed=5, compiled=model, threads=1, **kw)
    b = run_montecarlo(model.sc, n=n, seed=5, compiled=model, threads=2, **kw)
    assert a.n == b.n
    assert len(a.rank_correlation) == len(model.inputs) * len(model.options)
    assert len(a.breakeven) > 0 and len(a.tornado) > 0
    for t in ("tornado", "rank_correlation", "breakeven", "summary", "win_probability"):
        pd.testing.assert_frame_equal(getattr(a, t), getattr(b, t), check_exact=True)
    pd.testing.assert_frame_equal(a.inputs, b.inputs, check_exact=True)
    assert len(a.inputs) == min(a.n, max(kw.get("rank_samples", 10_000),
                                         kw.get("breakeven_samples", 1_000)))


@pytest.mark.parametrize("values,p", [
    ((3, 4, 5), (0.3, 0.5, 0.2)), ((1, 2), None), ((5, 1, 5, 2), (0.1, 0.2, 0.3, 0.4)),
    ((7,), None), ((1, 2, 3), (0.5, 0.0, 0.5)), (tuple(range(8)), None),
    (tuple(range(9)), None), (tuple(range(40)), None),
])
def test_choice_inverse_cdf_is_the_binary_search(values, p):
    """A choice with few values counts comparisons instead of a binary search: the same
    value as ``xs[min(searchsorted(cdf, u, 'left'), k - 1)]`` for every u, at the cumulative
    sums themselves (and one ulp either side), 0, 1 and NaN."""
    d = TypeAdapter(Distribution).validate_python(
        {"dist": "choice", "values": list(values), **({"p": list(p)} if p else {})})
    xs, _, cdf = _choice_table(d.values, d.p)
    u = np.concatenate([
        np.random.default_rng(0).random(5000), cdf, np.nextafter(cdf, 0), np.nextafter(cdf, 2),
        [0.0, 1.0, 2.0**-54, 1 - 2.0**-53, np.nan]])
    want = xs[np.minimum(np.searchsorted(cdf, u, side="left"), xs.size - 1)]
    got = d._ppf(u)
    assert np.array_equal(_bits(got), _bits(want))
    assert set(np.unique(got[:5000])) <= set(map(float, values))


@pytest.mark.parametrize("n", [1, 2, 19, 20, 21, 1001, 20_000, 100_003])
def test_tail_stats_share_the_cvar_partition(n):
    """tail_stats reads the CVaR from its own partition (made as planner.stats.cvar makes
    it) and the order statistics around it: the same bits as cvar() and np.sort, with ties."""
    rng = np.random.default_rng(n)
    x = rng.lognormal(10, 1, n)
    x[rng.random(n) < 0.3] = 5e4  # ties
    st = tail_stats(x)
    assert np.array_equal(_bits(st["cvar95"]), _bits(cvar(x, 0.95)))
    s = np.sort(x)
    q = [(n - 1) * p for p in (0.05, 0.5, 0.95)]
    for key, p in zip(("p5", "p50", "p95"), q, strict=True):
        f, c = int(np.floor(p)), int(np.ceil(p))
        want = s[f] + (s[c] - s[f]) * (p - f) if c != f else s[f]
        assert np.array_equal(_bits(st[key]), _bits(want)), key
    assert np.array_equal(_bits(st["mean"]), _bits(x.mean()))


def test_average_ranks_are_scipys_whatever_the_sort():
    """Rank correlations rank with the unstable sort (ties share one average rank, so the
    order among them cannot matter): the ranks are scipy's average ranks, with ties and
    infinities; a column with NaNs keeps the stable order (each NaN its own rank)."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(1)
    n = 5000
    a = np.column_stack([
        rng.random(n), rng.integers(0, 4, n).astype(float), np.full(n, 2.0),
        np.where(rng.random(n) < 0.1, np.inf, rng.random(n)),
    ])
    r = _average_ranks(a)
    for j in range(a.shape[1]):
        assert np.array_equal(r[:, j], rankdata(a[:, j])), j
    col = np.where(rng.random(n) < 0.05, np.nan, rng.integers(0, 50, n).astype(float))
    order = np.argsort(col, kind="stable")
    want = np.empty(n)
    s = col[order]
    new = np.r_[True, s[1:] != s[:-1]]
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n)
    want[order] = (0.5 * (starts + ends + 1))[np.cumsum(new) - 1]
    assert np.array_equal(_average_ranks(col[:, None])[:, 0], want)


def test_capacity_grid_fits_shortcut_equals_every_node():
    """The capacity grid asks the performance model whether only its longest node fits when
    its shortest nodes are whole tokens (fitting is monotone in the lengths): each grid of the
    compiled models equals the grid with every node asked, and on a grid crossing the KV and
    context limits, fitting is monotone node by node."""
    from planner.model.capacity import CapacityCache

    class EveryNode(CapacityCache):
        def rps(self, *a, **kw):
            self.calls = getattr(self, "calls", 0) + 1
            return super().rps(*a, **kw)

    checked = 0
    for _, model in MODELS:
        for o in model.options:
            for cname, (how, grid) in o.capacity.items():
                if how != "grid":
                    continue
                isl, osl, ttft, tpot, hit, traffic = model._capacity_inputs(model.ctx(), o,
                                                                            cname)
                traffic = o.traffic.get(cname)
                got = CapacityCache().table(o.llm_row, o.acc_row, o.dep, grid.isl, grid.osl,
                                            ttft, tpot, hit, traffic)
                every = EveryNode()
                fits = np.array([[every.rps(o.llm_row, o.acc_row, o.dep, float(x), float(y),
                                            None, None, hit, strict=False)[1]
                                  for y in grid.osl] for x in grid.isl])
                assert every.calls == grid.isl.size * grid.osl.size
                # these grids take the shortcut (one call): every node must indeed fit
                assert fits.all()
                med = (grid.isl == isl)[:, None] & (grid.osl == osl)[None, :]
                assert np.array_equal(_bits(got[~med]), _bits(grid.rps[~med]))
                checked += 1
    assert checked >= 2
    # a grid that crosses the KV-cache and context-window limits: monotone, and the table
    # (no shortcut: its longest node does not fit) zero exactly where a node does not fit
    model = MODELS[0][1]
    o = next(o for o in model.options if o.kind != "api")
    isl = np.array([1.0, 500.0, 4_000.0, 30_000.0, 60_000.0, 120_000.0, 400_000.0])
    osl = np.array([1.0, 200.0, 2_000.0, 8_000.0, 100_000.0])
    cache = CapacityCache()
    fits = np.array([[cache.rps(o.llm_row, o.acc_row, o.dep, x, y, None, None, 0.0,
                                strict=False)[1] for y in osl] for x in isl])
    assert fits.any() and not fits.all()
    for i in range(isl.size):
        for j in range(osl.size):
            if fits[i, j]:
                assert fits[: i + 1, : j + 1].all(), (isl[i], osl[j])
    from planner.model.capacity import Traffic

    table = CapacityCache().table(o.llm_row, o.acc_row, o.dep, isl, osl, 10.0, None, 0.0,
                                  Traffic())
    assert (table[~fits] == 0).all() and (table[fits] > 0).any()


def test_second_compile_reuses_the_performance_model_and_equals_a_fresh_one(monkeypatch):
    """compile_scenario shares the performance model's results between compiles of one
    catalog: a second compile calls the performance model not once, and its model (grids,
    capacity rows) and a run on it are the bits of a fresh compile's."""
    import planner.perf.openloop as openloop
    from planner.catalog import load_catalog
    from planner.engines.risk.compiled import clear_compile_cache

    path = ROOT / "planner" / "templates" / "risk-example.toml"
    rest, corr, _ = risk_tables(tomllib.loads(path.read_text(encoding="utf-8")))
    sc = parse_scenario(rest, path=str(path))
    calls = []
    for name in ("slo_capacity", "slo_capacity_many"):
        real = getattr(openloop, name)
        monkeypatch.setattr(openloop, name,
                            lambda *a, _real=real, **kw: calls.append(1) or _real(*a, **kw))
    clear_compile_cache()
    fresh = compile_scenario(sc, correlations=corr)
    assert calls  # a fresh compile asks the performance model
    calls.clear()
    again = compile_scenario(sc, correlations=corr)
    assert calls == [] and again.caps is fresh.caps
    grids = [(o.name, c, g) for o in fresh.options for c, (how, g) in o.capacity.items()
             if how == "grid"]
    assert grids
    for name, c, g in grids:
        h = again.by_name[name].capacity[c][1]
        assert h is not g
        for a, b in ((g.isl, h.isl), (g.osl, h.osl), (g.rps, h.rps)):
            assert np.array_equal(_bits(a), _bits(b))
    for o in fresh.options:
        pd.testing.assert_frame_equal(pd.DataFrame(o.capacity_rows),
                                      pd.DataFrame(again.by_name[o.name].capacity_rows))
    a = run_montecarlo(sc, n=40_000, seed=3, compiled=fresh, threads=1)
    b = run_montecarlo(sc, n=40_000, seed=3, compiled=again, threads=1)
    for t in ("summary", "win_probability", "tornado", "rank_correlation", "breakeven"):
        pd.testing.assert_frame_equal(getattr(a, t), getattr(b, t), check_exact=True)
    # the table handed out is a copy (the model writes the median node into its own)
    name, c, g = grids[0]
    o = fresh.by_name[name]
    isl, osl, ttft, tpot, hit, _ = fresh._capacity_inputs(fresh.ctx(), o, c)
    args = (o.llm_row, o.acc_row, o.dep, g.isl, g.osl, ttft, tpot, hit, o.traffic[c])
    t1 = fresh.caps.table(*args)
    t1[:] = -1.0
    assert (fresh.caps.table(*args) >= 0).all()
    # another catalog object gets its own results
    clear_compile_cache()
    other = compile_scenario(sc, correlations=corr, catalog=load_catalog())
    assert other.caps is not fresh.caps


def test_a_pickled_model_leaves_the_shared_results_behind():
    """A compiled scenario sent to worker processes does not carry the performance-model
    results shared with the process's other compiles, and prices the same bits there."""
    import pickle

    name, model = MODELS[0]
    for _, other in MODELS[1:]:
        assert other.caps is model.caps or other.cat is not model.cat
    assert len(model.caps._cache) > 0
    back = pickle.loads(pickle.dumps(model))
    assert len(back.caps._cache) == 0 and len(model.caps._cache) > 0
    root = root_seed(4)
    a, _ = model.run_chunk(root, 1, 3000)
    b, _ = back.run_chunk(root, 1, 3000)
    assert np.array_equal(_bits(a), _bits(b))


def test_convergence_rows_read_the_finite_samples_as_the_summary():
    """With samples that leave an option no capacity (cost inf), the convergence rows are
    computed over the finite samples, as the summary is: no NaN from inf - inf, the last
    row's P95 is the summary's, and the check runs without a floating-point warning."""
    import warnings

    sc = load_scenario(ROOT / "studies" / "hybrid-support-bot" / "scenario.toml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = run_montecarlo(sc, n=4 * CHUNK_SIZE, seed=11, tol=1e-9, threads=1,
                             sensitivity=False)
    s = res.summary[res.summary["metric"] == "usd_per_month"].set_index("deployment")
    assert (s["p_infeasible"] > 0).any()  # the case this test is about
    last = res.convergence[res.convergence["n"] == res.n].set_index("deployment")
    for dep in s.index:
        assert np.isfinite(last.loc[dep, "p95"]) == np.isfinite(s.loc[dep, "p95"])
        assert np.array_equal(_bits(last.loc[dep, "p95"]), _bits(s.loc[dep, "p95"]))
        assert np.array_equal(_bits(last.loc[dep, "mean"]), _bits(s.loc[dep, "mean"]))


def test_a_compile_runs_each_open_loop_capacity_search_once(monkeypatch):
    """The pool-size bisection asks for a replica's capacity leniently (``strict=False``),
    the option's capacity strictly: for a replica that fits that is one search, run once
    (the compile called it twice); and what the strict call returns is what a fresh cache
    computes."""
    import planner.perf.openloop as openloop
    from planner.engines.risk.compiled import clear_compile_cache
    from planner.model.capacity import CapacityCache

    path = ROOT / "planner" / "templates" / "risk-example.toml"
    rest, corr, _ = risk_tables(tomllib.loads(path.read_text(encoding="utf-8")))
    sc = parse_scenario(rest, path=str(path))
    seen = []
    real = openloop.slo_capacity_many

    def rec(sm, **kw):
        seen.append(repr((sm.llm, sm.acc, sm.gpus, sm.precision, sm.params,
                          {k: np.asarray(v).tobytes() if isinstance(v, np.ndarray) else v
                           for k, v in sorted(kw.items())})))
        return real(sm, **kw)

    monkeypatch.setattr(openloop, "slo_capacity_many", rec)
    clear_compile_cache()
    model = compile_scenario(sc, correlations=corr)
    assert len(seen) >= 2  # the median pair and the capacity grid at least
    assert len(set(seen)) == len(seen)
    # lenient first, then strict, on one cache: one search, the strict result of a fresh cache
    o = next(o for o in model.options if o.kind != "api")
    c = o.served[0]
    isl, osl, ttft, tpot, hit, traffic = model._capacity_inputs(model.ctx(), o, c)
    args = (o.llm_row, o.acc_row, o.dep, isl, osl, ttft, tpot, hit)
    seen.clear()
    caps = CapacityCache()
    lenient = caps.full(*args, strict=False, traffic=traffic)
    strict = caps.full(*args, strict=True, traffic=traffic)
    assert len(seen) == 1
    fresh = CapacityCache().full(*args, strict=True, traffic=traffic)
    assert len(seen) == 2
    assert strict.to_dict() == fresh.to_dict() == lenient.to_dict()
    assert strict.requests_per_s > 0
