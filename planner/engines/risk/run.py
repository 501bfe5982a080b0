"""Running the Monte Carlo engine: every uncertain input sampled, every option priced per sample.

:func:`run_montecarlo` compiles the scenario (:mod:`planner.engines.risk.compiled`), draws and
prices chunks of :data:`planner.engines.risk.sampling.CHUNK_SIZE` samples on threads (numpy
releases the GIL; results do not depend on the number of threads), optionally stops at a
convergence check, and returns :class:`RiskResults`: the statistics of
:mod:`planner.engines.risk.stats` and the tornado, rank correlations and break-even volumes of
:mod:`planner.engines.risk.tornado` (these read only the first samples, so with threads they
run on the pool between the remaining chunks; the tables are those of a serial run). With every input fixed it reproduces
:func:`planner.engines.deterministic.evaluate` exactly (the same model at N=1).

Memory: a run keeps the monthly cost of every option per sample (8 bytes per option) and the
one-off and token columns only where they vary (:class:`planner.engines.risk.stats.CostColumns`);
chunks are priced at most ``2 x threads`` ahead of the one being stored, and the summary runs
on fewer threads when its per-sample temporaries would exceed ``_SUMMARY_BUDGET_BYTES``.

The scenario's ``[[correlation]]`` table is used unless ``correlations=`` is passed: a
sequence of ``{"a": key, "b": key, "rho": r}`` mappings, ``(a, b, rho)`` tuples or
:class:`planner.config.Correlation` objects (see :mod:`planner.engines.risk.sampling`).
"""

from __future__ import annotations

import numbers
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from planner import _runtime
from planner.catalog import Catalog
from planner.config import Scenario
from planner.engines.risk.compiled import (
    CompiledScenario,
    compile_scenario,
    predict_sampler,
    same_sampler,
)
from planner.engines.risk.sampling import chunk_generator, chunk_sizes, root_seed
from planner.engines.risk.stats import (
    CostColumns,
    convergence_rows,
    summarise,
    win_probability,
)
from planner.engines.risk.tornado import (
    breakeven_frame,
    breakeven_volumes,
    rank_correlation,
    rank_frame,
    tornado_compiled,
    tornado_frame,
)
from planner.errors import PlannerError

__all__ = ["RiskResults", "run_montecarlo"]


@dataclass(frozen=True)
class RiskResults:
    """Tidy results of a Monte Carlo run.

    Attributes
    ----------
    summary : one row per (deployment, metric) with metric in usd_per_month, usd_horizon,
        usd_per_mtok: mean, se_mean, p5, p50, p95, p95_se, cvar95 (over the finite samples),
        at_median (the deterministic value at the inputs' medians) and p_infeasible (share of
        samples with no capacity, cost inf)
    win_probability : per deployment, the probability of being the cheapest per month among
        the comparable options (those serving every class), with its standard error
    tornado : per (input, deployment), monthly cost with the input at its P10 and P90, others
        at median (:func:`planner.engines.risk.tornado.tornado`)
    rank_correlation : Spearman rank correlation of each input with each option's monthly cost
    breakeven : per (self-hosted, API) pair, the distribution of the break-even volume
    convergence : estimates at each checkpoint (doubling numbers of chunks)
    samples : per-sample monthly cost, one column per deployment (None when not kept; a view
        of the costs the run keeps, :class:`planner.engines.risk.stats.CostColumns`)
    inputs : the sampled inputs of the first samples (rows align with ``samples``)
    """

    scenario: str
    n: int
    seed_entropy: int
    uncertain_inputs: tuple[str, ...]
    unused_inputs: dict[str, str]
    summary: pd.DataFrame
    win_probability: pd.DataFrame
    tornado: pd.DataFrame
    rank_correlation: pd.DataFrame
    breakeven: pd.DataFrame
    convergence: pd.DataFrame
    samples: pd.DataFrame | None = None
    inputs: pd.DataFrame | None = None
    converged: bool | None = None
    warnings: tuple[str, ...] = ()

    def headline(self) -> pd.DataFrame:
        """One row per deployment: monthly cost mean, P5/P50/P95, CVaR95, horizon P50/P95,
        $/1M tokens P50 and the probability of being cheapest (the table ``planner risk``
        prints)."""
        s = self.summary.set_index(["deployment", "metric"])
        w = self.win_probability.set_index("deployment")["p_cheapest"]
        rows = []
        for dep in dict.fromkeys(self.summary["deployment"]):
            m, h, t = (s.loc[(dep, k)] for k in ("usd_per_month", "usd_horizon",
                                                  "usd_per_mtok"))
            rows.append({
                "deployment": dep, "kind": m["kind"], "usd_per_month_mean": m["mean"],
                "usd_per_month_p5": m["p5"], "usd_per_month_p50": m["p50"],
                "usd_per_month_p95": m["p95"], "usd_per_month_cvar95": m["cvar95"],
                "usd_horizon_p50": h["p50"], "usd_horizon_p95": h["p95"],
                "usd_per_mtok_p50": t["p50"], "p_cheapest": w.get(dep, np.nan),
            })
        return pd.DataFrame(rows)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The result tables by name (for ``--out DIR``)."""
        return {
            "headline": self.headline(),
            "summary": self.summary, "win_probability": self.win_probability,
            "tornado": self.tornado, "rank_correlation": self.rank_correlation,
            "breakeven": self.breakeven, "convergence": self.convergence,
        }


#: Memory the summary's jobs may hold at once (each holds about two per-sample float64
#: arrays, 16 bytes per sample): the summary runs on fewer threads when it would exceed it.
_SUMMARY_BUDGET_BYTES = 384 * 2**20


#: Inputs drawn ahead while the scenario compiles (:func:`_compile_drawing_ahead`), at most.
_DRAW_AHEAD_BYTES = 112 * 2**20


def _compile_drawing_ahead(ex: ThreadPoolExecutor | None, scenario: Scenario,
                           catalog: Catalog | None, correlations: Any,
                           root: np.random.SeedSequence, sizes: list[int]
                           ) -> tuple[CompiledScenario, dict[int, dict[str, np.ndarray]]]:
    """:func:`compile_scenario`, with the inputs of the first chunks drawn on the pool
    meanwhile (the compile is serial Python; a draw is mostly numpy, which releases the GIL).

    The draws use :func:`planner.engines.risk.compiled.predict_sampler`; they are returned
    (chunk index -> inputs) only when that is the compiled model's sampler, so they are the
    numbers :meth:`CompiledScenario.draw` gives. Returns ``(model, drawn)``.
    """
    guess = predict_sampler(scenario, correlations) if ex is not None and sizes else None
    if guess is None:
        return compile_scenario(scenario, catalog=catalog, correlations=correlations), {}
    per_chunk = 8 * max(len(guess.names), 1) * sizes[0]
    ahead = min(len(sizes), max(1, _DRAW_AHEAD_BYTES // per_chunk))
    stop = threading.Event()
    drawn: dict[int, dict[str, np.ndarray]] = {}

    def draw_ahead() -> None:
        try:
            for c in range(ahead):
                if stop.is_set():
                    return
                drawn[c] = guess.draw(chunk_generator(root, c), sizes[c])
        except Exception:  # noqa: BLE001 - a speculation only: the run draws (and raises) itself
            drawn.clear()
            stop.set()

    fut = ex.submit(draw_ahead)
    try:
        model = compile_scenario(scenario, catalog=catalog, correlations=correlations)
    finally:
        stop.set()
        fut.result()
    return model, (drawn if same_sampler(guess, model.sampler) else {})


def _in_order(ex, fn, items, window: int):
    """``map(fn, items)`` in order, on ``ex`` when given, with at most ``window`` results
    computed ahead of the consumer (``Executor.map`` would compute them all: memory)."""
    if ex is None:
        yield from map(fn, items)
        return
    pending: deque = deque()
    it = iter(items)
    for x in it:
        pending.append(ex.submit(fn, x))
        if len(pending) >= window:
            break
    while pending:
        fut = pending.popleft()
        for x in it:
            pending.append(ex.submit(fn, x))
            break
        yield fut.result()


def _first_inputs(inputs: dict[str, list[np.ndarray]], m: int) -> pd.DataFrame | None:
    """The first ``m`` sampled inputs as a frame (None when none are kept)."""
    if not inputs or not m:
        return None
    return pd.DataFrame({k: np.concatenate(v)[:m] for k, v in inputs.items()})


def _sensitivity(model: CompiledScenario, in_df: pd.DataFrame | None, monthly: np.ndarray,
                 rank_samples: int, breakeven_samples: int) -> tuple[pd.DataFrame, ...]:
    """Tornado, rank correlations (inputs against ``monthly``, the first samples' monthly
    costs per option) and break-even volumes of a run."""
    if not model.inputs:  # nothing uncertain: no tornado or correlations, one break-even
        return tornado_frame([]), rank_frame([]), breakeven_volumes(model, None)
    rk = rank_correlation(in_df.iloc[:rank_samples],
                          pd.DataFrame(monthly.T, columns=model.option_names))
    return (tornado_compiled(model), rk,
            breakeven_volumes(model, in_df.iloc[:breakeven_samples]))


def _default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def run_montecarlo(
    scenario: Scenario,
    *,
    n: int = 100_000,
    seed: int | np.random.SeedSequence | None = None,
    catalog: Catalog | None = None,
    correlations: Any = None,
    progress: Callable[[int, int], None] | None = None,
    tol: float | None = None,
    keep_samples: bool = True,
    rank_samples: int = 10_000,
    breakeven_samples: int = 1_000,
    sensitivity: bool = True,
    threads: int | None = None,
    compiled: CompiledScenario | None = None,
    tune_malloc: bool = False,
) -> RiskResults:
    """Sample every uncertain input and price every option per sample.

    Parameters
    ----------
    scenario : Scenario
    n : int
        Number of samples (the maximum when ``tol`` is given).
    seed : int, SeedSequence or None
        Root seed; None draws fresh entropy (recorded in ``seed_entropy`` to reproduce the run).
    catalog : Catalog, optional
    correlations : optional
        Rank correlations between inputs (see :class:`planner.config.Correlation`); default
        the scenario's ``correlation`` table.
    progress : callable, optional
        Called as ``progress(samples_done, n)`` after each chunk (the engine prints nothing).
    tol : float, optional
        Convergence check at 1, 2, 4, 8 ... chunks of :data:`CHUNK_SIZE`: stop once, for every
        option, the P95 of the monthly cost moved by at most ``tol`` (relative) since the
        previous checkpoint and its standard error is at most ``tol`` of it. The result equals
        a run with ``n`` = the samples drawn so far. Without ``tol`` all ``n`` samples are
        drawn and ``convergence`` holds the final estimates with their standard errors.
    keep_samples : bool
        Keep the per-sample monthly costs in ``samples``.
    rank_samples : int
        Rank correlations use the first ``rank_samples`` samples (ranking all of a large run
        costs more than the run itself).
    breakeven_samples : int
        Break-even volumes are solved (bisection, 20 steps) on the first samples.
    sensitivity : bool
        Compute the tornado, rank correlations and break-even volumes.
    threads : int, optional
        Chunks are priced on this many threads (numpy releases the GIL); results do not
        depend on it. Default: CPU count, at most 4.
    compiled : CompiledScenario, optional
        A scenario already compiled (:func:`compile_scenario`), to reuse it across runs.
    tune_malloc : bool
        Call :func:`planner._runtime.tune_allocator` (glibc ``mallopt``, process-wide, once)
        first. Default False: the CLI opts in for the process.

    Returns
    -------
    RiskResults
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise PlannerError(f"n: expected a positive integer number of samples, got {n!r}")
    if tol is not None and not (isinstance(tol, numbers.Real) and 0 < tol < 1):
        raise PlannerError(f"tol: expected a relative tolerance in (0, 1), got {tol!r}")
    if tune_malloc:
        _runtime.tune_allocator()
    root = root_seed(seed)
    threads = _default_threads() if threads is None else max(1, int(threads))
    sizes = chunk_sizes(int(n))
    ex = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        if compiled is not None:
            model, early = compiled, {}
        else:
            model, early = _compile_drawing_ahead(ex, scenario, catalog, correlations, root,
                                                  sizes)
        return _run(model, scenario, n, root, sizes, threads, ex, early, progress, tol,
                    keep_samples, rank_samples, breakeven_samples, sensitivity)
    finally:
        if ex is not None:
            ex.shutdown()


def _run(model: CompiledScenario, scenario: Scenario, n: int, root: np.random.SeedSequence,
         sizes: list[int], threads: int, ex: ThreadPoolExecutor | None,
         early: dict[int, dict[str, np.ndarray]], progress, tol, keep_samples: bool,
         rank_samples: int, breakeven_samples: int, sensitivity: bool) -> RiskResults:
    """The sampling and statistics of :func:`run_montecarlo` on a compiled model (``early``:
    chunks whose inputs are drawn already)."""
    n_opt = len(model.options)
    names = model.option_names
    # what is kept of the samples: CostColumns (monthly per option; one-off and tokens only
    # where they vary or differ between options; win counts per chunk)
    store = CostColumns(n_opt, int(n), [names.index(c) for c in model.comparable()])
    keep_in = min(int(n), max(rank_samples if sensitivity else 0,
                              breakeven_samples if sensitivity else 0, 0))
    inputs: dict[str, list[np.ndarray]] = {k: [] for k in model.inputs}
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    done_samples = 0

    def work(c: int):
        vals = early.pop(c, None)
        if vals is None:
            vals = model.draw(root, c, sizes[c])
        arr = model.price_chunk(vals, sizes[c])
        keep = vals if starts[c] < keep_in else None
        return c, arr, keep, store.chunk_wins(arr)  # counted on the worker's thread

    # checkpoints: 1, 2, 4, ... chunks, then the end
    checkpoints = []
    k = 1
    while tol is not None and k < len(sizes):
        checkpoints.append(k)
        k *= 2
    checkpoints.append(len(sizes))
    done = 0
    conv_rows: list[dict[str, Any]] = []
    prev: dict[str, float] = {}
    converged = None if tol is None else False
    sens = None  # the sensitivity tables, or their future on the pool
    in_df = None  # the first inputs (what the sensitivity reads)
    for cp in checkpoints:
        for c, arr, vals, wins in _in_order(ex, work, range(done, cp), 2 * threads):
            if vals is not None:
                for key in inputs:
                    inputs[key].append(vals[key])
            store.add(arr, wins)  # chunks arrive in sample order
            del arr
            done_samples += sizes[c]
            if progress:
                progress(done_samples, int(n))
            if ex is not None and sens is None and sensitivity and done_samples >= keep_in:
                # everything the tornado, rank correlations and break-even volumes read
                # is known: they run on the pool between the remaining chunks (the same
                # call, on the same first samples, as after the last chunk)
                in_df = _first_inputs(inputs, keep_in)
                sens = ex.submit(_sensitivity, model, in_df,
                                 store.monthly[:, : min(rank_samples, done_samples)],
                                 rank_samples, breakeven_samples)
        done = cp
        m = int(starts[done])
        if tol is None:
            break
        conv_rows.extend(convergence_rows(model, store.monthly, m, prev))
        if len(conv_rows) > n_opt:
            last = conv_rows[-n_opt:]
            if all(r["p95_rel_change"] <= tol and r["p95_rel_se"] <= tol for r in last):
                converged = True
                break
    if isinstance(sens, Future):
        sens = sens.result()
    early.clear()  # chunks drawn ahead that a converged run did not reach
    m = int(starts[done])
    # each summary job holds about two per-sample arrays: bound the threads by memory
    sum_threads = max(1, min(threads, _SUMMARY_BUDGET_BYTES // max(16 * m, 1)))
    summary = summarise(model, store, threads=sum_threads)
    wins = win_probability(model, store)
    monthly = store.monthly[:, :m]
    if tol is None:  # no checkpoints: the final estimates and their standard errors
        fin = summary[summary["metric"] == "usd_per_month"]
        conv_rows = [{
            "n": m, "deployment": r.deployment, "mean": r.mean, "se_mean": r.se_mean,
            "p95": r.p95, "p95_se": r.p95_se,
            "p95_rel_se": r.p95_se / abs(r.p95) if r.p95 else 0.0, "p95_rel_change": np.nan,
        } for r in fin.itertuples()]
    if sens is None:
        in_df = _first_inputs(inputs, min(keep_in, m))
    if sensitivity and sens is None:
        sens = _sensitivity(model, in_df, monthly[:, : min(rank_samples, m)], rank_samples,
                            breakeven_samples)
    if sensitivity:
        torn, rk, be = sens
    else:
        torn = tornado_frame([])
        rk = rank_frame([])
        be = breakeven_frame([])
    warnings = []
    if model.unused:
        warnings.append(
            "inputs held at their medians or not used: "
            + "; ".join(f"{k} ({why})" for k, why in model.unused.items())
        )
    return RiskResults(
        scenario=scenario.name, n=m, seed_entropy=int(root.entropy),
        uncertain_inputs=tuple(model.inputs), unused_inputs=dict(model.unused),
        summary=summary, win_probability=wins, tornado=torn, rank_correlation=rk,
        breakeven=be, convergence=pd.DataFrame(conv_rows),
        # the kept monthly costs themselves (no copy)
        samples=pd.DataFrame(monthly.T, columns=names, copy=False) if keep_samples else None,
        inputs=in_df, converged=converged, warnings=tuple(warnings),
    )
