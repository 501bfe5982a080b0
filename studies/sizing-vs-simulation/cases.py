"""Sizing vs simulation: generated scenarios, sized by the model, simulated at that sizing.

``cases(n, seed)`` draws scenarios across dense and MoE models, 1-8 GPUs per replica,
prefill-heavy, decode-heavy and long-context lengths, flat and peaked profiles, arrival
burstiness CV 1-4 and tight and loose SLOs; ``check(case)`` sizes the one self-hosted option
with the open-loop capacity (no HA reserve, utilisation target 1, so the capacity figure is
not padded), simulates its busiest hour at that sizing and at one replica fewer, and returns
the SLO attainment of both. Used by ``run.py`` (the study) and by
``tests/test_sizing_vs_simulation.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from planner.catalog import load_catalog
from planner.config import parse_scenario
from planner.model.evaluate import Model
from planner.model.sizing import size_options
from planner.sim.scenario import draw_seeds, simulate_scenario
from planner.workload import busiest_hour, diurnal_weights

CAT = load_catalog()

#: (model, accelerator, GPUs per replica, precision)
HARDWARE = [
    ("llama-3.1-8b", "h100-sxm", 1, "fp8"),
    ("qwen2.5-7b", "l40s", 1, "fp8"),
    ("llama-3.1-70b", "h100-sxm", 2, "fp8"),
    ("llama-3.1-70b", "h100-sxm", 4, "fp8"),
    ("qwen2.5-72b", "h100-sxm", 2, "fp8"),
    ("mixtral-8x7b", "a100-80gb", 2, "bf16"),
    ("llama-3.1-405b", "h100-sxm", 8, "fp8"),
]
#: (name, input tokens, context tokens, output tokens)
SHAPES = [
    ("prefill-heavy", 300, 2000, 200),
    ("decode-heavy", 200, 0, 800),
    ("chat", 600, 400, 300),
    ("long-context", 300, 12000, 300),
]


def cases(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` generated scenario dicts (see the module docstring)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        model, acc, gpus, prec = HARDWARE[k % len(HARDWARE)]
        shape, inp, ctx, outp = SHAPES[int(rng.integers(len(SHAPES)))]
        tight = bool(rng.integers(2))
        slo = ({"ttft_s": 1.0, "tpot_s": 0.05} if tight else {"ttft_s": 3.0, "tpot_s": 0.1})
        if shape == "long-context":
            slo["ttft_s"] *= 3.0
        out.append({
            "scenario": {"name": f"case {k}: {model} x{gpus} {acc} {shape}"},
            "planning": {"capacity": "open-loop", "utilisation_target": 1.0,
                         "ha_reserve_replicas": 0},
            "simulation": {"burstiness_cv": float(rng.choice([1.0, 1.0, 2.0, 4.0])),
                           "length_cv": float(rng.choice([0.0, 0.5, 1.0]))},
            "workload": {"w": {
                "requests_per_day": float(rng.uniform(0.2, 1.0)) * 10 ** float(
                    rng.uniform(4.5, 6.0)),
                "diurnal": str(rng.choice(["flat", "business"])),
                "input": {"tokens": inp}, "context": {"tokens": ctx},
                "output": {"tokens": outp}, "slo": slo}},
            "cloud": {"gpu": {"model": model, "accelerator": acc, "gpus_per_replica": gpus,
                              "precision": prec, "usd_per_gpu_hour": 2.0}},
        })
    return out


def check(data: dict[str, Any], *, seed: int = 0, draws: int = 1) -> dict[str, Any]:
    """Size the case, simulate its busiest hour at the sizing and one replica fewer.

    With ``draws > 1`` also ``draws`` independent arrival draws of that hour
    (:func:`planner.sim.scenario.draw_seeds`, the first is ``seed``'s): the mean attainment
    (``attainment_{at,below}_mean``, its ``_min`` and ``_max``) and the draws that meet the target
    (``draws_meeting_{at,below}``)."""
    sc = parse_scenario(data, catalog=CAT)
    size = size_options(sc, CAT)["gpu"]
    row = {"case": sc.name, "replicas": size.replicas,
           "rps_per_replica": size.requests_per_s_per_replica.get("w", np.nan),
           "served": bool(size.classes_served)}
    if not size.classes_served or size.replicas < 1:
        return row
    m = Model(sc, CAT)
    o = m.by_name["gpu"]
    row["limited_by"] = o.capacity_rows[0]["limited_by"]
    hour = busiest_hour(diurnal_weights(sc.workload["w"].diurnal))[0]
    for label, reps in (("at", size.replicas), ("below", size.replicas - 1)):
        if reps < 1:
            row[f"attainment_{label}"] = np.nan
            continue
        (run,) = simulate_scenario(sc, catalog=CAT, deployments=["gpu"], hours=1,
                                   start_hour=hour, seed=seed, replicas={"gpu": reps})
        lat = run.latency().set_index("class").loc["w"]
        row[f"attainment_{label}"] = float(lat["slo_attainment"])
        if draws > 1:
            att = [float(lat["slo_attainment"])]
            for s in draw_seeds(seed, draws)[1:]:
                (r,) = simulate_scenario(sc, catalog=CAT, deployments=["gpu"], hours=1,
                                         start_hour=hour, seed=s, replicas={"gpu": reps})
                att.append(float(r.latency().set_index("class").loc["w", "slo_attainment"]))
            row[f"attainment_{label}_mean"] = float(np.mean(att))
            row[f"attainment_{label}_min"] = float(np.min(att))
            row[f"attainment_{label}_max"] = float(np.max(att))
            row[f"draws_meeting_{label}"] = int(np.sum(np.array(att) >= lat["slo_target"]))
        row[f"dropped_{label}"] = int(lat["dropped"]) if "dropped" in lat else 0
        row[f"ttft_p90_{label}"] = float(lat["ttft_p90_s"])
        row[f"tpot_p90_{label}"] = float(lat["tpot_p90_s"])
        row["target"] = float(lat["slo_target"])
    return row
