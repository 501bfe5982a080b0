"""The report's performance section shows the closed-loop validation (throughput, TTFT and ITL
against concurrency per source and GPU, with error tables) computed by
planner.perf.closed_loop_validation, and keeps the predictions in a cache that reproduces
them exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from planner.catalog import load_catalog
from planner.engines.breakeven import BreakevenResults
from planner.perf import closed_loop_validation as v
from planner.report import build_report, glossary
from planner.report import perf_validation as pv

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "planner" / "templates" / "quickstart.toml"


def _no_breakeven(sc, cat):
    e = pd.DataFrame()
    return BreakevenResults(volume=e, finetune=e, payback=e, curve=e)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("perf-cache")


@pytest.fixture(scope="module")
def direct():
    """Every closed-loop row predicted by the engine itself (no cache)."""
    df = v.load_closed_loop()
    llms, accs = v.catalog_specs(df, load_catalog())
    return v.predict_closed_loop(df, llms, accs, fit=v.FITTED)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The performance section as ``planner report`` builds it (the session's cache dir)."""
    out = tmp_path_factory.mktemp("perf") / "out"
    res = build_report(QUICKSTART, out_dir=out, progress=False, sections=["performance"],
                       providers={"breakeven": _no_breakeven})
    return res, res.html.read_text(encoding="utf-8")


def test_section_shows_closed_loop_chart_and_error_tables(report):
    res, doc = report
    assert "performance" in res.sections and "performance" not in res.omitted
    assert "closed_loop_vs_concurrency" in res.charts
    for name in ("closed_loop_errors", "closed_loop_summary", "perf_validation"):
        assert name in res.tables and f'id="table-{name}"' in doc
    box = dict(glossary.howto("performance").items)
    assert {"closed loop", "TTFT", "ITL", "held out"} <= set(box)
    for term in ("closed loop", "ITL", "held out"):
        assert term in doc


def test_error_tables_are_the_engines(report, direct):
    res, doc = report
    got = pd.read_csv(res.tables["closed_loop_errors"])
    want = v.error_table(direct, ["source", "accelerator"])
    assert list(got[["benchmark_source", "gpu"]].itertuples(index=False, name=None)) == list(
        want[["source", "accelerator"]].itertuples(index=False, name=None))
    cols = [c for c in want.columns if c.endswith(("_median_abs", "_bias"))]
    np.testing.assert_allclose(got[cols].to_numpy(float), want[cols].to_numpy(float),
                               rtol=1e-9)
    # every source and GPU of the published data is in the table
    df = v.load_closed_loop()
    assert set(zip(got["benchmark_source"], got["gpu"], strict=True)) == set(
        zip(df["source"], df["accelerator"], strict=True))
    held = direct[v.split(v.load_closed_loop()).to_numpy()
                  & direct["source"].isin(v.IN_SCOPE_SOURCES).to_numpy()]
    h = v.error_table(held).iloc[0]
    assert (f"On {int(h['rows'])} held-out points the median absolute error is "
            f"{h['tput_median_abs']:.1%} for throughput") in doc


def test_curves_are_published_points_and_their_predictions(report, direct):
    res, _ = report
    curves = pv.closed_loop_tables()["closed_loop_curves"]
    df = v.load_closed_loop()
    assert {(s, g) for s, g in zip(curves["source"], curves["gpu"], strict=True)} == set(
        zip(df["source"], df["accelerator"], strict=True))
    assert set(curves["metric"]) == {"throughput", "ttft", "itl"}
    for (source, gpu), g in curves.groupby(["source", "gpu"]):
        assert g["curve"].nunique() == 1 and g["concurrency"].nunique() >= 3
        rows = direct[(direct["source"] == source) & (direct["accelerator"] == gpu)
                      & pv.curve_label(direct).eq(g["curve"].iloc[0])]
        t = g[g["metric"] == "throughput"]
        assert sorted(t["measured"]) == sorted(rows["output_tokens_per_s"].astype(float))
        assert sorted(t["predicted"]) == pytest.approx(
            sorted(rows["pred_output_tokens_per_s"].astype(float)))
        i = g[g["metric"] == "itl"]
        assert sorted(i["predicted"]) == pytest.approx(sorted(rows["pred_itl_ms"]))


def test_cached_predictions_equal_the_engines(cache_dir, direct, monkeypatch):
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(cache_dir))
    monkeypatch.delenv("PLANNER_NO_CACHE", raising=False)
    first = pv.closed_loop_predictions()
    files = list(cache_dir.glob("perf-closed-loop-*.csv"))
    assert len(files) == 1
    again = pv.closed_loop_predictions()  # read back from the cache file
    for col in ("pred_ttft_ms", "pred_itl_ms", "pred_output_tokens_per_s", "err_tput",
                "err_itl", "err_ttft"):
        np.testing.assert_array_equal(again[col].to_numpy(float), direct[col].to_numpy(float))
        np.testing.assert_array_equal(first[col].to_numpy(float), direct[col].to_numpy(float))
    assert (again["fits"] == direct["fits"]).all()
    held = v.split(v.load_closed_loop()).to_numpy()
    assert (again["held_out"].to_numpy() == held).all()
    assert (first["held_out"].to_numpy() == held).all()
    # a changed data row is a different cache entry (no stale predictions)
    df = v.load_closed_loop()
    llms, accs = v.catalog_specs(df, load_catalog())
    key = pv._cache_key(df, llms, accs)
    df2 = df.copy()
    df2.loc[0, "concurrency"] = df2.loc[0, "concurrency"] + 1
    assert pv._cache_key(df2, llms, accs) != key


def test_missing_closed_loop_data_is_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(v, "REFERENCE_DATA", tmp_path / "nowhere")
    monkeypatch.setenv("PLANNER_NO_CACHE", "1")
    res = build_report(QUICKSTART, out_dir=tmp_path / "r", progress=False,
                       sections=["performance"], providers={"breakeven": _no_breakeven})
    doc = res.html.read_text(encoding="utf-8")
    assert "performance" in res.sections and 'id="table-perf_validation"' in doc
    assert "closed-loop measurements are not installed" in doc
    assert "closed_loop_errors" not in res.tables
