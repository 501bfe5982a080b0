"""Prices that every engine resolves the same way."""

from __future__ import annotations

from typing import Any

from planner.config import ApiDeployment, med
from planner.costs.api import API_PRICE_FIELDS, ApiPrices, resolve_api_prices


def api_prices(dep: ApiDeployment, row: dict[str, Any], ft: bool) -> ApiPrices:
    """Resolve an offering's prices at the medians of the scenario's overrides.

    See :func:`planner.costs.api.resolve_api_prices` (a batch price keeps the catalog's
    batch / realtime ratio when only the realtime price is overridden).
    """
    overrides = {f: med(getattr(dep, f, None)) for f in API_PRICE_FIELDS}
    return resolve_api_prices(row, overrides, fine_tuned=ft, offering=dep.offering)
