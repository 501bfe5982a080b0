"""Run the sizing-vs-simulation study: ``python studies/sizing-vs-simulation/run.py [N] [SEED]
[PREFILL_WAIT]``.

With the design seed (7) writes ``results.csv`` and ``sizing_vs_simulation.png`` beside this
file; with another seed (a held-out draw of scenarios the model was not tuned on) writes
``heldout_seed{SEED}.csv``; ``PREFILL_WAIT`` (``[planning] prefill_wait``: ``pooled``, the
default, or ``per-replica``) other than the default adds its name to the file. Prints a summary (see README.md). Every figure is computed by the
planner from the generated scenarios.
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


def main(n: int = 60, seed: int = 7, prefill_wait: str = "pooled") -> dict:
    drawn = cases(n, seed)
    for c in drawn:
        c["planning"]["prefill_wait"] = prefill_wait
    rows = [check(c) for c in drawn]
    df = pd.DataFrame(rows)
    name = "results" if seed == 7 else f"heldout_seed{seed}"
    if prefill_wait != "pooled":
        name += f"_{prefill_wait}"
    df.to_csv(HERE / f"{name}.csv", index=False)
    ok = df["attainment_at"] >= df["target"]
    multi = df["replicas"] > 1
    tight = multi & (df["attainment_below"] < df["target"])
    summary = {
        "cases": int(len(df)),
        "meet_slo_at_sizing": float(ok.mean()),
        "cases_needing_more_than_one_replica": int(multi.sum()),
        "one_fewer_misses_share": float(tight.sum() / max(int(multi.sum()), 1)),
        "median_attainment_at_sizing": float(df["attainment_at"].median()),
        "missing_slo_at_sizing": df.loc[~ok, "case"].tolist(),
        "padded": df.loc[multi & ~tight, "case"].tolist(),
    }
    if name != "results":
        return summary
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
    args = sys.argv[1:]
    print(json.dumps(main(int(args[0]) if args else 60, int(args[1]) if len(args) > 1 else 7,
                          args[2] if len(args) > 2 else "pooled"), indent=2))
