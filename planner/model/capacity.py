"""Replica capacity per (option, class): the performance model, called one way everywhere.

The capacity of one replica for a class with a latency SLO is the open-loop one
(:func:`planner.perf.openloop.slo_capacity`): the largest arrival rate whose TTFT and TPOT
percentiles (the SLO's ``percentile``, default p90, both bounds jointly) hold, with the wait
for prefill, the variability of lengths and arrivals (:class:`Traffic`) and the KV cache;
without an SLO, the maximum-throughput point of :func:`planner.perf.replica_capacity`. Both
use the deployment's model, accelerator, GPUs, precision and ``perf`` parameters and the
class's self-hosted prefix-cache hit share (``prefix_cache_hit_share``: prompt tokens served
from the KV cache are not prefilled; this is not the API's cached-token billing share). When a class's token lengths are uncertain, :class:`CapacityGrid` interpolates
the capacity on a grid of length quantiles (see :func:`grid_nodes`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from planner.errors import PlannerError

#: Quantiles of the pilot sample at which the capacity grid has nodes.
GRID_Q = (0.001, 0.03, 0.2, 0.5, 0.8, 0.97, 0.999)


@dataclass(frozen=True, eq=False)
class CapacityGrid:
    """Requests/s per replica on an (input tokens, output tokens) grid.

    Bilinear interpolation of the replica-seconds per request ``1 / rps`` (nearly linear in
    the lengths: prefill and decode time grow with them), constant beyond the outermost nodes;
    where a node has no capacity (``rps = 0``), ``rps`` itself is interpolated. At a node the
    result is the perf model's value (to the last bit for ``rps``, one rounding for 1/rps).
    """

    isl: np.ndarray
    osl: np.ndarray
    rps: np.ndarray  # (len(isl), len(osl))

    def __call__(self, isl: Any, osl: Any) -> np.ndarray:
        i0, i1, ti = _axis(self.isl, isl)
        j0, j1, tj = _axis(self.osl, osl)
        inverse = bool((self.rps > 0).all())
        r = 1.0 / self.rps if inverse else self.rps
        a = r[i0, j0] * (1.0 - tj) + r[i0, j1] * tj
        b = r[i1, j0] * (1.0 - tj) + r[i1, j1] * tj
        v = a * (1.0 - ti) + b * ti
        return 1.0 / v if inverse else v


def _axis(nodes: np.ndarray, x: Any):
    """Cell index and weight of ``x`` between sorted ``nodes`` (clamped to the end nodes)."""
    x = np.asarray(x, dtype=float)
    if nodes.size == 1:
        z = np.zeros(x.shape, dtype=np.intp)
        return z, z, np.zeros(x.shape)
    xc = np.clip(x, nodes[0], nodes[-1])
    # cell index = number of inner nodes <= x (a few comparisons beat a binary search here)
    i = np.zeros(xc.shape, dtype=np.intp)
    for node in nodes[1:-1]:
        i += xc >= node
    lo = nodes[i]
    t = (xc - lo) / (nodes[i + 1] - lo)
    return i, i + 1, t


def grid_nodes(pilot: np.ndarray, median: float) -> np.ndarray:
    """Grid nodes: the pilot sample's :data:`GRID_Q` quantiles (positive) and the median."""
    q = np.quantile(np.asarray(pilot, dtype=float), GRID_Q)
    return np.unique(np.concatenate([q[q > 0], [median]]))


@dataclass(frozen=True)
class Traffic:
    """How a class's requests arrive, for the open-loop capacity at its SLO percentile.

    Attributes
    ----------
    percentile : the SLO percentile (90: p90 of TTFT and of TPOT, jointly)
    cv_in, cv_out : coefficients of variation of the prompt and output lengths
    arrival_cv : coefficient of variation of the inter-arrival gaps (1: Poisson)
    """

    percentile: float = 90.0
    cv_in: float = 0.0
    cv_out: float = 0.0
    arrival_cv: float = 1.0


def length_cv(length: Any, fixed_cv: float) -> float:
    """Coefficient of variation of a scenario length: its distribution's (from 256 quantile
    points), else ``fixed_cv`` (the simulator's ``length_cv`` spread of a fixed length)."""
    from planner.distributions import is_distribution

    if length is None:
        return 0.0
    count = next((getattr(length, k) for k in ("tokens", "words", "chars")
                  if getattr(length, k, None) is not None), None)
    if count is not None and is_distribution(count):
        x = np.asarray(count.ppf((np.arange(256) + 0.5) / 256), dtype=float)
        m = float(x.mean())
        return float(x.std() / m) if m > 0 else 0.0
    return float(fixed_cv)


def class_traffic(sc: Any, wc: Any, input_tokens: float, prompt_tokens: float) -> Traffic:
    """The :class:`Traffic` of a workload class: its SLO percentile, the spread of its prompt
    (the input varies, the fixed context does not) and output lengths, and the scenario's
    arrival burstiness (``[simulation] burstiness_cv``, Poisson when unset), as the simulator
    generates them."""
    sim = sc.simulation
    cv = float(sim.length_cv)
    cv_in = length_cv(wc.input, cv) * (input_tokens / prompt_tokens if prompt_tokens else 0.0)
    return Traffic(
        percentile=float(wc.slo.percentile) if wc.slo is not None else 90.0,
        cv_in=cv_in, cv_out=length_cv(wc.output, cv),
        arrival_cv=float(sim.burstiness_cv) if sim.burstiness_cv is not None else 1.0,
    )


class CapacityCache:
    """Memoised calls of the performance model for one catalog."""

    def __init__(self) -> None:
        self._cache: dict[tuple, Any] = {}

    def full(self, llm_row, acc_row, dep, isl: float, osl: float, ttft, tpot, hit: float,
             *, strict: bool, traffic: Traffic | None = None):
        """:class:`planner.perf.ReplicaCapacity` (or ``None`` when it does not fit and not
        ``strict``) for one deployment and length pair.

        With ``traffic`` and an SLO, the capacity is the open-loop one
        (:func:`planner.perf.openloop.slo_capacity`): the largest arrival rate whose TTFT and
        TPOT percentiles meet the SLO with queueing, length and arrival variability; else the
        closed-loop operating point of :func:`planner.perf.replica_capacity`.
        """
        from planner.perf import AcceleratorSpec, LLMSpec, PerfParams, replica_capacity
        from planner.perf.openloop import slo_capacity
        from planner.perf.step import step_model

        key = (llm_row["id"], acc_row["id"], dep.gpus_per_replica, dep.precision,
               tuple(sorted(dep.perf.items())), isl, osl, ttft, tpot, hit, strict, traffic)
        if key in self._cache:
            return self._cache[key]
        llm, acc = LLMSpec.from_row(llm_row), AcceleratorSpec.from_row(acc_row)
        params = PerfParams.from_mapping(dep.perf) if dep.perf else None
        try:
            cap = replica_capacity(
                llm, acc, gpus=dep.gpus_per_replica, precision=dep.precision, input_tokens=isl,
                output_tokens=osl, ttft_slo_s=ttft, tpot_slo_s=tpot, params=params,
                prefix_cache_hit_share=hit, **({} if strict else {"strict": False}),
            )
        except PlannerError:
            if strict:
                raise
            cap = None
        if (cap is not None and cap.fits and traffic is not None
                and (ttft is not None or tpot is not None)):
            sm = step_model(llm, acc, dep.gpus_per_replica, dep.precision, params)
            op = slo_capacity(
                sm, input_tokens=isl, output_tokens=osl, ttft_slo_s=ttft, tpot_slo_s=tpot,
                percentile=traffic.percentile, prefix_cache_hit_share=hit,
                cv_in=traffic.cv_in, cv_out=traffic.cv_out, arrival_cv=traffic.arrival_cv,
                max_in_system=cap.max_batch)
            rps = op.requests_per_s
            cap = replace(
                cap, requests_per_s=rps, output_tokens_per_s=rps * osl,
                input_tokens_per_s=rps * isl, batch=op.decode_batch, ttft_s=op.ttft_s,
                tpot_s=op.tpot_s, e2e_s=op.ttft_s + (osl - 1.0) * op.tpot_s,
                limited_by=op.limited_by, meets_slo=rps > 0,
                method=f"open-loop p{traffic.percentile:g} ({cap.method} steps)")
        self._cache[key] = cap
        return cap

    def rps(self, llm_row, acc_row, dep, isl, osl, ttft, tpot, hit, *, strict,
            traffic: Traffic | None = None) -> tuple:
        """``(requests/s per replica, fits)``; ``(0, False)`` where nothing fits."""
        cap = self.full(llm_row, acc_row, dep, isl, osl, ttft, tpot, hit, strict=strict,
                        traffic=traffic)
        if cap is None:
            return 0.0, False
        return float(cap.requests_per_s), bool(cap.fits)
