"""Deterministic cost engine: the one model (:mod:`planner.model`) at the inputs' medians.

Each deployment option (API offering, cloud GPU pool, on-prem servers) is priced as if it served
every workload class it is eligible for (its ``classes`` list, the class's quality tier, and
fine-tune qualification, a replica that can carry the class at its SLO, a fleet that can carry
the peak load); classes it cannot serve are listed with the reason. Choosing a *mix* is the
optimiser's job. The numbers come from :class:`planner.model.evaluate.Model` evaluated once at
the medians with tracing on, so every figure comes with the formula or catalog row it came
from; this module only lays them out as tables. Study calculators (pre-training, inference
FLOPs, token economics) are in :mod:`planner.engines.calculators`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from planner.catalog import Catalog, load_catalog
from planner.config import Scenario, med
from planner.engines.calculators import Calculators
from planner.model.evaluate import CAPACITY_PERF, Model
from planner.model.structure import DEFAULT_LIFE_YEARS  # noqa: F401  (re-exported)
from planner.results import LazyFrames, Records
from planner.workload import class_load, peak_factor

if TYPE_CHECKING:  # the tables are built as DataFrames on first access (planner.results)
    import pandas as pd


@dataclass
class _Trace:
    """Catalog rows used, for the assumptions table."""

    rows: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def use(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        self.rows[(table, row.get("id") or row.get("tokenizer"))] = row
        return row

    def frame(self) -> Records:
        recs = [
            {"table": t, "id": i, "source": r.get("source"), "as_of": r.get("as_of")}
            for (t, i), r in self.rows.items()
        ]
        return Records.of(recs, ["table", "id", "source", "as_of"])


@dataclass(frozen=True)
class Results(LazyFrames):
    """Tidy results of one deterministic evaluation.

    The tables are kept as plain rows (:class:`planner.results.Records`) and become
    DataFrames on first access (``raw(name)`` gives them as stored).

    Attributes
    ----------
    summary : one row per deployment option (usd_per_month, usd_horizon, usd_per_mtok ...);
        ``requests_per_month`` and ``usd_per_request`` count the user requests the scenario
        declares, ``llm_requests_per_month`` the model requests (after response-cache hits,
        with retries)
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


def evaluate(
    sc: Scenario, catalog: Catalog | None = None, *, volume_scale: float = 1.0,
    model: Model | None = None,
) -> Results:
    """Price every deployment option of a scenario at the medians of its inputs.

    Parameters
    ----------
    sc : Scenario
    catalog : Catalog, optional
    volume_scale : float
        Multiplies every class's requests per day (used by the break-even solvers).
    model : Model, optional
        A model already built for ``sc`` (reused by callers that evaluate many volumes).
    """
    cat = catalog or load_catalog()
    m = model if model is not None else Model(sc, cat)
    return _Layout(sc, cat, m, volume_scale).run()


class _Layout:
    def __init__(self, sc: Scenario, cat: Catalog, model: Model, scale: float):
        self.sc, self.cat, self.m, self.scale = sc, cat, model, scale
        self.trace = _Trace()
        self.lines: list[dict[str, Any]] = []
        self.summary: list[dict[str, Any]] = []
        self.capacity: list[dict[str, Any]] = []
        self.class_rows: list[dict[str, Any]] = []
        self.warnings: list[str] = list(model.warnings)
        self.hpm = sc.planning.hours_per_month
        self.horizon = sc.scenario.horizon_months

    def run(self) -> Results:
        ctx = self.m.ctx(volume_scale=self.scale, trace=True)
        self.ft_costs = {}
        for name, ft in self.sc.finetune.items():
            self._trace_finetune(ft)
            usd, info = self.m.finetune(ctx, name)
            self.ft_costs[name] = {k: info[k] for k in FINETUNE_COLUMNS[1:]}
        raw = self.m.evaluate_raw(ctx)
        for o in self.m.options:
            self.option(ctx, o, raw[o.name])
        calc = Calculators(self.sc, self.cat, self.trace)
        return Results(
            scenario=self.sc.name,
            lens=self.sc.planning.lens,
            horizon_months=self.horizon,
            summary=_frame(self.summary, SUMMARY_COLUMNS),
            costs=_frame(self.lines, ["deployment", "kind", "class", "component",
                                      "usd_per_month", "basis"]),
            capacity=_frame(self.capacity, CAPACITY_COLUMNS),
            classes=_frame(self.class_rows, CLASS_COLUMNS),
            finetune=_frame([{"finetune": k, **v} for k, v in self.ft_costs.items()],
                            FINETUNE_COLUMNS),
            pretraining=calc.pretraining(),
            inference_flops=calc.inference_flops(),
            unit_economics=self.unit_economics(),
            token_economics=calc.token_economics(),
            assumptions=self.trace.frame(),
            warnings=tuple(self.warnings),
        )

    def _trace_finetune(self, ft) -> None:
        if ft.method == "api":
            self.trace.use("apis", self.cat.api(ft.base_model))
            return
        self.trace.use("llms", self.cat.llm(ft.base_model))
        if ft.accelerator is not None:
            self.trace.use("accelerators", self.cat.accelerator(ft.accelerator))
            if ft.usd_per_gpu_hour is None:
                best = self.cat.cheapest_cloud(ft.accelerator, "on-demand", required=True)
                self.trace.use("clouds", self.cat.cloud(best["id"]))

    def option(self, ctx, o, r: dict[str, Any]) -> None:
        name, kind = o.name, o.kind
        if kind == "api":
            self.trace.use("apis", o.row)
        else:
            self.trace.use("llms", o.llm_row)
            if o.offer is not None:
                self.trace.use("clouds", o.offer)
            if o.server is not None:
                self.trace.use("servers", o.server)
            self.trace.use("accelerators", o.acc_row)
            self.capacity.extend(o.capacity_rows)
        for cname in o.served:
            self.class_row(ctx, o, cname)
        for cname, component, usd, basis in r["lines"]:
            self.line(name, kind, cname, component, usd, basis)
        if kind == "cloud" and o.price is not None and o.price.row_id is not None:
            self.trace.use("clouds", self.cat.cloud(o.price.row_id))
        unserved = dict(o.unserved)
        if kind != "api" and not r["serves"]:
            peak = float(r["peak_load"])
            why = (f"fleet too small: {o.fleet_basis} carry {o.fleet_replicas / peak:.0%} of "
                   f"the peak load ({peak:.3g} replicas at full load, "
                   f"{peak * o.dep.gpus_per_replica:.3g} GPUs)")
            for c in o.served:
                unserved[c] = why
            self.warnings.append(f"{name}: {why}; not a valid option on its own")
        served = [c for c in o.served if c not in unserved]
        monthly, once = float(r["monthly"]), float(r["once"])
        user, llm = float(r["user_rpm"]), float(r["rpm"])
        tokens, out_tokens = float(r["tokens"]), float(r["out_tokens"])
        row = {
            "deployment": name, "kind": kind,
            "offering": o.offering if kind != "api" else o.dep.offering,
            "model": o.model, "accelerator": o.acc_id,
            "classes_served": ",".join(served),
            "classes_unserved": "; ".join(f"{c}: {w}" for c, w in unserved.items()),
            "usd_per_month": monthly,
            # usd_per_month includes one-offs spread over the horizon, as the cost lines do
            "usd_horizon": (monthly - once / self.horizon) * self.horizon + once,
            "requests_per_month": user,
            "llm_requests_per_month": llm,
            "usd_per_request": monthly / user if user else np.nan,
            "tokens_per_month": tokens,
            "usd_per_mtok": monthly / tokens * 1e6 if tokens else np.nan,
            "usd_per_m_output_tok": monthly / out_tokens * 1e6 if out_tokens else np.nan,
            "replicas": np.nan, "gpus": np.nan, "units": np.nan, "utilisation": np.nan,
            "requests_per_s_per_replica": np.nan, "limited_by": "",
            "lens": self.sc.planning.lens,
        }
        if kind != "api":
            row.update(replicas=float(r["replicas"]), gpus=float(r["gpus"]),
                       units=float(r["units"]), utilisation=float(r["utilisation"]),
                       **self._mix_capacity(o, served, float(r["mean_load"])))
        self.summary.append(row)

    def _mix_capacity(self, o, served: list[str], mean_load: float) -> dict[str, Any]:
        """One replica's capacity at the SLO for the option's traffic mix, and what limits it.

        ``rps = sum_c lam_c / L`` with ``lam_c`` class c's requests/s over the day and
        ``L = sum_c lam_c / cap_c`` the model's mean load in replica-equivalents (``cap_c`` one
        replica's requests/s at class c's SLO): the requests/s one replica carries when the
        classes arrive in their daily proportions. The limit is that of the class carrying the
        most replica-equivalents ``lam_c / cap_c``.
        """
        caps = {r["class"]: r for r in o.capacity_rows}
        lam = {r["class"]: r["requests_per_day"] / 86400.0 for r in self.class_rows
               if r["deployment"] == o.name and r["class"] in served}
        share = {c: v / float(caps[c]["requests_per_s_per_replica"]) for c, v in lam.items()
                 if float(caps.get(c, {}).get("requests_per_s_per_replica", 0.0)) > 0}
        if not share or not mean_load > 0:
            return {"requests_per_s_per_replica": np.nan, "limited_by": ""}
        return {"requests_per_s_per_replica": sum(lam.values()) / mean_load,
                "limited_by": str(caps[max(share, key=share.get)].get("limited_by", ""))}

    def line(self, dep: str, kind: str, cname: str, component: str, usd: float, basis: str):
        self.lines.append({
            "deployment": dep, "kind": kind, "class": cname, "component": component,
            "usd_per_month": float(usd), "basis": basis,
        })

    def class_row(self, ctx, o, cname: str) -> None:
        req, isl, osl = (float(x) for x in self.m.klass(ctx, cname, o.tokenizer)[:3])
        wc = self.sc.workload[cname]
        cl = class_load(self.sc, cname, wc, o.tokenizer, self.cat)  # formulas as text
        rpm = req * self.hpm / 24.0
        self.class_rows.append({
            "deployment": o.name, "class": cname, "requests_per_day": req,
            "requests_per_month": rpm, "input_tokens_per_request": isl,
            "output_tokens_per_request": osl, "tokens_per_month": rpm * (isl + osl),
            "peak_requests_per_s": req / 86400.0 * peak_factor(
                wc.diurnal, self.sc.planning.peak_to_average),
            "basis_input": cl.basis["input_tokens"], "basis_output": cl.basis["output_tokens"],
        })

    # -- unit economics ------------------------------------------------------------------
    def unit_economics(self) -> Records:
        """Cost per request of each class on each deployment vs revenue per request."""
        rows = []
        summ = {r["deployment"]: r for r in self.summary}
        for rname, rev in self.sc.revenue.items():
            units_year = med(rev.units_per_month) * 12.0 * med(rev.scale_to) / med(rev.scale_from)
            usd_unit = med(rev.usd_per_year) / units_year
            for c in self.class_rows:
                cname, dep = c["class"], c["deployment"]
                if rev.classes and cname not in rev.classes:
                    continue
                kind = summ[dep]["kind"]
                if kind == "api":
                    # the cost lines of this class on this option, summed as pandas sums a
                    # column (numpy's pairwise sum, NaN as 0)
                    usd = np.nansum(np.array(
                        [ln["usd_per_month"] for ln in self.lines
                         if ln["deployment"] == dep and ln["class"] == cname], dtype=float))
                    # per *user* request: LLM requests exclude response-cache hits and
                    # include retries, so scale by LLM requests per user request
                    wc = self.sc.workload[cname]
                    user_req = med(wc.requests_per_day) * self.scale * self.hpm / 24.0
                    usd_req = usd / user_req if user_req else np.nan
                else:
                    usd_req = summ[dep]["usd_per_request"]
                rows.append({
                    "revenue": rname, "deployment": dep, "class": cname,
                    "usd_per_request": usd_req, "revenue_usd_per_request": usd_unit,
                    "cost_share_of_revenue": usd_req / usd_unit if usd_unit else np.nan,
                    "basis": f"{med(rev.usd_per_year):g} usd/year / ({med(rev.units_per_month):g}"
                             f" per month x 12 x {med(rev.scale_to):g}/{med(rev.scale_from):g})",
                })
        return _frame(rows, ["revenue", "deployment", "class", "usd_per_request",
                             "revenue_usd_per_request", "cost_share_of_revenue", "basis"])


SUMMARY_COLUMNS = [
    "deployment", "kind", "offering", "model", "accelerator", "classes_served",
    "classes_unserved", "usd_per_month", "usd_horizon", "requests_per_month",
    "llm_requests_per_month", "usd_per_request",
    "tokens_per_month", "usd_per_mtok",
    "usd_per_m_output_tok", "replicas", "gpus", "units", "utilisation",
    "requests_per_s_per_replica", "limited_by", "lens",
]
CAPACITY_COLUMNS = [
    "deployment", "class", "model", "accelerator", "gpus_per_replica", "precision",
    "prefix_cache_hit_share", *CAPACITY_PERF, "requests_per_s_per_replica", "capacity_basis",
]
CLASS_COLUMNS = [
    "deployment", "class", "requests_per_day", "requests_per_month", "input_tokens_per_request",
    "output_tokens_per_request", "tokens_per_month", "peak_requests_per_s", "basis_input",
    "basis_output",
]


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> Records:
    """The table ``DataFrame.from_records(rows, columns=columns)``, built on first access."""
    return Records.of(rows, columns)


FINETUNE_COLUMNS = ["finetune", "method", "tokens_trained", "usd_single_run",
                    "retry_multiplier", "one_off_usd", "usd", "gpu_hours", "gpus", "mem_gb",
                    "basis"]

