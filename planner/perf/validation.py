"""Predict the published measurements in ``measured_benchmarks_calibration.csv``.

Each row is a vendor-tuned maximum-throughput run. We model what that setting implies rather
than fitting anything per row:

* **TensorRT-LLM perf overview** (``trtllm-bench throughput``): every request is queued at once;
  the engine's ``max_batch_size`` and ``max_num_tokens`` come from trtllm-bench's own heuristic
  (:func:`trtllm_bench_settings`, a transcription of ``tensorrt_llm/bench/build/tuning.py``:
  requests that fit the KV cache, capped at 4096, rounded up; tokens ``bs (1 + I/O)`` capped
  at 32768, at least 2048, and without chunked prefill at least ``I + bs``); the KV cache gets
  95 % of free memory (``--kv_cache_free_gpu_mem_fraction 0.95``, perf-overview.md; free:
  device memory less weights, the runtime reserve and, with more than two GPUs on an
  NVSwitch, NCCL's NVLS buffers, :func:`planner.perf.memory.memory_plan`) and reserves ``I + O`` tokens
  per request (``GUARANTEED_NO_EVICT``, the default ``capacity_scheduler_policy``). FP8
  checkpoints quantise the KV cache to FP8. Two properties of the run itself matter for the
  long-output rows, where the KV-limited batch is a few hundred requests:

  - **CUDA-graph padding**: the page's ``llm_options.yml`` captures decode graphs for batch
    sizes 1, 2, 4, ..., 256, 384, 512, 1024, 2048, 4096, 8192 with ``enable_padding: true``;
    the engine keeps the sizes up to ``min(max_batch_size, max_num_tokens)`` and adds that
    bound (:func:`cuda_graph_batch_sizes`), and every decode-only step runs the next
    captured size (a batch of 257 runs the graph of 384), so its GEMMs and all-reduces
    work on the padded batch (:func:`planner.perf.batching.padded_step_time_s`).
  - **a finite run**: ``$num_requests`` uniform requests (:data:`PERF_OVERVIEW_NUM_REQUESTS`)
    queued at once; with ``B`` of them fitting at a time the run is ``floor(N / B)`` full
    rounds of ``O`` decode steps and one last round of the ``N mod B`` left
    (:func:`trtllm_bench_output_tokens_per_s`): 1,500 requests at a batch of 856 leave a last
    round of 644 that, padded to the same graph, costs 89 % of a full one.
* **MLPerf Inference v4.1 Llama-2-70B** (NVIDIA, 8x H100-SXM): four TP2 replicas
  (``configs/llama2-70b/*/__init__.py``: ``tensor_parallelism = 2``, ``gpu_batch_size`` 896
  offline / 1024 server, ``kvcache_free_gpu_mem_frac = 0.90``), on-demand paged KV. Output
  294.45 tokens per sample (mlcommons/inference ``language/llama2-70b/README.md``). Server adds
  the latency limits TTFT 2 s and TPOT 200 ms (treated as mean-latency SLOs).

The MLPerf logs do not publish the mean input length; :data:`MLPERF_MEAN_INPUT_TOKENS` is an
assumption (see its comment) and the study reports the sensitivity to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from planner.perf.batching import padded_step_time_s, replica_capacity
from planner.perf.memory import device_memory_bytes, kv_bytes_per_token_per_gpu, weight_bytes
from planner.perf.params import PerfParams
from planner.perf.specs import AcceleratorSpec, LLMSpec
from planner.perf.step import step_model

#: Where the calibration measurements ship: ``planner/data/reference`` inside the package (a
#: source checkout, an editable install and an installed wheel alike; sources and licences in
#: its ``SOURCES.md``).
REFERENCE_DATA = Path(str(resources.files("planner"))) / "data" / "reference"
CALIBRATION_FILE = "measured_benchmarks_calibration.csv"

#: Mean output tokens per MLPerf OpenOrca sample (mlcommons/inference llama2-70b README,
#: "Tokens per sample: 294.45").
MLPERF_MEAN_OUTPUT_TOKENS = 294.45

#: Mean input tokens per MLPerf OpenOrca sample: NOT published with the logs. Assumption:
#: NVIDIA's chosen batch sizes (896 per H100 TP2 pair, 806 per H200) fill the KV cache at
#: about 470-520 tokens per running request, i.e. I + O/2 ~ 500 -> I ~ 350.
MLPERF_MEAN_INPUT_TOKENS = 350.0

#: Built-in specifications for the calibration rows, used when the catalog lacks an id.
#: Sources: microsoft/vidur ``vidur/config/model_config.py`` and the models' ``config.json``
#: (shapes); vendor datasheets as compiled in stas00/ml-engineering
#: ``compute/accelerator/README.md`` (accelerators);
#: Llama-2-70B from meta-llama/Llama-2-70b-hf config.json (80 layers, 8192 hidden, 64/8 heads,
#: 28672 FFN, 32000 vocab, 4096 context; 68.98 B parameters).
BUILTIN_LLMS: dict[str, dict[str, Any]] = {
    "llama-3.1-8b": dict(
        id="llama-3.1-8b", params_b=8.03, active_params_b=8.03, layers=32, hidden=4096,
        q_heads=32, kv_heads=8, head_dim=128, ffn_intermediate=14336, vocab=128256,
        attention="gqa", max_context_tokens=131072,
    ),
    "llama-3.1-70b": dict(
        id="llama-3.1-70b", params_b=70.55, active_params_b=70.55, layers=80, hidden=8192,
        q_heads=64, kv_heads=8, head_dim=128, ffn_intermediate=28672, vocab=128256,
        attention="gqa", max_context_tokens=131072,
    ),
    "llama-3.1-405b": dict(
        id="llama-3.1-405b", params_b=405.85, active_params_b=405.85, layers=126, hidden=16384,
        q_heads=128, kv_heads=8, head_dim=128, ffn_intermediate=53248, vocab=128256,
        attention="gqa", max_context_tokens=131072,
    ),
    "llama-2-70b": dict(
        id="llama-2-70b", params_b=68.98, active_params_b=68.98, layers=80, hidden=8192,
        q_heads=64, kv_heads=8, head_dim=128, ffn_intermediate=28672, vocab=32000,
        attention="gqa", max_context_tokens=4096,
    ),
}

BUILTIN_ACCELERATORS: dict[str, dict[str, Any]] = {
    "h100-sxm": dict(
        id="h100-sxm", bf16_tflops=989.0, fp8_tflops=1979.0, mem_gb=80.0, mem_bw_tbps=3.35,
        interconnect="nvlink4", interconnect_gbps=450.0, gpus_per_node=8, mamf_efficiency=0.803,
        tdp_w=700.0,
    ),
    "h200-sxm": dict(
        id="h200-sxm", bf16_tflops=989.0, fp8_tflops=1979.0, mem_gb=141.0, mem_bw_tbps=4.8,
        interconnect="nvlink4", interconnect_gbps=450.0, gpus_per_node=8, mamf_efficiency=0.803,
        tdp_w=700.0,
    ),
    "b200": dict(
        id="b200", bf16_tflops=2250.0, fp8_tflops=4500.0, fp4_tflops=9000.0, mem_gb=180.0,
        mem_bw_tbps=8.0, interconnect="nvlink5", interconnect_gbps=900.0, gpus_per_node=8,
        mamf_efficiency=0.776, tdp_w=1000.0,
    ),
}

#: Catalog ids to try for each built-in id (first hit wins).
_CATALOG_ALIASES = {
    "llama-3.1-8b": ["llama-3.1-8b", "llama-3.1-8b-instruct"],
    "llama-3.1-70b": ["llama-3.3-70b", "llama-3.1-70b", "llama-3.3-70b-instruct"],
    "llama-3.1-405b": ["llama-3.1-405b", "llama-3.1-405b-instruct"],
    "llama-2-70b": ["llama-2-70b", "llama-2-70b-chat"],
    "h100-sxm": ["h100-sxm", "h100-sxm-80gb", "h100"],
    "h200-sxm": ["h200-sxm", "h200-sxm-141gb", "h200"],
    "b200": ["b200"],
}


@dataclass(frozen=True)
class CalibrationCase:
    """How one calibration row maps onto the model."""

    row_id: str
    llm: str
    accelerator: str
    gpus_per_replica: int
    replicas: int
    precision: str
    input_tokens: float
    output_tokens: float
    setting: str  # "trtllm-bench" | "mlperf-offline" | "mlperf-server"
    max_batch: int | None = None
    ttft_slo_s: float | None = None
    tpot_slo_s: float | None = None


def _trt(row_id: str, llm: str, acc: str, tp: int, isl: float, osl: float) -> CalibrationCase:
    return CalibrationCase(row_id, llm, acc, tp, 1, "fp8", isl, osl, "trtllm-bench")


CASES: dict[str, CalibrationCase] = {
    "M1": CalibrationCase("M1", "llama-2-70b", "h100-sxm", 2, 4, "fp8", MLPERF_MEAN_INPUT_TOKENS,
                          MLPERF_MEAN_OUTPUT_TOKENS, "mlperf-offline", max_batch=896),
    "M2": CalibrationCase("M2", "llama-2-70b", "h100-sxm", 2, 4, "fp8", MLPERF_MEAN_INPUT_TOKENS,
                          MLPERF_MEAN_OUTPUT_TOKENS, "mlperf-server", max_batch=1024,
                          ttft_slo_s=2.0, tpot_slo_s=0.2),
    "T1": _trt("T1", "llama-3.1-8b", "h100-sxm", 1, 128, 128),
    "T2": _trt("T2", "llama-3.1-8b", "h100-sxm", 1, 128, 2048),
    "T3": _trt("T3", "llama-3.1-8b", "h100-sxm", 1, 2048, 128),
    "T4": _trt("T4", "llama-3.1-8b", "h100-sxm", 1, 2048, 2048),
    "T8": _trt("T8", "llama-3.1-70b", "h100-sxm", 2, 128, 128),
    "T9": _trt("T9", "llama-3.1-70b", "h100-sxm", 2, 1000, 1000),
    "T11": _trt("T11", "llama-3.1-70b", "h200-sxm", 1, 1000, 1000),
}


def trtllm_bench_settings(
    llm: LLMSpec, acc: AcceleratorSpec, tp: int, precision: str, isl: float, osl: float,
    kv_cache_gpu_mem_fraction: float = 0.95, enable_chunked_prefill: bool = False,
) -> tuple[int, int]:
    """trtllm-bench's ``(max_batch_size, max_num_tokens)`` heuristic for a run.

    Transcribed from NVIDIA/TensorRT-LLM ``tensorrt_llm/bench/build/tuning.py``
    (``calc_engine_setting`` and ``finetune_setting``; GiB units as there). The total is
    the device's own memory (``get_device_memory()`` there reads the GPU; here
    :func:`planner.perf.memory.device_memory_bytes`, H100 81,559 MiB), the same figure
    planning uses. Without chunked prefill (trtllm-bench's default: ``get_settings`` in
    ``tensorrt_llm/bench/benchmark/utils/general.py`` reads ``enable_chunked_prefill``,
    default ``False``, and the perf overview's ``llm_options.yml`` does not set it) a whole
    prompt must fit one step, so ``max_num_tokens`` is raised to at least ``max_isl +
    max_batch_size`` (20000/2000 rows: 2,048 -> 20,064 on 8x H100 with Llama-3.1-405B).
    """
    kv_prec = "fp8" if precision in ("fp8", "fp4") else "bf16"
    byte_per_token = kv_bytes_per_token_per_gpu(llm, kv_prec, tp) * tp / 1024**3
    engine = weight_bytes(llm, precision) / 1024**3
    total = device_memory_bytes(acc) / 1024**3 * tp
    cache = (total - engine) * kv_cache_gpu_mem_fraction
    kv_max_requests = cache / (byte_per_token * (isl + osl))
    raw_bs = min(kv_max_requests, 4096)
    raw_token = min(raw_bs * (1 + isl / osl), 32768)
    if raw_bs < 256:
        max_bs = max(64, 32 * math.ceil(raw_bs / 32))
    elif raw_bs < 1024:
        max_bs = 128 * math.ceil(raw_bs / 128)
    else:
        max_bs = 256 * math.ceil(raw_bs / 256)
    if raw_token < 4096:
        max_token = max(2048, 256 * math.ceil(raw_token / 256))
    elif raw_token < 8192:
        max_token = 512 * math.ceil(raw_token / 512)
    else:
        max_token = 1024 * math.ceil(raw_token / 1024)
    if not enable_chunked_prefill:
        max_token = max(max_token, int(math.ceil(isl)) + max_bs)
    return int(max_bs), int(max_token)


#: CUDA-graph batch sizes of the perf overview's ``llm_options.yml`` (``cuda_graph_config``
#: with ``enable_padding: true``; NVIDIA/TensorRT-LLM
#: ``docs/source/performance/perf-overview.md`` @00f37686, "Running the Benchmark").
PERF_OVERVIEW_CUDA_GRAPH_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 1024,
                                        2048, 4096, 8192)

#: ``$num_requests`` per (ISL, OSL) of the perf overview's synthetic data sets (same page,
#: "Preparing a Dataset"; all requests of one run have exactly these lengths).
PERF_OVERVIEW_NUM_REQUESTS: dict[tuple[int, int], int] = {
    (128, 128): 30000, (128, 2048): 3000, (128, 4096): 1500, (1000, 2000): 1500,
    (2048, 128): 3000, (2048, 2048): 1500, (5000, 500): 1500, (1000, 1000): 3000,
    (500, 2000): 3000, (20000, 2000): 1000,
}


def cuda_graph_batch_sizes(listed: tuple[int, ...], max_batch_size: int, max_num_tokens: int,
                           enable_padding: bool = True) -> tuple[int, ...]:
    """The CUDA-graph batch sizes an engine captures from the ``listed`` ones.

    Transcribed from NVIDIA/TensorRT-LLM ``tensorrt_llm/_torch/pyexecutor/model_engine.py``
    (``_filter_cuda_graph_batch_sizes``, no draft tokens): the sizes up to ``min(max_batch_size,
    max_num_tokens)`` (the largest pure-decode batch), and with padding that bound itself
    when a listed size exceeds it.
    """
    top = min(int(max_batch_size), int(max_num_tokens))
    out: list[int] = []
    for bs in sorted(int(b) for b in listed):
        if bs <= top:
            out.append(bs)
        else:
            if enable_padding and (not out or out[-1] != top):
                out.append(top)
            break
    return tuple(out)


def trtllm_bench_output_tokens_per_s(
    llm: LLMSpec, acc: AcceleratorSpec, case: CalibrationCase, params: PerfParams,
    batch: float, num_requests: int | None = None,
    graph_batch_sizes: tuple[int, ...] | None = PERF_OVERVIEW_CUDA_GRAPH_BATCH_SIZES,
) -> dict[str, float]:
    """Output tokens/s of a ``trtllm-bench throughput`` run at a KV-limited ``batch``.

    ``num_requests`` uniform requests (default: :data:`PERF_OVERVIEW_NUM_REQUESTS` for the
    case's lengths; ``None`` there or ``0``: an endless run) are all queued at once and
    ``B = floor(batch)`` of them run at a time (``GUARANTEED_NO_EVICT`` admits a request
    when its whole ``I + O`` fits), so the run is ``k = floor(N / B)`` rounds of ``O`` steps
    at ``B`` requests and a last round at ``r = N - k B``: throughput ``N O / (O (k
    T(B) + T(r)))`` with ``T`` the mean step time of
    :func:`planner.perf.batching.padded_step_time_s` (decode-only steps padded to the
    captured graph sizes :func:`cuda_graph_batch_sizes`; ``graph_batch_sizes=None``: no
    graphs). Returns ``output_tokens_per_s``, ``steady_tokens_per_s`` (endless run),
    ``graph_batch`` and ``last_round_batch``.
    """
    isl, osl = float(case.input_tokens), float(case.output_tokens)
    sm = step_model(llm, acc, case.gpus_per_replica, case.precision, params)
    graphs = (cuda_graph_batch_sizes(graph_batch_sizes, params.max_batch,
                                      params.max_tokens_per_step)
              if graph_batch_sizes else ())
    if num_requests is None:
        num_requests = PERF_OVERVIEW_NUM_REQUESTS.get((int(isl), int(osl)), 0)
    b = float(np.floor(batch))
    if not num_requests or b < 1:
        k, r = 1.0, 0.0
        n = b
    else:
        n = float(num_requests)
        k, r = float(np.floor(n / b)), float(n - np.floor(n / b) * b)
    st = padded_step_time_s(sm, isl, osl, np.array([b, r]), graphs)
    t_full, t_last = (float(x) for x in st["step_s"])
    steady = b / t_full if t_full > 0 else 0.0
    total = k * t_full + t_last
    return {"output_tokens_per_s": n / total if total > 0 else 0.0,
            "steady_tokens_per_s": steady, "graph_batch": float(st["graph_batch"][0]),
            "last_round_batch": r}


def _specs(catalog: Any | None) -> tuple[dict[str, LLMSpec], dict[str, AcceleratorSpec], dict]:
    llms: dict[str, LLMSpec] = {}
    accs: dict[str, AcceleratorSpec] = {}
    origin: dict[str, str] = {}
    for key, row in BUILTIN_LLMS.items():
        spec, src = LLMSpec(**row), "builtin"
        if catalog is not None:
            for cid in _CATALOG_ALIASES.get(key, [key]):
                if catalog.has("llms", cid):
                    spec, src = LLMSpec.from_row(catalog.llm(cid)), f"catalog:{cid}"
                    break
        llms[key], origin[key] = spec, src
    for key, row in BUILTIN_ACCELERATORS.items():
        spec, src = AcceleratorSpec(**row), "builtin"
        if catalog is not None:
            for cid in _CATALOG_ALIASES.get(key, [key]):
                if catalog.has("accelerators", cid):
                    spec, src = AcceleratorSpec.from_row(catalog.accelerator(cid)), f"catalog:{cid}"
                    break
        accs[key], origin[key] = spec, src
    return llms, accs, origin


def case_params(case: CalibrationCase, llm: LLMSpec, acc: AcceleratorSpec,
                params: PerfParams) -> PerfParams:
    """The engine settings a calibration case implies (on top of ``params``)."""
    if case.setting == "trtllm-bench":
        bs, tok = trtllm_bench_settings(llm, acc, case.gpus_per_replica, case.precision,
                                        case.input_tokens, case.output_tokens)
        return params.replace(max_batch=bs, max_tokens_per_step=tok, kv_mem_fraction=0.95,
                              kv_reserve="full", kv_precision="fp8")
    return params.replace(max_batch=int(case.max_batch or params.max_batch),
                          max_tokens_per_step=max(params.max_tokens_per_step, 8192),
                          kv_mem_fraction=0.90, kv_reserve="mean", kv_precision="fp8")


def load_measurements(path: str | Path | None = None) -> pd.DataFrame:
    """Read the calibration CSV (default: the copy shipped in :data:`REFERENCE_DATA`)."""
    p = Path(path) if path else REFERENCE_DATA / CALIBRATION_FILE
    return pd.read_csv(p)


def predict_calibration(
    measurements: pd.DataFrame | None = None,
    params: PerfParams | None = None,
    catalog: Any | None = None,
    input_tokens_override: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Predicted vs measured output tokens/s, one row per calibration row.

    Columns: ``id, model, hardware, setting, input_tokens, output_tokens, gpus, replicas,
    max_batch, max_tokens_per_step, batch, limited_by, measured_tokens_per_s,
    predicted_tokens_per_s, error`` (signed relative error, predicted/measured - 1) and
    ``abs_error``; ``spec_source`` says whether the catalog or the built-in rows were used.
    """
    meas = load_measurements() if measurements is None else measurements
    base = params or PerfParams()
    llms, accs, origin = _specs(catalog)
    out = []
    for rec in meas.itertuples(index=False):
        case = CASES.get(str(rec.id))
        if case is None:
            continue
        if input_tokens_override and case.row_id in input_tokens_override:
            case = CalibrationCase(**{**case.__dict__,
                                      "input_tokens": float(input_tokens_override[case.row_id])})
        llm, acc = llms[case.llm], accs[case.accelerator]
        p = case_params(case, llm, acc, base)
        cap = replica_capacity(
            llm, acc, gpus=case.gpus_per_replica, precision=case.precision,
            input_tokens=case.input_tokens, output_tokens=case.output_tokens,
            ttft_slo_s=case.ttft_slo_s, tpot_slo_s=case.tpot_slo_s, params=p,
        )
        pred = cap.output_tokens_per_s * case.replicas
        graph_b = np.nan
        if case.setting == "trtllm-bench":
            run = trtllm_bench_output_tokens_per_s(llm, acc, case, p, cap.batch)
            pred, graph_b = run["output_tokens_per_s"] * case.replicas, run["graph_batch"]
        measured = float(rec.value)
        out.append({
            "id": case.row_id, "model": rec.model, "hardware": rec.hardware,
            "setting": case.setting, "input_tokens": case.input_tokens,
            "output_tokens": case.output_tokens, "gpus": case.gpus_per_replica * case.replicas,
            "replicas": case.replicas, "max_batch": p.max_batch,
            "max_tokens_per_step": p.max_tokens_per_step, "batch": cap.batch,
            "graph_batch": graph_b, "tpot_s": cap.tpot_s, "limited_by": cap.limited_by,
            "measured_tokens_per_s": measured, "predicted_tokens_per_s": pred,
            "error": pred / measured - 1.0, "abs_error": abs(pred / measured - 1.0),
            "spec_source": f"{origin[case.llm]}, {origin[case.accelerator]}",
        })
    return pd.DataFrame(out)


def predict_trtllm_bench(
    table: pd.DataFrame, params: PerfParams | None = None, catalog: Any | None = None
) -> pd.DataFrame:
    """Predict trtllm-bench max-throughput rows given as a table.

    ``table`` columns: ``model`` (``llama-3.1-8b``, ``llama-3.3-70b``/``llama-3.1-70b``,
    ``llama-3.1-405b``), ``accelerator`` (``h100-sxm``, ``h200-sxm``), ``tp``, ``precision``,
    ``isl``, ``osl``, ``output_tokens_per_s`` (measured); ``b200`` rows too (fp4). Returns the
    table with ``predicted_tokens_per_s`` (the finite run with padded CUDA graphs,
    :func:`trtllm_bench_output_tokens_per_s`), ``steady_state_tokens_per_s`` (the
    continuous-batching steady state without graphs), ``error``, ``abs_error``, ``batch``,
    ``graph_batch``, ``last_round_batch`` and ``limited_by``.
    """
    base = params or PerfParams()
    llms, accs, _ = _specs(catalog)
    alias = {"llama-3.3-70b": "llama-3.1-70b"}
    out = []
    for rec in table.itertuples(index=False):
        key = alias.get(str(rec.model), str(rec.model))
        case = CalibrationCase(f"{rec.model}", key, str(rec.accelerator), int(rec.tp), 1,
                               str(rec.precision), float(rec.isl), float(rec.osl),
                               "trtllm-bench")
        llm, acc = llms[key], accs[case.accelerator]
        p = case_params(case, llm, acc, base)
        cap = replica_capacity(llm, acc, gpus=case.gpus_per_replica, precision=case.precision,
                               input_tokens=case.input_tokens, output_tokens=case.output_tokens,
                               params=p)
        measured = float(rec.output_tokens_per_s)
        run = trtllm_bench_output_tokens_per_s(llm, acc, case, p, cap.batch)
        pred = run["output_tokens_per_s"]
        out.append({**rec._asdict(), "predicted_tokens_per_s": pred,
                    "steady_state_tokens_per_s": cap.output_tokens_per_s, "batch": cap.batch,
                    "graph_batch": run["graph_batch"],
                    "last_round_batch": run["last_round_batch"],
                    "limited_by": cap.limited_by, "error": pred / measured - 1.0,
                    "abs_error": abs(pred / measured - 1.0)})
    return pd.DataFrame(out)


def summary(df: pd.DataFrame) -> dict[str, float]:
    """Median and maximum absolute relative error."""
    a = df["abs_error"].to_numpy(dtype=float)
    return {"rows": int(a.size), "median_abs_error": float(np.median(a)),
            "max_abs_error": float(np.max(a))}
