"""Simulation records as DataFrames, and their summaries.

Every DataFrame of a run is built here, once, from the engine's flat per-request lists.
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
from typing import TYPE_CHECKING

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
    """

    requests: pd.DataFrame
    utilisation: pd.DataFrame
    deployments: pd.DataFrame
    period_s: float
    plan: SimPlan
    scale_events: pd.DataFrame = field(default_factory=pd.DataFrame)

    # ------------------------------------------------------------------ summaries
    def summary(self) -> pd.DataFrame:
        """Tidy summary: columns ``section, class, hour, deployment, metric, value``.

        ``section`` is ``latency`` (per class and overall, ``hour = -1``), ``hourly``
        (per class and arrival hour), ``deployment`` (per pool, API and ``total``).
        """
        rows = [self._latency_rows(by_hour=False), self._latency_rows(by_hour=True)]
        dep = self.deployments.melt(id_vars=["deployment", "kind"], var_name="metric")
        dep = dep[dep["metric"] != "kind"]
        dep = dep.assign(section="deployment", **{"class": "all", "hour": -1})
        rows.append(dep[["section", "class", "hour", "deployment", "metric", "value"]])
        out = pd.concat(rows, ignore_index=True)
        out["value"] = out["value"].astype(float)
        return out

    def latency_table(self) -> pd.DataFrame:
        """Wide per-class latency table (one row per class, plus ``all``)."""
        s = self._latency_rows(by_hour=False)
        return s.pivot_table(index="class", columns="metric", values="value", sort=False)

    def _latency_rows(self, *, by_hour: bool) -> pd.DataFrame:
        df = self.requests
        cls = df["class"].astype(str)
        hour = (df["arrival_s"] // 3600).astype(np.int64)
        completed = df["status"] == "completed"
        dropped = df["status"] == "dropped"
        frames = []
        groups = [("all", None)] + [(c, cls == c) for c in df["class"].cat.categories]
        for cname, mask in groups:
            sub = df if mask is None else df[mask]
            keys = hour[sub.index] if by_hour else pd.Series(-1, index=sub.index)
            g = pd.DataFrame(
                {
                    "hour": keys,
                    "n": 1,
                    "completed": completed[sub.index].astype(int),
                    "dropped": dropped[sub.index].astype(int),
                    "api": (sub["route_kind"] == "api").astype(int),
                    "met": sub["meets_slo"].astype(int),
                    "met_tokens": np.where(sub["meets_slo"], sub["output_tokens"], 0),
                    "queue_s": sub["queue_s"],
                }
            ).groupby("hour")
            agg = g.agg(
                requests=("n", "sum"),
                completed=("completed", "sum"),
                dropped=("dropped", "sum"),
                api=("api", "sum"),
                met=("met", "sum"),
                met_tokens=("met_tokens", "sum"),
                queue_mean_s=("queue_s", "mean"),
            )
            denom = (agg["completed"] + agg["dropped"]).replace(0, np.nan)
            span = 3600.0 if by_hour else self.period_s
            agg["slo_attainment"] = agg["met"] / denom
            agg["spillover_share"] = agg["api"] / agg["requests"]
            agg["goodput_rps"] = agg["met"] / span if span > 0 else np.nan
            agg["goodput_tokens_per_s"] = agg["met_tokens"] / span if span > 0 else np.nan
            agg = agg.drop(columns=["met", "met_tokens", "api"])
            done = sub[completed[sub.index]]
            dkeys = keys[done.index]
            for m in ("ttft_s", "tpot_s", "e2e_s"):
                qs = done[m].groupby(dkeys).quantile(list(_Q)).unstack()
                for q in _Q:
                    col = f"{m[:-2]}_p{int(round(q * 100))}_s"
                    agg[col] = qs[q] if q in qs.columns else np.nan
            agg = agg.reset_index().melt(id_vars="hour", var_name="metric")
            agg["class"] = cname
            frames.append(agg)
        out = pd.concat(frames, ignore_index=True)
        out["section"] = "hourly" if by_hour else "latency"
        out["deployment"] = "all"
        return out[["section", "class", "hour", "deployment", "metric", "value"]]

    def totals(self) -> dict[str, float]:
        """Headline figures: requests by status, spillover share, SLO attainment, cost."""
        df = self.requests
        st = df["status"].value_counts()
        met = int(df["meets_slo"].sum())
        denom = int(st.get("completed", 0) + st.get("dropped", 0))
        total = self.deployments.set_index("deployment")
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
def build_result(eng: Engine) -> SimResult:
    """Turn an engine's flat records into a :class:`SimResult` (the only place frames are built)."""
    plan = eng.plan
    req = eng.req
    n = eng.n
    start = np.frombuffer(eng.start, dtype=np.float64).copy()
    ftok = np.frombuffer(eng.ftok, dtype=np.float64).copy()
    fin = np.frombuffer(eng.fin, dtype=np.float64).copy()
    rpool = np.frombuffer(eng.rpool, dtype=np.int64)
    rrep = np.frombuffer(eng.rrep, dtype=np.int64)
    drop = np.frombuffer(eng.drop, dtype=np.int8).astype(np.int64)
    spill = np.frombuffer(eng.spill, dtype=np.int8).astype(np.int64)
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
    cost = np.zeros(n)
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
        cost[is_api] = c_api[is_api]
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
        if tsum > 0:
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
                "usd": float(cost[is_api].sum()),
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
    route_names = [*pool_names, *([api.name] if api is not None else []), ""]
    route_code = np.where(
        rpool >= 0, rpool, np.where(is_api, len(pool_names), len(route_names) - 1)
    )
    route_kind = np.where(rpool >= 0, 0, np.where(is_api, 1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (fin - ftok) / (out - 1), np.nan)
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
    requests = pd.DataFrame(
        {
            "request_id": np.arange(n),
            "class": pd.Categorical.from_codes(req.class_idx, categories=req.class_names),
            "arrival_s": arr,
            "route": pd.Categorical.from_codes(route_code, categories=route_names),
            "route_kind": pd.Categorical.from_codes(route_kind, categories=["gpu", "api", "none"]),
            "replica": rrep,
            "start_s": start,
            "first_token_s": ftok,
            "finish_s": fin,
            "input_tokens": inp,
            "output_tokens": out,
            "cached_input_tokens": cached,
            "cost_usd": cost,
            "status": pd.Categorical.from_codes(status, categories=STATUSES),
            "drop_reason": pd.Categorical.from_codes(drop, categories=REASONS),
            "spill_reason": pd.Categorical.from_codes(spill, categories=REASONS),
            "queue_s": start - arr,
            "ttft_s": ttft,
            "tpot_s": tpot,
            "e2e_s": e2e,
            "meets_slo": meets,
        }
    )

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
    )


def _utilisation(eng: Engine, end_s: float, start, fin, rrep) -> pd.DataFrame:
    width = eng.plan.util_interval_s
    n_iv = max(1, math.ceil(end_s / width - 1e-12)) if end_s > 0 else 1
    edges = np.arange(n_iv + 1, dtype=float) * width
    edges[-1] = max(edges[-1], end_s)
    need = (eng.req.input_tokens + eng.req.output_tokens).astype(float)
    has = rrep >= 0
    idx = np.nonzero(has)[0]
    order = idx[np.argsort(rrep[idx], kind="stable")]
    bounds = np.searchsorted(rrep[order], np.arange(len(eng.replicas) + 1))
    b_gid = np.asarray(eng.busy_gid, dtype=np.int64)
    b_from = np.asarray(eng.busy_from, dtype=float)
    b_to = np.asarray(eng.busy_to, dtype=float)
    frames = []
    lo, hi = edges[:-1], edges[1:]
    for r in eng.replicas:
        if r is None:
            continue
        g = r.gid
        sel = order[bounds[g] : bounds[g + 1]]
        t_on = start[sel]
        t_off = np.where(np.isfinite(fin[sel]), fin[sel], end_s)
        t_off = np.minimum(t_off, end_s)
        running, kv = _per_interval(t_on, t_off, (1.0, need[sel]), edges)
        bm = b_gid == g
        bf, bt = b_from[bm], np.minimum(b_to[bm], end_s)
        if r.busy_since == r.busy_since:
            bf = np.append(bf, r.busy_since)
            bt = np.append(bt, end_s)
        (busy,) = _per_interval(bf, bt, (1.0,), edges)
        stop = r.stop_s if r.stop_s == r.stop_s else end_s
        paid = np.clip(np.minimum(hi, stop) - np.maximum(lo, r.paid_from_s), 0.0, None)
        done = np.histogram(fin[sel][np.isfinite(fin[sel])], bins=edges)[0]
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
