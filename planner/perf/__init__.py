"""Serving performance model: what a GPU replica delivers.

Public entry points
-------------------
* :func:`replica_capacity` - sustained throughput/latency of one tensor-parallel replica at the
  largest load meeting the SLOs (or maximum throughput).
* :func:`batching_curve`, :func:`capacity_grid` - throughput and latency versus concurrency and
  lengths (vectorised).
* :func:`closed_loop_curve` - closed-loop TTFT, ITL and throughput with ``c`` requests always
  in flight (``planner perf --concurrency``).
* :func:`step_model` - step-time functions for the simulation (``prefill_time_s``,
  ``decode_step_time_s``, ``step_time_s``).
* :func:`search_configs` - rank (accelerator, precision, TP) by $ per 1M output tokens.
* :func:`memory_plan`, :func:`require_fit` - weights, KV cache and fit errors.
* :func:`perf_summary`, :func:`perf_search` - what ``planner perf`` prints (CLI glue).
* :mod:`planner.perf.validation` - predictions of the published calibration measurements.
* First principles: :func:`flops_per_token`, :func:`training_flops`,
  :func:`tokens_per_s_compute`.
"""

from planner.perf.batching import (
    METHOD,
    ReplicaCapacity,
    batching_curve,
    capacity_grid,
    replica_capacity,
)
from planner.perf.first_principles import (
    decode_tokens_per_s_bandwidth,
    flops_per_token,
    tokens_per_s_compute,
    training_flops,
)
from planner.perf.memory import (
    MemoryPlan,
    default_kv_precision,
    fitting_options,
    kv_bytes_per_token_per_gpu,
    memory_plan,
    require_fit,
    weight_bytes,
)
from planner.perf.params import PerfParams
from planner.perf.specs import PRECISION_BYTES, PRECISIONS, AcceleratorSpec, LLMSpec
from planner.perf.step import StepModel, step_model

#: names of the modules that build DataFrames (pandas), imported on first use so that the
#: cost path, which needs only the replica model, does not import pandas (PEP 562)
_LAZY = {
    "closed_loop_curve": "planner.perf.closedloop",
    "gpu_hour_prices": "planner.perf.report",
    "perf_search": "planner.perf.report",
    "perf_summary": "planner.perf.report",
    "roofline_output_tokens_per_s": "planner.perf.search",
    "search_configs": "planner.perf.search",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'planner.perf' has no attribute {name!r}")


__all__ = [
    "METHOD",
    "PRECISIONS",
    "PRECISION_BYTES",
    "AcceleratorSpec",
    "LLMSpec",
    "MemoryPlan",
    "PerfParams",
    "ReplicaCapacity",
    "StepModel",
    "batching_curve",
    "capacity_grid",
    "closed_loop_curve",
    "decode_tokens_per_s_bandwidth",
    "default_kv_precision",
    "fitting_options",
    "flops_per_token",
    "gpu_hour_prices",
    "kv_bytes_per_token_per_gpu",
    "memory_plan",
    "perf_search",
    "perf_summary",
    "replica_capacity",
    "require_fit",
    "roofline_output_tokens_per_s",
    "search_configs",
    "step_model",
    "tokens_per_s_compute",
    "training_flops",
    "weight_bytes",
]
