"""Chart builders: valid Vega-Lite with titles, axis titles and tooltips; the data they draw is
computed correctly from their input tables; they render to SVG with marks (vl-convert)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from planner import charts
from planner.report import export
from planner.report.examples import optimiser_tables, risk_tables, simulation_tables
from tests.vega_spec import data as _data
from tests.vega_spec import title_text as _title_text
from tests.vega_spec import units as _units

# --------------------------------------------------------------------------- helpers


def _costs() -> pd.DataFrame:
    return pd.DataFrame({
        "deployment": ["api", "api", "api", "gpu", "gpu"],
        "class": ["chat", "chat", "batch", "", ""],
        "component": ["input", "output", "input", "gpu rental", "energy"],
        "usd_per_month": [100.0, 50.0, 25.0, 400.0, 10.0],
    })


def _curve() -> pd.DataFrame:
    scales = np.geomspace(0.01, 100, 9)
    rows = []
    for s in scales:
        rows.append({"volume_scale": s, "deployment": "api", "kind": "api",
                     "requests_per_day": 1e5 * s, "tokens_per_month": 3e9 * s,
                     "usd_per_month": 2000.0 * s})
        rows.append({"volume_scale": s, "deployment": "gpu", "kind": "cloud",
                     "requests_per_day": 1e5 * s, "tokens_per_month": 3e9 * s,
                     "usd_per_month": 5000.0 * np.ceil(s / 5)})
    return pd.DataFrame(rows)


def _finetune() -> pd.DataFrame:
    return pd.DataFrame({"finetuned": ["mini-ft"], "finetune": ["mini"], "versus": ["big"],
                         "finetune_usd": [270.0], "usd_per_mtok_finetuned": [0.443],
                         "usd_per_mtok_versus": [4.0],
                         "breakeven_tokens": [270.0 / ((4.0 - 0.443) / 1e6)],
                         "payback_months": [0.12]})


def _validation() -> pd.DataFrame:
    return pd.DataFrame({"id": ["a", "b", "c"], "setting": ["x", "x", "y"],
                         "measured_tokens_per_s": [1000.0, 5000.0, 20000.0],
                         "predicted_tokens_per_s": [1100.0, 4600.0, 21000.0]})


RNG_SEED = 11


def _all_charts():
    rng = np.random.default_rng(RNG_SEED)
    risk = risk_tables(rng)
    opt = optimiser_tables(rng)
    sim = simulation_tables(rng)
    slo = sim["slo_targets"]
    return {
        "cost_breakdown": charts.cost_breakdown(_costs()),
        "cost_vs_volume": charts.cost_vs_volume(
            _curve(), pd.DataFrame({"api": ["api"], "selfhosted": ["gpu"],
                                    "requests_per_day": [2.5e5], "usd_per_month": [5000.0],
                                    "volume_scale": [2.5]}), 1e5),
        "api_vs_selfhost": charts.api_vs_selfhost(_curve()),
        "finetune_breakeven": charts.finetune_breakeven(_finetune()),
        "risk_distribution": charts.risk_distribution(risk["samples"]),
        "win_probability": charts.win_probability(risk["win"]),
        "tornado": charts.tornado(risk["tornado"]),
        "cost_paths": charts.cost_paths(risk["paths"]),
        "hourly_mix": charts.hourly_mix(opt["hourly"]),
        "latency_cdf": charts.latency_cdf(sim["requests"], "ttft_s",
                                          slo[slo["metric"] == "ttft_s"][["class", "slo_s"]]),
        "slo_attainment": charts.slo_attainment(sim["slo"]),
        "utilisation_heatmap": charts.utilisation_heatmap(sim["utilisation"]),
        "predicted_vs_measured": charts.predicted_vs_measured(_validation()),
    }


@pytest.fixture(scope="module")
def specs():
    return {k: export.spec(c) for k, c in _all_charts().items()}


# ----------------------------------------------------------------------------- tests


def test_every_chart_has_title_axis_titles_and_tooltips(specs):
    assert len(specs) == 13
    for name, spec in specs.items():
        assert _title_text(spec), name
        units = list(_units(spec))
        assert units, name
        for u in units:
            enc = u.get("encoding", {})
            if "x" in enc and "field" in enc["x"] and u is units[0]:
                assert enc["x"].get("title"), (name, "x")
            if "y" in enc and "field" in enc["y"] and u is units[0]:
                assert enc["y"].get("title"), (name, "y")
        assert any("tooltip" in u.get("encoding", {}) for u in units), name


def test_axis_titles_state_units(specs):
    """Axis titles carry their unit (USD, per s, share, hour, tokens...)."""
    units_words = ("USD", "per", "share", "hour", "tokens", "probability", "(s", "years")
    for name, spec in specs.items():
        for u in _units(spec):
            for ch in ("x", "y"):
                title = u.get("encoding", {}).get(ch, {}).get("title")
                if title and ch == "x" and name in ("cost_breakdown", "win_probability",
                                                    "tornado"):
                    assert any(w in title for w in units_words), (name, title)
                if title and ch == "y" and name not in ("cost_breakdown", "win_probability",
                                                        "tornado", "utilisation_heatmap"):
                    assert any(w in title for w in units_words), (name, title)


def test_charts_render_to_svg_with_marks(specs):
    for name, spec in specs.items():
        svg = export.svg(spec)
        assert svg.startswith("<svg"), name
        assert "role-mark" in svg, name


def test_cost_breakdown_sums_components_per_deployment(specs):
    spec = specs["cost_breakdown"]
    d = _data(spec, next(_units(spec)))
    got = d.set_index(["deployment", "component"])["usd_per_month"]
    # components under their human labels (issue 14: no raw column names in legends)
    assert got[("api", charts.human_label("input"))] == pytest.approx(125.0)  # chat + batch
    assert "input" not in set(d["component"]) and "input tokens" in set(d["component"])
    assert d.groupby("deployment")["usd_per_month"].sum().to_dict() == pytest.approx(
        {"api": 175.0, "gpu": 410.0})
    assert d.loc[d["deployment"] == "gpu", "share"].sum() == pytest.approx(1.0)
    # cheapest option first on the y axis
    assert next(_units(spec))["encoding"]["y"]["sort"] == ["api", "gpu"]


def test_api_vs_selfhost_cost_per_million_tokens(specs):
    spec = specs["api_vs_selfhost"]
    d = _data(spec, next(_units(spec)))
    np.testing.assert_allclose(d["usd_per_mtok"],
                               d["usd_per_month"] / d["tokens_per_month"] * 1e6, rtol=1e-12)
    api = d[d["deployment"] == "api"]["usd_per_mtok"]
    assert api.max() == pytest.approx(api.min())  # flat API price per token


def test_finetune_breakeven_point_is_where_lines_cross(specs):
    spec = specs["finetune_breakeven"]
    units = list(_units(spec))
    pts = _data(spec, units[1])
    ft = _finetune().iloc[0]
    t = pts["tokens"].iloc[0]
    # T* = C / (c_v - c_ft): the fine-tuned and the un-tuned cumulative costs are equal
    assert pts["usd"].iloc[0] == pytest.approx(ft.usd_per_mtok_versus * t / 1e6, rel=1e-12)
    lines = _data(spec, units[0])
    assert set(lines["option"]) == {"mini-ft (fine-tuned, incl. one-off 270 USD)",
                                    "big (not fine-tuned)"}
    assert lines["tokens"].max() == pytest.approx(2.5 * t)
    start = lines[(lines["tokens"] == 0) & lines["option"].str.startswith("mini-ft")]["usd"]
    assert start.iloc[0] == pytest.approx(270.0)


def test_finetune_without_crossing_still_draws():
    ft = _finetune().assign(usd_per_mtok_finetuned=5.0, breakeven_tokens=np.nan)
    spec = export.spec(charts.finetune_breakeven(ft))
    assert len(list(_units(spec))) == 1  # no break-even point


def test_risk_quantile_markers_match_numpy(specs):
    rng = np.random.default_rng(RNG_SEED)
    samples = risk_tables(rng)["samples"]
    spec = specs["risk_distribution"]
    units = list(_units(spec))
    q = _data(spec, units[1])
    for dep, sub in samples.groupby("deployment"):
        v = sub["usd_per_month"].to_numpy()
        got = q[q["deployment"] == dep].set_index("quantile")["usd_per_month"]
        assert got["P5"] == pytest.approx(np.quantile(v, 0.05))
        assert got["P50"] == pytest.approx(np.quantile(v, 0.5))
        assert got["P95"] == pytest.approx(np.quantile(v, 0.95))
    ecdf = _data(spec, units[0])
    assert len(ecdf) == 3 * len(charts.ECDF_GRID)  # large inputs are reduced to the grid


def test_tornado_sorted_by_swing(specs):
    spec = specs["tornado"]
    order = next(_units(spec))["encoding"]["y"]["sort"]
    t = risk_tables(np.random.default_rng(RNG_SEED))["tornado"]
    swing = (t["high_usd_per_month"] - t["low_usd_per_month"]).abs()
    assert order == [charts.human_label(x) for x in
                     t.loc[swing.sort_values(ascending=False).index, "input"]]


def test_hourly_mix_last_hour_has_width(specs):
    spec = specs["hourly_mix"]
    d = _data(spec, next(_units(spec)))
    assert d["hour"].max() == 24  # hour 23 drawn as [23, 24)
    h23 = d[d["hour"] == 23].set_index("deployment")["requests_per_s"]
    h24 = d[d["hour"] == 24].set_index("deployment")["requests_per_s"]
    pd.testing.assert_series_equal(h23, h24)


def test_latency_cdf_with_slo_rules(specs):
    spec = specs["latency_cdf"]
    units = list(_units(spec))
    assert [u["mark"]["type"] if isinstance(u["mark"], dict) else u["mark"] for u in units] \
        == ["line", "rule"]
    rules = _data(spec, units[1])
    assert rules["ttft_s"].tolist() == [1.0, 1.0]


def test_predicted_vs_measured_error_and_bands(specs):
    spec = specs["predicted_vs_measured"]
    units = list(_units(spec))
    pts = _data(spec, units[1])
    np.testing.assert_allclose(pts["error"], [0.1, -0.08, 0.05], rtol=1e-12)
    lines = _data(spec, units[0])
    assert set(lines["line"]) == {"predicted = measured", "+15%", "-15%", "+30%", "-30%"}


def test_predicted_vs_measured_on_real_validation_table():
    from planner.catalog import load_catalog
    from planner.perf.validation import predict_calibration

    v = predict_calibration(catalog=load_catalog())
    spec = export.spec(charts.predicted_vs_measured(v))
    pts = _data(spec, list(_units(spec))[1])
    assert len(pts) == len(v) and len(v) > 0


def test_log_scale_ticks_are_1_2_5_inside_the_data():
    scale, ticks = charts._log_scale([3.0, 40.0, 7000.0])
    assert scale.domain == [3.0, 7000.0]
    assert ticks == [5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0]
    _, narrow = charts._log_scale([2.0, 30.0])  # under two decades: every mantissa
    assert narrow[:3] == [2.0, 3.0, 4.0] and narrow[-1] == 30.0


def test_colours_consistent_across_charts(specs):
    doms = []
    for name in ("cost_vs_volume", "api_vs_selfhost"):
        u = next(_units(specs[name]))
        enc = u.get("encoding") or specs[name]["layer"][0].get("encoding")
        doms.append(enc["color"]["scale"]["domain"])
    assert doms[0] == doms[1] == ["api", "gpu"]


@pytest.mark.parametrize("builder,frame,missing", [
    (charts.cost_breakdown, pd.DataFrame({"deployment": ["a"]}), "component"),
    (charts.tornado, pd.DataFrame({"input": ["a"]}), "low_usd_per_month"),
    (charts.latency_cdf, pd.DataFrame({"class": ["a"]}), "ttft_s"),
    (charts.utilisation_heatmap, pd.DataFrame({"hour": [1]}), "pool"),
])
def test_missing_columns_named(builder, frame, missing):
    with pytest.raises(ValueError, match=missing):
        builder(frame)


def test_nothing_to_draw_is_no_data_not_a_crash_elsewhere():
    with pytest.raises(charts.NoData, match="empty"):
        charts.cost_breakdown(_costs().iloc[:0])
    with pytest.raises(charts.NoData, match="no positive"):
        charts.cost_vs_volume(_curve().assign(usd_per_month=0.0))
    with pytest.raises(charts.NoData):
        charts.risk_distribution(pd.DataFrame({"deployment": ["a"], "usd_per_month": [np.nan]}))
    # a missing column is a programming error, not "no data"
    with pytest.raises(ValueError) as exc:
        charts.cost_breakdown(pd.DataFrame({"deployment": ["a"]}))
    assert not isinstance(exc.value, charts.NoData)


def test_log_charts_drop_non_positive_rows():
    c = _curve()
    c.loc[0, "usd_per_month"] = 0.0
    spec = export.spec(charts.cost_vs_volume(c))
    d = _data(spec, next(_units(spec)))
    assert len(d) == len(c) - 1 and (d["usd_per_month"] > 0).all()
