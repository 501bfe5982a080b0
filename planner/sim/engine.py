"""SimPy engine: arrivals, routing, replicas with continuous batching, spillover, autoscaling.

Iteration model of a replica
----------------------------
vLLM-style continuous batching, prefill-prioritised. At each *iteration boundary* a replica
(1) completes the requests that produced their last token, then (2) admits queued requests
first-come-first-served while its batch cap and KV budget allow (a request reserves
``input + output`` tokens of KV cache, so memory never overflows and nothing is preempted; a
request that does not fit waits and blocks the queue behind it), (3) runs one prefill
iteration over the admitted prompts, ``prefill_time_s(sum of uncached input tokens)``, which
gives each of them its first token (``max_prefill_tokens`` caps the prompt tokens of one
prefill iteration), then (4) runs decode iterations of the whole batch, each producing one
token per request in ``decode_step_time_s(batch, sum over the batch of input + generated
tokens)``.

Event structure
---------------
SimPy's environment is the clock and the event calendar. A replica's *completion*
boundaries are timer-driven; between boundaries its batch is fixed, so the ``k`` decode
iterations up to the next completion are jumped over in closed form
(:class:`~planner.sim.stepmodel.DecodeKernel`) instead of one event per iteration or token.
Autoscalers are SimPy processes.

Arrivals and admissions cost no event. A request's route depends only on replica states
at its arrival time, and those change only at boundaries, so after every SimPy event the
engine's ``_pump`` routes, in time order, every arrival earlier than the next pending
boundary (arrivals are batched), and runs inline the admission boundaries they cause (the
first iteration end after an admissible arrival, found in closed form) while they come
before any other event. The timeout for a completion boundary is created only when it is
the earliest pending boundary, so a boundary that an admission moves first costs nothing.
In ``closed_form`` mode the pump also runs inline a completion boundary that comes strictly
before the first event in SimPy's calendar (an autoscaler tick, the horizon): nothing can
happen before it, so running it at once gives the order its timeout would. SimPy events are
then spent only on the autoscalers, the horizon and the boundaries tied with or after them
(with neither, one pump call replays the whole run).

``reference`` mode keeps the same routing but its replicas post one SimPy timeout per
iteration and track every request's generated tokens explicitly; the tests check that both
modes give the same per-request times.

Records are written into flat per-request typed arrays indexed by request id and turned
into DataFrames once, in :mod:`planner.sim.results`.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Callable
from functools import cache
from heapq import heappop, heappush

import numpy as np
import simpy
from simpy.events import Timeout

from planner.requests import RequestTable
from planner.sim.plan import SimPlan
from planner.sim.stepmodel import DecodeKernel, LinearStepModel

INF = math.inf
NAN = math.nan

# reason codes (names in results.REASONS)
R_NONE, R_QUEUE_FULL, R_SLO, R_KV, R_NO_ROUTE, R_API_CLASS = 0, 1, 2, 3, 4, 5

_EWMA_ALPHA = 0.02
_PROGRESS_EVERY = 16384


@cache
def _min_function(n: int):
    """``min`` of a list of exactly ``n`` numbers (``inf`` for ``n = 0``), unrolled.

    CPython 3.11's builtin ``min`` parses its arguments as keywords, which costs about twice
    a generated tournament of comparisons over a handful of items; the pump and the
    shared-queue router take a minimum over the replicas once or twice per request. Same
    value as ``min`` (ties keep equal values). Builtin ``min`` beyond 16 items.
    """
    if n == 0:
        return lambda w: INF
    if n > 16:
        return min
    names = [f"x{k}" for k in range(n)]
    lines = ["def f(w):", f"    {', '.join(names)}, = w"]
    while len(names) > 1:
        for a, b in zip(names[::2], names[1::2], strict=False):
            lines.append(f"    if {b} < {a}:\n        {a} = {b}")
        names = names[::2]
    lines.append(f"    return {names[0]}")
    ns: dict = {}
    exec("\n".join(lines), ns)  # a fixed template: no user input
    return ns["f"]


class _Pool:
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
        "dc",
        "dd",
        "base",
        "de",
        "track_ewma",
        "need",
        "pre",
        "inp",
        "out",
        "start",
        "ftok",
        "fin",
        "rrep",
        "minf",
    )

    def __init__(self, eng: _Engine, index: int, spec):
        self.eng = eng
        self.spec = spec
        self.index = index
        self.reps: list = []
        self.all: list = []
        self.queue: deque = deque()
        self.qneed = 0
        self.nload: list = []
        self.kvload: list = []
        self.minf = _min_function(0)  # min over nload / kvload (see rebuild)
        self.mb = spec.batch_cap
        self.cap = spec.kv_capacity
        self.lim = spec.max_prefill_tokens or 0
        self.max_queue = spec.max_queue
        m = spec.step_model
        self.model = m
        self.kernel = DecodeKernel(m, self.mb)
        self.closed = self.kernel.closed
        self.dc = self.dd = self.de = 0.0
        self.base: list = []
        if self.closed:
            # decode step = base[B] + de K: base[B] = dc + dd B (linear) or a table per batch
            self.dc, self.dd = self.kernel._c, self.kernel._d
            self.de = float(m.decode_s_per_kv_token)
            self.base = self.kernel.base_list(min(self.mb, self.cap))  # a batch <= both
        self.track_ewma = False
        # the engine's per-request columns, for short lookups on hot paths
        self.need, self.pre, self.inp, self.out = eng.need, eng.pre, eng.inp, eng.out
        self.start, self.ftok, self.fin, self.rrep = eng.start, eng.ftok, eng.fin, eng.rrep
        self.pfa = self.pfb = NAN  # NaN: not linear (see prefill)
        if type(m).prefill_time_s is LinearStepModel.prefill_time_s:
            a, b = float(m.prefill_base_s), float(m.prefill_s_per_token)
            self.pfa, self.pfb = a, b  # hot paths inline ``prefill``: a + b n (0 for n = 0)

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
        self.shared = spec.routing == "shared"
        self.policy = spec.routing
        self.ewma_dt = NAN
        self.last_admit_s = NAN

    def rebuild(self) -> None:
        """Re-index routable replicas after a scale event."""
        # in place: replicas hold references to these lists
        self.nload[:] = [r.b + len(r.q) for r in self.reps]
        self.kvload[:] = [r.res + r.qres for r in self.reps]
        self.minf = _min_function(len(self.reps))
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

        With ``slo`` set, the request is refused (``R_SLO``) when it would wait and its
        predicted TTFT, ``(queued ahead + 1) x EWMA admission interval (x replicas for
        per-replica queues) + its prefill time``, exceeds ``slo``.
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
            ahead = len(queue)
            if self.max_queue is not None and ahead >= self.max_queue:
                return R_QUEUE_FULL
            if slo is not None:
                ew = self.ewma_dt
                if ew == ew and (ahead + 1) * ew + self.prefill(eng.pre[i]) > slo:
                    return R_SLO
            queue.append(i)
            self.qneed += nd
            eng.rpool[i] = self.index
            return 0
        if not reps:
            return R_QUEUE_FULL
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
            ahead = len(q)
            if self.max_queue is not None and ahead >= self.max_queue:
                return R_QUEUE_FULL
            if slo is not None:
                ew = self.ewma_dt
                if ew == ew and (ahead + 1) * ew * len(reps) + self.prefill(eng.pre[i]) > slo:
                    return R_SLO
        eng.rpool[i] = self.index
        r.enqueue(i, t)
        return 0


class _ReplicaBase:
    """State shared by both replica implementations."""

    __slots__ = (
        "eng",
        "pool",
        "gid",
        "pos",
        "q",
        "qres",
        "b",
        "res",
        "t0",
        "wake_s",
        "timer",
        "timer_s",
        "pend",
        "busy_since",
        "draining",
        "paid_from_s",
        "stop_s",
        "ready_s",
        "fire_cb",
    )

    def __init__(self, eng: _Engine, pool: _Pool, gid: int, t: float = 0.0):
        self.fire_cb = self._fire
        self.eng = eng
        self.pool = pool
        self.gid = gid
        self.pos = -1
        self.q: deque = deque()
        self.qres = 0
        self.b = 0
        self.res = 0
        self.t0 = t
        self.wake_s = INF  # true time of the next boundary
        self.timer = None  # pending SimPy timeout (may be earlier than wake_s)
        self.timer_s = INF
        self.pend = False  # next boundary is an admission run inline by the pump
        self.busy_since = NAN
        self.draining = False
        self.paid_from_s = t
        self.stop_s = NAN
        self.ready_s = t

    def _arm(self, tw: float) -> None:
        """Make ``tw`` the next timer-driven boundary.

        The SimPy timeout itself is created lazily by the pump, only when this is the
        earliest pending boundary, so a boundary that an admission supersedes first costs
        no event.
        """
        self.wake_s = tw
        eng = self.eng
        eng.wakes[self.gid] = tw
        if tw < eng.barrier:
            eng.barrier = tw

    def _fire(self, ev) -> None:
        if ev is not self.timer:
            return  # superseded
        self.timer = None
        if not self.pend and self.timer_s == self.wake_s:
            self._boundary()
        self.eng._pump()

    def _boundary(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _go_idle(self, t: float) -> None:
        eng = self.eng
        self.wake_s = INF
        eng.wakes[self.gid] = INF
        bs = self.busy_since
        if bs == bs:
            eng.busy_gid.append(self.gid)
            eng.busy_from.append(bs)
            eng.busy_to.append(t)
            self.busy_since = NAN
        if self.draining and not self.q:
            self.stop_s = t

    def _take(self, b: int, res: int) -> tuple[list, int, bool]:
        """Pop the requests admitted at this boundary (FCFS: local queue, then pool queue).

        Returns (admitted ids, prompt tokens to prefill, whether the prefill-token limit
        stopped admission while the head would otherwise fit).
        """
        pool = self.pool
        eng = self.eng
        need = eng.need
        pre = eng.pre
        q = self.q
        pq = pool.queue if (pool.shared and not self.draining) else None
        mb = pool.mb
        cap = pool.cap
        lim = pool.lim
        group: list = []
        tokens = 0
        limited = False
        while True:
            if q:
                i = q[0]
                local = True
            elif pq:
                i = pq[0]
                local = False
            else:
                break
            nd = need[i]
            if b >= mb or res + nd > cap:
                break
            pt = pre[i]
            if lim and group and tokens + pt > lim:
                limited = True
                break
            if local:
                q.popleft()
                self.qres -= nd
            else:
                pq.popleft()
                pool.qneed -= nd
            b += 1
            res += nd
            tokens += pt
            group.append(i)
        return group, tokens, limited

    def _loads(self) -> None:
        pos = self.pos
        if pos >= 0:
            pool = self.pool
            pool.nload[pos] = self.b + len(self.q)
            pool.kvload[pos] = self.res + self.qres


class _FastReplica(_ReplicaBase):
    """Replica whose decode iterations between boundaries are advanced in closed form.

    Bookkeeping by absolute decode-step count ``step``: a request admitted at step ``S``
    with ``o`` output tokens finishes at step ``S + o - 1`` (the prefill gives its first
    token), so the distinct finish steps of the running requests sit in a heap, and ``due``
    maps each to the requests finishing then (small ints and a dict: cheaper than big keys
    packing the step with the request id, or tuples). Its context at step
    ``s`` is ``input + 1 + (s - S)`` tokens, so the batch's context is ``kvc + b s`` with
    ``kvc = sum(input + 1 - S)``. ``t0`` is the time at which decode step ``step`` starts
    (after any prefill); the next boundary is ``wake_k`` steps later.

    ``enqueue`` and ``_boundary`` are closures over the replica's constants (built by
    :func:`_fast_methods`): they run once or twice per request.
    """

    __slots__ = ("heap", "due", "kvc", "step", "wake_k", "enqueue", "_boundary")

    def __init__(self, eng: _Engine, pool: _Pool, gid: int, t: float = 0.0):
        super().__init__(eng, pool, gid, t)
        self.heap: list = []
        self.due: dict = {}
        self.kvc = 0
        self.step = 0
        self.wake_k = 0
        self.enqueue, self._boundary = _fast_methods(self)
        boundary = self._boundary
        pump = eng._pump

        def fire(ev) -> None:
            # Replica._fire, with the boundary and the pump bound
            if ev is not self.timer:
                return
            self.timer = None
            if not self.pend and self.timer_s == self.wake_s:
                boundary()
            pump()

        self.fire_cb = fire


def _fast_methods(self: _FastReplica):
    """``enqueue(i, t)`` and ``_boundary()`` of a closed-form replica."""
    eng = self.eng
    pool = self.pool
    gid = self.gid
    q = self.q
    heap = self.heap
    due = self.due
    due_get = due.get
    due_pop = due.pop
    pq = pool.queue
    need, pre, inp, out = eng.need, eng.pre, eng.inp, eng.out
    start, ftok, fin, rrep = eng.start, eng.ftok, eng.fin, eng.rrep
    wakes = eng.wakes
    arr = eng.arr
    n_req = eng.n
    pend_heap = eng.pend
    nload = pool.nload
    kvload = pool.kvload
    mb = pool.mb
    cap = pool.cap
    lim = pool.lim
    shared = pool.shared
    closed = pool.closed
    base, de = pool.base, pool.de
    prefill = pool.prefill
    pfa, pfb = pool.pfa, pool.pfb
    linpf = pfa == pfa  # linear prefill: inlined below (same arithmetic as ``prefill``)
    kernel = pool.kernel
    sqrt = math.sqrt
    ceil = math.ceil

    def enqueue(i: int, t: float) -> None:
        nd = need[i]
        b = self.b
        if not q and b < mb and self.res + nd <= cap:
            # it can start at the next iteration boundary: find it (``tb``, ``k`` steps on)
            t0 = self.t0
            admit = False
            if b == 0 and t >= t0:
                # idle: starts now
                tb = t
                k = 0
                admit = True
            else:
                if b == 0 or t <= t0:
                    # at the end of the prefill in progress
                    tb = t0
                    k = 0
                else:
                    # first decode-step end at or after t: DecodeKernel.cover, inlined for
                    # the closed form (same arithmetic, so the same floats)
                    step = self.step
                    kv0 = self.kvc + b * step
                    kmax = heap[0] - step
                    dt = t - t0
                    if closed:
                        alpha = base[b] + de * kv0
                        if dt <= alpha or kmax == 1:
                            k = 1
                            tb = t0 + alpha
                        else:
                            beta = de * b
                            if beta > 0.0:
                                lin = alpha - 0.5 * beta
                                k = ceil(2.0 * dt / (lin + sqrt(lin * lin + 2.0 * beta * dt)))
                            else:
                                k = ceil(dt / alpha)
                            if k < 1:
                                k = 1
                            if k >= kmax:
                                k = kmax
                                sp = k * alpha + beta * (k * (k - 1) // 2)
                            else:
                                sp = k * alpha + beta * (k * (k - 1) // 2)
                                while sp < dt and k < kmax:
                                    k += 1
                                    sp = k * alpha + beta * (k * (k - 1) // 2)
                                while k > 1:
                                    prev = (k - 1) * alpha + beta * ((k - 1) * (k - 2) // 2)
                                    if prev < dt:
                                        break
                                    k -= 1
                                    sp = prev
                            tb = t0 + sp
                    else:
                        k, sp = kernel.cover(b, kv0, dt, kmax)
                        tb = t0 + sp
                if tb < self.wake_s:
                    j = i + 1
                    if tb < eng.barrier and (j == n_req or tb < arr[j]):
                        # nothing else happens before this boundary: run it now (below)
                        admit = True
                    else:
                        # the pump runs the boundary in time order (no SimPy event)
                        self.wake_k = k
                        self.wake_s = tb
                        self.pend = True
                        wakes[gid] = tb
                        if tb < eng.barrier:
                            eng.barrier = tb
                        heappush(pend_heap, (tb, gid))
            if admit:
                # The boundary ``k`` steps on, at ``tb``, admitting only request ``i`` (the
                # queue is empty and nothing else happens before ``tb``): ``boundary()``
                # specialised to a one-request group with no completions, without the queue
                # round trip.
                step = self.step + k
                self.step = step
                if linpf:
                    n = pre[i]
                    t0 = tb + (pfa + pfb * n if n else 0.0)
                else:
                    t0 = tb + prefill(pre[i])
                start[i] = tb
                ftok[i] = t0
                rrep[i] = gid
                fs = step + out[i] - 1
                ids = due_get(fs)
                if ids is None:
                    due[fs] = [i]
                    heappush(heap, fs)
                else:
                    ids.append(i)
                kvc = self.kvc + inp[i] + 1 - step
                self.kvc = kvc
                b += 1
                self.b = b
                self.res += nd
                if pool.track_ewma:
                    pool.note_admit(tb, 1)
                if self.busy_since != self.busy_since:
                    self.busy_since = tb
                self.t0 = t0
                pos = self.pos
                if pos >= 0:
                    nload[pos] += 1
                    kvload[pos] += nd
                kc = heap[0] - step
                self.wake_k = kc
                if kc:
                    if closed:
                        tw = t0 + (
                            kc * (base[b] + de * (kvc + b * step)) + de * b * (kc * (kc - 1) // 2)
                        )
                    else:
                        tw = t0 + kernel.span(b, kvc + b * step, kc)
                else:
                    tw = t0
                self.wake_s = tw
                wakes[gid] = tw
                if tw < eng.barrier:
                    eng.barrier = tw
                return
        q.append(i)
        self.qres += nd
        pos = self.pos
        if pos >= 0:
            nload[pos] += 1
            kvload[pos] += nd

    def boundary() -> None:
        now = self.wake_s
        step = self.step + self.wake_k
        self.step = step
        b = self.b
        res = self.res
        kvc = self.kvc
        if heap and heap[0] <= step:
            # completions (a boundary never passes the earliest finish step)
            for i in due_pop(heappop(heap)):
                fin[i] = now
                nd = need[i]
                b -= 1
                res -= nd
                kvc -= nd - step
        t0 = now
        limited = False
        if q or (shared and pq and not self.draining):
            if not lim:
                # no prefill limit: take while the head fits, local queue then pool queue
                # (Replica._take, inlined)
                group = []
                tokens = 0
                if q:
                    qres = self.qres
                    while q:
                        i = q[0]
                        nd = need[i]
                        if b >= mb or res + nd > cap:
                            break
                        q.popleft()
                        qres -= nd
                        b += 1
                        res += nd
                        tokens += pre[i]
                        group.append(i)
                    self.qres = qres
                if not q and shared and pq and not self.draining:
                    taken = 0
                    while pq:
                        i = pq[0]
                        nd = need[i]
                        if b >= mb or res + nd > cap:
                            break
                        pq.popleft()
                        taken += nd
                        b += 1
                        res += nd
                        tokens += pre[i]
                        group.append(i)
                    pool.qneed -= taken
            else:
                group, tokens, limited = self._take(b, res)
                for i in group:
                    res += need[i]
                b += len(group)
            if group:
                if linpf:
                    t0 = now + (pfa + pfb * tokens if tokens else 0.0)
                else:
                    t0 = now + prefill(tokens)
                for i in group:
                    start[i] = now
                    ftok[i] = t0
                    rrep[i] = gid
                    fs = step + out[i] - 1
                    ids = due_get(fs)
                    if ids is None:
                        due[fs] = [i]
                        heappush(heap, fs)
                    else:
                        ids.append(i)
                    kvc += inp[i] + 1 - step
                if pool.track_ewma:
                    pool.note_admit(now, len(group))
                if self.busy_since != self.busy_since:
                    self.busy_since = now
        self.b = b
        self.res = res
        self.kvc = kvc
        self.t0 = t0
        pos = self.pos
        if pos >= 0:
            nload[pos] = b + len(q)
            kvload[pos] = res + self.qres
        if limited:
            self.wake_k = 0
            tw = t0
        elif heap:
            kc = heap[0] - step
            self.wake_k = kc
            if kc:
                if closed:
                    tw = t0 + (
                        kc * (base[b] + de * (kvc + b * step)) + de * b * (kc * (kc - 1) // 2)
                    )
                else:
                    tw = t0 + kernel.span(b, kvc + b * step, kc)
            else:
                tw = t0
        else:
            self._go_idle(t0)
            return
        # Replica._arm(tw), inlined
        self.wake_s = tw
        wakes[gid] = tw
        if tw < eng.barrier:
            eng.barrier = tw

    return enqueue, boundary


class _RefReplica(_ReplicaBase):
    """Per-iteration reference replica: one SimPy event per prefill or decode iteration."""

    __slots__ = ("running", "gen", "phase", "group")

    def __init__(self, eng: _Engine, pool: _Pool, gid: int, t: float = 0.0):
        super().__init__(eng, pool, gid, t)
        self.running: list = []
        self.gen: dict = {}
        self.phase = 0  # 0 idle, 1 prefill, 2 decode
        self.group: list = []

    def enqueue(self, i: int, t: float) -> None:
        self.q.append(i)
        self.qres += self.eng.need[i]
        self._loads()
        if self.phase == 0:
            # idle: the next iteration starts now (t0 <= t: it went idle in the past)
            self.wake_s = t if t > self.t0 else self.t0
            self._boundary()

    def _boundary(self) -> None:
        eng = self.eng
        pool = self.pool
        now = self.wake_s
        gen = self.gen
        out = eng.out
        if self.phase == 1:
            for i in self.group:
                gen[i] = 1
                eng.ftok[i] = now
        elif self.phase == 2:
            for i in self.running:
                gen[i] += 1
        done = [i for i in self.running if gen[i] >= out[i]]
        if done:
            self.running = [i for i in self.running if gen[i] < out[i]]
            for i in done:
                eng.fin[i] = now
                self.res -= eng.need[i]
                del gen[i]
            self.b = len(self.running)
        self.t0 = now
        group, tokens, _ = self._take(self.b, self.res)
        if group:
            for i in group:
                eng.start[i] = now
                eng.rrep[i] = self.gid
                gen[i] = 0
                self.res += eng.need[i]
            self.running.extend(group)
            self.b = len(self.running)
            pool.note_admit(now, len(group))
            if self.busy_since != self.busy_since:
                self.busy_since = now
            self.group = group
            self.phase = 1
            self._loads()
            self._arm(now + pool.prefill(tokens))
        elif self.running:
            inp = eng.inp
            kv = sum(inp[i] + gen[i] for i in self.running)
            self.phase = 2
            self._loads()
            self._arm(now + float(pool.model.decode_step_time_s(self.b, kv)))
        else:
            self.phase = 0
            self._loads()
            self._go_idle(now)


class _Progress:
    """Routed-request counts for a ``progress(done, total)`` callback (the engine prints
    nothing; the CLI draws the bar)."""

    __slots__ = ("done", "fn", "total")

    def __init__(self, fn: Callable[[int, int], None], total: int):
        self.fn, self.total, self.done = fn, total, 0

    def update(self, k: int) -> None:
        self.done += k
        self.fn(self.done, self.total)


class _Engine:
    """One simulation run. Use :func:`planner.sim.simulate`."""

    def __init__(
        self,
        plan: SimPlan,
        requests: RequestTable,
        rng: np.random.Generator,
        *,
        until_s: float | None,
        progress: Callable[[int, int], None] | None,
    ):
        self.plan = plan
        self.req = requests
        self.env = simpy.Environment()
        self.until_s = until_s
        self.progress = progress
        n = len(requests)
        self.n = n
        self.arr = requests.arrival_s.tolist()
        self.inp = requests.input_tokens.tolist()
        self.out = requests.output_tokens.tolist()
        self.need = (requests.input_tokens + requests.output_tokens).tolist()
        self.pre = (requests.input_tokens - requests.cached_input_tokens).tolist()
        self.cls = requests.class_idx.tolist()
        # records: typed buffers, written through memoryviews (a memoryview item store is
        # several times cheaper than an array's, which parses its argument; zero-copy to
        # numpy at the end)
        self.start = memoryview(array("d", [NAN]) * n)
        self.ftok = memoryview(array("d", [NAN]) * n)
        self.fin = memoryview(array("d", [NAN]) * n)
        self.rpool = memoryview(array("q", [-1]) * n)  # pool index, -2 = API, -1 = not routed
        self.rrep = memoryview(array("q", [-1]) * n)
        self.drop = memoryview(array("b", [R_NONE]) * n)
        self.spill = memoryview(array("b", [R_NONE]) * n)
        self.busy_gid: list = []
        self.busy_from: list = []
        self.busy_to: list = []
        self.wakes: list = []  # next boundary of each entity (replica or control slot)
        self.minw = _min_function(0)  # min(wakes), for its current length
        self.replicas: list = []
        self.pend: list = []  # heap of (time, gid): admission boundaries run by the pump
        self.barrier = INF
        self.i = 0  # next request to route
        self.scale_log: list = []
        self.bar = None
        self.reported = 0
        # randomness: routing draws and API latency jitter, from independent streams
        r_route, r_api = rng.spawn(2)
        needs_u = any(p.routing == "random" for p in plan.pools)
        self.route_u = r_route.random(n).tolist() if needs_u else None
        api = plan.api
        if api is not None and api.latency_cv > 0 and n:
            s2 = math.log1p(api.latency_cv**2)
            self.api_jitter = r_api.lognormal(-0.5 * s2, math.sqrt(s2), n).tolist()
        else:
            self.api_jitter = None
        self.routers: list = []  # per class, filled below
        self._pump = self._make_pump()
        self.replica_cls = _FastReplica if plan.mode == "closed_form" else _RefReplica
        self.pools = [_Pool(self, k, spec) for k, spec in enumerate(plan.pools)]
        for pool in self.pools:
            for _ in range(pool.spec.replicas):
                pool.reps.append(self._new_replica(pool, 0.0))
            pool.rebuild()
        if until_s is not None:
            self.wakes[self._control_slot()] = float(until_s)  # horizon: a barrier, no event
        # class -> pools, spill rules
        self.class_pools = []
        self.api_ok = []
        self.spill_slo = []
        for c in requests.class_names:
            pools = [p for p in self.pools if p.spec.classes is None or c in p.spec.classes]
            self.class_pools.append(pools)
            ok = api is not None and (api.classes is None or c in api.classes)
            self.api_ok.append(ok)
            slo = plan.slos.get(c)
            use = ok and plan.spill_on_slo and slo is not None and math.isfinite(slo.ttft_s)
            self.spill_slo.append(slo.ttft_s * plan.spill_margin if use else None)
            if use:
                for p in pools:
                    p.track_ewma = True
        # per-class router: the pool's offer directly when that is all there is to decide
        for c, pools in enumerate(self.class_pools):
            if len(pools) == 1 and not self.api_ok[c]:
                self.routers.append(self._single_pool_router(pools[0]))
            else:
                self.routers.append(self._route)

    # ------------------------------------------------------------------ entities
    def _new_replica(self, pool: _Pool, t: float):
        gid = len(self.replicas)
        r = self.replica_cls(self, pool, gid, t)
        self.replicas.append(r)
        self.wakes.append(INF)
        self.minw = _min_function(len(self.wakes))
        pool.all.append(r)
        return r

    def _control_slot(self) -> int:
        self.replicas.append(None)
        self.wakes.append(INF)
        self.minw = _min_function(len(self.wakes))
        return len(self.wakes) - 1

    # ------------------------------------------------------------------ routing
    def _to_api(self, i: int, t: float, reason: int) -> None:
        api = self.plan.api
        f = self.api_jitter[i] if self.api_jitter is not None else 1.0
        self.rpool[i] = -2
        self.spill[i] = reason
        self.start[i] = t
        ft = t + api.ttft_s * f
        self.ftok[i] = ft
        self.fin[i] = ft + self.out[i] / api.output_tokens_per_s * f

    def _route(self, i: int, t: float) -> None:
        c = self.cls[i]
        pools = self.class_pools[c]
        reason = R_NO_ROUTE if not pools else R_NONE
        slo = self.spill_slo[c]
        nd = self.need[i]
        for pool in pools:
            if nd > pool.cap:
                reason = R_KV
                continue
            r = pool.offer(i, t, slo)
            if r == 0:
                return
            reason = r
        if self.api_ok[c]:
            self._to_api(i, t, R_API_CLASS if reason == R_NO_ROUTE else reason)
            return
        self.drop[i] = reason

    def _single_pool_router(self, pool: _Pool):
        """Router for a class served by one pool with no API: the common path inlined."""
        offer = pool.offer
        need = self.need
        drop = self.drop
        rpool = self.rpool
        cap = pool.cap
        mb = pool.mb
        idx = pool.index
        reps = pool.reps
        queue = pool.queue
        nload = pool.nload  # updated in place (see _Pool.rebuild)

        def route_general(i: int, t: float) -> None:
            if need[i] > cap:
                drop[i] = R_KV
                return
            r = offer(i, t, None)
            if r:
                drop[i] = r

        if pool.shared:

            def route_shared(i: int, t: float) -> None:
                nd = need[i]
                if nd <= cap and not queue and nload:
                    r = reps[nload.index(pool.minf(nload))]
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

    def _make_pump(self):
        """Build ``_pump``: route arrivals and run boundaries, in time order.

        Invariant on return: every arrival and every admission boundary earlier than the
        earliest pending boundary has been processed, and that boundary, if a replica's, has
        a SimPy timeout. In ``closed_form`` mode a replica's timer-driven boundary that comes
        strictly before every event in SimPy's calendar (autoscaler ticks, the horizon) is
        run inline too, with no timeout: nothing else can happen before it, so the order of
        everything is the one the timeout would give. A closure over the engine's columns:
        it runs after every event.
        """
        arr = self.arr
        n = self.n
        wakes = self.wakes
        pend = self.pend
        replicas = self.replicas
        routers = self.routers
        cls = self.cls
        env = self.env
        peek = env.peek
        inline = self.plan.mode == "closed_form"
        # the horizon is scheduled in SimPy only once env.run starts: bound inlining by it
        horizon = INF if self.until_s is None else float(self.until_s)

        def pump() -> None:
            i = self.i
            # the first event in SimPy's calendar: only the pump schedules events while it
            # runs, and it returns right after scheduling one, so this holds throughout
            cal = peek() if inline else -INF
            if cal > horizon:
                cal = horizon
            mn = self.minw  # wakes grows only in autoscalers, never while this runs
            while True:
                barrier = mn(wakes)
                self.barrier = barrier
                if i < n:
                    t = arr[i]
                    if t < barrier:
                        routers[cls[i]](i, t)
                        i += 1
                        while i < n:
                            t = arr[i]
                            if t >= self.barrier:
                                break
                            routers[cls[i]](i, t)
                            i += 1
                        bar = self.bar
                        if bar is not None and i - self.reported >= _PROGRESS_EVERY:
                            bar.update(i - self.reported)
                            self.reported = i
                        continue
                if pend and pend[0][0] <= barrier:
                    tb, g = heappop(pend)
                    r = replicas[g]
                    if r.pend and r.wake_s == tb:
                        r.pend = False
                        r._boundary()
                    continue
                if barrier < INF:
                    # the earliest boundary is timer-driven
                    r = replicas[wakes.index(barrier)]
                    if r is not None:
                        if barrier < cal and not r.pend and r.wake_s == barrier:
                            # no SimPy event before it: run it now (what its timeout's
                            # callback would do), superseding any later timeout
                            r.timer = None
                            r._boundary()
                            continue
                        if r.timer is None or r.timer_s > barrier:
                            d = barrier - env.now
                            ev = Timeout(env, d if d > 0.0 else 0.0)
                            ev.callbacks.append(r.fire_cb)
                            r.timer = ev
                            r.timer_s = barrier
                break
            self.i = i

        return pump

    # ------------------------------------------------------------------ autoscaling
    def _autoscaler(self, pool: _Pool, cid: int):
        a = pool.spec.autoscale
        env = self.env
        pending: deque = deque()
        tick = a.interval_s
        nxt = tick
        self.wakes[cid] = nxt
        while True:
            yield env.timeout(max(nxt - env.now, 0.0))
            now = nxt
            changed = False
            while pending and pending[0].ready_s <= now:
                r = pending.popleft()
                r.t0 = now
                pool.reps.append(r)
                changed = True
                self.scale_log.append((now, pool.index, r.gid, "ready"))
            if changed:
                pool.rebuild()
                if pool.shared:
                    for r in pool.reps:
                        if pool.queue and r.wake_s == INF:
                            r.wake_s = now
                            if isinstance(r, _FastReplica):
                                r.wake_k = 0
                            r._boundary()
            if tick <= now:
                tick += a.interval_s
                self._scale_decision(pool, now, pending, a)
            if self.i >= self.n:
                self.wakes[cid] = INF
                self._pump()
                return
            nxt = min(tick, pending[0].ready_s) if pending else tick
            self.wakes[cid] = nxt
            self._pump()

    def _scale_decision(self, pool: _Pool, now: float, pending: deque, a) -> None:
        reps = pool.reps
        running = sum(r.b + len(r.q) for r in reps) + len(pool.queue)
        kv = sum(r.res + r.qres for r in reps) + pool.qneed
        demand = max(running / pool.mb, kv / pool.cap)
        want = min(max(math.ceil(demand / a.target_share), a.min_replicas), a.max_replicas)
        have = len(reps) + len(pending)
        recent = max((e[0] for e in self.scale_log if e[1] == pool.index), default=-INF)
        if want > have:
            for _ in range(want - have):
                r = self._new_replica(pool, now)
                r.ready_s = now + a.startup_s
                pending.append(r)
                self.scale_log.append((now, pool.index, r.gid, "start"))
        elif want < len(reps) and not pending and now - recent >= a.cooldown_s:
            victim = min(reps, key=lambda r: (r.b + len(r.q), -r.gid))
            reps.remove(victim)
            pool.rebuild()
            victim.draining = True
            if victim.wake_s == INF and not victim.q:
                victim.stop_s = now
            self.scale_log.append((now, pool.index, victim.gid, "drain"))

    # ------------------------------------------------------------------ run
    def run(self) -> None:
        env = self.env
        for pool in self.pools:
            if pool.spec.autoscale is not None:
                cid = self._control_slot()
                self.wakes[cid] = pool.spec.autoscale.interval_s
                env.process(self._autoscaler(pool, cid))
        if self.progress is not None:
            self.bar = _Progress(self.progress, self.n)
        try:
            self._pump()
            if self.until_s is not None:
                env.run(until=self.until_s)
            else:
                env.run()
        finally:
            if self.bar is not None:
                self.bar.update(self.i - self.reported)
