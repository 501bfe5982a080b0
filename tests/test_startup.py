"""Start-up stays light: the quick commands do not import the heavy libraries.

Each check runs the command in a fresh interpreter (``sys.modules`` of this test process holds
everything the other tests imported) and lists which of the heavy modules got loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: never needed to print help or check a scenario file
HEAVY = ("scipy.stats", "altair", "vl_convert", "dask", "distributed", "simpy")

_PROBE = """
import contextlib, io, json, sys
sys.argv = ["planner", *json.loads(sys.argv[1])]
from planner.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def _loaded(*argv: str) -> tuple[int, str, set[str]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(list(argv))],
                          capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return res["code"], res["out"], set(res["modules"])


def _heavy(modules: set[str], names=HEAVY) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in names))


def test_help_imports_no_numeric_stack():
    code, out, mods = _loaded("--help")
    assert code == 0 and "planner" in out
    # --help needs argparse only: not even numpy or pandas
    assert _heavy(mods, (*HEAVY, "numpy", "pandas", "scipy", "pydantic")) == []


def test_validate_imports_no_scipy_stats_altair_dask():
    code, out, mods = _loaded("validate", "example:quickstart")
    assert code == 0 and "valid scenario" in out
    # the catalog look-ups read plain Python rows: no DataFrame, so no pandas either; and the
    # scenario models' checks need no array maths: numpy is imported on first use
    assert _heavy(mods, (*HEAVY, "scipy", "pandas", "numpy")) == []


def test_lazy_numpy_in_distributions_becomes_the_module():
    """The first use of ``np`` in planner.distributions puts numpy itself in the global (no
    proxy left on the sampling paths), and sampling gives numpy's numbers."""
    probe = ("import sys, numpy; import planner.distributions as d; "
             "before = type(d.np).__name__; x = d.NormalDist(mean=1.0, sd=2.0).sample("
             "numpy.random.default_rng(5), 3); print(before, d.np is numpy, list(x))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=env, check=True, cwd=ROOT).stdout.split(maxsplit=2)
    import numpy as np

    from planner.distributions import NormalDist

    want = list(NormalDist(mean=1.0, sd=2.0).sample(np.random.default_rng(5), 3))
    assert out[:2] == ["_LazyModule", "True"]
    assert out[2].strip() == str(want)


def test_catalog_lookups_build_no_dataframe():
    """Loading the catalog and looking rows up does not import pandas (fresh interpreter)."""
    probe = ("import sys; from planner.catalog import load_catalog; c = load_catalog(); "
             "c.llm(c.ids('llms')[0]); c.cheapest_cloud('h100-sxm', 'on-demand'); "
             "c.tokens_per_unit('o200k', 'en', 'word'); print('pandas' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=env, check=True, cwd=ROOT).stdout.split()
    assert out == ["False"]


def test_cost_imports_no_scipy_stats_altair_dask():
    code, out, mods = _loaded("cost", "example:quickstart")
    assert code == 0 and "cheapest option" in out
    assert _heavy(mods) == []


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_cost_imports_no_pandas_and_no_scipy(fmt):
    """``planner cost`` prints from the engine's rows (planner.results) and the open-loop
    model's special functions are numpy's (planner.perf._special): neither pandas nor any of
    scipy (scipy.special alone took 0.1-0.3 s) is imported."""
    code, out, mods = _loaded("cost", "example:quickstart", "--format", fmt)
    assert code == 0 and "gpt-4o-mini" in out
    assert _heavy(mods, (*HEAVY, "pandas", "scipy")) == []


def test_cost_python_api_still_gives_dataframes():
    """The Python API's tables are DataFrames (built on first access, then kept)."""
    import pandas as pd

    from planner import api

    r = api.cost("example:quickstart")
    assert isinstance(r.summary, pd.DataFrame) and r.summary is r.summary
    assert isinstance(r.engine.costs, pd.DataFrame) and not r.engine.costs.empty
    assert set(r.tables()) >= {"summary", "costs", "capacity", "payback", "check"}
    assert r.to_dict()["tables"]["summary"][0]["deployment"] == "gpt-4o-mini"


@pytest.mark.parametrize("argv", [("catalog", "list", "llms"), ("new", "--help")])
def test_other_quick_commands_stay_light(argv):
    code, _, mods = _loaded(*argv)
    assert code == 0
    assert _heavy(mods) == []


def test_lazy_scipy_constants_match_scipy():
    from scipy import special

    from planner import distributions as d

    assert d.Z90 == float(special.ndtri(0.9))
    # the symmetric beta median is exactly 1/2; scipy agrees on the bundled parameters
    for a in (1.0, 2.0, 5.0, 10.0):  # (at a = 0.5 scipy is 1 ulp low)
        assert d._beta_median(a, a) == 0.5 == float(special.betaincinv(a, a, 0.5))
    assert d._beta_median(2.0, 5.0) == float(special.betaincinv(2.0, 5.0, 0.5))
    assert d.special.ndtri is special.ndtri


# -- the catalog reader without pandas reads what the pandas reader reads --------------------

#: cells the csv-module reader types itself ...
_CELLS = ["", "1", "-2.5", "+.5", "1.", "1e3", "1E-02", "007", "1e99", "-0", " 3 ", "0.1",
          "1_000", "0x10", "1,5", "abc", "True", "false", "TRUE", "\u0661", "1 000", "none", "N/A"]
#: ... and cells that send the file to the pandas reader
_RARE = ["1e999", "1e0005", "inf", "-Inf", "NaN", "nan", "infinity", "e5", ".", "-", "+", "1e",
         "12.5.1"]


@pytest.mark.parametrize("seed", range(40))
def test_python_catalog_reader_equals_pandas_reader(tmp_path, seed):
    """Random columns of awkward cells: the csv-module reader (:func:`_parse_table`, which
    hands a file it cannot read exactly to pandas) gives the reference reader's DataFrame and
    its rows equal the DataFrame's rows as the look-ups used to clean them."""
    import csv
    import random

    import pandas as pd

    from planner.catalog import _clean, _parse_table, _read_table, _read_table_pandas

    rng = random.Random(seed)

    def cell() -> str:
        return rng.choice(_RARE if rng.random() < 0.03 else _CELLS)

    def number() -> str:  # mostly numbers, so that number columns occur
        return cell() if rng.random() < 0.2 else rng.choice(["", "1", "2.5", "-3e2", ".5"])

    header = ["id", "x", "y", "flag", "notes"]
    rows = []
    for i in range(rng.randint(1, 6)):
        rows.append([f"m{i}", number(), cell(), rng.choice(["true", "false", "", "TRUE"]),
                     cell()])
    path = tmp_path / "t.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    want = _read_table_pandas(path)
    pd.testing.assert_frame_equal(_read_table(path), want, check_exact=True)
    table = _parse_table(path)
    if table is not None:
        for i in range(len(want)):
            got, ref = table.row(i), {k: _clean(v) for k, v in want.iloc[i].to_dict().items()}
            assert got.keys() == ref.keys()
            for k in got:
                assert type(got[k]) is type(ref[k]) and got[k] == ref[k], (k, got[k], ref[k])


def test_python_catalog_reader_reads_the_shipped_catalog_without_pandas_fallback():
    from planner.catalog import TABLES, _parse_table, catalog_dir

    for fname, _ in TABLES.values():
        assert _parse_table(catalog_dir() / fname) is not None, fname


def test_simulate_without_trace_flags_imports_no_trace_reader():
    """``planner simulate`` with no ``--trace`` flag never reads traces, so planner.traces
    (and the scipy.stats it imports for its fit statistics) stays unimported: in
    ``--workers N`` runs the parent's imports are serial work before the pool starts."""
    code, out, mods = _loaded("simulate", "example:quickstart", "--hours", "1")
    assert code == 0 and "llama-70b-h100" in out
    assert _heavy(mods, ("scipy.stats", "planner.traces", "altair", "dask")) == []
