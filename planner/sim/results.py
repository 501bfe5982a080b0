"""Simulation records as DataFrames, and their summaries.

Every DataFrame of a run is built here, once, from the engine's flat per-request records
(34 bytes per request while it runs: three float64 times, int32 pool and replica, int8
reasons). The requests frame keeps one row per request in compact dtypes (categorical
class, route, status and reasons; int32 replica; float64 times and tokens as the request
table has them: about 115 bytes per request).

Aggregate-only results (``records="aggregate"``, for very long runs) keep no per-request
rows: the latency summary (per class, and per class and arrival hour), the request counts
and the SLO attainment are computed at the end of the run by the same code as for the full
records, from a transient frame of the columns they need, so they are identical to those of a
full-record run; ``requests`` is then None.
``drop_reason`` / ``spill_reason`` are the refusal reasons of
:func:`planner.sim.routing.spill_decision` (names: :data:`REASONS`).

Definitions (per request):

* ``queue_s = start_s - arrival_s`` (admission into a batch, or hand-off to the API);
* ``ttft_s = first_token_s - arrival_s``;
* ``tpot_s = (finish_s - first_token_s) / (output_tokens - 1)`` (NaN for one output token);
* ``e2e_s = finish_s - arrival_s``;
* a request *meets its SLO* when it completed and its TTFT, TPOT and e2e are within the
  class's :class:`~planner.sim.plan.SLO` (a missing bound always holds);
* ``slo_attainment = met / (completed + dropped)``; ``goodput_rps = met / period_s``.

Cost: each pool costs ``replica-hours x usd_per_replica_hour`` over the period (a replica is
billed from its start, or its autoscaling decision, to its stop or the period end); the
API costs its tokens at its prices. A pool's cost is allocated to the requests it served
in proportion to their tokens (uncached input + output), so ``cost_usd`` sums to the total.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from planner.sim.routing import REASONS  # reason names by code (the spill decision's)

if TYPE_CHECKING:
    from planner.sim.engine import Engine
    from planner.sim.plan import SimPlan

__all__ = ["SimResult", "STATUSES", "REASONS"]

STATUSES = ("completed", "dropped", "in_flight", "pending")
_Q = (0.5, 0.9, 0.99)


def _per_interval(t_on, t_off, weights, edges) -> list[np.ndarray]:
    """Per-interval integrals of ``sum_i w_i 1[t_on_i <= t < t_off_i]``, one per weight vector.

    ``F(x) = sum_i w_i |[t_on_i, t_off_i] n (-inf, x]|`` is piecewise linear with breakpoints
    at the interval ends; its slope after a breakpoint is the cumulative sum of +w (starts)
    and -w (ends). One sort serves every weight vector. Returns ``diff(F(edges))``.
    """
    t_on = np.asarray(t_on, dtype=float)
    t_off = np.asarray(t_off, dtype=float)
    if t_on.size == 0:
        return [np.zeros(edges.size - 1) for _ in weights]
    bp = np.concatenate([t_on, t_off])
    order = np.argsort(bp, kind="stable")
    bp = bp[order]
    dbp = np.diff(bp)
    j = np.searchsorted(bp, edges, side="right") - 1
    jc = np.clip(j, 0, None)
    out = []
    for w in weights:
        w = np.broadcast_to(np.asarray(w, dtype=float), t_on.shape)
        slope = np.cumsum(np.concatenate([w, -w])[order])
        f_bp = np.concatenate([[0.0], np.cumsum(slope[:-1] * dbp)])
        f = np.where(j < 0, 0.0, f_bp[jc] + slope[jc] * (edges - bp[jc]))
        out.append(np.diff(f))
    return out


@dataclass(eq=False)
class SimResult:
    """Result of :func:`planner.sim.simulate`.

    Attributes
    ----------
    requests : DataFrame
        One row per request.
    utilisation : DataFrame
        One row per replica and interval: paid, busy and time-averaged batch / KV occupancy.
    deployments : DataFrame
        One row per pool and for the API: replica-hours, tokens, cost.
    period_s : float
        Simulated period (cost and rates are over ``[0, period_s]``).
    scale_events : DataFrame
        Autoscaling decisions (time, pool, replica, action).
    aggregates : dict, optional
        Aggregate-only results (``records="aggregate"``; ``requests`` is then None): the
        ``latency`` and ``hourly`` rows of :meth:`summary` and the counts of :meth:`totals`.
    """

    requests: pd.DataFrame | None
    utilisation: pd.DataFrame
    deployments: pd.DataFrame
    period_s: float
    plan: SimPlan
    scale_events: pd.DataFrame = field(default_factory=pd.DataFrame)
    aggregates: dict | None = None
    #: latency rows computed once per ``by_hour`` (the latency table and the summary share them)
    _rows_cache: dict = field(default_factory=dict, repr=False)

    @property
    def records(self) -> str:
        """``"full"`` (one row per request in :attr:`requests`) or ``"aggregate"``."""
        return "full" if self.requests is not None else "aggregate"

    # ------------------------------------------------------------------ summaries
    def summary(self) -> pd.DataFrame:
        """Tidy summary: columns ``section, class, hour, deployment, metric, value``.

        ``section`` is ``latency`` (per class and overall, ``hour = -1``), ``hourly``
        (per class and arrival hour), ``deployment`` (per pool, API and ``total``).
        """
        rows = [self._rows(by_hour=False), self._rows(by_hour=True)]
        dep = self.deployments.melt(id_vars=["deployment", "kind"], var_name="metric")
        dep = dep[dep["metric"] != "kind"]
        dep = dep.assign(section="deployment", **{"class": "all", "hour": -1})
        rows.append(dep[["section", "class", "hour", "deployment", "metric", "value"]])
        out = pd.concat(rows, ignore_index=True)
        out["value"] = out["value"].astype(float)
        return out

    def latency_table(self) -> pd.DataFrame:
        """Wide per-class latency table (one row per class, plus ``all``)."""
        s = self._rows(by_hour=False)
        return s.pivot_table(index="class", columns="metric", values="value", sort=False)

    def _rows(self, *, by_hour: bool) -> pd.DataFrame:
        if self.aggregates is not None:
            return self.aggregates["hourly" if by_hour else "latency"].copy()
        if by_hour not in self._rows_cache:
            self._rows_cache[by_hour] = self._latency_rows(by_hour=by_hour)
        return self._rows_cache[by_hour].copy()

    def _latency_rows(self, *, by_hour: bool) -> pd.DataFrame:
        """The summary rows from the per-request frame: the columns the aggregate-only
        results read, by the same code (:func:`_summary_rows`)."""
        df = self.requests
        status = df["status"].cat.codes.to_numpy()
        arr = df["arrival_s"].to_numpy()
        cols = _Columns(df["class"].cat.codes.to_numpy(), list(df["class"].cat.categories),
                        arr, status, df["route_kind"].cat.codes.to_numpy(),
                        df["meets_slo"].to_numpy(), df["output_tokens"].to_numpy(),
                        lambda: df["queue_s"].to_numpy(),
                        {m: (lambda m=m: df[m].to_numpy()) for m in ("ttft_s", "tpot_s",
                                                                     "e2e_s")})
        return _summary_rows(cols, self.period_s, by_hour=by_hour)

    def met_output_tokens(self) -> float:
        """Output tokens of the requests that met their SLO (for goodput in tokens/s)."""
        if self.aggregates is not None:
            return self.aggregates["met_output_tokens"]
        df = self.requests
        return float(df.loc[df["meets_slo"], "output_tokens"].sum())

    def slo_bound_counts(self) -> dict[tuple[str, str], tuple[int, int]]:
        """Per (class, bound) of the plan's SLOs (``ttft_s``, ``tpot_s``, ``e2e_s``, finite
        bounds only): (requests that completed within the bound, requests completed or
        dropped), for classes with any."""
        if self.aggregates is not None:
            return dict(self.aggregates["slo_bounds"])
        df = self.requests
        done = df["status"].isin(["completed", "dropped"]).to_numpy()
        comp_all = (df["status"] == "completed").to_numpy()
        cls = df["class"].astype(str).to_numpy()
        out = {}
        for name, slo in self.plan.slos.items():
            sel = done & (cls == name)
            n_done = int(sel.sum())
            if not n_done:
                continue
            for m in ("ttft_s", "tpot_s", "e2e_s"):
                bound = getattr(slo, m)
                if not math.isfinite(bound):
                    continue
                ok = comp_all[sel] & ~(df[m].to_numpy(dtype=float)[sel] > bound)
                out[(name, m)] = (int(ok.sum()), n_done)
        return out

    def totals(self) -> dict[str, float]:
        """Headline figures: requests by status, spillover share, SLO attainment, cost."""
        total = self.deployments.set_index("deployment")
        if self.aggregates is not None:
            return {**self.aggregates["totals"], "usd": float(total.loc["total", "usd"])}
        df = self.requests
        st = df["status"].value_counts()
        met = int(df["meets_slo"].sum())
        denom = int(st.get("completed", 0) + st.get("dropped", 0))
        return {
            "requests": float(len(df)),
            "completed": float(st.get("completed", 0)),
            "dropped": float(st.get("dropped", 0)),
            "in_flight": float(st.get("in_flight", 0)),
            "pending": float(st.get("pending", 0)),
            "spillover_share": float((df["route_kind"] == "api").mean()) if len(df) else 0.0,
            "slo_attainment": met / denom if denom else math.nan,
            "goodput_rps": met / self.period_s if self.period_s > 0 else math.nan,
            "usd": float(total.loc["total", "usd"]),
        }


# ---------------------------------------------------------------------- building
RECORDS = ("full", "aggregate")


def build_result(eng: Engine, records: str = "full") -> SimResult:
    """Turn an engine's flat records into a :class:`SimResult` (the only place frames are built).

    ``records``: ``"full"`` (one row per request) or ``"aggregate"`` (summaries only; see the
    module docstring).
    """
    if records not in RECORDS:
        raise ValueError(f"records must be one of {RECORDS}, got {records!r}")
    plan = eng.plan
    req = eng.req
    n = eng.n
    # the engine's record buffers themselves (the engine is done with them): no copies
    start = np.frombuffer(eng.start, dtype=np.float64)
    ftok = np.frombuffer(eng.ftok, dtype=np.float64)
    fin = np.frombuffer(eng.fin, dtype=np.float64)
    rpool = np.frombuffer(eng.rpool, dtype=np.int32)
    rrep = np.frombuffer(eng.rrep, dtype=np.int32)
    drop = np.frombuffer(eng.drop, dtype=np.int8)
    spill = np.frombuffer(eng.spill, dtype=np.int8)
    arr = req.arrival_s
    inp = req.input_tokens
    out = req.output_tokens
    cached = req.cached_input_tokens

    if eng.until_s is not None:
        end_s = float(eng.until_s)
        for a in (start, ftok, fin):
            a[a > end_s] = np.nan
    else:
        cands = [arr[-1] if n else 0.0]
        if np.isfinite(fin).any():
            cands.append(np.nanmax(fin))
        if eng.busy_to:
            cands.append(max(eng.busy_to))
        end_s = float(max(cands))

    status = np.full(n, 2, dtype=np.int8)  # in_flight
    status[np.isfinite(fin)] = 0
    status[drop > 0] = 1
    status[(rpool == -1) & (drop == 0)] = 3
    # ------------------------------------------------------------------ costs
    api = plan.api
    full = records == "full"
    cost = np.zeros(n) if full else None  # per request: only the full records have it
    is_api = rpool == -2
    dep_rows = []
    pool_names = [p.name for p in plan.pools]
    if api is not None:
        p_cached = api.cached_input_usd_per_mtok
        p_cached = api.input_usd_per_mtok if p_cached is None else p_cached
        c_api = (
            (inp - cached) * api.input_usd_per_mtok
            + cached * p_cached
            + out * api.output_usd_per_mtok
        ) / 1e6
        api_cost = c_api[is_api]
        api_usd = float(api_cost.sum())
        if full:
            cost[is_api] = api_cost
        del c_api, api_cost
    tok = (inp - cached + out).astype(float)
    for k, pool in enumerate(eng.pools):
        spec = pool.spec
        paid_s = 0.0
        for r in pool.all:
            stop = r.stop_s if r.stop_s == r.stop_s else end_s
            paid_s += max(min(stop, end_s) - min(r.paid_from_s, end_s), 0.0)
        usd = paid_s / 3600.0 * spec.usd_per_replica_hour
        served = (rpool == k) & (np.isfinite(start))
        tsum = tok[served].sum()
        if tsum > 0 and full:
            cost[served] = usd * tok[served] / tsum
        dep_rows.append(
            {
                "deployment": spec.name,
                "kind": "gpu_pool",
                "requests": float((rpool == k).sum()),
                "completed": float(((rpool == k) & (status == 0)).sum()),
                "input_tokens": float(inp[served].sum()),
                "output_tokens": float(out[served].sum()),
                "replica_hours": paid_s / 3600.0,
                "usd": usd,
            }
        )
    if api is not None:
        dep_rows.append(
            {
                "deployment": api.name,
                "kind": "api",
                "requests": float(is_api.sum()),
                "completed": float((is_api & (status == 0)).sum()),
                "input_tokens": float(inp[is_api].sum()),
                "output_tokens": float(out[is_api].sum()),
                "replica_hours": 0.0,
                "usd": api_usd,
            }
        )
    deployments = pd.DataFrame(dep_rows)
    # ------------------------------------------------------------------ utilisation
    utilisation = _utilisation(eng, end_s, start, fin, rrep)
    if len(utilisation):
        g = utilisation.groupby("pool", sort=False)
        paid = g["paid_s"].sum()
        busy = (g["busy_s"].sum() / paid).rename("busy_share")
        batch = (
            (utilisation["mean_batch"] * utilisation["paid_s"])
            .groupby(utilisation["pool"], sort=False)
            .sum()
            / paid
        ).rename("mean_batch")
        deployments = deployments.merge(
            pd.concat([busy, batch], axis=1), left_on="deployment", right_index=True, how="left"
        )
    tot = deployments.drop(
        columns=["deployment", "kind", "busy_share", "mean_batch"], errors="ignore"
    ).sum()
    deployments = pd.concat(
        [deployments, pd.DataFrame([{"deployment": "total", "kind": "total", **tot.to_dict()}])],
        ignore_index=True,
    )
    deployments["share_of_usd"] = deployments["usd"] / tot["usd"] if tot["usd"] > 0 else np.nan
    deployments["usd_per_1k_requests"] = np.where(
        deployments["requests"] > 0, deployments["usd"] / deployments["requests"] * 1000.0, np.nan
    )

    # ------------------------------------------------------------------ per request
    del tok
    tpot = _tpot(fin, ftok, out)
    ttft = ftok - arr
    e2e = fin - arr
    meets = status == 0
    for c, name in enumerate(req.class_names):
        slo = plan.slos.get(name)
        if slo is None:
            continue
        m = req.class_idx == c
        ok = (ttft[m] <= slo.ttft_s) & (e2e[m] <= slo.e2e_s) & ~(tpot[m] > slo.tpot_s)
        meets[m] &= ok
    route_kind = np.where(rpool >= 0, 0, np.where(is_api, 1, 2)).astype(np.int8)
    aggregates = None
    requests = None
    if full:
        route_names = [*pool_names, *([api.name] if api is not None else []), ""]
        route_code = np.where(
            rpool >= 0, rpool, np.where(is_api, len(pool_names), len(route_names) - 1)
        )
        # arrays made here, so the frame holds them without another copy (copy=False)
        requests = pd.DataFrame(
            {
                "request_id": np.arange(n),
                "class": pd.Categorical.from_codes(req.class_idx, categories=req.class_names),
                "arrival_s": arr.copy(),  # the request table's arrays are the caller's
                "route": pd.Categorical.from_codes(route_code, categories=route_names),
                "route_kind": pd.Categorical.from_codes(route_kind,
                                                        categories=["gpu", "api", "none"]),
                "replica": rrep.astype(np.int64),
                "start_s": start,
                "first_token_s": ftok,
                "finish_s": fin,
                "input_tokens": inp.copy(),
                "output_tokens": out.copy(),
                "cached_input_tokens": cached.copy(),
                "cost_usd": cost,
                "status": pd.Categorical.from_codes(status, categories=STATUSES),
                "drop_reason": pd.Categorical.from_codes(drop, categories=REASONS),
                "spill_reason": pd.Categorical.from_codes(spill, categories=REASONS),
                "queue_s": start - arr,
                "ttft_s": ttft,
                "tpot_s": tpot,
                "e2e_s": e2e,
                "meets_slo": meets,
            },
            copy=False,
        )
    else:
        # latency columns made when read (one at a time), not all at once
        del ttft, tpot, e2e
        cols = _Columns(req.class_idx, list(req.class_names), arr, status, route_kind, meets,
                        out, lambda: start - arr,
                        {"ttft_s": lambda: ftok - arr,
                         "tpot_s": lambda: _tpot(fin, ftok, out),
                         "e2e_s": lambda: fin - arr})
        aggregates = _aggregates(cols, plan, end_s)

    scale = pd.DataFrame(eng.scale_log, columns=["time_s", "pool", "replica", "action"])
    if len(scale):
        scale["pool"] = [pool_names[k] for k in scale["pool"]]
    return SimResult(
        requests=requests,
        utilisation=utilisation,
        deployments=deployments,
        period_s=end_s,
        plan=plan,
        scale_events=scale,
        aggregates=aggregates,
    )

def _tpot(fin: np.ndarray, ftok: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Time per output token after the first (NaN for one output token)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(out > 1, (fin - ftok) / (out - 1), np.nan)


@dataclass
class _Columns:
    """The per-request columns the summaries read (aggregate-only results)."""

    cls: np.ndarray
    class_names: list
    arrival_s: np.ndarray
    status: np.ndarray
    route_kind: np.ndarray
    meets: np.ndarray
    output_tokens: np.ndarray
    queue_s: Any  # () -> array
    latency: dict  # name -> (() -> array)


def _aggregates(c: _Columns, plan: SimPlan, period_s: float) -> dict:
    """What :class:`SimResult` keeps of a run without per-request records: the rows of
    :meth:`SimResult._latency_rows` (computed as it does: the same pandas group means and
    quantiles, on one column at a time), the counts of :meth:`SimResult.totals`, the output
    tokens of the requests meeting their SLO and, per class SLO bound, how many completed or
    dropped requests met it."""
    n = c.status.size
    counts = np.bincount(c.status, minlength=len(STATUSES))
    met = int(c.meets.sum())
    denom = int(counts[0] + counts[1])
    totals = {
        "requests": float(n),
        "completed": float(counts[0]), "dropped": float(counts[1]),
        "in_flight": float(counts[2]), "pending": float(counts[3]),
        "spillover_share": float((c.route_kind == 1).mean()) if n else 0.0,
        "slo_attainment": met / denom if denom else math.nan,
        "goodput_rps": met / period_s if period_s > 0 else math.nan,
    }
    done = (c.status == 0) | (c.status == 1)
    bounds = {}
    for k, name in enumerate(c.class_names):
        slo = plan.slos.get(name)
        if slo is None:
            continue
        sel = done & (c.cls == k)
        n_done = int(sel.sum())
        if not n_done:
            continue
        comp = (c.status == 0)[sel]
        for m in ("ttft_s", "tpot_s", "e2e_s"):
            bound = getattr(slo, m)
            if not math.isfinite(bound):
                continue
            ok = comp & ~(c.latency[m]()[sel] > bound)
            bounds[(name, m)] = (int(ok.sum()), n_done)
    return {
        "latency": _summary_rows(c, period_s, by_hour=False),
        "hourly": _summary_rows(c, period_s, by_hour=True),
        "totals": totals,
        "met_output_tokens": float(c.output_tokens[c.meets].sum()),
        "slo_bounds": bounds,
    }


def _summary_rows(c: _Columns, period_s: float, *, by_hour: bool) -> pd.DataFrame:
    """:meth:`SimResult._latency_rows` from the columns (same rows, same numbers)."""
    hour = (c.arrival_s // 3600).astype(np.int64) if by_hour else None
    completed = c.status == 0
    dropped = c.status == 1
    frames = []
    n = c.status.size
    agg_all = None
    for code, cname in [(None, "all"), *enumerate(c.class_names)]:
        idx = None if code is None else np.flatnonzero(c.cls == code)
        if idx is not None and idx.size == n and agg_all is not None:
            # the class holds every request: its rows are those of "all"
            frames.append(_long_rows(agg_all, cname))
            continue

        def sel(a, idx=idx):
            return a if idx is None else a[idx]

        m_all = n if idx is None else idx.size
        if m_all == 0:
            continue
        keys = sel(hour) if by_hour else np.full(m_all, -1, dtype=np.int64)
        # the distinct keys, sorted, and each request's index among them (small ints: one
        # bincount, no sort)
        lo = int(keys.min())
        present = np.bincount(keys - lo) > 0
        uniq = np.flatnonzero(present).astype(np.int64) + lo
        inv = (np.cumsum(present) - 1)[keys - lo]
        del present
        k = uniq.size
        comp = sel(completed)
        met = sel(c.meets)
        agg = pd.DataFrame(index=pd.Index(uniq, name="hour"))
        agg["requests"] = np.bincount(inv, minlength=k)
        agg["completed"] = np.bincount(inv[comp], minlength=k)
        agg["dropped"] = np.bincount(inv[sel(dropped)], minlength=k)
        api = np.bincount(inv[sel(c.route_kind) == 1], minlength=k)
        met_n = np.bincount(inv[met], minlength=k)
        met_tokens = np.bincount(inv[met], weights=sel(c.output_tokens)[met], minlength=k)
        agg["queue_mean_s"] = pd.Series(sel(c.queue_s())).groupby(keys).mean()
        denom = (agg["completed"] + agg["dropped"]).replace(0, np.nan)
        span = 3600.0 if by_hour else period_s
        agg["slo_attainment"] = met_n / denom
        agg["spillover_share"] = api / agg["requests"]
        agg["goodput_rps"] = met_n / span if span > 0 else np.nan
        agg["goodput_tokens_per_s"] = met_tokens / span if span > 0 else np.nan
        dinv = inv[comp]
        for m in ("ttft_s", "tpot_s", "e2e_s"):
            qv = group_quantiles(sel(c.latency[m]())[comp], dinv, k, _Q)
            for j, q in enumerate(_Q):
                agg[f"{m[:-2]}_p{int(round(q * 100))}_s"] = qv[:, j]
        if idx is None:
            agg_all = agg
        frames.append(_long_rows(agg, cname))
    return _latency_frame(frames, by_hour)


def group_quantiles(values: np.ndarray, groups: np.ndarray, n_groups: int,
                    qs: tuple[float, ...]) -> np.ndarray:
    """Quantiles ``qs`` of ``values`` per group: ``out[g, j]``, NaN values left out (NaN for
    a group with none).

    The linear interpolation of pandas' ``groupby(...).quantile`` (and ``numpy.percentile``'s
    default definition), computed the way pandas computes it, so the same floats: with the
    group's ``m`` non-NaN values sorted, ``x = q (m - 1)``, ``i = int(x)``, ``f = x % 1``,
    the quantile is ``v[i]`` when ``f == 0`` else ``v[i] + (v[i + 1] - v[i]) f``. The values
    are put in group order by one stable (radix) sort of the group ids and each group's slice
    is sorted in place: every group and quantile at once, no pandas group-by.

    Parameters
    ----------
    values : float array
    groups : int array, same length, each in ``0 .. n_groups - 1``
    n_groups : int
    qs : quantiles in [0, 1]
    """
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups)
    keep = ~np.isnan(values)
    if not keep.all():
        values, groups = values[keep], groups[keep]
    counts = np.bincount(groups, minlength=n_groups)[:n_groups]
    starts = np.cumsum(counts) - counts
    if n_groups <= 1:
        sv = np.sort(values)
    else:
        # into group order (a stable radix sort of small ids), then each group's slice sorted
        small = np.uint8 if n_groups <= 255 else (np.uint16 if n_groups <= 65_535 else None)
        sv = values[np.argsort(groups.astype(small) if small else groups, kind="stable")]
        for a, m in zip(starts.tolist(), counts.tolist(), strict=True):
            if m > 1:
                sv[a:a + m].sort()
    out = np.full((n_groups, len(qs)), np.nan)
    has = counts > 0
    m1 = (counts[has] - 1).astype(np.float64)
    st = starts[has]
    for j, q in enumerate(qs):
        x = np.float64(q) * m1
        i = x.astype(np.int64)  # truncation, as pandas' cast
        f = np.fmod(x, 1.0)
        val = sv[st + i]
        nxt = sv[np.minimum(st + i + 1, sv.size - 1)]
        with np.errstate(invalid="ignore"):
            out[has, j] = np.where(f == 0.0, val, val + (nxt - val) * f)
    return out


def _long_rows(agg: pd.DataFrame, cname: str) -> pd.DataFrame:
    """One class's per-hour (or whole-run) columns as long (hour, metric, value) rows."""
    out = agg.reset_index().melt(id_vars="hour", var_name="metric")
    out["class"] = cname
    return out


def _latency_frame(frames: list[pd.DataFrame], by_hour: bool) -> pd.DataFrame:
    """The long latency rows of every class, in the summary's column order."""
    out = pd.concat(frames, ignore_index=True)
    out["section"] = "hourly" if by_hour else "latency"
    out["deployment"] = "all"
    return out[["section", "class", "hour", "deployment", "metric", "value"]]


def _utilisation(eng: Engine, end_s: float, start, fin, rrep) -> pd.DataFrame:
    width = eng.plan.util_interval_s
    n_iv = max(1, math.ceil(end_s / width - 1e-12)) if end_s > 0 else 1
    edges = np.arange(n_iv + 1, dtype=float) * width
    edges[-1] = max(edges[-1], end_s)
    need = (eng.req.input_tokens + eng.req.output_tokens).astype(float)
    has = rrep >= 0
    idx = np.nonzero(has)[0]
    keys = rrep[idx]
    if len(eng.replicas) <= np.iinfo(np.int16).max:
        # the same stable order, by a radix sort (numpy's stable sort of <= 16-bit ints)
        keys = keys.astype(np.uint8 if len(eng.replicas) <= 255 else np.int16)
    order = idx[np.argsort(keys, kind="stable")]
    bounds = np.searchsorted(rrep[order], np.arange(len(eng.replicas) + 1))
    b_gid = np.asarray(eng.busy_gid, dtype=np.int64)
    b_from = np.asarray(eng.busy_from, dtype=float)
    b_to = np.asarray(eng.busy_to, dtype=float)
    frames = []
    lo, hi = edges[:-1], edges[1:]
    # completions per replica and interval, all at once: the counts of ``np.histogram``
    # (intervals [a, b), the last one [a, b]) of the finite finish times
    n_rep = len(eng.replicas)
    fin_ok = np.isfinite(fin) & has
    fx = fin[fin_ok]
    bin_ = np.searchsorted(edges, fx, side="right") - 1
    bin_[fx == edges[-1]] = n_iv - 1
    inside = (bin_ >= 0) & (bin_ < n_iv)
    done_all = np.bincount(rrep[fin_ok][inside].astype(np.int64) * n_iv + bin_[inside],
                           minlength=n_rep * n_iv).reshape(n_rep, n_iv)
    del fin_ok, fx, bin_, inside
    for r in eng.replicas:
        if r is None:
            continue
        g = r.gid
        sel = order[bounds[g] : bounds[g + 1]]
        t_on = start[sel]
        t_off = fin[sel]
        t_off = np.minimum(np.where(np.isfinite(t_off), t_off, end_s), end_s)
        running, kv = _per_interval(t_on, t_off, (1.0, need[sel]), edges)
        bm = b_gid == g
        bf, bt = b_from[bm], np.minimum(b_to[bm], end_s)
        if r.busy_since == r.busy_since:
            bf = np.append(bf, r.busy_since)
            bt = np.append(bt, end_s)
        (busy,) = _per_interval(bf, bt, (1.0,), edges)
        stop = r.stop_s if r.stop_s == r.stop_s else end_s
        paid = np.clip(np.minimum(hi, stop) - np.maximum(lo, r.paid_from_s), 0.0, None)
        done = done_all[g]
        with np.errstate(invalid="ignore", divide="ignore"):
            frames.append(
                pd.DataFrame(
                    {
                        "pool": r.pool.spec.name,
                        "replica": g,
                        "interval_start_s": lo,
                        "interval_end_s": hi,
                        "paid_s": paid,
                        "busy_s": busy,
                        "busy_share": np.where(paid > 0, busy / paid, np.nan),
                        "mean_batch": np.where(paid > 0, running / paid, np.nan),
                        "kv_reserved_share": np.where(paid > 0, kv / paid / r.pool.cap, np.nan),
                        "completed": done,
                    }
                )
            )
    if not frames:
        return pd.DataFrame(
            columns=[
                "pool",
                "replica",
                "interval_start_s",
                "interval_end_s",
                "paid_s",
                "busy_s",
                "busy_share",
                "mean_batch",
                "kv_reserved_share",
                "completed",
            ]
        )
    return pd.concat(frames, ignore_index=True)
