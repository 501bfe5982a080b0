"""Model and accelerator specifications used by the performance model.

Both are frozen dataclasses built from a catalog row (a plain mapping: numbers as float,
blanks as ``None``; see ``docs/catalog-schema.md``) with :meth:`LLMSpec.from_row` and
:meth:`AcceleratorSpec.from_row`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from planner.errors import PlannerError

#: Bytes per stored weight or cache element by precision name.
PRECISION_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
    "fp4": 0.5,
}

#: Precision names accepted by the model (aliases map onto these).
#: Bytes per MiB (``device_mem_mib``).
MIB_BYTES = float(2**20)

PRECISIONS = ("bf16", "fp16", "fp8", "int8", "int4", "fp4")

_ALIASES = {
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "fp8_e4m3": "fp8",
    "e4m3": "fp8",
    "nvfp4": "fp4",
    "mxfp4": "fp4",
    "w8a16": "int8",
    "w4a16": "int4",
    "awq": "int4",
    "gptq": "int4",
}


def normalize_precision(precision: str, *, field: str = "precision") -> str:
    """Return the canonical precision name or raise :class:`PlannerError` naming ``field``."""
    if not isinstance(precision, str):
        raise PlannerError(f"{field}: expected a precision name such as 'bf16', got {precision!r}")
    p = precision.strip().lower()
    p = _ALIASES.get(p, p)
    if p not in PRECISIONS:
        raise PlannerError(
            f"{field}: unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}"
        )
    return p


def _num(
    row: Mapping[str, Any], key: str, *, required: bool = False, what: str = ""
) -> float | None:
    v = row.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            rid = row.get("id", "?")
            raise PlannerError(
                f"{what} {rid!r}: field '{key}' is required by the performance model"
            )
        return None
    try:
        f = float(v)
    except (TypeError, ValueError) as exc:
        rid = row.get("id", "?")
        raise PlannerError(f"{what} {rid!r}: field '{key}' must be a number, got {v!r}") from exc
    if math.isnan(f):
        if required:
            rid = row.get("id", "?")
            raise PlannerError(
                f"{what} {rid!r}: field '{key}' is required by the performance model"
            )
        return None
    return f


def _int(row: Mapping[str, Any], key: str, **kw: Any) -> int | None:
    f = _num(row, key, **kw)
    return None if f is None else int(round(f))


@dataclass(frozen=True)
class LLMSpec:
    """Architecture of a decoder-only LLM (one row of ``models/llms.csv``).

    Parameters are in billions (``params_b`` total, ``active_params_b`` per token; equal for
    dense models). ``attention`` is one of ``mha``, ``gqa``, ``mqa``, ``mla``.
    """

    id: str
    params_b: float
    active_params_b: float
    layers: int
    hidden: int
    q_heads: int
    kv_heads: int
    head_dim: int
    vocab: int = 0
    ffn_intermediate: int | None = None
    experts: int | None = None
    experts_per_token: int | None = None
    shared_experts: int | None = None
    moe_ffn_intermediate: int | None = None
    dense_layers: int | None = None
    attention: str = "gqa"
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    sliding_window: int | None = None
    max_context_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("params_b", "active_params_b", "layers", "hidden", "q_heads", "head_dim"):
            v = getattr(self, name)
            if v is None or not (v > 0):
                raise PlannerError(f"LLM {self.id!r}: field '{name}' must be > 0, got {v!r}")
        if self.attention not in ("mha", "gqa", "mqa", "mla"):
            raise PlannerError(
                f"LLM {self.id!r}: field 'attention' must be mha, gqa, mqa or mla, "
                f"got {self.attention!r}"
            )
        if self.attention == "mla" and not self.kv_lora_rank:
            raise PlannerError(f"LLM {self.id!r}: attention 'mla' needs field 'kv_lora_rank'")
        if self.attention != "mla" and not (self.kv_heads and self.kv_heads > 0):
            raise PlannerError(f"LLM {self.id!r}: field 'kv_heads' must be > 0")
        if self.active_params_b > self.params_b * (1 + 1e-9):
            raise PlannerError(
                f"LLM {self.id!r}: active_params_b ({self.active_params_b}) exceeds "
                f"params_b ({self.params_b})"
            )
        if self.is_moe and not self.experts_per_token:
            raise PlannerError(f"LLM {self.id!r}: an MoE model needs field 'experts_per_token'")

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LLMSpec:
        """Build from a catalog row (``models/llms.csv``)."""
        what = "LLM"
        rid = str(row.get("id") or "?")
        params_b = _num(row, "params_b", required=True, what=what)
        active = _num(row, "active_params_b", what=what) or params_b
        attention = str(row.get("attention") or "").strip().lower()
        kv_heads = _int(row, "kv_heads", what=what)
        q_heads = _int(row, "q_heads", required=True, what=what)
        if not attention:
            if kv_heads is None or kv_heads == q_heads:
                attention = "mha"
            elif kv_heads == 1:
                attention = "mqa"
            else:
                attention = "gqa"
        experts = _int(row, "experts", what=what)
        return cls(
            id=rid,
            params_b=float(params_b),
            active_params_b=float(active),
            layers=_int(row, "layers", required=True, what=what),
            hidden=_int(row, "hidden", required=True, what=what),
            q_heads=q_heads,
            kv_heads=kv_heads if kv_heads is not None else (0 if attention == "mla" else q_heads),
            head_dim=_int(row, "head_dim", required=True, what=what),
            vocab=_int(row, "vocab", what=what) or 0,
            ffn_intermediate=_int(row, "ffn_intermediate", what=what),
            experts=experts if experts and experts > 1 else None,
            experts_per_token=_int(row, "experts_per_token", what=what),
            shared_experts=_int(row, "shared_experts", what=what),
            moe_ffn_intermediate=_int(row, "moe_ffn_intermediate", what=what),
            dense_layers=_int(row, "dense_layers", what=what),
            attention=attention,
            kv_lora_rank=_int(row, "kv_lora_rank", what=what),
            qk_rope_head_dim=_int(row, "qk_rope_head_dim", what=what),
            sliding_window=_int(row, "sliding_window", what=what),
            max_context_tokens=_int(row, "max_context_tokens", what=what),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # ----------------------------------------------------------------- derived sizes
    @property
    def is_moe(self) -> bool:
        return bool(self.experts and self.experts > 1)

    @property
    def embedding_params(self) -> float:
        """Input-embedding parameters (``vocab x hidden``): looked up, never multiplied."""
        return float(self.vocab) * float(self.hidden)

    @property
    def expert_params(self) -> float:
        """Parameters of one routed expert summed over all MoE layers (0 for dense models).

        From the catalog totals: with ``E`` routed experts, ``k`` per token, total
        ``T = S + E X`` and active ``A = S + k X`` give ``X = (T - A) / (E - k)``.
        """
        if not self.is_moe:
            return 0.0
        e, k = float(self.experts), float(self.experts_per_token)
        if e <= k:
            return 0.0
        return (self.params_b - self.active_params_b) * 1e9 / (e - k)

    @property
    def shared_params(self) -> float:
        """Parameters every token uses: attention, dense FFNs, shared experts, embeddings."""
        if not self.is_moe:
            return self.params_b * 1e9
        return self.params_b * 1e9 - float(self.experts) * self.expert_params

    def expected_experts_touched(self, tokens: Any) -> Any:
        """Expected distinct routed experts used by a step of ``tokens`` tokens (per layer).

        Uniform routing, each token picks ``k`` of ``E``:
        ``E (1 - (1 - k/E)^B)``. Vectorised over ``tokens``.
        """
        import numpy as np

        b = np.asarray(tokens, dtype=float)
        if not self.is_moe:
            return np.zeros_like(b)
        e, k = float(self.experts), float(self.experts_per_token)
        return e * (1.0 - np.power(1.0 - k / e, np.maximum(b, 0.0)))

    def kv_elements_per_token(self) -> float:
        """KV-cache elements stored per token (all layers).

        GQA/MHA/MQA: ``2 x layers x kv_heads x head_dim`` (K and V).
        MLA (DeepSeek-V2/V3): the compressed latent plus the decoupled RoPE key,
        ``layers x (kv_lora_rank + qk_rope_head_dim)`` (arXiv 2405.04434 sec. 2.1).
        """
        if self.attention == "mla":
            return float(self.layers) * float(self.kv_lora_rank + (self.qk_rope_head_dim or 0))
        return 2.0 * self.layers * self.kv_heads * self.head_dim

    def kv_bytes_per_token(self, kv_precision: str = "bf16") -> float:
        """KV-cache bytes per token at ``kv_precision`` (e.g. 131,072 for Llama-3.1-8B bf16)."""
        p = normalize_precision(kv_precision, field="kv_precision")
        return self.kv_elements_per_token() * PRECISION_BYTES[p]

    def attention_flops_per_pair(self) -> float:
        """FLOPs per (query token, cached token) pair, all layers: ``QK^T`` plus ``PV``.

        ``2 x 2 x q_heads x head_dim x layers``; for MLA the query-key dot product also
        spans the RoPE part (``head_dim + qk_rope_head_dim``).
        """
        rope = (self.qk_rope_head_dim or 0) if self.attention == "mla" else 0
        qk = self.head_dim + rope
        return 2.0 * self.q_heads * (qk + self.head_dim) * self.layers


@dataclass(frozen=True)
class AcceleratorSpec:
    """One GPU/accelerator (a row of ``models/accelerators.csv``).

    Peak figures are dense (no sparsity): TFLOPS per GPU, memory in GB (1e9 bytes),
    bandwidth in TB/s, interconnect in GB/s per GPU per direction. ``device_mem_mib`` is the
    memory the device itself reports (``nvidia-smi`` ``memory.total``, MiB), which is what
    serving engines size their KV cache from; :attr:`mem_bytes` uses it when known.
    """

    id: str
    bf16_tflops: float
    mem_gb: float
    mem_bw_tbps: float
    fp8_tflops: float | None = None
    fp4_tflops: float | None = None
    int8_tops: float | None = None
    interconnect: str | None = None
    interconnect_gbps: float | None = None
    gpus_per_node: int | None = None
    mamf_efficiency: float | None = None
    tdp_w: float | None = None
    device_mem_mib: float | None = None

    def __post_init__(self) -> None:
        for name in ("bf16_tflops", "mem_gb", "mem_bw_tbps"):
            v = getattr(self, name)
            if v is None or not (v > 0):
                raise PlannerError(
                    f"accelerator {self.id!r}: field '{name}' must be > 0, got {v!r}"
                )
        if self.device_mem_mib is not None and not (self.device_mem_mib > 0):
            raise PlannerError(f"accelerator {self.id!r}: field 'device_mem_mib' must be > 0 "
                               f"or blank, got {self.device_mem_mib!r}")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AcceleratorSpec:
        """Build from a catalog row (``models/accelerators.csv``)."""
        what = "accelerator"
        return cls(
            id=str(row.get("id") or "?"),
            bf16_tflops=float(_num(row, "bf16_tflops", required=True, what=what)),
            mem_gb=float(_num(row, "mem_gb", required=True, what=what)),
            mem_bw_tbps=float(_num(row, "mem_bw_tbps", required=True, what=what)),
            fp8_tflops=_num(row, "fp8_tflops", what=what),
            fp4_tflops=_num(row, "fp4_tflops", what=what),
            int8_tops=_num(row, "int8_tops", what=what),
            interconnect=(str(row["interconnect"]) if row.get("interconnect") else None),
            interconnect_gbps=_num(row, "interconnect_gbps", what=what),
            gpus_per_node=_int(row, "gpus_per_node", what=what),
            mamf_efficiency=_num(row, "mamf_efficiency", what=what),
            tdp_w=_num(row, "tdp_w", what=what),
            device_mem_mib=_num(row, "device_mem_mib", what=what),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def supported_precisions(self) -> list[str]:
        """Weight precisions this accelerator can serve.

        bf16/fp16 everywhere; fp8 needs ``fp8_tflops``; fp4 needs ``fp4_tflops``; int8 and int4
        are weight-only formats (dequantised to bf16 for the matmul) and run anywhere.
        """
        out = ["bf16", "fp16"]
        if self.fp8_tflops:
            out.append("fp8")
        out += ["int8", "int4"]
        if self.fp4_tflops:
            out.append("fp4")
        return out

    def peak_flops(self, precision: str) -> float:
        """Dense peak FLOP/s for matmuls at ``precision`` (raises if unsupported)."""
        p = normalize_precision(precision)
        if p in ("bf16", "fp16", "int4"):
            return self.bf16_tflops * 1e12
        if p == "int8":
            return (self.int8_tops or self.bf16_tflops) * 1e12
        if p == "fp8":
            if not self.fp8_tflops:
                raise PlannerError(self._unsupported(p, "fp8_tflops"))
            return self.fp8_tflops * 1e12
        if p == "fp4":
            if not self.fp4_tflops:
                raise PlannerError(self._unsupported(p, "fp4_tflops"))
            return self.fp4_tflops * 1e12
        raise PlannerError(f"precision: unknown precision {precision!r}")  # pragma: no cover

    def _unsupported(self, p: str, fld: str) -> str:
        return (
            f"precision: accelerator {self.id!r} has no {p} support (catalog field '{fld}' is "
            f"blank); supported: {', '.join(self.supported_precisions())}"
        )

    @property
    def mem_bytes(self) -> float:
        """Bytes of memory on one device, the one figure planning and validation size from.

        ``device_mem_mib`` x 2^20 when the catalog has the device's own reading (HBM parts
        report about ``mem_gb`` x 2^30: H100 "80 GB" = 81,559 MiB = 85.5e9 B; GDDR parts about
        ``mem_gb`` x 1e9: L40S "48 GB" = 46,068 MiB = 48.3e9 B), else ``mem_gb`` x 1e9, which
        is at or below every device reading in the catalog (the conservative side).
        """
        if self.device_mem_mib:
            return float(self.device_mem_mib) * MIB_BYTES
        return self.mem_gb * 1e9

    @property
    def mem_bw_bytes_per_s(self) -> float:
        return self.mem_bw_tbps * 1e12
