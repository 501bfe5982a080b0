"""build_report: files written, self-contained HTML, content traced to the engines, escaping,
section selection, plug-in providers, all-or-nothing writing, speed."""

from __future__ import annotations

import json
import re
import tomllib
import urllib.parse
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from planner.config import load_scenario, parse_scenario
from planner.engines.breakeven import BreakevenResults
from planner.engines.deterministic import evaluate
from planner.errors import PlannerError
from planner.report import SectionUnavailable, build_report, section_keys
from planner.report.examples import risk_tables
from planner.report.html import script_json
from planner.report.sections import cheapest_option, scenario_inputs

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "planner" / "templates" / "quickstart.toml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _no_breakeven(sc, cat):
    """A stand-in for the break-even engine that keeps the fast tests fast."""
    e = pd.DataFrame()
    return BreakevenResults(volume=e, finetune=e, payback=e, curve=e)


FAST = {"breakeven": _no_breakeven}


#: What the quickstart report's build did (filled by the ``quick`` fixture): the engines this
#: process ran itself, those it handed to forked children, and the chart specs it converted.
QUICK_WORK: dict[str, list] = {}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The flagship example with the default (real) engines, as `planner report` runs it.

    The build's work is counted in :data:`QUICK_WORK` (engine runs in this process, engines
    forked, chart conversions submitted), for :func:`test_quickstart_report_does_each_piece_of_work_once`."""
    import planner.report.build as build_mod
    from planner.report import export
    from planner.report import providers as prov

    out = tmp_path_factory.mktemp("quick") / "out"
    work: dict[str, list] = {"run_here": [], "forked": [], "converted": []}
    real_run, real_fork = prov.run, build_mod._fork_engines
    real_submit = export.Exporter.submit

    def run(name, *a, **k):
        work["run_here"].append(name)  # (a forked child appends to its own copy)
        return real_run(name, *a, **k)

    def fork(*a, **k):
        got = real_fork(*a, **k)
        if got is not None:
            work["forked"] += list(got[0])
        return got

    def submit(self, spec_dict, *a, **k):
        work["converted"].append(spec_dict)
        return real_submit(self, spec_dict, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(prov, "run", run)
        mp.setattr(build_mod, "_fork_engines", fork)
        mp.setattr(export.Exporter, "submit", submit)
        res = build_report(QUICKSTART, out_dir=out, progress=False)
    QUICK_WORK.clear()
    QUICK_WORK.update(work)
    return res, res.html.read_text(encoding="utf-8")


def test_quickstart_report_files(quick):
    res, _ = quick
    assert res.html == res.out_dir / "report.html"
    assert {"cost_breakdown", "cost_vs_volume", "api_vs_selfhost"} <= set(res.charts)
    for png, svg in res.charts.values():
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
        assert svg.read_text(encoding="utf-8").startswith("<svg")
    assert set(res.tables) >= {"summary", "costs", "capacity", "classes", "assumptions",
                               "breakeven_volume", "cost_curve", "inputs"}
    for p in res.tables.values():
        assert p.is_file()
    assert sorted(p.name for p in (res.out_dir / "charts").iterdir()) == sorted(
        f"{c}.{ext}" for c in res.charts for ext in ("png", "svg"))
    # nothing left beside the output directory
    assert [p.name for p in res.out_dir.parent.iterdir()] == ["out"]
    # (no wall-clock bound: the speed is tests/benchmarks/bench_report.py's to measure)


def test_quickstart_report_does_each_piece_of_work_once(quick):
    # Deterministic stand-ins for a wall-clock bound (the speed itself is measured by
    # tests/benchmarks/bench_report.py): every engine runs once, either here or in a forked
    # child, never both (a child that fails hands its engines back to this process, which
    # then runs them serially); each chart is converted once.
    from collections import Counter

    from planner.report.build import CORE_ENGINES, FORKED_ENGINES

    res, _ = quick
    here, forked = QUICK_WORK["run_here"], QUICK_WORK["forked"]
    runs = Counter(here) + Counter(forked)
    assert set(runs.values()) == {1}, runs
    assert set(CORE_ENGINES) <= set(here)
    assert not set(here) & set(forked)
    assert set(forked) <= set(FORKED_ENGINES)
    # ... and only the engines the report's sections need
    from planner.report.sections import SECTIONS

    need = {e for s in SECTIONS if s.key in res.sections for e in s.requires}
    assert need <= set(runs) and {"simulation", "optimiser"} <= need
    assert len(QUICK_WORK["converted"]) == len(res.charts)


def test_quickstart_tables_are_the_engine_results(quick):
    res, _ = quick
    sc = load_scenario(QUICKSTART)
    det = evaluate(sc)
    got = pd.read_csv(res.tables["summary"])
    np.testing.assert_allclose(got["usd_per_month"], det.summary["usd_per_month"], rtol=1e-12)
    assert got["deployment"].tolist() == det.summary["deployment"].tolist()
    costs = pd.read_csv(res.tables["costs"])
    assert costs["usd_per_month"].sum() == pytest.approx(det.costs["usd_per_month"].sum())


def test_html_is_self_contained(quick):
    _, doc = quick
    assert "vegaEmbed" in doc and len(doc) > 500_000  # the Vega bundle is inlined
    assert not re.search(r"<script[^>]*\bsrc=", doc)
    assert not re.search(r"<link\b", doc)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", doc)
    assert doc.count("<script") == 3


def test_every_chart_has_a_container_and_a_spec(quick):
    res, doc = quick
    m = re.search(r'<script type="application/json" id="report-specs">(.*?)</script>', doc,
                  re.S)
    specs = json.loads(m.group(1))
    assert set(specs) == set(res.charts)
    for name, spec in specs.items():
        assert f'id="chart-{name}"' in doc
        assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/")


def test_summary_question_cheapest_and_assumptions(quick):
    _, doc = quick
    sc = load_scenario(QUICKSTART)
    det = evaluate(sc)
    assert escape(sc.scenario.question) in doc
    best = cheapest_option(det.summary)
    full = det.summary[det.summary["classes_unserved"] == ""]
    assert best["deployment"] == full.loc[full["usd_per_month"].idxmin(), "deployment"]
    summary = doc[doc.index('<section id="summary">'):doc.index('<section id="costs">')]
    assert f"{best['usd_per_month']:,.0f} USD per month" in summary
    assert escape(best["deployment"]) in summary
    # every catalog row used, with its source and as-of date, is in the summary
    assert len(det.assumptions) > 0
    for r in det.assumptions.itertuples():
        for v in (r.id, r.source, r.as_of):
            assert escape(str(v)) in summary, v
    assert "Key drivers" in summary


def test_omitted_sections_are_listed_with_a_reason(quick):
    res, doc = quick
    assert set(res.sections) | set(res.omitted) == set(section_keys())
    assert res.sections[0] == "summary"
    for key, why in res.omitted.items():
        assert why and escape(f"{key}: {why}") in doc
        assert f'<section id="{key}">' not in doc


def test_download_links_hold_the_csv(quick):
    res, doc = quick
    for name, path in res.tables.items():
        m = re.search(rf'<div class="table" id="table-{name}">.*?href="([^"]+)" '
                      rf'download="{name}.csv"', doc, re.S)
        assert m, name
        href = m.group(1).replace("&amp;", "&")
        assert href.startswith("data:text/csv;charset=utf-8,")
        assert urllib.parse.unquote(href.split(",", 1)[1]) == path.read_text(encoding="utf-8")


def _hostile():
    data = tomllib.loads(QUICKSTART.read_text(encoding="utf-8"))
    data["scenario"]["name"] = "<script>alert(1)</script>"
    data["scenario"]["question"] = "Is <b>this</b> & that escaped?"
    data["workload"]["chat"]["description"] = "<img src=x onerror=alert(2)>"
    data["api"]["</script><img src=x onerror=alert(3)>"] = {"offering": "openai/gpt-4o-mini"}
    return parse_scenario(data)


def test_user_strings_cannot_inject_markup(tmp_path):
    res = build_report(_hostile(), out_dir=tmp_path / "r", progress=False, sections=["costs"],
                       providers=FAST)
    doc = res.html.read_text(encoding="utf-8")
    for raw in ("<script>alert(1)", "<b>this</b>", "<img src=x", "</script><img"):
        assert raw not in doc, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doc
    assert "Is &lt;b&gt;this&lt;/b&gt; &amp; that escaped?" in doc
    assert doc.count("<script") == 3 and doc.count("</script>") == 3
    # the hostile deployment name reaches the chart data, escaped for JSON inside <script>
    assert "\\u003c/script\\u003e\\u003cimg" in doc
    csv = pd.read_csv(res.tables["summary"])
    assert "</script><img src=x onerror=alert(3)>" in set(csv["deployment"])


def test_script_json_round_trips_without_angle_brackets():
    obj = {"a": "</script><!-- & -->", "b": [1.5, None]}
    s = script_json(obj)
    assert "<" not in s and ">" not in s and "&" not in s
    assert json.loads(s) == obj


def test_section_selection(tmp_path):
    res = build_report(QUICKSTART, out_dir=tmp_path / "r", progress=False,
                       sections=["costs"], providers=FAST)
    assert res.sections == ("summary", "costs")
    assert set(res.charts) == {"cost_breakdown"}
    assert res.omitted == {}
    with pytest.raises(PlannerError, match="'cost'.*did you mean 'costs'"):
        build_report(QUICKSTART, out_dir=tmp_path / "s", sections=["cost"], progress=False)
    assert not (tmp_path / "s").exists()


def test_plugged_in_risk_engine_feeds_summary_and_charts(tmp_path):
    sc = load_scenario(QUICKSTART)
    deps = list(sc.deployments())
    tables = risk_tables(np.random.default_rng(3), deps)

    res = build_report(sc, out_dir=tmp_path / "r", progress=False,
                       sections=["risk"], providers={**FAST, "risk": lambda s, cat: tables})
    assert "risk" in res.sections
    assert {"risk_distribution", "win_probability", "tornado", "cost_paths"} <= set(res.charts)
    doc = res.html.read_text(encoding="utf-8")
    best = cheapest_option(evaluate(sc).summary)["deployment"]
    row = tables["summary"].set_index("deployment").loc[best]
    assert (f"P5 / P50 / P95: {row.usd_p5:,.0f} USD / {row.usd_p50:,.0f} USD / "
            f"{row.usd_p95:,.0f} USD") in doc
    top = tables["tornado"].assign(
        s=lambda d: (d.high_usd_per_month - d.low_usd_per_month).abs()).nlargest(1, "s")
    assert escape(f"{top['input'].iloc[0]}: monthly cost") in doc


def test_unavailable_and_failing_optional_engines_omit_their_section(tmp_path):
    def unavailable(sc, cat):
        raise SectionUnavailable("no samples today")

    def user_error(sc, cat):
        raise PlannerError("the scenario has nothing to simulate")

    res = build_report(QUICKSTART, out_dir=tmp_path / "r", progress=False,
                       sections=["risk", "simulation"],
                       providers={**FAST, "risk": unavailable, "simulation": user_error})
    assert res.sections == ("summary",)
    assert res.omitted == {"risk": "no samples today",
                           "simulation": "simulation engine: the scenario has nothing to "
                                         "simulate"}


def test_missing_engine_module_is_a_note_not_an_error(tmp_path, monkeypatch):
    import planner.report.providers as prov

    monkeypatch.setattr(prov, "DEFAULT_PROVIDERS", {
        **prov.DEFAULT_PROVIDERS,
        "optimiser": prov._engine_tables("planner.engines.no_such_engine", "the optimiser",
                                         "optimiser")})
    res = build_report(QUICKSTART, out_dir=tmp_path / "r", progress=False,
                       sections=["optimiser"], providers=FAST)
    assert res.omitted == {
        "optimiser": "the optimiser (planner.engines.no_such_engine) is not part of this "
                     "build yet"}


def test_bad_provider_result_is_a_bug(tmp_path):
    with pytest.raises(TypeError, match="samples"):
        build_report(QUICKSTART, out_dir=tmp_path / "r", progress=False, sections=["risk"],
                     providers={**FAST, "risk": lambda s, c: {"win": pd.DataFrame()}})
    assert not (tmp_path / "r").exists()


def test_chart_with_nothing_to_draw_becomes_a_note(tmp_path):
    curve = pd.DataFrame({"volume_scale": [1.0], "deployment": ["a"], "kind": ["api"],
                          "requests_per_day": [0.0], "tokens_per_month": [0.0],
                          "usd_per_month": [0.0]})
    e = pd.DataFrame()
    res = build_report(QUICKSTART, out_dir=tmp_path / "r", progress=False,
                       sections=["breakeven"], providers={
                           "breakeven": lambda s, c: BreakevenResults(e, e, e, curve)})
    assert "cost_vs_volume" not in res.charts
    doc = res.html.read_text(encoding="utf-8")
    assert "Chart cost_vs_volume not drawn: cost_vs_volume: no positive volumes" in doc


def test_performance_section_in_every_report(quick):
    # the calibration measurements ship with the package: no ../shared, no omission note
    res, doc = quick
    assert "performance" in res.sections and "performance" not in res.omitted
    assert '<section id="performance">' in doc and 'id="table-perf_validation"' in doc
    assert "calibration measurements not found" not in doc
    assert "shared/data" not in doc  # catalog sources cite the original, not a build-only path


def test_missing_calibration_data_omits_performance(tmp_path, monkeypatch):
    import planner.perf.validation as val

    monkeypatch.setattr(val, "REFERENCE_DATA", tmp_path / "nowhere")
    res = build_report(QUICKSTART, out_dir=tmp_path / "r", progress=False,
                       sections=["performance"], providers=FAST)
    assert "calibration measurements not found" in res.omitted["performance"]


def test_all_or_nothing(tmp_path):
    out = tmp_path / "r"
    first = build_report(QUICKSTART, out_dir=out, progress=False, sections=["costs"],
                         providers=FAST)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def broken(sc, cat):
        raise RuntimeError("engine bug")

    with pytest.raises(RuntimeError, match="engine bug"):
        build_report(QUICKSTART, out_dir=out, progress=False, sections=["costs", "risk"],
                     providers={**FAST, "risk": broken})
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no temp dirs left
    with pytest.raises(RuntimeError):
        build_report(QUICKSTART, out_dir=tmp_path / "new", progress=False,
                     sections=["risk"], providers={**FAST, "risk": broken})
    assert not (tmp_path / "new").exists()
    assert first.html.is_file()


def test_rebuild_replaces_stale_files(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    build_report(QUICKSTART, out_dir=out, progress=False, sections=["costs", "performance"],
                 providers=FAST)
    assert (out / "charts" / "predicted_vs_measured.png").is_file()
    res = build_report(QUICKSTART, out_dir=out, progress=False, sections=["costs"],
                       providers=FAST)
    assert sorted(p.name for p in (out / "charts").iterdir()) == [
        "cost_breakdown.png", "cost_breakdown.svg"]
    assert (out / "notes.txt").read_text() == "mine"  # files that are not ours stay
    assert res.html.stat().st_mode & 0o044  # readable by others, unlike a mkdtemp dir


def test_refuses_to_clobber(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(PlannerError, match="not a directory"):
        build_report(QUICKSTART, out_dir=f, progress=False, providers=FAST)
    d = tmp_path / "d"
    (d / "charts").mkdir(parents=True)
    with pytest.raises(PlannerError, match="charts/ but no report.html"):
        build_report(QUICKSTART, out_dir=d, progress=False, providers=FAST)


def test_progress_bar_on_stderr(tmp_path, capsys):
    build_report(QUICKSTART, out_dir=tmp_path / "r", progress=True, sections=["costs"],
                 providers=FAST)
    err = capsys.readouterr().err
    assert "report" in err and "%" in err
    build_report(QUICKSTART, out_dir=tmp_path / "q", progress=False, sections=["costs"],
                 providers=FAST)
    assert capsys.readouterr().err == ""


def test_inputs_table_flattens_the_scenario():
    sc = load_scenario(QUICKSTART)
    t = scenario_inputs(sc).set_index("key")["value"]
    assert t["workload.summarise.input.tokens"] == "3000"
    # an uncertain input shows its distribution, not just the median the cost table uses
    assert t["workload.chat.requests_per_day"] == "lognormal(median=200000.0, p90=350000.0)"
    assert t["cloud.llama-70b-h100.accelerator"] == "h100-sxm"
    assert t["planning.utilisation_target"] == "0.8"
    # the bundled template by its name, never an absolute path of this machine
    assert t["(file)"] == "example:quickstart" and not t["(file)"].startswith("/")


def test_summary_recommends_the_optimisers_chosen_deployments_only(tmp_path):
    from planner.engines.optimize import optimize

    sc = load_scenario(QUICKSTART)
    plan = optimize(sc).plan
    assert plan["chosen"].any() and not plan["chosen"].all()  # the toy needs both kinds
    tables = {"plan": plan}
    res = build_report(sc, out_dir=tmp_path / "r", progress=False, sections=["optimiser"],
                       providers={**FAST, "optimiser": lambda s, c: tables})
    doc = res.html.read_text(encoding="utf-8")
    line = doc[doc.index("Recommended mix (optimiser)"):]
    line = line[:line.index("per month</")]
    for r in plan.itertuples():
        assert (f"{r.deployment} (" in line) == bool(r.chosen), r.deployment
    total = plan.loc[plan["chosen"], "usd_per_month"].sum()
    assert f"total {total:,.0f} USD" in line
