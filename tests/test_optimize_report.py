"""The optimiser's report hook (`report_tables`): the contract of planner.report.providers,
the figures traced to the engine, and the reasons given when there is nothing to optimise."""

from __future__ import annotations

import tomllib

import numpy as np
import pandas as pd
import pytest

from planner.catalog import load_catalog
from planner.config import load_scenario, parse_scenario
from planner.engines.optimize import optimize, report_tables, status_line
from planner.errors import PlannerError
from planner.report import build_report
from planner.report.providers import CONTRACTS, check_frames
from tests.conftest import ROOT

CAT = load_catalog()
QUICKSTART = ROOT / "planner" / "templates" / "quickstart.toml"
HYBRID = ROOT / "studies" / "hybrid-support-bot" / "scenario.toml"


@pytest.fixture(scope="module")
def hybrid():
    sc = load_scenario(HYBRID, catalog=CAT)
    return sc, report_tables(sc, catalog=CAT), optimize(sc, catalog=CAT)


def test_tables_meet_the_report_contract(hybrid):
    _, tabs, res = hybrid
    frames = check_frames(tabs, "optimiser", CONTRACTS["optimiser"])
    plan, hourly = frames["plan"], frames["hourly"]
    assert {"deployment", "usd_per_month", "decision"} <= set(plan.columns)
    assert {"hour", "deployment", "requests_per_s"} <= set(hourly.columns)
    # only the chosen deployments, and their costs add up to the optimum
    chosen = res.plan.loc[res.plan["chosen"], "deployment"]
    tuned = [f"finetune:{f}" for f in res.finetune.loc[res.finetune["chosen"], "finetune"]]
    assert tuned  # the study's answer includes the fine-tune: a row of its own
    assert sorted(plan["deployment"]) == sorted([*chosen, *tuned])
    assert plan["usd_per_month"].sum() == pytest.approx(res.objective_usd_per_month, rel=1e-6)
    assert set(hourly["deployment"]) == set(chosen)
    assert sorted(hourly["hour"].unique()) == list(range(res.problem.periods))
    # every request of every hour is served by some deployment
    served = hourly.groupby("hour")["requests_per_s"].sum().to_numpy()
    np.testing.assert_allclose(served, res.problem.demand[0].sum(axis=0), rtol=1e-9)
    # the fine-tune decision and routing come along
    assert bool(tabs["finetune"].set_index("finetune").loc["support-lora", "chosen"]) == bool(
        res.finetune.set_index("finetune").loc["support-lora", "chosen"])
    r = tabs["routing"].groupby("class")["share"].sum()
    np.testing.assert_allclose(r.to_numpy(), 1.0, rtol=1e-9)
    first = tabs["notes"]["note"].iloc[0]  # the status line (solve times differ run to run)
    want = status_line(res)
    assert first.split("solved in")[0] == want.split("solved in")[0]
    assert first.endswith(res.check.summary()) and "passed" in first


def test_decision_text_names_what_to_buy(hybrid):
    _, tabs, res = hybrid
    plan = tabs["plan"].set_index("deployment")
    for d, row in res.plan[res.plan["chosen"]].set_index("deployment").iterrows():
        text = plan.loc[d, "decision"]
        if row["kind"] == "api":
            assert text.startswith("call ")
        elif row["kind"] == "onprem":
            assert text.startswith(f"buy {row['units_peak']:g} ")
            assert f"{row['replicas_peak']:g} replicas on {row['gpus_peak']:g} GPUs" in text


def _toml(text):
    return parse_scenario(tomllib.loads(text), catalog=CAT)


def test_nothing_to_optimise_raises_with_the_reason():
    with pytest.raises(PlannerError, match="no deployment candidates"):
        report_tables(_toml('[scenario]\nname="x"\n[workload.q]\nrequests_per_day=10\n'
                            'input=1\noutput=1\n'), catalog=CAT)
    with pytest.raises(PlannerError, match="no workload class"):
        report_tables(_toml('[scenario]\nname="x"\n[api.a]\noffering="openai/gpt-4o"\n'),
                      catalog=CAT)
    with pytest.raises(PlannerError, match="no requests to serve"):
        report_tables(_toml('[scenario]\nname="x"\n[workload.q]\nrequests_per_day=0\n'
                            'input=1\noutput=1\n[api.a]\noffering="openai/gpt-4o"\n'),
                      catalog=CAT)
    sc = load_scenario(QUICKSTART, catalog=CAT,
                       overrides={"optimize.budget_usd_per_month": 100})
    with pytest.raises(PlannerError, match="budget 100 USD/month is below the cheapest plan"):
        report_tables(sc, catalog=CAT)


def test_report_section_shows_status_mix_chart_routing(tmp_path):
    res = build_report(HYBRID, out_dir=tmp_path / "r", progress=False,
                       sections=["optimiser"])
    assert "hourly_mix" in res.charts
    assert {"plan", "routing", "finetune_decision", "hourly_mix"} <= set(res.tables)
    doc = res.html.read_text(encoding="utf-8")
    opt = optimize(load_scenario(HYBRID, catalog=CAT), catalog=CAT)
    assert f"cost {opt.objective_usd_per_month:,.0f} USD/month" in doc
    assert f"re-checked against {opt.check.n_checked:,} constraints: passed" in doc
    routing = pd.read_csv(res.tables["routing"])
    assert set(routing["class"]) == {"chat", "summarise", "search"}
