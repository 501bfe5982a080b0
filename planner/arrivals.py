"""Synthetic request streams: arrival times and request lengths.

Arrivals are a non-homogeneous Poisson process (NHPP) with a piecewise-constant hourly rate,
optionally made bursty:

* :class:`GammaRenewal` -- a renewal process with Gamma inter-arrival times of coefficient
  of variation ``cv`` (``cv = 1`` is Poisson), run in *operational time*
  ``Lambda(t) = int_0^t lambda(u) du`` and mapped back with ``t = Lambda^-1(tau)``
  (time-change theorem; Cinlar, "Introduction to Stochastic Processes", 1975, ch. 4), so the
  hourly profile is kept and the gaps have the requested CV within each hour;
* :class:`MMPP2` -- a two-state Markov-modulated Poisson process: the rate is multiplied by
  ``high_factor`` in the high state and by a low factor chosen so the long-run mean is
  unchanged; sojourn times are exponential (Fischer & Meier-Hellstern, "The MMPP cookbook",
  Performance Evaluation 18, 1993).

Everything is vectorised: Poisson counts per constant-rate piece, then uniform times within
each piece (the order statistics property of the Poisson process). Randomness only through
an explicit :class:`numpy.random.Generator`.

Request lengths come from any object with ``sample(rng, n)`` (the :mod:`planner.distributions`
models qualify) or from the small samplers here: :class:`LognormalLength` (median and p90),
:class:`EmpiricalLength`, :class:`MixtureLength`, :class:`FixedLength`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

import numpy as np

from planner.errors import PlannerError
from planner.requests import RequestTable
from planner.workload import diurnal_weights

__all__ = [
    "ArrivalClass",
    "EmpiricalLength",
    "FixedLength",
    "GammaRenewal",
    "LengthSampler",
    "LognormalLength",
    "MMPP2",
    "MixtureLength",
    "generate_requests",
    "hourly_rates",
    "poisson_arrivals",
]


@lru_cache(maxsize=1)
def _z90() -> float:
    """The standard normal's 90th percentile. scipy.special is imported on first use only:
    generating requests (each simulation worker process) does not need it otherwise."""
    from scipy import special

    return float(special.ndtri(0.9))


_WEEKEND = (5, 6)  # Saturday, Sunday with Monday = 0


# ---------------------------------------------------------------------- rates
def hourly_rates(
    requests_per_day: float,
    weights: Sequence[float] | np.ndarray | str | None,
    hours: int,
    *,
    weekend_factor: float = 1.0,
    start_weekday: int = 0,
) -> np.ndarray:
    """Expected requests in each hour of the period.

    Parameters
    ----------
    requests_per_day : float
        Requests on a weekday (the day's volume before ``weekend_factor``).
    weights : sequence of 24 or 168 floats, profile name, or None
        Diurnal (24) or weekly (168) shape; normalised to sum to 1. A name is looked up in
        :func:`planner.workload.diurnal_weights`. ``None`` = flat.
    hours : int
        Length of the period in hours.
    weekend_factor : float
        Multiplies the rates of Saturdays and Sundays.
    start_weekday : int
        Weekday of hour 0 (Monday = 0).

    Returns
    -------
    ndarray of shape (hours,)
        ``requests_per_day x w[h mod 24]`` (24 weights) or ``7 x requests_per_day x
        w[h mod 168]`` (168 weights), times the weekend factor on weekend days.
    """
    if not (requests_per_day >= 0 and math.isfinite(requests_per_day)):
        raise PlannerError(f"requests_per_day must be a finite number >= 0, got {requests_per_day}")
    if hours < 1 or int(hours) != hours:
        raise PlannerError(f"hours must be a whole number >= 1, got {hours}")
    if not weekend_factor >= 0:
        raise PlannerError(f"weekend_factor must be >= 0, got {weekend_factor}")
    if weights is None:
        w = np.full(24, 1.0 / 24)
    elif isinstance(weights, str):
        try:
            w = diurnal_weights(weights)
        except (KeyError, ValueError) as exc:
            raise PlannerError(f"unknown diurnal profile '{weights}'") from exc
    else:
        w = np.asarray(weights, dtype=float)
        if w.ndim != 1 or w.size not in (24, 168) or np.any(w < 0) or w.sum() <= 0:
            raise PlannerError(
                "diurnal weights: expected 24 or 168 non-negative numbers, not all zero"
            )
        w = w / w.sum()
    h = np.arange(int(hours))
    scale = requests_per_day * (7.0 if w.size == 168 else 1.0)
    rates = scale * w[h % w.size]
    if weekend_factor != 1.0:
        day = (start_weekday + h // 24) % 7
        rates = np.where(np.isin(day, _WEEKEND), rates * weekend_factor, rates)
    return rates


# ---------------------------------------------------------------------- burstiness
@dataclass(frozen=True)
class GammaRenewal:
    """Gamma renewal arrivals with coefficient of variation ``cv`` of the gaps (1 = Poisson)."""

    cv: float

    def __post_init__(self) -> None:
        if not (self.cv > 0 and math.isfinite(self.cv)):
            raise PlannerError(f"GammaRenewal.cv must be a finite number > 0, got {self.cv}")


@dataclass(frozen=True)
class MMPP2:
    """Two-state Markov-modulated Poisson process.

    Parameters
    ----------
    high_factor : float
        Rate multiplier in the high (burst) state, > 1.
    mean_high_s, mean_low_s : float
        Mean sojourn times in the high and low states (exponential).

    The low-state factor is ``(1 - p high_factor) / (1 - p)`` with
    ``p = mean_high_s / (mean_high_s + mean_low_s)``, so the mean rate is unchanged; it
    must be >= 0, i.e. ``p high_factor <= 1``.
    """

    high_factor: float
    mean_high_s: float
    mean_low_s: float

    def __post_init__(self) -> None:
        if not self.high_factor > 1:
            raise PlannerError(f"MMPP2.high_factor must be > 1, got {self.high_factor}")
        if not (self.mean_high_s > 0 and self.mean_low_s > 0):
            raise PlannerError("MMPP2.mean_high_s and mean_low_s must be > 0")
        if self.high_share * self.high_factor > 1 + 1e-12:
            raise PlannerError(
                "MMPP2: high_factor x share of time in the high state must be <= 1 "
                f"(got {self.high_factor} x {self.high_share:.3g})"
            )

    @property
    def high_share(self) -> float:
        """Long-run share of time in the high state."""
        return self.mean_high_s / (self.mean_high_s + self.mean_low_s)

    @property
    def low_factor(self) -> float:
        """Rate multiplier in the low state."""
        p = self.high_share
        return max((1.0 - p * self.high_factor) / (1.0 - p), 0.0)


def _pieces_poisson(
    edges: np.ndarray, rates_per_s: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """NHPP with constant rate on each piece ``[edges[j], edges[j+1])``: sorted times."""
    widths = np.diff(edges)
    counts = rng.poisson(np.maximum(rates_per_s, 0.0) * widths)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0)
    piece = np.repeat(np.arange(widths.size), counts)
    t = edges[piece] + rng.random(total) * widths[piece]
    t.sort()
    return t


def poisson_arrivals(
    rates_per_hour: Sequence[float] | np.ndarray,
    rng: np.random.Generator,
    *,
    burstiness: GammaRenewal | MMPP2 | None = None,
    start_s: float = 0.0,
) -> np.ndarray:
    """Arrival times (seconds, sorted) for hourly expected counts ``rates_per_hour``.

    Hour ``h`` covers ``[start_s + 3600 h, start_s + 3600 (h + 1))``.
    """
    rates = np.asarray(rates_per_hour, dtype=float)
    if rates.ndim != 1 or rates.size == 0 or np.any(rates < 0) or not np.all(np.isfinite(rates)):
        raise PlannerError("rates_per_hour must be a non-empty 1-D array of finite numbers >= 0")
    hours = rates.size
    edges = start_s + 3600.0 * np.arange(hours + 1)
    lam = rates / 3600.0
    if burstiness is None or (isinstance(burstiness, GammaRenewal) and burstiness.cv == 1.0):
        return _pieces_poisson(edges, lam, rng)
    if isinstance(burstiness, GammaRenewal):
        cum = np.concatenate([[0.0], np.cumsum(rates)])  # operational time at the edges
        total = cum[-1]
        if total <= 0:
            return np.zeros(0)
        k = 1.0 / burstiness.cv**2
        n = int(total + 10.0 * math.sqrt(total) * max(burstiness.cv, 1.0) + 50)
        tau = np.cumsum(rng.gamma(k, 1.0 / k, n))
        while tau[-1] < total:
            more = np.cumsum(rng.gamma(k, 1.0 / k, n)) + tau[-1]
            tau = np.concatenate([tau, more])
        tau = tau[tau < total]
        j = np.searchsorted(cum, tau, side="right") - 1
        j = np.clip(j, 0, hours - 1)
        return edges[j] + (tau - cum[j]) / lam[j]
    if isinstance(burstiness, MMPP2):
        span = 3600.0 * hours
        mean_cycle = burstiness.mean_high_s + burstiness.mean_low_s
        n = int(2 * span / mean_cycle + 20)
        start_high = rng.random() < burstiness.high_share
        sw: list[np.ndarray] = []
        t_end = 0.0
        while t_end < span:
            hi = rng.exponential(burstiness.mean_high_s, n)
            lo = rng.exponential(burstiness.mean_low_s, n)
            seq = np.column_stack([hi, lo] if start_high else [lo, hi]).ravel()
            sw.append(np.cumsum(seq) + t_end)
            t_end = sw[-1][-1]
        switches = np.concatenate(sw)
        switches = switches[switches < span]
        state_high = (np.arange(switches.size + 1) % 2 == 0) == start_high
        bounds = np.unique(np.concatenate([np.arange(hours + 1) * 3600.0, switches]))
        mid = 0.5 * (bounds[:-1] + bounds[1:])
        seg_state = state_high[np.searchsorted(switches, mid, side="right")]
        factor = np.where(seg_state, burstiness.high_factor, burstiness.low_factor)
        hour = np.minimum((mid // 3600.0).astype(np.int64), hours - 1)
        return _pieces_poisson(start_s + bounds, lam[hour] * factor, rng)
    raise PlannerError(f"unknown burstiness model {type(burstiness).__name__}")


# ---------------------------------------------------------------------- lengths
@runtime_checkable
class LengthSampler(Protocol):
    """Anything that draws ``n`` token counts: ``sample(rng, n) -> ndarray``."""

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray: ...


def _to_tokens(x: np.ndarray, lo: int, hi: int | None) -> np.ndarray:
    t = np.rint(np.asarray(x, dtype=float))
    t = np.maximum(t, lo)
    if hi is not None:
        t = np.minimum(t, hi)
    return t.astype(np.int64)


@dataclass(frozen=True)
class LognormalLength:
    """Lognormal token counts by median and 90th percentile, rounded and clipped.

    ``mu = ln(median)``, ``sigma = ln(p90 / median) / z90`` with ``z90 = Phi^-1(0.9)``.
    """

    median: float
    p90: float
    min_tokens: int = 1
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if not (self.median > 0 and self.p90 > self.median):
            raise PlannerError(
                f"LognormalLength: need 0 < median < p90, got median={self.median}, p90={self.p90}"
            )

    @property
    def sigma(self) -> float:
        return math.log(self.p90 / self.median) / _z90()

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        x = np.exp(math.log(self.median) + self.sigma * rng.standard_normal(n))
        return _to_tokens(x, self.min_tokens, self.max_tokens)


@dataclass(frozen=True, eq=False)
class EmpiricalLength:
    """Resample observed token counts (with replacement)."""

    values: np.ndarray

    def __post_init__(self) -> None:
        v = np.asarray(self.values)
        if v.ndim != 1 or v.size == 0 or np.any(v < 0):
            raise PlannerError("EmpiricalLength.values must be a non-empty array of counts >= 0")
        object.__setattr__(self, "values", v.astype(np.int64))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.values[rng.integers(0, self.values.size, n)]


@dataclass(frozen=True)
class FixedLength:
    """Always ``tokens``."""

    tokens: int

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, int(self.tokens), dtype=np.int64)


@dataclass(frozen=True)
class MixtureLength:
    """Mixture: each request draws its component with probabilities ``weights``."""

    components: tuple[Any, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=float)
        if len(self.components) == 0 or w.shape != (len(self.components),) or np.any(w < 0):
            raise PlannerError("MixtureLength: one non-negative weight per component")
        if w.sum() <= 0:
            raise PlannerError("MixtureLength: weights must not all be zero")
        object.__setattr__(self, "components", tuple(self.components))
        object.__setattr__(self, "weights", tuple(float(x) for x in w / w.sum()))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        which = rng.choice(len(self.components), size=n, p=np.asarray(self.weights))
        out = np.empty(n, dtype=np.int64)
        for k, comp in enumerate(self.components):
            m = which == k
            if m.any():
                out[m] = _to_tokens(comp.sample(rng, int(m.sum())), 0, None)
        return out


# ---------------------------------------------------------------------- classes
@dataclass(frozen=True)
class ArrivalClass:
    """One workload class to generate.

    Parameters
    ----------
    name : str
    requests_per_day : float
        Weekday volume (see :func:`hourly_rates`); ignored when ``rates_per_hour`` is given.
    input_tokens, output_tokens : LengthSampler
        Per-request prompt (without the fixed context) and output lengths.
    profile : 24/168 weights, profile name or None
        Diurnal shape (``None`` = flat).
    rates_per_hour : sequence of float, optional
        Explicit expected requests per hour (overrides volume and profile).
    weekend_factor : float
    burstiness : GammaRenewal or MMPP2, optional
    fixed_context_tokens : int
        Tokens added to every prompt (system prompt, documents).
    cached_prefix_share : float
        Share of the fixed context served from a prefix cache: ``cached_input_tokens =
        round(share x fixed_context_tokens)``.
    """

    name: str
    requests_per_day: float
    input_tokens: Any
    output_tokens: Any
    profile: Any = None
    rates_per_hour: tuple[float, ...] | None = None
    weekend_factor: float = 1.0
    burstiness: GammaRenewal | MMPP2 | None = None
    fixed_context_tokens: int = 0
    cached_prefix_share: float = 0.0

    def __post_init__(self) -> None:
        if not self.name:
            raise PlannerError("ArrivalClass.name must be a non-empty string")
        for k in ("input_tokens", "output_tokens"):
            if not callable(getattr(getattr(self, k), "sample", None)):
                raise PlannerError(f"ArrivalClass '{self.name}'.{k} needs a sample(rng, n) method")
        if self.fixed_context_tokens < 0:
            raise PlannerError(f"ArrivalClass '{self.name}'.fixed_context_tokens must be >= 0")
        if not (0.0 <= self.cached_prefix_share <= 1.0):
            raise PlannerError(f"ArrivalClass '{self.name}'.cached_prefix_share must be in [0, 1]")

    def rates(self, hours: int, *, start_weekday: int = 0) -> np.ndarray:
        """Expected requests in each hour."""
        if self.rates_per_hour is not None:
            r = np.asarray(self.rates_per_hour, dtype=float)
            return np.resize(r, hours)
        return hourly_rates(
            self.requests_per_day,
            self.profile,
            hours,
            weekend_factor=self.weekend_factor,
            start_weekday=start_weekday,
        )

    def generate(
        self, hours: int, rng: np.random.Generator, *, start_weekday: int = 0
    ) -> RequestTable:
        """Requests of this class over ``hours`` hours."""
        r_arr, r_in, r_out = rng.spawn(3)
        t = poisson_arrivals(
            self.rates(hours, start_weekday=start_weekday), r_arr, burstiness=self.burstiness
        )
        n = t.size
        inp = _to_tokens(self.input_tokens.sample(r_in, n), 0, None) + int(
            self.fixed_context_tokens
        )
        out = _to_tokens(self.output_tokens.sample(r_out, n), 1, None)
        cached = np.full(
            n, int(round(self.cached_prefix_share * self.fixed_context_tokens)), dtype=np.int64
        )
        return RequestTable.from_arrays(t, inp, out, self.name, cached_input_tokens=cached)


def generate_requests(
    classes: Sequence[ArrivalClass],
    hours: int,
    rng: np.random.Generator,
    *,
    start_weekday: int = 0,
) -> RequestTable:
    """Requests of all ``classes`` over ``hours`` hours, merged by arrival time.

    Each class draws from its own child generator (``rng.spawn``), so its stream does not
    depend on the other classes' volumes.
    """
    if not classes:
        raise PlannerError("generate_requests: give at least one ArrivalClass")
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise PlannerError(f"generate_requests: class names must be unique, got {names}")
    children = rng.spawn(len(classes))
    return RequestTable.concat(
        [
            c.generate(hours, g, start_weekday=start_weekday)
            for c, g in zip(classes, children, strict=True)
        ]
    )
