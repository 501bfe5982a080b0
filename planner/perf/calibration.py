"""Fits behind the default :class:`planner.perf.params.PerfParams` (reproducible).

* :func:`fit_gemm_curve` - GEMM efficiency curve and achieved HBM bandwidth from Vidur's
  per-operator profiles (``planner/data/profiling/vidur_mlp_gemm_efficiency_summary.csv``).
* :func:`fit_elementwise_factor` - the one end-to-end parameter, from
  ``measured_benchmarks_calibration.csv``; :func:`leave_one_out` gives its out-of-sample errors.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from planner.perf.params import PerfParams
from planner.perf.validation import load_measurements, predict_calibration

#: Where the Vidur profile summary ships (inside the package; sources and licence in its
#: ``SOURCES.md``).
PROFILING_DATA = Path(str(resources.files("planner"))) / "data" / "profiling"
VIDUR_SUMMARY = "vidur_mlp_gemm_efficiency_summary.csv"

#: (hidden, ffn) of the profiled MLPs (Vidur model configs).
_SHAPES = {
    "meta-llama_Llama-2-7b-hf": (4096, 11008),
    "meta-llama_Meta-Llama-3-8B": (4096, 14336),
    "meta-llama_Meta-Llama-3-70B": (8192, 28672),
    "meta-llama_Llama-2-70b-hf": (8192, 28672),
}
#: Dense bf16 peak FLOP/s and HBM bandwidth (bytes/s) of the profiled GPUs.
_GPUS = {"a100": (312e12, 2.039e12), "h100": (989e12, 3.35e12)}


def load_vidur_summary(path: str | Path | None = None) -> pd.DataFrame:
    """Vidur MLP timings with FLOPs and weight bytes per row (bf16 weights)."""
    p = Path(path) if path else PROFILING_DATA / VIDUR_SUMMARY
    d = pd.read_csv(p)
    d = d.iloc[:, :6].copy()
    d.columns = ["gpu", "model", "tp", "n", "up_ms", "down_ms"]
    h = d["model"].map(lambda m: _SHAPES[m][0]).astype(float)
    f = d["model"].map(lambda m: _SHAPES[m][1]).astype(float)
    params = 3.0 * h * f / d["tp"]  # gate+up (2 f h) and down (f h), sharded over tp
    d["time_s"] = (d["up_ms"] + d["down_ms"]) * 1e-3
    d["flops"] = 2.0 * params * d["n"]
    d["weight_bytes"] = 2.0 * params
    return d


def fit_gemm_curve(
    data: pd.DataFrame, gpu: str, tps: tuple[int, ...] = (1, 2), max_tokens: int = 4096
) -> dict[str, float]:
    """Fit ``t = max(bytes / (BW e_bw), flops / (peak e_max n / (n + n_half))) + 2 t_kernel``.

    Least squares on log time over the rows of ``gpu`` with the given TP degrees (two GEMMs
    per row, hence ``2 t_kernel``). Returns ``e_max``, ``n_half_tokens``, ``bw_efficiency``,
    ``kernel_overhead_s`` and the RMS log residual.
    """
    peak, bw = _GPUS[gpu]
    x = data[(data["gpu"] == gpu) & data["tp"].isin(tps) & (data["n"] <= max_tokens)]
    n = x["n"].to_numpy(float)
    fl = x["flops"].to_numpy(float)
    by = x["weight_bytes"].to_numpy(float)
    t = x["time_s"].to_numpy(float)

    def model(p: np.ndarray) -> np.ndarray:
        e_max, n_half, e_bw, t0 = p
        tc = fl / (peak * e_max * n / (n + n_half))
        tm = by / (bw * e_bw)
        return np.maximum(tc, tm) + 2.0 * t0

    r = least_squares(lambda p: np.log(model(p) / t), [0.75, 50.0, 0.85, 5e-6],
                      bounds=([0.3, 0.0, 0.3, 0.0], [1.0, 2000.0, 1.0, 1e-4]))
    res = np.log(model(r.x) / t)
    return {"e_max": float(r.x[0]), "n_half_tokens": float(r.x[1]),
            "bw_efficiency": float(r.x[2]), "kernel_overhead_s": float(r.x[3]),
            "rms_log_error": float(np.sqrt(np.mean(res**2))), "rows": int(len(t))}


def fit_elementwise_factor(
    measurements: pd.DataFrame | None = None,
    params: PerfParams | None = None,
    catalog: Any | None = None,
) -> dict[str, float]:
    """Least-squares ``elementwise_bytes_factor`` (log error) over the calibration rows."""
    meas = load_measurements() if measurements is None else measurements
    base = params or PerfParams()

    def res(x: np.ndarray) -> np.ndarray:
        df = predict_calibration(meas, base.replace(elementwise_bytes_factor=float(x[0])), catalog)
        return np.log(df["predicted_tokens_per_s"] / df["measured_tokens_per_s"]).to_numpy()

    r = least_squares(res, [5.0], bounds=([0.0], [30.0]), diff_step=1e-3)
    return {"elementwise_bytes_factor": float(r.x[0]),
            "rms_log_error": float(np.sqrt(np.mean(r.fun**2)))}


def leave_one_out(
    measurements: pd.DataFrame | None = None,
    params: PerfParams | None = None,
    catalog: Any | None = None,
) -> pd.DataFrame:
    """Refit the factor without each row and predict that row (out-of-sample error)."""
    meas = load_measurements() if measurements is None else measurements
    base = params or PerfParams()
    rows = []
    for i in range(len(meas)):
        rest = meas.drop(index=meas.index[i])
        fit = fit_elementwise_factor(rest, base, catalog)
        p = base.replace(elementwise_bytes_factor=fit["elementwise_bytes_factor"])
        one = predict_calibration(meas.iloc[[i]], p, catalog)
        if one.empty:
            continue
        rows.append({"id": one["id"].iloc[0], "factor_without_row": fit["elementwise_bytes_factor"],
                     "loo_error": float(one["error"].iloc[0])})
    return pd.DataFrame(rows)
