"""Uncertainty distributions for scenario inputs, and correlated sampling.

Any numeric field of a scenario may hold a distribution instead of a number::

    requests_per_day = {dist = "lognormal", median = 50000, p90 = 90000}

:data:`Distribution` is a pydantic v2 discriminated union (discriminator ``dist``) of frozen
models. Every member offers ``median()``, ``mean()``, ``support()``, a vectorised inverse CDF
``ppf(u)``, ``quantile(q)`` and ``sample(rng, n)``. ``sample`` is ``ppf`` applied to uniform
draws, so a Gaussian copula can feed correlated uniforms through the same ``ppf``
(:func:`sample_many`).

Randomness only ever comes from an explicit :class:`numpy.random.Generator`; nothing here
touches a global random state.

Parameter errors raised while validating a model are ``ValueError`` (pydantic wraps them in a
``ValidationError`` that carries the key path); errors in calls (bad ``u``, bad correlation
matrix) are :class:`planner.errors.PlannerError`.
"""

from __future__ import annotations

import functools
import importlib
import math
import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, model_validator

from planner.errors import PlannerError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "BetaDist",
    "ChoiceDist",
    "Distribution",
    "DistributionBase",
    "EmpiricalDist",
    "FixedDist",
    "LognormalDist",
    "NormalDist",
    "PertDist",
    "TriangularDist",
    "UniformDist",
    "copula_factor",
    "copula_uniforms",
    "correlated_normals",
    "from_normals",
    "gaussian_copula_uniforms",
    "is_distribution",
    "is_normal_family",
    "mean_of",
    "median_of",
    "sample_many",
    "spawn_generators",
    "spearman_to_pearson",
]


class _LazyModule:
    """A module imported on first attribute access (keeps ``import planner.distributions``,
    and so every scenario load, free of scipy's ~0.7 s import; ``planner --help``,
    ``validate`` and ``cost`` never need it).

    ``bind`` names the global of this module that holds the proxy: the first access puts the
    real module there, so later ``np.asarray`` calls cost a plain global look-up."""

    __slots__ = ("_name", "_module", "_bind")

    def __init__(self, name: str, bind: str | None = None) -> None:
        self._name = name
        self._module = None
        self._bind = bind

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
            if self._bind is not None:
                globals()[self._bind] = module
        return getattr(module, attr)


#: numpy, imported on first use: checking a scenario (``planner validate``, the scenario
#: models' validators: supports, ranges) needs none of it (~0.1 s of start-up)
np = _LazyModule("numpy", bind="np")  # noqa: F811 (the TYPE_CHECKING import is for annotations)
special = _LazyModule("scipy.special")
stats = _LazyModule("scipy.stats")

#: z such that Phi(z) = 0.9, i.e. the 90th percentile of the standard normal:
#: ``float(scipy.special.ndtri(0.9))``, written out so that importing this module does not
#: import scipy (a test checks the two agree bit for bit).
Z90 = 1.2815515655446004

#: Smallest uniform draw used by ``sample``: ``rng.random`` can return exactly 0.0 (probability
#: 2**-53 per draw), which would map to -inf for unbounded supports; it is raised to 2**-54.
#: All other draws are multiples of 2**-53 and are left unchanged.
_U_MIN = 2.0**-54
#: Largest double below 1; copula uniforms are clipped to [_U_MIN, _U_MAX].
_U_MAX = 1.0 - 2.0**-53


def _uniform_draws(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` draws of U(0, 1) on the open interval: ``max(rng.random(n), 2**-54)``."""
    if not isinstance(rng, np.random.Generator):
        raise PlannerError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise PlannerError(f"n: expected a non-negative integer sample count, got {n!r}")
    u = rng.random(int(n))
    np.maximum(u, _U_MIN, out=u)
    return u


def _as_unit(u: Any, name: str = "u") -> np.ndarray:
    """``u`` as a float array, checked to lie in [0, 1] (NaN rejected)."""
    arr = np.asarray(u, dtype=float)
    if arr.size and not ((arr >= 0.0) & (arr <= 1.0)).all():
        bad = arr[~((arr >= 0.0) & (arr <= 1.0))].ravel()[0]
        raise PlannerError(f"{name}: expected probabilities in [0, 1], got {bad!r}")
    return arr


# --------------------------------------------------------------------------------------------
# base class


class DistributionBase(BaseModel):
    """Common interface of every distribution model.

    Subclasses implement ``_ppf`` (vectorised inverse CDF on a 1-D float array already checked
    to lie in [0, 1]), ``median``, ``mean`` and ``support``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)

    def median(self) -> float:
        """Median, computed analytically (not by sampling)."""
        return float(self._ppf(np.array([0.5]))[0])

    def mean(self) -> float:
        """Mean of the distribution that ``sample`` draws from."""
        raise NotImplementedError

    def support(self) -> tuple[float, float]:
        """``(low, high)``: smallest and largest possible values (may be infinite)."""
        raise NotImplementedError

    def _ppf(self, u: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def ppf(self, u: Any) -> np.ndarray:
        """Inverse CDF ``F^-1(u) = inf{x : F(x) >= u}``, vectorised.

        Parameters
        ----------
        u : array_like
            Probabilities in [0, 1]; any shape.

        Returns
        -------
        numpy.ndarray
            Float array of the same shape as ``u``.
        """
        arr = _as_unit(u)
        flat = np.ascontiguousarray(arr).reshape(-1)
        return np.asarray(self._ppf(flat), dtype=float).reshape(arr.shape)

    def quantile(self, q: Any) -> float | np.ndarray:
        """``ppf(q)``; a float for a scalar ``q``, else an array."""
        out = self.ppf(_as_unit(q, "q"))
        return float(out) if out.ndim == 0 else out

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` independent draws: ``ppf(u)`` with ``u = max(rng.random(n), 2**-54)``."""
        return np.asarray(self._ppf(_uniform_draws(rng, n)), dtype=float)


def _range_check(dist: str, low: float, high: float) -> None:
    if not low < high:
        raise ValueError(
            f"{dist}: low ({low:g}) must be less than high ({high:g}); "
            'for a constant use {dist = "fixed", value = ...}'
        )


# --------------------------------------------------------------------------------------------
# members


class FixedDist(DistributionBase):
    """A constant: every draw equals ``value``."""

    dist: Literal["fixed"] = "fixed"
    """Distribution family: fixed."""
    value: FiniteFloat
    """The constant value."""

    def median(self) -> float:
        return float(self.value)

    def mean(self) -> float:
        return float(self.value)

    def support(self) -> tuple[float, float]:
        return (float(self.value), float(self.value))

    def _ppf(self, u: np.ndarray) -> np.ndarray:
        return np.full(u.shape, float(self.value))


class UniformDist(DistributionBase):
    """Uniform on [low, high]: ``ppf(u) = low + u (high - low)``."""

    dist: Literal["uniform"] = "uniform"
    """Distribution family: uniform."""
    low: FiniteFloat
    """Lower end."""
    high: FiniteFloat
    """Upper end."""

    @model_validator(mode="after")
    def _check(self) -> UniformDist:
        _range_check("uniform", self.low, self.high)
        return self

    def median(self) -> float:
        return 0.5 * (self.low + self.high)

    def mean(self) -> float:
        return 0.5 * (self.low + self.high)

    def support(self) -> tuple[float, float]:
        return (float(self.low), float(self.high))

    def _ppf(self, u: np.ndarray) -> np.ndarray:
        x = self.low + u * (self.high - self.low)
        return np.clip(x, self.low, self.high, out=x)  # rounding guard


class TriangularDist(DistributionBase):
    """Triangular on [low, high] with peak at ``mode``.

    Inverse CDF, with ``c = (mode - low) / (high - low)``::

        u <  c: low  + sqrt(u (high - low) (mode - low))
        u >= c: high - sqrt((1 - u) (high - low) (high - mode))

    Mean ``(low + mode + high) / 3``.
    """

    dist: Literal["triangular"] = "triangular"
    """Distribution family: triangular."""
    low: FiniteFloat
    """Lower end."""
    mode: FiniteFloat
    """Most likely value."""
    high: FiniteFloat
    """Upper end."""

    @model_validator(mode="after")
    def _check(self) -> TriangularDist:
        _range_check("triangular", self.low, self.high)
        if not self.low <= self.mode <= self.high:
            raise ValueError(
                f"triangular: mode ({self.mode:g}) must lie in [low, high] = "
                f"[{self.low:g}, {self.high:g}]"
            )
        return self

    def mean(self) -> float:
        return (self.low + self.mode + self.high) / 3.0

    def support(self) -> tuple[float, float]:
        return (float(self.low), float(self.high))

    def _ppf(self, u: np.ndarray) -> np.ndarray:
        lo, m, hi = self.low, self.mode, self.high
        width = hi - lo
        c = (m - lo) / width
        left = lo + np.sqrt(u * (width * (m - lo)))
        right = hi - np.sqrt((1.0 - u) * (width * (hi - m)))
        x = np.where(u < c, left, right)
        return np.clip(x, lo, hi, out=x)  # rounding guard


class NormalDist(DistributionBase):
    """Normal with ``mean`` and ``sd``, optionally truncated to [low, high].

    Truncation is explicit, never silent clipping: with ``low`` and/or ``high`` given the
    distribution is the normal *conditioned* on [low, high] (``scipy.stats.truncnorm``), with
    no probability mass piled up at the bounds. Without them the support is the whole real line;
    nothing clips negative draws.

    ``ppf`` of the truncated normal (standardised bounds ``a``, ``b``)::

        x = mean + sd * Phi^-1(Phi(a) + u (Phi(b) - Phi(a)))

    evaluated on the lower-tail side (reflecting when ``a > 0``) so no precision is lost
    (:func:`_truncnorm_std_ppf`); ~98% of draws are read from a table of that formula uniform
    in ``u``, within 1e-10 sd of it (:func:`_truncnorm_u_table`: no inverse normal CDF), the
    tails from the formula itself. Delegated to ``scipy.stats.truncnorm.ppf`` (exact but ~1 us
    per value) when the formula would lose precision: intervals beyond ~37 sd, where Phi
    underflows, or narrower than ~1e-8 of the tail mass. The TOML key ``mean`` is stored as
    ``mean_value`` (``mean()`` is a method).
    """

    dist: Literal["normal"] = "normal"
    """Distribution family: normal."""
    mean_value: FiniteFloat = Field(alias="mean")
    """Mean (TOML key ``mean``)."""
    sd: FiniteFloat
    """Standard deviation."""
    low: FiniteFloat | None = None
    """Truncate below this value (optional)."""
    high: FiniteFloat | None = None
    """Truncate above this value (optional)."""

    @model_validator(mode="after")
    def _check(self) -> NormalDist:
        if not self.sd > 0:
            raise ValueError(
                f"normal: sd must be > 0, got {self.sd:g}"
                + ('; for a constant use {dist = "fixed", value = ...}' if self.sd == 0 else "")
            )
        if self.low is not None and self.high is not None:
            _range_check("normal", self.low, self.high)
        return self

    @property
    def truncated(self) -> bool:
        """True when ``low`` or ``high`` is given."""
        return self.low is not None or self.high is not None

    def _ab(self) -> tuple[float, float]:
        a = -math.inf if self.low is None else (self.low - self.mean_value) / self.sd
        b = math.inf if self.high is None else (self.high - self.mean_value) / self.sd
        return a, b

    def _frozen(self) -> Any:
        a, b = self._ab()
        return stats.truncnorm(a, b, loc=self.mean_value, scale=self.sd)

    def median(self) -> float:
        if not self.truncated:
            return float(self.mean_value)
        return float(self._ppf(np.array([0.5]))[0])

    def mean(self) -> float:
        """``mean + sd (phi(a) - phi(b)) / (Phi(b) - Phi(a))`` (Johnson, Kotz & Balakrishnan,
        *Continuous Univariate Distributions* vol. 1, 2nd ed., sec. 10.1), evaluated stably by
        :func:`_truncnorm_std_mean` (``scipy.stats.truncnorm.mean`` loses all precision beyond
        ~30 sd: for a = -70234, b = -70233 it returns a mean above ``high``).
        """
        if not self.truncated:
            return float(self.mean_value)
        a, b = self._ab()
        m = self.mean_value + self.sd * _truncnorm_std_mean(a, b)
        lo, hi = self.support()
        return min(max(m, lo), hi)

    def support(self) -> tuple[float, float]:
        lo = -math.inf if self.low is None else float(self.low)
        hi = math.inf if self.high is None else float(self.high)
        return (lo, hi)

    def _ppf(self, u: np.ndarray) -> np.ndarray:
        mu, sd = self.mean_value, self.sd
        if not self.truncated:
            return mu + sd * special.ndtri(u)
        a, b = self._ab()
        table = _truncnorm_u_table(a, b)
        if table is None:  # Phi underflow / cancellation
            x = np.asarray(self._frozen().ppf(u), dtype=float)
        elif table[0] > table[1]:
            x = mu + sd * _truncnorm_std_ppf(a, b, u)
        else:
            x = _u_table_eval(table, u, mu, sd, lambda v: mu + sd * _truncnorm_std_ppf(a, b, v))
        # rounding guard only (loc + scale * z can land an ulp outside): mass is not moved
        lo, hi = self.support()
        return np.clip(x, lo, hi, out=x)


def _truncnorm_std_ppf(a: float, b: float, u: np.ndarray) -> np.ndarray:
    """Quantile of the standard normal truncated to [a, b]:
    ``Phi^-1(Phi(a) + u (Phi(b) - Phi(a)))``, on the lower-tail side (reflected when
    ``a > 0``) so no precision is lost; only where :func:`_truncnorm_u_table` is not None."""
    flip = a > 0.0
    if flip:  # work in the lower half, where Phi keeps full relative precision
        a, b, v = -b, -a, 1.0 - u
    else:
        v = u
    pa, pb = float(special.ndtr(a)), float(special.ndtr(b))
    z = special.ndtri(pa + v * (pb - pa))
    if flip:
        z = -z
    return z


@functools.lru_cache(maxsize=128)
def _truncnorm_u_table(a: float, b: float) -> tuple[int, int, tuple[np.ndarray, ...]] | None:
    """Body table (:func:`_u_table`) of the quantile of the standard normal truncated to
    [a, b], within ``1e-10 min(1, b - a)`` of :func:`_truncnorm_std_ppf` at each cell's
    quarter points: no inverse normal CDF for the ~99% of draws it serves. Slopes are the
    exact ``dz/du = (Phi(b) - Phi(a)) / phi(z)``. None when the formula itself would lose
    precision (intervals beyond ~37 sd, where Phi underflows, or narrower than ~1e-8 of the
    tail mass): there ``scipy.stats.truncnorm.ppf`` is used."""
    lo, hi = (-b, -a) if a > 0.0 else (a, b)
    pa, pb = float(special.ndtr(lo)), float(special.ndtr(hi))
    mass = pb - pa
    if not (mass > 0.0 and mass > 1e-8 * pb):
        return None
    scale = mass * math.sqrt(2.0 * math.pi)
    return _u_table(
        lambda v: _truncnorm_std_ppf(a, b, v),
        lambda z, v: scale * np.exp(0.5 * z * z),
        _TABLE_TOL * min(1.0, b - a),
    )


_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _truncnorm_std_mean(a: float, b: float) -> float:
    """Mean of the standard normal truncated to [a, b], accurate in both far tails.

    ``(phi(a) - phi(b)) / (Phi(b) - Phi(a))`` with, after reflecting to ``a <= 0``,

    - ``b <= 0``: ``phi(b) / Phi(b) = sqrt(2/pi) / erfcx(-b / sqrt 2)`` and
      ``Phi(a) / Phi(b) = erfcx(-a/sqrt2) / erfcx(-b/sqrt2) exp(-(a - b)(a + b) / 2)``, so no
      exponential under- or overflows;
    - ``b > 0``: ``Phi(b) - Phi(a) = (erf(b/sqrt2) - erf(a/sqrt2)) / 2`` (no cancellation).

    Narrow intervals (``w max(1, |m|) < 1e-3``, width ``w``, midpoint ``m``), where
    ``1 - q`` cancels, use the expansion ``m - m w^2/12 + m (m^2 + 2) w^4 / 720``
    (Taylor series of ``exp(-x^2/2)`` about ``m``; next term O(w^6 m^5)).
    """
    if a > 0.0:
        return -_truncnorm_std_mean(-b, -a)
    width = b - a
    mid = 0.5 * (a + b)
    if width * max(1.0, abs(mid)) < 1e-3:
        w2 = width * width
        return mid - mid * w2 / 12.0 + mid * (mid * mid + 2.0) * w2 * w2 / 720.0
    if b <= 0.0:
        r_b = _SQRT_2_OVER_PI / float(special.erfcx(-b / _SQRT2))  # phi(b) / Phi(b)
        if math.isinf(a):
            return -r_b
        log_q = math.log(float(special.erfcx(-a / _SQRT2)) / float(special.erfcx(-b / _SQRT2)))
        log_q -= 0.5 * (a - b) * (a + b)  # q = Phi(a) / Phi(b)
        # (phi(a) - phi(b)) / (Phi(b) - Phi(a)) = r_b (phi(a)/phi(b) - 1) / (1 - q)
        return r_b * math.expm1(-0.5 * (a - b) * (a + b)) / -math.expm1(log_q)
    z = 0.5 * (float(special.erf(b / _SQRT2)) - float(special.erf(a / _SQRT2)))
    phi_a = 0.0 if math.isinf(a) else math.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    phi_b = 0.0 if math.isinf(b) else math.exp(-0.5 * b * b) / math.sqrt(2.0 * math.pi)
    return (phi_a - phi_b) / z


_LN_PARAM_SETS = (("median", "p90"), ("mu", "sigma"), ("median", "sigma"))


class LognormalDist(DistributionBase):
    """Lognormal: ``ln X ~ Normal(mu, sigma)``.

    Exactly one parametrisation:

    - ``median``, ``p90``: ``mu = ln(median)``, ``sigma = ln(p90 / median) / z90`` with
      ``z90 = Phi^-1(0.9) = 1.28155``;
    - ``mu``, ``sigma``: mean and sd of the underlying normal ``ln X`` (not of ``X``);
    - ``median``, ``sigma``.

    ``ppf(u) = exp(mu + sigma Phi^-1(u))``, median ``exp(mu)``, mean
    ``exp(mu + sigma^2 / 2)``. The TOML key ``median`` is stored as ``median_value``.
    """

    dist: Literal["lognormal"] = "lognormal"
    """Distribution family: lognormal."""
    median_value: FiniteFloat | None = Field(default=None, alias="median")
    """Median (TOML key ``median``; with ``p90``, or give ``mu`` and ``sigma``)."""
    p90: FiniteFloat | None = None
    """90th percentile."""
    mu: FiniteFloat | None = None
    """Mean of ln X."""
    sigma: FiniteFloat | None = None
    """Standard deviation of ln X."""

    @model_validator(mode="before")
    @classmethod
    def _ambiguous_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "mean" in data:
            raise ValueError(
                "lognormal: 'mean' is ambiguous; give median and p90, median and sigma, or mu "
                "and sigma (mu, sigma = mean and sd of ln X)"
            )
        return data

    @model_validator(mode="after")
    def _check(self) -> LognormalDist:
        given = tuple(
            k
            for k, v in (
                ("median", self.median_value),
                ("p90", self.p90),
                ("mu", self.mu),
                ("sigma", self.sigma),
            )
            if v is not None
        )
        if given not in _LN_PARAM_SETS:
            raise ValueError(
                "lognormal: give exactly one of (median, p90), (mu, sigma), (median, sigma); "
                f"got ({', '.join(given) or 'nothing'})"
            )
        if self.median_value is not None and not self.median_value > 0:
            raise ValueError(f"lognormal: median must be > 0, got {self.median_value:g}")
        if self.p90 is not None and not self.p90 > self.median_value:
            raise ValueError(
                f"lognormal: p90 ({self.p90:g}) must be greater than median ({self.median_value:g})"
            )
        if self.sigma is not None and not self.sigma > 0:
            raise ValueError(f"lognormal: sigma must be > 0, got {self.sigma:g}")
        return self

    def log_params(self) -> tuple[float, float]:
        """``(mu, sigma)`` of ``ln X``, whatever parametrisation was given."""
        if self.mu is not None:
            return float(self.mu), float(self.sigma)
        mu = math.log(self.median_value)
        if self.sigma is not None:
            return mu, float(self.sigma)
        return mu, (math.log(self.p90) - mu) / Z90

    def median(self) -> float:
        return math.exp(self.log_params()[0])

    def mean(self) -> float:
        mu, s = self.log_params()
        return math.exp(mu + 0.5 * s * s)

    def support(self) -> tuple[float, float]:
        return (0.0, math.inf)

    def _ppf(self, u: np.ndarray) -> np.ndarray:
        mu, s = self.log_params()
        return np.exp(mu + s * special.ndtri(u))


# --- beta quantile table (shared by beta and PERT) -------------------------------------------

_Z_MAX = 8.5  # table covers Phi^-1(u) in [-8.5, 8.5], i.e. u in [1e-17, 1 - 1e-17]
_TABLE_NODES = 2049
_TABLE_MAX_NODES = 65537
_TABLE_TOL = 1e-10  # max |interpolated - exact| at cell midpoints, in units of (high - low)


def _beta_quantile_exact(a: float, b: float, z: np.ndarray) -> np.ndarray:
    """Exact standard-beta quantile at ``u = Phi(z)``, with full precision in both tails.

    For ``z > 0`` uses ``1 - X ~ Beta(b, a)`` so that ``1 - x`` is computed directly.
    """
    lo = special.betaincinv(a, b, special.ndtr(np.minimum(z, 0.0)))
    hi = 1.0 - special.betaincinv(b, a, special.ndtr(-np.maximum(z, 0.0)))
    return np.where(z <= 0.0, lo, hi)


def _hermite_cells(a: float, b: float, n_nodes: int) -> tuple[np.ndarray, ...]:
    """Per-cell cubic coefficients of the quantile function of Beta(a, b) in z = Phi^-1(u).

    Nodes are exact quantiles (``scipy.special.betaincinv``); slopes are the exact derivative
    ``dx/dz = phi(z) / f(x)``, limited per cell by Fritsch & Carlson (1980, SIAM J. Numer.
    Anal. 17:238) so the interpolant is monotone.
    """
    z = np.linspace(-_Z_MAX, _Z_MAX, n_nodes)
    h = z[1] - z[0]
    lo = special.betaincinv(a, b, special.ndtr(np.minimum(z, 0.0)))  # x, lower half
    hi = special.betaincinv(b, a, special.ndtr(-np.maximum(z, 0.0)))  # 1 - x, upper half
    x = np.where(z <= 0.0, lo, 1.0 - hi)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        log_x = np.where(z <= 0.0, np.log(lo), np.log1p(-hi))
        log_1mx = np.where(z <= 0.0, np.log1p(-lo), np.log(hi))
        log_pdf = (a - 1.0) * log_x + (b - 1.0) * log_1mx - special.betaln(a, b)
        m = np.exp(-0.5 * z * z - 0.5 * math.log(2.0 * math.pi) - log_pdf)
    # where the exact slope is not usable (x at 0 or 1 after underflow), use the secant
    m[(x <= 0.0) | (x >= 1.0)] = np.nan
    return (z, *_hermite_coefficients(x, m, h))


@functools.lru_cache(maxsize=128)
def _beta_table(a: float, b: float) -> tuple[int, tuple[np.ndarray, ...]]:
    """Hermite table of the Beta(a, b) quantile, refined until the midpoint error < tol.

    Returns ``(n_nodes, (c0, c1, c2, c3))``; ``n_nodes = 0`` means interpolation could not
    reach the tolerance within 65537 nodes and ``ppf`` uses ``betaincinv`` directly.
    """
    n = _TABLE_NODES
    while n <= _TABLE_MAX_NODES:
        z, c0, c1, c2, c3 = _hermite_cells(a, b, n)
        zm = 0.5 * (z[:-1] + z[1:])
        interp = c0 + 0.5 * c1 + 0.25 * c2 + 0.125 * c3
        err = np.max(np.abs(interp - _beta_quantile_exact(a, b, zm)))
        if err <= _TABLE_TOL:
            cells = tuple(np.ascontiguousarray(c) for c in (c0, c1, c2, c3))
            for c in cells:
                c.setflags(write=False)
            return n, cells
        n = 2 * n - 1
    return 0, ()


def _beta_ppf(a: float, b: float, u: np.ndarray, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """Quantile of ``low + (high - low) Beta(a, b)`` at ``u`` (vectorised, error ~2e-10 of the
    range).

    ``scipy.special.betaincinv`` costs ~1-3 us per value, too slow for Monte Carlo, so the
    quantile is tabulated once per (a, b) and interpolated, by two tables:

    - the body, a monotone cubic Hermite table on a grid uniform in ``u``
      (:func:`_beta_u_table`, 4096 cells), used for every ``u`` in the cells where it is
      within 1e-10 of the tail table (~98% of draws for PERT shapes): no inverse normal CDF;
    - the tails (and shapes where the body table has no cell within tolerance), the table in
      ``z = Phi^-1(u)`` of :func:`_beta_ppf_z`, within 1e-10 of ``betaincinv``.
    """
    a, b = float(a), float(b)
    n_nodes, _ = _beta_table(a, b)
    if n_nodes == 0:
        return low + (high - low) * _beta_quantile_tail(a, b, u)
    table = _beta_u_table(a, b)
    if table[0] > table[1]:
        return _beta_ppf_z(a, b, u, low, high)
    width = high - low
    x = _u_table_eval(table, u, low, width,
                      lambda v: _beta_ppf_z(a, b, v, low, high))
    return np.clip(x, low, high, out=x)  # rounding guard


#: cells of the body table of the beta quantile, uniform in u (a power of 2, so u * cells and
#: the cell edges are exact)
_U_CELLS = 4096


def _hermite_coefficients(x: np.ndarray, m: np.ndarray, h: float) -> tuple[np.ndarray, ...]:
    """Per-cell cubic coefficients ``(c0, c1, c2, c3)`` (in the cell's local ``s`` in [0, 1])
    of the Hermite interpolant through nodes ``x`` with slopes ``m`` on a uniform grid of step
    ``h``; non-finite slopes become the secant, and slopes are limited by Fritsch & Carlson
    (1980, SIAM J. Numer. Anal. 17:238) so the interpolant is monotone."""
    x0, x1 = x[:-1], x[1:]
    delta = (x1 - x0) / h
    m0 = m[:-1].copy()
    m1 = m[1:].copy()
    bad0 = ~np.isfinite(m0)
    bad1 = ~np.isfinite(m1)
    m0[bad0] = delta[bad0]
    m1[bad1] = delta[bad1]
    flat = delta <= 0.0
    m0[flat] = 0.0
    m1[flat] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        al = np.where(flat, 0.0, m0 / delta)
        be = np.where(flat, 0.0, m1 / delta)
        r = np.hypot(al, be)
        tau = np.where(r > 3.0, 3.0 / r, 1.0)
    m0 *= tau
    m1 *= tau
    c1 = m0 * h
    c2 = 3.0 * (x1 - x0) - 2.0 * c1 - m1 * h
    c3 = 2.0 * (x0 - x1) + c1 + m1 * h
    return x0.copy(), c1, c2, c3


def _u_table(exact, slope, tol: float = _TABLE_TOL) -> tuple[int, int, tuple[np.ndarray, ...]]:
    """Body table of a quantile function on ``u`` in [0, 1]: :data:`_U_CELLS` uniform cells.

    ``exact(u)`` gives the quantile (nodes), ``slope(x, u)`` its derivative ``dx/du`` (non-finite
    values: the secant); each cell is checked at ``s = 1/4, 1/2, 3/4`` against ``exact``.
    Returns ``(first, last, (c0, c1, c2, c3))``: cells ``first..last``, the run around the
    median whose checks are all within ``tol``, are the body; ``first > last`` means none.
    """
    n = _U_CELLS
    u = np.arange(n + 1, dtype=float) / n
    x = exact(u)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        m = np.asarray(slope(x, u), dtype=float)
        cells = _hermite_coefficients(x, m, 1.0 / n)
        ok = np.ones(n, dtype=bool)
        for s in (0.25, 0.5, 0.75):
            interp = cells[0] + s * (cells[1] + s * (cells[2] + s * cells[3]))
            ok &= np.abs(interp - exact((np.arange(n) + s) / n)) <= tol
    mid = n // 2  # the cell of the median
    bad = np.flatnonzero(~ok)
    below, above = bad[bad < mid], bad[bad >= mid]
    first = int(below[-1]) + 1 if below.size else 0
    last = int(above[0]) - 1 if above.size else n - 1
    out = tuple(np.ascontiguousarray(c) for c in cells)
    for c in out:
        c.setflags(write=False)
    return first, last, out


def _cubic_cells(coef: tuple[np.ndarray, ...], i: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``c0[i] + t (c1[i] + t (c2[i] + t c3[i]))`` (Horner, in place on one new array): a
    piecewise cubic of a table's cells ``coef = (c0, c1, c2, c3)`` at cell ``i`` and offset
    ``t``."""
    c0, c1, c2, c3 = coef
    x = c3.take(i)
    x *= t
    x += c2.take(i)
    x *= t
    x += c1.take(i)
    x *= t
    x += c0.take(i)
    return x


def _u_table_eval(table: tuple[int, int, tuple[np.ndarray, ...]], u: np.ndarray, shift: float,
                  scale: float, tail) -> np.ndarray:
    """``shift + scale Q(u)`` from a body table (:func:`_u_table`) of ``Q``; ``u`` outside its
    cells (and exactly 1) gets ``tail(u)`` (already shifted and scaled). A new array."""
    first, last, cells = table
    # scale the 4 x 4096 coefficients, not the n values
    c0, c1, c2, c3 = (shift + scale * cells[0], *(scale * c for c in cells[1:]))
    t = u * float(_U_CELLS)  # exact: u * 2**12
    i = t.astype(np.intp)
    outside = i < first
    outside |= i > last  # u == 1 lands in cell _U_CELLS, always outside
    np.clip(i, first, last, out=i)
    t -= i
    x = _cubic_cells((c0, c1, c2, c3), i, t)
    rest = np.flatnonzero(outside)
    if rest.size:
        x[rest] = tail(u[rest])
    return x


@functools.lru_cache(maxsize=128)
def _beta_u_table(a: float, b: float) -> tuple[int, int, tuple[np.ndarray, ...]]:
    """Body table (:func:`_u_table`) of the Beta(a, b) quantile.

    Nodes are the tail table's quantiles (:func:`_beta_ppf_z`, within 1e-10 of
    ``betaincinv``), slopes the exact ``dx/du = 1 / f(x)``; the cells used are within 1e-10
    of the tail table at ``s = 1/4, 1/2, 3/4``, so within ~2e-10 of the exact quantile.
    """
    log_b = float(special.betaln(a, b))

    def slope(x, u):
        m = np.exp(-((a - 1.0) * np.log(x) + (b - 1.0) * np.log1p(-x) - log_b))
        m[(x <= 0.0) | (x >= 1.0)] = np.nan  # secant at the ends
        return m

    return _u_table(lambda v: _beta_ppf_z(a, b, v), slope)


def _beta_ppf_z(a: float, b: float, u: np.ndarray, low: float = 0.0,
                high: float = 1.0) -> np.ndarray:
    """Quantile of ``low + (high - low) Beta(a, b)`` at ``u`` from the table in ``z`` (error
    ~1e-10 of the range): the tails of :func:`_beta_ppf`.

    The exact quantile is tabulated once per (a, b) on a grid uniform in ``z = Phi^-1(u)``
    and evaluated by monotone cubic Hermite interpolation; the grid is refined until the error
    at every cell midpoint is below 1e-10 (2049 nodes for most shapes, up to 65537 for a, b ~
    0.01; beyond that ``betaincinv`` is used for every value). ``u`` outside the table (below
    ~1e-17 from either end, including exactly 0 and 1) gets the exact value from
    :func:`_beta_quantile_tail`.
    """
    n_nodes, _ = _beta_table(float(a), float(b))
    if n_nodes == 0:
        return low + (high - low) * _beta_quantile_tail(a, b, u)
    return _beta_from_z(a, b, special.ndtri(u), low, high, u)


def _beta_from_z(a: float, b: float, z: np.ndarray, low: float = 0.0, high: float = 1.0,
                 u: np.ndarray | None = None) -> np.ndarray:
    """Quantile of ``low + (high - low) Beta(a, b)`` at ``Phi(z)``, from the table in ``z``
    (:func:`_beta_ppf_z`) evaluated at ``z`` itself: the Gaussian copula's latent normals map
    to the marginal without ``Phi`` or its inverse (:func:`from_normals`). ``z`` beyond the
    table (|z| > 8.5, probability 2e-17) gets the exact quantile at ``u`` (default
    :func:`copula_uniforms` of ``z``). Needs the table (``_beta_table(a, b)[0] > 0``).
    """
    n_nodes, cells = _beta_table(float(a), float(b))
    width = high - low
    # scale the 4 x (n_nodes - 1) coefficients, not the n values
    c0, c1, c2, c3 = (low + width * cells[0], *(width * c for c in cells[1:]))
    t = z + _Z_MAX
    t *= (n_nodes - 1) / (2.0 * _Z_MAX)
    outside = None
    if t.size and (t.min() < 0.0 or t.max() > n_nodes - 1):
        outside = (t < 0.0) | (t > n_nodes - 1)
        np.clip(t, 0.0, n_nodes - 1 - 1e-9, out=t)
    i = t.astype(np.intp)
    np.minimum(i, n_nodes - 2, out=i)  # t == n_nodes - 1 exactly: last cell at s = 1
    t -= i
    x = _cubic_cells((c0, c1, c2, c3), i, t)
    if outside is not None:
        u_out = copula_uniforms(z[outside]) if u is None else u[outside]
        x[outside] = low + width * _beta_quantile_tail(a, b, u_out)
    return np.clip(x, low, high, out=x)  # rounding guard


def _beta_quantile_tail(a: float, b: float, u: np.ndarray) -> np.ndarray:
    """``betaincinv`` for ``u`` beyond the table, which returns NaN for some tiny ``u``
    (e.g. a = 2.125, b = 8.875, u < 1e-180); there the leading term of
    ``I_x(a, b) ~ x^a / (a B(a, b))``, ``x = (u a B(a, b))^(1/a)``, is used (relative error
    O(x), and x < 1e-70 wherever this happens).
    """
    x = special.betaincinv(a, b, u)
    bad = np.isnan(x)
    if bad.any():
        with np.errstate(divide="ignore"):
            log_x = (np.log(u[bad]) + math.log(a) + special.betaln(a, b)) / a
        x[bad] = np.minimum(np.exp(log_x), 1.0)
    return x


class PertDist(DistributionBase):
    """Beta-PERT on [low, high] with most likely value ``mode`` and shape ``lamb`` (default 4).

    ``X = low + (high - low) Y``, ``Y ~ Beta(alpha, beta)`` with
    ``alpha = 1 + lamb (mode - low) / (high - low)``,
    ``beta = 1 + lamb (high - mode) / (high - low)``; mean
    ``(low + lamb mode + high) / (lamb + 2)`` (Vose, *Risk Analysis*, 3rd ed., 2008, sec. 9.1;
    lamb = 4 is the classic PERT of Malcolm et al., 1959). ``ppf`` uses the tabulated beta
    quantile described in :func:`_beta_ppf`; ``median`` uses ``betaincinv`` directly.
    """

    dist: Literal["pert"] = "pert"
    """Distribution family: pert (Beta-PERT)."""
    low: FiniteFloat
    """Lower end."""
    mode: FiniteFloat
    """Most likely value."""
    high: FiniteFloat
    """Upper end."""
    lamb: FiniteFloat = 4.0
    """Shape: weight of the mode (4 = classic PERT)."""

    @model_validator(mode="after")
    def _check(self) -> PertDist:
        _range_check("pert", self.low, self.high)
        if not self.low <= self.mode <= self.high:
            raise ValueError(
                f"pert: mode ({self.mode:g}) must lie in [low, high] = "
                f"[{self.low:g}, {self.high:g}]"
            )
        if not self.lamb > 0:
            raise ValueError(f"pert: lamb must be > 0, got {self.lamb:g}")
        return self

    def beta_params(self) -> tuple[float, float]:
        """``(alpha, beta)`` of the underlying standard beta."""
        w = self.high - self.low
        return (
            1.0 + self.lamb * (self.mode - self.low) / w,
            1.0 + self.lamb * (self.high - self.mode) / w,
        )

    def median(self) -> float:
        a, b = self.beta_params()
        return self.low + (self.high - self.low) * _beta_median(a, b)

    def mean(self) -> float:
        return (self.low + self.lamb * self.mode + self.high) / (self.lamb + 2.0)

    def support(self) -> tuple[float, float]:
        return (float(self.low), float(self.high))

    def _ppf(self, u: np.ndarray) -> np.ndarray:
        a, b = self.beta_params()
        return _beta_ppf(a, b, u, self.low, self.high)


def _beta_median(a: float, b: float) -> float:
    """Median of the standard Beta(a, b): exactly 0.5 when ``a == b`` (symmetry; spares
    ``planner cost`` the scipy import for the common symmetric case, and is exact where
    ``betaincinv`` can be off by ~1e-8), else ``scipy.special.betaincinv(a, b, 0.5)``."""
    if a == b:
        return 0.5
    return float(special.betaincinv(a, b, 0.5))


class BetaDist(DistributionBase):
    """Beta(a, b) scaled to [low, high] (default [0, 1]): ``X = low + (high - low) Y``.

    Mean ``low + (high - low) a / (a + b)``. ``ppf`` uses the tabulated beta quantile
    described in :func:`_beta_ppf`; ``median`` uses ``betaincinv`` directly.
    """

    dist: Literal["beta"] = "beta"
    """Distribution family: beta."""
    a: FiniteFloat
    """Shape a (alpha) > 0."""
    b: FiniteFloat
    """Shape b (beta) > 0."""
    low: FiniteFloat = 0.0
    """Lower end of the scaled range."""
    high: FiniteFloat = 1.0
    """Upper end of the scaled range."""

    @model_validator(mode="after")
    def _check(self) -> BetaDist:
        for name in ("a", "b"):
            v = getattr(self, name)
            if not v > 0:
                raise ValueError(f"beta: {name} must be > 0, got {v:g}")
        _range_check("beta", self.low, self.high)
        return self

    def median(self) -> float:
        return self.low + (self.high - self.low) * _beta_median(self.a, self.b)

    def mean(self) -> float:
        return self.low + (self.high - self.low) * self.a / (self.a + self.b)

    def support(self) -> tuple[float, float]:
        return (float(self.low), float(self.high))

    def _ppf(self, u: np.ndarray) -> np.ndarray:
        return _beta_ppf(self.a, self.b, u, self.low, self.high)


_CDF_SLACK = 1e-12  # cumulative sums are compared with this slack so 0.1 * 5 counts as 0.5


@functools.lru_cache(maxsize=256)
def _choice_table(values: tuple[float, ...], p: tuple[float, ...] | None):
    """Sorted distinct values with positive probability and their cumulative probabilities."""
    v = np.asarray(values, dtype=float)
    w = np.full(v.size, 1.0 / v.size) if p is None else np.asarray(p, dtype=float)
    keep = w > 0.0
    xs, inv = np.unique(v[keep], return_inverse=True)
    probs = np.bincount(inv, weights=w[keep], minlength=xs.size)
    cdf = np.cumsum(probs) / probs.sum()
    cdf[-1] = 1.0
    # F(x_k) + slack >= u  <=>  F(x_k) >= u - slack; capped at 1 so it stays sorted
    cdf_slack = np.minimum(cdf + _CDF_SLACK, 1.0)
    for arr in (xs, cdf_slack):
        arr.setflags(write=False)
    return xs, probs / probs.sum(), cdf_slack


class ChoiceDist(DistributionBase):
    """Discrete: one of ``values`` with probabilities ``p`` (default equal).

    ``ppf(u)`` is the discrete inverse CDF ``min{x : F(x) >= u}`` (with a 1e-12 slack on the
    cumulative sums against rounding), so ``median()`` is the lower median when F hits 0.5
    exactly. Repeated values are merged; values with ``p = 0`` are never drawn.
    """

    dist: Literal["choice"] = "choice"
    """Distribution family: choice (discrete)."""
    values: tuple[FiniteFloat, ...]
    """The possible values."""
    p: tuple[FiniteFloat, ...] | None = None
    """Their probabilities (default: equal)."""

    @model_validator(mode="after")
    def _check(self) -> ChoiceDist:
        if len(self.values) == 0:
            raise ValueError("choice: values must hold at least one number, got []")
        if self.p is not None:
            if len(self.p) != len(self.values):
                raise ValueError(
                    f"choice: p must have one probability per value ({len(self.values)}), "
                    f"got {len(self.p)}"
                )
            neg = [x for x in self.p if x < 0]
            if neg:
                raise ValueError(f"choice: p must be >= 0, got {neg[0]:g}")
            total = math.fsum(self.p)
            if abs(total - 1.0) > 1e-9:
                raise ValueError(f"choice: p must sum to 1 (within 1e-9), got {total:.12g}")
        return self

    def _table(self):
        return _choice_table(self.values, self.p)

    def mean(self) -> float:
        xs, probs, _ = self._table()
        return float(np.dot(xs, probs))

    def support(self) -> tuple[float, float]:
        xs = self._table()[0]
        return (float(xs[0]), float(xs[-1]))

    def _ppf(self, u: np.ndarray) -> np.ndarray:
        xs, _, cdf = self._table()
        if xs.size <= 8:
            # a few values: the index searchsorted(cdf, u, "left") clipped to the last value,
            # counted with one comparison pass per value (~6x faster than the binary search;
            # the same index for every u, NaN included)
            idx = np.full(np.shape(u), xs.size - 1, dtype=np.intp)
            for c in cdf[:-1]:
                idx -= u <= c
            return xs.take(idx)
        idx = np.searchsorted(cdf, u, side="left")
        np.minimum(idx, xs.size - 1, out=idx)
        return xs.take(idx)


@functools.lru_cache(maxsize=64)
def _empirical_table(values: tuple[float, ...]):
    xs = np.sort(np.asarray(values, dtype=float))
    dx = np.diff(xs)
    xs.setflags(write=False)
    dx.setflags(write=False)
    return xs, dx


class EmpiricalDist(DistributionBase):
    """Distribution of observed ``values`` (samples), drawn by the interpolated inverse ECDF.

    Sampling is by inverse ECDF with linear interpolation, not resampling: with sorted values
    ``x_0 <= ... <= x_{n-1}`` and ``h = u (n - 1)``,
    ``ppf(u) = x_k + (h - k)(x_{k+1} - x_k)``, ``k = floor(h)``: the same as
    ``numpy.quantile(values, u, method="linear")`` (Hyndman & Fan 1996, type 7). Draws are
    continuous between the smallest and largest observation (never beyond), and ``median()``
    equals ``numpy.median(values)``. ``mean()`` is the mean of this interpolated distribution,
    ``(x_0/2 + x_1 + ... + x_{n-2} + x_{n-1}/2) / (n - 1)``, which differs from the arithmetic
    sample mean by at most ``(x_{n-1} - x_0) / (2 n)``.
    """

    dist: Literal["empirical"] = "empirical"
    """Distribution family: empirical."""
    values: tuple[FiniteFloat, ...]
    """Observed values, resampled with their empirical quantiles."""

    @model_validator(mode="after")
    def _check(self) -> EmpiricalDist:
        if len(self.values) == 0:
            raise ValueError("empirical: values must hold at least one sample, got []")
        return self

    def mean(self) -> float:
        xs, _ = _empirical_table(self.values)
        if xs.size == 1:
            return float(xs[0])
        return float((xs.sum() - 0.5 * (xs[0] + xs[-1])) / (xs.size - 1))

    def support(self) -> tuple[float, float]:
        xs, _ = _empirical_table(self.values)
        return (float(xs[0]), float(xs[-1]))

    def _ppf(self, u: np.ndarray) -> np.ndarray:
        xs, dx = _empirical_table(self.values)
        if xs.size == 1:
            return np.full(u.shape, xs[0])
        h = u * (xs.size - 1)
        k = h.astype(np.intp)
        np.minimum(k, xs.size - 2, out=k)
        h -= k
        out = dx.take(k)
        out *= h
        out += xs.take(k)
        return np.clip(out, xs[0], xs[-1], out=out)  # rounding guard


Distribution = Annotated[
    FixedDist
    | UniformDist
    | TriangularDist
    | NormalDist
    | LognormalDist
    | PertDist
    | BetaDist
    | ChoiceDist
    | EmpiricalDist,
    Field(discriminator="dist"),
]
"""Any distribution; parse a TOML/dict value with ``TypeAdapter(Distribution)``."""


# --------------------------------------------------------------------------------------------
# helpers


def is_distribution(x: Any) -> bool:
    """True if ``x`` is one of the distribution models."""
    return isinstance(x, DistributionBase)


def _number(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise PlannerError(f"{what}: expected a number or a distribution, got {x!r}")
    return float(x)


def median_of(x: float | DistributionBase) -> float:
    """Median of a distribution; numbers pass through as floats."""
    return x.median() if is_distribution(x) else _number(x, "median_of")


def mean_of(x: float | DistributionBase) -> float:
    """Mean of a distribution; numbers pass through as floats."""
    return x.mean() if is_distribution(x) else _number(x, "mean_of")


def spawn_generators(seed: int | None, n: int) -> list[np.random.Generator]:
    """``n`` independent generators from ``np.random.SeedSequence(seed).spawn(n)``.

    The same ``seed`` always gives the same streams; ``seed=None`` draws fresh OS entropy.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise PlannerError(f"n: expected a non-negative number of generators, got {n!r}")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0
    ):
        raise PlannerError(f"seed: expected a non-negative integer or None, got {seed!r}")
    children = np.random.SeedSequence(None if seed is None else int(seed)).spawn(int(n))
    return [np.random.default_rng(s) for s in children]


def spearman_to_pearson(rho: Any) -> np.ndarray | float:
    """Pearson r of a bivariate normal whose Spearman rank correlation is ``rho``.

    ``r = 2 sin(pi rho / 6)``, the inverse of ``rho = (6 / pi) arcsin(r / 2)`` (Pearson 1907;
    Kruskal 1958, JASA 53:814, eq. 4.6). Because ranks survive the monotone maps ``ppf``, a
    Gaussian copula with this r gives every pair of continuous marginals Spearman rho exactly
    (in expectation); discrete marginals (``choice``) have ties and get a smaller |rho|.
    """
    out = 2.0 * np.sin(np.pi * np.asarray(rho, dtype=float) / 6.0)
    return float(out) if out.ndim == 0 else out


def copula_factor(corr: Any) -> np.ndarray:
    """L with ``L @ L.T == corr``: Cholesky, or eigen-decomposition when corr is singular.

    ``corr`` must be a symmetric, unit-diagonal, positive semi-definite matrix of correlations
    in [-1, 1]; PlannerError otherwise. The factor is what :func:`correlated_normals` takes.
    """
    c = np.asarray(corr, dtype=float)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise PlannerError(f"corr: expected a square matrix, got shape {c.shape}")
    if not np.isfinite(c).all():
        raise PlannerError("corr: the correlation matrix holds a NaN or infinite entry")
    if not np.allclose(c, c.T, rtol=0.0, atol=1e-9):
        i, j = np.unravel_index(np.argmax(np.abs(c - c.T)), c.shape)
        raise PlannerError(
            f"corr: the correlation matrix is not symmetric: entry [{i}, {j}] = {c[i, j]:g} "
            f"but [{j}, {i}] = {c[j, i]:g}"
        )
    d = np.diag(c)
    if not np.allclose(d, 1.0, rtol=0.0, atol=1e-9):
        i = int(np.argmax(np.abs(d - 1.0)))
        raise PlannerError(
            f"corr: the correlation matrix must have ones on the diagonal, got [{i}, {i}] = "
            f"{d[i]:g}"
        )
    off = np.abs(c) > 1.0 + 1e-12
    if off.any():
        i, j = np.argwhere(off)[0]
        raise PlannerError(f"corr: correlations must lie in [-1, 1], got [{i}, {j}] = {c[i, j]:g}")
    c = 0.5 * (c + c.T)
    try:
        return np.linalg.cholesky(c)
    except np.linalg.LinAlgError:
        pass
    w, v = np.linalg.eigh(c)
    if w[0] < -1e-9 * max(1, c.shape[0]):
        raise PlannerError(
            "corr: the correlation matrix is not positive semi-definite (smallest eigenvalue "
            f"{w[0]:.3g}); these correlations cannot hold together, weaken some of them"
        )
    return v * np.sqrt(np.clip(w, 0.0, None))


def correlated_normals(rng: np.random.Generator, n: int, factor: np.ndarray) -> np.ndarray:
    """The Gaussian copula's latent normals: ``factor @ E`` with ``E = rng.standard_normal((k,
    n))``, so each column is N(0, ``factor @ factor.T``).

    The one place correlated normals are drawn: :func:`gaussian_copula_uniforms` and the Monte
    Carlo sampler (:class:`planner.engines.risk.sampling.Sampler`) both call it, so the same
    generator state and factor give the same numbers in both.

    Parameters
    ----------
    rng : numpy.random.Generator
    n : int
        Number of draws (columns).
    factor : (k, k) numpy.ndarray
        A factor of the correlation matrix (:func:`copula_factor`).

    Returns
    -------
    numpy.ndarray
        Shape ``(k, n)``; row ``j`` is latent variable ``j``.
    """
    return factor @ rng.standard_normal((factor.shape[0], int(n)))


def copula_uniforms(z: np.ndarray) -> np.ndarray:
    """``Phi(z)`` clipped to [2**-54, 1 - 2**-53] (a new array), so no ``ppf`` sees 0 or 1: the
    copula's uniforms from its latent normals (:func:`correlated_normals`)."""
    u = special.ndtr(z)
    np.clip(u, _U_MIN, _U_MAX, out=u)
    return u


def is_normal_family(d: DistributionBase) -> bool:
    """Untruncated normal or lognormal: :func:`from_normals` maps a standard normal to it
    directly, without an inverse CDF."""
    return isinstance(d, LognormalDist) or (isinstance(d, NormalDist) and not d.truncated)


def from_normals(d: DistributionBase, z: np.ndarray) -> np.ndarray:
    """Values of ``d`` at standard-normal draws ``z``: ``ppf(Phi(z))``.

    For the normal family (:func:`is_normal_family`) this is ``mean + sd z`` or ``exp(mu +
    sigma z)``, computed in place on ``z`` (``scipy.special.ndtri`` would cost ~30 ns a value);
    beta and PERT read their quantile table in ``z`` at ``z`` (:func:`_beta_from_z`: no
    ``Phi``, no inverse); otherwise ``d.ppf`` of :func:`copula_uniforms` of ``z`` (``z``
    unchanged).
    """
    if isinstance(d, LognormalDist):
        mu, sigma = d.log_params()
        z *= sigma
        z += mu
        return np.exp(z, out=z)
    if isinstance(d, NormalDist) and not d.truncated:
        z *= d.sd
        z += d.mean_value
        return z
    if isinstance(d, (BetaDist, PertDist)):
        a, b = d.beta_params() if isinstance(d, PertDist) else (float(d.a), float(d.b))
        if _beta_table(a, b)[0]:
            return _beta_from_z(a, b, z, d.low, d.high)
    return np.asarray(d._ppf(copula_uniforms(z)), dtype=float)


def gaussian_copula_uniforms(rng: np.random.Generator, n: int, corr: np.ndarray) -> np.ndarray:
    """``n`` rows of ``k`` correlated U(0, 1) draws from a Gaussian copula.

    ``Z ~ N(0, corr)`` built as ``L @ E`` with ``E`` iid standard normal and ``L`` the Cholesky
    factor of ``corr`` (an eigen-decomposition factor when ``corr`` is positive semi-definite
    but singular; :func:`copula_factor`, :func:`correlated_normals`); ``U = Phi(Z)``, clipped
    to [2**-54, 1 - 2**-53] so no ``ppf`` sees 0 or 1 (:func:`copula_uniforms`).

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness.
    n : int
        Number of rows.
    corr : (k, k) array_like
        Pearson correlation of the latent normals (use :func:`spearman_to_pearson` to reach a
        target Spearman rho). Must be symmetric, unit-diagonal and positive semi-definite.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, k)``; each column is contiguous in memory.
    """
    factor = copula_factor(corr)
    if not isinstance(rng, np.random.Generator):
        raise PlannerError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise PlannerError(f"n: expected a non-negative integer sample count, got {n!r}")
    return copula_uniforms(correlated_normals(rng, int(n), factor)).T


def sample_many(
    rng: np.random.Generator,
    dists: Mapping[str, float | DistributionBase],
    n: int,
    corr: Mapping[tuple[str, str], float] | None = None,
) -> dict[str, np.ndarray]:
    """Draw ``n`` values of every input, optionally rank-correlated.

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness: the same generator state gives the same arrays.
    dists : mapping of name to distribution (or number, treated as a constant)
        Draws are made in the mapping's order.
    n : int
        Number of draws per input.
    corr : mapping of (name, name) to Spearman rho, optional
        Target rank correlations; pairs not listed are independent. Each rho is converted to
        the Gaussian copula's Pearson r with ``r = 2 sin(pi rho / 6)``
        (:func:`spearman_to_pearson`), so continuous marginals get Spearman rho = the target.

    Returns
    -------
    dict of name to numpy.ndarray
        Shape ``(n,)`` each, in the order of ``dists``.

    Notes
    -----
    Without ``corr`` one uniform block ``(k, n)`` is drawn and row ``j`` feeds input ``j``'s
    ``ppf``; with ``corr`` the rows come from :func:`gaussian_copula_uniforms`.
    """
    names = list(dists)
    index = {name: j for j, name in enumerate(names)}
    k = len(names)
    for name, d in dists.items():
        if not is_distribution(d):
            _number(d, f"sample_many: input '{name}'")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise PlannerError(f"n: expected a non-negative integer sample count, got {n!r}")
    if not isinstance(rng, np.random.Generator):
        raise PlannerError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    if corr:
        rho = np.eye(k)
        seen: dict[tuple[int, int], float] = {}
        for pair, value in corr.items():
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise PlannerError(f"corr: expected keys that are (name, name) pairs, got {pair!r}")
            a, b = pair
            for nm in (a, b):
                if nm not in index:
                    raise PlannerError(
                        f"corr: '{nm}' in pair ({a}, {b}) is not a sampled input; "
                        f"known: {', '.join(names)}"
                    )
            if a == b:
                raise PlannerError(f"corr: pair ({a}, {b}) correlates an input with itself")
            r = _number(value, f"corr[({a}, {b})]")
            if not -1.0 <= r <= 1.0:
                raise PlannerError(
                    f"corr[({a}, {b})]: expected a Spearman rho in [-1, 1], got {r:g}"
                )
            i, j = index[a], index[b]
            key = (min(i, j), max(i, j))
            if key in seen and seen[key] != r:
                raise PlannerError(
                    f"corr: pair ({a}, {b}) is given twice with different values "
                    f"({seen[key]:g} and {r:g})"
                )
            seen[key] = r
            rho[i, j] = rho[j, i] = r
        pearson = spearman_to_pearson(rho)
        np.fill_diagonal(pearson, 1.0)
        try:
            u = gaussian_copula_uniforms(rng, n, pearson).T
        except PlannerError as exc:
            raise PlannerError(
                f"{exc} (correlations between {', '.join(names)}, after converting Spearman "
                "rho to the copula's Pearson r = 2 sin(pi rho / 6))"
            ) from exc
    else:
        u = rng.random((k, int(n)))
        np.maximum(u, _U_MIN, out=u)
    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(names):
        d = dists[name]
        if is_distribution(d):
            out[name] = np.asarray(d._ppf(u[j]), dtype=float)
        else:
            out[name] = np.full(int(n), float(d))
    return out
