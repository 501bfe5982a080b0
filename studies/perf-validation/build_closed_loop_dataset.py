"""Build ``planner/data/reference/closed_loop_benchmarks.csv`` from the published raw files.

Run once by hand (the output CSV is committed; tests never run this script)::

    python studies/perf-validation/build_closed_loop_dataset.py \\
        --inferencex HISTORY.json BENCHMARKS.json [BENCHMARKS_OLDER.json ...] \\
        --dstack online_results.csv

Inputs (see ``planner/data/reference/SOURCES.md`` for commits, dates and licences):

* SemiAnalysis InferenceX (formerly InferenceMAX) results as served by its dashboard API and
  stored in the dashboard repository's test fixtures
  (``packages/app/cypress/fixtures/api/benchmarks-history.json`` and ``benchmarks.json``):
  one JSON object per run with hardware, framework, precision, tensor/expert parallelism,
  nominal ISL/OSL, concurrency, date, the GitHub Actions run URL and the metrics. Rows kept:
  single-node aggregated serving (``disagg`` false), no speculative decoding, GPUs present in
  the project catalog (B200, H200, MI300X). Duplicates (same configuration, date and run URL
  across files) are merged; a mean metric is kept when any file carries it.
* dstack ``dstackai/benchmarks`` branch ``deepseek-r1-benchmark``
  ``Deepseek-R1/raw_data/online_results.csv``: DeepSeek-R1 on 8x H200 / 8x MI300X with
  SGLang, vLLM and TensorRT-LLM, random dataset 3200/800 tokens, max-concurrency 4-128.
  The ``generated-shared-prefix`` rows (prefix caching) are left out.

Nothing is interpolated or adjusted: every number in the output is a number of the input,
converted to milliseconds and to output tokens/s of the replica (``output_tput_per_gpu x
tp`` for InferenceX, whose per-GPU figures divide by the TP size).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

OUT = (Path(__file__).resolve().parents[2] / "planner" / "data" / "reference"
       / "closed_loop_benchmarks.csv")
ACCESSED = "2026-12-05"
ACC = {"b200": ("B200", "b200"), "h200": ("H200", "h200"), "mi300x": ("MI300X", "mi300x")}
ENGINE = {"sglang": "SGLang", "trt": "TensorRT-LLM", "vllm": "vLLM", "trt-llm": "TensorRT-LLM"}
#: InferenceX's client draws each request's lengths uniformly in [0.8 L, L]
#: (``--random-range-ratio 0.8``): mean 0.9 L. Checked on the rows that publish means:
#: (mean E2E - mean TTFT) / mean TPOT + 1 = 0.899 x OSL (median over 159 rows).
INFERENCEX_LENGTH_SHARE = 0.9
DSTACK_URL = ("https://github.com/dstackai/benchmarks/blob/deepseek-r1-benchmark/"
              "Deepseek-R1/raw_data/online_results.csv")
DSTACK_VERSIONS = {  # Deepseek-R1/README.md of the same branch
    ("h200", "sglang"): "0.4.3.post2", ("mi300x", "sglang"): "0.4.2.post4",
    ("h200", "vllm"): "0.7.4.dev181+gf35f8e22", ("mi300x", "vllm"): "0.7.3.dev138+g21f6ca217",
    ("h200", "trt-llm"): "0.17.post1.dev",
}
COLUMNS = ["id", "source", "model", "catalog_model", "hardware", "accelerator", "gpus",
           "precision", "tp", "ep", "dp_attention", "isl", "osl", "mean_input_tokens",
           "mean_output_tokens", "concurrency", "engine", "engine_version", "ttft_mean_ms",
           "ttft_median_ms", "itl_mean_ms", "itl_median_ms", "output_tokens_per_s", "date",
           "source_url", "accessed"]


def inferencex_rows(paths: list[Path]) -> pd.DataFrame:
    frames = []
    for order, p in enumerate(paths):
        df = pd.json_normalize(json.loads(Path(p).read_text()))
        df["_order"] = order
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df = df[(~df["disagg"].astype(bool)) & (df["spec_method"] == "none")
            & (~df["is_multinode"].astype(bool)) & df["hardware"].isin(list(ACC))
            & (df["model"] == "dsr1")].copy()
    key = ["hardware", "framework", "precision", "decode_tp", "decode_ep",
           "decode_dp_attention", "isl", "osl", "conc", "date", "run_url"]
    # merge duplicates: first non-null value of each column over the files
    df = df.sort_values("_order").groupby(key, as_index=False, dropna=False).first()
    if "image" not in df:
        df["image"] = np.nan
    m = lambda c: pd.to_numeric(df.get("metrics." + c), errors="coerce")  # noqa: E731
    tp = df["decode_tp"].astype(int)
    out = pd.DataFrame({
        "source": "InferenceX",
        "model": "DeepSeek-R1-0528",
        "catalog_model": "deepseek-v3",
        "hardware": [f"{t}x {ACC[h][0]}" for t, h in zip(tp, df["hardware"], strict=True)],
        "accelerator": [ACC[h][1] for h in df["hardware"]],
        "gpus": tp,
        "precision": df["precision"],
        "tp": tp,
        "ep": df["decode_ep"].astype(int),
        "dp_attention": df["decode_dp_attention"].astype(bool),
        "isl": df["isl"].astype(int),
        "osl": df["osl"].astype(int),
        "mean_input_tokens": df["isl"] * INFERENCEX_LENGTH_SHARE,
        "mean_output_tokens": df["osl"] * INFERENCEX_LENGTH_SHARE,
        "concurrency": df["conc"].astype(int),
        "engine": [ENGINE[f] for f in df["framework"]],
        "engine_version": df["image"].fillna("not in the published row (see run)"),
        "ttft_mean_ms": m("mean_ttft") * 1e3,
        "ttft_median_ms": m("median_ttft") * 1e3,
        "itl_mean_ms": m("mean_tpot") * 1e3,
        "itl_median_ms": m("median_tpot") * 1e3,
        "output_tokens_per_s": m("output_tput_per_gpu") * tp,
        "date": df["date"],
        "source_url": df["run_url"],
        "accessed": ACCESSED,
    })
    return out.dropna(subset=["ttft_median_ms", "itl_median_ms", "output_tokens_per_s"])


def dstack_rows(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, encoding="utf-8-sig")
    df = df[df["dataset_name"] == "random"].copy()
    gpu = df["GPU"].str.lower()
    out = pd.DataFrame({
        "source": "dstack",
        "model": "DeepSeek-R1",
        "catalog_model": "deepseek-v3",
        "hardware": [f"8x {ACC[g][0]}" for g in gpu],
        "accelerator": [ACC[g][1] for g in gpu],
        "gpus": 8,
        "precision": "fp8",
        "tp": 8,
        "ep": 1,
        "dp_attention": False,
        "isl": df["random_input_len"].astype(int),
        "osl": df["random_output_len"].astype(int),
        "mean_input_tokens": df["total_input_tokens"] / df["completed"],
        "mean_output_tokens": df["total_output_tokens"] / df["completed"],
        "concurrency": df["max_concurrency"].astype(int),
        "engine": [ENGINE[b] for b in df["backend"]],
        "engine_version": [DSTACK_VERSIONS.get((g, b), "see README")
                           for g, b in zip(gpu, df["backend"], strict=True)],
        "ttft_mean_ms": df["mean_ttft_ms"],
        "ttft_median_ms": df["median_ttft_ms"],
        "itl_mean_ms": df["mean_tpot_ms"],
        "itl_median_ms": df["median_tpot_ms"],
        "output_tokens_per_s": df["output_throughput"],
        "date": "2025-03-18",
        "source_url": DSTACK_URL,
        "accessed": ACCESSED,
    })
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inferencex", nargs="+", type=Path, required=True)
    ap.add_argument("--dstack", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    df = pd.concat([inferencex_rows(a.inferencex), dstack_rows(a.dstack)], ignore_index=True)
    df = df.sort_values(["source", "accelerator", "engine", "precision", "tp", "ep",
                         "dp_attention", "isl", "osl", "concurrency", "date"],
                        kind="stable").reset_index(drop=True)
    prefix = df["source"].map({"InferenceX": "X", "dstack": "D"})
    df["id"] = prefix + (df.groupby(prefix).cumcount() + 1).astype(str)
    df = df[COLUMNS]
    df.to_csv(a.out, index=False, float_format="%.6g")
    print(f"{len(df)} rows -> {a.out}")


if __name__ == "__main__":
    main()
