"""Azure LLM inference traces: fitted workload classes, latency profile, GPUs for an SLO.

Run ``python studies/azure-trace/azure_trace.py`` to print every table as Markdown. Each
table is a function returning a pandas DataFrame; :func:`study_tables` returns them all.

Deployment: Llama-3.1-8B in BF16 on one H100-SXM per replica, step times from the project's
performance model (``planner.perf.step_model``), batch cap 64, shared FCFS queue. Prefill
times are the model's own; decode steps use its affine fit over batches 1-64 (relative error
reported by :func:`model_fit_error`, ~1e-14: the model is memory-bound and affine there),
which lets the simulator jump over decode iterations in closed form. The replica price is
illustrative (USD 3.00 per GPU-hour).
"""

from __future__ import annotations

import sys
from functools import cache

import pandas as pd

from planner.sim import SLO, LinearStepModel, PoolSpec, SimPlan, simulate
from planner.traces import azure_trace, fit_trace, replay

USD_PER_GPU_HOUR = 3.0
MAX_BATCH = 64
#: interactive SLO used for "GPUs needed": TTFT <= 1 s and TPOT <= 50 ms for 99% of requests
SLO_INTERACTIVE = SLO(ttft_s=1.0, tpot_s=0.05)
TARGET_ATTAINMENT = 0.99


@cache
def _models():
    from planner.catalog import load_catalog
    from planner.perf import AcceleratorSpec, LLMSpec, step_model

    cat = load_catalog()
    exact = step_model(
        LLMSpec.from_row(cat.llm("llama-3.1-8b")),
        AcceleratorSpec.from_row(cat.accelerator("h100-sxm")),
        1,
        "bf16",
    )
    fitted, err = LinearStepModel.fit(
        exact, max_prompt_tokens=16384, max_batch=MAX_BATCH, exact_prefill=True
    )
    return exact, fitted, err


def replica_model():
    """Step model of one replica (Llama-3.1-8B, BF16, 1 x H100-SXM): exact prefill, affine decode."""
    return _models()[1]


def model_fit_error() -> float:
    """Largest relative error of the affine decode fit over batches 1-64."""
    return _models()[2]


def fit_table() -> pd.DataFrame:
    """Fitted parameters and goodness of fit of both traces (metric x trace)."""
    tabs = [fit_trace(azure_trace(k), name=k).table() for k in ("conv", "code")]
    out = pd.concat(tabs).pivot(index="metric", columns="trace", values="value")
    order = tabs[0]["metric"].tolist()
    return out.loc[order, ["conv", "code"]]


def _run(kind: str, replicas: int, rate_scale: float = 1.0, slo: SLO = SLO_INTERACTIVE):
    tr = azure_trace(kind)
    pool = PoolSpec(
        "h100",
        replica_model(),
        replicas=replicas,
        usd_per_replica_hour=USD_PER_GPU_HOUR,
        max_batch=MAX_BATCH,
    )
    plan = SimPlan(pools=(pool,), slos={kind: slo}, util_interval_s=300.0)
    return simulate(plan, replay(tr, rate_scale=rate_scale, class_name=kind))


def latency_profile(
    kind: str = "conv", replicas=(1, 2, 3, 4), rate_scale: float = 1.0
) -> pd.DataFrame:
    """Latency percentiles, SLO attainment, utilisation and cost by number of replicas."""
    rows = []
    for n in replicas:
        r = _run(kind, n, rate_scale)
        lat = r.latency_table().loc["all"]
        dep = r.deployments.set_index("deployment").loc["h100"]
        rows.append(
            {
                "trace": kind,
                "rate_scale": rate_scale,
                "replicas": n,
                "ttft_p50_s": lat["ttft_p50_s"],
                "ttft_p99_s": lat["ttft_p99_s"],
                "tpot_p50_s": lat["tpot_p50_s"],
                "tpot_p99_s": lat["tpot_p99_s"],
                "e2e_p99_s": lat["e2e_p99_s"],
                "slo_attainment": lat["slo_attainment"],
                "busy_share": float(r.utilisation["busy_share"].mean()),
                "mean_batch": float(r.utilisation["mean_batch"].mean()),
                "usd_per_1k_requests": dep["usd_per_1k_requests"],
            }
        )
    return pd.DataFrame(rows)


def gpus_for_slo(
    cases=(
        ("conv", 1.0),
        ("conv", 4.0),
        ("conv", 16.0),
        ("code", 1.0),
        ("code", 4.0),
        ("code", 16.0),
    ),
    max_replicas: int = 32,
) -> pd.DataFrame:
    """Fewest replicas meeting the SLO for ``TARGET_ATTAINMENT`` of requests, per trace/rate."""
    rows = []
    for kind, scale in cases:
        found = None
        for n in range(1, max_replicas + 1):
            r = _run(kind, n, scale)
            att = float(r.latency_table().loc["all", "slo_attainment"])
            if att >= TARGET_ATTAINMENT:
                found = (n, att, r)
                break
        n, att, r = found if found else (None, float("nan"), None)
        rows.append(
            {
                "trace": kind,
                "rate_scale": scale,
                "requests_per_s": fit_trace(azure_trace(kind)).rate_per_s * scale,
                "gpus_needed": n,
                "slo_attainment": att,
                "ttft_p99_s": float(r.latency_table().loc["all", "ttft_p99_s"])
                if r
                else float("nan"),
                "busy_share": float(r.utilisation["busy_share"].mean()) if r else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def study_tables() -> dict[str, pd.DataFrame]:
    """All tables of the study."""
    return {
        "fit": fit_table(),
        "latency_conv": latency_profile("conv"),
        "latency_code": latency_profile("code"),
        "gpus_for_slo": gpus_for_slo(),
    }


def main() -> None:
    for name, df in study_tables().items():
        sys.stdout.write(f"\n## {name}\n\n{df.to_string(float_format=lambda v: f'{v:.4g}')}\n")
    sys.stdout.write(f"\naffine decode fit, max relative error: {model_fit_error():.2g}\n")


if __name__ == "__main__":
    main()
