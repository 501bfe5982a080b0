"""Benchmark: (configuration, load) points per second of the vectorised performance model.

A point is one (model, accelerator, precision, TP, input length, output length,
concurrency) evaluation of the continuous-batching model (step time, throughput, TTFT, TPOT).
Runs on one core (numpy element-wise kernels are single-threaded). Prints one JSON object.

Usage: ``python tests/benchmarks/bench_perf.py [--repeat 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from planner.catalog import load_catalog  # noqa: E402
from planner.perf import AcceleratorSpec, LLMSpec, capacity_grid, replica_capacity  # noqa: E402

CONFIGS = [
    ("llama-3.1-8b", "h100-sxm", 1, "bf16"),
    ("llama-3.1-8b", "l40s", 1, "fp8"),
    ("llama-3.1-70b", "h100-sxm", 2, "fp8"),
    ("llama-3.1-70b", "a100-80gb", 4, "bf16"),
    ("mixtral-8x7b", "h100-sxm", 2, "bf16"),
    ("deepseek-v3", "h200", 8, "fp8"),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cat = load_catalog()
    specs = [(LLMSpec.from_row(cat.llm(m)), AcceleratorSpec.from_row(cat.accelerator(a)), g, p)
             for m, a, g, p in CONFIGS]
    isl = np.geomspace(64, 16000, 20)[:, None, None]
    osl = np.geomspace(16, 4000, 20)[None, :, None]
    conc = np.arange(1, 257, dtype=float)[None, None, :]
    per_config = isl.size * osl.size * conc.size
    best = float("inf")
    for _ in range(max(args.repeat, 1)):
        t0 = time.perf_counter()
        total = 0.0
        for llm, acc, g, p in specs:
            out = capacity_grid(llm, acc, gpus=g, precision=p, input_tokens=isl,
                                output_tokens=osl, concurrency=conc)
            total += float(out["output_tokens_per_s"].sum())
        best = min(best, time.perf_counter() - t0)
    points = per_config * len(specs)
    # scalar entry point (what the cost engine calls once per configuration)
    t0 = time.perf_counter()
    n_calls = 0
    for llm, acc, g, p in specs:
        for i, o in ((1000, 200), (200, 1000), (4000, 500)):
            replica_capacity(llm, acc, gpus=g, precision=p, input_tokens=i, output_tokens=o,
                             tpot_slo_s=0.1, ttft_slo_s=2.0)
            n_calls += 1
    rc_wall = time.perf_counter() - t0
    print(json.dumps({
        "points": int(points),
        "wall_s": round(best, 6),
        "points_per_s": round(points / best, 1),
        "configs": len(specs),
        "points_per_config": int(per_config),
        "replica_capacity_calls": n_calls,
        "replica_capacity_ms_per_call": round(1e3 * rc_wall / n_calls, 3),
        "checksum_output_tokens_per_s": round(total, 3),
    }))


if __name__ == "__main__":
    main()
