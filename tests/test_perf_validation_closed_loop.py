"""Closed-loop validation of the step model against published benchmarks (issue 13).

Every error below is computed by the planner from the shipped data
(``planner/data/reference/closed_loop_*.csv``) and the fitted parameters in
:data:`planner.perf.closed_loop_validation.FITTED`; the thresholds are the levels the study
reaches (``studies/perf-validation/README.md``), so a regression in the model or the data
fails here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from planner.catalog import load_catalog
from planner.errors import PlannerError
from planner.perf import closed_loop_validation as v
from planner.perf.closedloop import closed_loop_arrays
from planner.perf.memory import FP4_BYTES_WITH_SCALES, weight_bytes, weight_precision
from planner.perf.params import PerfParams
from planner.perf.specs import AcceleratorSpec, LLMSpec
from planner.perf.step import step_model

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "perf-validation" / "closed_loop_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("closed_loop_study", STUDY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return v.load_closed_loop()


def test_data_set_coverage(data):
    scope = data[data["source"].isin(v.IN_SCOPE_SOURCES)]
    assert len(scope) >= 150 and len(data) >= 150
    assert data["accelerator"].nunique() >= 3
    assert scope["accelerator"].nunique() >= 3
    assert data["source"].nunique() >= 2 and data["engine"].nunique() >= 2
    cat = load_catalog()
    kinds = {LLMSpec.from_row(cat.llm(m)).is_moe for m in data["catalog_model"].unique()}
    assert kinds == {True, False}  # dense and MoE
    assert data["isl"].min() <= 1024 and data["isl"].max() >= 5000  # short and long inputs
    assert data["concurrency"].min() <= 4 and data["concurrency"].max() >= 128
    for col in ("model", "accelerator", "precision", "engine", "source_url"):
        assert data[col].astype(str).str.len().gt(0).all(), col
    for col in ("gpus", "tp", "isl", "osl", "concurrency", "output_tokens_per_s",
                "ttft_target_ms", "itl_target_ms"):
        assert (data[col] > 0).all(), col
    assert data["id"].is_unique


def test_split_is_deterministic_and_keeps_curves_whole(data):
    h1, h2 = v.split(data), v.split(data.sample(frac=1.0, random_state=3))
    assert h1.equals(h2.loc[h1.index])
    assert 0.3 < h1.mean() < 0.6
    cid = v.curve_id(data)
    multi = data.groupby(v.STRATUM_KEY)[v.CURVE_KEY].transform("nunique").iloc[:, 0] > 1
    both = pd.DataFrame({"c": cid, "h": h1})[multi.to_numpy()].groupby("c")["h"].nunique()
    assert (both == 1).all()  # no multi-curve stratum splits a curve
    cover = data.assign(h=h1).groupby(v.STRATUM_KEY)["h"].agg(["min", "max"])
    assert (cover["min"] == 0).all() and (cover["max"] == 1).all()  # both halves everywhere


def test_throughput_identity_on_predictions(study):
    p = study.predictions()
    p = p[p["fits"]]
    o = p["mean_output_tokens"]
    x = p["concurrency"] * o / ((p["pred_ttft_ms"] + (o - 1) * p["pred_itl_ms"]) / 1e3)
    np.testing.assert_allclose(p["pred_output_tokens_per_s"], x, rtol=1e-6)


def test_heldout_errors(study, capsys):
    s = study.summary_table().set_index("rows_set").loc["held out"]
    with capsys.disabled():
        print("\nclosed-loop held out:", s.round(3).to_dict())
    assert s["rows"] >= 150
    assert s["tput_median_abs"] <= TARGET["tput"]
    assert s["itl_median_abs"] <= TARGET["itl"]
    assert s["ttft_median_abs"] <= TARGET["ttft"]


def test_heldout_bias_per_gpu_and_precision(study):
    for col in ("gpu", "precision"):
        t = study.by_table([col])
        for m in ("tput", "itl"):
            assert t[f"{m}_bias"].abs().max() <= TARGET["bias"], (col, m, t)


#: Held-out groups (GPU, precision, GPU and precision; at least ``BIAS_MIN_ROWS`` = 30 rows)
#: whose median bias is beyond the issue's +-12 % on some metric, with the metric: none (v7).
#: The last one was B200 fp8 TTFT (v4 -29.3 %, v5 -16.4 %, v6 -16.4 %: the 8k-token prompts
#: of the held-out TP8 curves, TensorRT-LLM -22 %). Its prefill attention was fitted on the
#: fit half's one 8k fp8 curve (SGLang TP4, ``--scheduler-recv-interval 10``) while the model
#: charged SGLang's polling wait on the mean step, 8k prefills included (165 ms of that
#: curve's 539 ms at concurrency 8); SGLang polls right after any step with prompt tokens and
#: counts only decode steps (``SchedulerRecvSkipper``), 60 ms, and the refit
#: ``blackwell|fp8`` attention (0.125 -> 0.065) brings the group to -7.0 %
#: (TensorRT-LLM -21.8 -> -6.5 %). The test fails if a group goes beyond +-12 % (then add it
#: here with the cause). v3 also had MI300X ITL (+13.9 %) and H200 TTFT (+22.8 %).
KNOWN_BIASED: dict[tuple[str, str], set[str]] = {}


def test_heldout_bias_within_12pct_per_gpu_and_precision(study, capsys):
    t = study.bias_table()
    assert study.BIAS_MIN_ROWS == 30 and study.BIAS_TARGET == 0.12
    t = t[(t["half"] == "held out") & t["group"].isin(["gpu", "precision", "gpu/precision"])
          & (t["rows"] >= study.BIAS_MIN_ROWS)]
    assert set(t["key"]) >= {"b200", "h200", "mi300x", "fp4", "fp8", "b200 fp4", "b200 fp8"}
    beyond = {}
    for r in t.itertuples(index=False):
        ms = {m for m in ("tput", "itl", "ttft") if abs(getattr(r, f"{m}_bias")) > 0.12}
        if ms:
            beyond[(r.group, r.key)] = ms
    with capsys.disabled():
        print("\nheld-out groups beyond +-12 % bias:", beyond)
    assert beyond == KNOWN_BIASED


def test_deepgemm_backend_runs_pay_their_time_per_step(study):
    # v6: the B200 fp8 TensorRT-LLM runs with the unfused DEEPGEMM MoE backend (December 2025)
    # decode ~30 % slower at concurrency 4 than the shared parameters predict; the backend's
    # time per step, fitted on the fit half's rows of that backend, carries to the held-out
    # ones (their 8k-token prompts)
    p = study.predictions()
    ls = v.launch_settings(p)
    sel = p["in_scope"] & p["fits"] & (ls["moe_backend"] == "DEEPGEMM")
    assert (p.loc[sel, "held_out"].sum() >= 15) and ((~p.loc[sel, "held_out"]).sum() >= 30)
    rows = p.loc[sel, v.load_closed_loop().columns]
    llms, accs = v.catalog_specs(rows, load_catalog())
    from dataclasses import replace
    shared = v.predict_closed_loop(rows, llms, accs,
                                   fit=replace(v.FITTED, moe_backend_step_s={}))
    own = p.loc[sel]
    for half in (False, True):
        h = (own["held_out"] == half).to_numpy()
        for m in ("itl", "tput", "ttft"):
            e_own = own.loc[h, f"err_{m}"].abs().median()
            e_shared = shared.loc[h, f"err_{m}"].abs().median()
            assert e_own < e_shared, (half, m, e_own, e_shared)
        # the decode: halved or better (held-out ITL 0.6: v7's slower B200 fp8 prefill
        # lengthens the mixed steps of these 8k-token curves, 12.1 -> 6.4 %)
        for m, k in (("itl", 0.5 if not half else 0.6), ("tput", 0.5)):
            assert (own.loc[h, f"err_{m}"].abs().median()
                    < k * shared.loc[h, f"err_{m}"].abs().median()), (half, m)
    # the held-out B200 fp8 TensorRT-LLM group's throughput and ITL bias within +-12 %
    # (v5: +26.5 % / -19.3 %)
    t = study.bias_table().set_index(["half", "group", "key"])
    g = t.loc[("held out", "gpu/precision/engine", "b200 fp8 TensorRT-LLM")]
    assert g["rows"] >= 30
    assert abs(g["tput_bias"]) <= 0.12 and abs(g["itl_bias"]) <= 0.12, g


def test_b200_fp8_prefill_fitted_on_the_fit_half_carries_to_the_held_out_curves(study):
    # v7: with SGLang's polling wait in decode steps (a prompt step makes it poll at once),
    # the fit half's one 8k-token B200 fp8 curve (SGLang TP4) gives a slower prefill
    # attention (0.065, v6 0.125); the held-out B200 fp8 rows (8k curves of SGLang TP8 and
    # TensorRT-LLM TP4/TP8 among them) come within +-12 % TTFT bias
    p = study.predictions()
    sel = (p["in_scope"] & p["fits"] & p["held_out"] & (p["gpu"] == "b200")
           & (p["precision"] == "fp8"))
    assert sel.sum() >= 60
    rows = p.loc[sel, v.load_closed_loop().columns]
    llms, accs = v.catalog_specs(rows, load_catalog())
    from dataclasses import replace
    v6 = replace(v.FITTED, attention={**v.FITTED.attention, "blackwell|fp8": 0.125},
                 request_overhead_s={**v.FITTED.request_overhead_s, "SGLang|blackwell": 0.093,
                                     "TensorRT-LLM|blackwell": 0.1})
    old = v.predict_closed_loop(rows, llms, accs, fit=v6)
    own = p.loc[sel]
    assert abs(own["err_ttft"].median()) <= 0.12 < abs(old["err_ttft"].median())
    long = (own["isl"] >= 8192).to_numpy()
    trt = (own["engine"] == "TensorRT-LLM").to_numpy() & long
    for m in (long, trt):
        assert m.sum() >= 15
        assert (own.loc[m, "err_ttft"].abs().median()
                < old.loc[m, "err_ttft"].abs().median())
    for m in ("tput", "itl"):
        assert abs(own[f"err_{m}"].median()) <= 0.12
    # the value is the fit half's: its fp8 TTFT cost is lower there than at v6's value or
    # at a slower one
    df = v.load_closed_loop()
    fit = df[~v.split(df) & df["source"].isin(v.IN_SCOPE_SOURCES)
             & (df["accelerator"] == "b200") & (df["precision"] == "fp8")
             & ~df["dp_attention"].astype(bool)]

    def cost(a):
        f2 = replace(v.FITTED, attention={**v.FITTED.attention, "blackwell|fp8": a})
        e = np.log1p(v.predict_closed_loop(fit, llms, accs, fit=f2)["err_ttft"].to_numpy())
        return float(np.sum(np.where(np.abs(e) <= 0.2, e**2, 0.4 * np.abs(e) - 0.04)))

    here = cost(v.FITTED.attention["blackwell|fp8"])
    assert here < cost(0.125) and here < cost(0.04)


def test_fit_improves_on_defaults(study):
    fit = study.summary_table(True).set_index("rows_set").loc["held out"]
    dflt = study.summary_table(False).set_index("rows_set").loc["held out"]
    for m in ("tput", "itl", "ttft"):
        assert fit[f"{m}_median_abs"] < dflt[f"{m}_median_abs"], m


def test_max_throughput_rows(study, capsys):
    # the calibrated defaults (what the sizing uses) ...
    s = study.max_throughput_summary().set_index("set")
    # ... and the closed-loop fit, one parameter set for both kinds of benchmark
    f = study.max_throughput_summary(True).set_index("set")
    with capsys.disabled():
        print("\nmax-throughput rows, defaults:", s.round(3).to_dict("index"))
        print("max-throughput rows, closed-loop fit:", f.round(3).to_dict("index"))
    assert s.loc["all", "rows"] == f.loc["all", "rows"] == 9 + 53 + 20
    # the target: median <= 8 %, every row within 20 %, B200 FP4 included
    assert s.loc["all", "median_abs_error"] <= MAXTP_TARGET["max_median"] <= 0.08
    t = study.max_throughput_table().set_index("id")["error"].abs()
    assert t.max() <= MAXTP_TARGET["max_max"] <= 0.20
    assert s.loc["B200 FP4 (both)", "max_abs_error"] <= 0.20
    assert abs(s.loc["B200 FP4 (both)", "bias"]) <= MAXTP_TARGET["b200_fp4_bias"]
    assert f.loc["all", "median_abs_error"] <= MAXTP_TARGET["fit_max_median"]
    assert f.loc["all", "max_abs_error"] <= MAXTP_TARGET["fit_max_max"]
    held = f.loc["B200 FP4 405B (held out)", "bias"]
    assert abs(held) <= MAXTP_TARGET["fit_b200_405b_bias"]
    # the fp4 GEMM factor (fitted on the 70B rows) carries to the held-out 405B rows
    b405 = s.loc["B200 FP4 405B (held out)"]
    assert b405["median_abs_error"] <= MAXTP_TARGET["b200_405b_median"]
    assert b405["max_abs_error"] <= MAXTP_TARGET["b200_405b_max"]


def test_max_throughput_long_output_rows_follow_graph_padding_and_the_finite_run(study):
    # the five rows that were beyond 20 % (all Llama-3.1-405B, long outputs, KV-limited
    # batch of 183-588) came from two properties of the benchmark run, not from the KV
    # memory: decode-only steps padded to the captured CUDA-graph batch and the last
    # partial round of the finite run; both only lower the prediction
    t = study.max_throughput_table().set_index("id")
    from planner.perf.validation import predict_trtllm_bench
    rows = pd.read_csv(study.HOLDOUT)
    rows = rows[(rows["model"] == "llama-3.1-405b") & (rows["osl"] >= 2000)]
    p = predict_trtllm_bench(rows, PerfParams(), load_catalog())
    assert (p["graph_batch"] >= p["batch"].round(0)).all()
    assert (p["predicted_tokens_per_s"] <= p["steady_state_tokens_per_s"] * (1 + 1e-9)).all()
    for rid in ("llama-3.1-405b h100-sxm TP8 128/4096", "llama-3.1-405b h100-sxm TP8 1000/2000",
                "llama-3.1-405b h100-sxm TP8 20000/2000", "llama-3.1-405b h200-sxm TP8 128/4096",
                "llama-3.1-405b b200 TP4 1000/2000"):
        assert abs(t.loc[rid, "error"]) <= 0.20, (rid, t.loc[rid])



def test_max_throughput_nvls_buffers_only_where_nccl_uses_nvls(study):
    # NCCL's NVLink SHARP buffers: held on NVSwitch parts (NVLink 4/5) with > 2 GPUs per
    # replica, nowhere else; the memory plan's KV cache loses exactly them x kv_mem_fraction
    from planner.perf.memory import comm_reserve_bytes, memory_plan
    from planner.perf.validation import predict_trtllm_bench
    cat = load_catalog()
    p = PerfParams()
    llm = LLMSpec.from_row(cat.llm("llama-3.1-70b"))
    cases = (("h100-sxm", 8, True), ("h200", 4, True), ("b200", 4, True), ("h100-sxm", 2, False),
             ("h100-sxm", 1, False), ("h100-pcie", 4, False), ("a100-80gb", 8, False),
             ("mi300x", 8, False))
    for acc_id, tp, held in cases:
        acc = AcceleratorSpec.from_row(cat.accelerator(acc_id))
        got = comm_reserve_bytes(acc, tp, p)
        assert got == (p.nvls_reserve_gb * 1e9 if held else 0.0), (acc_id, tp)
        on = memory_plan(llm, acc, tp, "fp8", p)
        off = memory_plan(llm, acc, tp, "fp8", p.replace(nvls_reserve_gb=0.0))
        assert off.kv_gb_per_gpu - on.kv_gb_per_gpu == pytest.approx(
            got / 1e9 * p.kv_mem_fraction, abs=1e-9), (acc_id, tp)
    # the two Llama-3.1-405B H100 TP8 rows beyond 20 % without them are within 20 % with
    # them, at a smaller KV-limited batch
    rows = pd.read_csv(study.HOLDOUT)
    rows = rows[(rows["model"] == "llama-3.1-405b") & (rows["accelerator"] == "h100-sxm")
                & rows["osl"].isin([2000, 4096]) & rows["isl"].isin([128, 20000])]
    assert len(rows) == 2
    without = predict_trtllm_bench(rows, p.replace(nvls_reserve_gb=0.0), cat)
    with_nvls = predict_trtllm_bench(rows, p, cat)
    assert (without["abs_error"] > 0.20).all() and (with_nvls["abs_error"] <= 0.20).all()
    assert (with_nvls["batch"] < without["batch"]).all()
    assert (with_nvls["limited_by"] == "memory").all()


def test_max_throughput_no_chunked_prefill_fits_a_whole_prompt_per_step():
    # trtllm-bench runs without chunked prefill by default, so max_num_tokens is raised to
    # max_isl + max_batch_size where the heuristic gives less (the 20000/2000 rows) and left
    # alone where it already covers a prompt
    from planner.perf.validation import _specs, trtllm_bench_settings
    llms, accs, _ = _specs(load_catalog())
    llm, acc = llms["llama-3.1-405b"], accs["h100-sxm"]
    for isl, osl in ((20000, 2000), (5000, 500), (128, 4096), (2048, 128)):
        bs, tok = trtllm_bench_settings(llm, acc, 8, "fp8", isl, osl)
        bs_c, tok_c = trtllm_bench_settings(llm, acc, 8, "fp8", isl, osl,
                                            enable_chunked_prefill=True)
        assert bs == bs_c and tok == max(tok_c, isl + bs), (isl, osl)
        assert tok >= isl
    bs, tok = trtllm_bench_settings(llm, acc, 8, "fp8", 20000, 2000)
    assert trtllm_bench_settings(llm, acc, 8, "fp8", 20000, 2000,
                                 enable_chunked_prefill=True)[1] < 20000 < tok

def test_server_below_offline_where_the_bound_binds(study):
    t = study.server_scenario()
    off = t.iloc[0]
    srv = t.iloc[1:]
    assert abs(off["error"]) <= 0.08
    mlperf = srv[srv["tpot_bound_s"] == 0.2].iloc[0]
    assert abs(mlperf["error"]) <= 0.08
    # never clearly above the offline maximum; below it once the TPOT bound binds below 200 ms
    # (at 200 ms the server's larger batch cap, 1024 vs offline 896, which the device's
    # 85.5e9 bytes now hold, puts it 0.4 % above offline)
    assert (srv["predicted_tokens_per_s"] <= off["predicted_tokens_per_s"] * 1.01).all()
    binds = srv[srv["limited_by"].isin(["TPOT", "slo", "TTFT queueing"])]
    assert len(binds) >= 2
    assert (binds.loc[binds["tpot_bound_s"] < 0.2, "share_of_offline"] < 1.0 - 1e-3).all()
    assert srv["share_of_offline"].iloc[-1] < 0.97  # 100 ms: clearly below the offline rate
    assert np.all(np.diff(srv["predicted_tokens_per_s"].to_numpy()) <= 1e-6)  # tighter, less
    assert (srv["tpot_s"] <= srv["tpot_bound_s"] + 1e-9).all()
    # at MLPerf's scheduled rate (75.1 queries/s) neither bound binds, in the run's log (p99
    # TTFT 0.46 of 2 s, p99 TPOT 175 of 200 ms) nor in the model, and the model's capacity
    # at the bounds is above the rate the run passed at
    assert mlperf["measured_ttft_p99_s"] < 0.5 * 2.0 and mlperf["measured_tpot_p99_s"] < 0.2
    assert mlperf["pred_ttft_p99_at_measured_rate_s"] < 2.0
    assert mlperf["pred_tpot_p99_at_measured_rate_s"] < 0.2
    assert mlperf["predicted_tokens_per_s"] >= mlperf["measured_tokens_per_s"]
    # output lengths vary as the log's latency percentiles imply (median/mean of O)
    assert 0.4 < mlperf["output_cv"] < 0.8
    # the step model at each run's own decode batch: within 10 % of the step the run implies
    # (server -4.5 %, offline +7.8 %); the runs differ from each other in the other direction
    # (server steps slower at fewer requests), which is the measured gap the model lacks
    for run in ("offline", "server"):
        assert mlperf[f"pred_{run}_step_s"] == pytest.approx(
            mlperf[f"measured_{run}_step_s"], rel=0.10), run
    assert mlperf["server_batch"] < mlperf["offline_batch"]


def test_fp4_precision_realism():
    cat = load_catalog()
    ds = LLMSpec.from_row(cat.llm("deepseek-v3"))
    ll = LLMSpec.from_row(cat.llm("llama-3.1-70b"))
    # MoE fp4: only the routed experts are fp4 (with block scales); the rest stays fp8
    wp = weight_precision(ds, "fp4")
    assert (wp.shared_compute, wp.expert_compute) == ("fp8", "fp4")
    experts = ds.experts * ds.expert_params
    assert weight_bytes(ds, "fp4") == pytest.approx(
        (ds.params_b * 1e9 - experts) * 1.0 + experts * FP4_BYTES_WITH_SCALES)
    assert weight_bytes(ll, "fp4") == pytest.approx(ll.params_b * 1e9 * (0.5 + 1 / 16))
    assert weight_bytes(ll, "fp8") == pytest.approx(ll.params_b * 1e9)
    b200 = AcceleratorSpec.from_row(cat.accelerator("b200"))
    # fp4 decode of a dense model reads 0.5625/1 of the fp8 weights: faster, but not 2x
    t8 = float(step_model(ll, b200, 1, "fp8").decode_step_time_s(1, 1000))
    t4 = float(step_model(ll, b200, 1, "fp4").decode_step_time_s(1, 1000))
    assert 0.5 < t4 / t8 < 0.75


def test_moe_expert_gemms_run_at_their_own_token_count():
    cat = load_catalog()
    ds = LLMSpec.from_row(cat.llm("deepseek-v3"))
    h200 = AcceleratorSpec.from_row(cat.accelerator("h200"))
    sm = step_model(ds, h200, 8, "fp8", PerfParams())
    # a small decode batch touches few experts: the step is far below reading all experts
    all_exp = ds.experts * ds.expert_params / 8 / (h200.mem_bw_bytes_per_s * 0.92)
    assert float(sm.gemm_time_s(4)) < 0.5 * all_exp
    t = np.asarray(sm.gemm_time_s(np.array([1, 4, 16, 64, 256])))
    assert np.all(np.diff(t) > 0)  # more tokens, more experts touched, more time


def test_launch_settings_follow_the_published_scripts(data):
    ls = v.launch_settings(data)
    x = data[data["source"] == "InferenceX"]

    def pick(**kw):
        sel = np.ones(len(x), bool)
        for k, val in kw.items():
            sel &= (x[k] == val).to_numpy()
        return ls.loc[x.index[sel]]

    b_lo = pick(accelerator="b200", precision="fp4", engine="SGLang", tp=8)
    c = x.loc[b_lo.index, "concurrency"]
    assert set(b_lo.loc[c < 16, "poll_steps"]) == {10.0}  # --scheduler-recv-interval 10
    assert set(b_lo.loc[c >= 16, "poll_steps"]) == {30.0}  # 30 from concurrency 16
    assert set(b_lo["max_tokens_per_step"]) == {16384.0}
    assert set(pick(accelerator="h200", engine="SGLang")["poll_steps"]) == {1.0}
    trt = pick(engine="TensorRT-LLM")
    tx = x.loc[trt.index]
    want = np.maximum(8192, (tx["concurrency"] + tx["isl"] + 127) // 64 * 64)
    np.testing.assert_array_equal(trt["max_tokens_per_step"], want.astype(float))
    dp = tx["dp_attention"].to_numpy()
    assert (trt["admission_group"].to_numpy()[dp] == tx["tp"].to_numpy()[dp]).all()
    assert (trt["admission_group"].to_numpy()[~dp] == 1).all()
    other = ls.loc[data.index[data["source"] != "InferenceX"]]
    assert (other["poll_steps"] == 1).all() and (other["admission_group"] == 1).all()
    # TensorRT-LLM MoE backend (dsr1_*_trt.sh): B200 fp8 DEEPGEMM until InferenceX PR #594
    # (2026-01-29, release 1.1.0rc2.post2 -> 1.2.0rc6.post2), then TRTLLM except 1k/8k at
    # concurrency >= 256; H200 CUTLASS; nothing recorded for the other engines
    b8 = tx[(tx["accelerator"] == "b200") & (tx["precision"] == "fp8")]
    be = ls.loc[b8.index, "moe_backend"]
    early = b8["date"] < v.TRTLLM_B200_FP8_UPDATE
    assert early.any() and (~early).any()
    assert (be[early] == "DEEPGEMM").all()
    late_dg = (b8["isl"] == 1024) & (b8["osl"] == 8192) & (b8["concurrency"] >= 256)
    assert (be[~early & ~late_dg] == "TRTLLM").all()
    assert (be[~early & late_dg] == "DEEPGEMM").all()
    v_early = b8.loc[early, "engine_version"]
    assert set(v_early[v_early.str.contains("tensorrt-llm")]) == {
        "nvcr.io/nvidia/tensorrt-llm/release:1.1.0rc2.post2"}
    assert set(ls.loc[tx.index[tx["accelerator"] == "h200"], "moe_backend"]) == {"CUTLASS"}
    assert (ls.loc[data.index[data["engine"] != "TensorRT-LLM"], "moe_backend"] == "").all()


def _llama70b_h100_tp2():
    """Llama-3.1-70B on 2x H100 fp8 at the default parameters: its specs and step model."""
    cat = load_catalog()
    ll = LLMSpec.from_row(cat.llm("llama-3.1-70b"))
    h100 = AcceleratorSpec.from_row(cat.accelerator("h100-sxm"))
    return ll, h100, step_model(ll, h100, 2, "fp8", PerfParams())


def _closed(sm, c, **kw):
    return closed_loop_arrays(sm, c, input_tokens=1000.0, output_tokens=500.0,
                              max_batch=256.0, **kw)


def test_scheduler_poll_interval_delays_the_first_token():
    ll, h100, sm = _llama70b_h100_tp2()
    c = np.array([1.0, 4.0, 16.0, 64.0])
    base = _closed(sm, c)
    polls = [_closed(sm, c, poll_steps=n) for n in (4, 10, 30)]
    # c = 1: an idle engine takes the request at once
    for a in polls:
        assert a["ttft_s"][0] == pytest.approx(base["ttft_s"][0], rel=1e-9)
    # busier engine: at least the (poll - 1)/2 extra steps of the polling interval, more
    # with each longer interval, and the throughput identity still holds
    for n, a in zip((4, 10, 30), polls, strict=True):
        assert np.all(a["ttft_s"][1:] - base["ttft_s"][1:]
                      >= 0.5 * (n - 1) / 2 * np.minimum(a["itl_s"][1:], base["itl_s"][1:]))
        x = c * 500.0 / (a["ttft_s"] + 499.0 * a["itl_s"])
        np.testing.assert_allclose(a["output_tokens_per_s"], x, rtol=1e-9)
    assert np.all(np.diff(np.stack([base["ttft_s"][1:]] + [a["ttft_s"][1:] for a in polls]),
                          axis=0) > 0)
    # the same through PerfParams
    sm30 = step_model(ll, h100, 2, "fp8", PerfParams(scheduler_poll_steps=30))
    np.testing.assert_allclose(_closed(sm30, c)["ttft_s"], polls[2]["ttft_s"], rtol=1e-12)
    with pytest.raises(PlannerError):
        PerfParams(scheduler_poll_steps=0)


def test_polling_wait_counts_decode_steps_only():
    # SGLang's SchedulerRecvSkipper: a decode step adds 1 to the counter, any step with prompt
    # tokens 1000, so the engine polls right after a prompt step and an arrival waits the rest
    # of the interval only when it comes during decode steps
    _, _, sm = _llama70b_h100_tp2()
    c = np.array([1.0, 4.0, 16.0, 64.0])
    busy = {}
    for isl in (1000.0, 8000.0):
        kw = dict(input_tokens=isl, output_tokens=500.0, max_batch=256.0)
        a = closed_loop_arrays(sm, c, poll_steps=10, **kw)
        parts = (a["front_end_s"] + a["step_in_progress_s"] + a["prefill_wait_s"]
                 + a["own_prefill_s"])
        np.testing.assert_allclose(parts, a["ttft_s"], rtol=1e-9)
        assert a["admission_wait_s"][0] == 0.0  # c = 1: an idle engine polls at once
        assert np.all(a["admission_wait_s"] <= a["prefill_wait_s"] * (1 + 1e-9))
        assert np.all(closed_loop_arrays(sm, c, poll_steps=1, **kw)["admission_wait_s"] == 0)
        # at most (poll - 1)/2 decode steps beside the others' decodes, less by the share of
        # time in prompt steps, which is at least their share of the steps
        d_o = a["decode_batch"] * (c - 1) / c
        t_d = np.asarray(sm.step_time_s(d_o, d_o * (isl + 250.0)))
        share = 1.0 - a["admission_wait_s"][1:] / (0.5 * 9 * t_d[1:])
        assert np.all(share > 0) and np.all(share < 1)
        assert np.all(share >= a["full_step_share"][1:] * (1 - 1e-9))
        busy[isl] = share
    assert np.all(busy[8000.0] > busy[1000.0])  # longer prompts: more time in prompt steps


def test_admission_group_waits_for_its_prompts_or_the_timeout():
    _, _, sm = _llama70b_h100_tp2()
    c = np.array([2.0, 8.0, 64.0])
    base = _closed(sm, c)
    g8 = _closed(sm, c, admission_group=8, admission_timeout_steps=60)
    assert np.all(g8["ttft_s"] > base["ttft_s"])
    # no timeout: same as no grouping
    g0 = _closed(sm, c, admission_group=8, admission_timeout_steps=0)
    np.testing.assert_allclose(g0["ttft_s"], base["ttft_s"], rtol=1e-9)
    # c = 2 cannot gather 8 prompts: the whole timeout's half on average, ~30 steps
    assert g8["ttft_s"][0] - base["ttft_s"][0] >= 0.5 * 30 * base["itl_s"][0]
    # a shorter timeout caps the wait
    g5 = _closed(sm, c, admission_group=8, admission_timeout_steps=5)
    assert np.all(g5["ttft_s"] <= g8["ttft_s"] * (1 + 1e-9))


def test_fp4_gemm_factor_applies_to_fp4_operators_only():
    cat = load_catalog()
    ll = LLMSpec.from_row(cat.llm("llama-3.1-70b"))
    ds = LLMSpec.from_row(cat.llm("deepseek-v3"))
    b200 = AcceleratorSpec.from_row(cat.accelerator("b200"))
    n = np.array([8192.0])
    same = PerfParams(fp4_gemm_factor=None)
    dflt = PerfParams()
    # a dense fp4 model's compute-bound GEMMs slow down by lowp / fp4 factor
    t_same = float(step_model(ll, b200, 1, "fp4", same).gemm_time_s(n)[0])
    t_dflt = float(step_model(ll, b200, 1, "fp4", dflt).gemm_time_s(n)[0])
    assert t_dflt / t_same == pytest.approx(dflt.lowp_gemm_factor / dflt.fp4_gemm_factor,
                                            rel=0.02)
    # fp8 is untouched; an fp4 MoE keeps its fp8 shared GEMMs at the fp8 efficiency
    assert float(step_model(ll, b200, 1, "fp8", same).gemm_time_s(n)[0]) == pytest.approx(
        float(step_model(ll, b200, 1, "fp8", dflt).gemm_time_s(n)[0]), rel=1e-12)
    m_same = step_model(ds, b200, 8, "fp4", same)
    m_dflt = step_model(ds, b200, 8, "fp4", dflt)
    assert m_dflt._c["e_max"] == m_same._c["e_max"]
    assert m_dflt._c["xe"] == pytest.approx(dflt.fp4_gemm_factor / dflt.lowp_gemm_factor)
    assert float(m_dflt.gemm_time_s(n)[0]) > float(m_same.gemm_time_s(n)[0])


def test_b200_sglang_ttft_rises_where_the_recv_interval_does(study):
    # measured: the median TTFT of B200 SGLang jumps between concurrency 8 and 16, where the
    # launch script raises --scheduler-recv-interval from 10 to 30; the model follows
    p = study.predictions()
    g = p[(p["accelerator"] == "b200") & (p["engine"] == "SGLang") & (p["tp"] == 8)
          & (p["ep"] == 8) & (p["isl"] == 1024) & (p["precision"] == "fp4") & p["fits"]]
    by = g.groupby("concurrency")[["ttft_target_ms", "pred_ttft_ms"]].median()
    meas_jump = by.loc[16, "ttft_target_ms"] - by.loc[8, "ttft_target_ms"]
    pred_jump = by.loc[16, "pred_ttft_ms"] - by.loc[8, "pred_ttft_ms"]
    assert meas_jump > 50 and pred_jump > 0.5 * meas_jump


#: Maximum-throughput rows (TensorRT-LLM perf overview and MLPerf, 82 rows), levels reached
#: with the defaults since decode-only steps replay padded CUDA graphs and the trtllm-bench
#: run is finite (planner.perf.validation.trtllm_bench_output_tokens_per_s): median 0.043,
#: max 0.192 (Llama-3.3-70B H200 TP1 128/4096, under-predicted); B200 FP4 bias -0.024, B200
#: FP4 405B held out median 0.059 / max 0.148. With the closed-loop fit (fitted before the
#: padding was modelled): median 0.082, max 0.327.
#: Since planning sizes memory from the device's own reading (catalog ``device_mem_mib``,
#: H100 85.5e9 B instead of the data sheet's 80e9) the KV-limited rows hold more requests:
#: median 0.050, max 0.321 (Llama-3.1-405B H100 TP8 128/4096, over-predicted; the flat 3 GB
#: runtime reserve, fitted with the data-sheet bytes, under-counts TP8 405B's buffers); B200
#: FP4 bias +0.010, B200 FP4 405B held out median 0.061 / max 0.185; closed-loop fit median
#: 0.076, max 0.319.
#: Since trtllm-bench's max_batch_size/max_num_tokens heuristic (trtllm_bench_settings) also
#: reads the device's bytes (its get_device_memory() asks the GPU): median 0.047, max 0.228;
#: Llama-3.1-405B H100 TP8 128/4096 0.321 -> 0.223 (max_batch_size 224 -> 256, so its
#: 221-request decode steps replay the 256 graph); B200 FP4 bias -0.013, B200 FP4 405B held
#: out median 0.057 / max 0.115; closed-loop fit median 0.087 (its larger batches pad more),
#: max 0.319. Rows beyond 0.20 then: both Llama-3.1-405B H100 TP8 and KV-limited.
#: Since the memory plan holds NCCL's NVLink SHARP buffers on NVSwitch parts with more than
#: two GPUs per replica (planner.perf.memory.comm_reserve_bytes, 5.3 GB per GPU): median
#: 0.045, max 0.175 (Llama-3.1-8B H200 TP1 128/128, compute-bound, unchanged); the two rows
#: 128/4096 0.223 -> 0.026 and 20000/2000 0.228 -> 0.164; B200 FP4 bias -0.029, B200 FP4
#: 405B held out median 0.048 / max 0.116; closed-loop fit median 0.080, max 0.319.
#: Since trtllm-bench's max_num_tokens covers a whole prompt (no chunked prefill, its
#: default): median 0.045, 20000/2000 0.164 -> 0.153, B200 FP4 bias -0.031.
MAXTP_TARGET = {"max_median": 0.046, "max_max": 0.18, "b200_fp4_bias": 0.035,
                "b200_405b_median": 0.05, "b200_405b_max": 0.12, "fit_max_median": 0.085,
                "fit_max_max": 0.33, "fit_b200_405b_bias": 0.05}

#: Levels reached by the study (see README); the issue's targets are 0.10 / 0.12 / 0.25
#: (held-out throughput / ITL / TTFT), bias 0.12 per GPU and precision, max-throughput
#: median 0.08 and every row within 0.20. Reached (v7): 0.072 / 0.082 / 0.138 (v6: 0.080 /
#: 0.085 / 0.133; v5: 0.086 / 0.092 / 0.133; v4: 0.086 / 0.091 / 0.144); throughput
#: and ITL bias within 0.098 per GPU and precision (H100 ITL, 4 rows; v3: 0.139, MI300X ITL),
#: TTFT bias within 0.12 (KNOWN_BIASED); max-throughput median 0.059 with the defaults (max 0.282,
#: Llama-3.1-405B H100 128/4096; B200 FP4 405B held out: median 0.077, max 0.229) or 0.091
#: with the closed-loop fit (max 0.306).
TARGET = {"tput": 0.085, "itl": 0.09, "ttft": 0.14, "bias": 0.10, "max_median": 0.065,
          "max_max": 0.29, "b200_fp4_bias": 0.05, "b200_405b_median": 0.08,
          "b200_405b_max": 0.23, "fit_max_median": 0.095, "fit_max_max": 0.31,
          "fit_b200_405b_bias": 0.09}


def test_fit_params_per_engine_and_family_keys():
    fp = v.FITTED
    base = PerfParams()
    trt, sgl = (fp.params_for("h200", e, base) for e in ("TensorRT-LLM", "SGLang"))
    assert trt.attention_efficiency == fp.attention["TensorRT-LLM|hopper"]
    assert sgl.attention_efficiency == fp.attention["hopper"] != trt.attention_efficiency
    mi, b2 = fp.params_for("mi300x", "SGLang", base), fp.params_for("b200", "SGLang", base)
    assert mi.step_overhead_s == fp.engine_step_overhead_s["SGLang|cdna3"]
    assert b2.step_overhead_s == fp.engine_step_overhead_s["SGLang"] != mi.step_overhead_s
    # the dense max-throughput rows keep the family's attention and no front end
    bench = fp.bench_params_for("h200", base)
    assert bench.attention_efficiency == fp.attention["hopper"]
    assert bench.request_overhead_s == 0.0
    # the per-engine attention lengthens a long prefill (quadratic part) and hardly a short one
    cat = load_catalog()
    llm = LLMSpec.from_row(cat.llm("deepseek-v3"))
    acc = AcceleratorSpec.from_row(cat.accelerator("h200"))
    t_trt, t_sgl = (step_model(llm, acc, 8, "fp8", p.replace(request_overhead_s=0.0))
                    for p in (trt, sgl))
    long_gap = t_trt.prefill_time_s(8192) - t_sgl.prefill_time_s(8192)
    short_gap = t_trt.prefill_time_s(1024) - t_sgl.prefill_time_s(1024)
    assert long_gap > 20 * max(short_gap, 1e-9) and long_gap > 0.02
    # v5: a "family|precision" attention applies to that precision's checkpoints only, and
    # over an "engine|family" or family value
    b8, b4 = (fp.params_for("b200", "TensorRT-LLM", base, pr) for pr in ("fp8", "fp4"))
    assert b8.attention_efficiency == fp.attention["blackwell|fp8"]
    assert b4.attention_efficiency == fp.attention["blackwell"] != b8.attention_efficiency
    assert fp.params_for("b200", "SGLang", base).attention_efficiency == fp.attention["blackwell"]
    h8 = fp.params_for("h200", "TensorRT-LLM", base, "fp8")
    assert h8.attention_efficiency == fp.attention["TensorRT-LLM|hopper"]
    # v6: the MoE backend's time per step applies to that engine's runs of that backend
    dg = fp.params_for("b200", "TensorRT-LLM", base, "fp8", "DEEPGEMM")
    assert fp.moe_backend_step_s["TensorRT-LLM|DEEPGEMM"] > 0
    assert dg.step_overhead_s == pytest.approx(
        fp.step_overhead_s + fp.moe_backend_step_s["TensorRT-LLM|DEEPGEMM"], rel=1e-12)
    for other in (fp.params_for("b200", "TensorRT-LLM", base, "fp8", "TRTLLM"), b8,
                  fp.bench_params_for("b200", base)):
        assert other.step_overhead_s == fp.step_overhead_s
    assert (fp.params_for("b200", "SGLang", base, "fp8", "DEEPGEMM").step_overhead_s
            == fp.engine_step_overhead_s["SGLang"])


def test_device_memory_is_binary_gb_toy():
    # toy: a "180 GB" data-sheet GPU that reports 184,320 MiB (180 x 2^30 bytes); a
    # 100e9-byte model on 1 GPU leaves total - weights - reserve for the KV cache; without the
    # device reading the data-sheet 180e9 bytes are used
    from planner.perf.memory import device_accelerator, device_memory_bytes, memory_plan

    sheet = AcceleratorSpec(id="toy", bf16_tflops=1000.0, mem_gb=180.0, mem_bw_tbps=8.0)
    acc = AcceleratorSpec(id="toy", bf16_tflops=1000.0, mem_gb=180.0, mem_bw_tbps=8.0,
                          device_mem_mib=180.0 * 1024)
    total = 180.0 * 1024**3
    assert device_memory_bytes(acc) == pytest.approx(total, rel=1e-12)
    assert device_memory_bytes(sheet) == sheet.mem_bytes == 180e9
    dev = device_accelerator(acc)
    assert dev.mem_bytes == pytest.approx(total, rel=1e-12)
    llm = LLMSpec(id="toy", params_b=100.0, active_params_b=100.0, layers=10, hidden=1024,
                  q_heads=8, kv_heads=8, head_dim=128, vocab=1000, ffn_intermediate=4096)
    p = PerfParams(runtime_reserve_gb=3.0, kv_mem_fraction=1.0)
    m = memory_plan(llm, dev, 1, "fp8", p)  # fp8 weights: 100e9 bytes
    assert m.kv_gb_per_gpu * 1e9 == pytest.approx(total - 100e9 - 3e9, rel=1e-9)
    per_tok = 2 * 10 * 8 * 128 * 1.0  # K and V, layers x kv heads x head dim, fp8 KV
    assert m.kv_capacity_tokens == pytest.approx((total - 103e9) / per_tok, rel=1e-9)


def test_b200_fp8_sglang_tp4_8k_not_kv_bound(data):
    # The fit half's one 8k-token fp8 B200 curve (SGLang TP4, mem-fraction-static 0.95): with
    # the data-sheet 180e9 bytes the KV cache was 3.25 GB per GPU (10 requests of 8192+512
    # tokens) and concurrency 32 queued (TTFT predicted 34 s vs 0.8-0.9 s measured); the device
    # reports 183,359 MiB = 192.3e9 bytes, 0.95 of which less the 167.75 GB of fp8 weights leaves
    # ~15.9 GB of fp8 KV (35,136 B/token), room for all 32.
    d = data[(data["accelerator"] == "b200") & (data["precision"] == "fp8")
             & (data["engine"] == "SGLang") & (data["tp"] == 4) & (data["isl"] == 8192)]
    assert len(d) >= 4 and set(d["concurrency"]) >= {8, 32}
    llms, accs = v.catalog_specs(d, load_catalog())
    p = v.predict_closed_loop(d, llms, accs, fit=v.FITTED)
    ratio = (p["pred_ttft_ms"] / p["ttft_target_ms"]).to_numpy()
    assert p["fits"].all() and np.all((ratio > 0.5) & (ratio < 2.0)), ratio
    c8, c32 = (p[p["concurrency"] == c] for c in (8, 32))
    # all 32 decode together: the ITL doubles from c=8 as measured (15-16 -> 33-36 ms; KV-bound
    # with 10 running it stayed at 18.9 ms) and is within 40 % (v6: 20 %; v7's slower fp8
    # prefill attention, fitted on this curve's TTFT, puts it at +26 / +39 %, while the
    # held-out TP8 8k curves' ITL and throughput come closer: README, v7)
    meas = c32["itl_target_ms"].mean() / c8["itl_target_ms"].mean()
    pred = c32["pred_itl_ms"].mean() / c8["pred_itl_ms"].mean()
    assert meas > 2.0 and pred > 0.85 * meas, (meas, pred)
    np.testing.assert_array_less(np.abs(c32["err_itl"].to_numpy()), 0.40)
    # and the KV capacity behind it, by hand from the launch setting
    from planner.perf.memory import device_memory_bytes
    llm, acc = llms["deepseek-v3"], accs["b200"]
    kv_hand = 0.95 * device_memory_bytes(acc) - weight_bytes(llm, "fp8") / 4
    per_req = (8192 + 1024 / 2) * llm.kv_bytes_per_token("fp8")
    assert kv_hand / per_req >= 32 > (0.95 * acc.mem_gb * 1e9 - weight_bytes(llm, "fp8") / 4) / per_req
