"""Engine providers for the report: run one engine and hand its results to the sections.

A provider is ``provider(scenario, catalog) -> result``. The deterministic and break-even
providers return the engines' own result objects. Providers of the engines that land later
(risk, optimiser, simulation) return a mapping of tidy DataFrames with the keys and columns
below, which are exactly what the chart builders in :mod:`planner.charts` read. An engine
plugs in by giving its module a ``report_tables(scenario, catalog=None)`` function that returns
that mapping, or by passing a provider to ``build_report(providers={...})``.

A provider whose engine is not available raises :class:`SectionUnavailable`; the report then
omits that engine's section and says why. A :class:`~planner.errors.PlannerError` raised by an
optional engine (e.g. the scenario has nothing to simulate) is reported the same way; any
other exception is a bug and propagates.

Contracts (columns; optional ones in brackets)
----------------------------------------------
risk (``planner.engines.risk.report``):
    ``samples``: deployment, usd_per_month (one row per sample and option) - required;
    ``summary``: deployment, usd_p5, usd_p50, usd_p95 [mean_usd, cvar95_usd, ...];
    ``win``: deployment, probability;
    ``tornado``: input, low_usd_per_month, high_usd_per_month, base_usd_per_month
    [input_low, input_high];
    ``paths``: year, deployment, usd_p5, usd_p50, usd_p95 (cumulative cost to the end of
    the year, before any residual credit) [residual_credit_usd, usd_net_p50];
optimiser (``planner.engines.optimize``):
    ``plan``: deployment, usd_per_month [anything else: replicas, shares, ...] - required;
    ``hourly``: hour, deployment, requests_per_s.
simulation (``planner.sim``):
    ``requests``: class, ttft_s, tpot_s, e2e_s (one row per request; NaN when dropped);
    ``slo``: class, metric, attainment [target];
    ``slo_targets``: class, metric, slo_s;
    ``utilisation``: hour, pool, utilisation (hours not simulated are modelled from the
    diurnal profile by the section).
performance (``planner.perf.validation``, ``planner.report.perf_validation``):
    ``validation``: the predicted-vs-measured table of ``predict_calibration``;
    [``closed_loop_errors``: benchmark_source, gpu, rows, tput/itl/ttft_median_abs and _bias;
    ``closed_loop_summary``: rows_set, the same columns; ``closed_loop_curves``: source, gpu,
    curve, concurrency, metric, measured, predicted].
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from planner.config import Scenario
from planner.errors import PlannerError

#: Volume multiples for the report's cost-vs-volume curve (33 points, x0.01 .. x100).
CURVE_SCALES = tuple(float(x) for x in np.geomspace(0.01, 100.0, 33))

Provider = Callable[[Scenario, Any], Any]


class SectionUnavailable(Exception):
    """An engine (or its data) is not available; the section is omitted with this reason."""


def deterministic(sc: Scenario, catalog: Any) -> Any:
    from planner.engines.deterministic import evaluate

    return evaluate(sc, catalog)


def breakeven(sc: Scenario, catalog: Any) -> Any:
    from planner.engines.breakeven import breakeven as run

    return run(sc, catalog, scales=CURVE_SCALES)


def _module(name: str, what: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise SectionUnavailable(f"{what} ({name}) is not part of this build yet") from None
        raise


def _hook(mod, what: str) -> Callable[..., Any]:
    fn = getattr(mod, "report_tables", None)
    if fn is None:
        raise SectionUnavailable(
            f"{what} ({mod.__name__}) has no report_tables(scenario, catalog=None) hook yet; "
            "see planner/report/providers.py for the tables the report expects"
        )
    return fn


def check_frames(result: Any, engine: str, required: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Validate a provider's mapping of DataFrames (keys from the contract above)."""
    if not isinstance(result, Mapping):
        raise TypeError(f"{engine} provider: expected a mapping of DataFrames, "
                        f"got {type(result).__name__}")
    out = {}
    for k, v in result.items():
        if v is None:
            continue
        if not isinstance(v, pd.DataFrame):
            raise TypeError(f"{engine} provider: {k!r} is {type(v).__name__}, not a DataFrame")
        out[str(k)] = v
    missing = [k for k in required if k not in out or out[k].empty]
    if missing:
        raise TypeError(f"{engine} provider: missing or empty table(s) {', '.join(missing)}")
    return out


#: Tables each mapping-returning engine must provide (checked on every provider's result).
CONTRACTS: dict[str, tuple[str, ...]] = {
    "risk": ("samples",), "optimiser": ("plan",), "simulation": (),
    "performance": ("validation",),
}


def _engine_tables(module: str, what: str, engine: str):
    def provider(sc: Scenario, catalog: Any) -> dict[str, pd.DataFrame]:
        fn = _hook(_module(module, what), what)
        return fn(sc, catalog=catalog)

    provider.__name__ = engine
    return provider


risk = _engine_tables("planner.engines.risk.report", "the Monte Carlo risk engine",
                      "risk")
optimiser = _engine_tables("planner.engines.optimize", "the optimiser", "optimiser")
simulation = _engine_tables("planner.sim", "the simulation", "simulation")


def performance(sc: Scenario, catalog: Any) -> dict[str, pd.DataFrame]:
    """Predicted vs measured throughput on the published calibration benchmarks, and the
    closed-loop latency curves (:mod:`planner.report.perf_validation`)."""
    mod = _module("planner.perf.validation", "the performance model's validation")
    try:
        table = mod.predict_calibration(catalog=catalog)
    except FileNotFoundError as exc:
        raise SectionUnavailable(f"calibration measurements not found ({exc.filename})") from None
    from planner.report.perf_validation import closed_loop_tables

    try:
        closed = closed_loop_tables(catalog)
    except FileNotFoundError:  # closed-loop data not installed: the section says so
        closed = {}
    return {"validation": table, **closed}


#: Default providers by engine name.
DEFAULT_PROVIDERS: dict[str, Provider] = {
    "deterministic": deterministic,
    "breakeven": breakeven,
    "risk": risk,
    "optimiser": optimiser,
    "simulation": simulation,
    "performance": performance,
}


def run(name: str, provider: Provider, sc: Scenario, catalog: Any, *, optional: bool
        ) -> tuple[Any, str | None]:
    """Run a provider: (result, None), or (None, reason) when it is unavailable."""
    try:
        result = provider(sc, catalog)
        if name in CONTRACTS:
            result = check_frames(result, name, CONTRACTS[name])
        return result, None
    except SectionUnavailable as exc:
        return None, str(exc)
    except PlannerError as exc:
        if not optional:
            raise
        return None, f"{name} engine: {exc}"
