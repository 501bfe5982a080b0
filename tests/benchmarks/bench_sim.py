"""Benchmark: request-level simulation of a day at ~1,000,000 requests.

Workload: one class, 1,000,000 requests per day on the ``consumer`` diurnal profile
(Poisson arrivals), prompt and output lengths resampled from the shipped Azure LLM
conversation trace (mean ~1,155 in / ~211 out tokens). Deployment: one pool of 4 replicas
with a linear step model standing in for Llama-3.1-8B on one H100 (prefill ~16,700
tokens/s, decode step 7 ms + 60 us per sequence + 25 ns per cached token, 400,000 KV tokens,
batch cap 256), shared FCFS queue, prefill-prioritised (not chunked).

The ``chunked`` entry repeats the measurements on the same pool with chunked prefill
(``chunked_prefill=True``, 8,192 tokens per step; the mixed step of the linear model is
``decode + 6e-5 x prompt tokens``), and ``chunked_wall_ratio`` is its whole-day wall time
over the non-chunked one.

Reports the best of ``--repeat`` runs of :func:`planner.sim.simulate` (records and frames
included) over the whole day, in wall seconds and in CPU seconds of this process (``cpu_s``,
``requests_per_cpu_s``: on a shared machine the wall time grows with the load,
``load_avg_1m``, the CPU time much less), and ``reference_speedup``: wall time of the per-iteration
reference mode / closed-form mode (best of ``--repeat`` each) on the busiest hour of the same day (the two modes'
per-request times agree to ``reference_max_abs_diff_s``). ``simpy_timeouts_per_s`` (bare
SimPy timeouts per second, measured at the end) tells how fast the machine was: on a shared
machine the figures move together with it. Prints one JSON object.

Usage: ``python tests/benchmarks/bench_sim.py [--repeat 2] [--requests-per-day 1000000]``
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from planner.arrivals import ArrivalClass, EmpiricalLength, generate_requests
from planner.sim import LinearStepModel, PoolSpec, RequestTable, SimPlan, simulate
from planner.traces import azure_trace

MODEL = LinearStepModel(
    prefill_base_s=0.004,
    prefill_s_per_token=6e-5,
    decode_base_s=0.007,
    decode_s_per_seq=6e-5,
    decode_s_per_kv_token=2.5e-8,
    kv_capacity_tokens=400_000,
    max_batch=256,
)
REPLICAS = 4


def _plan(mode: str, chunked: bool = False) -> SimPlan:
    pool = PoolSpec("h100", MODEL, replicas=REPLICAS, usd_per_replica_hour=3.0,
                    chunked_prefill=chunked, max_tokens_per_step=8192 if chunked else None)
    return SimPlan(pools=(pool,), mode=mode)


def _window(reqs: RequestTable, t0: float, t1: float) -> RequestTable:
    m = (reqs.arrival_s >= t0) & (reqs.arrival_s < t1)
    return RequestTable(
        reqs.arrival_s[m] - t0,
        reqs.class_idx[m],
        reqs.class_names,
        reqs.input_tokens[m],
        reqs.output_tokens[m],
        reqs.cached_input_tokens[m],
    )


def _simpy_timeouts_per_s(n: int = 300_000) -> float:
    """Machine-speed reference: bare SimPy timeouts per second (a process yielding them)."""
    import simpy

    env = simpy.Environment()

    def proc(env):
        for _ in range(n):
            yield env.timeout(0.1)

    env.process(proc(env))
    t = time.perf_counter()
    env.run()
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--requests-per-day", type=float, default=1_000_000)
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()

    conv = azure_trace("conv")
    chat = ArrivalClass(
        "chat",
        args.requests_per_day,
        input_tokens=EmpiricalLength(conv.input_tokens),
        output_tokens=EmpiricalLength(np.maximum(conv.output_tokens, 1)),
        profile="consumer",
    )
    hours = 24
    reqs = generate_requests([chat], hours, np.random.default_rng(args.seed))

    out = _measure(reqs, hours, args.repeat, chunked=False)
    out["chunked"] = _measure(reqs, hours, args.repeat, chunked=True)
    out["chunked_wall_ratio"] = round(out["chunked"]["wall_s"] / out["wall_s"], 2)
    out["simpy_timeouts_per_s"] = round(_simpy_timeouts_per_s())
    print(json.dumps(out))


def _measure(reqs: RequestTable, hours: int, repeat: int, *, chunked: bool) -> dict:
    best = best_cpu = np.inf
    res = None
    for _ in range(max(repeat, 1)):
        t = time.perf_counter()
        c = time.process_time()
        res = simulate(_plan("closed_form", chunked), reqs)
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)

    # reference mode on the busiest hour
    counts = np.bincount((reqs.arrival_s // 3600).astype(np.int64))
    k = int(np.argmax(counts))
    short = _window(reqs, 3600.0 * k, 3600.0 * (k + 1))
    fast_s = ref_s = np.inf
    for _ in range(max(repeat, 1)):
        t = time.perf_counter()
        fast = simulate(_plan("closed_form", chunked), short)
        fast_s = min(fast_s, time.perf_counter() - t)
        t = time.perf_counter()
        ref = simulate(_plan("reference", chunked), short)
        ref_s = min(ref_s, time.perf_counter() - t)
    diff = max(
        float(np.nanmax(np.abs(fast.requests[c].to_numpy() - ref.requests[c].to_numpy())))
        for c in ("start_s", "first_token_s", "finish_s")
    )

    df = res.requests
    return {
        "requests": len(reqs),
        "wall_s": round(best, 3),
        "requests_per_wall_s": round(len(reqs) / best),
        "cpu_s": round(best_cpu, 3),
        "requests_per_cpu_s": round(len(reqs) / best_cpu),
        "load_avg_1m": os.getloadavg()[0],
        "sim_s_per_wall_s": round(hours * 3600.0 / best),
        "reference_speedup": round(ref_s / fast_s, 1),
        "reference_requests": len(short),
        "reference_wall_s": round(ref_s, 3),
        "reference_closed_form_wall_s": round(fast_s, 3),
        "reference_max_abs_diff_s": diff,
        "replicas": REPLICAS,
        "completed": int((df.status == "completed").sum()),
        "ttft_p99_s": round(float(df.ttft_s.quantile(0.99)), 4),
        "tpot_p50_s": round(float(df.tpot_s.quantile(0.5)), 5),
        "mean_busy_share": round(float(res.utilisation.busy_share.mean()), 3),
    }


if __name__ == "__main__":
    main()
