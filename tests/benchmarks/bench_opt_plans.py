"""Optimiser benchmark with hourly rentals: prints one JSON object.

The instances of ``bench_opt.py`` (day: 24 hours, week: 168 hours; 18 options, 5 classes,
quality and provider-share limits, 1% gap) with the on-demand and spot clouds billed
``scale-to-zero`` (rented hour by hour), solved

- ``free``: start-ups free (``startup_usd_per_replica = 0``: the hours are independent, the
  optimiser before start-up costs);
- ``default``: the runnable-plan defaults (start-ups priced at the deployment's start-up time,
  120 s, x its USD/hour; one replica while serving);
- ``rules``: also ``min_run_hours = 3`` and ``max_change_per_hour = 4``.

Each entry: solve time (whole ``solve_milp`` call, wall clock), status, gap, objective,
starts per profile period, hourly GPU-type switches (hours where one hourly option starts
blocks while another stops blocks of the same model), and the re-check.

Run: python tests/benchmarks/bench_opt_plans.py [day|week]
"""

from __future__ import annotations

import json
import sys
import time
import tomllib

import numpy as np
from bench_opt import scenario_text

from planner.catalog import load_catalog
from planner.config import parse_scenario
from planner.engines.optimize_data import OptimizeOptions, build_problem
from planner.engines.optimize_milp import build_milp, check_plan, decode, plan_starts, solve_milp

SETTINGS = {
    "free": {"startup_usd_per_replica": 0.0},
    "default": {},
    "rules": {"min_run_hours": 3, "max_change_per_hour": 4},
}


def hourly_text(week: bool) -> str:
    out = []
    for line in scenario_text(week).splitlines():
        out.append(line)
        if line.startswith("[cloud.") and not any(k in line for k in ("-1y", "-3y")):
            out.append('billing = "scale-to-zero"')
    return "\n".join(out)


def switches(pb, plan) -> int:
    """Hours where an hourly option starts blocks while another of the same model stops."""
    b = plan.blocks[0]
    d = b - np.roll(b, 1, axis=-1)
    n = 0
    hourly = [j for j, o in enumerate(plan.options) if pb.options[o].stage == "hourly"]
    for h in range(b.shape[-1]):
        for i in hourly:
            for j in hourly:
                if i != j and pb.options[plan.options[i]].model == \
                        pb.options[plan.options[j]].model and d[i, h] > 0 and d[j, h] < 0:
                    n += 1
    return n


def run(week: bool, cat, name: str) -> dict:
    sc = parse_scenario(tomllib.loads(hourly_text(week)), catalog=cat)
    pb = build_problem(sc, cat, OptimizeOptions.from_scenario(sc, **SETTINGS[name]))
    m = build_milp(pb)
    t0 = time.perf_counter()
    info = solve_milp(m, gap=0.01, time_limit_s=120.0)
    dt = time.perf_counter() - t0
    plan = decode(m, info.x)
    return {
        "solve_s": round(dt, 3), "status": info.status, "gap": info.gap,
        "source": info.source, "objective": info.objective,
        "rows": m.shape[0], "cols": m.shape[1], "integers": int((m.integrality > 0).sum()),
        "starts_per_period": float(plan_starts(pb, plan).sum()),
        "type_switches": switches(pb, plan),
        "check_passed": check_plan(pb, plan, objective=info.objective, milp_=m).passed,
    }


def main() -> None:
    cat = load_catalog()
    which = sys.argv[1:] or ["day", "week"]
    out = {}
    for w in which:
        for name in SETTINGS:
            out[f"{w}_{name}"] = run(w == "week", cat, name)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
