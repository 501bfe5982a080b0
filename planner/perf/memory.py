"""Memory model: weight bytes by precision, KV-cache bytes per token, KV capacity, fit check."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from planner.errors import PlannerError
from planner.perf.params import PerfParams
from planner.perf.specs import (
    PRECISION_BYTES,
    AcceleratorSpec,
    LLMSpec,
    normalize_precision,
)


def default_kv_precision(precision: str, params: PerfParams | None = None) -> str:
    """KV-cache precision: ``params.kv_precision`` if set, else fp8 for fp8/fp4 weights,
    else bf16."""
    p = params or PerfParams()
    if p.kv_precision:
        return normalize_precision(p.kv_precision, field="kv_precision")
    return "fp8" if normalize_precision(precision) in ("fp8", "fp4") else "bf16"


#: Stored bytes per FP4 weight: 4-bit values plus one 8-bit (E4M3) scale per 16 values
#: (NVFP4; MXFP4 uses one 8-bit scale per 32, 0.53 B): 0.5 + 1/16.
FP4_BYTES_WITH_SCALES = 0.5 + 1.0 / 16.0


@dataclass(frozen=True)
class WeightPrecision:
    """Which weights run at which precision for a checkpoint of ``precision``.

    ``shared``: attention, dense FFNs, shared experts, embeddings and LM head; ``expert``:
    routed MoE experts. ``*_bytes`` are stored bytes per parameter (scales included) and
    ``*_compute`` the precision whose dense peak their GEMMs run at.
    """

    shared_bytes: float
    shared_compute: str
    expert_bytes: float
    expert_compute: str


def weight_precision(llm: LLMSpec, precision: str) -> WeightPrecision:
    """Per-operator weight precision of a ``precision`` checkpoint.

    * **fp4** (NVFP4/MXFP4): the values are 4-bit with a block scale
      (:data:`FP4_BYTES_WITH_SCALES` per parameter) and the GEMMs run on the FP4 tensor
      cores. For MoE models only the routed experts are FP4; attention, dense layers, shared
      experts and the LM head stay FP8 (NVIDIA's DeepSeek-R1/V3 FP4 checkpoints quantise
      "only the weights and activations of the linear operators within transformer blocks in
      MoE"); dense models quantise every transformer linear layer.
    * every other precision applies to all weights (``PRECISION_BYTES``; the per-block
      scales of FP8 block quantisation, 1 per 128x128 values, are negligible).

    The KV cache precision is separate (:func:`default_kv_precision`); attention itself runs
    at bf16 in the step model.
    """
    prec = normalize_precision(precision)
    if prec == "fp4":
        if llm.is_moe:
            return WeightPrecision(PRECISION_BYTES["fp8"], "fp8", FP4_BYTES_WITH_SCALES, "fp4")
        return WeightPrecision(FP4_BYTES_WITH_SCALES, "fp4", FP4_BYTES_WITH_SCALES, "fp4")
    b = PRECISION_BYTES[prec]
    return WeightPrecision(b, prec, b, prec)


def weight_bytes(llm: LLMSpec, precision: str) -> float:
    """Total weight bytes: ``params x bytes/param`` (bf16 2, fp8/int8 1, int4 0.5; fp4 with
    its block scales and, for MoE models, only the routed experts: :func:`weight_precision`)."""
    wp = weight_precision(llm, precision)
    expert = float(llm.experts or 0) * llm.expert_params if llm.is_moe else 0.0
    shared = llm.params_b * 1e9 - expert
    return shared * wp.shared_bytes + expert * wp.expert_bytes


def kv_bytes_per_token_per_gpu(llm: LLMSpec, kv_precision: str, tp: int) -> float:
    """KV bytes per token held by each GPU of a tensor-parallel group.

    GQA shards KV heads over the group, but each GPU holds at least one KV head
    (``max(kv_heads / tp, 1)``). MLA's latent cache is replicated on every rank.
    """
    total = llm.kv_bytes_per_token(kv_precision)
    if llm.attention == "mla":
        return total
    heads_per_gpu = max(llm.kv_heads / tp, 1.0)
    return total * heads_per_gpu / llm.kv_heads


def device_memory_bytes(acc: AcceleratorSpec) -> float:
    """Memory on one ``acc`` in bytes (:attr:`AcceleratorSpec.mem_bytes`): the device's own
    reading (catalog ``device_mem_mib``) when known, else the data-sheet ``mem_gb`` x 1e9.
    Planning (:func:`memory_plan`) and the measured-run validation use this one figure."""
    return acc.mem_bytes


#: Interconnects whose NVSwitch supports NVLink SHARP (multicast all-reduce): the NVLink-4
#: (Hopper, NVSwitch gen 3) and NVLink-5 (Blackwell) generations of the catalog.
NVLS_INTERCONNECTS = ("nvlink4", "nvlink5")


def comm_reserve_bytes(acc: AcceleratorSpec, gpus: int, params: PerfParams | None = None) -> float:
    """Per-GPU memory held by the tensor-parallel communicator beyond the flat runtime reserve.

    NCCL turns on NVLink SHARP (NVLS) for a communicator of more than two GPUs on an
    NVSwitch that supports it (:data:`NVLS_INTERCONNECTS`) and keeps its multicast buffers
    and registrations for the life of the engine: ``params.nvls_reserve_gb`` there, else 0
    (one or two GPUs, PCIe, NVLink 3, other vendors).
    """
    p = params or PerfParams()
    if int(gpus) > 2 and (acc.interconnect or "").lower() in NVLS_INTERCONNECTS:
        return float(p.nvls_reserve_gb) * 1e9
    return 0.0


def device_accelerator(acc: AcceleratorSpec) -> AcceleratorSpec:
    """``acc`` unchanged: planning and validation now size memory from the same
    :func:`device_memory_bytes` (kept for callers that reproduced measured runs with it)."""
    return acc


@dataclass(frozen=True)
class MemoryPlan:
    """Per-GPU memory budget of one tensor-parallel replica."""

    gpus: int
    precision: str
    kv_precision: str
    weights_gb_per_gpu: float
    reserve_gb_per_gpu: float
    kv_gb_per_gpu: float
    kv_bytes_per_token_per_gpu: float
    kv_capacity_tokens: float
    fits: bool
    shortfall_gb_per_gpu: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def memory_plan(
    llm: LLMSpec, acc: AcceleratorSpec, gpus: int, precision: str, params: PerfParams | None = None
) -> MemoryPlan:
    """Split each GPU's memory into weights, runtime reserve and KV cache.

    ``kv = (mem - weights/tp - reserve) x kv_mem_fraction``;
    ``kv_capacity_tokens = kv / kv_bytes_per_token_per_gpu``. The reserve is
    ``params.runtime_reserve_gb`` plus the communicator's NVLS buffers on NVSwitch parts
    with more than two GPUs per replica (:func:`comm_reserve_bytes`).
    """
    p = params or PerfParams()
    prec = normalize_precision(precision)
    kvp = default_kv_precision(prec, p)
    w = weight_bytes(llm, prec) / gpus
    reserve = p.runtime_reserve_gb * 1e9 + comm_reserve_bytes(acc, gpus, p)
    free = device_memory_bytes(acc) - w - reserve
    kv = max(free, 0.0) * p.kv_mem_fraction
    per_tok = kv_bytes_per_token_per_gpu(llm, kvp, gpus)
    cap = kv / per_tok
    return MemoryPlan(
        gpus=gpus,
        precision=prec,
        kv_precision=kvp,
        weights_gb_per_gpu=w / 1e9,
        reserve_gb_per_gpu=reserve / 1e9,
        kv_gb_per_gpu=kv / 1e9,
        kv_bytes_per_token_per_gpu=per_tok,
        kv_capacity_tokens=cap,
        fits=free > 0 and cap >= 1.0,
        shortfall_gb_per_gpu=max(-free, 0.0) / 1e9,
    )


def fitting_options(
    llm: LLMSpec,
    acc: AcceleratorSpec,
    params: PerfParams | None = None,
    *,
    min_tokens: float = 1.0,
    max_gpus: int | None = None,
) -> list[tuple[int, str]]:
    """(gpus, precision) pairs that fit ``min_tokens`` of KV cache, fewest GPUs first."""
    out = []
    top = max_gpus or max(int(acc.gpus_per_node or 8), 1)
    for g in (1, 2, 4, 8, 16):
        if g > top:
            break
        if llm.attention != "mla" and llm.q_heads % g:
            continue
        for prec in acc.supported_precisions():
            if prec == "fp16":
                continue
            mp = memory_plan(llm, acc, g, prec, params)
            if mp.fits and mp.kv_capacity_tokens >= min_tokens:
                out.append((g, prec))
    order = {"bf16": 0, "fp8": 1, "int8": 2, "fp4": 3, "int4": 4}
    out.sort(key=lambda t: (t[0], order.get(t[1], 9)))
    return out


def require_fit(
    llm: LLMSpec,
    acc: AcceleratorSpec,
    gpus: int,
    precision: str,
    params: PerfParams | None = None,
    *,
    tokens_needed: float = 1.0,
) -> MemoryPlan:
    """Return the memory plan or raise :class:`PlannerError` saying by how much it misses.

    The message names the shortfall per GPU and the (GPU count, precision) options that fit.
    """
    mp = memory_plan(llm, acc, gpus, precision, params)
    if mp.fits and mp.kv_capacity_tokens >= tokens_needed:
        return mp
    opts = fitting_options(llm, acc, params, min_tokens=tokens_needed)
    opt_txt = (
        ", ".join(f"{g} GPU{'s' if g > 1 else ''} at {pr}" for g, pr in opts[:6])
        if opts
        else f"none within {acc.gpus_per_node or 8} GPUs of one node"
    )
    if not mp.fits:
        need = mp.weights_gb_per_gpu + mp.reserve_gb_per_gpu
        msg = (
            f"gpus: {llm.id} at {mp.precision} does not fit on {gpus} x {acc.id}: weights "
            f"{mp.weights_gb_per_gpu:.1f} GB + reserve {mp.reserve_gb_per_gpu:.1f} GB per GPU "
            f"= {need:.1f} GB > {device_memory_bytes(acc) / 1e9:.1f} GB (short by {mp.shortfall_gb_per_gpu:.1f} GB "
            f"per GPU, plus room for the KV cache). Options that fit: {opt_txt}"
        )
    else:
        msg = (
            f"gpus: {llm.id} at {mp.precision} on {gpus} x {acc.id} leaves KV cache for "
            f"{mp.kv_capacity_tokens:,.0f} tokens, fewer than one request needs "
            f"({tokens_needed:,.0f}); short by "
            f"{(tokens_needed - mp.kv_capacity_tokens) * mp.kv_bytes_per_token_per_gpu / 1e9:.2f}"
            f" GB per GPU. Options that fit: {opt_txt}"
        )
    raise PlannerError(msg)


def max_concurrent_requests(
    kv_capacity_tokens: float, input_tokens: Any, output_tokens: Any, kv_reserve: str = "full",
    sliding_window: int | None = None,
) -> Any:
    """Requests whose KV cache fits at once (vectorised).

    ``full``: each reserves ``input + output`` tokens; ``mean``: ``input + output/2``.
    With a sliding window every request holds at most ``window`` tokens.
    """
    import numpy as np

    isl = np.asarray(input_tokens, dtype=float)
    osl = np.asarray(output_tokens, dtype=float)
    per = isl + osl if kv_reserve == "full" else isl + osl / 2.0
    if sliding_window:
        per = np.minimum(per, float(sliding_window))
    return np.floor(kv_capacity_tokens / np.maximum(per, 1.0))


def check_tp(llm: LLMSpec, acc: AcceleratorSpec, gpus: Any) -> int:
    """Validate the tensor-parallel degree; returns it as int."""
    try:
        g = int(gpus)
    except (TypeError, ValueError) as exc:
        raise PlannerError(f"gpus: expected a positive integer, got {gpus!r}") from exc
    if g != gpus or g < 1:
        raise PlannerError(f"gpus: expected a positive integer, got {gpus!r}")
    if llm.q_heads % g:
        raise PlannerError(
            f"gpus: tensor-parallel degree {g} does not divide {llm.id}'s {llm.q_heads} attention "
            f"heads; use one of {', '.join(str(d) for d in _divisors(llm.q_heads) if d <= 64)}"
        )
    node = acc.gpus_per_node
    if node and g > node:
        raise PlannerError(
            f"gpus: tensor-parallel degree {g} exceeds {acc.id}'s {int(node)} GPUs per node "
            f"(cross-node tensor parallelism is not modelled); use replicas instead"
        )
    return g


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0 and (d & (d - 1)) == 0]


def check_lengths(llm: LLMSpec, input_tokens: Any, output_tokens: Any) -> None:
    """Raise :class:`PlannerError` for negative lengths or lengths beyond the context window."""
    import numpy as np

    isl = np.asarray(input_tokens, dtype=float)
    osl = np.asarray(output_tokens, dtype=float)
    if np.any(~np.isfinite(isl)) or np.any(isl < 1):
        raise PlannerError(f"input_tokens: expected >= 1 token, got {input_tokens!r}")
    if np.any(~np.isfinite(osl)) or np.any(osl < 1):
        raise PlannerError(f"output_tokens: expected >= 1 token, got {output_tokens!r}")
    ctx = llm.max_context_tokens
    if ctx and np.any(isl + osl > ctx):
        worst = float(np.max(isl + osl))
        raise PlannerError(
            f"input_tokens + output_tokens: {worst:,.0f} tokens exceed {llm.id}'s context window "
            f"of {ctx:,} tokens"
        )


__all__ = [
    "MemoryPlan",
    "NVLS_INTERCONNECTS",
    "check_lengths",
    "comm_reserve_bytes",
    "check_tp",
    "default_kv_precision",
    "fitting_options",
    "kv_bytes_per_token_per_gpu",
    "max_concurrent_requests",
    "memory_plan",
    "require_fit",
    "weight_bytes",
    "weight_precision",
    "WeightPrecision",
    "FP4_BYTES_WITH_SCALES",
]
