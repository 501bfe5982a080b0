"""Local worker processes of planner.parallel.map_tasks (no Dask): forked when this process
runs no other thread, else started by a fork server; results in task order and the same
bits as a serial run either way; failures name the right flag."""

from __future__ import annotations

import operator
import os
import sys
import threading

import pytest

from planner import api
from planner.parallel import SchedulerError, map_tasks, start_method
from planner.sim.scenario import run_tables, simulate_scenario

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is Linux-only")

#: a 1-hour window of the quickstart's busy afternoon: three candidate plans
SIM = dict(hours=1, start_hour=12, seed=11)


class Unpicklable:
    """A shared object that refuses to be pickled (a fork hands it over as it is)."""

    def __init__(self, items):
        self.items = list(items)
        self.lock = threading.Lock()

    def __getitem__(self, i):
        return self.items[i]


def _pid_and_item(shared, i):
    return os.getpid(), shared[i]


def _die(code):
    os._exit(code)


_PID_FILE = _REAL = None


def _tables_and_pid(runs, **kw):
    """planner.sim.scenario.run_tables, noting the process it ran in (set before the fork)."""
    with open(_PID_FILE, "a") as f:
        f.write(f"{os.getpid()}\n")
    return _REAL(runs, **kw)


def test_an_unpicklable_task_fails_at_once_and_does_not_hang():
    with pytest.raises(Exception, match="pickle|lambda"):
        map_tasks(lambda x: x, [(1,), (2,)], n_workers=2)


@pytest.fixture
def forked(monkeypatch):
    """Fork the workers even if an earlier test left a thread running (a Dask client's)."""
    import planner.parallel as parallel

    monkeypatch.setattr(parallel, "start_method", lambda: "fork")


@linux
def test_start_method_forks_only_without_other_threads():
    if threading.active_count() == 1:  # (earlier tests may leave threads behind)
        assert start_method() == "fork"
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    try:
        assert start_method() in ("forkserver", "spawn")
    finally:
        stop.set()
        t.join()


@linux
def test_forked_workers_get_shared_without_pickling_it(forked):
    shared = Unpicklable("abcdef")
    seen = []
    got = map_tasks(_pid_and_item, [(i,) for i in range(6)], shared=shared, n_workers=2,
                    progress=lambda d, t: seen.append((d, t)))
    assert [item for _, item in got] == list("abcdef")  # task order
    pids = {pid for pid, _ in got}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # other processes, at most 2
    assert seen == [(d, 6) for d in range(1, 7)]


def test_forkserver_workers_give_the_same_results(monkeypatch):
    import planner.parallel as parallel

    monkeypatch.setattr(parallel, "start_method",
                        lambda: "forkserver" if sys.platform.startswith("linux") else "spawn")
    letters = list("abcdefg")
    tasks = [(i,) for i in reversed(range(len(letters)))]
    assert map_tasks(operator.getitem, tasks, shared=letters, n_workers=2) == letters[::-1]
    with pytest.raises(ZeroDivisionError):  # the first failure in task order
        map_tasks(operator.truediv, [(1, 1), (1, 0), ("x", 0)], n_workers=2)


def test_simulated_plans_bit_identical_on_local_processes(monkeypatch, forked):
    import planner.parallel as parallel

    sc = api.load("example:quickstart")
    serial = run_tables(simulate_scenario(sc, n_workers=1, **SIM))
    forked = run_tables(simulate_scenario(sc, n_workers=2, **SIM))
    monkeypatch.setattr(parallel, "start_method",
                        lambda: "forkserver" if sys.platform.startswith("linux") else "spawn")
    served = run_tables(simulate_scenario(sc, n_workers=2, **SIM))
    assert len(serial["totals"]) >= 2
    for k in serial:
        for got in (forked[k], served[k]):
            assert got.equals(serial[k]), k


def test_a_worker_that_dies_names_the_workers_flag():
    with pytest.raises(SchedulerError, match="ended abruptly") as info:
        map_tasks(_die, [(0,), (3,)], n_workers=2)
    assert info.value.flag == "workers"


@linux
def test_simulate_tables_made_on_forked_workers_equal_the_serial_ones(monkeypatch, tmp_path,
                                                                     forked):
    """api.simulate makes each plan's tables on the forked worker that simulated it (no
    second pool, nothing made here): the same frames as run_tables of the same runs in this
    process (and as a serial simulation)."""
    import planner.sim.scenario as scenario_mod

    global _PID_FILE, _REAL
    _PID_FILE, _REAL = tmp_path / "pids", scenario_mod.run_tables
    monkeypatch.setattr(scenario_mod, "run_tables", _tables_and_pid)
    sc = api.load("example:quickstart")
    par = api.simulate(sc, n_workers=2, **SIM)
    pids = [int(x) for x in _PID_FILE.read_text().split()]
    assert len(pids) == len(par.engine) >= 2 and os.getpid() not in pids  # on the workers
    assert all(r.tables is not None for r in par.engine)
    ser = api.simulate(sc, n_workers=1, **SIM)
    assert all(r.tables is None for r in ser.engine)  # serial: made here, from the runs
    want = run_tables(par.engine, records=False)
    assert len(want["latency"]) > 3
    for k, frame in want.items():
        assert getattr(par, k).equals(frame), k
        assert getattr(ser, k).equals(frame), k


def test_parallel_plans_start_with_the_most_requests():
    """The plans go to the workers in decreasing estimated requests (requests per day x calls
    per request of the classes each serves), ties in plan order; a trace keeps plan order."""
    from planner.config import med
    from planner.sim.scenario import _longest_first

    sc = api.load("example:quickstart")
    wl = sc.workload
    names = sorted(wl)
    assert len(names) >= 2
    rate = {c: float(med(wl[c].requests_per_day)) * float(med(wl[c].calls_per_request))
            for c in names}
    lo, hi = sorted(names, key=rate.get)[:1], sorted(names, key=rate.get)[-1:]
    covered = [tuple(lo), tuple(names), tuple(hi), tuple(names)]
    order = _longest_first(sc, covered, False)
    est = [sum(rate[c] for c in cov) for cov in covered]
    assert sorted(order) == list(range(len(covered)))
    assert [est[k] for k in order] == sorted(est, reverse=True)
    assert order.index(1) < order.index(3)  # equal estimates: plan order
    assert order[-1] == 0 and order[:2] == [1, 3]
    assert _longest_first(sc, covered, True) == list(range(len(covered)))
