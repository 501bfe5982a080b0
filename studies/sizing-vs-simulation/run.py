"""Run the sizing-vs-simulation study: ``python studies/sizing-vs-simulation/run.py [N]``.

Writes ``results.csv`` and ``sizing_vs_simulation.png`` beside this file and prints a summary
(see README.md). Every figure is computed by the planner from the generated scenarios.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import cases, check  # noqa: E402


def main(n: int = 60, seed: int = 7) -> dict:
    rows = [check(c) for c in cases(n, seed)]
    df = pd.DataFrame(rows)
    df.to_csv(HERE / "results.csv", index=False)
    ok = df["attainment_at"] >= df["target"]
    multi = df["replicas"] > 1
    tight = multi & (df["attainment_below"] < df["target"])
    summary = {
        "cases": int(len(df)),
        "meet_slo_at_sizing": float(ok.mean()),
        "cases_needing_more_than_one_replica": int(multi.sum()),
        "one_fewer_misses_share": float(tight.sum() / max(int(multi.sum()), 1)),
        "median_attainment_at_sizing": float(df["attainment_at"].median()),
    }
    chart = alt.Chart(df.assign(
        outcome=np.where(ok, "meets SLO at sizing", "misses SLO at sizing"))).mark_point(
        filled=True, size=60).encode(
        x=alt.X("replicas:Q", title="replicas sized (open-loop capacity, no headroom)",
                scale=alt.Scale(type="log")),
        y=alt.Y("attainment_at:Q", title="simulated SLO attainment, busiest hour"),
        color=alt.Color("outcome:N", title=None),
        tooltip=["case", "replicas", "limited_by", "attainment_at", "attainment_below"],
    ).properties(title="Sizing vs simulation: SLO attainment at the sized replicas",
                 width=520, height=300)
    chart.save(str(HERE / "sizing_vs_simulation.png"))
    return summary


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 60), indent=2))
