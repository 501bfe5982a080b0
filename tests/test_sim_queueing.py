"""Queueing-theory validation of the simulator.

With batch cap 1, one output token (the request finishes at the end of its prefill) and a
prefill time of ``1e-6 s x input tokens``, a pool of ``c`` replicas with the shared FCFS
queue is an M/G/c queue whose service times we choose through the token counts:

* M/M/c: exponential service, mean wait from Erlang's C formula
  ``Wq = C(c, a) / (c mu - lambda)``, ``C = (a^c / c!) / (1 - rho) / (sum_{k<c} a^k / k! +
  (a^c / c!) / (1 - rho))``, ``a = lambda / mu`` (Kleinrock, "Queueing Systems" vol. 1,
  1975, eq. 3.40);
* M/D/1: deterministic service ``S``, Pollaczek-Khinchine ``Wq = rho S / (2 (1 - rho))``
  (ibid., eq. 5.87 with ``E[S^2] = S^2``).

Tolerance 3% on the mean wait pooled over several seeds. The run lengths are chosen so
that 3% is 2.3-3.2 standard errors: near rho = 0.9 the mean wait of a queue converges
slowly (for M/M/2 the relative standard deviation of a 100,000-customer mean is ~5%), so
these tests simulate ~3.8 million requests in all (marked ``slow``).
A first test checks, on one sample path, that the simulated waits equal the exact FCFS
c-server recursion (Kiefer & Wolfowitz 1955) to machine precision.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest

from planner.sim import LinearStepModel, PoolSpec, RequestTable, SimPlan, simulate

S_PER_TOKEN = 1e-6
MEAN_TOKENS = 10**6  # mean service time 1 s
SERVER = LinearStepModel(
    prefill_base_s=0.0,
    prefill_s_per_token=S_PER_TOKEN,
    decode_base_s=1.0,  # never used: one output token
    kv_capacity_tokens=10**12,
    max_batch=1,
)


def erlang_c_wait(lam: float, mu: float, c: int) -> float:
    a = lam / mu
    rho = a / c
    head = sum(a**k / math.factorial(k) for k in range(c))
    tail = a**c / math.factorial(c) / (1.0 - rho)
    return tail / (head + tail) / (c * mu - lam)


def pk_wait_md1(rho: float, s: float) -> float:
    return rho * s / (2.0 * (1.0 - rho))


def _requests(kind: str, c: int, rho: float, n: int, seed: int) -> RequestTable:
    rng = np.random.default_rng(np.random.SeedSequence([seed, c, int(rho * 100)]))
    lam = rho * c  # mu = 1
    t = np.cumsum(rng.exponential(1.0 / lam, n))
    if kind == "M":
        tokens = np.maximum(1, np.rint(rng.exponential(MEAN_TOKENS, n))).astype(np.int64)
    else:
        tokens = np.full(n, MEAN_TOKENS, dtype=np.int64)
    return RequestTable.from_arrays(t, tokens, np.ones(n, dtype=np.int64))


def _mean_wait(kind: str, c: int, rho: float, n: int, seeds: int) -> float:
    """Mean wait pooled over ``seeds`` runs (first 2% of each run dropped as warm-up)."""
    waits = []
    plan = SimPlan(pools=(PoolSpec("servers", SERVER, replicas=c),))
    for seed in range(seeds):
        reqs = _requests(kind, c, rho, n, seed)
        q = simulate(plan, reqs).requests["queue_s"].to_numpy()
        waits.append(q[n // 50 :])
    return float(np.concatenate(waits).mean())


def _fcfs_recursion(t: np.ndarray, s: np.ndarray, c: int) -> np.ndarray:
    free = [0.0] * c
    out = np.empty(t.size)
    for i in range(t.size):
        f = heapq.heappop(free)
        st = f if f > t[i] else t[i]
        out[i] = st - t[i]
        heapq.heappush(free, st + s[i])
    return out


@pytest.mark.parametrize(("kind", "c"), [("M", 3), ("D", 1)])
def test_waits_equal_exact_fcfs_recursion_on_a_sample_path(kind, c):
    reqs = _requests(kind, c, 0.85, 20_000, seed=99)
    plan = SimPlan(pools=(PoolSpec("servers", SERVER, replicas=c),))
    sim = simulate(plan, reqs).requests["queue_s"].to_numpy()
    exact = _fcfs_recursion(reqs.arrival_s, SERVER.prefill_time_s(reqs.input_tokens), c)
    assert np.max(np.abs(sim - exact)) < 1e-9
    assert sim.mean() > 0.5


# (c, rho, requests per run, runs). Relative standard deviation of a run's mean wait,
# measured over 6 seeds of 100,000 customers with the exact recursion: M/M/2 1.6% (rho 0.5),
# 1.6% (0.7), 5.3% (0.9); M/D/1 1.4%, 1.6%, 4.2%. The sizes below put the 3% band at
# 2.3-3.2 standard errors of the pooled mean.
MMC_CASES = [(2, 0.5, 100_000, 2), (2, 0.7, 150_000, 2), (2, 0.9, 400_000, 4)]
MD1_CASES = [(0.5, 100_000, 2), (0.7, 150_000, 2), (0.9, 300_000, 4)]


@pytest.mark.slow
@pytest.mark.parametrize(("c", "rho", "n", "runs"), MMC_CASES)
def test_mmc_mean_wait_matches_erlang_c(c, rho, n, runs):
    sim = _mean_wait("M", c, rho, n, runs)
    theory = erlang_c_wait(rho * c, 1.0, c)
    assert sim == pytest.approx(theory, rel=0.03)


@pytest.mark.slow
@pytest.mark.parametrize(("rho", "n", "runs"), MD1_CASES)
def test_md1_mean_wait_matches_pollaczek_khinchine(rho, n, runs):
    sim = _mean_wait("D", 1, rho, n, runs)
    theory = pk_wait_md1(rho, MEAN_TOKENS * S_PER_TOKEN)
    assert sim == pytest.approx(theory, rel=0.03)


def test_erlang_c_and_pk_formulas():
    # textbook values: M/M/1 Wq = rho / (mu - lambda); M/M/2 at a = 1: C = 1/3, Wq = 1/3
    assert erlang_c_wait(0.8, 1.0, 1) == pytest.approx(0.8 / 0.2)
    assert erlang_c_wait(1.0, 1.0, 2) == pytest.approx(1.0 / 3.0)
    assert pk_wait_md1(0.5, 2.0) == pytest.approx(1.0)
