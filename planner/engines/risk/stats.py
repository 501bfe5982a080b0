"""Statistics of a Monte Carlo run: tail statistics, the summary table, P(cheapest),
convergence rows.

Pure functions of the per-sample cost arrays a run produces
(:func:`planner.engines.risk.run.run_montecarlo`, the sweep in :mod:`planner.sweep`). The one
CVaR is :func:`planner.stats.cvar` and the per-sample metrics (``usd_per_month``,
``usd_horizon``, ``usd_per_mtok``) are :func:`planner.stats.metric_arrays` (and its parts
:func:`~planner.stats.usd_horizon`, :func:`~planner.stats.usd_per_mtok`), shared with the
deterministic engine and the optimiser.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from planner.engines.risk.compiled import CompiledScenario
from planner.stats import cvar, metric_arrays, usd_horizon, usd_per_mtok

__all__ = [
    "SUMMARY_COLUMNS",
    "convergence_rows",
    "summarise",
    "tail_stats",
    "win_probability",
]


_QS = (0.05, 0.5, 0.95)
_Z95 = 1.959963984540054


def tail_stats(x: np.ndarray) -> dict[str, float]:
    """Mean, its standard error, P5/P50/P95 (numpy 'linear' quantiles), the P95's standard
    error and CVaR95 of one sample array, with a single ``np.partition``.

    - se_mean = sd / sqrt(n)
    - P95 standard error from the distribution-free 95 % confidence interval of a quantile
      (order statistics ``n q -/+ 1.96 sqrt(n q (1 - q))``; Conover, *Practical
      Nonparametric Statistics*, 3rd ed., 1999, sec. 3.2): (x_hi - x_lo) / (2 x 1.96)
    - CVaR95 (expected shortfall): :func:`planner.stats.cvar` at alpha = 0.95, the mean of the
      worst 5 % of the samples (the boundary sample weighted fractionally when 0.05 n is not
      whole).
    """
    x = np.asarray(x, dtype=float)
    n = x.size
    if n == 0:
        return {k: np.nan for k in ("mean", "se_mean", "p5", "p50", "p95", "p95_se", "cvar95")}
    pos = [(n - 1) * q for q in _QS]
    idx = {int(math.floor(p)) for p in pos} | {int(math.ceil(p)) for p in pos}
    half = _Z95 * math.sqrt(n * 0.95 * 0.05)
    lo = min(max(int(math.floor(n * 0.95 - half)) - 1, 0), n - 1)
    hi = min(max(int(math.ceil(n * 0.95 + half)) - 1, 0), n - 1)
    idx |= {lo, hi}
    part = x.copy()
    _select(part, sorted(idx), 0)
    qv = []
    for p in pos:
        f = int(math.floor(p))
        c = int(math.ceil(p))
        t = p - f
        qv.append(part[f] + (part[c] - part[f]) * t if c != f else part[f])
    p95_se = float(part[hi] - part[lo]) / (2.0 * _Z95)
    del part  # freed first: the sd and the CVaR each need a temporary of x's size
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if n > 1 else 0.0
    return {
        "mean": mean, "se_mean": sd / math.sqrt(n), "p5": float(qv[0]), "p50": float(qv[1]),
        "p95": float(qv[2]), "p95_se": p95_se, "cvar95": cvar(x, 0.95),
    }


def _select(a: np.ndarray, ks: list[int], offset: int) -> None:
    """Partition ``a`` in place so that ``a[k - offset]`` is the k-th order statistic for every
    k in ``ks`` (sorted). Single-pivot partitions on shrinking slices: several times faster
    than ``np.partition`` with many kth at once."""
    if not ks:
        return
    h = len(ks) // 2
    k = ks[h] - offset
    a.partition(k)
    _select(a[:k], ks[:h], offset)
    _select(a[k + 1:], ks[h + 1:], offset + k + 1)


SUMMARY_COLUMNS = ["deployment", "kind", "metric", "mean", "se_mean", "p5", "p50", "p95",
                   "p95_se", "cvar95", "at_median", "p_infeasible"]


_METRICS = ("usd_per_month", "usd_horizon", "usd_per_mtok")


def summarise(model: CompiledScenario, costs: np.ndarray, *, threads: int = 1) -> pd.DataFrame:
    """Summary table from the (3, n_options, n) cost array of a run.

    Each (option, metric) array is made inside the job that summarises it
    (:func:`planner.stats.usd_horizon`, :func:`planner.stats.usd_per_mtok`), so besides
    ``costs`` at most ``threads`` per-sample arrays exist at once.
    """
    base = model.evaluate({}, 1)
    h = model.horizon
    jobs = []
    for j, o in enumerate(model.options):
        once = costs[1, j]
        # with a constant one-off, usd_horizon is an increasing affine map of the monthly
        # cost, so its statistics follow from the monthly ones without another partition
        const_once = once.size > 0 and once.min() == once.max()
        b = metric_arrays(base[o.name]["monthly"], base[o.name]["once"],
                          base[o.name]["tokens"], h)
        for metric in _METRICS:
            derived = metric == "usd_horizon" and const_once
            jobs.append((j, o, metric, derived, float(b[metric][0])))

    infeasible = {o.name: float(np.mean(np.isinf(costs[0, j]))) if costs.shape[2] else np.nan
                  for j, o in enumerate(model.options)}

    def one(job):
        j, o, metric, derived, at_median = job
        if derived:
            return None
        if metric == "usd_per_month":
            arr = costs[0, j]
        elif metric == "usd_horizon":
            arr = usd_horizon(costs[0, j], costs[1, j], h)
        else:
            arr = usd_per_mtok(costs[0, j], costs[2, j])
        ok = np.isfinite(arr)
        st = tail_stats(arr if ok.all() else arr[ok])
        return {"deployment": o.name, "kind": o.kind, "metric": metric, **st,
                "at_median": at_median, "p_infeasible": infeasible[o.name]}

    if threads > 1:
        with ThreadPoolExecutor(threads) as ex:
            rows = list(ex.map(one, jobs))
    else:
        rows = [one(j) for j in jobs]
    for i, (j, _, metric, derived, at_median) in enumerate(jobs):
        if derived:  # usd_horizon from usd_per_month (the row before it)
            mo = rows[i - 1]
            once = float(costs[1, j][0])
            rows[i] = {**mo, "metric": metric, "at_median": at_median, **{
                k: (mo[k] - once / h) * h + once
                for k in ("mean", "p5", "p50", "p95", "cvar95")}}
            rows[i].update({"se_mean": mo["se_mean"] * h, "p95_se": mo["p95_se"] * h})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def win_probability(model: CompiledScenario, monthly: np.ndarray) -> pd.DataFrame:
    """Probability that each comparable option has the lowest monthly cost (ties: first)."""
    names = model.option_names
    comp = model.comparable()
    n = monthly.shape[1]
    rows = []
    idx = [names.index(c) for c in comp]
    counts = np.zeros(len(names))
    if idx and n:  # running minimum over the options (argmin on axis 0 is strided, slow)
        best_val = monthly[idx[0]]
        best = np.zeros(n, dtype=np.intp)
        for k, j in enumerate(idx[1:], 1):
            row = monthly[j]
            better = row < best_val
            best[better] = k
            best_val = np.where(better, row, best_val)
        counts[idx] = np.bincount(best, minlength=len(idx))
    for j, o in enumerate(model.options):
        p = counts[j] / n if (o.name in comp and n) else np.nan
        rows.append({
            "deployment": o.name, "kind": o.kind, "compared": o.name in comp,
            "p_cheapest": p, "se": math.sqrt(p * (1 - p) / n) if o.name in comp and n else np.nan,
            "classes_served": ",".join(o.served),
        })
    return pd.DataFrame(rows, columns=["deployment", "kind", "compared", "p_cheapest", "se",
                                       "classes_served"])


def convergence_rows(model: CompiledScenario, monthly: np.ndarray, n: int,
                     prev: dict[str, float]) -> list[dict[str, Any]]:
    """One row per option of the estimates after the first ``n`` samples of ``monthly``
    (mean, P95 and their standard errors, the P95's relative change since ``prev``, which is
    updated in place)."""
    rows = []
    for j, o in enumerate(model.options):
        st = tail_stats(monthly[j, :n])
        p95 = st["p95"]
        old = prev.get(o.name)
        change = abs(p95 - old) / abs(p95) if old is not None and p95 != 0 else (
            0.0 if old is not None else np.nan)
        rows.append({
            "n": n, "deployment": o.name, "mean": st["mean"], "se_mean": st["se_mean"],
            "p95": p95, "p95_se": st["p95_se"],
            "p95_rel_se": st["p95_se"] / abs(p95) if p95 else 0.0,
            "p95_rel_change": change,
        })
        prev[o.name] = p95
    return rows
