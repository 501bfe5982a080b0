"""Synthetic tables in the shape of each provider contract (:mod:`planner.report.providers`).

They are NOT results: they exist so that the report's sections and charts for engines that
land later can be tested and previewed, and so that engine authors can see the exact shape the
report reads. Every number is drawn from the ``rng`` passed in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def risk_tables(rng: np.random.Generator, deployments: Sequence[str] = ("api", "cloud", "onprem"),
                n: int = 4000) -> dict[str, pd.DataFrame]:
    """``samples``, ``summary``, ``win``, ``tornado``, ``paths`` for a few options."""
    k = len(deployments)
    med = 1e4 * (1.0 + np.arange(k))
    draws = med[None, :] * rng.lognormal(0.0, 0.3, size=(n, k))
    samples = pd.DataFrame({"deployment": np.repeat(np.asarray(deployments), n),
                            "usd_per_month": draws.T.ravel()})
    q = np.quantile(draws, [0.05, 0.5, 0.95], axis=0)
    summary = pd.DataFrame({"deployment": list(deployments), "usd_p5": q[0], "usd_p50": q[1],
                            "usd_p95": q[2], "mean_usd": draws.mean(axis=0)})
    wins = np.bincount(np.argmin(draws, axis=1), minlength=k) / n
    win = pd.DataFrame({"deployment": list(deployments), "probability": wins})
    inputs = ["requests_per_day", "output_tokens", "gpu_usd_per_hour", "api_usd_per_mtok",
              "utilisation_target"]
    base = float(q[1, 0])
    swing = base * rng.uniform(0.05, 0.5, size=len(inputs))
    tornado = pd.DataFrame({"input": inputs, "low_usd_per_month": base - swing / 2,
                            "high_usd_per_month": base + swing / 2,
                            "base_usd_per_month": base,
                            "input_low": rng.uniform(0, 1, len(inputs)).round(3),
                            "input_high": rng.uniform(1, 2, len(inputs)).round(3)})
    years = np.linspace(0.0, 3.0, 13)
    paths = []
    for d, m in zip(deployments, med, strict=True):
        p50 = 12 * m * years
        paths.append(pd.DataFrame({"year": years, "deployment": d, "usd_p5": 0.7 * p50,
                                   "usd_p50": p50, "usd_p95": 1.4 * p50}))
    return {"samples": samples, "summary": summary, "win": win, "tornado": tornado,
            "paths": pd.concat(paths, ignore_index=True)}


def optimiser_tables(rng: np.random.Generator,
                     deployments: Sequence[str] = ("api", "cloud", "onprem")
                     ) -> dict[str, pd.DataFrame]:
    """``plan`` and ``hourly`` (24 hours)."""
    hours = np.arange(24)
    diurnal = 1.0 + 0.8 * np.sin((hours - 8) / 24 * 2 * np.pi)
    rows = []
    for i, d in enumerate(deployments):
        share = rng.uniform(0.2, 1.0)
        rows.append(pd.DataFrame({"hour": hours, "deployment": d,
                                  "requests_per_s": share * diurnal * (i + 1)}))
    hourly = pd.concat(rows, ignore_index=True)
    plan = pd.DataFrame({"deployment": list(deployments),
                         "usd_per_month": rng.uniform(1e3, 1e4, len(deployments))})
    return {"plan": plan, "hourly": hourly}


def simulation_tables(rng: np.random.Generator, classes: Sequence[str] = ("chat", "summarise"),
                      n: int = 3000) -> dict[str, pd.DataFrame]:
    """``requests``, ``slo``, ``slo_targets``, ``utilisation``."""
    req = []
    for i, c in enumerate(classes):
        ttft = rng.lognormal(np.log(0.3 * (i + 1)), 0.5, n)
        tpot = rng.lognormal(np.log(0.04), 0.2, n)
        out = rng.integers(50, 400, n)
        req.append(pd.DataFrame({"class": c, "ttft_s": ttft, "tpot_s": tpot,
                                 "e2e_s": ttft + tpot * out}))
    requests = pd.concat(req, ignore_index=True)
    targets = pd.DataFrame({"class": list(classes) * 2,
                            "metric": ["ttft_s"] * len(classes) + ["tpot_s"] * len(classes),
                            "slo_s": [1.0] * len(classes) + [0.05] * len(classes)})
    att = []
    for r in targets.itertuples():
        v = requests.loc[requests["class"] == r[1], r.metric].to_numpy()
        att.append({"class": r[1], "metric": r.metric, "attainment": float(np.mean(v <= r.slo_s)),
                    "target": 0.9})
    hours = np.arange(24)
    util = pd.DataFrame({"hour": np.tile(hours, 2), "pool": np.repeat(["pool-a", "pool-b"], 24),
                         "utilisation": rng.uniform(0.1, 0.95, 48)})
    return {"requests": requests, "slo": pd.DataFrame(att), "slo_targets": targets,
            "utilisation": util}
