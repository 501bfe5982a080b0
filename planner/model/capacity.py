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
from statistics import NormalDist
from typing import Any

import numpy as np

from planner.errors import PlannerError

#: Quantiles of the pilot sample at which the capacity grid has nodes (dense enough for the
#: open-loop capacity's kinks where the binding limit changes: ~1% worst interpolation error).
GRID_Q = (0.001, 0.01, 0.03, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.97, 0.99, 0.999)


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

    def __post_init__(self) -> None:
        # what every call reads, prepared once: the cell finders of both axes, the grid as a
        # flat table of the interpolated quantity (1 / rps, or rps where a node has none)
        inverse = bool((self.rps > 0).all())
        r = 1.0 / self.rps if inverse else np.asarray(self.rps, dtype=float)
        object.__setattr__(self, "_inverse", inverse)
        object.__setattr__(self, "_flat", np.ascontiguousarray(r).ravel())
        object.__setattr__(self, "_ax_i", _Cells(self.isl))
        object.__setattr__(self, "_ax_j", _Cells(self.osl))
        object.__setattr__(self, "_key", (np.asarray(self.isl, dtype=float).tobytes(),
                                          np.asarray(self.osl, dtype=float).tobytes()))

    @property
    def nodes_key(self) -> tuple[bytes, bytes]:
        """The grid's nodes: grids with the same key locate a sample in the same cell."""
        return self._key

    def __call__(self, isl: Any, osl: Any) -> np.ndarray:
        return self.interpolate(self.locate(isl, osl))

    def locate(self, isl: Any, osl: Any) -> tuple:
        """The cells of ``(isl, osl)`` and the weights in them (what :meth:`interpolate`
        reads; the same for every grid with these nodes, :attr:`nodes_key`)."""
        isl, osl = np.asarray(isl, dtype=float), np.asarray(osl, dtype=float)
        if isl.shape != osl.shape:
            isl, osl = np.broadcast_arrays(isl, osl)
        scalar = isl.ndim == 0  # the medians: a float comes back, as numpy indexing gives
        if scalar:
            isl, osl = isl.reshape(1), osl.reshape(1)
        i, ti = self._ax_i(isl)
        j, tj = self._ax_j(osl)
        k = i * self.osl.size  # flat index of the cell's (i, j) node
        k += j
        return k, ti, tj, scalar

    def interpolate(self, loc: tuple) -> Any:
        """Requests/s at the located samples (:meth:`locate`, not modified)."""
        k, ti, tj, scalar = loc
        m = self.osl.size
        di = m if self.isl.size > 1 else 0  # flat offsets of the (i + 1) and (j + 1) nodes
        dj = 1 if m > 1 else 0
        rf = self._flat
        # a = r[i, j] (1 - tj) + r[i, j + 1] tj; b likewise at i + 1; v = a (1 - ti) + b ti
        # (the same operations, in the same order, as the textbook formula: the same bits)
        w = 1.0 - tj
        a = rf.take(k)
        a *= w
        kk = k + dj
        tmp = rf.take(kk)
        tmp *= tj
        a += tmp
        kk += di
        b = rf.take(kk)
        b *= tj
        kk -= dj
        rf.take(kk, out=tmp)
        tmp *= w
        tmp += b  # r[i + 1, j] (1 - tj) + r[i + 1, j + 1] tj, in that order
        np.subtract(1.0, ti, out=w)
        a *= w
        tmp *= ti
        a += tmp
        if self._inverse:
            np.divide(1.0, a, out=a)
        return a[0] if scalar else a


class _Cells:
    """Cell index and weight of values between sorted ``nodes`` (clamped to the end nodes):
    ``i`` = the number of inner nodes <= x, ``t = (x - nodes[i]) / (nodes[i + 1] - nodes[i])``.

    The index is looked up in a table over a uniform fine grid (spacing a quarter of the
    smallest gap between nodes, so a fine cell, with rounding, holds at most one node) and
    corrected by one comparison each way: a few passes over the values instead of one
    comparison per inner node. The index is exact (the same as counting), so the weights are
    the same bits; grids too uneven for a table of :data:`MAX_TABLE` entries count."""

    MAX_TABLE = 1 << 16

    def __init__(self, nodes: np.ndarray) -> None:
        self.nodes = nodes = np.asarray(nodes, dtype=float)
        self.table = None
        if nodes.size < 2:
            return
        self.hi = nodes[1:].copy()
        self.lower = nodes[:-1].copy()  # sentinels: the end cells are open outwards
        self.lower[0] = -np.inf
        self.upper = nodes[1:].copy()
        self.upper[-1] = np.inf
        span = float(nodes[-1] - nodes[0])
        gap = float(np.min(np.diff(nodes)))
        if nodes.size > 2 and span > 0 and gap > 0 and span / gap * 4.0 < self.MAX_TABLE:
            cells = int(np.ceil(span / gap * 4.0))
            self.scale = cells / span
            edges = nodes[0] + np.arange(cells + 3) / self.scale
            self.table = np.searchsorted(nodes[1:-1], edges, side="right").astype(np.intp)

    def __call__(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        nodes = self.nodes
        x = np.asarray(x, dtype=float)
        if nodes.size == 1:
            return np.zeros(x.shape, dtype=np.intp), np.zeros(x.shape)
        xc = np.clip(x, nodes[0], nodes[-1])
        if self.table is None:
            i = np.zeros(xc.shape, dtype=np.intp)
            for node in nodes[1:-1]:
                i += xc >= node
        else:
            f = xc - nodes[0]
            f *= self.scale
            i = self.table.take(f.astype(np.intp), mode="clip")  # NaN: cell 0
            i -= xc < self.lower.take(i)  # the fine cell may be one off after rounding
            i += xc >= self.upper.take(i)
        lo = nodes.take(i)
        t = xc - lo
        hi = self.hi.take(i)
        hi -= lo
        t /= hi
        return i, t


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
    servers : replicas of the pool the arrivals are shared over (the router joins the
        shortest queue, so waits pool over them)
    pooled_wait : the prompt's wait pools over the replicas (GI/G/c), else it is its own
        replica's (GI/G/1 on a random split of the arrivals); ``[planning] prefill_wait``
    """

    percentile: float = 90.0
    cv_in: float = 0.0
    cv_out: float = 0.0
    arrival_cv: float = 1.0
    servers: float = 1.0  # replicas of the pool sharing the arrivals (pooled prefill wait)
    pooled_wait: bool = True  # False: each replica's prefill is its own GI/G/1 queue
    hour_z: float = 0.0  # the SLO holds for an hour this many count SDs above the mean


def variable_prompt_share(input_tokens: float, prompt_tokens: float) -> float:
    """Share of a class's prompt that varies from request to request: its input, not the
    fixed context (``calls x context``) every request repeats; ``input / prompt`` (0 for an
    empty prompt). Only this part spreads with ``[simulation] length_cv``: in the open-loop
    capacity (:func:`class_traffic`), in ``planner simulate`` and in ``optimize --verify``
    (:func:`planner.engines.optimize_verify.scenario_traffic`, whose fixed-context share is
    one minus this)."""
    return input_tokens / prompt_tokens if prompt_tokens else 0.0


def class_traffic(sc: Any, wc: Any, input_tokens: float, prompt_tokens: float) -> Traffic:
    """The :class:`Traffic` of a workload class: its SLO percentile, the per-request spread
    of its prompt (the input varies, the fixed context does not) and output lengths
    (``[simulation] length_cv``), and the scenario's arrival burstiness
    (``[simulation] burstiness_cv``, Poisson when unset), as the simulator generates them.

    A length written as a distribution is uncertainty about the class's mean length (what
    the risk engine samples), not per-request spread, so every engine sizes the same replica
    for the same mean lengths."""
    sim = sc.simulation
    cv = float(sim.length_cv)
    return Traffic(
        percentile=float(wc.slo.percentile) if wc.slo is not None else 90.0,
        cv_in=cv * variable_prompt_share(input_tokens, prompt_tokens), cv_out=cv,
        arrival_cv=float(sim.burstiness_cv) if sim.burstiness_cv is not None else 1.0,
        pooled_wait=sc.planning.prefill_wait == "pooled",
        hour_z=NormalDist().inv_cdf(float(sc.planning.hour_quantile)),
    )


def _hour_note(traffic: Traffic) -> str:
    """``, hour count q0.9`` when the SLO is held above the mean hour (``hour_quantile``)."""
    if traffic.hour_z == 0.0:
        return ""
    return f", hour count q{NormalDist().cdf(traffic.hour_z):.3g}"


class CapacityCache:
    """Memoised calls of the performance model for one catalog (at most
    :attr:`MAX_ENTRIES` results, then it starts afresh: a catalog's shared cache lives as long
    as the catalog)."""

    MAX_ENTRIES = 20_000

    def __init__(self) -> None:
        self._cache: dict[tuple, Any] = {}

    def _store(self, key: tuple, value: Any) -> None:
        if len(self._cache) >= self.MAX_ENTRIES:
            self._cache.clear()
        self._cache[key] = value

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
            # the same search whether ``strict`` or not (a replica that fits): kept apart
            okey = ("open-loop", *key[:10], traffic, cap.max_batch)
            op = self._cache.get(okey)
            if op is None:
                sm = step_model(llm, acc, dep.gpus_per_replica, dep.precision, params)
                op = slo_capacity(
                    sm, input_tokens=isl, output_tokens=osl, ttft_slo_s=ttft, tpot_slo_s=tpot,
                    percentile=traffic.percentile, prefix_cache_hit_share=hit,
                    cv_in=traffic.cv_in, cv_out=traffic.cv_out, arrival_cv=traffic.arrival_cv,
                    max_in_system=cap.max_batch, servers=traffic.servers,
                    pooled_wait=traffic.pooled_wait, hour_z=traffic.hour_z)
                self._store(okey, op)
            rps = op.requests_per_s
            if rps <= 0:  # not even a trickle meets the SLO: keep the one-request latencies
                cap = replace(cap, requests_per_s=0.0, output_tokens_per_s=0.0,
                              input_tokens_per_s=0.0, meets_slo=False, limited_by="slo")
            else:
                cap = replace(
                    cap, requests_per_s=rps, output_tokens_per_s=rps * osl,
                    input_tokens_per_s=rps * isl, batch=op.decode_batch, ttft_s=op.ttft_s,
                    tpot_s=op.tpot_s, e2e_s=op.ttft_s + (osl - 1.0) * op.tpot_s,
                    limited_by=op.limited_by, meets_slo=rps > 0,
                    method=f"open-loop p{traffic.percentile:g}{_hour_note(traffic)} "
                           f"({cap.method} steps)")
        self._store(key, cap)
        return cap

    def table(self, llm_row, acc_row, dep, isl: np.ndarray, osl: np.ndarray, ttft, tpot,
              hit: float, traffic: Traffic | None) -> np.ndarray:
        """Requests/s per replica on the grid ``isl x osl`` (0 where nothing fits): the
        open-loop capacity of every node in one array evaluation when ``traffic`` and an SLO
        are given, else :meth:`rps` node by node. Memoised like :meth:`full` (a new array
        each call)."""
        isl, osl = np.asarray(isl, dtype=float), np.asarray(osl, dtype=float)
        key = ("table", llm_row["id"], acc_row["id"], dep.gpus_per_replica, dep.precision,
               tuple(sorted(dep.perf.items())), isl.tobytes(), osl.tobytes(), ttft, tpot, hit,
               traffic)
        t = self._cache.get(key)
        if t is None:
            t = self._table(llm_row, acc_row, dep, isl, osl, ttft, tpot, hit, traffic)
            self._store(key, t)
        return t.copy()

    def _table(self, llm_row, acc_row, dep, isl: np.ndarray, osl: np.ndarray, ttft, tpot,
               hit: float, traffic: Traffic | None) -> np.ndarray:
        from planner.perf import AcceleratorSpec, LLMSpec, PerfParams
        from planner.perf.memory import max_concurrent_requests, memory_plan
        from planner.perf.openloop import slo_capacity_many
        from planner.perf.step import step_model

        if traffic is None or (ttft is None and tpot is None):
            return np.array([[self.rps(llm_row, acc_row, dep, float(x), float(y), ttft, tpot,
                                       hit, strict=False)[0] for y in osl] for x in isl])
        llm, acc = LLMSpec.from_row(llm_row), AcceleratorSpec.from_row(acc_row)
        params = PerfParams.from_mapping(dep.perf) if dep.perf else None
        sm = step_model(llm, acc, dep.gpus_per_replica, dep.precision, params)
        mp = memory_plan(llm, acc, sm.gpus, sm.precision, sm.params)
        ii, oo = np.meshgrid(np.asarray(isl, float), np.asarray(osl, float), indexing="ij")

        def fit(x, y) -> bool:
            return self.rps(llm_row, acc_row, dep, float(x), float(y), None, None, hit,
                            strict=False)[1]

        # Whether a node fits is monotone in the lengths (lengths below 1 token are refused;
        # above, the KV tokens of a request and the context window bound them from above),
        # so when the smallest nodes are whole tokens and the longest pair fits, every node
        # fits: one perf-model call instead of one per node (~45% of a compile)
        if ii.size > 1 and ii.min() >= 1.0 and oo.min() >= 1.0 and fit(ii.max(), oo.max()):
            fits = np.ones(ii.shape, dtype=bool)
        else:
            fits = np.array([[fit(x, y) for y in osl] for x in isl])
        bmax = np.minimum(max_concurrent_requests(mp.kv_capacity_tokens, ii, oo,
                                                  sm.params.kv_reserve, llm.sliding_window),
                          float(sm.params.max_batch))
        ops = slo_capacity_many(
            sm, input_tokens=ii.ravel(), output_tokens=oo.ravel(), ttft_slo_s=ttft,
            tpot_slo_s=tpot, percentile=traffic.percentile, prefix_cache_hit_share=hit,
            cv_in=traffic.cv_in, cv_out=traffic.cv_out, arrival_cv=traffic.arrival_cv,
            max_in_system=bmax.ravel(), servers=traffic.servers,
            pooled_wait=traffic.pooled_wait, hour_z=traffic.hour_z)
        rps = np.array([op.requests_per_s for op in ops]).reshape(ii.shape)
        return np.where(fits, rps, 0.0)

    def rps(self, llm_row, acc_row, dep, isl, osl, ttft, tpot, hit, *, strict,
            traffic: Traffic | None = None) -> tuple:
        """``(requests/s per replica, fits)``; ``(0, False)`` where nothing fits."""
        cap = self.full(llm_row, acc_row, dep, isl, osl, ttft, tpot, hit, strict=strict,
                        traffic=traffic)
        if cap is None:
            return 0.0, False
        return float(cap.requests_per_s), bool(cap.fits)
