"""Benchmark: ``planner simulate`` of several candidate plans, one after another vs on worker
processes (``--workers 1`` vs ``--workers N``).

Scenario: the bundled quickstart (support chat on the ``business`` profile plus nightly
summaries) with a fourth self-hosted candidate, the 70B H100 deployment on the spot plan, so
four plans are simulated (``--candidates 2..4`` keeps the first ones), each over ``--hours``
hours at ``--requests-per-day`` chat requests (the summaries stay at the quickstart's). Each
repeat runs the serial and the parallel command back to back (order alternating), as
subprocesses of this script, and records per run:

* ``wall_s``: wall time of the whole command (start-up, the worker processes' start and
  imports, simulation, output);
* ``cpu_s``: user + system CPU time of the command and every process it started (the worker
  processes included), from ``getrusage(RUSAGE_CHILDREN)``;
* ``cores_used``: ``cpu_s / wall_s``, the cores the command actually got (a parallel run on
  2 cores that gets ~1.1 was competing with other work);
* ``idle_cores_before``: idle cores over the second before the run (``/proc/stat``; Linux).
  ``--wait-idle C`` waits (at most ``--wait-max-s``) until at least ``C`` cores are idle
  before each run, for figures that are not mostly the other processes' load.

``speedup`` is the best serial wall time over the best parallel one; ``identical`` says the
two commands printed the same tables (byte for byte). ``loadavg_1min`` (before, after) tells
how busy the machine was: on a shared machine the parallel run competes for the cores and
the figures move with the load. Prints one JSON object.

Usage: ``python tests/benchmarks/bench_parallel.py [--workers 2] [--repeat 1]
[--requests-per-day 500000] [--hours 24] [--candidates 4] [--wait-idle 1.8]
[--wait-max-s 120]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from planner.api import scenario_path

FOURTH = """
[cloud.llama-70b-h100-spot]
model = "llama-3.1-70b"
tokenizer = "cl100k"
accelerator = "h100-sxm"
gpus_per_replica = 2
precision = "fp8"
plan = "spot"
"""
CANDIDATES = ["llama-70b-h100", "llama-8b-h100", "llama-70b-hgx", "llama-70b-h100-spot"]


def _run(cmd: list[str]) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out


def _cpu_times() -> tuple[float, float] | None:
    """(idle, total) jiffies of all cores from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            vals = [float(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    return vals[3] + vals[4], sum(vals[:8])  # idle + iowait; user..steal


def _idle_cores(seconds: float = 1.0) -> float | None:
    """Idle cores over ``seconds`` (0 to the core count)."""
    a = _cpu_times()
    time.sleep(seconds)
    b = _cpu_times()
    if a is None or b is None or b[1] <= a[1]:
        return None
    return (b[0] - a[0]) / (b[1] - a[1]) * (os.cpu_count() or 1)


def _wait_idle(cores: float, max_s: float) -> float | None:
    """Sample the idle cores until at least ``cores`` are idle or ``max_s`` have passed."""
    t0 = time.perf_counter()
    while True:
        idle = _idle_cores()
        if idle is None or idle >= cores or time.perf_counter() - t0 >= max_s:
            return idle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--requests-per-day", type=float, default=500_000)
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--candidates", type=int, default=4, choices=[2, 3, 4])
    ap.add_argument("--wait-idle", type=float, default=0.0,
                    help="idle cores to wait for before each run (default: do not wait)")
    ap.add_argument("--wait-max-s", type=float, default=120.0)
    a = ap.parse_args()

    text = Path(scenario_path("example:quickstart")).read_text(encoding="utf-8") + FOURTH
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "four-candidates.toml"
        path.write_text(text, encoding="utf-8")
        base = [sys.executable, "-m", "planner.cli", "simulate", str(path), "--hours",
                str(a.hours), "--set", f"workload.chat.requests_per_day={a.requests_per_day:g}",
                "--format", "csv", "-q"]
        keep = CANDIDATES[: a.candidates]
        drop = [d for d in CANDIDATES if d not in keep]
        if drop:  # fewer candidates: the others leave the scenario
            lines, skip = [], False
            for line in text.splitlines():
                if line.startswith("["):
                    skip = any(line.strip() in (f"[cloud.{d}]", f"[onprem.{d}]") for d in drop)
                if not skip:
                    lines.append(line)
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        load0 = os.getloadavg()[0]
        runs: dict[str, list[tuple[float, float]]] = {"serial": [], "parallel": []}
        idle: dict[str, list[float | None]] = {"serial": [], "parallel": []}
        outputs: dict[str, str] = {}
        for r in range(a.repeat):
            order = ["serial", "parallel"] if r % 2 == 0 else ["parallel", "serial"]
            for kind in order:
                workers = 1 if kind == "serial" else a.workers
                idle[kind].append(_wait_idle(a.wait_idle, a.wait_max_s))
                wall, cpu, out = _run([*base, "--workers", str(workers)])
                runs[kind].append((wall, cpu))
                outputs.setdefault(kind, out)
        load1 = os.getloadavg()[0]
    best = {k: min(v) for k, v in runs.items()}
    print(json.dumps({
        "scenario": f"quickstart + spot 70B candidate, first {a.candidates} candidates",
        "candidates": keep,
        "hours": a.hours,
        "chat_requests_per_day": a.requests_per_day,
        "workers": a.workers,
        "cores": os.cpu_count(),
        "repeat": a.repeat,
        **{kind: {"wall_s": [round(w, 3) for w, _ in runs[kind]],
                  "cpu_s": [round(c, 3) for _, c in runs[kind]],
                  "cores_used": [round(c / w, 2) for w, c in runs[kind]],
                  "idle_cores_before": [None if i is None else round(i, 2)
                                        for i in idle[kind]]}
           for kind in ("serial", "parallel")},
        "speedup": round(best["serial"][0] / best["parallel"][0], 3),
        "cpu_ratio_parallel_over_serial": round(best["parallel"][1] / best["serial"][1], 3),
        "identical": outputs["serial"] == outputs["parallel"],
        "loadavg_1min": [round(load0, 2), round(load1, 2)],
    }, indent=2))


if __name__ == "__main__":
    main()
