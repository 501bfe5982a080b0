"""Monte Carlo risk engine: every uncertain scenario input sampled, every option priced per sample.

Any numeric field of a scenario may hold a distribution (:mod:`planner.distributions`). This
engine collects them all by dotted key path (``workload.chat.requests_per_day``,
``api.gpt-4o.input_usd_per_mtok``, ``onprem.hgx.server_price_usd`` ...), draws them together
(optionally rank-correlated through a Gaussian copula) and evaluates the deterministic engine's
cost formulas on the arrays of samples: one numpy expression per formula, never a Python loop
per sample. With every input fixed it reproduces
:func:`planner.engines.deterministic.evaluate` exactly (same operations in the same order).
Inputs that cannot change an option's monthly cost (pre-training jobs, payback, revenue, SLO
bounds) are reported in ``unused_inputs`` and held at their medians.

How the pieces map to the deterministic engine
----------------------------------------------
* Structure is decided once, at the inputs' medians, exactly as the deterministic engine decides
  it: which classes each option may serve (classes, quality tiers, fine-tune qualification, a
  replica that does not fit), which catalog rows and price sources apply, the billing mode.
  Only numbers vary between samples.
* Volumes: :func:`planner.workload.class_volumes` per class and tokenizer.
* API bills: :func:`planner.costs.api.resolve_api_prices` and
  :func:`planner.costs.api.api_cost_per_request` per class, plus request fees.
* Self-hosted: whole replicas from the peak hourly load
  (:func:`planner.workload.hourly_load_extremes`, :func:`planner.costs.selfhosted.replicas_needed`,
  ``ceil`` on arrays), packed into whole instances/servers (``pack``); cloud rental by billing
  mode; on-prem capex, maintenance, energy, facilities and staff
  (:func:`planner.costs.selfhosted.onprem_costs_usd_per_month`).
* Fine-tune one-offs (:mod:`planner.costs.training`) spread over the horizon.
* Replica capacity comes from the performance model (:func:`planner.perf.replica_capacity`),
  called once per (deployment, class) at the median lengths. When a class's token lengths are
  uncertain, it is called on a grid instead: input x output tokens at the 0.1, 3, 20, 50, 80,
  97 and 99.9 % quantiles of a fixed 2,048-draw pilot sample plus the median lengths (at most
  8 x 8 calls, shared by options with the same model, accelerator and parallelism), and the
  replica-seconds per request (1 / requests per s) is interpolated bilinearly in (input
  tokens, output tokens), held constant beyond the outermost nodes (0.5 % worst error against
  the perf model on the risk example's grid). At the median lengths the grid returns the perf
  model's value. SLO bounds are held at their medians (the grid is computed for one SLO). A
  sample whose lengths leave no capacity costs ``inf`` and counts in ``p_infeasible``.

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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from planner import _runtime
from planner.catalog import Catalog, load_catalog
from planner.config import Correlation, Scenario
from planner.costs import selfhosted as sh
from planner.costs import training as tr
from planner.costs.api import (
    API_PRICE_FIELDS,
    api_cost_per_request,
    request_fee_usd,
    resolve_api_prices,
)
from planner.distributions import (
    DistributionBase,
    LognormalDist,
    NormalDist,
    median_of,
    sample_many,
    spearman_to_pearson,
)
from planner.engines import deterministic as det
from planner.engines import sensitivity as sens
from planner.errors import PlannerError
from planner.stats import cvar, metric_arrays
from planner.uncertain import UncertainInput, _as_correlations, scenario_at, uncertain_inputs
from planner.workload import class_volumes, diurnal_weights, hourly_load_extremes

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
#: Pilot draws used to place the capacity grid when token lengths are uncertain.
PILOT_SAMPLES = 2_048
_PILOT_SEED = 20_240_917
_GRID_Q = (0.001, 0.03, 0.2, 0.5, 0.8, 0.97, 0.999)
#: Inputs only the multi-year engine samples (their correlations are skipped here).
_MULTIYEAR_ONLY = ("trends.", "scenario.discount_rate_per_year")


# --------------------------------------------------------------------------------------------
# sampling


#: Copula uniforms are clipped to [2**-54, 1 - 2**-53] (as planner.distributions does) so no
#: ppf sees exactly 0 or 1.
_U_LO, _U_HI = 2.0**-54, 1.0 - 2.0**-53


def _normal_family(d: DistributionBase) -> bool:
    """Untruncated normal or lognormal: drawn from standard normals without an inverse CDF."""
    return isinstance(d, LognormalDist) or (isinstance(d, NormalDist) and not d.truncated)


def _from_z(d: DistributionBase, z: np.ndarray) -> np.ndarray:
    """``ppf(Phi(z))`` for the normal family, computed directly (in place on ``z``)."""
    if isinstance(d, LognormalDist):
        mu, sigma = d.log_params()
        z *= sigma
        z += mu
        return np.exp(z, out=z)
    z *= d.sd
    z += d.mean_value
    return z


@dataclass(frozen=True)
class _Sampler:
    """Draws the uncertain inputs from one generator, in a fixed order.

    1. inputs in no correlation and not normal/lognormal: one uniform block through
       :func:`planner.distributions.sample_many` (``ppf`` of uniforms);
    2. independent untruncated normals and lognormals: one ``standard_normal`` block,
       ``x = mean + sd z`` or ``exp(mu + sigma z)`` (the same distributions as ``ppf(u)``;
       ``scipy.special.ndtri`` would cost ~30 ns a value, the largest cost of a run);
    3. each correlated group: a Gaussian copula ``z = L e`` with ``L L^T`` the Pearson matrix
       ``2 sin(pi rho / 6)`` of the Spearman targets (as
       :func:`planner.distributions.gaussian_copula_uniforms`); normal-family members use
       ``z`` directly, the others ``ppf(clip(Phi(z)))``.
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
                out[k] = _from_z(self.dists[k], z[j])
        for names, factor in self.groups:
            z = factor @ rng.standard_normal((len(names), n))
            for j, k in enumerate(names):
                d = self.dists[k]
                if _normal_family(d):
                    out[k] = _from_z(d, z[j])
                else:
                    u = special.ndtr(z[j])
                    np.clip(u, _U_LO, _U_HI, out=u)
                    out[k] = np.asarray(d._ppf(u), dtype=float)
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
    other = tuple(k for k in alone if not _normal_family(dists[k]))
    normal = tuple(k for k in alone if _normal_family(dists[k]))
    return _Sampler(dict(dists), other, normal, tuple(groups))


def _factor(pear: np.ndarray, sub: Mapping[tuple[str, str], float]) -> np.ndarray:
    """L with L L^T = pear (Cholesky, or an eigen factor when singular); PlannerError if the
    matrix is not positive semi-definite, naming the correlations involved."""
    try:
        return np.linalg.cholesky(pear)
    except np.linalg.LinAlgError:
        pass
    w, v = np.linalg.eigh(pear)
    if w[0] < -1e-9 * pear.shape[0]:
        listed = "; ".join(f"({a}, {b}) rho = {r:g}" for (a, b), r in sub.items())
        raise PlannerError(
            f"correlation: {listed}: these correlations cannot hold together (the copula's "
            f"correlation matrix is not positive semi-definite, smallest eigenvalue "
            f"{w[0]:.3g}); weaken some of them"
        )
    return v * np.sqrt(np.clip(w, 0.0, None))


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
# capacity: perf model at the medians, or on a grid of length quantiles


@dataclass(frozen=True, eq=False)
class _CapacityGrid:
    """Requests/s per replica on an (input tokens, output tokens) grid.

    Bilinear interpolation of the replica-seconds per request ``1 / rps`` (nearly linear in
    the lengths: prefill and decode time grow with them), constant beyond the outermost nodes;
    where a node has no capacity (``rps = 0``), ``rps`` itself is interpolated. At a node the
    result is the perf model's value (to the last bit for ``rps``, one rounding for 1/rps).
    """

    isl: np.ndarray
    osl: np.ndarray
    rps: np.ndarray  # (len(isl), len(osl))

    def __call__(self, isl: Any, osl: Any) -> np.ndarray:
        i0, i1, ti = _axis(self.isl, isl)
        j0, j1, tj = _axis(self.osl, osl)
        inverse = bool((self.rps > 0).all())
        r = 1.0 / self.rps if inverse else self.rps
        a = r[i0, j0] * (1.0 - tj) + r[i0, j1] * tj
        b = r[i1, j0] * (1.0 - tj) + r[i1, j1] * tj
        v = a * (1.0 - ti) + b * ti
        return 1.0 / v if inverse else v


def _axis(nodes: np.ndarray, x: Any):
    """Cell index and weight of ``x`` between sorted ``nodes`` (clamped to the end nodes)."""
    x = np.asarray(x, dtype=float)
    if nodes.size == 1:
        z = np.zeros(x.shape, dtype=np.intp)
        return z, z, np.zeros(x.shape)
    xc = np.clip(x, nodes[0], nodes[-1])
    # cell index = number of inner nodes <= x (a few comparisons beat a binary search here)
    i = np.zeros(xc.shape, dtype=np.intp)
    for node in nodes[1:-1]:
        i += xc >= node
    lo = nodes[i]
    t = (xc - lo) / (nodes[i + 1] - lo)
    return i, i + 1, t


def _grid_nodes(pilot: np.ndarray, median: float) -> np.ndarray:
    q = np.quantile(np.asarray(pilot, dtype=float), _GRID_Q)
    nodes = np.unique(np.concatenate([q[q > 0], [median]]))
    return nodes


# --------------------------------------------------------------------------------------------
# compiled scenario


class _Ctx:
    """One evaluation: sampled values (arrays) or medians for every input."""

    def __init__(self, model: CompiledScenario, values: Mapping[str, Any], n: int,
                 volume_scale: Any = 1.0, record: set | None = None):
        self.m = model
        self.values = values
        self.n = n
        self.scale = volume_scale
        self.record = record
        self.cache: dict[Any, Any] = {}

    def v(self, key: str, x: Any, default: Any = None) -> Any:
        """Value of the field at ``key``: the sample, else its median, else ``default``."""
        if self.record is not None:
            self.record.add(key)
        if key in self.values:
            return self.values[key]
        if x is None:
            return default
        med = self.m.medians.get(key)
        return med if med is not None else median_of(x)


@dataclass
class _OptionSpec:
    name: str
    kind: str
    dep: Any
    offering: str | None
    served: tuple[str, ...]
    unserved: dict[str, str]
    tokenizer: str | None
    row: dict[str, Any] | None = None  # API catalog row
    ft: Any = None
    # self-hosted
    acc_id: str | None = None
    acc_row: dict[str, Any] | None = None
    offer: dict[str, Any] | None = None
    server: dict[str, Any] | None = None
    capacity: dict[str, Any] = field(default_factory=dict)  # class -> float | grid | key
    periods: int = 24
    model: str | None = None


class CompiledScenario:
    """A scenario prepared for vectorised evaluation.

    Build it with :func:`compile_scenario`. :meth:`evaluate` prices every option for arrays of
    input values; :attr:`inputs` lists the inputs that affect some option's cost.
    """

    def __init__(self, sc: Scenario, catalog: Catalog, correlations: list[Correlation]):
        self.sc = sc
        self.cat = catalog
        self.hpm = float(sc.planning.hours_per_month)
        self.horizon = int(sc.scenario.horizon_months)
        self.all_inputs = uncertain_inputs(sc)
        self.medians: dict[str, float] = {k: u.dist.median() for k, u in self.all_inputs.items()}
        self._ratio_cache: dict[tuple, float] = {}
        self._cheapest_cache: dict[tuple, float] = {}
        self._cap_cache: dict[tuple, float] = {}
        self._grid_cache: dict[tuple, _CapacityGrid] = {}
        pilot = self._pilot()
        self.options: list[_OptionSpec] = []
        for name, (kind, dep) in sc.deployments().items():
            self.options.append(self._compile_option(name, kind, dep, pilot))
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

    # -- compile ---------------------------------------------------------------------------
    def _pilot(self) -> dict[str, np.ndarray]:
        if not self.all_inputs:
            return {}
        rng = np.random.default_rng(np.random.SeedSequence(_PILOT_SEED))
        return sample_many(rng, {k: u.dist for k, u in self.all_inputs.items()}, PILOT_SAMPLES)

    def _compile_option(self, name: str, kind: str, dep: Any, pilot) -> _OptionSpec:
        sc, cat = self.sc, self.cat
        ft = sc.finetune.get(dep.fine_tune) if dep.fine_tune else None
        if kind == "api":
            row = cat.api(dep.offering)
            elig = det._eligible(sc, dep, det._tier(dep, row), ft)
            return _OptionSpec(
                name, kind, dep, dep.offering, tuple(c for c, w in elig.items() if not w),
                {c: w for c, w in elig.items() if w}, dep.tokenizer or row.get("tokenizer"),
                row=row, ft=ft,
            )
        llm_row = cat.llm(dep.model)
        offer = cat.cloud(dep.offering) if kind == "cloud" and dep.offering is not None else None
        server = cat.server(dep.server) if kind == "onprem" and dep.server is not None else None
        acc_id = dep.accelerator or (offer or server or {}).get("accelerator")
        acc_row = cat.accelerator(acc_id)
        elig = det._eligible(sc, dep, det._tier(dep, llm_row), ft)
        tokenizer = dep.tokenizer or llm_row.get("tokenizer")
        periods = 168 if any(
            not isinstance(w.diurnal, str) and len(w.diurnal) == 168
            for w in sc.workload.values()
        ) else 24
        spec = _OptionSpec(
            name, kind, dep, (dep.offering if kind == "cloud" else dep.server) or f"{acc_id}",
            (), {}, tokenizer, ft=ft, acc_id=acc_id, acc_row=acc_row, offer=offer,
            server=server, periods=periods, model=dep.model,
        )
        med_ctx = _Ctx(self, {}, 1)
        pil_ctx = _Ctx(self, pilot, PILOT_SAMPLES)
        for cname, why in list(elig.items()):
            if why:
                continue
            key = f"{kind}.{name}.capacity_requests_per_s"
            if dep.capacity_requests_per_s is not None:
                spec.capacity[cname] = ("key", key)
                continue
            _, isl, osl = self._class(med_ctx, cname, tokenizer)[:3]
            isl, osl = float(isl), float(osl)
            slo = sc.workload[cname].slo
            ttft = median_of(slo.ttft_s) if slo and slo.ttft_s is not None else None
            tpot = median_of(slo.tpot_s) if slo and slo.tpot_s is not None else None
            rps, fits = self._capacity(llm_row, acc_row, dep, isl, osl, ttft, tpot, strict=True)
            if not fits or rps <= 0:
                elig[cname] = "cannot be served: no capacity at the median lengths"
                continue
            _, p_isl, p_osl = self._class(pil_ctx, cname, tokenizer)[:3]
            p_isl = np.broadcast_to(np.asarray(p_isl, dtype=float), (PILOT_SAMPLES,))
            p_osl = np.broadcast_to(np.asarray(p_osl, dtype=float), (PILOT_SAMPLES,))
            if np.ptp(p_isl) == 0 and np.ptp(p_osl) == 0:
                spec.capacity[cname] = ("value", rps)
                continue
            gkey = (llm_row["id"], acc_row["id"], dep.gpus_per_replica, dep.precision,
                    tuple(sorted(dep.perf.items())), ttft, tpot, cname, tokenizer)
            if gkey not in self._grid_cache:
                gi = _grid_nodes(p_isl, isl) if np.ptp(p_isl) > 0 else np.array([isl])
                go = _grid_nodes(p_osl, osl) if np.ptp(p_osl) > 0 else np.array([osl])
                table = np.empty((gi.size, go.size))
                for a, x in enumerate(gi):
                    for b2, y in enumerate(go):
                        if x == isl and y == osl:
                            table[a, b2] = rps
                        else:
                            table[a, b2] = self._capacity(llm_row, acc_row, dep, float(x),
                                                          float(y), ttft, tpot, strict=False)[0]
                self._grid_cache[gkey] = _CapacityGrid(gi, go, table)
            spec.capacity[cname] = ("grid", self._grid_cache[gkey])
        spec.served = tuple(c for c, w in elig.items() if not w)
        spec.unserved = {c: w for c, w in elig.items() if w}
        return spec

    def _capacity(self, llm_row, acc_row, dep, isl, osl, ttft, tpot, *, strict):
        from planner.perf import AcceleratorSpec, LLMSpec, PerfParams, replica_capacity

        key = (llm_row["id"], acc_row["id"], dep.gpus_per_replica, dep.precision,
               tuple(sorted(dep.perf.items())), isl, osl, ttft, tpot, strict)
        if key in self._cap_cache:
            return self._cap_cache[key]
        try:
            cap = replica_capacity(
                LLMSpec.from_row(llm_row), AcceleratorSpec.from_row(acc_row),
                gpus=dep.gpus_per_replica, precision=dep.precision, input_tokens=isl,
                output_tokens=osl, ttft_slo_s=ttft, tpot_slo_s=tpot,
                params=_perf_params(PerfParams, dep.perf),
                **({} if strict else {"strict": False}),
            )
            out = (float(cap.requests_per_s), bool(cap.fits))
        except PlannerError:
            if strict:
                raise
            out = (0.0, False)
        self._cap_cache[key] = out
        return out

    # -- shared pieces ---------------------------------------------------------------------
    def _ratio(self, length, tokenizer, unit) -> float:
        key = (length.tokenizer or tokenizer or "", length.lang, unit)
        if key not in self._ratio_cache:
            row = self.cat.tokens_per_unit(*key)
            self._ratio_cache[key] = float(row["tokens_per_unit"])
        return self._ratio_cache[key]

    def _length(self, ctx: _Ctx, length, key: str, tokenizer) -> Any:
        """Tokens of a Length (as planner.workload.resolve_length)."""
        if length is None:
            return 0.0
        if length.tokens is not None:
            return ctx.v(f"{key}.tokens", length.tokens)
        unit, field_ = ("word", "words") if length.words is not None else ("char", "chars")
        count = ctx.v(f"{key}.{field_}", getattr(length, field_))
        if length.tokens_per_unit is not None:
            ratio = ctx.v(f"{key}.tokens_per_unit", length.tokens_per_unit)
        else:
            ratio = self._ratio(length, tokenizer, unit)
        return count * ratio

    def _class(self, ctx: _Ctx, cname: str, tokenizer) -> tuple:
        """(LLM requests/day, input tokens, output tokens, cached share, batch share, calls)."""
        ck = ("class", cname, tokenizer)
        if ck in ctx.cache:
            return ctx.cache[ck]
        sc = self.sc
        wc = sc.workload[cname]
        b = f"workload.{cname}"
        if wc.retry_share is not None:
            retry = ctx.v(f"{b}.retry_share", wc.retry_share)
        else:
            retry = ctx.v("planning.retry_share", sc.planning.retry_share)
        calls = ctx.v(f"{b}.calls_per_request", wc.calls_per_request)
        req, isl, osl = class_volumes(
            ctx.v(f"{b}.requests_per_day", wc.requests_per_day),
            self._length(ctx, wc.input, f"{b}.input", tokenizer),
            self._length(ctx, wc.output, f"{b}.output", tokenizer),
            context_tokens=self._length(ctx, wc.context, f"{b}.context", tokenizer),
            calls_per_request=calls,
            samples_per_call=ctx.v(f"{b}.samples_per_call", wc.samples_per_call),
            response_cache_hit_share=ctx.v(f"{b}.response_cache_hit_share",
                                           wc.response_cache_hit_share),
            retry_share=retry,
        )
        if not (np.ndim(ctx.scale) == 0 and ctx.scale == 1.0):
            req = req * ctx.scale
        out = (req, isl, osl, ctx.v(f"{b}.cached_share", wc.cached_share),
               ctx.v(f"{b}.batch_share", wc.batch_share), calls)
        ctx.cache[ck] = out
        return out

    def _fees(self, ctx: _Ctx, dep, prefix: str, rpm) -> list:
        out = []
        for i, f in enumerate(dep.request_fees):
            k = f"{prefix}.request_fees.{i}"
            usd = request_fee_usd(
                ctx.v(f"{k}.usd_per_million_requests", f.usd_per_million_requests),
                ctx.v(f"{k}.gb", f.gb), ctx.v(f"{k}.seconds", f.seconds),
                ctx.v(f"{k}.usd_per_gb_s", f.usd_per_gb_s),
            )
            out.append(usd * rpm)
        return out

    def _finetune(self, ctx: _Ctx, ft_name: str | None) -> Any:
        """One-off fine-tune cost (retries included), as deterministic.finetune_cost."""
        if ft_name is None:
            return 0.0
        ck = ("ft", ft_name)
        if ck in ctx.cache:
            return ctx.cache[ck]
        ft = self.sc.finetune[ft_name]
        b = f"finetune.{ft_name}"
        tokens = ctx.v(f"{b}.training_tokens", ft.training_tokens) * ctx.v(f"{b}.epochs",
                                                                           ft.epochs)
        retry = ctx.v(f"{b}.retry_multiplier", ft.retry_multiplier)
        if ft.method == "api":
            row = self.cat.api(ft.base_model)
            price = ctx.v(f"{b}.ft_train_usd_per_mtok", ft.ft_train_usd_per_mtok,
                          row.get("ft_train_usd_per_mtok"))
            if price is None:
                raise PlannerError(
                    f"fine-tune: API offering {ft.base_model!r} has no fine-tuning price in the "
                    "catalog; set ft_train_usd_per_mtok"
                )
            once = tr.finetune_api_run_usd(price, tokens)
        else:
            llm = self.cat.llm(ft.base_model)
            if ft.accelerator is None:
                raise PlannerError(
                    f"fine-tune {ft.base_model!r}: method {ft.method} needs accelerator"
                )
            acc = self.cat.accelerator(ft.accelerator)
            factor = 1.0
            if ft.method == "lora":
                factor = ctx.v(f"{b}.lora_flops_factor", ft.lora_flops_factor,
                               tr.LORA_FLOPS_FACTOR)
            params_b = float(llm["params_b"])
            mem = float(tr.full_finetune_memory_gb(params_b) if ft.method == "full"
                        else tr.lora_memory_gb(params_b))
            gpus = ft.gpus or int(np.ceil(mem / (0.9 * float(acc["mem_gb"]))))
            mfu = ctx.v(f"{b}.mfu", ft.mfu, 0.35)
            price = ctx.v(f"{b}.usd_per_gpu_hour", ft.usd_per_gpu_hour)
            if price is None:
                price = self._cheapest(ft.accelerator, "on-demand")
            once, _ = tr.finetune_gpu_run_usd(params_b, tokens, factor, gpus,
                                              float(acc["bf16_tflops"]), mfu, price)
        usd = once * retry
        ctx.cache[ck] = usd
        return usd

    def _cheapest(self, accelerator: str, plan: str) -> float:
        key = (accelerator, plan)
        if key not in self._cheapest_cache:
            best = self.cat.cheapest_cloud(accelerator, plan, required=True)
            self._cheapest_cache[key] = float(best["usd_per_gpu_hour"])
        return self._cheapest_cache[key]

    # -- options ---------------------------------------------------------------------------
    def _api(self, ctx: _Ctx, o: _OptionSpec) -> dict[str, Any]:
        dep, row = o.dep, o.row
        b = f"api.{o.name}"
        prices = resolve_api_prices(
            row, {k: ctx.v(f"{b}.{k}", getattr(dep, k)) for k in API_PRICE_FIELDS},
            fine_tuned=o.ft is not None, offering=dep.offering,
        )
        discount = ctx.v(f"{b}.discount", dep.discount)
        margin = ctx.v(f"{b}.gross_margin", dep.gross_margin)
        monthly = tokens_usd = fees_usd = 0.0
        tokens = out_tokens = rpm_total = 0.0
        for cname in o.served:
            req, isl, osl, cached, batch, calls = self._class(ctx, cname, o.tokenizer)
            parts = api_cost_per_request(
                prices, isl, osl, cached_share=cached, batch_share=batch,
                calls_per_request=calls, discount=discount,
                gross_margin=margin if np.ndim(margin) == 0 else None,
            )
            if np.ndim(margin):  # sampled margin: applied element-wise (same formula)
                parts = {k: v * (1.0 - margin) for k, v in parts.items()}
            rpm = req * self.hpm / 24.0
            for usd in parts.values():
                usd_m = usd * rpm
                monthly = monthly + usd_m
                tokens_usd = tokens_usd + usd_m
            for usd_m in self._fees(ctx, dep, b, rpm):
                monthly = monthly + usd_m
                fees_usd = fees_usd + usd_m
            tokens = tokens + rpm * (isl + osl)
            out_tokens = out_tokens + rpm * osl
            rpm_total = rpm_total + rpm
        once = self._finetune(ctx, dep.fine_tune)
        monthly = monthly + once / self.horizon
        return {"monthly": monthly, "once": once, "tokens": tokens, "out_tokens": out_tokens,
                "rpm": rpm_total, "api_tokens_usd": tokens_usd, "fees_usd": fees_usd}

    def _load(self, ctx: _Ctx, o: _OptionSpec):
        """Per-class load terms (replica-equivalents); shared by options with the same classes,
        tokenizer and capacity (e.g. the same model rented and bought)."""
        ck = ("load", o.tokenizer, o.served, o.periods,
              tuple((o.capacity[c][0], id(o.capacity[c][1])) for c in o.served),
              o.dep.capacity_requests_per_s is None)
        if ck not in ctx.cache or any(o.capacity[c][0] == "key" for c in o.served):
            ctx.cache[ck] = self._load_terms(ctx, o)
        return ctx.cache[ck]

    def _load_terms(self, ctx: _Ctx, o: _OptionSpec):
        coefs, consts, weights, classes = [], 0.0, [], []
        mean_load = 0.0
        for cname in o.served:
            req, isl, osl, _, batch, _ = self._class(ctx, cname, o.tokenizer)
            how, cap = o.capacity[cname]
            if how == "value":
                rps = cap
            elif how == "key":
                rps = ctx.v(cap, o.dep.capacity_requests_per_s)
            else:  # one interpolation per grid and class per evaluation (options share grids)
                ck = ("rps", id(cap), cname, o.tokenizer)
                if ck not in ctx.cache:
                    ctx.cache[ck] = cap(isl, osl)
                rps = ctx.cache[ck]
            w = diurnal_weights(self.sc.workload[cname].diurnal)
            days = w.size / 24
            wt = np.tile(w, o.periods // w.size) if w.size != o.periods else w
            rate_day = req * days  # requests in one profile period / 24 h ... per the profile
            a = (1.0 - batch) * rate_day / 3600.0 / rps
            flat = rate_day * wt.mean() / 3600.0
            consts = consts + batch * flat / rps
            coefs.append(a)
            weights.append(wt)
            classes.append((req, rate_day, wt, batch, rps))
            mean_load = mean_load + req / 86400.0 / rps
        return coefs, consts, np.array(weights), mean_load, classes

    def _selfhosted(self, ctx: _Ctx, o: _OptionSpec) -> dict[str, Any]:
        dep, plan = o.dep, self.sc.planning
        b = f"{o.kind}.{o.name}"
        coefs, const, weights, mean_load, classes = self._load(ctx, o)
        peak = self._peak(ctx, o, coefs, const, weights, mean_load)
        if dep.replicas is not None:
            replicas = float(dep.replicas)
        else:
            replicas = sh.replicas_needed(peak, plan.utilisation_target, plan.ha_reserve_replicas)
        rpm_total = tokens = out_tokens = 0.0
        for cname in o.served:  # same sums as the deterministic engine, in the same order
            req, isl, osl = self._class(ctx, cname, o.tokenizer)[:3]
            rpm = req * self.hpm / 24.0
            rpm_total = rpm_total + rpm
            tokens = tokens + rpm * (isl + osl)
            out_tokens = out_tokens + rpm * osl
        if o.kind == "cloud":
            units, gpus_paid, monthly, parts = self._cloud(ctx, o, replicas, classes, weights)
        else:
            units, gpus_paid, monthly, parts = self._onprem(ctx, o, replicas, mean_load)
        fees_usd = 0.0
        for usd_m in self._fees(ctx, dep, b, rpm_total):
            monthly = monthly + usd_m
            fees_usd = fees_usd + usd_m
        once = self._finetune(ctx, dep.fine_tune)
        monthly = monthly + once / self.horizon
        safe = np.where(np.asarray(gpus_paid) > 0, gpus_paid, 1.0)
        util = np.where(np.asarray(gpus_paid) > 0, mean_load * dep.gpus_per_replica / safe, 0.0)
        return {"monthly": monthly, "once": once, "tokens": tokens, "out_tokens": out_tokens,
                "rpm": rpm_total, "replicas": replicas, "units": units, "gpus": gpus_paid,
                "utilisation": util, "fees_usd": fees_usd, **parts}

    def _peak(self, ctx: _Ctx, o: _OptionSpec, coefs, const, weights, mean_load):
        """Peak-hour load (replica-equivalents), as the deterministic engine computes it."""
        ck = ("peak", id(coefs))
        if ck in ctx.cache and ctx.cache[ck][0] is coefs:
            return ctx.cache[ck][1]
        pta = self.sc.planning.peak_to_average
        if not coefs:
            peak = 0.0
        elif pta is not None:
            peak, low, first = hourly_load_extremes(coefs, const, weights, need_min=True)
            tol = 1e-8 + 1e-5 * np.abs(first)
            flat = (peak - first <= tol) & (first - low <= tol)
            peak = np.where(flat, mean_load * pta, peak)
        else:
            peak = hourly_load_extremes(coefs, const, weights)
        ctx.cache[ck] = (coefs, peak)
        return peak

    def _cloud(self, ctx: _Ctx, o: _OptionSpec, replicas, classes, weights):
        dep, offer = o.dep, o.offer
        b = f"cloud.{o.name}"
        gpi = dep.gpus_per_instance or int((offer or {}).get("gpus_per_instance") or 1)
        if dep.usd_per_instance_hour is not None:
            price_inst = ctx.v(f"{b}.usd_per_instance_hour", dep.usd_per_instance_hour)
        elif dep.usd_per_gpu_hour is not None:
            price_inst = ctx.v(f"{b}.usd_per_gpu_hour", dep.usd_per_gpu_hour) * gpi
        elif offer is not None and offer.get("usd_per_instance_hour") is not None:
            price_inst = float(offer["usd_per_instance_hour"])
        elif offer is not None and offer.get("usd_per_gpu_hour") is not None:
            price_inst = float(offer["usd_per_gpu_hour"]) * gpi
        else:
            price_inst = self._cheapest(o.acc_id, dep.plan) * gpi
        plan = (offer or {}).get("plan") or dep.plan
        factor = 1.0
        if plan == "spot":
            ov = ctx.v(f"{b}.interruption_overhead", dep.interruption_overhead,
                       (offer or {}).get("interruption_overhead") or 0.0)
            factor = sh.spot_factor(ov)
        units, gpus_paid = sh.pack(replicas, dep.gpus_per_replica, gpi)
        days = self.hpm / 24.0
        if dep.billing == "always-on":
            hours = units * self.hpm
        elif dep.billing == "active-window":
            hours = units * dep.active_hours_per_day * days
        else:
            startup = ctx.v(f"{b}.startup_s", dep.startup_s, (offer or {}).get("startup_s") or 0.0)
            minb = ctx.v(f"{b}.min_billing_s", dep.min_billing_s,
                         (offer or {}).get("min_billing_s") or 0.0)
            idle = ctx.v(f"{b}.idle_timeout_s", dep.idle_timeout_s)
            hourly_load = 0.0
            hourly_rps = 0.0
            for _req, rate_day, wt, batch, rps in classes:
                raw = _col(rate_day) * wt / 3600.0
                mix = (1.0 - _col(batch)) * raw + _col(batch) * raw.mean(axis=-1, keepdims=True)
                hourly_load = hourly_load + mix / _col(rps)
                hourly_rps = hourly_rps + mix
            hourly_load = np.atleast_2d(np.broadcast_to(hourly_load, (1, o.periods))
                                        if np.ndim(hourly_load) == 0 else hourly_load)
            hourly_rps = np.atleast_2d(np.broadcast_to(hourly_rps, (1, o.periods))
                                       if np.ndim(hourly_rps) == 0 else hourly_rps)
            per_period = sh.scale_to_zero_hours_rows(
                hourly_load, hourly_rps, replicas_cap=np.maximum(replicas, 1.0),
                idle_timeout_s=idle, startup_s=startup, min_billing_s=minb,
            )
            rep = np.asarray(replicas, dtype=float)
            inst = np.where(rep > 0, units / np.where(rep > 0, rep, 1.0), 1.0)
            hours = per_period * inst * days * 24.0 / o.periods
            if np.ndim(hours) == 1 and hours.size == 1:
                hours = hours[0]
        usd = hours * price_inst * factor
        if dep.committed and self.sc.planning.lens == "marginal":
            usd = np.zeros(np.shape(usd)) if np.ndim(usd) else 0.0
        return units, gpus_paid, usd, {"rental_usd": usd}

    def _onprem(self, ctx: _Ctx, o: _OptionSpec, replicas, mean_load):
        dep, server, acc_row = o.dep, o.server, o.acc_row
        b = f"onprem.{o.name}"
        gps = dep.gpus_per_server or int((server or {}).get("gpus_per_server") or 8)
        price = ctx.v(f"{b}.server_price_usd", dep.server_price_usd,
                      (server or {}).get("server_price_usd"))
        if price is None:
            raise PlannerError(
                f"onprem.{o.name}: no server price; set server (a servers.csv id) or "
                "server_price_usd"
            )
        if dep.servers is not None:
            units = float(dep.servers)
            gpus_paid = units * gps
        else:
            units, gpus_paid = sh.pack(replicas, dep.gpus_per_replica, gps)
        years = ctx.v(f"{b}.amortisation_years", dep.amortisation_years,
                      (server or {}).get("life_years") or det.DEFAULT_LIFE_YEARS)
        marginal = self.sc.planning.lens == "marginal" and dep.committed
        maint_share = ctx.v(f"{b}.maintenance_share_per_year", dep.maintenance_share_per_year,
                            (server or {}).get("maintenance_share_per_year") or 0.0)
        gp = np.asarray(gpus_paid, dtype=float)
        util = np.where(gp > 0, mean_load * dep.gpus_per_replica / np.where(gp > 0, gp, 1.0),
                        0.0)
        tdp = ctx.v(f"{b}.gpu_tdp_w", dep.gpu_tdp_w, acc_row.get("tdp_w"))
        base_w = ctx.v(f"{b}.server_base_w", dep.server_base_w,
                       (server or {}).get("server_base_w"))
        if tdp is None or base_w is None:
            missing = "gpu_tdp_w" if tdp is None else "server_base_w"
            raise PlannerError(
                f"onprem.{o.name}: the catalog has no {missing.replace('_', ' ')} for this "
                f"hardware; set {missing} in the scenario"
            )
        power = sh.server_power_w(base_w, gps, tdp, util,
                                  ctx.v(f"{b}.gpu_idle_power_share", dep.gpu_idle_power_share))
        parts = sh.onprem_costs_usd_per_month(
            units, price, years,
            residual_share=ctx.v(f"{b}.residual_share", dep.residual_share),
            cost_of_capital_per_year=ctx.v(f"{b}.cost_of_capital", dep.cost_of_capital),
            maintenance_share_per_year=maint_share, power_w=power,
            pue=ctx.v(f"{b}.pue", dep.pue),
            usd_per_kwh=ctx.v(f"{b}.electricity_usd_per_kwh", dep.electricity_usd_per_kwh),
            hours_per_month=self.hpm,
            facilities_usd_per_server_year=ctx.v(f"{b}.facilities_usd_per_server_year",
                                                 dep.facilities_usd_per_server_year),
            ops_usd_per_year=ctx.v(f"{b}.ops_usd_per_year", dep.ops_usd_per_year),
            implementation_usd=ctx.v(f"{b}.implementation_usd", dep.implementation_usd),
            horizon_months=self.horizon, include_capex=not marginal,
        )
        total = 0.0
        for v in parts.values():
            total = total + v
        extra = {f"onprem_{k}_usd": v for k, v in parts.items()}
        pue = ctx.v(f"{b}.pue", dep.pue)
        kwh = ctx.v(f"{b}.electricity_usd_per_kwh", dep.electricity_usd_per_kwh)
        idle_w = sh.server_power_w(base_w, gps, tdp, 0.0,
                                   ctx.v(f"{b}.gpu_idle_power_share", dep.gpu_idle_power_share))
        extra.update({
            "server_price_usd": price, "life_years": years,
            "residual_share": ctx.v(f"{b}.residual_share", dep.residual_share),
            "maintenance_share_per_year": maint_share,
            "facilities_usd_per_server_year": ctx.v(f"{b}.facilities_usd_per_server_year",
                                                    dep.facilities_usd_per_server_year),
            "idle_server_energy_usd": sh.energy_usd_per_month(idle_w, 1.0, pue, kwh, self.hpm),
            "implementation_once_usd": ctx.v(f"{b}.implementation_usd", dep.implementation_usd),
            "include_capex": not marginal,
        })
        return units, gpus_paid, total, extra

    # -- evaluation ------------------------------------------------------------------------
    def _evaluate(self, values: Mapping[str, Any], n: int, volume_scale: Any,
                  record: set | None = None, options: Sequence[str] | None = None
                  ) -> dict[str, dict[str, Any]]:
        ctx = _Ctx(self, values, n, volume_scale, record)
        out = {}
        # a sample whose lengths leave a replica no capacity costs inf (p_infeasible)
        with np.errstate(divide="ignore", invalid="ignore"):
            for o in self.options:
                if options is not None and o.name not in options:
                    continue
                out[o.name] = self._api(ctx, o) if o.kind == "api" else self._selfhosted(ctx, o)
        return out

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
            option -> {monthly, once, tokens, out_tokens, rpm, ...}: (n,) float arrays.
        """
        values = dict(values or {})
        if n is None:
            n = max((np.size(v) for v in values.values()), default=1)
        raw = self._evaluate(values, int(n), volume_scale, None, options)
        keys = ("monthly", "once", "tokens", "out_tokens", "rpm")
        out = {}
        for name, d in raw.items():
            sel = d if parts else {k: d[k] for k in keys}
            out[name] = {k: (_full(v, int(n)) if not isinstance(v, bool) else v)
                         for k, v in sel.items()}
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

    def comparable(self) -> list[str]:
        """Options that serve every workload class (those compared for 'cheapest')."""
        allc = tuple(self.sc.workload)
        full = [o.name for o in self.options if set(o.served) == set(allc) and o.served]
        if full:
            return full
        sets: dict[tuple, list[str]] = {}
        for o in self.options:
            if o.served:
                sets.setdefault(tuple(sorted(o.served)), []).append(o.name)
        return max(sets.values(), key=len) if sets else []

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


def _perf_params(cls, perf: Mapping[str, float]):
    if not perf:
        return None
    return cls.from_mapping(perf) if hasattr(cls, "from_mapping") else cls(**perf)


def _col(x: Any) -> Any:
    a = np.asarray(x, dtype=float)
    return a[:, None] if a.ndim == 1 else a


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
