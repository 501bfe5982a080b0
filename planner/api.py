"""Python API: load a scenario, run an engine, get tidy pandas tables back.

Every function is a thin call into an engine and returns a small result object: its tables are :class:`pandas.DataFrame` attributes, listed by
``tables()``, and ``to_dict()`` gives plain Python (lists of row dicts) for JSON. The engine's
own result object is kept as ``engine`` for anything not wrapped here.

=================  ===========================================  ==============================
function           engine                                       CLI
=================  ===========================================  ==============================
:func:`load`       :func:`planner.config.load_scenario`         scenario argument, ``--set``
:func:`cost`       :func:`planner.engines.deterministic.evaluate`  ``planner cost``
:func:`breakeven`  :func:`planner.engines.breakeven.breakeven`  ``planner breakeven``
:func:`risk`       :func:`planner.engines.risk.run.run_montecarlo`  ``planner risk``
:func:`optimize`   :func:`planner.engines.optimize.optimize`    ``planner optimize``
:func:`simulate`   :func:`planner.sim.scenario.simulate_scenario`  ``planner simulate``
:func:`report`     :func:`planner.report.build_report`          ``planner report``
:func:`perf`       :mod:`planner.perf.report`                   ``planner perf``
=================  ===========================================  ==============================

The ``planner`` command is a thin layer over exactly these functions: ``planner cost``,
``breakeven``, ``risk``, ``optimize``, ``simulate``, ``report`` and ``perf`` parse their flags,
call the function in the table and print or write its tables (progress bars are the CLI's,
fed through the ``progress`` callbacks).

Every function taking a scenario also takes a path or ``example:NAME`` (loaded with
:func:`load`). Nothing here prints, draws a progress bar or changes process-wide settings.

Examples
--------
>>> import planner
>>> sc = planner.load("example:quickstart")
>>> r = planner.cost(sc)
>>> r.cheapest
'gpt-4o-mini'
>>> list(r.summary["deployment"])
['gpt-4o-mini', 'gpt-4o', 'llama-70b-h100', 'llama-8b-h100', 'llama-70b-hgx']
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.errors import PlannerError
from planner.results import LazyFrames

if TYPE_CHECKING:  # the numeric stack is imported on first use: `import planner` stays cheap
    import pandas as pd

    from planner.config import Scenario

__all__ = [
    "EXAMPLE_PREFIX", "BreakevenResult", "CostResult", "OptimizeResult", "PerfResult",
    "ReportResult", "Result", "RiskResult", "SimulateResult", "breakeven", "cost", "load",
    "optimize", "parse_overrides", "perf", "report", "risk", "scenario_path", "simulate",
    "templates",
]

EXAMPLE_PREFIX = "example:"


# -------------------------------------------------------------------------------- loading


def templates() -> dict[str, Path]:
    """The scenarios bundled with planner (``planner/templates/*.toml``) by name.

    Examples
    --------
    >>> sorted(templates())
    ['quickstart', 'risk-example']
    """
    d = Path(str(resources.files("planner"))) / "templates"
    return {p.stem: p for p in sorted(d.glob("*.toml"))}


def scenario_path(arg: str | os.PathLike) -> str:
    """A scenario path, with ``example:NAME`` resolved to a template shipped with planner.

    Examples
    --------
    >>> Path(scenario_path("example:quickstart")).name
    'quickstart.toml'
    >>> scenario_path("example:nope")
    Traceback (most recent call last):
    ...
    planner.errors.PlannerError: no bundled example 'nope'; available: quickstart, risk-example
    """
    arg = os.fspath(arg)
    if arg.startswith(EXAMPLE_PREFIX):
        name = arg[len(EXAMPLE_PREFIX):]
        t = templates()
        if name not in t:
            raise PlannerError(f"no bundled example {name!r}; available: {', '.join(t)}")
        return str(t[name])
    return arg


def parse_overrides(items: Iterable[str] | None) -> dict[str, object]:
    """``KEY=VALUE`` strings (the CLI's ``--set``) to an overrides mapping for :func:`load`.

    A value is read as a TOML value when it parses as one, else kept as a string.

    Examples
    --------
    >>> parse_overrides(["planning.lens=marginal", "workload.chat.requests_per_day=5e5"])
    {'planning.lens': 'marginal', 'workload.chat.requests_per_day': 500000.0}
    """
    import tomllib

    out: dict[str, object] = {}
    for item in items or []:
        if "=" not in item:
            raise PlannerError(f"--set {item!r}: expected KEY=VALUE (e.g. planning.lens=marginal)")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def load(path_or_example: str | os.PathLike, variants: str | Sequence[str] = (),
         overrides: Mapping[str, Any] | None = None) -> Scenario:
    """Read and validate a scenario.

    Parameters
    ----------
    path_or_example : str or path
        A scenario TOML file, or ``example:NAME`` for a bundled one (see :func:`templates`).
    variants : str or sequence of str
        ``[variants.NAME]`` tables to apply, in order (a string may hold several,
        comma-separated, as ``--variant`` does).
    overrides : mapping, optional
        Dotted key -> value, applied last (as ``--set KEY=VALUE``; see
        :func:`parse_overrides` for the string form).

    Returns
    -------
    planner.config.Scenario

    Raises
    ------
    planner.errors.PlannerError
        Unknown example, unreadable file or invalid scenario (the message names the key).

    Examples
    --------
    >>> sc = load("example:quickstart", variants="high-volume",
    ...           overrides={"planning.utilisation_target": 0.7})
    >>> sc.workload["chat"].requests_per_day, sc.planning.utilisation_target
    (2000000.0, 0.7)
    """
    from planner.config import load_scenario

    if isinstance(variants, str):
        variants = [variants]
    names = [v for vs in variants for v in str(vs).split(",") if v]
    return load_scenario(scenario_path(path_or_example), variants=names,
                         overrides=dict(overrides or {}))


def _scenario(scenario: Scenario | str | os.PathLike) -> Scenario:
    return load(scenario) if isinstance(scenario, str | os.PathLike) else scenario


# -------------------------------------------------------------------------------- results


def _empty() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame()


def _plain(v: Any) -> Any:
    """A JSON-friendly version of a value (NaN and infinities become None)."""
    import numpy as np
    import pandas as pd

    if isinstance(v, pd.DataFrame):
        return [{str(k): _plain(x) for k, x in row.items()} for row in v.to_dict("records")]
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Path):
        return str(v)
    if v is pd.NA or v is pd.NaT:
        return None
    return v


@dataclass(frozen=True)
class Result:
    """Base of the result objects: tables as DataFrame attributes, plus a few scalars.

    ``tables()`` returns every DataFrame attribute by name; ``to_dict()`` the scalars and the
    tables as lists of row dicts (NaN as None), ready for :func:`json.dumps`. ``engine`` is the
    engine's own result object (not part of ``to_dict()``).
    """

    scenario: str

    def tables(self) -> dict[str, pd.DataFrame]:
        import pandas as pd

        return {f.name: v for f in dataclasses.fields(self)
                if isinstance(v := getattr(self, f.name), pd.DataFrame)}

    def to_dict(self) -> dict[str, Any]:
        tabs = self.tables()
        meta = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.name not in tabs and f.name != "engine"}
        return {"kind": type(self).__name__, **meta,
                "tables": {k: _plain(v) for k, v in tabs.items()}}


@dataclass(frozen=True)
class CostResult(LazyFrames, Result):
    """Deterministic costs at the inputs' medians (``planner cost``).

    The tables are DataFrames, built from the engine's rows on first access
    (:class:`planner.results.LazyFrames`; ``raw(name)`` gives a table as stored).

    Attributes
    ----------
    summary : one row per deployment option: usd_per_month, usd_horizon, usd_per_request,
        usd_per_mtok, replicas, gpus, utilisation, requests_per_s_per_replica (capacity of one
        replica at the SLO), limited_by, classes_unserved ...
    costs : cost lines (deployment, class, component, usd_per_month, basis)
    capacity : per self-hosted deployment and class: replica throughput, latency, limits
    classes : per class volumes
    payback : on-prem and fine-tune payback (empty without ``[[payback]]``)
    check : with ``check=True``: per self-hosted option, the simulated SLO attainment of its
        busiest hour at this sizing (:func:`planner.sim.scenario.check_sizing`); else empty
    finetune, pretraining, inference_flops, unit_economics, token_economics : as the engine
    assumptions : catalog rows used, with source and as_of
    lens, horizon_months, warnings : the cost lens, the horizon and the engine's warnings
    """

    lens: str
    horizon_months: int
    summary: pd.DataFrame
    costs: pd.DataFrame
    capacity: pd.DataFrame
    classes: pd.DataFrame
    payback: pd.DataFrame
    finetune: pd.DataFrame
    pretraining: pd.DataFrame
    inference_flops: pd.DataFrame
    unit_economics: pd.DataFrame
    token_economics: pd.DataFrame
    assumptions: pd.DataFrame
    check: pd.DataFrame = field(default_factory=lambda: _empty())
    warnings: tuple[str, ...] = ()
    engine: Any = field(default=None, repr=False, compare=False)

    @property
    def cheapest(self) -> str | None:
        """The cheapest option per month among those serving every class (None if none)."""
        full = self.summary[self.summary["classes_unserved"] == ""]
        return None if full.empty else str(full.loc[full["usd_per_month"].idxmin(),
                                                    "deployment"])


def cost(scenario: Scenario | str | os.PathLike, *, check: bool = False,
         check_max_requests: int | None = None, check_draws: int = 1,
         check_needed: bool = False,
         progress: Callable[[int, int], None] | None = None) -> CostResult:
    """Price every deployment option at the medians of the inputs (``planner cost``).

    Parameters
    ----------
    scenario : Scenario, path or ``example:NAME``
    check : bool
        Also simulate each self-hosted option's busiest hour at its sizing (``--check``).
    check_max_requests : int, optional
        With ``check``: most requests simulated per option (``--check-max-requests``).
    check_draws : int
        With ``check``: independent arrival draws of the busiest hour per option
        (``--check-draws``; the table then counts the draws that meet the SLO).
    check_needed : bool
        With ``check``: also find the fewest replicas whose simulated busiest hour meets the
        SLO in every draw (``--check-needed``, ``simulated_replicas_needed``).
    progress : callable(done, total), optional
        With ``check``: called as the simulations advance.

    Returns
    -------
    CostResult

    Examples
    --------
    >>> r = cost("example:quickstart")
    >>> r.lens, r.horizon_months
    ('tco', 36)
    >>> row = r.summary.set_index("deployment").loc["llama-8b-h100"]
    >>> int(row["replicas"]), int(row["gpus"])  # one H100 per replica
    (2, 2)
    >>> r.to_dict()["tables"]["summary"][0]["deployment"]
    'gpt-4o-mini'
    """
    from planner.engines.deterministic import evaluate
    from planner.results import Records

    sc = _scenario(scenario)
    res = evaluate(sc)
    pay: Any = Records.none()
    if sc.payback:
        from planner.engines.breakeven import payback

        pay = payback(sc, res=res)
    chk: Any = Records.none()
    if check:
        from planner.sim.scenario import check_sizing

        chk = check_sizing(sc, max_requests=check_max_requests, progress=progress,
                           draws=check_draws, search=check_needed)
    # the engine's tables as it holds them: rows until a DataFrame is asked for
    tabs = {name: res.raw(name) for name in (
        "summary", "costs", "capacity", "classes", "finetune", "pretraining",
        "inference_flops", "unit_economics", "token_economics", "assumptions")}
    return CostResult(
        scenario=res.scenario, lens=res.lens, horizon_months=res.horizon_months,
        payback=pay, check=chk, warnings=tuple(res.warnings), engine=res, **tabs)


@dataclass(frozen=True)
class BreakevenResult(Result):
    """Break-even points (``planner breakeven``).

    Attributes
    ----------
    volume : per pair of options, the volume multiple (and requests/day) where they cost the
        same per month
    finetune : per fine-tune and option it replaces, the tokens and months to pay back its
        one-off cost (``finetune_usd`` = ``training_usd`` + ``one_off_usd``)
    payback : months to pay back on-prem purchases or fine-tunes
    curve : monthly cost of every option at volume multiples (``scales``)
    """

    volume: pd.DataFrame
    finetune: pd.DataFrame
    payback: pd.DataFrame
    curve: pd.DataFrame
    engine: Any = field(default=None, repr=False, compare=False)


def breakeven(scenario: Scenario | str | os.PathLike,
              scales: Sequence[float] = (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100)
              ) -> BreakevenResult:
    """Volume, fine-tune and payback break-even points (``planner breakeven``).

    Parameters
    ----------
    scenario : Scenario, path or ``example:NAME``
    scales : sequence of float
        Volume multiples of the cost curve.

    Returns
    -------
    BreakevenResult

    Examples
    --------
    >>> b = breakeven("example:quickstart", scales=(0.5, 1, 2))
    >>> sorted(set(b.curve["volume_scale"]))
    [0.5, 1.0, 2.0]
    >>> b.volume.loc[0, ["api", "selfhosted"]].tolist()
    ['gpt-4o-mini', 'llama-70b-h100']
    """
    from planner.engines.breakeven import breakeven as _breakeven

    sc = _scenario(scenario)
    b = _breakeven(sc, scales=tuple(scales))
    return BreakevenResult(scenario=sc.name, volume=b.volume, finetune=b.finetune,
                           payback=b.payback, curve=b.curve, engine=b)


@dataclass(frozen=True)
class RiskResult(Result):
    """Monte Carlo risk (``planner risk``).

    Attributes
    ----------
    n, seed : samples drawn and the root seed (same seed, same numbers)
    headline : one row per option: monthly cost mean, P5/P50/P95, CVaR95, horizon P50/P95,
        $/1M tokens P50 and ``p_cheapest`` (the table ``planner risk`` prints)
    summary : per (deployment, metric): mean, se_mean, p5, p50, p95, cvar95, at_median ...
    win_probability : per option, probability of being the cheapest per month, with its
        standard error
    tornado : per (input, deployment): monthly cost with the input at P10 and P90
    rank_correlation, breakeven, convergence : as :class:`planner.engines.risk.run.RiskResults`
    npc, yearly : with ``years=True``: net present cost and cost per year over the horizon
        (:func:`planner.engines.risk.multiyear.run_multiyear`); else empty
    simulation : with ``simulate=K``: the busiest hour simulated at K sampled scenarios
        (:func:`planner.engines.risk.replications.simulation_replications`); else empty
    warnings : the engine's warnings
    """

    n: int
    seed: int | None
    headline: pd.DataFrame
    summary: pd.DataFrame
    win_probability: pd.DataFrame
    tornado: pd.DataFrame
    rank_correlation: pd.DataFrame
    breakeven: pd.DataFrame
    convergence: pd.DataFrame
    npc: pd.DataFrame = field(default_factory=lambda: _empty())
    yearly: pd.DataFrame = field(default_factory=lambda: _empty())
    simulation: pd.DataFrame = field(default_factory=lambda: _empty())
    warnings: tuple[str, ...] = ()
    engine: Any = field(default=None, repr=False, compare=False)

    @property
    def p_cheapest(self) -> dict[str, float]:
        """Deployment -> probability of being the cheapest per month."""
        w = self.win_probability
        return {str(d): float(p) for d, p in zip(w["deployment"], w["p_cheapest"], strict=True)}


def risk(scenario: Scenario | str | os.PathLike, n: int = 100_000, seed: int | None = 0, *,
         tol: float | None = None, sensitivity: bool = True, years: bool = False,
         simulate: int = 0, deployment: str | None = None,
         progress: Callable[[int, int], None] | None = None,
         scheduler: str | None = None, n_workers: int | None = 1,
         simulate_progress: Callable[[int, int], None] | None = None,
         **engine_options: Any) -> RiskResult:
    """Sample every uncertain input and price every option per sample (``planner risk``).

    Parameters
    ----------
    scenario : Scenario, path or ``example:NAME``
    n : int
        Samples (the maximum with ``tol``).
    seed : int or None
        Root seed; the same seed gives the same numbers (None: fresh entropy).
    tol : float, optional
        Stop early once every option's P95 is stable to this relative tolerance.
    sensitivity : bool
        Also the tornado, rank correlations and break-even volume ranges.
    years : bool
        Also the multi-year view (``--years``): net present cost and cost per year, on at
        most 20,000 samples.
    simulate : int
        Also simulate the busiest hour at this many sampled scenarios spread over the cost
        range (``--simulate K``), of ``deployment`` (default: the cheapest self-hosted one).
    progress : callable(done, total), optional
        Called as the samples advance.
    scheduler, n_workers, simulate_progress
        Where the ``simulate`` replications run (``None``/``"serial"``/``"tcp://host:port"``,
        local worker processes) and their ``progress(done, total)`` callback
        (:func:`planner.parallel.map_tasks`); results are identical to a serial run.
    **engine_options
        Passed on to :func:`planner.engines.risk.run.run_montecarlo` (e.g. ``threads``).

    Returns
    -------
    RiskResult

    Examples
    --------
    >>> r = risk("example:quickstart", n=2_000, seed=1)
    >>> r.n, len(r.headline)
    (2000, 5)
    >>> p = r.p_cheapest
    >>> max(p, key=p.get), round(sum(p.values()), 6)
    ('gpt-4o-mini', 1.0)
    """
    from planner.engines.risk.run import run_montecarlo

    sc = _scenario(scenario)
    res = run_montecarlo(sc, n=n, seed=seed, tol=tol, sensitivity=sensitivity,
                         progress=progress, **engine_options)
    extra: dict[str, pd.DataFrame] = {}
    if years:
        from planner.engines.risk.multiyear import run_multiyear

        my = run_multiyear(sc, n=min(n, 20_000), seed=seed)
        extra.update(npc=my.npc, yearly=my.yearly)
    if simulate:
        from planner.engines.risk.replications import simulation_replications

        extra["simulation"] = simulation_replications(
            res, sc, deployment=deployment, replications=simulate, seed=seed,
            scheduler=scheduler, n_workers=n_workers, progress=simulate_progress)
    return RiskResult(
        scenario=res.scenario, n=res.n, seed=seed, headline=res.headline(),
        summary=res.summary, win_probability=res.win_probability, tornado=res.tornado,
        rank_correlation=res.rank_correlation, breakeven=res.breakeven,
        convergence=res.convergence, **extra, warnings=tuple(res.warnings), engine=res)


@dataclass(frozen=True)
class OptimizeResult(Result):
    """The optimiser's plan (``planner optimize``).

    Attributes
    ----------
    status : ``optimal``, ``time_limit``, ``infeasible`` or ``error``
    trusted : a plan exists and passed the re-check against every constraint
    objective_usd_per_month : the solver objective (NaN without a plan)
    status_line : the one-line status ``planner optimize`` prints
    summary : key figures as (metric, value)
    plan : one row per deployment: replicas, GPUs, share of requests, usd_per_month, chosen
    routing : class x route: share of the class's requests
    hourly, flows, finetune, costs, scenarios, stochastic, verification, verification_hours,
    headroom, infeasibility, violations : as :class:`planner.engines.optimize.OptimizeResult`
    sensitivity_grid, sensitivity_breakpoints : with ``sensitivity=True`` and a trusted plan:
        the plan over traffic, API and GPU price multipliers and where the mix changes
        (:func:`planner.engines.optimize.sensitivity`); else empty
    messages : plain-language notes
    """

    status: str
    trusted: bool
    objective_usd_per_month: float
    status_line: str
    summary: pd.DataFrame
    plan: pd.DataFrame
    routing: pd.DataFrame
    hourly: pd.DataFrame
    flows: pd.DataFrame
    finetune: pd.DataFrame
    costs: pd.DataFrame
    scenarios: pd.DataFrame
    stochastic: pd.DataFrame
    verification: pd.DataFrame
    verification_hours: pd.DataFrame
    headroom: pd.DataFrame
    infeasibility: pd.DataFrame
    violations: pd.DataFrame
    sensitivity_grid: pd.DataFrame = field(default_factory=lambda: _empty())
    sensitivity_breakpoints: pd.DataFrame = field(default_factory=lambda: _empty())
    messages: tuple[str, ...] = ()
    engine: Any = field(default=None, repr=False, compare=False)


def optimize(scenario: Scenario | str | os.PathLike, *, stochastic: bool = False,
             n: int = 200, seed: int | None = 0, verify: bool = False,
             gap: float | None = None, time_limit_s: float | None = None,
             objective: str | None = None, verify_window_s: float = 600.0,
             sensitivity: bool = False, progress: Callable[[str], None] | None = None,
             engine_progress: bool = True) -> OptimizeResult:
    """Cheapest mix of API, cloud and on-prem capacity, routing and fine-tunes (MILP).

    Parameters
    ----------
    scenario : Scenario, path or ``example:NAME``
    stochastic : bool
        Sample-average plan over ``n`` Monte Carlo scenarios drawn with ``seed``.
    verify : bool
        Simulate the plan in every hour of its day; on an SLO miss, search the headroom.
    gap, time_limit_s : float, optional
        Relative MIP gap and solver time limit in seconds (default: ``[optimize]``).
    objective : {"expected", "cvar"}, optional
        With ``stochastic``: expected cost, or expected + lambda x CVaR.
    verify_window_s : float
        With ``verify``: simulated seconds of each hour.
    sensitivity : bool
        With a trusted plan, also scan traffic and API/GPU price multipliers (x0.25..x8) and
        bisect where the optimal mix changes (``--sensitivity``).
    progress : callable(text), optional
        Called with a line of text at each stage.
    engine_progress : bool
        Pass ``progress`` to the solver stages too (else only the sensitivity stage is
        announced).

    Returns
    -------
    OptimizeResult
        Infeasible or unsolved problems come back with their status and ``messages``.

    Examples
    --------
    >>> o = optimize("example:quickstart")
    >>> o.status, o.trusted
    ('optimal', True)
    >>> list(o.plan.loc[o.plan["chosen"], "deployment"])
    ['gpt-4o-mini']
    """
    from planner.engines.optimize import OptimizeOptions, status_line
    from planner.engines.optimize import optimize as _optimize

    sc = _scenario(scenario)
    opts = OptimizeOptions.from_scenario(sc, **({"objective": objective} if objective else {}))
    res = _optimize(sc, gap=gap, time_limit_s=time_limit_s, stochastic=stochastic,
                    n_scenarios=n, seed=seed, verify=verify, options=opts,
                    verify_window_s=verify_window_s,
                    progress=progress if engine_progress else None)
    extra: dict[str, pd.DataFrame] = {}
    if sensitivity and res.trusted:
        from planner.engines.optimize import sensitivity as _sensitivity

        if progress:
            progress("sensitivity: traffic, API and GPU price multipliers")
        sens = _sensitivity(
            sc, options=opts, gap=sc.optimize.gap if gap is None else gap,
            time_limit_s=sc.optimize.time_limit_s if time_limit_s is None else time_limit_s,
            current=res)
        extra = {"sensitivity_grid": sens.grid, "sensitivity_breakpoints": sens.breakpoints}
    t = res.tables()
    return OptimizeResult(
        scenario=res.scenario, status=res.status, trusted=res.trusted,
        objective_usd_per_month=res.objective_usd_per_month, status_line=status_line(res),
        summary=t["summary"], plan=res.plan, routing=res.routing, hourly=res.hourly,
        flows=res.flows, finetune=res.finetune, costs=res.costs, scenarios=res.scenarios,
        stochastic=res.stochastic, verification=res.verification,
        verification_hours=res.verification_hours, headroom=res.headroom,
        infeasibility=res.infeasibility, violations=t["violations"], **extra,
        messages=tuple(res.messages), engine=res)


@dataclass(frozen=True)
class SimulateResult(Result):
    """A request-level simulation (``planner simulate``).

    Attributes
    ----------
    latency : per plan and class (and ``all``): requests, TTFT/TPOT/e2e percentiles in
        seconds, SLO attainment and target, spillover share, goodput
    slo : attainment per SLO bound
    deployments : per pool and API: replicas, GPU-hours, tokens, busy share, cost in USD
    totals, pools, hourly, utilisation : as :func:`planner.sim.scenario.run_tables`
    requests, replica_utilisation : per request and per replica (only with ``records=True``)
    notes : the engine's notes
    """

    latency: pd.DataFrame
    slo: pd.DataFrame
    deployments: pd.DataFrame
    totals: pd.DataFrame
    pools: pd.DataFrame
    hourly: pd.DataFrame
    utilisation: pd.DataFrame
    requests: pd.DataFrame
    replica_utilisation: pd.DataFrame
    notes: tuple[str, ...] = ()
    engine: Any = field(default=None, repr=False, compare=False)


def simulate(scenario: Scenario | str | os.PathLike, *,
             deployments: Sequence[str] | None = None, hours: int | None = None,
             start_hour: int | None = None, seed: int | None = None,
             replicas: Mapping[str, int] | int | None = None, spillover: str | None = None,
             traces: Sequence[Any] | None = None, records: bool | str = False,
             progress: Callable[[int, int], None] | None = None,
             **engine_options: Any) -> SimulateResult:
    """Simulate requests on GPU pools and APIs (``planner simulate``).

    Parameters
    ----------
    scenario : Scenario, path or ``example:NAME``
    deployments : sequence of str, optional
        Self-hosted deployments simulated together as pools of one plan (default: each
        candidate on its own).
    hours, start_hour : int, optional
        Simulated hours and the profile hour to start at (default ``[simulation]``).
    seed : int, optional
        Random seed (default ``[simulation] seed``).
    replicas : int or mapping, optional
        Replicas of every pool, or per deployment (default: the cost engine's sizing).
    spillover : str, optional
        An API deployment taking requests that would miss their SLO.
    traces : sequence of :class:`planner.config.SimTrace`, optional
        Replay traces instead of generated arrivals.
    records : bool or "aggregate"
        Also the per-request and per-replica tables. Without them (``False``, or
        ``"aggregate"``) no per-request records are kept even while building the summaries
        (the same figures, less memory and time).
    progress : callable(done, total), optional
        Called as the simulated requests advance.
    **engine_options
        Passed on to :func:`planner.sim.scenario.simulate_scenario`.

    Returns
    -------
    SimulateResult

    Examples
    --------
    >>> s = simulate("example:quickstart", deployments=["llama-8b-h100"], hours=1,
    ...              start_hour=10, seed=0)
    >>> list(s.latency["class"])
    ['all', 'chat', 'summarise']
    >>> bool((s.latency["slo_attainment"] > 0.9).all())
    True
    """
    import pandas as pd

    from planner.sim.scenario import simulate_scenario

    sc = _scenario(scenario)
    runs = simulate_scenario(sc, deployments=list(deployments) if deployments else None,
                             hours=hours, start_hour=start_hour, seed=seed, replicas=replicas,
                             spillover=spillover, traces=list(traces) if traces else None,
                             progress=progress,
                             # no per-request table asked for: none is built (same figures)
                             records="full" if records is True else "aggregate",
                             **engine_options)
    t = _run_tables(runs, records is True)
    tabs = {k: t.get(k, pd.DataFrame()) for k in (
        "latency", "slo", "deployments", "totals", "pools", "hourly", "utilisation",
        "requests", "replica_utilisation")}
    return SimulateResult(scenario=sc.name, **tabs,
                          notes=tuple(n for r in runs for n in r.notes), engine=runs)


def _run_tables(runs: Sequence[Any], records: bool) -> dict[str, Any]:
    """``run_tables(runs, records=records)``; when the plans ran on worker processes, each
    worker made its run's tables (:attr:`planner.sim.scenario.ScenarioRun.tables`, without
    per-request records) and only the tables are joined here: the same frames, and the
    summaries (~20% of a serial ``planner simulate``) no longer wait on one core."""
    import pandas as pd

    from planner.sim.scenario import run_tables

    if records or not runs or any(r.tables is None for r in runs):
        return run_tables(runs, records=records)
    parts = [r.tables for r in runs]
    keys = dict.fromkeys(k for p in parts for k in p)
    return {k: pd.concat([p[k] for p in parts if k in p], ignore_index=True) for k in keys}


@dataclass(frozen=True)
class ReportResult(Result):
    """What :func:`report` wrote.

    Attributes
    ----------
    html : path of ``report.html``
    out_dir : the output directory
    sections : keys of the sections in the report, in order
    omitted : section key -> why it is not in the report
    seconds : wall time of the build
    files : one row per written chart or table: kind (chart_png, chart_svg, table), name, path
    """

    html: Path
    out_dir: Path
    sections: tuple[str, ...]
    omitted: dict[str, str]
    seconds: float
    files: pd.DataFrame
    engine: Any = field(default=None, repr=False, compare=False)


def report(scenario: Scenario | str | os.PathLike, out_dir: str | os.PathLike, *,
           sections: Iterable[str] | None = None, progress: bool = False) -> ReportResult:
    """Write a self-contained HTML report with charts and CSV tables (``planner report``).

    Parameters
    ----------
    scenario : Scenario, path or ``example:NAME``
    out_dir : path
        Directory for ``report.html``, ``charts/`` and ``tables/`` (replaced atomically).
    sections : iterable of str, optional
        Section keys (:func:`planner.report.section_keys`); default all available.
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    ReportResult

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "report"
    >>> rep = report("example:quickstart", out, sections=["summary"])
    >>> rep.html.name, rep.sections
    ('report.html', ('summary',))
    >>> set(rep.files["kind"]) <= {"chart_png", "chart_svg", "table"}
    True
    """
    import pandas as pd

    from planner.report import build_report

    sc = _scenario(scenario)
    res = build_report(sc, out_dir=out_dir, progress=progress,
                       sections=list(sections) if sections is not None else None)
    rows = [{"kind": k, "name": name, "path": str(p)}
            for name, (png, svg) in res.charts.items()
            for k, p in (("chart_png", png), ("chart_svg", svg))]
    rows += [{"kind": "table", "name": name, "path": str(p)} for name, p in res.tables.items()]
    return ReportResult(
        scenario=sc.name, html=Path(res.html), out_dir=Path(res.out_dir),
        sections=tuple(res.sections), omitted=dict(res.omitted), seconds=res.seconds,
        files=pd.DataFrame(rows, columns=["kind", "name", "path"]), engine=res)


@dataclass(frozen=True)
class PerfResult(Result):
    """What GPU replicas deliver (``planner perf``); ``scenario`` is empty.

    Attributes
    ----------
    model : catalog LLM id
    memory : one row: weights, KV cache and fit (single configuration; else empty)
    capacity : one row: sustained throughput and latency of one replica at the SLOs
    curve : TTFT/TPOT/throughput versus concurrent requests
    cost : one row: usd_per_gpu_hour, usd_per_hour, usd_per_1m_output_tokens,
        usd_per_1m_input_tokens, price_basis
    configurations : with ``search=True``: (accelerator, precision, TP) ranked by USD per 1M
        output tokens (the other tables are then empty)
    """

    model: str
    memory: pd.DataFrame
    capacity: pd.DataFrame
    curve: pd.DataFrame
    cost: pd.DataFrame
    configurations: pd.DataFrame
    engine: Any = field(default=None, repr=False, compare=False)


def perf(model: str, accelerator: str | None = None, *, tp: int = 1, precision: str = "bf16",
         isl: float = 1000.0, osl: float = 1000.0, ttft_slo_s: float | None = None,
         tpot_slo_s: float | None = None, plan: str = "on-demand",
         usd_per_gpu_hour: float | None = None, search: bool = False,
         accelerators: Sequence[str] | None = None,
         precisions: Sequence[str] = ("bf16", "fp8"), tps: Sequence[int] = (1, 2, 4, 8),
         target_output_tokens_per_s: float | None = None,
         concurrency: Sequence[int] | None = None) -> PerfResult:
    """Memory fit, throughput, latency and USD per 1M tokens of a replica (``planner perf``).

    Parameters
    ----------
    model : str
        Catalog LLM id.
    accelerator : str
        Catalog accelerator id (not needed with ``search``).
    tp : int
        GPUs per replica (tensor parallel).
    precision : str
        bf16, fp8, int8, int4 or fp4.
    isl, osl : float
        Input and output tokens per request.
    ttft_slo_s, tpot_slo_s : float, optional
        Latency SLOs, seconds.
    plan : str
        Catalog price plan for USD per GPU-hour.
    usd_per_gpu_hour : float, optional
        Price instead of the cheapest catalog row of ``plan``.
    search : bool
        Rank (accelerator, precision, TP) configurations by USD per 1M output tokens.
    accelerators, precisions, tps, target_output_tokens_per_s
        The search space and the output tokens/s needed (with ``search``).
    concurrency : sequence of int, optional
        Closed-loop concurrencies of the latency curve (default: 1, 8, 32 and the largest
        batch; :func:`planner.perf.closedloop.closed_loop_curve`).

    Returns
    -------
    PerfResult

    Examples
    --------
    >>> p = perf("llama-3.1-8b", "h100-sxm", precision="fp8", isl=1000, osl=200,
    ...          tpot_slo_s=0.05)
    >>> p.cost["price_basis"].iloc[0]
    'cheapest on-demand catalog row'
    >>> bool(p.capacity["output_tokens_per_s"].iloc[0] > 0)
    True
    >>> s = perf("llama-3.1-8b", search=True, accelerators=["h100-sxm"], tps=[1])
    >>> sorted(set(s.configurations["precision"]))
    ['bf16', 'fp8']
    """
    import pandas as pd

    from planner.catalog import load_catalog
    from planner.perf import AcceleratorSpec, LLMSpec
    from planner.perf.report import gpu_hour_prices, perf_search, perf_summary

    cat = load_catalog()
    empty = pd.DataFrame()
    if search and concurrency:
        raise PlannerError("perf: concurrency applies to one configuration, not a search")
    if search:
        df = perf_search(cat, model, accelerators=accelerators, precisions=precisions,
                         tps=tps, isl=isl, osl=osl, ttft_slo_s=ttft_slo_s,
                         tpot_slo_s=tpot_slo_s, plan=plan,
                         target_output_tokens_per_s=target_output_tokens_per_s)
        return PerfResult(scenario="", model=model, memory=empty, capacity=empty, curve=empty,
                          cost=empty, configurations=df, engine=df)
    if not accelerator:
        raise PlannerError("perf: accelerator is required (or search=True)")
    price = usd_per_gpu_hour
    if price is None:
        price = gpu_hour_prices(cat, plan).get(accelerator)
    res = perf_summary(
        LLMSpec.from_row(cat.llm(model)), AcceleratorSpec.from_row(cat.accelerator(accelerator)),
        gpus=tp, precision=precision, input_tokens=isl, output_tokens=osl,
        ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s, usd_per_gpu_hour=price,
        concurrency=list(concurrency) if concurrency else None)
    cost_row = pd.DataFrame([{
        "usd_per_gpu_hour": price, "usd_per_hour": res.get("usd_per_hour"),
        "usd_per_1m_output_tokens": res.get("usd_per_1m_output_tokens"),
        "usd_per_1m_input_tokens": res.get("usd_per_1m_input_tokens"),
        "price_basis": "usd_per_gpu_hour" if usd_per_gpu_hour is not None
        else f"cheapest {plan} catalog row" if price is not None else "no catalog price",
    }])
    return PerfResult(scenario="", model=model, memory=pd.DataFrame([res["memory"]]),
                      capacity=pd.DataFrame([res["capacity"]]), curve=res["curve"],
                      cost=cost_row, configurations=empty, engine=res)
