"""Predict the published closed-loop benchmarks (latency and throughput vs concurrency).

Data (``planner/data/reference``, sources and licences in its ``SOURCES.md``):

* ``closed_loop_measurements.csv``: NVIDIA NIM (Llama-3.3-70B, 2x H100 fp8, AIPerf), means.
* ``closed_loop_benchmarks.csv``: SemiAnalysis InferenceX (DeepSeek-R1 on B200 fp4/fp8,
  H200 fp8, MI300X fp8; SGLang and TensorRT-LLM; 1k/1k, 1k/8k, 8k/1k tokens; concurrency
  4-128) and dstack (DeepSeek-R1 on 8x H200 / 8x MI300X; SGLang, vLLM, TensorRT-LLM;
  3200/800 tokens; concurrency 4-128).

Each row is predicted with :func:`planner.perf.closedloop.closed_loop_arrays` over the same
step model the simulator and the sizing use, with the engine's own settings
(:func:`engine_params`). What is compared:

* **throughput**: output tokens/s of the replica;
* **ITL**: mean time per output token after the first (median where no mean is published:
  the two agree within 1% on the InferenceX rows that publish both);
* **TTFT**: the *median* TTFT where published, else the mean. The benchmark clients start
  all ``c`` requests at once and send only ``10 c`` (InferenceX) or 500 (dstack) requests,
  so the published *mean* TTFT carries the start-up wave of ``c`` simultaneous prefills
  (InferenceX median/mean TTFT = 0.55 over the 124 rows with both); the median is the
  steady-state figure the closed-loop model describes.

Rows are split deterministically into a fit half and a held-out half (:func:`split`): whole
curves (same source, accelerator, engine, precision, parallelism and lengths) alternate by
hash within each source/GPU/engine/precision stratum, so a held-out curve has no point in the
fit half.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from planner.perf.closedloop import closed_loop_arrays
from planner.perf.memory import device_accelerator, max_concurrent_requests, memory_plan
from planner.perf.params import PerfParams
from planner.perf.specs import AcceleratorSpec, LLMSpec
from planner.perf.step import step_model
from planner.perf.validation import REFERENCE_DATA

BENCHMARKS_FILE = "closed_loop_benchmarks.csv"
NIM_FILE = "closed_loop_measurements.csv"

#: Configuration columns: rows sharing them form one latency-vs-concurrency curve.
CURVE_KEY = ["source", "catalog_model", "accelerator", "engine", "precision", "tp", "ep",
             "dp_attention", "isl", "osl"]

#: Engine defaults that set the step model's batch and chunk (not fitted):
#: SGLang ``--chunked-prefill-size`` 8192 and ``--mem-fraction-static`` ~0.88 on large GPUs;
#: vLLM V1 ``max_num_batched_tokens`` 8192 (API server), ``gpu_memory_utilization`` 0.90;
#: TensorRT-LLM (``trtllm-serve``/NIM) ``max_num_tokens`` 8192, KV 0.90 of free memory.
#: All reserve KV on demand (paged, ``kv_reserve="mean"``) except TensorRT-LLM, whose default
#: capacity scheduler guarantees no eviction (``"full"``).
ENGINE_SETTINGS: dict[str, dict[str, Any]] = {
    "SGLang": dict(max_tokens_per_step=8192, kv_mem_fraction=0.88, kv_reserve="mean"),
    "vLLM": dict(max_tokens_per_step=8192, kv_mem_fraction=0.90, kv_reserve="mean"),
    "TensorRT-LLM": dict(max_tokens_per_step=8192, kv_mem_fraction=0.90, kv_reserve="full"),
    "NIM": dict(max_tokens_per_step=8192, kv_mem_fraction=0.90, kv_reserve="full"),
}


#: SemiAnalysis InferenceX launch settings of its DeepSeek-R1 runs (``benchmarks/`` of
#: SemiAnalysisAI/InferenceX; ``SOURCES.md``), per engine and GPU/precision: SGLang
#: ``--chunked-prefill-size``, ``--mem-fraction-static`` (share of the *whole* memory for
#: weights and KV cache) and ``--scheduler-recv-interval`` (new requests are taken in every
#: that many iterations: 30 from concurrency 16 on B200, else 10; 1 by default);
#: (MI300X runs add ``--num-continuous-decode-steps 4``, not modelled as a polling interval:
#: their measured median TTFT stays flat, 171 -> 188 ms, from concurrency 4 to 64 while the
#: ITL doubles);
#: TensorRT-LLM ``kv_cache_config.free_gpu_memory_fraction``, ``--max_num_tokens =
#: max(8192, (c + ISL + 127) // 64 x 64)`` and, with attention data parallelism,
#: ``attention_dp_config: enable_balance, timeout_iters 60`` (prompts are held until every
#: DP rank has one, at most 60 iterations).
INFERENCEX_SGLANG = {
    # (accelerator, precision, tp): (chunk tokens, mem-fraction-static, recv interval c<16, c>=16)
    ("b200", "fp4", 4): (16384, 0.85, 10, 30),
    ("b200", "fp4", 8): (16384, 0.85, 10, 30),
    ("b200", "fp8", 4): (8192, 0.95, 10, 10),
    ("b200", "fp8", 8): (32768, 0.82, 10, 30),
    ("h200", "fp8", 8): (32768, 0.82, 1, 1),
    ("mi300x", "fp8", 8): (131072, 0.80, 1, 1),
}
INFERENCEX_TRTLLM_KV_FRACTION = {("b200", "fp4"): 0.80, ("b200", "fp8"): 0.80,
                                 ("h200", "fp8"): 0.75}
TRTLLM_ADP_TIMEOUT_STEPS = 60

#: TensorRT-LLM MoE backend (``moe_config.backend``) of the InferenceX DeepSeek-R1 runs, from
#: the launch scripts' history (``benchmarks/dsr1_*_trt.sh``, ``SOURCES.md``): H200 fp8
#: ``CUTLASS``; B200 fp4 ``TRTLLM`` (``CUTLASS`` with attention data parallelism); B200 fp8
#: ``DEEPGEMM`` (TensorRT-LLM 1.1.0rc2.post2, EP = TP = 8) until the update of
#: :data:`TRTLLM_B200_FP8_UPDATE` (InferenceX PR #594: release 1.2.0rc6.post2, backend
#: ``TRTLLM``, EP 1), after which ``DEEPGEMM`` only for 1k/8k tokens at concurrency >= 256.
TRTLLM_B200_FP8_UPDATE = "2026-01-29"


def _trtllm_moe_backend(acc: str, precision: str, dp: bool, date: str, isl: int, osl: int,
                        c: float) -> str:
    if (acc, precision) == ("b200", "fp8"):
        if str(date) < TRTLLM_B200_FP8_UPDATE:
            return "DEEPGEMM"
        return "DEEPGEMM" if (isl, osl) == (1024, 8192) and c >= 256 else "TRTLLM"
    if (acc, precision) == ("b200", "fp4"):
        return "CUTLASS" if dp else "TRTLLM"
    if (acc, precision) == ("h200", "fp8"):
        return "CUTLASS"
    return ""


def launch_settings(df: pd.DataFrame) -> pd.DataFrame:
    """Per-row engine settings of the published runs: ``max_tokens_per_step``,
    ``kv_mem_fraction`` (``NaN``: the engine default of :data:`ENGINE_SETTINGS`),
    ``mem_fraction_static`` (SGLang: share of the whole memory for weights and KV; ``NaN``
    otherwise), ``poll_steps``, ``admission_group``, ``admission_timeout_steps``,
    ``moe_backend`` (TensorRT-LLM ``moe_config.backend``, :func:`_trtllm_moe_backend`; ``""``:
    not recorded).

    InferenceX rows follow its launch scripts (:data:`INFERENCEX_SGLANG`,
    :data:`INFERENCEX_TRTLLM_KV_FRACTION`); other sources keep the engine defaults."""
    n = len(df)
    out = pd.DataFrame({
        "max_tokens_per_step": [float(ENGINE_SETTINGS.get(e, ENGINE_SETTINGS["vLLM"])
                                      ["max_tokens_per_step"]) for e in df["engine"]],
        "kv_mem_fraction": np.nan, "mem_fraction_static": np.nan, "poll_steps": 1.0,
        "admission_group": 1.0, "admission_timeout_steps": np.inf, "moe_backend": ""},
        index=df.index)
    if n == 0:
        return out
    ix = df["source"] == "InferenceX"
    c = df["concurrency"].to_numpy(float)
    for i in np.flatnonzero(ix.to_numpy()):
        r = df.iloc[i]
        key = (str(r["accelerator"]), str(r["precision"]), int(r["tp"]))
        if r["engine"] == "SGLang" and key in INFERENCEX_SGLANG:
            chunk, frac, lo, hi = INFERENCEX_SGLANG[key]
            out.iloc[i, out.columns.get_loc("max_tokens_per_step")] = float(chunk)
            out.iloc[i, out.columns.get_loc("mem_fraction_static")] = frac
            out.iloc[i, out.columns.get_loc("poll_steps")] = float(hi if c[i] >= 16 else lo)
        elif r["engine"] == "TensorRT-LLM":
            tok = max(8192, (int(c[i]) + int(r["isl"]) + 127) // 64 * 64)
            out.iloc[i, out.columns.get_loc("max_tokens_per_step")] = float(tok)
            out.iloc[i, out.columns.get_loc("moe_backend")] = _trtllm_moe_backend(
                key[0], key[1], bool(r["dp_attention"]), str(r.get("date", "")),
                int(r["isl"]), int(r["osl"]), float(c[i]))
            kvf = INFERENCEX_TRTLLM_KV_FRACTION.get(key[:2])
            if kvf is not None:
                out.iloc[i, out.columns.get_loc("kv_mem_fraction")] = kvf
            if bool(r["dp_attention"]):
                out.iloc[i, out.columns.get_loc("admission_group")] = float(r["tp"])
                out.iloc[i, out.columns.get_loc("admission_timeout_steps")] = float(
                    TRTLLM_ADP_TIMEOUT_STEPS)
    return out


def load_closed_loop(path_dir: Any | None = None) -> pd.DataFrame:
    """All closed-loop rows in one table (NIM rows mapped to the common columns).

    Columns as ``closed_loop_benchmarks.csv`` plus ``ttft_target_ms`` (median if published,
    else mean), ``itl_target_ms`` (mean if published, else median) and ``ttft_stat``.
    """
    d = REFERENCE_DATA if path_dir is None else path_dir
    bench = pd.read_csv(f"{d}/{BENCHMARKS_FILE}")
    nim = pd.read_csv(f"{d}/{NIM_FILE}")
    nim = pd.DataFrame({
        "id": nim["id"], "source": "NIM", "model": nim["model"],
        "catalog_model": nim["catalog_model"], "hardware": nim["hardware"],
        "accelerator": nim["accelerator"], "gpus": nim["gpus"], "precision": nim["precision"],
        "tp": nim["tp"], "ep": 1, "dp_attention": False, "isl": nim["isl"], "osl": nim["osl"],
        "mean_input_tokens": nim["isl"].astype(float),
        "mean_output_tokens": nim["osl"].astype(float), "concurrency": nim["concurrency"],
        "engine": "NIM", "engine_version": nim["engine"], "ttft_mean_ms": nim["ttft_ms"],
        "ttft_median_ms": np.nan, "itl_mean_ms": nim["itl_ms"], "itl_median_ms": np.nan,
        "output_tokens_per_s": nim["output_tokens_per_s"], "date": "",
        "source_url": nim["source_url"], "accessed": nim["accessed"],
    })
    df = pd.concat([nim, bench], ignore_index=True)
    df["dp_attention"] = df["dp_attention"].astype(bool)
    df["ttft_stat"] = np.where(df["ttft_median_ms"].notna(), "median", "mean")
    df["ttft_target_ms"] = df["ttft_median_ms"].fillna(df["ttft_mean_ms"])
    df["itl_target_ms"] = df["itl_mean_ms"].fillna(df["itl_median_ms"])
    return df


#: Sources the fitted model is scored on. dstack's rows (DeepSeek-R1 about a month after
#: its release: SGLang 0.4.2-0.4.3, vLLM 0.7, TensorRT-LLM 0.17, early 2025) are kept in the
#: data set and reported separately: their decode is 2-3x slower than InferenceX's runs of
#: the same model on the same GPUs a year later, a software-maturity gap no hardware
#: efficiency can represent.
IN_SCOPE_SOURCES = ("InferenceX", "NIM")


def catalog_specs(df: pd.DataFrame, catalog: Any) -> tuple[dict[str, LLMSpec],
                                                          dict[str, AcceleratorSpec]]:
    """Model and accelerator specifications of ``df``'s rows from the project catalog."""
    llms = {m: LLMSpec.from_row(catalog.llm(m)) for m in df["catalog_model"].unique()}
    accs = {a: AcceleratorSpec.from_row(catalog.accelerator(a))
            for a in df["accelerator"].unique()}
    return llms, accs


def curve_id(df: pd.DataFrame) -> pd.Series:
    """A stable text key of each row's curve (its :data:`CURVE_KEY` values)."""
    return df[CURVE_KEY].astype(str).agg("|".join, axis=1)


#: Strata of the split: every GPU, engine and precision of every source is in both halves.
STRATUM_KEY = ["source", "accelerator", "engine", "precision"]


def _hash01(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 16**8


def split(df: pd.DataFrame) -> pd.Series:
    """Deterministic fit/held-out split: ``True`` where the row is held out.

    Within each stratum (:data:`STRATUM_KEY`) the curves (:data:`CURVE_KEY`) are ranked by
    the SHA-256 of their key and every second one is held out whole, so a held-out curve has
    no point in the fit half. A stratum with a single curve alternates its concurrencies
    instead (ranked the same way).
    """
    d = df.assign(_curve=curve_id(df))
    d["_stratum"] = d[STRATUM_KEY].astype(str).agg("|".join, axis=1)
    d["_h"] = d["_curve"].map(_hash01)
    held = pd.Series(False, index=df.index)
    for _, g in d.groupby("_stratum"):
        curves = g.drop_duplicates("_curve").sort_values("_h")["_curve"].tolist()
        if len(curves) > 1:
            out = set(curves[1::2])
            held.loc[g.index] = g["_curve"].isin(out).to_numpy()
        else:
            conc = sorted(g["concurrency"].unique(),
                          key=lambda c: _hash01(f"{curves[0]}|{c}"))
            held.loc[g.index] = g["concurrency"].isin(conc[1::2]).to_numpy()
    return held


@dataclass(frozen=True)
class FitParams:
    """The few physical parameters fitted to the closed-loop data.

    ``gemm`` and ``bw``: large-GEMM efficiency (share of the bf16 dense peak, before the
    low-precision factor) and achieved HBM bandwidth share, per GPU family (:func:`family`);
    ``step_overhead_s``: fixed host/launch time per engine iteration;
    ``sequence_overhead_s``: host time per running sequence per iteration;
    ``request_overhead_s``: front-end time per request before its first token, per engine
    (key ``engine``) or per engine and GPU family (key ``"engine|family"``, first);
    ``expert_efficiency_factor``: grouped MoE expert GEMMs' share of the dense efficiency;
    ``attention``: prefill attention efficiency (share of the bf16 dense peak) per GPU family
    (absent: the default), or per engine and family (key ``"engine|family"``, before the
    family), or per family and checkpoint precision (key ``"family|precision"``, first);
    ``engine_step_overhead_s``: an engine's own per-step time where it differs from
    ``step_overhead_s``, per engine and family (key ``"engine|family"``, first) or per engine;
    ``moe_backend_step_s``: time per step added to the step overhead of the runs whose MoE
    kernels come from another backend (key ``"engine|backend"``, e.g.
    ``"TensorRT-LLM|DEEPGEMM"``; :func:`launch_settings` column ``moe_backend``).
    """

    gemm: dict[str, float]
    bw: dict[str, float]
    step_overhead_s: float
    sequence_overhead_s: float
    request_overhead_s: dict[str, float]
    expert_efficiency_factor: float = 1.0
    attention: dict[str, float] = field(default_factory=dict)
    engine_step_overhead_s: dict[str, float] = field(default_factory=dict)
    moe_backend_step_s: dict[str, float] = field(default_factory=dict)

    def params_for(self, accelerator: str, engine: str, base: PerfParams,
                   precision: str | None = None, moe_backend: str | None = None) -> PerfParams:
        """``base`` with the values for one GPU, engine and (for ``attention``, key
        ``"family|precision"`` first) checkpoint precision, and the run's MoE backend (for
        ``moe_backend_step_s``)."""
        f = family(accelerator)
        ch: dict[str, Any] = {"step_overhead_s": self.engine_step_overhead_s.get(
                                  f"{engine}|{f}", self.engine_step_overhead_s.get(
                                      engine, self.step_overhead_s)),
                              "sequence_overhead_s": self.sequence_overhead_s,
                              "request_overhead_s": self.request_overhead_s.get(
                                  f"{engine}|{f}", self.request_overhead_s.get(engine, 0.0)),
                              "expert_efficiency_factor": self.expert_efficiency_factor}
        ch["step_overhead_s"] += self.moe_backend_step_s.get(f"{engine}|{moe_backend}", 0.0)
        if f in self.gemm:
            ch["gemm_efficiency"] = self.gemm[f]
        if f in self.bw:
            ch["bw_efficiency"] = self.bw[f]
        att = self.attention.get(f"{f}|{precision}") if precision else None
        if att is None:
            att = self.attention.get(f"{engine}|{f}", self.attention.get(f))
        if att is not None:
            ch["attention_efficiency"] = att
        return base.replace(**ch)

    def bench_params_for(self, accelerator: str, base: PerfParams) -> PerfParams:
        """Parameters for the dense maximum-throughput rows (``trtllm-bench``, Llama GQA):
        TensorRT-LLM's, without a front-end time and with the family's prefill attention
        efficiency (an ``"engine|family"`` attention value describes that engine's MLA
        context kernel on the DeepSeek-R1 rows it was fitted on, not the GQA kernels)."""
        p = self.params_for(accelerator, "TensorRT-LLM", base).replace(request_overhead_s=0.0)
        att = self.attention.get(family(accelerator))
        return p.replace(attention_efficiency=att if att is not None
                         else base.attention_efficiency)


#: Fitted on the fit half by ``studies/perf-validation/fit_closed_loop.py`` (copied here so
#: the study and the tests need not refit; rerun the script after changing the data or the
#: step model). v4 (``--v4`` from v3): MI300X GEMM/HBM/attention efficiency and SGLang's own
#: step overhead on CDNA3 (v3: 0.29 / 0.40 / 0.08, the shared 4 ms step), TensorRT-LLM's
#: prefill attention efficiency on Hopper, and the front-end constants without the
#: attention-DP rows (:func:`studies/perf-validation/fit_closed_loop.refine_v4`). v5
#: (``--v5``): the prefill attention efficiency of the fp8 checkpoints on Blackwell
#: (``blackwell|fp8``; :func:`studies/perf-validation/fit_closed_loop.precision_attention`),
#: identifiable once the fit half's 8k-token fp8 curve is no longer wrongly KV-bound. v6
#: (``--v6``): the time per step of TensorRT-LLM's unfused ``DEEPGEMM`` MoE backend (the B200
#: fp8 runs before 2026-01-29, :func:`launch_settings`), 4 ms on the fit half's 40 rows of
#: that backend; ``blackwell|fp8`` refitted with it (unchanged, 0.125); the front-end
#: constants kept. v7 (``--v7``): after the closed-loop model's SGLang polling wait was
#: corrected (:mod:`planner.perf.closedloop`: ``--scheduler-recv-interval`` counts decode
#: steps only, a prompt step makes the scheduler poll at once), ``blackwell|fp8`` 0.125 ->
#: 0.065 (its one fit-half 8k curve, SGLang TP4, had ~105 ms of its TTFT at concurrency 8
#: charged to polling instead of its prefill) and the Blackwell front-end constants
#: (SGLang 93 -> 102 ms, TensorRT-LLM 100 -> 93 ms;
#: :func:`studies/perf-validation/fit_closed_loop.refine_v7`).
FITTED = FitParams(
    gemm={'hopper': 0.8388, 'blackwell': 0.92, 'cdna3': 0.4261},
    bw={'hopper': 0.9095, 'blackwell': 0.9028, 'cdna3': 0.7094},
    step_overhead_s=0.00452,
    sequence_overhead_s=8.306e-06,
    request_overhead_s={'NIM|hopper': 0.068, 'SGLang|hopper': 0.085,
                        'TensorRT-LLM|hopper': 0.077, 'SGLang|blackwell': 0.102,
                        'TensorRT-LLM|blackwell': 0.093, 'SGLang|cdna3': 0.084},
    expert_efficiency_factor=0.7031,
    attention={'hopper': 0.2, 'blackwell': 0.5, 'cdna3': 0.0665,
               'TensorRT-LLM|hopper': 0.14, 'blackwell|fp8': 0.065},
    engine_step_overhead_s={'SGLang': 0.004, 'SGLang|cdna3': 0.01452},
    moe_backend_step_s={'TensorRT-LLM|DEEPGEMM': 0.004},
)


def family(accelerator: str) -> str:
    """GPU family of a catalog accelerator id: ``hopper``, ``blackwell``, ``cdna3``, ``other``."""
    a = accelerator.lower()
    if a.startswith(("h100", "h200", "h20")):
        return "hopper"
    if a.startswith(("b200", "b100", "gb200")):
        return "blackwell"
    if a.startswith(("mi300", "mi325")):
        return "cdna3"
    return "other"


def engine_params(engine: str, base: PerfParams, concurrency_cap: float) -> PerfParams:
    """``base`` with the engine's batch/chunk/KV settings (:data:`ENGINE_SETTINGS`)."""
    s = ENGINE_SETTINGS.get(engine, ENGINE_SETTINGS["vLLM"])
    return base.replace(max_batch=int(max(concurrency_cap, base.max_batch)), **s)


#: The predicted TTFT's parts (ms; they sum to ``pred_ttft_ms``): the front-end constant, the
#: step in progress at arrival, the scheduler's admission wait (polling interval,
#: attention-DP balancing), the wait behind other prompts and for KV memory, and the
#: request's own prefill beside the running decodes.
TTFT_PARTS = ("pred_ttft_front_end_ms", "pred_ttft_step_ms", "pred_ttft_admission_ms",
              "pred_ttft_queue_ms", "pred_ttft_own_prefill_ms")

#: Rows sharing these share one step model (one vectorised closed-loop call).
_STEP_KEY = ["catalog_model", "accelerator", "engine", "precision", "tp", "dp_attention"]


def predict_closed_loop(
    df: pd.DataFrame,
    llms: dict[str, LLMSpec],
    accs: dict[str, AcceleratorSpec],
    params: PerfParams | None = None,
    fit: FitParams | None = None,
    launch: bool = True,
) -> pd.DataFrame:
    """Predicted TTFT, ITL and output tokens/s for every row of ``df`` (one vectorised
    closed-loop call per step model). Adds ``pred_ttft_ms``, ``pred_itl_ms``,
    ``pred_output_tokens_per_s``, the TTFT's parts (:data:`TTFT_PARTS`), ``fits`` (the
    weights fit the replica) and the signed
    relative errors ``err_ttft``, ``err_itl``, ``err_tput`` (predicted / measured - 1).
    ``launch``: each run's own launch settings (:func:`launch_settings`: chunk, KV memory,
    scheduler polling and admission); ``False``: the engine defaults of
    :data:`ENGINE_SETTINGS` only."""
    base = params or PerfParams()
    out = df.copy()
    for col in ("pred_ttft_ms", "pred_itl_ms", "pred_output_tokens_per_s", *TTFT_PARTS):
        out[col] = np.nan
    out["fits"] = False
    ls = launch_settings(out if launch else out.assign(source="-"))
    keys = out[_STEP_KEY].assign(_chunk=ls["max_tokens_per_step"],
                                 _kvf=ls["kv_mem_fraction"].fillna(-1.0),
                                 _msf=ls["mem_fraction_static"].fillna(-1.0),
                                 _moe=ls["moe_backend"])
    for _, idx in keys.groupby(list(keys.columns), sort=False).groups.items():
        g = out.loc[idx]
        r = g.iloc[0]
        s = ls.loc[idx].iloc[0]
        # the runs' engines size KV from the device's real bytes (B200: 192.3e9, not 180e9)
        llm, acc = llms[str(r["catalog_model"])], device_accelerator(accs[str(r["accelerator"])])
        p = (fit.params_for(str(r["accelerator"]), str(r["engine"]), base, str(r["precision"]),
                            str(s["moe_backend"])) if fit else base)
        p = engine_params(str(r["engine"]), p, float(g["concurrency"].max()))
        p = p.replace(max_tokens_per_step=int(s["max_tokens_per_step"]))
        tp = int(r["tp"])
        if np.isfinite(s["kv_mem_fraction"]):
            p = p.replace(kv_mem_fraction=float(s["kv_mem_fraction"]))
        elif np.isfinite(s["mem_fraction_static"]):
            # SGLang: the share of the whole memory for weights and KV -> share of the free
            m1 = memory_plan(llm, acc, tp, str(r["precision"]), p.replace(kv_mem_fraction=1.0))
            total = m1.kv_gb_per_gpu + m1.weights_gb_per_gpu + m1.reserve_gb_per_gpu
            frac = (float(s["mem_fraction_static"]) * total - m1.weights_gb_per_gpu) / max(
                m1.kv_gb_per_gpu, 1e-9)
            p = p.replace(kv_mem_fraction=float(np.clip(frac, 1e-3, 1.0)))
        mp = memory_plan(llm, acc, tp, str(r["precision"]), p)
        if not mp.fits:
            continue
        sm = step_model(llm, acc, tp, str(r["precision"]), p)
        isl = g["mean_input_tokens"].to_numpy(float)
        osl = g["mean_output_tokens"].to_numpy(float)
        kv_tokens = mp.kv_capacity_tokens
        if bool(r["dp_attention"]):  # each attention-DP rank holds only its own requests' KV
            kv_tokens = mp.kv_gb_per_gpu * 1e9 * tp / llm.kv_bytes_per_token(mp.kv_precision)
        bmax = np.minimum(max_concurrent_requests(kv_tokens, isl, osl,
                                                  p.kv_reserve, llm.sliding_window),
                          float(p.max_batch))
        ok = bmax >= 1
        if not ok.any():
            continue
        sel = np.asarray(idx)[ok]
        gs = ls.loc[idx]
        a = closed_loop_arrays(sm, g["concurrency"].to_numpy(float)[ok], input_tokens=isl[ok],
                               output_tokens=osl[ok], max_batch=bmax[ok],
                               poll_steps=gs["poll_steps"].to_numpy(float)[ok],
                               admission_group=gs["admission_group"].to_numpy(float)[ok],
                               admission_timeout_steps=gs["admission_timeout_steps"]
                               .to_numpy(float)[ok])
        out.loc[sel, "pred_ttft_ms"] = a["ttft_s"] * 1e3
        out.loc[sel, "pred_itl_ms"] = a["itl_s"] * 1e3
        out.loc[sel, "pred_output_tokens_per_s"] = a["output_tokens_per_s"]
        out.loc[sel, "pred_ttft_front_end_ms"] = a["front_end_s"] * 1e3
        out.loc[sel, "pred_ttft_step_ms"] = a["step_in_progress_s"] * 1e3
        out.loc[sel, "pred_ttft_admission_ms"] = a["admission_wait_s"] * 1e3
        out.loc[sel, "pred_ttft_queue_ms"] = (a["prefill_wait_s"] - a["admission_wait_s"]) * 1e3
        out.loc[sel, "pred_ttft_own_prefill_ms"] = a["own_prefill_s"] * 1e3
        out.loc[sel, "fits"] = True
    out["err_ttft"] = out["pred_ttft_ms"] / out["ttft_target_ms"] - 1.0
    out["err_itl"] = out["pred_itl_ms"] / out["itl_target_ms"] - 1.0
    out["err_tput"] = out["pred_output_tokens_per_s"] / out["output_tokens_per_s"] - 1.0
    return out


def error_table(pred: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Median |error| and median signed error (bias) of throughput, ITL and TTFT, overall
    (``by`` None) or per group; ``rows`` counts the rows with a prediction."""
    d = pred[pred["fits"]]
    metrics = [("tput", "err_tput"), ("itl", "err_itl"), ("ttft", "err_ttft")]

    def agg(g: pd.DataFrame) -> pd.Series:
        s = {"rows": len(g)}
        for name, col in metrics:
            e = g[col].to_numpy(float)
            s[f"{name}_median_abs"] = float(np.median(np.abs(e))) if e.size else np.nan
            s[f"{name}_bias"] = float(np.median(e)) if e.size else np.nan
        return pd.Series(s)

    if not by:
        return agg(d).to_frame().T
    return d.groupby(by).apply(agg, include_groups=False).reset_index()
