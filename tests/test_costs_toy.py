"""Level-1 tests: hand-checkable toys with exact answers for each cost formula."""

from __future__ import annotations

import numpy as np
import pytest

from planner.costs import selfhosted as sh
from planner.costs import training as tr
from planner.costs.api import ApiPrices, api_cost_per_request, request_fee_usd

P = ApiPrices(input_usd_per_mtok=2.0, output_usd_per_mtok=8.0, cached_input_usd_per_mtok=0.5,
              batch_input_usd_per_mtok=1.0, batch_output_usd_per_mtok=4.0)


def test_api_plain_request():
    c = api_cost_per_request(P, 1_000_000, 500_000)
    assert c["input"] == pytest.approx(2.0)
    assert c["output"] == pytest.approx(4.0)
    assert c["cached_input"] == 0 and c["batch_input"] == 0 and c["batch_output"] == 0


def test_api_cached_and_batch_split():
    # 1M input tokens, half cached; 1M output; a quarter of requests via batch
    c = api_cost_per_request(P, 1e6, 1e6, cached_share=0.5, batch_share=0.25)
    assert c["input"] == pytest.approx(0.75 * 0.5 * 2.0)
    assert c["cached_input"] == pytest.approx(0.75 * 0.5 * 0.5)
    assert c["output"] == pytest.approx(0.75 * 8.0)
    # batch: input at 1.0/2.0 of realtime on both cached and uncached parts
    assert c["batch_input"] == pytest.approx(0.25 * (0.5 * 2.0 + 0.5 * 0.5) * 0.5)
    assert c["batch_output"] == pytest.approx(0.25 * 4.0)


def test_api_discount_and_margin():
    c = api_cost_per_request(P, 1e6, 0, discount=0.1, gross_margin=0.75)
    assert c["input"] == pytest.approx(2.0 * 0.9 * 0.25)


def test_api_long_context_tier_applies_per_call():
    p = ApiPrices(input_usd_per_mtok=1.0, output_usd_per_mtok=2.0,
                  long_context_threshold_tokens=200_000, long_input_usd_per_mtok=3.0,
                  long_output_usd_per_mtok=5.0)
    short = api_cost_per_request(p, 300_000, 1e6, calls_per_request=2)  # 150k per call
    long = api_cost_per_request(p, 300_000, 1e6, calls_per_request=1)
    assert short["input"] == pytest.approx(0.3) and short["output"] == pytest.approx(2.0)
    assert long["input"] == pytest.approx(0.9) and long["output"] == pytest.approx(5.0)


def test_request_fees():
    assert request_fee_usd(usd_per_million_requests=3.5) == pytest.approx(3.5e-6)
    assert request_fee_usd(gb=0.5, seconds=2, usd_per_gb_s=1e-5) == pytest.approx(1e-5)


def test_replicas_needed_and_packing():
    assert sh.replicas_needed(0.0, 0.9, 1) == 0
    assert sh.replicas_needed(1.8, 0.9, 0) == 2
    assert sh.replicas_needed(1.81, 0.9, 1) == 4  # ceil(2.011) + 1
    # 3 replicas of 2 GPUs on 8-GPU units: 4 replicas per unit -> 1 unit, 8 GPUs paid
    assert sh.pack(3, 2, 8) == (1, 8)
    assert sh.pack(5, 2, 8) == (2, 16)
    # a 16-GPU replica on 8-GPU units spans 2 units
    assert sh.pack(3, 16, 8) == (6, 48)
    # 3-GPU replicas on 8-GPU units: 2 per unit (2 GPUs idle per unit)
    assert sh.pack(3, 3, 8) == (2, 16)


def test_spot_factor():
    assert sh.spot_factor(0.2) == pytest.approx(1.25)


def test_straight_line_and_annuity():
    assert sh.capital_recovery_usd_per_month(120_000, 5) == pytest.approx(2000)
    assert sh.capital_recovery_usd_per_month(120_000, 5, residual_share=0.25) == pytest.approx(1500)
    # annuity: 12% a year -> 1% a month over 12 months: PMT = P i / (1 - (1+i)^-n)
    i, n = 0.01, 12
    expect = 12_000 * i / (1 - (1 + i) ** -n)
    assert sh.capital_recovery_usd_per_month(12_000, 1, 0.0, 0.12) == pytest.approx(expect)
    # annuity is dearer than straight line at positive rates
    assert sh.capital_recovery_usd_per_month(12_000, 1, 0, 0.12) > 1000


def test_power_and_energy():
    # 1 server: 1000 W base + 8 GPUs x 700 W at 50% load with 30% idle draw
    w = sh.server_power_w(1000, 8, 700, 0.5, 0.3)
    assert w == pytest.approx(1000 + 8 * 700 * 0.65)
    # 2 servers x 1 kW x PUE 1.5 x 730 h x $0.10/kWh
    assert sh.energy_usd_per_month(1000, 2, 1.5, 0.10, 730) == pytest.approx(219.0)


def test_scale_to_zero_limits():
    hours = np.arange(24)
    load = np.zeros(24)
    lam = np.zeros(24)
    assert sh.scale_to_zero_hours(load, lam, replicas_cap=1) == 0.0
    # very high traffic: never idle longer than the timeout -> billed = busy time, capped
    load = np.full(24, 0.5)
    lam = np.full(24, 100.0)
    assert sh.scale_to_zero_hours(load, lam, replicas_cap=1, idle_timeout_s=300) == \
        pytest.approx(12.0)
    # one request an hour, 60 s timeout: each arrival opens a period of timeout + startup
    load = np.full(24, 10 / 3600)  # 10 s busy per hour
    lam = np.full(24, 1 / 3600)
    got = sh.scale_to_zero_hours(load, lam, replicas_cap=1, idle_timeout_s=60, startup_s=30)
    per_hour_s = 10 + 1 * np.exp(-60 / 3600) * 90
    assert got == pytest.approx(24 * per_hour_s / 3600)
    assert hours.size == 24


def test_training_flops_and_hours():
    assert tr.training_flops(1.0, 1e9) == pytest.approx(6e18)
    assert tr.training_flops(1.0, 1e9, tr.LORA_FLOPS_FACTOR) == pytest.approx(4e18)
    # 3.6e18 FLOPs at 1 PFLOP/s, 100% -> 3600 s = 1 h
    assert tr.chip_hours(3.6e18, 1000.0, 1.0) == pytest.approx(1.0)
    assert tr.full_finetune_memory_gb(7) == pytest.approx(112)


def test_usd_per_ktok_inference():
    # 1B params -> 2e9 FLOPs/token; 1000 tokens = 2e12 FLOPs on 1 chip of 2000 TFLOPS at 50%
    # -> 0.002 s; at $3600/h ($1/s) -> $0.002. Two chips per instance halve the time.
    assert tr.usd_per_ktok_inference(1.0, 2000.0, 0.5, 3600.0, 1) == pytest.approx(0.002)
    assert tr.usd_per_ktok_inference(1.0, 2000.0, 0.5, 3600.0, 2) == pytest.approx(0.001)
