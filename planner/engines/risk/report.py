"""The report's risk section: the Monte Carlo cost distribution of a month and, for horizons
longer than a year, the multi-year cost paths.

The hook :func:`report_tables` (called by :mod:`planner.report.providers`) sits above both
engines (:mod:`planner.engines.risk.run`, :mod:`planner.engines.risk.multiyear`), so neither
has to import the other's caller.
"""

from __future__ import annotations

import pandas as pd

from planner.catalog import Catalog
from planner.config import Scenario
from planner.engines.risk.multiyear import run_multiyear
from planner.engines.risk.run import run_montecarlo
from planner.errors import PlannerError
from planner.uncertain import uncertain_inputs

__all__ = ["report_tables"]


def report_tables(scenario: Scenario, catalog: Catalog | None = None, *, n: int = 20_000,
                  seed: int = 0, chart_samples: int = 4_000) -> dict[str, pd.DataFrame]:
    """Tables for the report's risk section (contract in :mod:`planner.report.providers`).

    Runs ``n`` samples with a fixed seed (the report is reproducible); the tornado is the one
    of the option most often cheapest; the cumulative cost paths (before the on-prem
    residual-value credit, which is a column of its own) come from :func:`run_multiyear`
    when the horizon is longer than a year.
    """
    if not uncertain_inputs(scenario):
        raise PlannerError("the scenario has no uncertain inputs (no distributions): "
                           "there is no risk to show")
    res = run_montecarlo(scenario, n=n, seed=seed, catalog=catalog)
    samples = res.samples.iloc[:chart_samples].melt(var_name="deployment",
                                                    value_name="usd_per_month")
    s = res.summary[res.summary["metric"] == "usd_per_month"]
    summary = pd.DataFrame({
        "deployment": s["deployment"].to_numpy(), "usd_p5": s["p5"].to_numpy(),
        "usd_p50": s["p50"].to_numpy(), "usd_p95": s["p95"].to_numpy(),
        "mean_usd": s["mean"].to_numpy(), "cvar95_usd": s["cvar95"].to_numpy(),
    })
    win = res.win_probability.rename(columns={"p_cheapest": "probability"})[
        ["deployment", "probability"]]
    out = {"samples": samples, "summary": summary, "win": win}
    if not res.tornado.empty and not win.empty:
        best = win.loc[win["probability"].idxmax(), "deployment"]
        t = res.tornado[(res.tornado["deployment"] == best) & (res.tornado["swing"] > 0)]
        out["tornado"] = pd.DataFrame({
            "input": t["input"].to_numpy(), "low_usd_per_month": t["usd_low"].to_numpy(),
            "high_usd_per_month": t["usd_high"].to_numpy(),
            "base_usd_per_month": t["usd_base"].to_numpy(),
            "input_low": t["low_value"].to_numpy(), "input_high": t["high_value"].to_numpy(),
        })
    if scenario.scenario.horizon_months > 12:
        y = run_multiyear(scenario, n=min(n, 10_000), seed=seed, catalog=catalog).cumulative
        out["paths"] = y.rename(columns={
            "p5": "usd_p5", "p50": "usd_p50", "p95": "usd_p95",
            "residual_credit_p50": "residual_credit_usd", "net_p50": "usd_net_p50"})[
            ["year", "deployment", "usd_p5", "usd_p50", "usd_p95", "residual_credit_usd",
             "usd_net_p50"]]
    return out
