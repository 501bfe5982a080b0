"""The optimiser's mixed-integer program: build, solve and decode as separate steps.

Variables (named column blocks, see :class:`Columns`; ``s`` scenario, ``h`` profile hour,
``d`` deployment option, ``k`` an allowed (route, class) pair, ``f`` a fine-tune):

- ``blocks_fixed[d]`` (integer, first stage): on-prem servers bought; cloud blocks billed
  always-on or for an active window, reserved or committed (a fleet for the whole horizon:
  the same count in every hour and scenario, see ``optimize_data.fixed_fleet_billing``);
- ``used[d]`` (binary, first stage): the option is used (carries ops staff, implementation,
  the HA reserve);
- ``finetune[f]`` (binary, first stage): run fine-tune ``f``; routes through a deployment of
  the fine-tuned model may only carry traffic when it is 1;
- ``blocks_hourly[s, d, h]`` (integer when deterministic; continuous in the stochastic
  version): scale-to-zero (on-demand / spot) blocks running in hour ``h``;
- ``used_hourly[s, d, h]`` (binary): the hourly option runs in hour ``h`` (with an HA
  reserve, or a minimum number of replicas above one block);
- ``starts[s, d, h]`` (continuous, >= 0): hourly blocks started in hour ``h``, priced at the
  option's USD per block started (the replica's USD/hour x its start-up time, or
  ``startup_usd_per_replica``); only for options with a start-up price or a minimum run;
- ``flow[s, k, h]`` (continuous, requests/s): class traffic sent down a route (API tokens are
  the flow times the tokens per request);
- ``eta``, ``excess[s]``: the Rockafellar-Uryasev CVaR linearisation.

Constraints (row groups; the names are what the infeasibility diagnosis drops and the checker
reports):

- ``demand``: sum_k flow[s, k, h] = D[s, c, h] for every class and hour;
- ``capacity``: for a self-hosted option, the load in replica-equivalents
  ``sum_k mult x peak_factor_d x flow / capacity_c`` <= ``U x (replicas - HA x used)``, where
  capacity_c is one replica's sustainable requests/s at class c's TTFT/TPOT SLO (perf model),
  peak_factor_d the option's intra-hour peak factor (``planning.peak_to_average`` where the
  model calls the option's hourly load flat, else 1) and U the utilisation target;
- ``link``: no blocks unless ``used`` (so the HA reserve and fixed costs apply to any use);
- ``min_replicas``: blocks >= min_blocks x used (per hour for an hourly option, via
  ``used_hourly``): an option that serves in an hour runs at least ``min_replicas`` replicas
  (one block is implied by whole blocks, so rows only when the minimum is above one block);
- ``starts``: starts[s, d, h] >= blocks[s, d, h] - blocks[s, d, h - 1], cyclic over the
  profile (the day or week repeats: hour 0 follows the last hour);
- ``min_run``: blocks[s, d, h] >= sum of starts[s, d, h - t] for t < ``min_run_hours`` (a
  started block runs that long; blocks are identical, so an older one may stop instead);
- ``ramp``: |blocks[s, d, h] - blocks[s, d, h - 1]| <= the most blocks an hour may add or
  remove (``max_change_per_hour`` replicas, at least one block), cyclic;
- ``finetune``: flow[s, k, h] <= D[s, c, h] x finetune[f];
- ``quality``: sum_k (q_k - q_min_c) x flow >= 0 (the class's average quality, each hour);
- ``tpm``: API tokens per minute <= the offering's limit, each hour;
- ``budget``: expected monthly cost <= budget;
- ``onprem_share``, ``provider_share``: month's request shares (each scenario);
- ``power``: on-prem IT power at full load <= the limit;
- ``limits``: the users' caps on blocks (bounds; dropped as a group by the diagnosis);
- ``cvar``: cost_s - eta - excess_s <= 0.

The re-check (:func:`check_plan`) also verifies that every option whose billing makes it a
fleet (on-prem, always-on, active-window, reserved, committed) has one block count in every
hour and scenario (``first_stage``) and was not given the hourly stage (``billing``), and the
runnable-plan rules from the plan's block counts: ``min_replicas`` (wherever an option runs),
``min_run`` (with the starts the counts imply) and ``ramp``.

Monthly cost of scenario s: fixed blocks x USD/block-month (always-on: every hour of the
month; active-window: its hours) + used x fixed USD/month + fine-tunes
/ horizon + sum_h (hourly blocks x USD/block-hour + starts x USD/start) x (hours per month /
periods) + sum_{k,h}
flow x 3600 x (hours per month / periods) x USD/request (API bill, fees, on-prem energy).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, OptimizeResult, linprog, milp
from scipy.sparse.csgraph import connected_components

from planner._runtime import solver_output_guard
from planner.engines.optimize_data import Problem, fixed_fleet_billing

#: Row groups the infeasibility diagnosis may drop (the others define the problem).
OPTIONAL_GROUPS = ("quality", "tpm", "budget", "onprem_share", "provider_share", "power",
                   "limits", "min_replicas", "min_run", "ramp")

_STATUS = {0: "optimal", 1: "time_limit", 2: "infeasible", 3: "unbounded", 4: "error"}


# --------------------------------------------------------------------------------------------
# named columns and rows


@dataclass(frozen=True)
class Block:
    """A named block of columns: ``index`` has one axis per ``axes`` entry."""

    name: str
    axes: tuple[tuple[str, tuple], ...]
    index: np.ndarray


class Columns:
    """Registry of named variable blocks: ``cols["flow"][s, k, h]`` is a column index."""

    def __init__(self) -> None:
        self.blocks: dict[str, Block] = {}
        self._lb: list[np.ndarray] = []
        self._ub: list[np.ndarray] = []
        self._int: list[np.ndarray] = []
        self.n = 0

    def add(self, name: str, axes: tuple[tuple[str, tuple], ...], *, lb: Any = 0.0,
            ub: Any = np.inf, integer: bool = False) -> np.ndarray:
        shape = tuple(len(keys) for _, keys in axes)
        size = int(np.prod(shape)) if shape else 1
        idx = np.arange(self.n, self.n + size).reshape(shape)
        self.blocks[name] = Block(name, axes, idx)
        self._lb.append(np.broadcast_to(np.asarray(lb, float), shape).ravel())
        self._ub.append(np.broadcast_to(np.asarray(ub, float), shape).ravel())
        self._int.append(np.full(size, 1 if integer else 0))
        self.n += size
        return idx

    def __getitem__(self, name: str) -> np.ndarray:
        return self.blocks[name].index

    def __contains__(self, name: str) -> bool:
        return name in self.blocks

    def at(self, name: str, **keys: Any) -> int:
        """Column of one variable by axis keys: ``at("blocks_hourly", scenario=0,
        option="a100", hour=3)``."""
        b = self.blocks[name]
        pos = tuple(list(k).index(keys[a]) for a, k in b.axes)
        return int(b.index[pos])

    def label(self, j: int) -> str:
        for b in self.blocks.values():
            if b.index.size and b.index.flat[0] <= j <= b.index.flat[-1]:
                pos = np.unravel_index(j - int(b.index.flat[0]), b.index.shape)
                keys = ", ".join(f"{a}={k[p]}" for (a, k), p in zip(b.axes, pos, strict=True))
                return f"{b.name}[{keys}]"
        raise IndexError(j)

    @property
    def lb(self) -> np.ndarray:
        return np.concatenate(self._lb) if self._lb else np.zeros(0)

    @property
    def ub(self) -> np.ndarray:
        return np.concatenate(self._ub) if self._ub else np.zeros(0)

    @property
    def integrality(self) -> np.ndarray:
        return np.concatenate(self._int) if self._int else np.zeros(0, int)


class Rows:
    """Constraint rows, added a group at a time (vectorised COO entries)."""

    def __init__(self) -> None:
        self._r: list[np.ndarray] = []
        self._c: list[np.ndarray] = []
        self._v: list[np.ndarray] = []
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.group: list[str] = []
        self.label: list[str] = []

    @property
    def m(self) -> int:
        return len(self.lo)

    def new(self, group: str, labels: list[str], lo: Any, hi: Any) -> np.ndarray:
        n = len(labels)
        ids = np.arange(self.m, self.m + n)
        self.lo.extend(np.broadcast_to(np.asarray(lo, float), (n,)).tolist())
        self.hi.extend(np.broadcast_to(np.asarray(hi, float), (n,)).tolist())
        self.group.extend([group] * n)
        self.label.extend(labels)
        return ids

    def put(self, rows: Any, cols: Any, vals: Any) -> None:
        r, c, v = np.broadcast_arrays(np.asarray(rows), np.asarray(cols), np.asarray(vals, float))
        keep = v != 0
        self._r.append(r[keep].ravel())
        self._c.append(c[keep].ravel())
        self._v.append(v[keep].ravel())

    def matrix(self, n: int) -> sparse.csr_matrix:
        if not self._r:
            return sparse.csr_matrix((self.m, n))
        return sparse.coo_matrix(
            (np.concatenate(self._v), (np.concatenate(self._r), np.concatenate(self._c))),
            shape=(self.m, n),
        ).tocsr()


# --------------------------------------------------------------------------------------------
# build


@dataclass
class Milp:
    """A built program: objective ``c``, rows ``lo <= A x <= hi``, bounds, integrality, and the
    monthly cost of each scenario as rows of ``cost`` (S x n)."""

    problem: Problem
    cols: Columns
    c: np.ndarray
    A: sparse.csr_matrix
    lo: np.ndarray
    hi: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    integrality: np.ndarray
    cost: sparse.csr_matrix
    row_group: np.ndarray
    row_label: list[str]
    pairs: list[tuple[int, int]]
    dropped: frozenset[str] = frozenset()
    objective: str = "expected"
    cvar_lambda: float = 0.0
    cvar_alpha: float = 0.95

    @property
    def shape(self) -> tuple[int, int]:
        return self.A.shape


def _startup(o) -> np.ndarray:
    """(S,) USD per block started of an option (0 when it has none)."""
    v = getattr(o, "startup_usd_per_block", None)
    return np.zeros(1) if v is None else np.asarray(v, float)


def _sh_options(pb: Problem, stage: str) -> list[str]:
    return [n for n, o in pb.options.items() if o.selfhosted and o.stage == stage]


def build_milp(
    pb: Problem,
    *,
    drop: frozenset[str] | set[str] = frozenset(),
    fix: dict[str, np.ndarray] | None = None,
    objective: str = "expected",
    cvar_lambda: float = 0.0,
    cvar_alpha: float = 0.95,
    recourse_penalty: float | None = None,
) -> Milp:
    """Build the MILP of a :class:`Problem`.

    Parameters
    ----------
    drop : set of str
        Optional row groups (:data:`OPTIONAL_GROUPS`) to leave out (infeasibility diagnosis).
    fix : dict, optional
        Block name -> values: fix those columns (``lb = ub``), e.g. the first stage of the
        mean-value solution when evaluating it on the scenarios.
    objective : {"expected", "cvar"}
    recourse_penalty : float, optional
        USD per request left unserved. When set, penalised slack columns (``slack_*``) make
        every row that a fixed first stage could make infeasible (demand, quality, TPM,
        shares) always satisfiable: complete recourse for the decomposition. A plan with a
        positive slack is not a plan of the original problem.
    """
    drop = frozenset(drop)
    S, C, P = pb.demand.shape
    w = pb.hour_weight
    U = pb.utilisation_target
    ha = pb.ha_reserve
    cols = Columns()
    rows = Rows()
    opts = pb.options
    fixed_opts = _sh_options(pb, "fixed")
    hourly_opts = _sh_options(pb, "hourly")
    fts = sorted(pb.finetune_usd)
    pairs = pb.pairs()
    scen = tuple(range(S))
    hours = tuple(range(P))

    def cap(o) -> float:
        return o.ub_blocks if "limits" in drop else min(o.ub_blocks, max(o.cap_blocks,
                                                                          o.lb_blocks))

    # -- columns ----------------------------------------------------------------------------
    bf = cols.add("blocks_fixed", (("option", tuple(fixed_opts)),),
                  lb=[opts[d].lb_blocks for d in fixed_opts],
                  ub=[cap(opts[d]) for d in fixed_opts], integer=True)
    # first-stage "used" binaries: fixed options with fixed costs or an HA reserve; hourly
    # options too when their hourly counts are continuous (the HA reserve then stays warm in
    # every hour of a used option; with integer hourly counts it is decided per hour)
    hourly_first = ha > 0 and not pb.integer_hourly
    # a fixed option with a minimum number of replicas while serving needs one too
    min_fixed = [d for d in fixed_opts if "min_replicas" not in drop and
                 opts[d].min_blocks > 1 and not opts[d].fixed_fleet]
    use_fixed = [d for d in fixed_opts if ha > 0 or d in min_fixed or
                 float(np.max(np.abs(opts[d].fixed_usd_per_month))) > 0]
    use_first = use_fixed + (hourly_opts if hourly_first else [])
    uf = cols.add("used", (("option", tuple(use_first)),), lb=0, ub=1, integer=True)
    ft = cols.add("finetune", (("finetune", tuple(fts)),), lb=0, ub=1, integer=True)
    def ub_h(o) -> np.ndarray:
        u = o.ub_hourly if o.ub_hourly is not None else np.full((S, P), o.ub_blocks)
        return np.maximum(np.minimum(u, cap(o)), o.lb_blocks)

    bh = cols.add("blocks_hourly", (("scenario", scen), ("option", tuple(hourly_opts)),
                                    ("hour", hours)),
                  lb=np.array([opts[d].lb_blocks for d in hourly_opts])[None, :, None]
                  if hourly_opts else 0.0,
                  ub=np.stack([ub_h(opts[d]) for d in hourly_opts], axis=1)
                  if hourly_opts else 0.0,
                  integer=pb.integer_hourly)
    # per-hour "used" binaries: with an HA reserve, or a minimum number of replicas while
    # serving above one block (one block is what whole blocks imply anyway)
    min_hourly = [d for d in hourly_opts if "min_replicas" not in drop and
                  opts[d].min_blocks > 1] if pb.integer_hourly else []
    uh_opts = tuple(d for d in hourly_opts if ha > 0 or d in min_hourly) \
        if pb.integer_hourly else ()
    uh = cols.add("used_hourly", (("scenario", scen), ("option", uh_opts), ("hour", hours)),
                  lb=0, ub=1, integer=pb.integer_hourly)
    # start-ups of hourly blocks (priced, or needed by a minimum run length), cyclic over the
    # profile: starts[h] >= blocks[h] - blocks[h - 1]
    def run_hours(o) -> int:
        return 1 if "min_run" in drop else min(int(o.min_run_hours), P)

    st_opts = tuple(d for d in hourly_opts if P > 1 and (
        run_hours(opts[d]) > 1 or np.any(_startup(opts[d]) > 0)))
    st = cols.add("starts", (("scenario", scen), ("option", st_opts), ("hour", hours)), lb=0)
    plabels = tuple(f"{pb.routes[r].name}:{pb.classes[c]}" for r, c in pairs)
    # a flow is bounded by its class's demand, and is 0 where a self-hosted leg has no
    # capacity in that scenario
    fub = np.zeros((S, len(pairs), P))
    for k, (r, c) in enumerate(pairs):
        ok = np.ones(S, bool)
        for o, _ in pb.routes[r].legs:
            kc = opts[o].classes[pb.classes[c]]
            ok &= kc.capacity_rps > 0
        fub[:, k, :] = pb.demand[:, c, :] * ok[:, None]
    fl = cols.add("flow", (("scenario", scen), ("pair", plabels), ("hour", hours)), lb=0,
                  ub=fub)
    use_cvar = objective == "cvar" and cvar_lambda > 0
    eta = cols.add("eta", (("cvar", ("eta",) if use_cvar else ()),), lb=-np.inf, ub=np.inf)
    exc = cols.add("excess", (("scenario", scen if use_cvar else ()),), lb=0, ub=np.inf)
    qcls = [c for c in range(C) if pb.classes[c] in pb.min_quality] \
        if "quality" not in drop else []
    tpm_opts = [d for d, o in opts.items() if o.kind == "api" and o.tpm_limit] \
        if "tpm" not in drop else []
    provs = sorted({p for rt in pb.routes for p in rt.touch}) \
        if pb.max_share_per_provider is not None and "provider_share" not in drop else []
    onprem_row = pb.min_onprem_share is not None and "onprem_share" not in drop
    pen = recourse_penalty
    slack: dict[str, np.ndarray] = {}
    if pen is not None:
        cls_t = tuple(pb.classes)
        slack["demand"] = cols.add("slack_demand", (("scenario", scen), ("class", cls_t),
                                                    ("hour", hours)))
        slack["quality"] = cols.add("slack_quality", (("scenario", scen), (
            "class", tuple(cls_t[c] for c in qcls)), ("hour", hours)))
        slack["tpm"] = cols.add("slack_tpm", (("scenario", scen), ("option", tuple(tpm_opts)),
                                              ("hour", hours)))
        slack["onprem_share"] = cols.add("slack_onprem_share", (
            ("scenario", scen if onprem_row else ()),))
        slack["provider_share"] = cols.add("slack_provider_share", (
            ("scenario", scen if provs else ()), ("provider", tuple(provs))))
    n = cols.n

    # -- monthly cost per scenario (S x n) -------------------------------------------------------
    cr: list[np.ndarray] = []
    cc: list[np.ndarray] = []
    cv: list[np.ndarray] = []

    def cost(s_idx, col_idx, val):
        a, b, v = np.broadcast_arrays(np.asarray(s_idx), np.asarray(col_idx),
                                      np.asarray(val, float))
        cr.append(a.ravel())
        cc.append(b.ravel())
        cv.append(v.ravel())

    sidx = np.arange(S)
    for j, d in enumerate(fixed_opts):
        cost(sidx, bf[j], opts[d].block_usd_per_month)
    for j, d in enumerate(use_fixed):
        cost(sidx, uf[j], opts[d].fixed_usd_per_month)
    for j, f in enumerate(fts):
        cost(sidx, ft[j], pb.finetune_usd[f] / pb.horizon_months)
    if pb.weighted:  # a typical-period problem: hours stand for different lengths of time
        bw, rw = pb.block_weights()[None, :], pb.request_weights()
        for j, d in enumerate(hourly_opts):
            cost(sidx[:, None], bh[:, j, :], opts[d].block_usd_per_hour[:, None] * bw)
        for j, d in enumerate(st_opts):
            cost(sidx[:, None], st[:, j, :], _startup(opts[d])[:, None] * bw)
        for k, (r, c) in enumerate(pairs):
            usd = pb.route_usd_per_request(r, pb.classes[c])
            cost(sidx[:, None], fl[:, k, :], (usd * 3600.0)[:, None] * rw[c][None, :])
    else:
        for j, d in enumerate(hourly_opts):
            cost(sidx[:, None], bh[:, j, :], (opts[d].block_usd_per_hour * w)[:, None])
        for j, d in enumerate(st_opts):
            cost(sidx[:, None], st[:, j, :], (_startup(opts[d]) * w)[:, None])
        for k, (r, c) in enumerate(pairs):
            usd = pb.route_usd_per_request(r, pb.classes[c])
            cost(sidx[:, None], fl[:, k, :], (usd * 3600.0 * w)[:, None])
    if pen is not None:
        per_rs = pen * 3600.0 * w  # USD per (request/s for an hour) left unserved
        total_rpm = pb.demand.sum(axis=(1, 2)) * 3600.0 * w
        # a quality shortfall of 1 point x 1 request/s is fixed by moving at most 1 / gap
        # requests/s to a route above the minimum (gap = its margin above the minimum)
        gaps = [rt.quality[pb.classes[c]] - pb.min_quality[pb.classes[c]]
                for rt in pb.routes for c in qcls if pb.classes[c] in rt.quality]
        margin = min([g for g in gaps if g > 0] + [1.0])
        cost(sidx[:, None, None], slack["demand"], per_rs)
        cost(sidx[:, None, None], slack["quality"], per_rs / max(margin, 0.1))
        # a TPM row over by its whole limit is fixed by moving at most all the hour's traffic
        cost(sidx[:, None, None], slack["tpm"], per_rs * (pb.demand.sum(axis=1).max() + 1.0))
        if onprem_row:
            cost(sidx, slack["onprem_share"], pen * total_rpm)
        if provs:
            cost(sidx[:, None], slack["provider_share"], (pen * total_rpm)[:, None])
    costm = sparse.coo_matrix((np.concatenate(cv), (np.concatenate(cr), np.concatenate(cc))),
                              shape=(S, n)).tocsr()

    # -- rows ---------------------------------------------------------------------------------
    # demand
    dem = rows.new("demand", [f"demand[s={s}, class={pb.classes[c]}, h={h}]"
                              for s in range(S) for c in range(C) for h in range(P)],
                   pb.demand.ravel(), pb.demand.ravel()).reshape(S, C, P)
    for k, (_r, c) in enumerate(pairs):
        rows.put(dem[:, c, :], fl[:, k, :], 1.0)
    if pen is not None:
        rows.put(dem, slack["demand"], 1.0)

    # capacity of self-hosted options
    sh_opts = fixed_opts + hourly_opts
    if sh_opts:
        capr = rows.new("capacity", [f"capacity[s={s}, option={d}, h={h}]" for s in range(S)
                                     for d in sh_opts for h in range(P)], -np.inf,
                        0.0).reshape(S, len(sh_opts), P)
        for j, d in enumerate(sh_opts):
            o = opts[d]
            for k, (r, c) in enumerate(pairs):
                for leg, mult in pb.routes[r].legs:
                    if leg != d:
                        continue
                    capc = o.classes[pb.classes[c]].capacity_rps
                    with np.errstate(divide="ignore"):
                        coef = np.where(capc > 0, mult * o.peak_factor / capc, 0.0)
                    rows.put(capr[:, j, :], fl[:, k, :], coef[:, None])
            rep = U * o.load_replicas_per_block
            if d in fixed_opts:
                rows.put(capr[:, j, :], bf[fixed_opts.index(d)], -rep)
                if d in use_fixed and ha > 0:
                    rows.put(capr[:, j, :], uf[use_fixed.index(d)], U * ha)
            else:
                i = hourly_opts.index(d)
                rows.put(capr[:, j, :], bh[:, i, :], -rep)
                if d in uh_opts:
                    rows.put(capr[:, j, :], uh[:, uh_opts.index(d), :], U * ha)
                elif hourly_first:
                    rows.put(capr[:, j, :], uf[use_first.index(d)], U * ha)
        # link: blocks only when used
        if use_fixed:
            lk = rows.new("link", [f"link[option={d}]" for d in use_fixed], -np.inf, 0.0)
            for j, d in enumerate(use_fixed):
                rows.put(lk[j], bf[fixed_opts.index(d)], 1.0)
                rows.put(lk[j], uf[j], -opts[d].ub_blocks)
        link_h = [d for d in hourly_opts if d in uh_opts or d in use_first]
        if link_h:
            lk = rows.new("link", [f"link[s={s}, option={d}, h={h}]" for s in range(S)
                                   for d in link_h for h in range(P)], -np.inf,
                          0.0).reshape(S, len(link_h), P)
            for i, d in enumerate(link_h):
                rows.put(lk[:, i, :], bh[:, hourly_opts.index(d), :], 1.0)
                if d in uh_opts:
                    rows.put(lk[:, i, :], uh[:, uh_opts.index(d), :], -ub_h(opts[d]))
                else:
                    rows.put(lk[:, i, :], uf[use_first.index(d)], -opts[d].ub_blocks)
        # min_replicas: an option that runs (used, hence any that serves: the capacity and
        # link rows) runs at least min_blocks blocks
        if min_fixed:
            mr = rows.new("min_replicas", [f"min_replicas[option={d}]" for d in min_fixed],
                          0.0, np.inf)
            for i, d in enumerate(min_fixed):
                rows.put(mr[i], bf[fixed_opts.index(d)], 1.0)
                rows.put(mr[i], uf[use_fixed.index(d)], -opts[d].min_blocks)
        if min_hourly:
            mr = rows.new("min_replicas", [f"min_replicas[s={s}, option={d}, h={h}]"
                                           for s in range(S) for d in min_hourly
                                           for h in range(P)], 0.0,
                          np.inf).reshape(S, len(min_hourly), P)
            for i, d in enumerate(min_hourly):
                rows.put(mr[:, i, :], bh[:, hourly_opts.index(d), :], 1.0)
                rows.put(mr[:, i, :], uh[:, uh_opts.index(d), :], -opts[d].min_blocks)
        # starts[h] - blocks[h] + blocks[h - 1] >= 0 (cyclic: the profile repeats)
        prev = pb.lag(1)
        if st_opts:
            sr = rows.new("starts", [f"starts[s={s}, option={d}, h={h}]" for s in range(S)
                                     for d in st_opts for h in range(P)], 0.0,
                          np.inf).reshape(S, len(st_opts), P)
            for i, d in enumerate(st_opts):
                j = hourly_opts.index(d)
                rows.put(sr[:, i, :], st[:, i, :], 1.0)
                rows.put(sr[:, i, :], bh[:, j, :], -1.0)
                rows.put(sr[:, i, :], bh[:, j, prev], 1.0)
        # min_run: blocks[h] >= starts in the last R hours (a started block runs R hours)
        mrun = [d for d in st_opts if run_hours(opts[d]) > 1]
        if mrun:
            rr = rows.new("min_run", [f"min_run[s={s}, option={d}, h={h}]" for s in range(S)
                                      for d in mrun for h in range(P)], 0.0,
                          np.inf).reshape(S, len(mrun), P)
            for i, d in enumerate(mrun):
                rows.put(rr[:, i, :], bh[:, hourly_opts.index(d), :], 1.0)
                for t in range(run_hours(opts[d])):
                    rows.put(rr[:, i, :], st[:, st_opts.index(d), pb.lag(t)], -1.0)
        # ramp: |blocks[h] - blocks[h - 1]| <= max_change_blocks
        ramp = [d for d in hourly_opts if "ramp" not in drop and P > 1 and
                np.isfinite(opts[d].max_change_blocks)]
        if ramp:
            v = np.array([opts[d].max_change_blocks for d in ramp])
            rr = rows.new("ramp", [f"ramp[s={s}, option={d}, h={h}]" for s in range(S)
                                   for d in ramp for h in range(P)],
                          np.broadcast_to(-v[None, :, None], (S, len(ramp), P)).ravel(),
                          np.broadcast_to(v[None, :, None], (S, len(ramp), P)).ravel()
                          ).reshape(S, len(ramp), P)
            for i, d in enumerate(ramp):
                j = hourly_opts.index(d)
                rows.put(rr[:, i, :], bh[:, j, :], 1.0)
                rows.put(rr[:, i, :], bh[:, j, prev], -1.0)

    # fine-tune gating
    gated = [(k, f) for k, (r, _) in enumerate(pairs) for f in pb.routes[r].finetunes]
    if gated:
        g = rows.new("finetune", [f"finetune[s={s}, {plabels[k]}, ft={f}, h={h}]"
                                  for s in range(S) for k, f in gated for h in range(P)],
                     -np.inf, 0.0).reshape(S, len(gated), P)
        for i, (k, f) in enumerate(gated):
            c = pairs[k][1]
            rows.put(g[:, i, :], fl[:, k, :], 1.0)
            rows.put(g[:, i, :], ft[fts.index(f)], -pb.demand[:, c, :])
        for d in fixed_opts:
            f = opts[d].finetune
            if f in fts:
                r1 = rows.new("finetune", [f"finetune[option={d}, ft={f}]"], -np.inf, 0.0)
                rows.put(r1, bf[fixed_opts.index(d)], 1.0)
                rows.put(r1, ft[fts.index(f)], -opts[d].ub_blocks)

    # quality: average score of each class's traffic, every hour
    if qcls:
        q = rows.new("quality", [f"quality[s={s}, class={pb.classes[c]}, h={h}]"
                                 for s in range(S) for c in qcls for h in range(P)], 0.0,
                     np.inf).reshape(S, len(qcls), P)
        for k, (r, c) in enumerate(pairs):
            if c in qcls:
                name = pb.classes[c]
                rows.put(q[:, qcls.index(c), :], fl[:, k, :],
                         pb.routes[r].quality[name] - pb.min_quality[name])
        if pen is not None:
            rows.put(q, slack["quality"], 1.0)

    # API tokens per minute
    if tpm_opts:
        t = rows.new("tpm", [f"tpm[s={s}, option={d}, h={h}]" for s in range(S)
                             for d in tpm_opts for h in range(P)], -np.inf,
                     1.0).reshape(S, len(tpm_opts), P)
        for j, d in enumerate(tpm_opts):
            o = opts[d]
            for k, (r, c) in enumerate(pairs):
                for leg, mult in pb.routes[r].legs:
                    if leg == d:
                        tok = o.classes[pb.classes[c]].tokens_per_request
                        rows.put(t[:, j, :], fl[:, k, :],
                                 (mult * tok * 60.0 / o.tpm_limit)[:, None])
        if pen is not None:
            rows.put(t, slack["tpm"], -1.0)

    # month's request shares (per scenario)
    # (S,) sum of hourly rates (equal weights cancel; a typical-period problem weighs them)
    srw = pb.request_weights() / pb.hour_weight if pb.weighted else None
    total = pb.demand.sum(axis=(1, 2)) if srw is None else (pb.demand * srw).sum(axis=(1, 2))
    ptotal = total if pb.share_total is None else np.asarray(pb.share_total, float)
    if onprem_row:
        rr = rows.new("onprem_share", [f"onprem_share[s={s}]" for s in range(S)],
                      pb.min_onprem_share, np.inf)
        for k, (r, c) in enumerate(pairs):
            kept = pb.routes[r].onprem_kept
            co = (kept / np.maximum(total, 1e-300))[:, None]
            rows.put(rr[:, None], fl[:, k, :], co if srw is None else co * srw[c][None, :])
        if pen is not None:
            rows.put(rr, slack["onprem_share"], 1.0)
    if provs:
        rr = rows.new("provider_share", [f"provider_share[s={s}, provider={p}]"
                                         for s in range(S) for p in provs], -np.inf,
                      pb.max_share_per_provider).reshape(S, len(provs))
        for k, (r, c) in enumerate(pairs):
            for p, share in pb.routes[r].touch.items():
                co = (share / np.maximum(ptotal, 1e-300))[:, None]
                rows.put(rr[:, provs.index(p), None], fl[:, k, :],
                         co if srw is None else co * srw[c][None, :])
        if pen is not None:
            rows.put(rr, slack["provider_share"], -1.0)

    # on-prem power
    onp = [d for d in fixed_opts if opts[d].kind == "onprem"]
    if pb.onprem_max_kw is not None and onp and "power" not in drop:
        rr = rows.new("power", ["power[onprem]"], -np.inf, pb.onprem_max_kw)
        for d in onp:
            rows.put(rr[0], bf[fixed_opts.index(d)], opts[d].kw_per_block)

    # budget on the expected monthly cost
    expected = np.asarray(pb.prob @ costm.toarray()) if costm.shape[1] else np.zeros(n)
    if pb.budget_usd_per_month is not None and "budget" not in drop:
        b = max(pb.budget_usd_per_month, 1e-9)
        rr = rows.new("budget", ["budget"], -np.inf, pb.budget_usd_per_month / b)
        nz = np.flatnonzero(expected)
        rows.put(rr[0], nz, expected[nz] / b)

    # CVaR rows
    c_obj = expected.copy()
    if use_cvar:
        rr = rows.new("cvar", [f"cvar[s={s}]" for s in range(S)], -np.inf, 0.0)
        coo = costm.tocoo()
        rows.put(rr[coo.row], coo.col, coo.data)
        rows.put(rr, eta[0], -1.0)
        rows.put(rr, exc, -1.0)
        c_obj[eta[0]] += cvar_lambda
        c_obj[exc] += cvar_lambda * pb.prob / (1.0 - cvar_alpha)

    lb, ub = cols.lb, cols.ub
    if fix:
        for name, vals in fix.items():
            idx = cols[name].ravel()
            v = np.asarray(vals, float).ravel()
            lb[idx] = v
            ub[idx] = v
    return Milp(
        problem=pb, cols=cols, c=c_obj, A=rows.matrix(n), lo=np.array(rows.lo),
        hi=np.array(rows.hi), lb=lb, ub=ub, integrality=cols.integrality, cost=costm,
        row_group=np.array(rows.group, dtype=object), row_label=rows.label, pairs=pairs,
        dropped=drop, objective="cvar" if use_cvar else "expected",
        cvar_lambda=cvar_lambda if use_cvar else 0.0, cvar_alpha=cvar_alpha,
    )


# --------------------------------------------------------------------------------------------
# solve


@dataclass
class SolveInfo:
    """What HiGHS returned."""

    status: str
    message: str
    x: np.ndarray | None
    objective: float
    gap: float
    dual_bound: float
    time_s: float
    relaxed: bool = False
    source: str = "highs"  # or "first-stage split" (see solve_milp)


def _highs(m: Milp, integrality: np.ndarray, lb: np.ndarray, ub: np.ndarray, gap: float,
           time_limit_s: float, node_limit: int | None = None) -> Any:
    """HiGHS on ``m`` in the box ``[lb, ub]``, within ``time_limit_s`` (``math.inf``: no
    wall-clock limit) and, when given, ``node_limit`` branch-and-bound nodes (a limit of
    work, the same on any machine load; scipy reports either limit as status 1)."""
    cons = [LinearConstraint(m.A, m.lo, m.hi)] if m.A.shape[0] else []
    opts = {"mip_rel_gap": gap, "time_limit": max(time_limit_s, 0.05), "disp": False,
            "presolve": True}
    if node_limit is not None:
        opts["node_limit"] = int(node_limit)
    with solver_output_guard():
        return milp(m.c, integrality=integrality, bounds=Bounds(lb, ub), constraints=cons,
                    options=opts)


def _lp_with_duals(m: Milp, time_limit_s: float) -> Any:
    """The LP relaxation by ``scipy.optimize.linprog`` (HiGHS), which, unlike ``milp``, returns
    the reduced costs (``lower.marginals`` >= 0, ``upper.marginals`` <= 0)."""
    A = m.A.tocsr()
    lo, hi = m.lo, m.hi
    eq = np.isfinite(lo) & (lo == hi)
    iu = np.flatnonzero(np.isfinite(hi) & ~eq)
    il = np.flatnonzero(np.isfinite(lo) & ~eq)
    ie = np.flatnonzero(eq)
    kw: dict[str, Any] = {}
    if iu.size or il.size:
        kw["A_ub"] = sparse.vstack([A[iu], -A[il]]).tocsr()
        kw["b_ub"] = np.concatenate([hi[iu], -lo[il]])
    if ie.size:
        kw["A_eq"], kw["b_eq"] = A[ie], lo[ie]
    with solver_output_guard():
        return linprog(m.c, bounds=np.c_[m.lb, m.ub], method="highs",
                       options={"time_limit": max(time_limit_s, 0.05)}, **kw)


def _first_stage_mask(m: Milp) -> np.ndarray:
    first = np.zeros(m.c.size, bool)
    for name in ("blocks_fixed", "used", "finetune"):
        if name in m.cols:
            first[m.cols[name].ravel()] = True
    return first & (m.integrality > 0)


#: Whether :func:`solve_milp` first tries HiGHS on the whole problem (> 0; 0: straight to the
#: split). Kept for compatibility: the attempt is bounded in nodes, not seconds.
QUICK_SOLVE_S = 0.25
#: Branch-and-bound nodes of that attempt (a bound on work, so that the path taken does not
#: depend on the machine's load).
QUICK_SOLVE_NODES = 500

#: Row groups that tie the hours together (month totals); the rest are per hour.
_COUPLING = ("provider_share", "onprem_share", "budget", "cvar", "power")

#: Row groups that tie the hours of an hourly option together (start-ups, minimum run
#: length, change per hour). :func:`_decomposed` solves the hours apart without them (a
#: relaxation: starts cost nothing there), then prices the start-ups of the plan found.
_HOURS = ("starts", "min_run", "ramp")


def _decomposed(m: Milp, lb: np.ndarray, ub: np.ndarray, gap: float, deadline: float,
                max_parts: int = 64) -> Any:
    """Solve a MILP whose first stage is fixed (by ``lb == ub``) as independent parts.

    Without the month-total rows (:data:`_COUPLING`) and the rows tying the hours of an
    option together (:data:`_HOURS`) the free columns fall apart into independent parts (one
    per scenario and hour); each is a small MILP for HiGHS. The parts' optima together solve
    that relaxation (start-ups free), so the sum of their dual bounds is a valid bound; the
    combined plan's start-ups are then set to the blocks it starts (:func:`tight_starts`) and
    priced, and if it satisfies every row (month totals, minimum run, change per hour) it is
    a plan of the problem, within the reported bound (its start-ups are the gap). Returns a
    ``scipy`` result (``status`` 0 or 2), or None when the problem does not fall apart into
    2..``max_parts`` parts, a part fails, or a row left out is violated.
    """
    free = lb < ub
    if not free.any():
        return None
    A = m.A.tocsr()
    keep = ~np.isin(m.row_group, _COUPLING + _HOURS)
    krows = np.flatnonzero(keep)
    fcols = np.flatnonzero(free)
    Ak = A[krows][:, fcols].tocsr()
    graph = sparse.bmat([[None, Ak], [Ak.T, None]]).tocsr()
    _, label = connected_components(graph, directed=False)
    rlab, clab = label[:krows.size], label[krows.size:]
    with_rows = np.unique(rlab[np.diff(Ak.indptr) > 0])
    if not 2 <= with_rows.size <= max_parts:
        return None
    x = np.where(free, 0.0, lb)
    const_rows = A[:, ~free] @ lb[~free]
    bound = float(m.c[~free] @ lb[~free])
    alone = fcols[~np.isin(clab, with_rows)]  # free columns in no row: cheapest bound
    if np.any(((m.c[alone] < 0) & ~np.isfinite(ub[alone])) |
              ((m.c[alone] > 0) & ~np.isfinite(lb[alone]))):
        return None
    x[alone] = np.where(m.c[alone] >= 0, lb[alone], ub[alone])
    x[alone] = np.where(m.c[alone] == 0, np.clip(0.0, lb[alone], ub[alone]), x[alone])
    bound += float(m.c[alone] @ x[alone])
    order = np.argsort(clab, kind="stable")
    starts = np.searchsorted(clab[order], with_rows)
    ends = np.searchsorted(clab[order], with_rows, side="right")
    rorder = np.argsort(rlab, kind="stable")
    rstarts = np.searchsorted(rlab[rorder], with_rows)
    rends = np.searchsorted(rlab[rorder], with_rows, side="right")
    for p in range(with_rows.size):
        cs = fcols[order[starts[p]:ends[p]]]
        rs = krows[rorder[rstarts[p]:rends[p]]]
        left = deadline - time.perf_counter()
        if left <= 0:
            return None
        with solver_output_guard():
            r = milp(m.c[cs], integrality=m.integrality[cs], bounds=Bounds(lb[cs], ub[cs]),
                     constraints=[LinearConstraint(A[rs][:, cs], m.lo[rs] - const_rows[rs],
                                                   m.hi[rs] - const_rows[rs])],
                     options={"mip_rel_gap": gap, "time_limit": left, "disp": False})
        if r.status == 2:
            return OptimizeResult(status=2, x=None, fun=math.nan, mip_dual_bound=math.nan,
                                  message="a part of the problem at this first stage is "
                                          "infeasible")
        if r.status != 0 or r.x is None:
            return None
        x[cs] = r.x
        d = getattr(r, "mip_dual_bound", None)
        bound += float(d) if d is not None and np.isfinite(d) else float(r.fun)
    if "starts" in m.cols and m.cols["starts"].size:
        x = tight_starts(m, x)
    ax = A @ x
    scale = np.maximum(1.0, np.maximum(np.abs(np.where(np.isfinite(m.lo), m.lo, 0)),
                                       np.abs(np.where(np.isfinite(m.hi), m.hi, 0))))
    if np.any(np.maximum(m.lo - ax, ax - m.hi) / scale > 1e-7):
        return None  # a month total binds: solve the parts together
    fun = float(m.c @ x)
    return OptimizeResult(status=0, x=x, fun=fun, mip_dual_bound=min(bound, fun),
                          message=f"solved as {with_rows.size} independent parts")


def _solve_fixed_first_stage(m: Milp, lb: np.ndarray, ub: np.ndarray, gap: float,
                             deadline: float) -> Any:
    """The MILP at a fixed first stage: as independent parts when it falls apart
    (:func:`_decomposed`), else by HiGHS as a whole."""
    r = _decomposed(m, lb, ub, gap, deadline)
    if r is not None:
        return r
    return _highs(m, m.integrality, lb, ub, gap, deadline - time.perf_counter())


@dataclass
class _Split:
    """Outcome of :func:`_first_stage_split`: ``info`` when every other first stage was ruled
    out, else None; ``x`` the best plan found either way (an incumbent for the fallback)."""

    info: SolveInfo | None
    x: np.ndarray | None


def _first_stage_split(m: Milp, gap: float, t0: float, deadline: float,
                       max_leaves: int = 8) -> _Split:
    """Solve by branching on the first stage (servers, reserved blocks, 'used', fine-tunes).

    A small branch and bound whose nodes are boxes on the first-stage integers (the root: their
    bounds). At a node: its LP relaxation, then its MILP with only the first-stage integers
    integer (hourly counts relaxed: a relaxation, and cheap, since the hourly counts are what
    makes HiGHS slow) give lower bounds; a node whose bound is within the gap of the best plan
    is closed. Otherwise the latter proposes a first stage ``y``, HiGHS solves the MILP with
    the first stage fixed at ``y`` (the hourly problems only; its dual bound covers that point)
    and the rest of the box is partitioned into child boxes (``y_i = y_i`` for i < j and
    ``y_j <= y_j - 1`` or ``>= y_j + 1``). When every node is closed, the best plan is within
    the gap of the optimum, with the bound the smallest over the closed nodes and the points.
    Gives up (returning the best plan as an incumbent) after ``max_leaves`` points.
    """
    first = _first_stage_mask(m)
    fidx = np.flatnonzero(first)
    relax_hourly = np.where(first, m.integrality, 0)
    zeros = np.zeros_like(m.integrality)
    best_x: np.ndarray | None = None
    best_f = math.inf
    bounds: list[float] = []
    stack = [(m.lb[fidx].copy(), m.ub[fidx].copy())]
    leaves = 0
    last_msg = ""

    def need() -> float:
        if not np.isfinite(best_f):
            return math.inf
        return best_f - (gap + 1e-9) * max(abs(best_f), 1e-300)

    def box(lo_f: np.ndarray, hi_f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lb, ub = m.lb.copy(), m.ub.copy()
        lb[fidx], ub[fidx] = lo_f, hi_f
        return lb, ub

    while stack:
        lo_f, hi_f = stack.pop()
        lb, ub = box(lo_f, hi_f)
        node_lb = -math.inf
        y = None
        for integ, g in ((zeros, 0.0), (relax_hourly, max(gap, 1e-3))):
            if integ is zeros and not np.isfinite(best_f):
                continue  # nothing to compare the LP bound with yet
            left = deadline - time.perf_counter()
            if left <= 0:
                return _Split(None, best_x)
            r = _highs(m, integ, lb, ub, g, left)
            if r.status == 2:
                node_lb = math.inf
                break
            if r.status == 0 and r.x is not None:
                d = getattr(r, "mip_dual_bound", None)
                node_lb = float(r.fun) if not integ.any() or d is None else float(d)
                if integ.any():
                    y = np.clip(np.round(np.asarray(r.x, float)[fidx]), lo_f, hi_f)
            if node_lb >= need():
                break
        if node_lb >= need():
            bounds.append(node_lb)
            continue
        if y is None or leaves >= max_leaves:
            return _Split(None, best_x)
        leaves += 1
        lb, ub = box(y, y)
        r2 = _solve_fixed_first_stage(m, lb, ub, gap, deadline)
        if r2.status == 2:
            bounds.append(math.inf)
        elif r2.x is None or r2.status != 0:
            return _Split(None, best_x)
        else:
            d = getattr(r2, "mip_dual_bound", None)
            bounds.append(float(d) if d is not None and np.isfinite(d) else float(r2.fun))
            if float(r2.fun) < best_f:
                best_f, best_x, last_msg = float(r2.fun), np.asarray(r2.x, float), r2.message
        for i in range(fidx.size):
            for c_lo, c_hi in ((lo_f[i], y[i] - 1), (y[i] + 1, hi_f[i])):
                if c_lo <= c_hi:
                    clo, chi = lo_f.copy(), hi_f.copy()
                    clo[:i] = chi[:i] = y[:i]
                    clo[i], chi[i] = c_lo, c_hi
                    stack.append((clo, chi))
    if best_x is None:
        return _Split(None, None)
    bound = min(bounds) if bounds else best_f
    g = max((best_f - bound) / max(abs(best_f), 1e-300), 0.0)
    if g > gap + 1e-6:  # HiGHS's own 'optimal' at a 0 gap allows an absolute 1e-6
        return _Split(None, best_x)
    info = SolveInfo("optimal", f"{last_msg} (branched on the first stage: {leaves} "
                     f"first stage(s) solved, {len(bounds) - leaves} region(s) bounded)",
                     best_x, best_f, float(g), float(bound), time.perf_counter() - t0,
                     False, "first-stage split")
    return _Split(info, best_x)


def _reduced_cost_bounds(m: Milp, lp: Any, upper: float) -> tuple[np.ndarray, np.ndarray]:
    """Reduced-cost fixing of the integer columns: every x with ``c x <= upper`` satisfies
    ``c x >= z_LP + r_j (x_j - lb_j)`` (r_j >= 0 the reduced cost at the lower bound; likewise
    at the upper bound), so ``x_j <= lb_j + (upper - z_LP) / r_j``. Keeps every solution at
    least as good as the incumbent, hence the optimum and the dual bound stay valid."""
    ints = m.integrality > 0
    lb, ub = m.lb.copy(), m.ub.copy()
    slack = (upper - float(lp.fun)) * (1 + 1e-6) + 1e-6 * max(1.0, abs(upper))
    lm = np.asarray(lp.lower.marginals, float)
    um = np.asarray(lp.upper.marginals, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        hi_ = np.where(ints & (lm > 1e-9) & np.isfinite(m.lb), m.lb + slack / lm, np.inf)
        lo_ = np.where(ints & (um < -1e-9) & np.isfinite(m.ub), m.ub - slack / -um, -np.inf)
    ub = np.minimum(ub, np.floor(hi_ + 1e-6))
    lb = np.maximum(lb, np.ceil(lo_ - 1e-6))
    return np.minimum(lb, ub), np.maximum(ub, np.minimum(lb, ub))


_HOUR_LABEL = re.compile(r"\bh=\d+")


def _hour_of_columns(m: Milp) -> tuple[np.ndarray, np.ndarray]:
    """(n,) hour of each column (-1: not hour-indexed) and (n,) its key without the hour
    (the column of the same variable in hour 0; a column that is not hour-indexed: itself)."""
    n = m.c.size
    hour = np.full(n, -1)
    key = np.arange(n)
    for b in m.cols.blocks.values():
        if b.axes and b.axes[-1][0] == "hour" and b.index.size:
            P = b.index.shape[-1]
            hour[b.index] = np.arange(P)
            key[b.index] = b.index[..., :1]
    return hour, key


@dataclass(frozen=True)
class _HourClasses:
    """Classes of identical hours (:func:`_hour_classes`): ``first`` the first hour of each
    class, ``inverse`` the class of every hour, ``row_hour`` the hour of each row that
    involves one hour only (-1: none; -2: several)."""

    first: np.ndarray
    inverse: np.ndarray
    row_hour: np.ndarray
    col_hour: np.ndarray


def _hour_classes(m: Milp) -> _HourClasses | None:
    """Classes of hours that can be merged exactly, or None when no two hours can be.

    Read from the matrix itself: two hours are identical when their hour-indexed columns
    (flows, hourly blocks) have the same bounds and costs, the rows of one hour (demand,
    capacity, quality, ...; matched by their label without the hour) have the same bounds
    and coefficients as the other's (those on columns of no hour, such as the first stage,
    included), and every row over several hours (month shares, budget) has the same
    coefficients on both. Merging them is then exact when every hour-indexed column is
    continuous: any plan, its hour-indexed columns averaged over each class, is a plan of the
    same cost whose hours in a class agree. So the merged problem (:func:`_merged`) has the
    same optimum and its bound is a bound of the full problem. Rows tying an hour to the
    next (start-ups, minimum run, change per hour) cover several hours with different
    coefficients, so they rule merging out. Typical case: a week of identical weekdays (168
    hours, 48 distinct).
    """
    if m.A.shape[0] == 0 or any(name.startswith("slack_") for name in m.cols.blocks):
        return None
    col_hour, col_key = _hour_of_columns(m)
    hc = col_hour >= 0
    if not hc.any() or np.any(m.integrality[hc] > 0):
        return None
    P = int(col_hour.max()) + 1
    if P < 2:
        return None
    A = m.A.tocoo()
    r, c, v = A.row, A.col, A.data
    eh = col_hour[c]
    on = eh >= 0
    nr = m.A.shape[0]
    hmin = np.full(nr, P)
    hmax = np.full(nr, -1)
    np.minimum.at(hmin, r[on], eh[on])
    np.maximum.at(hmax, r[on], eh[on])
    row_hour = np.where(hmax < 0, -1, np.where(hmin == hmax, hmax, -2))
    per = np.flatnonzero(row_hour >= 0)
    types: dict[str, int] = {}
    rtype = np.full(nr, -1)
    for i in per:
        rtype[i] = types.setdefault(_HOUR_LABEL.sub("h=*", m.row_label[i]), len(types))
    # one row of a kind per hour, or the rows cannot be matched by label
    pair = row_hour[per] * (len(types) + 1) + rtype[per]
    if np.unique(pair).size != per.size:
        return None
    # signature entries (hour, kind, a, b, value)
    hj = np.flatnonzero(hc)
    e_hour = [col_hour[hj]] * 3
    e_kind = [np.full(hj.size, 0), np.full(hj.size, 1), np.full(hj.size, 2)]
    e_a = [col_key[hj]] * 3
    e_b = [np.zeros(hj.size, int)] * 3
    e_v = [m.lb[hj], m.ub[hj], m.c[hj]]
    e_hour += [row_hour[per]] * 2
    e_kind += [np.full(per.size, 3), np.full(per.size, 4)]
    e_a += [rtype[per]] * 2
    e_b += [np.zeros(per.size, int)] * 2
    e_v += [m.lo[per], m.hi[per]]
    rh = row_hour[r]
    pe = rh >= 0  # entries of one-hour rows
    e_hour.append(rh[pe])
    e_kind.append(np.full(int(pe.sum()), 5))
    e_a.append(rtype[r[pe]])
    e_b.append(col_key[c[pe]])
    e_v.append(v[pe])
    ce = (rh == -2) & on  # entries of rows over several hours, on hour columns
    e_hour.append(eh[ce])
    e_kind.append(np.full(int(ce.sum()), 6))
    e_a.append(r[ce])
    e_b.append(col_key[c[ce]])
    e_v.append(v[ce])
    H, K, Aa, B = (np.concatenate(x).astype(np.int64) for x in (e_hour, e_kind, e_a, e_b))
    V = np.concatenate(e_v).astype(float)
    order = np.lexsort((V, B, Aa, K, H))
    H, K, Aa, B, V = H[order], K[order], Aa[order], B[order], V[order]
    bounds = np.searchsorted(H, np.arange(P + 1))
    rec = np.rec.fromarrays([K, Aa, B, V])
    sig: dict[bytes, int] = {}
    inverse = np.empty(P, dtype=int)
    first: list[int] = []
    for h in range(P):
        k = rec[bounds[h]:bounds[h + 1]].tobytes()
        if k not in sig:
            sig[k] = len(first)
            first.append(h)
        inverse[h] = sig[k]
    if len(first) >= P:
        return None
    return _HourClasses(np.asarray(first), inverse, row_hour, col_hour)


def _merged(m: Milp, hc: _HourClasses) -> tuple[Milp, np.ndarray]:
    """The MILP of ``m`` with the hour-indexed columns of each class of identical hours
    (:func:`_hour_classes`) made one (``x_j = y_rep(j)``): the first hour's columns and
    rows stand for the class, rows over several hours sum the class's coefficients, costs
    are summed. Returns it and ``rep`` (n,): the merged column of every column of ``m``."""
    first, inverse = hc.first, hc.inverse
    keep_hour = np.zeros(inverse.size, bool)
    keep_hour[first] = True
    cols = Columns()
    rep = np.empty(m.c.size, dtype=int)
    for name, b in m.cols.blocks.items():
        hourly = bool(b.axes) and b.axes[-1][0] == "hour"
        if hourly:
            axes = (*b.axes[:-1], ("hour", tuple(int(h) for h in first)))
            src = b.index[..., first]
        else:
            axes, src = b.axes, b.index
        integer = bool(src.size) and bool(np.any(m.integrality[src] > 0))
        new = cols.add(name, axes, lb=m.lb[src], ub=m.ub[src], integer=integer)
        if hourly:
            rep[b.index] = new[..., inverse]
        else:
            rep[b.index] = new
    rows = np.flatnonzero((hc.row_hour < 0) |
                          keep_hour[np.clip(hc.row_hour, 0, None)] & (hc.row_hour >= 0))
    newrow = np.full(m.A.shape[0], -1)
    newrow[rows] = np.arange(rows.size)
    A = m.A.tocoo()
    keep = newrow[A.row] >= 0
    Ar = sparse.coo_matrix((A.data[keep], (newrow[A.row[keep]], rep[A.col[keep]])),
                           shape=(rows.size, cols.n)).tocsr()
    cc = m.cost.tocoo()
    cost = sparse.coo_matrix((cc.data, (cc.row, rep[cc.col])),
                             shape=(m.cost.shape[0], cols.n)).tocsr()
    c = np.bincount(rep, weights=m.c, minlength=cols.n)
    mr = replace(m, cols=cols, c=c, A=Ar, lo=m.lo[rows], hi=m.hi[rows], lb=cols.lb,
                 ub=cols.ub, integrality=cols.integrality, cost=cost,
                 row_group=m.row_group[rows], row_label=[m.row_label[i] for i in rows])
    return mr, rep


def _solve_merged(m: Milp, *, gap: float, time_limit_s: float, relax: bool) -> SolveInfo | None:
    """Solve ``m`` with its identical hours merged (:func:`_hour_classes`); None when there
    are none, or when the plan laid back over every hour fails a row of ``m``."""
    t0 = time.perf_counter()
    hc = _hour_classes(m)
    if hc is None:
        return None
    mr, rep = _merged(m, hc)
    info = _solve_milp(mr, gap=gap, time_limit_s=time_limit_s, relax=relax)
    if info.x is None:
        # the merged problem has a plan exactly when the full one has (same optimum)
        return replace(info, time_s=time.perf_counter() - t0)
    x = np.asarray(info.x, float)[rep]
    if raw_violations(m, x):
        return None
    obj = float(m.c @ x)
    g = info.gap
    if np.isfinite(info.dual_bound) and not relax:
        g = max(0.0, (obj - info.dual_bound) / max(abs(obj), 1e-300))
    bound = obj if relax else info.dual_bound
    return replace(info, x=x, objective=obj, gap=float(g), dual_bound=float(bound),
                   time_s=time.perf_counter() - t0,
                   message=f"{info.message} ({hc.inverse.size} hours solved as "
                           f"{hc.first.size} distinct ones)")


def solve_milp(m: Milp, *, gap: float = 0.01, time_limit_s: float = 30.0,
               relax: bool = False) -> SolveInfo:
    """Solve with HiGHS (see :func:`_solve_milp`); the ``starts`` of the plan found are then
    set to the blocks actually started (``max(0, blocks[h] - blocks[h - 1])``: feasible, and
    no dearer), so the objective is what the plan costs.

    Identical hours are merged first where that is exact (:func:`_hour_classes`; e.g. a
    week of identical weekdays is solved on its 48 distinct hours) and the plan is laid back
    over every hour and re-checked against every row.

    Every step is bounded by work, not by seconds: the solves run to ``gap``, the quick
    attempt on the whole problem and the polish are bounded in HiGHS branch-and-bound nodes
    (:data:`QUICK_SOLVE_NODES`, :data:`POLISH_NODES`, :data:`POLISH_GAP`), the split in
    first stages; so the same problem gives the same plan however loaded the machine is.
    ``time_limit_s`` is only a safety net over the whole call (``math.inf``: none); when it is
    reached the status is ``time_limit``, never ``optimal``.
    """
    t0 = time.perf_counter()
    info = _solve_milp_limited(m, gap=gap, time_limit_s=time_limit_s, relax=relax)
    if info.status == "optimal" and time.perf_counter() - t0 >= time_limit_s:
        # every step is bounded by work (nodes, leaves, the gap) and gets all the time left,
        # so only the safety net can have cut one: then say so rather than 'optimal'
        info = replace(info, status="time_limit",
                       message=f"{info.message} (the {time_limit_s:g} s wall-clock limit was "
                               f"reached: a step may have been cut short)")
    return info


def _solve_milp_limited(m: Milp, *, gap: float, time_limit_s: float,
                        relax: bool) -> SolveInfo:
    t0 = time.perf_counter()
    merged = _solve_merged(m, gap=gap, time_limit_s=time_limit_s, relax=relax)
    if merged is not None:
        return merged
    info = _solve_milp(m, gap=gap, time_limit_s=time_limit_s - (time.perf_counter() - t0),
                       relax=relax)
    if info.x is None or relax or "starts" not in m.cols or not m.cols["starts"].size:
        return info
    x = tight_starts(m, info.x)
    left = time_limit_s - (time.perf_counter() - t0)
    if info.gap > 1e-9 and left > 0:
        x = _polish(m, x, left, POLISH_NODES)
    obj = float(m.c @ x)
    if obj > info.objective + 1e-9 * max(1.0, abs(info.objective)):
        return info  # cannot happen (the rows bound starts from below only); keep HiGHS's
    g = info.gap
    if np.isfinite(info.dual_bound) and obj != info.objective:
        g = max(0.0, (obj - info.dual_bound) / max(abs(obj), 1e-300))
    return replace(info, x=x, objective=obj, gap=float(g))


#: Branch-and-bound nodes :func:`solve_milp` spends polishing the hourly counts of a plan
#: (:func:`_polish`; a bound on work, not seconds).
POLISH_NODES = 500
#: ... and the relative gap it stops at (a bound on its work with :data:`POLISH_NODES`).
POLISH_GAP = 1e-3


def _polish(m: Milp, x: np.ndarray, time_limit_s: float,
            node_limit: int | None = None) -> np.ndarray:
    """A plan at least as cheap as ``x``: the problem re-solved with the first stage fixed at
    ``x``'s and every hourly count kept between the lowest and highest count of its option in
    the hour before, the hour and the hour after (cyclic), to :data:`POLISH_GAP` within
    ``node_limit`` nodes (and ``time_limit_s``, the safety net).
    The hours-apart solution (:func:`_decomposed`) is within the gap, but leaves the start-ups
    out of the choice; this lets an hour keep its neighbours' fleet when the start-ups make
    that cheaper (no switching GPU types for a few dollars' saving)."""
    lb, ub = m.lb.copy(), m.ub.copy()
    first = _first_stage_mask(m)
    lb[first] = ub[first] = np.round(x[first])
    bh = m.cols["blocks_hourly"]
    v = np.round(x[bh])
    pb = m.problem
    nb = np.stack([v[..., pb.lag(1)], v, v[..., pb.lag(-1)]])
    lb[bh] = np.maximum(lb[bh], nb.min(axis=0))
    ub[bh] = np.minimum(ub[bh], nb.max(axis=0))
    if np.any(lb > ub):
        return x
    r = _highs(m, m.integrality, lb, ub, POLISH_GAP, time_limit_s, node_limit)
    if r.x is None or r.status not in (0, 1, 4):  # 4: HiGHS stopped at the node limit
        return x
    y = tight_starts(m, np.asarray(r.x, float))
    if not raw_violations(m, y) and float(m.c @ y) < float(m.c @ x) - 1e-9:
        return y
    return x


def tight_starts(m: Milp, x: np.ndarray) -> np.ndarray:
    """``x`` with every ``starts[s, d, h]`` column at ``max(0, blocks[h] - blocks[h - 1])``."""
    x = np.array(x, float)
    b = m.cols.blocks["starts"]
    opts = list(b.axes[1][1])
    if not opts:
        return x
    bho = list(m.cols.blocks["blocks_hourly"].axes[1][1])
    bh = x[m.cols["blocks_hourly"][:, [bho.index(d) for d in opts], :]]
    x[b.index] = np.maximum(0.0, bh - bh[..., m.problem.lag(1)])
    return x


def _solve_milp(m: Milp, *, gap: float = 0.01, time_limit_s: float = 30.0,
                relax: bool = False) -> SolveInfo:
    """Solve with HiGHS (``scipy.optimize.milp``); ``relax`` drops integrality (LP bound).

    When there are both first-stage integers and other ones (hourly block counts) and HiGHS
    does not settle the whole problem within :data:`QUICK_SOLVE_NODES` nodes (tried only
    when the hourly counts are continuous or the first stage fixed; see below), the problem
    is split on the first stage (:func:`_first_stage_split`): HiGHS solves the hourly problem
    at the proposed first stage, and every other first stage is ruled out by a bound.
    If one cannot be ruled out, the full MILP is solved, in a box reduced against the plan
    found (reduced-cost fixing, :func:`_reduced_cost_bounds`: it still holds every plan at least
    as cheap); the better plan is returned, with the gap against HiGHS's dual bound (valid for
    the original problem: no plan cheaper than the incumbent was cut off).
    """
    integ = np.zeros_like(m.integrality) if relax else m.integrality
    t0 = time.perf_counter()
    deadline = t0 + time_limit_s
    lb, ub = m.lb, m.ub
    inc_x: np.ndarray | None = None
    lp_bound = -math.inf
    ints = integ > 0
    first = _first_stage_mask(m) & ints
    res = None
    if ints.any() and first.any() and (ints & ~first).any() and m.A.shape[0]:
        # small problems: HiGHS on the whole problem settles them faster than the split
        # (bounded in branch-and-bound nodes, whatever the wall-clock limit, so that the
        # path taken does not depend on the machine's load; the limit is only a safety net)
        # Problems with whole hourly rentals (scale-to-zero counts) and a first stage still
        # to choose skip it: HiGHS's root node alone on them costs more than the whole split
        # (bench_opt_plans.py); at a fixed first stage (the stochastic plan's whole-replica
        # re-solves) it is the faster way.
        quick = None
        hourly = m.cols["blocks_hourly"].ravel() if "blocks_hourly" in m.cols else []
        chosen = bool(np.any(lb[first] < ub[first]))
        if QUICK_SOLVE_S > 0 and not (chosen and ints[hourly].any()):
            quick = _highs(m, integ, lb, ub, gap, time_limit_s, QUICK_SOLVE_NODES)
        if quick is not None and quick.status in (0, 2):
            res = quick
        else:
            split = _first_stage_split(m, gap, t0, deadline)
            if split.info is not None:
                return split.info
            inc_x = split.x
            if inc_x is not None:
                lp = _lp_with_duals(m, max(deadline - time.perf_counter(), 0.05))
                if lp.status == 0:
                    lp_bound = float(lp.fun)
                    lb, ub = _reduced_cost_bounds(m, lp, float(m.c @ inc_x))
    if res is None:
        res = _highs(m, integ, lb, ub, gap, deadline - time.perf_counter())
    if inc_x is not None and res.x is None and res.status == 2:
        # the reduced box should hold the incumbent; numerical trouble: solve the original
        res = _highs(m, integ, m.lb, m.ub, gap, deadline - time.perf_counter())
    status = _STATUS.get(res.status, "error")
    x = None if res.x is None else np.asarray(res.x, float)
    obj = float(res.fun) if x is not None else math.nan
    bound = getattr(res, "mip_dual_bound", None)
    g = getattr(res, "mip_gap", None)
    source = "highs"
    if inc_x is not None and (x is None or float(m.c @ inc_x) < obj - 1e-9 * max(1.0, abs(obj))):
        x, obj, source = inc_x, float(m.c @ inc_x), "first-stage split"
        b = float(bound) if bound is not None and np.isfinite(bound) else -math.inf
        bound = max(b, lp_bound)
        g = (obj - bound) / max(abs(obj), 1e-300) if np.isfinite(bound) else math.inf
        if status in ("infeasible", "error"):
            status = "time_limit"
    dt = time.perf_counter() - t0
    if status == "time_limit" and x is None:
        status = "time_limit_no_solution"
    if relax or not integ.any():
        bound = obj
    if g is None or relax or not integ.any():
        g = 0.0 if x is not None else math.nan
    msg = str(res.message) + ("" if source == "highs" else f" (plan from the {source})")
    return SolveInfo(status, msg, x, obj, float(g),
                     float(bound) if bound is not None else math.nan, dt, relax, source)


# --------------------------------------------------------------------------------------------
# decode


@dataclass
class PlanArrays:
    """A decoded solution, in the problem's terms.

    blocks : (S, O, P) blocks of each self-hosted option in each hour (fixed ones repeated)
    used : (S, O, P) 0/1 the option is used (HA reserve applies)
    flows : (S, K, P) requests/s of each allowed (route, class) pair
    finetune : name -> 0/1
    """

    options: list[str]
    blocks: np.ndarray
    used: np.ndarray
    flows: np.ndarray
    finetune: dict[str, float]
    pairs: list[tuple[int, int]]
    x: np.ndarray | None = field(default=None, repr=False)


def decode(m: Milp, x: np.ndarray) -> PlanArrays:
    """Turn a solution vector into :class:`PlanArrays` (no rounding, no repair)."""
    pb = m.problem
    S, _, P = pb.demand.shape
    sh = [n for n, o in pb.options.items() if o.selfhosted]
    blocks = np.zeros((S, len(sh), P))
    used = np.zeros((S, len(sh), P))
    bfo = list(m.cols.blocks["blocks_fixed"].axes[0][1])
    ufo = list(m.cols.blocks["used"].axes[0][1])
    bho = list(m.cols.blocks["blocks_hourly"].axes[1][1])
    uho = list(m.cols.blocks["used_hourly"].axes[1][1])
    for j, d in enumerate(sh):
        if d in bfo:
            blocks[:, j, :] = x[m.cols["blocks_fixed"][bfo.index(d)]]
            used[:, j, :] = x[m.cols["used"][ufo.index(d)]] if d in ufo else \
                float(blocks[0, j, 0] > 0.5)
        else:
            i = bho.index(d)
            blocks[:, j, :] = x[m.cols["blocks_hourly"][:, i, :]]
            if d in uho:
                used[:, j, :] = x[m.cols["used_hourly"][:, uho.index(d), :]]
            elif d in ufo:
                used[:, j, :] = x[m.cols["used"][ufo.index(d)]]
            else:
                used[:, j, :] = blocks[:, j, :] > 1e-9
    fts = list(m.cols.blocks["finetune"].axes[0][1])
    ftv = {f: float(x[m.cols["finetune"][i]]) for i, f in enumerate(fts)}
    flows = x[m.cols["flow"]].copy()
    flows[np.abs(flows) < 1e-10] = 0.0  # solver noise around zero
    blocks[np.abs(blocks) < 1e-10] = 0.0
    return PlanArrays(sh, blocks, used, flows, ftv, list(m.pairs), x)


def encode(m: Milp, plan: PlanArrays) -> np.ndarray:
    """The solution vector of ``m`` holding ``plan`` (the inverse of :func:`decode`); the
    ``starts`` columns at the blocks actually started (:func:`tight_starts`). ``plan`` must
    be of ``m``'s problem (same options, pairs and hours)."""
    x = np.zeros(m.c.size)
    sh = list(plan.options)
    for name, axis in (("blocks_fixed", 0), ("used", 0)):
        for i, d in enumerate(m.cols.blocks[name].axes[axis][1]):
            j = sh.index(d)
            x[m.cols[name][i]] = plan.blocks[0, j, 0] if name == "blocks_fixed" else \
                plan.used[0, j, 0]
    for i, d in enumerate(m.cols.blocks["blocks_hourly"].axes[1][1]):
        x[m.cols["blocks_hourly"][:, i, :]] = plan.blocks[:, sh.index(d), :]
    for i, d in enumerate(m.cols.blocks["used_hourly"].axes[1][1]):
        x[m.cols["used_hourly"][:, i, :]] = plan.used[:, sh.index(d), :]
    for i, f in enumerate(m.cols.blocks["finetune"].axes[0][1]):
        x[m.cols["finetune"][i]] = plan.finetune.get(f, 0.0)
    if list(plan.pairs) != list(m.pairs):
        raise ValueError("encode: the plan's routings are not the program's")
    x[m.cols["flow"]] = plan.flows
    if "starts" in m.cols and m.cols["starts"].size:
        x = tight_starts(m, x)
    return x


# --------------------------------------------------------------------------------------------
# costs and checks, recomputed from the problem (not from the matrix)


def plan_starts(pb: Problem, plan: PlanArrays) -> np.ndarray:
    """(S, O, P) blocks started in each hour: ``max(0, blocks[h] - blocks[h - 1])`` of an
    hourly option (cyclic over the profile: the day or week repeats); 0 for a fixed fleet."""
    b = plan.blocks
    out = np.zeros_like(b)
    if b.shape[-1] < 2:
        return out
    for j, d in enumerate(plan.options):
        if pb.options[d].stage == "hourly":
            out[:, j, :] = np.maximum(0.0, b[:, j, :] - b[:, j, pb.lag(1)])
    out[out < 1e-9] = 0.0
    return out


def plan_costs(pb: Problem, plan: PlanArrays) -> pd.DataFrame:
    """Monthly cost lines per scenario: columns scenario, deployment, component, usd_per_month.

    Computed from the problem's prices and the decoded plan, independently of the matrix; the
    sum per scenario is what the objective should equal.
    """
    S, C, P = pb.demand.shape
    w = pb.hour_weight
    recs = []
    starts = plan_starts(pb, plan)
    for j, d in enumerate(plan.options):
        o = pb.options[d]
        if o.stage == "fixed":
            n = plan.blocks[:, j, 0]
            label = "servers (capex, maintenance, idle power, facilities)" \
                if o.kind == "onprem" else f"{o.price_plan or 'cloud'} rental ({o.billing})"
            recs.append((d, label, n * o.block_usd_per_month))
            fixed = o.fixed_usd_per_month
            if np.any(fixed != 0):
                u = plan.used[:, j, 0]
                recs.append((d, "fixed when used (staff, implementation)", u * fixed))
        elif pb.weighted:
            bw = pb.block_weights()
            recs.append((d, f"{o.price_plan or 'on-demand'} rental (per hour rented)",
                         (plan.blocks[:, j, :] * bw).sum(axis=1) * o.block_usd_per_hour))
            su = _startup(o)
            if np.any(su != 0) and P > 1:
                recs.append((d, "start-ups (billed while starting)",
                             (starts[:, j, :] * bw).sum(axis=1) * su))
        else:
            recs.append((d, f"{o.price_plan or 'on-demand'} rental (per hour rented)",
                         plan.blocks[:, j, :].sum(axis=1) * o.block_usd_per_hour * w))
            su = _startup(o)
            if np.any(su != 0) and P > 1:
                recs.append((d, "start-ups (billed while starting)",
                             starts[:, j, :].sum(axis=1) * su * w))
    for f, v in plan.finetune.items():
        recs.append((f"finetune:{f}", "fine-tune (one-off / horizon)",
                     np.full(S, v) * pb.finetune_usd[f] / pb.horizon_months))
    per_req: dict[tuple[str, str], np.ndarray] = {}
    for k, (r, c) in enumerate(plan.pairs):
        cname = pb.classes[c]
        req = (plan.flows[:, k, :] * pb.request_weights()[c]).sum(axis=1) * 3600.0 \
            if pb.weighted else plan.flows[:, k, :].sum(axis=1) * 3600.0 * w  # (S,) /month
        for leg, mult in pb.routes[r].legs:
            o = pb.options[leg]
            comp = "api tokens and fees" if o.kind == "api" else (
                "energy per load and fees" if o.kind == "onprem" else "request fees")
            key = (leg, comp)
            per_req[key] = per_req.get(key, 0.0) + req * mult * \
                o.classes[cname].usd_per_request
    for (d, comp), v in per_req.items():
        recs.append((d, comp, v))
    rows = []
    for d, comp, v in recs:
        v = np.broadcast_to(np.asarray(v, float), (S,))
        for s in range(S):
            rows.append({"scenario": s, "deployment": d, "component": comp,
                         "usd_per_month": float(v[s])})
    df = pd.DataFrame(rows, columns=["scenario", "deployment", "component", "usd_per_month"])
    return df[df["usd_per_month"] != 0].reset_index(drop=True) if len(df) else df


def option_loads(pb: Problem, plan: PlanArrays) -> np.ndarray:
    """(S, O, P) load in replica-equivalents on each self-hosted option (peak factor in)."""
    S, C, P = pb.demand.shape
    load = np.zeros((S, len(plan.options), P))
    for k, (r, c) in enumerate(plan.pairs):
        cname = pb.classes[c]
        for leg, mult in pb.routes[r].legs:
            if leg in plan.options:
                j = plan.options.index(leg)
                capc = pb.options[leg].classes[cname].capacity_rps
                with np.errstate(divide="ignore", invalid="ignore"):
                    inv = np.where(capc > 0, mult * pb.options[leg].peak_factor / capc, np.inf)
                f = plan.flows[:, k, :]
                load[:, j, :] += np.where(f > 0, f * inv[:, None], 0.0)
    return load


@dataclass
class CheckReport:
    """Result of re-checking a solution: ``passed`` and one row per violation."""

    passed: bool
    violations: pd.DataFrame
    max_violation: float = 0.0
    n_checked: int = 0  # individual constraints (rows, bounds, integrality) evaluated

    def summary(self) -> str:
        if self.passed:
            if self.n_checked:
                return f"re-checked against {self.n_checked:,} constraints: passed"
            return "solution re-checked against every constraint: passed"
        if self.violations.empty:
            return "no plan to check"
        g = self.violations.groupby("constraint").size()
        return "solution FAILED the re-check: " + ", ".join(
            f"{n} {k} violation(s)" for k, n in g.items())


_VCOLS = ["constraint", "item", "lhs", "rhs", "excess"]


def raw_violations(m: Milp, x: np.ndarray, tol: float = 1e-6) -> list[dict[str, Any]]:
    """Rows (``lo <= A x <= hi``, relative to max(1, |bound|)), bounds and integrality of a
    solution vector: what HiGHS should have guaranteed (at most 50 of each kind)."""
    out: list[dict[str, Any]] = []

    def bad(constraint, item, lhs, rhs, excess):
        out.append({"constraint": constraint, "item": item, "lhs": float(lhs),
                    "rhs": float(rhs), "excess": float(excess)})

    ax = m.A @ x if m.A.shape[0] else np.zeros(0)
    scale = np.maximum(1.0, np.maximum(np.abs(np.where(np.isfinite(m.lo), m.lo, 0)),
                                       np.abs(np.where(np.isfinite(m.hi), m.hi, 0))))
    viol = np.maximum(m.lo - ax, ax - m.hi) / scale
    for i in np.flatnonzero(viol > tol)[:50]:
        bad(f"row:{m.row_group[i]}", m.row_label[i], ax[i],
            m.hi[i] if ax[i] > m.hi[i] else m.lo[i], viol[i])
    bviol = np.maximum(m.lb - x, x - m.ub)
    for j in np.flatnonzero(bviol > tol * np.maximum(1.0, np.abs(x)))[:50]:
        bad("bounds", m.cols.label(j), x[j], m.ub[j] if x[j] > m.ub[j] else m.lb[j], bviol[j])
    ints = np.flatnonzero(m.integrality > 0)
    frac = np.abs(x[ints] - np.round(x[ints]))
    for j in ints[frac > 1e-6][:50]:
        bad("integrality", m.cols.label(j), x[j], round(x[j]), abs(x[j] - round(x[j])))
    return out


def check_plan(pb: Problem, plan: PlanArrays, *, tol: float = 1e-6, objective: float | None = None,
               milp_: Milp | None = None, extra: list[dict[str, Any]] | None = None
               ) -> CheckReport:
    """Re-check a decoded solution against every constraint, from the problem's data.

    Independent of the matrix (so it also catches a formulation bug); when ``milp_`` and the
    solution vector are given, the raw rows, bounds and integrality are checked too (HiGHS has
    reported 'optimal' for points that violate them). Relative tolerance ``tol`` (absolute for
    quantities near 0). ``extra``: violations found elsewhere (e.g. per-scenario raw checks).
    """
    S, C, P = pb.demand.shape
    v: list[dict[str, Any]] = []
    n = 0  # individual constraints evaluated

    def bad(constraint, item, lhs, rhs, excess):
        v.append({"constraint": constraint, "item": item, "lhs": float(lhs), "rhs": float(rhs),
                  "excess": float(excess)})

    def over(lhs, rhs, scale=None):
        s = max(1.0, abs(rhs)) if scale is None else scale
        return (lhs - rhs) > tol * s

    # demand
    served = np.zeros((S, C, P))
    for k, (_, c) in enumerate(plan.pairs):
        served[:, c, :] += plan.flows[:, k, :]
    if np.any(plan.flows < -tol):
        i = np.unravel_index(np.argmin(plan.flows), plan.flows.shape)
        bad("nonnegative", f"flow[{i}]", plan.flows[i], 0.0, -plan.flows[i])
    n += plan.flows.size + served.size  # flows >= 0, demand met
    for s, c, h in zip(*np.nonzero(np.abs(served - pb.demand) >
                                   tol * np.maximum(1.0, pb.demand)), strict=True):
        bad("demand", f"s={s}, class={pb.classes[c]}, h={h}", served[s, c, h],
            pb.demand[s, c, h], served[s, c, h] - pb.demand[s, c, h])
    # capacity (replicas x utilisation target, HA reserve when used)
    load = option_loads(pb, plan)
    starts = plan_starts(pb, plan)
    for j, d in enumerate(plan.options):
        o = pb.options[d]
        reps = plan.blocks[:, j, :] * o.load_replicas_per_block
        used = plan.used[:, j, :]
        avail = pb.utilisation_target * (reps - pb.ha_reserve * used)
        n += reps.size * (3 if pb.ha_reserve > 0 else 1) + 3
        for s, h in zip(*np.nonzero(load[:, j, :] - avail > tol * np.maximum(1.0, avail)),
                        strict=True):
            bad("capacity", f"s={s}, option={d}, h={h}", load[s, j, h], avail[s, h],
                load[s, j, h] - avail[s, h])
        if pb.ha_reserve > 0 and np.any(plan.blocks[:, j, :] > o.ub_blocks * used + tol):
            bad("link", f"option={d}: blocks without 'used'", float(plan.blocks[:, j, :].max()),
                0.0, float(plan.blocks[:, j, :].max()))
        if pb.ha_reserve > 0 and np.any(np.minimum(np.abs(used), np.abs(used - 1)) > 1e-6):
            bad("integrality", f"used[{d}]", float(used.max()), 1.0, float(
                np.minimum(np.abs(used), np.abs(used - 1)).max()))
        # a fleet fixed for the horizon (on-prem servers; cloud billed always-on or for an
        # active window, reserved or committed): one count in every hour and scenario,
        # decided from the option's billing, not from the stage the builder gave it
        fleet = o.kind == "onprem" or (o.kind == "cloud" and fixed_fleet_billing(
            o.price_plan, o.billing, o.committed))
        n += fleet + (o.stage == "fixed")
        if fleet and o.stage != "fixed":
            bad("billing", f"option={d}: billed {o.billing or 'as bought'} but rented per hour",
                1.0, 0.0, 1.0)
        if (fleet or o.stage == "fixed") and np.ptp(plan.blocks[:, j, :]) > tol:
            bad("first_stage", f"option={d}", float(np.ptp(plan.blocks[:, j, :])), 0.0,
                float(np.ptp(plan.blocks[:, j, :])))
        lim = max(o.cap_blocks, o.lb_blocks)
        hi = float(plan.blocks[:, j, :].max(initial=0.0))
        if hi > lim + tol:
            bad("limits", f"option={d}", hi, lim, hi - lim)
        lo = float(plan.blocks[:, j, :].min(initial=np.inf))
        if lo < o.lb_blocks - tol:
            bad("limits", f"option={d} (fixed fleet)", lo, o.lb_blocks, o.lb_blocks - lo)
        integer = o.stage == "fixed" or pb.integer_hourly
        frac = np.abs(plan.blocks[:, j, :] - np.round(plan.blocks[:, j, :]))
        if integer and np.any(frac > 1e-6):
            bad("integrality", f"option={d}", float(frac.max()), 0.0, float(frac.max()))
        # runnable-plan rules: replicas while serving, minimum run length, change per hour
        b = plan.blocks[:, j, :]
        if not o.fixed_fleet and o.min_blocks > 1:
            runs = (load[:, j, :] > tol) | (b > tol)
            n += int(runs.sum())
            short = runs & (b < o.min_blocks - tol)
            for s, h in zip(*np.nonzero(short), strict=True):
                bad("min_replicas", f"s={s}, option={d}, h={h}", b[s, h], o.min_blocks,
                    o.min_blocks - b[s, h])
        if o.stage == "hourly" and P > 1:
            run = min(int(o.min_run_hours), P)
            if run > 1:
                started = sum(starts[:, j, pb.lag(t)] for t in range(run))
                n += b.size
                for s, h in zip(*np.nonzero(started - b > tol), strict=True):
                    bad("min_run", f"s={s}, option={d}, h={h}: blocks started in the last "
                        f"{run} h", started[s, h], b[s, h], started[s, h] - b[s, h])
            if np.isfinite(o.max_change_blocks):
                step = np.abs(b - b[:, pb.lag(1)])
                n += b.size
                for s, h in zip(*np.nonzero(step > o.max_change_blocks + tol), strict=True):
                    bad("ramp", f"s={s}, option={d}, h={h}", step[s, h], o.max_change_blocks,
                        step[s, h] - o.max_change_blocks)
    # fine-tune gating
    n += len(plan.finetune) + sum(len(pb.routes[r].finetunes) for r, _ in plan.pairs)
    for f, val in plan.finetune.items():
        if min(abs(val), abs(val - 1)) > 1e-6:
            bad("integrality", f"finetune={f}", val, round(val), abs(val - round(val)))
    for k, (r, c) in enumerate(plan.pairs):
        for f in pb.routes[r].finetunes:
            if plan.finetune.get(f, 0.0) < 0.5 and plan.flows[:, k, :].max() > tol:
                bad("finetune", f"{pb.routes[r].name}:{pb.classes[c]} uses {f} (not chosen)",
                    plan.flows[:, k, :].max(), 0.0, plan.flows[:, k, :].max())
    # quality
    for cname, qmin in pb.min_quality.items():
        c = pb.classes.index(cname)
        num = np.zeros((S, P))
        for k, (r, cc) in enumerate(plan.pairs):
            if cc == c:
                num += plan.flows[:, k, :] * pb.routes[r].quality[cname]
        with np.errstate(invalid="ignore", divide="ignore"):
            avg = np.where(served[:, c, :] > 0, num / served[:, c, :], np.inf)
        n += avg.size
        for s, h in zip(*np.nonzero(avg < qmin - tol * max(1.0, qmin)), strict=True):
            bad("quality", f"s={s}, class={cname}, h={h}", avg[s, h], qmin, qmin - avg[s, h])
    # TPM
    for d, o in pb.options.items():
        if o.kind != "api" or not o.tpm_limit:
            continue
        tpm = np.zeros((S, P))
        for k, (r, c) in enumerate(plan.pairs):
            for leg, mult in pb.routes[r].legs:
                if leg == d:
                    tok = o.classes[pb.classes[c]].tokens_per_request
                    tpm += plan.flows[:, k, :] * (mult * tok * 60.0)[:, None]
        n += tpm.size
        for s, h in zip(*np.nonzero(over(tpm, o.tpm_limit, o.tpm_limit)), strict=True):
            bad("tpm", f"s={s}, option={d}, h={h}", tpm[s, h], o.tpm_limit,
                tpm[s, h] - o.tpm_limit)
    # shares
    srw = pb.request_weights() / pb.hour_weight if pb.weighted else None

    def month(k: int, c: int) -> np.ndarray:  # (S,) a pair's flow summed over the hours
        f = plan.flows[:, k, :]
        return f.sum(axis=1) if srw is None else (f * srw[c]).sum(axis=1)

    total = np.maximum(pb.demand.sum(axis=(1, 2)) if srw is None else
                       (pb.demand * srw).sum(axis=(1, 2)), 1e-300)
    if pb.min_onprem_share is not None:
        kept = np.zeros(S)
        for k, (r, c) in enumerate(plan.pairs):
            kept += month(k, c) * pb.routes[r].onprem_kept
        share = kept / total
        n += S
        for s in np.flatnonzero(share < pb.min_onprem_share - tol):
            bad("onprem_share", f"s={s}", share[s], pb.min_onprem_share,
                pb.min_onprem_share - share[s])
    if pb.max_share_per_provider is not None:
        acc: dict[str, np.ndarray] = {}
        for k, (r, c) in enumerate(plan.pairs):
            for p, sh_ in pb.routes[r].touch.items():
                acc[p] = acc.get(p, 0.0) + month(k, c) * sh_
        for p, a in acc.items():
            share = a / total
            n += S
            for s in np.flatnonzero(share > pb.max_share_per_provider + tol):
                bad("provider_share", f"s={s}, provider={p}", share[s],
                    pb.max_share_per_provider, share[s] - pb.max_share_per_provider)
    if pb.onprem_max_kw is not None:
        kw = sum(plan.blocks[0, j, 0] * pb.options[d].kw_per_block
                 for j, d in enumerate(plan.options) if pb.options[d].kind == "onprem")
        n += 1
        if over(kw, pb.onprem_max_kw):
            bad("power", "onprem", kw, pb.onprem_max_kw, kw - pb.onprem_max_kw)
    # budget and objective
    costs = plan_costs(pb, plan)
    per_s = costs.groupby("scenario")["usd_per_month"].sum().reindex(range(S), fill_value=0.0)
    expected = float(np.dot(pb.prob, per_s.to_numpy()))
    n += (pb.budget_usd_per_month is not None) + (objective is not None)
    if pb.budget_usd_per_month is not None and over(expected, pb.budget_usd_per_month):
        bad("budget", "expected usd_per_month", expected, pb.budget_usd_per_month,
            expected - pb.budget_usd_per_month)
    if objective is not None and milp_ is not None and milp_.objective == "expected":
        if abs(objective - expected) > 1e-6 * max(1.0, abs(expected)):
            bad("objective", "objective vs recomputed cost", objective, expected,
                objective - expected)
    # raw rows, bounds, integrality of the solution vector
    if milp_ is not None and plan.x is not None:
        v.extend(raw_violations(milp_, plan.x, tol))
        n += milp_.A.shape[0] + plan.x.size + int(np.count_nonzero(milp_.integrality))
    v.extend(extra or [])
    df = pd.DataFrame(v, columns=_VCOLS)
    return CheckReport(df.empty, df, float(df["excess"].max()) if len(df) else 0.0,
                       n_checked=n)
