"""Files in and out of a simulation (kept out of the engine, which does no I/O).

* :func:`requests_from_traces` -- one :class:`RequestTable` from trace files (for
  ``planner simulate SCENARIO --trace FILE ...``).
* :func:`write_result` -- the tidy tables of a :class:`SimResult` as CSV or Parquet.
* :func:`write_frames` -- any named tables as CSV (all or nothing) or Parquet.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from planner.errors import PlannerError
from planner.output import write_tables
from planner.requests import RequestTable
from planner.sim.results import SimResult

__all__ = ["requests_from_traces", "write_frames", "write_result"]


def requests_from_traces(
    paths: Sequence[str | Path],
    *,
    columns=None,
    class_names: Sequence[str] | None = None,
    rate_scale: float = 1.0,
    duration_s: float | None = None,
) -> RequestTable:
    """Replay one or more trace files as one request table.

    Each file becomes a class named after ``class_names`` (default: the file stem) unless it
    has a class column; ``rate_scale`` and ``duration_s`` as in :func:`planner.traces.replay`.
    """
    from planner.traces import AZURE_COLUMNS, load_trace, replay

    paths = [Path(p) for p in paths]
    if class_names is not None and len(class_names) != len(paths):
        raise PlannerError(
            f"requests_from_traces: {len(paths)} files but {len(class_names)} class names"
        )
    tables = []
    for k, p in enumerate(paths):
        tr = load_trace(p, columns or AZURE_COLUMNS)
        name = class_names[k] if class_names is not None else p.stem
        tables.append(replay(tr, rate_scale=rate_scale, duration_s=duration_s, class_name=name))
    return RequestTable.concat(tables)


def write_result(result: SimResult, out_dir: str | Path, *, fmt: str = "csv") -> dict[str, Path]:
    """Write ``requests`` (not for aggregate-only results), ``utilisation``, ``summary``,
    ``deployments`` (and ``scale_events``).

    Returns the written paths by table name. ``fmt`` is ``csv`` or ``parquet`` (Parquet
    needs pyarrow).
    """
    if fmt not in ("csv", "parquet"):
        raise PlannerError(f"write_result: fmt must be 'csv' or 'parquet', got '{fmt}'")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise PlannerError(
                "writing Parquet needs pyarrow: 'pip install pyarrow', or use fmt='csv'"
            ) from exc
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables: dict[str, pd.DataFrame] = {
        "requests": result.requests,
        "utilisation": result.utilisation,
        "summary": result.summary(),
        "deployments": result.deployments,
    }
    if result.requests is None:  # aggregate-only results: no per-request table
        del tables["requests"]
    if len(result.scale_events):
        tables["scale_events"] = result.scale_events
    written = {}
    for name, df in tables.items():
        path = out / f"{name}.{fmt}"
        if fmt == "csv":
            df.to_csv(path, index=False)
        else:
            df.to_parquet(path, index=False)
        written[name] = path
    return written


def _need_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise PlannerError(
            "writing Parquet needs pyarrow: 'pip install pyarrow', or write CSV"
        ) from exc


def write_frames(
    tables: dict[str, pd.DataFrame], out_dir: str | Path, *, fmt: str = "csv"
) -> list[Path]:
    """Write each table as ``NAME.csv`` (all or nothing, :func:`planner.output.write_tables`)
    or ``NAME.parquet`` into ``out_dir``; returns the paths."""
    if fmt == "csv":
        return write_tables(tables, out_dir)
    if fmt != "parquet":
        raise PlannerError(f"write_frames: fmt must be 'csv' or 'parquet', got '{fmt}'")
    _need_pyarrow()
    return write_tables(tables, out_dir, fmt="parquet")
