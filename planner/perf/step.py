"""Time of one engine iteration (a "step") of a tensor-parallel replica.

A step pushes ``n = decode + prefill`` tokens through every layer. Its time is the sum of
sequential parts, each a roofline (the larger of its memory time and its compute time):

* **GEMMs** (weights): ``max(weight bytes read / (BW e_bw), 2 N_active n / (peak e(n)))`` with
  ``e(n) = e_max n / (n + n_half)``. MoE: shared weights as above; routed experts read only the
  expected distinct experts ``T = E (1 - (1 - k/E)^n)``, each at the efficiency of its
  ``n k / T`` tokens. Low precision applies per operator
  (:func:`planner.perf.memory.weight_precision`: fp4 checkpoints of MoE models keep
  attention and shared weights at fp8; fp4 weights carry their block scales).
* **Attention**: decode reads every cached token's K/V once, ``max(KV bytes / (BW e_bw),
  pair FLOPs / (peak_bf16 e_attn))``; prefill is FLOP-bound, ``4 h d L`` FLOPs per
  (query, key) pair (causal: ``L (L+1)/2`` pairs for ``L`` prompt tokens).
* **Element-wise kernels** (norms, residuals, RoPE, SwiGLU): activation bytes
  ``f_elem (hidden + ffn/tp) 2 B`` per token per layer at HBM speed.
* **Tensor parallelism**: two ring all-reduces of ``n x hidden x 2 B`` per layer,
  ``2 (tp-1)/tp x bytes / (interconnect e_ic) + latency``.
* **Sampling**: ``sampling_passes x vocab x 4 B`` of fp32 logits traffic per decoded token.
* **Overheads**: ``4 x layers`` GEMM launches of ``kernel_overhead_s``, ``step_overhead_s`` per
  step and ``sequence_overhead_s`` per running sequence (host-side scheduling and bookkeeping).

Roofline sources: Williams et al., "Roofline", CACM 2009; LLM inference arithmetic as in
Pope et al., "Efficiently Scaling Transformer Inference", MLSys 2023.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from planner.perf.memory import (
    check_tp,
    default_kv_precision,
    kv_bytes_per_token_per_gpu,
    memory_plan,
    weight_precision,
)
from planner.perf.params import PerfParams
from planner.perf.specs import AcceleratorSpec, LLMSpec, normalize_precision

_LOWP = ("fp8", "fp4")
_WEIGHT_ONLY = ("int4",)


def gemm_efficiency_max(acc: AcceleratorSpec, precision: str, params: PerfParams) -> float:
    """Large-GEMM efficiency (fraction of the precision's dense peak)."""
    prec = normalize_precision(precision)
    if params.gemm_efficiency is not None:
        base = params.gemm_efficiency
    elif acc.mamf_efficiency:
        base = 0.95 * acc.mamf_efficiency
    else:
        base = 0.72
    if prec == "fp4" and params.fp4_gemm_factor is not None:
        return base * params.fp4_gemm_factor
    if prec in _LOWP:
        return base * params.lowp_gemm_factor
    if prec == "int8":
        return base * (params.lowp_gemm_factor if acc.int8_tops else params.weight_only_gemm_factor)
    if prec in _WEIGHT_ONLY:
        return base * params.weight_only_gemm_factor
    return base


def bw_efficiency(acc: AcceleratorSpec, params: PerfParams) -> float:
    """Achieved HBM bandwidth share: ``params.bw_efficiency`` or 0.92 (>= 3 TB/s) / 0.80."""
    if params.bw_efficiency is not None:
        return float(params.bw_efficiency)
    return 0.92 if acc.mem_bw_tbps >= 3.0 else 0.80


@dataclass(frozen=True)
class StepModel:
    """Vectorised step-time model for one replica (``gpus`` GPUs, tensor-parallel).

    Build with :func:`step_model`. All time methods accept numpy arrays and broadcast.
    """

    llm: LLMSpec
    acc: AcceleratorSpec
    gpus: int
    precision: str
    params: PerfParams
    kv_precision: str = ""
    # derived constants (filled in __post_init__)
    _c: dict[str, float] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        llm, acc, p, tp = self.llm, self.acc, self.params, self.gpus
        prec = normalize_precision(self.precision)
        object.__setattr__(self, "precision", prec)
        kvp = self.kv_precision or default_kv_precision(prec, p)
        object.__setattr__(self, "kv_precision", kvp)
        acc.peak_flops(prec)  # raises for unsupported precision
        # which operators run at which precision (fp4: MoE experts only for MoE models)
        wp = weight_precision(llm, prec)
        peak_shared = acc.peak_flops(wp.shared_compute)
        peak_expert = acc.peak_flops(wp.expert_compute)
        vh = float(llm.embedding_params)
        shared_body = llm.shared_params - vh  # all but the input embedding (lm_head included)
        active_shared = shared_body
        ffn_tok = float(llm.ffn_intermediate or 4 * llm.hidden)
        if llm.is_moe:
            k = float(llm.experts_per_token)
            ffn_tok = k * float(llm.moe_ffn_intermediate or llm.ffn_intermediate or 4 * llm.hidden)
            ffn_tok += float(llm.shared_experts or 0) * float(
                llm.moe_ffn_intermediate or llm.ffn_intermediate or 0
            )
        if llm.attention == "mla":
            r = float(llm.kv_lora_rank) + float(llm.qk_rope_head_dim or 0)
            # absorbed MLA decode: scores over the latent+rope, values in the latent
            dec_pair = 2.0 * llm.q_heads * (r + float(llm.kv_lora_rank)) * llm.layers
        else:
            dec_pair = llm.attention_flops_per_pair()
        c = {
            "bw": acc.mem_bw_bytes_per_s * bw_efficiency(acc, p),
            "peak": peak_shared,
            "peak_expert": peak_expert,
            "e_max": gemm_efficiency_max(acc, wp.shared_compute, p),
            "xf": float(p.expert_efficiency_factor),
            # routed experts at their own precision's efficiency (fp4 MoE: fp4 experts beside
            # fp8 shared weights)
            "xe": gemm_efficiency_max(acc, wp.expert_compute, p)
            / gemm_efficiency_max(acc, wp.shared_compute, p),
            "attn_rate": acc.bf16_tflops * 1e12 * p.attention_efficiency,
            "shared_bytes": shared_body * wp.shared_bytes / tp,
            "shared_flops_tok": 2.0 * (active_shared - vh) / tp,  # without lm_head
            "head_flops_tok": 2.0 * vh / tp,
            "expert_bytes": llm.expert_params * wp.expert_bytes / tp,
            "expert_flops_tok": 2.0 * float(llm.experts_per_token or 0) * llm.expert_params / tp,
            "experts": float(llm.experts or 0),
            "k": float(llm.experts_per_token or 0),
            "kv_bytes_tok": kv_bytes_per_token_per_gpu(llm, kvp, tp),
            "dec_pair_flops": dec_pair / tp,
            "pre_pair_flops": llm.attention_flops_per_pair() / tp,
            "elem_bytes_tok": p.elementwise_bytes_factor
            * (llm.hidden + ffn_tok / tp)
            * 2.0
            * llm.layers,
            "sample_bytes_tok": p.sampling_passes * 4.0 * float(llm.vocab),
            "fixed_s": p.step_overhead_s + 4.0 * llm.layers * p.kernel_overhead_s,
            "ar_bytes_tok": 2.0 * llm.hidden,
            "ar_count": 2.0 * llm.layers if tp > 1 else 0.0,
            "ic_bw": (acc.interconnect_gbps or p.pcie_gbps_fallback) * 1e9
            * p.interconnect_efficiency,
            "n_half": p.gemm_n_half_tokens,
        }
        object.__setattr__(self, "_c", c)

    # ------------------------------------------------------------------ helpers
    def _eff(self, n: Any) -> Any:
        c = self._c
        n = np.maximum(n, 1e-9)
        return c["e_max"] * n / (n + c["n_half"])

    def gemm_time_s(self, n_tokens: Any, logit_tokens: Any = None) -> Any:
        """Time of all weight GEMMs for ``n_tokens`` tokens (``logit_tokens`` of them need the
        LM head; default all)."""
        c = self._c
        n = np.asarray(n_tokens, dtype=float)
        nl = n if logit_tokens is None else np.asarray(logit_tokens, dtype=float)
        rate = c["peak"] * self._eff(n)
        shared_c = (c["shared_flops_tok"] * n + c["head_flops_tok"] * nl) / rate
        shared_m = c["shared_bytes"] / c["bw"]
        t = np.maximum(shared_c, shared_m)
        if c["experts"] > 0:
            touched = c["experts"] * (1.0 - np.power(1.0 - c["k"] / c["experts"], n))
            # each touched expert's GEMM runs on the tokens routed to it (n k / touched, at
            # least one), at the efficiency of that size
            per_expert_tokens = n * c["k"] / np.maximum(touched, 1e-300)
            xf = c["xf"]  # grouped expert GEMMs: a share of the dense efficiency
            exp_c = c["expert_flops_tok"] * n / (
                c["peak_expert"] * xf * c["xe"] * self._eff(per_expert_tokens))
            exp_m = touched * c["expert_bytes"] / (c["bw"] * xf)
            t = t + np.maximum(exp_c, exp_m)
        return np.where(n > 0, t, 0.0)

    def step_breakdown(
        self,
        decode_tokens: Any,
        kv_tokens: Any,
        prefill_tokens: Any = 0.0,
        prefill_pairs: Any = 0.0,
    ) -> dict[str, Any]:
        """Parts of one step's time (seconds), broadcast over the inputs.

        Parameters
        ----------
        decode_tokens : array_like
            Sequences decoding one token in this step (the decode batch).
        kv_tokens : array_like
            Cached tokens the decode batch attends to, summed over its sequences
            (already capped at the sliding window, if any).
        prefill_tokens : array_like
            Prompt tokens processed in this step (chunked prefill).
        prefill_pairs : array_like
            (query, key) pairs of the prefill attention in this step.
        """
        c = self._c
        d = np.asarray(decode_tokens, dtype=float)
        kv = np.asarray(kv_tokens, dtype=float)
        pt = np.asarray(prefill_tokens, dtype=float)
        pp = np.asarray(prefill_pairs, dtype=float)
        n = d + pt
        gemm = self.gemm_time_s(n, d)
        attn_dec = np.maximum(
            kv * c["kv_bytes_tok"] / c["bw"], kv * c["dec_pair_flops"] / c["attn_rate"]
        )
        attn_pre = pp * c["pre_pair_flops"] / c["attn_rate"]
        elem = n * c["elem_bytes_tok"] / c["bw"]
        sample = d * c["sample_bytes_tok"] / c["bw"]
        if c["ar_count"]:
            tp = float(self.gpus)
            ar = c["ar_count"] * (
                2.0 * (tp - 1.0) / tp * n * c["ar_bytes_tok"] / c["ic_bw"]
                + self.params.allreduce_latency_s
            )
        else:
            ar = np.zeros_like(n)
        fixed = np.where(n > 0, c["fixed_s"], 0.0) + d * self.params.sequence_overhead_s
        return {
            "gemm_s": gemm,
            "attention_decode_s": attn_dec,
            "attention_prefill_s": attn_pre,
            "elementwise_s": elem,
            "sampling_s": sample,
            "allreduce_s": ar,
            "overhead_s": fixed,
        }

    def step_time_s(
        self,
        decode_tokens: Any,
        kv_tokens: Any,
        prefill_tokens: Any = 0.0,
        prefill_pairs: Any = 0.0,
    ) -> Any:
        """Total time of one mixed step (see :meth:`step_breakdown` for the arguments)."""
        parts = self.step_breakdown(decode_tokens, kv_tokens, prefill_tokens, prefill_pairs)
        return sum(parts.values())

    def prefill_pairs(self, prompt_tokens: Any) -> Any:
        """Causal (query, key) pairs of one prompt of ``L`` tokens: ``L (L+1) / 2``, or with a
        sliding window ``w < L``: ``w (w+1)/2 + (L - w) w``."""
        L = np.asarray(prompt_tokens, dtype=float)
        w = self.llm.sliding_window
        full = L * (L + 1.0) / 2.0
        if not w:
            return full
        w = float(w)
        return np.where(L > w, w * (w + 1.0) / 2.0 + (L - w) * w, full)

    def prefill_time_s(self, n_tokens: Any) -> Any:
        """Time of one prefill iteration over ``n_tokens`` prompt tokens, no decodes.

        Attention is charged as one causal prompt of ``n_tokens`` (an upper bound when the
        iteration packs several shorter prompts).
        """
        n = np.asarray(n_tokens, dtype=float)
        return self.step_time_s(0.0, 0.0, n, self.prefill_pairs(n))

    def decode_step_time_s(self, batch: Any, kv_tokens: Any) -> Any:
        """Time of one decode-only step for ``batch`` sequences holding ``kv_tokens`` cached
        tokens in total (sum over the batch)."""
        b = np.asarray(batch, dtype=float)
        kv = np.asarray(kv_tokens, dtype=float)
        w = self.llm.sliding_window
        if w:
            kv = np.minimum(kv, b * float(w))
        return self.step_time_s(b, kv)

    def padded_decode_step_time_s(self, batch: Any, kv_tokens: Any, graph_batch: Any) -> Any:
        """Time of a decode-only step replayed from a CUDA graph captured for ``graph_batch``
        sequences (``graph_batch >= batch``).

        An engine that pads decode batches up to a captured graph size (TensorRT-LLM's
        PyTorch backend with ``cuda_graph_config.enable_padding``: it appends dummy
        generation requests of one cached token, ``CUDAGraphRunner._get_padded_batch``) runs
        the token-proportional kernels (GEMMs with the LM head, element-wise kernels,
        tensor-parallel all-reduces) on ``graph_batch`` tokens, while attention reads only
        the real requests' ``kv_tokens`` and only the real ``batch`` is sampled. Equal to
        :meth:`decode_step_time_s` when ``graph_batch == batch``.
        """
        b = np.asarray(batch, dtype=float)
        g = np.maximum(np.asarray(graph_batch, dtype=float), b)
        kv = np.asarray(kv_tokens, dtype=float)
        w = self.llm.sliding_window
        if w:
            kv = np.minimum(kv, b * float(w))
        parts = self.step_breakdown(g, kv)
        safe = np.where(g > 0, g, 1.0)
        parts["sampling_s"] = parts["sampling_s"] * b / safe
        parts["overhead_s"] = parts["overhead_s"] - (g - b) * self.params.sequence_overhead_s
        return sum(parts.values())

    def gemm_compute_bound(self, decode_tokens: Any, prefill_tokens: Any = 0.0) -> Any:
        """True where the shared-weight GEMMs are compute-bound (FLOP time >= weight-read time)."""
        c = self._c
        d = np.asarray(decode_tokens, dtype=float)
        n = d + np.asarray(prefill_tokens, dtype=float)
        comp = (c["shared_flops_tok"] * n + c["head_flops_tok"] * d) / (c["peak"] * self._eff(n))
        return comp >= c["shared_bytes"] / c["bw"]

    @property
    def memory(self):
        """The replica's :class:`planner.perf.memory.MemoryPlan`."""
        return memory_plan(self.llm, self.acc, self.gpus, self.precision, self.params)

    @property
    def kv_capacity_tokens(self) -> int:
        """KV-cache capacity of the replica in tokens (0 when the weights do not fit)."""
        mp = self.memory
        return int(mp.kv_capacity_tokens) if mp.fits else 0

    @property
    def max_batch(self) -> int:
        """Engine cap on concurrent sequences (``params.max_batch``)."""
        return int(self.params.max_batch)


def step_model(
    llm: LLMSpec,
    acc: AcceleratorSpec,
    gpus: int,
    precision: str = "bf16",
    params: PerfParams | None = None,
) -> StepModel:
    """Build the :class:`StepModel` of one replica (validates TP degree and precision)."""
    g = check_tp(llm, acc, gpus)
    prec = normalize_precision(precision)
    acc.peak_flops(prec)
    return StepModel(llm=llm, acc=acc, gpus=g, precision=prec, params=params or PerfParams())
