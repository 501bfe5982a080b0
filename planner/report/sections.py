"""The report's sections: each turns engine results into text, charts and tables.

A section names the engines it needs (``requires``: omitted, with the reason, when one is
unavailable) and the ones it uses when present (``uses``: e.g. the summary quotes P5/P50/P95
once the risk engine exists). Sections for engines that land later read the table contracts
documented in :mod:`planner.report.providers`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from planner import charts
from planner.config import Scenario, med
from planner.report.model import Bullets, Chart, Facts, Note, Paragraph, Section, Table


@dataclass
class Context:
    """Engine results by engine name, and why the unavailable ones are missing."""

    scenario: Scenario
    results: dict[str, Any] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    omitted: dict[str, str] = field(default_factory=dict)

    def get(self, engine: str) -> Any:
        return self.results.get(engine)


@dataclass(frozen=True)
class SectionSpec:
    key: str
    title: str
    requires: tuple[str, ...]
    uses: tuple[str, ...]
    build: Callable[[Context], Section]


def _usd(x: float) -> str:
    return f"{x:,.0f} USD" if abs(x) >= 10 else f"{x:,.4g} USD"


def _frame(result: Any, key: str) -> pd.DataFrame | None:
    if isinstance(result, Mapping):
        df = result.get(key)
        return df if isinstance(df, pd.DataFrame) and not df.empty else None
    return None


def _chart(section: Section, name: str, build: Callable[[], Any], caption: str = "") -> None:
    try:
        section.add(Chart(name, build(), caption))
    except charts.NoData as exc:
        section.add(Note(f"Chart {name} not drawn: {exc}."))


# ------------------------------------------------------------------------------------ summary


def cheapest_option(summary: pd.DataFrame) -> pd.Series | None:
    """The cheapest option that serves every workload class (None when none does)."""
    full = summary[summary["classes_unserved"].fillna("").astype(str) == ""]
    if full.empty:
        return None
    return full.sort_values("usd_per_month", kind="stable").iloc[0]


def _option_text(r: pd.Series) -> str:
    what = [str(r["kind"])]
    for c in ("offering", "model"):
        v = r.get(c)
        if isinstance(v, str) and v and v not in what:
            what.append(v)
    return f"{r['deployment']} ({', '.join(what)})"


def _drivers(ctx: Context, best: pd.Series | None) -> list[str]:
    det = ctx.get("deterministic")
    out: list[str] = []
    tor = _frame(ctx.get("risk"), "tornado")
    if tor is not None:
        t = tor.assign(swing=(tor["high_usd_per_month"] - tor["low_usd_per_month"]).abs())
        for r in t.sort_values("swing", ascending=False).head(3).itertuples():
            out.append(f"{r.input}: monthly cost {_usd(r.low_usd_per_month)} at its P10, "
                       f"{_usd(r.high_usd_per_month)} at its P90 (swing {_usd(r.swing)})")
    if best is None:
        return out
    dep = best["deployment"]
    c = det.costs[det.costs["deployment"] == dep]
    total = float(c["usd_per_month"].sum())
    if total > 0:
        g = (c.groupby(["component", "class"], dropna=False, sort=False)
             .agg(usd_per_month=("usd_per_month", "sum"), basis=("basis", "first"))
             .reset_index().rename(columns={"class": "cls"})
             .sort_values("usd_per_month", ascending=False))
        for r in g.head(3).itertuples():
            cls = f" ({r.cls})" if isinstance(r.cls, str) and r.cls else ""
            out.append(f"{dep}: {r.component}{cls} is {_usd(r.usd_per_month)} per month, "
                       f"{r.usd_per_month / total:.0%} of its cost: {r.basis}")
    be = ctx.get("breakeven")
    if be is not None and not be.volume.empty:
        v = be.volume.dropna(subset=["volume_scale"])
        v = v[(v["api"] == dep) | (v["selfhosted"] == dep)]
        for r in v.itertuples():
            out.append(f"{r.selfhosted} becomes cheaper than {r.api} above "
                       f"{r.requests_per_day:,.0f} requests per day "
                       f"({r.volume_scale:.3g} x the scenario's volume)")
    if be is not None and not be.finetune.empty:
        f = be.finetune[(be.finetune["finetuned"] == dep) | (be.finetune["versus"] == dep)]
        for r in f.dropna(subset=["breakeven_tokens"]).itertuples():
            out.append(f"fine-tuned {r.finetuned} pays back its {_usd(r.finetune_usd)} one-off "
                       f"cost against {r.versus} after {r.breakeven_tokens:,.3g} tokens "
                       f"({r.payback_months:.3g} months at the scenario's volume)")
    return out


def build_summary(ctx: Context) -> Section:
    sc, det = ctx.scenario, ctx.get("deterministic")
    s = Section("summary", "Summary")
    meta = sc.scenario
    facts: list[tuple[str, str]] = [
        ("Question", meta.question or "(the scenario states no question)"),
        ("Scenario", sc.name),
    ]
    if meta.description:
        facts.append(("Description", meta.description))
    if sc.variants_applied:
        facts.append(("Variants applied", ", ".join(sc.variants_applied)))
    facts.append(("Workload", "; ".join(
        f"{k}: {med(w.requests_per_day):,.0f} requests per day"
        + (f" ({w.description})" if w.description else "")
        for k, w in sc.workload.items()) or "(none)"))
    summ = det.summary.sort_values("usd_per_month", kind="stable")
    best = cheapest_option(summ) if not summ.empty else None
    plan = _frame(ctx.get("optimiser"), "plan")
    if plan is not None:
        if "chosen" in plan.columns:
            plan = plan[plan["chosen"].fillna(False).astype(bool)]
        parts = [f"{r.deployment} ({_usd(r.usd_per_month)} per month)"
                 for r in plan.itertuples()]
        facts.append(("Recommended mix (optimiser)",
                      "; ".join(parts) + f"; total {_usd(float(plan['usd_per_month'].sum()))}"
                      " per month"))
    if best is not None:
        facts.append(("Cheapest single option", _option_text(best)))
        cost = (f"{_usd(best['usd_per_month'])} per month at median inputs "
                f"({best['usd_per_mtok']:.4g} USD per million tokens; "
                f"{_usd(best['usd_horizon'])} over {det.horizon_months} months)")
        risk = _frame(ctx.get("risk"), "summary")
        if risk is not None:
            r = risk[risk["deployment"] == best["deployment"]]
            if not r.empty:
                r0 = r.iloc[0]
                cost += (f"; Monte Carlo P5 / P50 / P95: {_usd(r0['usd_p5'])} / "
                         f"{_usd(r0['usd_p50'])} / {_usd(r0['usd_p95'])}")
        facts.append(("Monthly cost", cost))
        rest = summ[summ["deployment"] != best["deployment"]]
        rest = rest[rest["classes_unserved"].fillna("").astype(str) == ""]
        if not rest.empty and best["usd_per_month"] > 0:
            nxt = rest.iloc[0]
            facts.append(("Runner-up", f"{_option_text(nxt)} at {_usd(nxt['usd_per_month'])} "
                          f"per month ({nxt['usd_per_month'] / best['usd_per_month'] - 1:+.0%})"))
    elif not summ.empty:
        facts.append(("Cheapest single option",
                      "no single option serves every workload class; see the cost table"))
    facts.append(("Cost basis", f"lens {det.lens} ({'full TCO' if det.lens == 'tco' else 'marginal'}"
                  f"), horizon {det.horizon_months} months, all figures in USD"))
    s.add(Facts(tuple(facts)))
    drivers = _drivers(ctx, best)
    if drivers:
        s.add(Bullets("Key drivers", tuple(drivers)))
    for w in det.warnings:
        s.add(Note(str(w)))
    plan_in = {k: v for k, v in sc.planning.model_dump(mode="json").items() if v is not None}
    s.add(Bullets("Planning assumptions (from the scenario)",
                  tuple(f"{k} = {_value_text(v)}" for k, v in plan_in.items())))
    s.add(Table("assumptions", det.assumptions,
                "Every catalog entry the figures rest on, with its source and as-of date."))
    if ctx.omitted:
        s.add(Bullets("Not in this report", tuple(
            f"{k}: {v}" for k, v in ctx.omitted.items())))
    return s


# --------------------------------------------------------------------------------- sections


def build_costs(ctx: Context) -> Section:
    det = ctx.get("deterministic")
    s = Section("costs", "Cost by deployment option")
    s.add(Paragraph(
        "Each option priced as if it served every workload class it is eligible for, at the "
        "medians of its inputs; each cost line names the formula or catalog row it came from."))
    if not det.costs.empty:
        _chart(s, "cost_breakdown", lambda: charts.cost_breakdown(det.costs),
               "Monthly cost of each option split by cost component.")
    else:
        s.add(Note("No cost lines: the scenario has no deployment options."))
    captions = {
        "summary": "One row per deployment option. For self-hosted options, "
                   "requests_per_s_per_replica is what one replica sustains at the latency SLO "
                   "for the option's traffic mix (open-loop capacity, planning.capacity) and "
                   "limited_by names what binds (TPOT, TTFT queueing, decode, KV memory, "
                   "compute); the simulation section checks the plan it simulates.",
        "costs": "Tidy cost lines with their basis.",
        "capacity": "Per self-hosted option and class: replica throughput, latency, limits.",
        "classes": "Per class volumes as each option's tokenizer counts them.",
    }
    for name, df in det.tables().items():
        if name == "assumptions" or (df.empty and name not in captions):
            continue
        if name == "summary":
            df = _with_simulated_check(df, ctx.get("simulation"))
        s.add(Table(name, df, captions.get(name, "")))
    return s


def _with_simulated_check(summary: pd.DataFrame, sim: Any) -> pd.DataFrame:
    """The cost summary with the simulated busiest hour's SLO attainment (worst class) and
    target beside the deployment the simulation section ran, when it ran one alone."""
    lat = _frame(sim, "latency")
    if lat is None or not {"plan", "class", "slo_attainment", "slo_target"} <= set(lat.columns):
        return summary
    lat = lat[(lat["class"] != "all") & lat["slo_target"].notna()]
    if lat.empty:
        return summary
    worst = lat.loc[(lat["slo_attainment"] - lat["slo_target"]).groupby(lat["plan"]).idxmin()]
    worst = worst.rename(columns={"plan": "deployment",
                                  "slo_attainment": "simulated_slo_attainment"})
    return summary.merge(worst[["deployment", "simulated_slo_attainment", "slo_target"]],
                         on="deployment", how="left")


def build_breakeven(ctx: Context) -> Section:
    be = ctx.get("breakeven")
    s = Section("breakeven", "Break-even")
    curve = be.curve
    if not curve.empty:
        lo, hi = float(curve["volume_scale"].min()), float(curve["volume_scale"].max())
        s.add(Paragraph(
            f"Monthly cost of every option from x{lo:g} to x{hi:g} of the scenario's volume "
            "(self-hosted cost steps up one replica at a time); break-even volumes are solved "
            "with Brent's method on the same cost functions."))
        near = curve.loc[(curve["volume_scale"] - 1.0).abs().idxmin()]
        current = (float(curve.loc[curve["volume_scale"] == near["volume_scale"],
                                   "requests_per_day"].median())
                   if abs(near["volume_scale"] - 1.0) < 1e-6 else None)
        _chart(s, "cost_vs_volume",
               lambda: charts.cost_vs_volume(curve, be.volume, current),
               "Cost vs volume; diamonds mark API vs self-hosted break-even volumes.")
        _chart(s, "api_vs_selfhost", lambda: charts.api_vs_selfhost(curve),
               "Cost per million tokens: API prices are flat, self-hosted cost falls with use.")
    else:
        s.add(Note("No deployment options to compare across volumes."))
    if not be.finetune.empty:
        _chart(s, "finetune_breakeven", lambda: charts.finetune_breakeven(be.finetune),
               "Cumulative cost with and without fine-tuning.")
    else:
        s.add(Note("No fine-tune options in this scenario, so no fine-tune break-even."))
    s.add(Table("breakeven_volume", be.volume,
                "Volume at which each self-hosted option becomes cheaper than each API option."))
    if not be.finetune.empty:
        s.add(Table("breakeven_finetune", be.finetune,
                    "T* = fine-tune cost / (cost per token without - with)."))
    if not be.payback.empty:
        s.add(Table("payback", be.payback, "Provider payback: volume that recovers training."))
    s.add(Table("cost_curve", curve, "Monthly cost of every option by volume multiple."))
    return s


def build_risk(ctx: Context) -> Section:
    r = ctx.get("risk")
    s = Section("risk", "Risk (Monte Carlo)")
    samples = _frame(r, "samples")
    _chart(s, "risk_distribution", lambda: charts.risk_distribution(samples),
           "Distribution of monthly cost per option.")
    if (win := _frame(r, "win")) is not None:
        _chart(s, "win_probability", lambda: charts.win_probability(win))
    if (tor := _frame(r, "tornado")) is not None:
        _chart(s, "tornado", lambda: charts.tornado(tor))
    if (paths := _frame(r, "paths")) is not None:
        _chart(s, "cost_paths", lambda: charts.cost_paths(paths))
    for key, name in (("summary", "risk_summary"), ("win", "win_probability"),
                      ("tornado", "tornado"), ("paths", "cost_paths")):
        if (df := _frame(r, key)) is not None:
            s.add(Table(name, df))
    return s


def build_optimiser(ctx: Context) -> Section:
    r = ctx.get("optimiser")
    s = Section("optimiser", "Optimised mix")
    if (notes := _frame(r, "notes")) is not None:
        for text in notes.iloc[:, 0].astype(str):
            s.add(Note(text))
    if (hourly := _frame(r, "hourly")) is not None:
        _chart(s, "hourly_mix", lambda: charts.hourly_mix(hourly))
    s.add(Table("plan", _frame(r, "plan"), "The optimiser's plan."))
    if (routing := _frame(r, "routing")) is not None:
        s.add(Table("routing", routing, "Share of each class's requests sent to each route "
                    "(a model, or a cascade small -> large)."))
    if (finetune := _frame(r, "finetune")) is not None:
        s.add(Table("finetune_decision", finetune, "Fine-tunes run (one-off cost, retries "
                    "included) and the deployments they make eligible."))
    if hourly is not None:
        s.add(Table("hourly_mix", hourly))
    return s


def latency_percentiles(requests: pd.DataFrame) -> pd.DataFrame:
    """p50/p90/p99 of each latency column per class (NaN rows ignored)."""
    rows = []
    for metric in ("ttft_s", "tpot_s", "e2e_s"):
        if metric not in requests.columns:
            continue
        for cls, sub in requests.groupby("class", sort=True):
            v = pd.to_numeric(sub[metric], errors="coerce").to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            if v.size:
                p50, p90, p99 = np.quantile(v, [0.5, 0.9, 0.99])
                rows.append({"class": cls, "metric": metric, "requests": int(v.size),
                             "p50": p50, "p90": p90, "p99": p99})
    return pd.DataFrame(rows, columns=["class", "metric", "requests", "p50", "p90", "p99"])


def build_simulation(ctx: Context) -> Section:
    r = ctx.get("simulation")
    s = Section("simulation", "Simulation: latency, SLOs and utilisation")
    req = _frame(r, "requests")
    targets = _frame(r, "slo_targets")
    if req is not None:
        for metric in ("ttft_s", "tpot_s", "e2e_s"):
            if metric in req.columns and req[metric].notna().any():
                slo = None
                if targets is not None:
                    slo = targets[targets["metric"] == metric][["class", "slo_s"]]
                _chart(s, f"latency_cdf_{metric.removesuffix('_s')}",
                       lambda m=metric, slo=slo: charts.latency_cdf(req, m, slo))
        s.add(Table("latency_percentiles", latency_percentiles(req),
                    "Latency percentiles (seconds) per class."))
    if (att := _frame(r, "slo")) is not None:
        _chart(s, "slo_attainment", lambda: charts.slo_attainment(att))
        s.add(Table("slo_attainment", att))
    if (util := _frame(r, "utilisation")) is not None:
        _chart(s, "utilisation_heatmap", lambda: charts.utilisation_heatmap(util),
               "Busy share: the share of paid replica time with at least one request in "
               "flight. With continuous batching a replica is busy even at low load; the "
               "utilisation table's mean_batch says how full its batches were, and the cost "
               "table's utilisation is load over capacity at the SLO.")
        s.add(Table("utilisation", util))
    if not s.blocks:
        s.add(Note("The simulation returned no tables."))
    return s


def build_performance(ctx: Context) -> Section:
    v = _frame(ctx.get("performance"), "validation")
    s = Section("performance", "Performance model validation")
    if v is None:
        s.add(Note("No calibration rows were predicted."))
        return s
    a = v["abs_error"].to_numpy(dtype=float) if "abs_error" in v.columns else None
    text = ("The serving performance model predicts published maximum-throughput benchmarks "
            "(TensorRT-LLM perf overview, MLPerf Inference) from first principles.")
    if a is not None and a.size:
        text += (f" {a.size} rows: median absolute error {np.median(a):.1%}, "
                 f"largest {np.max(a):.1%}.")
    s.add(Paragraph(text))
    _chart(s, "predicted_vs_measured", lambda: charts.predicted_vs_measured(v))
    s.add(Table("perf_validation", v))
    return s


def _value_text(v: Any) -> str:
    if isinstance(v, Mapping) and "dist" in v:
        args = ", ".join(f"{k}={v[k]}" for k in v if k != "dist" and v[k] is not None)
        return f"{v['dist']}({args})"
    if isinstance(v, list | tuple):
        return ", ".join(_value_text(x) for x in v)
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return f"{int(v)}"
    return str(v)


def scenario_inputs(sc: Scenario) -> pd.DataFrame:
    """The scenario flattened to (key, value) rows, dotted keys as in ``--set``."""
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, Mapping) and "dist" not in v:
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        elif v is not None:
            rows.append((prefix, _value_text(v)))

    walk("", sc.model_dump(mode="json", exclude_none=True))
    if sc.source_path:
        rows.append(("(file)", str(sc.source_path)))
    return pd.DataFrame(rows, columns=["key", "value"])


def build_inputs(ctx: Context) -> Section:
    s = Section("inputs", "Inputs")
    s.add(Table("inputs", scenario_inputs(ctx.scenario),
                "Every scenario value (after variants and overrides), as dotted keys."))
    return s


SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("summary", "Summary", ("deterministic",),
                ("breakeven", "risk", "optimiser"), build_summary),
    SectionSpec("costs", "Cost by deployment option", ("deterministic",), ("simulation",),
                build_costs),
    SectionSpec("breakeven", "Break-even", ("breakeven",), (), build_breakeven),
    SectionSpec("risk", "Risk (Monte Carlo)", ("risk",), (), build_risk),
    SectionSpec("optimiser", "Optimised mix", ("optimiser",), (), build_optimiser),
    SectionSpec("simulation", "Simulation", ("simulation",), (), build_simulation),
    SectionSpec("performance", "Performance model validation", ("performance",), (),
                build_performance),
    SectionSpec("inputs", "Inputs", (), (), build_inputs),
)
