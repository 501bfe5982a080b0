"""Scenario files: TOML parsed once into a frozen, validated, typed config.

A scenario names its workload classes, the deployment candidates (hosted API, rented cloud
GPUs, bought on-prem servers), fine-tune options, pre-training jobs and planning reserves.
Any numeric field may hold a distribution (``{dist = "lognormal", median = 1, p90 = 2}``);
the deterministic engine uses its median, the Monte Carlo engine samples it.

Loading is all-or-nothing: :func:`load_scenario` returns a :class:`Scenario` or raises a
:class:`~planner.errors.ScenarioError` naming the file, the key path and what was expected.

Variants (calliope style): ``extends = "../base/scenario.toml"`` inherits another file, and
``[variants.NAME]`` tables hold overrides applied with ``--variant NAME``.
"""

from __future__ import annotations

import difflib
import functools
import math
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)
from typing_extensions import TypeAliasType  # (a dependency of pydantic)

from planner.distributions import Distribution, is_distribution, median_of
from planner.errors import ScenarioError, shorten

# --------------------------------------------------------------------------------------------
# limits of what a scenario file may hold (checked before any engine runs)

#: Largest scenario file (and each file it ``extends``), bytes.
MAX_FILE_BYTES = 1_000_000
#: Longest ``extends`` chain (a file, its base, the base's base ...).
MAX_EXTENDS_DEPTH = 32
#: Deepest nesting of tables, arrays and dotted keys in a scenario.
MAX_NESTING = 48
#: Largest magnitude of any number in a scenario: no planning input comes near it, and
#: products of a few such numbers stay finite.
MAX_ABS_NUMBER = 1e18
#: Most requests per day of one workload class (1e12 a day is ~12 million a second).
MAX_REQUESTS_PER_DAY = 1e12
#: Most replicas (or servers) a deployment may state.
MAX_REPLICAS = 100_000

# Named diurnal shapes (the names ``diurnal`` accepts): relative request rate for each hour
# 00..23 (local time), normalised to sum to 1 by :func:`planner.workload.diurnal_weights`. They are illustrative shapes, not measurements: give 24
# (or 168) weights of your own, or fit them from a trace, when you have data.
PROFILES: dict[str, tuple[float, ...]] = {
    "flat": (1.0,) * 24,
    # office hours 09-18 with a lunch dip; night traffic ~10% of the peak
    "business": (0.10, 0.08, 0.07, 0.07, 0.08, 0.12, 0.25, 0.50, 0.80, 1.00, 1.00, 0.95,
                 0.80, 0.95, 1.00, 0.95, 0.90, 0.75, 0.50, 0.35, 0.25, 0.20, 0.15, 0.12),
    # consumer app: low at night, rising through the day, evening peak 20-22
    "consumer": (0.35, 0.25, 0.18, 0.14, 0.12, 0.14, 0.22, 0.35, 0.48, 0.55, 0.60, 0.65,
                 0.70, 0.68, 0.66, 0.66, 0.70, 0.78, 0.88, 0.95, 1.00, 0.98, 0.80, 0.55),
    # traffic spread over time zones: mild swing
    "global": (0.80, 0.75, 0.72, 0.72, 0.75, 0.80, 0.85, 0.90, 0.95, 1.00, 1.00, 1.00,
               0.98, 0.97, 0.97, 0.98, 1.00, 1.00, 0.98, 0.95, 0.92, 0.90, 0.87, 0.83),
}


# --------------------------------------------------------------------------------------------
# numeric slots: a number or a distribution, with range checks on both


def _support(x: Any) -> tuple[float, float]:
    if is_distribution(x):
        lo, hi = x.support()
        return float(lo), float(hi)
    return float(x), float(x)


def _check_range(lo: float | None, hi: float | None, what: str, *, open_lo: bool = False):
    def check(x: Any) -> Any:
        if not is_distribution(x) and not math.isfinite(float(x)):
            raise ValueError(f"expected a finite number, got {x}")
        s_lo, s_hi = _support(x)
        kind = "a distribution whose support lies" if is_distribution(x) else "a number"
        # a continuous distribution puts no mass on its support's end: lognormal is "> 0"
        atomic = not is_distribution(x) or getattr(x, "dist", "") in ("fixed", "choice",
                                                                        "empirical")
        if lo is not None and (s_lo < lo or (open_lo and atomic and s_lo <= lo)):
            hint = ""
            if is_distribution(x):
                hint = " (truncate it, e.g. a normal with low = 0, or use a lognormal)"
            raise ValueError(f"expected {kind} {what}, got lower end {s_lo:g}{hint}")
        if hi is not None and s_hi > hi:
            raise ValueError(f"expected {kind} {what}, got upper end {s_hi:g}")
        return x

    return check


#: one named type: pydantic builds the number-or-distribution schema (a tagged union of nine
#: models) once and refers to it from every numeric field, instead of once per field (~1/4 of
#: the CPU of building the scenario models, which every command that loads a scenario pays)
_Num = TypeAliasType("_Num", float | Distribution)
Number = _Num
NonNeg = Annotated[_Num, AfterValidator(_check_range(0.0, None, ">= 0"))]
Positive = Annotated[_Num, AfterValidator(_check_range(0.0, None, "> 0", open_lo=True))]
Share = Annotated[_Num, AfterValidator(_check_range(0.0, 1.0, "in [0, 1]"))]
AtLeastOne = Annotated[_Num, AfterValidator(_check_range(1.0, None, ">= 1"))]
PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
#: a share that must not be zero (an MFU of 0 makes every job infinitely long)
Fraction = Annotated[_Num, AfterValidator(_check_range(0.0, 1.0, "in (0, 1]", open_lo=True))]


def _check_requests(x: Any) -> Any:
    # an unbounded distribution (lognormal) is bounded by its median
    m = float(median_of(x)) if is_distribution(x) else float(x)
    if m > MAX_REQUESTS_PER_DAY:
        what = "a distribution whose median is" if is_distribution(x) else "a number"
        raise ValueError(f"expected {what} at most {MAX_REQUESTS_PER_DAY:g} requests a day, "
                         f"got {m:g}")
    return x


Requests = Annotated[_Num, AfterValidator(_check_range(0.0, None, ">= 0")),
                     AfterValidator(_check_requests)]
Replicas = Annotated[int, Field(ge=0, le=MAX_REPLICAS)]


def _check_perf(v: dict[str, float]) -> dict[str, float]:
    """``perf = {...}``: known performance-model parameters with values it accepts."""
    from planner.errors import PlannerError
    from planner.perf.params import PerfParams

    for k in ("max_batch", "max_tokens_per_step"):
        if k in v and not 1 <= v[k] <= 1e6:
            raise ValueError(f"{k}: expected a number in [1, 1e6], got {v[k]:g}")
    try:
        PerfParams.from_mapping(dict(v))
    except PlannerError as exc:
        raise ValueError(str(exc).removeprefix("perf params: ")) from None
    return v


PerfOverrides = Annotated[dict[str, float], AfterValidator(_check_perf)]


def med(x: Any) -> Any:
    """Median of a numeric slot (numbers pass through, None stays None)."""
    return None if x is None else median_of(x)


class Strict(BaseModel):
    """Base for all scenario tables: unknown keys rejected, instances frozen.

    Every field is described (the JSON Schema of ``planner schema`` carries it): by the
    docstring under the field, or else by a ``name : text`` (or ``name, other : text``)
    entry of its class docstring (:func:`field_descriptions`; read only when the schema is
    asked for, so loading a scenario does not parse the sources).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)


@functools.cache
def field_descriptions(cls: type[BaseModel]) -> dict[str, str]:
    """Description of each field of a scenario table (or distribution), by field name.

    A ``Field(description=...)`` first, else the docstring under the field (the last class
    of the MRO that declares it), else the ``name : text`` entry of a class docstring
    (:func:`_docstring_fields`), the class's own before its bases'."""
    out: dict[str, str] = {}
    listed: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if not (isinstance(base, type) and issubclass(base, BaseModel)) or base is BaseModel:
            continue
        out.update(_attribute_docstrings(base))
        listed = {**listed, **_docstring_fields(base.__doc__ or "")}
    for k, f in cls.model_fields.items():
        if f.description:
            out[k] = f.description
        elif k not in out and k in listed:
            out[k] = listed[k]
    return {k: out[k] for k in cls.model_fields if k in out}


def _attribute_docstrings(cls: type) -> dict[str, str]:
    """The string literal under each annotated field in a class body, by field name (what
    pydantic's ``use_attribute_docstrings`` reads)."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    out: dict[str, str] = {}
    for a, b in zip(body, body[1:], strict=False):
        if (isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name)
                and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)
                and isinstance(b.value.value, str)):
            out[a.target.id] = inspect.cleandoc(b.value.value)
    return out


def _docstring_fields(doc: str) -> dict[str, str]:
    r"""``name : text`` entries of a class docstring (NumPy style, continuation lines indented
    deeper), by field name; ``a, b : text`` describes both.

    >>> _docstring_fields("T.\n\n    gap, time_limit_s : MILP gap and\n        limit.\n")
    {'gap': 'MILP gap and limit.', 'time_limit_s': 'MILP gap and limit.'}
    """
    import re

    out: dict[str, str] = {}
    names: list[str] = []
    indent = -1
    for line in doc.splitlines():
        body = line.strip()
        ind = len(line) - len(line.lstrip())
        m = re.fullmatch(r"([a-z_][a-z0-9_]*(?:, [a-z_][a-z0-9_]*)*) : (.+)", body)
        if m and (indent < 0 or ind <= indent):
            names, indent = m.group(1).split(", "), ind
            for n in names:
                out[n] = m.group(2)
        elif names and body and ind > indent:
            for n in names:
                out[n] += " " + body
        else:
            names = []
    return out


# --------------------------------------------------------------------------------------------
# workload


def _length_from_number(v: Any) -> Any:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return {"tokens": v}
    return v


class Length(Strict):
    """A length in tokens, or in words/characters of a language converted to tokens.

    ``tokens = 300``; ``words = 500, lang = "en"``; ``chars = 5000, lang = "zh"``.
    ``tokens_per_unit`` overrides the catalog's ratio (tokenizers.csv) for this length.
    A bare number means tokens.
    """

    tokens: NonNeg | None = None
    """Length in tokens (a bare number means this)."""
    words: NonNeg | None = None
    """Length in words of ``lang``, converted to tokens with the tokenizer's tokens per word."""
    chars: NonNeg | None = None
    """Length in characters of ``lang`` (for Chinese, Japanese, Korean), converted to tokens with
    the tokenizer's tokens per character."""
    lang: str | None = None
    """ISO 639-1 language of ``words``/``chars`` (en, zh ...): picks the ratio in the catalog's
    tokenizers.csv."""
    tokenizer: str | None = None
    """Tokenizer family whose ratio converts words/characters (default: the serving model's)."""
    tokens_per_unit: Positive | None = None
    """Tokens per word or character, overriding the catalog's ratio for this length."""

    @model_validator(mode="after")
    def _one_unit(self) -> Length:
        given = [k for k in ("tokens", "words", "chars") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of tokens, words or chars"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if given[0] != "tokens" and self.lang is None and self.tokens_per_unit is None:
            raise ValueError(f"{given[0]} needs lang (e.g. lang = \"en\") or tokens_per_unit")
        return self


LengthField = Annotated[Length, BeforeValidator(_length_from_number,
                                                 json_schema_input_type=float | Length)]


QualityScore = Annotated[float, Field(ge=0, le=100)]


class SLO(Strict):
    """Latency service-level objective; any subset of the three bounds."""

    ttft_s: Positive | None = None
    """Time to first token bound, seconds (none: unbounded)."""
    tpot_s: Positive | None = None
    """Time per output token (inter-token latency) bound, seconds."""
    e2e_s: Positive | None = None
    """End-to-end request latency bound, seconds."""
    percentile: Annotated[float, Field(gt=0, le=100)] = 90.0
    """Share of requests, in percent, that must meet every bound (90 = p90)."""


DiurnalSpec = str | tuple[Annotated[float, Field(ge=0)], ...]


class WorkloadClass(Strict):
    """One class of requests (chat, summarise, search ...)."""

    description: str = ""
    """Free text shown in the outputs."""
    requests_per_day: Requests
    """User requests per day (a number or a distribution; the diurnal profile spreads them over the
    hours)."""
    diurnal: DiurnalSpec = "flat"
    """Shape of the day: flat, business, consumer or global, or 24 (or 168, a week) relative hourly
    weights; self-hosted capacity is sized for the peak hour."""
    input: LengthField
    """Prompt length per LLM call, besides ``context``: tokens, or words/characters of a
    language."""
    output: LengthField
    """Generated length per completion."""
    context: LengthField | None = None
    """Fixed context sent with every call (system prompt, retrieved documents, history), counted as
    input."""
    calls_per_request: AtLeastOne = 1.0
    """LLM calls per user request (agents, one call per retrieved document ...)."""
    samples_per_call: AtLeastOne = 1.0
    """Completions generated per call (best-of-n): output tokens are multiplied, the prompt
    is not."""
    cached_share: Share = 0.0
    """Share of input tokens billed at an API's cached-input price (0-1)."""
    prefix_cache_hit_share: Share = 0.0
    """Self-hosted prefix (KV) cache: share of input tokens found in the cache and not prefilled
    (0-1)."""
    response_cache_hit_share: Share = 0.0
    """Share of user requests answered from an application response cache, never reaching a model
    (0-1)."""
    batch_share: Share = 0.0
    """Share of requests that may wait for an API's Batch prices (0-1); self-hosted options serve
    them like the rest."""
    retry_share: Share | None = None
    """Share of requests sent again after a failure and paid again (default: ``[planning]
    retry_share``)."""
    min_quality_tier: Annotated[int, Field(ge=1, le=5)] | None = None
    """Worst acceptable model tier (1 best .. 5): options whose tier is worse do not serve this
    class."""
    min_quality: QualityScore | None = None
    """Least acceptable quality score (0-100, the catalog's quality_score scale) of the option
    serving this class, for the optimiser."""
    slo: SLO | None = None
    """Latency objective that sizes self-hosted replicas and that the simulator checks."""

    @model_validator(mode="after")
    def _diurnal_shape(self) -> WorkloadClass:
        if isinstance(self.diurnal, tuple):
            if len(self.diurnal) not in (24, 168):
                raise ValueError(
                    f"diurnal: expected a profile name or 24 (or 168) hourly weights, "
                    f"got {len(self.diurnal)} numbers"
                )
            if sum(self.diurnal) <= 0:
                raise ValueError("diurnal: hourly weights must not all be zero")
        return self


# --------------------------------------------------------------------------------------------
# deployments


class RequestFee(Strict):
    """A per-request charge of the serving stack (API gateway, serverless function ...).

    Either ``usd_per_million_requests``, or a serverless function billed by memory x duration:
    ``gb`` x ``seconds`` x ``usd_per_gb_s``.
    """

    name: str
    """Name of the fee in the cost lines (``fee:NAME``)."""
    usd_per_million_requests: NonNeg | None = None
    """USD per million requests."""
    gb: NonNeg | None = None
    """Memory of a serverless function, GB (with ``seconds`` and ``usd_per_gb_s``)."""
    seconds: NonNeg | None = None
    """Billed duration of one function call, seconds."""
    usd_per_gb_s: NonNeg | None = None
    """USD per GB-second of the function."""
    source: str = ""
    """Where the price comes from (shown in the outputs)."""

    @model_validator(mode="after")
    def _one_form(self) -> RequestFee:
        fn = (self.gb, self.seconds, self.usd_per_gb_s)
        if self.usd_per_million_requests is None and any(v is None for v in fn):
            raise ValueError(
                "give usd_per_million_requests, or all of gb, seconds and usd_per_gb_s"
            )
        if self.usd_per_million_requests is not None and any(v is not None for v in fn):
            raise ValueError("give usd_per_million_requests or gb/seconds/usd_per_gb_s, not both")
        return self


class ApiDeployment(Strict):
    """A hosted API offering (catalog ``api_prices.csv`` id) with optional overrides."""

    offering: str
    """Catalog id of the offering (api_prices.csv ``id``, e.g. openai/gpt-4o-mini): prices,
    tokenizer, quality."""
    classes: tuple[str, ...] | None = None
    """Workload classes this option may serve (default: every class it qualifies for)."""
    fine_tune: str | None = None
    """A ``[finetune.NAME]`` this option serves: fine-tuned prices (API) or the tuned model, its
    one-off cost spread over the horizon."""
    input_usd_per_mtok: NonNeg | None = None
    """Input price, USD per million tokens (overrides the catalog)."""
    output_usd_per_mtok: NonNeg | None = None
    """Output price, USD per million tokens."""
    cached_input_usd_per_mtok: NonNeg | None = None
    """Cached-input price, USD per million tokens (default: the input price)."""
    batch_input_usd_per_mtok: NonNeg | None = None
    """Batch API input price, USD per million tokens."""
    batch_output_usd_per_mtok: NonNeg | None = None
    """Batch API output price, USD per million tokens."""
    long_context_threshold_tokens: NonNeg | None = None
    """Prompt tokens of one call above which the long-context prices apply to the whole call."""
    long_input_usd_per_mtok: NonNeg | None = None
    """Long-context input price, USD per million tokens."""
    long_output_usd_per_mtok: NonNeg | None = None
    """Long-context output price, USD per million tokens."""
    discount: Share = 0.0
    """Negotiated discount on the bill, a share (0.2 = 20% off)."""
    gross_margin: Share | None = None
    """Provider's gross margin: its cost = price x (1 - margin) (to estimate what serving costs the
    provider)."""
    quality_tier: Annotated[int, Field(ge=1, le=5)] | None = None
    """Model tier (1 best .. 5), overriding the catalog's, checked against a class's
    ``min_quality_tier``."""
    tokenizer: str | None = None
    """Tokenizer family for words/characters -> tokens (default: the catalog's for this
    offering)."""
    request_fees: tuple[RequestFee, ...] = ()
    """Per-request charges of the serving stack (API gateway, serverless function ...)."""
    tpm_limit: Positive | None = None
    """Rate limit, tokens per minute: the optimiser routes no more through this option in any
    hour."""
    provider: str | None = None
    """Provider name for ``[optimize] max_share_per_provider`` (default: the catalog's provider)."""
    quality: dict[str, QualityScore] = Field(default_factory=dict)
    """Quality score per class (0-100), overriding the catalog's ``quality_score``, for
    ``min_quality``."""


PricePlan = Literal["on-demand", "reserved-1y", "reserved-3y", "spot"]
Billing = Literal["always-on", "active-window", "scale-to-zero"]
Precision = Literal["bf16", "fp16", "fp8", "int8", "int4", "fp4"]


class _SelfHosted(Strict):
    model: str
    """Catalog LLM id (llms.csv, e.g. llama-3.1-70b): parameters, layers, KV size."""
    accelerator: str | None = None
    """Catalog accelerator id (accelerators.csv, e.g. h100-sxm)."""
    gpus_per_replica: PosInt = 1
    """GPUs serving one model copy (tensor parallel degree)."""
    precision: Precision = "bf16"
    """Weight precision: bf16, fp16, fp8, int8, int4 or fp4."""
    classes: tuple[str, ...] | None = None
    """Workload classes this option may serve (default: every class it qualifies for)."""
    fine_tune: str | None = None
    """A ``[finetune.NAME]`` whose tuned model this option serves (its one-off cost spread over the
    horizon)."""
    replicas: Replicas | None = None
    """Fixed number of replicas instead of sizing them for the peak hour (an existing fleet)."""
    committed: bool = False
    """Capacity already paid for: free under the ``marginal`` lens, and a fleet fixed for the
    horizon in the optimiser."""
    capacity_requests_per_s: Positive | None = None
    """A replica's capacity, requests per second, stated instead of the performance model's."""
    perf: PerfOverrides = Field(default_factory=dict)
    """Performance-model parameters (e.g. max_batch, max_tokens_per_step, bw_efficiency), see
    planner.perf.params.PerfParams."""
    quality_tier: Annotated[int, Field(ge=1, le=5)] | None = None
    """Model tier (1 best .. 5), overriding the catalog's, checked against a class's
    ``min_quality_tier``."""
    tokenizer: str | None = None
    """Tokenizer family for words/characters -> tokens (default: the model's)."""
    request_fees: tuple[RequestFee, ...] = ()
    """Per-request charges of the serving stack (API gateway, serverless function ...)."""
    max_replicas: Replicas | None = None
    """Most replicas the optimiser may use of this option (none: unbounded)."""
    min_replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] | None = None  # optimiser
    """Replicas this option runs in any hour it serves (optimiser; default ``[optimize]
    min_replicas``)."""
    provider: str | None = None
    """Provider name for ``[optimize] max_share_per_provider`` (cloud: the catalog offering's
    provider)."""
    quality: dict[str, QualityScore] = Field(default_factory=dict)
    """Quality score per class (0-100), overriding the catalog's ``quality_score``, for
    ``min_quality``."""


class CloudDeployment(_SelfHosted):
    """Rented GPUs serving an open model.

    ``offering`` is a catalog ``cloud_prices.csv`` id; without it, ``accelerator`` + ``plan``
    pick the cheapest catalog row, or ``usd_per_gpu_hour`` states the price.
    """

    offering: str | None = None
    """Catalog cloud price id (cloud_prices.csv ``id``); without it, ``accelerator`` + ``plan`` pick
    the cheapest catalog row."""
    plan: PricePlan = "on-demand"
    """Price plan: on-demand or spot (rented by the hour; with ``billing = "scale-to-zero"`` the
    optimiser rents them hour by hour) or reserved-1y / reserved-3y (a fleet fixed for the
    horizon)."""
    usd_per_gpu_hour: NonNeg | None = None
    """Price, USD per GPU-hour, instead of the catalog's."""
    usd_per_instance_hour: NonNeg | None = None
    """Price, USD per instance-hour (with ``gpus_per_instance``), instead of the catalog's."""
    gpus_per_instance: PosInt | None = None
    """GPUs per rented instance: replicas are packed into whole instances and spare GPUs still
    cost."""
    billing: Billing = "always-on"
    """always-on (every hour of the month), active-window (``active_hours_per_day``), or
    scale-to-zero (busy time plus idle time-outs and start-ups; hourly rentals in the
    optimiser)."""
    active_hours_per_day: Annotated[float, Field(gt=0, le=24)] | None = None
    """Hours a day the fleet runs with ``billing = "active-window"``."""
    startup_s: NonNeg | None = None
    """Seconds a replica takes to start (boot, engine start, weights load), billed with
    scale-to-zero (default: the catalog offering's, else 120)."""
    min_billing_s: NonNeg | None = None
    """Shortest billed period, seconds (default: the catalog offering's, else 0)."""
    interruption_overhead: Share | None = None
    """Spot plans: share of paid time lost to interruptions (price / (1 - overhead)); default: the
    catalog offering's, else 0."""
    idle_timeout_s: NonNeg = 300.0
    """Scale-to-zero: seconds an idle replica stays up (and billed) before it stops."""

    @model_validator(mode="after")
    def _billing_fields(self) -> CloudDeployment:
        if self.billing == "active-window" and self.active_hours_per_day is None:
            raise ValueError("billing = \"active-window\" needs active_hours_per_day")
        if self.offering is None and self.accelerator is None:
            raise ValueError("give offering (a cloud_prices.csv id) or accelerator")
        return self


class OnPremDeployment(_SelfHosted):
    """Bought servers serving an open model.

    Capex per server from ``server`` (catalog ``servers.csv`` id) or ``server_price_usd``.
    """

    server: str | None = None
    """Catalog server id (servers.csv, e.g. hgx-h100): price, GPUs, power."""
    server_price_usd: NonNeg | None = None
    """Price of one server, USD (with ``accelerator``), instead of the catalog's."""
    gpus_per_server: PosInt | None = None
    """GPUs per server (default: the catalog server's, else 8)."""
    servers: Replicas | None = None
    """Servers already owned or to buy, a fixed count (default: sized for the peak hour);
    ``max_servers`` is the optimiser's cap instead."""
    amortisation_years: Positive | None = None
    """Years over which a server's capex is recovered (default: the catalog server's)."""
    residual_share: Share = 0.0
    """Resale value at the end of amortisation, a share of the price."""
    cost_of_capital: NonNeg = 0.0
    """Yearly cost of capital: capex as an annuity at this rate (0 = straight-line)."""
    maintenance_share_per_year: Share | None = None
    """Maintenance per year, a share of the server price (default: the catalog's)."""
    server_base_w: NonNeg | None = None
    """Power of a server without its GPUs, W (default: the catalog's)."""
    gpu_tdp_w: NonNeg | None = None
    """Power of one GPU at full load, W (default: the accelerator's TDP)."""
    gpu_idle_power_share: Share = 0.3
    """Power of an idle GPU, a share of its TDP; power = base + GPUs x TDP x (idle + (1 - idle) x
    utilisation)."""
    pue: AtLeastOne = 1.4
    """Power usage effectiveness of the data centre (facility power / IT power, >= 1)."""
    electricity_usd_per_kwh: NonNeg = 0.12
    """Electricity price, USD per kWh."""
    facilities_usd_per_server_year: NonNeg = 0.0
    """Rack space, cooling, network per server, USD per year."""
    ops_usd_per_year: NonNeg = 0.0
    """Staff running the fleet, USD per year."""
    implementation_usd: NonNeg = 0.0
    """One-off set-up cost, USD, spread over the horizon (TCO lens)."""
    max_servers: Replicas | None = None
    """Most servers the optimiser may buy of this option (a cap; ``servers`` fixes the count
    instead)."""
    max_kw: Positive | None = None
    """Most IT power of this option's servers at full load (before PUE), kW, for the optimiser."""

    @model_validator(mode="after")
    def _capex(self) -> OnPremDeployment:
        if self.server is None and self.accelerator is None:
            raise ValueError("give server (a servers.csv id) or accelerator")
        return self


# --------------------------------------------------------------------------------------------
# fine-tuning, pre-training, provider payback


class FineTune(Strict):
    """A fine-tune option: via an API, or LoRA / full fine-tuning on rented GPUs."""

    method: Literal["api", "lora", "full"]
    """api (a provider's fine-tuning service), lora (adapters on rented GPUs) or full (every weight
    on rented GPUs)."""
    base_model: str
    """Catalog id of the base: an api_prices.csv offering for ``api``, an llms.csv model for
    lora/full."""
    training_tokens: NonNeg
    """Tokens in the training set (multiplied by ``epochs``)."""
    epochs: Positive = 1.0
    """Passes over the training set."""
    retry_multiplier: AtLeastOne = 1.0
    """Training runs paid per success (fine-tunes rarely work first time; article 000 budgets
    10-20)."""
    qualifies_for: tuple[str, ...] = ()
    """Classes whose quality bar the tuned model meets with ``quality_tier``."""
    quality_tier: Annotated[int, Field(ge=1, le=5)] | None = None
    """Tier (1 best .. 5) of the tuned model on the ``qualifies_for`` classes."""
    ft_train_usd_per_mtok: NonNeg | None = None
    """API fine-tuning price, USD per million training tokens (default: the catalog's)."""
    accelerator: str | None = None
    """Catalog accelerator id for lora/full training."""
    gpus: PosInt | None = None
    """GPUs of the training job (default: enough memory for the weights and optimiser state)."""
    usd_per_gpu_hour: NonNeg | None = None
    """Training price, USD per GPU-hour (default: the cheapest on-demand catalog row)."""
    mfu: Fraction | None = None
    """Model FLOPs utilisation of training (0-1, default 0.35)."""
    lora_flops_factor: Fraction | None = None
    """LoRA training FLOPs as a share of full fine-tuning (default 2/3: no weight gradients)."""
    one_off_usd: NonNeg = 0.0
    """One-off engineering, data preparation and evaluation cost, USD, added to the training runs x
    retries in the fine-tune's cost, break-even, payback and the optimiser."""


class PreTraining(Strict):
    """A pre-training (or any 6ND) job: C = 6 N D FLOPs."""

    model: str | None = None
    """Catalog LLM id (its parameter count); or ``params_b``."""
    params_b: Positive | None = None
    """Parameters, billions (N in 6 N D)."""
    tokens: Positive
    """Training tokens (D in 6 N D)."""
    accelerator: str | None = None
    """Catalog accelerator id (its peak TFLOPS); or ``peak_tflops``."""
    peak_tflops: Positive | None = None
    """Peak dense TFLOPS of one accelerator."""
    mfu: Fraction = 1.0
    """Model FLOPs utilisation (0-1]."""
    usd_per_gpu_hour: NonNeg | None = None
    """Price, USD per accelerator-hour; or ``cloud_offering``."""
    cloud_offering: str | None = None
    """Catalog cloud price id giving the price per accelerator-hour."""
    gpus: PosInt | None = None
    """Accelerators in the job (for the wall-clock days)."""
    discount: Share = 0.0
    """Discount on the compute bill, a share."""

    @model_validator(mode="after")
    def _size(self) -> PreTraining:
        if (self.model is None) == (self.params_b is None):
            raise ValueError("give exactly one of model (catalog id) or params_b")
        if self.accelerator is None and self.peak_tflops is None:
            raise ValueError("give accelerator (catalog id) or peak_tflops")
        if self.usd_per_gpu_hour is None and self.cloud_offering is None:
            raise ValueError("give usd_per_gpu_hour or cloud_offering")
        return self


class InferenceFlops(Strict):
    """First-principles cost per token at 2N FLOPs per token (source articles 001, 004)."""

    model: str | None = None
    """Catalog LLM id (its parameter count); or ``params_b``."""
    params_b: Positive | None = None
    """Parameters, billions (2 N FLOPs per token)."""
    accelerator: str | None = None
    """Catalog accelerator id (its peak TFLOPS); or ``peak_tflops``."""
    peak_tflops: Positive | None = None
    """Peak dense TFLOPS of one accelerator."""
    mfu: Fraction = 1.0
    """Model FLOPs utilisation (0-1]."""
    usd_per_gpu_hour: NonNeg | None = None
    """Price, USD per accelerator-hour (one of the three prices)."""
    usd_per_instance_hour: NonNeg | None = None
    """Price, USD per instance-hour of ``gpus_per_instance`` accelerators."""
    gpus_per_instance: PosInt = 1
    """Accelerators per instance."""
    cloud_offering: str | None = None
    """Catalog cloud price id giving the price."""

    @model_validator(mode="after")
    def _size(self) -> InferenceFlops:
        if (self.model is None) == (self.params_b is None):
            raise ValueError("give exactly one of model (catalog id) or params_b")
        if self.accelerator is None and self.peak_tflops is None:
            raise ValueError("give accelerator (catalog id) or peak_tflops")
        prices = [self.usd_per_gpu_hour, self.usd_per_instance_hour, self.cloud_offering]
        if sum(p is not None for p in prices) != 1:
            raise ValueError(
                "give exactly one of usd_per_gpu_hour, usd_per_instance_hour or cloud_offering"
            )
        return self


class Payback(Strict):
    """How much usage recovers a provider's training + inference cost (article 001, 7.x)."""

    training_usd: NonNeg | None = None
    """Training cost, USD (or ``pretraining``)."""
    pretraining: str | None = None
    """A ``[pretraining.NAME]`` job whose cost is the training cost."""
    retrain_every_months: Positive = 6.0
    """Months between retrainings: the training cost is spread over them."""
    inference_usd_per_ktok: NonNeg | None = None
    """Serving cost, USD per 1,000 tokens (or ``inference_flops``)."""
    inference_flops: str | None = None
    """An ``[inference_flops.NAME]`` estimate giving the serving cost."""
    price_usd_per_ktok: NonNeg | None = None
    """Price charged, USD per 1,000 tokens: solve for the tokens a month that pay back."""
    subscription_usd_per_month: NonNeg | None = None
    """Subscription price, USD per user-month: solve for the subscribers that pay back."""
    tokens_per_user_month: tuple[NonNeg, ...] = ()
    """Tokens a subscriber uses per month (one payback row each)."""
    tokens_per_user_day: tuple[NonNeg, ...] = ()
    """Tokens a subscriber uses per day (x ``days_per_month``)."""
    days_per_month: Positive = 30.0
    """Days per month for ``tokens_per_user_day``."""

    @model_validator(mode="after")
    def _refs(self) -> Payback:
        if (self.training_usd is None) == (self.pretraining is None):
            raise ValueError("give exactly one of training_usd or pretraining (a job name)")
        if (self.inference_usd_per_ktok is None) == (self.inference_flops is None):
            raise ValueError(
                "give exactly one of inference_usd_per_ktok or inference_flops (an estimate name)"
            )
        return self


class Revenue(Strict):
    """Revenue per request, for unit economics (article 004: search revenue per query).

    usd_per_unit = usd_per_year / (units_per_month x 12 x scale_to / scale_from); the scale
    pair grows a dated volume (e.g. internet penetration 34% in 2012 -> 60% in 2020).
    """

    usd_per_year: NonNeg
    """Revenue, USD per year."""
    units_per_month: Positive
    """Requests (or queries) per month the revenue is earned on."""
    scale_from: Positive = 1.0
    """Volume scale of the dated figure (e.g. internet penetration then)."""
    scale_to: Positive = 1.0
    """Volume scale to apply it at (e.g. penetration now)."""
    classes: tuple[str, ...] = ()
    """Workload classes the revenue per request is compared with (default: all)."""


class TokenEconomics(Strict):
    """GPU cost of a prefill (input) token vs a decode (output) token (article 002).

    Priced on ``usd_per_gpu_hour`` (or the cheapest on-demand catalog row of the accelerator)
    with the performance model's step times, at each decode batch size in ``batches``.
    """

    model: str
    """Catalog LLM id."""
    accelerator: str
    """Catalog accelerator id."""
    gpus: PosInt = 1
    """GPUs per replica (tensor parallel)."""
    precision: Precision = "bf16"
    """Weight precision: bf16, fp16, fp8, int8, int4 or fp4."""
    input_tokens: Positive = 1000.0
    """Prompt tokens per request."""
    output_tokens: Positive = 1000.0
    """Output tokens per request."""
    batches: tuple[PosInt, ...] = (1, 8, 32, 128)
    """Decode batch sizes to price at."""
    usd_per_gpu_hour: NonNeg | None = None
    """Price, USD per GPU-hour (default: the cheapest on-demand catalog row)."""
    compare_offerings: tuple[str, ...] = ()
    """Catalog API offerings whose input/output price ratio is shown beside."""


class Optimize(Strict):
    """``[optimize]``: limits every optimised plan must respect, and solver settings.

    budget_usd_per_month : the plan's monthly cost (expected cost when stochastic) cap.
    max_share_per_provider : no provider (API vendor or cloud) handles more than this share of
        the month's requests; on-prem is not a provider.
    min_onprem_share : at least this share of requests is served on-prem (data residency).
    onprem_max_kw : total IT power of all on-prem servers at full load (before PUE), kW.
    gap, time_limit_s : MILP relative optimality gap and time limit (HiGHS).
    utilisation_target : replicas run at most at this share of their capacity at the SLO
        (default: ``[planning] utilisation_target``).
    objective : ``expected`` cost, or ``cvar`` (expected + cvar_lambda x CVaR_alpha).
    cvar_lambda : weight of the CVaR term with ``objective = "cvar"`` (USD per USD).
    cvar_alpha : CVaR level with ``objective = "cvar"``: the mean of the worst 1 - alpha share
        of scenarios' monthly costs.
    exclude : deployments the optimiser must not use.
    min_replicas : replicas an option runs in any hour it serves (a deployment's own
        ``min_replicas`` overrides it).
    startup_usd_per_replica : USD per replica started by an hourly (scale-to-zero) rental;
        default: the deployment's (else the catalog offering's, else 120 s) ``startup_s`` x
        the replica's USD/hour.
    min_run_hours : a started hourly replica runs at least this many hours.
    max_change_per_hour : most replicas an hourly option may add or remove from one hour to
        the next.
    horizon_hours : plan this many hours (a whole number of days; 8760: a year) instead of
        the workload's 24- or 168-hour profile: the profile repeated from 1 January, times
        ``monthly_factors`` and the ``year_growth`` ramp, solved on typical days and
        re-checked hour by hour (:mod:`planner.engines.optimize_year`).
    monthly_factors : 12 traffic multipliers, January first (default 1 each).
    year_growth : apply ``[trends] traffic_growth_per_year`` within the horizon, compounded
        hourly (hour t carries (1 + g) ** (t / 8760) of the profile's traffic).
    typical_days : typical days to start from (default: chosen from the aggregation error);
        the peak days come on top.
    plan_years : plan this many years of the profile at once (traffic x (1 + ``[trends]
        traffic_growth_per_year``) each year, costs discounted at ``[scenario]
        discount_rate_per_year``): reserved-1y/3y blocks are bought in a given year and paid
        to their term's end (:mod:`planner.engines.optimize_multiyear`).
    """

    budget_usd_per_month: NonNeg | None = None
    max_share_per_provider: Share | None = None
    min_onprem_share: Share | None = None
    onprem_max_kw: Positive | None = None
    utilisation_target: Annotated[float, Field(gt=0, le=1)] | None = None
    gap: Annotated[float, Field(ge=0, le=1)] = 0.01
    time_limit_s: Annotated[float, Field(gt=0)] = 30.0
    objective: Literal["expected", "cvar"] = "expected"
    cvar_lambda: Annotated[float, Field(ge=0)] = 1.0
    cvar_alpha: Annotated[float, Field(gt=0, lt=1)] = 0.95
    exclude: tuple[str, ...] = ()
    min_replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] = 1
    startup_usd_per_replica: NonNeg | None = None
    min_run_hours: Annotated[int, Field(ge=1, le=8784)] = 1
    max_change_per_hour: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] | None = None
    horizon_hours: Annotated[int, Field(ge=48, le=87600, multiple_of=24)] | None = None
    monthly_factors: Annotated[tuple[Annotated[float, Field(ge=0, allow_inf_nan=False)], ...],
                               Field(min_length=12, max_length=12)] | None = None
    year_growth: bool = False
    typical_days: Annotated[int, Field(ge=1, le=64)] | None = None
    plan_years: Annotated[int, Field(ge=1, le=30)] | None = None

    @model_validator(mode="after")
    def _horizon_keys(self) -> Optimize:
        if self.plan_years is not None and self.horizon_hours is not None:
            raise ValueError("plan_years: a multi-year plan is made on the profile; drop "
                             "optimize.horizon_hours (or plan_years)")
        if self.horizon_hours is None:
            for key in ("monthly_factors", "typical_days"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} needs optimize.horizon_hours (a long horizon)")
            if self.year_growth:
                raise ValueError("year_growth needs optimize.horizon_hours (a long horizon)")
        elif self.monthly_factors is not None and not any(self.monthly_factors):
            raise ValueError("monthly_factors: expected 12 non-negative numbers, not all zero")
        return self


class Cascade(Strict):
    """``[cascade.NAME]``: try ``small`` first, escalate a share of requests to ``large``.

    Every routed request runs on ``small``; ``escalation_share`` of them run again on
    ``large`` (prompt and output again: the cascade's extra tokens). ``quality`` gives the
    cascade's score per class; otherwise (1 - e) x q_small + e x q_large.
    """

    small: str
    """Deployment every routed request tries first."""
    large: str
    """Deployment the escalated requests run on again."""
    escalation_share: Share
    """Share of requests escalated to ``large`` (0-1)."""
    classes: tuple[str, ...] | None = None
    """Classes the cascade may serve (default: those both deployments serve)."""
    quality: dict[str, QualityScore] = Field(default_factory=dict)
    """The cascade's quality score per class (0-100); default (1 - e) x q_small + e x q_large."""


class Correlation(Strict):
    """Spearman rank correlation between two uncertain inputs named by dotted key path
    (``[[correlation]] a = "workload.chat.requests_per_day"; b = "...", rho = 0.5``)."""

    a: str
    """Dotted key path of an uncertain input (e.g. workload.chat.requests_per_day)."""
    b: str
    """Dotted key path of the other input."""
    rho: Annotated[float, Field(ge=-1.0, le=1.0)]
    """Spearman rank correlation, -1..1."""


GrowthRate = Annotated[_Num, AfterValidator(_check_range(-1.0, None, "> -1", open_lo=True))]


class Trends(Strict):
    """``[trends]``: yearly rates for multi-year risk (``planner risk --years``).

    Declines are shares per year (0.475 a year is -80% over 2.5 years, the articles' figure
    for GPT-3-level capability); traffic growth may be negative.
    """

    api_price_decline_per_year: Share = 0.0
    """Yearly decline of API prices, a share (0.3 = 30% cheaper each year)."""
    gpu_price_decline_per_year: Share = 0.0
    """Yearly decline of cloud GPU prices, a share."""
    hardware_price_decline_per_year: Share = 0.0
    """Yearly decline of server prices, a share (for purchases in later years)."""
    traffic_growth_per_year: GrowthRate = 0.0
    """Yearly traffic growth, a share (may be negative, > -1)."""


class Planning(Strict):
    """Planning reserves applied to self-hosted capacity and to billed volumes.

    ``capacity``: how a replica's capacity at a class's latency SLO is computed.
    ``open-loop`` (default): the largest arrival rate at which at most ``1 - percentile`` of
    requests miss the TTFT or the TPOT bound, with prefill queueing over the pool, length
    spread (``[simulation] length_cv``) and arrival burstiness (``[simulation]
    burstiness_cv``) (:func:`planner.perf.openloop.slo_capacity`). ``closed-loop``: the
    largest steady concurrency whose mean TTFT and TPOT meet the SLO
    (:func:`planner.perf.replica_capacity`; optimistic under open arrivals).

    ``prefill_wait`` (open-loop only): ``pooled`` (default) takes the prompt's wait as that of a
    GI/G/c queue over the pool's replicas; ``per-replica`` as that of its own replica's
    prefill, a GI/G/1 queue fed by a random split of the arrivals (``c_a^2 = 1 + (c_a^2 - 1) /
    c``). The router places a request at once on the replica with the fewest requests, which
    pools the wait only partly; the simulator lands between the two
    (``studies/sizing-vs-simulation``).
    """

    utilisation_target: Annotated[float, Field(gt=0, le=1)] = 0.9
    """Plan self-hosted replicas to run at this share of their capacity at the SLO in the peak hour
    (0-1]."""
    ha_reserve_replicas: NonNegInt = 0
    """Spare replicas per self-hosted option for failures (N + k)."""
    peak_to_average: Annotated[float, Field(ge=1)] | None = None
    """Peak-hour / average load, used when a class's diurnal profile is flat."""
    retry_share: Share = 0.0
    """Default share of requests retried and paid again (a class's ``retry_share`` overrides it)."""
    hours_per_month: Annotated[float, Field(gt=0, le=744)] = 730.0
    """Hours in a billed month (730 = 8,760 / 12)."""
    lens: Literal["tco", "marginal"] = "tco"
    """tco counts every cost; marginal leaves out capex and commitments already made
    (``committed``)."""
    capacity: Literal["closed-loop", "open-loop"] = "open-loop"
    """How a replica's capacity at the SLO is computed: open-loop (percentiles with queueing) or
    closed-loop (mean latencies at a steady concurrency; optimistic)."""
    prefill_wait: Literal["pooled", "per-replica"] = "pooled"
    """Open-loop TTFT wait: pooled (a GI/G/c queue over the pool's replicas; the tight figure)
    or per-replica (each replica's prefill its own GI/G/1 queue fed by a random split of the
    arrivals; conservative for bursty long prompts on large pools)."""
    hour_quantile: Annotated[float, Field(ge=0.5, lt=1)] = 0.5
    """Open-loop only: the SLO percentile is met in the busiest hour when its arrival count is
    at this quantile of its distribution (a renewal count, variance ``burstiness_cv^2`` times
    its mean; normal approximation). 0.5: at the mean count."""


RoutingPolicy = Literal["shared", "jsq", "least_kv", "random"]


class SimTrace(Strict):
    """One trace file replayed by ``planner simulate`` (``[[simulation.trace]]``).

    ``file``: a path relative to the scenario file, or ``bundled:azure-conv`` /
    ``bundled:azure-code`` (the Azure LLM inference traces shipped with planner, CC-BY 4.0).
    ``class``: the workload class of its requests (default: the only class, or the
    ``class_column``'s labels). Column mapping as :class:`planner.traces.TraceColumns`.
    ``rate_scale`` divides the arrival times (2 = twice the rate); ``repeat`` repeats the trace
    back to back to fill ``[simulation] hours`` (otherwise it is replayed once, cut at
    ``hours``). ``trace_format`` (``azure``, ``mooncake``, ``burstgpt``, ``csv``) presets the
    column mapping and file format (:data:`planner.traces.TRACE_FORMATS`); keys given here
    override it.
    """

    file: str
    """Trace file (CSV, JSONL or Parquet), relative to the scenario file, or bundled:azure-conv /
    bundled:azure-code."""
    workload_class: str | None = Field(default=None, alias="class")
    """Workload class of the trace's requests (TOML key ``class``; default: the only class, or the
    ``class_column`` labels)."""
    trace_format: Literal["azure", "mooncake", "burstgpt", "csv"] | None = None
    """Preset column mapping and file format: azure, mooncake, burstgpt or csv (keys given here
    override it)."""
    timestamp: str = "TIMESTAMP"
    """Column of the arrival times."""
    timestamp_unit: Literal["datetime", "s", "ms", "us", "ns"] = "datetime"
    """Unit of ``timestamp``: datetime (parsed dates), s, ms, us or ns."""
    timestamp_format: str | None = None
    """strftime format of date-time timestamps (default: parsed automatically)."""
    input_tokens: str = "ContextTokens"
    """Column of the prompt tokens."""
    output_tokens: str = "GeneratedTokens"
    """Column of the output tokens."""
    class_column: str | None = None
    """Column of workload class labels (requests then go to those classes)."""
    format: Literal["csv", "jsonl", "parquet"] | None = None
    """File format: csv, jsonl or parquet (default: from the extension)."""
    rate_scale: Annotated[float, Field(gt=0)] = 1.0
    """Replay at this multiple of the trace's rate (arrival times divided by it)."""
    repeat: bool = False
    """Repeat the trace back to back to fill ``[simulation] hours`` (else replayed once, cut at
    ``hours``)."""
    #: set by ``planner simulate --trace``: error messages then name the flags, not TOML keys
    _from_cli: bool = PrivateAttr(default=False)


def _trace_list(v: Any) -> Any:
    if isinstance(v, str):
        return ({"file": v},)
    if isinstance(v, Mapping):
        return (v,)
    return v


class Simulation(Strict):
    """``[simulation]``: what ``planner simulate`` (request-level simulation) runs.

    hours, start_hour : simulated period and the hour of the (weekly) profile it starts at.
    deployments : self-hosted deployments simulated *together* as pools of one plan (a request
        goes to the first listed pool serving its class); empty: each self-hosted candidate is
        simulated on its own, as ``planner cost`` compares them.
    replicas : fixed replicas per deployment (default: the cost engine's sizing).
    spillover : an ``[api.NAME]`` that takes requests a pool would serve too late (predicted
        TTFT over the class SLO) or cannot queue (``max_queue``), and the classes no pool serves.
    routing : pool routing policy (``shared`` FCFS queue, ``jsq``, ``least_kv``, ``random``).
    max_queue : queue limit, requests, of a pool (``shared`` routing) or of each replica
        (the others): a request beyond it goes to the next pool of its class, the
        ``spillover`` API, or is dropped; none: unbounded.
    api_ttft_s, api_output_tokens_per_s : the API's latency model (default: the catalog's
        figures, else 0.5 s and 60 tokens/s).
    length_cv : lognormal spread of request lengths around a class's fixed lengths (0 = every
        request has the class's lengths; a length given as a distribution is sampled per request).
    burstiness_cv : coefficient of variation of the inter-arrival gaps (Gamma renewal; 1 =
        Poisson, the default).
    trace : trace files replayed instead of generated arrivals (``planner simulate --trace``).
    seed : random seed (same seed, identical records).
    report_max_requests : the report simulates the busiest hour, cut to this many requests.
    """

    hours: Annotated[int, Field(ge=1, le=8784)] = 24
    start_hour: Annotated[int, Field(ge=0, le=167)] = 0
    deployments: tuple[str, ...] = ()
    replicas: dict[str, Annotated[int, Field(ge=1, le=MAX_REPLICAS)]] = Field(
        default_factory=dict)
    spillover: str | None = None
    routing: RoutingPolicy = "shared"
    max_queue: NonNegInt | None = None
    api_ttft_s: Annotated[float, Field(ge=0, le=3600)] | None = None
    api_output_tokens_per_s: Annotated[float, Field(gt=0, le=1e6)] | None = None
    length_cv: Annotated[float, Field(ge=0, le=10)] = 0.0
    burstiness_cv: Annotated[float, Field(gt=0, le=100)] | None = None
    trace: Annotated[tuple[SimTrace, ...], BeforeValidator(_trace_list)] = ()
    seed: NonNegInt = 0
    report_max_requests: Annotated[int, Field(ge=100)] = 20_000


class Meta(Strict):
    name: str
    """Scenario name shown in every output."""
    question: str = ""
    """The question the scenario answers (shown in the report)."""
    description: str = ""
    """Free text."""
    horizon_months: Annotated[int, Field(ge=1, le=600)] = 12
    """Planning horizon, months: one-off costs are spread over it, and totals (usd_horizon) span
    it."""
    currency: str = "USD"
    """Currency for display (all money is USD internally)."""
    usd_to_currency: Positive = 1.0
    """Units of ``currency`` per USD."""
    discount_rate_per_year: NonNeg = 0.0
    """Yearly discount rate for net present cost (``planner risk --years``)."""


class Scenario(Strict):
    """A validated scenario. Build it with :func:`load_scenario` or :func:`parse_scenario`."""

    scenario: Meta
    """Name, question, horizon and currency."""
    workload: dict[str, WorkloadClass] = Field(default_factory=dict)
    """Workload classes by name (``[workload.NAME]``)."""
    api: dict[str, ApiDeployment] = Field(default_factory=dict)
    """Hosted API options by name (``[api.NAME]``): pay per token."""
    cloud: dict[str, CloudDeployment] = Field(default_factory=dict)
    """Rented-GPU options by name (``[cloud.NAME]``): pay per GPU-hour."""
    onprem: dict[str, OnPremDeployment] = Field(default_factory=dict)
    """Bought-server options by name (``[onprem.NAME]``): capex, energy, staff."""
    finetune: dict[str, FineTune] = Field(default_factory=dict)
    """Fine-tunes by name (``[finetune.NAME]``), served by options naming them in ``fine_tune``."""
    pretraining: dict[str, PreTraining] = Field(default_factory=dict)
    """Pre-training cost estimates at 6 N D FLOPs (``[pretraining.NAME]``)."""
    inference_flops: dict[str, InferenceFlops] = Field(default_factory=dict)
    """First-principles serving cost at 2 N FLOPs per token (``[inference_flops.NAME]``)."""
    payback: dict[str, Payback] = Field(default_factory=dict)
    """Provider payback: usage that recovers training and serving (``[payback.NAME]``)."""
    revenue: dict[str, Revenue] = Field(default_factory=dict)
    """Revenue per request for unit economics (``[revenue.NAME]``)."""
    token_economics: dict[str, TokenEconomics] = Field(default_factory=dict)
    """GPU cost of an input vs an output token (``[token_economics.NAME]``)."""
    optimize: Optimize = Field(default_factory=Optimize)
    """Limits and solver settings of ``planner optimize``."""
    cascade: dict[str, Cascade] = Field(default_factory=dict)
    """Small-then-large cascades the optimiser may route to (``[cascade.NAME]``)."""
    correlation: tuple[Correlation, ...] = ()
    """Rank correlations between uncertain inputs (``[[correlation]]``)."""
    trends: Trends = Field(default_factory=Trends)
    """Yearly price and traffic trends for ``planner risk --years``."""
    planning: Planning = Field(default_factory=Planning)
    """Capacity reserves, cost lens and billing month."""
    simulation: Simulation = Field(default_factory=Simulation)
    """What ``planner simulate`` runs."""
    source_path: str | None = Field(default=None, exclude=True)
    variants_applied: tuple[str, ...] = Field(default=(), exclude=True)

    @property
    def name(self) -> str:
        return self.scenario.name

    def deployments(self) -> dict[str, tuple[str, Any]]:
        """All deployment candidates: name -> (kind, config), kind in api/cloud/onprem."""
        out: dict[str, tuple[str, Any]] = {}
        for kind in ("api", "cloud", "onprem"):
            for name, dep in getattr(self, kind).items():
                out[name] = (kind, dep)
        return out


# --------------------------------------------------------------------------------------------
# loading: TOML -> extends/variants -> pydantic -> cross-reference checks


class _KeyClash(ValueError):
    """A dotted key and another key give the same key path (raised without the file name)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def _expand_dotted(d: Mapping[str, Any], _prefix: str = "") -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}`` (quoted dotted keys, and ``--set`` keys).

    A key path given twice, or a dotted key below a value that is not a table
    (``name = "x"`` then ``"name.x" = "y"``), raises :class:`_KeyClash`.
    """
    out: dict[str, Any] = {}
    for k, v in d.items():
        full = f"{_prefix}{k}"
        v = _expand_dotted(v, f"{full}.") if isinstance(v, Mapping) else v
        parts = k.split(".") if isinstance(k, str) and "." in k else [k]
        cur = out
        for i, p in enumerate(parts[:-1]):
            nxt = cur.setdefault(p, {})
            if not isinstance(nxt, Mapping):
                where = _prefix + ".".join(str(x) for x in parts[: i + 1])
                raise _KeyClash(full, f"the dotted key reaches into '{shorten(where)[1:-1]}', "
                                      "which already holds a value, not a table")
            cur = nxt
        last = parts[-1]
        if last not in cur:
            cur[last] = v
        elif isinstance(v, Mapping) and isinstance(cur[last], Mapping):
            cur[last] = _merge_disjoint(cur[last], v, full)
        else:
            raise _KeyClash(full, "this key path is given twice (once as a dotted key)")
    return out


def _merge_disjoint(a: Mapping[str, Any], b: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Merge two tables of one file that must not set the same value twice."""
    out = dict(a)
    for k, v in b.items():
        if k not in out:
            out[k] = v
        elif isinstance(v, Mapping) and isinstance(out[k], Mapping):
            out[k] = _merge_disjoint(out[k], v, f"{where}.{k}")
        else:
            raise _KeyClash(f"{where}.{k}", "this key path is given twice (once as a dotted "
                                            "key)")
    return out


def _expand(d: Mapping[str, Any], path: str | None) -> dict[str, Any]:
    try:
        return _expand_dotted(d)
    except _KeyClash as exc:
        raise ScenarioError(str(exc), path=path, key=exc.key) from None


def _toml_nesting(text: str) -> int:
    """Deepest nesting of arrays and inline tables in TOML ``text`` (strings and comments
    skipped), counted without parsing, so a hostile file cannot exhaust the parser's stack."""
    depth = deepest = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            triple = text.startswith(c * 3, i)
            end = c * 3 if triple else c
            j = i + len(end)
            while j < n:
                if c == '"' and text[j] == "\\":
                    j += 2
                    continue
                if text.startswith(end, j):
                    break
                if not triple and text[j] == "\n":
                    break
                j += 1
            i = j + len(end)
            continue
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(depth - 1, 0)
        elif c == "." and depth == 0:
            pass
        i += 1
    return deepest


def _data_nesting(obj: Any) -> int:
    """Deepest nesting of tables and arrays in parsed data (iterative, no recursion)."""
    deepest = 0
    stack = [(obj, 0)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, Mapping):
            items = list(o.values())
        elif isinstance(o, list | tuple):
            items = list(o)
        else:
            continue
        deepest = max(deepest, d + 1)
        if deepest > MAX_NESTING:
            return deepest
        stack.extend((x, d + 1) for x in items)
    return deepest


def _bool_fields() -> frozenset[str]:
    """The scenario fields that hold booleans (every other field rejects true/false)."""
    names: set[str] = set()
    todo: list[type[BaseModel]] = [Strict]
    while todo:
        m = todo.pop()
        names.update(f.alias or k for k, f in m.model_fields.items() if f.annotation is bool)
        todo.extend(m.__subclasses__())
    return frozenset(names)


def check_values(data: Mapping[str, Any], path: str | None) -> None:
    """Reject what no scenario value may be, before the typed validation: non-finite
    numbers, numbers beyond :data:`MAX_ABS_NUMBER`, and booleans where a number belongs.

    Raises :class:`ScenarioError` naming the key path.
    """
    if _data_nesting(data) > MAX_NESTING:
        raise ScenarioError(f"tables and arrays nest deeper than {MAX_NESTING} levels",
                            path=path)
    bools = _bool_fields()
    stack: list[tuple[Any, tuple]] = [(data, ())]
    while stack:
        o, keys = stack.pop()
        if isinstance(o, Mapping):
            stack.extend((v, (*keys, k)) for k, v in o.items())
        elif isinstance(o, list | tuple):
            stack.extend((v, (*keys, i)) for i, v in enumerate(o))
        elif isinstance(o, bool):
            last = next((k for k in reversed(keys) if isinstance(k, str)), "")
            if last not in bools and not (len(keys) > 1 and keys[-2] == "perf"
                                          and last == "chunked_prefill"):
                raise ScenarioError(f"expected a number, got {str(o).lower()} (a boolean)",
                                    path=path, key=_key_text(keys))
        elif isinstance(o, float | int):
            if not math.isfinite(o):
                raise ScenarioError(f"expected a finite number, got {o}", path=path,
                                    key=_key_text(keys))
            if abs(o) > MAX_ABS_NUMBER:
                raise ScenarioError(
                    f"expected a number of magnitude at most {MAX_ABS_NUMBER:g}, got {o:g}",
                    path=path, key=_key_text(keys))


def _key_text(keys: Sequence[Any]) -> str:
    out = ""
    for k in keys:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return shorten(out, 200)[1:-1] if len(out) > 200 else out


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``over`` onto ``base`` (tables merge, everything else replaces)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) and "dist" not in v:
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_text(path: Path, shown: str) -> str:
    """A scenario file's text: a regular UTF-8 file of at most :data:`MAX_FILE_BYTES`."""
    import os
    import stat

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ScenarioError("file not found", path=shown) from None
    except (OSError, ValueError) as exc:
        raise ScenarioError(f"cannot read the file ({exc})", path=shown) from None
    if stat.S_ISDIR(st.st_mode):
        raise ScenarioError("is a directory; expected a scenario TOML file", path=shown)
    if not stat.S_ISREG(st.st_mode):
        raise ScenarioError("is not a regular file (a device, pipe or socket); expected a "
                            "scenario TOML file", path=shown)
    if st.st_size > MAX_FILE_BYTES:
        raise ScenarioError(f"is {st.st_size:,} bytes; a scenario file may have at most "
                            f"{MAX_FILE_BYTES:,}", path=shown)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ScenarioError(f"cannot read the file ({exc.strerror or exc})", path=shown) \
            from None
    if len(raw) > MAX_FILE_BYTES:
        raise ScenarioError(f"has more than {MAX_FILE_BYTES:,} bytes", path=shown)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"is not UTF-8 text (byte {exc.start})", path=shown) from None


def _read_toml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    try:
        path = path.resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        raise ScenarioError(f"cannot resolve the path ({exc})",
                            path=str(seen[-1]) if seen else shorten(str(path)),
                            key="extends" if seen else None) from None
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ScenarioError(f"'extends' loops: {shorten(chain, 2000)}", path=str(seen[0]),
                            key="extends")
    if len(seen) >= MAX_EXTENDS_DEPTH:
        raise ScenarioError(f"'extends' chains more than {MAX_EXTENDS_DEPTH} files "
                            f"(stopped at {path})", path=str(seen[0]), key="extends")
    text = _read_text(path, str(path))
    if _toml_nesting(text) > MAX_NESTING:
        raise ScenarioError(f"arrays and inline tables nest deeper than {MAX_NESTING} levels",
                            path=str(path))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"not valid TOML: {exc}", path=str(path)) from None
    except RecursionError:
        raise ScenarioError(f"nests deeper than {MAX_NESTING} levels", path=str(path)) from None
    if _data_nesting(data) > MAX_NESTING:
        raise ScenarioError(f"tables and dotted keys nest deeper than {MAX_NESTING} levels",
                            path=str(path))
    data = _expand(data, str(path))
    parent = data.pop("extends", None)
    if parent is not None:
        if not isinstance(parent, str) or not parent or "\x00" in parent:
            raise ScenarioError("expected a relative file path (a non-empty string without "
                                "NUL bytes)", path=str(path), key="extends")
        base = _read_toml(path.parent / parent, (*seen, path))
        for name in ("variants",):
            for d in (base, data):
                if name in d and not isinstance(d[name], Mapping):
                    raise ScenarioError("expected a table of named variants",
                                        path=str(path), key=name)
        variants = deep_merge(base.pop("variants", {}), data.pop("variants", {}))
        data = deep_merge(base, data)
        if variants:
            data["variants"] = variants
    return data


def parse_scenario(
    data: Mapping[str, Any],
    *,
    path: str | None = None,
    variants: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
    catalog: Any = None,
) -> Scenario:
    """Validate a scenario from a mapping (the parsed TOML).

    Parameters
    ----------
    data : mapping
        The scenario tables, possibly with a ``variants`` table.
    variants : sequence of str
        Names of ``[variants.NAME]`` tables to apply, in order.
    overrides : mapping, optional
        Dotted key -> value overrides applied last (``{"workload.chat.requests_per_day": 1e6}``).
    catalog : Catalog, optional
        Catalog to resolve references against (default: the shipped catalog).
    """
    data = _expand(data, path)
    table = data.pop("variants", None)
    table = {} if table is None else table
    if not isinstance(table, Mapping):
        raise ScenarioError("expected a table of named variants ([variants.NAME])", path=path,
                            key="variants")
    for name, v in table.items():
        if not isinstance(v, Mapping):
            raise ScenarioError(
                f"expected a table of overrides ([variants.{shorten(name)[1:-1]}]), got "
                f"{shorten(v)}", path=path, key=f"variants.{name}")
    for name in variants:
        if name not in table:
            raise ScenarioError(
                _unknown("variant", name, list(table)), path=path, key=f"variants.{name}"
            )
    over = _expand(dict(overrides), "--set") if overrides else None
    merged = data
    for name in variants:
        merged = deep_merge(merged, _expand(table[name], path))
    if over:
        merged = deep_merge(merged, over)
    sc = _validate(merged, path, catalog)
    # every variant must give a valid scenario, applied or not (alone, on the base)
    for name, v in table.items():
        if name in variants:
            continue
        try:
            _validate(deep_merge(data, _expand(v, path)), path, catalog)
        except ScenarioError as exc:
            raise ScenarioError(f"with variant {shorten(name)} applied: {exc.detail}",
                                path=path, key=exc.key) from None
    return sc.model_copy(update={"source_path": path, "variants_applied": tuple(variants)})


def _validate(data: Mapping[str, Any], path: str | None, catalog: Any) -> Scenario:
    check_values(data, path)
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as exc:
        raise _from_validation(exc, path, data) from None
    check_references(sc, catalog=catalog, path=path)
    return sc


def load_scenario(
    path: str | Path,
    *,
    variants: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
    catalog: Any = None,
) -> Scenario:
    """Read, merge and validate a scenario file. Raises ScenarioError on any problem."""
    p = Path(path)
    data = _read_toml(p)
    return parse_scenario(
        data, path=str(path), variants=variants, overrides=overrides, catalog=catalog
    )


# --------------------------------------------------------------------------------------------
# error messages


def _unknown(kind: str, value: str, known: Sequence[str]) -> str:
    value = str(value)
    close = difflib.get_close_matches(value, list(known), n=3, cutoff=0.5) \
        if len(value) <= 200 else []
    msg = f"unknown {kind} {shorten(value)}"
    if close:
        return msg + f"; did you mean {' or '.join(repr(c) for c in close)}?"
    known = sorted(str(k) for k in known)
    listed = ", ".join(shorten(k)[1:-1] for k in known[:40])
    return msg + (f"; expected one of: {listed}{' ...' if len(known) > 40 else ''}"
                  if known else "")


def _unwrap(ann: Any) -> Any:
    """Strip Annotated/Optional/Union down to a model class or a dict/tuple type."""
    if isinstance(ann, TypeAliasType):
        return _unwrap(ann.__value__)
    origin = get_origin(ann)
    if origin is Annotated:
        return _unwrap(get_args(ann)[0])
    if origin in (Union, UnionType):
        for a in get_args(ann):
            u = _unwrap(a)
            if (isinstance(u, type) and issubclass(u, BaseModel)) or get_origin(u) in (dict, tuple):
                return u
        return None
    return ann


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    """The pydantic model class that owns the last key of ``loc`` (best effort)."""
    t: Any = Scenario
    for part in loc[:-1]:
        if isinstance(t, type) and issubclass(t, BaseModel):
            f = t.model_fields.get(part)
            t = _unwrap(f.annotation) if f is not None else None
        elif get_origin(t) is dict:
            t = _unwrap(get_args(t)[1])
        elif get_origin(t) is tuple:
            t = _unwrap(get_args(t)[0])
        else:
            return None
    return t if isinstance(t, type) and issubclass(t, BaseModel) else None


def _clean_loc(loc: Sequence[Any]) -> list[Any]:
    # drop pydantic's union-branch tags (e.g. 'float', 'lognormal', 'function-after[...]')
    out = []
    for part in loc:
        if isinstance(part, str) and (
            part in ("float", "int", "str", "bool", "tuple[...]", "dict[str,float]")
            or "[" in part
            or part in {"fixed", "uniform", "triangular", "normal", "lognormal", "pert",
                        "beta", "choice", "empirical"}
        ):
            continue
        out.append(part)
    return out


def _from_validation(exc: ValidationError, path: str | None, data: Mapping) -> ScenarioError:
    errors = exc.errors(include_url=False)
    # an unknown key usually explains a 'missing' one next to it (a typo): report it first
    errors = sorted(errors, key=lambda e: e["type"] != "extra_forbidden")
    locs = [_clean_loc(e["loc"]) for e in errors]
    seen: dict[str, str] = {}
    for i, err in enumerate(errors):
        loc = locs[i]
        key = ".".join(str(p) for p in loc) or "(top level)"
        etype = err["type"]
        if etype in ("model_type", "float_type", "float_parsing") and isinstance(
            err.get("input"), Mapping
        ) and any(j != i and locs[j][: len(loc)] == loc for j in range(len(errors))):
            continue  # a table offered to the number branch of a number|distribution union
        if etype == "extra_forbidden":
            model = _model_at(loc)
            # the names a file uses: a field's alias where it has one (``class``)
            known = [f.alias or k for k, f in (model.model_fields.items() if model else ())
                     if k not in ("source_path", "variants_applied")]
            msg = _unknown("key", str(loc[-1]), known) if loc else "unknown key"
        elif etype == "missing":
            msg = "required key is missing"
        elif etype in ("float_parsing", "float_type", "int_parsing", "int_type", "bool_type",
                       "string_type", "int_from_float"):
            msg = f"{err['msg'].lower()}, got {shorten(err.get('input'))}"
        else:
            msg = err["msg"].removeprefix("Value error, ")
        seen.setdefault(key, msg)
    if not seen:
        first = errors[0]
        seen[".".join(str(p) for p in first["loc"])] = first["msg"]
    # a number-vs-distribution union reports both branches; keep the most informative one
    items = list(seen.items())
    key, msg = items[0]
    more = ""
    if len(items) > 1:
        rest = "; ".join(f"'{k}': {m}" for k, m in items[1:4])
        more = f" (also {rest}{' ...' if len(items) > 4 else ''})"
    return ScenarioError(msg + more, path=path, key=key)


# --------------------------------------------------------------------------------------------
# distribution-valued fields (the uncertain inputs, see planner.uncertain)

#: Scenario fields that are bookkeeping, not inputs.
_SKIP_FIELDS = frozenset({"source_path", "variants_applied"})


def distribution_fields(obj: Any, prefix: tuple = ()) -> dict[str, tuple[tuple, Any]]:
    """Every distribution-valued field under ``obj`` (a scenario or any model/mapping/tuple).

    Returns ``{dotted key path: (path, distribution)}``, in field order; tuple entries are
    indexed (``api.x.request_fees.0.usd_per_gb_s``). :func:`planner.uncertain.uncertain_inputs`
    wraps this; the reference check uses it to validate ``[[correlation]]`` keys.
    """
    out: dict[str, tuple[tuple, Any]] = {}

    def walk(o: Any, path: tuple) -> None:
        if is_distribution(o):
            out[".".join(str(p) for p in path)] = (path, o)
        elif isinstance(o, BaseModel):
            for name in type(o).model_fields:
                if name not in _SKIP_FIELDS:
                    walk(getattr(o, name), (*path, name))
        elif isinstance(o, Mapping):
            for k, v in o.items():
                walk(v, (*path, k))
        elif isinstance(o, tuple | list):
            for i, v in enumerate(o):
                walk(v, (*path, i))

    walk(obj, tuple(prefix))
    return out


# --------------------------------------------------------------------------------------------
# references against the catalog and between tables


def check_references(sc: Scenario, *, catalog: Any = None, path: str | None = None) -> None:
    """Resolve every catalog id and class name; raise ScenarioError with suggestions."""
    from planner.catalog import load_catalog

    cat = catalog or load_catalog()
    classes = list(sc.workload)
    if not classes and (sc.api or sc.cloud or sc.onprem):
        raise ScenarioError(
            "no workload class: the deployments have nothing to serve; add a "
            "[workload.NAME] table with requests_per_day, input and output", path=path,
            key="workload")
    if not classes and not (sc.pretraining or sc.inference_flops or sc.payback
                            or sc.token_economics or sc.finetune):
        raise ScenarioError(
            "nothing to plan: add a [workload.NAME] class and deployments ([api.NAME], "
            "[cloud.NAME], [onprem.NAME]), or a [pretraining.NAME] job", path=path,
            key="workload")

    def need(table: str, kind: str, value: str | None, key: str) -> None:
        if value is not None and not cat.has(table, value):
            raise ScenarioError(_unknown(kind, value, cat.ids(table)), path=path, key=key)

    def need_classes(values: Sequence[str] | None, key: str) -> None:
        for c in values or ():
            if c not in classes:
                raise ScenarioError(_unknown("workload class", c, classes), path=path, key=key)

    def need_ft(value: str | None, key: str) -> None:
        if value is not None and value not in sc.finetune:
            raise ScenarioError(
                _unknown("fine-tune option", value, list(sc.finetune)), path=path, key=key
            )

    for name, d in sc.api.items():
        need("apis", "API offering", d.offering, f"api.{name}.offering")
        need_classes(d.classes, f"api.{name}.classes")
        need_ft(d.fine_tune, f"api.{name}.fine_tune")
    for kind in ("cloud", "onprem"):
        for name, d in getattr(sc, kind).items():
            need("llms", "LLM", d.model, f"{kind}.{name}.model")
            need("accelerators", "accelerator", d.accelerator, f"{kind}.{name}.accelerator")
            need_classes(d.classes, f"{kind}.{name}.classes")
            need_ft(d.fine_tune, f"{kind}.{name}.fine_tune")
    for name, d in sc.cloud.items():
        need("clouds", "cloud GPU offering", d.offering, f"cloud.{name}.offering")
    for name, d in sc.onprem.items():
        need("servers", "on-prem server", d.server, f"onprem.{name}.server")
    for name, f in sc.finetune.items():
        table = "apis" if f.method == "api" else "llms"
        kind = "API offering" if f.method == "api" else "LLM"
        need(table, kind, f.base_model, f"finetune.{name}.base_model")
        need("accelerators", "accelerator", f.accelerator, f"finetune.{name}.accelerator")
        need_classes(f.qualifies_for, f"finetune.{name}.qualifies_for")
    for section in ("pretraining", "inference_flops"):
        for name, j in getattr(sc, section).items():
            need("llms", "LLM", j.model, f"{section}.{name}.model")
            need("accelerators", "accelerator", j.accelerator, f"{section}.{name}.accelerator")
            need("clouds", "cloud GPU offering", j.cloud_offering, f"{section}.{name}.cloud_offering")
    for name, p in sc.payback.items():
        if p.pretraining is not None and p.pretraining not in sc.pretraining:
            raise ScenarioError(
                _unknown("pre-training job", p.pretraining, list(sc.pretraining)),
                path=path, key=f"payback.{name}.pretraining",
            )
        if p.inference_flops is not None and p.inference_flops not in sc.inference_flops:
            raise ScenarioError(
                _unknown("inference estimate", p.inference_flops, list(sc.inference_flops)),
                path=path, key=f"payback.{name}.inference_flops",
            )
    deps = sc.deployments()
    for name, k in sc.cascade.items():
        for leg in ("small", "large"):
            if getattr(k, leg) not in deps:
                raise ScenarioError(_unknown("deployment", getattr(k, leg), list(deps)),
                                    path=path, key=f"cascade.{name}.{leg}")
        need_classes(k.classes, f"cascade.{name}.classes")
        need_classes(list(k.quality), f"cascade.{name}.quality")
    for i, d in enumerate(sc.optimize.exclude):
        if d not in deps:
            raise ScenarioError(_unknown("deployment", d, list(deps)), path=path,
                                key=f"optimize.exclude[{i}]")
    for kind in ("api", "cloud", "onprem"):
        for name, d in getattr(sc, kind).items():
            need_classes(list(d.quality), f"{kind}.{name}.quality")
    if sc.correlation:
        known = list(distribution_fields(sc))
        for i, c in enumerate(sc.correlation):
            for side in ("a", "b"):
                v = getattr(c, side)
                if v not in known:
                    raise ScenarioError(
                        _unknown("uncertain input", v, known)
                        + " (a correlation links two fields that hold distributions)",
                        path=path, key=f"correlation[{i}].{side}")
    _check_simulation(sc, path)
    for name, r in sc.revenue.items():
        need_classes(r.classes, f"revenue.{name}.classes")
    for name, t in sc.token_economics.items():
        need("llms", "LLM", t.model, f"token_economics.{name}.model")
        need("accelerators", "accelerator", t.accelerator, f"token_economics.{name}.accelerator")
        for i, o in enumerate(t.compare_offerings):
            need("apis", "API offering", o, f"token_economics.{name}.compare_offerings[{i}]")
    for cname, wc in sc.workload.items():
        for part in ("input", "output", "context"):
            ln = getattr(wc, part)
            if ln is not None and ln.tokens is None and ln.tokens_per_unit is None:
                unit = "word" if ln.words is not None else "char"
                langs_all = cat.column("tokenizers", "lang")
                if (ln.lang, unit) not in set(zip(langs_all, cat.column("tokenizers", "unit"),
                                                  strict=True)):
                    langs = sorted(set(langs_all))
                    raise ScenarioError(
                        f"no tokens-per-{unit} ratio for language {ln.lang!r} in the catalog "
                        f"(languages: {', '.join(langs)}); set tokens_per_unit",
                        path=path, key=f"workload.{cname}.{part}.lang",
                    )
        _check_tokenizers(sc, cat, cname, wc, path)
        _check_hosted_lengths(sc, cname, wc, path, cat)
        if isinstance(wc.diurnal, str):
            if wc.diurnal not in PROFILES:
                raise ScenarioError(
                    _unknown("diurnal profile", wc.diurnal, list(PROFILES)),
                    path=path, key=f"workload.{cname}.diurnal",
                )


def _check_tokenizers(sc: Scenario, cat: Any, cname: str, wc: WorkloadClass,
                      path: str | None) -> None:
    """A length in words or characters needs a tokens-per-unit row for the tokenizer of every
    deployment serving its class (no silent borrowing of another tokenizer's ratio)."""
    have = set(zip(*(cat.column("tokenizers", c) for c in ("tokenizer", "lang", "unit")),
                   strict=True))
    for part in ("input", "output", "context"):
        ln = getattr(wc, part)
        if ln is None or ln.tokens is not None or ln.tokens_per_unit is not None:
            continue
        unit = "word" if ln.words is not None else "char"
        if ln.tokenizer is not None:
            if (ln.tokenizer, ln.lang, unit) not in have:
                raise ScenarioError(
                    f"no tokens-per-{unit} row for tokenizer {shorten(ln.tokenizer)} and "
                    f"language {shorten(ln.lang)} in tokenizers.csv; name another tokenizer, "
                    f"set tokens_per_unit, or add the row to tokenizers.csv",
                    path=path, key=f"workload.{cname}.{part}.tokenizer")
            continue
        for dname, (kind, dep) in sc.deployments().items():
            if dep.classes is not None and cname not in dep.classes:
                continue
            row = cat.api(dep.offering) if kind == "api" else cat.llm(dep.model)
            tok = dep.tokenizer or row.get("tokenizer") or ""
            if (tok, ln.lang, unit) not in have:
                known = sorted({t for t, lang, u in have if lang == ln.lang and u == unit})
                raise ScenarioError(
                    f"deployment {shorten(dname)} counts tokens with tokenizer "
                    f"{shorten(tok)}, which has no tokens-per-{unit} row for language "
                    f"{shorten(ln.lang)} in tokenizers.csv; set tokenizer = \"NAME\" on "
                    f"[{kind}.{dname}] to count with another family's ratio"
                    + (f" ({', '.join(known)})" if known else "")
                    + f", set tokens_per_unit on workload.{cname}.{part}, or add a "
                      f"{tok or 'TOKENIZER'},{ln.lang},{unit} row to tokenizers.csv",
                    path=path, key=f"workload.{cname}.{part}")


def _check_hosted_lengths(sc: Scenario, cname: str, wc: WorkloadClass,
                          path: str | None, cat: Any) -> None:
    """A class a self-hosted deployment serves needs >= 1 output token (and >= 1 prompt
    token) per request, the performance model timing at least one decode step, and its
    request (at the median lengths) must fit the model's context window."""
    deps = {n: d for kind in ("cloud", "onprem") for n, d in getattr(sc, kind).items()
            if (d.classes is None or cname in d.classes) and d.capacity_requests_per_s is None}
    hosted = list(deps)
    if not hosted:
        return

    def tokens(ln: Length | None) -> float | None:
        return None if ln is None or ln.tokens is None else float(med(ln.tokens))

    out = tokens(wc.output)
    if out is not None and out < 1:
        raise ScenarioError(
            f"expected >= 1 token (the self-hosted deployment {shorten(hosted[0])} serves "
            f"this class and generates at least one token), got {out:g}", path=path,
            key=f"workload.{cname}.output")
    inp, ctx = tokens(wc.input), tokens(wc.context)
    if inp is not None and (wc.context is None or ctx is not None) and inp + (ctx or 0) < 1:
        raise ScenarioError(
            f"expected >= 1 prompt token (input + context; the self-hosted deployment "
            f"{shorten(hosted[0])} serves this class), got {inp + (ctx or 0):g}", path=path,
            key=f"workload.{cname}.input")
    if out is None or inp is None or (wc.context is not None and ctx is None):
        return
    total = inp + (ctx or 0) + out
    for name, d in deps.items():
        window = cat.llm(d.model).get("max_context_tokens")
        try:
            window = float(window)
        except (TypeError, ValueError):
            continue
        if math.isfinite(window) and window > 0 and total > window:
            raise ScenarioError(
                f"input + context + output = {total:,.0f} tokens exceed the context window of "
                f"{shorten(d.model)} ({window:,.0f} tokens), which deployment "
                f"{shorten(name)} serves this class with; shorten the request or restrict "
                f"the deployment's classes", path=path, key=f"workload.{cname}")


def _check_simulation(sc: Scenario, path: str | None) -> None:
    """``[simulation]`` names self-hosted deployments, an API and workload classes."""
    sim = sc.simulation
    hosted = [*sc.cloud, *sc.onprem]
    for i, d in enumerate(sim.deployments):
        if d not in hosted:
            raise ScenarioError(_unknown("self-hosted (cloud/onprem) deployment", d, hosted),
                                path=path, key=f"simulation.deployments[{i}]")
    for d in sim.replicas:
        if d not in hosted:
            raise ScenarioError(_unknown("self-hosted (cloud/onprem) deployment", d, hosted),
                                path=path, key=f"simulation.replicas.{d}")
    if sim.spillover is not None and sim.spillover not in sc.api:
        raise ScenarioError(_unknown("API deployment", sim.spillover, list(sc.api)),
                            path=path, key="simulation.spillover")
    for i, t in enumerate(sim.trace):
        if t.workload_class is not None and t.workload_class not in sc.workload:
            raise ScenarioError(_unknown("workload class", t.workload_class, list(sc.workload)),
                                path=path, key=f"simulation.trace[{i}].class")


def scenario_json_schema() -> dict[str, Any]:
    """JSON Schema of the scenario format (for editors: taplo / Even Better TOML)."""
    schema = _shared_distribution(_described(Scenario.model_json_schema(mode="validation")))
    schema["title"] = "planner scenario"
    for internal in ("source_path", "variants_applied"):  # set by the loader, not a TOML key
        schema["properties"].pop(internal, None)
    schema.setdefault("properties", {})["extends"] = {
        "type": "string", "description": "relative path of a base scenario to inherit",
    }
    schema["properties"]["variants"] = {
        "type": "object", "description": "named override tables applied with --variant NAME",
    }
    return schema


def _described(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with every model's properties described (:func:`field_descriptions`):
    ``$defs`` are named after their model classes, the top level is :class:`Scenario`."""
    from planner.distributions import DistributionBase

    models: dict[str, type[BaseModel]] = {}
    todo: list[type[BaseModel]] = [Strict, DistributionBase]
    while todo:
        c = todo.pop()
        models.setdefault(c.__name__, c)
        todo += c.__subclasses__()
    for name, node in [("Scenario", schema), *schema.get("$defs", {}).items()]:
        cls = models.get(name)
        if cls is None:
            continue
        text = dict(field_descriptions(cls))
        text.update({f.alias: text[k] for k, f in cls.model_fields.items()
                     if f.alias and k in text})  # the schema names aliased keys by alias
        for key, prop in (node.get("properties") or {}).items():
            if isinstance(prop, dict) and not prop.get("description") and key in text:
                prop["description"] = text[key]
    return schema


def _shared_distribution(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema made compact for editors: the distribution union (the same ``oneOf`` under
    every numeric field) written once, as ``$defs/Distribution``, and referenced; property
    titles (the key names again) dropped; descriptions on one line."""
    union: dict[str, Any] = {}

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            if x.get("discriminator", {}).get("propertyName") == "dist" and "oneOf" in x:
                union.setdefault("u", {"description": "An uncertain value: a distribution "
                                       "(the ``dist`` key names it); the deterministic engine "
                                       "uses its median, Monte Carlo samples it.", **x})
                return {"$ref": "#/$defs/Distribution"}
            out = {k: walk(v) for k, v in x.items()}
            if isinstance(out.get("description"), str):
                out["description"] = " ".join(out["description"].split())
            for p in (out.get("properties") or {}).values():  # titles repeat the key names
                if isinstance(p, dict):
                    p.pop("title", None)
            return out
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    out = walk(schema)
    if union:
        out.setdefault("$defs", {})["Distribution"] = union["u"]
    return out
