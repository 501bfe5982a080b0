"""The performance section's closed-loop validation: tables and chart.

The numbers come from :mod:`planner.perf.closed_loop_validation` (published closed-loop
benchmarks predicted by the same step model the sizing and the simulator use); this module only
selects, summarises and draws them:

* ``closed_loop_errors``: median |error| and bias of throughput, ITL and TTFT per benchmark
  source and GPU (:func:`planner.perf.closed_loop_validation.error_table`);
* ``closed_loop_summary``: the same over the held-out and the fit halves of the in-scope
  sources (:func:`~planner.perf.closed_loop_validation.split`), and over the out-of-scope ones;
* ``closed_loop_curves``: measured and predicted throughput, TTFT and ITL against concurrency
  for one curve per source and GPU (the one with most concurrency points), long format.

Predicting every published row takes seconds, so the predictions are kept on disk in the
report's cache directory (:func:`planner.report.export.cache_dir`), keyed by the SHA-256 of
everything that determines them: the reference data, the performance model's source files, the
catalog rows of the models and GPUs involved, and the numpy/pandas versions.
``PLANNER_NO_CACHE=1`` recomputes them. Nothing is computed at import.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Prediction columns kept in the cache (the rest is the published data, read each time),
#: with the held-out flag of :func:`planner.perf.closed_loop_validation.split`.
_PRED_COLUMNS = ["pred_ttft_ms", "pred_itl_ms", "pred_output_tokens_per_s", "fits",
                 "held_out"]

#: metric -> (measured column, predicted column, label)
METRICS: dict[str, tuple[str, str, str]] = {
    "throughput": ("output_tokens_per_s", "pred_output_tokens_per_s",
                   "output tokens per s (replica)"),
    "ttft": ("ttft_target_ms", "pred_ttft_ms", "time to first token (ms)"),
    "itl": ("itl_target_ms", "pred_itl_ms", "inter-token latency (ms)"),
}


def _cache_key(df: pd.DataFrame, llms: dict, accs: dict) -> str:
    from planner.perf import closed_loop_validation as v

    h = hashlib.sha256()
    perf_dir = Path(v.__file__).resolve().parent
    for p in sorted(perf_dir.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    h.update(pd.util.hash_pandas_object(df.astype(str), index=True).to_numpy().tobytes())
    for specs in (llms, accs):
        for k in sorted(specs):
            h.update(repr((k, specs[k])).encode())
    h.update(f"numpy {np.__version__}; pandas {pd.__version__}".encode())
    return h.hexdigest()[:20]


def _cache_path(key: str) -> Path | None:
    if os.environ.get("PLANNER_NO_CACHE"):
        return None
    from planner.report.export import cache_dir

    return cache_dir() / f"perf-closed-loop-{key}.csv"


def _read_cached(path: Path, n: int) -> pd.DataFrame | None:
    try:
        d = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    if list(d.columns) != _PRED_COLUMNS or len(d) != n:
        return None
    for c in ("fits", "held_out"):
        if d[c].dtype != bool:
            return None
    return d


def _write_cached(path: Path, pred: pd.DataFrame) -> None:
    """Store the predictions in the cache (atomically; an unwritable cache is skipped)."""
    from planner.report.export import write_cached

    buf = io.StringIO()
    pred[_PRED_COLUMNS].to_csv(buf, index=False)
    write_cached(path, buf.getvalue())


def closed_loop_predictions(catalog: Any = None) -> pd.DataFrame:
    """Every published closed-loop row with its prediction (FITTED parameters), ``held_out``
    and ``in_scope`` (:data:`planner.perf.closed_loop_validation.IN_SCOPE_SOURCES`).

    Raises FileNotFoundError when the reference data is not installed.
    """
    from planner.catalog import load_catalog
    from planner.perf import closed_loop_validation as v

    df = v.load_closed_loop()
    llms, accs = v.catalog_specs(df, catalog if catalog is not None else load_catalog())
    path = _cache_path(_cache_key(df, llms, accs))
    cached = _read_cached(path, len(df)) if path is not None else None
    if cached is not None:
        pred = df.copy()
        for c in _PRED_COLUMNS:
            pred[c] = cached[c].to_numpy()
        pred["err_ttft"] = pred["pred_ttft_ms"] / pred["ttft_target_ms"] - 1.0
        pred["err_itl"] = pred["pred_itl_ms"] / pred["itl_target_ms"] - 1.0
        pred["err_tput"] = pred["pred_output_tokens_per_s"] / pred["output_tokens_per_s"] - 1.0
    else:
        pred = v.predict_closed_loop(df, llms, accs, fit=v.FITTED)
        pred["held_out"] = v.split(df).to_numpy()
        if path is not None:
            _write_cached(path, pred)
    pred["in_scope"] = pred["source"].isin(v.IN_SCOPE_SOURCES).to_numpy()
    return pred


def curve_label(df: pd.DataFrame) -> pd.Series:
    """``model engine precision TPn [EPn] [DP-attn] ISL/OSL`` (e.g. ``deepseek-r1 SGLang fp8
    TP8 1024/1024``): with the source and GPU, one label per curve
    (:data:`planner.perf.closed_loop_validation.CURVE_KEY`)."""
    ep = df["ep"].fillna(1).astype(int)
    return (df["catalog_model"].astype(str) + " " + df["engine"].astype(str) + " "
            + df["precision"].astype(str) + " TP" + df["tp"].astype(int).astype(str)
            + np.where(ep > 1, " EP" + ep.astype(str), "")
            + np.where(df["dp_attention"].astype(bool), " DP-attn", "") + " "
            + df["isl"].astype(int).astype(str) + "/" + df["osl"].astype(int).astype(str))


def representative_curves(pred: pd.DataFrame) -> pd.DataFrame:
    """One curve per (source, GPU): the one with most predicted concurrency points (ties:
    first in :data:`~planner.perf.closed_loop_validation.CURVE_KEY` order), its rows in long format: ``source, gpu, curve, concurrency, metric,
    measured, predicted``."""
    from planner.perf import closed_loop_validation as v

    d = pred[pred["fits"]].copy()
    if d.empty:
        return pd.DataFrame(columns=["source", "gpu", "curve", "concurrency", "metric",
                                     "measured", "predicted"])
    d["_curve"] = d.groupby(v.CURVE_KEY, sort=True, dropna=False).ngroup()
    n = d.groupby(["source", "accelerator", "_curve"]).size().rename("n").reset_index()
    n = n.sort_values(["source", "accelerator", "n", "_curve"],
                      ascending=[True, True, False, True], kind="stable")
    pick = set(n.drop_duplicates(["source", "accelerator"])["_curve"])
    d = d[d["_curve"].isin(pick)].sort_values(["source", "accelerator", "concurrency"],
                                               kind="stable")
    label = curve_label(d)
    parts = []
    for metric, (meas, predc, _) in METRICS.items():
        parts.append(pd.DataFrame({
            "source": d["source"].to_numpy(), "gpu": d["accelerator"].to_numpy(),
            "curve": label.to_numpy(), "concurrency": d["concurrency"].to_numpy(float),
            "metric": metric, "measured": d[meas].to_numpy(float),
            "predicted": d[predc].to_numpy(float)}))
    return pd.concat(parts, ignore_index=True)


def closed_loop_tables(catalog: Any = None) -> dict[str, pd.DataFrame]:
    """The section's closed-loop tables (see the module docstring)."""
    from planner.perf import closed_loop_validation as v

    pred = closed_loop_predictions(catalog)
    by = v.error_table(pred, ["source", "accelerator"]).rename(
        columns={"source": "benchmark_source", "accelerator": "gpu"})
    by["rows"] = by["rows"].astype(int)
    sets = []
    for name, sel in (("held out (InferenceX, NIM)", pred["held_out"] & pred["in_scope"]),
                      ("fit half (InferenceX, NIM)", ~pred["held_out"] & pred["in_scope"]),
                      ("out of scope (dstack, early 2025)", ~pred["in_scope"])):
        t = v.error_table(pred[sel])
        t.insert(0, "rows_set", name)
        sets.append(t)
    summary = pd.concat(sets, ignore_index=True)
    summary["rows"] = summary["rows"].astype(int)
    return {"closed_loop_errors": by, "closed_loop_summary": summary,
            "closed_loop_curves": representative_curves(pred)}


def closed_loop_chart(curves: pd.DataFrame) -> Any:
    """Measured (points) and predicted (lines) throughput, TTFT and ITL against concurrency:
    one panel per quantity, one colour per source and GPU, log scales (three panels keep the
    chart cheap to export; the error tables cover every curve)."""
    import altair as alt

    from planner import charts

    if curves.empty:
        raise charts.NoData("closed_loop_vs_concurrency: no predicted closed-loop rows")
    labels = {k: lab for k, (_, _, lab) in METRICS.items()}
    d = curves.assign(series=curves["source"] + " / " + curves["gpu"],
                      quantity=curves["metric"].map(labels))
    d = d[(d["measured"] > 0) & (d["predicted"] > 0)]
    if d.empty:
        raise charts.NoData("closed_loop_vs_concurrency: no positive values to draw")
    x = alt.X("concurrency:Q", title="concurrent requests (log scale)",
              scale=alt.Scale(type="log"))
    color = alt.Color("series:N", title="source / GPU")
    tip = [alt.Tooltip("series:N", title="source / GPU"), alt.Tooltip("curve:N"),
           alt.Tooltip("quantity:N"), alt.Tooltip("concurrency:Q"),
           alt.Tooltip("measured:Q", format=",.4~g"),
           alt.Tooltip("predicted:Q", format=",.4~g")]
    base = alt.Chart().encode(x=x, color=color, tooltip=tip)
    lines = base.mark_line().encode(
        y=alt.Y("predicted:Q", title="value (log scale)", scale=alt.Scale(type="log")))
    points = base.mark_point(filled=True, size=35).encode(
        y=alt.Y("measured:Q", title="value (log scale)", scale=alt.Scale(type="log")))
    return alt.layer(lines, points, data=d).properties(width=230, height=170).facet(
        column=alt.Column("quantity:N", title=None, sort=list(labels.values())),
    ).resolve_scale(y="independent").properties(
        title=alt.Title("Closed loop: measured (points) and predicted (lines) vs concurrency",
                        subtitle="one published curve per source and GPU"))
