"""Configuration search: rank (accelerator, precision, TP) by $ per 1M output tokens at an SLO."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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
    "offering",
]

#: One priced cloud offering: (GPUs per instance, USD per GPU-hour, catalog id).
Offer = tuple[int, float, str]


def offering_prices(clouds: pd.DataFrame, plan: str = "on-demand") -> dict[str, list[Offer]]:
    """Every priced offering of ``plan`` per accelerator id, from the catalog's cloud table:
    ``{accelerator: [(gpus_per_instance, usd_per_gpu_hour, id), ...]}`` (rows without a
    positive ``usd_per_gpu_hour`` are left out)."""
    df = clouds
    if "plan" in df.columns:
        df = df[df["plan"] == plan]
    price = pd.to_numeric(df["usd_per_gpu_hour"], errors="coerce")
    n = pd.to_numeric(df["gpus_per_instance"], errors="coerce").fillna(1.0)
    ok = (price > 0).to_numpy()
    out: dict[str, list[Offer]] = {}
    for acc, gpi, usd, oid in zip(df["accelerator"].to_numpy()[ok], n.to_numpy()[ok],
                                  price.to_numpy()[ok], df["id"].to_numpy()[ok], strict=True):
        out.setdefault(str(acc), []).append((int(gpi), float(usd), str(oid)))
    return out


def price_for_replica(offers: Sequence[Offer], gpus: int) -> tuple[float, str] | None:
    """Cheapest USD per GPU-hour for a replica of ``gpus`` GPUs, and the offering's id.

    A tensor-parallel replica cannot span instances, so only offerings whose instance holds
    whole replicas count (``gpus_per_instance`` a multiple of ``gpus``: a 1-GPU instance
    does not price a TP-2 replica; an 8-GPU instance holds four). None when no offering does.
    """
    fit = [(usd, oid) for gpi, usd, oid in offers if gpi >= gpus and gpi % gpus == 0]
    return min(fit) if fit else None


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
    offerings: Mapping[str, Sequence[Offer]] | None = None,
) -> pd.DataFrame:
    """Rank configurations by $ per 1M output tokens at the SLO (cheapest first).

    ``usd_per_1m = usd_per_gpu_hour x gpus / (3600 x output_tokens_per_s) x 1e6``. Rows that
    do not fit, whose precision the accelerator lacks, whose TP does not divide the heads, or
    that miss the SLO at any load, are kept with ``feasible = False`` and a ``reason``, ranked
    after the feasible ones. With ``target_output_tokens_per_s`` the table adds the replicas
    needed and flags ``exceeds_physical_limit`` when one replica would have to beat its
    roofline bound (a configuration that cannot deliver the target per replica).

    With ``offerings`` (:func:`offering_prices`) an accelerator listed there is priced per
    TP degree from the offerings whose instances hold whole replicas
    (:func:`price_for_replica`; ``offering`` names the one used). A TP degree that no listed
    instance holds (e.g. clouds that price per GPU and list one-GPU rows) keeps the
    ``usd_per_gpu_hour`` price and ``offering`` says so. Without ``offerings`` that price
    applies at every TP degree.
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
        flat = float(usd_per_gpu_hour[acc.id])
        offers = offerings.get(acc.id) if offerings is not None else None
        for prec_in in precisions:
            prec = normalize_precision(prec_in, field="precisions")
            for g in tps:
                price, offering = flat, ""
                if offers is not None:
                    hit = price_for_replica(offers, int(g))
                    if hit is not None:
                        price, offering = hit
                    else:
                        sizes = ", ".join(map(str, sorted({gpi for gpi, _, _ in offers})))
                        offering = (f"per-GPU price (no listed instance holds {int(g)} GPUs; "
                                    f"instances of {sizes})")
                base = {"accelerator": acc.id, "precision": prec, "gpus": int(g),
                        "usd_per_hour": price * int(g), "offering": offering}
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
