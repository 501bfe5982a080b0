"""Which assumption drives the answer: tornado swings, rank correlations, break-even volumes.

- Tornado (one-at-a-time): each uncertain input is set to its P10 and to its P90 with every
  other input at its median, and each option's cost is recomputed; the swing is
  ``|cost(P90) - cost(P10)|``. All 2k scenarios are priced in one vectorised evaluation.
  Correlations are ignored here by construction (one input moves at a time).
- Global: Spearman rank correlation of each sampled input with each option's monthly cost
  over the Monte Carlo samples (average ranks for ties), and each input's share of the sum of
  squared rank correlations (a rough "contribution to variance" when inputs are independent
  and the response is close to monotone).
- Break-even volume: per sample, the multiple of the scenario's request volume at which a
  self-hosted option's monthly cost equals an API option's, by bisection in log(volume).

Every function but :func:`tornado` (the tornado of a scenario) works on a compiled scenario
(``model``: a :class:`planner.engines.risk.compiled.CompiledScenario`);
:func:`planner.engines.risk.run.run_montecarlo` calls them on the scenario it compiled and the
inputs it kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from planner.catalog import Catalog
from planner.config import Scenario
from planner.engines.risk.compiled import CompiledScenario, compile_scenario
from planner.errors import PlannerError
from planner.stats import metric_arrays

__all__ = [
    "BREAKEVEN_COLUMNS",
    "RANK_COLUMNS",
    "TORNADO_COLUMNS",
    "breakeven_frame",
    "breakeven_volumes",
    "rank_correlation",
    "rank_frame",
    "tornado",
    "tornado_compiled",
    "tornado_frame",
]

TORNADO_COLUMNS = ["deployment", "kind", "input", "low_value", "median_value", "high_value",
                   "usd_low", "usd_base", "usd_high", "swing", "rank"]
RANK_COLUMNS = ["deployment", "input", "spearman_rho", "contribution"]
BREAKEVEN_COLUMNS = [
    "self_hosted", "api", "samples", "p_self_cheaper_now", "p_always_cheaper", "p_never",
    "scale_p5", "scale_p50", "scale_p95", "requests_per_day_p5", "requests_per_day_p50",
    "requests_per_day_p95",
]
_METRICS = ("usd_per_month", "usd_horizon", "usd_per_mtok")


def tornado_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=TORNADO_COLUMNS)


def rank_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=RANK_COLUMNS)


def breakeven_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=BREAKEVEN_COLUMNS)


def tornado(scenario: Scenario, *, catalog: Catalog | None = None, low: float = 0.1,
            high: float = 0.9, metric: str = "usd_per_month",
            compiled: CompiledScenario | None = None) -> pd.DataFrame:
    """One-at-a-time sensitivity of a scenario: each uncertain input at its P10 and P90, the
    others at their medians (:func:`tornado_compiled` on the compiled
    scenario).

    Parameters
    ----------
    scenario : Scenario
    low, high : float
        Quantiles the input is swung between (default P10 and P90).
    metric : str
        ``usd_per_month`` (default), ``usd_horizon`` or ``usd_per_mtok``.

    Returns
    -------
    DataFrame
        One row per (deployment, input): the input's low/median/high values, the option's
        cost at each, the swing ``|usd_high - usd_low|`` and its rank within the deployment
        (1 = largest swing).
    """
    model = compiled or compile_scenario(scenario, catalog=catalog)
    return tornado_compiled(model, low=low, high=high, metric=metric)


def tornado_compiled(model: CompiledScenario, *, low: float = 0.1, high: float = 0.9,
                     metric: str = "usd_per_month") -> pd.DataFrame:
    """Tornado table of a compiled scenario (see :func:`tornado`)."""
    if metric not in _METRICS:
        raise PlannerError(f"metric: expected one of {', '.join(_METRICS)}, got {metric!r}")
    if not 0.0 <= low < high <= 1.0:
        raise PlannerError(f"low, high: expected 0 <= low < high <= 1, got {low!r}, {high!r}")
    keys = list(model.inputs)
    k = len(keys)
    if k == 0:
        return tornado_frame([])
    n = 2 * k + 1
    med = {key: model.inputs[key].dist.median() for key in keys}
    lo = {key: float(model.inputs[key].dist.quantile(low)) for key in keys}
    hi = {key: float(model.inputs[key].dist.quantile(high)) for key in keys}
    values = {}
    for i, key in enumerate(keys):
        arr = np.full(n, med[key])
        arr[2 * i] = lo[key]
        arr[2 * i + 1] = hi[key]
        values[key] = arr
    res = model.evaluate(values, n)
    rows = []
    for o in model.options:
        r = res[o.name]
        y = metric_arrays(r["monthly"], r["once"], r["tokens"], model.horizon)[metric]
        base = float(y[-1])
        sub = []
        for i, key in enumerate(keys):
            a, b = float(y[2 * i]), float(y[2 * i + 1])
            sub.append({
                "deployment": o.name, "kind": o.kind, "input": key, "low_value": lo[key],
                "median_value": med[key], "high_value": hi[key], "usd_low": a,
                "usd_base": base, "usd_high": b, "swing": abs(b - a),
            })
        sub.sort(key=lambda d: -d["swing"] if np.isfinite(d["swing"]) else np.inf)
        for rank, d in enumerate(sub, 1):
            d["rank"] = rank
        rows.extend(sub)
    return tornado_frame(rows)


def rank_correlation(inputs: pd.DataFrame | None, costs: pd.DataFrame) -> pd.DataFrame:
    """Spearman rank correlation of every input column with every cost column.

    Ranks are average ranks (ties, e.g. ``choice`` inputs, share a rank); an input that does
    not vary gets NaN. ``contribution`` = rho^2 / sum of rho^2 over the inputs, per deployment.
    """
    if inputs is None or inputs.shape[1] == 0 or len(inputs) < 3:
        return rank_frame([])
    m = min(len(inputs), len(costs))
    x = _average_ranks(inputs.to_numpy(dtype=float)[:m])
    y = _average_ranks(costs.to_numpy(dtype=float)[:m])
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    sx = np.sqrt((x * x).sum(axis=0))
    sy = np.sqrt((y * y).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (x.T @ y) / np.outer(sx, sy)
    rho = np.where(np.outer(sx > 0, sy > 0), rho, np.nan)
    rows = []
    for j, dep in enumerate(costs.columns):
        col = rho[:, j]
        tot = np.nansum(col * col)
        for i, key in enumerate(inputs.columns):
            r = float(col[i])
            rows.append({"deployment": dep, "input": key, "spearman_rho": r,
                         "contribution": r * r / tot if tot > 0 and np.isfinite(r) else np.nan})
    df = rank_frame(rows)
    df["_a"] = -df["spearman_rho"].abs().fillna(-1.0)
    df = df.sort_values(["deployment", "_a"], kind="stable").drop(columns="_a")
    return df.reset_index(drop=True)


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """Column-wise ranks 1..n, ties given their average rank (as scipy.stats.rankdata)."""
    n, k = a.shape
    out = np.empty((n, k))
    for j in range(k):
        col = a[:, j]
        # tied values share one average rank whatever their order, so the (5x faster)
        # unstable sort gives the same ranks; NaNs (each its own group) keep a stable order
        order = np.argsort(col, kind="stable" if np.isnan(col).any() else "quicksort")
        s = col[order]
        new = np.empty(n, dtype=bool)
        new[:1] = True
        np.not_equal(s[1:], s[:-1], out=new[1:])
        group = np.cumsum(new) - 1  # tie group of each sorted position
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], n)
        avg = 0.5 * (starts + ends + 1)  # mean of ranks start+1 .. end
        out[order, j] = avg[group]
    return out


def breakeven_volumes(model: CompiledScenario, inputs: pd.DataFrame | None, *,
                      lo: float = 1e-3, hi: float = 1e3, steps: int = 20) -> pd.DataFrame:
    """Distribution of the break-even volume of each (self-hosted, API) pair.

    For each sample, ``f(s) = cost_self(s) - cost_api(s)`` with every class's requests per day
    multiplied by ``s``; the break-even ``s*`` is where ``f`` changes sign, found by bisection
    on ``log s`` in [lo, hi] (``steps`` halvings: relative precision (hi/lo)^(2^-steps),
    1 + 1.3e-5 by default). Self-hosted cost is a step function of whole replicas, so several
    crossings may exist; bisection returns one of them (the first when ``f`` is monotone).
    Samples where the self-hosted option is already cheaper at ``lo`` count in
    ``p_always_cheaper``; samples still dearer at ``hi`` in ``p_never``; the quantiles are over
    the remaining samples. Requests per day = ``s*`` x the sample's user requests per day over
    the classes served. All pairs are solved together (one evaluation per bisection step).

    Pairs: every API option and self-hosted option serving the same (non-empty) set of classes.
    """
    m = 1 if inputs is None or inputs.shape[1] == 0 else len(inputs)
    base = {} if inputs is None else {k: inputs[k].to_numpy() for k in inputs.columns}
    apis = [o for o in model.options if o.kind == "api" and o.served]
    selfs = [o for o in model.options if o.kind != "api" and o.served]
    pairs = [(s_opt, a_opt) for s_opt in selfs for a_opt in apis
             if set(s_opt.served) == set(a_opt.served)]
    if not pairs:
        return breakeven_frame([])
    p = len(pairs)
    values = {k: np.tile(v, p) for k, v in base.items()}
    names = sorted({o.name for pair in pairs for o in pair})

    def f(scale: np.ndarray) -> np.ndarray:
        """(p, m) cost differences, pair j evaluated on rows j*m .. (j+1)*m."""
        r = model.evaluate(values, p * m, volume_scale=scale, options=names)
        out = np.empty((p, m))
        for j, (s_opt, a_opt) in enumerate(pairs):
            sl = slice(j * m, (j + 1) * m)
            out[j] = r[s_opt.name]["monthly"][sl] - r[a_opt.name]["monthly"][sl]
        return out

    f_lo = f(np.full(p * m, lo))
    f_hi = f(np.full(p * m, hi))
    f_1 = f(np.ones(p * m))
    a = np.full((p, m), np.log(lo))
    b = np.full((p, m), np.log(hi))
    for _ in range(steps):
        mid = 0.5 * (a + b)
        pos = f(np.exp(mid).ravel()) > 0
        a = np.where(pos, mid, a)
        b = np.where(pos, b, mid)
    scale = np.exp(b)
    rows = []
    for j, (s_opt, a_opt) in enumerate(pairs):
        always = f_lo[j] <= 0
        never = f_hi[j] > 0
        ok = ~always & ~never
        base_rpd = 0.0
        for c in s_opt.served:
            key = f"workload.{c}.requests_per_day"
            base_rpd = base_rpd + (base[key] if key in base else model.medians.get(
                key, model.sc.workload[c].requests_per_day))
        s = scale[j]
        rpd = s * np.broadcast_to(np.asarray(base_rpd, dtype=float), (m,))
        qs = np.quantile(s[ok], [0.05, 0.5, 0.95]) if ok.any() else [np.nan] * 3
        qr = np.quantile(rpd[ok], [0.05, 0.5, 0.95]) if ok.any() else [np.nan] * 3
        rows.append({
            "self_hosted": s_opt.name, "api": a_opt.name, "samples": m,
            "p_self_cheaper_now": float(np.mean(f_1[j] < 0)),
            "p_always_cheaper": float(np.mean(always)), "p_never": float(np.mean(never)),
            "scale_p5": qs[0], "scale_p50": qs[1], "scale_p95": qs[2],
            "requests_per_day_p5": qr[0], "requests_per_day_p50": qr[1],
            "requests_per_day_p95": qr[2],
        })
    return breakeven_frame(rows)
