"""What the simulator runs: pools of replicas, an optional API to spill to, SLOs.

Plain data, validated. How a request is routed among them, and when it spills, is
:mod:`planner.sim.routing` (:func:`~planner.sim.routing.spill_decision`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from planner.errors import PlannerError
from planner.sim.stepmodel import StepModel

__all__ = [
    "SLO",
    "ApiTarget",
    "Autoscale",
    "DEFAULT_MAX_TOKENS_PER_STEP",
    "PoolSpec",
    "SimPlan",
    "ROUTING_POLICIES",
]

#: ``shared``: one FCFS queue per pool; a request goes to the least-loaded replica that can
#: admit it at its next iteration, otherwise waits in the pool queue and the first replica
#: to free room takes it. ``jsq``: join the replica with the fewest requests (running +
#: queued), FCFS per replica. ``least_kv``: join the replica with the fewest reserved KV
#: tokens (running + queued). ``random``: a uniformly random replica (uses the ``rng``).
ROUTING_POLICIES = ("shared", "jsq", "least_kv", "random")

#: Token budget of a chunked iteration when a pool gives none (vLLM V1's
#: ``max_num_batched_tokens``, :attr:`planner.perf.params.PerfParams.max_tokens_per_step`).
DEFAULT_MAX_TOKENS_PER_STEP = 8192


def _pos(name: str, v: float, *, allow_zero: bool = False, allow_inf: bool = False) -> None:
    ok = (v >= 0 if allow_zero else v > 0) and (allow_inf or math.isfinite(v))
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise PlannerError(f"{name} must be a number {bound}, got {v}")


@dataclass(frozen=True)
class SLO:
    """Latency objectives of one class (``inf`` = none)."""

    ttft_s: float = math.inf
    tpot_s: float = math.inf
    e2e_s: float = math.inf

    def __post_init__(self) -> None:
        for k in ("ttft_s", "tpot_s", "e2e_s"):
            _pos(f"SLO.{k}", getattr(self, k), allow_inf=True)


@dataclass(frozen=True)
class ApiTarget:
    """A hosted API that absorbs spillover (or serves classes no pool serves).

    Latency: ``first_token = arrival + ttft_s``, ``finish = first_token + output_tokens /
    output_tokens_per_s``; with ``latency_cv > 0`` the whole latency is scaled by a lognormal
    factor of mean 1 and that coefficient of variation (drawn from the ``rng``). Cost:
    ``(input - cached) x input + cached x cached_input + output x output`` USD per
    million tokens.
    """

    name: str = "api"
    ttft_s: float = 0.5
    output_tokens_per_s: float = 60.0
    input_usd_per_mtok: float = 0.0
    output_usd_per_mtok: float = 0.0
    cached_input_usd_per_mtok: float | None = None
    latency_cv: float = 0.0
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _pos("ApiTarget.ttft_s", self.ttft_s, allow_zero=True)
        _pos("ApiTarget.output_tokens_per_s", self.output_tokens_per_s)
        _pos("ApiTarget.input_usd_per_mtok", self.input_usd_per_mtok, allow_zero=True)
        _pos("ApiTarget.output_usd_per_mtok", self.output_usd_per_mtok, allow_zero=True)
        if self.cached_input_usd_per_mtok is not None:
            _pos(
                "ApiTarget.cached_input_usd_per_mtok",
                self.cached_input_usd_per_mtok,
                allow_zero=True,
            )
        _pos("ApiTarget.latency_cv", self.latency_cv, allow_zero=True)
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))


@dataclass(frozen=True)
class Autoscale:
    """Reactive autoscaling of one pool.

    Every ``interval_s`` the pool wants ``ceil(demand / target_share)`` replicas, where
    demand is the larger of (running + queued requests) / ``max_batch`` and (reserved +
    queued KV tokens) / KV capacity, clamped to ``[min_replicas, max_replicas]``. New
    replicas are billed from the decision and serve after ``startup_s``; surplus replicas
    stop taking work, drain, then stop billing: at most one per interval, and only
    ``cooldown_s`` after the last scale event.
    """

    min_replicas: int = 1
    max_replicas: int = 8
    interval_s: float = 60.0
    startup_s: float = 120.0
    target_share: float = 0.7
    cooldown_s: float = 300.0

    def __post_init__(self) -> None:
        if not (1 <= self.min_replicas <= self.max_replicas):
            raise PlannerError(
                "Autoscale: need 1 <= min_replicas <= max_replicas, got "
                f"{self.min_replicas}, {self.max_replicas}"
            )
        _pos("Autoscale.interval_s", self.interval_s)
        _pos("Autoscale.startup_s", self.startup_s, allow_zero=True)
        _pos("Autoscale.cooldown_s", self.cooldown_s, allow_zero=True)
        if not (0 < self.target_share <= 1):
            raise PlannerError(f"Autoscale.target_share must be in (0, 1], got {self.target_share}")


@dataclass(frozen=True)
class PoolSpec:
    """A pool of identical replicas serving some classes.

    Parameters
    ----------
    name : str
        Deployment name (used in records and cost split).
    step_model : StepModel
        Step times and KV capacity of one replica.
    replicas : int
        Replicas at the start (autoscaling may change it).
    usd_per_replica_hour : float
        Price of one replica-hour (all its GPUs).
    max_batch, kv_capacity_tokens : int, optional
        Override the step model's batch cap / KV capacity.
    classes : tuple of str, optional
        Classes this pool serves (``None``: all).
    routing : str
        One of :data:`ROUTING_POLICIES`.
    max_queue : int, optional
        Queue limit: pool queue (``shared``) or per-replica queue (others). When it is
        reached the pool refuses the request (``queue_full``): it goes to the next pool of
        its class, the API, or is dropped (:func:`planner.sim.routing.spill_decision`).
    max_prefill_tokens : int, optional
        Non-chunked pools: prompt tokens admitted into one prefill iteration (at least one
        request always is); the rest wait for the next iteration. Not with
        ``chunked_prefill`` (``max_tokens_per_step`` bounds its chunks).
    autoscale : Autoscale, optional
    chunked_prefill : bool
        ``False`` (default): prefill-prioritised iterations, an admitted group's prompts
        in one prefill-only iteration during which the running decodes stall. ``True``:
        vLLM-V1-style chunked prefill, every iteration carries all running decodes plus up
        to ``max_tokens_per_step - decodes`` prompt tokens, first come first served, timed
        by the step model's mixed step
        (:func:`~planner.sim.stepmodel.mixed_step_function`). The iteration model of both:
        :mod:`planner.sim.replica`. Scenario-built pools are chunked unless the
        deployment's ``perf`` sets ``chunked_prefill = false``. (The SLO spill rule's
        predicted TTFT still adds ``prefill_time_s`` of the request's prompt.)
    max_tokens_per_step : int, optional
        The token budget ``C`` of one chunked iteration (decodes + prompt tokens);
        default :data:`DEFAULT_MAX_TOKENS_PER_STEP` (vLLM V1 ``max_num_batched_tokens``).
        Scenario-built pools take the deployment's ``perf`` parameter.
    """

    name: str
    step_model: StepModel
    replicas: int = 1
    usd_per_replica_hour: float = 0.0
    max_batch: int | None = None
    kv_capacity_tokens: int | None = None
    classes: tuple[str, ...] | None = None
    routing: str = "shared"
    max_queue: int | None = None
    max_prefill_tokens: int | None = None
    autoscale: Autoscale | None = None
    chunked_prefill: bool = False
    max_tokens_per_step: int | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise PlannerError("PoolSpec.name must be a non-empty string")
        for attr in ("prefill_time_s", "decode_step_time_s"):
            if not callable(getattr(self.step_model, attr, None)):
                raise PlannerError(f"PoolSpec '{self.name}': step_model has no {attr}()")
        if self.replicas < 0 or (self.replicas == 0 and self.autoscale is None):
            raise PlannerError(
                f"PoolSpec '{self.name}': replicas must be >= 1, got {self.replicas}"
            )
        _pos(
            f"PoolSpec '{self.name}' usd_per_replica_hour",
            self.usd_per_replica_hour,
            allow_zero=True,
        )
        if self.routing not in ROUTING_POLICIES:
            raise PlannerError(
                f"PoolSpec '{self.name}': routing must be one of {ROUTING_POLICIES}, "
                f"got '{self.routing}'"
            )
        if self.batch_cap < 1 or self.kv_capacity < 1:
            raise PlannerError(
                f"PoolSpec '{self.name}': max_batch and kv_capacity_tokens must be >= 1"
            )
        if self.max_queue is not None and self.max_queue < 0:
            raise PlannerError(f"PoolSpec '{self.name}': max_queue must be >= 0")
        if self.max_prefill_tokens is not None and self.max_prefill_tokens < 1:
            raise PlannerError(f"PoolSpec '{self.name}': max_prefill_tokens must be >= 1")
        if self.max_tokens_per_step is not None and self.max_tokens_per_step < 1:
            raise PlannerError(f"PoolSpec '{self.name}': max_tokens_per_step must be >= 1")
        if self.chunked_prefill and self.max_prefill_tokens is not None:
            raise PlannerError(
                f"PoolSpec '{self.name}': max_prefill_tokens applies to non-chunked prefill; "
                "with chunked_prefill the step budget is max_tokens_per_step"
            )
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))

    @property
    def batch_cap(self) -> int:
        """Effective batch cap."""
        return int(self.max_batch if self.max_batch is not None else self.step_model.max_batch)

    @property
    def step_token_budget(self) -> int:
        """Effective token budget ``C`` of one chunked iteration."""
        c = self.max_tokens_per_step
        return int(c if c is not None else DEFAULT_MAX_TOKENS_PER_STEP)

    @property
    def kv_capacity(self) -> int:
        """Effective KV capacity in tokens."""
        if self.kv_capacity_tokens is not None:
            return int(self.kv_capacity_tokens)
        return int(self.step_model.kv_capacity_tokens)


@dataclass(frozen=True)
class SimPlan:
    """A deployment to simulate.

    Parameters
    ----------
    pools : tuple of PoolSpec
        A request goes to the first pool (in this order) that serves its class and does not
        refuse it; if every such pool refuses it, to the API when its class may go there,
        else it is dropped. The rule: :func:`planner.sim.routing.spill_decision`.
    api : ApiTarget, optional
        Spillover target (and the server of classes no pool serves).
    slos : mapping of class name to SLO
        Used for spillover decisions and attainment.
    spill_on_slo : bool
        Refuse (spill) when the predicted TTFT (queue wait + prefill) exceeds the class TTFT
        SLO x ``spill_margin`` (only classes the API serves).
    util_interval_s : float
        Width of the utilisation intervals.
    mode : str
        ``closed_form`` (default) or ``reference`` (one event per engine iteration; slow,
        for validation).
    """

    pools: tuple[PoolSpec, ...]
    api: ApiTarget | None = None
    slos: Mapping[str, SLO] = field(default_factory=dict)
    spill_on_slo: bool = True
    spill_margin: float = 1.0
    util_interval_s: float = 300.0
    mode: str = "closed_form"

    def __post_init__(self) -> None:
        pools = tuple(self.pools)
        object.__setattr__(self, "pools", pools)
        names = [p.name for p in pools]
        if self.api is not None:
            names.append(self.api.name)
        if len(set(names)) != len(names):
            raise PlannerError(f"SimPlan: pool and API names must be unique, got {names}")
        if not pools and self.api is None:
            raise PlannerError("SimPlan: give at least one pool or an API target")
        if self.mode not in ("closed_form", "reference"):
            raise PlannerError(
                f"SimPlan.mode must be 'closed_form' or 'reference', got '{self.mode}'"
            )
        _pos("SimPlan.util_interval_s", self.util_interval_s)
        _pos("SimPlan.spill_margin", self.spill_margin)
        for k, v in dict(self.slos).items():
            if not isinstance(v, SLO):
                raise PlannerError(f"SimPlan.slos['{k}'] must be an SLO, got {type(v).__name__}")
