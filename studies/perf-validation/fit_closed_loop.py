"""Fit the few physical parameters of the closed-loop model on the *fit* half of the data.

``python studies/perf-validation/fit_closed_loop.py`` (slow: a few minutes) prints the fitted
:class:`planner.perf.closed_loop_validation.FitParams` as JSON; the values are copied into
:data:`planner.perf.closed_loop_validation.FITTED` (the tests and the study use that copy, and
``tests/test_perf_validation_closed_loop.py`` checks the held-out errors they give).

Two stages, both on the fit half only (:func:`planner.perf.closed_loop_validation.split`):

1. GEMM and HBM efficiency per GPU family, per-step and per-sequence overhead, the MoE expert
   GEMMs' share of the dense efficiency: robust least squares (``soft_l1``) on
   log(predicted / measured) of ITL and output tokens/s, plus the dense maximum-throughput
   anchors (:func:`anchors`, the fit half of those rows);
2. front-end time per request, per engine: the median of measured - predicted TTFT (the
   TTFT is additive in it), then stage 1 once more with those overheads in place.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from planner.catalog import load_catalog
from planner.perf import closed_loop_validation as v
from planner.perf.params import PerfParams
from planner.perf.validation import load_measurements, predict_calibration, predict_trtllm_bench

FAMILIES = ["hopper", "blackwell", "cdna3"]
HERE = Path(__file__).resolve().parent
#: Dense maximum-throughput anchors in the fit half (each weighted like ANCHOR_WEIGHT rows):
#: the 9 calibration rows (TensorRT-LLM/MLPerf, H100/H200) and the Llama-3.3-70B B200 FP4 rows
#: of the perf overview; the 53 H100/H200 holdout rows and the Llama-3.1-405B B200 FP4 rows
#: stay held out.
ANCHOR_WEIGHT = 3.0


def anchors(fp: v.FitParams, cat) -> np.ndarray:
    """log(predicted / measured) of the dense max-throughput fit rows under ``fp``."""
    hp = fp.params_for("h100-sxm", "TensorRT-LLM", PerfParams()).replace(request_overhead_s=0.0)
    cal = predict_calibration(load_measurements(), hp, cat)
    t = pd.read_csv(HERE / "b200_fp4_trtllm_perf_overview.csv")
    t = t[t["model"] == "llama-3.3-70b"]
    bp = fp.params_for("b200", "TensorRT-LLM", PerfParams()).replace(request_overhead_s=0.0)
    b = predict_trtllm_bench(t, bp, cat)
    return np.log1p(np.concatenate([cal["error"].to_numpy(float), b["error"].to_numpy(float)]))


def unpack(x: np.ndarray, req: dict[str, float]) -> v.FitParams:
    return v.FitParams(gemm=dict(zip(FAMILIES, x[0:3], strict=True)), bw=dict(zip(FAMILIES, x[3:6], strict=True)),
                       step_overhead_s=float(x[6]) * 1e-3,
                       sequence_overhead_s=float(x[7]) * 1e-6, request_overhead_s=req,
                       expert_efficiency_factor=float(x[8]))


class _Budget(Exception):
    pass


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--x0", type=json.loads, default=None,
                    help="start vector (JSON list: gemm x3, bw x3, step ms, sequence us, "
                         "expert factor)")
    ap.add_argument("--budget", type=int, default=120, help="model evaluations per stage")
    a = ap.parse_args(argv)
    df = v.load_closed_loop()
    fit_rows = df[~v.split(df) & df["source"].isin(v.IN_SCOPE_SOURCES)]
    cat = load_catalog()
    llms, accs = v.catalog_specs(fit_rows, cat)
    req = {e: 0.0 for e in v.ENGINE_SETTINGS}
    x0 = np.array(a.x0 if a.x0 else [0.6, 0.6, 0.4, 0.85, 0.8, 0.7, 1.0, 20.0, 1.0],
                  dtype=float)
    lo = np.array([0.05] * 3 + [0.2] * 3 + [0.0, 0.0, 0.1])
    hi = np.array([1.0] * 6 + [50.0, 2000.0, 1.0])
    state = {"n": 0, "best": (np.inf, x0)}

    def resid(x: np.ndarray) -> np.ndarray:
        if state["n"] >= a.budget:
            raise _Budget
        state["n"] += 1
        p = v.predict_closed_loop(fit_rows, llms, accs, fit=unpack(x, req))
        r = np.concatenate([np.log1p(p["err_itl"].to_numpy(float)),
                            np.log1p(p["err_tput"].to_numpy(float)),
                            np.sqrt(ANCHOR_WEIGHT) * anchors(unpack(x, req), cat)])
        r = np.nan_to_num(r, nan=5.0)
        cost = float(np.sum(np.where(np.abs(r) <= 0.2, r**2, 0.4 * np.abs(r) - 0.04)))
        if cost < state["best"][0]:
            state["best"] = (cost, np.array(x, dtype=float))
        print(f"eval {state['n']}: x={np.round(x, 4).tolist()} cost={cost:.3f}",
              file=sys.stderr, flush=True)
        return r

    for _stage in range(2):
        state["n"] = 0
        state["best"] = (np.inf, x0)
        try:
            least_squares(resid, x0, bounds=(lo, hi), loss="soft_l1", f_scale=0.2,
                          diff_step=0.03)
        except _Budget:
            pass
        x0 = state["best"][1]
        p = v.predict_closed_loop(fit_rows, llms, accs, fit=unpack(x0, req))
        gap = (p["ttft_target_ms"] - p["pred_ttft_ms"]) / 1e3
        req = {e: float(max(np.median(gap[p["engine"] == e]) + req.get(e, 0.0), 0.0))
               for e in p["engine"].unique()}
    fp = unpack(x0, req)
    print(json.dumps({"gemm": fp.gemm, "bw": fp.bw, "step_overhead_s": fp.step_overhead_s,
                      "sequence_overhead_s": fp.sequence_overhead_s,
                      "request_overhead_s": fp.request_overhead_s,
                      "expert_efficiency_factor": fp.expert_efficiency_factor}, indent=2))


if __name__ == "__main__":
    main()
