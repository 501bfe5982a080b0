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

import numpy as np

from planner.catalog import load_catalog
from planner.distributions import median_of
from planner.model.evaluate import Model


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


def size_options(sc: Any, catalog: Any = None, *, model: Any = None) -> dict[str, OptionSizing]:
    """Size every self-hosted option of a scenario at its medians (see :class:`OptionSizing`).

    The price of a replica-hour: cloud, the instance-hour price (spot factor included) x
    instances per replica; on-prem, the option's monthly ownership cost (capex, energy,
    operations ... under the cost lens) / hours per month / replicas.
    """
    m = model if model is not None else Model(sc, catalog or load_catalog())
    ctx = m.ctx()
    out: dict[str, OptionSizing] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for o in m.options:
            if o.kind == "api":
                continue
            r = m.selfhosted(ctx, o)
            reps = float(r["replicas"])
            unserved = dict(o.unserved)
            if not r["serves"]:
                for c in o.served:
                    unserved[c] = (f"fleet too small: {o.fleet_basis} for a peak load of "
                                   f"{float(r['peak_load']):.3g} replicas")
            served = tuple(c for c in o.served if c not in unserved)
            if reps <= 0:
                usd_rh = 0.0
            elif o.kind == "cloud":
                price, factor = m.cloud_instance_usd_per_hour(ctx, o)
                usd_rh = float(price * factor * float(r["units"]) / reps)
            else:
                fixed = sum(float(r[f"onprem_{k}_usd"]) for k in (
                    "capex", "maintenance", "energy", "facilities", "operations",
                    "implementation"))
                usd_rh = fixed / m.hpm / reps
            out[o.name] = OptionSizing(
                deployment=o.name, kind=o.kind, classes_served=served,
                classes_unserved=unserved, replicas=int(round(reps)),
                gpus_per_replica=int(o.dep.gpus_per_replica), usd_per_replica_hour=usd_rh,
                requests_per_s_per_replica={c: float(np.asarray(m.rps(ctx, o, c)))
                                            for c in o.served},
                prefix_cache_hit_share={
                    c: float(median_of(sc.workload[c].prefix_cache_hit_share))
                    for c in o.served},
            )
    return out
