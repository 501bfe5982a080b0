"""Optimiser inputs: settings (:class:`OptimizeOptions`) and the priced problem (:class:`Problem`).

A scenario becomes a :class:`Problem`: workload classes with their request rate in every hour
of the diurnal profile, deployment options with their prices and per-class replica capacity,
routes (one deployment, or a cascade small -> large) with the classes they may serve, and the
limits a plan must respect. Every coefficient has a leading scenario axis ``S`` (one scenario
for the deterministic optimiser, one per Monte Carlo sample for the stochastic one).

Where the numbers come from: the one model (:class:`planner.model.evaluate.Model`), built once
for the scenario and evaluated at ``model.ctx(values, S)``, so every coefficient is an (S,)
array expression of the model (no scenario object and no pricing loop per sample; the
deterministic problem is the same code at S = 1 without values):

- requests per class per hour: :meth:`Model.klass` and
  :func:`planner.model.volumes.hourly_rates_rows` (batch-eligible requests spread evenly);
- eligibility: the model's, decided once at the medians (a deployment's ``classes``, quality
  tiers, fine-tune qualification, an API slower than the class's TTFT SLO, a replica that
  cannot meet the SLO; :mod:`planner.model.structure`);
- replica capacity per class: :meth:`Model.rps` (the perf model at the class's TTFT/TPOT SLO and
  prefix-cache share, the capacity grid when the class's lengths are uncertain, or the
  scenario's ``capacity_requests_per_s``);
- intra-hour peak: ``planning.peak_to_average`` applied to an option whose hourly load is flat,
  the model's rule (:func:`planner.model.volumes.peak_load`), per option and scenario
  (:attr:`OptionData.peak_factor`);
- API USD per request: :meth:`Model.api_request_usd` (cached input, batch share, discount,
  margin) + request fees (:meth:`Model.fees`);
- cloud USD per block: the model's instance price (:meth:`Model.cloud_instance_usd_per_hour`:
  price chain, spot interruption factor) and lens for one block under the option's billing.
  The billing decides the stage (:func:`fixed_fleet_billing`), as the cost engine bills it:

  - ``always-on`` (and any reserved or ``committed`` option): a fleet fixed for the horizon
    (first stage, like on-prem servers), paid every hour of the month;
  - ``active-window``: a fixed fleet paid ``active_hours_per_day`` x days a month. The schema
    does not say *which* hours the window covers, so the fleet is available in every profile
    hour (an optimistic reading: the cost engine sizes it for the peak hour and bills the
    window, and so does the optimiser);
  - ``scale-to-zero`` (on-demand or spot plan): blocks chosen hour by hour, paid per
    block-hour rented at the always-on price per hour, plus each block started (cyclic
    over the profile) at its start-up time x that price (:func:`_plan_rules`: the
    deployment's ``startup_s``, else the offering's, else :data:`DEFAULT_STARTUP_S`; or
    ``startup_usd_per_replica``), with the plan's minimum replicas while serving, minimum
    run length and maximum change per hour. This is the optimiser's own model: whole
    blocks in each hour, no idle time-out; the cost engine's scale-to-zero
    bill (busy time plus idle gaps, :func:`planner.costs.selfhosted.scale_to_zero_hours`)
    is a fluid estimate and will differ;
- on-prem USD per block and per replica-hour of load: the pure functions of
  :mod:`planner.costs.selfhosted` (``onprem_costs_usd_per_month`` for capital recovery,
  maintenance, idle power, facilities, staff and implementation; the linear power model
  ``server_power_w``, whose slope prices the energy of each replica-hour of load, so energy
  is exact at any utilisation), with the model's inputs and catalog fall-backs
  (:meth:`Model.onprem_inputs`);
- fine-tune one-off cost: :meth:`Model.finetune` (retry multiplier included), spread over the
  horizon.

A *block* is the integer unit a deployment is bought or rented in: one instance (cloud) or
server (on-prem) holding ``replicas_per_block`` replicas, or, when a replica needs more GPUs
than one unit has, one replica spanning ``units_per_block`` units.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from planner.catalog import Catalog
from planner.config import Scenario, med
from planner.costs import selfhosted as sh
from planner.distributions import median_of
from planner.errors import PlannerError
from planner.model.evaluate import Model
from planner.model.volumes import hourly_rates_rows, is_flat
from planner.uncertain import uncertain_inputs
from planner.workload import diurnal_weights


def _hourly(cl, periods: int) -> np.ndarray:
    """Requests/s in each hour of ``periods`` (:func:`planner.workload.hourly_rates` / 3600)."""
    return cl.hourly_rates(periods) / 3600.0

KINDS = ("api", "cloud", "onprem")


# --------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class CascadeSpec:
    """Try ``small`` first; ``escalation_share`` of the requests run again on ``large``.

    ``quality`` (class -> score) overrides the default score
    ``(1 - e) x q_small + e x q_large``.
    """

    small: str
    large: str
    escalation_share: float
    classes: tuple[str, ...] | None = None
    quality: Mapping[str, float] = field(default_factory=dict)


_SCALARS = (
    "budget_usd_per_month", "max_share_per_provider", "min_onprem_share", "onprem_max_kw",
    "utilisation_target", "gap", "time_limit_s", "objective", "cvar_lambda", "cvar_alpha",
    "exclude", "min_replicas", "startup_usd_per_replica", "min_run_hours",
    "max_change_per_hour",
)

#: Seconds a rented replica takes to start (instance boot, engine start, weights load) when
#: neither the deployment nor its catalog offering states ``startup_s``: the simulator's
#: autoscaler default (:class:`planner.sim.plan.Autoscale`).
DEFAULT_STARTUP_S = 120.0

#: Default time budget (s) of a long-horizon plan (``[optimize] horizon_hours``) when
#: ``time_limit_s`` is not given: the whole typical-day loop, not one solve.
YEAR_TIME_LIMIT_S = 90.0


@dataclass(frozen=True)
class OptimizeOptions:
    """What the optimiser may decide and the limits a plan must respect.

    Scalars mirror the proposed ``[optimize]`` table (docs/optimize-config-proposal.py); the
    mappings mirror the proposed per-deployment fields (``tpm_limit``, ``max_replicas``,
    ``max_servers``, ``max_kw``, ``provider``, ``quality``), the per-class ``min_quality`` and
    the ``[cascade.NAME]`` tables. Quality scores use the catalog's 0-100 ``quality_score``
    scale.

    Attributes
    ----------
    budget_usd_per_month : float, optional
        Cap on the monthly cost (expected cost when stochastic).
    max_share_per_provider : float, optional
        No API vendor or cloud may handle more than this share of the month's requests.
    min_onprem_share : float, optional
        Share of the month's requests that must stay entirely on-prem.
    onprem_max_kw : float, optional
        Total IT power of the on-prem servers at full load (before PUE), kW.
    utilisation_target : float, optional
        Overrides ``planning.utilisation_target``.
    gap, time_limit_s : float
        MILP relative gap and time limit (used when :func:`optimize` gets no explicit value).
    objective : {"expected", "cvar"}
        Stochastic objective: expected cost, or expected + ``cvar_lambda`` x CVaR at
        ``cvar_alpha``.
    exclude : tuple of str
        Deployments the optimiser must not use.
    integer_hourly : bool, optional
        Hourly (on-demand/spot) replica counts integer in the solve (default: yes when
        deterministic; the stochastic version solves with continuous hourly counts, a fluid
        approximation, then re-solves each scenario's hourly counts in whole replicas at the
        chosen first stage: the plan is whole replicas either way).
    min_replicas : int
        Replicas a self-hosted option runs in any hour it serves (default 1; per deployment:
        ``min_replicas_by``).
    startup_usd_per_replica : float, optional
        USD per replica started by an hourly (scale-to-zero) rental. Default: the
        deployment's ``startup_s`` (else the catalog offering's, else
        :data:`DEFAULT_STARTUP_S`) x the replica's USD/hour (billed while it starts, not
        serving).
    min_run_hours : int
        A started hourly replica runs at least this many hours (1: no constraint).
    max_change_per_hour : int, optional
        Most replicas an hourly option may add or remove from one hour to the next (cyclic
        over the profile; at least one block when a block holds more replicas).
    horizon_hours : int, optional
        Plan this many hours (a whole number of days; 8760: a year) on typical days with a
        proven gap (:mod:`.optimize_year`); default: the workload's profile.
    monthly_factors : tuple of 12 float, optional
        Long horizon: traffic multiplier of each calendar month.
    growth_per_year : float
        Long horizon: within-horizon traffic ramp ``(1 + g) ** (hour / 8760)``
        (``[optimize] year_growth`` takes ``[trends] traffic_growth_per_year``).
    typical_days : int, optional
        Long horizon: typical days to start from (default: the fewest whose envelopes are
        within the gap, :func:`.optimize_year.choose_typical_days`).
    plan_years : int, optional
        Plan this many years at once (:mod:`.optimize_multiyear`): traffic x (1 +
        ``growth_per_year``) each year (``[trends] traffic_growth_per_year``), reserved terms
        bought in a given year, costs discounted at ``discount_rate_per_year``
        (``[scenario] discount_rate_per_year``).
    """

    budget_usd_per_month: float | None = None
    max_share_per_provider: float | None = None
    min_onprem_share: float | None = None
    onprem_max_kw: float | None = None
    utilisation_target: float | None = None
    gap: float = 0.01
    time_limit_s: float = 30.0
    objective: str = "expected"
    cvar_lambda: float = 1.0
    cvar_alpha: float = 0.95
    exclude: tuple[str, ...] = ()
    tpm_limit: Mapping[str, float] = field(default_factory=dict)
    max_replicas: Mapping[str, int] = field(default_factory=dict)
    max_servers: Mapping[str, int] = field(default_factory=dict)
    max_kw: Mapping[str, float] = field(default_factory=dict)
    provider: Mapping[str, str] = field(default_factory=dict)
    quality: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    min_quality: Mapping[str, float] = field(default_factory=dict)
    cascades: Mapping[str, CascadeSpec] = field(default_factory=dict)
    integer_hourly: bool | None = None
    min_replicas: int = 1
    min_replicas_by: Mapping[str, int] = field(default_factory=dict)
    startup_usd_per_replica: float | None = None
    min_run_hours: int = 1
    max_change_per_hour: int | None = None
    horizon_hours: int | None = None
    monthly_factors: tuple[float, ...] | None = None
    growth_per_year: float = 0.0
    typical_days: int | None = None
    plan_years: int | None = None
    discount_rate_per_year: float = 0.0

    def __post_init__(self) -> None:
        if self.objective not in ("expected", "cvar"):
            raise PlannerError(
                f"optimize.objective: expected 'expected' or 'cvar', got {self.objective!r}"
            )
        for name in ("max_share_per_provider", "min_onprem_share"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise PlannerError(f"optimize.{name}: expected a share in [0, 1], got {v}")
        if self.utilisation_target is not None and not 0.0 < self.utilisation_target <= 1.0:
            raise PlannerError(
                f"optimize.utilisation_target: expected a number in (0, 1], got "
                f"{self.utilisation_target}"
            )
        if not 0.0 < self.cvar_alpha < 1.0:
            raise PlannerError(f"optimize.cvar_alpha: expected (0, 1), got {self.cvar_alpha}")
        if self.cvar_lambda < 0:
            raise PlannerError(f"optimize.cvar_lambda: expected >= 0, got {self.cvar_lambda}")
        if not 0.0 <= self.gap <= 1.0:
            raise PlannerError(f"optimize.gap: expected a relative gap in [0, 1], got {self.gap}")
        if not self.time_limit_s > 0:
            raise PlannerError(f"optimize.time_limit_s: expected > 0, got {self.time_limit_s}")
        for name, v in (("min_replicas", self.min_replicas),
                        ("min_run_hours", self.min_run_hours),
                        *((f"{d}.min_replicas", n) for d, n in self.min_replicas_by.items())):
            if int(v) != v or v < 1:
                raise PlannerError(f"optimize.{name}: expected a whole number >= 1, got {v}")
        if self.max_change_per_hour is not None and (
                int(self.max_change_per_hour) != self.max_change_per_hour
                or self.max_change_per_hour < 1):
            raise PlannerError("optimize.max_change_per_hour: expected a whole number >= 1, "
                               f"got {self.max_change_per_hour}")
        if self.startup_usd_per_replica is not None and not self.startup_usd_per_replica >= 0:
            raise PlannerError("optimize.startup_usd_per_replica: expected >= 0, got "
                               f"{self.startup_usd_per_replica}")
        for name, k in self.cascades.items():
            if not 0.0 <= k.escalation_share <= 1.0:
                raise PlannerError(
                    f"cascade.{name}.escalation_share: expected a share in [0, 1], got "
                    f"{k.escalation_share}"
                )

    def replace(self, **changes: Any) -> OptimizeOptions:
        """A copy with some fields changed."""
        return replace(self, **changes)

    @classmethod
    def from_scenario(cls, sc: Scenario, **overrides: Any) -> OptimizeOptions:
        """Settings from a scenario's ``[optimize]`` / ``[cascade.*]`` tables and fields.

        Works before and after the schema has them (every read is a ``getattr`` with a
        default). ``overrides`` replace scalars and update (merge into) the mappings.
        """
        vals: dict[str, Any] = {}
        opt = getattr(sc, "optimize", None)
        if opt is not None:
            for name in _SCALARS:
                v = getattr(opt, name, None)
                if v is None:
                    continue
                vals[name] = tuple(v) if name == "exclude" else (
                    v if isinstance(v, str) else med(v))
            if getattr(opt, "horizon_hours", None) is not None:
                vals["horizon_hours"] = int(opt.horizon_hours)
                if opt.monthly_factors is not None:
                    vals["monthly_factors"] = tuple(float(f) for f in opt.monthly_factors)
                if opt.year_growth:
                    vals["growth_per_year"] = float(med(sc.trends.traffic_growth_per_year))
                if opt.typical_days is not None:
                    vals["typical_days"] = int(opt.typical_days)
                if "time_limit_s" not in opt.model_fields_set:
                    vals["time_limit_s"] = YEAR_TIME_LIMIT_S
            if getattr(opt, "plan_years", None) is not None:
                vals["plan_years"] = int(opt.plan_years)
                vals["growth_per_year"] = float(med(sc.trends.traffic_growth_per_year))
                vals["discount_rate_per_year"] = float(sc.scenario.discount_rate_per_year)
        maps: dict[str, dict[str, Any]] = {
            "tpm_limit": {}, "max_replicas": {}, "max_servers": {}, "max_kw": {},
            "provider": {}, "quality": {}, "min_replicas_by": {},
        }
        for kind in KINDS:
            for name, dep in getattr(sc, kind).items():
                for key in ("tpm_limit", "max_replicas", "max_servers", "max_kw", "provider",
                            "min_replicas_by"):
                    v = getattr(dep, "min_replicas" if key == "min_replicas_by" else key, None)
                    if v is not None:
                        maps[key][name] = v if isinstance(v, str | int) else med(v)
                q = getattr(dep, "quality", None)
                if q:
                    maps["quality"][name] = {c: float(med(s)) for c, s in q.items()}
        minq = {}
        for cname, wc in sc.workload.items():
            v = getattr(wc, "min_quality", None)
            if v is not None:
                minq[cname] = float(med(v))
        cascades = {}
        for name, k in (getattr(sc, "cascade", None) or {}).items():
            cascades[name] = CascadeSpec(
                small=k.small, large=k.large, escalation_share=float(med(k.escalation_share)),
                classes=tuple(k.classes) if k.classes is not None else None,
                quality={c: float(med(s)) for c, s in (k.quality or {}).items()},
            )
            if k.quality:
                maps["quality"][name] = dict(cascades[name].quality)
        merged: dict[str, Any] = {**vals, **maps, "min_quality": minq, "cascades": cascades}
        known = {f.name for f in fields(cls)}
        for key, v in overrides.items():
            if key not in known:
                raise PlannerError(f"OptimizeOptions: unknown setting {key!r}")
            if isinstance(merged.get(key), dict) and isinstance(v, Mapping):
                merged[key] = {**merged[key], **dict(v)}
            else:
                merged[key] = v
        return cls(**merged)


# --------------------------------------------------------------------------------------------
# the priced problem


@dataclass
class ClassCoef:
    """One option serving one class: arrays over scenarios (S,)."""

    capacity_rps: np.ndarray  # per replica at the class SLO (inf for an API)
    usd_per_request: np.ndarray  # API bill, request fees, on-prem energy per request
    tokens_per_request: np.ndarray  # input + output (TPM limits)
    quality: float  # nan when unknown
    input_tokens: np.ndarray | None = None  # per request, this option's tokenizer (S,)
    output_tokens: np.ndarray | None = None
    prefix_cache_hit_share: np.ndarray | None = None  # self-hosted KV reuse the capacity assumes


@dataclass
class OptionData:
    """One deployment candidate.

    ``stage``: ``api`` (pay per request), ``hourly`` (scale-to-zero on-demand/spot blocks
    chosen per hour, paid per block-hour), ``fixed`` (bought on-prem servers, or cloud billed
    always-on or for an active window, reserved or committed: one count for the whole
    horizon, paid ``block_usd_per_month`` whatever the load).
    """

    name: str
    kind: str
    stage: str
    provider: str | None
    model: str | None = None
    accelerator: str | None = None
    offering: str | None = None
    price_plan: str | None = None  # cloud: on-demand / spot / reserved-1y / reserved-3y
    billing: str | None = None  # cloud: always-on / active-window / scale-to-zero
    committed: bool = False
    finetune: str | None = None
    gpus_per_replica: int = 0
    replicas_per_block: int = 1
    #: replicas per block that carry load when fewer than ``replicas_per_block`` (a stated
    #: ``replicas`` fleet whose blocks have spare slots); see :attr:`load_replicas_per_block`
    capacity_replicas_per_block: float | None = None
    units_per_block: int = 1
    gpus_per_block: int = 0
    lb_blocks: float = 0.0
    ub_blocks: float = math.inf  # big-M: enough for all demand (always finite once built)
    ub_hourly: np.ndarray | None = None  # (S, P) enough for each hour's demand
    cap_blocks: float = math.inf  # the user's cap (max_replicas, max_servers, max_kw)
    fixed_fleet: bool = False  # the scenario fixes the count (servers / replicas)
    kw_per_block: float = 0.0
    tpm_limit: float | None = None
    block_usd_per_hour: np.ndarray | None = None  # hourly stage (S,)
    block_usd_per_month: np.ndarray | None = None  # fixed stage (S,)
    fixed_usd_per_month: np.ndarray | None = None  # when used at all (ops, implementation)
    classes: dict[str, ClassCoef] = field(default_factory=dict)
    perf: dict[str, Any] = field(default_factory=dict)  # for the simulation (spec ids)
    #: (S,) intra-hour peak / hourly mean of this option's load: ``peak_to_average`` where
    #: the model calls its hourly load (over the classes it may serve) flat, else 1
    peak_factor: np.ndarray | None = None
    #: blocks the option runs in any hour it serves (``min_replicas`` / replicas per block,
    #: rounded up; 1 is what whole blocks imply anyway)
    min_blocks: float = 1.0
    #: hourly stage: (S,) USD per block started (billed while it starts, not serving) and the
    #: start-up time it was derived from (nan when stated in USD)
    startup_usd_per_block: np.ndarray | None = None
    startup_s: float = math.nan
    #: hourly stage: a started block runs at least this many hours (1: no constraint)
    min_run_hours: int = 1
    #: hourly stage: most blocks added or removed from one hour to the next
    max_change_blocks: float = math.inf

    @property
    def selfhosted(self) -> bool:
        return self.kind != "api"

    @property
    def load_replicas_per_block(self) -> float:
        """Replicas of one block that serve load (capacity rows, the plan's replicas)."""
        if self.capacity_replicas_per_block is not None:
            return float(self.capacity_replicas_per_block)
        return float(self.replicas_per_block)


@dataclass
class RouteData:
    """A way to serve a class: one deployment, or a cascade (small, then large for a share)."""

    name: str
    kind: str  # "single" | "cascade"
    legs: tuple[tuple[str, np.ndarray], ...]  # (option, requests per routed request) (S,)
    classes: tuple[str, ...]
    quality: dict[str, float]
    finetunes: tuple[str, ...]
    onprem_kept: np.ndarray  # (S,) share of routed requests that never leave on-prem
    touch: dict[str, np.ndarray]  # provider -> (S,) share of routed requests it handles


@dataclass
class Problem:
    """Everything the MILP needs, priced; arrays have a leading scenario axis S."""

    name: str
    classes: tuple[str, ...]
    periods: int
    hours_per_month: float
    horizon_months: int
    demand: np.ndarray  # (S, C, P) requests/s
    prob: np.ndarray  # (S,)
    options: dict[str, OptionData]
    routes: list[RouteData]
    finetune_usd: dict[str, np.ndarray]  # one-off, (S,)
    utilisation_target: float
    ha_reserve: int
    #: ``peak_to_average`` when every class's hourly demand is flat, else 1 (reported);
    #: sizing uses each option's own :attr:`OptionData.peak_factor` (the model's rule)
    peak_factor: float
    min_quality: dict[str, float]
    budget_usd_per_month: float | None
    max_share_per_provider: float | None
    min_onprem_share: float | None
    onprem_max_kw: float | None
    integer_hourly: bool
    excluded: dict[str, dict[str, str]]  # class -> deployment -> why it cannot serve it
    slo: dict[str, dict[str, float]]  # class -> {ttft_s, tpot_s, e2e_s, percentile}
    lengths: dict[str, tuple[float, float]]  # class -> (input, output) tokens (base tokenizer)
    messages: list[str] = field(default_factory=list)
    #: typical-period (aggregated) problems only (:mod:`.optimize_year`): (P,) hours of the
    #: month each profile hour stands for (rented blocks and start-ups); None: ``hour_weight``
    #: in every hour
    hour_weights: np.ndarray | None = None
    #: typical-period problems only: (C, P) hours of the month one request/s of each class's
    #: flow in each hour stands for (request prices, month totals and shares); None: the
    #: block weights
    flow_weights: np.ndarray | None = None
    #: the profile repeats in cycles of this many hours (start-ups, minimum run, change per
    #: hour wrap around within each cycle: one typical day); None: the whole profile
    cycle_hours: int | None = None
    #: lower-bound (typical-period) problems only: (S,) the month's requests the provider
    #: shares are taken of, in the rows' weighted units (default: this problem's demand);
    #: the full horizon's, so that flows scaled down to lower envelopes keep the same caps
    share_total: np.ndarray | None = None

    @property
    def n_scenarios(self) -> int:
        return int(self.demand.shape[0])

    @property
    def hour_weight(self) -> float:
        """Hours of the month each profile hour stands for: hours_per_month / periods."""
        return self.hours_per_month / self.periods

    @property
    def weighted(self) -> bool:
        """Hours stand for different lengths of time (a typical-period problem)."""
        return self.hour_weights is not None or self.flow_weights is not None

    def block_weights(self) -> np.ndarray:
        """(P,) hours of the month each profile hour's rented blocks are paid for."""
        if self.hour_weights is None:
            return np.full(self.periods, self.hour_weight)
        return np.asarray(self.hour_weights, float)

    def request_weights(self) -> np.ndarray:
        """(C, P) hours of the month one request/s of a class in an hour stands for."""
        if self.flow_weights is not None:
            return np.asarray(self.flow_weights, float)
        return np.broadcast_to(self.block_weights(), (len(self.classes), self.periods))

    def lag(self, t: int = 1) -> np.ndarray:
        """(P,) index of the hour ``t`` hours before each hour, cyclic over the profile (or
        within each cycle of :attr:`cycle_hours`); ``np.roll(np.arange(P), t)`` by default."""
        P = self.periods
        n = self.cycle_hours
        if n is None or n >= P:
            return np.roll(np.arange(P), t)
        h = np.arange(P)
        return h - h % n + (h % n - t) % n

    def pairs(self) -> list[tuple[int, int]]:
        """(route index, class index) of every allowed routing."""
        ci = {c: i for i, c in enumerate(self.classes)}
        return [(r, ci[c]) for r, rt in enumerate(self.routes) for c in rt.classes]

    def route_usd_per_request(self, r: int, c: str) -> np.ndarray:
        """(S,) USD per request of class ``c`` sent down route ``r`` (all legs)."""
        rt = self.routes[r]
        return sum(m * self.options[o].classes[c].usd_per_request for o, m in rt.legs)

    def scaled(self, *, traffic: float = 1.0, api_price: float = 1.0,
               gpu_price: float = 1.0) -> Problem:
        """A copy with demand x ``traffic``, API prices x ``api_price`` and GPU rental,
        purchase and fixed costs of self-hosted options x ``gpu_price`` (sensitivity scans).
        """
        opts = {}
        for name, o in self.options.items():
            cl = {}
            for c, k in o.classes.items():
                usd = k.usd_per_request * (api_price if o.kind == "api" else 1.0)
                cl[c] = replace(k, usd_per_request=usd)
            g = gpu_price if o.selfhosted else 1.0
            ubh = None if o.ub_hourly is None else np.ceil(o.ub_hourly * max(traffic, 1.0))
            opts[name] = replace(
                o, classes=cl, ub_hourly=ubh,
                ub_blocks=o.ub_blocks if ubh is None else max(o.lb_blocks, float(ubh.max())),
                block_usd_per_hour=None if o.block_usd_per_hour is None
                else o.block_usd_per_hour * g,
                block_usd_per_month=None if o.block_usd_per_month is None
                else o.block_usd_per_month * g,
                startup_usd_per_block=None if o.startup_usd_per_block is None
                else o.startup_usd_per_block * g,
            )
        return replace(self, demand=self.demand * traffic, options=opts, messages=[])

    def with_utilisation(self, utilisation_target: float) -> Problem:
        """A copy with another utilisation target (upper bounds on blocks rescaled)."""
        f = self.utilisation_target / utilisation_target
        opts = {}
        for name, o in self.options.items():
            if o.selfhosted and o.ub_hourly is not None:
                ubh = np.maximum(np.ceil(o.ub_hourly * max(f, 1.0)), o.lb_blocks)
                o = replace(o, ub_hourly=ubh, ub_blocks=max(o.lb_blocks, float(ubh.max())))
            opts[name] = o
        return replace(self, utilisation_target=utilisation_target, options=opts, messages=[])

    def _one_scenario(self, coef: Callable[[Any], Any], ub_hourly: Callable[[Any], Any],
                      demand: np.ndarray) -> Problem:
        """A one-scenario copy: ``coef`` maps every per-scenario coefficient array (leading
        axis = scenario) to its one-scenario value, ``ub_hourly`` the hourly block bounds."""

        def t(a):
            return None if a is None else np.atleast_1d(coef(a))

        opts = {}
        for name, o in self.options.items():
            cl = {c: ClassCoef(t(k.capacity_rps), t(k.usd_per_request), t(k.tokens_per_request),
                               k.quality, t(k.input_tokens), t(k.output_tokens),
                               t(k.prefix_cache_hit_share))
                  for c, k in o.classes.items()}
            opts[name] = replace(o, classes=cl, block_usd_per_hour=t(o.block_usd_per_hour),
                                 block_usd_per_month=t(o.block_usd_per_month),
                                 fixed_usd_per_month=t(o.fixed_usd_per_month),
                                 peak_factor=t(o.peak_factor),
                                 startup_usd_per_block=t(o.startup_usd_per_block),
                                 ub_hourly=None if o.ub_hourly is None
                                 else ub_hourly(o.ub_hourly))
        routes = [replace(r, legs=tuple((o, t(x)) for o, x in r.legs),
                          onprem_kept=t(r.onprem_kept),
                          touch={p: t(x) for p, x in r.touch.items()}) for r in self.routes]
        return replace(self, demand=demand, prob=np.ones(1), options=opts, routes=routes,
                       finetune_usd={f: t(v) for f, v in self.finetune_usd.items()},
                       messages=[])

    def take(self, s: int) -> Problem:
        """The problem of scenario ``s`` alone (a deterministic problem)."""

        def pick(a):
            return np.atleast_1d(np.asarray(a)[s:s + 1])

        return self._one_scenario(pick, pick, self.demand[s:s + 1])

    def mean_problem(self) -> Problem:
        """The expected-value problem: every coefficient replaced by its mean over scenarios."""
        return self._one_scenario(
            lambda a: np.average(a, axis=0, weights=self.prob),
            lambda u: np.max(u, axis=0, keepdims=True),
            np.average(self.demand, axis=0, weights=self.prob)[None])


# --------------------------------------------------------------------------------------------
# building


def _slo(wc) -> dict[str, float]:
    s = wc.slo
    out = {"ttft_s": math.inf, "tpot_s": math.inf, "e2e_s": math.inf, "percentile": 90.0}
    if s is not None:
        for k in ("ttft_s", "tpot_s", "e2e_s"):
            v = getattr(s, k)
            if v is not None:
                out[k] = float(med(v))
        out["percentile"] = float(s.percentile)
    return out


class _MemoCatalog:
    """A catalog whose row look-ups are memoised (each look-up filters a DataFrame; the
    optimiser's studies build many problems of one scenario)."""

    _MEMO = ("llm", "accelerator", "api", "cloud", "server", "tokens_per_unit")

    def __init__(self, cat: Catalog):
        self._cat = cat
        self._memo: dict = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._cat, name)
        if name not in self._MEMO:
            return attr

        def call(*args):
            key = (name, *args)
            if key not in self._memo:
                self._memo[key] = attr(*args)
            return dict(self._memo[key])

        return call


def _vec(x: Any, n: int) -> np.ndarray:
    """``x`` (a scalar or ``(n,)`` array) as a fresh float array of shape ``(n,)``."""
    return np.array(np.broadcast_to(np.asarray(x, dtype=float), (n,)), dtype=float)


def _cloud_block(model: Model, ctx: Any, o: Any, rpb: int, billing: str) -> Any:
    """USD/month of one block under ``billing``: ``always-on`` pays every hour of the month,
    ``active-window`` ``active_hours_per_day`` hours a day; the model's instance price (price
    chain, spot factor) and lens (committed capacity is free under the marginal lens)."""
    dep = o.dep
    if dep.committed and model.sc.planning.lens == "marginal":
        return 0.0
    price, factor = model.cloud_instance_usd_per_hour(ctx, o)
    units, _ = sh.pack(float(rpb), dep.gpus_per_replica, o.price.gpus_per_instance)
    hours = model.hpm if billing == "always-on" else (dep.active_hours_per_day * model.hpm / 24.0)
    return units * hours * price * factor


def _onprem_block(model: Model, ctx: Any, o: Any, upb: int, gpr: int) -> tuple[Any, Any, Any]:
    """(USD/month per idle block, fixed USD/month when used, USD per replica-hour of load).

    The on-prem cost components of :func:`planner.costs.selfhosted.onprem_costs_usd_per_month`
    (capital recovery, maintenance, energy, facilities: linear in servers) for the ``upb``
    servers of one block with their GPUs idle; the operations staff and the implementation
    once for the option. Energy follows the linear power model
    :func:`planner.costs.selfhosted.server_power_w`: a server draws its base power plus its
    GPUs at ``idle share`` of TDP (in the block price) and each GPU busy a share u of the time
    adds ``(1 - idle share) x TDP x u``; a replica-hour of load (the load in
    replica-equivalents, utilisation = load x GPUs per replica / GPUs paid, as the cost engine
    computes it) therefore costs ``gpus_per_replica x (P(u=1) - P(u=0))`` per GPU times PUE
    times the electricity price, whatever the number of servers. Inputs and catalog
    fall-backs are the model's (:meth:`planner.model.evaluate.Model.onprem_inputs`), for every
    value of ``ctx`` at once.
    """
    p = model.onprem_inputs(ctx, o)
    idle_w = sh.server_power_w(p["base_w"], p["gps"], p["tdp"], 0.0, p["idle"])
    common = dict(
        server_price_usd=p["price"], years=p["years"], residual_share=p["residual"],
        cost_of_capital_per_year=p["coc"], maintenance_share_per_year=p["maint"],
        pue=p["pue"], usd_per_kwh=p["kwh"], hours_per_month=model.hpm,
        facilities_usd_per_server_year=p["facilities"],
        horizon_months=model.horizon, include_capex=p["capex"],
    )
    block = sh.onprem_costs_usd_per_month(float(upb), power_w=idle_w, **common)
    fixed = sh.onprem_costs_usd_per_month(0.0, ops_usd_per_year=p["ops"],
                                          implementation_usd=p["impl"], **common)
    # W a replica adds at full load: the linear model's slope over its GPUs
    busy_w = sh.server_power_w(0.0, gpr, p["tdp"], 1.0, p["idle"]) - \
        sh.server_power_w(0.0, gpr, p["tdp"], 0.0, p["idle"])
    per_rh = sh.energy_usd_per_month(busy_w, 1.0, p["pue"], p["kwh"], 1.0)
    return (sum(np.asarray(v, float) for v in block.values()),
            sum(np.asarray(v, float) for v in fixed.values()), per_rh)


def _fees_per_request(model: Model, ctx: Any, kind: str, name: str, dep: Any) -> Any:
    """Request fees of one option, USD per LLM request (:meth:`Model.fees` at 1 request)."""
    return sum(usd for _, usd, _ in model.fees(ctx, dep, f"{kind}.{name}", 1.0))


def _reason(o: Any, c: str, slo: dict) -> str:
    """Why the model's option ``o`` does not serve class ``c`` (a capacity reason spelled
    out: which SLO, by how much)."""
    why = o.unserved[c]
    if why.startswith("cannot be served"):
        for row in o.capacity_rows:
            if row["class"] == c:
                return _slo_reason(row, slo)
    return why


def _option_peak_factor(pb_demand: np.ndarray, idx: Sequence[int], inv_cap: Sequence[Any],
                        p2a: float | None) -> np.ndarray:
    """(S,) intra-hour peak / hourly mean of one option's load, as the model decides it
    (:func:`planner.model.volumes.peak_load`): ``peak_to_average`` where the option's hourly
    load over the classes it may serve (``sum_c demand_c,h / capacity_c``) is flat
    (:func:`planner.model.volumes.is_flat`), else 1 (the profile's hours carry the peak)."""
    S = pb_demand.shape[0]
    if p2a is None or not len(idx):
        return np.ones(S)
    load = sum(pb_demand[:, i, :] * np.asarray(k, float)[:, None] for i, k in zip(idx, inv_cap,
                                                                                 strict=True))
    return np.where(is_flat(load), float(p2a), 1.0)


#: Cloud billings whose instances are a fleet fixed for the horizon (a first-stage count).
FIXED_BILLINGS = ("always-on", "active-window")


def fixed_fleet_billing(plan: str | None, billing: str | None, committed: bool) -> bool:
    """A cloud option is a fleet fixed for the horizon (first stage) when it is billed
    always-on or for an active window, reserved (``plan`` reserved-*), or committed; only a
    ``scale-to-zero`` option on an on-demand or spot plan is rented hour by hour."""
    return billing in FIXED_BILLINGS or committed or str(plan or "").startswith("reserved")


def _pack(gpr: int, gpu_per_unit: int) -> tuple[int, int]:
    """(replicas per block, units per block)."""
    if gpr <= gpu_per_unit:
        return gpu_per_unit // gpr, 1
    return 1, int(math.ceil(gpr / gpu_per_unit))


def _slo_reason(capd: dict, slo: dict) -> str:
    if not capd.get("fits", True):
        return f"does not fit ({capd.get('limited_by', 'memory')})"
    bits = []
    if capd.get("ttft_s", 0) > slo["ttft_s"]:
        bits.append(f"TTFT SLO {slo['ttft_s']:g} s cannot be met (TTFT {capd['ttft_s']:.3g} s "
                    "with one request at a time)")
    if capd.get("tpot_s", 0) > slo["tpot_s"]:
        bits.append(f"TPOT SLO {slo['tpot_s']:g} s cannot be met (TPOT {capd['tpot_s']:.3g} s "
                    "with one request at a time)")
    return "; ".join(bits) or "no capacity at the SLO"


def _option_data(model: Model, ctx: Any, S: int, name: str, kind: str, dep: Any,
                 options: OptimizeOptions, quality: Callable[[str, str], float],
                 cat: Any) -> OptionData:
    """One deployment option priced by the model for the S values of ``ctx``."""
    o_ = model.by_name[name]
    prov = options.provider.get(name)
    if kind == "api":
        prov = prov or o_.row.get("provider")
        o = OptionData(name, "api", "api", prov, model=o_.row.get("llm") or dep.offering,
                       offering=dep.offering, finetune=dep.fine_tune,
                       tpm_limit=options.tpm_limit.get(name))
        fees = _fees_per_request(model, ctx, kind, name, dep)
        for c in o_.served:
            usd = 0.0
            for v in model.api_request_usd(ctx, o_, c).values():
                usd = usd + v
            _, i_tok, o_tok = model.klass(ctx, c, o_.tokenizer)[:3]
            i_tok, o_tok = _vec(i_tok, S), _vec(o_tok, S)
            o.classes[c] = ClassCoef(np.full(S, np.inf), _vec(usd + fees, S), i_tok + o_tok,
                                     quality(name, c), i_tok, o_tok)
        return o
    # self-hosted
    gpr = dep.gpus_per_replica
    gpu_unit = o_.gpus_per_unit
    if kind == "cloud":
        plan = o_.price.plan
        stage = "fixed" if fixed_fleet_billing(plan, dep.billing, dep.committed) else "hourly"
        billing = dep.billing
        if prov is None:
            stated = dep.usd_per_gpu_hour is not None or dep.usd_per_instance_hour is not None
            prov = name if stated else (
                (o_.offer or {}).get("provider") or _cheapest_provider(cat, o_.acc_id, plan))
    else:
        stage, prov, plan, billing = "fixed", None, None, None
    rpb, upb = _pack(gpr, gpu_unit)
    o = OptionData(name, kind, stage, prov, model=dep.model, accelerator=o_.acc_id,
                   offering=dep.offering if kind == "cloud" else dep.server,
                   price_plan=plan if kind == "cloud" else None, billing=billing,
                   committed=bool(dep.committed),
                   finetune=dep.fine_tune, gpus_per_replica=gpr, replicas_per_block=rpb,
                   units_per_block=upb, gpus_per_block=upb * gpu_unit,
                   perf={"stated": True} if dep.capacity_requests_per_s is not None
                   else {"model": dep.model, "accelerator": o_.acc_id, "gpus": gpr,
                         "precision": dep.precision, "perf": dict(dep.perf)})
    energy = np.zeros(S)  # USD per replica-hour of load (on-prem)
    if kind == "cloud":
        o.fixed_usd_per_month = np.zeros(S)
        if stage == "hourly":
            # scale-to-zero: whole block-hours rented in each hour, at the always-on price
            o.block_usd_per_hour = _vec(_cloud_block(model, ctx, o_, rpb, "always-on"), S) / \
                model.hpm
            o.block_usd_per_month = np.zeros(S)
        else:
            # a fixed fleet: always-on pays every hour of the month, active-window its active
            # hours a day (committed/reserved scale-to-zero: every hour)
            paid = billing if billing != "scale-to-zero" else "always-on"
            o.block_usd_per_month = _vec(_cloud_block(model, ctx, o_, rpb, paid), S)
            o.block_usd_per_hour = np.zeros(S)
    else:
        block, fixed_m, per_rh = _onprem_block(model, ctx, o_, upb, gpr)
        o.block_usd_per_month, o.fixed_usd_per_month = _vec(block, S), _vec(fixed_m, S)
        energy = _vec(per_rh, S)
        o.block_usd_per_hour = np.zeros(S)
        p0 = model.onprem_inputs(model.ctx(), o_)  # power limits: at the medians
        o.kw_per_block = float(sh.server_power_w(p0["base_w"], gpu_unit, p0["tdp"], 1.0,
                                                 p0["idle"])) * upb / 1e3
    # fixed counts (existing fleet) and caps
    fixed = None
    if kind == "onprem" and dep.servers is not None:
        fixed = dep.servers // upb
        spare = dep.servers - fixed * upb
        if spare:
            # servers that hold no whole replica are paid all the same (the cost engine prices
            # every stated server)
            o.fixed_usd_per_month = o.fixed_usd_per_month + o.block_usd_per_month * spare / upb
    elif dep.replicas is not None:
        fixed = int(math.ceil(dep.replicas / rpb))
    if fixed and dep.replicas is not None and dep.replicas < fixed * rpb:
        # a stated fleet of replicas: only those carry load, not every slot of its blocks
        o.capacity_replicas_per_block = dep.replicas / fixed
    ub = math.inf
    if name in options.max_replicas:
        ub = min(ub, options.max_replicas[name] // rpb)
    if name in options.max_servers:
        ub = min(ub, options.max_servers[name] // upb)
    if name in options.max_kw and o.kw_per_block > 0:
        ub = min(ub, math.floor(options.max_kw[name] / o.kw_per_block + 1e-9))
    o.cap_blocks = float(ub)
    _plan_rules(o, dep, options, S, getattr(o_, "offer", None))
    if fixed is not None:
        o.lb_blocks = o.cap_blocks = float(fixed)
        o.fixed_fleet = True
    fees = _vec(_fees_per_request(model, ctx, kind, name, dep), S)
    for c in o_.served:
        cap = _vec(model.rps(ctx, o_, c), S)
        _, i_tok, o_tok = model.klass(ctx, c, o_.tokenizer)[:3]
        i_tok, o_tok = _vec(i_tok, S), _vec(o_tok, S)
        hit = np.full(S, float(median_of(model.sc.workload[c].prefix_cache_hit_share)))
        e_req = np.where(cap > 0, energy / (3600.0 * cap), 0.0)
        o.classes[c] = ClassCoef(cap, fees + e_req, i_tok + o_tok, quality(name, c),
                                 i_tok, o_tok, hit)
    return o


def _plan_rules(o: OptionData, dep: Any, options: OptimizeOptions, S: int,
                offer: Mapping[str, Any] | None) -> None:
    """The runnable-plan rules of a self-hosted option: replicas while serving, and for an
    hourly rental its start-up cost per block, minimum run length and maximum change per
    hour (:class:`OptimizeOptions`)."""
    rpb = float(o.load_replicas_per_block)
    m = int(options.min_replicas_by.get(o.name, options.min_replicas))
    o.min_blocks = float(max(1, math.ceil(m / max(rpb, 1e-12) - 1e-9)))
    if o.stage != "hourly":
        o.startup_usd_per_block = np.zeros(S)
        return
    if options.startup_usd_per_replica is not None:
        o.startup_usd_per_block = np.full(S, float(options.startup_usd_per_replica) *
                                          o.replicas_per_block)
    else:
        st = getattr(dep, "startup_s", None)
        if st is None:
            v = (offer or {}).get("startup_s")
            st = None if v is None or (isinstance(v, float) and math.isnan(v)) else v
        o.startup_s = float(med(st)) if st is not None else DEFAULT_STARTUP_S
        o.startup_usd_per_block = o.block_usd_per_hour * o.startup_s / 3600.0
    o.min_run_hours = int(options.min_run_hours)
    if options.max_change_per_hour is not None:
        # in blocks; a block holding more replicas than the limit may still change by one
        o.max_change_blocks = float(max(1, math.floor(options.max_change_per_hour /
                                                      max(rpb, 1e-12) + 1e-9)))


def problem_model(sc: Scenario, cat: Catalog, *, uncertain: bool = False) -> Model:
    """The model :func:`build_problem` prices a scenario with when it is given none: the
    scenario compiled against ``cat`` with memoised row look-ups, with its uncertain inputs
    (a capacity grid for uncertain lengths) when ``uncertain``, else at the medians. Build it
    once and pass it to :func:`build_problem` and to
    :func:`.optimize_verify.scenario_traffic`."""
    return Model(sc, _MemoCatalog(cat), uncertain_inputs(sc) if uncertain else None)


def build_problem(
    sc: Scenario,
    cat: Catalog,
    options: OptimizeOptions,
    *,
    values: Mapping[str, Any] | None = None,
    n: int | None = None,
    model: Model | None = None,
    integer_hourly: bool | None = None,
) -> Problem:
    """Price a scenario into a :class:`Problem`: every coefficient from the one model.

    Parameters
    ----------
    sc : Scenario
        The scenario (its medians fix the structure: options, eligibility, routes).
    cat : Catalog
    options : OptimizeOptions
    values : mapping of key path to array (S,), optional
        Sampled values of the scenario's uncertain inputs (one per scenario of the
        sample-average problem; :func:`planner.engines.optimize.sample_inputs`); inputs not
        given are held at their medians. Default: none, one scenario at the medians (the
        deterministic problem).
    n : int, optional
        Number of scenarios S (default: the length of the arrays in ``values``, else 1).
    model : Model, optional
        The model to price with. Default: :func:`problem_model` (with the scenario's
        uncertain inputs when ``values`` are given); pass the one the values were drawn with
        (:func:`planner.engines.risk.compiled.compile_scenario`) to build it once.
    integer_hourly : bool, optional
        Overrides ``options.integer_hourly``.

    Every (S,) coefficient is one array expression of the model at ``model.ctx(values, S)``:
    demand per class and hour (:meth:`Model.klass` +
    :func:`planner.model.volumes.hourly_rates_rows`), API USD per request
    (:meth:`Model.api_request_usd` + :meth:`Model.fees`), capacity per replica
    (:meth:`Model.rps`), cloud and on-prem block prices (:meth:`Model.cloud_instance_usd_per_hour`,
    :meth:`Model.onprem_inputs`), fine-tune one-offs (:meth:`Model.finetune`) and token counts.
    Which options serve which classes is the model's (decided once, at the medians).
    """
    values = dict(values or {})
    if n is None:
        n = max((np.size(v) for v in values.values()), default=1)
    S = int(n)
    classes = tuple(sc.workload)
    if not classes:
        raise PlannerError("optimize: the scenario has no workload classes")
    deps = {n_: kd for n_, kd in sc.deployments().items() if n_ not in set(options.exclude)}
    unknown = [n_ for n_ in options.exclude if n_ not in sc.deployments()]
    if unknown:
        raise PlannerError(f"optimize.exclude: unknown deployment(s) {', '.join(unknown)}")
    if not deps:
        raise PlannerError("optimize: the scenario has no deployment candidates to choose from")
    if model is None:
        model = problem_model(sc, cat, uncertain=bool(values))
    cat = model.cat
    ctx = model.ctx(values, S)
    P = model.periods
    hpm = sc.planning.hours_per_month
    util = options.utilisation_target or sc.planning.utilisation_target
    slo = {c: _slo(wc) for c, wc in sc.workload.items()}

    # -- eligibility: the model's, decided once at the medians ------------------------------
    why: dict[str, dict[str, str]] = {c: {} for c in classes}
    for name in deps:
        o_ = model.by_name[name]
        for c in o_.unserved:
            why[c][name] = _reason(o_, c, slo[c])

    def quality(name: str, c: str) -> float:
        q = options.quality.get(name, {})
        if c in q:
            return float(q[c])
        o_ = model.by_name[name]
        row = o_.row if o_.kind == "api" else o_.llm_row
        v = row.get("quality_score") if row else None
        return float(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) \
            else math.nan

    # -- coefficients: (S,) arrays of the model at the sampled values -----------------------
    first = model.by_name[next(iter(deps))]
    tok0 = first.tokenizer
    demand = np.zeros((S, len(classes), P))
    lengths = {}
    med_ctx = model.ctx()
    for i, c in enumerate(classes):
        req, _, _, _, batch = model.klass(ctx, c, tok0)[:5]
        demand[:, i] = hourly_rates_rows(_vec(req, S), diurnal_weights(sc.workload[c].diurnal),
                                         _vec(batch, S), P) / 3600.0
        _, isl, osl = model.klass(med_ctx, c, tok0)[:3]
        lengths[c] = (float(isl), float(osl))

    opts: dict[str, OptionData] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, (kind, dep) in deps.items():
            opts[name] = _option_data(model, ctx, S, name, kind, dep, options, quality, cat)

    # -- routes -----------------------------------------------------------------------------
    minq = {c: float(v) for c, v in options.min_quality.items() if c in classes}
    routes: list[RouteData] = []
    for name, o in opts.items():
        ok = []
        for c in o.classes:
            if c in minq and math.isnan(o.classes[c].quality):
                why[c][name] = (f"no quality score for class {c} (the class needs "
                                f"{minq[c]:g}; give quality.{c} for {name})")
                continue
            ok.append(c)
        kept = np.ones(S) if o.kind == "onprem" else np.zeros(S)
        touch = {o.provider: np.ones(S)} if o.provider else {}
        routes.append(RouteData(
            name, "single", ((name, np.ones(S)),), tuple(ok),
            {c: o.classes[c].quality for c in ok},
            (o.finetune,) if o.finetune else (), kept, touch,
        ))
    for kname, k in options.cascades.items():
        for leg in (k.small, k.large):
            if leg not in sc.deployments():
                raise PlannerError(f"cascade.{kname}: unknown deployment {leg!r}")
        if k.small not in opts or k.large not in opts:
            continue
        e = _vec(_escalation(sc, ctx, kname, k), S)
        small, large = opts[k.small], opts[k.large]
        ok, q = [], {}
        for c in (k.classes or classes):
            if c not in small.classes or c not in large.classes or name_blocked(why, c, k.large):
                continue
            qc = options.quality.get(kname, {}).get(c, k.quality.get(c))
            if qc is None:
                qs, ql = small.classes[c].quality, large.classes[c].quality
                qc = (1 - float(np.mean(e))) * qs + float(np.mean(e)) * ql
            if c in minq and math.isnan(qc):
                continue
            ok.append(c)
            q[c] = float(qc)
        kept = (small.kind == "onprem") * ((1 - e) + e * (large.kind == "onprem"))
        touch: dict[str, np.ndarray] = {}
        for leg, mult in ((small, np.ones(S)), (large, e)):
            if leg.provider:
                touch[leg.provider] = touch.get(leg.provider, 0.0) + mult
        fts = tuple(f for f in (small.finetune, large.finetune) if f)
        routes.append(RouteData(kname, "cascade", ((k.small, np.ones(S)), (k.large, e)),
                                tuple(ok), q, fts, np.asarray(kept, float), touch))

    ft_usd = {}
    used_ft = {f for r in routes for f in r.finetunes}
    for f in used_ft:
        ft_usd[f] = _vec(model.finetune(ctx, f), S)

    # intra-hour peak factor of each option's load: the model's rule (volumes.peak_load)
    p2a = sc.planning.peak_to_average
    for o in opts.values():
        idx = [classes.index(c) for c in o.classes]
        inv = [np.where(k.capacity_rps > 0, 1.0 / np.where(k.capacity_rps > 0, k.capacity_rps,
                                                           1.0), 0.0)
               if o.selfhosted else np.ones(S) for k in o.classes.values()]
        o.peak_factor = _option_peak_factor(demand, idx, inv, p2a)

    # big-M upper bounds for blocks: every class this option may carry, all on it, per hour
    pf = _peak_factor(sc, demand)
    set_block_bounds(opts, routes, classes, demand, util, sc.planning.ha_reserve_replicas)

    return Problem(
        name=sc.name, classes=classes, periods=P, hours_per_month=hpm,
        horizon_months=sc.scenario.horizon_months, demand=demand, prob=np.full(S, 1.0 / S),
        options=opts, routes=routes, finetune_usd=ft_usd, utilisation_target=util,
        ha_reserve=sc.planning.ha_reserve_replicas, peak_factor=pf,
        min_quality=minq, budget_usd_per_month=options.budget_usd_per_month,
        max_share_per_provider=options.max_share_per_provider,
        min_onprem_share=options.min_onprem_share, onprem_max_kw=options.onprem_max_kw,
        integer_hourly=(S == 1) if integer_hourly is None and options.integer_hourly is None
        else bool(integer_hourly if integer_hourly is not None else options.integer_hourly),
        excluded=why, slo=slo, lengths=lengths,
    )


def set_block_bounds(opts: Mapping[str, OptionData], routes: Sequence[RouteData],
                     classes: Sequence[str], demand: np.ndarray, util: float,
                     ha_reserve: int) -> None:
    """Set every self-hosted option's big-M block bounds (``ub_hourly`` (S, P), ``ub_blocks``)
    for ``demand`` (S, C, P): enough blocks in each hour for all the classes it may carry, all
    on it, at the utilisation target, with the HA reserve and the minimum replicas (in place).
    """
    S, _, P = demand.shape
    classes = list(classes)
    for o in opts.values():
        if not o.selfhosted:
            continue
        if not o.classes:
            o.ub_blocks = o.lb_blocks
            o.ub_hourly = np.full((S, P), o.lb_blocks)
            continue
        load = np.zeros((S, P))
        for c, k in o.classes.items():
            i = classes.index(c)
            mult = max((float(np.max(m)) for rt in routes for on, m in rt.legs
                        if on == o.name and c in rt.classes), default=0.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                inv = np.where(k.capacity_rps > 0, mult / k.capacity_rps, 0.0)
            load += demand[:, i, :] * inv[:, None]
        ub = np.ceil(load * o.peak_factor[:, None] / util / o.replicas_per_block - 1e-9) + \
            math.ceil(ha_reserve / o.replicas_per_block)
        if not o.fixed_fleet:  # room for the minimum replicas while serving
            ub = np.where(ub > 0, np.maximum(ub, o.min_blocks), ub)
        if o.stage == "hourly" and (o.min_run_hours > 1 or np.isfinite(o.max_change_blocks)
                                    or np.any(o.startup_usd_per_block > o.block_usd_per_hour)):
            # a block may run through hours that do not need it (a minimum run, a ramp, or a
            # start-up dearer than an hour's rent): any hour may hold the busiest hour's count
            ub = np.broadcast_to(ub.max(axis=1, keepdims=True), ub.shape).copy()
        o.ub_hourly = np.maximum(ub, o.lb_blocks)
        o.ub_blocks = max(o.lb_blocks, float(ub.max()))


def name_blocked(why: dict[str, dict[str, str]], c: str, name: str) -> bool:
    return name in why.get(c, {})


def _escalation(sc: Scenario, ctx: Any, name: str, k: CascadeSpec) -> Any:
    """A cascade's escalation share: the scenario's ``cascade.NAME.escalation_share`` (its
    sampled values when given, else its median), else the settings'."""
    table = getattr(sc, "cascade", None) or {}
    if name in table:
        return ctx.v(f"cascade.{name}.escalation_share", table[name].escalation_share)
    return float(k.escalation_share)


def _peak_factor(sc: Scenario, demand: np.ndarray | None = None) -> float:
    """Intra-hour peak / hourly mean: ``planning.peak_to_average`` when every class's hourly
    demand is flat (the one flatness rule, :func:`planner.workload.is_flat`; batch-eligible requests are spread evenly, so a peaked profile whose requests
    are all batch-eligible is flat too), else 1 (the profile's hours carry the peak)."""
    p2a = sc.planning.peak_to_average
    if p2a is None:
        return 1.0
    if demand is None:
        flat = all(np.ptp(diurnal_weights(wc.diurnal)) < 1e-12 for wc in sc.workload.values())
    else:
        d = np.asarray(demand, float).reshape(-1, demand.shape[-1])
        flat = bool(is_flat(d).all())
    return float(p2a) if flat else 1.0


def _cheapest_provider(cat: Catalog, accelerator: str | None, plan: str) -> str | None:
    best = cat.cheapest_cloud(accelerator, plan)
    return None if best is None else str(best["provider"])
