"""Parallel and distributed runs (planner.parallel): `planner simulate`'s plans and
`planner risk --simulate K`'s replications give the same tables one after another, on local
worker processes and on a Dask cluster, for the same seed.

Clusters are started without a dashboard (no port 8787 clash with concurrent suites); the
Dask one runs in-process (threads) and is shared by the module.
"""

from __future__ import annotations

import operator
import socket

import pandas as pd
import pytest

from planner import api
from planner.cli import main
from planner.engines.risk.replications import simulation_replications
from planner.engines.risk.run import run_montecarlo
from planner.errors import PlannerError
from planner.parallel import (
    LOCAL_CLUSTER_HTTP,
    SchedulerError,
    default_workers,
    map_tasks,
    runs_serially,
)
from planner.sim.scenario import run_tables, simulate_scenario

distributed = pytest.importorskip("distributed")

#: a 1-hour window of the quickstart's busy afternoon: three candidate plans, ~10k requests
SIM = dict(hours=1, start_hour=12, seed=7)
#: risk --simulate: three replications of the busiest hour, cut short
REPS = dict(deployment="llama-70b-h100", replications=3, seed=5, max_requests=1500)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def cluster():
    """An in-process Dask cluster (2 single-thread workers) reached by its tcp address."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                      host="127.0.0.1", **LOCAL_CLUSTER_HTTP) as c:
        yield c


@pytest.fixture(scope="module")
def quickstart():
    return api.load("example:quickstart")


@pytest.fixture(scope="module")
def serial_runs(quickstart):
    return simulate_scenario(quickstart, **SIM)


@pytest.fixture(scope="module")
def risk_setup():
    sc = api.load("example:risk-example")
    res = run_montecarlo(sc, n=2000, seed=1, rank_samples=2000)
    return sc, res, simulation_replications(res, sc, **REPS)


def _assert_same_runs(got, want):
    assert [r.name for r in got] == [r.name for r in want]
    a, b = run_tables(got), run_tables(want)
    assert list(a) == list(b)
    for k in b:
        pd.testing.assert_frame_equal(a[k], b[k], check_exact=True, obj=k)


# ---------------------------------------------------------------------- the runner
def test_map_tasks_returns_results_in_task_order(cluster):
    letters = list("abcdefgh")
    tasks = [(i,) for i in reversed(range(len(letters)))]
    want = letters[::-1]
    seen = []
    got = map_tasks(operator.getitem, tasks, shared=letters, scheduler=cluster.scheduler_address,
                    progress=lambda d, t: seen.append((d, t)))
    assert got == want
    assert seen == [(d, len(tasks)) for d in range(1, len(tasks) + 1)]
    assert map_tasks(operator.getitem, tasks, shared=letters, scheduler="serial") == want
    assert map_tasks(pow, [(2, k) for k in range(5)], n_workers=1) == [2**k for k in range(5)]


def test_which_runner():
    assert runs_serially(5, scheduler="serial", n_workers=4)
    assert runs_serially(1)  # one task: never worth a process
    assert runs_serially(5, n_workers=1)
    assert not runs_serially(5, n_workers=2)
    assert not runs_serially(1, scheduler="tcp://127.0.0.1:8786")
    assert runs_serially(3) == (default_workers(3) == 1)
    assert 1 <= default_workers(100) and default_workers(1) == 1
    with pytest.raises(SchedulerError, match="scheduler"):
        runs_serially(3, scheduler="udp://x")
    with pytest.raises(PlannerError, match="n_workers"):
        map_tasks(pow, [(1, 1)], n_workers=0)


def test_a_failing_task_raises_in_task_order(cluster):
    tasks = [(1, 1), (1, 0), ("x", 0)]  # the second raises ZeroDivisionError, the third TypeError
    with pytest.raises(ZeroDivisionError):
        map_tasks(operator.truediv, tasks, scheduler=cluster.scheduler_address)
    with pytest.raises(ZeroDivisionError):
        map_tasks(operator.truediv, tasks, scheduler="serial")


# ---------------------------------------------------------------------- simulate
def test_simulate_plans_identical_serial_processes_and_dask(quickstart, serial_runs, cluster):
    assert len(serial_runs) >= 2
    on_processes = simulate_scenario(quickstart, n_workers=2, **SIM)
    _assert_same_runs(on_processes, serial_runs)
    seen = []
    on_dask = simulate_scenario(quickstart, scheduler=cluster.scheduler_address,
                                progress=lambda d, t: seen.append((d, t)), **SIM)
    _assert_same_runs(on_dask, serial_runs)
    n = len(serial_runs)
    assert seen == [(d, n) for d in range(1, n + 1)]  # finished plans, when not serial
    # the generated arrivals themselves: every plan's, bit for bit
    for got, want in zip(on_dask, serial_runs, strict=True):
        for col in ("arrival_s", "input_tokens", "output_tokens", "cached_input_tokens"):
            assert (getattr(got.requests, col) == getattr(want.requests, col)).all(), col


def test_simulate_cli_same_output_on_a_scheduler(capsys, cluster):
    args = ["simulate", "example:quickstart", "--hours", "1", "--start-hour", "12", "--seed",
            "7", "--format", "csv", "-q"]
    code, serial, err = run(capsys, *args, "--scheduler", "serial")
    assert code == 0, err
    code, on_dask, err = run(capsys, *args, "--scheduler", cluster.scheduler_address)
    assert code == 0, err
    assert on_dask == serial and len(serial.splitlines()) > 3


# ---------------------------------------------------------------------- risk --simulate
def test_risk_replications_identical_serial_processes_and_dask(risk_setup, cluster):
    sc, res, serial = risk_setup
    assert len(serial) == REPS["replications"]
    on_processes = simulation_replications(res, sc, n_workers=2, **REPS)
    pd.testing.assert_frame_equal(on_processes, serial, check_exact=True)
    on_dask = simulation_replications(res, sc, scheduler=cluster.scheduler_address, **REPS)
    pd.testing.assert_frame_equal(on_dask, serial, check_exact=True)


def test_risk_cli_same_output_on_a_scheduler(capsys, cluster):
    args = ["risk", "example:risk-example", "-n", "2000", "--seed", "3", "--simulate", "3",
            "--deployment", "llama-70b-hgx", "--format", "csv", "-q"]
    code, serial, err = run(capsys, *args, "--workers", "1")
    assert code == 0, err
    code, on_dask, err = run(capsys, *args, "--scheduler", cluster.scheduler_address)
    assert code == 0, err
    assert on_dask == serial and "slo_attainment" in serial


# ---------------------------------------------------------------------- user mistakes
@pytest.mark.parametrize("argv, flag", [
    (["simulate", "example:quickstart", "--workers", "0"], "--workers"),
    (["simulate", "example:quickstart", "--workers", "-3"], "--workers"),
    (["simulate", "example:quickstart", "--scheduler", "udp://10.0.0.1:8786"], "--scheduler"),
    (["simulate", "example:quickstart", "--scheduler", "tcp://"], "--scheduler"),
    (["risk", "example:risk-example", "--simulate", "2", "--workers", "0"], "--workers"),
    (["risk", "example:risk-example", "--simulate", "2", "--scheduler", "local"],
     "--scheduler"),
    (["risk", "example:risk-example", "--workers", "2"], "--workers"),
    (["risk", "example:risk-example", "--scheduler", "serial"], "--scheduler"),
    (["sweep", "example:risk-example", "--grid", "planning.lens=tco", "--scheduler", "x"],
     "--scheduler"),
])
def test_bad_parallel_flags_exit_2_naming_the_flag(capsys, argv, flag):
    code, _, err = run(capsys, *argv)
    assert code == 2 and flag in err and "Traceback" not in err


def test_unreachable_scheduler_is_a_clear_error(capsys):
    import dask

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code, _, err = run(capsys, "simulate", "example:quickstart", "--hours", "1",
                           "--scheduler", f"tcp://127.0.0.1:{port}")
    assert code == 2 and "Traceback" not in err
    assert "--scheduler" in err and f"127.0.0.1:{port}" in err and "cannot connect" in err


def test_worker_processes_that_do_not_start_name_the_flag(capsys, monkeypatch):
    import concurrent.futures.process

    def no_pool(*args, **kwargs):
        raise OSError("no room for worker processes")

    monkeypatch.setattr(concurrent.futures.process, "ProcessPoolExecutor", no_pool)
    with pytest.raises(SchedulerError, match="could not start 2 local worker") as info:
        map_tasks(pow, [(2, 1), (2, 2)], n_workers=2)
    assert info.value.flag == "workers"
    code, _, err = run(capsys, "simulate", "example:quickstart", "--hours", "1", "--workers", "2")
    assert code == 2 and "--workers: could not start" in err and "Traceback" not in err


def test_sweep_progress_is_a_callback_on_the_shared_runner():
    from planner.sweep import sweep

    sc = api.load("example:risk-example")
    grid = {"planning.utilisation_target": [0.6, 0.9]}
    seen = []
    df = sweep(sc, grid, n=100, seed=1, scheduler="serial",
               progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 2), (2, 2)]  # one chunk per grid point
    assert list(df["grid_point"].unique()) == [0, 1]


def test_aggregate_only_plans_on_a_scheduler_give_the_full_runs_summaries(serial_runs,
                                                                          cluster):
    """``records="aggregate"`` (no per-request rows) crosses to the workers too: the plans run
    on Dask keep no requests table and print the serial full runs' latency and totals."""
    agg = simulate_scenario(api.load("example:quickstart"), scheduler=cluster.scheduler_address,
                            records="aggregate", **SIM)
    assert all(r.result.requests is None for r in agg)
    for got, want in zip(agg, serial_runs, strict=True):
        pd.testing.assert_frame_equal(got.latency(), want.latency())
        pd.testing.assert_frame_equal(got.totals(), want.totals())
