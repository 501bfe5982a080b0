"""The Monte Carlo pricing path's fast pieces agree with their textbook forms."""

from __future__ import annotations

import numpy as np
import pytest

from planner.model.capacity import CapacityGrid


def _reference(g: CapacityGrid, isl, osl):
    """Bilinear interpolation of 1 / rps with cells found by counting inner nodes."""
    def axis(nodes, x):
        x = np.asarray(x, dtype=float)
        if nodes.size == 1:
            z = np.zeros(x.shape, dtype=np.intp)
            return z, z, np.zeros(x.shape)
        xc = np.clip(x, nodes[0], nodes[-1])
        i = np.zeros(xc.shape, dtype=np.intp)
        for node in nodes[1:-1]:
            i += xc >= node
        lo = nodes[i]
        return i, i + 1, (xc - lo) / (nodes[i + 1] - lo)

    i0, i1, ti = axis(g.isl, isl)
    j0, j1, tj = axis(g.osl, osl)
    inverse = bool((g.rps > 0).all())
    r = 1.0 / g.rps if inverse else g.rps
    a = r[i0, j0] * (1.0 - tj) + r[i0, j1] * tj
    b = r[i1, j0] * (1.0 - tj) + r[i1, j1] * tj
    v = a * (1.0 - ti) + b * ti
    return 1.0 / v if inverse else v


@pytest.mark.parametrize("seed", range(40))
def test_capacity_grid_matches_counting_cells_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    ni, no = (int(x) for x in rng.integers(1, 16, 2))
    gi = np.unique(np.exp(rng.normal(6, rng.uniform(0.001, 2), ni)))
    go = np.unique(np.exp(rng.normal(5, rng.uniform(0.001, 2), no)))
    rps = rng.uniform(0.1, 5, (gi.size, go.size))
    if seed % 3 == 0:  # nodes without capacity: rps itself is interpolated
        rps[rng.random(rps.shape) < 0.3] = 0.0
    g = CapacityGrid(gi, go, rps)
    # values everywhere, on the nodes and one ulp either side of them, beyond both ends
    x = np.concatenate([np.exp(rng.normal(6, 2.5, 3000)), gi, np.nextafter(gi, 0),
                        np.nextafter(gi, np.inf), [0.0, 1e300, np.nan]])
    y = np.resize(np.concatenate([np.exp(rng.normal(5, 2.5, 3000)), go, np.nextafter(go, 0),
                                  np.nextafter(go, np.inf), [np.nan]]), x.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        got, want = g(x, y), _reference(g, x, y)
        np.testing.assert_array_equal(got, want)
        # scalars and broadcasting, as the medians' evaluation calls it
        one = g(float(x[3]), float(y[3]))
        assert np.ndim(one) == 0 and one == want[3]
        np.testing.assert_array_equal(g(x[:50], y[9]), _reference(g, x[:50], y[9]))


def test_capacity_grid_uneven_nodes_fall_back_to_counting():
    # a gap 1e-9 of the span: no lookup table, the counting path gives the same cells
    gi = np.array([1.0, 1.0 + 1e-9, 2.0, 1e4])
    go = np.array([10.0, 20.0])
    g = CapacityGrid(gi, go, np.arange(1.0, 9.0).reshape(4, 2))
    assert g._ax_i.table is None and g._ax_j.table is None
    x = np.linspace(0.0, 2e4, 1001)
    np.testing.assert_array_equal(g(x, 15.0), _reference(g, x, 15.0))


# -- inputs drawn while the scenario compiles --------------------------------------------------

def _risk_example():
    import tomllib
    from pathlib import Path

    from planner.config import parse_scenario
    from planner.uncertain import risk_tables

    path = Path(__file__).resolve().parent.parent / "planner" / "templates" / "risk-example.toml"
    rest, corr, _ = risk_tables(tomllib.loads(path.read_text(encoding="utf-8")))
    return parse_scenario(rest, path=str(path)), corr


def test_inputs_drawn_during_the_compile_are_the_compiled_models_draws():
    from concurrent.futures import ThreadPoolExecutor

    from planner.engines.risk import run as run_mod
    from planner.engines.risk.sampling import chunk_sizes, root_seed

    sc, corr = _risk_example()
    root, sizes = root_seed(11), chunk_sizes(5 * 32_768 + 100)
    with ThreadPoolExecutor(2) as ex:
        model, early = run_mod._compile_drawing_ahead(ex, sc, None, corr, root, sizes)
    assert early, "the risk example's inputs are known before the compile"
    for c, vals in early.items():
        want = model.draw(root, c, sizes[c])
        assert list(vals) == list(want)
        for k in want:
            np.testing.assert_array_equal(vals[k], want[k])


def test_a_wrong_guess_of_the_sampler_is_not_used(monkeypatch):
    from planner.engines.risk import run as run_mod
    from planner.engines.risk.compiled import predict_sampler

    sc, corr = _risk_example()
    ref = run_mod.run_montecarlo(sc, n=40_000, seed=5, correlations=corr, threads=1)
    # a guess without correlations draws other numbers: it must be dropped, not priced
    monkeypatch.setattr(run_mod, "predict_sampler", lambda s, c: predict_sampler(s, []))
    got = run_mod.run_montecarlo(sc, n=40_000, seed=5, correlations=corr, threads=2)
    pd_testing = pytest.importorskip("pandas.testing")
    pd_testing.assert_frame_equal(got.samples, ref.samples)
    pd_testing.assert_frame_equal(got.summary, ref.summary)


def test_grids_on_the_same_nodes_share_the_located_cells():
    rng = np.random.default_rng(3)
    gi, go = np.array([100.0, 400.0, 900.0, 3000.0]), np.array([50.0, 120.0, 700.0])
    a = CapacityGrid(gi, go, rng.uniform(0.5, 4.0, (4, 3)))
    b = CapacityGrid(gi.copy(), go.copy(), rng.uniform(0.5, 4.0, (4, 3)))
    assert a.nodes_key == b.nodes_key
    assert a.nodes_key != CapacityGrid(gi * 2, go, a.rps).nodes_key
    x, y = rng.uniform(0, 4000, 500), rng.uniform(0, 900, 500)
    loc = a.locate(x, y)
    kept = [np.copy(v) for v in loc[:3]]
    np.testing.assert_array_equal(a.interpolate(loc), _reference(a, x, y))
    np.testing.assert_array_equal(b.interpolate(loc), _reference(b, x, y))
    for v, w in zip(loc[:3], kept, strict=True):  # interpolating does not change the cells
        np.testing.assert_array_equal(v, w)


def test_lean_pricing_is_the_full_evaluation_bit_for_bit():
    """price_chunk (lean: only the costs) gives the full evaluation's monthly, one-off and
    token columns, bit for bit, on the risk example's draws."""
    from planner.engines.risk.compiled import compile_scenario
    from planner.engines.risk.sampling import root_seed

    sc, corr = _risk_example()
    model = compile_scenario(sc, correlations=corr)
    vals = model.draw(root_seed(7), 0, 10_000)
    got = model.price_chunk(vals, 10_000)
    full = model.evaluate(vals, 10_000)
    for j, name in enumerate(model.option_names):
        for row, key in enumerate(("monthly", "once", "tokens")):
            want = np.broadcast_to(full[name][key], (10_000,))
            assert np.array_equal(got[row, j].view(np.uint64),
                                  np.asarray(want, dtype=float).view(np.uint64)), (name, key)
        assert full[name]["out_tokens"] is not None and full[name]["user_rpm"] is not None
    assert np.isfinite(got).all() and (got[0] > 0).all()


@pytest.mark.parametrize("seed", range(6))
def test_api_cost_shortcuts_match_the_formula_with_sampled_shares(seed):
    """A share or factor that is exactly 0 or 1 (a number) skips its products: the same values
    as the formula evaluated with that share as an array of samples (no shortcut)."""
    from planner.costs.api import ApiPrices, api_cost_per_request

    rng = np.random.default_rng(seed)
    n = 500
    prices = ApiPrices(rng.uniform(1, 3, n), rng.uniform(5, 10, n), 1.25,
                       batch_input_usd_per_mtok=rng.uniform(0.5, 1, n),
                       batch_output_usd_per_mtok=rng.uniform(2, 5, n))
    isl, osl = rng.uniform(100, 4000, n), rng.uniform(50, 800, n)
    disc = rng.uniform(0, 0.2, n)
    for cached, batch, margin in [(0.0, 0.0, None), (0.0, 1.0, None), (rng.uniform(0, 1, n), 0.0, 0.0),
                                  (0.3, 1.0, 0.75), (0.0, 0.4, None)]:
        short = api_cost_per_request(prices, isl, osl, cached_share=cached, batch_share=batch,
                                     discount=disc, gross_margin=margin)
        ref = api_cost_per_request(prices, isl, osl, cached_share=np.full(n, 1.0) * cached,
                                   batch_share=np.full(n, 1.0) * batch, discount=disc,
                                   gross_margin=margin)
        for k in ref:
            np.testing.assert_array_equal(np.broadcast_to(short[k], (n,)), ref[k], err_msg=k)
        tot_s = sum(np.broadcast_to(v, (n,)) for v in short.values())
        assert (tot_s > 0).all()


def test_capital_recovery_with_one_rate_matches_per_sample_rates():
    from planner.costs.selfhosted import capital_recovery_usd_per_month

    rng = np.random.default_rng(4)
    capex, years = rng.uniform(1e5, 1e6, 300), rng.choice([3.0, 4.0, 5.0], 300)
    for rate in (0.0, 0.08):
        one = capital_recovery_usd_per_month(capex, years, 0.1, rate)
        per = capital_recovery_usd_per_month(capex, years, 0.1, np.full(300, rate))
        np.testing.assert_array_equal(one, per)
        assert isinstance(one, np.ndarray) and one.shape == (300,)
