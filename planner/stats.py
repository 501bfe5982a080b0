"""Pure statistics shared by the engines: tail risk (CVaR) and the per-sample cost metrics.

Every engine that reports a CVaR (the Monte Carlo and multi-year engines, the stochastic
optimiser's objective and its reported cost range) calls :func:`cvar`, so the same samples give
the same number everywhere.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["cvar", "cvar_partitioned", "cvar_tail", "metric_arrays", "usd_horizon",
           "usd_per_mtok"]


def _tail_mass(alpha: float, total: float) -> float:
    """``(1 - alpha) total``, snapped to the nearest integer when it is one up to rounding
    (``(1 - 0.95) x 20000`` is 1000.0000000000009 in floating point)."""
    m = (1.0 - alpha) * total
    r = round(m)
    return float(r) if r > 0 and abs(m - r) <= 1e-9 * max(1.0, m) else m


def cvar(x, alpha: float = 0.95, weights=None) -> float:
    """Conditional value at risk (expected shortfall) of costs: the mean of the worst
    ``1 - alpha`` of the probability mass.

    Rockafellar and Uryasev's definition ("Conditional value-at-risk for general loss
    distributions", J. Banking & Finance 26, 2002, prop. 6), for a discrete distribution of
    costs ``x_i`` with probabilities ``p_i``:

    .. math::

        \\mathrm{CVaR}_\\alpha = \\min_t \\; t + \\frac{1}{1-\\alpha} \\sum_i p_i (x_i - t)^+

    which equals the probability-weighted mean of the largest costs taking exactly ``1 -
    alpha`` of the mass: sort the costs from the largest, give each its full probability until
    the mass ``1 - alpha`` is reached, and the cost at the boundary the fraction of its
    probability that completes it. With ``n`` equally likely samples and ``(1 - alpha) n`` a
    whole number ``k`` this is the mean of the ``k`` largest samples; otherwise the
    ``floor((1 - alpha) n) + 1``-th largest gets a fractional weight. It is exact for weighted
    scenarios (the stochastic optimiser's), coherent, and the minimiser above is what a linear
    program uses to minimise it.

    Parameters
    ----------
    x : array_like
        Costs (larger is worse), one per sample or scenario.
    alpha : float
        Confidence level in (0, 1); 0.95 gives CVaR95, the mean of the worst 5 %.
    weights : array_like, optional
        Non-negative probabilities (or weights, normalised to sum 1) of the samples; default
        equally likely.

    Returns
    -------
    float
        NaN for an empty ``x``.

    Examples
    --------
    >>> cvar([1.0, 2.0, 3.0, 4.0], alpha=0.5)
    3.5
    >>> cvar([1.0, 2.0, 3.0], alpha=0.5)  # 1.5 samples of mass: 3 and half of 2
    2.6666666666666665
    >>> cvar([1.0, 10.0], alpha=0.5, weights=[0.9, 0.1])  # 0.1 at 10, 0.4 at 1
    2.8
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"cvar: alpha must be in (0, 1), got {alpha!r}")
    x = np.asarray(x, dtype=float).ravel()
    n = x.size
    if n == 0:
        return math.nan
    if weights is None:
        m, kc = cvar_tail(n, alpha)
        return cvar_partitioned(np.partition(x, n - kc), m, kc)
    p = np.asarray(weights, dtype=float).ravel()
    if p.shape != x.shape:
        raise ValueError(f"cvar: weights have shape {p.shape}, costs {x.shape}")
    if np.any(p < 0) or not p.sum() > 0:
        raise ValueError("cvar: weights must be non-negative and not all zero")
    total = float(p.sum())
    mass = _tail_mass(alpha, total)
    order = np.argsort(x, kind="stable")[::-1]
    xs, ps = x[order], p[order]
    before = np.cumsum(ps) - ps
    take = np.minimum(ps, np.maximum(0.0, mass - before))
    return float(np.dot(xs, take) / mass)


def cvar_tail(n: int, alpha: float) -> tuple[float, int]:
    """``(m, kc)`` of the CVaR of ``n`` equally likely samples: the tail mass ``m = (1 -
    alpha) n`` in samples and the ``kc = ceil(m)`` largest samples it covers."""
    m = _tail_mass(alpha, n)  # samples' worth of tail mass
    return m, min(max(math.ceil(m), 1), n)


def cvar_partitioned(part: np.ndarray, m: float, kc: int) -> float:
    """:func:`cvar` of equally likely samples from ``part = np.partition(x, x.size - kc)``
    and ``(m, kc) = cvar_tail(x.size, alpha)``: the mean of the ``kc`` largest, the smallest
    of them (``part[n - kc]``) weighted ``m - (kc - 1)`` (the sum runs over ``part``'s tail
    in the order the partition left it, so the same partition gives the same bits)."""
    n = part.size
    tail = part[n - kc:]
    return float((tail.sum() - (kc - m) * part[n - kc]) / m)


def metric_arrays(monthly: np.ndarray, once: np.ndarray, tokens: np.ndarray, horizon: int,
                  with_horizon: bool = True) -> dict[str, np.ndarray | None]:
    """Per-sample cost metrics, as the deterministic summary computes them.

    ``usd_per_month`` = monthly; ``usd_horizon`` (:func:`usd_horizon`; None when
    ``with_horizon`` is false); ``usd_per_mtok`` (:func:`usd_per_mtok`).
    """
    monthly, once, tokens = (np.asarray(a, dtype=float) for a in (monthly, once, tokens))
    usd_h = usd_horizon(monthly, once, horizon) if with_horizon else None
    return {"usd_per_month": monthly, "usd_horizon": usd_h,
            "usd_per_mtok": usd_per_mtok(monthly, tokens)}


def usd_horizon(monthly: np.ndarray, once: np.ndarray, horizon: int) -> np.ndarray:
    """Cost over the horizon per sample: ``(monthly - once / h) h + once``, ``once`` being the
    one-off cost already spread into ``monthly`` over the horizon ``h`` months (float arrays)."""
    return (monthly - once / horizon) * horizon + once


def usd_per_mtok(monthly: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """USD per million tokens per sample: ``monthly / tokens x 1e6`` (NaN without tokens;
    float arrays)."""
    per_mtok = np.divide(monthly, tokens, out=np.full(monthly.shape, np.nan), where=tokens > 0)
    per_mtok *= 1e6
    return per_mtok
