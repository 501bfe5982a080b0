"""Replica capacity per (option, class): the performance model, called one way everywhere.

The capacity of one replica for a class is :func:`planner.perf.replica_capacity` at the class's
lengths, its TTFT/TPOT SLO, the deployment's model, accelerator, GPUs, precision and ``perf``
parameters, and the class's self-hosted prefix-cache hit share (``prefix_cache_hit_share``:
prompt tokens served from the KV cache are not prefilled; this is not the API's cached-token
billing share). When a class's token lengths are uncertain, :class:`CapacityGrid` interpolates
the capacity on a grid of length quantiles (see :func:`grid_nodes`).
"""

from __future__ import annotations

from dataclasses import dataclass
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


class CapacityCache:
    """Memoised calls of the performance model for one catalog."""

    def __init__(self) -> None:
        self._cache: dict[tuple, Any] = {}

    def full(self, llm_row, acc_row, dep, isl: float, osl: float, ttft, tpot, hit: float,
             *, strict: bool):
        """:class:`planner.perf.ReplicaCapacity` (or ``None`` when it does not fit and not
        ``strict``) for one deployment and length pair."""
        from planner.perf import AcceleratorSpec, LLMSpec, PerfParams, replica_capacity

        key = (llm_row["id"], acc_row["id"], dep.gpus_per_replica, dep.precision,
               tuple(sorted(dep.perf.items())), isl, osl, ttft, tpot, hit, strict)
        if key in self._cache:
            return self._cache[key]
        try:
            cap = replica_capacity(
                LLMSpec.from_row(llm_row), AcceleratorSpec.from_row(acc_row),
                gpus=dep.gpus_per_replica, precision=dep.precision, input_tokens=isl,
                output_tokens=osl, ttft_slo_s=ttft, tpot_slo_s=tpot,
                params=PerfParams.from_mapping(dep.perf) if dep.perf else None,
                prefix_cache_hit_share=hit, **({} if strict else {"strict": False}),
            )
        except PlannerError:
            if strict:
                raise
            cap = None
        self._cache[key] = cap
        return cap

    def rps(self, llm_row, acc_row, dep, isl, osl, ttft, tpot, hit, *, strict) -> tuple:
        """``(requests/s per replica, fits)``; ``(0, False)`` where nothing fits."""
        cap = self.full(llm_row, acc_row, dep, isl, osl, ttft, tpot, hit, strict=strict)
        if cap is None:
            return 0.0, False
        return float(cap.requests_per_s), bool(cap.fits)
