"""Replicas with continuous batching: the closed-form replica and the per-iteration reference.

Iteration model (both implementations)
--------------------------------------
vLLM-style continuous batching. At each *iteration boundary* a replica (1) completes the
requests that produced their last token, then (2) admits queued requests
first-come-first-served while its batch cap and KV budget allow (a request reserves
``input + output`` tokens of KV cache, so memory never overflows and nothing is preempted; a
request that does not fit waits and blocks the queue behind it), then (3) runs the next
iteration, in one of two ways (:class:`~planner.sim.plan.PoolSpec` ``chunked_prefill``):

* **Prefill-prioritised** (not chunked, the ``PoolSpec`` default): one prefill iteration over
  the prompts admitted at this boundary, ``prefill_time_s(sum of uncached input tokens)``,
  which gives each of them its first token (``max_prefill_tokens`` caps the prompt tokens of
  one prefill iteration) while the running requests stall; then decode iterations of the
  whole batch, each producing one token per request in ``decode_step_time_s(batch, sum over
  the batch of input + generated tokens)``.
* **Chunked prefill** (vLLM V1; scenario-built pools): admitted requests whose prompt is not
  yet fully prefilled wait in a FCFS list. Each iteration carries every *decoding* request
  (``d`` of them, one token each, context ``K = sum of input + generated``) plus up to ``C -
  d`` prompt tokens taken from that list in order (``C`` = ``max_tokens_per_step``; none when
  ``d >= C``): a prompt may be split over several iterations and several prompts may share
  one. Its time is the step model's mixed step ``mixed(d, K, p, pairs)``
  (:func:`~planner.sim.stepmodel.mixed_step_function`; ``decode_step_time_s(d, K)`` when
  ``p = 0``), with ``p`` the prompt tokens and ``pairs`` their causal (query, key) pairs,
  ``P(b) - P(a)`` for a chunk over prompt tokens ``[a, b)``
  (:func:`~planner.sim.stepmodel.prefill_pairs_function`). Cached prefix tokens
  (``cached_input_tokens``) are not prefilled: a prompt's chunks start at its cached length
  (and a fully cached prompt completes in the first iteration that reaches it). A request
  whose last prompt token is in an iteration gets its first token at that iteration's end
  and decodes from the next; with one output token it completes at that boundary.

* :class:`FastReplica` (``closed_form`` mode): between boundaries its batch is fixed, so the
  ``k`` decode iterations up to the next completion are jumped over in closed form
  (:class:`~planner.sim.stepmodel.DecodeKernel`); an admission into an idle or running
  replica finds its boundary in closed form too and, when nothing else can happen first,
  runs it at once. With chunked prefill, each iteration that carries prompt tokens is its
  own boundary (there are about total prompt tokens / ``C`` of them, plus one per
  admission); the closed-form jump is used once no prompt is pending.
* :class:`RefReplica` (``reference`` mode): one SimPy timeout per prefill, decode or mixed
  iteration, every request's generated tokens tracked explicitly. The tests check that both
  give the same per-request times.

A replica takes requests through ``enqueue(i, t)`` (called by the routers of
:mod:`planner.sim.routing`; it never decides to refuse one) and runs ``boundary()`` when the
event loop (:mod:`planner.sim.engine`) reaches its next boundary, ``wake_s``. It writes the
engine's per-request records (``start``, ``ftok``, ``fin``, ``rrep``) and busy intervals.
"""

from __future__ import annotations

import math
from collections import deque
from heapq import heappop, heappush
from math import ceil, sqrt
from typing import Any

from planner.sim.routing import Pool

__all__ = ["FastReplica", "RefReplica", "ReplicaBase"]

INF = math.inf
NAN = math.nan


class ReplicaBase:
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
        "pf",
    )

    def __init__(self, eng: Any, pool: Pool, gid: int, t: float = 0.0):
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
        # chunked prefill: admitted prompts not yet fully prefilled, FCFS, as
        # [request, prompt tokens left, next prompt position]
        self.pf: deque = deque()

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
            self.boundary()
        self.eng.pump()

    def boundary(self) -> None:  # pragma: no cover - abstract
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


class FastReplica(ReplicaBase):
    """Replica whose decode iterations between boundaries are advanced in closed form.

    Bookkeeping by absolute decode-step count ``step``: a request admitted at step ``S``
    with ``o`` output tokens finishes at step ``S + o - 1`` (the prefill gives its first
    token), so the distinct finish steps of the running requests sit in a heap, and ``due``
    maps each to the request finishing then, or to -1 when several do (their ids, in
    admission order, are then in ``multi``): small ints and dicts are cheaper than big keys
    packing the step with the request id, tuples, or a list per request. Its context at step
    ``s`` is ``input + 1 + (s - S)`` tokens: ``kv`` is the batch's context at step ``step``
    (it grows by ``b`` per step; an admitted request adds ``input + 1``, one finishing at
    step ``s`` removes ``input + output``, so it stays a small int). ``t0`` is the time at
    which decode step ``step`` starts
    (after any prefill); the next boundary is ``wake_k`` steps later. With chunked prefill
    ``step`` counts every iteration (mixed ones too) and ``S`` is the step after the
    iteration holding the request's last prompt token, so the same bookkeeping holds; the
    prompts still pending sit in ``pf`` and ``b`` counts them too (admitted requests).

    ``enqueue`` and ``boundary`` are closures over the replica's constants (built by
    :func:`_fast_methods`): they run once or twice per request.
    """

    __slots__ = ("heap", "due", "multi", "kv", "step", "wake_k", "enqueue", "boundary")

    def __init__(self, eng: Any, pool: Pool, gid: int, t: float = 0.0):
        super().__init__(eng, pool, gid, t)
        self.heap: list = []
        self.due: dict = {}
        self.multi: dict = {}
        self.kv = 0
        self.step = 0
        self.wake_k = 0
        self.enqueue, self.boundary = _fast_methods(self)
        boundary = self.boundary
        pump = eng.pump

        def fire(ev) -> None:
            # ReplicaBase._fire, with the boundary and the pump bound
            if ev is not self.timer:
                return
            self.timer = None
            if not self.pend and self.timer_s == self.wake_s:
                boundary()
            pump()

        self.fire_cb = fire


def _fast_methods(self: FastReplica):
    """``enqueue(i, t)`` and ``boundary()`` of a closed-form replica.

    Each call of a closure copies all its free variables into its frame (CPython 3.11), so
    the two hot closures read only what their common paths need from here; rare paths
    (generic step models, several requests finishing at one step, pending admissions,
    least_kv loads) go through ``self``, ``pool`` and ``eng``.
    """
    eng = self.eng
    pool = self.pool
    gid = self.gid
    q = self.q
    heap = self.heap
    due = self.due
    due_get = due.get
    due_pop = due.pop
    multi = self.multi
    multi_pop = multi.pop
    pq = pool.queue
    need, pre, inp, out = eng.need, eng.pre, eng.inp, eng.out
    start, ftok, fin, rrep = eng.start, eng.ftok, eng.fin, eng.rrep
    wakes = eng.wakes
    arr = eng.arr
    nload = pool.nload
    kvload = pool.kvload
    track_kv = pool.policy == "least_kv"  # only least_kv routing reads kvload (see Pool)
    mb = pool.mb
    cap = pool.cap
    lim = pool.lim
    shared = pool.shared
    closed = pool.closed
    base, de = pool.base, pool.de
    deb = [de * b for b in range(len(base))]  # de * b by batch (the same floats)
    # k and k (k - 1) / 2 as floats by step count (Pool.kf, Pool.tri): the closed-form
    # spans multiply floats only (an int times a float converts the int exactly: the same
    # values, without the mixed-type arithmetic)
    kf, tri = pool.kf, pool.tri
    pft = pool.pft  # prefill(n) by prompt length (linear prefill), or None
    pfa, pfb = pool.pfa, pool.pfb
    linpf = pfa == pfa  # linear prefill: inlined below (same arithmetic as ``prefill``)
    kernel = pool.kernel
    chunked = pool.chunked
    budget = pool.budget
    mixed = pool.mixed
    pairs_of = pool.pairs
    pf = self.pf

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
                    kv0 = self.kv
                    kmax = heap[0] - self.step
                    dt = t - t0
                    if closed:
                        alpha = base[b] + de * kv0
                        if dt <= alpha or kmax == 1:
                            k = 1
                            tb = t0 + alpha
                        else:
                            beta = deb[b]
                            if beta > 0.0:
                                lin = alpha - 0.5 * beta
                                k = ceil(2.0 * dt / (lin + sqrt(lin * lin + 2.0 * beta * dt)))
                            else:
                                k = ceil(dt / alpha)
                            if k < 1:
                                k = 1
                            if k >= kmax:
                                k = kmax
                                sp = kf[k] * alpha + beta * tri[k]
                            else:
                                sp = kf[k] * alpha + beta * tri[k]
                                while sp < dt and k < kmax:
                                    k += 1
                                    sp = kf[k] * alpha + beta * tri[k]
                                while k > 1:
                                    prev = kf[k - 1] * alpha + beta * tri[k - 1]
                                    if prev < dt:
                                        break
                                    k -= 1
                                    sp = prev
                            tb = t0 + sp
                    else:
                        k, sp = pool.kernel.cover(b, kv0, dt, kmax)
                        tb = t0 + sp
                if tb < self.wake_s:
                    j = i + 1
                    if tb < eng.barrier and tb < arr[j]:  # (arr[n] is inf)
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
                        heappush(eng.pend, (tb, gid))
            if admit and chunked:
                # the boundary ``k`` steps on, at ``tb``: run it now (it admits ``i``)
                q.append(i)
                self.qres += nd
                self.wake_s = tb
                self.wake_k = k
                self.boundary()  # cboundary
                return
            if admit:
                # The boundary ``k`` steps on, at ``tb``, admitting only request ``i`` (the
                # queue is empty and nothing else happens before ``tb``): ``boundary()``
                # specialised to a one-request group with no completions, without the queue
                # round trip.
                step = self.step + k
                self.step = step
                if pft is not None:
                    t0 = tb + pft[pre[i]]
                else:
                    t0 = tb + pool.prefill(pre[i])
                start[i] = tb
                ftok[i] = t0
                rrep[i] = gid
                fs = step + out[i] - 1
                x = due_get(fs)
                if x is None:
                    due[fs] = i
                    heappush(heap, fs)
                elif x >= 0:
                    due[fs] = -1
                    self.multi[fs] = [x, i]
                else:
                    self.multi[fs].append(i)
                kv = self.kv + b * k + inp[i] + 1
                self.kv = kv
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
                    if track_kv:
                        pool.kvload[pos] += nd
                kc = heap[0] - step
                self.wake_k = kc
                if kc:
                    if closed:
                        tw = t0 + (
                            kf[kc] * (base[b] + de * kv) + deb[b] * tri[kc]
                        )
                    else:
                        tw = t0 + pool.kernel.span(b, kv, kc)
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
            if track_kv:
                pool.kvload[pos] += nd

    def admit(now: float, step: int, b: int, res: int, kv: int) -> tuple:
        """The admissions of a boundary at ``now`` (decode step ``step``) with ``b`` running
        requests, ``res`` KV tokens reserved and context ``kv``: FCFS from the local queue,
        then the pool's. Returns the new ``(b, res, kv, t0, limited)``: ``t0`` the end of
        their prefill (``now`` when none), ``limited`` whether the prefill-token limit
        stopped admission. Kept out of :func:`boundary`, which calls it only when a queue
        holds requests: a closure's free variables are copied into its frame on every call
        (CPython 3.11), and most boundaries only complete requests."""
        t0 = now
        limited = False
        if not lim:
            # no prefill limit: take while the head fits, local queue then pool queue
            # (ReplicaBase._take, inlined)
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
                t0 = now + pool.prefill(tokens)
            for i in group:
                start[i] = now
                ftok[i] = t0
                rrep[i] = gid
                fs = step + out[i] - 1
                x = due_get(fs)
                if x is None:
                    due[fs] = i
                    heappush(heap, fs)
                elif x >= 0:
                    due[fs] = -1
                    self.multi[fs] = [x, i]
                else:
                    self.multi[fs].append(i)
                kv += inp[i] + 1
            if pool.track_ewma:
                pool.note_admit(now, len(group))
            if self.busy_since != self.busy_since:
                self.busy_since = now
        return b, res, kv, t0, limited

    def boundary() -> None:
        now = self.wake_s
        wk = self.wake_k
        step = self.step + wk
        self.step = step
        b = self.b
        res = self.res
        kv = self.kv + b * wk
        if heap and heap[0] <= step:
            # completions (a boundary never passes the earliest finish step); a request
            # finishing at this step holds input + output tokens of context
            fs = heappop(heap)
            i = due_pop(fs)
            if i >= 0:
                fin[i] = now
                nd = need[i]
                b -= 1
                res -= nd
                kv -= nd
            else:
                for i in self.multi.pop(fs):
                    fin[i] = now
                    nd = need[i]
                    b -= 1
                    res -= nd
                    kv -= nd
        if q or (shared and pq and not self.draining):
            b, res, kv, t0, limited = admit(now, step, b, res, kv)
        else:
            t0 = now
            limited = False
        self.b = b
        self.res = res
        self.kv = kv
        self.t0 = t0
        pos = self.pos
        if pos >= 0:
            nload[pos] = b + len(q)
            if track_kv:
                pool.kvload[pos] = res + self.qres
        if limited:
            self.wake_k = 0
            tw = t0
        elif heap:
            kc = heap[0] - step
            self.wake_k = kc
            if kc:
                if closed:
                    tw = t0 + (
                        kf[kc] * (base[b] + de * kv) + deb[b] * tri[kc]
                    )
                else:
                    tw = t0 + pool.kernel.span(b, kv, kc)
            else:
                tw = t0
        else:
            self._go_idle(t0)
            return
        # ReplicaBase._arm(tw), inlined, without lowering ``eng.barrier``: this boundary
        # runs only from the pump, a timeout or an autoscaler, and the pump recomputes the
        # barrier from ``wakes`` before it routes again (only admissions, which run inside
        # a batch of arrivals, must lower it)
        self.wake_s = tw
        wakes[gid] = tw

    def cboundary() -> None:
        """A boundary of a chunked-prefill replica (see the module docstring).

        While prompts are pending (``pf``) it runs one mixed iteration and wakes at its end
        (``wake_k = 0``); once none is, the decode iterations up to the next completion
        are jumped over in closed form, as in :func:`boundary`. ``step`` counts every
        iteration, so a request whose prompt ends in the iteration from step ``s`` decodes
        from ``S = s + 1`` and finishes at step ``S + o - 1`` as in the non-chunked replica.
        """
        now = self.wake_s
        wk = self.wake_k
        step = self.step + wk
        b = self.b
        res = self.res
        kv = self.kv + (b - len(pf)) * wk  # the decoding requests' context at ``step``
        if heap and heap[0] <= step:
            fs = heappop(heap)
            x = due_pop(fs)
            for i in (x,) if x >= 0 else multi_pop(fs):
                fin[i] = now
                nd = need[i]
                b -= 1
                res -= nd
                kv -= nd
        if q or (shared and pq and not self.draining):
            # admission (ReplicaBase._take without a prefill limit, inlined)
            n0 = len(pf)
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
                    start[i] = now
                    rrep[i] = gid
                    n = pre[i]
                    pf.append([i, n, inp[i] - n])
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
                    start[i] = now
                    rrep[i] = gid
                    n = pre[i]
                    pf.append([i, n, inp[i] - n])
                pool.qneed -= taken
            got = len(pf) - n0
            if got:
                if pool.track_ewma:
                    pool.note_admit(now, got)
                if self.busy_since != self.busy_since:
                    self.busy_since = now
        if pf:
            # one mixed iteration: every decode + up to ``budget - d`` prompt tokens, FCFS
            d = b - len(pf)
            room = budget - d
            if room < 0:
                room = 0
            p = 0
            pairs = 0.0
            done = []
            while pf:
                ent = pf[0]
                rem = ent[1]
                if rem > room:
                    if room:
                        a = ent[2]
                        ent[1] = rem - room
                        ent[2] = a + room
                        p += room
                        pairs += pairs_of(a + room) - pairs_of(a)
                    break
                pf.popleft()
                if rem:
                    a = ent[2]
                    room -= rem
                    p += rem
                    pairs += pairs_of(a + rem) - pairs_of(a)
                done.append(ent[0])
            t0 = now + mixed(d, kv, p, pairs)
            step += 1
            kv += d
            for i in done:
                ftok[i] = t0
                fs = step + out[i] - 1
                x = due_get(fs)
                if x is None:
                    due[fs] = i
                    heappush(heap, fs)
                elif x >= 0:
                    due[fs] = -1
                    multi[fs] = [x, i]
                else:
                    multi[fs].append(i)
                kv += inp[i] + 1
            kc = 0 if pf else heap[0] - step
        else:
            t0 = now
            kc = heap[0] - step if heap else -1
        self.step = step
        self.b = b
        self.res = res
        self.kv = kv
        self.t0 = t0
        pos = self.pos
        if pos >= 0:
            nload[pos] = b + len(q)
            if track_kv:
                kvload[pos] = res + self.qres
        if kc < 0:
            self._go_idle(t0)
            return
        self.wake_k = kc
        if kc:
            if closed:
                tw = t0 + (kf[kc] * (base[b] + de * kv) + deb[b] * tri[kc])
            else:
                tw = t0 + kernel.span(b, kv, kc)
        else:
            tw = t0
        self.wake_s = tw
        wakes[gid] = tw
        if tw < eng.barrier:
            eng.barrier = tw

    return enqueue, (cboundary if chunked else boundary)


class RefReplica(ReplicaBase):
    """Per-iteration reference replica: one SimPy event per prefill or decode iteration."""

    __slots__ = ("running", "gen", "phase", "group")

    def __init__(self, eng: Any, pool: Pool, gid: int, t: float = 0.0):
        super().__init__(eng, pool, gid, t)
        self.running: list = []
        self.gen: dict = {}
        self.phase = 0  # 0 idle, 1 prefill, 2 decode, 3 chunked (mixed) iteration
        self.group: list = []

    def enqueue(self, i: int, t: float) -> None:
        self.q.append(i)
        self.qres += self.eng.need[i]
        self._loads()
        if self.phase == 0:
            # idle: the next iteration starts now (t0 <= t: it went idle in the past)
            self.wake_s = t if t > self.t0 else self.t0
            self.boundary()

    def boundary(self) -> None:
        if self.pool.chunked:
            self._chunked_boundary()
            return
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



    def _chunked_boundary(self) -> None:
        """Chunked prefill: every iteration carries the running decodes and up to
        ``budget - decodes`` prompt tokens of the admitted prompts, FCFS."""
        eng = self.eng
        pool = self.pool
        now = self.wake_s
        gen = self.gen
        out = eng.out
        running = self.running
        if self.phase == 3:
            for i in running:
                gen[i] += 1
            for i in self.group:  # prompts whose last token was in the iteration
                gen[i] = 1
                eng.ftok[i] = now
            running.extend(self.group)
            self.group = []
        done = [i for i in running if gen[i] >= out[i]]
        if done:
            running = self.running = [i for i in running if gen[i] < out[i]]
            for i in done:
                eng.fin[i] = now
                self.res -= eng.need[i]
                del gen[i]
        pf = self.pf
        self.b = len(running) + len(pf)
        self.t0 = now
        group, _, _ = self._take(self.b, self.res)
        if group:
            pre, inp = eng.pre, eng.inp
            for i in group:
                eng.start[i] = now
                eng.rrep[i] = self.gid
                gen[i] = 0
                self.res += eng.need[i]
                pf.append([i, pre[i], inp[i] - pre[i]])
            self.b = len(running) + len(pf)
            pool.note_admit(now, len(group))
            if self.busy_since != self.busy_since:
                self.busy_since = now
        if not (running or pf):
            self.phase = 0
            self._loads()
            self._go_idle(now)
            return
        d = len(running)
        inp = eng.inp
        kv = sum(inp[i] + gen[i] for i in running)
        room = max(pool.budget - d, 0)
        pairs_of = pool.pairs
        p = 0
        pairs = 0.0
        finished = []
        while pf:
            i, rem, a = pf[0]
            take = min(rem, room)
            if take:
                p += take
                room -= take
                pairs += pairs_of(a + take) - pairs_of(a)
            if take < rem:
                pf[0] = [i, rem - take, a + take]
                break
            pf.popleft()
            finished.append(i)
        self.group = finished
        self.phase = 3
        self._loads()
        self._arm(now + pool.mixed(d, kv, p, pairs))
