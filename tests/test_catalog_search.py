"""``planner perf --search`` and the catalog's cloud prices: L40S, MI300X and L4 appear wherever
the catalog prices them, and each tensor-parallel degree is priced from an instance that holds
the whole replica (a replica cannot span instances)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from planner.catalog import load_catalog
from planner.perf.report import perf_search
from planner.perf.search import offering_prices, price_for_replica

GPUS = ("l4", "l40s", "mi300x")
TPS = (1, 2, 4, 8)


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def _priced(cat, plan: str) -> pd.DataFrame:
    c = cat.clouds
    price = pd.to_numeric(c["usd_per_gpu_hour"], errors="coerce")
    return c[(c["plan"] == plan) & (price > 0)].assign(
        usd=price, n=pd.to_numeric(c["gpus_per_instance"], errors="coerce"))


def test_price_for_replica_needs_an_instance_that_holds_it():
    offers = [(1, 0.5, "one"), (8, 0.9, "eight"), (6, 0.7, "six")]
    assert price_for_replica(offers, 1) == (0.5, "one")
    assert price_for_replica(offers, 2) == (0.7, "six")  # 6 = 3 replicas of 2
    assert price_for_replica(offers, 4) == (0.9, "eight")  # 6 GPUs do not hold whole TP-4s
    assert price_for_replica(offers, 8) == (0.9, "eight")
    assert price_for_replica(offers, 16) is None
    assert price_for_replica([(1, 0.5, "one")], 2) is None


@pytest.mark.parametrize("gpu", GPUS)
def test_every_on_demand_tp_degree_has_an_instance(cat, gpu):
    rows = _priced(cat, "on-demand")
    sizes = set(rows.loc[rows["accelerator"] == gpu, "n"].astype(int))
    for tp in TPS:
        assert any(n % tp == 0 for n in sizes), (gpu, tp, sorted(sizes))


@pytest.mark.parametrize("plan", ["on-demand", "spot"])
def test_search_lists_every_priced_gpu_at_its_instance_price(cat, plan):
    rows = _priced(cat, plan)
    priced = set(rows["accelerator"])
    want = [g for g in GPUS if g in priced]
    assert want, f"no {plan} price for {GPUS}"
    df = perf_search(cat, "llama-3.1-8b", accelerators=want, precisions=("bf16", "fp8"),
                     tps=TPS, isl=1000, osl=200, plan=plan)
    assert set(df["accelerator"]) == set(want)
    assert len(df) == len(want) * 2 * len(TPS)
    for r in df.itertuples():
        mine = rows[rows["accelerator"] == r.accelerator]
        holds = mine[(mine["n"] >= r.gpus) & (mine["n"] % r.gpus == 0)]
        if holds.empty:
            assert r.offering.startswith("per-GPU price")
            expect = float(mine["usd"].min())
        else:
            best = holds.sort_values(["usd", "id"]).iloc[0]
            assert r.offering == best["id"]
            expect = float(best["usd"])
        assert r.usd_per_hour == pytest.approx(expect * r.gpus)
        if r.feasible:
            assert r.usd_per_1m_output_tokens == pytest.approx(
                r.usd_per_hour / (3600 * r.output_tokens_per_s) * 1e6)


def test_on_demand_search_prices_multi_gpu_replicas_from_multi_gpu_instances(cat):
    df = perf_search(cat, "llama-3.1-70b", accelerators=list(GPUS), tps=TPS, isl=2000,
                     osl=200, plan="on-demand")
    ids = set(cat.clouds["id"])
    n = dict(zip(cat.clouds["id"], pd.to_numeric(cat.clouds["gpus_per_instance"]),
                 strict=True))
    for r in df.itertuples():
        assert r.offering in ids, r
        assert n[r.offering] % r.gpus == 0
    feasible = df[df["feasible"]]
    assert set(feasible["accelerator"]) == set(GPUS)
    assert np.isfinite(feasible["usd_per_1m_output_tokens"]).all()


def test_offering_prices_reads_the_catalog_rows(cat):
    off = offering_prices(cat.clouds, "on-demand")
    rows = _priced(cat, "on-demand")
    for gpu in GPUS:
        got = sorted(off[gpu])
        sub = rows[rows["accelerator"] == gpu]
        assert got == sorted(zip(sub["n"].astype(int), sub["usd"].astype(float), sub["id"],
                                 strict=True))
