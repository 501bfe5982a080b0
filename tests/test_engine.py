"""Deterministic engine: hand-checkable toy scenarios and property tests."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.config import parse_scenario
from planner.engines.breakeven import volume_breakeven
from planner.engines.deterministic import evaluate

TOY = """
[scenario]
name = "toy"
horizon_months = 12

[workload.w]
requests_per_day = 1000
input = 1000
output = 500

[api.a]
offering = "openai/gpt-4o"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 2.0
cached_input_usd_per_mtok = 0.5

[cloud.c]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
usd_per_gpu_hour = 2.0
gpus_per_instance = 1
capacity_requests_per_s = 1.0

[onprem.o]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
server_price_usd = 120000
gpus_per_server = 8
amortisation_years = 5
server_base_w = 1000
gpu_tdp_w = 500
gpu_idle_power_share = 0.5
pue = 1.0
electricity_usd_per_kwh = 0.1
capacity_requests_per_s = 1.0

[planning]
utilisation_target = 1.0
"""


def sc(overrides=None, text=TOY):
    return parse_scenario(tomllib.loads(text), overrides=overrides)


def summary(s):
    return evaluate(s).summary.set_index("deployment")


def test_api_toy_exact():
    # per request: 1000 x $1/M + 500 x $2/M = $0.002; 1000/day x 730/24 days
    s = summary(sc())
    assert s.loc["a", "usd_per_month"] == pytest.approx(0.002 * 1000 * 730 / 24)
    assert s.loc["a", "usd_per_request"] == pytest.approx(0.002)
    assert s.loc["a", "usd_horizon"] == pytest.approx(12 * 0.002 * 1000 * 730 / 24)


def test_cached_share_toy():
    s = summary(sc({"workload.w.cached_share": 0.4}))
    per_req = (600 * 1.0 + 400 * 0.5 + 500 * 2.0) / 1e6
    assert s.loc["a", "usd_per_request"] == pytest.approx(per_req)


def test_cloud_toy_whole_replicas():
    # 1.5 requests/s flat, 1 request/s per replica -> 2 replicas x $2/h x 730 h
    s = summary(sc({"workload.w.requests_per_day": 1.5 * 86400}))
    assert s.loc["c", "replicas"] == 2
    assert s.loc["c", "usd_per_month"] == pytest.approx(2 * 2.0 * 730)
    assert s.loc["c", "utilisation"] == pytest.approx(0.75)


def test_ha_reserve_and_utilisation_target():
    s = summary(sc({"workload.w.requests_per_day": 1.5 * 86400,
                    "planning.utilisation_target": 0.5, "planning.ha_reserve_replicas": 1}))
    assert s.loc["c", "replicas"] == 4  # ceil(1.5 / 0.5) + 1


def test_peak_to_average_on_flat_profile():
    s = summary(sc({"workload.w.requests_per_day": 0.5 * 86400,
                    "planning.peak_to_average": 3.0}))
    assert s.loc["c", "replicas"] == 2  # peak 1.5/s


def test_diurnal_peak_sizes_replicas():
    w = [1.0] * 23 + [24.0]  # the last hour carries 24/47 of the day
    s = summary(sc({"workload.w.requests_per_day": 47 * 3600, "workload.w.diurnal": w}))
    # peak hour rate = 47*3600 * 24/47 / 3600 = 24 requests/s -> 24 replicas
    assert s.loc["c", "replicas"] == 24


def test_onprem_toy_exact():
    # 1 request/s -> 1 replica (1 GPU) -> 1 server of 8 GPUs
    s = sc({"workload.w.requests_per_day": 86400})
    res = evaluate(s)
    lines = res.costs[res.costs["deployment"] == "o"].set_index("component")["usd_per_month"]
    assert lines["capex"] == pytest.approx(120000 / 60)
    util = 1 / 8  # one of eight GPUs busy all the time
    watts = 1000 + 8 * 500 * (0.5 + 0.5 * util)
    assert lines["energy"] == pytest.approx(watts * 730 / 1000 * 0.1)
    assert summary(s).loc["o", "units"] == 1


def test_marginal_lens_excludes_committed_capex():
    base = sc({"workload.w.requests_per_day": 86400, "onprem.o.committed": True})
    marg = sc({"workload.w.requests_per_day": 86400, "onprem.o.committed": True,
               "planning.lens": "marginal"})
    full = summary(base).loc["o", "usd_per_month"]
    m = summary(marg).loc["o", "usd_per_month"]
    assert full - m == pytest.approx(120000 / 60)
    assert summary(marg).loc["o", "lens"] == "marginal"


def test_annuity_costs_more_than_straight_line():
    a = summary(sc({"workload.w.requests_per_day": 86400, "onprem.o.cost_of_capital": 0.08}))
    b = summary(sc({"workload.w.requests_per_day": 86400}))
    assert a.loc["o", "usd_per_month"] > b.loc["o", "usd_per_month"]


def test_billing_modes_order():
    def cost(mode, **kw):
        o = {"workload.w.requests_per_day": 2000, "cloud.c.billing": mode}
        o.update(kw)
        return summary(sc(o)).loc["c", "usd_per_month"]

    always = cost("always-on")
    window = cost("active-window", **{"cloud.c.active_hours_per_day": 8})
    s2z = cost("scale-to-zero")
    assert window == pytest.approx(always * 8 / 24)
    assert 0 < s2z < always


def test_spot_interruption_overhead():
    o = {"workload.w.requests_per_day": 86400}
    on = summary(sc(o)).loc["c", "usd_per_month"]
    spot = summary(sc({**o, "cloud.c.plan": "spot", "cloud.c.interruption_overhead": 0.2}))
    assert spot.loc["c", "usd_per_month"] == pytest.approx(on * 1.25)


def test_response_cache_and_retries():
    s = summary(sc({"workload.w.response_cache_hit_share": 0.5, "planning.retry_share": 0.1}))
    # model requests: after response-cache hits, with retries
    assert s.loc["a", "llm_requests_per_month"] == pytest.approx(1000 * 0.5 * 1.1 * 730 / 24)
    # per-request figures count the user requests the scenario declares, on every kind
    assert s.loc["a", "requests_per_month"] == pytest.approx(1000 * 730 / 24)
    for dep in s.index:
        assert s.loc[dep, "usd_per_request"] == pytest.approx(
            s.loc[dep, "usd_per_month"] / (1000 * 730 / 24))


def test_fanout_and_samples():
    s = evaluate(sc({"workload.w.calls_per_request": 3, "workload.w.samples_per_call": 2,
                     "workload.w.context": 100}))
    c = s.classes[s.classes["deployment"] == "a"].iloc[0]
    assert c["input_tokens_per_request"] == 1000 + 3 * 100
    assert c["output_tokens_per_request"] == 3 * 2 * 500


def test_words_to_tokens_with_catalog_ratio():
    from planner.catalog import load_catalog

    ratio = load_catalog().tokens_per_unit("o200k", "en", "word")["tokens_per_unit"]
    # the self-hosted options' llama3 tokenizer has no en/word row: they name the one to use
    s = evaluate(sc({"workload.w.input": {"words": 300, "lang": "en"},
                     "cloud.c.tokenizer": "cl100k", "onprem.o.tokenizer": "cl100k"}))
    c = s.classes[s.classes["deployment"] == "a"].iloc[0]
    assert c["input_tokens_per_request"] == pytest.approx(300 * ratio)
    assert "tokenizers.csv" in c["basis_input"]


def test_volume_breakeven_toy():
    # API $0.002/request; cloud: ceil(rate)/replica x $1460/month. Break-even where the
    # API bill reaches one replica: 1460 / (0.002 x 730/24) = 24,000 requests/day.
    s = sc({"onprem.o.classes": []})
    be = volume_breakeven(s).set_index("selfhosted")
    assert be.loc["c", "requests_per_day"] == pytest.approx(24000, rel=1e-6)


def test_assumptions_list_catalog_rows_with_sources():
    res = evaluate(sc())
    a = res.assumptions
    assert {"apis", "llms", "accelerators"} <= set(a["table"])
    assert a["source"].notna().all() and a["as_of"].notna().all()


# ----------------------------------------------------------------------------- properties

volumes = st.floats(min_value=0.0, max_value=5e6, allow_nan=False)
prices = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(v=volumes, p_in=prices, p_out=prices, gpu=prices)
def test_costs_never_negative(v, p_in, p_out, gpu):
    s = summary(sc({"workload.w.requests_per_day": v, "api.a.input_usd_per_mtok": p_in,
                    "api.a.output_usd_per_mtok": p_out, "cloud.c.usd_per_gpu_hour": gpu}))
    assert (s["usd_per_month"] >= 0).all()
    assert (s["usd_horizon"] >= 0).all()


@settings(max_examples=40, deadline=None)
@given(v=volumes, factor=st.floats(min_value=1.0, max_value=10.0))
def test_more_traffic_never_cheaper(v, factor):
    lo = summary(sc({"workload.w.requests_per_day": v}))["usd_per_month"]
    hi = summary(sc({"workload.w.requests_per_day": v * factor}))["usd_per_month"]
    assert (hi.to_numpy() >= lo.to_numpy() - 1e-9 * np.abs(lo.to_numpy())).all()


@settings(max_examples=40, deadline=None)
@given(v=volumes, p=prices, bump=st.floats(min_value=0.0, max_value=50.0))
def test_higher_prices_never_cheaper(v, p, bump):
    def cost(q):
        s = summary(sc({"workload.w.requests_per_day": v, "api.a.input_usd_per_mtok": q,
                        "api.a.output_usd_per_mtok": q, "cloud.c.usd_per_gpu_hour": q,
                        "onprem.o.electricity_usd_per_kwh": q / 100}))
        return s["usd_per_month"].to_numpy()

    assert (cost(p + bump) >= cost(p) - 1e-9).all()


def test_lora_finetune_on_gpus_toy():
    s = sc({"finetune.f": {"method": "lora", "base_model": "llama-3.1-8b", "training_tokens": 1e8,
                           "accelerator": "h100-sxm", "usd_per_gpu_hour": 2.0, "mfu": 0.4,
                           "retry_multiplier": 3, "qualifies_for": ["w"]},
            "cloud.c.fine_tune": "f"})
    res = evaluate(s)
    f = res.finetune.set_index("finetune").loc["f"]
    from planner.catalog import load_catalog

    cat = load_catalog()
    n = cat.llm("llama-3.1-8b")["params_b"] * 1e9
    peak = cat.accelerator("h100-sxm")["bf16_tflops"] * 1e12
    hours = 4 * n * 1e8 / (peak * 0.4) / 3600  # LoRA: 4N FLOPs per token, 1 GPU
    assert f["gpus"] == 1
    assert f["usd"] == pytest.approx(hours * 2.0 * 3)
    # the one-off is spread over the 12-month horizon in the cloud option's monthly cost
    line = res.costs[(res.costs["deployment"] == "c")
                     & res.costs["component"].str.startswith("fine-tune")]
    assert line["usd_per_month"].iloc[0] == pytest.approx(f["usd"] / 12)


def test_full_finetune_needs_more_gpus_than_lora():
    base = {"method": "full", "base_model": "llama-3.1-70b", "training_tokens": 1e7,
            "accelerator": "h100-sxm", "usd_per_gpu_hour": 2.0}
    full = evaluate(sc({"finetune.f": base})).finetune.iloc[0]
    lora = evaluate(sc({"finetune.f": {**base, "method": "lora"}})).finetune.iloc[0]
    # full: 16 bytes/param x 70.55B = 1129 GB -> 16 H100s at 90% of 80 GB; LoRA: ~155 GB -> 3
    assert full["gpus"] == 16 and lora["gpus"] == 3
    assert full["usd_single_run"] > lora["usd_single_run"]
