"""Arrival-time and request-length generation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from planner.arrivals import (
    MMPP2,
    ArrivalClass,
    EmpiricalLength,
    FixedLength,
    GammaRenewal,
    LognormalLength,
    MixtureLength,
    generate_requests,
    hourly_rates,
    poisson_arrivals,
)
from planner.errors import PlannerError


def test_hourly_rates_profile_and_weekend():
    w = np.arange(1, 25, dtype=float)
    r = hourly_rates(24_000, w, 24 * 7, weekend_factor=0.5, start_weekday=0)
    assert r.shape == (168,)
    assert r[:24].sum() == pytest.approx(24_000)
    assert r[5 * 24 : 6 * 24].sum() == pytest.approx(12_000)  # Saturday
    assert r[23] / r[0] == pytest.approx(24.0)
    weekly = hourly_rates(1000, np.ones(168), 168)
    assert weekly.sum() == pytest.approx(7000)
    flat = hourly_rates(2400, None, 48)
    assert np.allclose(flat, 100)
    named = hourly_rates(1000, "business", 24)
    assert named.sum() == pytest.approx(1000) and named.argmax() in range(9, 17)
    with pytest.raises(PlannerError, match="24 or 168"):
        hourly_rates(10, [1, 2, 3], 24)
    with pytest.raises(PlannerError, match="profile"):
        hourly_rates(10, "no-such-profile", 24)


def test_nhpp_counts_follow_the_hourly_rates():
    rates = np.array([100.0, 4000.0, 0.0, 2000.0])
    t = np.concatenate([poisson_arrivals(rates, np.random.default_rng(s)) for s in range(30)])
    counts = np.bincount((t // 3600).astype(int), minlength=4) / 30
    assert counts[2] == 0
    assert counts == pytest.approx(rates, rel=0.03, abs=2)
    one = poisson_arrivals(rates, np.random.default_rng(0))
    assert (np.diff(one) >= 0).all() and one.min() >= 0 and one.max() < 4 * 3600
    # within an hour the times are uniform (order statistics of a Poisson process)
    h1 = one[(one >= 3600) & (one < 7200)] - 3600
    assert stats.kstest(h1 / 3600, "uniform").pvalue > 1e-3


def test_poisson_gaps_are_exponential_at_constant_rate():
    t = poisson_arrivals(np.full(5, 3600.0), np.random.default_rng(1))
    gaps = np.diff(t)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("cv", [0.5, 3.0])
def test_gamma_renewal_has_requested_cv_and_rate(cv):
    rates = np.full(6, 7200.0)  # 2 per second
    t = poisson_arrivals(rates, np.random.default_rng(2), burstiness=GammaRenewal(cv))
    gaps = np.diff(t)
    assert len(t) == pytest.approx(rates.sum(), rel=0.05 if cv > 1 else 0.01)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.08)


def test_gamma_renewal_keeps_the_diurnal_shape():
    rates = np.array([1000.0, 5000.0, 1000.0, 5000.0])
    counts = np.zeros(4)
    for s in range(20):
        t = poisson_arrivals(rates, np.random.default_rng(s), burstiness=GammaRenewal(2.0))
        counts += np.bincount((t // 3600).astype(int), minlength=4)
    assert counts / 20 == pytest.approx(rates, rel=0.05)


def test_mmpp_keeps_mean_rate_and_is_overdispersed():
    m = MMPP2(high_factor=4.0, mean_high_s=60.0, mean_low_s=240.0)
    assert m.low_factor == pytest.approx((1 - 0.2 * 4) / 0.8)
    rates = np.full(24, 3600.0)
    # the count of one day has a relative sd of ~5% (alternating-renewal variance of the
    # time spent in the high state); the mean of 10 days is within 5% at > 3 sd
    runs = [poisson_arrivals(rates, np.random.default_rng(s), burstiness=m) for s in range(10)]
    assert np.mean([len(x) for x in runs]) == pytest.approx(rates.sum(), rel=0.05)
    t = runs[0]
    per_min = np.bincount((t // 60).astype(int))
    assert per_min.var() / per_min.mean() > 5.0  # Poisson would be ~1
    with pytest.raises(PlannerError, match="high_factor"):
        MMPP2(high_factor=6.0, mean_high_s=60.0, mean_low_s=240.0)


def test_length_samplers():
    rng = np.random.default_rng(4)
    ln = LognormalLength(median=500, p90=2000)
    x = ln.sample(rng, 200_000)
    assert x.dtype == np.int64 and x.min() >= 1
    assert np.median(x) == pytest.approx(500, rel=0.02)
    assert np.quantile(x, 0.9) == pytest.approx(2000, rel=0.02)
    capped = LognormalLength(median=500, p90=2000, max_tokens=1000).sample(rng, 1000)
    assert capped.max() <= 1000
    emp = EmpiricalLength(np.array([3, 7, 7, 11]))
    e = emp.sample(rng, 40_000)
    assert set(np.unique(e)) == {3, 7, 11}
    assert (e == 7).mean() == pytest.approx(0.5, abs=0.01)
    mix = MixtureLength((FixedLength(10), FixedLength(1000)), (0.25, 0.75))
    m = mix.sample(rng, 40_000)
    assert (m == 10).mean() == pytest.approx(0.25, abs=0.01)
    with pytest.raises(PlannerError, match="median"):
        LognormalLength(median=100, p90=50)


def test_planner_distributions_plug_in_as_length_samplers():
    from planner.distributions import LognormalDist

    cls = ArrivalClass(
        "chat",
        10_000,
        input_tokens=LognormalDist(median=300, p90=900),
        output_tokens=FixedLength(50),
    )
    reqs = cls.generate(2, np.random.default_rng(5))
    assert np.median(reqs.input_tokens) == pytest.approx(300, rel=0.1)


def test_generate_requests_merges_classes_with_context_and_cache():
    chat = ArrivalClass(
        "chat",
        24_000,
        input_tokens=LognormalLength(200, 800),
        output_tokens=LognormalLength(100, 300),
        profile="consumer",
        fixed_context_tokens=500,
        cached_prefix_share=0.8,
    )
    batch = ArrivalClass(
        "batch",
        0,
        input_tokens=FixedLength(2000),
        output_tokens=FixedLength(400),
        rates_per_hour=(0, 600),
    )
    reqs = generate_requests([chat, batch], 24, np.random.default_rng(6))
    assert (np.diff(reqs.arrival_s) >= 0).all()
    df = reqs.to_frame()
    c = df[df["class"] == "chat"]
    b = df[df["class"] == "batch"]
    assert len(c) == pytest.approx(24_000, rel=0.03)
    assert len(b) == pytest.approx(12 * 600, rel=0.05)
    assert (c.input_tokens >= 500).all() and (c.cached_input_tokens == 400).all()
    assert (b.cached_input_tokens == 0).all() and (b.input_tokens == 2000).all()
    # the batch class has no arrivals in its zero-rate hours
    assert ((b.arrival_s // 3600) % 2 == 1).all()
    # same seed, same requests; a class's stream does not depend on the others
    again = generate_requests([chat, batch], 24, np.random.default_rng(6))
    assert np.array_equal(again.arrival_s, reqs.arrival_s)
    with pytest.raises(PlannerError, match="unique"):
        generate_requests([chat, chat], 1, np.random.default_rng(0))
