"""Deterministic cost engine: every deployment option priced at the medians of its inputs.

Each deployment option (API offering, cloud GPU pool, on-prem servers) is priced as if it served
every workload class it is eligible for (its ``classes`` list, the class's quality tier, and
fine-tune qualification); classes it cannot serve are listed. Choosing a *mix* is the
optimiser's job. Every figure comes with the formula or catalog row it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from planner.catalog import Catalog, load_catalog
from planner.config import (
    ApiDeployment,
    CloudDeployment,
    FineTune,
    OnPremDeployment,
    Scenario,
    med,
)
from planner.costs import selfhosted as sh
from planner.costs import training as tr
from planner.costs.api import (
    ApiPrices,
    api_cost_per_request,
    request_fee_usd,
)
from planner.errors import PlannerError
from planner.model.price import api_prices
from planner.workload import ClassLoad, class_load

DEFAULT_LIFE_YEARS = 5.0


@dataclass
class _Trace:
    """Catalog rows used, for the assumptions table."""

    rows: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def use(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        self.rows[(table, row.get("id") or row.get("tokenizer"))] = row
        return row

    def frame(self) -> pd.DataFrame:
        recs = [
            {"table": t, "id": i, "source": r.get("source"), "as_of": r.get("as_of")}
            for (t, i), r in self.rows.items()
        ]
        return pd.DataFrame(recs, columns=["table", "id", "source", "as_of"])


@dataclass(frozen=True)
class Results:
    """Tidy results of one deterministic evaluation.

    Attributes
    ----------
    summary : one row per deployment option (usd_per_month, usd_horizon, usd_per_mtok ...)
    costs : tidy cost lines (deployment, class, component, usd_per_month, basis)
    capacity : per self-hosted deployment and class: replica throughput, latency, limits
    classes : per class volumes (as served by each deployment's tokenizer)
    finetune, pretraining, inference_flops : training and first-principles estimates
    assumptions : catalog rows used, with source and as_of
    """

    scenario: str
    lens: str
    horizon_months: int
    summary: pd.DataFrame
    costs: pd.DataFrame
    capacity: pd.DataFrame
    classes: pd.DataFrame
    finetune: pd.DataFrame
    pretraining: pd.DataFrame
    inference_flops: pd.DataFrame
    assumptions: pd.DataFrame
    unit_economics: pd.DataFrame
    token_economics: pd.DataFrame
    warnings: tuple[str, ...] = ()

    def tables(self) -> dict[str, pd.DataFrame]:
        return {
            "summary": self.summary, "costs": self.costs, "capacity": self.capacity,
            "classes": self.classes, "finetune": self.finetune,
            "pretraining": self.pretraining, "inference_flops": self.inference_flops,
            "unit_economics": self.unit_economics, "token_economics": self.token_economics,
            "assumptions": self.assumptions,
        }


# ------------------------------------------------------------------------------------------
# helpers


def _tier(dep, default_row: dict[str, Any] | None) -> float | None:
    if getattr(dep, "quality_tier", None) is not None:
        return float(dep.quality_tier)
    if default_row is not None and default_row.get("quality_tier") is not None:
        return float(default_row["quality_tier"])
    return None


def _eligible(sc: Scenario, dep, tier: float | None, ft: FineTune | None) -> dict[str, str]:
    """class -> '' when eligible, else the reason it is not."""
    out: dict[str, str] = {}
    for cname, wc in sc.workload.items():
        if dep.classes is not None and cname not in dep.classes:
            out[cname] = "not in the deployment's classes"
            continue
        t = tier
        if ft is not None and cname in ft.qualifies_for and ft.quality_tier is not None:
            t = float(ft.quality_tier)
        if wc.min_quality_tier is not None and t is not None and t > wc.min_quality_tier:
            out[cname] = f"quality tier {t:g} worse than the class's minimum {wc.min_quality_tier}"
            continue
        out[cname] = ""
    return out


def _hourly(cl: ClassLoad, periods: int) -> np.ndarray:
    """Requests/s in each hour; batch-eligible requests are spread evenly (deferrable)."""
    h = cl.hourly_requests_per_s()
    if h.size != periods:
        h = np.tile(h, periods // h.size)
    flat = np.full(periods, h.mean())
    return (1.0 - cl.batch_share) * h + cl.batch_share * flat


def finetune_cost(ft: FineTune, cat: Catalog, trace: _Trace) -> dict[str, Any]:
    """One-off cost of a fine-tune option (retry multiplier included).

    API: ft_train_usd_per_mtok x training_tokens x epochs x retry_multiplier / 1e6
    (article 000: budget 10-20x the single-run price, since fine-tuning rarely works first time).
    GPU: FLOPs = 6 N D x epochs (x lora factor 2/3), hours = FLOPs / (gpus x peak x MFU) x retries.
    """
    tokens = med(ft.training_tokens) * med(ft.epochs)
    retry = med(ft.retry_multiplier)
    if ft.method == "api":
        row = trace.use("apis", cat.api(ft.base_model))
        price = med(ft.ft_train_usd_per_mtok) if ft.ft_train_usd_per_mtok is not None else row.get(
            "ft_train_usd_per_mtok"
        )
        if price is None:
            raise PlannerError(
                f"fine-tune: API offering {ft.base_model!r} has no fine-tuning price in the "
                "catalog; set ft_train_usd_per_mtok"
            )
        once = price * tokens / 1e6
        return {
            "method": "api", "tokens_trained": tokens, "usd_single_run": once,
            "retry_multiplier": retry, "usd": once * retry, "gpu_hours": 0.0, "gpus": 0,
            "mem_gb": np.nan,
            "basis": f"{price:g} usd/Mtok x {tokens:g} tokens x {retry:g} retries",
        }
    llm = trace.use("llms", cat.llm(ft.base_model))
    if ft.accelerator is None:
        raise PlannerError(f"fine-tune {ft.base_model!r}: method {ft.method} needs accelerator")
    acc = trace.use("accelerators", cat.accelerator(ft.accelerator))
    factor = 1.0
    if ft.method == "lora":
        factor = med(ft.lora_flops_factor) if ft.lora_flops_factor is not None else tr.LORA_FLOPS_FACTOR
    params_b = float(llm["params_b"])
    flops = float(tr.training_flops(params_b, tokens, factor))
    mem = float(
        tr.full_finetune_memory_gb(params_b) if ft.method == "full" else tr.lora_memory_gb(params_b)
    )
    gpus = ft.gpus or int(np.ceil(mem / (0.9 * float(acc["mem_gb"]))))
    mfu = med(ft.mfu) if ft.mfu is not None else 0.35
    peak = float(acc["bf16_tflops"])
    hours = float(tr.chip_hours(flops, peak * gpus, mfu))
    price = med(ft.usd_per_gpu_hour) if ft.usd_per_gpu_hour is not None else _cheapest_gpu_hour(
        cat, ft.accelerator, "on-demand", trace
    )
    once = hours * gpus * price
    return {
        "method": ft.method, "tokens_trained": tokens, "usd_single_run": once,
        "retry_multiplier": retry, "usd": once * retry, "gpu_hours": hours * gpus * retry,
        "gpus": gpus, "mem_gb": mem,
        "basis": (
            f"{6 * factor:g} N D = {flops:.3g} FLOPs on {gpus} x {ft.accelerator} "
            f"({peak:g} TFLOPS, MFU {mfu:g}) = {hours:.3g} h x {price:g} usd/GPU-h x {retry:g}"
        ),
    }


def _cheapest_gpu_hour(cat: Catalog, accelerator: str, plan: str, trace: _Trace) -> float:
    best = cat.cheapest_cloud(accelerator, plan, required=True)
    trace.use("clouds", cat.cloud(best["id"]))
    return float(best["usd_per_gpu_hour"])


# ------------------------------------------------------------------------------------------
# API


def _fees(dep, requests_per_month: float) -> list[tuple[str, float, str]]:
    out = []
    for f in dep.request_fees:
        usd = request_fee_usd(
            med(f.usd_per_million_requests), med(f.gb), med(f.seconds), med(f.usd_per_gb_s)
        )
        basis = (
            f"{med(f.usd_per_million_requests):g} usd per 1M requests"
            if f.usd_per_million_requests is not None
            else f"{med(f.gb):g} GB x {med(f.seconds):g} s x {med(f.usd_per_gb_s):g} usd/GB-s"
        )
        out.append((f"fee:{f.name}", usd * requests_per_month, basis))
    return out


# ------------------------------------------------------------------------------------------
# evaluation


def evaluate(
    sc: Scenario, catalog: Catalog | None = None, *, volume_scale: float = 1.0
) -> Results:
    """Price every deployment option of a scenario.

    Parameters
    ----------
    sc : Scenario
    catalog : Catalog, optional
    volume_scale : float
        Multiplies every class's requests per day (used by the break-even solvers).
    """
    cat = catalog or load_catalog()
    ev = _Evaluator(sc, cat, volume_scale)
    return ev.run()


class _Evaluator:
    def __init__(self, sc: Scenario, cat: Catalog, scale: float):
        self.sc, self.cat, self.scale = sc, cat, scale
        self.trace = _Trace()
        self.lines: list[dict[str, Any]] = []
        self.summary: list[dict[str, Any]] = []
        self.capacity: list[dict[str, Any]] = []
        self.class_rows: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.hpm = sc.planning.hours_per_month
        self.horizon = sc.scenario.horizon_months
        self.ft_costs = {
            name: finetune_cost(ft, cat, self.trace) for name, ft in sc.finetune.items()
        }

    def load(self, cname: str, tokenizer: str | None) -> ClassLoad:
        cl = class_load(self.sc, cname, self.sc.workload[cname], tokenizer, self.cat)
        if self.scale != 1.0:
            from dataclasses import replace

            cl = replace(cl, requests_per_day=cl.requests_per_day * self.scale)
        return cl

    def line(self, dep: str, kind: str, cname: str, component: str, usd: float, basis: str):
        self.lines.append({
            "deployment": dep, "kind": kind, "class": cname, "component": component,
            "usd_per_month": float(usd), "basis": basis,
        })

    def class_row(self, dep: str, cl: ClassLoad):
        self.class_rows.append({
            "deployment": dep, "class": cl.name, "requests_per_day": cl.requests_per_day,
            "requests_per_month": cl.requests_per_month(self.hpm),
            "input_tokens_per_request": cl.input_tokens,
            "output_tokens_per_request": cl.output_tokens,
            "tokens_per_month": cl.tokens_per_month(self.hpm),
            "peak_requests_per_s": cl.peak_requests_per_s,
            "basis_input": cl.basis["input_tokens"], "basis_output": cl.basis["output_tokens"],
        })

    def one_off(self, dep: str, kind: str, ft_name: str | None) -> float:
        if ft_name is None:
            return 0.0
        c = self.ft_costs[ft_name]
        self.line(dep, kind, "", f"fine-tune {ft_name} (one-off / horizon)",
                  c["usd"] / self.horizon, c["basis"])
        return c["usd"]

    def run(self) -> Results:
        for name, (kind, dep) in self.sc.deployments().items():
            if kind == "api":
                self.api(name, dep)
            else:
                self.selfhosted(name, kind, dep)
        return Results(
            scenario=self.sc.name,
            lens=self.sc.planning.lens,
            horizon_months=self.horizon,
            summary=_frame(self.summary, SUMMARY_COLUMNS),
            costs=_frame(self.lines, ["deployment", "kind", "class", "component",
                                      "usd_per_month", "basis"]),
            capacity=_frame(self.capacity, CAPACITY_COLUMNS),
            classes=_frame(self.class_rows, CLASS_COLUMNS),
            finetune=_frame(
                [{"finetune": k, **v} for k, v in self.ft_costs.items()],
                ["finetune", "method", "tokens_trained", "usd_single_run", "retry_multiplier",
                 "usd", "gpu_hours", "gpus", "mem_gb", "basis"],
            ),
            pretraining=self.pretraining(),
            inference_flops=self.inference_flops(),
            unit_economics=self.unit_economics(),
            token_economics=self.token_economics(),
            assumptions=self.trace.frame(),
            warnings=tuple(self.warnings),
        )

    # -- API -------------------------------------------------------------------------------
    def api(self, name: str, dep: ApiDeployment):
        row = self.trace.use("apis", self.cat.api(dep.offering))
        ft = self.sc.finetune.get(dep.fine_tune) if dep.fine_tune else None
        elig = _eligible(self.sc, dep, _tier(dep, row), ft)
        prices = api_prices(dep, row, ft is not None)
        tokenizer = dep.tokenizer or row.get("tokenizer")
        monthly = 0.0
        tokens = 0.0
        out_tokens = 0.0
        self.rpm = 0.0
        for cname, why in elig.items():
            if why:
                continue
            cl = self.load(cname, tokenizer)
            self.class_row(name, cl)
            wc = self.sc.workload[cname]
            parts = api_cost_per_request(
                prices, cl.input_tokens, cl.output_tokens,
                cached_share=cl.cached_share, batch_share=cl.batch_share,
                calls_per_request=med(wc.calls_per_request), discount=med(dep.discount),
                gross_margin=med(dep.gross_margin),
            )
            rpm = cl.requests_per_month(self.hpm)
            for comp, usd in parts.items():
                usd_m = float(np.asarray(usd)) * rpm
                if usd_m == 0.0:
                    continue
                self.line(name, "api", cname, comp, usd_m, _api_basis(comp, prices, cl, rpm))
                monthly += usd_m
            for comp, usd_m, basis in _fees(dep, rpm):
                self.line(name, "api", cname, comp, usd_m, basis)
                monthly += usd_m
            tokens += cl.tokens_per_month(self.hpm)
            out_tokens += rpm * cl.output_tokens
            self.rpm += rpm
        once = self.one_off(name, "api", dep.fine_tune)
        monthly += once / self.horizon
        self.add_summary(name, "api", dep.offering, elig, monthly, once, tokens, out_tokens)

    # -- self-hosted ------------------------------------------------------------------------
    def selfhosted(self, name: str, kind: str, dep: CloudDeployment | OnPremDeployment):
        from planner.perf import AcceleratorSpec, LLMSpec, PerfParams, replica_capacity

        sc, cat = self.sc, self.cat
        llm_row = self.trace.use("llms", cat.llm(dep.model))
        offer = server = None
        if kind == "cloud" and dep.offering is not None:
            offer = self.trace.use("clouds", cat.cloud(dep.offering))
        if kind == "onprem" and dep.server is not None:
            server = self.trace.use("servers", cat.server(dep.server))
        acc_id = dep.accelerator or (offer or server or {}).get("accelerator")
        acc_row = self.trace.use("accelerators", cat.accelerator(acc_id))
        ft = sc.finetune.get(dep.fine_tune) if dep.fine_tune else None
        elig = _eligible(sc, dep, _tier(dep, llm_row), ft)
        tokenizer = dep.tokenizer or llm_row.get("tokenizer")
        specs: dict[str, Any] = {}

        def llm():
            if "llm" not in specs:
                specs["llm"] = LLMSpec.from_row(llm_row)
            return specs["llm"]

        def acc():
            if "acc" not in specs:
                specs["acc"] = AcceleratorSpec.from_row(acc_row)
            return specs["acc"]

        params = PerfParams.from_mapping(dep.perf) if dep.perf else None
        loads: list[tuple[ClassLoad, float]] = []
        periods = 168 if any(
            not isinstance(w.diurnal, str) and len(w.diurnal) == 168 for w in sc.workload.values()
        ) else 24
        for cname, why in list(elig.items()):
            if why:
                continue
            cl = self.load(cname, tokenizer)
            slo = sc.workload[cname].slo
            slo_e2e = med(slo.e2e_s) if slo and slo.e2e_s is not None else None
            if dep.capacity_requests_per_s is not None:
                rps = med(dep.capacity_requests_per_s)
                capd = {"fits": True, "limited_by": "stated"}
                basis = "scenario capacity_requests_per_s (performance model not used)"
            else:
                cap = replica_capacity(
                    llm(), acc(), gpus=dep.gpus_per_replica, precision=dep.precision,
                    input_tokens=cl.input_tokens, output_tokens=cl.output_tokens,
                    ttft_slo_s=med(slo.ttft_s) if slo and slo.ttft_s is not None else None,
                    tpot_slo_s=med(slo.tpot_s) if slo and slo.tpot_s is not None else None,
                    params=params,
                )
                capd = cap.to_dict()
                rps = cap.requests_per_s
                basis = capd.get("method", "perf model")
            self.capacity.append({
                "deployment": name, "class": cname, "model": dep.model, "accelerator": acc_id,
                "gpus_per_replica": dep.gpus_per_replica, "precision": dep.precision,
                **{k: capd.get(k, np.nan) for k in CAPACITY_PERF},
                "requests_per_s_per_replica": rps, "capacity_basis": basis,
            })
            if not capd.get("fits", True) or rps <= 0:
                why = capd.get("limited_by", "no capacity")
                if capd.get("meets_slo") is False:
                    why = "the latency SLO cannot be met even one request at a time"
                elig[cname] = f"cannot be served: {why}"
                continue
            if slo_e2e is not None and capd.get("e2e_s") and capd["e2e_s"] > slo_e2e:
                self.warnings.append(
                    f"{name}/{cname}: modelled end-to-end latency {capd['e2e_s']:.3g} s exceeds "
                    f"the SLO {slo_e2e:g} s"
                )
            self.class_row(name, cl)
            loads.append((cl, rps))
        hourly_load = np.zeros(periods)
        hourly_rps = np.zeros(periods)
        mean_load = 0.0
        peak_load = 0.0
        for cl, rps in loads:
            h = _hourly(cl, periods)
            hourly_load += h / rps
            hourly_rps += h
            mean_load += cl.mean_requests_per_s / rps
        if loads:
            peak_load = float(hourly_load.max())
            if sc.planning.peak_to_average is not None and np.allclose(hourly_load, hourly_load[0]):
                peak_load = mean_load * sc.planning.peak_to_average
        plan = sc.planning
        if dep.replicas is not None:
            replicas = float(dep.replicas)
            if replicas > 0 and peak_load / replicas > 1.0:
                self.warnings.append(
                    f"{name}: {dep.replicas} fixed replica(s) run at {peak_load / replicas:.0%} of "
                    "modelled capacity at the peak hour: requests will queue"
                )
        else:
            replicas = float(sh.replicas_needed(peak_load, plan.utilisation_target,
                                                plan.ha_reserve_replicas))
        monthly = 0.0
        rpm_total = sum(cl.requests_per_month(self.hpm) for cl, _ in loads)
        self.rpm = rpm_total
        tokens = sum(cl.tokens_per_month(self.hpm) for cl, _ in loads)
        out_tokens = sum(cl.requests_per_month(self.hpm) * cl.output_tokens for cl, _ in loads)
        if kind == "cloud":
            units, gpus_paid, monthly = self.cloud_cost(
                name, dep, offer, acc_id, replicas, hourly_load, hourly_rps
            )
        else:
            units, gpus_paid, monthly = self.onprem_cost(
                name, dep, server, acc_row, replicas, mean_load
            )
        for comp, usd_m, basis in _fees(dep, rpm_total):
            self.line(name, kind, "", comp, usd_m, basis)
            monthly += usd_m
        once = self.one_off(name, kind, dep.fine_tune)
        monthly += once / self.horizon
        util = mean_load * dep.gpus_per_replica / gpus_paid if gpus_paid else 0.0
        offering = dep.offering if kind == "cloud" else dep.server
        self.add_summary(
            name, kind, offering or f"{acc_id}", elig, monthly, once, tokens, out_tokens,
            replicas=replicas, gpus=gpus_paid, units=units, utilisation=util,
            model=dep.model, accelerator=acc_id,
        )

    def cloud_cost(self, name, dep: CloudDeployment, offer, acc_id, replicas, hourly_load,
                   hourly_rps):
        gpi = dep.gpus_per_instance or int((offer or {}).get("gpus_per_instance") or 1)
        if dep.usd_per_instance_hour is not None:
            price_inst, src = med(dep.usd_per_instance_hour), "scenario usd_per_instance_hour"
        elif dep.usd_per_gpu_hour is not None:
            price_inst, src = med(dep.usd_per_gpu_hour) * gpi, "scenario usd_per_gpu_hour x GPUs"
        elif offer is not None and offer.get("usd_per_instance_hour") is not None:
            price_inst, src = float(offer["usd_per_instance_hour"]), f"cloud_prices.csv {offer['id']}"
        elif offer is not None and offer.get("usd_per_gpu_hour") is not None:
            price_inst = float(offer["usd_per_gpu_hour"]) * gpi
            src = f"cloud_prices.csv {offer['id']} per-GPU price x {gpi}"
        else:
            price_inst = _cheapest_gpu_hour(self.cat, acc_id, dep.plan, self.trace) * gpi
            src = f"cheapest {dep.plan} {acc_id} row in cloud_prices.csv x {gpi}"
        plan = (offer or {}).get("plan") or dep.plan
        factor = 1.0
        if plan == "spot":
            ov = dep.interruption_overhead
            ov = med(ov) if ov is not None else (offer or {}).get("interruption_overhead") or 0.0
            factor = float(sh.spot_factor(ov))
            src += f", spot x 1/(1 - {ov:g} interruption overhead)"
        units, gpus_paid = sh.pack(replicas, dep.gpus_per_replica, gpi)
        units, gpus_paid = float(units), float(gpus_paid)
        days = self.hpm / 24.0
        if dep.billing == "always-on":
            hours = units * self.hpm
            basis = f"{units:g} instances x {self.hpm:g} h/month"
        elif dep.billing == "active-window":
            hours = units * dep.active_hours_per_day * days
            basis = f"{units:g} instances x {dep.active_hours_per_day:g} h/day x {days:.4g} days"
        else:
            startup = med(dep.startup_s) if dep.startup_s is not None else (offer or {}).get("startup_s") or 0.0
            minb = med(dep.min_billing_s) if dep.min_billing_s is not None else (offer or {}).get("min_billing_s") or 0.0
            per_period = sh.scale_to_zero_hours(
                hourly_load, hourly_rps, replicas_cap=max(replicas, 1.0),
                idle_timeout_s=med(dep.idle_timeout_s), startup_s=startup, min_billing_s=minb,
            )
            inst_per_replica = units / replicas if replicas else 1.0
            hours = float(per_period) * inst_per_replica * days * 24.0 / hourly_load.size
            basis = (
                f"scale-to-zero: busy time + idle gaps > {med(dep.idle_timeout_s):g} s "
                f"(start-up {startup:g} s, min billing {minb:g} s) = {hours:.4g} instance-h/month"
            )
        usd = hours * price_inst * factor
        if dep.committed and self.sc.planning.lens == "marginal":
            self.line(name, "cloud", "", "gpu rental (committed, excluded: marginal lens)", 0.0,
                      basis)
            return units, gpus_paid, 0.0
        self.line(name, "cloud", "", "gpu rental", usd,
                  f"{basis} x {price_inst:.4g} usd/instance-h ({src})")
        return units, gpus_paid, usd

    def onprem_cost(self, name, dep: OnPremDeployment, server, acc_row, replicas, mean_load):
        gps = dep.gpus_per_server or int((server or {}).get("gpus_per_server") or 8)
        if dep.server_price_usd is not None:
            price, psrc = med(dep.server_price_usd), "scenario server_price_usd"
        elif server is not None and server.get("server_price_usd") is not None:
            price, psrc = float(server["server_price_usd"]), f"servers.csv {server['id']}"
        else:
            raise PlannerError(
                f"onprem.{name}: no server price; set server (a servers.csv id) or server_price_usd"
            )
        if dep.servers is not None:
            units = float(dep.servers)
            gpus_paid = units * gps
            if replicas * dep.gpus_per_replica > gpus_paid:
                self.warnings.append(
                    f"{name}: {dep.servers} server(s) hold {gpus_paid:g} GPUs but the load needs "
                    f"{replicas * dep.gpus_per_replica:g}"
                )
        else:
            units, gpus_paid = (float(x) for x in sh.pack(replicas, dep.gpus_per_replica, gps))
        years = (
            med(dep.amortisation_years) if dep.amortisation_years is not None
            else (server or {}).get("life_years") or DEFAULT_LIFE_YEARS
        )
        capex = units * price
        marginal = self.sc.planning.lens == "marginal" and dep.committed
        total = 0.0
        coc = med(dep.cost_of_capital)
        cap_m = float(sh.capital_recovery_usd_per_month(capex, years, med(dep.residual_share), coc))
        how = f"annuity at {coc:g}/yr" if coc > 0 else "straight-line"
        if marginal:
            self.line(name, "onprem", "", "capex (committed, excluded: marginal lens)", 0.0, how)
        else:
            cycles = int(np.ceil(self.horizon / (12.0 * years) - 1e-9))
            self.line(name, "onprem", "", "capex", cap_m,
                      f"{units:g} servers x {price:g} usd ({psrc}) over {years:g} years, {how}, "
                      f"residual {med(dep.residual_share):g}; {cycles} purchase cycle(s) in the "
                      f"{self.horizon}-month horizon")
            total += cap_m
        maint_share = (
            med(dep.maintenance_share_per_year) if dep.maintenance_share_per_year is not None
            else (server or {}).get("maintenance_share_per_year") or 0.0
        )
        maint = capex * maint_share / 12.0
        self.line(name, "onprem", "", "maintenance", maint,
                  f"{maint_share:g} of capex per year")
        total += maint
        util = mean_load * dep.gpus_per_replica / gpus_paid if gpus_paid else 0.0
        tdp = med(dep.gpu_tdp_w) if dep.gpu_tdp_w is not None else acc_row.get("tdp_w")
        base_w = med(dep.server_base_w) if dep.server_base_w is not None else (server or {}).get("server_base_w")
        if tdp is None or base_w is None:
            missing = "gpu_tdp_w" if tdp is None else "server_base_w"
            raise PlannerError(
                f"onprem.{name}: the catalog has no {missing.replace('_', ' ')} for this "
                f"hardware; set {missing} in the scenario"
            )
        power = float(sh.server_power_w(base_w, gps, tdp, util, med(dep.gpu_idle_power_share)))
        energy = float(sh.energy_usd_per_month(power, units, med(dep.pue),
                                               med(dep.electricity_usd_per_kwh), self.hpm))
        self.line(name, "onprem", "", "energy", energy,
                  f"{units:g} servers x {power:.0f} W (base {base_w:g} W + {gps} GPUs x {tdp:g} W "
                  f"at {util:.0%} utilisation) x PUE {med(dep.pue):g} x "
                  f"{med(dep.electricity_usd_per_kwh):g} usd/kWh")
        total += energy
        fac = units * med(dep.facilities_usd_per_server_year) / 12.0
        ops = med(dep.ops_usd_per_year) / 12.0
        if fac:
            self.line(name, "onprem", "", "facilities", fac, "per server-year / 12")
            total += fac
        if ops:
            self.line(name, "onprem", "", "operations staff", ops, "per year / 12")
            total += ops
        impl = med(dep.implementation_usd)
        if impl and not marginal:
            self.line(name, "onprem", "", "implementation (one-off / horizon)",
                      impl / self.horizon, f"{impl:g} usd over {self.horizon} months")
            total += impl / self.horizon
        return units, gpus_paid, total

    def add_summary(self, name, kind, offering, elig, monthly, once, tokens, out_tokens, *,
                    replicas=np.nan, gpus=np.nan, units=np.nan, utilisation=np.nan,
                    model=None, accelerator=None):
        served = [c for c, why in elig.items() if not why]
        unserved = {c: why for c, why in elig.items() if why}
        # usd_per_month includes one-offs spread over the horizon, as the cost lines do
        horizon = (monthly - once / self.horizon) * self.horizon + once
        self.summary.append({
            "deployment": name, "kind": kind, "offering": offering, "model": model,
            "accelerator": accelerator,
            "classes_served": ",".join(served),
            "classes_unserved": "; ".join(f"{c}: {w}" for c, w in unserved.items()),
            "usd_per_month": monthly,
            "usd_horizon": horizon,
            "requests_per_month": self.rpm,
            "usd_per_request": monthly / self.rpm if self.rpm else np.nan,
            "tokens_per_month": tokens,
            "usd_per_mtok": monthly / tokens * 1e6 if tokens else np.nan,
            "usd_per_m_output_tok": monthly / out_tokens * 1e6 if out_tokens else np.nan,
            "replicas": replicas, "gpus": gpus, "units": units, "utilisation": utilisation,
            "lens": self.sc.planning.lens,
        })

    # -- first-principles estimates ----------------------------------------------------------
    def _peak(self, job) -> tuple[float, str]:
        if job.peak_tflops is not None:
            return med(job.peak_tflops), "scenario peak_tflops"
        row = self.trace.use("accelerators", self.cat.accelerator(job.accelerator))
        return float(row["bf16_tflops"]), f"accelerators.csv {row['id']} bf16_tflops"

    def _params(self, job) -> tuple[float, str]:
        if job.params_b is not None:
            return med(job.params_b), "scenario params_b"
        row = self.trace.use("llms", self.cat.llm(job.model))
        return float(row["params_b"]), f"llms.csv {row['id']}"

    def _gpu_hour(self, job) -> tuple[float, int, str]:
        """(usd per instance-hour, chips per instance, basis)."""
        if getattr(job, "usd_per_instance_hour", None) is not None:
            return med(job.usd_per_instance_hour), job.gpus_per_instance, "scenario"
        if job.usd_per_gpu_hour is not None:
            return med(job.usd_per_gpu_hour), 1, "scenario usd_per_gpu_hour"
        row = self.trace.use("clouds", self.cat.cloud(job.cloud_offering))
        if row.get("usd_per_instance_hour") is not None:
            return (float(row["usd_per_instance_hour"]), int(row["gpus_per_instance"] or 1),
                    f"cloud_prices.csv {row['id']}")
        return float(row["usd_per_gpu_hour"]), 1, f"cloud_prices.csv {row['id']}"

    def pretraining(self) -> pd.DataFrame:
        rows = []
        for name, job in self.sc.pretraining.items():
            n_b, nsrc = self._params(job)
            peak, psrc = self._peak(job)
            price, chips, prsrc = self._gpu_hour(job)
            d = med(job.tokens)
            mfu = med(job.mfu)
            flops = float(tr.training_flops(n_b, d))
            hours = float(tr.chip_hours(flops, peak, mfu))
            usd_list = hours * price / chips
            usd = usd_list * (1.0 - med(job.discount))
            rows.append({
                "job": name, "params_b": n_b, "tokens": d, "flops": flops, "mfu": mfu,
                "peak_tflops": peak, "gpu_hours": hours,
                "days": hours / job.gpus / 24.0 if job.gpus else np.nan,
                "usd_per_gpu_hour": price / chips, "usd_before_discount": usd_list,
                "discount": med(job.discount), "usd": usd,
                "basis": f"6 x {n_b:g}e9 x {d:.4g} / ({peak:g} TFLOPS x {mfu:g}) x "
                         f"{price / chips:.4g} usd/chip-h [{nsrc}; {psrc}; {prsrc}]",
            })
        return _frame(rows, ["job", "params_b", "tokens", "flops", "mfu", "peak_tflops",
                             "gpu_hours", "days", "usd_per_gpu_hour", "usd_before_discount",
                             "discount", "usd", "basis"])

    def inference_flops(self) -> pd.DataFrame:
        rows = []
        for name, job in self.sc.inference_flops.items():
            n_b, nsrc = self._params(job)
            peak, psrc = self._peak(job)
            price, chips, prsrc = self._gpu_hour(job)
            mfu = med(job.mfu)
            usd = float(tr.usd_per_ktok_inference(n_b, peak, mfu, price, chips))
            rows.append({
                "estimate": name, "params_b": n_b, "peak_tflops": peak, "chips": chips,
                "mfu": mfu, "usd_per_instance_hour": price, "usd_per_ktok": usd,
                "usd_per_mtok": usd * 1000.0,
                "tokens_per_s": chips * peak * 1e12 * mfu / float(tr.inference_flops(n_b)),
                "basis": f"1000 x 2 x {n_b:g}e9 / ({chips} x {peak:g} TFLOPS x {mfu:g}) x "
                         f"{price:.5g} usd/h / 3600 [{nsrc}; {psrc}; {prsrc}]",
            })
        return _frame(rows, ["estimate", "params_b", "peak_tflops", "chips", "mfu",
                             "usd_per_instance_hour", "usd_per_ktok", "usd_per_mtok",
                             "tokens_per_s", "basis"])


    # -- unit economics ------------------------------------------------------------------
    def unit_economics(self) -> pd.DataFrame:
        """Cost per request of each class on each deployment vs revenue per request."""
        rows = []
        costs = _frame(self.lines, ["deployment", "kind", "class", "component",
                                    "usd_per_month", "basis"])
        classes = _frame(self.class_rows, CLASS_COLUMNS)
        summ = {r["deployment"]: r for r in self.summary}
        for rname, rev in self.sc.revenue.items():
            units_year = med(rev.units_per_month) * 12.0 * med(rev.scale_to) / med(rev.scale_from)
            usd_unit = med(rev.usd_per_year) / units_year
            for c in classes.itertuples():
                if rev.classes and c[2] not in rev.classes:
                    continue
                dep = c.deployment
                kind = summ[dep]["kind"]
                if kind == "api":
                    m = costs[(costs["deployment"] == dep) & (costs["class"] == c[2])]
                    usd_req = m["usd_per_month"].sum() / c.requests_per_month
                    # per *user* request: LLM requests exclude response-cache hits and
                    # include retries, so scale by LLM requests per user request
                    wc = self.sc.workload[c[2]]
                    user_req = med(wc.requests_per_day) * self.scale * self.hpm / 24.0
                    usd_req = m["usd_per_month"].sum() / user_req if user_req else np.nan
                else:
                    usd_req = summ[dep]["usd_per_request"]
                rows.append({
                    "revenue": rname, "deployment": dep, "class": c[2],
                    "usd_per_request": usd_req, "revenue_usd_per_request": usd_unit,
                    "cost_share_of_revenue": usd_req / usd_unit if usd_unit else np.nan,
                    "basis": f"{med(rev.usd_per_year):g} usd/year / ({med(rev.units_per_month):g}"
                             f" per month x 12 x {med(rev.scale_to):g}/{med(rev.scale_from):g})",
                })
        return _frame(rows, ["revenue", "deployment", "class", "usd_per_request",
                             "revenue_usd_per_request", "cost_share_of_revenue", "basis"])

    def token_economics(self) -> pd.DataFrame:
        """GPU cost of an input (prefill) token vs an output (decode) token (article 002)."""
        from planner.perf import AcceleratorSpec, LLMSpec, step_model

        rows = []
        for name, t in self.sc.token_economics.items():
            llm_row = self.trace.use("llms", self.cat.llm(t.model))
            acc_row = self.trace.use("accelerators", self.cat.accelerator(t.accelerator))
            sm = step_model(LLMSpec.from_row(llm_row), AcceleratorSpec.from_row(acc_row),
                            t.gpus, t.precision)
            price = med(t.usd_per_gpu_hour) if t.usd_per_gpu_hour is not None else (
                _cheapest_gpu_hour(self.cat, t.accelerator, "on-demand", self.trace))
            usd_per_s = price * t.gpus / 3600.0
            isl, osl = med(t.input_tokens), med(t.output_tokens)
            prefill_s_per_tok = float(np.asarray(sm.prefill_time_s(isl))) / isl
            kv_mid = isl + osl / 2.0
            from planner.perf.memory import max_concurrent_requests

            kv_max_batch = float(max_concurrent_requests(
                sm.memory.kv_capacity_tokens, isl, osl, kv_reserve="mean"))
            ratios = []
            for b in t.batches:
                step = float(np.asarray(sm.decode_step_time_s(b, b * kv_mid)))
                decode_s_per_tok = step / b
                ratio = decode_s_per_tok / prefill_s_per_tok
                ratios.append(ratio)
                rows.append({
                    "estimate": name, "model": t.model, "accelerator": t.accelerator,
                    "gpus": t.gpus, "precision": t.precision, "batch": b,
                    "input_usd_per_mtok": prefill_s_per_tok * usd_per_s * 1e6,
                    "output_usd_per_mtok": decode_s_per_tok * usd_per_s * 1e6,
                    "output_to_input_cost_ratio": ratio,
                    "flops_ratio": 1.0,
                    "fits_kv_memory": b <= kv_max_batch,
                    "basis": f"prefill {isl:g} tokens in one step; decode step at batch {b}, "
                             f"KV {kv_mid:g} tokens/request; {price:g} usd/GPU-h",
                })
            for o in t.compare_offerings:
                row = self.trace.use("apis", self.cat.api(o))
                rows.append({
                    "estimate": name, "model": o, "accelerator": "(API list price)",
                    "gpus": np.nan, "precision": None, "batch": np.nan,
                    "input_usd_per_mtok": row["input_usd_per_mtok"],
                    "output_usd_per_mtok": row["output_usd_per_mtok"],
                    "output_to_input_cost_ratio":
                        row["output_usd_per_mtok"] / row["input_usd_per_mtok"],
                    "flops_ratio": np.nan, "fits_kv_memory": None,
                    "basis": f"api_prices.csv {o} ({row['as_of']})",
                })
        return _frame(rows, ["estimate", "model", "accelerator", "gpus", "precision", "batch",
                             "input_usd_per_mtok", "output_usd_per_mtok",
                             "output_to_input_cost_ratio", "flops_ratio", "fits_kv_memory",
                             "basis"])


SUMMARY_COLUMNS = [
    "deployment", "kind", "offering", "model", "accelerator", "classes_served",
    "classes_unserved", "usd_per_month", "usd_horizon", "requests_per_month", "usd_per_request",
    "tokens_per_month", "usd_per_mtok",
    "usd_per_m_output_tok", "replicas", "gpus", "units", "utilisation", "lens",
]
CAPACITY_PERF = [
    "requests_per_s", "output_tokens_per_s", "batch", "max_batch", "ttft_s", "tpot_s", "e2e_s",
    "kv_capacity_tokens", "weights_gb_per_gpu", "fits", "limited_by",
]
CAPACITY_COLUMNS = [
    "deployment", "class", "model", "accelerator", "gpus_per_replica", "precision",
    *CAPACITY_PERF, "requests_per_s_per_replica", "capacity_basis",
]
CLASS_COLUMNS = [
    "deployment", "class", "requests_per_day", "requests_per_month", "input_tokens_per_request",
    "output_tokens_per_request", "tokens_per_month", "peak_requests_per_s", "basis_input",
    "basis_output",
]


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame.from_records(rows, columns=columns)


def _api_basis(comp: str, p: ApiPrices, cl: ClassLoad, rpm: float) -> str:
    tok = {
        "input": f"(1 - {cl.cached_share:g}) x {cl.input_tokens:.6g} input tok",
        "cached_input": f"{cl.cached_share:g} x {cl.input_tokens:.6g} input tok (cached)",
        "output": f"{cl.output_tokens:.6g} output tok",
        "batch_input": f"{cl.batch_share:g} batch share of {cl.input_tokens:.6g} input tok",
        "batch_output": f"{cl.batch_share:g} batch share of {cl.output_tokens:.6g} output tok",
    }[comp]
    price = {
        "input": p.input_usd_per_mtok, "cached_input": p.cached_input_usd_per_mtok,
        "output": p.output_usd_per_mtok, "batch_input": p.batch_input_usd_per_mtok,
        "batch_output": p.batch_output_usd_per_mtok,
    }[comp]
    ptxt = f"{price:g} usd/Mtok" if price is not None else "list price"
    return f"{rpm:.6g} requests/month x {tok} x {ptxt}"
