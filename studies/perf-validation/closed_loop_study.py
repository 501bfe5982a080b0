"""Closed-loop validation study: ``python studies/perf-validation/closed_loop_study.py``.

Question: does the step model that drives the sizing and the simulator reproduce published
closed-loop latency curves (TTFT, ITL, throughput vs concurrency) on several GPUs, engines
and precisions, with a few physical parameters fitted on half the data?

Prints the tables of ``README.md`` (section "Closed-loop validation") as Markdown and writes
``closed_loop_pred_vs_measured.png`` (held-out rows). Each table is a function returning a
DataFrame; ``tests/test_perf_validation_closed_loop.py`` asserts the error targets on them.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from planner.catalog import load_catalog
from planner.perf import closed_loop_validation as v
from planner.perf.batching import capacity_grid, replica_capacity
from planner.perf.openloop import open_loop, slo_capacity
from planner.perf.params import PerfParams
from planner.perf.step import step_model
from planner.perf.validation import (
    CASES,
    MLPERF_MEAN_INPUT_TOKENS,
    MLPERF_MEAN_OUTPUT_TOKENS,
    _specs,
    case_params,
    load_measurements,
    predict_calibration,
    predict_trtllm_bench,
)

HERE = Path(__file__).resolve().parent
HOLDOUT = HERE / "holdout_trtllm_perf_overview.csv"
B200_FP4 = HERE / "b200_fp4_trtllm_perf_overview.csv"


@lru_cache(maxsize=4)
def predictions(fitted: bool = True) -> pd.DataFrame:
    """Every closed-loop row predicted (``FITTED`` parameters or the defaults), with
    ``held_out`` (the split) and ``in_scope`` (InferenceX and NIM)."""
    df = v.load_closed_loop()
    llms, accs = v.catalog_specs(df, load_catalog())
    p = v.predict_closed_loop(df, llms, accs, fit=v.FITTED if fitted else None)
    p["held_out"] = v.split(df)
    p["in_scope"] = p["source"].isin(v.IN_SCOPE_SOURCES)
    p["gpu"] = p["accelerator"]
    return p


def heldout(fitted: bool = True) -> pd.DataFrame:
    p = predictions(fitted)
    return p[p["held_out"] & p["in_scope"]]


def summary_table(fitted: bool = True) -> pd.DataFrame:
    """Median |error| and bias of the held-out in-scope rows, and of the fit half."""
    p = predictions(fitted)
    rows = []
    for name, sel in (("held out", p["held_out"] & p["in_scope"]),
                      ("fit half", ~p["held_out"] & p["in_scope"]),
                      ("dstack (early 2025, out of scope)", p["source"] == "dstack")):
        t = v.error_table(p[sel])
        t.insert(0, "rows_set", name)
        rows.append(t)
    return pd.concat(rows, ignore_index=True)


def by_table(cols: list[str], fitted: bool = True) -> pd.DataFrame:
    """Held-out errors per group (e.g. ``["gpu"]``, ``["precision"]``)."""
    return v.error_table(heldout(fitted), cols)


#: Fewest held-out rows for a group's bias to count against the +-12 % target (the H100
#: group, 4 dense NIM rows, is below it).
BIAS_MIN_ROWS = 30
BIAS_TARGET = 0.12


def bias_table(fitted: bool = True) -> pd.DataFrame:
    """Median signed error (bias) and median |error| of throughput, ITL and TTFT per GPU,
    per precision, per GPU and precision and per GPU, precision and engine, for the held-out
    and the fit half (in-scope rows). ``group`` names the grouping, ``key`` the group;
    ``beyond_target``: a held-out group with at least :data:`BIAS_MIN_ROWS` rows whose bias
    on some metric is beyond +-:data:`BIAS_TARGET`."""
    p = predictions(fitted)
    p = p[p["in_scope"]]
    p = p.assign(half=np.where(p["held_out"], "held out", "fit half"))
    out = []
    for cols in (["gpu"], ["precision"], ["gpu", "precision"], ["gpu", "precision", "engine"]):
        t = v.error_table(p, ["half", *cols])
        t.insert(1, "group", "/".join(cols))
        t.insert(2, "key", t[cols].astype(str).agg(" ".join, axis=1))
        out.append(t.drop(columns=cols))
    t = pd.concat(out, ignore_index=True)
    worst = t[["tput_bias", "itl_bias", "ttft_bias"]].abs().max(axis=1)
    t["beyond_target"] = ((t["half"] == "held out") & (t["rows"] >= BIAS_MIN_ROWS)
                          & (worst > BIAS_TARGET))
    return t.sort_values(["group", "key", "half"], kind="stable").reset_index(drop=True)


def release_table(fitted: bool = True) -> pd.DataFrame:
    """Bias per run month (software release) of each GPU, precision and engine (in-scope
    InferenceX rows, both halves): the same configurations measured at other dates move by
    more than the per-group target (MI300X SGLang ITL)."""
    p = predictions(fitted)
    p = p[p["in_scope"] & (p["source"] == "InferenceX")]
    p = p.assign(month=p["date"].str[:7])
    return v.error_table(p, ["gpu", "precision", "engine", "month"])


def _fit_params_for(acc_id: str) -> PerfParams:
    return v.FITTED.bench_params_for(acc_id, PerfParams())


def max_throughput_table(fitted: bool = False) -> pd.DataFrame:
    """TensorRT-LLM/MLPerf maximum-throughput rows: the 9 calibration rows, the 53 H100/H200
    holdout rows and the 20 B200 FP4 rows of the same perf-overview page (the calibration
    rows and the 10 Llama-3.3-70B B200 rows are in the closed-loop fit's objective)."""
    cat = load_catalog()
    out = []
    cal = predict_calibration(load_measurements(),
                              _fit_params_for("h100-sxm") if fitted else PerfParams(), cat)
    cal = cal.assign(set="calibration", accelerator="h100-sxm", precision="fp8")
    cal.loc[cal["hardware"].str.contains("H200"), "accelerator"] = "h200"
    out.append(cal[["id", "set", "accelerator", "precision", "measured_tokens_per_s",
                    "predicted_tokens_per_s", "error", "abs_error"]])
    for path, name in ((HOLDOUT, "holdout H100/H200"), (B200_FP4, "B200 FP4")):
        t = pd.read_csv(path)
        t = t[~t["in_calibration_set"]]
        parts = []
        for acc_id, g in t.groupby("accelerator", sort=False):
            pp = _fit_params_for(str(acc_id)) if fitted else PerfParams()
            parts.append(predict_trtllm_bench(g, pp, cat))
        d = pd.concat(parts, ignore_index=True)
        d["id"] = (d["model"] + " " + d["accelerator"] + " TP" + d["tp"].astype(str) + " "
                   + d["isl"].astype(str) + "/" + d["osl"].astype(str))
        d = d.rename(columns={"output_tokens_per_s": "measured_tokens_per_s"})
        d["set"] = name
        if path == B200_FP4:  # Llama-3.3-70B rows anchor the closed-loop fit; 405B held out
            d["set"] = np.where(d["model"] == "llama-3.3-70b", "B200 FP4 70B (fit anchor)",
                                "B200 FP4 405B (held out)")
        out.append(d[["id", "set", "accelerator", "precision", "measured_tokens_per_s",
                      "predicted_tokens_per_s", "error", "abs_error"]])
    return pd.concat(out, ignore_index=True)


def max_throughput_summary(fitted: bool = False) -> pd.DataFrame:
    t = max_throughput_table(fitted)
    g = t.groupby("set", sort=False)
    s = g.agg(rows=("error", "size"), median_abs_error=("abs_error", "median"),
              max_abs_error=("abs_error", "max"), bias=("error", "median")).reset_index()
    rows = []
    for name, sel in (("B200 FP4 (both)", t["set"].str.startswith("B200")),
                      ("held out (H100/H200 holdout + B200 405B)",
                       t["set"].isin(["holdout H100/H200", "B200 FP4 405B (held out)"])),
                      ("all", t["set"].notna())):
        x = t[sel]
        rows.append({"set": name, "rows": len(x), "median_abs_error": x["abs_error"].median(),
                     "max_abs_error": x["abs_error"].max(), "bias": x["error"].median()})
    return pd.concat([s, pd.DataFrame(rows)], ignore_index=True)


#: NVIDIA's MLPerf Inference v4.1 Llama-2-70B Server run on 8x H100-SXM (four TP2
#: replicas, target_qps 75): mlcommons/inference_results_v4.1
#: ``closed/NVIDIA/results/DGX-H100_H100-SXM-80GBx8_TRT/llama2-70b-99.9/Server/performance/
#: run_1/mlperf_log_summary.txt``. Latencies in seconds.
MLPERF_SERVER_LOG = {
    "scheduled_qps": 75.10, "completed_qps": 74.42, "tokens_per_s": 21605.79,
    "mean_latency_s": 44.954547225, "p50_latency_s": 39.053490745,
    "p90_latency_s": 81.390733301, "p99_latency_s": 144.812821227,
    "mean_ttft_s": 0.275926440, "p99_ttft_s": 0.461278089,
    "mean_tpot_s": 0.154960329, "p99_tpot_s": 0.175354317,
    "ttft_bound_s": 2.0, "tpot_bound_s": 0.2,
}


def mlperf_output_cv(log: dict | None = None) -> float:
    """Coefficient of variation of the MLPerf output lengths, from the Server log: with an
    almost constant TPOT (p99/mean 1.13) a query's latency is ``TTFT + (O - 1) TPOT``, so
    ``O`` at the median and mean follow from the latency percentiles; a lognormal with that
    median/mean ratio ``r`` has ``sigma^2 = -2 ln r`` and ``cv = sqrt(exp(sigma^2) - 1)``."""
    g = log or MLPERF_SERVER_LOG
    o_mean = (g["mean_latency_s"] - g["mean_ttft_s"]) / g["mean_tpot_s"] + 1.0
    o_med = (g["p50_latency_s"] - g["mean_ttft_s"]) / g["mean_tpot_s"] + 1.0
    s2 = -2.0 * np.log(min(o_med / o_mean, 1.0))
    return float(np.sqrt(np.expm1(s2)))


def _mlperf_step_check(llm, acc, p_off, p_srv, g: dict, replicas: int) -> dict:
    """Engine step time each MLPerf run implies vs the model's at the same decode batch.

    Offline: the batch stays at ``gpu_batch_size`` (896), so a step takes ``896 / (tokens/s
    per replica)``. Server: the requests decoding (Little's law: completed queries/s x (mean
    latency - mean TTFT) per replica) over the tokens/s per replica; it is also the log's
    mean TPOT."""
    off_tps = float(load_measurements().set_index("id")["value"]["M1"]) / replicas
    d_off = float(CASES["M1"].max_batch)
    d_srv = g["completed_qps"] * (g["mean_latency_s"] - g["mean_ttft_s"]) / replicas
    out = {"offline_batch": d_off, "measured_offline_step_s": d_off / off_tps,
           "server_batch": d_srv,
           "measured_server_step_s": d_srv / (g["tokens_per_s"] / replicas)}
    for name, d, p in (("offline", d_off, p_off), ("server", d_srv, p_srv)):
        arr = capacity_grid(llm, acc, gpus=CASES["M1"].gpus_per_replica,
                            precision=CASES["M1"].precision,
                            input_tokens=MLPERF_MEAN_INPUT_TOKENS,
                            output_tokens=MLPERF_MEAN_OUTPUT_TOKENS, concurrency=d, params=p)
        out[f"pred_{name}_step_s"] = float(np.asarray(arr["step_s"]).reshape(-1)[0])
    return out


def server_scenario(fitted: bool = False, percentile: float = 99.0,
                    tpot_bounds_s: tuple[float, ...] = (0.2, 0.15, 0.12, 0.1)) -> pd.DataFrame:
    """MLPerf Server vs Offline (Llama-2-70B, 8x H100, four TP2 replicas, the calibrated
    defaults unless ``fitted``).

    Server: the highest Poisson rate into the pool of four replicas (``servers=4``: the
    harness spreads LoadGen's single stream over them) whose TTFT and TPOT percentiles meet
    the bounds (MLPerf: TTFT <= 2 s and TPOT <= 200 ms at the 99th percentile; tighter TPOT
    bounds below it), with the server's ``gpu_batch_size`` 1024 (offline 896), the KV cache
    holding the requests in the system with a percentile margin, and the output lengths
    varying as the Server log implies (:func:`mlperf_output_cv`); vs the offline maximum.
    Measured: Server 21,605.79 vs Offline 24,524.9 output tokens/s.

    The MLPerf row also carries the model's p99 TTFT/TPOT and requests in a replica at the
    run's scheduled rate (75.10 queries/s) beside the log's (``MLPERF_SERVER_LOG``; requests
    in the system by Little's law). At that rate the log's p99 TTFT is 0.46 s of 2 s and p99
    TPOT 175 of 200 ms: neither bound binds there, and the server rate is the submitter's
    ``target_qps`` (75; offline ran at 83.3 queries/s), not a latency limit. What the two
    logs do show is a different engine speed (:func:`_mlperf_step_check`): a step of the
    server run takes longer (0.154 s at 831 requests decoding) than one of the offline run
    (0.146 s at 896), which one step model cannot give; the model's step (0.148 and 0.158 s)
    lies between them, hence its gap of 0.2 % against the measured 11.9 %.
    """
    llms, accs, _ = _specs(load_catalog())
    off, srv = CASES["M1"], CASES["M2"]
    base = _fit_params_for("h100-sxm") if fitted else PerfParams()
    llm, acc = llms[off.llm], accs[off.accelerator]
    p_off = case_params(off, llm, acc, base)
    cap = replica_capacity(llm, acc, gpus=off.gpus_per_replica, precision=off.precision,
                           input_tokens=off.input_tokens, output_tokens=off.output_tokens,
                           params=p_off)
    p_srv = case_params(srv, llm, acc, base)
    sm = step_model(llm, acc, srv.gpus_per_replica, srv.precision, p_srv)
    offline = cap.output_tokens_per_s * off.replicas
    meas = load_measurements().set_index("id")["value"]
    g = MLPERF_SERVER_LOG
    cv_out = mlperf_output_cv(g)
    kw = dict(input_tokens=MLPERF_MEAN_INPUT_TOKENS, output_tokens=MLPERF_MEAN_OUTPUT_TOKENS,
              cv_out=cv_out, servers=float(srv.replicas))
    at = open_loop(sm, np.array([g["scheduled_qps"] / srv.replicas]),
                   quantile=percentile / 100.0, **kw)
    rows = [{"scenario": "offline (max throughput)", "tpot_bound_s": np.nan,
             "measured_tokens_per_s": meas["M1"], "predicted_tokens_per_s": offline,
             "limited_by": cap.limited_by}]
    for b in tpot_bounds_s:
        sc = slo_capacity(sm, ttft_slo_s=2.0, tpot_slo_s=b, percentile=percentile, **kw)
        row = {
            "scenario": f"server, TTFT p{percentile:g} <= 2 s, TPOT p{percentile:g} <= "
                        f"{b * 1e3:g} ms" + (" (MLPerf)" if b == 0.2 else ""),
            "tpot_bound_s": b,
            "measured_tokens_per_s": meas["M2"] if b == 0.2 else np.nan,
            "predicted_tokens_per_s": sc.requests_per_s * MLPERF_MEAN_OUTPUT_TOKENS
            * srv.replicas,
            "limited_by": sc.limited_by, "ttft_s": sc.ttft_s, "tpot_s": sc.tpot_s}
        if b == 0.2:
            row.update({
                "pred_ttft_p99_at_measured_rate_s": float(at.ttft_s[0]),
                "measured_ttft_p99_s": g["p99_ttft_s"],
                "pred_tpot_p99_at_measured_rate_s": float(at.tpot_s[0]),
                "measured_tpot_p99_s": g["p99_tpot_s"],
                "pred_in_system_at_measured_rate": float(at.in_system[0]),
                "measured_in_system": g["completed_qps"] * g["mean_latency_s"] / srv.replicas,
                "output_cv": cv_out, **_mlperf_step_check(llm, acc, p_off, p_srv, g,
                                                          srv.replicas)})
        rows.append(row)
    d = pd.DataFrame(rows)
    d["share_of_offline"] = d["predicted_tokens_per_s"] / offline
    d["error"] = d["predicted_tokens_per_s"] / d["measured_tokens_per_s"] - 1.0
    return d


def chart(path: Path | None = None):
    """Predicted vs measured (held-out, in scope), one panel per metric, log axes."""
    import altair as alt

    h = heldout()
    long = []
    for metric, m, pr in (("output tokens/s", "output_tokens_per_s",
                           "pred_output_tokens_per_s"),
                          ("ITL (ms)", "itl_target_ms", "pred_itl_ms"),
                          ("TTFT (ms)", "ttft_target_ms", "pred_ttft_ms")):
        long.append(pd.DataFrame({"metric": metric, "measured": h[m], "predicted": h[pr],
                                  "gpu": h["gpu"] + " " + h["precision"],
                                  "engine": h["engine"], "concurrency": h["concurrency"]}))
    d = pd.concat(long, ignore_index=True)
    base = alt.Chart(d).encode(
        x=alt.X("measured:Q", scale=alt.Scale(type="log")),
        y=alt.Y("predicted:Q", title="predicted", scale=alt.Scale(type="log")))
    pts = base.mark_point(filled=True, size=25, opacity=0.6).encode(
        color=alt.Color("gpu:N", title="GPU, precision"), shape="engine:N",
        tooltip=["metric", "gpu", "engine", "concurrency", "measured", "predicted"])
    line = base.mark_line(color="gray", strokeDash=[4, 4]).encode(
        x="measured:Q", y=alt.Y("measured:Q", title="predicted"))
    ch = alt.layer(pts, line, data=d).properties(width=240, height=240).facet(
        column=alt.Column("metric:N", title=None)).resolve_scale(x="independent",
                                                                 y="independent")
    ch = ch.properties(title="Closed-loop benchmarks, held-out rows: predicted vs measured")
    if path is not None:
        ch.save(str(path))
    return ch


def to_markdown(df: pd.DataFrame) -> str:
    def fmt(x):
        if isinstance(x, float | np.floating):
            if np.isnan(x):
                return ""
            return f"{x:,.3f}" if abs(x) < 100 else f"{x:,.0f}"
        return str(x)

    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(int(v)) if c == "rows" and v == v else fmt(v)
                                for c, v in zip(cols, r, strict=True)) + " |"
              for r in df.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    out = sys.stdout
    sections = [
        ("Held-out vs fit half (fitted parameters)", summary_table()),
        ("Held-out by GPU", by_table(["gpu"])),
        ("Held-out by precision", by_table(["precision"])),
        ("Held-out by GPU and precision", by_table(["gpu", "precision"])),
        ("Held-out by source and engine", by_table(["source", "engine"])),
        ("Held-out by lengths", by_table(["isl", "osl"])),
        ("Bias per GPU, precision and engine, held out and fit half", bias_table()),
        ("Bias per run month (software release), both halves", release_table()),
        ("Default parameters (before the fit), same rows", summary_table(False)),
        ("Maximum-throughput rows, model defaults", max_throughput_summary(False)),
        ("Maximum-throughput rows with the closed-loop fit (transfer check)",
         max_throughput_summary(True)),
        ("Server vs offline (MLPerf Llama-2-70B, 8x H100)", server_scenario()),
    ]
    for title, t in sections:
        print(f"### {title}\n\n{to_markdown(t)}\n", file=out)
    try:
        chart(HERE / "closed_loop_pred_vs_measured.png")
    except Exception as exc:  # noqa: BLE001 - a PNG renderer is optional
        print(f"(chart not written: {exc})", file=sys.stderr)


if __name__ == "__main__":
    main()
