"""Structure of a scenario, decided once: options, eligibility, catalog rows, price sources.

Everything here is fixed for every evaluation of the model (medians, samples or scenarios):
which classes an option may serve (its ``classes``, quality tiers, fine-tune qualification, an
API whose latency cannot meet the class's SLO (:func:`api_slo_share`), a replica that cannot
carry the class at its SLO), which catalog rows apply, where a price comes from, the billing
mode and the profile length. Only numbers vary between evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

from planner.distributions import is_distribution, median_of

DEFAULT_LIFE_YEARS = 5.0
#: A hosted API's latency when neither the scenario nor the catalog gives one (an assumption,
#: not a measurement: the cost output says so, :func:`api_latency_note`).
DEFAULT_API_TTFT_S = 0.5
DEFAULT_API_OUTPUT_TOKENS_PER_S = 60.0


def _latency_pick(simulation: Any, row: Mapping[str, Any], own: str, col: str,
                  default: float) -> tuple[float, str]:
    v = getattr(simulation, own, None)
    if v is not None:
        return float(v), "scenario"
    v = row.get(col)
    if v is not None and v == v:
        return float(v), "catalog"
    return default, "default"


def _latency_sourced(row: Mapping[str, Any], simulation: Any
                     ) -> tuple[tuple[float, str], tuple[float, str]]:
    """``((ttft_s, source), (output_tokens_per_s, source))`` with ``source`` one of
    ``scenario``, ``catalog``, ``default`` (:func:`api_latency`'s precedence)."""
    return (_latency_pick(simulation, row, "api_ttft_s", "ttft_s", DEFAULT_API_TTFT_S),
            _latency_pick(simulation, row, "api_output_tokens_per_s", "output_tokens_per_s",
                          DEFAULT_API_OUTPUT_TOKENS_PER_S))


def api_latency(row: Mapping[str, Any], simulation: Any = None) -> tuple[float, float]:
    """``(ttft_s, output_tokens_per_s)`` of a hosted API, for every engine.

    The scenario's ``[simulation] api_ttft_s`` / ``api_output_tokens_per_s`` (``simulation``),
    else the catalog row's ``ttft_s`` / ``output_tokens_per_s`` (api_prices.csv), else
    :data:`DEFAULT_API_TTFT_S` / :data:`DEFAULT_API_OUTPUT_TOKENS_PER_S`. ``planner
    simulate``'s spillover API, ``planner optimize --verify``'s API traffic and the cost
    model's SLO check (:func:`api_eligible`) all take it from here.
    """
    (ttft_s, _), (tps, _) = _latency_sourced(row, simulation)
    return ttft_s, tps


def api_latency_note(name: str, row: Mapping[str, Any], simulation: Any = None) -> str | None:
    """A note when :func:`api_latency` falls back to the uncited defaults for API ``name``
    (neither ``[simulation]`` nor the catalog gives the figure), else ``None``."""
    (ttft_s, how_t), (tps, how_v) = _latency_sourced(row, simulation)
    assumed = [f"TTFT {ttft_s:g} s"] if how_t == "default" else []
    assumed += [f"{tps:g} output tokens/s"] if how_v == "default" else []
    if not assumed:
        return None
    return (f"api.{name}: latency assumed, {', '.join(assumed)} (no catalog figure; "
            "[simulation] api_ttft_s / api_output_tokens_per_s set it)")


def api_slo_share(ttft_s: float, output_tokens_per_s: float, output_cdf: Any, *,
                  slo_ttft_s: float | None = None, slo_tpot_s: float | None = None,
                  slo_e2e_s: float | None = None) -> float:
    """Share of a class's requests a hosted API serves within every bound of the SLO.

    The simulator's API latency is deterministic (:class:`planner.sim.plan.ApiTarget`):
    ``TTFT = ttft_s``, ``e2e = ttft_s + n / output_tokens_per_s`` for ``n`` output tokens,
    ``TPOT = (e2e - TTFT) / (n - 1)`` (none for ``n <= 1``), and a request meets the SLO when
    it meets every bound (:mod:`planner.sim.results`). So a request meets it iff ``ttft_s <=
    slo_ttft_s``, ``n <= (slo_e2e_s - ttft_s) x output_tokens_per_s`` and ``n <= 1`` or
    ``n / ((n - 1) x output_tokens_per_s) <= slo_tpot_s`` (which holds from some ``n_lo`` on
    when ``1 / output_tokens_per_s < slo_tpot_s``), and the share is ``F(n_hi) - F(n_lo - 1) +
    F(1)`` with ``F`` the distribution of ``n``: exact against the simulator, given the same
    latency figures (:func:`api_latency`) and lengths.

    Parameters
    ----------
    ttft_s, output_tokens_per_s : the API's latency (:func:`api_latency`)
    output_cdf : callable, ``m -> P(n <= m)`` for the class's output tokens per request
        (:func:`output_tokens_cdf`)
    slo_ttft_s, slo_tpot_s, slo_e2e_s : the class's bounds (``None``: unbounded)

    Returns
    -------
    float
        Share of requests in [0, 1] meeting every bound; compare it with the SLO percentile.
    """
    if slo_ttft_s is not None and ttft_s > slo_ttft_s:
        return 0.0
    v = float(output_tokens_per_s)
    n_hi = math.inf
    if slo_e2e_s is not None:
        if ttft_s > slo_e2e_s:
            return 0.0
        n_hi = math.floor((slo_e2e_s - ttft_s) * v * (1 + 1e-12))
    n_lo = 2.0  # TPOT holds for every n >= n_lo (n <= 1 has no TPOT)
    if slo_tpot_s is not None:
        pv = slo_tpot_s * v
        n_lo = math.inf if pv <= 1.0 else max(2.0, math.ceil(pv / (pv - 1.0) * (1 - 1e-12)))
    low = float(output_cdf(min(1.0, n_hi)))
    if n_lo > n_hi:
        return low
    return min(1.0, low + float(output_cdf(n_hi)) - float(output_cdf(n_lo - 1.0)))


def output_tokens_cdf(count: Any, tokens: float, factor: float, length_cv: float):
    """``m -> P(n <= m)``: the law of a class's output tokens per request as the simulator
    draws them (:class:`planner.sim.requests_from_scenario.TokenLength`): ``n = rint(factor x
    x)`` with ``x`` the length in tokens -- ``tokens`` (the median count converted to tokens),
    scaled by the count's distribution when ``count`` is one, else spread lognormally with mean
    ``tokens`` and coefficient of variation ``length_cv`` (``[simulation] length_cv``), else
    fixed. ``factor``: calls per request x samples per call.
    """
    scale = float(tokens) * float(factor)
    if is_distribution(count):
        m0 = float(median_of(count))
        ratio = scale / m0 if m0 > 0 else 0.0

        def cdf(m: float) -> float:  # P(ratio x X < m + 1/2), by bisection on the quantile
            if math.isinf(m):
                return 1.0 if m > 0 else 0.0
            if ratio <= 0:
                return 1.0 if m >= 0 else 0.0
            lim = (m + 0.5) / ratio
            lo, hi = 0.0, 1.0
            if float(count.quantile(1.0)) < lim:
                return 1.0
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                if float(count.quantile(mid)) < lim:
                    lo = mid
                else:
                    hi = mid
            return lo
        return cdf
    if length_cv > 0 and scale > 0:
        s2 = math.log1p(length_cv * length_cv)
        z = NormalDist()

        def cdf(m: float) -> float:
            if m + 0.5 <= 0:
                return 0.0
            if math.isinf(m):
                return 1.0
            return z.cdf((math.log((m + 0.5) / scale) + 0.5 * s2) / math.sqrt(s2))
        return cdf
    n = float(max(round(scale), 0))
    return lambda m: 1.0 if n <= m else 0.0


def tier(dep: Any, default_row: dict[str, Any] | None) -> float | None:
    """Quality tier of a deployment: its own, else its catalog row's (1 best)."""
    if getattr(dep, "quality_tier", None) is not None:
        return float(dep.quality_tier)
    if default_row is not None and default_row.get("quality_tier") is not None:
        return float(default_row["quality_tier"])
    return None


def eligible(sc: Any, dep: Any, tier_: float | None, ft: Any) -> dict[str, str]:
    """class -> '' when the option may serve it, else the reason it may not (its ``classes``,
    quality tier, fine-tune qualification; an API's latency is :func:`api_eligible`'s)."""
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
        out[cname] = ""
    return out


def api_slo_reason(sc: Any, cat: Any, cname: str, tokenizer: str | None,
                   ttft_s: float, output_tokens_per_s: float,
                   sources: tuple[str, str] = ("", "")) -> str:
    """'' when an API of latency ``(ttft_s, output_tokens_per_s)`` serves class ``cname``
    within its SLO at the SLO's percentile (:func:`api_slo_share`, at the medians of the
    bounds, with the class's output tokens in ``tokenizer`` as the simulator draws them), else
    why not. ``sources``: where the two figures come from (``catalog``, ``scenario`` or
    ``default``, :func:`api_latency`), named in the reason."""
    from planner.config import med
    from planner.workload import resolve_length

    wc = sc.workload[cname]
    slo = wc.slo
    if slo is None or all(getattr(slo, k) is None for k in ("ttft_s", "tpot_s", "e2e_s")):
        return ""
    bounds = {k: (None if getattr(slo, k) is None else float(median_of(getattr(slo, k))))
              for k in ("ttft_s", "tpot_s", "e2e_s")}
    length = wc.output
    count = next(getattr(length, k) for k in ("tokens", "words", "chars")
                 if getattr(length, k) is not None)
    tokens = resolve_length(length, tokenizer, cat).tokens
    factor = float(med(wc.calls_per_request)) * float(med(wc.samples_per_call))
    cdf = output_tokens_cdf(count, tokens, factor, float(sc.simulation.length_cv))
    share = api_slo_share(ttft_s, output_tokens_per_s, cdf,
                          slo_ttft_s=bounds["ttft_s"], slo_tpot_s=bounds["tpot_s"],
                          slo_e2e_s=bounds["e2e_s"])
    target = float(slo.percentile) / 100.0
    if share >= target - 1e-12:
        return ""
    said = {"catalog": "catalog ", "default": "assumed ", "scenario": "[simulation] "}
    if bounds["ttft_s"] is not None and ttft_s > bounds["ttft_s"]:
        return (f"TTFT SLO {bounds['ttft_s']:g} s cannot be met (the API's "
                f"{said.get(sources[0], '')}TTFT is {ttft_s:g} s)")
    lat = (f"the API's {said.get(sources[1], '')}speed is {output_tokens_per_s:g} output "
           f"tokens/s, TTFT {ttft_s:g} s")
    what = [f"{k.removesuffix('_s').upper()} {v:g} s" for k, v in bounds.items()
            if v is not None and k != "ttft_s"]
    return (f"SLO ({', '.join(what)}) met by {share:.1%} of requests, under p{slo.percentile:g} "
            f"({lat})")


def api_eligible(sc: Any, cat: Any, name: str) -> dict[str, str]:
    """class -> '' when the API deployment ``name`` may serve it, else why not.

    :func:`eligible` at the API's :func:`tier` (its own, else its catalog row's), with its
    fine-tune's tier for the classes the fine-tune qualifies for, and its latency
    (:func:`api_latency`, the figures the simulator uses) against each class's SLO
    (:func:`api_slo_reason`) -- the rule the model compiles every API option with.
    """
    dep = sc.api[name]
    ft = sc.finetune.get(dep.fine_tune) if dep.fine_tune else None
    row = cat.api(dep.offering)
    out = eligible(sc, dep, tier(dep, row), ft)
    (ttft_s, src_t), (tps, src_v) = _latency_sourced(row, sc.simulation)
    tokenizer = dep.tokenizer or row.get("tokenizer")
    for cname, why in out.items():
        if not why:
            out[cname] = api_slo_reason(sc, cat, cname, tokenizer, ttft_s, tps, (src_t, src_v))
    return out


def api_classes(sc: Any, cat: Any, name: str) -> tuple[str, ...]:
    """Classes the API deployment ``name`` may serve, as the cost model decides it
    (:func:`api_eligible`). The simulator's spillover API serves exactly these."""
    return tuple(c for c, why in api_eligible(sc, cat, name).items() if not why)


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
