"""Closed-loop latency vs concurrency (planner.perf.closedloop, ``planner perf --concurrency``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.catalog import load_catalog
from planner.cli import main
from planner.errors import PlannerError
from planner.perf import AcceleratorSpec, LLMSpec, PerfParams, closed_loop_curve, step_model
from planner.perf.closedloop import parse_concurrency

CAT = load_catalog()


def _llm(i):
    return LLMSpec.from_row(CAT.llm(i))


def _acc(i):
    return AcceleratorSpec.from_row(CAT.accelerator(i))


# configurations that fit (model, accelerator, GPUs, precision): dense, GQA, MoE, sliding window
CONFIGS = [
    ("llama-3.1-70b", "h100-sxm", 2, "fp8"),
    ("llama-3.1-8b", "h100-sxm", 1, "bf16"),
    ("llama-3.1-8b", "a100-40gb", 1, "bf16"),
    ("mixtral-8x7b", "h100-sxm", 2, "bf16"),
    ("mistral-7b", "l40s", 1, "fp8"),
    ("qwen2.5-72b", "h200", 4, "fp8"),
    ("deepseek-v3", "h200", 8, "fp8"),
]


def curve(cfg, isl, osl, conc, **kw):
    m, a, g, p = cfg
    return closed_loop_curve(_llm(m), _acc(a), gpus=g, precision=p, input_tokens=isl,
                             output_tokens=osl, concurrency=conc, **kw)


def test_llama70b_h100_fp8_5000_500():
    cfg = CONFIGS[0]
    df = curve(cfg, 5000, 500, [1, 8, 32, 64, 83])
    sm = step_model(_llm("llama-3.1-70b"), _acc("h100-sxm"), 2, "fp8")
    # c = 1: one request alone: its prefill, then decode steps of batch 1
    assert df["ttft_s"].iloc[0] == pytest.approx(float(sm.prefill_time_s(5000.0)), rel=1e-9)
    assert df["itl_s"].iloc[0] == pytest.approx(
        float(sm.decode_step_time_s(1.0, 5250.0)), rel=1e-9)
    # throughput at c = 1 includes the TTFT (was 1 / step)
    assert df["output_tokens_per_s"].iloc[0] == pytest.approx(
        500.0 / (df["ttft_s"].iloc[0] + 499 * df["itl_s"].iloc[0]), rel=1e-12)
    # TTFT grows with c: prompts queue behind each other and run beside the decodes
    # (published closed-loop runs: roughly doubles from c = 1 to c ~ 80)
    ratio = df["ttft_s"].iloc[-1] / df["ttft_s"].iloc[0]
    assert 1.6 < ratio < 3.0
    assert df["fits_kv"].all() and (df["kv_queue"] == 0).all()


@settings(max_examples=25, deadline=None)
@given(cfg=st.sampled_from(CONFIGS), isl=st.integers(16, 30000), osl=st.integers(1, 3000),
       hit=st.sampled_from([0.0, 0.0, 0.5]))
def test_identity_and_monotone(cfg, isl, osl, hit):
    llm = _llm(cfg[0])
    ctx = llm.max_context_tokens
    if ctx and isl + osl > ctx:
        isl = max(16, ctx - osl)
    conc = np.unique(np.round(np.geomspace(1, 3000, 40)))
    try:
        df = curve(cfg, isl, osl, conc, prefix_cache_hit_share=hit)
    except PlannerError:  # one request's KV cache does not fit
        return
    c = df["concurrency"].to_numpy()
    ttft, itl = df["ttft_s"].to_numpy(), df["itl_s"].to_numpy()
    # throughput = c x OSL / (TTFT + (OSL - 1) x ITL) at every c
    ident = c * osl / (ttft + (osl - 1) * itl)
    np.testing.assert_allclose(df["output_tokens_per_s"], ident, rtol=1e-9)
    np.testing.assert_allclose(df["requests_per_s"] * osl, df["output_tokens_per_s"],
                               rtol=1e-12)
    assert np.all(np.isfinite(ttft)) and np.all(itl > 0)
    # TTFT and ITL non-decreasing in c
    assert np.all(np.diff(ttft) >= -1e-9 * ttft[1:]), ttft
    assert np.all(np.diff(itl) >= -1e-9 * itl[1:]), itl
    # throughput rises to its plateau (within 3%). Not with one output token: the prefill
    # then saturates, and the mean-value model overshoots the saturated rate by up to ~5%
    # just below it
    tput = df["output_tokens_per_s"].to_numpy()
    if osl > 1:
        assert np.all(tput[1:] >= 0.97 * np.maximum.accumulate(tput)[:-1])
    # population: decoding requests never exceed those admitted
    assert np.all(df["decode_batch"] <= np.minimum(c, c - df["kv_queue"]) + 1e-9)


def _kv_limit(cfg, isl, osl):
    """Requests of ``isl + osl`` tokens the replica's KV cache holds (the memory plan's,
    from the device memory the catalog records)."""
    from planner.perf.memory import max_concurrent_requests, memory_plan

    m, a, g, p = cfg
    sm = step_model(_llm(m), _acc(a), g, p)
    mp = memory_plan(sm.llm, sm.acc, g, p, sm.params)
    return int(max_concurrent_requests(mp.kv_capacity_tokens, float(isl), float(osl),
                                       sm.params.kv_reserve, sm.llm.sliding_window))


def test_beyond_kv_limit_ttft_grows_linearly_with_queue():
    cfg = CONFIGS[0]
    lim = _kv_limit(cfg, 5000, 500)  # 94 on the H100's 81,559 MiB (83 on the data sheet's 80e9 B)
    assert 80 <= lim <= 100
    conc = [lim, lim + 17, lim + 67, lim + 117, lim + 317]
    df = curve(cfg, 5000, 500, conc)
    assert list(df["kv_queue"]) == [0, 17, 67, 117, 317]
    assert not df["fits_kv"].iloc[1:].any()
    # the replica runs at its KV-limited state: ITL and throughput flat ...
    assert np.ptp(df["itl_s"]) < 1e-12 and np.ptp(df["output_tokens_per_s"]) < 1e-9
    # ... and each queued request adds 1 / X to everyone's TTFT (Little's law)
    x = df["requests_per_s"].iloc[0]
    slope = np.diff(df["ttft_s"]) / np.diff(df["concurrency"])
    np.testing.assert_allclose(slope, 1.0 / x, rtol=1e-9)


def test_prompt_longer_than_step_budget_and_one_output_token():
    cfg = CONFIGS[1]
    # 20,000 prompt tokens > C = 8192: chunked over 20000/8192 steps at c = 1
    df = curve(cfg, 20000, 200, [1, 4])
    sm = step_model(_llm("llama-3.1-8b"), _acc("h100-sxm"), 1, "bf16")
    ppt = float(sm.prefill_pairs(20000.0)) / 20000.0
    chunked = float(sm.step_time_s(0.0, 0.0, 8192.0, 8192.0 * ppt)) * 20000.0 / 8192.0
    assert df["ttft_s"].iloc[0] == pytest.approx(chunked, rel=1e-9)
    # one output token: the cycle is the TTFT alone
    one = curve(cfg, 1000, 1, [1, 16, 64])
    np.testing.assert_allclose(one["e2e_s"], one["ttft_s"], rtol=1e-12)
    np.testing.assert_allclose(one["requests_per_s"], one["concurrency"] / one["ttft_s"],
                               rtol=1e-9)
    assert (one["decode_batch"] == 0).all()


def test_step_budget_binds_prefill():
    cfg = CONFIGS[1]
    small = curve(cfg, 2000, 200, [1, 64], params=PerfParams(max_tokens_per_step=512))
    big = curve(cfg, 2000, 200, [1, 64])
    assert (small["ttft_s"] > big["ttft_s"]).all()


def test_bad_concurrency():
    with pytest.raises(PlannerError, match="concurrency"):
        curve(CONFIGS[0], 1000, 100, [0, 4])
    with pytest.raises(PlannerError, match="concurrency"):
        curve(CONFIGS[0], 1000, 100, [])
    assert parse_concurrency("1,5,25,50,100") == [1, 5, 25, 50, 100]
    assert parse_concurrency(" 3 , 1") == [3, 1]
    for bad in ("0", "1,,2", "2.5", "-1", "x", "", "1;2"):
        with pytest.raises(PlannerError, match="--concurrency"):
            parse_concurrency(bad)


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


BASE = ("perf", "--model", "llama-3.1-70b", "--accelerator", "h100-sxm", "--tp", "2",
        "--precision", "fp8", "--isl", "5000", "--osl", "500")


def test_cli_concurrency_list_json(capsys):
    code, out, _ = run(capsys, *BASE, "--concurrency", "1,5,25,50,100", "--format", "json")
    assert code == 0
    rows = json.loads(out[: out.rindex("}") + 1])["latency vs concurrency"]
    assert [r["concurrency"] for r in rows] == [1, 5, 25, 50, 100]
    for r in rows:
        assert r["output_tokens_per_s"] == pytest.approx(
            r["concurrency"] * 500 / (r["ttft_s"] + 499 * r["itl_s"]), rel=1e-9)
    assert rows[-1]["kv_queue"] > 0 and rows[0]["kv_queue"] == 0


def test_cli_default_four_points(capsys):
    code, out, _ = run(capsys, *BASE, "--format", "json")
    assert code == 0
    rows = json.loads(out[: out.rindex("}") + 1])["latency vs concurrency"]
    assert [r["concurrency"] for r in rows] == [1, 8, 32, _kv_limit(CONFIGS[0], 5000, 500)]


@pytest.mark.parametrize("bad", ["0", "1,,2", "2.5", "-3", "abc", ""])
def test_cli_rejects_bad_concurrency(capsys, bad):
    code, out, err = run(capsys, *BASE, "--concurrency", bad)
    assert code == 2
    assert "--concurrency" in err and "Traceback" not in err


def test_cli_concurrency_with_search_is_an_error(capsys):
    code, _, err = run(capsys, "perf", "--search", "--model", "llama-3.1-8b",
                       "--concurrency", "1,2")
    assert code == 2 and "--search" in err


# ----------------------------------------------------------------------------- validation
REFERENCE = Path(__file__).resolve().parents[1] / "planner/data/reference/closed_loop_measurements.csv"


def closed_loop_validation() -> pd.DataFrame:
    """Predicted vs measured TTFT, ITL and output tokens/s for every row of the closed-loop
    reference measurements (signed errors, predicted / measured - 1)."""
    ref = pd.read_csv(REFERENCE)
    out = []
    keys = ["catalog_model", "accelerator", "gpus", "precision", "isl", "osl"]
    for (m, a, g, p, i, o), rows in ref.groupby(keys, sort=False):
        df = curve((m, a, int(g), p), float(i), float(o), rows["concurrency"].to_numpy())
        rows = rows.reset_index(drop=True)
        out.append(pd.DataFrame({
            "id": rows["id"], "concurrency": rows["concurrency"],
            "ttft_err": df["ttft_s"] / (rows["ttft_ms"] / 1e3) - 1.0,
            "itl_err": df["itl_s"] / (rows["itl_ms"] / 1e3) - 1.0,
            "tput_err": df["output_tokens_per_s"] / rows["output_tokens_per_s"] - 1.0,
        }))
    return pd.concat(out, ignore_index=True)


def test_reference_measurements_are_closed_loop():
    ref = pd.read_csv(REFERENCE)
    assert len(ref) >= 8 and ref["id"].is_unique
    assert ref["source_url"].str.startswith("https://").all() and ref["accessed"].notna().all()
    # the published rows obey the closed-loop identity (output tokens/s, mean TTFT and ITL)
    ident = ref["concurrency"] * ref["osl"] / (
        ref["ttft_ms"] / 1e3 + (ref["osl"] - 1) * ref["itl_ms"] / 1e3)
    np.testing.assert_allclose(ident, ref["output_tokens_per_s"], rtol=0.01)


def test_closed_loop_against_published_measurements():
    err = closed_loop_validation()
    med = err[["ttft_err", "itl_err", "tput_err"]].abs().median()
    print("\nclosed loop vs published measurements (predicted / measured - 1)\n"
          + err.round(3).to_string(index=False)
          + f"\nmedian |error|: TTFT {med['ttft_err']:.1%}, ITL {med['itl_err']:.1%}, "
            f"throughput {med['tput_err']:.1%}")
    # loose bounds for now (issue 13 asks for 25% / 12% / 10% on held-out data)
    assert med["tput_err"] < 0.15 and med["itl_err"] < 0.25 and med["ttft_err"] < 0.40, med
    # where the measurement queues for KV memory the model does too (TTFT jumps)
    assert (err.loc[err["concurrency"] >= 100, "ttft_err"].abs() < 0.5).all()
