"""Continuous batching: throughput, TTFT and TPOT of a replica versus concurrency.

Steady state of an engine with in-flight (continuous) batching and chunked prefill, with
``B`` requests in the system, mean prompt ``I`` and output ``O`` tokens, and a cap ``C`` on
tokens per step:

* decode tokens per step ``d = min(B, C O / (I + O))`` (flow balance: every step also carries
  ``p = d I / O`` prompt tokens, and ``d + p <= C``);
* the decoding sequences hold ``I + O/2`` cached tokens on average (capped at the sliding
  window);
* step time ``T`` from :class:`planner.perf.step.StepModel` for ``(d, d (I + O/2), p, pairs)``;
* output tokens/s ``d / T``; requests/s ``d / (O T)``; TPOT ``T``;
  TTFT: the new prompt runs in ``I / c`` steps of ``c = min(I, C - d)`` prompt tokens each
  alongside the running decodes (the step budget the decodes leave);
  end-to-end ``TTFT + (O - 1) TPOT``.

``B`` is bounded by the KV cache (``kv_capacity / (I + O)`` with up-front reservation) and by
the engine's batch cap. Latencies exclude queueing before admission (closed-loop
concurrency); the simulation adds queueing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from planner.errors import PlannerError
from planner.perf.memory import (
    check_lengths,
    check_tp,
    max_concurrent_requests,
    memory_plan,
    require_fit,
)
from planner.perf.params import PerfParams
from planner.perf.specs import AcceleratorSpec, LLMSpec, normalize_precision
from planner.perf.step import StepModel, step_model

if TYPE_CHECKING:  # pandas is imported by capacity_grid, not on the cost path
    import pandas as pd

METHOD = "roofline-cb-v1"


@dataclass(frozen=True)
class ReplicaCapacity:
    """Sustained capacity of one replica at its operating point.

    Attributes
    ----------
    requests_per_s, output_tokens_per_s, input_tokens_per_s : float
        Sustained rates at the operating point (0 when no load meets the SLO).
    batch : float
        Concurrent requests (decoding) at the operating point.
    max_batch : float
        Largest concurrency the KV cache and the engine cap allow.
    ttft_s, tpot_s, e2e_s : float
        Latencies at the operating point (no queueing before admission).
    kv_capacity_tokens : float
        KV-cache capacity of the replica in tokens.
    weights_gb_per_gpu : float
        Weight memory per GPU.
    fits : bool
        The weights and at least one request's KV cache fit.
    limited_by : str
        What stops throughput growing: ``memory`` (KV cache), ``compute``, ``bandwidth``,
        ``slo`` or ``batch-cap``.
    method : str
        Name of the model that produced the numbers.
    meets_slo : bool
        False when even one request at a time misses the TTFT/TPOT SLO.
    gpus : int
        GPUs in the replica.
    precision, kv_precision : str
        Weight and KV-cache precisions.
    """

    requests_per_s: float
    output_tokens_per_s: float
    input_tokens_per_s: float
    batch: float
    max_batch: float
    ttft_s: float
    tpot_s: float
    e2e_s: float
    kv_capacity_tokens: float
    weights_gb_per_gpu: float
    fits: bool
    limited_by: str
    method: str
    meets_slo: bool = True
    gpus: int = 1
    precision: str = "bf16"
    kv_precision: str = "bf16"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _curve_arrays(
    sm: StepModel, input_tokens: Any, output_tokens: Any, concurrency: Any,
    prefix_cache_hit_share: Any = 0.0,
) -> dict[str, np.ndarray]:
    """Vectorised steady-state metrics; inputs broadcast together.

    ``prefix_cache_hit_share`` ``h``: the first ``h x I`` prompt tokens are served from the
    prefix (KV) cache, so only ``n = I - h I`` (at least one) are prefilled; they attend to
    the whole prompt (``pairs(I) - pairs(h I)`` causal pairs), and the KV cache still holds
    the whole prompt.
    """
    p = sm.params
    isl = np.asarray(input_tokens, dtype=float)
    osl = np.asarray(output_tokens, dtype=float)
    b = np.asarray(concurrency, dtype=float)
    h = np.asarray(prefix_cache_hit_share, dtype=float)
    if np.all(h == 0.0):
        new = isl
        pairs_per_new = sm.prefill_pairs(isl) / isl
    else:
        new = np.maximum(isl * (1.0 - h), 1.0)
        pairs_per_new = (sm.prefill_pairs(isl) - sm.prefill_pairs(isl - new)) / new
    cap = float(p.max_tokens_per_step)
    d = np.minimum(b, cap * osl / (new + osl))
    d = np.maximum(d, 0.0)
    pre = d * new / osl
    ctx = isl + osl / 2.0
    w = sm.llm.sliding_window
    if w:
        ctx = np.minimum(ctx, float(w))
    kv = d * ctx
    pairs = pre * pairs_per_new
    t = sm.step_time_s(d, kv, pre, pairs)
    safe_d = np.maximum(d, 1e-12)
    out_tps = safe_d / t
    rps = out_tps / osl
    # TTFT: the new prompt is chunked into steps that carry the running decodes plus up to
    # ``C - d`` prompt tokens (one prompt at a time, first come first served)
    chunk = np.minimum(new, np.maximum(cap - d, 1.0))
    t_chunk = sm.step_time_s(d, kv, chunk, chunk * pairs_per_new)
    ttft = t_chunk * new / chunk
    return {
        "concurrency": np.broadcast_to(b, t.shape).astype(float),
        "decode_batch": np.broadcast_to(d, t.shape).astype(float),
        "step_s": t,
        "output_tokens_per_s": out_tps,
        "requests_per_s": rps,
        "input_tokens_per_s": rps * isl,
        "ttft_s": ttft,
        "tpot_s": t,
        "e2e_s": ttft + (osl - 1.0) * t,
    }


def batching_curve(
    llm: LLMSpec,
    acc: AcceleratorSpec,
    *,
    gpus: int,
    precision: str = "bf16",
    input_tokens: float,
    output_tokens: float,
    concurrency: Any = None,
    params: PerfParams | None = None,
) -> pd.DataFrame:
    """Throughput and latency versus concurrent requests (one row per concurrency).

    ``concurrency`` defaults to a geometric grid from 1 to the replica's maximum batch.
    """
    p = params or PerfParams()
    sm = step_model(llm, acc, gpus, precision, p)
    check_lengths(llm, input_tokens, output_tokens)
    per = _per_request_tokens(llm, input_tokens, output_tokens, p)
    mp = require_fit(llm, acc, sm.gpus, sm.precision, p, tokens_needed=per)
    bmax = _max_batch(mp.kv_capacity_tokens, llm, input_tokens, output_tokens, p)
    if concurrency is None:
        concurrency = np.unique(np.round(np.geomspace(1, max(bmax, 1), 24)))
    b = np.asarray(concurrency, dtype=float)
    if np.any(b < 1):
        raise PlannerError(f"concurrency: expected values >= 1, got {concurrency!r}")
    import pandas as pd

    arr = _curve_arrays(sm, input_tokens, output_tokens, b)
    df = pd.DataFrame(arr)
    df["fits_kv"] = df["concurrency"] <= bmax
    return df


def _per_request_tokens(llm: LLMSpec, isl: float, osl: float, p: PerfParams) -> float:
    per = isl + osl if p.kv_reserve == "full" else isl + osl / 2.0
    if llm.sliding_window:
        per = min(per, float(llm.sliding_window))
    return float(per)


def _max_batch(kv_cap: float, llm: LLMSpec, isl: Any, osl: Any, p: PerfParams) -> float:
    mem = max_concurrent_requests(kv_cap, isl, osl, p.kv_reserve, llm.sliding_window)
    return float(np.minimum(mem, float(p.max_batch)))


def replica_capacity(
    llm: LLMSpec,
    acc: AcceleratorSpec,
    *,
    gpus: int,
    precision: str = "bf16",
    input_tokens: float,
    output_tokens: float,
    ttft_slo_s: float | None = None,
    tpot_slo_s: float | None = None,
    params: PerfParams | None = None,
    strict: bool = True,
    prefix_cache_hit_share: float = 0.0,
) -> ReplicaCapacity:
    """Sustained capacity of one replica serving requests of the given mean lengths.

    The operating point is the largest concurrency that meets the TTFT/TPOT SLOs (or the
    maximum-throughput point when no SLO is given), bounded by KV memory and
    ``params.max_batch``.

    Raises
    ------
    PlannerError
        Unknown precision for the accelerator, TP degree that does not divide the heads or
        exceeds a node, lengths beyond the context window, or (when ``strict``) a model that
        does not fit; the message says by how much and which options fit. With
        ``strict=False`` a non-fitting configuration returns ``fits=False`` and zero rates.

    Notes
    -----
    ``prefix_cache_hit_share``: share of each prompt served from the self-hosted prefix (KV)
    cache (not prefilled; see :func:`_curve_arrays`). It is not the API's cached-token billing
    share.
    """
    p = params or PerfParams()
    prec = normalize_precision(precision)
    g = check_tp(llm, acc, gpus)
    acc.peak_flops(prec)
    check_lengths(llm, input_tokens, output_tokens)
    for name, v in (("ttft_slo_s", ttft_slo_s), ("tpot_slo_s", tpot_slo_s)):
        if v is not None and not (float(v) > 0):
            raise PlannerError(f"{name}: expected a positive number of seconds, got {v!r}")
    isl, osl = float(input_tokens), float(output_tokens)
    per = _per_request_tokens(llm, isl, osl, p)
    mp = memory_plan(llm, acc, g, prec, p)
    if not (mp.fits and mp.kv_capacity_tokens >= per):
        if strict:
            require_fit(llm, acc, g, prec, p, tokens_needed=per)
        return ReplicaCapacity(
            0.0, 0.0, 0.0, 0.0, 0.0, float("inf"), float("inf"), float("inf"),
            mp.kv_capacity_tokens, mp.weights_gb_per_gpu, False, "memory", METHOD,
            meets_slo=False, gpus=g, precision=prec, kv_precision=mp.kv_precision,
        )
    sm = StepModel(llm=llm, acc=acc, gpus=g, precision=prec, params=p)
    mem_b = float(max_concurrent_requests(mp.kv_capacity_tokens, isl, osl, p.kv_reserve,
                                          llm.sliding_window))
    bmax = min(mem_b, float(p.max_batch))
    grid = _batch_grid(bmax)
    hit = float(prefix_cache_hit_share)
    if not 0.0 <= hit <= 1.0:
        raise PlannerError(f"prefix_cache_hit_share: expected a share in [0, 1], got {hit!r}")
    arr = _curve_arrays(sm, isl, osl, grid, hit)
    ok = np.ones(grid.shape, dtype=bool)
    if ttft_slo_s is not None:
        ok &= arr["ttft_s"] <= float(ttft_slo_s)
    if tpot_slo_s is not None:
        ok &= arr["tpot_s"] <= float(tpot_slo_s)
    meets = bool(ok.any())
    if meets:
        # highest throughput among feasible loads (throughput rises with load; ties -> smaller)
        tput = np.where(ok, arr["output_tokens_per_s"], -np.inf)
        i = int(np.argmax(tput))
    else:
        i = 0
    slo_bound = meets and not bool(ok[-1]) and i < len(grid) - 1
    d_op = float(arr["decode_batch"][i])
    limited = _limiter(sm, isl, osl, arr, i, mem_b, float(p.max_batch), slo_bound or not meets,
                       hit)
    scale = 1.0 if meets else 0.0
    return ReplicaCapacity(
        requests_per_s=float(arr["requests_per_s"][i]) * scale,
        output_tokens_per_s=float(arr["output_tokens_per_s"][i]) * scale,
        input_tokens_per_s=float(arr["input_tokens_per_s"][i]) * scale,
        batch=d_op,
        max_batch=bmax,
        ttft_s=float(arr["ttft_s"][i]),
        tpot_s=float(arr["tpot_s"][i]),
        e2e_s=float(arr["e2e_s"][i]),
        kv_capacity_tokens=float(mp.kv_capacity_tokens),
        weights_gb_per_gpu=float(mp.weights_gb_per_gpu),
        fits=True,
        limited_by=limited,
        method=METHOD,
        meets_slo=meets,
        gpus=g,
        precision=prec,
        kv_precision=mp.kv_precision,
    )


def _limiter(
    sm: StepModel, isl: float, osl: float, arr: dict[str, np.ndarray], i: int, mem_b: float,
    cap_b: float, slo_bound: bool, hit: float = 0.0,
) -> str:
    """Name what stops throughput growing at the operating point.

    ``slo`` if the SLO binds; otherwise, if doubling the batch (ignoring memory and caps) would
    add < 5 % throughput the replica is saturated: ``compute`` when FLOP time dominates the
    step, else ``bandwidth``; if more batch would help, the batch limit: ``memory`` (KV cache)
    or ``batch-cap`` (engine caps on sequences or tokens per step).
    """
    if slo_bound:
        return "slo"
    b = float(arr["concurrency"][i])
    d = float(arr["decode_batch"][i])
    tput = float(arr["output_tokens_per_s"][i])
    big = replace(sm.params, max_batch=int(4 * max(b, 1)), max_tokens_per_step=int(
        4 * max(sm.params.max_tokens_per_step, 1)))
    sm2 = StepModel(llm=sm.llm, acc=sm.acc, gpus=sm.gpus, precision=sm.precision, params=big)
    t2 = float(_curve_arrays(sm2, isl, osl, 2.0 * max(d, 1.0), hit)["output_tokens_per_s"])
    if t2 < 1.05 * tput:
        c = sm._c
        n = d * (isl + osl) / osl
        comp = (c["shared_flops_tok"] * n + c["head_flops_tok"] * d) / (c["peak"] * sm._eff(n))
        parts = sm.step_breakdown(d, d * (isl + osl / 2.0), n - d, 0.0)
        mem_t = float(parts["attention_decode_s"] + parts["elementwise_s"] + parts["sampling_s"])
        mem_t += c["shared_bytes"] / c["bw"]
        return "compute" if float(comp) >= mem_t else "bandwidth"
    if b >= mem_b - 1e-9 and mem_b <= cap_b:
        return "memory"
    return "batch-cap"


def cuda_graph_batch(batch: Any, graph_batch_sizes: Any) -> np.ndarray:
    """Decode batch a CUDA graph actually runs: the smallest captured size ``>= batch``
    (vectorised), or ``batch`` itself above every captured size (an eager step, no padding).

    Transcribes TensorRT-LLM's ``CUDAGraphRunner._round_up_batch_size`` (``bisect_left`` over
    the sorted captured sizes; none fits -> no graph).
    """
    g = np.sort(np.asarray(graph_batch_sizes, dtype=float).reshape(-1))
    b = np.asarray(batch, dtype=float)
    if g.size == 0:
        return b
    i = np.searchsorted(g, b, side="left")
    return np.where(i < g.size, g[np.minimum(i, g.size - 1)], b)


def padded_step_time_s(
    sm: StepModel, input_tokens: Any, output_tokens: Any, decode_batch: Any,
    graph_batch_sizes: Any,
) -> dict[str, np.ndarray]:
    """Mean step time at decode batch ``d`` when decode-only steps replay padded CUDA graphs.

    In steady state every step decodes the ``d`` running requests and, on average, ``p = d
    I / O`` prompt tokens enter (flow balance, as :func:`_curve_arrays`). An engine that
    captures CUDA graphs for decode-only batches (TensorRT-LLM PyTorch backend; vLLM and
    SGLang alike) runs the steps that carry prompt tokens eagerly and unpadded, and replays
    the others from the graph of the next captured size
    (:meth:`planner.perf.step.StepModel.padded_decode_step_time_s`). A step holds at most
    ``C - d`` prompt tokens beside the decodes (``C = max_tokens_per_step``), so a share
    ``f = min(1, p / (C - d))`` of the steps carry prompts, ``p / f`` tokens each, and the
    mean step is ``f T(d, p/f) + (1 - f) T_graph(d, pad(d))``.

    Returns ``step_s`` (mean), ``prefill_step_share`` (``f``), ``graph_batch`` (``pad(d)``)
    and ``output_tokens_per_s`` (``d / step_s``); all broadcast over the inputs.
    """
    p = sm.params
    isl = np.asarray(input_tokens, dtype=float)
    osl = np.asarray(output_tokens, dtype=float)
    d = np.maximum(np.asarray(decode_batch, dtype=float), 0.0)
    cap = float(p.max_tokens_per_step)
    pre = d * isl / osl
    f = np.clip(pre / np.maximum(cap - d, 1.0), 0.0, 1.0)
    per = np.where(f > 0, pre / np.where(f > 0, f, 1.0), 0.0)
    ctx = isl + osl / 2.0
    if sm.llm.sliding_window:
        ctx = np.minimum(ctx, float(sm.llm.sliding_window))
    kv = d * ctx
    pairs_per_tok = sm.prefill_pairs(isl) / isl
    t_mixed = sm.step_time_s(d, kv, per, per * pairs_per_tok)
    g = cuda_graph_batch(d, graph_batch_sizes)
    t_graph = sm.padded_decode_step_time_s(d, kv, g)
    t = f * t_mixed + (1.0 - f) * t_graph
    t = np.where(d > 0, t, 0.0)
    return {"step_s": t, "prefill_step_share": f + 0.0 * t, "graph_batch": g + 0.0 * t,
            "output_tokens_per_s": np.where(d > 0, d / np.where(t > 0, t, 1.0), 0.0)}


def _batch_grid(bmax: float) -> np.ndarray:
    """All integer concurrencies up to ``bmax`` (<= 8192), else a dense geometric grid."""
    top = max(int(np.floor(bmax)), 1)
    if top <= 8192:
        return np.arange(1, top + 1, dtype=float)
    g = np.unique(np.round(np.geomspace(1, top, 4096)))
    return g.astype(float)


def capacity_grid(
    llm: LLMSpec,
    acc: AcceleratorSpec,
    *,
    gpus: int,
    precision: str = "bf16",
    input_tokens: Any,
    output_tokens: Any,
    concurrency: Any = None,
    params: PerfParams | None = None,
) -> dict[str, np.ndarray]:
    """Vectorised steady-state metrics over arrays of lengths and concurrencies.

    ``input_tokens``, ``output_tokens`` and ``concurrency`` broadcast together; ``concurrency``
    ``None`` means the maximum batch for each length pair (KV memory and engine cap). Returns a
    dict of arrays (see :func:`batching_curve` for the keys) plus ``max_batch``. No per-point
    validation beyond the replica's fit: this is the fast path for Monte Carlo and optimisers.
    """
    p = params or PerfParams()
    sm = step_model(llm, acc, gpus, precision, p)
    mp = memory_plan(llm, acc, sm.gpus, sm.precision, p)
    isl = np.asarray(input_tokens, dtype=float)
    osl = np.asarray(output_tokens, dtype=float)
    bmax = np.minimum(
        max_concurrent_requests(mp.kv_capacity_tokens, isl, osl, p.kv_reserve, llm.sliding_window),
        float(p.max_batch),
    )
    b = bmax if concurrency is None else np.minimum(np.asarray(concurrency, dtype=float), bmax)
    b = np.maximum(b, 0.0)
    out = _curve_arrays(sm, isl, osl, np.maximum(b, 1e-12))
    out["max_batch"] = np.broadcast_to(bmax, out["step_s"].shape)
    zero = out["concurrency"] < 1.0
    if np.any(zero):
        for k in ("output_tokens_per_s", "requests_per_s", "input_tokens_per_s"):
            out[k] = np.where(zero, 0.0, out[k])
    return out
