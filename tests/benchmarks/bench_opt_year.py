"""Year-long optimiser benchmark: prints one JSON object.

The week instance of ``bench_opt.py`` (168-hour profiles x 18 deployment options x 5
classes, quality and provider-share limits) planned over 8,760 hours: the week repeated
from 1 January, monthly factors (summer low, December peak) and a 30%/year traffic ramp
(``[optimize] horizon_hours = 8760``, ``monthly_factors``, ``year_growth``), solved on
typical days (:mod:`planner.engines.optimize_year`) at a 1% target gap within 90 s.

Reported: wall time of what ``optimize`` does for a long horizon (pricing, aggregation, the
typical-day MILP, the full-year re-check and re-pricing, the mean-day bound, the day-by-day
re-solve of the hours; ``price_s`` / ``solve_s`` split it at the pricing, with CPU times
beside: on this shared 2-core machine the wall time grows with the load average, also
reported), peak resident memory of the process (``resource.getrusage``, includes the imports
and the catalog), the gap between the full-year re-priced cost of the returned plan and the
proven lower bound on the full-year optimum (the mean-day bound, see
:mod:`planner.engines.optimize_year`), the aggregation error of the hourly load (apart), the
full-year re-check, and one row per typical-day round (laid-out and day-by-day costs, the
bounds, seconds of each step). Target (issue 15): <= 90 s and <= 2 GB at <= 1% proven gap.

``hourly``: the same with the on-demand and spot clouds billed ``scale-to-zero`` (rented hour
by hour, start-ups priced; ``bench_opt_plans.py``'s instance), where the typical-day hourly
counts are solved as a fluid, and the whole counts of every hour come from the day-by-day
pass.

``HOURS`` (second argument, default 8760): the horizon; ``720`` is the 720-hour (30-day,
January) instance of issue 15 (target <= 10 s), with the same monthly factors and ramp.

Run: python tests/benchmarks/bench_opt_year.py [fixed|hourly] [HOURS]
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_opt import scenario_text  # noqa: E402
from bench_opt_plans import hourly_text  # noqa: E402

from planner.catalog import load_catalog  # noqa: E402
from planner.config import parse_scenario  # noqa: E402
from planner.engines.optimize import OptimizeOptions, optimize_long  # noqa: E402
from planner.engines.optimize_data import build_problem  # noqa: E402

MONTHLY = (1.1, 1.0, 1.0, 0.95, 0.9, 0.85, 0.8, 0.8, 0.95, 1.05, 1.15, 1.3)
YEAR = (
    "horizon_hours = {hours}\n"
    f"monthly_factors = [{', '.join(f'{f:g}' for f in MONTHLY)}]\n"
    "year_growth = true\n"
    "time_limit_s = 90\n"
    "[trends]\ntraffic_growth_per_year = 0.3\n"
)


def main() -> None:
    cat = load_catalog()
    which = sys.argv[1] if len(sys.argv) > 1 else "fixed"
    hours = int(sys.argv[2]) if len(sys.argv) > 2 else 8760
    if which not in ("fixed", "hourly"):
        raise SystemExit("usage: bench_opt_year.py [fixed|hourly] [HOURS]")
    text = scenario_text(True) if which == "fixed" else hourly_text(True) + "\n"
    sc = parse_scenario(tomllib.loads(text + YEAR.format(hours=hours)), catalog=cat)
    opts = OptimizeOptions.from_scenario(sc)
    t0 = time.perf_counter()
    c0 = time.process_time()
    pb = build_problem(sc, cat, opts)  # what optimize() does first: pricing
    t1, c1 = time.perf_counter(), time.process_time()
    res = optimize_long(pb, opts, gap=0.01, time_limit_s=opts.time_limit_s)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    agg = dict(zip(res.aggregation["metric"], res.aggregation["value"], strict=True))
    print(json.dumps({
        "instance": which, "year_solve_s": round(wall, 3), "year_cpu_s": round(cpu, 3),
        "price_s": round(t1 - t0, 3), "price_cpu_s": round(c1 - c0, 3),
        "solve_s": round(time.perf_counter() - t1, 3), "solve_cpu_s": round(cpu - (c1 - c0), 3),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "peak_memory_mb": round(peak_mb, 1), "status": res.status, "gap": res.gap,
        "objective_usd_per_month": res.objective_usd_per_month,
        "lower_bound_usd_per_month": res.lp_bound, "check_passed": res.check.passed,
        "constraints_checked": res.check.n_checked, "hours": res.problem.periods,
        "aggregation": {k: (v.item() if hasattr(v, "item") else v) for k, v in agg.items()},
        "rounds": res.year.to_dict(orient="records"),
    }, default=float))


if __name__ == "__main__":
    main()
