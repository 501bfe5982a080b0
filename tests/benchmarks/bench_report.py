"""Benchmark of ``planner report example:quickstart``: wall time of the first run (empty
cache) and of the runs after it; prints one JSON object.

Each run is a fresh interpreter (``python -m planner report example:quickstart -o DIR -q``),
imports included. The first run starts from an empty cache directory (``PLANNER_CACHE_DIR``),
so it builds the Vega-Lite JavaScript bundle and renders every chart; the ``--repeat`` runs
after it (``after_first``, target, issue 15: <= 4 s) reuse the cached bundle, the cached
chart specifications (:mod:`planner.report.speccache`: a chart whose inputs did not change is
not built, and altair not imported) and the cached chart images
(:func:`planner.report.export.chart_key`: a chart whose specification did not change is read,
not rendered). ``charts_rendered`` runs are interleaved with them: the same cache but its
chart specifications and images removed before each run, so every chart is built and
rendered again by the helper processes (what a report of a changed scenario costs). ``breakeven_s`` times the
break-even step alone (``planner.engines.breakeven.breakeven`` on the quickstart, in a fresh
interpreter, imports excluded), the part of the report that used to re-run the deterministic
engine per volume point.

``*_main_cpu_*`` is the CPU time of the report's own process alone (user + system, without
the processes it starts, e.g. the chart-export helpers): on an idle machine with a core for
the helpers, it is the critical path of the run, so it says what the wall time would be when
the shared machine is too busy to show it.

Bytecode (as in ``bench_startup.py``): ``compiled`` -- the children get a bytecode cache
directory of their own (``PYTHONPYCACHEPREFIX``) into which the tree's ``planner`` package is
compiled before timing, as an installed planner has it (the target applies to this mode);
``source`` -- ``PYTHONDONTWRITEBYTECODE=1`` and no cache directory, planner's modules
compiled from source on every run (a development checkout in this project's sandbox).

``--baseline DIR`` times another source tree too (e.g. ``git archive main | tar -x -C
/tmp/base``), its runs interleaved with this tree's, each tree with its own cache directory.
``min_s`` is the least noisy figure on a shared machine; the load average is recorded, and the
CPU time of the runs (user + system, all processes: ``*_cpu_*``).

Run: python tests/benchmarks/bench_report.py [--repeat 3] [--baseline DIR]
     [--modes compiled,source]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET_AFTER_FIRST_S = 4.0

_BREAKEVEN = """
import sys, time
from planner.config import load_scenario
from planner.engines.breakeven import breakeven
sc = load_scenario(sys.argv[1])
t = time.perf_counter()
breakeven(sc)
print(time.perf_counter() - t)
"""


MODES = {
    "compiled": "planner's modules compiled to bytecode once before timing (as installed)",
    "source": "PYTHONDONTWRITEBYTECODE=1, no bytecode cache: planner compiled on every run",
}
#: the bytecode cache directory of each (tree, mode), set by main() (None: source mode)
PYCACHE: dict[tuple[str, str], str | None] = {}


def _env(tree: Path, cache: Path, mode: str = "compiled") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    env["PYTHONPATH"] = str(tree)
    env["PLANNER_CACHE_DIR"] = str(cache)
    env.pop("PLANNER_NO_CACHE", None)
    env.pop("PLANNER_VALIDATE_CHARTS", None)
    pycache = PYCACHE.get((str(tree), mode))
    if pycache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def compile_tree(tree: Path, pycache: str) -> None:
    """Compile ``tree``'s planner package into the bytecode cache ``pycache``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = pycache
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "planner")], env=env,
                   check=True, capture_output=True)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


CPU: dict[tuple[str, str], list[float]] = {}
MAIN_CPU: dict[tuple[str, str], list[float]] = {}


#: ``python -m planner ARGS`` that also prints its own process's CPU seconds on stderr last.
_RUN = """
import resource, runpy, sys
sys.argv = ["planner", *sys.argv[1:]]
try:
    runpy.run_module("planner", run_name="__main__", alter_sys=True)
finally:
    r = resource.getrusage(resource.RUSAGE_SELF)
    print(f"\\nmain-cpu {r.ru_utime + r.ru_stime}", file=sys.stderr)
"""


def report_once(tree: Path, cache: Path, out: Path, mode: str = "compiled",
                label: str = "after") -> float:
    """Wall seconds of one report; its CPU seconds (all processes) go to ``CPU[mode,
    label]``, the CPU seconds of its main process alone to ``MAIN_CPU[mode, label]`` (per
    tree)."""
    c, t = _children_cpu(), time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _RUN, "report", "example:quickstart", "-o", str(out), "-q"],
        cwd=tree, env=_env(tree, cache, mode), capture_output=True, text=True)
    wall = time.perf_counter() - t
    key = (str(tree), f"{mode}:{label}")
    CPU.setdefault(key, []).append(_children_cpu() - c)
    if proc.returncode != 0:
        raise SystemExit(f"planner report failed in {tree}:\n{proc.stderr}")
    MAIN_CPU.setdefault(key, []).append(
        float(proc.stderr.strip().splitlines()[-1].split()[-1]))
    return wall


def breakeven_once(tree: Path, cache: Path) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", _BREAKEVEN, str(tree / "planner/templates/quickstart.toml")],
        cwd=tree, env=_env(tree, cache, "compiled"), capture_output=True, text=True,
        check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def _stats(times: list[float], tree: Path, key: str) -> dict:
    k = (str(tree), key)
    return {"min_s": round(min(times), 3), "median_s": round(statistics.median(times), 3),
            "runs_s": [round(t, 3) for t in times],
            "cpu_min_s": round(min(CPU[k]), 3), "main_cpu_min_s": round(min(MAIN_CPU[k]), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline", type=Path, default=None)
    ap.add_argument("--modes", default="compiled,source",
                    help="bytecode modes, comma-separated: compiled, source")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        ap.error(f"--modes: expected a comma-separated subset of {', '.join(MODES)}")

    trees = {"current": ROOT}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    load_before = os.getloadavg()
    first: dict[tuple[str, str], float] = {}
    after: dict[tuple[str, str], list[float]] = {(t, m): [] for t in trees for m in modes}
    rendered: dict[tuple[str, str], list[float]] = {(t, m): [] for t in trees for m in modes}
    be: dict[str, list[float]] = {t: [] for t in trees}
    with tempfile.TemporaryDirectory(prefix="planner-bench-report-") as tmp:
        base = Path(tmp)

        def cache(name: str, mode: str) -> Path:
            return base / name / mode / "cache"

        for name, tree in trees.items():
            for mode in modes:
                cache(name, mode).mkdir(parents=True)
                PYCACHE[str(tree), mode] = None
                if mode == "compiled":
                    pycache = str(base / name / "pycache")
                    compile_tree(tree, pycache)
                    PYCACHE[str(tree), mode] = pycache
        for name, tree in trees.items():
            for mode in modes:
                first[name, mode] = report_once(tree, cache(name, mode),
                                                base / name / mode / "report", mode, "first")
        for _ in range(args.repeat):
            for name, tree in trees.items():
                for mode in modes:
                    c, out_dir = cache(name, mode), base / name / mode / "report"
                    after[name, mode].append(report_once(tree, c, out_dir, mode, "after"))
                    for sub in ("charts", "chart-specs"):  # charts built, rendered again
                        shutil.rmtree(c / sub, ignore_errors=True)
                    rendered[name, mode].append(report_once(tree, c, out_dir, mode,
                                                            "rendered"))
                be[name].append(breakeven_once(tree, cache(name, modes[0])))
        cached = sorted(p.name for p in cache("current", modes[0]).iterdir())
    load_after = os.getloadavg()

    out: dict = {
        "benchmark": "report",
        "command": "planner report example:quickstart -o DIR -q",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "repeat": args.repeat,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "target_after_first_s": TARGET_AFTER_FIRST_S,
        "targets_apply_to": "compiled",
        "modes": {m: MODES[m] for m in modes},
        "cache_files": cached,
    }
    for name, tree in trees.items():
        res: dict = {"tree": str(tree)}
        for mode in modes:
            r = res[mode] = {
                "first_run_s": round(first[name, mode], 3),
                "first_run_cpu_s": round(CPU[str(tree), f"{mode}:first"][0], 3),
                "after_first": _stats(after[name, mode], tree, f"{mode}:after"),
                "charts_rendered": _stats(rendered[name, mode], tree, f"{mode}:rendered"),
            }
            r["meets_target"] = r["after_first"]["min_s"] <= TARGET_AFTER_FIRST_S
        res["breakeven_min_s"] = round(min(be[name]), 4)
        res["breakeven_runs_s"] = [round(t, 4) for t in be[name]]
        out[name] = res
    if "baseline" in out:
        out["speedup_of_min"] = {
            m: {v: round(out["baseline"][m][v]["min_s"] / out["current"][m][v]["min_s"], 2)
                for v in ("after_first", "charts_rendered")} for m in modes}
        out["speedup_of_min"]["breakeven"] = round(
            out["baseline"]["breakeven_min_s"] / out["current"]["breakeven_min_s"], 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
