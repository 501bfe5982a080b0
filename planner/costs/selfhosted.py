"""Self-hosted capacity and cost: whole units, cloud billing modes, on-prem TCO.

All functions are pure and accept floats or numpy arrays.
"""

from __future__ import annotations

import numpy as np


def replicas_needed(load_replicas, utilisation_target=1.0, ha_reserve=0):
    """Whole replicas for a load expressed in replica-equivalents.

    replicas = ceil(load / utilisation_target) + ha_reserve; zero load needs zero replicas
    (the HA reserve is only added when the deployment serves something).
    """
    load = np.asarray(load_replicas, dtype=float)
    base = np.ceil(load / utilisation_target - 1e-9)
    return np.where(load > 0, base + ha_reserve, 0.0)


def pack(replicas, gpus_per_replica: int, gpus_per_unit: int):
    """Pack replicas into whole instances or servers.

    A replica does not span units unless it needs more GPUs than one unit has, in which case it
    takes ceil(gpus_per_replica / gpus_per_unit) whole units. Spare GPUs in a unit still cost.

    Returns
    -------
    (units, gpus_paid)
    """
    r = np.asarray(replicas, dtype=float)
    if gpus_per_replica <= gpus_per_unit:
        per_unit = gpus_per_unit // gpus_per_replica
        units = np.ceil(r / per_unit - 1e-9)
    else:
        units = r * int(np.ceil(gpus_per_replica / gpus_per_unit))
    return units, units * gpus_per_unit


def spot_factor(interruption_overhead=0.0):
    """Paid-time multiplier for spot capacity: 1 / (1 - share of paid time lost)."""
    return 1.0 / (1.0 - np.asarray(interruption_overhead, dtype=float))


def scale_to_zero_hours(
    hourly_load_replicas,
    hourly_requests_per_s,
    *,
    replicas_cap,
    idle_timeout_s=300.0,
    startup_s=0.0,
    min_billing_s=0.0,
):
    """Billed replica-hours per profile period (day or week) for scale-to-zero serving.

    Per hour h, with a load of L_h replica-equivalents (request rate / one replica's
    sustainable rate) and Poisson arrivals at lam_h requests/s:

    - busy time = 3600 x L_h replica-seconds;
    - a replica idle longer than ``idle_timeout_s`` (T) scales to zero; among n = 3600 lam_h
      exponential inter-arrival gaps, n exp(-lam_h T) exceed T, each adding T of warm idle time
      plus one start-up, and at least ``min_billing_s`` per billed period;
    - capped at 3600 x replicas_cap (always on at that size).
    """
    load = np.asarray(hourly_load_replicas, dtype=float)
    lam = np.asarray(hourly_requests_per_s, dtype=float)
    busy = 3600.0 * load
    periods = 3600.0 * lam * np.exp(-lam * idle_timeout_s)
    per_period = np.maximum(idle_timeout_s + startup_s, min_billing_s)
    billed = busy + periods * per_period
    return np.minimum(billed, 3600.0 * np.asarray(replicas_cap, dtype=float)).sum() / 3600.0


def capital_recovery_usd_per_month(
    capex_usd, years, residual_share=0.0, cost_of_capital_per_year=0.0
):
    """Monthly charge that recovers a purchase over its life.

    Straight-line when the cost of capital is 0: capex x (1 - residual) / (12 x years).
    Otherwise an annuity at monthly rate i = r / 12 over n = 12 x years months, the residual
    value discounted: (capex - residual x capex x (1 + i)^-n) x i / (1 - (1 + i)^-n).
    """
    capex = np.asarray(capex_usd, dtype=float)
    n = 12.0 * np.asarray(years, dtype=float)
    r = np.asarray(cost_of_capital_per_year, dtype=float)

    def straight():
        return capex * (1.0 - residual_share) / n

    def annuity(i):
        v = (1.0 + i) ** (-n)
        return (capex - residual_share * capex * v) * i / (1.0 - v)

    if r.ndim == 0:  # one rate for every sample: only its branch (the same values)
        return np.asarray(annuity(r / 12.0) if r > 0 else straight())
    return np.where(r > 0, annuity(np.where(r > 0, r / 12.0, 1.0)), straight())


def server_power_w(
    base_w, gpus_per_server, gpu_tdp_w, utilisation, idle_power_share=0.3
):
    """Wall power of one server before PUE.

    P = base_w + gpus x TDP x (idle_share + (1 - idle_share) x utilisation): a GPU draws
    ``idle_power_share`` of its TDP when idle and its TDP at full utilisation (a linear model;
    set idle_power_share = 1 for a worst case at TDP).
    """
    u = np.clip(np.asarray(utilisation, dtype=float), 0.0, 1.0)
    return base_w + gpus_per_server * gpu_tdp_w * (idle_power_share + (1 - idle_power_share) * u)


def energy_usd_per_month(power_w, servers, pue, usd_per_kwh, hours_per_month=730.0):
    """servers x P x PUE x hours / 1000 x price."""
    return servers * power_w * pue * hours_per_month / 1000.0 * usd_per_kwh


# --------------------------------------------------------------------------------------------
# array forms (Monte Carlo engine)


def scale_to_zero_hours_rows(
    hourly_load_replicas,
    hourly_requests_per_s,
    *,
    replicas_cap,
    idle_timeout_s=300.0,
    startup_s=0.0,
    min_billing_s=0.0,
):
    """:func:`scale_to_zero_hours` for many samples: rows are samples, the last axis hours.

    ``hourly_*`` have shape (N, P); ``replicas_cap``, ``idle_timeout_s``, ``startup_s`` and
    ``min_billing_s`` are floats or (N,) arrays. Returns (N,) billed replica-hours per period.
    """
    load = np.asarray(hourly_load_replicas, dtype=float)
    lam = np.asarray(hourly_requests_per_s, dtype=float)
    col = _column
    busy = 3600.0 * load
    periods = 3600.0 * lam * np.exp(-lam * col(idle_timeout_s))
    per_period = np.maximum(col(idle_timeout_s) + col(startup_s), col(min_billing_s))
    billed = busy + periods * per_period
    return np.minimum(billed, 3600.0 * col(replicas_cap)).sum(axis=-1) / 3600.0


def _column(x):
    a = np.asarray(x, dtype=float)
    return a[..., None] if a.ndim else a


def onprem_costs_usd_per_month(
    units,
    server_price_usd,
    years,
    *,
    residual_share=0.0,
    cost_of_capital_per_year=0.0,
    maintenance_share_per_year=0.0,
    power_w=0.0,
    pue=1.0,
    usd_per_kwh=0.0,
    hours_per_month=730.0,
    facilities_usd_per_server_year=0.0,
    ops_usd_per_year=0.0,
    implementation_usd=0.0,
    horizon_months=12,
    include_capex=True,
) -> dict[str, np.ndarray | float]:
    """Monthly on-prem cost components (floats or arrays), in the deterministic engine's order.

    - capex: :func:`capital_recovery_usd_per_month` of units x server price (0 when
      ``include_capex`` is False: committed hardware under the marginal lens)
    - maintenance: capex x maintenance share per year / 12
    - energy: :func:`energy_usd_per_month` of the servers at ``power_w`` each
    - facilities: units x facilities per server-year / 12
    - operations: ops per year / 12
    - implementation: one-off implementation spread over the horizon (0 without capex)

    Returns
    -------
    dict
        Keys ``capex``, ``maintenance``, ``energy``, ``facilities``, ``operations``,
        ``implementation``; their sum in this order is the monthly cost.
    """
    capex = units * server_price_usd
    cap_m = capital_recovery_usd_per_month(capex, years, residual_share, cost_of_capital_per_year)
    return {
        "capex": cap_m if include_capex else 0.0,
        "maintenance": capex * maintenance_share_per_year / 12.0,
        "energy": energy_usd_per_month(power_w, units, pue, usd_per_kwh, hours_per_month),
        "facilities": units * facilities_usd_per_server_year / 12.0,
        "operations": ops_usd_per_year / 12.0,
        "implementation": implementation_usd / horizon_months if include_capex else 0.0,
    }
