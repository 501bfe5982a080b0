"""Multi-year engine: price paths, growth, purchases and net present cost."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

from planner.config import load_scenario, parse_scenario
from planner.engines.deterministic import evaluate
from planner.engines.risk.multiyear import annual_decline, run_multiyear
from planner.errors import PlannerError
from planner.uncertain import risk_tables
from tests.conftest import at_median

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "planner" / "templates" / "quickstart.toml"


def _quickstart(**over):
    base = {"onprem.llama-70b-hgx.cost_of_capital": 0.0,
            "onprem.llama-70b-hgx.amortisation_years": 3,
            "onprem.llama-70b-hgx.residual_share": 0.2}
    base.update(over)
    return at_median(load_scenario(QUICKSTART), overrides=base)


def test_annual_decline_from_the_articles():
    # ~80% cost decline for GPT-3-level capability in 2.5 years -> 47.5% a year
    d = annual_decline(0.8, 2.5)
    assert d == pytest.approx(0.4747, abs=1e-4)
    assert (1 - d) ** 2.5 == pytest.approx(0.2, rel=1e-12)
    with pytest.raises(PlannerError):
        annual_decline(1.0, 2.0)


def test_no_trends_equals_deterministic_horizon_cost():
    """No trends, no discounting, horizon = amortisation life, straight-line capex: the NPC is
    the deterministic usd_horizon for every option (the on-prem credit is the residual)."""
    sc = _quickstart()
    det = evaluate(sc).summary.set_index("deployment")["usd_horizon"]
    res = run_multiyear(sc, n=50, seed=1)
    npc = res.npc.set_index("deployment")
    np.testing.assert_allclose(npc.loc[det.index, "at_median"], det, rtol=1e-10)
    np.testing.assert_allclose(npc.loc[det.index, "p50"], det, rtol=1e-10)
    assert res.years == 3
    yearly = res.yearly.set_index(["deployment", "year"])["at_median"]
    # on-prem: purchase in year 1, book value (residual 20%) back at the end
    hw = evaluate(sc).summary.set_index("deployment").loc["llama-70b-hgx"]
    capex = hw["units"] * 317000
    assert yearly[("llama-70b-hgx", 1)] - yearly[("llama-70b-hgx", 2)] == pytest.approx(capex)
    assert yearly[("llama-70b-hgx", 2)] - yearly[("llama-70b-hgx", 3)] == pytest.approx(
        0.2 * capex)


def test_partial_year_and_discounting_closed_form():
    sc = _quickstart(**{"scenario.horizon_months": 18, "scenario.discount_rate_per_year": 0.1})
    monthly = evaluate(sc).summary.set_index("deployment").loc["gpt-4o", "usd_per_month"]
    d, g, r = 0.3, 0.2, 0.1
    res = run_multiyear(sc, n=20, seed=1, trends={"api_price_decline_per_year": d,
                                                  "traffic_growth_per_year": g})
    npc = res.npc.set_index("deployment").loc["gpt-4o"]
    # year 1: 12 months at mid-year; year 2: 6 months, mid-point at 1.25 years
    want = (12 * monthly / (1 + r) ** 0.5
            + 6 * monthly * (1 + g) * (1 - d) / (1 + r) ** 1.25)
    assert npc["at_median"] == pytest.approx(want, rel=1e-12)
    assert npc["p5"] == pytest.approx(want, rel=1e-12)  # nothing uncertain
    # without trends and discounting an 18-month horizon costs 18 months
    flat = run_multiyear(_quickstart(**{"scenario.horizon_months": 18}), n=5, seed=1)
    assert flat.npc.set_index("deployment").loc["gpt-4o", "at_median"] == pytest.approx(
        18 * monthly, rel=1e-12)


def test_cloud_price_path_resizes_for_growth():
    sc = _quickstart()
    g, d = 1.0, 0.25  # traffic doubles every year, rental falls 25% a year
    res = run_multiyear(sc, n=5, seed=1, trends={"gpu_price_decline_per_year": d,
                                                 "traffic_growth_per_year": g})
    yearly = res.yearly.set_index(["deployment", "year"])["at_median"]
    for y in range(3):
        m = evaluate(sc, volume_scale=(1 + g) ** y).summary.set_index("deployment").loc[
            "llama-70b-h100", "usd_per_month"]
        assert yearly[("llama-70b-h100", y + 1)] == pytest.approx(12 * m * (1 - d) ** y,
                                                                 rel=1e-12)


def test_onprem_growth_purchases_and_replacement():
    """Cash view by hand: servers bought as the fleet grows (at that year's price), replaced
    at the end of their 2-year life, energy of the needed servers, book value credited."""
    sc = _quickstart(**{"scenario.horizon_months": 60,
                        "onprem.llama-70b-hgx.amortisation_years": 2,
                        "onprem.llama-70b-hgx.ops_usd_per_year": 0.0})
    g, dh = 3.0, 0.5  # traffic x4 a year; servers bought later cost half as much each year
    res = run_multiyear(sc, n=5, seed=1, trends={"traffic_growth_per_year": g,
                                                 "hardware_price_decline_per_year": dh})
    units, energy = [], []
    for y in range(5):
        r = evaluate(sc, volume_scale=(1 + g) ** y)
        units.append(r.summary.set_index("deployment").loc["llama-70b-hgx", "units"])
        c = r.costs
        energy.append(c[(c["deployment"] == "llama-70b-hgx")
                        & (c["component"] == "energy")]["usd_per_month"].sum())
    assert units[0] < units[1] < units[2]
    price = [317000 * (1 - dh) ** y for y in range(5)]
    cohorts = []  # [units, price, year bought]
    want = []
    for y in range(5):
        cash = 0.0
        for co in cohorts:
            if y - co[2] >= 2:  # replaced at the end of its life
                co[1], co[2] = price[y], y
                cash += co[0] * price[y]
        add = units[y] - sum(co[0] for co in cohorts)
        if add > 0:
            cohorts.append([add, price[y], y])
            cash += add * price[y]
        want.append(cash + 12 * energy[y])
    credit = sum(u * p * (1 - 0.8 * min((5 - b) / 2, 1)) for u, p, b in cohorts)
    want[-1] -= credit
    got = res.yearly.set_index(["deployment", "year"])["at_median"]
    np.testing.assert_allclose([got[("llama-70b-hgx", y + 1)] for y in range(5)], want,
                               rtol=1e-12)
    npc = res.npc.set_index("deployment").loc["llama-70b-hgx", "at_median"]
    assert npc == pytest.approx(sum(want), rel=1e-12)  # no discounting


def test_risk_example_trends_give_bands():
    path = ROOT / "planner" / "templates" / "risk-example.toml"
    rest, corr, trends = risk_tables(tomllib.loads(path.read_text(encoding="utf-8")))
    sc = parse_scenario(rest, path=str(path))
    res = run_multiyear(sc, trends=trends, correlations=corr, n=4000, seed=2)
    npc = res.npc.set_index("deployment")
    assert (npc["p5"] < npc["p50"]).all() and (npc["p50"] < npc["p95"]).all()
    assert npc["p_lowest"].sum() == pytest.approx(1.0)
    assert res.discount_rate == 0.08
    api = res.yearly[res.yearly["deployment"] == "gpt-4o"]
    assert list(api["year"]) == [1, 2, 3]
    assert (api["p5"] < api["p95"]).all()
    assert res.samples.shape == (4000, 3)
    assert math.isfinite(npc.loc["llama-70b-hgx", "cvar95"])


def test_bad_trends_name_the_field():
    sc = _quickstart()
    with pytest.raises(PlannerError, match="trends.api_price_decline_per_year"):
        run_multiyear(sc, n=5, trends={"api_price_decline_per_year": 1.5})
    with pytest.raises(PlannerError, match="trends.traffic_growth_per_year"):
        run_multiyear(sc, n=5, trends={"traffic_growth_per_year": -1.0})
    with pytest.raises(PlannerError, match="trends.price_fall"):
        run_multiyear(sc, n=5, trends={"price_fall": 0.1})


def test_uncertain_discount_rate_and_trend_correlation():
    sc = _quickstart(**{"scenario.discount_rate_per_year":
                        {"dist": "uniform", "low": 0.0, "high": 0.2}})
    res = run_multiyear(sc, n=3000, seed=3,
                        trends={"api_price_decline_per_year":
                                {"dist": "triangular", "low": 0.2, "mode": 0.47, "high": 0.6}},
                        correlations=[("trends.api_price_decline_per_year",
                                       "scenario.discount_rate_per_year", 0.5)])
    assert res.discount_rate is None
    npc = res.npc.set_index("deployment")
    # cloud: only the discount rate is uncertain; its median (0.1) gives at_median
    monthly = evaluate(sc).summary.set_index("deployment").loc["llama-70b-h100",
                                                               "usd_per_month"]
    want = sum(12 * monthly / 1.1 ** (y + 0.5) for y in range(3))
    assert npc.loc["llama-70b-h100", "at_median"] == pytest.approx(want, rel=1e-12)
    lo, hi = (sum(12 * monthly / (1 + r) ** (y + 0.5) for y in range(3)) for r in (0.2, 0.0))
    assert lo < npc.loc["llama-70b-h100", "p5"] < npc.loc["llama-70b-h100", "p95"] < hi
