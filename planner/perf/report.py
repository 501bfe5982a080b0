"""Glue for ``planner perf``: one call per CLI mode, tidy results out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from planner.errors import PlannerError
from planner.perf.batching import replica_capacity
from planner.perf.closedloop import closed_loop_curve
from planner.perf.memory import memory_plan
from planner.perf.params import PerfParams
from planner.perf.search import offering_prices, search_configs
from planner.perf.specs import AcceleratorSpec, LLMSpec


def gpu_hour_prices(catalog: Any, plan: str = "on-demand") -> dict[str, float]:
    """Cheapest ``usd_per_gpu_hour`` per accelerator id for a price plan (catalog clouds)."""
    df = catalog.clouds
    if "plan" in df.columns:
        df = df[df["plan"] == plan]
    df = df[pd.to_numeric(df["usd_per_gpu_hour"], errors="coerce") > 0]
    if df.empty:
        raise PlannerError(f"plan: no cloud prices with plan {plan!r} in the catalog")
    best = df.groupby("accelerator")["usd_per_gpu_hour"].min()
    return {str(k): float(v) for k, v in best.items()}


def perf_summary(
    llm: LLMSpec,
    acc: AcceleratorSpec,
    *,
    gpus: int,
    precision: str = "bf16",
    input_tokens: float,
    output_tokens: float,
    ttft_slo_s: float | None = None,
    tpot_slo_s: float | None = None,
    usd_per_gpu_hour: float | None = None,
    loads: Iterable[float] | None = None,
    params: PerfParams | None = None,
    concurrency: Iterable[float] | None = None,
) -> dict[str, Any]:
    """Everything ``planner perf`` prints for one configuration.

    Returns ``{"memory": dict, "capacity": dict, "curve": DataFrame, "usd_per_hour": float|None,
    "usd_per_1m_output_tokens": float|None, "usd_per_1m_input_tokens": float|None}``. The curve
    is the closed-loop steady state (:func:`planner.perf.closedloop.closed_loop_curve`: TTFT,
    ITL/TPOT, throughput with ``c`` requests always in flight) at ``concurrency`` as given
    (beyond the KV-memory limit the extra requests queue), else at ``loads`` (default 1, 8,
    32, 128 and the maximum batch, capped at it). Raises :class:`PlannerError` for
    configurations that do not fit (with the options that would).
    """
    p = params or PerfParams()
    cap = replica_capacity(llm, acc, gpus=gpus, precision=precision, input_tokens=input_tokens,
                           output_tokens=output_tokens, ttft_slo_s=ttft_slo_s,
                           tpot_slo_s=tpot_slo_s, params=p)
    mp = memory_plan(llm, acc, gpus, precision, p)
    bmax = max(cap.max_batch, 1.0)
    if concurrency is not None:
        grid = np.asarray(list(concurrency), dtype=float)
    else:
        want = list(loads) if loads is not None else [1, 8, 32, 128, bmax]
        grid = np.unique(np.clip(np.asarray(want, dtype=float), 1.0, bmax))
    curve = closed_loop_curve(llm, acc, gpus=gpus, precision=precision,
                              input_tokens=input_tokens, output_tokens=output_tokens,
                              concurrency=grid, params=p)
    usd_h = None if usd_per_gpu_hour is None else float(usd_per_gpu_hour) * gpus
    per_m_out = per_m_in = None
    if usd_h is not None and cap.output_tokens_per_s > 0:
        per_m_out = usd_h / (3600.0 * cap.output_tokens_per_s) * 1e6
        per_m_in = usd_h / (3600.0 * cap.input_tokens_per_s) * 1e6
    return {"memory": mp.to_dict(), "capacity": cap.to_dict(), "curve": curve,
            "usd_per_hour": usd_h, "usd_per_1m_output_tokens": per_m_out,
            "usd_per_1m_input_tokens": per_m_in}


def perf_search(
    catalog: Any,
    model: str,
    *,
    accelerators: Iterable[str] | None = None,
    precisions: Iterable[str] = ("bf16", "fp8"),
    tps: Iterable[int] = (1, 2, 4, 8),
    isl: float = 1000.0,
    osl: float = 1000.0,
    ttft_slo_s: float | None = None,
    tpot_slo_s: float | None = None,
    plan: str = "on-demand",
    target_output_tokens_per_s: float | None = None,
    params: PerfParams | None = None,
) -> pd.DataFrame:
    """``planner perf --search``: catalog ids in, ranked :func:`search_configs` table out.

    ``accelerators`` defaults to every accelerator with a price for ``plan``. Each TP degree
    is priced from the catalog offerings whose instances hold whole replicas
    (:func:`planner.perf.search.price_for_replica`).
    """
    prices = gpu_hour_prices(catalog, plan)
    ids = list(accelerators) if accelerators else sorted(prices)
    missing = [a for a in ids if a not in prices]
    if missing:
        raise PlannerError(
            f"accelerators: no {plan} price for {', '.join(missing)}; "
            f"priced: {', '.join(sorted(prices))}"
        )
    llm = LLMSpec.from_row(catalog.llm(model))
    accs = [AcceleratorSpec.from_row(catalog.accelerator(a)) for a in ids]
    return search_configs(llm, accs, prices, precisions, tps, isl, osl, ttft_slo_s, tpot_slo_s,
                          params=params, target_output_tokens_per_s=target_output_tokens_per_s,
                          offerings=offering_prices(catalog.clouds, plan))
