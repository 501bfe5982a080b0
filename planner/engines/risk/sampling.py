"""Sampling the uncertain inputs: the sampler, its correlations and the seeding of chunks.

Any numeric field of a scenario may hold a distribution (:mod:`planner.distributions`); the
inputs, their key paths and the correlation table live in :mod:`planner.uncertain`. This module
draws them together, in chunks, reproducibly.

Randomness and reproducibility
------------------------------
Samples are drawn in fixed chunks of :data:`CHUNK_SIZE`; chunk ``c`` uses the generator of
child ``c`` of ``SeedSequence(seed)`` (:func:`chunk_generator`, as ``SeedSequence(seed).spawn``
makes it), so a result depends only on ``seed`` and ``n``, never on threads, Dask workers or
when a convergence check stopped. Within a chunk (:class:`Sampler`): inputs in no correlation
and not normal/lognormal are drawn by :func:`planner.distributions.sample_many` (``ppf`` of one
uniform block); independent untruncated normals and lognormals from one standard-normal block;
each group of correlated inputs by a Gaussian copula whose latent normals come from
:func:`planner.distributions.correlated_normals` (the function
:func:`planner.distributions.gaussian_copula_uniforms` draws with too).

Correlations
------------
A correlation (:class:`planner.config.Correlation`) names two inputs by key path and a
Spearman rank correlation ``rho``; :func:`build_sampler` checks the key paths, groups the
correlated inputs and factors each group's copula matrix (PlannerError, naming the pairs, when
they cannot hold together)::

    [[correlation]]
    a = "workload.chat.requests_per_day"
    b = "workload.chat.context.tokens"
    rho = 0.5

Correlations naming ``trends.*`` or ``scenario.discount_rate_per_year`` inputs are left to the
multi-year engine (:mod:`planner.engines.risk.multiyear`) when those inputs are not sampled.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from planner.config import Correlation
from planner.distributions import (
    DistributionBase,
    copula_factor,
    correlated_normals,
    from_normals,
    is_normal_family,
    sample_many,
    spearman_to_pearson,
)
from planner.errors import PlannerError

__all__ = [
    "CHUNK_SIZE",
    "Sampler",
    "build_sampler",
    "chunk_generator",
    "chunk_sizes",
    "root_seed",
]

#: Samples per chunk: the unit of seeding, threading and Dask tasks.
CHUNK_SIZE = 32_768
#: Inputs only the multi-year engine samples (their correlations are skipped here).
_MULTIYEAR_ONLY = ("trends.", "scenario.discount_rate_per_year")


@dataclass(frozen=True)
class Sampler:
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
       use ``z`` directly, beta and PERT their quantile table in ``z`` at ``z`` (no ``Phi``),
       the others ``ppf(clip(Phi(z)))`` (:func:`planner.distributions.from_normals`).

    Beta, PERT and truncated normal inputs read ``ppf`` from a table uniform in ``u`` for
    ~98% of draws (no inverse normal CDF; :func:`planner.distributions._beta_ppf`).
    """

    dists: dict[str, DistributionBase]
    other: tuple[str, ...]
    normal: tuple[str, ...]
    groups: tuple[tuple[tuple[str, ...], np.ndarray], ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.dists)

    def draw(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """``n`` samples of every input from ``rng``, in :attr:`names` order."""
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


def build_sampler(dists: dict[str, DistributionBase], known: Mapping[str, Any],
                  correlations: list[Correlation]) -> Sampler:
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
    return Sampler(dict(dists), other, normal, tuple(groups))


def _factor(pear: np.ndarray, sub: Mapping[tuple[str, str], float]) -> np.ndarray:
    """L with L L^T = pear (:func:`planner.distributions.copula_factor`); PlannerError if the
    matrix is not positive semi-definite, naming the correlations involved."""
    try:
        return copula_factor(pear)
    except PlannerError as exc:
        listed = "; ".join(f"({a}, {b}) rho = {r:g}" for (a, b), r in sub.items())
        raise PlannerError(f"correlation: {listed}: {str(exc).removeprefix('corr: ')}") from None


def root_seed(seed: Any) -> np.random.SeedSequence:
    """The root ``SeedSequence`` of a run: ``seed`` itself, or ``SeedSequence(seed)`` for a
    non-negative integer or None (fresh entropy); PlannerError otherwise."""
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
