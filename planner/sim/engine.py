"""The event loop: SimPy wiring of arrivals, routers, replica boundaries and autoscalers.

Where things are (one job per module):

* :mod:`planner.sim.routing` -- pools, per-class routers and **the spillover decision**,
  :func:`planner.sim.routing.spill_decision` (the only place a request is refused by a pool
  and so spills to the next pool, the API, or is dropped; its docstring states the rule);
* :mod:`planner.sim.replica` -- the replicas (iteration model, closed-form and per-iteration
  reference implementations);
* this module -- :class:`Engine`: the clock, the order of events and autoscaling.

Event structure
---------------
SimPy's environment is the clock and the event calendar. A replica's *completion*
boundaries are timer-driven; between boundaries its batch is fixed, so the ``k`` decode
iterations up to the next completion are jumped over in closed form
(:class:`~planner.sim.stepmodel.DecodeKernel`) instead of one event per iteration or token.
Autoscalers are SimPy processes.

Arrivals and admissions cost no event. A request's route depends only on replica states
at its arrival time, and those change only at boundaries, so after every SimPy event the
engine's ``pump`` routes, in time order, every arrival earlier than the next pending
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
from heapq import heappop

import numpy as np
import simpy
from simpy.events import Timeout

from planner.requests import RequestTable
from planner.sim.plan import SimPlan
from planner.sim.replica import FastReplica, RefReplica
from planner.sim.routing import R_NONE, Pool, argmin_function, arrival_loop, build_routers

__all__ = ["Engine"]

INF = math.inf
NAN = math.nan

_PROGRESS_EVERY = 16384
_NO_WAKE = [INF]  # what the pump reads while no entity exists
_argmin1 = argmin_function(1)


def _int_list(a: np.ndarray) -> list:
    """``a.tolist()`` with one int object per distinct value: token counts repeat (a day of
    requests has a few thousand distinct lengths), and an int above 256 costs 28 bytes per
    list slot otherwise. The same values, so the same arithmetic."""
    a = np.asarray(a)
    if a.size == 0:
        return []
    lo, hi = int(a.min()), int(a.max())
    if hi - lo > 4 * a.size + 65_536:  # too many distinct values for a table
        return a.tolist()
    table = np.array(list(range(lo, hi + 1)) + [None], dtype=object)[:-1]
    return table[a - lo].tolist()


class Progress:
    """Routed-request counts for a ``progress(done, total)`` callback (the engine prints
    nothing; the CLI draws the bar)."""

    __slots__ = ("done", "fn", "total")

    def __init__(self, fn: Callable[[int, int], None], total: int):
        self.fn, self.total, self.done = fn, total, 0

    def update(self, k: int) -> None:
        self.done += k
        self.fn(self.done, self.total)


class Engine:
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
        # the columns the event loop reads, as Python lists (list indexing is the cheapest
        # read); token counts share one int object per distinct value (_int_list)
        self.arr = requests.arrival_s.tolist()
        self.arr.append(INF)  # a sentinel: arr[n] is never routed, so no ``i < n`` checks
        self.inp = _int_list(requests.input_tokens)
        self.out = _int_list(requests.output_tokens)
        self.need = _int_list(requests.input_tokens + requests.output_tokens)
        self.pre = _int_list(requests.input_tokens - requests.cached_input_tokens)
        self.cls = requests.class_idx.tolist()
        # records: typed buffers, written through memoryviews (a memoryview item store is
        # several times cheaper than an array's, which parses its argument; zero-copy to
        # numpy at the end): 3 float64 times, two int32 indexes, two int8 reasons, 34 bytes
        # per request
        self.start = memoryview(array("d", [NAN]) * n)
        self.ftok = memoryview(array("d", [NAN]) * n)
        self.fin = memoryview(array("d", [NAN]) * n)
        self.rpool = memoryview(array("i", [-1]) * n)  # pool index, -2 = API, -1 = not routed
        self.rrep = memoryview(array("i", [-1]) * n)
        self.drop = memoryview(array("b", [R_NONE]) * n)
        self.spill = memoryview(array("b", [R_NONE]) * n)
        self.busy_gid: list = []
        self.busy_from: list = []
        self.busy_to: list = []
        self.wakes: list = []  # next boundary of each entity (replica or control slot)
        self.argminw = argmin_function(0)  # index of min(wakes), for its current length
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
        self.route_until = None  # routes a batch of arrivals (routing.arrival_loop)
        self.rpool_fill = None  # pool of every routed, not dropped request (arrival_loop)
        self.pump = self._make_pump()
        self.replica_cls = FastReplica if plan.mode == "closed_form" else RefReplica
        self.pools = [Pool(self, k, spec) for k, spec in enumerate(plan.pools)]
        for pool in self.pools:
            for _ in range(pool.spec.replicas):
                pool.reps.append(self._new_replica(pool, 0.0))
            pool.rebuild()
        if until_s is not None:
            self.wakes[self._control_slot()] = float(until_s)  # horizon: a barrier, no event
        # per-class routers and the spill rules: planner.sim.routing
        self.routers.extend(build_routers(self))
        self.route_until = arrival_loop(self, self.routers)

    # ------------------------------------------------------------------ entities
    def _new_replica(self, pool: Pool, t: float):
        gid = len(self.replicas)
        r = self.replica_cls(self, pool, gid, t)
        self.replicas.append(r)
        self.wakes.append(INF)
        self.argminw = argmin_function(len(self.wakes))
        pool.all.append(r)
        return r

    def _control_slot(self) -> int:
        self.replicas.append(None)
        self.wakes.append(INF)
        self.argminw = argmin_function(len(self.wakes))
        return len(self.wakes) - 1

    def _make_pump(self):
        """Build ``pump``: route arrivals and run boundaries, in time order.

        Invariant on return: every arrival and every admission boundary earlier than the
        earliest pending boundary has been processed, and that boundary, if a replica's, has
        a SimPy timeout. In ``closed_form`` mode a replica's timer-driven boundary that comes
        strictly before every event in SimPy's calendar (autoscaler ticks, the horizon) is
        run inline too, with no timeout: nothing else can happen before it, so the order of
        everything is the one the timeout would give. A closure over the engine's columns:
        it runs after every event.
        """
        arr = self.arr
        wakes = self.wakes
        pend = self.pend
        replicas = self.replicas
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
            # wakes grows only in autoscalers, never while this runs
            ws = wakes if wakes else _NO_WAKE
            amin = self.argminw if wakes else _argmin1
            route_until = self.route_until
            while True:
                j = amin(ws)  # the earliest pending boundary (the first, on a tie)
                barrier = ws[j]
                self.barrier = barrier
                if arr[i] < barrier:  # (arr[n] is inf: false once every request is routed)
                    # route the arrivals before the next boundary (admissions can bring
                    # it forward: route_until re-reads self.barrier)
                    i = route_until(i)
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
                        r.boundary()
                    continue
                if barrier < INF:
                    # the earliest boundary is timer-driven
                    r = replicas[j]
                    if r is not None:
                        if barrier < cal and not r.pend and r.wake_s == barrier:
                            # no SimPy event before it: run it now (what its timeout's
                            # callback would do), superseding any later timeout
                            r.timer = None
                            r.boundary()
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
    def _autoscaler(self, pool: Pool, cid: int):
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
                            if isinstance(r, FastReplica):
                                r.wake_k = 0
                            r.boundary()
            if tick <= now:
                tick += a.interval_s
                self._scale_decision(pool, now, pending, a)
            if self.i >= self.n:
                self.wakes[cid] = INF
                self.pump()
                return
            nxt = min(tick, pending[0].ready_s) if pending else tick
            self.wakes[cid] = nxt
            self.pump()

    def _scale_decision(self, pool: Pool, now: float, pending: deque, a) -> None:
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
    def release_columns(self) -> None:
        """Drop the event loop's per-request lists (the records stay): called once the run
        is over, before the results are built, so the two never coexist."""
        self.arr = self.inp = self.out = self.need = self.pre = self.cls = None
        self.route_u = self.api_jitter = None
        # the closures of the routers, the pump and the closed-form replicas read them too
        self.routers.clear()
        self.pump = self.route_until = None
        for r in self.replicas:
            if isinstance(r, FastReplica):
                r.enqueue = r.boundary = r.fire_cb = None
        for pool in self.pools:
            pool.need = pool.pre = pool.inp = pool.out = None

    def run(self) -> None:
        env = self.env
        for pool in self.pools:
            if pool.spec.autoscale is not None:
                cid = self._control_slot()
                self.wakes[cid] = pool.spec.autoscale.interval_s
                env.process(self._autoscaler(pool, cid))
        if self.progress is not None:
            self.bar = Progress(self.progress, self.n)
        try:
            self.pump()
            if self.until_s is not None:
                env.run(until=self.until_s)
            else:
                env.run()
            if self.rpool_fill is not None:
                # the router left these records to the end (routing.arrival_loop)
                k = self.i
                rp = np.frombuffer(self.rpool, dtype=np.int32)[:k]
                rp[np.frombuffer(self.drop, dtype=np.int8)[:k] == 0] = self.rpool_fill
        finally:
            if self.bar is not None:
                self.bar.update(self.i - self.reported)
