"""Efficiency parameters of the serving performance model.

Every number the model does not derive from the model architecture or the accelerator's
datasheet is a named field here, with its source. All are overridable per scenario
(``PerfParams(**overrides)`` or :meth:`PerfParams.replace`).

Where the defaults come from
----------------------------
* GEMM efficiency curve and HBM efficiency: least-squares fit of
  ``t(n) = max(bytes / (BW e_bw), flops / (peak e_max n / (n + n_half))) + t_kernel``
  to Vidur's measured MLP up/down-projection timings (``planner/data/profiling``,
  A100 and H100, TP 1-2, 1-4096 tokens; :func:`planner.perf.calibration.fit_gemm_curve`
  reproduces it): H100 ``e_max`` 0.76 (MAMF bf16 0.80), ``n_half`` 147 tokens,
  ``e_bw`` 0.92, ``t_kernel`` 9 us; A100 ``e_max`` 0.75 (MAMF 0.87), ``n_half`` 85,
  ``e_bw`` 0.80, ``t_kernel`` 7 us.
* Low-precision matmuls: stas00/ml-engineering MAMF table (``compute/accelerator/README.md``):
  H100 fp8 0.709 vs bf16 0.803 of the respective peaks, ratio 0.88.
* Memory headroom and batch caps: TensorRT-LLM and vLLM defaults (see the fields).
* ``elementwise_bytes_factor``: the only parameter fitted to the end-to-end throughput
  measurements (``measured_benchmarks_calibration.csv``, least squares on log error); see
  ``studies/perf-validation/README.md`` for the fit and its leave-one-out errors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from planner.errors import PlannerError


@dataclass(frozen=True)
class PerfParams:
    """Named, documented efficiency parameters (all overridable).

    Attributes
    ----------
    gemm_efficiency : float or None
        Large-GEMM efficiency at bf16, as a fraction of the dense peak. ``None``: 0.95 x the
        accelerator's measured ``mamf_efficiency`` (Vidur H100 fit 0.76 / MAMF 0.80), or 0.72
        when the catalog has no MAMF figure.
    lowp_gemm_factor : float
        fp8/fp4/int8 (W8A8) GEMMs reach this share of the bf16 efficiency, applied to their
        own (higher) peak. MAMF H100 fp8/bf16 = 0.709/0.803 = 0.88.
    fp4_gemm_factor : float or None
        fp4 (NVFP4/MXFP4) GEMMs reach this share of the bf16 efficiency, applied to the fp4
        peak: the block-scaled fp4 tensor-core GEMMs do not realise their 2x-over-fp8 peak end
        to end. 0.54: least squares on log error over the 10 Llama-3.3-70B B200 FP4 rows of
        the TensorRT-LLM perf overview (``studies/perf-validation``; the Llama-3.1-405B rows
        held out). ``None``: as ``lowp_gemm_factor`` (fp8).
    weight_only_gemm_factor : float
        Weight-only int8/int4 (AWQ/GPTQ-style, dequantised to bf16): share of the bf16 GEMM
        efficiency once compute-bound. Assumption (dequantisation work in the main loop), not
        calibrated.
    gemm_n_half_tokens : float
        Tokens in a step at which a GEMM reaches half its large-size efficiency
        (``e(n) = e_max n / (n + n_half)``); small steps are inefficient. Vidur fit: 85 (A100)
        to 147 (H100).
    expert_efficiency_factor : float
        Routed-expert (grouped MoE) GEMMs reach this share of the dense GEMMs' efficiency,
        both of the GEMM efficiency and of the achieved bandwidth of their weight reads
        (many small GEMMs, routing and permutation kernels). 1.0 by default;
        ``studies/perf-validation`` fits it on the closed-loop DeepSeek-R1 rows.
    bw_efficiency : float or None
        Achieved share of the HBM bandwidth when streaming weights and the KV cache.
        ``None``: 0.92 for HBM3-class parts (>= 3 TB/s; Vidur H100 fit 0.92) and 0.80 otherwise
        (Vidur A100 fit 0.80).
    attention_efficiency : float
        FlashAttention-style prefill attention: share of the bf16 dense peak.
    kernel_overhead_s : float
        Fixed time per GEMM launch (ramp-up/tail). Vidur fit: 7-9 us. Four GEMMs per layer
        (QKV, O, gate/up, down) are charged per step.
    step_overhead_s : float
        Fixed time per engine iteration (scheduling, sampling launch, host work) beyond the
        kernel launches; 0.5 ms assumed for a CUDA-graph engine (the calibration fit is
        insensitive to it).
    sequence_overhead_s : float
        Host time per running sequence per step (request bookkeeping in Python-heavy
        runtimes). 0 by default: the calibration fit gives 0.3 us, negligible.
    request_overhead_s : float
        Fixed client-visible time per request before its first token, beyond the engine's
        steps (API server, tokenisation, scheduling hand-offs, streaming the first token).
        Added to the TTFT of the closed-loop model (:mod:`planner.perf.closedloop`), where
        the request stays in flight meanwhile. 0 by default (pure engine time);
        ``studies/perf-validation`` fits it per serving engine (:mod:`planner.perf.
        closed_loop_validation`).
    scheduler_poll_steps : int
        The engine looks for newly arrived requests only every this many decode iterations
        while others run, and right after an iteration with prompt tokens (SGLang
        ``--scheduler-recv-interval``): a request arriving during a decode step waits
        ``poll / 2`` decode steps on average (the step in progress and the rest of the
        polling interval) before its prefill can start.
        1 by default (every step: vLLM, TensorRT-LLM, SGLang's default). Read by the
        closed-loop model (:mod:`planner.perf.closedloop`).
    elementwise_bytes_factor : float
        Activation traffic of the non-GEMM kernels (norms, residual adds, RoPE, SwiGLU,
        activation quantisation, GEMM activation I/O not hidden behind compute), in units of
        ``(hidden + ffn) x 2 bytes`` per token per layer. The one parameter fitted to the
        end-to-end measurements: 8.0 (an unfused kernel-by-kernel count gives about 5).
        0 disables it.
    sampling_passes : float
        Passes over the fp32 logits per decoded token (LM-head output write, softmax read and
        write, sampling read): ``sampling_passes x vocab x 4`` bytes at HBM speed.
    interconnect_efficiency : float
        Achieved share of ``interconnect_gbps`` by the ring all-reduce (NCCL bus bandwidth).
    allreduce_latency_s : float
        Fixed latency of one all-reduce (two per layer per step under tensor parallelism).
    pcie_gbps_fallback : float
        Interconnect bandwidth used when the catalog row has no ``interconnect_gbps``
        (PCIe 4.0 x16, one direction).
    runtime_reserve_gb : float
        Per-GPU memory not available to weights or KV cache (CUDA context, activations,
        workspaces).
    nvls_reserve_gb : float
        Further per-GPU memory NCCL holds for NVLink SHARP (NVLS) when a tensor-parallel
        group of more than two GPUs shares an NVSwitch of the NVLink-4/5 generation (HGX
        H100/H200/B200; :func:`planner.perf.memory.comm_reserve_bytes`). NCCL enables NVLS
        there by default, and only for more than two GPUs. 5.3 GB: vLLM issue 9699 (8x H200,
        Llama-3.1-405B TP8) measured 17,595 KV blocks with NVLS on against about 22,700
        with ``NCCL_NVLS_ENABLE=0``, 5,100 blocks of 16 tokens x 126 layers x 1 KV head x
        128 x 2 x 2 B = 1.03 MB each. 0 for an engine that disables NVLS (SGLang's default).
    kv_mem_fraction : float
        Share of the memory left after weights and the reserve that the engine gives to the KV
        cache (TensorRT-LLM ``kv_cache_free_gpu_mem_fraction`` and vLLM
        ``gpu_memory_utilization`` both default to 0.90).
    kv_precision : str or None
        KV-cache precision. ``None``: fp8 when the weights are fp8/fp4 (NVIDIA ModelOpt
        checkpoints quantise the KV cache to fp8), otherwise bf16.
    kv_reserve : str
        ``"full"``: every running request reserves ``input + output`` tokens of KV cache up
        front (TensorRT-LLM ``GUARANTEED_NO_EVICT``); ``"mean"``: paged on demand, a request
        holds ``input + output / 2`` on average (vLLM with preemption).
    max_batch : int
        Engine cap on concurrent requests (vLLM V1 ``max_num_seqs`` default 1024 on
        80 GB-class GPUs; trtllm-bench caps at 4096).
    max_tokens_per_step : int
        Engine cap on tokens (decode + prefill chunk) per iteration (vLLM V1
        ``max_num_batched_tokens`` 8192 for the API server; trtllm-bench <= 32768).
    chunked_prefill : bool
        Whether the engine splits prompts into chunks that share iterations with the
        running decodes (vLLM V1 default, ``True``) or runs prefill-only iterations that
        stall them (``False``). Read by the request-level simulator
        (:class:`planner.sim.plan.PoolSpec`); a scenario's ``perf`` table may give it as
        ``true``/``false`` (or 1/0).
    """

    gemm_efficiency: float | None = None
    lowp_gemm_factor: float = 0.88
    fp4_gemm_factor: float | None = 0.54
    weight_only_gemm_factor: float = 0.7
    gemm_n_half_tokens: float = 128.0
    expert_efficiency_factor: float = 1.0
    bw_efficiency: float | None = None
    attention_efficiency: float = 0.5
    kernel_overhead_s: float = 8e-6
    step_overhead_s: float = 5e-4
    sequence_overhead_s: float = 0.0
    request_overhead_s: float = 0.0
    scheduler_poll_steps: int = 1
    elementwise_bytes_factor: float = 8.0
    sampling_passes: float = 4.0
    interconnect_efficiency: float = 0.8
    allreduce_latency_s: float = 1e-5
    pcie_gbps_fallback: float = 32.0
    runtime_reserve_gb: float = 3.0
    nvls_reserve_gb: float = 5.3
    kv_mem_fraction: float = 0.90
    kv_precision: str | None = None
    kv_reserve: str = "full"
    max_batch: int = 1024
    max_tokens_per_step: int = 8192
    chunked_prefill: bool = True

    def __post_init__(self) -> None:
        unit = (
            "lowp_gemm_factor", "weight_only_gemm_factor", "expert_efficiency_factor",
            "attention_efficiency", "interconnect_efficiency", "kv_mem_fraction",
        )
        for name in unit:
            v = getattr(self, name)
            if not (0.0 < float(v) <= 1.0):
                raise PlannerError(f"perf params: '{name}' must be in (0, 1], got {v!r}")
        if self.fp4_gemm_factor is not None and not (0.0 < self.fp4_gemm_factor <= 1.0):
            raise PlannerError(
                f"perf params: 'fp4_gemm_factor' must be in (0, 1], got {self.fp4_gemm_factor!r}"
            )
        if self.bw_efficiency is not None and not (0.0 < self.bw_efficiency <= 1.0):
            raise PlannerError(
                f"perf params: 'bw_efficiency' must be in (0, 1], got {self.bw_efficiency!r}"
            )
        if self.gemm_efficiency is not None and not (0.0 < self.gemm_efficiency <= 1.0):
            raise PlannerError(
                f"perf params: 'gemm_efficiency' must be in (0, 1], got {self.gemm_efficiency!r}"
            )
        nonneg = (
            "gemm_n_half_tokens", "kernel_overhead_s", "step_overhead_s", "sequence_overhead_s",
            "request_overhead_s",
            "elementwise_bytes_factor", "sampling_passes", "allreduce_latency_s",
            "runtime_reserve_gb", "nvls_reserve_gb",
        )
        for name in nonneg:
            v = getattr(self, name)
            if not (float(v) >= 0.0):
                raise PlannerError(f"perf params: '{name}' must be >= 0, got {v!r}")
        if not self.pcie_gbps_fallback > 0:
            raise PlannerError("perf params: 'pcie_gbps_fallback' must be > 0")
        if self.kv_reserve not in ("full", "mean"):
            raise PlannerError(
                f"perf params: 'kv_reserve' must be 'full' or 'mean', got {self.kv_reserve!r}"
            )
        if not (float(self.scheduler_poll_steps) >= 1.0):
            raise PlannerError("perf params: 'scheduler_poll_steps' must be >= 1, got "
                               f"{self.scheduler_poll_steps!r}")
        if int(self.max_batch) < 1:
            raise PlannerError(f"perf params: 'max_batch' must be >= 1, got {self.max_batch!r}")
        if int(self.max_tokens_per_step) < 1:
            raise PlannerError(
                f"perf params: 'max_tokens_per_step' must be >= 1, got {self.max_tokens_per_step!r}"
            )
        cp = self.chunked_prefill
        if isinstance(cp, int | float) and not isinstance(cp, bool) and cp in (0, 1):
            object.__setattr__(self, "chunked_prefill", bool(cp))  # a scenario's perf = {..}
        elif not isinstance(cp, bool):
            raise PlannerError(
                f"perf params: 'chunked_prefill' must be true or false, got {cp!r}"
            )

    def replace(self, **changes: Any) -> PerfParams:
        """Copy with some fields changed (unknown names raise :class:`PlannerError`)."""
        known = {f.name for f in fields(self)}
        bad = sorted(set(changes) - known)
        if bad:
            raise PlannerError(
                f"perf params: unknown parameter(s) {', '.join(bad)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> PerfParams:
        """Build from a scenario mapping (unknown keys raise :class:`PlannerError`)."""
        return cls().replace(**(values or {}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
