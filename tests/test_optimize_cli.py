"""`planner optimize`: the status line, plan/routing/hourly tables, tidy CSVs, JSON, the
stochastic and verification summaries, infeasibility (exit 3) and quiet mode.

Every figure asserted is recomputed here by the engine (planner.engines.optimize) from the
same scenario, never typed in.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from planner.catalog import load_catalog
from planner.cli import EXIT_INFEASIBLE, main
from planner.config import load_scenario
from planner.engines.optimize import optimize, plan_view
from tests.conftest import ROOT
from tests.test_optimize import (
    HEADROOM,  # the plan queues in simulation
    SCALE_TO_ZERO,  # the quickstart's GPUs rented per hour
    SLO_INFEASIBLE,
)
from tests.test_optimize import STOCH as _ENGINE_STOCH

CAT = load_catalog()
QUICKSTART = ROOT / "planner" / "templates" / "quickstart.toml"
#: ``--set`` flags for SCALE_TO_ZERO
HOURLY = [a for k, v in SCALE_TO_ZERO.items() for a in ("--set", f"{k}={v}")]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _usd(x: float) -> str:
    return f"{x:,.0f} USD/month"


# uncertain demand; a reserved pool (first stage) competes with on-demand and an API (the
# engine tests' toy, here with the default objective)
STOCH = _ENGINE_STOCH.format(objective="expected")

@pytest.fixture(scope="module")
def high_volume():
    """The engine's answer for the quickstart's high-volume variant (API + GPUs rented per
    hour)."""
    sc = load_scenario(QUICKSTART, catalog=CAT, variants=["high-volume"],
                       overrides=SCALE_TO_ZERO)
    return optimize(sc, catalog=CAT, gap=0.0)


# ------------------------------------------------------------------------------------------
# plans


def test_quickstart_prints_status_plan_routing_and_hourly_mix(capsys):
    res = optimize(load_scenario(QUICKSTART, catalog=CAT), catalog=CAT, gap=0.0)
    code, out, err = run(capsys, "optimize", "example:quickstart", "--gap", "0")
    assert code == 0 and err == ""  # no progress for a deterministic solve
    status = out.splitlines()[0]
    assert status.startswith("optimal: cost " + _usd(res.objective_usd_per_month))
    assert f"LP relaxation {_usd(res.lp_bound)}" in status and "LP bound" not in status
    assert "of optimal (best bound " in status or "proven optimal (best bound " in status
    assert f"re-checked against {res.check.n_checked:,} constraints: passed" in status
    assert res.check.n_checked > res.milp_shape[0]  # every MILP row and more
    for title in ("== plan: what to buy, reserve, rent and call (USD per month) ==",
                  "== routing: share of each class's requests per route ==",
                  "== hourly mix (requests/s, replicas) =="):
        assert title in out
    plan = out.split("== plan")[1].split("== routing")[0].strip().splitlines()[2:]
    chosen = res.plan.loc[res.plan["chosen"], "deployment"]
    assert sorted(line.split()[0] for line in plan) == sorted(chosen)
    assert len(chosen) < len(res.plan)  # the unused candidates are not listed
    routing = out.split("== routing")[1].split("== hourly")[0]
    assert set(res.routing["class"]) == {c for c in ("chat", "summarise") if c in routing}
    hourly = out.split("== hourly mix")[1].strip().splitlines()
    assert len(hourly) == 1 + 1 + res.problem.periods  # title, header, one row per hour


def test_mixed_plan_shows_what_to_rent_and_the_hourly_replicas(capsys, high_volume):
    res = high_volume
    code, out, _ = run(capsys, "optimize", "example:quickstart", "--variant", "high-volume",
                       *HOURLY, "--gap", "0", "--format", "json")
    assert code == 0
    data = json.loads(out)
    plan = pd.DataFrame(data[next(k for k in data if k.startswith("plan"))])
    want = plan_view(res)
    assert plan["deployment"].tolist() == want["deployment"].tolist()
    np.testing.assert_allclose(plan["usd_per_month"], want["usd_per_month"], rtol=1e-9)
    assert plan["usd_per_month"].sum() == pytest.approx(res.objective_usd_per_month, rel=1e-6)
    # the rented pool's decision names the replica range the hourly table holds
    hosted = res.plan[res.plan["chosen"] & (res.plan["kind"] == "cloud")]
    assert len(hosted) >= 1
    for d in hosted["deployment"]:
        reps = res.hourly.loc[res.hourly["deployment"] == d, "replicas"]
        text = plan.set_index("deployment").loc[d, "decision"]
        assert text.startswith(f"rent {reps.min():g}-{reps.max():g} on-demand replicas")
        hourly = pd.DataFrame(data[next(k for k in data if k.startswith("hourly"))])
        np.testing.assert_allclose(hourly[f"{d} replicas"], reps.to_numpy(), rtol=0, atol=0)
    summary = pd.DataFrame(data["summary"]).set_index("metric")["value"]
    assert summary["status"] == "optimal" and summary["check_passed"] is True


def test_always_on_gpus_are_one_fleet_for_the_month(capsys):
    # the quickstart's GPUs are billed always-on (the default): the plan rents a fleet for
    # the month, the same replicas in every hour, as the cost engine prices them
    res = optimize(load_scenario(QUICKSTART, catalog=CAT, variants=["high-volume"]),
                   catalog=CAT, gap=0.0)
    code, out, _ = run(capsys, "optimize", "example:quickstart", "--variant", "high-volume",
                       "--gap", "0", "--format", "json")
    assert code == 0
    data = json.loads(out)
    plan = pd.DataFrame(data[next(k for k in data if k.startswith("plan"))]).set_index(
        "deployment")
    hosted = res.plan[res.plan["chosen"] & (res.plan["kind"] == "cloud")]
    assert len(hosted) >= 1
    for _, r in hosted.iterrows():
        reps = res.hourly.loc[res.hourly["deployment"] == r["deployment"], "replicas"]
        assert reps.nunique() == 1
        units = r["units_peak"]
        assert plan.loc[r["deployment"], "decision"].startswith(
            f"rent {units:g} instance{'s' * (units != 1)} always on (on-demand)")


def test_out_writes_tidy_csvs(capsys, tmp_path, high_volume):
    res = high_volume
    out_dir = tmp_path / "opt"
    code, _, err = run(capsys, "optimize", "example:quickstart", "--variant", "high-volume",
                       *HOURLY, "--gap", "0", "--out", out_dir)
    assert code == 0
    files = {p.name for p in out_dir.iterdir()}
    assert {"summary.csv", "plan.csv", "hourly.csv", "routing.csv", "flows.csv",
            "costs.csv", "messages.csv"} <= files
    assert "infeasibility.csv" not in files  # empty tables are not written
    assert f"wrote {len(files)} tables to {out_dir}" in err
    plan = pd.read_csv(out_dir / "plan.csv")
    assert list(plan.columns) == list(res.plan.columns)
    np.testing.assert_allclose(plan["usd_per_month"], res.plan["usd_per_month"], rtol=1e-12)
    hourly = pd.read_csv(out_dir / "hourly.csv")  # tidy: one row per hour and deployment
    assert len(hourly) == res.problem.periods * len(res.plan)
    assert {"hour", "deployment", "replicas", "requests_per_s"} <= set(hourly.columns)
    # requests/s summed over deployments and hours is the demand
    assert hourly["requests_per_s"].sum() == pytest.approx(res.problem.demand.sum(), rel=1e-9)
    costs = pd.read_csv(out_dir / "costs.csv")
    assert costs["usd_per_month"].sum() == pytest.approx(res.objective_usd_per_month, rel=1e-6)


def test_quiet_prints_nothing(capsys, tmp_path):
    code, out, err = run(capsys, "optimize", "example:quickstart", "-q")
    assert code == 0 and out == "" and err == ""


# ------------------------------------------------------------------------------------------
# infeasible: explained, not a crash


def test_budget_infeasible_exits_3_with_the_explanation(capsys, tmp_path):
    cheapest = optimize(load_scenario(QUICKSTART, catalog=CAT), catalog=CAT, gap=0.01)
    out_dir = tmp_path / "inf"
    code, out, _ = run(capsys, "optimize", "example:quickstart", "--set",
                       "optimize.budget_usd_per_month=100", "--out", out_dir)
    assert code == EXIT_INFEASIBLE == 3
    assert out.startswith("infeasible: no plan meets every constraint")
    assert "== infeasibility: re-solved without each group of limits ==" in out
    assert ("note: infeasible: the budget 100 USD/month is below the cheapest plan that meets "
            f"every other constraint: {_usd(cheapest.objective_usd_per_month)}") in out
    assert "== plan" not in out
    inf = pd.read_csv(out_dir / "infeasibility.csv").set_index("group")
    assert bool(inf.loc["budget", "feasible_without"])
    assert pd.read_csv(out_dir / "summary.csv").set_index("metric").loc["status", "value"] \
        == "infeasible"


def test_slo_infeasible_names_the_class_and_quiet_goes_to_stderr(capsys, write_toml):
    path = write_toml(SLO_INFEASIBLE)
    code, out, _ = run(capsys, "optimize", path)
    assert code == EXIT_INFEASIBLE
    assert "note: infeasible: class chat's TTFT SLO cannot be met by any candidate" in out
    code, out, err = run(capsys, "optimize", path, "-q")
    assert code == EXIT_INFEASIBLE and out == ""
    assert "class chat's TTFT SLO cannot be met by any candidate" in err


def test_user_errors_exit_2(capsys):
    code, _, err = run(capsys, "optimize", "example:quickstart", "--gap", "2")
    assert code == 2 and "gap" in err
    code, _, err = run(capsys, "optimize", "example:quickstart", "--set",
                       "optimize.objective=median")
    assert code == 2 and "optimize.objective" in err


# ------------------------------------------------------------------------------------------
# uncertainty and verification


def test_stochastic_prints_cost_range_cvar_vss_and_progress(capsys, write_toml):
    path = write_toml(STOCH)
    res = optimize(load_scenario(path, catalog=CAT), catalog=CAT, stochastic=True,
                   n_scenarios=20, seed=4)
    code, out, err = run(capsys, "optimize", path, "--stochastic", "-n", "20", "--seed", "4",
                         "--format", "csv")
    assert code == 0
    assert "sampling 20 Monte Carlo scenarios" in err and "solving the MILP" in err
    block = out.split("# stochastic: 20 scenarios (P5/P50/P95, CVaR, VSS)\n")[1].split("\n\n")[0]
    got = pd.read_csv(pd.io.common.StringIO(block)).set_index("metric")["value"]
    want = res.stochastic.set_index("metric")["value"]
    for m in ("p5_usd_per_month", "p50_usd_per_month", "p95_usd_per_month",
              "cvar95_usd_per_month", "VSS_usd_per_month", "EEV_objective"):
        assert got[m] == pytest.approx(want[m], rel=1e-9, abs=1e-6), m
    assert got["p5_usd_per_month"] <= got["p50_usd_per_month"] <= got["p95_usd_per_month"]
    assert "optimal: expected cost " + _usd(res.objective_usd_per_month) in err
    # quiet: the same answer, no progress
    code, out, err = run(capsys, "optimize", path, "--stochastic", "-n", "20", "--seed", "4",
                         "-q")
    assert code == 0 and out == "" and err == ""


def test_cvar_objective_is_named_in_the_status_line(capsys, write_toml):
    path = write_toml(STOCH)
    code, out, _ = run(capsys, "optimize", path, "--stochastic", "-n", "12", "--seed", "2",
                       "--objective", "cvar", "-q", "--format", "json")
    assert code == 0
    data = json.loads(out)
    st = {r["metric"]: r["value"] for r in data[next(k for k in data if
                                                    k.startswith("stochastic"))]}
    obj = {r["metric"]: r["value"] for r in data["summary"]}["objective_usd_per_month"]
    # expected + 1.0 x CVaR95 (the default lambda and alpha)
    assert obj == pytest.approx(st["expected_usd_per_month"] + st["cvar95_usd_per_month"],
                                rel=1e-6)
    code, out, _ = run(capsys, "optimize", path, "--stochastic", "-n", "12", "--seed", "2",
                       "--objective", "cvar")
    assert out.startswith("optimal: expected cost + lambda x CVaR ")


def test_verify_reports_the_slo_miss_and_the_headroom_that_fixes_it(capsys, write_toml):
    path = write_toml(HEADROOM)
    res = optimize(load_scenario(path, catalog=CAT), catalog=CAT, verify=True,
                   verify_window_s=150)
    code, out, err = run(capsys, "optimize", path, "--verify", "--verify-window", "150")
    assert code == 0  # a plan exists; the SLO miss is reported, with its fix
    assert "simulating the planned day: 24 hours, up to 150 s of each" in err
    assert "headroom: re-optimising" in err
    assert "== verification: 24 simulated hour(s) of the plan" in out
    assert "== headroom: utilisation targets tried ==" in out
    v = res.verification.set_index("class").loc["chat"]
    assert not v["passed"]
    fixed = res.headroom.iloc[-1]
    assert bool(fixed["passed"])
    assert (f"headroom that fixes it: utilisation_target {fixed['utilisation_target']:g} "
            f"(instead of 1) passes in simulation at "
            f"{fixed['usd_per_month']:,.0f} USD/month") in out
    assert "FAILS its SLO in simulation" in out
    # the verification table printed is the engine's
    block = out.split("== verification")[1].split("\n\n")[0].splitlines()
    assert block[0] == f": {int(res.verification['hours'].max())} simulated hour(s) of the " \
        "plan, SLO attainment over the day and in the worst hour =="
    row = next(line.split() for line in block[2:] if line.split()[0] == "chat")
    assert row[1] == f"{int(v['requests']):,}" and row[-1] == "False"
    assert not math.isnan(fixed["min_slo_attainment"])


def test_a_plan_that_fails_the_recheck_is_not_trusted_exit_4(capsys, monkeypatch):
    # tamper with a real solution (one replica fewer in the busiest hour of the rented pool)
    # and hand it to the CLI as the engine's answer: it must print the violations, exit 4
    import planner.engines.optimize as eng
    from planner.cli import EXIT_NO_PLAN
    from planner.engines.optimize_milp import check_plan

    real = eng.optimize

    def tampered(*a, **kw):
        res = real(*a, **kw)
        j = res.solution.options.index("llama-8b-h100")
        h = int(np.argmax(res.solution.blocks[0, j]))
        res.solution.blocks[0, j, h] -= 1
        res.check = check_plan(res.problem, res.solution)
        return res

    monkeypatch.setattr(eng, "optimize", tampered)
    code, out, _ = run(capsys, "optimize", "example:quickstart", "--variant", "high-volume",
                       *HOURLY)
    assert code == EXIT_NO_PLAN == 4
    assert "solution FAILED the re-check: 1 capacity violation(s)" in out.splitlines()[0]
    block = out.split("== violations found by the re-check ==")[1]
    assert f"option=llama-8b-h100, h={h_busiest()}" in block


def h_busiest() -> int:
    sc = load_scenario(QUICKSTART, catalog=CAT, variants=["high-volume"],
                       overrides=SCALE_TO_ZERO)
    res = optimize(sc, catalog=CAT)
    j = res.solution.options.index("llama-8b-h100")
    return int(np.argmax(res.solution.blocks[0, j]))
