"""Sweeps on dask.distributed: bit-identical to a serial run whatever the workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from planner.config import load_scenario
from planner.engines.risk.run import run_montecarlo
from planner.engines.risk.sampling import CHUNK_SIZE
from planner.errors import PlannerError
from planner.parallel import LOCAL_CLUSTER_HTTP
from planner.sweep import grid_points, parse_grid, scenario_with, sweep

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parent.parent
GRID = {"planning.utilisation_target": [0.6, 0.9],
        "workload.summarise.requests_per_day": [1000, 50000]}
N = 2 * CHUNK_SIZE + 1000  # three chunks per grid point


@pytest.fixture(scope="module")
def scenario():
    return load_scenario(ROOT / "planner" / "templates" / "quickstart.toml", overrides={
        "workload.chat.requests_per_day": {"dist": "lognormal", "median": 2e5, "p90": 4e5},
        "cloud.llama-70b-h100.usd_per_gpu_hour": {"dist": "uniform", "low": 2.0, "high": 4.0},
    })


@pytest.fixture(scope="module")
def serial(scenario):
    return sweep(scenario, GRID, n=N, seed=11, scheduler="serial")


def test_parse_grid():
    g = parse_grid(["a.b=1,2.5,x", "c=true,false"])
    assert g == {"a.b": [1, 2.5, "x"], "c": [True, False]}
    pts = grid_points(g)
    assert len(pts) == 6 and pts[0] == {"a.b": 1, "c": True} and pts[1] == {"a.b": 1, "c": False}
    for bad, match in ((["a.b"], "key=v1,v2"), (["=1"], "missing the key"), (["a=1", "a=2"],
                       "twice"), (["a="], "no values")):
        with pytest.raises(PlannerError, match=match):
            parse_grid(bad)
    with pytest.raises(PlannerError, match="non-empty list"):
        grid_points({"a": []})


def test_serial_sweep_equals_montecarlo_per_point(scenario, serial):
    assert len(serial) == 4 * 5 * 3  # grid points x options x metrics
    assert serial.attrs["n"] == N
    roots = np.random.SeedSequence(11).spawn(4)
    pts = grid_points(GRID)
    for g in (0, 3):
        sc_g = scenario_with(scenario, pts[g])
        assert sc_g.planning.utilisation_target == pts[g]["planning.utilisation_target"]
        ref = run_montecarlo(sc_g, n=N, seed=roots[g], sensitivity=False).summary
        got = serial[serial["grid_point"] == g].reset_index(drop=True)
        pd.testing.assert_frame_equal(got[ref.columns], ref, check_exact=True)
    # more volume, more cost; lower utilisation target, more replicas
    m = serial[(serial["metric"] == "usd_per_month") & (serial["deployment"] == "gpt-4o")]
    assert m["mean"].iloc[1] > m["mean"].iloc[0]
    c = serial[(serial["metric"] == "usd_per_month") & (serial["deployment"] == "llama-70b-h100")]
    assert c["mean"].iloc[0] >= c["mean"].iloc[2]


def test_local_process_cluster_bit_identical_to_serial(scenario, serial):
    """The default scheduler: a LocalCluster of 2 worker processes on 127.0.0.1."""
    got = sweep(scenario, GRID, n=N, seed=11, n_workers=2)
    pd.testing.assert_frame_equal(got, serial, check_exact=True)


def test_client_and_scheduler_address(scenario, serial):
    """An existing client, and a scheduler address (in-process workers: quick to start)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=3, threads_per_worker=1, processes=False, protocol="tcp",
                      host="127.0.0.1", **LOCAL_CLUSTER_HTTP) as cluster, \
            Client(cluster) as client:
        by_client = sweep(scenario, GRID, n=N, seed=11, client=client)
        by_address = sweep(scenario, ["planning.utilisation_target=0.6,0.9",
                                      "workload.summarise.requests_per_day=1000,50000"],
                           n=N, seed=11, scheduler=cluster.scheduler_address, progress=True)
    pd.testing.assert_frame_equal(by_client, serial, check_exact=True)
    pd.testing.assert_frame_equal(by_address, serial, check_exact=True)


def test_one_point_grid_is_its_montecarlo(scenario):
    point = {"planning.utilisation_target": 0.6}
    got = sweep(scenario, {k: [v] for k, v in point.items()}, n=N, seed=11, scheduler="serial")
    # one grid point: its root seed is child 0 of SeedSequence(11)
    ref = run_montecarlo(scenario_with(scenario, point), n=N, sensitivity=False,
                         seed=np.random.SeedSequence(11).spawn(1)[0]).summary
    pd.testing.assert_frame_equal(got[ref.columns], ref, check_exact=True)


def test_bad_sweeps(scenario):
    with pytest.raises(PlannerError, match="workload.chat.request_per_day"):
        sweep(scenario, {"workload.chat.request_per_day": [1]}, n=10, scheduler="serial")
    with pytest.raises(PlannerError, match="scheduler"):
        sweep(scenario, {"planning.utilisation_target": [0.5]}, n=10, scheduler="udp://x")
    with pytest.raises(PlannerError, match="n:"):
        sweep(scenario, {"planning.utilisation_target": [0.5]}, n=0, scheduler="serial")
