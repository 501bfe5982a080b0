"""Structure of a scenario, decided once: options, eligibility, catalog rows, price sources.

Everything here is fixed for every evaluation of the model (medians, samples or scenarios):
which classes an option may serve (its ``classes``, quality tiers, fine-tune qualification, an
API whose catalog TTFT exceeds the class's TTFT SLO, a replica that cannot carry the class at
its SLO), which catalog rows apply, where a price comes from, the billing mode and the
profile length. Only numbers vary between evaluations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from planner.distributions import median_of

DEFAULT_LIFE_YEARS = 5.0


def tier(dep: Any, default_row: dict[str, Any] | None) -> float | None:
    """Quality tier of a deployment: its own, else its catalog row's (1 best)."""
    if getattr(dep, "quality_tier", None) is not None:
        return float(dep.quality_tier)
    if default_row is not None and default_row.get("quality_tier") is not None:
        return float(default_row["quality_tier"])
    return None


def eligible(sc: Any, dep: Any, tier_: float | None, ft: Any, *,
             api_ttft_s: float | None = None) -> dict[str, str]:
    """class -> '' when the option may serve it, else the reason it may not.

    ``api_ttft_s``: an API's time to first token (its catalog row's ``ttft_s``); an API slower
    than a class's TTFT SLO (at its median) does not serve the class, in every engine.
    """
    ttft_api = None if api_ttft_s is None or math.isnan(float(api_ttft_s)) \
        else float(api_ttft_s)
    out: dict[str, str] = {}
    for cname, wc in sc.workload.items():
        if dep.classes is not None and cname not in dep.classes:
            out[cname] = "not in the deployment's classes"
            continue
        t = tier_
        if ft is not None and cname in ft.qualifies_for and ft.quality_tier is not None:
            t = float(ft.quality_tier)
        if wc.min_quality_tier is not None and t is not None and t > wc.min_quality_tier:
            out[cname] = f"quality tier {t:g} worse than the class's minimum {wc.min_quality_tier}"
            continue
        slo_ttft = wc.slo.ttft_s if wc.slo is not None else None
        if ttft_api is not None and slo_ttft is not None and \
                ttft_api > float(median_of(slo_ttft)):
            out[cname] = (f"TTFT SLO {float(median_of(slo_ttft)):g} s cannot be met (the API's "
                          f"catalog TTFT is {ttft_api:g} s)")
            continue
        out[cname] = ""
    return out


def api_classes(sc: Any, cat: Any, name: str) -> tuple[str, ...]:
    """Classes the API deployment ``name`` may serve, as the cost model decides it.

    :func:`eligible` at the API's :func:`tier` (its own, else its catalog row's), with its
    fine-tune's tier for the classes the fine-tune qualifies for and its catalog TTFT -- the
    rule the model compiles every API option with. The simulator's spillover API serves
    exactly these.
    """
    dep = sc.api[name]
    ft = sc.finetune.get(dep.fine_tune) if dep.fine_tune else None
    row = cat.api(dep.offering)
    elig = eligible(sc, dep, tier(dep, row), ft, api_ttft_s=row.get("ttft_s"))
    return tuple(c for c, why in elig.items() if not why)


@dataclass(frozen=True)
class CloudPriceSource:
    """Where a cloud option's instance-hour price comes from (the price chain, decided once).

    ``how``: ``instance`` (scenario usd_per_instance_hour), ``gpu`` (scenario usd_per_gpu_hour
    x GPUs per instance), ``offer-instance`` / ``offer-gpu`` (the catalog row of the offering),
    ``cheapest`` (the cheapest catalog row of the accelerator and plan).
    """

    how: str
    gpus_per_instance: int
    plan: str
    catalog_usd: float | None
    basis: str
    row_id: str | None = None  # the catalog row chosen as cheapest


def cloud_price_source(dep: Any, offer: dict | None, acc_id: str, cat: Any) -> CloudPriceSource:
    """Resolve the cloud price chain: scenario instance price, scenario GPU price, the
    offering's catalog row (per instance, then per GPU), else the cheapest catalog row."""
    gpi = dep.gpus_per_instance or int((offer or {}).get("gpus_per_instance") or 1)
    plan = (offer or {}).get("plan") or dep.plan
    if dep.usd_per_instance_hour is not None:
        return CloudPriceSource("instance", gpi, plan, None, "scenario usd_per_instance_hour")
    if dep.usd_per_gpu_hour is not None:
        return CloudPriceSource("gpu", gpi, plan, None, "scenario usd_per_gpu_hour x GPUs")
    if offer is not None and offer.get("usd_per_instance_hour") is not None:
        return CloudPriceSource("offer-instance", gpi, plan, float(offer["usd_per_instance_hour"]),
                                f"cloud_prices.csv {offer['id']}")
    if offer is not None and offer.get("usd_per_gpu_hour") is not None:
        return CloudPriceSource("offer-gpu", gpi, plan, float(offer["usd_per_gpu_hour"]) * gpi,
                                f"cloud_prices.csv {offer['id']} per-GPU price x {gpi}")
    best = cat.cheapest_cloud(acc_id, dep.plan, required=True)
    return CloudPriceSource("cheapest", gpi, plan, float(best["usd_per_gpu_hour"]) * gpi,
                            f"cheapest {dep.plan} {acc_id} row in cloud_prices.csv x {gpi}",
                            row_id=best["id"])


@dataclass
class OptionSpec:
    """One deployment option as the model evaluates it."""

    name: str
    kind: str
    dep: Any
    offering: str | None
    served: tuple[str, ...]
    unserved: dict[str, str]
    tokenizer: str | None
    row: dict[str, Any] | None = None  # API catalog row
    ft: Any = None
    # self-hosted
    acc_id: str | None = None
    acc_row: dict[str, Any] | None = None
    llm_row: dict[str, Any] | None = None
    offer: dict[str, Any] | None = None
    server: dict[str, Any] | None = None
    capacity: dict[str, Any] = field(default_factory=dict)  # class -> (how, value|grid|key)
    capacity_rows: list[dict[str, Any]] = field(default_factory=list)
    traffic: dict[str, Any] = field(default_factory=dict)  # class -> capacity.Traffic
    pool_size: float = 1.0  # replicas the open-loop capacity assumes (pooled prefill wait)
    pool_peak: float = 0.0  # peak load (replica-equivalents) at the medians, at that size
    periods: int = 24
    model: str | None = None
    price: CloudPriceSource | None = None
    gpus_per_unit: int = 1  # GPUs per instance (cloud) or server (on-prem)
    fleet_replicas: float | None = None  # replicas the fixed fleet or the max_* limit holds
    fleet_basis: str = ""
