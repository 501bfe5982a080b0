"""Reading Vega-Lite specs in tests: the single views, their data and the title."""

from __future__ import annotations

import pandas as pd


def units(spec: dict):
    """Every single-view spec (with a mark) inside a possibly layered spec."""
    if "mark" in spec:
        yield spec
    for key in ("layer", "hconcat", "vconcat", "concat"):
        for sub in spec.get(key, []):
            yield from units(sub)


def data(spec: dict, unit: dict) -> pd.DataFrame:
    """The rows a view draws (its named dataset, else the spec's)."""
    name = unit.get("data", {}).get("name") or spec.get("data", {}).get("name")
    return pd.DataFrame(spec["datasets"][name])


def title_text(spec: dict) -> str:
    """The chart title, plain or from a title object."""
    t = spec.get("title")
    return t.get("text", "") if isinstance(t, dict) else (t or "")
