"""Benchmark of memory per simulated request and per Monte Carlo sample; prints one JSON object.

Each measurement runs in its own subprocess (a fresh interpreter, so one measurement's peak
cannot hide another's):

* ``sim``: the workload of ``bench_sim.py`` (one class on the ``consumer`` diurnal profile,
  Azure conversation lengths, one pool of 4 replicas of a linear step model) at ``--sim-requests``
  requests per day, simulated once with full per-request records and once with
  ``records="aggregate"``. The request table is generated first; ``rss_base`` is the resident
  set size after that. ``peak_bytes_per_request`` is (peak RSS - rss_base) / requests (the
  peak, ``ru_maxrss``, includes everything the run allocated at once: the engine's columns, its
  records, the result frames and their temporaries); ``retained_bytes_per_request`` is
  (RSS holding the result - rss_base) / requests after a ``gc.collect()``, and
  ``frame_bytes_per_request`` the pandas ``memory_usage(deep=True)`` of the requests frame.
* ``mc``: :func:`planner.engines.risk.run.run_montecarlo` on the bundled risk example (17
  uncertain inputs, 3 options) at ``--mc-samples`` samples, ``keep_samples`` on (the CLI's
  default); ``peak_rss_mb`` is the process's peak RSS (``ru_maxrss``, imports included) and
  ``peak_over_base_mb`` the peak minus the RSS after a warm-up run of 10,000 samples.

Run: python tests/benchmarks/bench_memory.py [--sim-requests 200000 1000000]
[--mc-samples 1000000 10000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_RSS = """
import os
def rss_bytes():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
def peak_bytes():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
"""

_SIM = _RSS + """
import gc, json, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from planner.arrivals import ArrivalClass, EmpiricalLength, generate_requests
from planner.sim import LinearStepModel, PoolSpec, SimPlan, simulate
from planner.traces import azure_trace
MODEL = LinearStepModel(prefill_base_s=0.004, prefill_s_per_token=6e-5, decode_base_s=0.007,
                        decode_s_per_seq=6e-5, decode_s_per_kv_token=2.5e-8,
                        kv_capacity_tokens=400_000, max_batch=256)
conv = azure_trace("conv")
chat = ArrivalClass("chat", {n}, input_tokens=EmpiricalLength(conv.input_tokens),
                    output_tokens=EmpiricalLength(np.maximum(conv.output_tokens, 1)),
                    profile="consumer")
reqs = generate_requests([chat], 24, np.random.default_rng(2024))
plan = SimPlan(pools=(PoolSpec("h100", MODEL, replicas=4, usd_per_replica_hour=3.0),))
del conv
gc.collect()
base = rss_bytes()
peak0 = peak_bytes()
t = time.perf_counter()
kw = {{"records": {records!r}}} if {records!r} != "full" else {{}}
res = simulate(plan, reqs, **kw)
wall = time.perf_counter() - t
gc.collect()
held = rss_bytes()
peak = peak_bytes()
n = len(reqs)
frame = None
if res.requests is not None:
    frame = int(res.requests.memory_usage(deep=True, index=True).sum())
print(json.dumps({{"requests": n, "records": {records!r}, "wall_s": round(wall, 3),
    "rss_base_mb": round(base / 2**20, 1), "peak_rss_mb": round(peak / 2**20, 1),
    "peak_bytes_per_request": round((peak - base) / n, 1),
    "peak_grew": peak > peak0,
    "retained_bytes_per_request": round((held - base) / n, 1),
    "frame_bytes_per_request": None if frame is None else round(frame / n, 1),
    "completed": int(res.totals()["completed"])}}))
"""

_MC = _RSS + """
import gc, json, sys, time, tomllib
from pathlib import Path
sys.path.insert(0, {root!r})
from planner.config import parse_scenario
from planner.engines.risk.run import run_montecarlo
from planner.uncertain import risk_tables
path = Path({root!r}) / "planner" / "templates" / "risk-example.toml"
rest, corr, _ = risk_tables(tomllib.loads(path.read_text(encoding="utf-8")))
sc = parse_scenario(rest, path=str(path))
run_montecarlo(sc, n=10_000, seed=1, correlations=corr)
gc.collect()
base = rss_bytes()
t = time.perf_counter()
res = run_montecarlo(sc, n={n}, seed=1, correlations=corr)
wall = time.perf_counter() - t
peak = peak_bytes()
s = res.summary
row = s[(s.metric == "usd_per_month")].iloc[0]
print(json.dumps({{"samples": {n}, "wall_s": round(wall, 3),
    "rss_base_mb": round(base / 2**20, 1), "peak_rss_mb": round(peak / 2**20, 1),
    "peak_over_base_mb": round((peak - base) / 2**20, 1),
    "peak_over_base_bytes_per_sample": round((peak - base) / {n}, 1),
    "options": len(res.win_probability),
    "first_option_p95": float(row["p95"])}}))
"""


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sim-requests", type=int, nargs="*", default=[200_000, 1_000_000])
    ap.add_argument("--mc-samples", type=int, nargs="*", default=[1_000_000, 10_000_000])
    ap.add_argument("--sim-records", nargs="*", default=["full", "aggregate"])
    args = ap.parse_args()
    sim = [_run(_SIM.format(root=str(ROOT), n=n, records=r))
           for n in args.sim_requests for r in args.sim_records]
    mc = [_run(_MC.format(root=str(ROOT), n=n)) for n in args.mc_samples]
    print(json.dumps({
        "sim": sim, "mc": mc,
        "targets": {"sim_retained_bytes_per_request": 150, "mc_peak_rss_mb_at_1e7": 1024},
    }))


if __name__ == "__main__":
    main()
