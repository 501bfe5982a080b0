"""Printing and writing tidy tables (the presentation layer; engines never call this)."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and pandas load with the first table, not with the CLI's parser
    import pandas as pd

FORMATS = ("table", "csv", "json")


def _fmt(x) -> str:
    import numpy as np

    if isinstance(x, bool | np.bool_):
        return str(bool(x))
    if isinstance(x, int | np.integer):
        return f"{int(x):,}"
    if isinstance(x, float | np.floating):
        x = float(x)
        if math.isnan(x):
            return "-"
        if x != 0 and (abs(x) >= 1e12 or abs(x) < 1e-4):
            return f"{x:.4g}"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        if abs(x) >= 1:
            return f"{x:,.2f}".rstrip("0").rstrip(".") if x != int(x) else f"{x:,.0f}"
        return f"{x:.4g}"
    return "" if x is None else str(x)


def render(df: pd.DataFrame, fmt: str = "table", *, max_colwidth: int = 60) -> str:
    """A DataFrame as an aligned text table, CSV or JSON records."""
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        return df.to_json(orient="records", indent=1, double_precision=15)
    if df.empty:
        return "(none)"
    shown = df.copy()
    for c in shown.columns:
        shown[c] = shown[c].map(_fmt)
        shown[c] = shown[c].map(
            lambda s: s if len(s) <= max_colwidth else s[: max_colwidth - 1] + "…"
        )
    return shown.to_string(index=False)


def render_tables(tables: Mapping[str, pd.DataFrame], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(
            {k: json.loads(v.to_json(orient="records", double_precision=15))
             for k, v in tables.items()},
            indent=1,
        )
    parts = []
    for name, df in tables.items():
        if fmt == "csv":
            parts.append(f"# {name}\n{df.to_csv(index=False)}")
        else:
            parts.append(f"== {name} ==\n{render(df, fmt)}")
    return "\n\n".join(parts)


def write_tables(tables: Mapping[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    """Write each table as ``NAME.csv`` into ``out_dir`` all-or-nothing.

    Files are written to a temporary directory beside ``out_dir`` first and moved into place
    only when every one was written, so a failure leaves nothing half-written.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for name, df in tables.items():
            df.to_csv(tmp / f"{name}.csv", index=False)
        out.mkdir(exist_ok=True)
        written = []
        for f in sorted(tmp.iterdir()):
            dest = out / f.name
            os.replace(f, dest)
            written.append(dest)
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
