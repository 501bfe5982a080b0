"""Altair chart builders for reports: pure functions ``DataFrame -> alt.Chart`` (no I/O).

Every builder documents the columns it reads (extra columns are ignored), reduces large
inputs to a few hundred rows itself (ECDFs on a quantile grid), and returns a chart with a
title, axis titles with units and tooltips. Missing columns raise ``ValueError`` naming them
(a programming error); an input with nothing to draw (empty, or no positive values for a log
axis) raises :class:`NoData`, a ``ValueError`` subclass a report turns into a note.

Deployments get the same colour in every chart: the colour domain is the sorted set of names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import altair as alt
import numpy as np
import pandas as pd

WIDTH = 560
HEIGHT = 320

#: Probability grid for ECDFs drawn from samples (201 points: 0, 0.5 %, ..., 100 %).
ECDF_GRID = np.linspace(0.0, 1.0, 201)

USD = ",.0f"
#: Largest / smallest value from which an axis of costs or latencies is drawn on a log scale.
LOG_SPREAD = 10.0
#: The same for latency CDFs (a wider range: SLOs are often 10x the typical latency).
LATENCY_LOG_SPREAD = 20.0
#: An SLO more than this multiple of the slowest class's P99.5 is named, not drawn.
SLO_REACH = 5.0
USD_FINE = ",.4~g"


class NoData(ValueError):
    """The input holds nothing this chart can draw."""


def _need(df: pd.DataFrame, cols: Iterable[str], chart: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{chart}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(
            f"{chart}: missing column(s) {', '.join(missing)}; got {', '.join(map(str, df.columns))}"
        )
    if df.empty:
        raise NoData(f"{chart}: the input table is empty")


#: Human labels (with units) of the column and component names charts show in legends.
LABELS = {
    "input": "input tokens", "cached_input": "cached input tokens",
    "output": "output tokens", "batch_input": "batch input tokens",
    "batch_output": "batch output tokens", "ttft_s": "time to first token (s)",
    "tpot_s": "time per output token (s)", "e2e_s": "end-to-end latency (s)",
    "usd_per_month": "USD per month", "requests_per_day": "requests per day",
    "requests_per_s": "requests per second", "gpu rental": "GPU rental",
    "capex": "capex (purchase, amortised)",
}
_TABLES = ("workload", "api", "cloud", "onprem", "planning", "scenario", "trends", "finetune",
           "servers", "catalog", "simulation")
_UNITS = (("_usd_per_hour", " (USD per hour)"), ("_usd_per_mtok", " (USD per million tokens)"),
          ("_per_day", " per day"), ("_usd", " (USD)"), ("_s", " (s)"))


def human_label(name: object) -> str:
    """A column, cost component or scenario key as a reader would say it, with its unit:
    ``batch_input`` -> "batch input tokens", ``tpot_s`` -> "time per output token (s)",
    ``workload.chat.requests_per_day`` -> "chat: requests per day"."""
    text = str(name)
    if text in LABELS:
        return LABELS[text]
    parts = text.split(".")
    if len(parts) > 1 and parts[0] in _TABLES:
        parts = parts[1:]
    *where, last = parts
    if last in LABELS:
        tail = LABELS[last]
    else:
        tail = last
        for suffix, unit in _UNITS:
            if tail.endswith(suffix) and len(tail) > len(suffix):
                tail = tail[: -len(suffix)] + unit
                break
        tail = tail.replace("_", " ")
    return ": ".join([*where, tail]) if where else tail


def _domain(values: Iterable) -> list[str]:
    return sorted({str(v) for v in values})


def _color(field: str, values: Iterable, title: str) -> alt.Color:
    return alt.Color(f"{field}:N", title=title,
                     scale=alt.Scale(domain=_domain(values), scheme="tableau10"))


def _positive(df: pd.DataFrame, *cols: str) -> pd.DataFrame:
    """Rows where every column is finite and > 0 (for log scales)."""
    mask = np.ones(len(df), dtype=bool)
    for c in cols:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
        mask &= np.isfinite(v) & (v > 0)
    return df.loc[mask]


def _log_scale(values) -> tuple[alt.Scale, list[float]]:
    """A log scale spanning exactly the positive data, and 1-2-5 tick values inside it
    (every integer mantissa when the data spans less than two decades)."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        lo, hi = lo / 2.0, hi * 2.0
    k0, k1 = int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi)))
    mant = (1, 2, 5) if np.log10(hi / lo) >= 2 else tuple(range(1, 10))
    ticks = [m * 10.0**k for k in range(k0, k1 + 1) for m in mant]
    ticks = [float(f"{t:.12g}") for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
    return alt.Scale(type="log", domain=[lo, hi], nice=False), ticks


#: Vega label expression turning SI "G" (giga) into "B" (billion) for counts of tokens.
BILLIONS = "replace(datum.label, 'G', 'B')"


def _lines_with_points(data: pd.DataFrame, x: alt.X, y: alt.Y, color: alt.Color,
                       tooltip: list) -> alt.LayerChart:
    """Lines dashed by ``kind`` plus a separate point layer (a ``point`` overlay would turn the
    dash legend into plain circles)."""
    base = alt.Chart(data).encode(x=x, y=y, color=color, tooltip=tooltip)
    return alt.layer(
        base.mark_line().encode(strokeDash=alt.StrokeDash(
            "kind:N", title="kind", legend=alt.Legend(symbolStrokeColor="#444"))),
        base.mark_point(filled=True, size=18),
    )


def _ecdf(df: pd.DataFrame, group: str, value: str) -> pd.DataFrame:
    """Empirical CDF of ``value`` per ``group`` on :data:`ECDF_GRID` (quantiles, vectorised)."""
    parts = []
    for g, sub in df.groupby(group, sort=True):
        v = pd.to_numeric(sub[value], errors="coerce").to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if v.size == 0:
            continue
        q = np.quantile(v, ECDF_GRID)
        parts.append(pd.DataFrame({group: g, value: q, "cumulative_probability": ECDF_GRID}))
    if not parts:
        raise NoData(f"no finite values of {value} to draw")
    return pd.concat(parts, ignore_index=True)


# ------------------------------------------------------------------------------- cost engine


def cost_breakdown(costs: pd.DataFrame) -> alt.Chart:
    """Stacked horizontal bars: monthly cost of each deployment split by cost component.

    Input: the deterministic engine's ``costs`` lines, columns ``deployment``, ``component``,
    ``usd_per_month`` (lines of several classes are summed per component).
    """
    _need(costs, ["deployment", "component", "usd_per_month"], "cost_breakdown")
    d = (costs.groupby(["deployment", "component"], as_index=False, sort=True)["usd_per_month"]
         .sum())
    d["component"] = d["component"].map(human_label)
    total = d.groupby("deployment")["usd_per_month"].transform("sum")
    d["share"] = np.where(total > 0, d["usd_per_month"] / total.where(total > 0, 1.0), 0.0)
    d["deployment_usd_per_month"] = total
    order = (d.groupby("deployment")["usd_per_month"].sum().sort_values().index.tolist())
    return alt.Chart(d, title="Monthly cost by deployment and component").mark_bar().encode(
        y=alt.Y("deployment:N", sort=order, title="deployment option"),
        x=alt.X("sum(usd_per_month):Q", title="cost (USD per month)",
                axis=alt.Axis(format="$,.0f")),
        color=alt.Color("component:N", title="cost component",
                        scale=alt.Scale(scheme="tableau20")),
        order=alt.Order("component:N"),
        tooltip=[
            alt.Tooltip("deployment:N"), alt.Tooltip("component:N"),
            alt.Tooltip("usd_per_month:Q", title="USD per month", format=USD),
            alt.Tooltip("share:Q", title="share of the option", format=".1%"),
            alt.Tooltip("deployment_usd_per_month:Q", title="option total, USD per month",
                        format=USD),
        ],
    ).properties(width=WIDTH, height=max(120, 34 * len(order)))


def cost_vs_volume(curve: pd.DataFrame, breakeven: pd.DataFrame | None = None,
                   current_requests_per_day: float | None = None) -> alt.LayerChart:
    """Monthly cost of each option against request volume (log-log), with break-even points.

    Input ``curve`` (breakeven engine's ``curve``): ``deployment``, ``requests_per_day``,
    ``usd_per_month`` (optional ``kind``, ``volume_scale``). ``breakeven`` (its ``volume``
    table): ``api``, ``selfhosted``, ``requests_per_day``, ``usd_per_month`` (rows without a
    crossing, NaN, are skipped). ``current_requests_per_day`` draws a rule at the scenario's
    own volume.
    """
    _need(curve, ["deployment", "requests_per_day", "usd_per_month"], "cost_vs_volume")
    c = _positive(curve, "requests_per_day", "usd_per_month").copy()
    if c.empty:
        raise NoData("cost_vs_volume: no positive volumes and costs to draw on log axes")
    if "kind" not in c.columns:
        c["kind"] = ""
    xs, xt = _log_scale(c["requests_per_day"])
    ys, yt = _log_scale(c["usd_per_month"])
    x = alt.X("requests_per_day:Q", title="volume (requests per day, log scale)",
              scale=xs, axis=alt.Axis(format="~s", values=xt))
    y = alt.Y("usd_per_month:Q", title="cost (USD per month, log scale)",
              scale=ys, axis=alt.Axis(format="$~s", values=yt))
    lines = _lines_with_points(
        c, x, y, _color("deployment", c["deployment"], "deployment option"),
        [alt.Tooltip("deployment:N"), alt.Tooltip("kind:N"),
         alt.Tooltip("requests_per_day:Q", title="requests per day", format=",.0f"),
         alt.Tooltip("usd_per_month:Q", title="USD per month", format=USD)],
    )
    layers: list = [lines]
    if current_requests_per_day is not None and current_requests_per_day > 0:
        now = pd.DataFrame({"requests_per_day": [float(current_requests_per_day)],
                            "label": ["scenario volume"]})
        layers.append(alt.Chart(now).mark_rule(color="gray", strokeDash=[2, 2]).encode(
            x="requests_per_day:Q",
            tooltip=[alt.Tooltip("label:N", title=" "),
                     alt.Tooltip("requests_per_day:Q", title="requests per day",
                                 format=",.0f")]))
    if breakeven is not None and not breakeven.empty:
        _need(breakeven, ["api", "selfhosted", "requests_per_day", "usd_per_month"],
              "cost_vs_volume (break-even)")
        b = _positive(breakeven, "requests_per_day", "usd_per_month").copy()
        if not b.empty:
            b["pair"] = b["selfhosted"].astype(str) + " beats " + b["api"].astype(str)
            tip = [alt.Tooltip("pair:N", title="break-even"),
                   alt.Tooltip("requests_per_day:Q", title="requests per day", format=",.0f"),
                   alt.Tooltip("usd_per_month:Q", title="USD per month", format=USD)]
            if "volume_scale" in b.columns:
                tip.append(alt.Tooltip("volume_scale:Q", title="x scenario volume",
                                       format=".3~g"))
            layers.append(alt.Chart(b).mark_point(
                shape="diamond", size=120, filled=True, color="black", opacity=0.85,
            ).encode(x="requests_per_day:Q", y="usd_per_month:Q", tooltip=tip))
    return alt.layer(*layers, title=alt.Title(
        "Monthly cost vs request volume, with API / self-hosted break-even points",
        subtitle="diamonds: volume above which the self-hosted option is cheaper",
    )).properties(width=WIDTH, height=HEIGHT)


def api_vs_selfhost(curve: pd.DataFrame) -> alt.LayerChart:
    """Cost per million tokens against monthly token volume (log-log): a flat API price vs
    self-hosted capacity whose fixed cost is spread over more tokens.

    Input: ``deployment``, ``tokens_per_month``, ``usd_per_month`` (optional ``kind``);
    plotted value: usd_per_mtok = usd_per_month / tokens_per_month x 1e6.
    """
    _need(curve, ["deployment", "tokens_per_month", "usd_per_month"], "api_vs_selfhost")
    c = _positive(curve, "tokens_per_month", "usd_per_month").copy()
    if c.empty:
        raise NoData("api_vs_selfhost: no positive volumes and costs to draw")
    if "kind" not in c.columns:
        c["kind"] = ""
    c["usd_per_mtok"] = c["usd_per_month"] / c["tokens_per_month"] * 1e6
    xs, xt = _log_scale(c["tokens_per_month"])
    ys, yt = _log_scale(c["usd_per_mtok"])
    chart = _lines_with_points(
        c,
        alt.X("tokens_per_month:Q", title="volume (tokens per month, log scale)",
              scale=xs, axis=alt.Axis(format="~s", values=xt, labelExpr=BILLIONS)),
        alt.Y("usd_per_mtok:Q", title="cost (USD per million tokens, log scale)",
              scale=ys, axis=alt.Axis(format="$~g", values=yt)),
        _color("deployment", c["deployment"], "deployment option"),
        [alt.Tooltip("deployment:N"), alt.Tooltip("kind:N"),
         alt.Tooltip("tokens_per_month:Q", title="tokens per month", format=".4~s"),
         alt.Tooltip("usd_per_mtok:Q", title="USD per million tokens", format=USD_FINE),
         alt.Tooltip("usd_per_month:Q", title="USD per month", format=USD)],
    )
    return chart.properties(title=alt.Title(
        "API vs self-hosted: cost per million tokens as volume grows",
        subtitle="an API's price per token is flat; self-hosted fixed costs spread over volume",
    ), width=WIDTH, height=HEIGHT)


def finetune_breakeven(ft: pd.DataFrame, points: int = 41) -> alt.LayerChart:
    """Cumulative cost against cumulative tokens: fine-tuned option (one-off cost plus cheaper
    tokens) vs the option it replaces; they cross at T* = C_ft / (c_versus - c_ft).

    Input (breakeven engine's ``finetune`` table): ``finetuned``, ``versus``,
    ``finetune_usd``, ``usd_per_mtok_finetuned``, ``usd_per_mtok_versus``,
    ``breakeven_tokens`` (NaN when the fine-tuned option never catches up).
    Cost lines: versus: c_v T; fine-tuned: C_ft + c_ft T (c in USD per token).
    """
    cols = ["finetuned", "versus", "finetune_usd", "usd_per_mtok_finetuned",
            "usd_per_mtok_versus", "breakeven_tokens"]
    _need(ft, cols, "finetune_breakeven")
    tstar = pd.to_numeric(ft["breakeven_tokens"], errors="coerce").to_numpy(dtype=float)
    finite = tstar[np.isfinite(tstar) & (tstar > 0)]
    if finite.size:
        t_max = 2.5 * float(finite.max())
    else:
        # no crossing: show up to where the fine-tune would be 10x its one-off cost in tokens
        c = pd.to_numeric(ft["usd_per_mtok_versus"], errors="coerce").to_numpy(dtype=float)
        c = c[np.isfinite(c) & (c > 0)]
        once = float(pd.to_numeric(ft["finetune_usd"], errors="coerce").max())
        t_max = 10.0 * once / (float(c.min()) / 1e6) if c.size and once > 0 else 1e9
    t = np.linspace(0.0, t_max, points)
    lines = []
    for r in ft.itertuples(index=False):
        lines.append(pd.DataFrame({
            "option": f"{r.finetuned} (fine-tuned, incl. one-off {r.finetune_usd:,.0f} USD)",
            "tokens": t, "usd": float(r.finetune_usd) + float(r.usd_per_mtok_finetuned) * t / 1e6,
        }))
        lines.append(pd.DataFrame({"option": f"{r.versus} (not fine-tuned)", "tokens": t,
                                   "usd": float(r.usd_per_mtok_versus) * t / 1e6}))
    d = pd.concat(lines, ignore_index=True).drop_duplicates(["option", "tokens"])
    chart = alt.Chart(d).mark_line().encode(
        x=alt.X("tokens:Q", title="cumulative tokens served",
                axis=alt.Axis(format="~s", labelExpr=BILLIONS)),
        y=alt.Y("usd:Q", title="cumulative cost (USD)", axis=alt.Axis(format="$~s")),
        color=alt.Color("option:N", title="option", legend=alt.Legend(labelLimit=420)),
        tooltip=[alt.Tooltip("option:N"),
                 alt.Tooltip("tokens:Q", title="cumulative tokens", format=".4~s"),
                 alt.Tooltip("usd:Q", title="cumulative USD", format=USD)],
    )
    pts = ft.assign(
        tokens=tstar,
        usd=ft["finetune_usd"].astype(float)
        + ft["usd_per_mtok_finetuned"].astype(float) * tstar / 1e6,
        pair=ft["finetuned"].astype(str) + " vs " + ft["versus"].astype(str),
    )
    pts = _positive(pts, "tokens")
    layers = [chart]
    if not pts.empty:
        tip = [alt.Tooltip("pair:N", title="break-even"),
               alt.Tooltip("tokens:Q", title="break-even tokens", format=".4~s"),
               alt.Tooltip("usd:Q", title="cumulative USD at break-even", format=USD)]
        if "payback_months" in pts.columns:
            tip.append(alt.Tooltip("payback_months:Q", title="payback (months)", format=".3~g"))
        layers.append(alt.Chart(pts[["pair", "tokens", "usd"] + (
            ["payback_months"] if "payback_months" in pts.columns else [])]).mark_point(
            shape="diamond", size=120, filled=True, color="black").encode(
            x="tokens:Q", y="usd:Q", tooltip=tip))
    return alt.layer(*layers, title=alt.Title(
        "Fine-tune break-even: cumulative cost vs cumulative tokens",
        subtitle="diamond: T* = fine-tune cost / (cost per token saved)",
    )).properties(width=WIDTH, height=HEIGHT)


# ------------------------------------------------------------------------------- risk engine


def risk_distribution(samples: pd.DataFrame, value: str = "usd_per_month") -> alt.LayerChart:
    """ECDF of each option's sampled cost, with its P5, P50 and P95 marked.

    Input: one row per Monte Carlo sample and option: ``deployment`` and ``value``
    (default ``usd_per_month``). Any number of samples: the ECDF is drawn from 201 quantiles.
    """
    _need(samples, ["deployment", value], "risk_distribution")
    e = _ecdf(samples, "deployment", value)
    q = []
    for dep, sub in samples.groupby("deployment", sort=True):
        v = pd.to_numeric(sub[value], errors="coerce").to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if v.size:
            for p, lab in ((0.05, "P5"), (0.5, "P50"), (0.95, "P95")):
                q.append({"deployment": dep, value: float(np.quantile(v, p)),
                          "cumulative_probability": p, "quantile": lab})
    qd = pd.DataFrame(q)
    color = _color("deployment", samples["deployment"], "deployment option")
    pos = e[value].to_numpy(dtype=float)
    pos = pos[np.isfinite(pos) & (pos > 0)]
    if pos.size and (e[value] > 0).all() and pos.max() / pos.min() >= LOG_SPREAD:
        # options a decade apart: a log axis keeps the cheap ones off the left edge
        scale, ticks = _log_scale(pos)
        x = alt.X(f"{value}:Q", title="cost (USD per month, log scale)", scale=scale,
                  axis=alt.Axis(format="$~s", values=ticks))
    else:
        x = alt.X(f"{value}:Q", title="cost (USD per month)", axis=alt.Axis(format="$~s"))
    y = alt.Y("cumulative_probability:Q", title="probability cost is at most x",
              axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1]))
    line = alt.Chart(e).mark_line(interpolate="step-after").encode(
        x=x, y=y, color=color,
        tooltip=[alt.Tooltip("deployment:N"),
                 alt.Tooltip(f"{value}:Q", title="USD per month", format=USD),
                 alt.Tooltip("cumulative_probability:Q", title="P(cost <= x)", format=".1%")])
    marks = alt.Chart(qd).mark_point(filled=True, size=70).encode(
        x=x, y=y, color=color, shape=alt.Shape("quantile:N", title="quantile",
                                               sort=["P5", "P50", "P95"]),
        tooltip=[alt.Tooltip("deployment:N"), alt.Tooltip("quantile:N"),
                 alt.Tooltip(f"{value}:Q", title="USD per month", format=USD)])
    return alt.layer(line, marks, title="Monthly cost distribution (ECDF) with P5 / P50 / P95"
                     ).properties(width=WIDTH, height=HEIGHT)


def win_probability(win: pd.DataFrame) -> alt.Chart:
    """Probability each option is the cheapest (share of Monte Carlo samples).

    Input: ``deployment``, ``probability`` (0..1).
    """
    _need(win, ["deployment", "probability"], "win_probability")
    return alt.Chart(win, title="Probability each option is the cheapest").mark_bar().encode(
        y=alt.Y("deployment:N", sort="-x", title="deployment option"),
        x=alt.X("probability:Q", title="probability of being cheapest (share of samples)",
                axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
        color=_color("deployment", win["deployment"], "deployment option"),
        tooltip=[alt.Tooltip("deployment:N"),
                 alt.Tooltip("probability:Q", title="P(cheapest)", format=".1%")],
    ).properties(width=WIDTH, height=max(100, 30 * len(win)))


def tornado(df: pd.DataFrame, top: int = 15) -> alt.LayerChart:
    """Tornado of drivers: the output's swing when one input goes from its P10 to its P90
    with all others at their medians, largest swing on top.

    Input: ``input`` (name), ``low_usd_per_month`` (output with the input at P10),
    ``high_usd_per_month`` (at P90), ``base_usd_per_month`` (all at medians; one value);
    optional ``input_low``, ``input_high`` (the input's P10/P90, for tooltips).
    """
    cols = ["input", "low_usd_per_month", "high_usd_per_month", "base_usd_per_month"]
    _need(df, cols, "tornado")
    d = df.copy()
    d["input"] = d["input"].map(human_label)
    d["swing_usd_per_month"] = (d["high_usd_per_month"] - d["low_usd_per_month"]).abs()
    d = d.sort_values("swing_usd_per_month", ascending=False).head(top)
    order = d["input"].astype(str).tolist()
    base = float(d["base_usd_per_month"].iloc[0])
    bars = []
    for side, col, lab in (("low", "low_usd_per_month", "input at P10"),
                           ("high", "high_usd_per_month", "input at P90")):
        part = d[["input", col, "swing_usd_per_month"]].rename(columns={col: "usd_per_month"})
        part["setting"] = lab
        part["base_usd_per_month"] = base
        extra = f"input_{side}"
        part["input_value"] = d[extra].astype(str) if extra in d.columns else ""
        bars.append(part)
    b = pd.concat(bars, ignore_index=True)
    bar = alt.Chart(b).mark_bar(opacity=0.85).encode(
        y=alt.Y("input:N", sort=order, title="uncertain input"),
        x=alt.X("base_usd_per_month:Q", title="cost (USD per month)",
                scale=alt.Scale(zero=False), axis=alt.Axis(format="$~s")),
        x2="usd_per_month:Q",
        color=alt.Color("setting:N", title="input setting",
                        scale=alt.Scale(domain=["input at P10", "input at P90"],
                                        range=["#4c78a8", "#e45756"])),
        tooltip=[alt.Tooltip("input:N"), alt.Tooltip("setting:N"),
                 alt.Tooltip("input_value:N", title="input value"),
                 alt.Tooltip("usd_per_month:Q", title="USD per month", format=USD),
                 alt.Tooltip("swing_usd_per_month:Q", title="swing, USD per month",
                             format=USD)])
    rule = alt.Chart(pd.DataFrame({"base_usd_per_month": [base], "label": ["all at median"]})
                     ).mark_rule(color="black").encode(
        x="base_usd_per_month:Q",
        tooltip=[alt.Tooltip("label:N", title=" "),
                 alt.Tooltip("base_usd_per_month:Q", title="USD per month", format=USD)])
    return alt.layer(bar, rule, title=alt.Title(
        "Tornado: which assumption moves the monthly cost most",
        subtitle="each bar: one input from its P10 to its P90, all others at their medians",
    )).properties(width=WIDTH, height=max(120, 26 * len(order)))


def cost_paths(df: pd.DataFrame) -> alt.LayerChart:
    """Multi-year cumulative cost: median running total and P5-P95 band per option, and the
    on-prem residual-value credit at the end of the horizon as a separate labelled step.

    Input: ``year`` (end of year 1, 2, ...), ``deployment``, ``usd_p5``, ``usd_p50``,
    ``usd_p95`` (cash paid from the start to the end of that year, *before* any residual
    credit, so never decreasing); optional ``residual_credit_usd`` (the book value of the
    servers credited at the end; > 0 on the last year's row of an on-prem option) and
    ``usd_net_p50`` (the median running total net of that credit). A point at year 0, cost 0,
    starts every line.
    """
    _need(df, ["year", "deployment", "usd_p5", "usd_p50", "usd_p95"], "cost_paths")
    d = df[["year", "deployment", "usd_p5", "usd_p50", "usd_p95"]].copy()
    start = pd.DataFrame({"year": 0.0, "deployment": sorted(d["deployment"].unique()),
                          "usd_p5": 0.0, "usd_p50": 0.0, "usd_p95": 0.0})
    if float(d["year"].min()) > 0:
        d = pd.concat([start, d], ignore_index=True)
    color = _color("deployment", d["deployment"], "deployment option")
    x = alt.X("year:Q", title="end of year", axis=alt.Axis(tickMinStep=1, format="d"),
              scale=alt.Scale(domain=[0, float(d["year"].max())], nice=False))
    tip = [alt.Tooltip("deployment:N"), alt.Tooltip("year:Q", title="end of year", format="d"),
           alt.Tooltip("usd_p5:Q", title="cumulative USD, P5", format=USD),
           alt.Tooltip("usd_p50:Q", title="cumulative USD, median", format=USD),
           alt.Tooltip("usd_p95:Q", title="cumulative USD, P95", format=USD)]
    band = alt.Chart(d).mark_area(opacity=0.15).encode(
        x=x, y=alt.Y("usd_p5:Q", title="cumulative cost since today (USD)",
                     axis=alt.Axis(format="$~s")),
        y2="usd_p95:Q", color=alt.Color("deployment:N", legend=None, scale=alt.Scale(
            domain=_domain(d["deployment"]), scheme="tableau10")),
        tooltip=tip)
    line = alt.Chart(d).mark_line(point=True).encode(x=x, y="usd_p50:Q", color=color,
                                                     tooltip=tip)
    layers: list = [band, line]
    subtitle = ["line: median running total; band: P5 to P95"]
    if {"residual_credit_usd", "usd_net_p50"} <= set(df.columns):
        r = df[pd.to_numeric(df["residual_credit_usd"], errors="coerce").fillna(0) > 0].copy()
        if not r.empty:
            r["label"] = ("residual value -" + r["residual_credit_usd"].map(
                lambda v: f"${v:,.0f}"))
            rtip = [alt.Tooltip("deployment:N"),
                    alt.Tooltip("residual_credit_usd:Q",
                                title="servers' residual value credited (USD, median)",
                                format=USD),
                    alt.Tooltip("usd_p50:Q", title="cumulative before the credit", format=USD),
                    alt.Tooltip("usd_net_p50:Q", title="net of the credit (median)",
                                format=USD)]
            layers += [
                alt.Chart(r).mark_rule(strokeDash=[3, 2], strokeWidth=2).encode(
                    x="year:Q", y="usd_p50:Q", y2="usd_net_p50:Q", color=color, tooltip=rtip),
                alt.Chart(r).mark_point(shape="diamond", size=110, filled=True).encode(
                    x="year:Q", y="usd_net_p50:Q", color=color, tooltip=rtip),
                alt.Chart(r).mark_text(align="right", dx=-8, dy=4, fontSize=11,
                                       color="#333").encode(
                    x="year:Q", y="usd_net_p50:Q", text="label:N"),
            ]
            subtitle.append("diamond: net of the on-prem servers' residual (book) value, "
                            "credited at the end of the horizon")
    return alt.layer(*layers, title=alt.Title(
        "Cumulative cost over the horizon", subtitle=subtitle)
    ).properties(width=WIDTH, height=HEIGHT)


# --------------------------------------------------------------------------------- optimiser


def hourly_mix(df: pd.DataFrame, value: str = "requests_per_s",
               y_title: str = "load served (requests per second)") -> alt.Chart:
    """Hourly mix: load served by each deployment, stacked, over the hours of a day or week.

    Input: ``hour`` (0-23 or 0-167), ``deployment``, ``value`` (default ``requests_per_s``).
    """
    _need(df, ["hour", "deployment", value], "hourly_mix")
    # step-after ends each hour at the next point: repeat the last hour one hour on
    last = df[df["hour"] == df["hour"].max()].assign(hour=lambda d: d["hour"] + 1)
    df = pd.concat([df[["hour", "deployment", value]], last[["hour", "deployment", value]]],
                   ignore_index=True)
    return alt.Chart(df, title="Hourly mix: load served by each deployment").mark_area(
        interpolate="step-after", opacity=0.85).encode(
        x=alt.X("hour:Q", title="hour of day" if df["hour"].max() <= 24 else "hour of week",
                scale=alt.Scale(domain=[float(df["hour"].min()), float(df["hour"].max())]),
                axis=alt.Axis(tickMinStep=1)),
        y=alt.Y(f"sum({value}):Q", title=y_title, stack="zero"),
        color=_color("deployment", df["deployment"], "deployment option"),
        order=alt.Order("deployment:N"),
        tooltip=[alt.Tooltip("hour:Q"), alt.Tooltip("deployment:N"),
                 alt.Tooltip(f"{value}:Q", title=y_title, format=",.4~g")],
    ).properties(width=WIDTH, height=HEIGHT)


# -------------------------------------------------------------------------------- simulation


#: Human names (with units) of the latency columns, for axis titles and legends.
LATENCY_LABELS = {"ttft_s": "time to first token", "tpot_s": "time per output token",
                  "e2e_s": "end-to-end latency"}


def latency_cdf(df: pd.DataFrame, metric: str = "ttft_s", slo: pd.DataFrame | None = None,
                log_x: bool | None = None) -> alt.LayerChart:
    """Latency CDF per workload class, with each class's SLO as a vertical rule.

    Input: per-request rows with ``class`` and ``metric`` (seconds; default ``ttft_s``;
    NaN rows, e.g. dropped requests, are ignored). ``slo``: ``class``, ``slo_s``.

    The x axis spans the data, not the SLO alone: from the smallest class's P0.5 to
    max(largest P99.5, largest SLO), on a log scale when that range spans
    :data:`LATENCY_LOG_SPREAD` or more (``log_x=None``, the default; True/False force it), so
    curves far below their SLO are not squeezed against zero. An SLO more than
    :data:`SLO_REACH` times the largest P99.5 is named in the subtitle instead of drawn.
    """
    _need(df, ["class", metric], "latency_cdf")
    e = _ecdf(df, "class", metric)
    label = LATENCY_LABELS.get(metric, metric)
    color = _color("class", df["class"], "workload class")
    slo_v = np.zeros(0)
    s = None
    if slo is not None and not slo.empty:
        _need(slo, ["class", "slo_s"], "latency_cdf (slo)")
        s = slo.dropna(subset=["slo_s"]).rename(columns={"slo_s": metric})
        slo_v = pd.to_numeric(s[metric], errors="coerce").to_numpy(dtype=float)
        slo_v = slo_v[np.isfinite(slo_v) & (slo_v > 0)]
    lo_q, hi_q = [], []
    for _, sub in df.groupby("class", sort=True):
        v = pd.to_numeric(sub[metric], errors="coerce").to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if v.size:
            a, b = np.quantile(v, [0.005, 0.995])
            lo_q.append(a)
            hi_q.append(b)
    data_hi = max(hi_q)
    # an SLO far beyond the data would squeeze the curves: such rules are named instead
    near = slo_v[slo_v <= SLO_REACH * data_hi] if data_hi > 0 else slo_v
    far = slo_v[~np.isin(slo_v, near)]
    if s is not None and far.size:
        s = s[pd.to_numeric(s[metric], errors="coerce") <= SLO_REACH * data_hi]
    hi = max([data_hi, *near.tolist()])
    pos_lo = [v for v in lo_q if v > 0]
    lo = min(pos_lo) if pos_lo else 0.0
    if log_x is None:
        log_x = lo > 0 and hi / lo >= LATENCY_LOG_SPREAD
    if log_x and lo > 0:
        scale, ticks = _log_scale([lo, hi])
        if len(ticks) > 9:  # every mantissa over a decade and more: 1, 2, 5 only
            ticks = [t for t in ticks if f"{t:.1e}"[0] in "125"]
        e = e[e[metric] > 0]
        x = alt.X(f"{metric}:Q", title=f"{label} (seconds, log scale)", scale=scale,
                  axis=alt.Axis(values=ticks, format="~g"))
    else:
        log_x = False
        x = alt.X(f"{metric}:Q", title=f"{label} (seconds)",
                  scale=alt.Scale(domain=[0.0, hi * 1.05 if hi > 0 else 1.0], nice=False))
    layers = [alt.Chart(e).mark_line(interpolate="step-after", clip=True).encode(
        x=x, y=alt.Y("cumulative_probability:Q", title="share of requests at most x",
                     axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
        color=color,
        tooltip=[alt.Tooltip("class:N", title="workload class"),
                 alt.Tooltip(f"{metric}:Q", title=f"{label} (s)", format=".4~g"),
                 alt.Tooltip("cumulative_probability:Q", title="share of requests",
                             format=".1%")])]
    drawn_slo = False
    if s is not None and not s.empty and near.size:
        drawn_slo = True
        layers.append(alt.Chart(s).mark_rule(strokeDash=[4, 3], strokeWidth=2).encode(
            x=f"{metric}:Q", color=color,
            tooltip=[alt.Tooltip("class:N", title="workload class"),
                     alt.Tooltip(f"{metric}:Q", title="SLO (s)", format=".4~g")]))
    sub = ["dashed: the class's SLO" if drawn_slo else
           ("no SLO set for this measure" if not far.size else "")]
    if far.size:
        sub.append(f"SLO {', '.join(f'{v:.3g}' for v in sorted(set(far.tolist())))} s: off the "
                   f"axis, more than {SLO_REACH:g}x the slowest class's P99.5 "
                   f"({data_hi:.3g} s)")
    sub = [x for x in sub if x]
    return alt.layer(*layers, title=alt.Title(
        f"Simulated {label} per class", subtitle=sub)
    ).properties(width=WIDTH, height=HEIGHT)


def slo_attainment(df: pd.DataFrame) -> alt.LayerChart:
    """Share of requests meeting each SLO bound, per class.

    Input: ``class``, ``metric`` (e.g. ``ttft_s``), ``attainment`` (0..1); optional
    ``target`` (0..1, the SLO percentile as a share, drawn as a tick).
    """
    _need(df, ["class", "metric", "attainment"], "slo_attainment")
    df = df.assign(metric=df["metric"].map(human_label))
    y = alt.Y("attainment:Q", title="requests meeting the SLO (share)",
              axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1]))
    tip = [alt.Tooltip("class:N"), alt.Tooltip("metric:N", title="SLO bound"),
           alt.Tooltip("attainment:Q", title="attainment", format=".2%")]
    if "target" in df.columns:
        tip.append(alt.Tooltip("target:Q", title="target", format=".1%"))
    bars = alt.Chart(df).mark_bar().encode(
        x=alt.X("class:N", title="workload class", axis=alt.Axis(labelAngle=0)),
        xOffset="metric:N", y=y,
        color=alt.Color("metric:N", title="SLO bound"), tooltip=tip)
    layers = [bars]
    if "target" in df.columns:
        layers.append(alt.Chart(df.dropna(subset=["target"])).mark_tick(
            color="black", thickness=2, size=18).encode(
            x="class:N", xOffset="metric:N", y="target:Q", tooltip=tip))
    return alt.layer(*layers, title=alt.Title(
        "SLO attainment per class", subtitle="black tick: target share")
    ).properties(width=WIDTH, height=HEIGHT)


def utilisation_heatmap(df: pd.DataFrame) -> alt.LayerChart:
    """Utilisation of each pool in every hour of the day (24 columns, or 168 for a week).

    Input: ``hour``, ``pool``, ``utilisation`` (0..1); optional ``source``: ``simulated``
    (the busy share the simulation measured) or ``modelled`` (load / capacity at the SLO from
    the workload's diurnal profile). When modelled rows are given they colour the cells
    (one measure across the day) and each simulated row outlines its cell, labelled with the
    simulated busy share; otherwise the simulated rows colour the cells. Hours without a row
    are left blank, in their place in the day.
    """
    _need(df, ["hour", "pool", "utilisation"], "utilisation_heatmap")
    d = df.copy()
    if "source" not in d.columns:
        d["source"] = "simulated"
    modelled = d[d["source"] == "modelled"]
    sim = d[d["source"] != "modelled"]
    cells_df = modelled if not modelled.empty else sim
    n_hours = 168 if float(d["hour"].max()) >= 24 else 24
    hours = list(range(n_hours))
    x = alt.X("hour:O", title="hour of the day" if n_hours == 24 else "hour of the week",
              scale=alt.Scale(domain=hours),
              axis=alt.Axis(labelAngle=0, values=hours[:: 1 if n_hours == 24 else 12]))
    y = alt.Y("pool:N", title="GPU pool (deployment)")
    what = ("load / capacity at the SLO" if not modelled.empty else "busy share (simulated)")
    # modelled loads are often far below 1: the scale runs to their peak so the day shows
    top = 1.0 if modelled.empty else max(float(modelled["utilisation"].max()), 1e-6)
    tip = [alt.Tooltip("pool:N", title="GPU pool"), alt.Tooltip("hour:O", title="hour"),
           alt.Tooltip("utilisation:Q", title=what, format=".1%")]
    layers: list = [alt.Chart(cells_df).mark_rect().encode(
        x=x, y=y,
        color=alt.Color("utilisation:Q", title=what,
                        scale=alt.Scale(domain=[0, top], scheme="viridis"),
                        legend=alt.Legend(format="%")),
        tooltip=tip)]
    sub = f"colour: {what}"
    if not modelled.empty and not sim.empty:
        s = sim.assign(label=sim["utilisation"].map(lambda v: f"{v:.0%}"))
        stip = [alt.Tooltip("pool:N", title="GPU pool"), alt.Tooltip("hour:O", title="hour"),
                alt.Tooltip("utilisation:Q", title="simulated busy share", format=".1%")]
        layers.append(alt.Chart(s).mark_rect(fillOpacity=0, stroke="#d62728",
                                             strokeWidth=2.5).encode(x=x, y=y, tooltip=stip))
        layers.append(alt.Chart(s).mark_text(fontSize=9, color="black", fontWeight="bold"
                                             ).encode(x=x, y=y, text="label:N", tooltip=stip))
        sub += ("; red outline: the simulated hour, labelled with the busy share the "
                "simulation measured")
    return alt.layer(*layers, title=alt.Title("Utilisation by hour and pool, whole day",
                                              subtitle=sub)
                     ).properties(width=WIDTH + 160, height=max(80, 34 * d["pool"].nunique()))


# ------------------------------------------------------------------------ performance model


def predicted_vs_measured(df: pd.DataFrame, bands: Sequence[float] = (0.15, 0.30)
                          ) -> alt.LayerChart:
    """Predicted vs measured throughput (log-log) with y = x and +-band lines.

    Input (``planner.perf.validation.predict_calibration``): ``id``,
    ``measured_tokens_per_s``, ``predicted_tokens_per_s``; optional ``model``,
    ``hardware``, ``setting``, ``error`` (predicted / measured - 1).
    """
    _need(df, ["id", "measured_tokens_per_s", "predicted_tokens_per_s"],
          "predicted_vs_measured")
    d = _positive(df, "measured_tokens_per_s", "predicted_tokens_per_s").copy()
    if d.empty:
        raise NoData("predicted_vs_measured: no positive throughputs to draw")
    if "error" not in d.columns:
        d["error"] = d["predicted_tokens_per_s"] / d["measured_tokens_per_s"] - 1.0
    if "setting" not in d.columns:
        d["setting"] = ""
    lo = float(min(d["measured_tokens_per_s"].min(), d["predicted_tokens_per_s"].min())) / 1.5
    hi = float(max(d["measured_tokens_per_s"].max(), d["predicted_tokens_per_s"].max())) * 1.5
    grid = np.geomspace(lo, hi, 2)
    ref = [pd.DataFrame({"measured_tokens_per_s": grid, "predicted_tokens_per_s": grid,
                         "line": "predicted = measured"})]
    for b in bands:
        for sgn in (1, -1):
            ref.append(pd.DataFrame({"measured_tokens_per_s": grid,
                                     "predicted_tokens_per_s": grid * (1 + sgn * b),
                                     "line": f"{'+' if sgn > 0 else '-'}{b:.0%}"}))
    r = pd.concat(ref, ignore_index=True)
    scale, ticks = _log_scale([lo, hi])
    x = alt.X("measured_tokens_per_s:Q", title="measured (output tokens per s, log scale)",
              scale=scale, axis=alt.Axis(format="~s", values=ticks))
    y = alt.Y("predicted_tokens_per_s:Q", title="predicted (output tokens per s, log scale)",
              scale=scale, axis=alt.Axis(format="~s", values=ticks))
    lines = alt.Chart(r).mark_line(color="gray", strokeWidth=1, clip=True).encode(
        x=x, y=y, detail="line:N", strokeDash=alt.condition(
            alt.datum.line == "predicted = measured", alt.value([1, 0]), alt.value([4, 3])),
        tooltip=[alt.Tooltip("line:N", title="reference")])
    tip = [alt.Tooltip(f"{c}:N") for c in ("id", "model", "hardware", "setting")
           if c in d.columns]
    tip += [alt.Tooltip("measured_tokens_per_s:Q", title="measured tokens/s", format=",.0f"),
            alt.Tooltip("predicted_tokens_per_s:Q", title="predicted tokens/s", format=",.0f"),
            alt.Tooltip("error:Q", title="error (predicted / measured - 1)", format="+.1%")]
    pts = alt.Chart(d).mark_point(filled=True, size=70).encode(
        x=x, y=y, color=alt.Color("setting:N", title="benchmark setting"), tooltip=tip)
    return alt.layer(lines, pts, title=alt.Title(
        "Performance model: predicted vs measured throughput",
        subtitle="solid: predicted = measured; dashed: "
        + ", ".join(f"+-{b:.0%}" for b in bands))
    ).properties(width=WIDTH, height=HEIGHT)
