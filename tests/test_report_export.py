"""Chart export in helper processes (planner.report.export.Exporter): the same bytes as an
in-process conversion, errors re-raised in the caller, no process left behind, and sections
built while the engines run without changing the report."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from planner.report import build_report, export
from planner.report.build import _run_and_build

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "planner" / "templates" / "quickstart.toml"

SPEC = {
    "data": {"values": [{"a": i, "b": (i * 7) % 5} for i in range(12)]},
    "mark": "bar",
    "encoding": {"x": {"field": "a", "type": "ordinal"},
                 "y": {"field": "b", "type": "quantitative"}},
}


def test_processes_give_the_bytes_of_an_in_process_conversion():
    with export.Exporter(cache=False) as ex:
        assert ex.uses_processes
        futures = [ex.submit(SPEC), ex.submit(SPEC, scale=1.0)]
        (svg2, png2), (svg1, png1) = (f.result(timeout=120) for f in futures)
        procs = [ex._svg.proc, ex._png.proc]
    expected_svg = export.svg(SPEC)
    assert svg2 == svg1 == expected_svg and svg2.lstrip().startswith("<svg")
    assert png2 == export.svg_to_png(expected_svg)
    assert png1 == export.svg_to_png(expected_svg, scale=1.0) and png1 != png2
    assert all(p.returncode is not None for p in procs)  # closed: the processes ended


def test_in_process_fallback_gives_the_same_bytes():
    with export.Exporter(processes=False, cache=False) as ex:
        assert not ex.uses_processes
        got = ex.submit(SPEC).result(timeout=120)
    with export.Exporter(cache=False) as ex:
        assert ex.submit(SPEC).result(timeout=120) == got


def test_a_conversion_error_is_raised_in_the_caller_and_the_process_goes_on():
    with export.Exporter(cache=False) as ex:
        bad = ex.submit({"mark": "no-such-mark", "data": {"values": []}})
        good = ex.submit(SPEC)
        with pytest.raises(ValueError):
            bad.result(timeout=120)
        assert good.result(timeout=120)[0] == export.svg(SPEC)


def test_a_dead_process_fails_its_conversions_not_the_caller_forever():
    ex = export.Exporter(cache=False)
    try:
        ex._svg.proc.kill()
        ex._svg.proc.wait()
        with pytest.raises(RuntimeError, match="chart export process stopped"):
            ex.submit(SPEC).result(timeout=120)
    finally:
        ex.close(wait=False)
    assert ex._png.proc.returncode is not None


def test_bundle_from_the_process_equals_the_in_process_one(monkeypatch, tmp_path):
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PLANNER_NO_CACHE", raising=False)
    export.js_bundle.cache_clear()
    try:
        with export.Exporter() as ex:
            ex.prefetch_bundle()  # not cached: the SVG process builds it
            assert ex._bundle is not None
            js = ex.bundle()
        assert export.bundle_cache_path().read_text(encoding="utf-8") == js
        assert export.js_bundle() == js and "vegaEmbed" in js
        with export.Exporter() as ex:  # cached now: read, not built again
            ex.prefetch_bundle()
            assert ex._bundle is None and ex.bundle() == js
    finally:
        export.js_bundle.cache_clear()


def test_cached_charts_are_read_not_rendered(monkeypatch, tmp_path):
    """A chart rendered once is stored under the key of its specification and scale; the
    next exporter reads the same bytes without starting a helper process, and a changed
    specification (or scale) is rendered again; a failed conversion is not stored."""
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PLANNER_NO_CACHE", raising=False)
    other = {**SPEC, "mark": "point"}
    with export.Exporter(cache=False) as ex:  # the reference: rendered, cache off
        want = ex.submit(SPEC).result(timeout=120)
        want_other = ex.submit(other).result(timeout=120)
    assert not export.chart_cache_dir().exists()
    with export.Exporter() as ex:
        assert ex.submit(SPEC).result(timeout=120) == want
        assert ex._svg is not None and ex.cache_hits == 0  # rendered by the processes
        with pytest.raises(ValueError):
            ex.submit({"mark": "no-such-mark", "data": {"values": []}}).result(timeout=120)
    stored = sorted(p.name for p in export.chart_cache_dir().iterdir())
    key = export.chart_key(SPEC)
    assert stored == [f"{key}.png", f"{key}.svg"]
    with export.Exporter() as ex:
        assert ex.submit(SPEC).result(timeout=120) == want
        assert ex.cache_hits == 1 and ex._svg is None and ex._local is None  # nothing started
        assert ex.submit(other).result(timeout=120) == want_other  # a miss: rendered
        assert ex.cache_hits == 1 and ex._svg is not None
        png1 = ex.submit(SPEC, scale=1.0).result(timeout=120)[1]
    assert png1 != want[1] and export.chart_key(SPEC, 1.0) != key
    assert len(list(export.chart_cache_dir().glob("*.svg"))) == 3
    monkeypatch.setenv("PLANNER_NO_CACHE", "1")
    with export.Exporter() as ex:  # PLANNER_NO_CACHE: rendered again
        assert not ex.cache and ex.submit(SPEC).result(timeout=120) == want
        assert ex.cache_hits == 0


def test_chart_cache_keeps_the_most_recently_used(monkeypatch, tmp_path):
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path / "cache"))
    d = export.chart_cache_dir()
    d.mkdir(parents=True)
    for i in range(5):
        (d / f"k{i}.svg").write_text("<svg/>")
        (d / f"k{i}.png").write_bytes(b"\x89PNG")
        os.utime(d / f"k{i}.svg", (1000 + i, 1000 + i))
    export.prune_chart_cache(keep=2)
    assert sorted(p.name for p in d.iterdir()) == ["k3.png", "k3.svg", "k4.png", "k4.svg"]
    assert export._cached_images("k4") == ("<svg/>", b"\x89PNG")
    (d / "k4.png").unlink()  # half an entry (or a file that is not an image) is a miss
    (d / "k3.svg").write_text("not svg")
    assert export._cached_images("k4") is None and export._cached_images("k3") is None


def test_sections_are_built_as_soon_as_their_engines_ran(tmp_path, monkeypatch):
    """The break-even section is built before the risk engine runs, the summary (which lists
    the omitted sections) after every engine; the charts go to the exporter as built."""
    import planner.report.build as build

    order: list[str] = []
    real = build._run_and_build

    def logged(label, fn):
        def run(*args):
            order.append(label)
            return fn(*args)
        return run

    def spy(sc, catalog, table, engines, specs, ctx, bar, exporter, forked=None):
        assert forked is None  # no simulation or performance section: nothing forked
        table = {e: logged(f"engine:{e}", f) for e, f in table.items()}
        specs = [type(s)(s.key, s.title, s.requires, s.uses, logged(f"section:{s.key}", s.build))
                 for s in specs]
        return real(sc, catalog, table, engines, specs, ctx, bar, exporter, forked)

    monkeypatch.setattr(build, "_run_and_build", spy)
    res = build_report(QUICKSTART, out_dir=tmp_path / "r", progress=False,
                       sections=["breakeven", "risk"])
    assert res.sections == ("summary", "breakeven", "risk")
    assert order.index("section:breakeven") < order.index("engine:risk")
    assert order.index("section:summary") > max(order.index(f"engine:{e}")
                                                 for e in ("deterministic", "breakeven", "risk"))
    assert set(res.charts) and all(p.stat().st_size > 0 for pair in res.charts.values()
                                   for p in pair)
    assert _run_and_build is real


# -- the optional engines in a forked child: the same report as run here ---------------------
# (in a fresh interpreter: this process may run threads of earlier tests, and then does not
# fork)

_FORK_PROBE = r"""
import json, os, sys
from pathlib import Path
import planner.report.build as build
from planner.parallel import ChildFailed, ForkedCall

out = {"available": ForkedCall.available()}
call = ForkedCall(os.getpid)
out["child_pid_differs"] = call.result() != os.getpid()
for name, call in (("raises", ForkedCall(int, "not a number")),
                   ("unpicklable", ForkedCall(lambda: (lambda: 0)))):
    try:
        call.result()
        out[name] = None
    except ChildFailed as exc:
        out[name] = str(exc)
ForkedCall(os.getpid).close()  # not taken: ended
forked = []
real = build._fork_engines
build._fork_engines = lambda *a, **k: forked.append(real(*a, **k)) or forked[-1]
tmp = Path(sys.argv[1])
# a first report fills the caches (Vega bundle, chart images): the second starts no export
# thread, so this process can fork again after the deterministic engine
build.build_report(sys.argv[2], out_dir=tmp / "warm", progress=False)
out["forked_first"] = [list(f[0]) if f else None for f in forked]
forked.clear()
a = build.build_report(sys.argv[2], out_dir=tmp / "a", progress=False)
out["forked"] = [list(f[0]) if f else None for f in forked]
out["forked_results"] = [sorted(getattr(f[1], "results", {})) if f else None for f in forked]
n = len(forked)
build.FORKED_ENGINES = ()
b = build.build_report(sys.argv[2], out_dir=tmp / "b", progress=False)
out["serial"] = len(forked) == 2 * n and all(f is None for f in forked[n:])
out["sections"] = [list(a.sections), list(b.sections)]
files = lambda r: sorted(str(p.relative_to(r.out_dir)) for p in r.out_dir.rglob("*")
                         if p.suffix in (".csv", ".png", ".svg"))
out["files_equal"] = files(a) == files(b) and len(files(a)) > 0
out["differ"] = [f for f in files(a) if (a.out_dir / f).read_bytes() != (b.out_dir / f).read_bytes()]
print(json.dumps(out))
"""


def test_forked_engines_give_the_report_of_serial_engines(tmp_path):
    """:class:`planner.parallel.ForkedCall` returns the child's result and reports its
    failures; the report's simulation and performance engines run in a forked child while the
    others run in the main process, and the report is the same files (charts, tables) as with
    every engine run in the main process (the risk and optimiser engines in a second child,
    forked after the deterministic engine ran)."""
    import json
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-c", _FORK_PROBE, str(tmp_path), str(QUICKSTART)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if sys.platform.startswith("linux"):
        assert out["available"]
    if not out["available"]:
        pytest.skip("no fork here")
    assert out["child_pid_differs"]
    assert "ValueError" in out["raises"] and "not sent back" in out["unpicklable"]
    # simulation and performance forked at the start, risk and optimiser once the
    # deterministic engine ran here (its capacity cache warm)
    assert out["forked_first"][0] == ["simulation", "performance"]
    assert out["forked"] == [["simulation", "performance"], ["risk", "optimiser"]]
    assert out["forked_results"] == [["performance", "simulation"],
                                     ["optimiser", "risk"]]  # all came back
    assert out["serial"]
    assert out["sections"][0] == out["sections"][1] and "simulation" in out["sections"][0]
    assert out["files_equal"] and out["differ"] == []
