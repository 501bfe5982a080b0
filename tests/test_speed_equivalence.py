"""The fast paths compute what the slow ones did.

* Break-even: the volume grid priced as one array evaluation of the model
  (:class:`planner.engines.breakeven.VolumeCosts`) equals the former computation, one
  deterministic engine run per volume point (kept below as the reference), on every bundled
  template and study, to 1e-9 relative.
* Catalog: the dict indexes return exactly the rows the former DataFrame filters returned.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq

from planner.catalog import (
    _KIND_LABEL,
    TABLES,
    Catalog,
    CatalogError,
    _clean,
    _read_table,
    _read_table_pandas,
    catalog_dir,
    load_catalog,
)
from planner.config import load_scenario
from planner.engines.breakeven import VolumeCosts, breakeven, cost_curve, volume_breakeven
from planner.engines.deterministic import evaluate

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted(
    [*ROOT.glob("planner/templates/*.toml"), *ROOT.glob("studies/*/*.toml")],
    key=lambda p: str(p.relative_to(ROOT)),
)
RTOL = 1e-9


# -- the former per-point computation (reference) ---------------------------------------------


def _old_requests_per_day(res, dep: str) -> float:
    c = res.classes
    return float(c.loc[c["deployment"] == dep, "requests_per_day"].sum())


def _old_monthly(sc, cat, scale: float):
    res = evaluate(sc, cat, volume_scale=scale)
    return {r.deployment: (r.usd_per_month, _old_requests_per_day(res, r.deployment),
                           r.tokens_per_month) for r in res.summary.itertuples()}


def old_cost_curve(sc, scales, cat) -> pd.DataFrame:
    rows = []
    for s in scales:
        res = evaluate(sc, cat, volume_scale=float(s))
        for r in res.summary.itertuples():
            rows.append({
                "volume_scale": float(s), "deployment": r.deployment, "kind": r.kind,
                "requests_per_day": _old_requests_per_day(res, r.deployment),
                "tokens_per_month": r.tokens_per_month, "usd_per_month": r.usd_per_month,
            })
    return pd.DataFrame(rows)


def old_volume_breakeven(sc, cat, *, lo=1e-4, hi=1e4, points=41) -> pd.DataFrame:
    s = evaluate(sc, cat).summary
    apis, selfs = s[s["kind"] == "api"], s[s["kind"] != "api"]
    grid = np.geomspace(lo, hi, points)
    cache_: dict = {}

    def at(x):
        if x not in cache_:
            cache_[x] = _old_monthly(sc, cat, x)
        return cache_[x]

    rows = []
    for a in apis.itertuples():
        for h in selfs.itertuples():
            if a.classes_served != h.classes_served or not a.classes_served:
                continue

            def diff(x, a=a.deployment, h=h.deployment):
                m = at(x)
                return m[h][0] - m[a][0]

            vals = np.array([diff(x) for x in grid])
            idx = np.nonzero((vals[:-1] > 0) & (vals[1:] <= 0))[0]
            row = {"api": a.deployment, "selfhosted": h.deployment, "classes": a.classes_served}
            if idx.size == 0:
                cheaper = "selfhosted" if vals[0] <= 0 else "api"
                row.update({"volume_scale": np.nan, "requests_per_day": np.nan,
                            "tokens_per_month": np.nan, "usd_per_month": np.nan,
                            "note": f"no crossing in x{lo:g}..x{hi:g} of the scenario volume; "
                                    f"{cheaper} is cheaper throughout"})
            else:
                i = int(idx[0])
                x = brentq(diff, grid[i], grid[i + 1], xtol=1e-10, rtol=1e-10)
                m = at(x)
                row.update({"volume_scale": x, "requests_per_day": m[a.deployment][1],
                            "tokens_per_month": m[a.deployment][2],
                            "usd_per_month": m[a.deployment][0],
                            "note": "self-hosting is cheaper above this volume"})
            rows.append(row)
    return pd.DataFrame(rows, columns=["api", "selfhosted", "classes", "volume_scale",
                                       "requests_per_day", "tokens_per_month",
                                       "usd_per_month", "note"])


@cache
def _scenario(path: Path):
    return load_scenario(path)


def _id(p: Path) -> str:
    return str(p.relative_to(ROOT))


@pytest.mark.parametrize("path", SCENARIOS, ids=_id)
def test_vectorised_cost_curve_equals_per_point_runs(path):
    sc, cat = _scenario(path), load_catalog()
    scales = (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100)
    new = cost_curve(sc, scales, cat)
    old = old_cost_curve(sc, scales, cat)
    pd.testing.assert_frame_equal(new, old, check_dtype=False, rtol=RTOL, atol=0.0)


@pytest.mark.parametrize("path", SCENARIOS, ids=_id)
def test_vectorised_volume_breakeven_equals_per_point_runs(path):
    sc, cat = _scenario(path), load_catalog()
    new = volume_breakeven(sc, cat)
    old = old_volume_breakeven(sc, cat)
    pd.testing.assert_frame_equal(new, old, check_dtype=False, rtol=RTOL, atol=0.0)


def test_breakeven_shares_one_model_and_matches_parts():
    sc, cat = _scenario(ROOT / "planner/templates/quickstart.toml"), load_catalog()
    b = breakeven(sc, cat)
    pd.testing.assert_frame_equal(b.volume, old_volume_breakeven(sc, cat), check_dtype=False,
                                  rtol=RTOL, atol=0.0)
    assert b.volume["volume_scale"].notna().any()  # the quickstart has crossings
    assert b.curve["deployment"].nunique() == 5 and len(b.curve) == 5 * 9


def test_volume_costs_grid_equals_single_points():
    sc, cat = _scenario(ROOT / "planner/templates/quickstart.toml"), load_catalog()
    xs = [0.001, 0.5, 1.0, 7.0, 1e3]
    grid = VolumeCosts(sc, cat).grid(xs)
    one = VolumeCosts(sc, cat)
    for i, x in enumerate(xs):
        got = one.at(x)
        for name, arr in grid.items():
            np.testing.assert_allclose(arr[i], got[name], rtol=RTOL, atol=0.0)


# -- catalog indexes ------------------------------------------------------------------------


def _old_row(cat: Catalog, name: str, entry_id):
    df = cat.table(name)
    hit = df[df["id"] == entry_id]
    if hit.empty:
        hit = df[df["id"].str.lower() == str(entry_id).lower()]
    if hit.empty:
        return None
    return {k: _clean(v) for k, v in hit.iloc[0].to_dict().items()}


def _old_cheapest(cat: Catalog, accelerator, plan):
    df = cat.clouds
    rows = df[(df["accelerator"] == accelerator) & (df["plan"] == plan)]
    rows = rows[rows["usd_per_gpu_hour"].notna()]
    if rows.empty:
        return None
    best = rows.sort_values("usd_per_gpu_hour", kind="stable").iloc[0]
    return {k: _clean(v) for k, v in best.to_dict().items()}


def _old_tokens_per_unit(cat: Catalog, tokenizer, lang, unit):
    df = cat.tokenizers
    rows = df[(df["lang"] == lang) & (df["unit"] == unit)]
    if rows.empty:
        return None
    exact = rows[rows["tokenizer"] == tokenizer]
    row = (exact if not exact.empty else rows).iloc[0]
    return {k: _clean(v) for k, v in row.to_dict().items()}


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return a.keys() == b.keys() and all(
        type(a[k]) is type(b[k]) and (a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]))
        for k in a)


@pytest.mark.parametrize("name", list(_KIND_LABEL))
def test_catalog_row_index_equals_dataframe_filter(name):
    cat = load_catalog()
    ids = cat.ids(name)
    probes = [*ids, *(i.upper() for i in ids), *(i.title() for i in ids), "no-such-id", 7]
    for entry in probes:
        want = _old_row(cat, name, entry)
        if want is None:
            with pytest.raises(CatalogError, match="unknown"):
                cat._row(name, entry)
            assert not cat.has(name, entry)
            continue
        got = cat._row(name, entry)
        assert _same(got, want), entry
        assert cat.has(name, entry) == (entry in set(ids))
        got["id"] = "mutated"  # a fresh dict each call: callers may change it
        assert cat._row(name, entry)["id"] != "mutated"


def test_catalog_cheapest_cloud_and_tokens_per_unit_equal_dataframe_filters():
    cat = load_catalog()
    accs = [*sorted(set(cat.clouds["accelerator"].dropna())), "nope", None]
    plans = [*sorted(set(cat.clouds["plan"].dropna())), "nope", None]
    for a in accs:
        for p in plans:
            assert _same(cat.cheapest_cloud(a, p), _old_cheapest(cat, a, p)), (a, p)
    t = cat.tokenizers
    toks = [*sorted(set(t["tokenizer"].dropna())), "unknown-family", None]
    for lang in [*sorted(set(t["lang"].dropna())), "xx"]:
        for unit in ("word", "char"):
            for tok in toks:
                want = _old_tokens_per_unit(cat, tok, lang, unit)
                if want is None:
                    with pytest.raises(CatalogError, match="no tokens-per"):
                        cat.tokens_per_unit(tok, lang, unit)
                else:
                    assert _same(cat.tokens_per_unit(tok, lang, unit), want), (tok, lang, unit)


# -- catalog reader -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TABLES))
def test_fast_catalog_reader_equals_pandas_reader_on_the_catalog(name):
    path = catalog_dir() / TABLES[name][0]
    pd.testing.assert_frame_equal(_read_table(path), _read_table_pandas(path),
                                  check_exact=True)


@pytest.mark.parametrize("text", [
    "id,x,flag,notes,weird\na, 1.5 ,TRUE,hello,1\nb,,false,,two\n",  # blanks, bool, text col
    "\ufeffid,x\n a ,1e3\n\nb,-2\n",  # BOM, blank line, padded id
    'id,x,note2\n"a,b",3,"multi\nline"\nc,NA,x\n',  # quoted comma/newline; NA is text
    "id,flag\na,true\nb,false\n",  # bool without blanks
    "id,x\na,inf\nb,nan\nc,1_000\n",  # what float() and to_numeric disagree on
    "id,x\n",  # header only: pandas path
    "id,x\na,1,extra\nb,2\n",  # ragged: pandas path
    " id , x \na,1\n",  # padded header
])
def test_fast_catalog_reader_equals_pandas_reader_on_edge_cases(tmp_path, text):
    path = tmp_path / "t.csv"
    path.write_text(text, encoding="utf-8")
    try:
        want = _read_table_pandas(path)
    except Exception as exc:  # noqa: BLE001 - the fast reader must fail the same way
        with pytest.raises(type(exc)):
            _read_table(path)
        return
    pd.testing.assert_frame_equal(_read_table(path), want, check_exact=True)


def test_catalog_reader_missing_file(tmp_path):
    with pytest.raises(CatalogError, match="catalog file missing"):
        _read_table(tmp_path / "nope.csv")
