"""Perf-validation study: the performance model against published measurements.

Functions return tidy pandas DataFrames (the CLI and chart use them); ``python
studies/perf-validation/perf_validation.py`` prints every table as Markdown (the tables in
README.md are this output).

Data: ``planner/data/reference/measured_benchmarks_calibration.csv`` (calibration rows),
``holdout_trtllm_perf_overview.csv`` in this folder (TensorRT-LLM perf overview rows not in
the calibration file), ``planner/data/profiling/`` (Vidur GEMM profiles); sources and licences
in each folder's ``SOURCES.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from planner.catalog import load_catalog
from planner.perf import PerfParams
from planner.perf.calibration import (
    fit_elementwise_factor,
    fit_gemm_curve,
    leave_one_out,
    load_vidur_summary,
)
from planner.perf.validation import (
    MLPERF_MEAN_INPUT_TOKENS,
    load_measurements,
    predict_calibration,
    predict_trtllm_bench,
    summary,
)

HERE = Path(__file__).resolve().parent
HOLDOUT = HERE / "holdout_trtllm_perf_overview.csv"


def _catalog():
    try:
        return load_catalog()
    except Exception:  # noqa: BLE001 - the study also runs on the built-in specs
        return None


def calibration_table(params: PerfParams | None = None) -> pd.DataFrame:
    """Predicted vs measured output tokens/s for every calibration row."""
    df = predict_calibration(load_measurements(), params or PerfParams(), _catalog())
    return df[["id", "model", "hardware", "setting", "input_tokens", "output_tokens", "gpus",
               "batch", "limited_by", "measured_tokens_per_s", "predicted_tokens_per_s",
               "error"]]


def holdout_table(params: PerfParams | None = None) -> pd.DataFrame:
    """Predictions for the 60 perf-overview rows (``in_calibration_set`` marks the 7 used)."""
    t = pd.read_csv(HOLDOUT)
    df = predict_trtllm_bench(t, params or PerfParams(), _catalog())
    return df.drop(columns=["source"])


def holdout_summary(params: PerfParams | None = None) -> pd.DataFrame:
    """Median and max |error| of the holdout rows by model and accelerator."""
    h = holdout_table(params)
    h = h[~h["in_calibration_set"]]
    g = h.groupby(["model", "accelerator", "tp"], sort=False)["abs_error"]
    out = g.agg(rows="size", median_abs_error="median", max_abs_error="max").reset_index()
    total = pd.DataFrame([{"model": "all", "accelerator": "", "tp": np.nan,
                           **{k: v for k, v in summary(h).items() if k != "rows"},
                           "rows": len(h)}])
    return pd.concat([out, total], ignore_index=True)


def loo_table(params: PerfParams | None = None) -> pd.DataFrame:
    """Leave-one-out: refit the one end-to-end parameter without each row, predict the row."""
    return leave_one_out(load_measurements(), params or PerfParams(), _catalog())


def isl_sensitivity(values=(200, 300, 350, 500, 700)) -> pd.DataFrame:
    """MLPerf rows' error versus the assumed mean input length (not published)."""
    rows = []
    cat = _catalog()
    for isl in values:
        df = predict_calibration(load_measurements(), PerfParams(), cat,
                                 input_tokens_override={"M1": isl, "M2": isl}).set_index("id")
        rows.append({"mean_input_tokens": isl, "M1_error": df.loc["M1", "error"],
                     "M2_error": df.loc["M2", "error"]})
    return pd.DataFrame(rows)


def fits_table() -> pd.DataFrame:
    """The fits behind the defaults (Vidur GEMM curves; the end-to-end factor)."""
    d = load_vidur_summary()
    rows = [{"fit": f"Vidur MLP GEMMs {g.upper()} TP1-2", **fit_gemm_curve(d, g)}
            for g in ("h100", "a100")]
    e = fit_elementwise_factor(load_measurements(), PerfParams(), _catalog())
    rows.append({"fit": "end-to-end (9 calibration rows)", **e})
    return pd.DataFrame(rows)


def to_markdown(df: pd.DataFrame, floatfmt: str = "{:,.3f}") -> str:
    """Minimal Markdown table (no extra dependency)."""
    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else floatfmt.format(v)
        return str(v)
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def main() -> None:
    cal = calibration_table()
    s = summary(cal.assign(abs_error=cal["error"].abs()))
    print(f"## Calibration rows (median |error| {s['median_abs_error']:.1%}, "
          f"max {s['max_abs_error']:.1%}; "
          f"MLPerf mean input assumed {MLPERF_MEAN_INPUT_TOKENS:.0f})\n")
    print(to_markdown(cal.drop(columns=["model", "hardware"])))
    print("\n## Holdout summary\n")
    print(to_markdown(holdout_summary()))
    print("\n## Holdout rows\n")
    h = holdout_table()
    print(to_markdown(h[["model", "accelerator", "tp", "isl", "osl", "in_calibration_set",
                         "output_tokens_per_s", "predicted_tokens_per_s", "batch",
                         "limited_by", "error"]]))
    print("\n## Leave-one-out\n")
    print(to_markdown(loo_table()))
    print("\n## MLPerf input-length sensitivity\n")
    print(to_markdown(isl_sensitivity()))
    print("\n## Fits\n")
    print(to_markdown(fits_table(), "{:.4g}"))


if __name__ == "__main__":
    main()
