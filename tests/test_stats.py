"""planner.stats.cvar: the Rockafellar-Uryasev definition, weighted and unweighted alike."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from planner import stats
from planner.stats import cvar


def _ru_min(x, p, alpha):
    """min_t t + E[(x - t)^+] / (1 - alpha); the minimum is at one of the sample values."""
    x, p = np.asarray(x, float), np.asarray(p, float) / np.sum(p)
    return min(t + np.dot(p, np.maximum(x - t, 0.0)) / (1 - alpha) for t in x)


@pytest.mark.parametrize("n", [1, 2, 3, 19, 20, 101, 1000])
@pytest.mark.parametrize("alpha", [0.5, 0.9, 0.95, 0.99])
def test_cvar_is_the_rockafellar_uryasev_minimum(n, alpha):
    rng = np.random.default_rng(n)
    x = rng.lognormal(size=n)
    p = rng.uniform(0.1, 1.0, size=n)
    assert cvar(x, alpha) == pytest.approx(_ru_min(x, np.ones(n), alpha), rel=1e-12)
    assert cvar(x, alpha, weights=p) == pytest.approx(_ru_min(x, p, alpha), rel=1e-12)
    # equal weights, any scale, give the unweighted value
    assert cvar(x, alpha, weights=np.full(n, 3.0)) == pytest.approx(cvar(x, alpha), rel=1e-12)


def test_cvar_whole_tail_is_the_mean_of_the_worst():
    x = np.arange(20_000, dtype=float)
    assert cvar(x, 0.95) == np.sort(x)[-1000:].mean()
    assert math.isnan(cvar([], 0.95))
    with pytest.raises(ValueError):
        cvar([1.0], 1.0)
    with pytest.raises(ValueError):
        cvar([1.0, 2.0], 0.9, weights=[1.0])


def test_docstring_examples():
    assert doctest.testmod(stats).failed == 0
