"""Optimiser benchmark: prints one JSON object.

- day: 24 hours x 18 deployment options (5 APIs, 6 on-demand/spot clouds, 3 reserved, 4
  on-prem) x 5 workload classes, with quality and provider-share limits, at a 1% gap
  (target <= 3 s);
- week: the same with 168-hour profiles (five identical weekdays, the weekend at 0.45 of a
  weekday; target <= 3 s);
- week_distinct: the same with every day of the week different (168 distinct hours);
- lp_bound_s: the LP relaxation of the day problem.

Times are the whole ``solve_milp`` call, wall clock (problem pricing and matrix build, and the
solve's CPU time, reported apart in the "day" / "week" details and as ``*_solve_cpu_s``: on
a shared machine compare CPU time). ``solve_milp`` tries HiGHS on the whole problem for
``QUICK_SOLVE_NODES`` branch-and-bound nodes (a bound on work: the plan does not depend on
the machine's load), then branches on the first stage (servers, reserved
blocks) with the hourly problems solved as independent parts; "source" and "message" in the
details say which way the plan was found. The gap is against a proven bound either way, and
every plan is re-checked (``check_passed``).

Run: python tests/benchmarks/bench_opt.py
"""

from __future__ import annotations

import json
import os
import time
import tomllib

import numpy as np

from planner.catalog import load_catalog
from planner.config import parse_scenario
from planner.engines.optimize_data import OptimizeOptions, build_problem
from planner.engines.optimize_milp import build_milp, check_plan, decode, solve_milp
from planner.workload import PROFILES

CLASSES = {
    # name: (requests/day, profile, input, output, ttft_s, tpot_s, min quality)
    "chat": (3_000_000, "consumer", 1500, 200, 2.0, 0.1, 80),
    "search": (2_000_000, "business", 800, 100, 1.0, 0.05, 70),
    "summarise": (300_000, "business", 4000, 300, 10.0, 0.2, 75),
    "code": (500_000, "business", 2500, 400, 3.0, 0.08, 82),
    "classify": (5_000_000, "global", 300, 5, 1.0, 0.1, 65),
}

DEPLOYMENTS = """
[api.gpt-4o]
offering = "openai/gpt-4o"
[api.gpt-4o-mini]
offering = "openai/gpt-4o-mini"
tpm_limit = 150000000
[api.haiku]
offering = "anthropic/claude-haiku-4-5"
[api.flash]
offering = "google/gemini-2.5-flash"
[api.ds]
offering = "deepseek/deepseek-v3"

[cloud.l8-h100]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
precision = "fp8"
[cloud.l8-a100]
model = "llama-3.1-8b"
offering = "runpod/a100-80gb-sxm-on-demand"
[cloud.l8-a100-spot]
model = "llama-3.1-8b"
offering = "runpod/a100-80gb-pcie-spot"
[cloud.l70-h100]
model = "llama-3.1-70b"
accelerator = "h100-sxm"
gpus_per_replica = 2
precision = "fp8"
[cloud.q72-h100]
model = "qwen2.5-72b"
accelerator = "h100-sxm"
gpus_per_replica = 2
precision = "fp8"
[cloud.l70-p5-spot]
model = "llama-3.1-70b"
offering = "aws/p5.48xlarge-spot"
gpus_per_replica = 2
precision = "fp8"
[cloud.l70-p5-1y]
model = "llama-3.1-70b"
offering = "aws/p5.48xlarge-reserved-1y"
gpus_per_replica = 2
precision = "fp8"
[cloud.l8-p5-3y]
model = "llama-3.1-8b"
offering = "aws/p5.48xlarge-reserved-3y"
precision = "fp8"
[cloud.l8-p4d-1y]
model = "llama-3.1-8b"
offering = "aws/p4d.24xlarge-reserved-1y"
[onprem.l70-hgx]
model = "llama-3.1-70b"
server = "hgx-h100"
gpus_per_replica = 2
precision = "fp8"
amortisation_years = 4
ops_usd_per_year = 60000
[onprem.l8-dgx]
model = "llama-3.1-8b"
server = "dgx-h100"
precision = "fp8"
amortisation_years = 4
[onprem.q72-dgx]
model = "qwen2.5-72b"
server = "dgx-h100"
gpus_per_replica = 4
precision = "fp8"
amortisation_years = 4
[onprem.l70-b200]
model = "llama-3.1-70b"
server = "dgx-b200"
gpus_per_replica = 1
precision = "fp8"
amortisation_years = 4
"""


#: Day factors of the week instance (five identical weekdays: 48 distinct hours, which
#: ``solve_milp`` solves once each) and of ``week_distinct`` (every day different: 168).
WEEK_DAYS = (1.0, 1.0, 1.0, 1.0, 1.0, 0.45, 0.45)
DISTINCT_DAYS = (1.0, 0.97, 0.94, 0.99, 0.91, 0.5, 0.45)


def scenario_text(week: bool, days: tuple[float, ...] = WEEK_DAYS) -> str:
    out = ['[scenario]\nname = "bench"\nhorizon_months = 36\n']
    for name, (rpd, prof, i, o, ttft, tpot, q) in CLASSES.items():
        if week:
            day = np.asarray(PROFILES[prof], float)
            weights = np.concatenate([day * days[d] for d in range(7)])
            diurnal = "[" + ", ".join(f"{w:.4f}" for w in weights) + "]"
            rpd_ = rpd * 7
        else:
            diurnal, rpd_ = f'"{prof}"', rpd
        out.append(
            f"[workload.{name}]\nrequests_per_day = {rpd_}\ndiurnal = {diurnal}\n"
            f"input = {i}\noutput = {o}\nmin_quality = {q}\n"
            f"slo = {{ ttft_s = {ttft}, tpot_s = {tpot} }}\n"
        )
    out.append(DEPLOYMENTS)
    out.append("[planning]\nutilisation_target = 0.8\n")
    out.append("[optimize]\nmax_share_per_provider = 0.6\n")
    return "\n".join(out)


def run(week: bool, cat, days: tuple[float, ...] = WEEK_DAYS) -> dict:
    sc = parse_scenario(tomllib.loads(scenario_text(week, days)), catalog=cat)
    t0 = time.perf_counter()
    pb = build_problem(sc, cat, OptimizeOptions.from_scenario(sc))
    t1 = time.perf_counter()
    m = build_milp(pb)
    t2 = time.perf_counter()
    c0 = time.process_time()
    info = solve_milp(m, gap=0.01, time_limit_s=120.0)
    cpu = time.process_time() - c0
    lp = solve_milp(m, relax=True, time_limit_s=120.0)
    plan = decode(m, info.x)
    ok = check_plan(pb, plan, objective=info.objective, milp_=m).passed
    return {
        "price_s": t1 - t0, "build_s": t2 - t1, "solve_s": info.time_s, "solve_cpu_s": cpu,
        "gap": info.gap, "dual_bound": info.dual_bound, "source": info.source,
        "message": info.message, "status": info.status, "lp_s": lp.time_s,
        "objective": info.objective, "lp_bound": lp.objective, "rows": m.shape[0], "cols": m.shape[1],
        "integers": int((m.integrality > 0).sum()), "options": len(pb.options),
        "classes": len(pb.classes), "periods": pb.periods, "check_passed": ok,
    }


def main() -> None:
    cat = load_catalog()
    day = run(False, cat)
    week = run(True, cat)
    distinct = run(True, cat, DISTINCT_DAYS)
    print(json.dumps({
        "day_solve_s": round(day["solve_s"], 3), "day_gap": day["gap"],
        "week_solve_s": round(week["solve_s"], 3), "week_gap": week["gap"],
        "day_solve_cpu_s": round(day["solve_cpu_s"], 3),
        "week_solve_cpu_s": round(week["solve_cpu_s"], 3),
        "week_distinct_solve_cpu_s": round(distinct["solve_cpu_s"], 3),
        "week_distinct_solve_s": round(distinct["solve_s"], 3),
        "week_distinct_gap": distinct["gap"],
        "lp_bound_s": round(day["lp_s"], 3),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "day": day, "week": week, "week_distinct": distinct,
    }))


if __name__ == "__main__":
    main()
