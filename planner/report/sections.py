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

from planner.config import Scenario, med
from planner.report import glossary, sources, speccache
from planner.report.model import (
    Bullets,
    Chart,
    Facts,
    HowTo,
    Note,
    Paragraph,
    Section,
    Table,
)


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


def _howto(section: Section) -> None:
    """Open a section with its "how to read this" box (:mod:`planner.report.glossary`)."""
    box = glossary.howto(section.key)
    if box is not None:
        section.add(box)


def _chart(section: Section, name: str, builder: str, args: tuple = (),
           caption: str = "") -> None:
    """Add chart ``name`` drawn by ``builder(*args)`` (``builder``: ``module:function``, a
    chart function of :mod:`planner.charts` by default) with its Vega-Lite specification, or
    a note when the builder finds nothing to draw. The specification (or the note) is read
    from the cache when these inputs drew it before (:mod:`planner.report.speccache`: then
    altair is not imported), else built and stored there."""
    if ":" not in builder:
        builder = f"planner.charts:{builder}"
    key = speccache.key(builder, args)
    entry = speccache.load(key)
    if entry is None:
        from planner import charts
        from planner.report.export import spec

        try:
            chart = speccache.builder(builder)(*args)
        except charts.NoData as exc:
            entry = {"nodata": str(exc)}
            chart = None
        else:
            entry = {"spec": spec(chart)}
        speccache.store(key, entry)
    else:
        chart = None
    if "nodata" in entry:
        section.add(Note(f"Chart {name} not drawn: {entry['nodata']}."))
    else:
        section.add(Chart(name, chart, caption, spec=entry["spec"]))


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


def mix_explanation(plan: pd.DataFrame, routing: pd.DataFrame | None,
                    hourly: pd.DataFrame | None, best: pd.Series | None) -> str:
    """One or two sentences, computed from the optimiser's plan, on why its mix and the
    cheapest single option cost what they do: which deployment serves which share of which
    classes, how it is paid, and the hours an API only tops up.

    ``plan``: the chosen rows of the optimiser's ``plan`` (deployment, kind, decision,
    requests_share, usd_per_month); ``routing``: class, route, share; ``hourly``: hour,
    deployment, requests_per_s; ``best``: the cheapest single option's summary row.
    """
    if plan is None or plan.empty or best is None:
        return ""
    total = float(plan["usd_per_month"].sum())
    single = float(best["usd_per_month"])
    plan = plan.assign(**{c: plan[c] if c in plan.columns else ""
                          for c in ("kind", "decision")})
    deps = plan[~plan["deployment"].astype(str).str.startswith("finetune:")]
    if len(deps) == 1 and str(deps["deployment"].iloc[0]) == str(best["deployment"]):
        same = (f"The optimiser's plan is the cheapest single option itself "
                f"({best['deployment']})")
        if abs(total - single) < 0.5:
            return same + ", at the same monthly cost."
        return (same + f"; the two figures differ by {_usd(abs(total - single))} per month "
                "only through how each model prices it (hour by hour in the optimiser, at "
                "median inputs in the cost table).")
    diff = single - total
    head = (f"The mix costs {_usd(abs(diff))} per month "
            f"{'less' if diff >= 0 else 'more'} than the cheapest single option "
            f"({best['deployment']}, {_usd(single)})")
    roles = []
    for r in deps.itertuples():
        share = getattr(r, "requests_share", np.nan)
        what = f"{r.deployment} serves {share:.1%} of requests" if np.isfinite(share) \
            else f"{r.deployment}"
        if routing is not None and {"class", "route", "share"} <= set(routing.columns):
            cls = routing[routing["route"].astype(str) == str(r.deployment)]
            if not cls.empty:
                what += " (" + ", ".join(
                    f"{c.share:.0%} of {c[1]}" if c.share >= 0.01 or c.share == 0
                    else f"{c.share:.1%} of {c[1]}" for c in cls.itertuples()) + ")"
        decision = getattr(r, "decision", "")
        roles.append(f"{what}: {decision}" if isinstance(decision, str) and decision
                     else what)
    reasons = []
    if hourly is not None and {"hour", "deployment", "requests_per_s"} <= set(hourly.columns):
        for r in deps[deps["kind"].astype(str) == "api"].itertuples():
            h = hourly[hourly["deployment"].astype(str) == str(r.deployment)]
            busy = h.loc[h["requests_per_s"] > 1e-9, "hour"].astype(int).tolist()
            if busy and len(busy) < len(h) and len(deps) > 1:
                reasons.append(f"{r.deployment} is used only in hour(s) "
                               f"{', '.join(map(str, busy))}, topping up the peak instead "
                               "of one more replica running all day")
    if any("per hour" in str(d) for d in deps["decision"]):
        reasons.append("capacity rented by the hour follows the daily load instead of "
                       "being sized for the peak around the clock")
    if len(deps) < len(plan):
        reasons.append("a fine-tune makes a cheaper model eligible for some classes")
    if best["kind"] == "api" and any(k != "api" for k in deps["kind"].astype(str)):
        reasons.append("at this volume self-hosting the bulk costs less than paying per "
                       "token for all of it")
    if best["kind"] != "api" and any(k == "api" for k in deps["kind"].astype(str)):
        reasons.append("routing part of the traffic to an API avoids capacity the single "
                       "option must hold for it")
    text = head + ": " + "; ".join(roles) + "."
    if reasons:
        text += " Why: " + "; ".join(reasons) + "."
    return text


def build_summary(ctx: Context) -> Section:
    sc, det = ctx.scenario, ctx.get("deterministic")
    s = Section("summary", "Summary")
    _howto(s)
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
        why = mix_explanation(plan, _frame(ctx.get("optimiser"), "routing"),
                              _frame(ctx.get("optimiser"), "hourly"), best)
        if why:
            facts.append(("Mix vs single option", why))
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
    assumptions, lacking = sources.with_original_sources(det.assumptions)
    s.add(Table("assumptions", assumptions,
                "Every catalog entry the figures rest on, with its original source "
                "(publication, vendor page or repository and commit) and as-of date."))
    if lacking:
        s.add(Note("Original source incomplete (author or address not recorded) for: "
                   + ", ".join(dict.fromkeys(lacking)) + "."))
    if ctx.omitted:
        s.add(Bullets("Not in this report", tuple(
            f"{k}: {v}" for k, v in ctx.omitted.items())))
    return s


# --------------------------------------------------------------------------------- sections


def build_costs(ctx: Context) -> Section:
    det = ctx.get("deterministic")
    s = Section("costs", "Cost by deployment option")
    _howto(s)
    s.add(Paragraph(
        "Each option priced as if it served every workload class it is eligible for, at the "
        "medians of its inputs; each cost line names the formula or catalog row it came from."))
    if not det.costs.empty:
        _chart(s, "cost_breakdown", "cost_breakdown", (det.costs,),
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
    _howto(s)
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
        _chart(s, "cost_vs_volume", "cost_vs_volume", (curve, be.volume, current),
               "Cost vs volume; diamonds mark API vs self-hosted break-even volumes.")
        _chart(s, "api_vs_selfhost", "api_vs_selfhost", (curve,),
               "Cost per million tokens: API prices are flat, self-hosted cost falls with use.")
    else:
        s.add(Note("No deployment options to compare across volumes."))
    if not be.finetune.empty:
        _chart(s, "finetune_breakeven", "finetune_breakeven", (be.finetune,),
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
    _howto(s)
    samples = _frame(r, "samples")
    _chart(s, "risk_distribution", "risk_distribution", (samples,),
           "Distribution of monthly cost per option.")
    if (win := _frame(r, "win")) is not None:
        _chart(s, "win_probability", "win_probability", (win,))
    if (tor := _frame(r, "tornado")) is not None:
        _chart(s, "tornado", "tornado", (tor,))
    if (paths := _frame(r, "paths")) is not None:
        _chart(s, "cost_paths", "cost_paths", (paths,))
    captions = {
        "risk_summary": "Monthly cost per option over the Monte Carlo samples (USD).",
        "win_probability": "Share of samples in which each option is the cheapest.",
        "tornado": "Monthly cost with each uncertain input at its P10 and at its P90.",
        "cost_paths": "Cumulative cost from today to the end of each year (before the "
                      "on-prem residual credit); residual_credit_usd is the servers' book "
                      "value credited at the end, usd_net_p50 the median net of it.",
    }
    for key, name in (("summary", "risk_summary"), ("win", "win_probability"),
                      ("tornado", "tornado"), ("paths", "cost_paths")):
        if (df := _frame(r, key)) is not None:
            s.add(Table(name, df, captions[name]))
    return s


def build_optimiser(ctx: Context) -> Section:
    r = ctx.get("optimiser")
    s = Section("optimiser", "Optimised mix")
    _howto(s)
    if (notes := _frame(r, "notes")) is not None:
        for text in notes.iloc[:, 0].astype(str):
            s.add(Note(text))
    if (hourly := _frame(r, "hourly")) is not None:
        _chart(s, "hourly_mix", "hourly_mix", (hourly,))
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


def whole_day_utilisation(sc: Scenario, det: Any, util: pd.DataFrame) -> pd.DataFrame:
    """The simulated utilisation rows (``source`` = simulated) and, when fewer than a whole
    day of hours was simulated, every hour of the day per pool modelled (``source`` =
    modelled): the cost table's ``utilisation`` of the pool's deployment (mean load / capacity
    at the SLO) times each hour's load over the mean, the load being the requests per hour of
    the classes it serves (:func:`planner.workload.hourly_rates` on their diurnal profiles).
    """
    from planner.workload import diurnal_weights, hourly_rates

    sim = util[["hour", "pool", "utilisation"]].assign(source="simulated")
    summ = getattr(det, "summary", None)
    if summ is None or summ.empty or sim.groupby("pool")["hour"].nunique().min() >= 24:
        return sim
    rows = []
    for pool in sorted(sim["pool"].astype(str).unique()):
        r = summ[summ["deployment"] == pool]
        if r.empty or not np.isfinite(float(r["utilisation"].iloc[0])):
            continue
        classes = [c for c in str(r["classes_served"].iloc[0] or "").split(",")
                   if c in sc.workload]
        if not classes:
            continue
        w = {c: diurnal_weights(sc.workload[c].diurnal) for c in classes}
        periods = max(x.size for x in w.values())  # a day, or a week when one class has one
        load = sum(hourly_rates(med(sc.workload[c].requests_per_day), w[c],
                                med(sc.workload[c].batch_share), periods=periods)
                   for c in classes)
        if not np.any(load > 0):
            continue
        u = float(r["utilisation"].iloc[0]) * load / load.mean()
        rows.append(pd.DataFrame({"hour": np.arange(periods), "pool": pool, "utilisation": u,
                                  "source": "modelled"}))
    return pd.concat([*rows, sim], ignore_index=True) if rows else sim


def build_simulation(ctx: Context) -> Section:
    r = ctx.get("simulation")
    s = Section("simulation", "Simulation: latency, SLOs and utilisation")
    _howto(s)
    req = _frame(r, "requests")
    targets = _frame(r, "slo_targets")
    if req is not None:
        for metric in ("ttft_s", "tpot_s", "e2e_s"):
            if metric in req.columns and req[metric].notna().any():
                slo = None
                if targets is not None:
                    slo = targets[targets["metric"] == metric][["class", "slo_s"]]
                _chart(s, f"latency_cdf_{metric.removesuffix('_s')}", "latency_cdf",
                       (req, metric, slo))
        s.add(Table("latency_percentiles", latency_percentiles(req),
                    "Latency percentiles (seconds) per class."))
    if (att := _frame(r, "slo")) is not None:
        _chart(s, "slo_attainment", "slo_attainment", (att,))
        s.add(Table("slo_attainment", att))
    if (util := _frame(r, "utilisation")) is not None:
        day = whole_day_utilisation(ctx.scenario, ctx.get("deterministic"), util)
        _chart(s, "utilisation_heatmap", "utilisation_heatmap", (day,),
               "Every hour of the day: load over capacity at the SLO from the diurnal "
               "profile; the simulated hour is outlined with its busy share, the share of "
               "paid replica time with at least one request in "
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
    _howto(s)
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
    _chart(s, "predicted_vs_measured", "predicted_vs_measured", (v,))
    s.add(Table("perf_validation", v))
    _closed_loop(s, ctx.get("performance"))
    return s


def _closed_loop(s: Section, result: Any) -> None:
    """The closed-loop part of the performance section (:mod:`planner.report.perf_validation`)."""

    errors = _frame(result, "closed_loop_errors")
    if errors is None:
        s.add(Note("Closed-loop validation not shown: the published closed-loop measurements "
                   "are not installed."))
        return
    summary = _frame(result, "closed_loop_summary")
    text = ("Latency at a given load: published closed-loop benchmarks (a fixed number of "
            "requests always in flight; SemiAnalysis InferenceX, NVIDIA NIM, dstack) "
            "predicted by the same step model the sizing and the simulator use.")
    if summary is not None:
        held = summary[summary["rows_set"].str.startswith("held out")]
        if not held.empty:
            r = held.iloc[0]
            text += (f" On {int(r['rows'])} held-out points the median absolute error is "
                     f"{r['tput_median_abs']:.1%} for throughput, {r['itl_median_abs']:.1%} "
                     f"for ITL and {r['ttft_median_abs']:.1%} for TTFT.")
    s.add(Paragraph(text))
    curves = _frame(result, "closed_loop_curves")
    if curves is not None:
        _chart(s, "closed_loop_vs_concurrency",
               "planner.report.perf_validation:closed_loop_chart", (curves,),
               "One published curve per source and GPU (the one with most concurrency "
               "points); every curve is in the error tables.")
    if summary is not None:
        s.add(Table("closed_loop_summary", summary,
                    "Median |error| and bias (median of predicted / measured - 1) by half of "
                    "the data: the parameters were fitted on the fit half only."))
    s.add(Table("closed_loop_errors", errors,
                "Median |error| and bias per source and GPU, all points with a prediction."))


def _value_text(v: Any) -> str:
    if isinstance(v, Mapping) and "dist" in v:
        args = ", ".join(f"{k}={v[k]}" for k in v if k != "dist" and v[k] is not None)
        return f"{v['dist']}({args})"
    if isinstance(v, list | tuple):
        return ", ".join(_value_text(x) for x in v)
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return f"{int(v)}"
    return str(v)


def _file_text(path: Any) -> str:
    """A scenario file as the reader knows it, never an absolute path of this machine:
    ``example:NAME`` for a bundled template, the path relative to the working directory when
    under it, else the file name."""
    import os
    from pathlib import Path

    p = Path(str(path))
    templates = Path(__file__).resolve().parents[1] / "templates"
    try:
        if p.resolve().parent == templates:
            return f"example:{p.stem}"
    except OSError:  # pragma: no cover - an unreadable path: fall through to its name
        pass
    if not p.is_absolute():
        return str(p)
    try:
        return str(p.resolve().relative_to(Path(os.getcwd()).resolve()))
    except ValueError:
        return p.name


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
        rows.append(("(file)", _file_text(sc.source_path)))
    return pd.DataFrame(rows, columns=["key", "value"])


def build_inputs(ctx: Context) -> Section:
    s = Section("inputs", "Inputs")
    s.add(Table("inputs", scenario_inputs(ctx.scenario),
                "Every scenario value (after variants and overrides), as dotted keys."))
    s.add(HowTo("Glossary", tuple(sorted(glossary.TERMS.items(), key=lambda kv: kv[0].lower()))))
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
