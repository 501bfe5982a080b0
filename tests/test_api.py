"""The Python API (planner.api): doctests, agreement with the engines and the CLI, the
README one-liner, and that ``import planner`` stays cheap."""

from __future__ import annotations

import doctest
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import planner
from planner import api
from planner.errors import PlannerError

ROOT = Path(__file__).resolve().parents[1]
ONE_LINER = ("import planner; r = planner.cost(planner.load('example:quickstart')); "
             "print(r.summary)")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


@pytest.fixture(scope="module")
def quickstart():
    return api.load("example:quickstart")


def test_doctests_of_the_api_module_pass():
    res = doctest.testmod(api, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    # every public function documents a runnable example
    assert res.attempted >= 30
    assert res.failed == 0


def test_every_public_function_has_an_example():
    finder = doctest.DocTestFinder()
    with_examples = {t.name.rsplit(".", 1)[-1] for t in finder.find(api) if t.examples}
    public = {n for n in api.__all__ if callable(getattr(api, n))
              and not isinstance(getattr(api, n), type)}
    assert public - with_examples == set()


def test_package_reexports_the_api_lazily():
    code = ("import sys, planner; a = 'planner.api' in sys.modules; f = planner.cost; "
            "print(a, 'planner.api' in sys.modules, 'pandas' in sys.modules, "
            "f is sys.modules['planner.api'].cost)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(), check=True, cwd=ROOT).stdout.split()
    assert out == ["False", "True", "False", "True"]
    assert "cost" in dir(planner)
    with pytest.raises(AttributeError, match="no_such_thing"):
        planner.no_such_thing  # noqa: B018


def test_readme_one_liner_runs_and_prints_the_engine_summary(quickstart):
    assert f'python -c "{ONE_LINER}"' in (ROOT / "README.md").read_text(encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", ONE_LINER], capture_output=True, text=True,
                          env=_env(), cwd="/", timeout=120)
    assert proc.returncode == 0, proc.stderr
    from planner.engines.deterministic import evaluate

    with pd.option_context("display.width", 80):  # what a non-terminal stdout gets
        expected = str(evaluate(quickstart).summary)
    assert proc.stdout.strip() == expected.strip()


def test_load_applies_variants_and_overrides_like_the_cli(quickstart):
    from planner.cli import build_parser
    from planner.cli import load as cli_load

    args = build_parser().parse_args([
        "cost", "example:quickstart", "--variant", "high-volume,spot",
        "--set", "planning.utilisation_target=0.7"])
    via_cli = cli_load(args)
    via_api = api.load("example:quickstart", variants=["high-volume", "spot"],
                       overrides={"planning.utilisation_target": 0.7})
    assert via_api == via_cli
    assert via_api != quickstart
    assert via_api.cloud["llama-8b-h100"].plan == "spot"
    with pytest.raises(PlannerError, match="no bundled example 'nope'"):
        api.load("example:nope")
    with pytest.raises(PlannerError, match="expected KEY=VALUE"):
        api.parse_overrides(["planning.lens"])


def test_cost_wraps_the_deterministic_engine(quickstart):
    from planner.engines.deterministic import evaluate

    r = api.cost(quickstart)
    e = evaluate(quickstart)
    for name, df in e.tables().items():
        pd.testing.assert_frame_equal(getattr(r, name), df)
    full = e.summary[e.summary["classes_unserved"] == ""]
    assert r.cheapest == full.loc[full["usd_per_month"].idxmin(), "deployment"]
    # a path works as well as a Scenario
    pd.testing.assert_frame_equal(api.cost(api.scenario_path("example:quickstart")).summary,
                                  e.summary)
    assert r.payback.empty  # the quickstart declares no [[payback]]


def test_to_dict_is_json_and_holds_every_table(quickstart):
    r = api.cost(quickstart)
    d = r.to_dict()
    json.dumps(d, allow_nan=False)  # NaN became None
    assert d["kind"] == "CostResult" and d["lens"] == r.lens
    assert set(d["tables"]) == set(r.tables())
    rows = d["tables"]["summary"]
    assert [x["deployment"] for x in rows] == list(r.summary["deployment"])
    api_row = rows[0]
    assert api_row["replicas"] is None and math.isnan(r.summary.loc[0, "replicas"])
    assert api_row["usd_per_month"] == pytest.approx(r.summary.loc[0, "usd_per_month"])


def test_breakeven_wraps_the_engine(quickstart):
    from planner.engines.breakeven import breakeven

    r = api.breakeven(quickstart)
    e = breakeven(quickstart)
    for name in ("volume", "finetune", "payback", "curve"):
        pd.testing.assert_frame_equal(getattr(r, name), getattr(e, name))
    assert set(r.tables()) == {"volume", "finetune", "payback", "curve"}


def test_risk_is_reproducible_and_wraps_the_engine(quickstart):
    from planner.engines.risk.run import run_montecarlo

    r = api.risk(quickstart, n=3000, seed=4)
    e = run_montecarlo(quickstart, n=3000, seed=4)
    pd.testing.assert_frame_equal(r.headline, e.headline())
    pd.testing.assert_frame_equal(r.win_probability, e.win_probability)
    again = api.risk(quickstart, n=3000, seed=4)
    pd.testing.assert_frame_equal(r.summary, again.summary)
    other = api.risk(quickstart, n=3000, seed=5)
    assert not r.summary["p95"].equals(other.summary["p95"])
    assert r.p_cheapest == dict(zip(e.win_probability["deployment"],
                                    e.win_probability["p_cheapest"], strict=True))
    json.dumps(r.to_dict(), allow_nan=False)


def test_optimize_wraps_the_engine(quickstart):
    from planner.engines.optimize import optimize, status_line

    r = api.optimize(quickstart)
    e = optimize(quickstart, seed=0)
    assert (r.status, r.trusted) == (e.status, e.trusted)
    assert r.objective_usd_per_month == pytest.approx(e.objective_usd_per_month, rel=1e-9)
    pd.testing.assert_frame_equal(r.plan, e.plan)
    pd.testing.assert_frame_equal(r.routing, e.routing)
    assert r.status_line.split(",")[0] == status_line(e).split(",")[0]
    assert {"plan", "routing", "summary", "violations"} <= set(r.tables())
    json.dumps(r.to_dict(), allow_nan=False)


def test_simulate_wraps_the_engine(quickstart):
    from planner.sim.scenario import run_tables, simulate_scenario

    kw = {"deployments": ["llama-8b-h100"], "hours": 1, "start_hour": 10, "seed": 3}
    r = api.simulate(quickstart, **kw)
    t = run_tables(simulate_scenario(quickstart, **kw), records=False)
    for name in ("latency", "slo", "deployments", "totals", "hourly", "utilisation"):
        pd.testing.assert_frame_equal(getattr(r, name), t[name])
    assert r.requests.empty
    rec = api.simulate(quickstart, records=True, **kw)
    assert len(rec.requests) == int(r.latency.loc[r.latency["class"] == "all",
                                                  "requests"].iloc[0])


def test_report_writes_the_html_and_lists_its_files(quickstart, tmp_path):
    rep = api.report(quickstart, tmp_path / "rep", sections=["summary"])
    assert rep.html == tmp_path / "rep" / "report.html" and rep.html.is_file()
    assert rep.sections == ("summary",)
    assert len(rep.files) and all(Path(p).is_file() for p in rep.files["path"])
    json.dumps(rep.to_dict(), allow_nan=False)


def test_perf_matches_the_cli_tables(capsys):
    from planner.cli import main

    p = api.perf("llama-3.1-70b", "h100-sxm", tp=2, precision="fp8", isl=1000, osl=1000,
                 tpot_slo_s=0.05)
    assert main(["perf", "--model", "llama-3.1-70b", "--accelerator", "h100-sxm", "--tp", "2",
                 "--precision", "fp8", "--tpot-slo", "0.05", "--format", "json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["cost"][0]["usd_per_hour"] == pytest.approx(p.cost["usd_per_hour"].iloc[0])
    assert cli["capacity"][0]["output_tokens_per_s"] == pytest.approx(
        p.capacity["output_tokens_per_s"].iloc[0])
    with pytest.raises(PlannerError, match="accelerator is required"):
        api.perf("llama-3.1-70b")


def test_new_help_lists_every_template(capsys):
    from planner.cli import main

    try:
        code = main(["new", "--help"])
    except SystemExit as exc:  # argparse's own exit, where main does not catch it
        code = exc.code
    assert code == 0
    out = capsys.readouterr().out
    names = list(api.templates())
    assert len(names) >= 2
    for name in names:
        assert f"\n  {name} " in out, name
    assert "support assistant" in out  # each with its description


def test_report_and_perf_are_callable_and_still_the_subpackages(quickstart, tmp_path):
    import planner.perf
    import planner.report

    # the import system set the subpackages on the package; they call the API functions
    assert planner.perf is sys.modules["planner.perf"]
    assert planner.report is sys.modules["planner.report"]
    assert callable(planner.report.build_report) and callable(planner.perf.replica_capacity)
    p = planner.perf("llama-3.1-8b", "h100-sxm", precision="fp8")
    assert isinstance(p, api.PerfResult)
    pd.testing.assert_frame_equal(p.capacity, api.perf("llama-3.1-8b", "h100-sxm",
                                                       precision="fp8").capacity)
    rep = planner.report(quickstart, tmp_path / "r", sections=["summary"])
    assert isinstance(rep, api.ReportResult) and rep.html.is_file()


def test_readme_python_block_runs(tmp_path):
    """The README's 'Python API' code block, run as written in an empty directory."""
    import re

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "planner.report(sc" in block and "planner.perf(" in block
    proc = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True,
                          env=_env(), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "report" / "report.html").is_file()


@pytest.mark.parametrize("argv, fn", [
    (["cost", "example:quickstart"], "cost"),
    (["breakeven", "example:quickstart"], "breakeven"),
    (["risk", "example:quickstart", "-n", "500"], "risk"),
    (["optimize", "example:quickstart"], "optimize"),
    (["simulate", "example:quickstart", "--hours", "1", "--start-hour", "10",
      "--deployment", "llama-8b-h100"], "simulate"),
    (["report", "example:quickstart", "-o", "{tmp}/rep", "--sections", "summary"], "report"),
    (["perf", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm"], "perf"),
])
def test_cli_commands_go_through_the_api(monkeypatch, capsys, tmp_path, argv, fn):
    """Each command calls its planner.api function exactly once (one path), and prints
    what that call returned."""
    from planner.cli import main

    calls = []
    real = getattr(api, fn)

    def spy(*a, **kw):
        out = real(*a, **kw)
        calls.append(out)
        return out

    monkeypatch.setattr(api, fn, spy)
    assert main([x.replace("{tmp}", str(tmp_path)) for x in argv] + ["-q"] * (fn == "report")
                ) == 0
    assert len(calls) == 1 and isinstance(calls[0], api.Result)


def test_cost_check_risk_years_and_optimize_sensitivity_options(quickstart):
    from planner.engines.optimize import sensitivity
    from planner.engines.risk.multiyear import run_multiyear
    from planner.sim.scenario import check_sizing

    c = api.cost(quickstart, check=True, check_max_requests=2000)
    pd.testing.assert_frame_equal(c.check, check_sizing(quickstart, max_requests=2000))
    assert api.cost(quickstart).check.empty
    r = api.risk(quickstart, n=1000, seed=2, years=True, sensitivity=False)
    my = run_multiyear(quickstart, n=1000, seed=2)
    pd.testing.assert_frame_equal(r.npc, my.npc)
    assert r.simulation.empty
    said: list[str] = []
    o = api.optimize(quickstart, sensitivity=True, progress=said.append,
                     engine_progress=False)
    s = sensitivity(quickstart, gap=quickstart.optimize.gap,
                    time_limit_s=quickstart.optimize.time_limit_s)
    pd.testing.assert_frame_equal(o.sensitivity_grid, s.grid)
    assert said == ["sensitivity: traffic, API and GPU price multipliers"]
    assert api.optimize(quickstart).sensitivity_grid.empty
