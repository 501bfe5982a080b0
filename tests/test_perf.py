"""Hand-checkable tests of the serving performance model (planner.perf)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from planner.catalog import load_catalog
from planner.errors import PlannerError
from planner.perf import (
    AcceleratorSpec,
    LLMSpec,
    PerfParams,
    ReplicaCapacity,
    batching_curve,
    capacity_grid,
    decode_tokens_per_s_bandwidth,
    flops_per_token,
    kv_bytes_per_token_per_gpu,
    memory_plan,
    replica_capacity,
    search_configs,
    step_model,
    tokens_per_s_compute,
    training_flops,
    weight_bytes,
)
from planner.perf.validation import trtllm_bench_settings


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


@pytest.fixture(scope="module")
def llm(cat):
    return lambda i: LLMSpec.from_row(cat.llm(i))


@pytest.fixture(scope="module")
def acc(cat):
    return lambda i: AcceleratorSpec.from_row(cat.accelerator(i))


# ----------------------------------------------------------------------------- memory / KV


def test_kv_bytes_llama31_8b_bf16(llm):
    # 2 (K,V) x 32 layers x 8 KV heads x 128 dims x 2 bytes = 131,072 (issue 3; vidur config)
    assert llm("llama-3.1-8b").kv_bytes_per_token("bf16") == 131072
    assert llm("llama-3.1-8b").kv_bytes_per_token("fp8") == 65536


def test_kv_bytes_deepseek_v3_mla(llm):
    # MLA caches the 512-d latent + 64-d decoupled RoPE key per layer, 61 layers
    # (DeepSeek-V3 config_671B.json; model_arch.csv lists 70272 bytes in bf16)
    ds = llm("deepseek-v3")
    assert ds.kv_bytes_per_token("bf16") == (512 + 64) * 61 * 2 == 70272
    # replicated on every tensor-parallel rank, unlike GQA heads
    assert kv_bytes_per_token_per_gpu(ds, "bf16", 8) == 70272


def test_kv_gqa_sharding_keeps_one_head_per_gpu(llm):
    m = llm("llama-3.1-70b")  # 8 KV heads
    total = m.kv_bytes_per_token("bf16")
    assert kv_bytes_per_token_per_gpu(m, "bf16", 2) == total / 2
    assert kv_bytes_per_token_per_gpu(m, "bf16", 8) == total / 8
    mqa = LLMSpec(id="mqa", params_b=1, active_params_b=1, layers=2, hidden=64, q_heads=8,
                  kv_heads=1, head_dim=8, attention="mqa")
    assert kv_bytes_per_token_per_gpu(mqa, "bf16", 4) == mqa.kv_bytes_per_token("bf16")


def test_moe_active_vs_total(llm):
    mx = llm("mixtral-8x7b")  # 46.7 B total, 12.9 B active, 8 experts, top-2
    x = mx.expert_params
    assert x == pytest.approx((46.7 - 12.9) / 6 * 1e9)
    assert mx.shared_params + 2 * x == pytest.approx(12.9e9)
    assert mx.shared_params + 8 * x == pytest.approx(46.7e9)
    # expected distinct experts: 1 token -> k; 2 tokens -> 8 (1 - (6/8)^2) = 3.5; many -> all 8
    got = mx.expected_experts_touched(np.array([1, 2, 10_000]))
    np.testing.assert_allclose(got, [2.0, 3.5, 8.0], rtol=1e-9)
    ds = llm("deepseek-v3")  # 671 B total, 37 B active, 256 routed experts, top-8
    assert ds.shared_params + 8 * ds.expert_params == pytest.approx(37e9)
    assert ds.shared_params == pytest.approx(671e9 - 256 * (671 - 37) / 248 * 1e9)


def test_moe_decode_reads_only_touched_experts(llm, acc):
    mx, h100 = llm("mixtral-8x7b"), acc("h100-sxm")
    sm = step_model(mx, h100, 1, "bf16", PerfParams(bw_efficiency=1.0))
    # one token reads shared weights + 2 experts (minus the input embedding): a bf16 lower bound
    body = (mx.shared_params - mx.embedding_params + 2 * mx.expert_params) * 2
    t1 = float(sm.gemm_time_s(1))
    assert t1 >= body / h100.mem_bw_bytes_per_s * (1 - 1e-12)
    # (memory-bound: the two touched experts' GEMMs run at one token each, not all eight)
    assert t1 == pytest.approx(body / h100.mem_bw_bytes_per_s, rel=1e-9)
    all_experts = (mx.params_b * 1e9 - mx.embedding_params) * 2 / h100.mem_bw_bytes_per_s
    assert t1 < 0.6 * all_experts
    assert float(sm.gemm_time_s(4096)) > all_experts  # large steps touch all experts


def test_weight_bytes_by_precision(llm):
    m = llm("llama-3.1-70b")
    assert weight_bytes(m, "bf16") == pytest.approx(141.1e9)
    assert weight_bytes(m, "fp8") == pytest.approx(70.55e9)
    assert weight_bytes(m, "int4") == pytest.approx(35.275e9)


def test_memory_plan_and_capacity(llm, acc):
    p = PerfParams(runtime_reserve_gb=3.0, kv_mem_fraction=0.9)
    mp = memory_plan(llm("llama-3.1-8b"), acc("h100-sxm"), 1, "bf16", p)
    assert mp.weights_gb_per_gpu == pytest.approx(16.06)
    # (device bytes - 16.06 GB - 3 GB) x 0.9 of KV at 131072 B/token; the H100 reports
    # 81,559 MiB (catalog device_mem_mib), not the data sheet's 80e9 B
    dev = 81559 * 2**20
    assert acc("h100-sxm").mem_bytes == dev
    assert mp.kv_capacity_tokens == pytest.approx((dev - 16.06e9 - 3e9) * 0.9 / 131072)


def test_does_not_fit_says_by_how_much_and_options(llm, acc):
    with pytest.raises(PlannerError) as e:
        replica_capacity(llm("llama-3.1-70b"), acc("h100-sxm"), gpus=1, precision="bf16",
                         input_tokens=1000, output_tokens=200)
    msg = str(e.value)
    assert "gpus" in msg and "short by" in msg
    assert "2 GPUs at bf16" in msg and "1 GPU at fp8" in msg
    cap = replica_capacity(llm("llama-3.1-70b"), acc("h100-sxm"), gpus=1, precision="bf16",
                           input_tokens=1000, output_tokens=200, strict=False)
    assert not cap.fits and cap.output_tokens_per_s == 0.0


def test_sliding_window_caps_kv_per_request(llm, acc):
    mi = llm("mistral-7b")  # sliding window 4096
    a = replica_capacity(mi, acc("h100-sxm"), gpus=1, input_tokens=8000, output_tokens=1000)
    b = replica_capacity(mi, acc("h100-sxm"), gpus=1, input_tokens=3000, output_tokens=1096)
    assert a.max_batch == b.max_batch  # both hold at most 4096 tokens per request


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_name_the_field(llm, acc):
    m, h100, a100 = llm("llama-3.1-8b"), acc("h100-sxm"), acc("a100-80gb")
    kw = dict(input_tokens=100, output_tokens=100)
    with pytest.raises(PlannerError, match="precision.*fp8_tflops"):
        replica_capacity(m, a100, gpus=1, precision="fp8", **kw)
    with pytest.raises(PlannerError, match="precision: unknown precision 'fp3'"):
        replica_capacity(m, h100, gpus=1, precision="fp3", **kw)
    with pytest.raises(PlannerError, match="gpus: tensor-parallel degree 3 does not divide"):
        replica_capacity(m, h100, gpus=3, **kw)
    with pytest.raises(PlannerError, match="gpus: .*exceeds"):
        replica_capacity(m, h100, gpus=16, **kw)
    with pytest.raises(PlannerError, match="input_tokens \\+ output_tokens.*context window"):
        replica_capacity(llm("llama-2-7b"), h100, gpus=1, input_tokens=4000, output_tokens=200)
    with pytest.raises(PlannerError, match="output_tokens"):
        replica_capacity(m, h100, gpus=1, input_tokens=10, output_tokens=0)
    with pytest.raises(PlannerError, match="tpot_slo_s"):
        replica_capacity(m, h100, gpus=1, tpot_slo_s=-1, **kw)
    with pytest.raises(PlannerError, match="params_b"):
        LLMSpec.from_row({"id": "x", "layers": 2})
    with pytest.raises(PlannerError, match="unknown parameter"):
        PerfParams().replace(bogus=1)
    with pytest.raises(PlannerError, match="bw_efficiency"):
        PerfParams(bw_efficiency=1.5)


def test_every_catalog_row_builds_or_explains(cat):
    built = 0
    for i in cat.ids("llms"):
        try:
            LLMSpec.from_row(cat.llm(i))
            built += 1
        except PlannerError as e:
            assert i in str(e)
    assert built >= 10
    for i in cat.ids("accelerators"):
        AcceleratorSpec.from_row(cat.accelerator(i))


# ----------------------------------------------------------------------------- rooflines


@pytest.mark.parametrize("model,accel,gpus,prec", [
    ("llama-3.1-8b", "h100-sxm", 1, "bf16"),
    ("llama-3.1-70b", "h100-sxm", 4, "fp8"),
    ("qwen2.5-7b", "a100-80gb", 1, "bf16"),
    ("llama-3.1-8b", "l40s", 1, "fp8"),
])
def test_decode_never_beats_bandwidth_roofline(llm, acc, model, accel, gpus, prec):
    m, a = llm(model), acc(accel)
    isl = np.array([128.0, 1000.0, 4000.0])[:, None]
    osl = np.array([64.0, 512.0, 2000.0])[None, :]
    g = capacity_grid(m, a, gpus=gpus, precision=prec, input_tokens=isl, output_tokens=osl)
    d = g["decode_batch"]
    sm = step_model(m, a, gpus, prec)
    kv_seq = kv_bytes_per_token_per_gpu(m, sm.kv_precision, gpus) * (isl + osl / 2.0)
    w = (m.params_b * 1e9 - m.embedding_params) * {"bf16": 2, "fp8": 1}[prec] / gpus
    bound = decode_tokens_per_s_bandwidth(w, kv_seq, d, a.mem_bw_bytes_per_s)
    assert np.all(g["output_tokens_per_s"] <= bound * (1 + 1e-9))
    # decode-dominated cell (128 in, 2000 out): not absurdly below the bound either
    assert g["output_tokens_per_s"][0, 2] > 0.25 * bound[0, 2]


@pytest.mark.parametrize("model,accel,gpus,prec", [
    ("llama-3.1-8b", "h100-sxm", 1, "bf16"),
    ("llama-3.1-70b", "h100-sxm", 2, "fp8"),
    ("mixtral-8x7b", "a100-80gb", 2, "bf16"),
])
def test_prefill_never_beats_compute_roofline(llm, acc, model, accel, gpus, prec):
    m, a = llm(model), acc(accel)
    sm = step_model(m, a, gpus, prec)
    n = np.array([1, 16, 128, 512, 2048, 8192, 32768], dtype=float)
    tps = n / sm.prefill_time_s(n)
    peak = a.peak_flops(prec) * gpus
    assert np.all(tps <= peak / flops_per_token(m.active_params_b))
    # efficiency rises with tokens in the step (small steps are inefficient)
    assert np.all(np.diff(tps[:5]) > 0)


def test_first_principles():
    assert flops_per_token(7) == pytest.approx(1.4e10)
    # Llama-2-70B: 6 x 70e9 x 2e12 = 8.4e23 FLOPs (Touvron et al. 2023 / Chinchilla 6ND)
    assert training_flops(70, 2e12) == pytest.approx(8.4e23)
    assert tokens_per_s_compute(7, 312, 0.5) == pytest.approx(312e12 * 0.5 / 1.4e10)
    with pytest.raises(PlannerError, match="mfu"):
        tokens_per_s_compute(7, 312, 1.5)


# ----------------------------------------------------------------------------- batching


def test_step_model_is_vectorised(llm, acc):
    sm = step_model(llm("llama-3.1-8b"), acc("h100-sxm"), 1, "bf16")
    b = np.arange(1, 65, dtype=float)[:, None]
    kv = np.array([1e3, 1e5, 1e6])[None, :]
    t = sm.decode_step_time_s(b, b * kv / 64)
    assert t.shape == (64, 3)
    assert np.all(np.diff(t, axis=0) > 0) and np.all(np.diff(t, axis=1) > 0)
    assert sm.prefill_time_s(np.array([10.0, 100.0])).shape == (2,)
    # a single-sequence decode step is close to reading the bf16 weights once
    w = (8.03e9 - 128256 * 4096) * 2 / 3.35e12
    assert w < float(sm.decode_step_time_s(1, 100)) < 1.6 * w


def test_batching_curve_monotone(llm, acc):
    df = batching_curve(llm("llama-3.1-8b"), acc("h100-sxm"), gpus=1, input_tokens=1000,
                        output_tokens=200)
    assert isinstance(df, pd.DataFrame) and len(df) > 5
    assert np.all(np.diff(df["output_tokens_per_s"]) > 0)
    assert np.all(np.diff(df["tpot_s"]) > 0)
    assert df["fits_kv"].all()


def test_replica_capacity_fields_and_slo(llm, acc):
    m, a = llm("llama-3.1-8b"), acc("h100-sxm")
    free = replica_capacity(m, a, gpus=1, input_tokens=1000, output_tokens=200)
    assert isinstance(free, ReplicaCapacity)
    d = free.to_dict()
    for k in ("requests_per_s", "output_tokens_per_s", "input_tokens_per_s", "batch",
              "max_batch", "ttft_s", "tpot_s", "e2e_s", "kv_capacity_tokens",
              "weights_gb_per_gpu", "fits", "limited_by", "method"):
        assert k in d
    assert free.output_tokens_per_s == pytest.approx(free.requests_per_s * 200)
    assert free.input_tokens_per_s == pytest.approx(free.requests_per_s * 1000)
    assert free.e2e_s == pytest.approx(free.ttft_s + 199 * free.tpot_s)
    tight = replica_capacity(m, a, gpus=1, input_tokens=1000, output_tokens=200,
                             tpot_slo_s=0.5 * free.tpot_s)
    assert tight.tpot_s <= 0.5 * free.tpot_s and tight.limited_by == "slo"
    assert 0 < tight.output_tokens_per_s < free.output_tokens_per_s
    never = replica_capacity(m, a, gpus=1, input_tokens=1000, output_tokens=200,
                             tpot_slo_s=1e-5)
    assert not never.meets_slo and never.output_tokens_per_s == 0.0


def test_limiters(llm, acc):
    m, a = llm("llama-3.1-8b"), acc("h100-sxm")
    long_ctx = replica_capacity(m, a, gpus=1, input_tokens=30000, output_tokens=2000)
    assert long_ctx.limited_by in ("memory", "bandwidth")
    capped = replica_capacity(m, a, gpus=1, input_tokens=100, output_tokens=100,
                              params=PerfParams(max_batch=8))
    assert capped.limited_by == "batch-cap" and capped.batch == 8
    prompt_heavy = replica_capacity(m, a, gpus=1, input_tokens=4000, output_tokens=20)
    assert prompt_heavy.limited_by == "compute"


def test_tensor_parallel_speeds_up_decode(llm, acc):
    m, a = llm("llama-3.1-70b"), acc("h100-sxm")
    t = [float(step_model(m, a, g, "fp8").decode_step_time_s(32, 32 * 2000)) for g in (1, 2, 4)]
    assert t[0] > t[1] > t[2]
    assert t[2] > t[0] / 4  # all-reduce and fixed costs stop perfect scaling


def test_trtllm_bench_heuristic_transcription(llm, acc):
    # llama-3.1-8b fp8 on one H100, 128/128: KV fits ~3.9k requests -> rounded up to 256s,
    # tokens bs x (1 + 128/128) rounded to 512s (tensorrt_llm/bench/build/tuning.py)
    bs, tok = trtllm_bench_settings(llm("llama-3.1-8b"), acc("h100-sxm"), 1, "fp8", 128, 128)
    assert bs % 256 == 0 and 3584 <= bs <= 4096
    assert tok % 512 == 0 and 7168 <= tok <= 8192


# ----------------------------------------------------------------------------- search


def test_search_configs_ranks_by_cost(llm, acc):
    m = llm("llama-3.1-70b")
    accs = [acc("h100-sxm"), acc("a100-80gb")]
    prices = {"h100-sxm": 3.29, "a100-80gb": 1.79}
    df = search_configs(m, accs, prices, ["bf16", "fp8"], [1, 2, 4, 8], 1000, 500,
                        ttft_slo_s=5.0, tpot_slo_s=0.1, target_output_tokens_per_s=50_000)
    feas = df[df["feasible"]]
    assert len(feas) >= 4
    assert feas["usd_per_1m_output_tokens"].is_monotonic_increasing
    top = feas.iloc[0]
    expect = prices[top["accelerator"]] * top["gpus"] / (3600 * top["output_tokens_per_s"]) * 1e6
    assert top["usd_per_1m_output_tokens"] == pytest.approx(expect)
    assert (feas["tpot_s"] <= 0.1 + 1e-12).all()
    bad = df[(df["accelerator"] == "a100-80gb") & (df["precision"] == "fp8")]
    assert (~bad["feasible"]).all() and bad["reason"].str.contains("fp8").all()
    nofit = df[(df["accelerator"] == "h100-sxm") & (df["precision"] == "bf16") & (df["gpus"] == 1)]
    assert not nofit["feasible"].iloc[0]
    assert (feas["replicas_needed"] >= 1).all()
    assert (feas["output_tokens_per_s"] <= feas["roofline_output_tokens_per_s"]).all()
    with pytest.raises(PlannerError, match="usd_per_gpu_hour"):
        search_configs(m, accs, {"h100-sxm": 3.0})


def test_specs_round_trip(llm, acc):
    m = llm("deepseek-v3")
    assert LLMSpec(**m.to_dict()) == m
    a = acc("h100-sxm")
    assert AcceleratorSpec(**a.to_dict()) == a
    assert math.isclose(a.peak_flops("fp8"), 1979e12)


def test_ttft_is_the_prompt_prefill(llm, acc):
    m, a = llm("llama-3.1-8b"), acc("h100-sxm")
    sm = step_model(m, a, 1, "bf16")
    df = batching_curve(m, a, gpus=1, input_tokens=4000, output_tokens=100, concurrency=[1])
    pre = float(sm.prefill_time_s(4000))
    assert pre <= df["ttft_s"].iloc[0] < 1.3 * pre
    # a prompt longer than the step budget is chunked over several steps
    small = PerfParams(max_tokens_per_step=1024)
    c1 = batching_curve(m, a, gpus=1, input_tokens=4000, output_tokens=100, concurrency=[1],
                        params=small)
    assert c1["ttft_s"].iloc[0] > df["ttft_s"].iloc[0]


def test_step_model_satisfies_the_simulator_protocol(llm, acc):
    from planner.sim.stepmodel import LinearStepModel, StepModel

    sm = step_model(llm("llama-3.1-8b"), acc("h100-sxm"), 1, "bf16")
    assert isinstance(sm, StepModel)
    assert sm.max_batch == PerfParams().max_batch
    assert sm.kv_capacity_tokens == int(memory_plan(llm("llama-3.1-8b"), acc("h100-sxm"), 1,
                                                    "bf16").kv_capacity_tokens)
    fitted, err = LinearStepModel.fit(sm)
    assert fitted.decode_s_per_kv_token > 0 and err < 0.6
