"""Monte Carlo risk engine: every uncertain scenario input sampled, every option priced per sample.

Any numeric field of a scenario may hold a distribution (:mod:`planner.distributions`). This
engine collects them all by dotted key path (``workload.chat.requests_per_day``,
``api.gpt-4o.input_usd_per_mtok``, ``onprem.hgx.server_price_usd`` ...), draws them together
(optionally rank-correlated through a Gaussian copula) and evaluates the one model
(:class:`planner.model.evaluate.Model`) on the arrays of samples: one numpy expression per
formula, never a Python loop per sample. The deterministic engine is the same model at N=1, so
with every input fixed this engine reproduces :func:`planner.engines.deterministic.evaluate`
exactly. Inputs that cannot change an option's monthly cost (pre-training jobs, payback,
revenue, SLO bounds) are reported in ``unused_inputs`` and held at their medians.

What this module adds to the model
----------------------------------
* :class:`CompiledScenario`: the model built with the scenario's uncertain inputs (so a class
  with uncertain token lengths gets a capacity grid, see :mod:`planner.model.capacity`) and
  the sampler of those inputs; structure (eligibility, catalog rows, price sources, billing)
  is decided once at the medians, only numbers vary between samples.
* A sample whose lengths leave no capacity, or in which a fixed fleet (``replicas``, on-prem
  ``servers``, ``max_*`` limits) cannot carry the peak load, costs ``inf`` and counts in
  ``p_infeasible``.
* Chunked sampling, statistics (P5/P50/P95, CVaR95 from :func:`planner.stats.cvar`),
  P(cheapest), convergence, tornado and break-even ranges.

Randomness and reproducibility
------------------------------
Samples are drawn in fixed chunks of :data:`CHUNK_SIZE`; chunk ``c`` uses the generator of
child ``c`` of ``SeedSequence(seed)`` (as ``SeedSequence(seed).spawn`` makes it), so the result
depends only on ``seed`` and ``n``, never on threads, Dask workers or when the convergence
check stopped. Within a chunk: inputs in no correlation and not normal/lognormal are drawn by
:func:`planner.distributions.sample_many` (``ppf`` of one uniform block); independent
untruncated normals and lognormals from one standard-normal block; each group of correlated
inputs by a Gaussian copula (see :class:`_Sampler`).

Correlations
------------
The scenario's ``[[correlation]]`` table (:class:`planner.config.Correlation`: two inputs by
key path and a Spearman rank correlation ``rho``) is used unless ``correlations=`` is passed
to :func:`run_montecarlo`: a sequence of ``{"a": key, "b": key, "rho": r}`` mappings, ``(a, b,
rho)`` tuples or Correlation objects. The inputs, their key paths and :func:`scenario_at` live
in :mod:`planner.uncertain`::

    [[correlation]]
    a = "workload.chat.requests_per_day"
    b = "workload.chat.context.tokens"
    rho = 0.5

Simulation-backed risk
----------------------
:func:`simulation_replications` is the hook for SimPy replications over a subset of the
sampled scenarios: it picks the samples (spread over the cost distribution of one option),
materialises each as a fixed scenario (:func:`planner.uncertain.scenario_at`) and calls a
``simulate_fn`` for it (default :func:`busiest_hour_metrics`).
"""

from __future__ import annotations

import difflib
import functools
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from planner import _runtime
from planner.catalog import Catalog, load_catalog
from planner.config import Correlation, Scenario
from planner.distributions import (
    DistributionBase,
    copula_factor,
    correlated_normals,
    from_normals,
    is_normal_family,
    sample_many,
    spearman_to_pearson,
)
from planner.engines import sensitivity as sens
from planner.errors import PlannerError
from planner.model.evaluate import Model
from planner.stats import cvar, metric_arrays
from planner.uncertain import UncertainInput, _as_correlations, scenario_at, uncertain_inputs

__all__ = [
    "CHUNK_SIZE",
    "CompiledScenario",
    "RiskResults",
    "compile_scenario",
    "run_montecarlo",
    "simulation_replications",
    "tail_stats",
    "tornado",
]

#: Samples per chunk: the unit of seeding, threading and Dask tasks.
CHUNK_SIZE = 32_768
#: Inputs only the multi-year engine samples (their correlations are skipped here).
_MULTIYEAR_ONLY = ("trends.", "scenario.discount_rate_per_year")


# --------------------------------------------------------------------------------------------
# sampling


@dataclass(frozen=True)
class _Sampler:
    """Draws the uncertain inputs from one generator, in a fixed order.

    1. inputs in no correlation and not normal/lognormal: one uniform block through
       :func:`planner.distributions.sample_many` (``ppf`` of uniforms);
    2. independent untruncated normals and lognormals: one ``standard_normal`` block,
       ``x = mean + sd z`` or ``exp(mu + sigma z)`` (the same distributions as ``ppf(u)``;
       ``scipy.special.ndtri`` would cost ~30 ns a value, the largest cost of a run);
    3. each correlated group: a Gaussian copula, its latent normals ``z = L e`` drawn by
       :func:`planner.distributions.correlated_normals` (as
       :func:`planner.distributions.gaussian_copula_uniforms` draws them) with ``L L^T`` the
       Pearson matrix ``2 sin(pi rho / 6)`` of the Spearman targets; normal-family members
       use ``z`` directly, the others ``ppf(clip(Phi(z)))``
       (:func:`planner.distributions.from_normals`).
    """

    dists: dict[str, DistributionBase]
    other: tuple[str, ...]
    normal: tuple[str, ...]
    groups: tuple[tuple[tuple[str, ...], np.ndarray], ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.dists)

    def draw(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if self.other:
            out.update(sample_many(rng, {k: self.dists[k] for k in self.other}, n))
        if self.normal:
            z = rng.standard_normal((len(self.normal), n))
            for j, k in enumerate(self.normal):
                out[k] = from_normals(self.dists[k], z[j])
        for names, factor in self.groups:
            z = correlated_normals(rng, n, factor)
            for j, k in enumerate(names):
                out[k] = from_normals(self.dists[k], z[j])
        return {k: out[k] for k in self.dists}


def _build_sampler(dists: dict[str, DistributionBase], known: Mapping[str, Any],
                   correlations: list[Correlation]) -> _Sampler:
    """Validate correlations (key paths, PSD) and group the correlated inputs."""
    pairs: dict[tuple[str, str], float] = {}
    for i, c in enumerate(correlations):
        if any(k.startswith(_MULTIYEAR_ONLY) and k not in dists for k in (c.a, c.b)):
            continue  # a trend correlation: used by the multi-year engine, not here
        for side in ("a", "b"):
            key = getattr(c, side)
            if key not in known:
                close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.5)
                hint = f"; did you mean {' or '.join(repr(x) for x in close)}?" if close else ""
                raise PlannerError(
                    f"correlation[{i}].{side}: {key!r} is not an uncertain input of the "
                    f"scenario (a field holding a distribution){hint}"
                )
            if key not in dists:
                raise PlannerError(
                    f"correlation[{i}].{side}: {key!r} does not affect any deployment option's "
                    "cost, so it is not sampled; remove the correlation"
                )
        if c.a == c.b:
            raise PlannerError(f"correlation[{i}]: a and b are the same input {c.a!r}")
        k = (c.a, c.b) if c.a < c.b else (c.b, c.a)
        if k in pairs and pairs[k] != c.rho:
            raise PlannerError(
                f"correlation[{i}]: the pair ({c.a}, {c.b}) is given twice with different rho "
                f"({pairs[k]:g} and {c.rho:g})"
            )
        pairs[k] = float(c.rho)
    # connected components of the correlation graph (rho = 0 pairs still join a group)
    parent = {k: k for k in dists}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        parent[find(a)] = find(b)
    comps: dict[str, list[str]] = {}
    for k in dists:
        comps.setdefault(find(k), []).append(k)
    groups = []
    alone = []
    for members in comps.values():
        if len(members) == 1:
            alone.append(members[0])
            continue
        sub = {p: r for p, r in pairs.items() if p[0] in members}
        idx = {m: j for j, m in enumerate(members)}
        rho = np.eye(len(members))
        for (a, b), r in sub.items():
            rho[idx[a], idx[b]] = rho[idx[b], idx[a]] = r
        pear = spearman_to_pearson(rho)
        np.fill_diagonal(pear, 1.0)
        groups.append((tuple(members), _factor(pear, sub)))
    other = tuple(k for k in alone if not is_normal_family(dists[k]))
    normal = tuple(k for k in alone if is_normal_family(dists[k]))
    return _Sampler(dict(dists), other, normal, tuple(groups))


def _factor(pear: np.ndarray, sub: Mapping[tuple[str, str], float]) -> np.ndarray:
    """L with L L^T = pear (:func:`planner.distributions.copula_factor`); PlannerError if the
    matrix is not positive semi-definite, naming the correlations involved."""
    try:
        return copula_factor(pear)
    except PlannerError as exc:
        listed = "; ".join(f"({a}, {b}) rho = {r:g}" for (a, b), r in sub.items())
        raise PlannerError(f"correlation: {listed}: {str(exc).removeprefix('corr: ')}") from None


def _root_seed(seed: Any) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0
    ):
        raise PlannerError(f"seed: expected a non-negative integer or None, got {seed!r}")
    return np.random.SeedSequence(None if seed is None else int(seed))


def chunk_generator(root: np.random.SeedSequence, index: int) -> np.random.Generator:
    """Generator of chunk ``index``: child ``index`` of ``root`` (as ``root.spawn`` makes it)."""
    child = np.random.SeedSequence(
        root.entropy, spawn_key=(*root.spawn_key, int(index)), pool_size=root.pool_size
    )
    return np.random.default_rng(child)


def chunk_sizes(n: int, chunk_size: int = CHUNK_SIZE) -> list[int]:
    """Sizes of the chunks that make up ``n`` samples (all full but the last)."""
    full, rest = divmod(int(n), int(chunk_size))
    return [int(chunk_size)] * full + ([rest] if rest else [])


# --------------------------------------------------------------------------------------------
# compiled scenario: the one model (planner.model) with the sampler of its uncertain inputs


class CompiledScenario(Model):
    """A scenario prepared for vectorised evaluation (:class:`planner.model.Model`) with the
    sampler of its uncertain inputs.

    Build it with :func:`compile_scenario`. :meth:`evaluate` prices every option for arrays of
    input values; :attr:`inputs` lists the inputs that affect some option's cost.
    """

    def __init__(self, sc: Scenario, catalog: Catalog, correlations: list[Correlation]):
        super().__init__(sc, catalog, uncertain_inputs(sc))
        # one evaluation at the medians records which inputs the formulas read
        read: set[str] = set()
        self.baseline = self._evaluate({}, 1, 1.0, read)
        self.inputs: dict[str, UncertainInput] = {
            k: u for k, u in self.all_inputs.items() if k in read
        }
        self.unused: dict[str, str] = {
            k: _unused_reason(k) for k in self.all_inputs if k not in read
        }
        self.correlations = correlations
        self.sampler = _build_sampler(
            {k: u.dist for k, u in self.inputs.items()}, self.all_inputs, correlations
        )

    def _evaluate(self, values: Mapping[str, Any], n: int, volume_scale: Any,
                  record: set | None = None, options: Sequence[str] | None = None
                  ) -> dict[str, dict[str, Any]]:
        raw = self.evaluate_raw(self.ctx(values, n, volume_scale=volume_scale, record=record),
                                options)
        for d in raw.values():  # a fleet that cannot carry its load is not a valid option
            if d["serves"] is not True:
                d["monthly"] = np.where(d["serves"], d["monthly"], np.inf)
        return raw

    def evaluate(self, values: Mapping[str, Any] | None = None, n: int | None = None, *,
                 volume_scale: Any = 1.0, options: Sequence[str] | None = None,
                 parts: bool = False) -> dict[str, dict[str, np.ndarray]]:
        """Price every option for ``n`` samples of the inputs.

        Parameters
        ----------
        values : mapping of key path to array (n,), optional
            Sampled inputs; inputs not given are held at their medians.
        n : int, optional
            Number of samples (default: the length of the arrays in ``values``, else 1).
        volume_scale : float or array (n,)
            Multiplies every class's requests per day.
        options : names, optional
            Only these options.
        parts : bool
            Also return cost components (``api_tokens_usd``, ``rental_usd``,
            ``onprem_*_usd`` ...) used by the multi-year engine.

        Returns
        -------
        dict
            option -> {monthly, once, tokens, out_tokens, rpm, ...}: (n,) float arrays;
            ``monthly`` is ``inf`` where a fixed fleet cannot carry the load.
        """
        values = dict(values or {})
        if n is None:
            n = max((np.size(v) for v in values.values()), default=1)
        raw = self._evaluate(values, int(n), volume_scale, None, options)
        keys = ("monthly", "once", "tokens", "out_tokens", "rpm", "user_rpm")
        out = {}
        for name, d in raw.items():
            sel = d if parts else {k: d[k] for k in keys}
            out[name] = {k: (_full(v, int(n)) if not isinstance(v, bool | list | type(None))
                             else v) for k, v in sel.items()}
        return out

    # -- facts -----------------------------------------------------------------------------
    def option_frame(self) -> pd.DataFrame:
        """One row per option: kind, offering, classes served/unserved."""
        return pd.DataFrame([
            {"deployment": o.name, "kind": o.kind, "offering": o.offering,
             "classes_served": ",".join(o.served),
             "classes_unserved": "; ".join(f"{c}: {w}" for c, w in o.unserved.items())}
            for o in self.options
        ], columns=["deployment", "kind", "offering", "classes_served", "classes_unserved"])

    def draw(self, root: np.random.SeedSequence, index: int, size: int) -> dict[str, np.ndarray]:
        """Inputs of chunk ``index`` (``size`` samples)."""
        return self.sampler.draw(chunk_generator(root, index), size)

    def run_chunk(self, root: np.random.SeedSequence, index: int, size: int,
                  keep_inputs: bool = False, out: np.ndarray | None = None):
        """Sample and price one chunk: ``(costs (3, n_options, size), inputs or None)``.

        ``costs[0]`` is the monthly cost, ``costs[1]`` the one-off total, ``costs[2]`` tokens per
        month, per option in :attr:`option_names` order (written into ``out`` when given).
        """
        vals = self.draw(root, index, size)
        res = self._evaluate(vals, size, 1.0)
        arr = np.empty((3, len(self.options), size)) if out is None else out
        for j, o in enumerate(self.options):
            r = res[o.name]
            arr[0, j] = r["monthly"]
            arr[1, j] = r["once"]
            arr[2, j] = r["tokens"]
        return arr, (vals if keep_inputs else None)

    @property
    def option_names(self) -> list[str]:
        return [o.name for o in self.options]


def _full(x: Any, n: int) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.shape == (n,):
        return a
    return np.broadcast_to(a.reshape(-1)[0] if a.size == 1 else a, (n,)).copy()


def _unused_reason(key: str) -> str:
    if ".slo." in key:
        return "held at its median (the capacity grid is computed for one SLO)"
    if key.startswith("trends."):
        return "used by the multi-year engine only"
    if key.startswith("scenario.discount_rate"):
        return "used by the multi-year engine only"
    return "does not affect any deployment option's monthly cost"


def compile_scenario(sc: Scenario, *, catalog: Catalog | None = None,
                     correlations: Any = None) -> CompiledScenario:
    """Prepare a scenario for vectorised evaluation (catalog rows, eligibility, capacity).

    ``correlations`` defaults to the scenario's ``correlation`` table when the schema has one.
    """
    if correlations is None:
        correlations = sc.correlation
    return CompiledScenario(sc, catalog or load_catalog(), _as_correlations(correlations))


# --------------------------------------------------------------------------------------------
# statistics


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
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if n > 1 else 0.0
    return {
        "mean": mean, "se_mean": sd / math.sqrt(n), "p5": float(qv[0]), "p50": float(qv[1]),
        "p95": float(qv[2]), "p95_se": float(part[hi] - part[lo]) / (2.0 * _Z95),
        "cvar95": cvar(x, 0.95),
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


# --------------------------------------------------------------------------------------------
# results


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
        at median (:func:`planner.engines.sensitivity.tornado`)
    rank_correlation : Spearman rank correlation of each input with each option's monthly cost
    breakeven : per (self-hosted, API) pair, the distribution of the break-even volume
    convergence : estimates at each checkpoint (doubling numbers of chunks)
    samples : per-sample monthly cost, one column per deployment (None when not kept)
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


SUMMARY_COLUMNS = ["deployment", "kind", "metric", "mean", "se_mean", "p5", "p50", "p95",
                   "p95_se", "cvar95", "at_median", "p_infeasible"]


def summarise(model: CompiledScenario, costs: np.ndarray, *, threads: int = 1) -> pd.DataFrame:
    """Summary table from the (3, n_options, n) cost array of a run."""
    base = model.evaluate({}, 1)
    h = model.horizon
    jobs = []
    for j, o in enumerate(model.options):
        once = costs[1, j]
        # with a constant one-off, usd_horizon is an increasing affine map of the monthly
        # cost, so its statistics follow from the monthly ones without another partition
        const_once = once.size > 0 and once.min() == once.max()
        m = metric_arrays(costs[0, j], once, costs[2, j], h, with_horizon=not const_once)
        b = metric_arrays(base[o.name]["monthly"], base[o.name]["once"],
                           base[o.name]["tokens"], h)
        for metric, arr in m.items():
            derived = metric == "usd_horizon" and const_once
            jobs.append((o, metric, None if derived else arr, float(b[metric][0])))

    infeasible = {o.name: float(np.mean(np.isinf(costs[0, j]))) if costs.shape[2] else np.nan
                  for j, o in enumerate(model.options)}

    def one(job):
        o, metric, arr, at_median = job
        if arr is None:
            return None
        finite = arr[np.isfinite(arr)] if not np.isfinite(arr).all() else arr
        st = tail_stats(finite)
        return {"deployment": o.name, "kind": o.kind, "metric": metric, **st,
                "at_median": at_median, "p_infeasible": infeasible[o.name]}

    if threads > 1:
        with ThreadPoolExecutor(threads) as ex:
            rows = list(ex.map(one, jobs))
    else:
        rows = [one(j) for j in jobs]
    for i, (o, metric, arr, at_median) in enumerate(jobs):
        if arr is None:  # usd_horizon from usd_per_month (the row before it)
            mo = rows[i - 1]
            once = float(costs[1, model.option_names.index(o.name)][0])
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


def _convergence_rows(model: CompiledScenario, monthly: np.ndarray, n: int,
                      prev: dict[str, float]) -> list[dict[str, Any]]:
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


# --------------------------------------------------------------------------------------------
# the run


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
    model = compiled or compile_scenario(scenario, catalog=catalog, correlations=correlations)
    root = _root_seed(seed)
    threads = _default_threads() if threads is None else max(1, int(threads))
    sizes = chunk_sizes(int(n))
    n_opt = len(model.options)
    costs = np.empty((3, n_opt, int(n)))
    keep_in = min(int(n), max(rank_samples if sensitivity else 0,
                              breakeven_samples if sensitivity else 0, 0))
    inputs: dict[str, list[np.ndarray]] = {k: [] for k in model.inputs}
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    done_samples = 0

    def work(c: int):
        want = starts[c] < keep_in
        _, vals = model.run_chunk(root, c, sizes[c], keep_inputs=want,
                                  out=costs[:, :, starts[c]:starts[c + 1]])
        return c, vals

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
    ex = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        for cp in checkpoints:
            todo = range(done, cp)
            results = ex.map(work, todo) if ex else map(work, todo)
            for c, vals in results:
                if vals is not None:
                    for key in inputs:
                        inputs[key].append(vals[key])
                done_samples += sizes[c]
                if progress:
                    progress(done_samples, int(n))
            done = cp
            m = int(starts[done])
            if tol is None:
                break
            conv_rows.extend(_convergence_rows(model, costs[0], m, prev))
            if len(conv_rows) > n_opt:
                last = conv_rows[-n_opt:]
                if all(r["p95_rel_change"] <= tol and r["p95_rel_se"] <= tol for r in last):
                    converged = True
                    break
    finally:
        if ex is not None:
            ex.shutdown()
    m = int(starts[done])
    costs = costs[:, :, :m]
    names = model.option_names
    summary = summarise(model, costs, threads=threads)
    wins = win_probability(model, costs[0])
    if tol is None:  # no checkpoints: the final estimates and their standard errors
        fin = summary[summary["metric"] == "usd_per_month"]
        conv_rows = [{
            "n": m, "deployment": r.deployment, "mean": r.mean, "se_mean": r.se_mean,
            "p95": r.p95, "p95_se": r.p95_se,
            "p95_rel_se": r.p95_se / abs(r.p95) if r.p95 else 0.0, "p95_rel_change": np.nan,
        } for r in fin.itertuples()]
    in_df = None
    if inputs and keep_in:
        in_df = pd.DataFrame({k: np.concatenate(v)[: min(keep_in, m)] for k, v in inputs.items()})
    if sensitivity and model.inputs:
        torn = sens.tornado_compiled(model)
        rk = sens.rank_correlation(in_df.iloc[:rank_samples],
                                   pd.DataFrame(costs[0, :, : min(rank_samples, m)].T,
                                                columns=names))
        be = sens.breakeven_volumes(model, in_df.iloc[:breakeven_samples])
    elif sensitivity:  # nothing uncertain: no tornado or correlations, one break-even value
        torn = sens.tornado_frame([])
        rk = sens.rank_frame([])
        be = sens.breakeven_volumes(model, None)
    else:
        torn = sens.tornado_frame([])
        rk = sens.rank_frame([])
        be = sens.breakeven_frame([])
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
        samples=pd.DataFrame(costs[0].T, columns=names) if keep_samples else None,
        inputs=in_df, converged=converged, warnings=tuple(warnings),
    )


# --------------------------------------------------------------------------------------------
# simulation hook


def busiest_hour_metrics(scenario: Scenario, rng: np.random.Generator, *,
                         deployment: str | None, catalog: Catalog | None = None,
                         max_requests: int = 20_000) -> dict[str, float]:
    """Latency and spillover of one fixed scenario: its busiest hour simulated with SimPy.

    Returns ``replicas``, ``requests``, ``slo_attainment`` (share of requests meeting every
    SLO bound of their class), ``spillover_share``, ``dropped_share`` and ``ttft_p99_s``.
    The arrivals' seed is drawn from ``rng``.
    """
    from planner.sim.scenario import simulate_busiest_hour

    if deployment is None or deployment not in {**scenario.cloud, **scenario.onprem}:
        raise PlannerError(
            f"simulation replications need a cloud or on-prem deployment, got {deployment!r}; "
            f"choose one of {', '.join([*scenario.cloud, *scenario.onprem]) or '(none)'}"
        )
    b = simulate_busiest_hour(scenario, catalog, deployments=[deployment],
                              seed=int(rng.integers(2**32)), max_requests=max_requests)
    t = b.run.result.totals()
    ttft = b.run.result.requests["ttft_s"].to_numpy(dtype=float)
    ttft = ttft[np.isfinite(ttft)]
    pools = b.run.pools
    return {
        "hour": float(b.hour),
        "replicas": float(pools.loc[pools["kind"] != "api", "replicas"].sum()),
        "requests": t["requests"],
        "slo_attainment": t["slo_attainment"],
        "spillover_share": t["spillover_share"],
        "dropped_share": t["dropped"] / t["requests"] if t["requests"] else math.nan,
        "ttft_p99_s": float(np.quantile(ttft, 0.99)) if ttft.size else math.nan,
    }


def simulation_replications(
    results: RiskResults,
    scenario: Scenario,
    *,
    simulate_fn: Callable[[Scenario, np.random.Generator], Mapping[str, float]] | None = None,
    deployment: str | None = None,
    replications: int = 8,
    seed: int | None = 0,
    catalog: Catalog | None = None,
    max_requests: int = 20_000,
) -> pd.DataFrame:
    """SimPy replications over a subset of the sampled scenarios (latency / spillover risk).

    Picks ``replications`` samples spread evenly over the quantiles of ``deployment``'s monthly
    cost (the sample nearest each of the (i + 0.5) / replications quantiles, among the samples
    whose inputs were kept), fixes the scenario at each
    (:func:`planner.uncertain.scenario_at`) and calls ``simulate_fn(fixed_scenario, rng)``
    with an independent generator per replication. Returns one row per replication: the
    sample index, its monthly cost, and the metrics ``simulate_fn`` returned.

    The default ``simulate_fn`` (:func:`busiest_hour_metrics`) simulates ``deployment`` (a
    cloud or on-prem option, default the first one; sized by the cost engine at that sample) during the busiest hour
    of the sample's traffic, cut to ``max_requests`` arrivals.
    """
    if simulate_fn is None:
        hosted = [d for d in results.samples.columns if d in {**scenario.cloud, **scenario.onprem}]
        deployment = deployment or (hosted[0] if hosted else None)
        simulate_fn = functools.partial(busiest_hour_metrics, deployment=deployment,
                                        catalog=catalog, max_requests=max_requests)
    if results.inputs is None or results.samples is None:
        raise PlannerError(
            "simulation_replications: the run kept no inputs/samples; run with keep_samples=True"
        )
    dep = deployment or results.samples.columns[0]
    if dep not in results.samples.columns:
        raise PlannerError(
            f"deployment: unknown option {dep!r}; options: {', '.join(results.samples.columns)}"
        )
    m = len(results.inputs)
    cost = results.samples[dep].to_numpy()[:m]
    order = np.argsort(cost, kind="stable")
    picks = [int(order[min(int((i + 0.5) / replications * m), m - 1)])
             for i in range(replications)]
    gens = np.random.SeedSequence(seed).spawn(replications)
    rows = []
    for i, idx in enumerate(picks):
        vals = {k: float(results.inputs[k].iloc[idx]) for k in results.inputs.columns}
        fixed = scenario_at(scenario, vals, catalog=catalog)
        metrics = simulate_fn(fixed, np.random.default_rng(gens[i]))
        rows.append({"replication": i, "sample": idx, "deployment": dep,
                     "usd_per_month": float(cost[idx]), **dict(metrics)})
    return pd.DataFrame(rows)


def tornado(scenario: Scenario, *, catalog: Catalog | None = None, low: float = 0.1,
            high: float = 0.9, metric: str = "usd_per_month",
            compiled: CompiledScenario | None = None) -> pd.DataFrame:
    """One-at-a-time sensitivity of a scenario: each uncertain input at its P10 and P90, the
    others at their medians (:func:`planner.engines.sensitivity.tornado_compiled` on the
    compiled scenario).

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
    return sens.tornado_compiled(model, low=low, high=high, metric=metric)
