"""Monte Carlo sampling: marginals against analytic quantiles and moments, rank correlations
through the Gaussian copula, seeding, and correlation-spec errors."""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest
from pydantic import TypeAdapter
from scipy import stats

from planner.config import Correlation, parse_scenario
from planner.distributions import Distribution, spawn_generators
from planner.engines.risk.compiled import compile_scenario
from planner.engines.risk.sampling import build_sampler, chunk_generator
from planner.errors import PlannerError
from planner.uncertain import risk_tables

D = TypeAdapter(Distribution).validate_python
N = 200_000

BASE = """
[scenario]
name = "sampling"

[workload.chat]
requests_per_day = { dist = "lognormal", median = 50000, p90 = 90000 }
input = { tokens = { dist = "normal", mean = 800, sd = 100, low = 1 } }
context = { tokens = { dist = "triangular", low = 500, mode = 1000, high = 3000 } }
output = { tokens = { dist = "pert", low = 100, mode = 200, high = 500 } }
cached_share = { dist = "normal", mean = 0.4, sd = 0.2, low = 0.0, high = 1.0 }

[api.a]
offering = "openai/gpt-4o"
discount = { dist = "choice", values = [0.0, 0.1, 0.2], p = [0.5, 0.3, 0.2] }

[pretraining.p]
params_b = 7
tokens = { dist = "uniform", low = 1e12, high = 2e12 }
peak_tflops = 989
usd_per_gpu_hour = 2.0
"""


def _draw(sampler, n=N, seed=0):
    return sampler.draw(np.random.default_rng(seed), n)


def _check_marginal(x, dist):
    """Empirical CDF at the analytic quantiles within 4.5 binomial standard errors, and the
    sample mean within 5 standard errors of the analytic mean."""
    n = x.size
    for q in (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99):
        f = np.mean(x <= dist.quantile(q))
        assert abs(f - q) <= 4.5 * math.sqrt(q * (1 - q) / n), (q, f)
    assert abs(x.mean() - dist.mean()) <= 5 * x.std() / math.sqrt(n)


@pytest.mark.parametrize("spec", [
    {"dist": "lognormal", "median": 50000, "p90": 90000},
    {"dist": "lognormal", "mu": 1.0, "sigma": 0.5},
    {"dist": "normal", "mean": 3.0, "sd": 2.0},
    {"dist": "normal", "mean": 0.1, "sd": 0.1, "low": 0.0},
    {"dist": "triangular", "low": 1.0, "mode": 2.0, "high": 5.0},
    {"dist": "pert", "low": 1.0, "mode": 2.0, "high": 5.0},
    {"dist": "uniform", "low": -1.0, "high": 1.0},
])
def test_independent_marginals(spec):
    d = D(spec)
    s = build_sampler({"x": d, "y": D({"dist": "uniform", "low": 0, "high": 1})}, {"x": d}, [])
    x = _draw(s)["x"]
    _check_marginal(x, d)
    lo, hi = d.support()
    assert x.min() >= lo and x.max() <= hi


def test_choice_frequencies():
    d = D({"dist": "choice", "values": [3, 4, 5], "p": [0.3, 0.5, 0.2]})
    x = _draw(build_sampler({"x": d}, {"x": d}, []))["x"]
    for v, p in ((3, 0.3), (4, 0.5), (5, 0.2)):
        assert abs(np.mean(x == v) - p) <= 4.5 * math.sqrt(p * (1 - p) / N)


def test_copula_rank_correlations_and_marginals():
    dists = {
        "a": D({"dist": "lognormal", "median": 100, "p90": 200}),
        "b": D({"dist": "pert", "low": 0, "mode": 1, "high": 4}),
        "c": D({"dist": "normal", "mean": 0, "sd": 1}),
        "d": D({"dist": "triangular", "low": 0, "mode": 1, "high": 2}),
        "e": D({"dist": "uniform", "low": 0, "high": 1}),
    }
    corr = [Correlation(a="a", b="b", rho=0.6), Correlation(a="a", b="c", rho=-0.3),
            Correlation(a="d", b="e", rho=0.0)]
    s = build_sampler(dists, dists, corr)
    assert {frozenset(g[0]) for g in s.groups} == {frozenset("abc"), frozenset("de")}
    x = _draw(s)
    for (p, q), target in ((("a", "b"), 0.6), (("a", "c"), -0.3), (("b", "c"), None),
                           (("d", "e"), 0.0)):
        rho = stats.spearmanr(x[p][:50_000], x[q][:50_000]).statistic
        if target is not None:
            assert rho == pytest.approx(target, abs=0.015)
        else:  # b and c are linked only through a: rank correlation ~ 0.6 x -0.3 (Gaussian)
            assert -0.3 < rho < 0.0
    for k, d in dists.items():
        _check_marginal(x[k], d)


def test_chunk_generators_are_the_spawned_streams():
    root = np.random.SeedSequence(123)
    gens = spawn_generators(123, 3)
    for c in range(3):
        assert np.array_equal(chunk_generator(root, c).random(5), gens[c].random(5))


def test_scenario_inputs_sampled_and_unused_reported():
    sc = parse_scenario(tomllib.loads(BASE))
    model = compile_scenario(sc, correlations=[
        {"a": "workload.chat.requests_per_day", "b": "workload.chat.context.tokens",
         "rho": 0.5}])
    assert set(model.inputs) == {
        "workload.chat.requests_per_day", "workload.chat.input.tokens",
        "workload.chat.context.tokens", "workload.chat.output.tokens",
        "workload.chat.cached_share", "api.a.discount"}
    assert "pretraining.p.tokens" in model.unused
    vals = model.draw(np.random.SeedSequence(1), 0, 50_000)
    rho = stats.spearmanr(vals["workload.chat.requests_per_day"],
                          vals["workload.chat.context.tokens"]).statistic
    assert rho == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("corr,match", [
    ([{"a": "workload.chat.request_per_day", "b": "api.a.discount", "rho": 0.5}],
     r"correlation\[0\]\.a: 'workload.chat.request_per_day' is not an uncertain input.*did "
     r"you mean 'workload.chat.requests_per_day'"),
    ([{"a": "api.a.discount", "b": "workload.chat.calls_per_request", "rho": 0.5}],
     r"correlation\[0\]\.b: 'workload.chat.calls_per_request' is not an uncertain input"),
    ([{"a": "api.a.discount", "b": "pretraining.p.tokens", "rho": 0.5}],
     r"correlation\[0\]\.b: 'pretraining.p.tokens' does not affect"),
    ([{"a": "api.a.discount", "b": "api.a.discount", "rho": 0.5}], r"same input"),
    ([{"a": "api.a.discount", "b": "workload.chat.cached_share", "rho": 1.5}],
     r"correlation\[0\]: expected a = key path, b = key path, rho in \[-1, 1\]"),
    ([{"a": "api.a.discount", "b": "workload.chat.cached_share", "rho": 0.5},
      {"a": "workload.chat.cached_share", "b": "api.a.discount", "rho": 0.4}],
     r"correlation\[1\]: the pair .* given twice"),
    ([{"a": "api.a.discount", "b": "workload.chat.cached_share", "rho": 0.9},
      {"a": "api.a.discount", "b": "workload.chat.input.tokens", "rho": 0.9},
      {"a": "workload.chat.cached_share", "b": "workload.chat.input.tokens", "rho": -0.9}],
     r"workload.chat.input.tokens\) rho = -0.9: .*not positive semi-definite"),
    ([{"a": "api.a.discount"}], r"correlation\[0\]"),
    (["nonsense"], r"correlation\[0\]: expected a table with a, b and rho"),
])
def test_bad_correlations_name_the_field(corr, match):
    sc = parse_scenario(tomllib.loads(BASE))
    with pytest.raises(PlannerError, match=match):
        compile_scenario(sc, correlations=corr)


def test_trend_correlations_are_left_to_the_multiyear_engine():
    dists = {"x": D({"dist": "uniform", "low": 0, "high": 1})}
    known = {**dists, "trends.api_price_decline_per_year": None}
    s = build_sampler(dists, known, [Correlation(a="x", b="trends.api_price_decline_per_year",
                                                  rho=0.5)])
    assert s.groups == ()


def test_correlation_forms_and_toml_table():
    sc = parse_scenario(tomllib.loads(BASE))
    a, b = "api.a.discount", "workload.chat.cached_share"
    for spec in ([(a, b, 0.3)], {(a, b): 0.3}, {"a": a, "b": b, "rho": 0.3},
                 [Correlation(a=a, b=b, rho=0.3)]):
        m = compile_scenario(sc, correlations=spec)
        assert len(m.sampler.groups) == 1
    data = tomllib.loads(BASE + f'\n[[correlation]]\na = "{a}"\nb = "{b}"\nrho = -0.2\n'
                         '[trends]\ntraffic_growth_per_year = 0.1\n')
    rest, corr, trends = risk_tables(data)
    assert corr == [Correlation(a=a, b=b, rho=-0.2)]
    assert trends == {"traffic_growth_per_year": 0.1}
    assert "correlation" not in rest and "trends" not in rest
