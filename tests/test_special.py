"""planner.perf._special (numpy-only ndtri and Poisson CDF) against scipy.special.

``ndtri`` follows Cephes' algorithm operation for operation, so it must give scipy's bits;
``pdtr`` is its own algorithm and must agree to 1e-12 relative (and, in the far tail where
scipy's own error grows with ``-ln Q``, to 1e-12 per unit of ``-ln Q``), and with an exact sum
in decimal arithmetic.
"""

from __future__ import annotations

from decimal import Decimal, localcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

from planner.perf import _special
from planner.perf._special import _log1pmx, ndtri
from planner.perf._special import pdtr_numpy as pdtr


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def test_ndtri_gives_scipys_bits_on_a_grid():
    rng = np.random.default_rng(0)
    u = np.concatenate([
        rng.random(200_000),
        10.0 ** rng.uniform(-300, 0, 50_000),  # lower tail, both rational fits
        1.0 - 10.0 ** rng.uniform(-16, 0, 50_000),  # upper tail
        [0.0, 1.0, 0.5, -0.1, 1.1, np.nan, 5e-324, 1e-310, np.exp(-2), 1 - np.exp(-2)],
    ])
    assert _same(ndtri(u), special.ndtri(u))


def test_ndtri_quantile_nodes_and_scalars():
    for n in range(1, 500):  # the equal-weight quantile points the open-loop model uses
        u = (np.arange(n) + 0.5) / n
        assert _same(ndtri(u), special.ndtri(u)), n
    for q in (0.5, 0.9, 0.95, 0.99, 0.999, 0.9999):
        got = ndtri(q)
        assert type(got) is float and got == float(special.ndtri(q))
    assert ndtri(np.full((2, 3), 0.25)).shape == (2, 3)


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0.0, max_value=1.0))
def test_ndtri_property(u):
    assert _same(ndtri(np.array([u])), special.ndtri(np.array([u])))


def _check_pdtr(k: np.ndarray, m: np.ndarray) -> None:
    got, want = pdtr(k, m), special.pdtr(k, m)
    assert got.shape == want.shape
    assert np.all(np.isfinite(got)) and np.all((got >= 0) & (got <= 1))
    big = want > 1e-5
    rel = np.abs(got - want) / np.where(big, want, 1.0)
    assert rel[big].max(initial=0.0) <= 1e-12
    tail = (want > 1e-300) & ~big
    lq = -np.log(want[tail])
    assert np.all(np.abs(np.log(got[tail]) - np.log(want[tail])) <= 1e-12 * lq)
    assert np.all(got[want == 0.0] < 1e-290)


def test_pdtr_matches_scipy_on_a_grid_with_large_counts_and_means():
    rng = np.random.default_rng(1)
    k = np.floor(10.0 ** rng.uniform(0, 5, 8_000))
    m = 10.0 ** rng.uniform(-3, 5.3, 8_000)
    _check_pdtr(k, m)
    # near the mode, where both series need the most terms: m = k +- a few sqrt(k) (beyond
    # k ~ 1e5 scipy's own asymptotic expansion drifts by ~1e-11: see the exact test)
    k = np.floor(10.0 ** rng.uniform(0, 5, 4_000))
    m = np.abs(k * (1.0 + rng.normal(0.0, 3.0, k.size) / np.sqrt(k + 1.0))) + 1e-3
    _check_pdtr(k, m)
    k, m = np.meshgrid(np.arange(0.0, 60.0), np.linspace(0.01, 120.0, 200))
    _check_pdtr(k, m)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=200_000),
       st.floats(min_value=1e-6, max_value=3e5, allow_nan=False))
def test_pdtr_property(k, m):
    _check_pdtr(np.array([float(k)]), np.array([m]))


def _exact_pdtr(k: int, m: float) -> float:
    """``P(K <= k)``, ``K ~ Poisson(m)``, in 50-digit decimal arithmetic: the terms relative
    to the ``k``-th, summed down from ``k`` and up from ``k + 1`` until negligible."""
    with localcontext() as ctx:
        ctx.prec = 50
        mm, tiny = Decimal(m), Decimal(10) ** -45
        below, t = Decimal(1), Decimal(1)
        for i in range(k, 0, -1):
            t = t * i / mm
            below += t
            if t < tiny * below:
                break
        above, t = Decimal(0), Decimal(1)
        i = k
        while True:
            i += 1
            t = t * mm / i
            above += t
            if t < tiny * (below + above):
                break
        return float(below / (below + above))


def test_pdtr_against_an_exact_sum():
    rng = np.random.default_rng(2)
    k = np.floor(10.0 ** rng.uniform(0, 3.2, 150))
    m = 10.0 ** rng.uniform(-1, 3.5, 150)
    # and large counts near the mode (m = k +- 5 sqrt(k))
    kb = np.floor(10.0 ** rng.uniform(4, 6, 12))
    mb = kb + rng.uniform(-5, 5, kb.size) * np.sqrt(kb)
    k, m = np.concatenate([k, kb]), np.concatenate([m, mb])
    want = np.array([_exact_pdtr(int(a), float(b)) for a, b in zip(k, m, strict=True)])
    got = pdtr(k, m)
    ok = want > 1e-250
    assert ok.sum() > 100
    assert np.all(np.abs(got[ok] - want[ok]) <= 1e-12 * want[ok])
    # the complement too, where the series gives P directly (Q near 1)
    lower = ok & (m < k + 1) & (want < 1)
    assert np.all(np.abs((1 - got[lower]) - (1 - want[lower]))
                  <= 1e-12 * np.maximum(1 - want[lower], 1e-4))


def test_pdtr_special_values_and_shapes():
    assert pdtr(0.0, 0.0) == 1.0 and type(pdtr(3.0, 2.5)) is float
    assert pdtr(3.7, 2.5) == pdtr(3.0, 2.5)  # counts are floored
    got = pdtr(np.array([-1.0, 2.0, np.nan, 2.0, np.inf, 3.0]),
               np.array([1.0, -1.0, 1.0, np.nan, 1.0, np.inf]))
    assert got[0] == 0.0 and np.isnan(got[1:4]).all() and got[4] == 1.0 and got[5] == 0.0
    assert pdtr(np.arange(6.0).reshape(2, 3), 2.0).shape == (2, 3)
    assert pdtr(np.arange(3.0)[:, None], np.array([1.0, 2.0])).shape == (3, 2)


@pytest.mark.parametrize("t", [-0.9, -0.3, -0.2499, -1e-3, -1e-12, 0.0, 1e-12, 1e-3, 0.2499,
                               0.3, 5.0])
def test_log1pmx(t):
    with localcontext() as ctx:
        ctx.prec = 50
        want = float((Decimal(1) + Decimal(t)).ln() - Decimal(t))
    got = float(_log1pmx(np.array([t]))[0])
    assert abs(got - want) <= 4e-16 * abs(want) + (0.0 if abs(t) < 0.25 else 2e-15 * abs(want))


def test_pdtr_hands_large_inputs_to_scipy_and_small_ones_to_numpy():
    """``pdtr``: numpy's series for what the cost path needs (no scipy import), scipy's
    O(1)-per-element expansion for large arrays or counts (the series needs O(sqrt(k))
    terms per element: a 15,000-point bracket at counts of 1e7 took minutes)."""
    rng = np.random.default_rng(4)
    k, m = np.floor(rng.uniform(0, 850, (32, 8))), rng.uniform(1, 1200, (32, 8))
    assert _same(_special.pdtr(k, m), pdtr(k, m))
    big_k = np.floor(10.0 ** rng.uniform(0, 7.1, 15_000))
    big_m = big_k * rng.uniform(0.9, 1.1, big_k.size)
    assert _same(_special.pdtr(big_k, big_m), special.pdtr(big_k, big_m))
    assert _special.pdtr(2.0e6, 2.0e6) == float(special.pdtr(2.0e6, 2.0e6))
    # numpy's series over many elements runs in chunks of bounded arrays, same accuracy
    k, m = big_k[big_k <= 1e5][:3000], big_m[big_k <= 1e5][:3000]
    assert k.size * (9 * np.sqrt(k.max()) + 32) > 2 * _special._MAX_CELLS
    _check_pdtr(k, m)
