"""Sizing of self-hosted options as the one model computes it (the simulator's input).

:func:`size_options` returns, per self-hosted deployment option, the classes it serves, the
replicas the cost model sizes it at, the capacity of one replica for each class at the class's
SLO, the prefix-cache hit share the capacity assumes, and the price of one replica-hour, so the
simulator and the optimiser's verification never parse them out of the cost engine's tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OptionSizing:
    """One self-hosted option as sized by the model.

    Attributes
    ----------
    deployment, kind : the option's name and ``cloud`` or ``onprem``
    classes_served : classes the option serves (eligible and with capacity)
    classes_unserved : class -> why it is not served
    replicas : whole replicas the model sizes (peak load / utilisation target + HA reserve,
        or the deployment's fixed ``replicas``)
    gpus_per_replica : GPUs of one replica
    usd_per_replica_hour : price of one replica-hour under the scenario's cost lens
    requests_per_s_per_replica : class -> capacity of one replica at the class's SLO
    prefix_cache_hit_share : class -> share of input tokens served from the prefix (KV) cache
    """

    deployment: str
    kind: str
    classes_served: tuple[str, ...]
    classes_unserved: Mapping[str, str]
    replicas: int
    gpus_per_replica: int
    usd_per_replica_hour: float
    requests_per_s_per_replica: Mapping[str, float] = field(default_factory=dict)
    prefix_cache_hit_share: Mapping[str, float] = field(default_factory=dict)


def size_options(sc: Any, catalog: Any = None) -> dict[str, OptionSizing]:
    """Size every self-hosted option of a scenario (see :class:`OptionSizing`)."""
    from planner.catalog import load_catalog
    from planner.config import med
    from planner.engines.deterministic import evaluate  # replaced by the model (pending)

    cat = catalog or load_catalog()
    res = evaluate(sc, cat)
    summ = res.summary.set_index("deployment")
    cap = res.capacity
    hpm = float(sc.planning.hours_per_month)
    out: dict[str, OptionSizing] = {}
    for name, (kind, dep) in sc.deployments().items():
        if kind == "api":
            continue
        r = summ.loc[name]
        served = tuple(c for c in str(r["classes_served"]).split(",") if c) if isinstance(
            r["classes_served"], str) else ()
        unserved = {}
        if isinstance(r["classes_unserved"], str) and r["classes_unserved"]:
            for part in r["classes_unserved"].split("; "):
                c, _, why = part.partition(": ")
                unserved[c] = why
        reps = float(r["replicas"])
        usd_rh = float(r["usd_per_month"]) / hpm / reps if reps > 0 else 0.0
        rows = cap[cap["deployment"] == name]
        out[name] = OptionSizing(
            deployment=name, kind=kind, classes_served=served, classes_unserved=unserved,
            replicas=int(round(reps)) if reps == reps else 0,
            gpus_per_replica=int(dep.gpus_per_replica), usd_per_replica_hour=usd_rh,
            requests_per_s_per_replica={
                c: float(v) for c, v in zip(rows["class"], rows["requests_per_s_per_replica"],
                                            strict=True)},
            prefix_cache_hit_share={
                c: float(med(sc.workload[c].prefix_cache_hit_share)) for c in served},
        )
    return out
