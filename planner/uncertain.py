"""A scenario's uncertain inputs: the distribution-valued fields, named by dotted key path.

Any numeric field of a scenario may hold a distribution (:mod:`planner.distributions`). This
module names them (``workload.chat.requests_per_day``, ``api.gpt-4o.input_usd_per_mtok``,
``onprem.hgx.server_price_usd`` ...), normalises rank-correlation specs to the schema's
:class:`planner.config.Correlation`, and fixes chosen inputs at numbers
(:func:`scenario_at`: one Monte Carlo sample as a plain scenario). It sits on the scenario
layer, above :mod:`planner.config` and below every engine: the Monte Carlo, multi-year,
sensitivity and stochastic-optimiser engines and the sweep all sample the inputs it lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from planner.catalog import Catalog
from planner.config import Correlation, Scenario, distribution_fields, parse_scenario
from planner.distributions import DistributionBase
from planner.errors import PlannerError

__all__ = [
    "UncertainInput",
    "as_correlations",
    "risk_tables",
    "scenario_at",
    "uncertain_inputs",
]


def as_correlations(spec: Any) -> list[Correlation]:
    """Normalise a correlation spec to a list of :class:`planner.config.Correlation`.

    ``spec`` is None, one ``{"a": key, "b": key, "rho": r}`` mapping, a ``{(a, b): rho}``
    mapping, or a sequence of mappings, ``(a, b, rho)`` triples or Correlation-like models.
    PlannerError on anything else.
    """
    if spec is None:
        return []
    if isinstance(spec, Mapping) and not {"a", "b", "rho"} <= set(spec):
        items: Iterable[Any] = [(k[0], k[1], v) for k, v in spec.items()] if all(
            isinstance(k, tuple) for k in spec) else [spec]
    elif isinstance(spec, Mapping):
        items = [spec]
    else:
        items = spec
    out = []
    for i, item in enumerate(items):
        where = f"correlation[{i}]"
        try:
            if isinstance(item, Correlation):
                out.append(item)
            elif isinstance(item, BaseModel):
                out.append(Correlation(a=item.a, b=item.b, rho=item.rho))
            elif isinstance(item, Mapping):
                out.append(Correlation(**item))
            elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 3:
                out.append(Correlation(a=item[0], b=item[1], rho=item[2]))
            else:
                raise PlannerError(
                    f"{where}: expected a table with a, b and rho (or an (a, b, rho) triple), "
                    f"got {item!r}"
                )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, PlannerError):
                raise
            raise PlannerError(
                f"{where}: expected a = key path, b = key path, rho in [-1, 1]; {exc}"
            ) from None
    return out


def risk_tables(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[Correlation], dict]:
    """Split the ``[[correlation]]`` and ``[trends]`` tables off a parsed TOML mapping.

    Returns ``(rest, correlations, trends)``, ``rest`` ready for
    :func:`planner.config.parse_scenario`, to run an engine with correlations or trends other
    than the file's. Pure (no file access).
    """
    rest = dict(data)
    corr = as_correlations(rest.pop("correlation", None))
    trends = dict(rest.pop("trends", {}) or {})
    return rest, corr, trends


@dataclass(frozen=True)
class UncertainInput:
    """One distribution-valued scenario field."""

    key: str
    path: tuple[str | int, ...]
    dist: DistributionBase


def uncertain_inputs(sc: Any, *, prefix: tuple = ()) -> dict[str, UncertainInput]:
    """Every distribution-valued field of a scenario (or any model), by dotted key path.

    Tuple entries (``request_fees``) are indexed: ``api.x.request_fees.0.usd_per_gb_s``.
    The walk is :func:`planner.config.distribution_fields` (the schema validates
    ``[[correlation]]`` keys against the same names).
    """
    return {key: UncertainInput(key, path, dist)
            for key, (path, dist) in distribution_fields(sc, prefix).items()}


def _set_path(data: Any, path: Sequence[str | int], value: Any) -> None:
    """Set ``value`` at ``path`` in nested dicts and lists; a tuple on the way (a dumped
    tuple field such as ``request_fees``) becomes a list so it can take the value."""
    cur = data
    for p in path[:-1]:
        key = int(p) if isinstance(cur, list) else p
        if not isinstance(cur, list) and cur.get(key) is None:
            cur[key] = {}
        if isinstance(cur[key], tuple):
            cur[key] = list(cur[key])
        cur = cur[key]
    last = path[-1]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value


def scenario_at(sc: Scenario, values: Mapping[str, float], *, catalog: Catalog | None = None
                ) -> Scenario:
    """The scenario with the given inputs fixed (``{key path: number}``); others unchanged.

    Used to materialise one Monte Carlo sample (e.g. for a simulation replication, or to check
    a sample against the deterministic engine).
    """
    known = uncertain_inputs(sc)
    data = sc.model_dump(mode="python")
    extra: dict[str, Any] = {}
    for key, v in values.items():
        if key in known:
            _set_path(data, known[key].path, float(v))
        else:
            extra[key] = float(v)
    # a correlation between fields that are now fixed numbers has nothing left to correlate
    data["correlation"] = [c for c in data.get("correlation") or ()
                           if c["a"] not in values and c["b"] not in values]
    return parse_scenario(data, path=sc.source_path, overrides=extra or None, catalog=catalog)
