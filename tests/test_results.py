"""planner.results: tables kept as rows print exactly as their DataFrames do.

The reference is :func:`planner.output.render_tables` on ``Records.frame()`` (pandas'
``to_string`` and ``to_json``); every table below is generated at random, so the printing
without pandas is checked on column types, missing values, widths and escapes, not on one
fixed example.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import random

import numpy as np
import pandas as pd
import pytest

from planner import cli
from planner.output import render_tables as pandas_render
from planner.results import LazyFrames, Records, _ujson_double, render_tables

_CELLS = [
    lambda r: r.choice(["", "a", "gpt-4o-mini", "x" * 70, "é—ü", "tab\there", "new\nline",
                        "ctl\x07", " lead", "trail ", "-", "1,000", "None", "a/b"]),
    lambda r: r.choice([0.0, -0.0, 1.0, 2.5, 1 / 3, 1969.123456789, 1e-5, 1.5e-7, 3e-16, 1e12,
                        2e16, 123456789.123456789, math.nan, math.inf, -math.inf, -4.2,
                        0.0002941999999, 99999.5, 1e15 + 0.3]) * r.choice([1, 1, r.random()]),
    lambda r: r.choice([0, 1, -3, 10**6, 2**40]),
    lambda r: r.choice([True, False]),
    lambda r: None,
    lambda r: np.float64(r.random() * 10 ** r.randint(-8, 14)),
    lambda r: np.int64(r.randint(-5, 10**9)),
]


def _random_table(seed: int) -> Records:
    r = random.Random(seed)
    cols = [r.choice(["a", "deployment", "usd_per_month", "x" * 12, "é", "t\tb"]) + str(i)
            for i in range(r.randint(1, 5))]
    kinds = [[r.choice(_CELLS) for _ in range(r.choice([1, 1, 2]))] for _ in cols]
    rows = [{c: r.choice(k)(r) for c, k in zip(cols, kinds, strict=True)}
            for _ in range(r.randint(0, 5))]
    return Records.of(rows, cols)


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_rows_print_as_their_dataframes(fmt):
    printed = 0
    for seed in range(1500):
        tables = {"t": _random_table(seed), "u": _random_table(seed + 10_000)}
        if seed % 5 == 0:
            tables["none"] = Records.none()
        mine = render_tables(tables, fmt)
        if mine is None:  # a column type left to pandas (e.g. numbers mixed with text)
            continue
        printed += 1
        assert mine == pandas_render({k: v.frame() for k, v in tables.items()}, fmt), seed
    assert printed > 700  # most random tables are printed without pandas


def test_other_formats_and_mixed_columns_are_left_to_pandas():
    assert render_tables({"t": Records.of([{"a": 1.0}], ["a"])}, "csv") is None
    assert render_tables({"t": Records.of([{"a": 1.0}, {"a": "x"}], ["a"])}, "json") is None
    assert render_tables({"t": Records.of([{"b": 1.0}], ["a"])}, "table") is None  # missing key
    assert render_tables({"t": Records.of([{"a": 1.0}], ["a"])}, "table") is not None


def test_json_doubles_read_back_as_pandas_writes_them():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.random(3000) * 10.0 ** rng.integers(-18, 18, 3000),
                        -rng.random(500) * 1e6, [0.0, -0.0, 0.5, 1.5, 2.5, 1e16 - 1, 1e16,
                                                 1e-15, 9.999999999999999e-16]])
    want = [r["x"] for r in json.loads(pd.DataFrame({"x": x}).to_json(
        orient="records", double_precision=15))]
    got = [_ujson_double(float(v)) for v in x]
    assert got == want


def test_records_frame_is_from_records():
    rows = [{"a": "x", "b": 1.5, "c": None}, {"a": None, "b": 2, "c": None}]
    pd.testing.assert_frame_equal(Records.of(rows, ["a", "b", "c"]).frame(),
                                  pd.DataFrame.from_records(rows, columns=["a", "b", "c"]))
    assert Records.none().frame().equals(pd.DataFrame())
    assert Records.none().empty and Records.of([], ["a"]).empty
    assert not Records.of(rows, ["a"]).empty


def test_lazy_frames_build_once_and_keep_the_frame():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class R(LazyFrames):
        t: pd.DataFrame
        n: int = 0

    rec = Records.of([{"a": 1.0}, {"a": 2.0}], ["a"])
    r = R(t=rec, n=3)
    assert r.raw("t") is rec and r.n == 3
    df = r.t
    assert isinstance(df, pd.DataFrame) and list(df["a"]) == [1.0, 2.0]
    assert r.t is df and r.raw("t") is df


def _cost_output(argv: list[str], *, from_rows: bool, monkeypatch) -> tuple[str, str, bool]:
    """(stdout, stderr, whether the rows were printed without DataFrames)."""
    real, taken = cli._cost_from_rows, []

    def spy(*a):
        taken.append(real(*a) if from_rows else False)
        return taken[-1]

    monkeypatch.setattr(cli, "_cost_from_rows", spy)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["cost", *argv])
    monkeypatch.undo()
    assert code == 0
    return out.getvalue(), err.getvalue(), taken == [True]


@pytest.mark.parametrize("scenario", [
    "example:quickstart", "example:risk-example",
    "studies/gpt3-economics/scenario.toml", "studies/hybrid-support-bot/scenario.toml",
    "studies/output-token-economics/scenario.toml", "studies/pretraining-6nd/scenario.toml",
])
@pytest.mark.parametrize("flags", [[], ["--format", "json"], ["--detail"],
                                   ["--detail", "--format", "json"]])
def test_cost_printed_from_rows_equals_the_dataframe_path(scenario, flags, monkeypatch):
    from pathlib import Path

    if not scenario.startswith("example:"):
        scenario = str(Path(__file__).resolve().parents[1] / scenario)
    *fast, taken = _cost_output([scenario, *flags], from_rows=True, monkeypatch=monkeypatch)
    *slow, _ = _cost_output([scenario, *flags], from_rows=False, monkeypatch=monkeypatch)
    assert fast == slow
    assert fast[0].strip()
    if scenario == "example:quickstart":
        assert taken  # the default cost output is printed without DataFrames
