"""Routing: pools, the per-class routers and the one spillover decision.

**The spillover decision** is :func:`spill_decision`: the only place that decides whether a
pool takes a request (it starts or queues there) or refuses it (the request then moves to
the class's next pool, then to the API or is dropped). Its docstring states the whole rule;
:func:`class_spill_rules` gives, per class, whether it may go to the API and its TTFT budget.

* :class:`Pool` -- routing state of one pool: routable replicas, their loads, the shared
  queue, the admission-interval EWMA behind the predicted wait; :meth:`Pool.offer` places a
  request on a replica (``shared``, ``jsq``, ``least_kv``, ``random``) and asks
  :func:`spill_decision` whenever it would not start at once.
* :func:`build_routers` -- one router per class, ``router(i, t)``: the class's pools in plan
  order, then the API or a drop. A class served by one pool and no API gets that pool's
  common path inlined (same decisions, fewer calls).
* :func:`arrival_loop` -- ``route_until(i)``: routes the arrivals that come before the event
  loop's next boundary, in order, with those routers (one call per batch of arrivals).
* Reason codes ``R_*`` and their names :data:`REASONS` (the ``drop_reason`` /
  ``spill_reason`` columns of :mod:`planner.sim.results`).

Replicas (:mod:`planner.sim.replica`) are used through ``enqueue(i, t)`` and their public
state (``b``, ``q``, ``res``, ``qres``, ``pos``); the event loop is :mod:`planner.sim.engine`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import numpy as np

from planner.sim.plan import SimPlan
from planner.sim.stepmodel import (
    DecodeKernel,
    LinearStepModel,
    mixed_step_function,
    prefill_pairs_function,
)

__all__ = [
    "REASONS",
    "Pool",
    "argmin_function",
    "arrival_loop",
    "build_routers",
    "class_spill_rules",
    "spill_decision",
]

INF = math.inf
NAN = math.nan

#: reason codes (a request's ``drop_reason`` / ``spill_reason``), names in :data:`REASONS`
R_NONE, R_QUEUE_FULL, R_SLO, R_KV, R_NO_ROUTE, R_API_CLASS = 0, 1, 2, 3, 4, 5
#: reason names by code
REASONS = ("", "queue_full", "slo", "exceeds_kv_capacity", "no_route", "api_class")

_EWMA_ALPHA = 0.02


@cache
def argmin_function(n: int):
    """``w.index(min(w))`` for a list ``w`` of exactly ``n >= 1`` numbers, unrolled.

    CPython 3.11's builtin ``min`` parses its arguments as keywords, which costs about twice
    a generated tournament of comparisons over a handful of items; the pump and the
    shared-queue router look for the earliest / least loaded replica once or twice per
    request. The tournament returns the index of the first smallest item (a strict ``<``
    keeps the left, lower-indexed item of a tie), as ``index`` would, in one call. Builtin
    ``min`` and ``index`` beyond 16 items; ``-1`` for ``n = 0``.
    """
    if n == 0:
        return lambda w: -1
    if n > 16:
        return lambda w: w.index(min(w))
    names = [f"x{k}" for k in range(n)]
    lines = ["def f(w):", f"    {', '.join(names)}, = w"]
    at = {a: str(k) for k, a in enumerate(names)}  # index of each survivor (a constant first)
    while len(names) > 1:
        for a, b in zip(names[::2], names[1::2], strict=False):
            ia = f"j{a[1:]}"
            if at[a] != ia:
                lines.append(f"    {ia} = {at[a]}")
                at[a] = ia
            lines.append(f"    if {b} < {a}:\n        {a} = {b}\n        {ia} = {at[b]}")
        names = names[::2]
    lines.append(f"    return {at[names[0]]}")
    ns: dict = {}
    exec("\n".join(lines), ns)  # a fixed template: no user input
    return ns["f"]


class Pool:
    """Routing state of one pool."""

    __slots__ = (
        "eng",
        "spec",
        "index",
        "reps",
        "all",
        "queue",
        "qneed",
        "nload",
        "kvload",
        "mb",
        "cap",
        "lim",
        "max_queue",
        "kernel",
        "prefill",
        "pfa",
        "pfb",
        "shared",
        "policy",
        "ewma_dt",
        "last_admit_s",
        "model",
        "closed",
        "base",
        "de",
        "kf",
        "tri",
        "pft",
        "track_ewma",
        "need",
        "pre",
        "inp",
        "out",
        "start",
        "ftok",
        "fin",
        "rrep",
        "argminf",
        "chunked",
        "budget",
        "mixed",
        "pairs",
    )

    def __init__(self, eng: Any, index: int, spec):
        self.eng = eng
        self.spec = spec
        self.index = index
        self.reps: list = []
        self.all: list = []
        self.queue: deque = deque()
        self.qneed = 0
        self.nload: list = []
        self.kvload: list = []  # kept current by closed-form replicas only for least_kv
        self.argminf = argmin_function(0)  # argmin over nload / kvload (see rebuild)
        self.mb = spec.batch_cap
        self.cap = spec.kv_capacity
        self.lim = spec.max_prefill_tokens or 0
        self.max_queue = spec.max_queue
        m = spec.step_model
        self.model = m
        self.kernel = DecodeKernel(m, self.mb)
        self.closed = self.kernel.closed
        self.de = 0.0
        self.base: list = []
        self.kf: list = []
        self.tri: list = []
        self.pft = None
        if self.closed:
            # decode step = base[B] + de K: base[B] = c + d B (linear) or a table per batch
            self.de = float(m.decode_s_per_kv_token)
            self.base = self.kernel.base_list(min(self.mb, self.cap))  # a batch <= both
            # k and k (k - 1) // 2 as floats for k = 0 .. the longest output (a replica's
            # closed-form spans jump at most that many steps); exact below 2**53
            out = eng.req.output_tokens
            ks = np.arange(int(out.max()) + 2 if len(out) else 2, dtype=np.int64)
            self.kf = ks.astype(float).tolist()
            self.tri = (ks * (ks - 1) // 2).astype(float).tolist()
        self.track_ewma = False
        # the engine's per-request columns, for short lookups on hot paths
        self.need, self.pre, self.inp, self.out = eng.need, eng.pre, eng.inp, eng.out
        self.start, self.ftok, self.fin, self.rrep = eng.start, eng.ftok, eng.fin, eng.rrep
        self.pfa = self.pfb = NAN  # NaN: not linear (see prefill)
        if type(m).prefill_time_s is LinearStepModel.prefill_time_s:
            a, b = float(m.prefill_base_s), float(m.prefill_s_per_token)
            self.pfa, self.pfb = a, b  # hot paths inline ``prefill``: a + b n (0 for n = 0)
            # ``prefill(n)`` by prompt length up to the longest uncached prompt (one
            # request's prefill), when that is not huge: the same floats (a + b n, numpy
            # rounds each operation as Python does)
            top = int(eng.req.input_tokens.max() if eng.n else 0)
            if top <= 1 << 20:
                ns = np.arange(top + 1, dtype=np.int64)
                self.pft = np.where(ns > 0, a + b * ns, 0.0).tolist()

            def prefill(n: int, a: float = a, b: float = b) -> float:
                return a + b * n if n else 0.0

        else:
            # a generic model costs a numpy call per prefill: memoise it by token count
            # (a pure function of n, so the records are unchanged); one memo per pool
            memo: dict = {0: 0.0}

            def prefill(n: int, f=m.prefill_time_s, memo: dict = memo) -> float:
                v = memo.get(n)
                if v is None:
                    v = memo[n] = float(f(n))
                return v

        self.prefill = prefill
        # chunked prefill: the step token budget, mixed-step times and prompt-prefix pairs
        self.chunked = bool(spec.chunked_prefill)
        self.budget = spec.step_token_budget
        self.mixed = mixed_step_function(m)
        self.pairs = prefill_pairs_function(m)
        self.shared = spec.routing == "shared"
        self.policy = spec.routing
        self.ewma_dt = NAN
        self.last_admit_s = NAN

    def rebuild(self) -> None:
        """Re-index routable replicas after a scale event."""
        # in place: replicas hold references to these lists
        self.nload[:] = [r.b + len(r.q) for r in self.reps]
        self.kvload[:] = [r.res + r.qres for r in self.reps]
        self.argminf = argmin_function(len(self.reps))
        for r in self.all:
            r.pos = -1
        for j, r in enumerate(self.reps):
            r.pos = j

    def note_admit(self, now: float, n: int) -> None:
        """EWMA of the interval between admissions (drives the predicted queue wait)."""
        last = self.last_admit_s
        self.last_admit_s = now
        if last == last:  # not NaN
            dt = (now - last) / n
            ew = self.ewma_dt
            if ew != ew:
                ew = dt
                n -= 1
            for _ in range(n):
                ew += _EWMA_ALPHA * (dt - ew)
            self.ewma_dt = ew

    def offer(self, i: int, t: float, slo: float | None) -> int:
        """Route request ``i`` (arriving at ``t``) into this pool; 0 if taken, else a reason.

        Picks the replica by the pool's routing policy. A request that would not start at
        that replica's next iteration boundary (or, with a shared queue, on any replica) is
        queued only if :func:`spill_decision` (with the class's TTFT budget ``slo``) says
        so; otherwise its refusal reason is returned and nothing changes.
        """
        eng = self.eng
        nd = eng.need[i]
        reps = self.reps
        if self.shared:
            queue = self.queue
            if not queue and reps:
                nl = self.nload
                r = reps[nl.index(min(nl))]
                if not (r.b + len(r.q) < self.mb and r.res + r.qres + nd <= self.cap):
                    r = None
                    best = INF
                    for c in reps:
                        load = c.b + len(c.q)
                        if load < best and load < self.mb and c.res + c.qres + nd <= self.cap:
                            r = c
                            best = load
                if r is not None:
                    eng.rpool[i] = self.index
                    r.enqueue(i, t)
                    return 0
            # it would wait in the pool's queue (one EWMA for the whole pool: spread 1)
            why = spill_decision(self, i, len(queue), 1, slo)
            if why:
                return why
            queue.append(i)
            self.qneed += nd
            eng.rpool[i] = self.index
            return 0
        if not reps:
            return spill_decision(self, i, 0, 0, slo)  # nowhere to queue
        pol = self.policy
        if pol == "jsq":
            nl = self.nload
            r = reps[nl.index(min(nl))]
        elif pol == "least_kv":
            kl = self.kvload
            r = reps[kl.index(min(kl))]
        else:
            r = reps[int(eng.route_u[i] * len(reps))]
        q = r.q
        if q or r.b >= self.mb or r.res + nd > self.cap:
            # it would wait in this replica's queue
            why = spill_decision(self, i, len(q), len(reps), slo)
            if why:
                return why
        eng.rpool[i] = self.index
        r.enqueue(i, t)
        return 0


def spill_decision(pool: Pool, i: int, ahead: int, spread: int, slo: float | None) -> int:
    """THE spillover decision: may request ``i``, which would wait, queue in ``pool``?

    Returns 0 (``R_NONE``: it queues there) or the reason the pool refuses it. This is the
    only place a request is refused; the rule, checked in this order:

    1. ``R_KV`` (``exceeds_kv_capacity``): its KV need, ``input + output`` tokens, exceeds
       the pool's KV capacity, so it could never start;
    2. ``R_QUEUE_FULL``: the pool has no routable replica to queue at (``spread == 0``:
       per-replica queues, every replica draining), or the queue it would join already
       holds ``max_queue`` requests;
    3. ``R_SLO``: the class has a TTFT budget ``slo`` (:func:`class_spill_rules`: the TTFT
       SLO x ``spill_margin``, only for a class that may spill to the API and with
       ``spill_on_slo``) and its predicted TTFT, ``(ahead + 1) x EWMA admission interval x
       spread + its prefill time``, exceeds it (no prediction before the pool's second
       admission).

    A request that can start at once (at a replica's next iteration boundary) never gets
    here: it is taken. A refused request is offered to the next pool serving its class (plan
    order); refused by all, it goes to the API when its class may (``spill_reason`` = the
    last refusal, ``api_class`` when no pool serves the class), else it is dropped
    (``drop_reason`` = the last refusal, ``no_route`` when no pool serves it).

    Parameters
    ----------
    ahead : requests already in the queue it would join
    spread : the replicas that queue's wait is spread over: 1 for a pool's shared queue
        (its EWMA interval is pool-wide), the routable replicas for per-replica queues
    slo : the class's TTFT budget, seconds (``None``: never refused on the SLO)
    """
    if pool.need[i] > pool.cap:
        return R_KV
    if not spread:
        return R_QUEUE_FULL
    mq = pool.max_queue
    if mq is not None and ahead >= mq:
        return R_QUEUE_FULL
    if slo is not None:
        ew = pool.ewma_dt
        if ew == ew and (ahead + 1) * ew * spread + pool.prefill(pool.pre[i]) > slo:
            return R_SLO
    return R_NONE


def class_spill_rules(
    plan: SimPlan, class_names: Sequence[str]
) -> tuple[list[bool], list[float | None]]:
    """Per class (in ``class_names`` order): may it go to the API, and its TTFT budget.

    A class may go to the API when the plan has one and the API serves it (its ``classes``,
    all when unset). Its budget, the ``slo`` of :func:`spill_decision`, is its TTFT SLO x
    ``spill_margin`` when it may go to the API, ``spill_on_slo`` is set and the SLO bounds
    TTFT; else ``None``.
    """
    api = plan.api
    api_ok: list[bool] = []
    budget: list[float | None] = []
    for c in class_names:
        ok = api is not None and (api.classes is None or c in api.classes)
        api_ok.append(ok)
        slo = plan.slos.get(c)
        use = ok and plan.spill_on_slo and slo is not None and math.isfinite(slo.ttft_s)
        budget.append(slo.ttft_s * plan.spill_margin if use else None)
    return api_ok, budget


def build_routers(eng: Any) -> list[Callable[[int, float], None]]:
    """One ``router(i, t)`` per class of ``eng`` (a :class:`planner.sim.engine.Engine`).

    The general router offers the request to the pools serving its class in plan order
    (:meth:`Pool.offer`, which applies :func:`spill_decision`); refused by every one, it
    goes to the API when the class may (:func:`class_spill_rules`), else it is dropped.
    A class served by exactly one pool and no API gets :func:`_single_pool_router`.
    Sets ``track_ewma`` on the pools whose predicted wait a class's budget reads.
    """
    plan = eng.plan
    api = plan.api
    names = eng.req.class_names
    class_pools = _class_pools(eng)
    api_ok, budget = class_spill_rules(plan, names)
    for c, pools in enumerate(class_pools):
        if budget[c] is not None:
            for p in pools:
                p.track_ewma = True
    cls = eng.cls
    out = eng.out
    drop, spill, rpool = eng.drop, eng.spill, eng.rpool
    start, ftok, fin = eng.start, eng.ftok, eng.fin
    jitter = eng.api_jitter

    def to_api(i: int, t: float, reason: int) -> None:
        f = jitter[i] if jitter is not None else 1.0
        rpool[i] = -2
        spill[i] = reason
        start[i] = t
        ft = t + api.ttft_s * f
        ftok[i] = ft
        fin[i] = ft + out[i] / api.output_tokens_per_s * f

    def route(i: int, t: float) -> None:
        c = cls[i]
        pools = class_pools[c]
        reason = R_NO_ROUTE if not pools else R_NONE
        slo = budget[c]
        for pool in pools:
            r = pool.offer(i, t, slo)
            if r == 0:
                return
            reason = r
        if api_ok[c]:
            to_api(i, t, R_API_CLASS if reason == R_NO_ROUTE else reason)
            return
        drop[i] = reason

    routers: list = []
    for c, pools in enumerate(class_pools):
        if len(pools) == 1 and not api_ok[c]:
            routers.append(_single_pool_router(eng, pools[0]))
        else:
            routers.append(route)
    return routers


def _class_pools(eng: Any) -> list[list[Pool]]:
    """The pools serving each class of ``eng``'s requests, in plan order."""
    return [
        [p for p in eng.pools if p.spec.classes is None or c in p.spec.classes]
        for c in eng.req.class_names
    ]


def arrival_loop(eng: Any, routers: Sequence[Callable[[int, float], None]]) -> Callable[[int], int]:
    """``route_until(i)``: route requests ``i, i + 1, ...`` of ``eng`` in arrival order with
    ``routers`` (one per class, :func:`build_routers`) while they arrive before
    ``eng.barrier`` (re-read after each: an admission can bring the next boundary forward)
    and requests remain; returns the index of the first request not routed.

    One call per batch of arrivals instead of one per request. When every request is of
    one class served by one shared-queue pool and no API, the common path of that class's
    router (:func:`_single_pool_router`) is inlined: same decisions, one call fewer per
    request; every request it routes and does not drop is then that pool's, so it leaves
    their ``rpool`` record to :meth:`planner.sim.engine.Engine.run` (``eng.rpool_fill``:
    written for all of them at once when the run ends).
    """
    arr = eng.arr  # ends with an inf sentinel (Engine)
    cls = eng.cls
    if len(routers) == 1:
        route = routers[0]
        pools = _class_pools(eng)[0]
        api_ok, _ = class_spill_rules(eng.plan, eng.req.class_names)
        if len(pools) == 1 and not api_ok[0] and pools[0].shared:
            pool = pools[0]
            need = eng.need
            eng.rpool_fill = pool.index  # rpool of every routed, not dropped request
            cap = pool.cap
            mb = pool.mb
            reps = pool.reps
            queue = pool.queue
            nload = pool.nload  # updated in place (see Pool.rebuild)

            def route_until_shared(i: int) -> int:
                while True:
                    t = arr[i]  # (arr[n] is inf: never before the barrier)
                    if t >= eng.barrier:
                        break
                    nd = need[i]
                    if nd <= cap and not queue and nload:
                        # route_shared of _single_pool_router, inlined
                        r = reps[pool.argminf(nload)]
                        if r.b + len(r.q) < mb and r.res + r.qres + nd <= cap:
                            r.enqueue(i, t)  # its rpool: eng.rpool_fill
                            i += 1
                            continue
                    route(i, t)
                    i += 1
                return i

            return route_until_shared

        def route_until_one(i: int) -> int:
            while True:
                t = arr[i]
                if t >= eng.barrier:
                    break
                route(i, t)
                i += 1
            return i

        return route_until_one

    def route_until(i: int) -> int:
        while True:
            t = arr[i]
            if t >= eng.barrier:
                break
            routers[cls[i]](i, t)
            i += 1
        return i

    return route_until


def _single_pool_router(eng: Any, pool: Pool) -> Callable[[int, float], None]:
    """Router for a class served by one pool with no API: the common path inlined.

    The inlined paths are cases in which :func:`spill_decision` could only answer 0 (the
    request fits the KV capacity, there is a replica, and with no API there is no TTFT
    budget; per-replica queues: no ``max_queue``); everything else goes through
    :meth:`Pool.offer`, hence :func:`spill_decision`.
    """
    offer = pool.offer
    need = eng.need
    drop = eng.drop
    rpool = eng.rpool
    cap = pool.cap
    mb = pool.mb
    idx = pool.index
    reps = pool.reps
    queue = pool.queue
    nload = pool.nload  # updated in place (see Pool.rebuild)

    def route_general(i: int, t: float) -> None:
        r = offer(i, t, None)
        if r:
            drop[i] = r

    if pool.shared:

        def route_shared(i: int, t: float) -> None:
            nd = need[i]
            if nd <= cap and not queue and nload:
                r = reps[pool.argminf(nload)]
                if r.b + len(r.q) < mb and r.res + r.qres + nd <= cap:
                    rpool[i] = idx
                    r.enqueue(i, t)
                    return
            route_general(i, t)

        return route_shared
    if pool.policy in ("jsq", "least_kv") and pool.max_queue is None:
        jsq = pool.policy == "jsq"

        def route_least(i: int, t: float) -> None:
            if need[i] <= cap:
                loads = pool.nload if jsq else pool.kvload
                if loads:
                    rpool[i] = idx
                    reps[loads.index(min(loads))].enqueue(i, t)
                    return
            route_general(i, t)

        return route_least
    return route_general
