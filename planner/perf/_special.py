"""The two special functions the open-loop latency model needs, in numpy alone.

``scipy.special`` costs 0.1-0.3 s to import (its array-API layer loads ``array_api_compat``
and part of ``numpy.f2py``), more than the whole ``planner cost`` computation, so the cost path
uses these instead:

* :func:`ndtri` -- the inverse of the standard normal CDF, the Cephes algorithm that
  ``scipy.special.ndtri`` implements (same rational approximations, same order of operations:
  the same bits as scipy on this platform, which ``tests/test_special.py`` checks over a grid);
* :func:`pdtr_numpy` -- the Poisson CDF ``P(K <= k)``, ``K ~ Poisson(m)``, i.e. the
  regularised upper incomplete gamma function ``Q(k + 1, m)``, within ~1e-13 relative of
  ``scipy.special.pdtr``; its series need ``O(sqrt(k))`` terms per element, so :func:`pdtr`
  hands large arrays or counts to ``scipy.special.pdtr`` (imported then).

Both are pure and broadcast like numpy ufuncs; :func:`pdtr` is vectorised throughout,
:func:`ndtri` takes the C library's ``log`` element by element in its tails (see
:func:`_libm_log`), meant for node sets and quantiles, not for millions of samples.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# -- ndtri: Cephes ndtri.c (Moshier, Cephes Math Library 2.8) --------------------------------

_S2PI = 2.50662827463100050242e0  # sqrt(2 pi)
_EXP_M2 = 0.13533528323661269189  # exp(-2)
# 0 <= |y - 0.5| <= 3/8
_P0 = (-5.99633501014107895267e1, 9.80010754185999661536e1, -5.66762857469070293439e1,
       1.39312609387279679503e1, -1.23916583867381258016e0)
_Q0 = (1.95448858338141759834e0, 4.67627912898881538453e0, 8.63602421390890590575e1,
       -2.25462687854119370527e2, 2.00260212380060660359e2, -8.20372256168333339912e1,
       1.59056225126211695515e1, -1.18331621121330003142e0)
# z = sqrt(-2 log y) in [2, 8): y between exp(-32) and exp(-2)
_P1 = (4.05544892305962419923e0, 3.15251094599893866154e1, 5.71628192246421288162e1,
       4.40805073893200834700e1, 1.46849561928858024014e1, 2.18663306850790267539e0,
       -1.40256079171354495875e-1, -3.50424626827848203418e-2, -8.57456785154685413611e-4)
_Q1 = (1.57799883256466749731e1, 4.53907635128879210584e1, 4.13172038254672030440e1,
       1.50425385692907503408e1, 2.50464946208309415979e0, -1.42182922854787788574e-1,
       -3.80806407691578277194e-2, -9.33259480895457427372e-4)
# z in [8, 64): y between exp(-2048) and exp(-32)
_P2 = (3.23774891776946035970e0, 6.91522889068984211695e0, 3.93881025292474443415e0,
       1.33303460815807542389e0, 2.01485389549179081538e-1, 1.23716634817820021358e-2,
       3.01581553508235416007e-4, 2.65806974686737550832e-6, 6.23974539184983293730e-9)
_Q2 = (6.02427039364742014255e0, 3.67983563856160859403e0, 1.37702099489081330271e0,
       2.16236993594496635890e-1, 1.34204006088543189037e-2, 3.28014464682127739104e-4,
       2.89247864745380683936e-6, 6.79019408009981274425e-9)


def _polevl(x: np.ndarray, coef: tuple[float, ...]) -> np.ndarray:
    """Cephes ``polevl``: ``coef[0] x^n + ... + coef[n]`` by Horner, in Cephes' order."""
    ans = np.full_like(x, coef[0])
    for c in coef[1:]:
        ans = ans * x + c
    return ans


def _p1evl(x: np.ndarray, coef: tuple[float, ...]) -> np.ndarray:
    """Cephes ``p1evl``: as :func:`_polevl` with an implicit leading coefficient 1."""
    ans = x + coef[0]
    for c in coef[1:]:
        ans = ans * x + c
    return ans


def _libm_log(x: np.ndarray) -> np.ndarray:
    """The C library's ``log`` of each element (1-D), the one scipy's compiled ndtri calls.

    ``numpy.log`` dispatches to its own SIMD code on AVX-512 machines, which differs from the
    C library in the last bit for ~2e-4 of the arguments; ndtri's tails take two logs per point
    and are rarely more than a few dozen points here (quantile nodes), so the C library's
    correctly rounded ``math.log`` is taken element by element to keep scipy's bits.
    """
    return np.fromiter(map(math.log, x.tolist()), dtype=float, count=x.size)


def ndtri(y: Any) -> Any:
    """Inverse of the standard normal CDF (``scipy.special.ndtri``, Cephes' algorithm).

    Parameters
    ----------
    y : float or array_like
        Probabilities; 0 gives -inf, 1 gives +inf, outside [0, 1] or NaN gives NaN.

    Returns
    -------
    float or numpy.ndarray
        ``x`` with ``Phi(x) = y`` (a float for a scalar ``y``).

    Notes
    -----
    Central region ``exp(-2) < y < 1 - exp(-2)``: ``x / sqrt(2 pi) = w + w^3 R(w^2)``,
    ``w = y - 1/2``; tails: ``z = sqrt(-2 ln y)``, ``x = z - ln(z) / z - P(1/z) / (z Q(1/z))``
    (two rational fits, below and above ``z = 8``), negated for the upper tail.
    """
    y0 = np.asarray(y, dtype=float)
    scalar = y0.ndim == 0
    y0 = np.atleast_1d(y0)
    out = np.full(y0.shape, np.nan)
    upper = y0 > 1.0 - _EXP_M2
    yy = np.where(upper, 1.0 - y0, y0)
    ok = (y0 > 0.0) & (y0 < 1.0)
    central = ok & (yy > _EXP_M2)
    if central.any():
        w = yy[central] - 0.5
        w2 = w * w
        x = w + w * (w2 * _polevl(w2, _P0) / _p1evl(w2, _Q0))
        out[central] = x * _S2PI
    tail = ok & ~central
    if tail.any():
        t = yy[tail]
        x = np.sqrt(-2.0 * _libm_log(t))
        x0 = x - _libm_log(x) / x
        z = 1.0 / x
        near = x < 8.0
        x1 = np.where(near, z * _polevl(z, _P1) / _p1evl(z, _Q1),
                      z * _polevl(z, _P2) / _p1evl(z, _Q2))
        x = x0 - x1
        out[tail] = np.where(upper[tail], x, -x)
    out[y0 == 0.0] = -np.inf
    out[y0 == 1.0] = np.inf
    return float(out[0]) if scalar else out


# -- pdtr: the Poisson CDF ------------------------------------------------------------------

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
#: Stirling's correction c(a) = lgamma(a) - ((a - 1/2) ln a - a + ln(2 pi) / 2) for a < 10
_STIRLING_SMALL = tuple(
    0.0 if a == 0 else math.lgamma(a) - ((a - 0.5) * math.log(a) - a + _HALF_LOG_2PI)
    for a in range(10))
#: most terms of the series per vectorised block
_MAX_BLOCK = 4096
#: most cells (elements x terms) of one block's arrays
_MAX_CELLS = 1 << 20
_EPS = 2.0 ** -56


def _stirling_correction(a: np.ndarray) -> np.ndarray:
    """``c(a) = lgamma(a) - ((a - 1/2) ln a - a + ln(2 pi) / 2)`` for integers ``a >= 1``:
    a table below 10, the asymptotic series (error < 2e-14 at 10) from there."""
    small = a < 10
    inv = 1.0 / np.where(small, 10.0, a)
    inv2 = inv * inv
    series = inv * (1.0 / 12 - inv2 * (1.0 / 360 - inv2 * (1.0 / 1260 - inv2 * (
        1.0 / 1680 - inv2 * (1.0 / 1188 - inv2 * (691.0 / 360360))))))
    table = np.asarray(_STIRLING_SMALL)[np.where(small, a, 0).astype(np.intp)]
    return np.where(small, table, series)


def _log1pmx(t: np.ndarray) -> np.ndarray:
    """``ln(1 + t) - t`` without cancellation near 0 (``t > -1``).

    For ``|t| < 1/4``: with ``u = t / (2 + t)``, ``ln(1 + t) = 2 atanh(u)`` and ``t = 2u/(1-u)``,
    so ``ln(1 + t) - t = -2u^2/(1-u) + 2u^3 sum_k u^(2k)/(2k+3)``: no cancellation,
    ``|u| <= 1/7``, 10 terms below 1e-17 relative. Elsewhere ``log1p(t) - t`` directly (within
    ~20 ulp of the result there).
    """
    small = np.abs(t) < 0.25
    ts = np.where(small, t, 0.0)
    u = ts / (2.0 + ts)
    u2 = u * u
    acc = np.full_like(u, 1.0 / 23.0)
    for k in range(9, -1, -1):  # sum_{k=0}^{10} u2^k / (2k + 3), Horner
        acc = acc * u2 + 1.0 / (2 * k + 3)
    series = -2.0 * u2 / (1.0 - u) + 2.0 * u * u2 * acc
    with np.errstate(divide="ignore", invalid="ignore"):
        direct = np.log1p(t) - t
    return np.where(small, series, direct)


#: most terms (elements x series terms per block) :func:`pdtr` sums in numpy; beyond it (or
#: beyond counts of :data:`_MAX_COUNT`) scipy's O(1)-per-element expansion is faster, and
#: ``scipy.special`` is imported then
_MAX_WORK = 250_000
_MAX_COUNT = 20_000


def pdtr(k: Any, m: Any, *, size: int | None = None) -> Any:
    """Poisson CDF ``P(K <= k)`` for ``K ~ Poisson(m)``: :func:`pdtr_numpy` for small inputs
    (what ``planner cost`` needs, without importing scipy), ``scipy.special.pdtr`` for large
    arrays or counts (where the series' ``O(sqrt(k))`` terms per element cost more).

    Parameters
    ----------
    k, m : float or array_like
        As :func:`pdtr_numpy`.
    size : int, optional
        Elements the choice between the two is made for (default: the broadcast size of
        ``k`` and ``m``): a caller that evaluates only some elements of a larger array passes
        that array's size, so each element gets what the whole array would (the two agree
        to ~1e-13, not to the bit).

    Returns
    -------
    float or numpy.ndarray
    """
    kk = np.asarray(k, dtype=float)
    mm = np.asarray(m, dtype=float)
    if size is None:
        size = np.broadcast(kk, mm).size
    kmax = float(np.max(kk, initial=0.0)) if kk.size else 0.0
    small = not kmax > _MAX_COUNT  # NaN goes to numpy
    if small and size * min(9.0 * math.sqrt(max(kmax, 0.0) + 1.0) + 32.0, _MAX_BLOCK) \
            <= _MAX_WORK:
        return pdtr_numpy(kk, mm)
    from scipy.special import pdtr as scipy_pdtr

    out = scipy_pdtr(kk, mm)
    return float(out) if np.ndim(out) == 0 else out


def pdtr_numpy(k: Any, m: Any) -> Any:
    """Poisson CDF ``P(K <= k)`` for ``K ~ Poisson(m)`` (``scipy.special.pdtr``) in numpy.

    Parameters
    ----------
    k : float or array_like
        Counts (floored, as scipy does); below 0 gives 0.
    m : float or array_like
        Means ``>= 0`` (0 gives 1; negative or NaN gives NaN; +inf gives 0).

    Returns
    -------
    float or numpy.ndarray
        ``Q(a, m) = sum_{i < a} e^-m m^i / i!`` with ``a = floor(k) + 1`` (broadcast shape; a
        float for scalar inputs).

    Notes
    -----
    With the prefactor ``f = m^a e^-m / Gamma(a)`` taken in log space as
    ``a (ln(1+t) - t) + ln(a / 2 pi) / 2 - c(a)``, ``t = (m - a) / a`` (accurate where ``m``
    is near ``a``; ``c`` is Stirling's correction):

    * ``m < a``: ``Q = 1 - P`` with the series ``P = f / a sum_n m^n / ((a+1)...(a+n))``;
    * ``m >= a``: the finite sum ``Q = f / m sum_{n<a} (a-1)...(a-n) / m^n``.

    The terms of both fall like ``exp(-n^2 / 4a)`` or faster, so ``O(sqrt(a))`` are needed;
    they are products of ratios, taken in blocks (of ``12.5 sqrt(max a)`` terms, at most ``_MAX_BLOCK``) with ``numpy.cumprod`` over a term
    axis, for the elements not converged yet.
    """
    kk, mm = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(m, dtype=float))
    shape = kk.shape
    kk, mm = kk.ravel(), mm.ravel()
    if kk.size and (kk >= 0).all() and (mm > 0).all() and np.isfinite(mm).all() \
            and np.isfinite(kk).all():  # the usual case: no special values
        out = _pdtr_finite(np.floor(kk) + 1.0, mm)
        return float(out[0]) if shape == () else out.reshape(shape)
    out = np.full(kk.shape, np.nan)
    nan = np.isnan(kk) | np.isnan(mm) | (mm < 0)
    done = nan.copy()
    zero = ~done & (kk < 0)
    out[zero] = 0.0
    done |= zero
    one = ~done & ((mm == 0) | (kk == np.inf))
    out[one] = 1.0
    done |= one
    inf = ~done & (mm == np.inf)
    out[inf] = 0.0
    done |= inf
    idx = np.flatnonzero(~done)
    if idx.size:
        out[idx] = _pdtr_finite(np.floor(kk[idx]) + 1.0, mm[idx])
    return float(out[0]) if shape == () else out.reshape(shape)


def _pdtr_finite(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``Q(a, x)`` for integers ``a >= 1`` and finite ``x > 0`` (1-D arrays)."""
    t = (x - a) / a
    with np.errstate(under="ignore"):
        f = np.exp(a * _log1pmx(t) + 0.5 * np.log(a) - _HALF_LOG_2PI
                   - _stirling_correction(a))
    lower = x < a  # series for P; else the finite sum for Q
    out = np.empty_like(x)
    with np.errstate(under="ignore"):
        if lower.any():
            s = _sum_terms(a[lower], x[lower], True)
            out[lower] = 1.0 - f[lower] / a[lower] * s
        upper = ~lower
        if upper.any():
            out[upper] = f[upper] / x[upper] * _sum_terms(a[upper], x[upper], False)
    return out


def _sum_terms(a: np.ndarray, x: np.ndarray, lower: bool) -> np.ndarray:
    """``sum_{n >= 0} prod_{j <= n} r_j`` with ``r_j = x / (a + j)`` (``lower``) or
    ``(a - j) / x`` (zero from ``j = a`` on), to 2^-56 relative.

    The products fall below 2^-56 within ``sqrt(78 a)`` terms (``x`` within a few
    ``sqrt(a)`` of ``a``; faster further away), so one block of ``9 sqrt(max a) + 32`` terms
    usually does; elements not converged go on in further blocks.
    """
    block = int(min(9.0 * math.sqrt(float(a.max())) + 32.0, _MAX_BLOCK))
    rows = max(1, _MAX_CELLS // block)  # bounded working arrays
    if x.size > rows:
        return np.concatenate([_sum_terms(a[i:i + rows], x[i:i + rows], lower)
                               for i in range(0, x.size, rows)])
    total = np.ones_like(x)
    last = np.ones_like(x)
    act = np.arange(x.size)
    j0 = 1.0
    steps = np.arange(block, dtype=float)
    while act.size:
        j = j0 + steps
        if lower:
            ratio = x[act, None] / (a[act, None] + j)
        else:
            ratio = np.maximum(a[act, None] - j, 0.0) * (1.0 / x[act, None])
        terms = np.cumprod(ratio, axis=1)
        terms *= last[act, None]
        total[act] += terms.sum(axis=1)
        last[act] = terms[:, -1]
        act = act[last[act] > _EPS * total[act]]
        j0 += block
    return total
