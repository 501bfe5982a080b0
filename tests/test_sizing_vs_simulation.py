"""Sizing the simulator confirms (issue: GPU counts the simulator confirms).

50 generated scenarios (dense and MoE models, 1-8 GPUs per replica, prefill-heavy,
decode-heavy, chat and long-context lengths, flat and peaked profiles, arrival burstiness CV
1-4, length spread, tight and loose SLOs; ``studies/sizing-vs-simulation/cases.py``) are
sized by the model's open-loop capacity with no HA reserve and utilisation target 1, and each
is simulated for its busiest hour (chunked prefill, SimPy) at that sizing and at one replica
fewer. Measured on this code (device memory from the catalog's ``device_mem_mib``): all 50
cases meet the SLO percentile at the sizing (median attainment 1.0), and in 15 of the 16
cases that need more than one replica, one replica fewer misses it, above the 80% the issue
asks (the exception, case 6, is a pool of 20 Llama-3.1-405B replicas with 12,300-token
prompts, arrival CV 4 and a TTFT bound under two prefills, sized on the safe side by the rest
of a prefill a waiting prompt waits for; 17 missed at 0.898 before; see the study's README).
Over five independent arrival draws of each busiest hour the mean attainment meets the target
in 48 of 50 and one fewer misses it on average in 15 of 16.
The thresholds below are those measured figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

STUDY = Path(__file__).resolve().parents[1] / "studies" / "sizing-vs-simulation"
sys.path.insert(0, str(STUDY))

from cases import cases, check  # noqa: E402


@pytest.fixture(scope="module")
def rows():
    # five independent arrival draws of each busiest hour; the first is arrival seed 0, the
    # single draw the first two tests count
    return [check(c, draws=DRAWS) for c in cases(50, seed=7)]


DRAWS = 5


def _sized_tight(case: dict) -> dict:
    """The study's check of one case, asserting that it needs several replicas, meets the SLO
    in its simulated busiest hour at the sizing and misses it with one replica fewer."""
    row = check(case)
    assert row["replicas"] > 1
    assert row["attainment_at"] >= row["target"]
    assert row["attainment_below"] < row["target"]
    return row


def test_simulated_busiest_hour_meets_the_slo_at_the_sizing(rows):
    att = np.array([r["attainment_at"] for r in rows])
    target = np.array([r["target"] for r in rows])
    assert all(r["served"] for r in rows)
    assert all(r.get("dropped_at", 0) == 0 for r in rows)
    met = att >= target
    # every simulated busiest hour meets the SLO percentile (the done-when)
    assert met.all(), [r["case"] for r, ok in zip(rows, met, strict=True) if not ok]
    assert np.median(att) >= 0.99


def test_one_replica_fewer_misses_the_slo(rows):
    multi = [r for r in rows if r["replicas"] > 1]
    assert len(multi) >= 15
    padded = [r["case"].split(":")[0] for r in multi if r["attainment_below"] >= r["target"]]
    # the capacity figure is not padded: one fewer misses in at least 80% of the multi-replica
    # cases (the done-when; 15 of 16 measured), and the one that does not is the
    # measured one, by name (a new one should update the README)
    assert len(padded) <= 0.2 * len(multi)
    assert padded in (["case 6"], [])


def test_fixed_length_pool_sized_past_the_routers_echo_runs():
    """Held-out seed 11, case 29 (Qwen2.5-7B on L40S, 12,300-token prompts, 300 output
    tokens, Poisson, fixed lengths): with equal lives the pool's departures echo its arrivals
    in runs at one replica, so the router is blind to the prefill queues
    (:func:`planner.perf.openloop._echo_coherence`). Sized past it, the pool meets the SLO in
    the simulated busiest hour and one replica fewer (the count sized without the echo) misses
    it."""
    case = cases(30, seed=11)[29]
    assert case["simulation"]["length_cv"] == 0.0 and case["simulation"]["burstiness_cv"] == 1.0
    _sized_tight(case)


def test_the_expected_hour_meets_the_slo_and_one_fewer_does_not(rows):
    """Over five independent arrival draws of each busiest hour (an hour is a random draw:
    at the margin its attainment varies by 0.014-0.030 from draw to draw; see the study's
    README, "the expected hour"). Measured: the mean attainment meets the target in 48 of 50
    cases (the two below it are long-context pools within 0.01 of it: cases 24 and 40), one
    replica fewer misses it on average in 15 of 16 multi-replica cases (case 6 at 19: 0.917),
    and 95.6% of the 250 simulated hours meet it."""
    mean = np.array([r["attainment_at_mean"] for r in rows])
    target = np.array([r["target"] for r in rows])
    below = mean < target
    assert below.sum() <= 2
    for r, b in zip(rows, below, strict=True):
        if b:
            assert "long-context" in r["case"], r["case"]
            assert r["attainment_at_mean"] >= r["target"] - 0.02, r["case"]
    hours = sum(r["draws_meeting_at"] for r in rows) / (DRAWS * len(rows))
    assert hours >= 0.95
    multi = [r for r in rows if r["replicas"] > 1]
    padded = [r["case"].split(":")[0] for r in multi if r["attainment_below_mean"] >= r["target"]]
    assert padded in (["case 6"], [])


def test_bursty_long_context_pool_sized_past_its_clumps_tpot():
    """Design seed 11, case 51 (Llama-3.1-70B x2, 12,300-token prompts, arrival CV 4, output
    length spread 1): a request decodes alongside the clump it arrived in and meets its
    clump-mates' prompts (:func:`planner.perf.openloop._clump_batch`). Sized past it, the pool
    meets the SLO in the simulated busiest hour and one replica fewer (the count sized without
    the clump term, 0.889 simulated) misses it."""
    case = cases(60, seed=11)[51]
    assert case["simulation"]["burstiness_cv"] == 4.0
    _sized_tight(case)


def test_poisson_like_long_context_pool_not_padded_by_hidden_waits(monkeypatch):
    """Design seed 11, case 41 (Llama-3.1-405B x8, 12,300-token prompts, arrival CV 2, output
    length spread 1): the router's decode counts hide a prompt's queue, but an isolated
    prompt then waits at most the rest of its replica's prefill in progress
    (:func:`planner.perf.openloop._residual_prefill_tail`: no simulated prompt with at most one
    ahead of it missed the bound), while its TPOT is that of its Palm batch, itself counted
    (:func:`planner.perf.openloop._clump_batch`). Sized with both, the pool meets the SLO in
    the simulated busiest hour and one replica fewer misses it (the previous model sized one
    more, where one fewer still met: padded)."""
    import planner.perf.openloop as ol
    from planner.catalog import load_catalog
    from planner.config import parse_scenario
    from planner.model.sizing import size_options

    case = cases(60, seed=11)[41]
    assert case["simulation"]["burstiness_cv"] == 2.0
    row = _sized_tight(case)
    # the hidden prompts' one-prefill wait is what lets the truer TPOT leave it this tight
    cat = load_catalog()
    monkeypatch.setattr(ol, "_HIDDEN_WAIT_ONE_PREFILL", False)
    cat.forget_shared("capacity")  # the memoised capacities are the model's with the term
    try:
        queued = size_options(parse_scenario(case, catalog=cat), cat)["gpu"].replicas
    finally:
        cat.forget_shared("capacity")
    assert queued > row["replicas"]
