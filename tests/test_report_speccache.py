"""The report's chart specifications are cached on disk, keyed by the builder, its inputs, the
chart code and the package versions (:mod:`planner.report.speccache`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from planner import charts
from planner.report import export, speccache
from planner.report.model import Chart, Note, Section
from planner.report.sections import _chart

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """A cache directory of this test; chart validation off (it bypasses the reads)."""
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PLANNER_NO_CACHE", raising=False)
    monkeypatch.delenv("PLANNER_VALIDATE_CHARTS", raising=False)
    return tmp_path / "cache"


def _costs(n: int = 4, scale: float = 1.0) -> pd.DataFrame:
    # the strings are built afresh every call: equal values, distinct objects
    return pd.DataFrame({
        "deployment": ["".join(["api", "-", str(i % 2)]) for i in range(n)],
        "component": ["".join(["in", "put"]) if i % 2 else "output" for i in range(n)],
        "usd_per_month": np.arange(1.0, n + 1.0) * 1000.0 * scale,
    })


@pytest.fixture
def fake_builders(monkeypatch):
    """A chart module ``planner_test_charts`` whose builders count their calls."""
    calls: list[str] = []
    mod = types.ModuleType("planner_test_charts")

    def bars(df, *ignored):
        calls.append("bars")
        return charts.cost_breakdown(df)

    def empty(df):
        calls.append("empty")
        raise charts.NoData("empty: nothing to draw here")

    mod.bars, mod.empty = bars, empty
    monkeypatch.setitem(sys.modules, "planner_test_charts", mod)
    return calls


def test_key_is_the_content_of_the_inputs():
    k = speccache.key("planner.charts:cost_breakdown", (_costs(),))
    assert k is not None and re.fullmatch(r"[0-9a-f]{40}", k)
    assert speccache.key("planner.charts:cost_breakdown", (_costs(),)) == k  # equal content
    base = _costs()
    changed = {
        "value by one ulp": base.assign(usd_per_month=np.nextafter(
            base["usd_per_month"].to_numpy(), np.inf)),
        "a string": base.assign(deployment=base["deployment"].str.replace("api-1", "api-2")),
        "column name": base.rename(columns={"component": "kind"}),
        "dtype": base.assign(usd_per_month=base["usd_per_month"].astype(np.float32)),
        "index": base.set_axis([5, 6, 7, 8]),
        "a row": _costs(5),
        "object type": base.assign(component=[1, "1", 1.0, True]),
    }
    keys = {what: speccache.key("planner.charts:cost_breakdown", (df,))
            for what, df in changed.items()}
    keys["builder"] = speccache.key("planner.charts:tornado", (base,))
    keys["extra argument"] = speccache.key("planner.charts:cost_breakdown", (base, None))
    keys["scalar type"] = speccache.key("planner.charts:cost_breakdown", (base, 1))
    keys["scalar type 2"] = speccache.key("planner.charts:cost_breakdown", (base, 1.0))
    assert k not in keys.values()
    assert len(set(keys.values())) == len(keys), keys
    # an input the digest does not know: not cached rather than wrongly shared
    assert speccache.key("planner.charts:cost_breakdown", (base, object())) is None
    assert speccache.key("planner.charts:cost_breakdown",
                         (base.set_axis(["a", "b", "c", "d"]),)) is not None


def test_key_names_the_code_and_the_versions(monkeypatch):
    args = (_costs(),)
    k = speccache.key("planner.charts:cost_breakdown", args)
    for rel in speccache.CODE_FILES:  # the digest reads these files
        assert (ROOT / "planner" / rel).is_file()
    monkeypatch.setattr(speccache, "_code_digest", lambda: "another chart code")
    k_code = speccache.key("planner.charts:cost_breakdown", args)
    monkeypatch.undo()
    monkeypatch.setattr(export, "vegalite_version", lambda: "5.20")
    k_vl = speccache.key("planner.charts:cost_breakdown", args)
    assert len({k, k_code, k_vl}) == 3


def test_versions_are_read_without_importing_altair():
    code = ("import sys\n"
            "from planner.report import export\n"
            "v, vlc = export._altair_schema_version(), export._vlc_version()\n"
            "a = export.dist_version('altair', 'altair')\n"
            "print('altair' in sys.modules)\n"
            "import altair\n"
            "print(v == altair.SCHEMA_VERSION, vlc, a)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.split("\n")
    assert out[0] == "False"
    assert out[1] == f"True {version('vl-convert-python')} {version('altair')}"
    for dist, module in (("pandas", "pandas"), ("numpy", "numpy"),
                         ("vl-convert-python", "vl_convert")):
        assert export.dist_version(dist, module) == version(dist)


def test_a_chart_is_built_once_then_read(cache, fake_builders, monkeypatch):
    s1, s2 = Section("a", "A"), Section("a", "A")
    _chart(s1, "bars", "planner_test_charts:bars", (_costs(),), "caption")
    assert fake_builders == ["bars"]
    (c1,) = s1.charts()
    assert c1.chart is not None and c1.spec == export.spec(c1.chart)
    files = list(speccache.spec_cache_dir().glob("*.json"))
    assert [f.stem for f in files] == [speccache.key("planner_test_charts:bars", (_costs(),))]
    _chart(s2, "bars", "planner_test_charts:bars", (_costs(),), "caption")
    assert fake_builders == ["bars"]  # read, not built
    (c2,) = s2.charts()
    assert c2 == Chart("bars", None, "caption", spec=c1.spec)
    assert json.dumps(c2.spec) == json.dumps(c1.spec)
    assert export.chart_key(c2.spec) == export.chart_key(c1.spec)  # the same images

    # a changed input: built again, and its specification differs
    s3 = Section("a", "A")
    _chart(s3, "bars", "planner_test_charts:bars", (_costs(scale=2.0),), "caption")
    assert fake_builders == ["bars", "bars"]
    (c3,) = s3.charts()
    assert c3.spec != c1.spec and c3.spec == export.spec(c3.chart)

    def total(spec: dict) -> float:
        (rows,) = spec["datasets"].values()
        return sum(r["usd_per_month"] for r in rows)

    assert total(c1.spec) == pytest.approx(_costs()["usd_per_month"].sum())
    assert total(c3.spec) == pytest.approx(_costs(scale=2.0)["usd_per_month"].sum())

    # a corrupt entry is a miss, replaced by a good one
    files[0].write_text("{not json", encoding="utf-8")
    _chart(Section("a", "A"), "bars", "planner_test_charts:bars", (_costs(),), "caption")
    assert fake_builders == ["bars"] * 3
    assert speccache.load(files[0].stem) == {"spec": c1.spec}

    # chart validation builds (and checks) every chart; PLANNER_NO_CACHE neither reads nor
    # writes
    monkeypatch.setenv("PLANNER_VALIDATE_CHARTS", "1")
    _chart(Section("a", "A"), "bars", "planner_test_charts:bars", (_costs(),), "caption")
    assert fake_builders == ["bars"] * 4
    monkeypatch.delenv("PLANNER_VALIDATE_CHARTS")
    monkeypatch.setenv("PLANNER_NO_CACHE", "1")
    _chart(Section("a", "A"), "bars", "planner_test_charts:bars", (_costs(n=6),), "caption")
    assert fake_builders == ["bars"] * 5
    assert len(list(speccache.spec_cache_dir().glob("*.json"))) == 2
    assert not list(speccache.spec_cache_dir().glob(".*"))  # no temporary file left


def test_nothing_to_draw_is_cached_as_the_note(cache, fake_builders):
    notes = []
    for _ in range(2):
        s = Section("a", "A")
        _chart(s, "nothing", "planner_test_charts:empty", (_costs(),))
        assert s.charts() == []
        notes.append(s.blocks)
    assert fake_builders == ["empty"]
    assert notes[0] == notes[1] == [Note("Chart nothing not drawn: empty: nothing to draw "
                                         "here.")]


def test_uncacheable_inputs_are_built_every_time(cache, fake_builders):
    class Odd(float):
        pass

    for _ in range(2):
        _chart(Section("a", "A"), "bars", "planner_test_charts:bars", (_costs(), Odd(1.0)))
    assert fake_builders == ["bars", "bars"]
    assert not speccache.spec_cache_dir().exists()


def test_prune_keeps_the_most_recently_used(cache):
    d = speccache.spec_cache_dir()
    d.mkdir(parents=True)
    for i in range(5):
        (d / f"k{i}.json").write_text(json.dumps({"spec": {"i": i}}))
        os.utime(d / f"k{i}.json", (1000 + i, 1000 + i))
    assert speccache.load("k0") == {"spec": {"i": 0}}  # a hit counts as a use
    speccache.prune(keep=2)
    assert sorted(p.name for p in d.iterdir()) == ["k0.json", "k4.json"]


def _report(tmp_path: Path, cache: Path, out: str, *extra: str) -> bool:
    """``planner report`` in a fresh interpreter; whether it imported altair."""
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('altair' in sys.modules))\n"
            "from planner.cli import main\n"
            "main(sys.argv[1:])\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PLANNER_VALIDATE_CHARTS", "PLANNER_NO_CACHE")}
    env.update(PYTHONPATH=str(ROOT), PLANNER_CACHE_DIR=str(cache))
    proc = subprocess.run(
        [sys.executable, "-c", code, "report", "example:quickstart", "-q", "--sections",
         "costs,breakeven", "-o", str(tmp_path / out), *extra],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1] == "True"


def _page(path: Path) -> str:
    text = (path / "report.html").read_text(encoding="utf-8")
    return re.sub(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", "generated (time)", text)


def _specs(path: Path) -> dict:
    text = (path / "report.html").read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="report-specs">(.*?)</script>', text,
                  flags=re.S)
    return json.loads(m.group(1))


def test_report_again_reads_its_charts_without_altair(tmp_path):
    """The second report of the same scenario imports no altair and writes the same page,
    charts and tables; a changed input draws its charts again, with other figures."""
    cache = tmp_path / "cache"
    assert _report(tmp_path, cache, "one")  # built
    entries = sorted(p.name for p in (cache / "chart-specs").iterdir())
    assert len(entries) >= 3
    assert not _report(tmp_path, cache, "two")  # read: altair never imported
    assert _page(tmp_path / "two") == _page(tmp_path / "one")
    for sub in ("charts", "tables"):
        for f in sorted((tmp_path / "one" / sub).iterdir()):
            assert (tmp_path / "two" / sub / f.name).read_bytes() == f.read_bytes(), f.name
    assert sorted(p.name for p in (cache / "chart-specs").iterdir()) == entries

    assert _report(tmp_path, cache, "three", "--set",
                   "workload.chat.requests_per_day=400000")
    one, three = _specs(tmp_path / "one"), _specs(tmp_path / "three")
    assert one.keys() == three.keys()
    for name in one:
        assert one[name] != three[name], name  # every chart moved with the volume
    assert len(list((cache / "chart-specs").iterdir())) > len(entries)
