"""Benchmark of start-up: wall time of the quick commands; prints one JSON object.

Each command runs in a fresh interpreter (``python -m planner ...``, what a user waits for,
imports included): ``planner --help``, ``planner validate example:quickstart`` and
``planner cost example:quickstart``, ``--repeat`` times, interleaved (one of each in turn, so a
burst of load from other processes hits them alike). ``min_s`` is the least noisy figure on a
shared machine; ``median_s`` and every run are listed too, with the load average before and
after, and the child's CPU time (``cpu_min_s``: user + system, less sensitive to other
processes than the wall time, though not immune). Targets (issue 15): ``--help`` <= 0.15 s, ``validate`` and ``cost`` <= 0.5 s.

Bytecode: a user's ``pip install`` has planner's modules compiled (``__pycache__``), while a
development checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (as in this project's sandbox) or
an editable install without write access compiles every planner module from source on every
run (~0.1 s of CPU). Both are measured:

* ``compiled`` -- the children get an empty bytecode cache directory of their own
  (``PYTHONPYCACHEPREFIX``, so the tree is not written to) into which the tree's ``planner``
  package is compiled once (``compileall``) before timing, and which the warm-up run fills
  with the third-party modules: what an installed planner does. The targets apply to this
  mode.
* ``source`` -- ``PYTHONDONTWRITEBYTECODE=1`` and no cache directory: planner compiled on
  every run, third-party packages read from their installed bytecode (``tree_has_pycache``
  in the JSON says whether a stray ``__pycache__`` of the tree may have been read instead).

``--baseline DIR`` runs the same commands against another source tree (e.g.
``git archive main | tar -x -C /tmp/base``) interleaved with this one, for a before/after on
the same load. ``--importtime`` adds the slowest imports of each command (``-X importtime``,
compiled mode). ``--modes`` picks the bytecode modes (default both).

Run: python tests/benchmarks/bench_startup.py [--repeat 7] [--baseline DIR] [--importtime]
     [--modes compiled,source]
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
MODES = {
    "compiled": "planner's modules compiled to bytecode once before timing (as installed)",
    "source": "PYTHONDONTWRITEBYTECODE=1, empty bytecode cache: planner compiled on every run",
}


def _env(tree: Path, cache: str, pycache: str, mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    env["PYTHONPATH"] = str(tree)
    env["PLANNER_CACHE_DIR"] = cache
    if mode == "source":
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


def run_once(tree: Path, argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the child)."""
    c, t = _children_cpu(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "planner", *argv], cwd=tree,
                          env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t, _children_cpu() - c
    if proc.returncode != 0:
        raise SystemExit(f"planner {' '.join(argv)} failed in {tree}:\n{proc.stderr}")
    return wall, cpu


def importtime(tree: Path, argv: list[str], env: dict[str, str], top: int = 8) -> list[dict]:
    """The ``top`` slowest imports (cumulative, top-level packages) of one run."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "planner", *argv],
                          cwd=tree, env=env, capture_output=True, text=True)
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
    times: dict[str, dict[str, dict[str, list[tuple[float, float]]]]] = {
        t: {m: {c: [] for c in COMMANDS} for m in modes} for t in trees}
    with tempfile.TemporaryDirectory(prefix="planner-bench-") as tmp:
        cache = os.path.join(tmp, "planner-cache")
        envs: dict[tuple[str, str], dict[str, str]] = {}
        for name, tree in trees.items():
            for mode in modes:
                pycache = os.path.join(tmp, f"pycache-{name}-{mode}")
                os.makedirs(pycache)
                if mode == "compiled":
                    compile_tree(tree, pycache)
                envs[name, mode] = _env(tree, cache, pycache, mode)
                for argv in COMMANDS.values():  # warm the OS file cache once
                    run_once(tree, argv, envs[name, mode])
        for _ in range(args.repeat):
            for cmd, argv in COMMANDS.items():
                for mode in modes:
                    for name, tree in trees.items():
                        times[name][mode][cmd].append(run_once(tree, argv, envs[name, mode]))
        load_after = os.getloadavg()
        out: dict = {
            "benchmark": "startup",
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "repeat": args.repeat,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "load_average_1min_before": round(load_before[0], 2),
            "load_average_1min_after": round(load_after[0], 2),
            "targets_s": TARGETS_S,
            "targets_apply_to": "compiled",
            "modes": {m: MODES[m] for m in modes},
        }
        for name, tree in trees.items():
            res: dict = {"tree": str(tree), "tree_has_pycache": any(
                (tree / "planner").rglob("__pycache__"))}
            for mode in modes:
                res[mode] = {}
                for cmd, argv in COMMANDS.items():
                    r = res[mode][cmd] = summary(times[name][mode][cmd])
                    r["meets_target"] = r["min_s"] <= TARGETS_S[cmd]
                    if args.importtime and mode == "compiled":
                        r["slowest_imports"] = importtime(tree, argv, envs[name, mode])
            out[name] = res
        if "baseline" in out:
            out["speedup_of_min"] = {
                m: {c: round(out["baseline"][m][c]["min_s"] / out["current"][m][c]["min_s"], 2)
                    for c in COMMANDS} for m in modes}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
