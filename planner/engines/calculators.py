"""Study calculators: pre-training (6ND), inference FLOPs per token, token economics.

These answer the seeds' first-principles questions (what does training a model on D tokens
cost, what does a token cost at 2N FLOPs, why does an output token cost more than an input
token); they price no deployment option, so they live apart from the one model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from planner.config import med
from planner.costs import training as tr
from planner.results import Records


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> Records:
    """The table's rows; :class:`planner.engines.deterministic.Results` makes the DataFrame
    on first access (:mod:`planner.results`), so ``planner cost`` need not import pandas."""
    return Records.of(rows, columns)


class Calculators:
    """The scenario's ``[pretraining.*]``, ``[inference_flops.*]`` and ``[token_economics.*]``
    tables, each row with its formula and catalog rows (recorded through ``trace.use``)."""

    def __init__(self, sc: Any, cat: Any, trace: Any):
        self.sc, self.cat, self.trace = sc, cat, trace

    def cheapest_gpu_hour(self, accelerator: str, plan: str) -> float:
        best = self.cat.cheapest_cloud(accelerator, plan, required=True)
        self.trace.use("clouds", self.cat.cloud(best["id"]))
        return float(best["usd_per_gpu_hour"])

    def _peak(self, job) -> tuple[float, str]:
        if job.peak_tflops is not None:
            return med(job.peak_tflops), "scenario peak_tflops"
        row = self.trace.use("accelerators", self.cat.accelerator(job.accelerator))
        return float(row["bf16_tflops"]), f"accelerators.csv {row['id']} bf16_tflops"

    def _params(self, job) -> tuple[float, str]:
        if job.params_b is not None:
            return med(job.params_b), "scenario params_b"
        row = self.trace.use("llms", self.cat.llm(job.model))
        return float(row["params_b"]), f"llms.csv {row['id']}"

    def _gpu_hour(self, job) -> tuple[float, int, str]:
        """(usd per instance-hour, chips per instance, basis)."""
        if getattr(job, "usd_per_instance_hour", None) is not None:
            return med(job.usd_per_instance_hour), job.gpus_per_instance, "scenario"
        if job.usd_per_gpu_hour is not None:
            return med(job.usd_per_gpu_hour), 1, "scenario usd_per_gpu_hour"
        row = self.trace.use("clouds", self.cat.cloud(job.cloud_offering))
        if row.get("usd_per_instance_hour") is not None:
            return (float(row["usd_per_instance_hour"]), int(row["gpus_per_instance"] or 1),
                    f"cloud_prices.csv {row['id']}")
        return float(row["usd_per_gpu_hour"]), 1, f"cloud_prices.csv {row['id']}"

    def pretraining(self) -> Records:
        rows = []
        for name, job in self.sc.pretraining.items():
            n_b, nsrc = self._params(job)
            peak, psrc = self._peak(job)
            price, chips, prsrc = self._gpu_hour(job)
            d = med(job.tokens)
            mfu = med(job.mfu)
            flops = float(tr.training_flops(n_b, d))
            hours = float(tr.chip_hours(flops, peak, mfu))
            usd_list = hours * price / chips
            usd = usd_list * (1.0 - med(job.discount))
            rows.append({
                "job": name, "params_b": n_b, "tokens": d, "flops": flops, "mfu": mfu,
                "peak_tflops": peak, "gpu_hours": hours,
                "days": hours / job.gpus / 24.0 if job.gpus else np.nan,
                "usd_per_gpu_hour": price / chips, "usd_before_discount": usd_list,
                "discount": med(job.discount), "usd": usd,
                "basis": f"6 x {n_b:g}e9 x {d:.4g} / ({peak:g} TFLOPS x {mfu:g}) x "
                         f"{price / chips:.4g} usd/chip-h [{nsrc}; {psrc}; {prsrc}]",
            })
        return _frame(rows, ["job", "params_b", "tokens", "flops", "mfu", "peak_tflops",
                             "gpu_hours", "days", "usd_per_gpu_hour", "usd_before_discount",
                             "discount", "usd", "basis"])

    def inference_flops(self) -> Records:
        rows = []
        for name, job in self.sc.inference_flops.items():
            n_b, nsrc = self._params(job)
            peak, psrc = self._peak(job)
            price, chips, prsrc = self._gpu_hour(job)
            mfu = med(job.mfu)
            usd = float(tr.usd_per_ktok_inference(n_b, peak, mfu, price, chips))
            rows.append({
                "estimate": name, "params_b": n_b, "peak_tflops": peak, "chips": chips,
                "mfu": mfu, "usd_per_instance_hour": price, "usd_per_ktok": usd,
                "usd_per_mtok": usd * 1000.0,
                "tokens_per_s": chips * peak * 1e12 * mfu / float(tr.inference_flops(n_b)),
                "basis": f"1000 x 2 x {n_b:g}e9 / ({chips} x {peak:g} TFLOPS x {mfu:g}) x "
                         f"{price:.5g} usd/h / 3600 [{nsrc}; {psrc}; {prsrc}]",
            })
        return _frame(rows, ["estimate", "params_b", "peak_tflops", "chips", "mfu",
                             "usd_per_instance_hour", "usd_per_ktok", "usd_per_mtok",
                             "tokens_per_s", "basis"])


    def token_economics(self) -> Records:
        """GPU cost of an input (prefill) token vs an output (decode) token (article 002)."""
        from planner.perf import AcceleratorSpec, LLMSpec, step_model

        rows = []
        for name, t in self.sc.token_economics.items():
            llm_row = self.trace.use("llms", self.cat.llm(t.model))
            acc_row = self.trace.use("accelerators", self.cat.accelerator(t.accelerator))
            sm = step_model(LLMSpec.from_row(llm_row), AcceleratorSpec.from_row(acc_row),
                            t.gpus, t.precision)
            price = med(t.usd_per_gpu_hour) if t.usd_per_gpu_hour is not None else (
                self.cheapest_gpu_hour(t.accelerator, "on-demand"))
            usd_per_s = price * t.gpus / 3600.0
            isl, osl = med(t.input_tokens), med(t.output_tokens)
            prefill_s_per_tok = float(np.asarray(sm.prefill_time_s(isl))) / isl
            kv_mid = isl + osl / 2.0
            from planner.perf.memory import max_concurrent_requests

            kv_max_batch = float(max_concurrent_requests(
                sm.memory.kv_capacity_tokens, isl, osl, kv_reserve="mean"))
            ratios = []
            for b in t.batches:
                step = float(np.asarray(sm.decode_step_time_s(b, b * kv_mid)))
                decode_s_per_tok = step / b
                ratio = decode_s_per_tok / prefill_s_per_tok
                ratios.append(ratio)
                rows.append({
                    "estimate": name, "model": t.model, "accelerator": t.accelerator,
                    "gpus": t.gpus, "precision": t.precision, "batch": b,
                    "input_usd_per_mtok": prefill_s_per_tok * usd_per_s * 1e6,
                    "output_usd_per_mtok": decode_s_per_tok * usd_per_s * 1e6,
                    "output_to_input_cost_ratio": ratio,
                    "flops_ratio": 1.0,
                    "fits_kv_memory": b <= kv_max_batch,
                    "basis": f"prefill {isl:g} tokens in one step; decode step at batch {b}, "
                             f"KV {kv_mid:g} tokens/request; {price:g} usd/GPU-h",
                })
            for o in t.compare_offerings:
                row = self.trace.use("apis", self.cat.api(o))
                rows.append({
                    "estimate": name, "model": o, "accelerator": "(API list price)",
                    "gpus": np.nan, "precision": None, "batch": np.nan,
                    "input_usd_per_mtok": row["input_usd_per_mtok"],
                    "output_usd_per_mtok": row["output_usd_per_mtok"],
                    "output_to_input_cost_ratio":
                        row["output_usd_per_mtok"] / row["input_usd_per_mtok"],
                    "flops_ratio": np.nan, "fits_kv_memory": None,
                    "basis": f"api_prices.csv {o} ({row['as_of']})",
                })
        return _frame(rows, ["estimate", "model", "accelerator", "gpus", "precision", "batch",
                             "input_usd_per_mtok", "output_usd_per_mtok",
                             "output_to_input_cost_ratio", "flops_ratio", "fits_kv_memory",
                             "basis"])
