"""The report reads without a glossary (issue 14): chart titles agree with their data, axes
fit the data (log scales where values span decades), legends use human labels, every section
explains its terms, the summary says why the mix and the single option differ, the optimiser's
status line and ``--sensitivity`` agree with the plan, the progress total is fixed up front,
and sources are original, never paths of the machine that built the catalog or the report.

Chart properties are read from the Vega-Lite specs; the numbers compared come from the
engines run on the bundled quickstart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from planner import charts
from planner.catalog import load_catalog
from planner.config import load_scenario
from planner.engines.breakeven import BreakevenResults, cost_curve, volume_breakeven
from planner.engines.deterministic import evaluate
from planner.engines.risk.multiyear import run_multiyear
from planner.report import build_report, export, glossary, sources
from planner.report.examples import optimiser_tables, risk_tables, simulation_tables
from planner.report.html import table_html
from planner.report.model import Table
from planner.report.sections import mix_explanation, whole_day_utilisation
from tests.vega_spec import data as _data
from tests.vega_spec import title_text as _title_text
from tests.vega_spec import units as _units

CAT = load_catalog()
QUICKSTART = Path(__file__).resolve().parents[1] / "planner" / "templates" / "quickstart.toml"


@pytest.fixture(scope="module")
def quickstart():
    return load_scenario(QUICKSTART, catalog=CAT)


def _layers_with(spec: dict, key: str, value) -> list[dict]:
    out = []
    for u in _units(spec):
        m = u["mark"]
        m = m if isinstance(m, dict) else {"type": m}
        if m.get(key) == value:
            out.append(u)
    return out


def _x_scale(spec: dict) -> dict:
    for u in _units(spec):
        x = u.get("encoding", {}).get("x", {})
        if "scale" in x:
            return x["scale"]
    return {}


# ------------------------------------------------------------------- multi-year cost paths


@pytest.fixture(scope="module")
def multiyear(quickstart):
    return run_multiyear(quickstart, n=2_000, seed=3, catalog=CAT)


def test_multiyear_cumulative_runs_up_and_credits_residual_apart(multiyear):
    cum, yearly = multiyear.cumulative, multiyear.yearly
    assert len(cum) == len(yearly) and multiyear.years >= 2
    for dep, g in cum.groupby("deployment"):
        g = g.sort_values("year")
        # a running total of non-negative cash never falls and never goes negative
        assert (np.diff(g["p50"]) >= -1e-9).all() and (g["p5"] >= 0).all(), dep
        first = yearly[(yearly["deployment"] == dep) & (yearly["year"] == 1)]
        assert g["p50"].iloc[0] == pytest.approx(float(first["p50"].iloc[0]))
    onprem = cum[cum["kind"] == "onprem"]
    last = onprem[onprem["year"] == multiyear.years]
    assert (last["residual_credit_p50"] > 0).all() and not last.empty
    assert (last["net_p50"] < last["p50"]).all()
    assert (onprem[onprem["year"] < multiyear.years]["residual_credit_p50"] == 0).all()
    # the per-year view this replaces went negative in the last year: the credit, unexplained
    y_last = yearly[(yearly["kind"] == "onprem") & (yearly["year"] == multiyear.years)]
    assert (y_last["at_median"] < last["p50"].to_numpy()).all()
    rented = cum[(cum["kind"] != "onprem") & (cum["year"] == multiyear.years)]
    assert (rented["residual_credit_p50"] == 0).all()
    np.testing.assert_allclose(rented["net_p50"], rented["p50"], rtol=1e-12)


def test_cost_paths_chart_is_titled_cumulative_and_labels_the_residual(multiyear):
    paths = multiyear.cumulative.rename(columns={
        "p5": "usd_p5", "p50": "usd_p50", "p95": "usd_p95",
        "residual_credit_p50": "residual_credit_usd", "net_p50": "usd_net_p50"})
    spec = export.spec(charts.cost_paths(paths))
    assert "cumulative" in _title_text(spec).lower()
    line = _layers_with(spec, "type", "line")[0]
    titles = [u["encoding"]["y"].get("title", "") for u in _units(spec)
              if "title" in u["encoding"].get("y", {})]
    assert any("cumulative" in t for t in titles)
    drawn = _data(spec, line)
    assert (drawn["usd_p50"] >= 0).all()  # nothing negative on the cost line
    diamonds = _layers_with(spec, "shape", "diamond")
    assert len(diamonds) == 1
    d = _data(spec, diamonds[0])
    onprem = set(multiyear.cumulative.loc[multiyear.cumulative["kind"] == "onprem",
                                          "deployment"])
    assert set(d["deployment"]) == onprem
    texts = _data(spec, _layers_with(spec, "type", "text")[0])
    credit = multiyear.cumulative.loc[multiyear.cumulative["residual_credit_p50"] > 0,
                                      "residual_credit_p50"]
    assert sorted(texts["label"]) == sorted(f"residual value -${v:,.0f}" for v in credit)
    sub = " ".join(spec["title"]["subtitle"])
    assert "residual" in sub


# ------------------------------------------------------------------------------- heat map


def test_utilisation_heat_map_covers_the_whole_day(quickstart):
    det = evaluate(quickstart, CAT)
    pool = "llama-8b-h100"
    sim = pd.DataFrame({"hour": [9], "pool": [pool], "utilisation": [0.94],
                        "mean_batch": [2.3]})
    day = whole_day_utilisation(quickstart, det, sim)
    mod = day[day["source"] == "modelled"]
    assert sorted(mod["hour"]) == list(range(24))
    # the day averages to the cost table's utilisation (mean load / capacity at the SLO)
    u = float(det.summary.set_index("deployment").loc[pool, "utilisation"])
    assert mod["utilisation"].mean() == pytest.approx(u, rel=1e-9)
    assert mod["utilisation"].max() > mod["utilisation"].min()  # the diurnal shape shows
    spec = export.spec(charts.utilisation_heatmap(day))
    cells = _layers_with(spec, "type", "rect")[0]
    assert cells["encoding"]["x"]["scale"]["domain"] == list(range(24))
    assert len(_data(spec, cells)) == 24
    outlined = [u for u in _layers_with(spec, "type", "rect") if u["mark"].get("fillOpacity") == 0]
    assert _data(spec, outlined[0])["hour"].tolist() == [9]
    assert "whole day" in _title_text(spec)


# ------------------------------------------------------------------------------ log scales


def test_risk_ecdf_goes_log_when_options_are_a_decade_apart():
    rng = np.random.default_rng(11)
    wide = pd.DataFrame({"deployment": np.repeat(["cheap", "dear"], 500),
                         "usd_per_month": np.r_[rng.lognormal(np.log(800), 0.2, 500),
                                                rng.lognormal(np.log(90_000), 0.2, 500)]})
    spec = export.spec(charts.risk_distribution(wide))
    sc = _x_scale(spec)
    assert sc.get("type") == "log"
    lo, hi = sc["domain"]
    assert lo == pytest.approx(np.quantile(wide.loc[wide["deployment"] == "cheap",
                                                    "usd_per_month"], 0.0))
    assert hi == pytest.approx(wide["usd_per_month"].max())
    narrow = risk_tables(np.random.default_rng(2), ("a", "b"))["samples"]
    narrow = narrow.assign(usd_per_month=narrow["usd_per_month"].clip(lower=1.0))
    if narrow["usd_per_month"].max() / narrow["usd_per_month"].min() < charts.LOG_SPREAD:
        assert _x_scale(export.spec(charts.risk_distribution(narrow))).get("type") != "log"


def test_latency_cdf_axis_spans_the_data_not_a_far_slo():
    sim = simulation_tables(np.random.default_rng(5), ("chat", "summarise"))
    req = sim["requests"]
    p995 = max(np.quantile(g["tpot_s"], 0.995) for _, g in req.groupby("class"))
    far = pd.DataFrame({"class": ["chat", "summarise"], "slo_s": [2.0, 2.0]})  # 40x the data
    spec = export.spec(charts.latency_cdf(req, "tpot_s", far))
    hi = _x_scale(spec)["domain"][1]
    assert p995 <= hi < 2.0
    assert any("off the axis" in s for s in spec["title"]["subtitle"])
    near = pd.DataFrame({"class": ["chat", "summarise"], "slo_s": [0.05, 0.05]})
    spec = export.spec(charts.latency_cdf(req, "tpot_s", near))
    assert _x_scale(spec)["domain"][1] >= 0.05  # an SLO within reach is drawn as a rule
    assert _layers_with(spec, "type", "rule")
    # latencies spanning decades: a log axis
    wide = pd.DataFrame({"class": np.repeat(["fast", "slow"], 400),
                         "ttft_s": np.r_[np.full(400, 0.02) * np.linspace(1, 2, 400),
                                         np.full(400, 3.0) * np.linspace(1, 2, 400)]})
    spec = export.spec(charts.latency_cdf(wide, "ttft_s"))
    assert _x_scale(spec).get("type") == "log"
    assert "seconds" in spec["layer"][0]["encoding"]["x"]["title"]


# ------------------------------------------------------------------------ labels and tables


def test_legends_and_axis_titles_use_human_labels():
    sim = simulation_tables(np.random.default_rng(5), ("chat",))
    spec = export.spec(charts.slo_attainment(sim["slo"]))
    metrics = set(_data(spec, next(_units(spec)))["metric"])
    assert metrics == {"time to first token (s)", "time per output token (s)"}
    assert charts.human_label("batch_input") == "batch input tokens"
    assert charts.human_label("workload.chat.requests_per_day") == "chat: requests per day"
    charts_ = {
        "risk": charts.risk_distribution(risk_tables(np.random.default_rng(1))["samples"]),
        "tornado": charts.tornado(risk_tables(np.random.default_rng(1))["tornado"]),
        "latency": charts.latency_cdf(sim["requests"], "tpot_s", sim["slo_targets"].rename(
            columns={})[lambda d: d["metric"] == "tpot_s"][["class", "slo_s"]]),
        "hourly": charts.hourly_mix(optimiser_tables(np.random.default_rng(1))["hourly"]),
    }
    for name, c in charts_.items():
        spec = export.spec(c)
        for u in _units(spec):
            for ch, enc in u.get("encoding", {}).items():
                title = enc.get("title") if isinstance(enc, dict) else None
                if isinstance(title, str):
                    assert "_" not in title, (name, ch, title)
        if name == "tornado":
            ys = set(_data(spec, next(_units(spec)))["input"])
            assert all("_" not in y for y in ys), ys


def test_wide_tables_wrap_headers_and_scroll_in_their_box():
    df = pd.DataFrame({f"column_number_{i}_usd_per_month": [float(i)] for i in range(16)})
    html = table_html(Table("wide", df), df.to_csv(index=False))
    assert '<div class="table-wrap">' in html
    assert html.count("<th>") + html.count("<th ") == 16 and "_<wbr>" in html  # long names break at underscores
    assert "scrolls sideways" in html
    tip = table_html(Table("t", pd.DataFrame({"cvar95_usd": [1.0]})), "")
    assert f'title="{glossary.TERMS["CVaR95"]}"' in tip


def test_every_section_explains_its_terms():
    for key, terms in glossary.SECTION_TERMS.items():
        box = glossary.howto(key)
        assert [t for t, _ in box.items] == list(terms)
        assert all(text for _, text in box.items)
    opt = dict(glossary.howto("optimiser").items)
    assert {"best bound", "gap", "LP relaxation", "EV / EEV / VSS"} <= set(opt)
    assert "CVaR95" in dict(glossary.howto("risk").items)
    assert "lens" in dict(glossary.howto("summary").items)


# ------------------------------------------------------------------ optimiser text and mix


@pytest.fixture(scope="module")
def high_volume():
    from planner.engines.optimize import optimize

    sc = load_scenario(QUICKSTART, catalog=CAT, variants=["high-volume"])
    return sc, optimize(sc, catalog=CAT)


def test_summary_says_why_mix_and_single_option_differ(high_volume):
    from planner.engines.optimize import plan_view
    from planner.report.sections import cheapest_option

    sc, res = high_volume
    plan = plan_view(res)
    best = cheapest_option(evaluate(sc, CAT).summary)
    h = res.hourly[res.hourly["scenario"] == 0]
    text = mix_explanation(plan, res.routing, h, best)
    total = float(plan["usd_per_month"].sum())
    diff = float(best["usd_per_month"]) - total
    assert f"{abs(diff):,.0f} USD per month {'less' if diff >= 0 else 'more'}" in text
    for r in plan.itertuples():
        assert f"{r.deployment} serves {r.requests_share:.1%} of requests" in text
    api = plan[plan["kind"] == "api"]["deployment"]
    if len(api) and len(plan) > 1:
        hours = h[(h["deployment"] == api.iloc[0]) & (h["requests_per_s"] > 1e-9)]["hour"]
        assert ", ".join(str(int(x)) for x in hours) in text


def test_status_line_keeps_best_bound_and_lp_relaxation_apart(high_volume):
    from planner.engines.optimize import best_bound, status_line

    _, res = high_volume
    line = status_line(res)
    assert "LP bound" not in line
    assert f"best bound {best_bound(res):,.0f} USD/month" in line
    assert f"LP relaxation {res.lp_bound:,.0f} USD/month" in line
    assert best_bound(res) >= res.lp_bound - 1e-6  # the MILP bound is the tighter one


def test_sensitivity_states_the_plans_own_shares(high_volume, tmp_path, capsys):
    from planner.cli import main

    code = main(["optimize", "example:quickstart", "--variant", "high-volume",
                 "--sensitivity", "--out", str(tmp_path / "o"), "-q"])
    assert code == 0
    capsys.readouterr()
    plan = pd.read_csv(tmp_path / "o" / "plan.csv")
    plan = plan[plan["chosen"]]
    grid = pd.read_csv(tmp_path / "o" / "sensitivity_grid.csv")
    at1 = grid[grid["multiplier"] == 1.0]
    assert len(at1) == 3
    for mix in at1["mix"]:
        for r in plan.itertuples():
            if r.requests_share > 1e-9:
                assert f"{r.deployment} {100 * r.requests_share:.3g}%" in mix, (mix, r)
    objective = float(pd.read_csv(tmp_path / "o" / "summary.csv").set_index("metric")
                      .loc["objective_usd_per_month", "value"])
    np.testing.assert_allclose(at1["usd_per_month"], objective, rtol=1e-9)


# ----------------------------------------------------------------- progress and sources


@pytest.fixture(scope="module")
def built(quickstart, tmp_path_factory):
    rng = np.random.default_rng(7)
    deps = list(quickstart.deployments())
    calls: list[tuple[int, int, str]] = []
    providers = {
        "breakeven": lambda s, cat: BreakevenResults(
            volume=volume_breakeven(s, cat, points=9), finetune=pd.DataFrame(),
            payback=pd.DataFrame(), curve=cost_curve(s, (0.1, 1, 10), cat)),
        "risk": lambda s, cat: risk_tables(rng, deps[:3]),
        "optimiser": lambda s, cat: optimiser_tables(rng, deps[:3]),
        "simulation": lambda s, cat: simulation_tables(rng, list(s.workload)),
    }
    out = tmp_path_factory.mktemp("readable") / "report"
    res = build_report(quickstart, out_dir=out, progress=False, providers=providers,
                       on_progress=lambda d, t, s: calls.append((d, t, s)))
    return res, calls


def test_progress_total_is_fixed_up_front(built):
    res, calls = built
    totals = {t for _, t, _ in calls}
    assert len(totals) == 1  # never re-estimated (it used to jump from 16 to 42)
    (total,) = totals
    assert [d for d, _, _ in calls] == list(range(1, total + 1))
    assert calls[-1][0] == total
    assert len(res.charts) > 0


def test_report_has_original_sources_and_no_machine_paths(built):
    res, _ = built
    html = res.html.read_text(encoding="utf-8")
    root = str(Path(__file__).resolve().parents[1])
    assert root not in html and "shared/" not in html
    assert "article 00" not in html
    for n, (cite, _) in sources.ARTICLES.items():
        assert cite.split(",")[0] in html or f"article {n}" not in html
    assert 'class="howto"' in html and "How to read this" in html and "Glossary" in html


def test_original_source_rewrites_articles_and_flags_missing_addresses():
    s, ok = sources.original_source("tokenizers.csv o200k/en, article 004 (Sunyan, 2023-02)")
    assert "article 004" not in s and "https://mp.weixin.qq.com/" in s and ok
    s, ok = sources.original_source("article 000 (prices)")
    assert not ok and "not recorded" in s
    s, ok = sources.original_source("article 002 (prices)")
    assert ok and "https://blog.csdn.net/" in s
    s, ok = sources.original_source("via shared/data/reference/gpu_prices.csv and /work/x/y.csv")
    assert "shared/" not in s and "/work/" not in s and not ok
    s, ok = sources.original_source("https://example.com/home/page")
    assert s == "https://example.com/home/page" and ok


def test_every_catalog_source_resolves_to_an_original():
    """No catalog row cites a path of the build environment, and every seed-article number
    it cites has an original citation (the rows whose citation is incomplete are listed)."""
    import re

    root = Path(__file__).resolve().parents[1] / "models"
    lacking = []
    for f in sorted(root.glob("*.csv")):
        df = pd.read_csv(f, dtype=str)
        if "source" not in df.columns:
            continue
        if "id" not in df.columns:  # tokenizers.csv: (tokenizer, lang) is the key
            df["id"] = df.iloc[:, 0] + "/" + df.iloc[:, 1]
        for n in re.findall(r"\barticles? (\d{3})\b", " ".join(df["source"].fillna(""))):
            assert n in sources.ARTICLES, (f.name, n)
        assert not df["source"].fillna("").str.contains(r"shared/|^/|\s/work/").any(), f.name
        out, miss = sources.with_original_sources(df)
        assert not out["source"].str.contains(r"\barticle 00\d\b", na=False).any(), f.name
        lacking += [f"{f.stem}:{i}" for i in miss]
    # the incomplete ones are exactly the rows citing articles without an address
    incomplete = {n for n, (_, ok) in sources.ARTICLES.items() if not ok}
    want = []
    for f in sorted(root.glob("*.csv")):
        df = pd.read_csv(f, dtype=str)
        if "id" not in df.columns:
            df["id"] = df.iloc[:, 0] + "/" + df.iloc[:, 1]
        if "source" in df.columns:
            hit = df["source"].fillna("").str.contains(
                "|".join(rf"\barticles? {n}\b" for n in incomplete))
            want += [f"{f.stem}:{i}" for i in df.loc[hit, "id"]]
    assert sorted(lacking) == sorted(want)
