"""A year (or any long horizon) optimised through typical days, with a proven gap.

The optimiser's MILP (:mod:`.optimize_milp`) is one column set per profile hour; a year of
8,760 hours is too large for HiGHS to close. What energy-system planners do instead
(time-series aggregation, as in ``tsam`` / PyPSA) is to solve the problem on a few *typical
periods* weighted by how many days each stands for, then re-check the plan on the full
series. Here the typical periods are chosen so that the aggregation gives a **bound on both
sides** (after Bahl et al., "Typical periods for two-stage synthesis by time-series
aggregation with bounded error in objective function", Front. Energy Res. 2018):

1. **The year.** :func:`year_demand`: the scenario's 24- or 168-hour profile tiled over the
   horizon (hour 0 is the first hour of the profile, 1 January), times a factor per calendar
   month (``[optimize] monthly_factors``; a 365-day year) and a within-year traffic ramp
   ``(1 + g) ** (hour / 8760)`` (``[optimize] year_growth = true`` with
   ``[trends] traffic_growth_per_year``).
2. **Typical days.** :func:`aggregate`: the days (class x hour demand, each class scaled by
   its peak) are grouped by greedy farthest-point clustering (Gonzalez's k-center, Chebyshev
   distance: it minimises the largest deviation of a day from its group, which is what the
   envelopes below pay for; deterministic, no random start). The day holding each class's
   peak hour and the day with the largest total load are kept as groups of their own (peak
   preservation), so capacity is sized on the real peaks. Each group keeps its **upper
   envelope** (hour by hour the largest demand of its days) and **lower envelope** (the
   smallest). Identical days fall in one group with a zero-width envelope: a year with few
   distinct days is aggregated exactly.
3. **The plan (upper problem).** The MILP on the upper envelopes, each typical hour weighted
   by the days it stands for (:attr:`Problem.hour_weights`), start-ups and ramps cyclic
   within each typical day (:attr:`Problem.cycle_hours`). Request prices and month shares are
   weighted by ``sum over the group's days of demand / envelope`` (:attr:`Problem.flow_weights`),
   so they are exactly those of the expanded plan below. Whatever a typical hour serves at
   its envelope serves any of its days (the flows scaled down class by class: the same
   routing shares, less load on the same replicas, the same quality mix, fewer tokens).
   With many hourly (scale-to-zero) columns (:data:`MAX_WHOLE_HOURLY_COLUMNS`), or when
   whole counts find no plan in time, the hourly counts are solved as a fluid and rounded up
   on the horizon.
4. **The full-year re-check.** :func:`expand`: every day takes its group's hourly counts and
   routing shares; rented (scale-to-zero) counts are then cut to what each real hour needs
   where that does not cost more start-ups; a ramp limit is restored by raising counts
   and a minimum run by raising counts (:func:`_runnable`). :func:`.optimize_milp.check_plan`
   re-checks every constraint on all 8,760 hours (demand, capacity, SLO capacity, quality,
   TPM, shares, budget, minimum replicas and run, ramp) and :func:`.optimize_milp.plan_costs`
   prices it: that cost is an upper bound on the optimum of the full-year problem.
5. **Day by day.** :func:`resolve_by_day`: the hours of the full-year program re-solved one
   day at a time at that plan's first stage (the fleet), each day against the rows it owns
   with the day before fixed (start-ups, minimum run and ramp across midnight; the last day
   closes the cycle), month totals shared out between the days, the whole hourly counts
   found by diving on the day's LP (:func:`dive_day`). The cheaper of the two plans that
   passes the re-check is kept. Days named by a failed check become groups of their own and
   the problem is solved again (repair).
6. **The bound.** :func:`mean_bound`: the MILP on each group's *mean* day (weighted by its
   days) with the hourly counts relaxed and the rows that tie hours together (start-ups,
   minimum run, ramp) dropped. Averaging any full-year plan, so relaxed, over the days of
   each group gives a plan of it at the same first stage costing no more (every row left is
   linear and alike for the days of a group; month totals are sums over the days), so its
   optimum and HiGHS's dual bound of it are lower bounds on the full-year optimum. With whole
   hourly counts on few typical days the lower-envelope bound (:func:`lower_bound`) may be
   higher (it keeps the integrality): the MILP on the lower envelopes with those rows dropped
   (every hour's least cost is non-decreasing in its demand), plus the requests above the
   envelopes at their class's cheapest price (:func:`excess_bound`); the higher one is used.

The gap reported is ``(full-year cost of the plan - lower bound) / full-year cost``: a
proven gap of the returned full-year plan against a bound of the full-year problem; the
aggregation error is reported apart (:meth:`Aggregation.error`). When the gap is above the
target, the number of typical days grows (up to :data:`MAX_TYPICAL_DAYS`) while time is
left. Everything is deterministic (one scenario: the medians).

Public API: :class:`YearSettings`, :func:`year_demand`, :func:`aggregate`,
:class:`Aggregation`, :func:`year_problem`, :func:`aggregated_problem`, :func:`expand`,
:func:`resolve_by_day`, :func:`dive_day`, :func:`mean_bound`, :func:`lower_bound`,
:func:`solve_year`, :class:`YearSolve`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from planner._runtime import solver_output_guard
from planner.engines.optimize_data import OptionData, Problem, set_block_bounds
from planner.engines.optimize_milp import (
    _COUPLING,
    CheckReport,
    Milp,
    PlanArrays,
    build_milp,
    check_plan,
    decode,
    encode,
    option_loads,
    plan_costs,
    solve_milp,
    tight_starts,
)
from planner.errors import PlannerError

__all__ = [
    "DAYS_PER_MONTH",
    "MAX_TYPICAL_DAYS",
    "Aggregation",
    "YearSettings",
    "YearSolve",
    "aggregate",
    "aggregated_problem",
    "choose_typical_days",
    "envelope_width",
    "dive_day",
    "excess_bound",
    "expand",
    "lower_bound",
    "mean_bound",
    "relax_hourly",
    "resolve_by_day",
    "solve_year",
    "year_demand",
    "year_problem",
]

#: Days of each calendar month in a 365-day year (monthly factors are applied by these).
DAYS_PER_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
#: Most typical days (before the peak days) the refinement goes to.
MAX_TYPICAL_DAYS = 64
#: Above this many hourly (scale-to-zero) block columns in a typical-day problem, its hourly
#: counts are solved as a fluid (continuous) and rounded up on the horizon: whole counts make
#: HiGHS slow (measured: 8 typical days x 6 hourly options, 41 s whole vs 12 s fluid; 720 h
#: of ``bench_opt_year.py hourly``, 5 typical days x 6 options: 13.9 s of CPU whole against
#: 4 s fluid), and the day-by-day pass (:func:`resolve_by_day`) makes every hour's counts
#: whole anyway. Small problems keep whole counts (and the lower-envelope bound in them).
MAX_WHOLE_HOURLY_COLUMNS = 500
HOURS_PER_YEAR = 8760.0


@dataclass(frozen=True)
class YearSettings:
    """How to state and aggregate a long horizon.

    Attributes
    ----------
    horizon_hours : int
        Hours of the horizon, a whole number of days (8,760: a year).
    monthly_factors : tuple of 12 float, optional
        Traffic multiplier of each calendar month (January first); default 1.
    growth_per_year : float
        Within-horizon traffic ramp: hour ``t`` carries ``(1 + g) ** (t / 8760)`` of the
        profile's traffic.
    typical_days : int
        Typical days to start with (the peak days come on top); default: chosen from the
        aggregation error (:func:`choose_typical_days`).
    """

    horizon_hours: int = 8760
    monthly_factors: tuple[float, ...] | None = None
    growth_per_year: float = 0.0
    typical_days: int | None = None

    def __post_init__(self) -> None:
        h = self.horizon_hours
        if int(h) != h or h < 48 or h % 24:
            raise PlannerError(f"optimize.horizon_hours: expected a whole number of days (a "
                               f"multiple of 24, at least 48), got {h}")
        if self.monthly_factors is not None and (
                len(self.monthly_factors) != 12 or
                not all(math.isfinite(f) and f >= 0 for f in self.monthly_factors) or
                not any(f > 0 for f in self.monthly_factors)):
            raise PlannerError("optimize.monthly_factors: expected 12 non-negative numbers "
                               "(January first), not all zero")
        if not (math.isfinite(self.growth_per_year) and self.growth_per_year > -1):
            raise PlannerError("trends.traffic_growth_per_year: expected > -1 for the "
                               f"within-year ramp, got {self.growth_per_year}")
        if self.typical_days is not None and (int(self.typical_days) != self.typical_days or
                                              not 1 <= self.typical_days <= MAX_TYPICAL_DAYS):
            raise PlannerError(f"optimize.typical_days: expected a whole number in 1.."
                               f"{MAX_TYPICAL_DAYS}, got {self.typical_days}")


# --------------------------------------------------------------------------------------------
# the year


def day_factors(n_days: int, monthly_factors: Sequence[float] | None) -> np.ndarray:
    """(n_days,) the monthly factor of each day (day 0 = 1 January; 365-day years repeat)."""
    if monthly_factors is None:
        return np.ones(n_days)
    month = np.repeat(np.arange(12), DAYS_PER_MONTH)  # (365,)
    return np.asarray(monthly_factors, float)[month[np.arange(n_days) % 365]]


def year_demand(profile_demand: np.ndarray, settings: YearSettings) -> np.ndarray:
    """(S, C, H) requests/s in every hour of the horizon from the profile's (S, C, P).

    The profile (a day or a week) is tiled from hour 0, then each hour is multiplied by its
    calendar month's factor and by the ramp ``(1 + g) ** (hour / 8760)``.
    """
    d = np.asarray(profile_demand, float)
    P = d.shape[-1]
    H = int(settings.horizon_hours)
    reps = -(-H // P)
    out = np.tile(d, (1, 1, reps))[..., :H]
    f = np.repeat(day_factors(H // 24, settings.monthly_factors), 24)
    if settings.growth_per_year:
        f = f * (1.0 + settings.growth_per_year) ** (np.arange(H) / HOURS_PER_YEAR)
    return out * f


# --------------------------------------------------------------------------------------------
# aggregation into typical days


@dataclass
class Aggregation:
    """Days grouped into typical days, with their envelopes.

    Attributes
    ----------
    labels : (n_days,) group of each day
    counts : (K,) days in each group
    upper, lower : (S, C, K, 24) hour by hour the largest / smallest demand of the group's
        days (requests/s)
    peak_groups : groups kept for a peak day (one day each)
    forced_days : days kept as groups of their own (the peaks and any repaired days)
    """

    labels: np.ndarray
    counts: np.ndarray
    upper: np.ndarray
    lower: np.ndarray
    peak_groups: tuple[int, ...]
    forced_days: tuple[int, ...]

    @property
    def k(self) -> int:
        return int(self.counts.size)

    def expanded(self, which: str = "upper") -> np.ndarray:
        """(S, C, H) the envelope ``which`` laid back over the days of the horizon."""
        env = self.upper if which == "upper" else self.lower
        S, C = env.shape[:2]
        return env[:, :, self.labels, :].reshape(S, C, -1)

    def error(self, demand: np.ndarray) -> dict[str, float]:
        """How far the envelopes are from the hourly demand (all classes' requests/s summed):
        RMSE and largest absolute error, in requests/s and as shares of the mean and peak."""
        tot = demand.sum(axis=1)
        out: dict[str, float] = {}
        mean, peak = float(tot.mean()), float(tot.max())
        for which in ("upper", "lower"):
            e = self.expanded(which).sum(axis=1) - tot
            rmse = float(np.sqrt(np.mean(e ** 2)))
            mx = float(np.abs(e).max())
            out[f"{which}_rmse_rps"] = rmse
            out[f"{which}_max_abs_rps"] = mx
            out[f"{which}_rmse_share_of_mean"] = rmse / mean if mean > 0 else 0.0
            out[f"{which}_max_abs_share_of_peak"] = mx / peak if peak > 0 else 0.0
        out["envelope_width_share"] = envelope_width(self, demand)
        return out


def _day_features(demand: np.ndarray) -> np.ndarray:
    """(n_days, S x C x 24) each day's demand, each class scaled by its peak over the year."""
    S, C, H = demand.shape
    scale = demand.max(axis=2, keepdims=True)
    x = np.where(scale > 0, demand / np.where(scale > 0, scale, 1.0), 0.0)
    return x.reshape(S, C, H // 24, 24).transpose(2, 0, 1, 3).reshape(H // 24, -1)


def peak_days(demand: np.ndarray) -> list[int]:
    """Days holding a class's peak hour, and the day of the largest total load (scaled by
    each class's peak), in that order, without repeats."""
    S, C, H = demand.shape
    days = [int(np.argmax(demand[:, c, :].max(axis=0))) // 24 for c in range(C)
            if demand[:, c, :].max() > 0]
    x = _day_features(demand)
    days.append(int(np.argmax(x.sum(axis=1))))
    return list(dict.fromkeys(days))


def aggregate(demand: np.ndarray, typical_days: int,
              forced_days: Sequence[int] = ()) -> Aggregation:
    """Group the days of ``demand`` (S, C, H) into at most ``typical_days`` typical days plus
    one group for each peak day (:func:`peak_days`) and each of ``forced_days``.

    Greedy farthest-point clustering (Gonzalez 1985, a 2-approximation of the k-center
    problem) in Chebyshev distance on :func:`_day_features`: the first centre is the day
    nearest the mean day, each next one the day farthest from every centre so far; days join
    their nearest centre. It stops early when every day equals a centre (exact aggregation).
    """
    S, C, H = demand.shape
    if H % 24:
        raise PlannerError(f"optimize.horizon_hours: {H} is not a whole number of days")
    n = H // 24
    forced = list(dict.fromkeys([*peak_days(demand), *(int(d) for d in forced_days)]))
    x = _day_features(demand)
    rest = np.setdiff1d(np.arange(n), forced)
    centres: list[int] = []
    if rest.size:
        dist = np.abs(x[rest] - x[rest].mean(axis=0)).max(axis=1)
        centres.append(int(rest[np.argmin(dist)]))
        near = np.abs(x[rest] - x[centres[0]]).max(axis=1)
        while len(centres) < typical_days and near.max() > 1e-12:
            j = int(np.argmax(near))
            centres.append(int(rest[j]))
            near = np.minimum(near, np.abs(x[rest] - x[rest[j]]).max(axis=1))
    labels = np.empty(n, dtype=int)
    labels[forced] = np.arange(len(forced))
    if rest.size:
        d = np.stack([np.abs(x[rest] - x[c]).max(axis=1) for c in centres])
        labels[rest] = len(forced) + np.argmin(d, axis=0)
    K = len(forced) + len(centres)
    counts = np.bincount(labels, minlength=K)
    days = demand.reshape(S, C, n, 24)
    upper = np.stack([days[:, :, labels == g, :].max(axis=2) for g in range(K)], axis=2)
    lower = np.stack([days[:, :, labels == g, :].min(axis=2) for g in range(K)], axis=2)
    return Aggregation(labels, counts, upper, lower, tuple(range(len(peak_days(demand)))),
                       tuple(forced))


def envelope_width(agg: Aggregation, demand: np.ndarray) -> float:
    """Share of the horizon's requests between the envelopes: sum over days of (upper -
    lower) / sum of demand. The lower bound prices each typical hour at its lower envelope,
    so this is roughly how far apart the bound and the plan can be (a guide, not a bound)."""
    tot = float(demand.sum())
    if tot <= 0:
        return 0.0
    w = (agg.upper - agg.lower).sum(axis=(0, 1, 3))
    return float((w * agg.counts).sum() / tot)


#: Envelope width (share of the requests, x the target gap) :func:`solve_year` picks the
#: typical days by: the plan is re-solved on every day and the bound is the mean-day one, so
#: the envelopes only size the fleet and the bound's averaging (measured on
#: ``bench_opt_year.py hourly``: 13 and 25 typical days chose the same fleet; the mean-day
#: bound was 0.12% lower on 13; 57 days, width 0.7%, cost four times the CPU of 25)
TYPICAL_DAY_SHARE = 4.0
#: Typical-day counts :func:`choose_typical_days` tries, in order.
TYPICAL_DAY_STEPS = (4, 8, 12, 16, 24, 32, 40, 48, 56, 64)


def choose_typical_days(demand: np.ndarray, gap: float, share: float = 0.8) -> int:
    """The fewest typical days (of :data:`TYPICAL_DAY_STEPS`) whose envelopes are within
    ``share`` x ``gap`` of the requests (:func:`envelope_width`); else the most. Aggregating
    is cheap next to solving, so the count is picked before any solve."""
    for k in TYPICAL_DAY_STEPS:
        if envelope_width(aggregate(demand, k), demand) <= share * gap:
            return k
    return TYPICAL_DAY_STEPS[-1]


# --------------------------------------------------------------------------------------------
# problems


def _copy_options(pb: Problem) -> dict[str, OptionData]:
    return {n: replace(o) for n, o in pb.options.items()}


def year_problem(pb: Problem, demand: np.ndarray) -> Problem:
    """The full-horizon problem: ``pb`` (a day or week profile) with ``demand`` (S, C, H) in
    place of the profile; every hour stands for ``hours_per_month / H`` hours of the average
    month, so the objective stays the average monthly cost. The options' intra-hour peak
    factors are the profile's."""
    opts = _copy_options(pb)
    set_block_bounds(opts, pb.routes, pb.classes, demand, pb.utilisation_target, pb.ha_reserve)
    return replace(pb, demand=demand, periods=int(demand.shape[-1]), options=opts,
                   messages=[], hour_weights=None, flow_weights=None, cycle_hours=None)


def _flat(env: np.ndarray) -> np.ndarray:
    S, C, K, T = env.shape
    return env.reshape(S, C, K * T)



def _untie_hours(opts: dict) -> None:
    """Drop what ties an hourly option's hours together (start-up cost, minimum run, ramp
    limit), in place: a relaxation, so the bounds built on it stay valid."""
    for o in opts.values():
        if o.stage == "hourly":
            o.startup_usd_per_block = np.zeros_like(np.asarray(
                o.startup_usd_per_block if o.startup_usd_per_block is not None else [0.0],
                float))
            o.min_run_hours = 1
            o.max_change_blocks = math.inf


def aggregated_problem(year: Problem, agg: Aggregation, which: str) -> Problem:
    """The typical-day problem on the ``upper`` envelopes (the plan) or the ``lower`` ones
    (the bound: the rows tying hours together dropped, see the module docstring)."""
    w = year.hour_weight  # hours of the month one hour of the horizon stands for
    hw = np.repeat(agg.counts.astype(float), 24) * w
    opts = _copy_options(year)
    # big-M bounds from the upper envelope: enough for every day of the group, either way
    set_block_bounds(opts, year.routes, year.classes, _flat(agg.upper),
                     year.utilisation_target, year.ha_reserve)
    if which == "upper":
        S, C, K, T = agg.upper.shape
        days = year.demand.reshape(S, C, -1, T)
        tot = np.stack([days[:, :, agg.labels == g, :].sum(axis=2) for g in range(K)], axis=2)
        # hours of the month one request/s at the envelope stands for: sum over the group's
        # days of demand / envelope (the days' flows are the envelope's scaled down)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(agg.upper > 0, tot / agg.upper, agg.counts[None, None, :, None])
        fw = _flat(ratio)[0] * w  # (C, K*T); one scenario
        return replace(year, demand=_flat(agg.upper), periods=K * T, options=opts,
                       messages=[], hour_weights=hw, flow_weights=fw, cycle_hours=24)
    if which == "mean":
        S, C, K, T = agg.upper.shape
        days = year.demand.reshape(S, C, -1, T)
        mean = np.stack([days[:, :, agg.labels == g, :].mean(axis=2) for g in range(K)],
                        axis=2)
        _untie_hours(opts)
        return replace(year, demand=_flat(mean), periods=K * T, options=opts, messages=[],
                       hour_weights=hw, flow_weights=None, cycle_hours=24)
    if which != "lower":
        raise ValueError(f"which: expected 'upper', 'lower' or 'mean', got {which!r}")
    _untie_hours(opts)
    return replace(year, demand=_flat(agg.lower), periods=agg.k * 24, options=opts,
                   messages=[], hour_weights=hw, flow_weights=None, cycle_hours=24,
                   budget_usd_per_month=None, max_share_per_provider=None,
                   min_onprem_share=None)


def keep_provider_shares(lower: Problem, year: Problem) -> Problem:
    """The lower-envelope problem with the provider-share caps kept, taken of the full
    horizon's requests (:attr:`Problem.share_total`). Still a relaxation when every
    hour-indexed count of ``lower`` is continuous (no whole hourly counts): the full-horizon
    optimum, its flows scaled down to each day's lower envelope and averaged over the days
    of each group, is a plan of it (per-hour rows are convex, the first stage is common)
    that costs no more, and sends each provider no more requests than the full plan does,
    which is at most the cap x the full horizon's requests."""
    if year.max_share_per_provider is None:
        return lower
    w = year.hour_weight  # hours of the month one hour of the horizon stands for
    total = year.demand.sum(axis=(1, 2)) * w / lower.hour_weight
    return replace(lower, max_share_per_provider=year.max_share_per_provider,
                   share_total=total)


# --------------------------------------------------------------------------------------------
# expansion and repair


def _ramp_envelope(b: np.ndarray, step: float) -> np.ndarray:
    """The smallest series >= ``b`` (last axis, cyclic) changing by at most ``step`` per hour:
    ``max_t b_t - step x |t - h|`` (running maxima on three laps, no Python loop)."""
    H = b.shape[-1]
    t = np.arange(3 * H)
    bb = np.concatenate([b, b, b], axis=-1)
    f = np.maximum.accumulate(bb + step * t, axis=-1) - step * t
    g = np.flip(np.maximum.accumulate(np.flip(f - step * t, -1), axis=-1), -1) + step * t
    return np.maximum(g[..., H:2 * H], b)


def _min_run_repair(b: np.ndarray, run: int) -> np.ndarray:
    """The least series >= ``b`` (last axis, cyclic) whose start-ups keep the minimum run:
    forward in time, each hour holds at least the blocks started in the ``run - 1`` hours
    before it (then the blocks started in any ``run`` hours are at most the count at the end
    of them). Sequential by nature (each hour's starts depend on the hour before), so a loop
    over the hours of each series; laps until the cyclic wrap settles."""
    out = np.array(b, float)
    if run <= 1:
        return out
    flat = out.reshape(-1, out.shape[-1])
    H = flat.shape[-1]
    r = min(run, H)
    for x in flat:
        for _lap in range(4):
            changed = False
            st = np.maximum(0.0, x - np.roll(x, 1)).tolist()
            xs = x.tolist()
            win = sum(st[H - r + 1:])  # starts in the r - 1 hours before hour 0
            for h in range(H):
                if xs[h] < win - 1e-9:
                    xs[h] = win
                    changed = True
                sh = max(0.0, xs[h] - xs[h - 1])
                win += sh - st[(h - r + 1) % H]
                st[h] = sh
            x[:] = xs
            if not changed:
                break
    return out


def _runnable(b: np.ndarray, run: int, step: float, rounds: int = 20) -> np.ndarray:
    """``b`` raised until it keeps the minimum run (``run`` hours) and the ramp limit
    (``step`` blocks per hour), both cyclic; both repairs are the least raise that fixes
    their rule, so alternating them reaches the least series that keeps both."""
    for _ in range(rounds):
        prev = b
        if run > 1:
            b = _min_run_repair(b, run)
        if np.isfinite(step):
            b = _ramp_envelope(b, step)
        if np.array_equal(b, prev):
            break
    return b


def _hourly_cost(b: np.ndarray, lag: np.ndarray, usd_h: float, usd_start: float) -> float:
    return float(b.sum() * usd_h + np.maximum(0.0, b - b[..., lag]).sum() * usd_start)


def expand(year: Problem, agg: Aggregation, pb_agg: Problem, plan: PlanArrays) -> PlanArrays:
    """A typical-day plan laid over every day of the horizon (see the module docstring):
    counts and routing shares from each day's group, flows scaled to the day's demand class by
    class, rented counts cut to each hour's need where that is no dearer, ramps restored."""
    S, C, H = year.demand.shape
    K, T = agg.k, 24
    n = H // T

    def lay(a: np.ndarray) -> np.ndarray:  # (S, X, K*T) -> (S, X, H)
        s, x = a.shape[:2]
        return a.reshape(s, x, K, T)[:, :, agg.labels, :].reshape(s, x, n * T)

    blocks, used = lay(plan.blocks), lay(plan.used)
    env = agg.expanded("upper")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(env > 0, year.demand / env, 0.0)  # (S, C, H)
    cls = np.array([c for _, c in plan.pairs], dtype=int)
    flows = lay(plan.flows) * ratio[:, cls, :] if cls.size else lay(plan.flows)
    out = PlanArrays(list(plan.options), blocks, used, flows, dict(plan.finetune),
                     list(plan.pairs), None)
    load = option_loads(year, out)
    lag = year.lag(1)
    U, ha = year.utilisation_target, year.ha_reserve
    for j, d in enumerate(out.options):
        o = year.options[d]
        if o.stage != "hourly":
            continue
        run, step = int(o.min_run_hours), float(o.max_change_blocks)
        # whole blocks (a fluid typical-day plan is rounded up: more capacity, never less)
        b = np.ceil(blocks[:, j, :] - 1e-6)
        ld = load[:, j, :]
        need = np.ceil((ld / U + ha) / o.load_replicas_per_block - 1e-9)
        need = np.where(ld > 1e-12, np.maximum(need, o.min_blocks), 0.0)
        b = np.where(ld > 1e-12, np.maximum(b, need), b)
        su = float(np.max(o.startup_usd_per_block)) if o.startup_usd_per_block is not None \
            else 0.0
        usd = float(np.max(o.block_usd_per_hour))
        keep = _runnable(b, run, step)
        cut = _runnable(np.maximum(need, o.lb_blocks), run, step)
        b = cut if _hourly_cost(cut, lag, usd, su) < _hourly_cost(keep, lag, usd, su) else keep
        blocks[:, j, :] = b
        used[:, j, :] = np.where(b > 0, 1.0, 0.0)
    return out


# --------------------------------------------------------------------------------------------
# the full-year hourly plan at a fixed fleet, day by day


@dataclass
class DayByDay:
    """Outcome of :func:`resolve_by_day`: ``plan`` (None when no day could be re-solved),
    days re-solved, days that kept the reference plan's hours (no solution in the day's
    problem, or out of time), and LPs solved."""

    plan: PlanArrays | None
    solved: int
    kept: int
    lps: int
    time_s: float
    message: str


#: Fractional part below which a whole count is rounded down in :func:`dive_day` (above
#: it: up). Measured on 20 days of ``bench_opt_year.py hourly`` (their hourly cost): 0.7 and
#: one round land 1.1% above the days' LP optimum (0.5: 1.25%; every count rounded up: 2.7%;
#: HiGHS on each day's MILP at a 1% gap: 1.0%, but 0.3 s of CPU a day against 0.04 s).
DIVE_FLOOR_BELOW = 0.7
#: Rounds of :func:`dive_day` before the remaining fractional counts are rounded up (more
#: rounds were no better on those days: 2 rounds 1.3%, 4 rounds 1.15%).
DIVE_ROUNDS = 1


def _lp(c: np.ndarray, A: sparse.csr_matrix, lo: np.ndarray, hi: np.ndarray, lb: np.ndarray,
        ub: np.ndarray) -> np.ndarray | None:
    with solver_output_guard():
        r = milp(c, integrality=np.zeros(c.size), bounds=Bounds(lb, ub),
                 constraints=[LinearConstraint(A, lo, hi)] if A.shape[0] else [],
                 # HiGHS's presolve costs more than it saves on a day's LP (12 vs 20 ms)
                 options={"disp": False, "presolve": False})
    return np.asarray(r.x, float) if r.status == 0 and r.x is not None else None


def dive_day(c: np.ndarray, A: sparse.csr_matrix, lo: np.ndarray, hi: np.ndarray,
             lb: np.ndarray, ub: np.ndarray, integer: np.ndarray
             ) -> tuple[np.ndarray | None, int]:
    """A whole-count solution of a small MILP (one day at a fixed first stage) by diving on
    its LP relaxation: solve the LP; fix every fractional count, down when its fractional
    part is below :data:`DIVE_FLOOR_BELOW` (its load moves elsewhere), up otherwise; re-solve
    with the other columns free; repeat (:data:`DIVE_ROUNDS`). A round whose LP has no
    solution takes its counts up instead (always a solution: more capacity, the same flows).
    Finally the remaining fractional counts go up and the flows are re-solved. Returns the
    solution (None when the LP has none) and the number of LPs solved. A heuristic: its cost
    is an upper bound, the caller proves the gap against a separate lower bound."""
    ii = np.flatnonzero(integer)
    L, U = lb.copy(), ub.copy()
    x = _lp(c, A, lo, hi, L, U)
    n = 1
    if x is None:
        return None, n
    for _ in range(DIVE_ROUNDS):
        v = x[ii]
        down, up = np.floor(v + 1e-6), np.ceil(v - 1e-6)
        frac = v - down
        isfrac = up > down
        if not isfrac.any():
            break
        fdown = isfrac & (frac < DIVE_FLOOR_BELOW)
        L2, U2 = L.copy(), U.copy()
        L2[ii[isfrac]] = U2[ii[isfrac]] = np.where(fdown, down, up)[isfrac]
        x2 = _lp(c, A, lo, hi, L2, U2)
        n += 1
        if x2 is None and fdown.any():
            L2[ii[fdown]] = U2[ii[fdown]] = up[fdown]
            x2 = _lp(c, A, lo, hi, L2, U2)
            n += 1
        if x2 is None:
            break
        x, L, U = x2, L2, U2
    v = x[ii]
    if np.any(np.abs(v - np.round(v)) > 1e-6):
        L[ii] = U[ii] = np.ceil(v - 1e-6)
        x = _lp(c, A, lo, hi, L, U)
        n += 1
        if x is None:
            return None, n
    x[ii] = np.round(x[ii])
    return x, n


def _day_structure(m: Milp, day_hours: int) -> tuple[np.ndarray, np.ndarray, Any]:
    """(n,) day of each column (-1: not hour-indexed), (m,) day that owns each row (its
    latest hour's day; -1: no hour-indexed column; -2: a month-total row, :data:`_COUPLING`)
    and the matrix as COO."""
    col_hour = np.full(m.c.size, -1)
    for b in m.cols.blocks.values():
        if b.axes and b.axes[-1][0] == "hour" and b.index.size:
            col_hour[b.index] = np.arange(b.index.shape[-1])
    col_day = np.where(col_hour >= 0, col_hour // day_hours, -1)
    A = m.A.tocoo()
    row_day = np.full(m.A.shape[0], -1)
    np.maximum.at(row_day, A.row, col_day[A.col])
    row_day[np.isin(m.row_group, _COUPLING)] = -2
    return col_day, row_day, A


def resolve_by_day(year: Problem, ref: PlanArrays, *, deadline: float,
                   day_hours: int = 24) -> DayByDay:
    """The full-horizon hourly plan re-optimised day by day at ``ref``'s first stage.

    ``ref`` is a plan of ``year`` (the typical-day plan laid over the horizon, :func:`expand`);
    its first stage (servers, reserved and always-on blocks, fine-tunes) is kept. Then, day
    after day, the day's hour-indexed columns (whole hourly counts, flows, start-ups) are
    re-solved (:func:`dive_day`) against every row of the full-horizon program that the day
    owns (the rows whose latest hour is in the day: its hours' rows and the start-up,
    minimum-run and ramp rows reaching back into the day before), with every other column at
    its value so far (the first stage; the days before, already re-solved; on the last day
    the first day's, for the rows that wrap around the horizon). A month-total row (provider
    and on-prem shares, budget) is shared out: each day may use what ``ref`` uses on that day
    plus the slack ``ref`` leaves, pro rata to the day's requests; the days' shares add up to
    the row. So ``ref`` restricted to a day is a solution of the day's problem wherever the
    rows reaching into the day before allow it: when the dive finds a dearer day than
    ``ref``'s, ``ref``'s counts are kept with the flows re-solved. A day without a solution, and every day
    after the ``deadline``, keeps ``ref``'s hours. The start-ups are then set to the blocks
    started; the caller re-checks the whole plan (:func:`.optimize_milp.check_plan`) and
    keeps ``ref`` if it fails.
    """
    t0 = time.perf_counter()
    m = build_milp(year)
    x = encode(m, ref)
    col_day, row_day, A = _day_structure(m, day_hours)
    n_days = int(col_day.max()) + 1
    # entries by owning day of their row; columns by day
    e_day = row_day[A.row]
    order = np.argsort(e_day, kind="stable")
    er, ec, ev = A.row[order], A.col[order], A.data[order]
    e_bounds = np.searchsorted(e_day[order], np.arange(n_days + 1))
    corder = np.argsort(col_day, kind="stable")
    c_bounds = np.searchsorted(col_day[corder], np.arange(n_days + 1))
    # month-total rows: each day's share (what ref uses that day + pro-rata slack)
    coup = np.flatnonzero(row_day == -2)
    Ac = m.A[coup].tocoo()
    cd = col_day[Ac.col]
    on_day = cd >= 0
    use = np.zeros((coup.size, n_days))
    np.add.at(use, (Ac.row[on_day], cd[on_day]), Ac.data[on_day] * x[Ac.col[on_day]])
    fixed_part = np.bincount(Ac.row[~on_day], weights=Ac.data[~on_day] * x[Ac.col[~on_day]],
                             minlength=coup.size)
    day_req = year.demand.sum(axis=(0, 1)).reshape(n_days, day_hours).sum(axis=1)
    frac = day_req / max(float(day_req.sum()), 1e-300)
    total_use = use.sum(axis=1) + fixed_part
    lo_c, hi_c = m.lo[coup], m.hi[coup]
    with np.errstate(invalid="ignore"):
        c_lo = np.where(np.isfinite(lo_c)[:, None],
                        use - (total_use - lo_c)[:, None] * frac[None, :], -np.inf)
        c_hi = np.where(np.isfinite(hi_c)[:, None],
                        use + (hi_c - total_use)[:, None] * frac[None, :], np.inf)
    Acsr = m.A[coup].tocsr()
    solved = kept = lps = 0
    late = 0
    cpos = np.full(m.c.size, -1)
    for d in range(n_days):
        if time.perf_counter() > deadline:
            late = n_days - d
            break
        cs = corder[c_bounds[d]:c_bounds[d + 1]]
        sl = slice(e_bounds[d], e_bounds[d + 1])
        r, c, v = er[sl], ec[sl], ev[sl]
        inday = col_day[c] == d
        rows, rloc = np.unique(r, return_inverse=True)
        shift = np.bincount(rloc[~inday], weights=v[~inday] * x[c[~inday]],
                            minlength=rows.size)
        cpos[cs] = np.arange(cs.size)
        sub = sparse.coo_matrix((v[inday], (rloc[inday], cpos[c[inday]])),
                                shape=(rows.size, cs.size)).tocsr()
        cpos[cs] = -1
        lo, hi = m.lo[rows] - shift, m.hi[rows] - shift
        if coup.size:
            sub = sparse.vstack([sub, Acsr[:, cs]]).tocsr()
            lo = np.concatenate([lo, c_lo[:, d]])
            hi = np.concatenate([hi, c_hi[:, d]])
        ints = m.integrality[cs] > 0
        xd, n = dive_day(m.c[cs], sub, lo, hi, m.lb[cs], m.ub[cs], ints)
        lps += n
        if xd is None or m.c[cs] @ xd > m.c[cs] @ x[cs] + 1e-9 * abs(m.c[cs] @ x[cs]):
            # the dive did worse than the reference's own hours (x still holds them): the
            # reference's counts with the flows and start-ups re-solved, if they fit the day
            L, U = m.lb[cs].copy(), m.ub[cs].copy()
            L[ints] = U[ints] = np.round(x[cs][ints])
            xr = _lp(m.c[cs], sub, lo, hi, L, U)
            lps += 1
            if xr is not None and (xd is None or m.c[cs] @ xr < m.c[cs] @ xd):
                xd = xr
                xd[ints] = np.round(xd[ints])
        if xd is not None:
            x[cs] = xd
            solved += 1
        else:
            kept += 1
    if not solved:
        return DayByDay(None, 0, n_days, lps, time.perf_counter() - t0,
                        "no day re-solved")
    if "starts" in m.cols and m.cols["starts"].size:
        x = tight_starts(m, x)
    msg = f"{solved} of {n_days} day(s) re-solved"
    if kept:
        msg += f", {kept} without a solution kept as laid out"
    if late:
        msg += f", {late} kept as laid out (out of time)"
    return DayByDay(decode(m, x), solved, kept + late, lps, time.perf_counter() - t0, msg)


def relax_hourly(m: Milp) -> Milp:
    """``m`` with its hour-indexed counts (hourly blocks, hourly 'used') continuous: the first
    stage alone stays whole."""
    hc = np.zeros(m.c.size, bool)
    for name in ("blocks_hourly", "used_hourly"):
        if name in m.cols:
            hc[m.cols[name].ravel()] = True
    return replace(m, integrality=np.where(hc, 0, m.integrality))


def mean_bound(year: Problem, agg: Aggregation, *, gap: float,
               time_limit_s: float) -> tuple[float, str]:
    """A lower bound on the full-horizon optimum: HiGHS's dual bound of the mean-day problem
    (:func:`aggregated_problem` ``"mean"``) with the hourly counts relaxed
    (:func:`relax_hourly`) and the rows tying hours together dropped.

    Why it is a bound: take the full-horizon optimum, relax its hourly counts, drop its
    start-ups, and average each typical hour's columns over the days of its group. Every row
    left is linear, and the same for all the days of a group (demand, capacity, quality, TPM,
    fine-tunes, limits; the month totals, budget and shares, are sums over the days), so the
    average is a solution of the mean-day problem, at the same first stage, costing no more
    (the same costs, start-ups left out). Hence the mean-day optimum, and any dual bound of
    it, is at most the full-horizon optimum (Jensen: the relaxed hourly cost is convex in the
    demand). Returns the bound (NaN without one) and a note when the solve did not finish.
    """
    mp = replace(aggregated_problem(year, agg, "mean"), integer_hourly=year.integer_hourly
                 or year.ha_reserve > 0)
    m = relax_hourly(build_milp(mp))
    info = solve_milp(m, gap=gap, time_limit_s=time_limit_s)
    if info.status in ("error", "unbounded", "infeasible"):
        # a relaxation of a problem with a plan cannot be infeasible: numerical trouble
        return math.nan, f"the mean-day bound failed ({info.status}: {info.message})"
    note = "" if info.status == "optimal" else \
        f"the mean-day bound stopped at the time limit ({info.message})"
    return float(info.dual_bound), note


def lower_bound(year: Problem, agg: Aggregation, *, fluid: bool, gap: float,
                time_limit_s: float) -> float:
    """The lower-envelope bound (see the module docstring, 5.): HiGHS's dual bound of the
    lower-envelope problem plus :func:`excess_bound`; NaN without one."""
    lo = aggregated_problem(year, agg, "lower")
    if fluid and year.ha_reserve == 0:
        # continuous hourly counts (no minimum replicas): still a relaxation. With an HA
        # reserve the fluid model keeps it warm in every hour, which is not, so not then
        lo = replace(lo, integer_hourly=False)
    n_hourly = sum(o.stage == "hourly" for o in year.options.values())
    if not lo.integer_hourly or n_hourly == 0:
        lo = keep_provider_shares(lo, year)
    linfo = solve_milp(build_milp(lo), gap=gap, time_limit_s=time_limit_s)
    # HiGHS's dual bound holds with or without a plan of the lower problem
    if linfo.status in ("error", "unbounded", "infeasible"):
        return math.nan
    lb = linfo.dual_bound
    return float(lb + excess_bound(year, agg)) if np.isfinite(lb) else math.nan


# --------------------------------------------------------------------------------------------
# the loop


@dataclass
class YearSolve:
    """Outcome of :func:`solve_year`.

    ``cost`` is the full-year re-priced monthly cost of ``plan`` (an upper bound on the
    full-year optimum), ``bound`` a proven lower bound on that optimum (lower problem), ``gap``
    their relative difference; ``agg_objective`` the typical-day problem's own objective for
    the same plan. ``rounds`` has one row per aggregation tried.
    """

    status: str
    year: Problem
    plan: PlanArrays | None
    check: CheckReport
    cost: float
    bound: float
    gap: float
    agg_objective: float
    aggregation: Aggregation | None
    error: dict[str, float]
    rounds: pd.DataFrame
    milp_shape: tuple[int, int] = (0, 0)
    messages: list[str] = field(default_factory=list)


_HOUR = re.compile(r"\bh=(\d+)")


def excess_bound(year: Problem, agg: Aggregation) -> float:
    """USD/month the demand above the lower envelopes costs at least: every request above it
    is served by some route at no less than the class's cheapest price per request (block
    costs are not negative). Added to the lower problem's bound, still a lower bound: a day's
    plan, its flows scaled down to the envelope, serves the envelope; the requests scaled
    away cost at least that much."""
    extra = (year.demand - agg.expanded("lower")).sum(axis=2)[0]  # (C,) requests/s x hours
    cheapest = np.full(len(year.classes), np.inf)
    for r, c in year.pairs():
        usd = float(np.min(year.route_usd_per_request(r, year.classes[c])))
        cheapest[c] = min(cheapest[c], usd)
    cheapest = np.where(np.isfinite(cheapest), np.maximum(cheapest, 0.0), 0.0)
    return float(np.sum(np.maximum(extra, 0.0) * cheapest) * 3600.0 * year.hour_weight)


def _failed_days(check: CheckReport) -> list[int]:
    """Days named by the violations of a full-year check."""
    hours = [int(m.group(1)) for item in check.violations["item"].astype(str)
             for m in [_HOUR.search(item)] if m]
    return sorted({h // 24 for h in hours})


def solve_year(pb: Problem, settings: YearSettings, *, gap: float = 0.01,
               time_limit_s: float = 90.0,
               progress: Callable[[str], None] | None = None) -> YearSolve:
    """Plan the horizon of ``settings`` for the profile problem ``pb`` (one scenario).

    Solves the typical-day problems (upper: the plan; lower: the bound), re-checks and
    re-prices the plan on every hour, repairs failed days, and refines the aggregation while
    the gap is above ``gap`` and time is left. Never returns None: without a plan the status
    says why (``infeasible``, ``time_limit_no_solution``, ``error``).
    """
    say = progress or (lambda _t: None)
    t0 = time.perf_counter()
    if pb.n_scenarios != 1:
        raise PlannerError("optimize.horizon_hours: a long horizon is planned at the medians "
                           "(one scenario), not with --stochastic")
    demand = year_demand(pb.demand, settings)
    year = year_problem(pb, demand)
    sub_gap = max(gap / 4.0, 1e-4)
    bound_gap = max(gap / 10.0, 1e-4)
    k = int(settings.typical_days) if settings.typical_days is not None else \
        choose_typical_days(demand, gap, share=TYPICAL_DAY_SHARE)
    n_hourly = sum(o.stage == "hourly" for o in year.options.values())
    fluid = not year.integer_hourly
    forced: list[int] = []
    rounds: list[dict] = []
    best: YearSolve | None = None
    best_bound = -math.inf
    msgs: list[str] = []
    last_agg: Aggregation | None = None
    while True:
        round_t0 = time.perf_counter() - t0
        left = time_limit_s - round_t0
        agg = aggregate(demand, k, forced)
        last_agg = agg
        say(f"typical days: {agg.k} ({len(agg.forced_days)} peak or repaired day(s) kept "
            f"apart) for {demand.shape[-1] // 24} days")
        up = aggregated_problem(year, agg, "upper")
        if not fluid and n_hourly * agg.k * 24 > MAX_WHOLE_HOURLY_COLUMNS:
            fluid = True
            msgs.append(f"{n_hourly} hourly option(s) x {agg.k * 24} typical hours: hourly "
                        f"counts solved as a fluid on the typical days, then rounded up on "
                        f"every hour of the horizon")
        if fluid:
            up = replace(up, integer_hourly=False)
        m = build_milp(up)
        say(f"solving the typical-day MILP ({m.shape[0]:,} rows x {m.shape[1]:,} columns, "
            f"gap {sub_gap:g}{', hourly counts fluid' if fluid else ''})")
        # room left for the bound, or for a retry if no plan is found in time
        info = solve_milp(m, gap=sub_gap,
                          time_limit_s=max(left * 0.55, 1.0))
        row = {"typical_days": agg.k, "forced_days": len(agg.forced_days),
               "rows": m.shape[0], "columns": m.shape[1], "status": info.status,
               "aggregated_usd_per_month": info.objective, "full_year_usd_per_month": math.nan,
               "lower_bound_usd_per_month": math.nan, "gap": math.nan, "check_passed": False,
               "time_s": math.nan}
        if info.x is None:
            rounds.append({**row, "time_s": time.perf_counter() - t0})
            if best is None and info.status != "infeasible" and not fluid and n_hourly and \
                    time.perf_counter() - t0 < time_limit_s * 0.6:
                fluid = True  # whole hourly counts too slow: a fluid, rounded up after
                msgs.append(f"no plan in whole hourly counts on {agg.k} typical days within "
                            f"the time given; retried with fluid hourly counts")
                continue
            if best is None and info.status != "infeasible" and k > 2 and \
                    time.perf_counter() - t0 < time_limit_s * 0.7:
                k = max(2, k // 3)  # no plan in time: fewer typical days
                msgs.append(f"no plan on {agg.k} typical days within the time given; "
                            f"retried with fewer")
                continue
            if best is None:
                status = "infeasible" if info.status == "infeasible" else info.status
                return YearSolve(status, year, None, CheckReport(False, pd.DataFrame(
                    columns=["constraint", "item", "lhs", "rhs", "excess"])), math.nan,
                    math.nan, math.nan, math.nan, agg, agg.error(demand),
                    pd.DataFrame(rounds), m.shape,
                    [f"{status}: the typical-day problem has no plan ({info.message})"])
            break
        row["upper_s"] = time.perf_counter() - t0 - round_t0
        plan_agg = decode(m, info.x)
        say("re-checking the plan on every hour of the horizon")
        plan = expand(year, agg, up, plan_agg)
        check = check_plan(year, plan)
        cost = float(plan_costs(year, plan)["usd_per_month"].sum())
        row["laid_out_usd_per_month"] = cost
        left = time_limit_s - (time.perf_counter() - t0)
        say("bounding: the mean-day problem (hourly counts relaxed)")
        tb = time.perf_counter()
        lb, bmsg = mean_bound(year, agg, gap=bound_gap, time_limit_s=max(left * 0.5, 1.0))
        row["mean_bound_usd_per_month"] = lb
        if bmsg:
            msgs.append(bmsg)
        if not fluid and n_hourly:
            # whole hourly counts on few typical days: the lower envelopes in whole counts
            # may bound higher (integrality) than the mean days in relaxed counts
            left = time_limit_s - (time.perf_counter() - t0)
            say("bounding: the lower-envelope problem")
            lb_low = lower_bound(year, agg, fluid=fluid, gap=sub_gap,
                                 time_limit_s=max(left * 0.3, 1.0))
            row["lower_envelope_bound_usd_per_month"] = lb_low
            lb = float(np.nanmax([lb, lb_low])) if np.isfinite([lb, lb_low]).any() \
                else math.nan
        row["bound_s"] = time.perf_counter() - tb
        if np.isfinite(lb):
            best_bound = max(best_bound, float(lb))
        g_laid = (cost - best_bound) / abs(cost) if cost and np.isfinite(best_bound) \
            else math.inf
        if not check.passed or g_laid > gap + 1e-9:
            # the plan laid out is not within the gap asked for (or fails the check)
            say("re-solving the horizon day by day at the typical-day fleet")
            dd = resolve_by_day(year, plan, deadline=t0 + time_limit_s * 0.97)
            row.update(days_resolved=dd.solved, by_day_lps=dd.lps, by_day_s=dd.time_s)
            if dd.plan is not None:
                check2 = check_plan(year, dd.plan)
                cost2 = float(plan_costs(year, dd.plan)["usd_per_month"].sum())
                row["by_day_usd_per_month"] = cost2
                if check2.passed and (not check.passed or cost2 < cost):
                    if not any(t.startswith("the hours re-solved day by day") for t in msgs):
                        msgs.append(f"the hours re-solved day by day at the fleet of the "
                                    f"typical-day plan ({dd.message}): {cost2:,.0f} USD/month "
                                    f"against {cost:,.0f} laid out from the typical days")
                    plan, check, cost = dd.plan, check2, cost2
        g = max(0.0, (cost - best_bound) / abs(cost)) if cost and np.isfinite(best_bound) \
            else math.inf
        row.update(full_year_usd_per_month=cost, lower_bound_usd_per_month=lb, gap=g,
                   check_passed=check.passed, time_s=time.perf_counter() - t0)
        rounds.append(row)
        if check.passed and (best is None or not best.check.passed or cost < best.cost):
            best = YearSolve("", year, plan, check, cost, best_bound, g, info.objective, agg,
                             agg.error(demand), pd.DataFrame(), m.shape)
        elif best is None:
            best = YearSolve("", year, plan, check, cost, best_bound, g, info.objective, agg,
                             agg.error(demand), pd.DataFrame(), m.shape)
        best.bound = best_bound
        best.gap = max(0.0, (best.cost - best_bound) / abs(best.cost)) if best.cost and \
            np.isfinite(best_bound) else math.inf
        spent = time.perf_counter() - t0
        last_round_s = spent - round_t0
        if not check.passed:
            more = [d for d in _failed_days(check) if d not in forced]
            if more and spent < time_limit_s * 0.6:
                msgs.append(f"full-year check failed on {len(more)} day(s) "
                            f"({check.summary()}); repaired by keeping them as typical days "
                            f"of their own and solving again")
                forced += more[:8]
                continue
            break
        if best.gap <= gap + 1e-9:
            break
        # refine: the next round costs about twice this one; stop if it will not fit
        k_next = min(max(k + 8, round(1.5 * k)), MAX_TYPICAL_DAYS)
        # the next round costs more than this one (about in proportion to its size, a bit
        # worse): stop when it will not fit in the time left
        if k >= MAX_TYPICAL_DAYS or agg.k >= demand.shape[-1] // 24 or \
                spent + last_round_s * 1.5 * k_next / k > time_limit_s:
            break
        k = k_next
    best.rounds = pd.DataFrame(rounds)
    best.aggregation = best.aggregation or last_agg
    best.messages = msgs
    if not best.check.passed:
        best.status = "error"
        best.messages.append("WARNING: the full-year re-check failed: " + best.check.summary())
    else:
        best.status = "optimal" if best.gap <= gap + 1e-9 else "time_limit"
    return best
