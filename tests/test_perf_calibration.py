"""Validation of the performance model against published measurements.

Reads the shipped ``planner/data/reference/measured_benchmarks_calibration.csv``
(TensorRT-LLM perf overview and MLPerf Inference v4.1, vendor-tuned maximum-throughput runs)
and Vidur's profiles (``planner/data/profiling``). Thresholds from issue 3: median absolute
error <= 15 %, every row within 30 %.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from planner.catalog import load_catalog
from planner.perf import PerfParams
from planner.perf.calibration import (
    PROFILING_DATA,
    VIDUR_SUMMARY,
    fit_elementwise_factor,
    fit_gemm_curve,
    load_vidur_summary,
)
from planner.perf.specs import AcceleratorSpec, LLMSpec
from planner.perf.validation import (
    CALIBRATION_FILE,
    REFERENCE_DATA,
    load_measurements,
    predict_calibration,
    predict_trtllm_bench,
    summary,
)

ROOT = Path(__file__).resolve().parent.parent
CALIB = REFERENCE_DATA / CALIBRATION_FILE
VIDUR = PROFILING_DATA / VIDUR_SUMMARY
HOLDOUT = ROOT / "studies" / "perf-validation" / "holdout_trtllm_perf_overview.csv"


def _show(capsys, title: str, df: pd.DataFrame, cols: list[str]) -> None:
    with capsys.disabled():
        print(f"\n{title}")
        print(df[cols].to_string(index=False, float_format=lambda v: f"{v:,.3f}"))


def test_reference_data_ships_inside_the_package():
    # read from the package (source tree, editable install or wheel), never from ../shared
    import planner

    pkg = Path(planner.__file__).resolve().parent
    for f in (CALIB, VIDUR):
        assert f.is_file(), f
        assert f.resolve().is_relative_to(pkg), f
        assert "shared" not in f.resolve().relative_to(pkg).parts, f
        assert (f.parent / "SOURCES.md").is_file(), f"{f.parent} lacks SOURCES.md"
    assert len(load_measurements()) == 9
    assert {1, 2} == set(load_vidur_summary()["tp"])


def test_calibration_rows_within_thresholds(capsys):
    df = predict_calibration(pd.read_csv(CALIB), PerfParams(), load_catalog())
    assert len(df) == 9  # every row of the file is modelled
    s = summary(df)
    _show(capsys, f"perf calibration: median |err| {s['median_abs_error']:.1%}, "
          f"max |err| {s['max_abs_error']:.1%}", df,
          ["id", "setting", "input_tokens", "output_tokens", "gpus", "batch", "limited_by",
           "measured_tokens_per_s", "predicted_tokens_per_s", "error"])
    assert s["median_abs_error"] <= 0.15
    assert s["max_abs_error"] <= 0.30, df.loc[df["abs_error"] > 0.30, ["id", "error"]]


def test_default_factor_matches_refit():
    # the one end-to-end parameter: refitting it must land near the shipped default
    fit = fit_elementwise_factor(pd.read_csv(CALIB), PerfParams(), load_catalog())
    assert fit["elementwise_bytes_factor"] == pytest.approx(
        PerfParams().elementwise_bytes_factor, rel=0.15)


@pytest.mark.skipif(not HOLDOUT.is_file(), reason="holdout table missing")
def test_holdout_rows_generalise(capsys):
    # 53 trtllm-bench rows (other lengths, H200, 405B at TP8) never used in any fit.
    t = pd.read_csv(HOLDOUT)
    df = predict_trtllm_bench(t, PerfParams(), load_catalog())
    hold = df[~df["in_calibration_set"]]
    s = summary(hold)
    _show(capsys, f"perf holdout: median |err| {s['median_abs_error']:.1%}, "
          f"max |err| {s['max_abs_error']:.1%}", hold,
          ["model", "accelerator", "tp", "isl", "osl", "output_tokens_per_s",
           "predicted_tokens_per_s", "error"])
    assert s["rows"] == 53
    assert s["median_abs_error"] <= 0.10
    assert s["max_abs_error"] <= 0.35  # worst: 405B TP8 decode-heavy (see the study)


def test_gemm_defaults_come_from_vidur_profiles():
    d = load_vidur_summary(VIDUR)
    h = fit_gemm_curve(d, "h100")
    a = fit_gemm_curve(d, "a100")
    # documented defaults (planner/perf/params.py): e_max 0.95 x MAMF(H100 0.803) = 0.763,
    # bandwidth 0.92 (HBM3) / 0.80 (HBM2e), n_half 128 between the A100 and H100 fits
    assert h["e_max"] == pytest.approx(0.95 * 0.803, abs=0.02)
    assert h["bw_efficiency"] == pytest.approx(0.92, abs=0.02)
    assert a["bw_efficiency"] == pytest.approx(0.80, abs=0.02)
    assert a["n_half_tokens"] < PerfParams().gemm_n_half_tokens < h["n_half_tokens"]
    assert h["rms_log_error"] < 0.12 and a["rms_log_error"] < 0.12


def test_study_tables_are_dataframes():
    import importlib.util

    path = ROOT / "studies" / "perf-validation" / "perf_validation.py"
    spec = importlib.util.spec_from_file_location("perf_validation_study", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cal = mod.calibration_table()
    assert list(cal["id"]) == ["M1", "M2", "T1", "T2", "T3", "T4", "T8", "T9", "T11"]
    assert {"measured_tokens_per_s", "predicted_tokens_per_s", "error"} <= set(cal.columns)
    sens = mod.isl_sensitivity((300, 500))
    assert sens["M1_error"].iloc[0] > sens["M1_error"].iloc[1]  # longer prompts, less output
    assert "| id |" in mod.to_markdown(cal.head(2))


def test_cuda_graph_sizes_follow_the_engine_filter():
    from planner.perf.batching import cuda_graph_batch
    from planner.perf.validation import PERF_OVERVIEW_CUDA_GRAPH_BATCH_SIZES as L
    from planner.perf.validation import cuda_graph_batch_sizes

    # sizes up to min(max_batch_size, max_num_tokens), then that bound when padding
    assert cuda_graph_batch_sizes(L, 224, 2048) == (1, 2, 4, 8, 16, 32, 64, 128, 224)
    assert cuda_graph_batch_sizes(L, 4096, 2048)[-1] == 2048
    assert cuda_graph_batch_sizes(L, 384, 8192)[-2:] == (256, 384)  # a listed size: no copy
    assert cuda_graph_batch_sizes(L, 224, 2048, enable_padding=False)[-1] == 128
    g = cuda_graph_batch_sizes(L, 384, 2048)
    np.testing.assert_array_equal(cuda_graph_batch(np.array([1, 3, 183, 257, 384, 500]), g),
                                  [1, 4, 256, 384, 384, 500])  # above every graph: eager


def test_padding_costs_only_where_the_padded_kernels_bind():
    from planner.perf.step import step_model

    cat = load_catalog()
    llm = LLMSpec.from_row(cat.llm("llama-3.1-70b"))
    acc = AcceleratorSpec.from_row(cat.accelerator("h100-sxm"))
    sm = step_model(llm, acc, 2, "fp8", PerfParams())
    kv = 257 * 2000.0
    same = float(sm.padded_decode_step_time_s(257, kv, 257))
    assert same == pytest.approx(float(sm.decode_step_time_s(257, kv)), rel=1e-12)
    padded = float(sm.padded_decode_step_time_s(257, kv, 384))
    assert padded > same  # GEMMs, all-reduces and element-wise kernels on 384 tokens
    # ... but never more than the real step of 384 requests, which also reads their KV
    assert padded < float(sm.decode_step_time_s(384, kv * 384 / 257))
    # a decode batch whose GEMMs are still bandwidth-bound pads almost for free
    small = float(sm.padded_decode_step_time_s(3, 3000.0, 4)) / float(
        sm.decode_step_time_s(3, 3000.0))
    assert 1.0 <= small < 1.01


def test_finite_trtllm_bench_run_and_its_last_round():
    from planner.perf.validation import (
        PERF_OVERVIEW_CUDA_GRAPH_BATCH_SIZES,
        CalibrationCase,
        _specs,
        case_params,
        cuda_graph_batch_sizes,
        trtllm_bench_output_tokens_per_s,
    )

    llms, accs, _ = _specs(load_catalog())
    llm, acc = llms["llama-3.1-405b"], accs["h200-sxm"]
    case = CalibrationCase("x", "llama-3.1-405b", "h200-sxm", 8, 1, "fp8", 1000, 2000,
                           "trtllm-bench")
    p = case_params(case, llm, acc, PerfParams())
    b = 856.0
    whole = trtllm_bench_output_tokens_per_s(llm, acc, case, p, b, num_requests=4 * 856)
    assert whole["last_round_batch"] == 0
    assert whole["output_tokens_per_s"] == pytest.approx(whole["steady_tokens_per_s"], rel=1e-9)
    # 1,500 requests: one full round and a last one of 644, padded to the next captured graph
    # (1024 since trtllm-bench's max_batch_size comes from the device's 143,771 MiB)
    run = trtllm_bench_output_tokens_per_s(llm, acc, case, p, b)
    assert run["last_round_batch"] == 1500 - 856
    graphs = cuda_graph_batch_sizes(PERF_OVERVIEW_CUDA_GRAPH_BATCH_SIZES, p.max_batch,
                                    p.max_tokens_per_step)
    assert run["graph_batch"] == min(g for g in graphs if g >= b) > b
    # the last round's 644 requests cost more than their share of a full round (same
    # padded GEMMs), at most a full round
    s = run["steady_tokens_per_s"]
    assert s * 1500 / (2 * 856) < run["output_tokens_per_s"] < 0.95 * s
    # without graphs the run is faster (no padding) but still below the endless run
    eager = trtllm_bench_output_tokens_per_s(llm, acc, case, p, b, graph_batch_sizes=None)
    assert run["output_tokens_per_s"] < eager["output_tokens_per_s"] < eager[
        "steady_tokens_per_s"]


def test_trtllm_bench_settings_read_the_device_memory():
    # trtllm-bench sizes max_batch_size from the GPU's own total (get_device_memory()), so
    # the transcription uses device_memory_bytes: the catalog H100's 81,559 MiB, not 80e9 B
    import dataclasses
    import math

    from planner.perf.memory import (
        device_memory_bytes,
        kv_bytes_per_token_per_gpu,
        weight_bytes,
    )
    from planner.perf.validation import _specs, trtllm_bench_settings

    llms, accs, _ = _specs(load_catalog())
    llm, acc = llms["llama-3.1-405b"], accs["h100-sxm"]
    assert acc.device_mem_mib and device_memory_bytes(acc) > acc.mem_gb * 1e9
    sheet = dataclasses.replace(acc, device_mem_mib=None)  # data-sheet bytes only
    isl, osl = 128, 4096
    got = {}
    for name, a in (("device", acc), ("sheet", sheet)):
        # kv_cache_max_requests of tuning.py in GiB, from the bytes this accelerator reports
        cache = (device_memory_bytes(a) * 8 - weight_bytes(llm, "fp8")) / 1024**3 * 0.95
        per_req = kv_bytes_per_token_per_gpu(llm, "fp8", 8) * 8 / 1024**3 * (isl + osl)
        raw = cache / per_req
        assert raw < 256  # this row rounds up to 32s (at least 64)
        bs, tok = trtllm_bench_settings(llm, a, 8, "fp8", isl, osl)
        assert bs == max(64, 32 * math.ceil(raw / 32)) and tok == 2048
        got[name] = bs
    assert got["device"] > got["sheet"]  # more bytes, a larger max_batch_size
