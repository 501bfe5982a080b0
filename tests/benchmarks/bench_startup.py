"""Benchmark of start-up: wall time of the quick commands; prints one JSON object.

Each command runs in a fresh interpreter (``python -m planner ...``, what a user waits for,
imports included): ``planner --help``, ``planner validate example:quickstart`` and
``planner cost example:quickstart``, ``--repeat`` times, interleaved (one of each in turn, so a
burst of load from other processes hits them alike). ``min_s`` is the least noisy figure on a
shared machine; ``median_s`` and every run are listed too, with the load average before and
after, and the child's CPU time (``cpu_min_s``: user + system, less sensitive to other
processes than the wall time, though not immune). Targets (issue 15): ``--help`` <= 0.15 s, ``validate`` and ``cost`` <= 0.5 s.

``--baseline DIR`` runs the same commands against another source tree (e.g.
``git archive main | tar -x -C /tmp/base``) interleaved with this one, for a before/after on
the same load. ``--importtime`` adds the slowest imports of each command (``-X importtime``).

Run: python tests/benchmarks/bench_startup.py [--repeat 7] [--baseline DIR] [--importtime]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

COMMANDS = {
    "help": ["--help"],
    "validate": ["validate", "example:quickstart"],
    "cost": ["cost", "example:quickstart"],
}
TARGETS_S = {"help": 0.15, "validate": 0.5, "cost": 0.5}


def _env(tree: Path, cache: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tree)
    env["PLANNER_CACHE_DIR"] = cache
    return env


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_once(tree: Path, argv: list[str], cache: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the child)."""
    c, t = _children_cpu(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "planner", *argv], cwd=tree,
                          env=_env(tree, cache), capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t, _children_cpu() - c
    if proc.returncode != 0:
        raise SystemExit(f"planner {' '.join(argv)} failed in {tree}:\n{proc.stderr}")
    return wall, cpu


def importtime(tree: Path, argv: list[str], cache: str, top: int = 8) -> list[dict]:
    """The ``top`` slowest imports (cumulative, top-level packages) of one run."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "planner", *argv],
                          cwd=tree, env=_env(tree, cache), capture_output=True, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cum, name = line.split("|")
        if name.startswith("  ") or not cum.strip().isdigit():
            continue  # nested
        rows.append({"module": name.strip(), "cumulative_s": int(cum) / 1e6})
    rows.sort(key=lambda r: -r["cumulative_s"])
    return rows[:top]


def summary(runs: list[tuple[float, float]]) -> dict:
    times, cpus = [w for w, _ in runs], [c for _, c in runs]
    return {"min_s": round(min(times), 4), "median_s": round(statistics.median(times), 4),
            "runs_s": [round(t, 4) for t in times],
            "cpu_min_s": round(min(cpus), 4), "cpu_median_s": round(statistics.median(cpus), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another source tree to time interleaved with this one")
    ap.add_argument("--importtime", action="store_true")
    args = ap.parse_args()

    trees = {"current": ROOT}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    load_before = os.getloadavg()[0]
    times: dict[str, dict[str, list[tuple[float, float]]]] = {
        t: {c: [] for c in COMMANDS} for t in trees}
    with tempfile.TemporaryDirectory(prefix="planner-bench-cache-") as cache:
        for tree in trees.values():  # warm the OS file cache and __pycache__ once
            for argv in COMMANDS.values():
                run_once(tree, argv, cache)
        for _ in range(args.repeat):
            for cmd, argv in COMMANDS.items():
                for name, tree in trees.items():
                    times[name][cmd].append(run_once(tree, argv, cache))
        out: dict = {
            "benchmark": "startup",
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "repeat": args.repeat,
            "load_average_1min_before": round(load_before, 2),
            "load_average_1min_after": round(os.getloadavg()[0], 2),
            "targets_s": TARGETS_S,
        }
        for name, tree in trees.items():
            res = {}
            for cmd, argv in COMMANDS.items():
                res[cmd] = summary(times[name][cmd])
                res[cmd]["meets_target"] = res[cmd]["min_s"] <= TARGETS_S[cmd]
                if args.importtime:
                    res[cmd]["slowest_imports"] = importtime(tree, argv, cache)
            out[name] = {"tree": str(tree), **res}
        if "baseline" in out:
            out["speedup_of_min"] = {
                c: round(out["baseline"][c]["min_s"] / out["current"][c]["min_s"], 2)
                for c in COMMANDS}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
