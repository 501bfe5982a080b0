"""Mix of GPU types vs the best single type, over request rate, SLO and request sizes.

Prints a markdown table (the README's). Run from the repository root:

    python studies/gpu-mix/compare.py
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from planner.catalog import load_catalog
from planner.config import load_scenario
from planner.engines.optimize import OptimizeOptions, compare_subsets

HERE = Path(__file__).resolve().parent
RATES = (0.25, 1.0, 4.0, 20.0)  # x the scenario's 1 short + 0.2 long requests/s
WORKLOADS = {"mixed": (1.0, 1.0), "short-only": (1.0, 0.0), "long-only": (0.0, 1.0)}
SLOS = {"loose (TPOT 120 ms)": 0.12, "tight (TPOT 40 ms)": 0.04}
GPU_SETS = {"with H100-SXM at $3.29": (), "without H100-SXM": ("h100-sxm",)}


def scan(catalog=None) -> pd.DataFrame:
    cat = catalog or load_catalog()
    rows = []
    for gpus, exclude in GPU_SETS.items():
        for slo_name, tpot in SLOS.items():
            for wl, (fs, fl) in WORKLOADS.items():
                for rate in RATES:
                    sc = load_scenario(HERE / "scenario.toml", catalog=cat, overrides={
                        "workload.short.requests_per_day": 86400 * rate * fs,
                        "workload.long.requests_per_day": 17280 * rate * fl,
                        "workload.short.slo.tpot_s": tpot, "workload.long.slo.tpot_s": tpot,
                    })
                    opts = OptimizeOptions.from_scenario(sc, exclude=exclude)
                    df = compare_subsets(sc, catalog=cat, options=opts)
                    single = df.iloc[1:]
                    single = single[single["status"] == "optimal"]
                    best = single.loc[single["usd_per_month"].idxmin()]
                    mix = df.iloc[0]
                    saving = 1.0 - mix["usd_per_month"] / best["usd_per_month"]
                    rows.append({
                        "gpus": gpus, "slo": slo_name, "workload": wl, "rate_x": rate,
                        "mix_usd_per_month": mix["usd_per_month"], "mix_uses": mix["used"],
                        "best_single": best["subset"],
                        "best_single_usd_per_month": best["usd_per_month"],
                        "saving": max(0.0, saving) if abs(saving) < 1e-3 else saving,
                        "max_saving_vs_one_type": float(single["mix_saving"].max()),
                    })
    return pd.DataFrame(rows)


def main() -> None:
    df = scan()
    out = df.assign(
        mix_usd_per_month=df["mix_usd_per_month"].map("{:,.0f}".format),
        best_single_usd_per_month=df["best_single_usd_per_month"].map("{:,.0f}".format),
        saving=df["saving"].map("{:.1%}".format),
        max_saving_vs_one_type=df["max_saving_vs_one_type"].map("{:.0%}".format),
    )
    cols = list(out.columns)
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in out.itertuples(index=False):
        print("| " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
