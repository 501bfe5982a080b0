"""The open-loop model's numeric routines against their reference (plain) versions.

:func:`planner.perf.openloop._compound_poisson_quantile` skips the CDF evaluations whose
outcome the saw tooth's shape decides (a half of the bracket with no jump), and
:func:`planner.perf.openloop._compound_poisson_cdf` evaluates the Poisson CDF only where it is
neither 0 nor 1. Both must give what the plain versions below give (the code before that
change, kept here as the reference): on random saw teeth, and on the capacities of every
bundled example and study scenario (and generated sizing cases), compared within 1e-9
relative. Every expected figure is computed by the reference code, none is typed in.
"""

from __future__ import annotations

import glob
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from planner.config import parse_scenario
from planner.engines.deterministic import evaluate
from planner.engines.risk.compiled import clear_compile_cache, compile_scenario
from planner.perf import openloop
from planner.perf._special import pdtr
from planner.uncertain import risk_tables

ROOT = Path(__file__).resolve().parents[1]


# -- the reference versions (before the change) ----------------------------------------------

def ref_quantile(base, step, count_per_s, q, within=None):
    base = np.asarray(base, dtype=float)
    per_node = base.ndim == np.ndim(step)
    lo = base.min(axis=-1) if per_node else base.copy()
    hi = (base.max(axis=-1) if per_node else base) * 2.0 + 1e-9
    if within is not None:
        hi = np.where(np.isfinite(within), np.maximum(within, lo), hi)
    for _ in range(60):
        done = ref_cdf(base, step, count_per_s, hi) >= q
        if done.all():
            break
        hi = np.where(done, hi, hi * 2.0)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        below = ref_cdf(base, step, count_per_s, mid) < q
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return hi


def ref_cdf(base, step, count_per_s, x, size=None):
    x = np.asarray(x, dtype=float)
    base = np.asarray(base, dtype=float)
    gap = x[..., None] - (base if base.ndim == np.ndim(step) else base[..., None])
    with np.errstate(over="ignore"):  # nodes without steps (their count is not used)
        k = np.floor(gap / np.maximum(step, 1e-300))
    cdf = np.where(step > 0, pdtr(np.maximum(k, 0.0), count_per_s * x[..., None]), 1.0)
    return np.where(gap < 0, 0.0, cdf).mean(axis=-1)


@pytest.fixture
def reference(monkeypatch):
    """Run the open-loop model on the reference routines."""
    def use():
        monkeypatch.setattr(openloop, "_compound_poisson_quantile", ref_quantile)
        monkeypatch.setattr(openloop, "_compound_poisson_cdf", ref_cdf)
    return use


# -- random saw teeth -------------------------------------------------------------------------

def _teeth(seed: int, points: int, nodes: int, stable: bool = True):
    """Inputs shaped like the TPOT mixture's: a base step time per node, a per-prompt step
    (some nodes without steps), a count rate per second of life; ``stable``: the prompts met
    add a share 0.05-0.8 of the life on average (else any rate, many far beyond)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.005, 0.08, (points, nodes))
    step = base * rng.choice([0.0, 1e-3, 1e-2, 0.1, 0.5], (points, nodes))
    if stable:
        count = rng.uniform(0.05, 0.8, (points, nodes)) / np.where(step > 0, step, 1.0)
    else:
        count = rng.uniform(10.0, 8e4, (points, nodes))
    return base, step, count


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_quantile_equals_the_plain_bisection(seed, q):
    base, step, count = _teeth(seed, 300, 8, stable=seed % 2 == 0)
    got = openloop._compound_poisson_quantile(base, step, count, q)
    want = ref_quantile(base, step, count, q)
    np.testing.assert_array_equal(got, want)
    # the same with the bound: a value whose CDF reaches q where known, NaN elsewhere
    bound = np.where(np.arange(300) % 3 == 0, np.nan, want * 1.5)
    np.testing.assert_array_equal(openloop._compound_poisson_quantile(base, step, count, q,
                                                                     within=bound),
                                  ref_quantile(base, step, count, q, within=bound))


def test_quantile_with_one_base_per_point_and_nan_inputs():
    base, step, count = _teeth(7, 120, 6)
    b1 = base[:, 0].copy()
    count[5] = np.nan
    b1[9] = np.nan
    got = openloop._compound_poisson_quantile(b1, step, count, 0.9)
    want = ref_quantile(b1, step, count, 0.9)
    np.testing.assert_array_equal(got, want)
    assert np.isfinite(got).sum() >= 100  # the NaN rows are the exceptions, not the rule


@pytest.mark.parametrize("q", [0.3, 0.9])
def test_quantile_without_steps_starts_from_a_bracket_already_met(q):
    """Nodes without steps: the CDF is already at 1 at the bracket's lower end (its share of
    nodes at or below x), so no half may be taken as below q before one was evaluated."""
    rng = np.random.default_rng(2)
    base = rng.uniform(0.01, 0.05, (50, 4))
    base[:25] = base[:25, :1]  # the first points: every node at one value
    step = np.zeros_like(base)
    count = rng.uniform(1.0, 100.0, base.shape)
    got = openloop._compound_poisson_quantile(base, step, count, q)
    np.testing.assert_array_equal(got, ref_quantile(base, step, count, q))


def test_quantile_evaluates_the_cdf_far_fewer_times(monkeypatch):
    base, step, count = _teeth(3, 200, 8)
    evaluated = {"new": 0, "ref": 0}
    inner = openloop._compound_poisson_cdf

    def counting(key, fn):
        def f(b, s, c, x, size=None):
            evaluated[key] += np.size(x)
            return fn(b, s, c, x, size)
        return f

    monkeypatch.setattr(openloop, "_compound_poisson_cdf", counting("new", inner))
    got = openloop._compound_poisson_quantile(base, step, count, 0.9)
    monkeypatch.setattr(sys.modules[__name__], "ref_cdf", counting("ref", ref_cdf))
    want = ref_quantile(base, step, count, 0.9)
    np.testing.assert_array_equal(got, want)
    # points x evaluations: the plain bisection evaluates every point 40+ times
    assert evaluated["ref"] >= 40 * 200
    assert evaluated["new"] < 0.5 * evaluated["ref"]


def test_cdf_skips_only_the_sure_values():
    base, step, count = _teeth(11, 64, 8)
    x = np.concatenate([base.min(axis=1) * 0.5, base.max(axis=1) * 1.7])  # below and within
    b2, s2, c2 = (np.concatenate([a, a]) for a in (base, step, count))
    np.testing.assert_array_equal(openloop._compound_poisson_cdf(b2, s2, c2, x),
                                  ref_cdf(b2, s2, c2, x))


def test_pdtr_size_chooses_as_for_the_whole_array():
    rng = np.random.default_rng(5)
    k = rng.integers(200, 700, 3000).astype(float)
    m = k * rng.uniform(0.8, 1.2, k.size)
    whole = pdtr(k, m)
    # a few elements alone would take the numpy series; with the whole array's size they
    # take what the whole array took, to the bit
    np.testing.assert_array_equal(pdtr(k[:40], m[:40], size=k.size), whole[:40])
    np.testing.assert_allclose(pdtr(k[:40], m[:40]), whole[:40], rtol=1e-11, atol=0)


# -- capacities of the bundled scenarios -------------------------------------------------------

def _bundled():
    """Scenarios: the templates, every study scenario, generated sizing cases (dense and MoE
    models, long contexts, bursty arrivals, pools)."""
    out = []
    for p in sorted(glob.glob(str(ROOT / "planner/templates/*.toml"))) + sorted(
            glob.glob(str(ROOT / "studies/*/*.toml"))):
        rest, corr, _ = risk_tables(tomllib.loads(Path(p).read_text(encoding="utf-8")))
        out.append((Path(p).parent.name + "/" + Path(p).name, parse_scenario(rest, path=p),
                    corr))
    sys.path.insert(0, str(ROOT / "studies" / "sizing-vs-simulation"))
    try:
        from cases import cases
    finally:
        sys.path.pop(0)
    for d in cases(21, 7):
        out.append((d["scenario"]["name"], parse_scenario(d), None))
    return out


def _capacity_calls(monkeypatch):
    """Every open-loop capacity search the engines make on the bundled scenarios (the
    deterministic engine and the Monte Carlo compile, whose capacity grids cover sampled
    lengths): (step model, keywords, results)."""
    calls = []
    inner = openloop.slo_capacity_many

    def rec(sm, **kw):
        out = inner(sm, **kw)
        calls.append((sm, kw, out))
        return out

    monkeypatch.setattr(openloop, "slo_capacity_many", rec)
    for _, sc, corr in _bundled():
        clear_compile_cache()
        evaluate(sc)
        if corr is not None:
            clear_compile_cache()
            compile_scenario(sc, correlations=corr)
    clear_compile_cache()
    monkeypatch.setattr(openloop, "slo_capacity_many", inner)
    return calls


def test_capacities_of_bundled_scenarios_equal_the_reference(monkeypatch, reference):
    calls = _capacity_calls(monkeypatch)
    assert len(calls) > 100 and sum(len(o) for *_, o in calls) > 300
    reference()
    worst = 0.0
    compared = 0
    for sm, kw, new in calls:
        ref = openloop.slo_capacity_many(sm, **kw)
        for a, b in zip(ref, new, strict=True):
            assert a.limited_by == b.limited_by
            for f in ("requests_per_s", "ttft_s", "tpot_s", "decode_batch",
                      "prefill_utilisation"):
                x, y = getattr(a, f), getattr(b, f)
                if np.isnan(x) and np.isnan(y):
                    continue
                worst = max(worst, abs(x - y) / max(abs(x), 1e-300))
                compared += 1
    assert compared > 1000
    assert worst <= 1e-9
