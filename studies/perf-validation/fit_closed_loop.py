"""Fit the few physical parameters of the closed-loop model on the *fit* half of the data.

``python studies/perf-validation/fit_closed_loop.py`` (slow: a few minutes) prints the fitted
:class:`planner.perf.closed_loop_validation.FitParams` as JSON; the values are copied into
:data:`planner.perf.closed_loop_validation.FITTED` (the tests and the study use that copy, and
``tests/test_perf_validation_closed_loop.py`` checks the held-out errors they give).

On the fit half only (:func:`planner.perf.closed_loop_validation.split`), with each run's
launch settings (:func:`planner.perf.closed_loop_validation.launch_settings`): GEMM and HBM
efficiency and prefill attention efficiency per GPU family, per-step and per-sequence
overhead, the MoE expert GEMMs' share of the dense efficiency and the front-end time per
request of SGLang and TensorRT-LLM, by robust least squares (``soft_l1``) on
log(predicted / measured) of ITL, output tokens/s and TTFT, plus the dense
maximum-throughput anchors (:func:`anchors`, the fit half of those rows).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
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
    hp = fp.bench_params_for("h100-sxm", PerfParams())
    cal = predict_calibration(load_measurements(), hp, cat)
    t = pd.read_csv(HERE / "b200_fp4_trtllm_perf_overview.csv")
    t = t[t["model"] == "llama-3.3-70b"]
    bp = fp.bench_params_for("b200", PerfParams())
    b = predict_trtllm_bench(t, bp, cat)
    return np.log1p(np.concatenate([cal["error"].to_numpy(float), b["error"].to_numpy(float)]))


#: Engines whose front-end time per request is fitted (NIM's is 0: its TTFT is fitted without).
REQ_ENGINES = ["SGLang", "TensorRT-LLM"]


def unpack(x: np.ndarray) -> v.FitParams:
    """Parameter vector -> :class:`FitParams`: GEMM x3, HBM x3 (per family), step (ms),
    sequence (us), expert factor, prefill attention x3 (per family), front-end time per
    request (ms) of SGLang and TensorRT-LLM."""
    req = {"NIM": 0.0, "vLLM": 0.0}
    req.update({e: float(t) * 1e-3 for e, t in zip(REQ_ENGINES, x[12:14], strict=True)})
    return v.FitParams(gemm=dict(zip(FAMILIES, x[0:3], strict=True)),
                       bw=dict(zip(FAMILIES, x[3:6], strict=True)),
                       step_overhead_s=float(x[6]) * 1e-3,
                       sequence_overhead_s=float(x[7]) * 1e-6, request_overhead_s=req,
                       expert_efficiency_factor=float(x[8]),
                       attention=dict(zip(FAMILIES, x[9:12], strict=True)))


class _Budget(Exception):
    pass


def _soft_l1(r: np.ndarray) -> np.ndarray:
    return np.where(np.abs(r) <= 0.2, r**2, 0.4 * np.abs(r) - 0.04)


def request_overheads(fp: v.FitParams, rows: pd.DataFrame, llms, accs) -> dict[str, float]:
    """Front-end time per request for each engine and GPU family (key ``engine|family``): the
    constant (0-300 ms, 1 ms grid) minimising the soft-l1 cost of log TTFT error on ``rows``
    (the TTFT is additive in it). Rows with attention data parallelism are left out (v4):
    their TTFT is the balancing wait for a prompt per rank (+60-70 % mispredicted on H200),
    not the front end, and they pulled TensorRT-LLM's constant on Hopper up."""
    rows = rows[~rows["dp_attention"].astype(bool)]
    p = v.predict_closed_loop(rows, llms, accs, fit=replace(fp, request_overhead_s={}))
    key = p["engine"] + "|" + p["accelerator"].map(v.family)
    cands = np.arange(0, 301) / 1e3
    out = {}
    for k in sorted(key.unique()):
        sel = (key == k).to_numpy()
        pr = p["pred_ttft_ms"].to_numpy(float)[sel, None] / 1e3
        me = p["ttft_target_ms"].to_numpy(float)[sel, None] / 1e3
        out[k] = float(cands[np.argmin(_soft_l1(np.log((pr + cands[None, :]) / me)).sum(0))])
    return out


def refine(fp: v.FitParams, rows: pd.DataFrame, llms, accs, cat) -> v.FitParams:
    """The coordinate scans that turned the v2 fit into :data:`FITTED` (v3), on the fit half:

    1. Blackwell large-GEMM efficiency with the fp4 default ``fp4_gemm_factor`` (soft-l1 of
       ITL, throughput and the dense anchors over the Blackwell rows);
    2. prefill attention efficiency per GPU family, each with its own front-end constants
       (soft-l1 of log TTFT error over the family's rows);
    3. SGLang's own step overhead (soft-l1 of ITL, throughput, TTFT with refitted
       front-end constants, and the anchors, over all fit rows);
    4. the front-end constants per engine and family (:func:`request_overheads`).
    """
    fam = rows["accelerator"].map(v.family)
    bw_rows = rows[fam == "blackwell"]
    best = (np.inf, fp)
    for g in (0.587, 0.65, 0.72, 0.8, 0.86, 0.92):
        f2 = replace(fp, gemm={**fp.gemm, "blackwell": g})
        p = v.predict_closed_loop(bw_rows, llms, accs, fit=f2)
        r = np.concatenate([np.log1p(p["err_itl"]), np.log1p(p["err_tput"])])
        cost = _soft_l1(r).sum() + ANCHOR_WEIGHT * _soft_l1(anchors(f2, cat)[-10:]).sum()
        print(f"blackwell gemm {g}: cost {cost:.3f}", file=sys.stderr, flush=True)
        best = min(best, (cost, f2), key=lambda t: t[0])
    fp = best[1]
    att = {}
    for f, grid in (("hopper", (0.15, 0.2, 0.25, 0.3, 0.4, 0.5)),
                    ("blackwell", (0.3, 0.5, 0.8)), ("cdna3", (0.08, 0.1, 0.15, 0.25))):
        fr = rows[fam == f]
        costs = []
        for a in grid:
            f2 = replace(fp, attention={f: a})
            req = request_overheads(f2, fr, llms, accs)
            p = v.predict_closed_loop(fr, llms, accs, fit=replace(f2, request_overhead_s=req))
            costs.append(_soft_l1(np.log1p(p["err_ttft"].to_numpy(float))).sum())
            print(f"{f} attention {a}: cost {costs[-1]:.3f}", file=sys.stderr, flush=True)
        att[f] = grid[int(np.argmin(costs))]
    fp = replace(fp, attention=att)
    best = (np.inf, fp)
    for t in (0.0025, 0.003, 0.0035, 0.004, fp.step_overhead_s):
        f2 = replace(fp, engine_step_overhead_s={"SGLang": t})
        f2 = replace(f2, request_overhead_s=request_overheads(f2, rows, llms, accs))
        p = v.predict_closed_loop(rows, llms, accs, fit=f2)
        r = np.concatenate([np.log1p(p[c].to_numpy(float))
                            for c in ("err_itl", "err_tput", "err_ttft")])
        cost = _soft_l1(r).sum() + ANCHOR_WEIGHT * _soft_l1(anchors(f2, cat)).sum()
        print(f"SGLang step {t}: cost {cost:.3f}", file=sys.stderr, flush=True)
        best = min(best, (cost, f2), key=lambda x: x[0])
    fp = best[1]
    return replace(fp, request_overhead_s=request_overheads(fp, rows, llms, accs))


def _cost(p: pd.DataFrame, cols=("err_itl", "err_tput", "err_ttft")) -> float:
    r = np.concatenate([np.log1p(p[c].to_numpy(float)) for c in cols])
    return float(_soft_l1(np.nan_to_num(r, nan=5.0)).sum())


def refit_cdna3(fp: v.FitParams, rows: pd.DataFrame, llms, accs,
                max_nfev: int = 60) -> v.FitParams:
    """v4, MI300X: GEMM and HBM efficiency, prefill attention efficiency and SGLang's own step
    overhead on CDNA3 (key ``SGLang|cdna3``), robust least squares (soft-l1) on log error of
    ITL, throughput and TTFT over the MI300X rows of the fit half. v3 shared SGLang's 4 ms step
    with the NVIDIA GPUs; the MI300X ITL at concurrency 4 was then under-predicted by 30-45 %
    and at 64 over-predicted by 15-55 %, and the fit pushed the HBM efficiency down to 0.40
    to split the difference."""
    r = rows[rows["accelerator"].map(v.family) == "cdna3"]

    def mk(x):
        return replace(fp, gemm={**fp.gemm, "cdna3": float(x[0])},
                       bw={**fp.bw, "cdna3": float(x[1])},
                       engine_step_overhead_s={**fp.engine_step_overhead_s,
                                               "SGLang|cdna3": float(x[2]) * 1e-3},
                       attention={**fp.attention, "cdna3": float(x[3])})

    def resid(x):
        p = v.predict_closed_loop(r, llms, accs, fit=mk(x))
        res = np.concatenate([np.log1p(p[c].to_numpy(float))
                              for c in ("err_itl", "err_tput", "err_ttft")])
        return np.nan_to_num(res, nan=5.0)

    x0 = [fp.gemm["cdna3"], fp.bw["cdna3"], 4.0, fp.attention.get("cdna3", 0.08)]
    sol = least_squares(resid, x0, bounds=([0.05, 0.1, 0.0, 0.02], [1.0, 1.0, 30.0, 1.0]),
                        loss="soft_l1", f_scale=0.2, diff_step=0.03, max_nfev=max_nfev)
    return mk(np.round(sol.x, 4))


def engine_attention(fp: v.FitParams, rows: pd.DataFrame, llms, accs, key: str,
                     grid=(0.07, 0.1, 0.12, 0.14, 0.17, 0.2, 0.3, 0.5)) -> v.FitParams:
    """v4: prefill attention efficiency of one engine on one GPU family (``key``
    ``engine|family``), chosen like v3's per-family scan (soft-l1 of log TTFT error with the
    front-end constant refitted at each value) over that engine's fit-half rows of the family
    without attention data parallelism (:func:`request_overheads`). TensorRT-LLM on Hopper:
    its 8k-token prompts take ~270 ms more than its 1k-token ones at concurrency 4 (fit half:
    374 vs 129 ms, November runs), SGLang's ~200 ms; one Hopper value (0.2) left it to the
    front-end constant (104 ms), which over-predicted its short prompts by ~30 %."""
    eng, fam = key.split("|")
    r = rows[(rows["engine"] == eng) & (rows["accelerator"].map(v.family) == fam)
             & ~rows["dp_attention"].astype(bool)]
    costs = []
    for a in grid:
        f2 = replace(fp, attention={**fp.attention, key: a})
        f2 = replace(f2, request_overhead_s={**fp.request_overhead_s,
                                             **request_overheads(f2, r, llms, accs)})
        p = v.predict_closed_loop(r, llms, accs, fit=f2)
        costs.append(_cost(p, ("err_ttft",)))
        print(f"{key} attention {a}: cost {costs[-1]:.3f}", file=sys.stderr, flush=True)
    return replace(fp, attention={**fp.attention, key: grid[int(np.argmin(costs))]})


def refine_v4(fp: v.FitParams, rows: pd.DataFrame, llms, accs) -> v.FitParams:
    """The steps that turn :data:`FITTED` v3 into v4, on the fit half:
    :func:`refit_cdna3`, :func:`engine_attention` for ``TensorRT-LLM|hopper``, then the
    front-end constants (:func:`request_overheads`, without the attention-DP rows)."""
    fp = refit_cdna3(fp, rows, llms, accs)
    fp = engine_attention(fp, rows, llms, accs, "TensorRT-LLM|hopper")
    return replace(fp, request_overhead_s=request_overheads(fp, rows, llms, accs))


def precision_attention(fp: v.FitParams, rows: pd.DataFrame, llms, accs,
                        key: str = "blackwell|fp8",
                        grid=(0.07, 0.1, 0.11, 0.12, 0.125, 0.13, 0.14, 0.17, 0.2, 0.3, 0.5)
                        ) -> v.FitParams:
    """v5: prefill attention efficiency of one GPU family's checkpoints of one precision
    (``key`` ``family|precision``), the soft-l1 cost of log TTFT error over those fit-half
    rows without attention data parallelism (front-end constants kept: they are shared with
    the other precision). B200 fp8: its 8k-token prompts take 2-3x longer than the fp4 runs'
    (609 vs 225 ms at concurrency 4) while 1k-token prompts match (163 vs 163 ms), a cost
    growing with the prompt's square; the fit half's one 8k fp8 curve (SGLang TP4) identifies
    it once its KV capacity is right (``memory.device_accelerator``)."""
    fam, prec = key.split("|")
    r = rows[(rows["precision"] == prec) & (rows["accelerator"].map(v.family) == fam)
             & ~rows["dp_attention"].astype(bool)]
    costs = []
    for a in grid:
        p = v.predict_closed_loop(r, llms, accs,
                                  fit=replace(fp, attention={**fp.attention, key: a}))
        costs.append(_cost(p, ("err_ttft",)))
        print(f"{key} attention {a}: cost {costs[-1]:.3f}", file=sys.stderr, flush=True)
    return replace(fp, attention={**fp.attention, key: grid[int(np.argmin(costs))]})


def moe_backend_step(fp: v.FitParams, rows: pd.DataFrame, llms, accs,
                     key: str = "TensorRT-LLM|DEEPGEMM",
                     grid_ms=(0.0, 2.0, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0)) -> v.FitParams:
    """v6: the time per step added by another MoE backend (``key`` ``engine|backend``,
    :func:`planner.perf.closed_loop_validation.launch_settings` column ``moe_backend``), the
    soft-l1 cost of log ITL, throughput and TTFT error over those fit-half rows.
    TensorRT-LLM ``DEEPGEMM`` (B200 fp8 until 2026-01-29, release 1.1.0rc2.post2, EP 8): the
    fit half's 1k-token curves decode 31 % slower at concurrency 4 than the shared parameters
    predict (14.6 vs 10.0 ms), while the ``TRTLLM``-backend runs of the same checkpoint a
    month later match (10.3 ms). Its ``DeepGemmFusedMoE.forward_chunk`` runs each MoE layer
    as a chain of separate kernels (permute, token-to-expert map, masked copy with fp8
    quantisation, scale-layout transforms and a masked grouped GEMM per projection, SwiGLU
    with quantisation, gather, finalize) where the fused backends run a few: a fixed time
    per step. (A joint grid with the backend's own expert efficiency, 0.4-0.75, puts that at
    the shared value: cost 1.347 at 0.70 and 4 ms, 1.309 at 0.75 and 4.5 ms; expert
    efficiency alone reaches 3.571 at 0.5.)"""
    eng, backend = key.split("|")
    ls = v.launch_settings(rows)
    r = rows[(rows["engine"] == eng) & (ls["moe_backend"] == backend)]
    costs = []
    for t in grid_ms:
        f2 = replace(fp, moe_backend_step_s={**fp.moe_backend_step_s, key: t * 1e-3})
        costs.append(_cost(v.predict_closed_loop(r, llms, accs, fit=f2)))
        print(f"{key} step +{t} ms: cost {costs[-1]:.3f} ({len(r)} rows)", file=sys.stderr,
              flush=True)
    return replace(fp, moe_backend_step_s={**fp.moe_backend_step_s,
                                           key: grid_ms[int(np.argmin(costs))] * 1e-3})


def refine_v6(fp: v.FitParams, rows: pd.DataFrame, llms, accs) -> v.FitParams:
    """The steps that turn :data:`FITTED` v5 into v6, on the fit half:
    :func:`moe_backend_step` for TensorRT-LLM's ``DEEPGEMM`` runs, then
    :func:`precision_attention` for ``blackwell|fp8`` again (v5 fitted it with those runs'
    steps too fast)."""
    fp = moe_backend_step(fp, rows, llms, accs)
    return precision_attention(fp, rows, llms, accs)


def refine_v7(fp: v.FitParams, rows: pd.DataFrame, llms, accs,
              families: tuple[str, ...] = ("blackwell",)) -> v.FitParams:
    """The steps that turn :data:`FITTED` v6 into v7, on the fit half, after the closed-loop
    model's polling wait changed (v7: SGLang's ``--scheduler-recv-interval`` counts decode
    steps only; a step with prompt tokens makes the scheduler take new requests right after
    it, ``SchedulerRecvSkipper``): the front-end constants of the GPU families whose runs
    poll (``families``: the B200 SGLang runs; TensorRT-LLM's on the same GPUs refitted with
    them), :func:`precision_attention` for ``blackwell|fp8`` (v5/v6 fitted it on the fit
    half's one 8k-token fp8 curve, SGLang TP4, with ~105 ms of its TTFT at concurrency 8
    charged to polling instead of its prefill), then the front-end constants again. The
    other families' constants are kept (their runs do not poll)."""
    def fronts(f: v.FitParams) -> v.FitParams:
        req = request_overheads(f, rows, llms, accs)
        keep = {k: t for k, t in req.items() if k.split("|")[-1] in families}
        print(f"front-end constants: {keep}", file=sys.stderr, flush=True)
        return replace(f, request_overhead_s={**f.request_overhead_s, **keep})

    fp = fronts(fp)
    fp = precision_attention(fp, rows, llms, accs,
                             grid=(0.05, 0.06, 0.065, 0.07, 0.075, 0.08, 0.09, 0.1, 0.11,
                                   0.125, 0.14))
    return fronts(fp)


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--x0", type=json.loads, default=None,
                    help="start vector (JSON list, see unpack: gemm x3, bw x3, step ms, "
                         "sequence us, expert factor, attention x3, SGLang and TensorRT-LLM "
                         "front-end ms)")
    ap.add_argument("--budget", type=int, default=120, help="model evaluations")
    ap.add_argument("--refine", action="store_true",
                    help="only the coordinate scans from FITTED's v2 values (see refine)")
    ap.add_argument("--best", default=None,
                    help="write the best vector so far to this JSON file after each "
                         "improvement")
    ap.add_argument("--v4", action="store_true",
                    help="only the v4 steps from FITTED (see refine_v4)")
    ap.add_argument("--v5", action="store_true",
                    help="only the v5 step from FITTED (see precision_attention)")
    ap.add_argument("--v6", action="store_true",
                    help="only the v6 steps from FITTED (see refine_v6)")
    ap.add_argument("--v7", action="store_true",
                    help="only the v7 steps from FITTED (see refine_v7)")
    a = ap.parse_args(argv)
    df = v.load_closed_loop()
    fit_rows = df[~v.split(df) & df["source"].isin(v.IN_SCOPE_SOURCES)]
    cat = load_catalog()
    llms, accs = v.catalog_specs(fit_rows, cat)
    if a.v7:
        _print(refine_v7(v.FITTED, fit_rows, llms, accs))
        return
    if a.v6:
        _print(refine_v6(v.FITTED, fit_rows, llms, accs))
        return
    if a.v5:
        _print(precision_attention(v.FITTED, fit_rows, llms, accs))
        return
    if a.v4:
        _print(refine_v4(v.FITTED, fit_rows, llms, accs))
        return
    if a.refine:
        v2 = replace(v.FITTED, gemm={**v.FITTED.gemm, "blackwell": 0.5872}, attention={})
        _print(refine(v2, fit_rows, llms, accs, cat))
        return
    x0 = np.array(a.x0 if a.x0 else [0.6, 0.6, 0.4, 0.85, 0.8, 0.7, 1.0, 20.0, 1.0,
                                     0.5, 0.5, 0.5, 50.0, 50.0], dtype=float)
    lo = np.array([0.05] * 3 + [0.2] * 3 + [0.0, 0.0, 0.1] + [0.05] * 3 + [0.0, 0.0])
    hi = np.array([1.0] * 6 + [50.0, 2000.0, 1.0] + [1.0] * 3 + [1000.0, 1000.0])
    state = {"n": 0, "best": (np.inf, x0)}

    def resid(x: np.ndarray) -> np.ndarray:
        if state["n"] >= a.budget:
            raise _Budget
        state["n"] += 1
        fp = unpack(x)
        p = v.predict_closed_loop(fit_rows, llms, accs, fit=fp)
        r = np.concatenate([np.log1p(p["err_itl"].to_numpy(float)),
                            np.log1p(p["err_tput"].to_numpy(float)),
                            np.log1p(p["err_ttft"].to_numpy(float)),
                            np.sqrt(ANCHOR_WEIGHT) * anchors(fp, cat)])
        r = np.nan_to_num(r, nan=5.0)
        cost = float(np.sum(np.where(np.abs(r) <= 0.2, r**2, 0.4 * np.abs(r) - 0.04)))
        if cost < state["best"][0]:
            state["best"] = (cost, np.array(x, dtype=float))
            if a.best:
                Path(a.best).write_text(json.dumps(np.round(x, 5).tolist()))
        print(f"eval {state['n']}: x={np.round(x, 4).tolist()} cost={cost:.3f}",
              file=sys.stderr, flush=True)
        return r

    try:
        least_squares(resid, x0, bounds=(lo, hi), loss="soft_l1", f_scale=0.2,
                      diff_step=0.03)
    except _Budget:
        pass
    _print(unpack(state["best"][1]))


def _print(fp: v.FitParams) -> None:
    print(json.dumps({"gemm": fp.gemm, "bw": fp.bw, "step_overhead_s": fp.step_overhead_s,
                      "sequence_overhead_s": fp.sequence_overhead_s,
                      "request_overhead_s": fp.request_overhead_s,
                      "expert_efficiency_factor": fp.expert_efficiency_factor,
                      "attention": fp.attention,
                      "engine_step_overhead_s": fp.engine_step_overhead_s,
                      "moe_backend_step_s": fp.moe_backend_step_s}, indent=2))


if __name__ == "__main__":
    main()
