"""Configuration search: rank (accelerator, precision, TP) by $ per 1M output tokens at an SLO."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from planner.errors import PlannerError
from planner.perf.batching import replica_capacity
from planner.perf.first_principles import decode_tokens_per_s_bandwidth
from planner.perf.memory import default_kv_precision, kv_bytes_per_token_per_gpu, weight_bytes
from planner.perf.params import PerfParams
from planner.perf.specs import AcceleratorSpec, LLMSpec, normalize_precision

_COLUMNS = [
    "rank", "accelerator", "precision", "gpus", "fits", "meets_slo", "feasible",
    "usd_per_1m_output_tokens", "usd_per_hour", "output_tokens_per_s", "requests_per_s",
    "batch", "max_batch", "ttft_s", "tpot_s", "e2e_s", "limited_by",
    "roofline_output_tokens_per_s", "replicas_needed", "exceeds_physical_limit", "reason",
]


def roofline_output_tokens_per_s(
    llm: LLMSpec, acc: AcceleratorSpec, gpus: int, precision: str, input_tokens: float,
    output_tokens: float, batch: float, params: PerfParams | None = None,
) -> float:
    """Physical upper bound on a replica's decode output tokens/s at ``batch`` sequences.

    The smaller of the bandwidth bound (peak HBM bandwidth, weights + KV read once per step)
    and the compute bound (dense peak / 2 N_active per token, prompt tokens included).
    """
    p = params or PerfParams()
    prec = normalize_precision(precision)
    kvp = default_kv_precision(prec, p)
    w = weight_bytes(llm, prec) / gpus
    kv_seq = kv_bytes_per_token_per_gpu(llm, kvp, gpus) * (input_tokens + output_tokens / 2.0)
    bw = decode_tokens_per_s_bandwidth(w, kv_seq, batch, acc.mem_bw_bytes_per_s)
    comp = acc.peak_flops(prec) * gpus / (2.0 * llm.active_params_b * 1e9) * (
        output_tokens / (input_tokens + output_tokens)
    )
    return float(min(bw, comp))


def search_configs(
    llm: LLMSpec,
    accelerators: Iterable[AcceleratorSpec],
    usd_per_gpu_hour: Mapping[str, float],
    precisions: Iterable[str] = ("bf16", "fp8"),
    tps: Iterable[int] = (1, 2, 4, 8),
    isl: float = 1000.0,
    osl: float = 1000.0,
    ttft_slo_s: float | None = None,
    tpot_slo_s: float | None = None,
    *,
    params: PerfParams | None = None,
    target_output_tokens_per_s: float | None = None,
) -> pd.DataFrame:
    """Rank configurations by $ per 1M output tokens at the SLO (cheapest first).

    ``usd_per_1m = usd_per_gpu_hour x gpus / (3600 x output_tokens_per_s) x 1e6``. Rows that
    do not fit, whose precision the accelerator lacks, whose TP does not divide the heads, or
    that miss the SLO at any load, are kept with ``feasible = False`` and a ``reason``, ranked
    after the feasible ones. With ``target_output_tokens_per_s`` the table adds the replicas
    needed and flags ``exceeds_physical_limit`` when one replica would have to beat its
    roofline bound (a configuration that cannot deliver the target per replica).
    """
    p = params or PerfParams()
    rows: list[dict[str, Any]] = []
    accs = list(accelerators)
    if not accs:
        raise PlannerError("accelerators: expected at least one accelerator")
    for acc in accs:
        if acc.id not in usd_per_gpu_hour:
            raise PlannerError(
                f"usd_per_gpu_hour: no price for accelerator {acc.id!r}; "
                f"priced: {', '.join(sorted(usd_per_gpu_hour)) or 'none'}"
            )
        price = float(usd_per_gpu_hour[acc.id])
        for prec_in in precisions:
            prec = normalize_precision(prec_in, field="precisions")
            for g in tps:
                base = {"accelerator": acc.id, "precision": prec, "gpus": int(g),
                        "usd_per_hour": price * int(g)}
                try:
                    cap = replica_capacity(
                        llm, acc, gpus=int(g), precision=prec, input_tokens=isl,
                        output_tokens=osl, ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s,
                        params=p, strict=False,
                    )
                except PlannerError as exc:
                    rows.append({**base, "fits": False, "meets_slo": False, "feasible": False,
                                 "reason": str(exc)})
                    continue
                feasible = cap.fits and cap.meets_slo and cap.output_tokens_per_s > 0
                usd = (base["usd_per_hour"] / (3600.0 * cap.output_tokens_per_s) * 1e6
                       if feasible else np.inf)
                roof = roofline_output_tokens_per_s(llm, acc, int(g), prec, isl, osl,
                                                    max(cap.batch, 1.0), p) if cap.fits else 0.0
                reason = ""
                if not cap.fits:
                    reason = "does not fit in memory"
                elif not cap.meets_slo:
                    reason = "misses the SLO even at one request"
                row = {
                    **base, "fits": cap.fits, "meets_slo": cap.meets_slo, "feasible": feasible,
                    "usd_per_1m_output_tokens": usd,
                    "output_tokens_per_s": cap.output_tokens_per_s,
                    "requests_per_s": cap.requests_per_s, "batch": cap.batch,
                    "max_batch": cap.max_batch, "ttft_s": cap.ttft_s, "tpot_s": cap.tpot_s,
                    "e2e_s": cap.e2e_s, "limited_by": cap.limited_by,
                    "roofline_output_tokens_per_s": roof, "reason": reason,
                }
                if target_output_tokens_per_s is not None and feasible:
                    row["replicas_needed"] = int(
                        np.ceil(float(target_output_tokens_per_s) / cap.output_tokens_per_s)
                    )
                    row["exceeds_physical_limit"] = bool(float(target_output_tokens_per_s) > roof)
                rows.append(row)
    df = pd.DataFrame(rows)
    for col in _COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    df["usd_per_1m_output_tokens"] = df["usd_per_1m_output_tokens"].fillna(np.inf)
    df = df.sort_values(["feasible", "usd_per_1m_output_tokens", "gpus"],
                        ascending=[False, True, True], kind="stable").reset_index(drop=True)
    df["rank"] = np.arange(1, len(df) + 1)
    return df[_COLUMNS]
