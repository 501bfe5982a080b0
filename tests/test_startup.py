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
    assert _heavy(mods, (*HEAVY, "scipy")) == []


def test_cost_imports_no_scipy_stats_altair_dask():
    code, out, mods = _loaded("cost", "example:quickstart")
    assert code == 0 and "cheapest option" in out
    assert _heavy(mods) == []


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
