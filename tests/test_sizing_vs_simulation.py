"""Sizing the simulator confirms (issue: GPU counts the simulator confirms).

50 generated scenarios (dense and MoE models, 1-8 GPUs per replica, prefill-heavy,
decode-heavy, chat and long-context lengths, flat and peaked profiles, arrival burstiness CV
1-4, length spread, tight and loose SLOs; ``studies/sizing-vs-simulation/cases.py``) are
sized by the model's open-loop capacity with no HA reserve and utilisation target 1, and each
is simulated for its busiest hour (chunked prefill, SimPy) at that sizing and at one replica
fewer. Measured on this code: 47 of the first 50 cases meet the SLO percentile at the sizing
(the misses are 12,300-token long-context pools of 6-15 replicas with bursty arrivals,
0.81-0.90 attainment), and in 16 of 16 cases that need more than one replica, one replica
fewer misses it. The thresholds below hold the line there.
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
    return [check(c) for c in cases(50, seed=7)]


def test_simulated_busiest_hour_meets_the_slo_at_the_sizing(rows):
    att = np.array([r["attainment_at"] for r in rows])
    target = np.array([r["target"] for r in rows])
    assert all(r["served"] for r in rows)
    assert all(r.get("dropped_at", 0) == 0 for r in rows)
    assert np.mean(att >= target) >= 0.9
    assert np.median(att) >= 0.99


def test_one_replica_fewer_misses_the_slo(rows):
    multi = [r for r in rows if r["replicas"] > 1]
    assert len(multi) >= 15
    missed = [r["attainment_below"] < r["target"] for r in multi]
    assert np.mean(missed) >= 0.8  # the capacity figure is not padded
