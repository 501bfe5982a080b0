"""Statistics of a Monte Carlo run: tail statistics, the summary table, P(cheapest),
convergence rows, and :class:`CostColumns`, what a run keeps of its samples.

Pure functions of the per-sample cost arrays a run produces
(:func:`planner.engines.risk.run.run_montecarlo`, the sweep in :mod:`planner.sweep`), given
either as one ``(3, n_options, n)`` array (monthly, one-off, tokens) or as the
:class:`CostColumns` a run fills chunk by chunk.

What a run keeps (flat memory)
------------------------------
Quantiles, CVaR and the rank correlations need every sample of the metric, so a run keeps
the monthly cost of every option per sample as float64 (8 bytes per sample per option; the
statistics are then bit-identical to those of the full array). The one-off total and the
tokens per month, which the horizon cost and $/1M tokens are derived from, are kept only as
far as they carry information: a column that is the same in every sample so far is held as
one number, and a column equal to an earlier option's column (options serving the same
classes have the same tokens) as a reference to it; a column stops being either the first
time a chunk differs, and is then stored from the values already known (exact: nothing is
re-sampled). P(cheapest) is counted per chunk (integer counts, so exact and independent of
how the samples are split into chunks). The means and standard deviations are numpy's over
the kept arrays (pairwise summation), as before, so the numbers do not depend on the chunk
size either. The one
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
from planner.stats import (
    cvar_partitioned,
    cvar_tail,
    metric_arrays,
    usd_horizon,
    usd_per_mtok,
)

__all__ = [
    "SUMMARY_COLUMNS",
    "CostColumns",
    "convergence_rows",
    "summarise",
    "tail_stats",
    "win_probability",
]


_QS = (0.05, 0.5, 0.95)
_Z95 = 1.959963984540054


def _same_bits(a: np.ndarray, b) -> bool:
    """``a`` equals ``b`` (an array of its shape, or one float) bit for bit."""
    a64 = np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)
    if np.ndim(b) == 0:
        return bool((a64 == np.float64(b).view(np.uint64)).all())
    return bool(np.array_equal(a64, np.ascontiguousarray(b, dtype=np.float64).view(np.uint64)))


class CostColumns:
    """The per-sample costs a Monte Carlo run keeps, filled chunk by chunk in sample order.

    ``monthly`` (``(n_options, capacity)`` float64) holds every option's monthly cost. The
    one-off total (kind 1) and tokens per month (kind 2) of each option are each held as one
    of: ``("const", value)`` (every sample so far has this value, bit for bit), ``("alias",
    i)`` (equal to option ``i``'s column of the same kind in every sample so far) or ``("own",
    array)``; a column leaves the first two states the first time a chunk differs, and its
    earlier values are then written from what is known. Only the rows ``[:n]`` are valid.
    Win counts (P(cheapest)) are accumulated per chunk. Picklable.

    Parameters
    ----------
    n_options : int
    capacity : int
        Samples that can be stored (the run's ``n``).
    comparable : sequence of int, optional
        Indexes of the options compared for P(cheapest), in order (ties go to the first).
    """

    def __init__(self, n_options: int, capacity: int, comparable=()):
        self.n_options = int(n_options)
        self.capacity = int(capacity)
        self.n = 0
        self.monthly = np.empty((self.n_options, self.capacity))
        self.state: dict[int, list] = {1: [None] * self.n_options, 2: [None] * self.n_options}
        self.comparable = [int(i) for i in comparable]
        self.win_counts = np.zeros(self.n_options, dtype=np.int64)

    @classmethod
    def from_array(cls, costs: np.ndarray, comparable=()) -> CostColumns:
        """Columns over a full ``(3, n_options, n)`` array (views, no copy of ``monthly``)."""
        costs = np.asarray(costs, dtype=float)
        self = cls.__new__(cls)
        self.n_options, self.capacity = int(costs.shape[1]), int(costs.shape[2])
        self.n = self.capacity
        self.monthly = costs[0]
        self.state = {k: [("own", costs[k, j]) for j in range(self.n_options)] for k in (1, 2)}
        self.comparable = [int(i) for i in comparable]
        self.win_counts = _win_counts(self.monthly, self.comparable, self.n_options)
        return self

    def chunk_wins(self, chunk: np.ndarray) -> np.ndarray:
        """The win counts of one chunk (what :meth:`add` adds; a worker thread may compute
        them first and pass them in)."""
        return _win_counts(chunk[0], self.comparable, self.n_options)

    def add(self, chunk: np.ndarray, wins: np.ndarray | None = None) -> None:
        """Append the next chunk, a ``(3, n_options, size)`` array (monthly, once, tokens),
        with its win counts ``wins`` (:meth:`chunk_wins`) when already computed."""
        size = int(chunk.shape[2])
        lo, hi = self.n, self.n + size
        if hi > self.capacity:
            raise ValueError(f"CostColumns.add: {hi} samples exceed the capacity {self.capacity}")
        self.monthly[:, lo:hi] = chunk[0]
        for kind in (1, 2):
            st = self.state[kind]
            for j in range(self.n_options):
                x = chunk[kind, j]
                cur = st[j]
                if cur is None:  # first chunk: one number, another option's column, or own
                    if size and _same_bits(x, x[0]):
                        st[j] = ("const", float(x[0]))
                        continue
                    for i in range(j):
                        if st[i][0] == "own" and _same_bits(x, chunk[kind, i]):
                            st[j] = ("alias", i)
                            break
                    else:
                        st[j] = ("own", np.empty(self.capacity))
                        st[j][1][:hi] = x
                    continue
                tag, v = cur
                if tag == "const" and _same_bits(x, v):
                    continue
                if tag == "alias" and _same_bits(x, chunk[kind, v]):
                    continue
                if tag != "own":  # materialise from the known values
                    arr = np.empty(self.capacity)
                    arr[:lo] = v if tag == "const" else st[v][1][:lo]
                    st[j] = ("own", arr)
                st[j][1][lo:hi] = x
        self.win_counts += self.chunk_wins(chunk) if wins is None else wins
        self.n = hi

    def column(self, kind: int, j: int) -> np.ndarray:
        """Option ``j``'s column of ``kind`` (0 monthly, 1 one-off, 2 tokens) over the ``n``
        samples: a view, or a read-only broadcast of one number."""
        if kind == 0:
            return self.monthly[j, : self.n]
        tag, v = self.state[kind][j]
        if tag == "const":
            return np.broadcast_to(np.float64(v), (self.n,))
        if tag == "alias":
            v = self.state[kind][v][1]
        return v[: self.n]

    def constant(self, kind: int, j: int) -> float | None:
        """The value of option ``j``'s column of ``kind`` when it is the same in every sample
        (``min == max``), else None."""
        tag, v = self.state[kind][j]
        if tag == "const":
            return v
        x = self.column(kind, j)
        if x.size and x.min() == x.max():
            return float(x[0])
        return None

    def stored_bytes(self) -> int:
        """Bytes of the arrays held (capacity, not only the filled rows)."""
        own = sum(v.nbytes for k in (1, 2) for tag, v in self.state[k] if tag == "own")
        return int(self.monthly.nbytes + own)


def _win_counts(monthly: np.ndarray, idx: list[int], n_options: int) -> np.ndarray:
    """How many samples each option in ``idx`` is the cheapest of (ties: the first in
    ``idx``); a running minimum over the options (argmin on axis 0 is strided, slow)."""
    counts = np.zeros(n_options, dtype=np.int64)
    n = monthly.shape[1]
    if idx and n:
        best_val = monthly[idx[0]]
        best = np.zeros(n, dtype=np.intp)
        for k, j in enumerate(idx[1:], 1):
            row = monthly[j]
            better = row < best_val
            best[better] = k
            best_val = np.where(better, row, best_val)
        counts[idx] = np.bincount(best, minlength=len(idx))
    return counts


def tail_stats(x: np.ndarray) -> dict[str, float]:
    """Mean, its standard error, P5/P50/P95 (numpy 'linear' quantiles), the P95's standard
    error and CVaR95 of one sample array, from one copy partitioned in place (the CVaR's
    partition first, then the quantiles' order statistics on either side of it).

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
    # the CVaR's partition first (the call planner.stats.cvar makes: the same arrangement,
    # so the same CVaR bits), then the quantiles' order statistics on either side of it
    m_tail, kc = cvar_tail(n, 0.95)
    k0 = n - kc
    part = np.partition(x, k0)
    cvar95 = cvar_partitioned(part, m_tail, kc)
    _select(part[:k0], sorted(i for i in idx if i < k0), 0)
    _select(part[k0 + 1:], sorted(i for i in idx if i > k0), k0 + 1)
    qv = []
    for p in pos:
        f = int(math.floor(p))
        c = int(math.ceil(p))
        t = p - f
        qv.append(part[f] + (part[c] - part[f]) * t if c != f else part[f])
    p95_se = float(part[hi] - part[lo]) / (2.0 * _Z95)
    del part  # freed first: the sd needs a temporary of x's size
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if n > 1 else 0.0
    return {
        "mean": mean, "se_mean": sd / math.sqrt(n), "p5": float(qv[0]), "p50": float(qv[1]),
        "p95": float(qv[2]), "p95_se": p95_se, "cvar95": cvar95,
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


def _columns(model: CompiledScenario, costs) -> CostColumns:
    if isinstance(costs, CostColumns):
        return costs
    names = model.option_names
    return CostColumns.from_array(costs, [names.index(c) for c in model.comparable()])


def summarise(model: CompiledScenario, costs: np.ndarray | CostColumns, *,
              threads: int = 1) -> pd.DataFrame:
    """Summary table from the costs of a run: a (3, n_options, n) array or
    :class:`CostColumns`.

    Each (option, metric) array is made inside the job that summarises it
    (:func:`planner.stats.usd_horizon`, :func:`planner.stats.usd_per_mtok`), so besides
    ``costs`` at most ``threads`` jobs' per-sample arrays exist at once (each job: the metric
    array and one temporary of its size).
    """
    cols = _columns(model, costs)
    base = model.evaluate({}, 1)
    h = model.horizon
    jobs = []
    for j, o in enumerate(model.options):
        # with a constant one-off, usd_horizon is an increasing affine map of the monthly
        # cost, so its statistics follow from the monthly ones without another partition
        const_once = cols.n > 0 and cols.constant(1, j) is not None
        b = metric_arrays(base[o.name]["monthly"], base[o.name]["once"],
                          base[o.name]["tokens"], h)
        for metric in _METRICS:
            derived = metric == "usd_horizon" and const_once
            jobs.append((j, o, metric, derived, float(b[metric][0])))

    infeasible = {o.name: float(np.mean(np.isinf(cols.column(0, j)))) if cols.n else np.nan
                  for j, o in enumerate(model.options)}

    def one(job):
        j, o, metric, derived, at_median = job
        if derived:
            return None
        monthly = cols.column(0, j)
        if metric == "usd_per_month":
            arr = monthly
        elif metric == "usd_horizon":
            arr = usd_horizon(monthly, cols.column(1, j), h)
        else:
            arr = usd_per_mtok(monthly, cols.column(2, j))
        st = tail_stats(finite(arr))
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
            once = float(cols.column(1, j)[0])
            rows[i] = {**mo, "metric": metric, "at_median": at_median, **{
                k: (mo[k] - once / h) * h + once
                for k in ("mean", "p5", "p50", "p95", "cvar95")}}
            rows[i].update({"se_mean": mo["se_mean"] * h, "p95_se": mo["p95_se"] * h})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def win_probability(model: CompiledScenario, monthly: np.ndarray | CostColumns
                    ) -> pd.DataFrame:
    """Probability that each comparable option has the lowest monthly cost (ties: first).

    ``monthly`` is the (n_options, n) monthly cost array, or the :class:`CostColumns` of a
    run (whose per-chunk win counts are used: the same integers)."""
    names = model.option_names
    comp = model.comparable()
    if isinstance(monthly, CostColumns):
        counts, n = monthly.win_counts, monthly.n
    else:
        n = monthly.shape[1]
        counts = _win_counts(monthly, [names.index(c) for c in comp], len(names))
    rows = []
    for j, o in enumerate(model.options):
        p = counts[j] / n if (o.name in comp and n) else np.nan
        rows.append({
            "deployment": o.name, "kind": o.kind, "compared": o.name in comp,
            "p_cheapest": p, "se": math.sqrt(p * (1 - p) / n) if o.name in comp and n else np.nan,
            "classes_served": ",".join(o.served),
        })
    return pd.DataFrame(rows, columns=["deployment", "kind", "compared", "p_cheapest", "se",
                                       "classes_served"])


def finite(x: np.ndarray) -> np.ndarray:
    """The finite samples of ``x`` (``x`` itself when all are): a sample with no capacity
    costs ``inf`` and is counted apart (``p_infeasible``), not in the statistics."""
    ok = np.isfinite(x)
    return x if ok.all() else x[ok]


def convergence_rows(model: CompiledScenario, monthly: np.ndarray, n: int,
                     prev: dict[str, float]) -> list[dict[str, Any]]:
    """One row per option of the estimates after the first ``n`` samples of ``monthly``
    (mean, P95 and their standard errors, the P95's relative change since ``prev``, which is
    updated in place), over the finite samples as in :func:`summarise` (a sample with no
    capacity costs ``inf``)."""
    rows = []
    for j, o in enumerate(model.options):
        st = tail_stats(finite(monthly[j, :n]))
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
