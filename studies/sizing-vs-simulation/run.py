"""Run the sizing-vs-simulation study: ``python studies/sizing-vs-simulation/run.py [N] [SEED]
[PREFILL_WAIT] [DRAWS]``.

With the design seed (7) writes ``results.csv`` and ``sizing_vs_simulation.png`` beside this
file; with another seed (a held-out draw of scenarios the model was not tuned on) writes
``heldout_seed{SEED}.csv``; ``PREFILL_WAIT`` (``[planning] prefill_wait``: ``pooled``, the
default, or ``per-replica``) other than the default adds its name to the file; ``DRAWS`` > 1
also simulates that many independent arrival draws of each busiest hour (``_draws{DRAWS}``
added to the file name; the summary adds the expected hour's counts). Prints a summary (see README.md). Every figure is computed by the
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


def main(n: int = 60, seed: int = 7, prefill_wait: str = "pooled", draws: int = 1) -> dict:
    drawn = cases(n, seed)
    for c in drawn:
        c["planning"]["prefill_wait"] = prefill_wait
    rows = [check(c, draws=draws) for c in drawn]
    df = pd.DataFrame(rows)
    name = "results" if seed == 7 else f"heldout_seed{seed}"
    if prefill_wait != "pooled":
        name += f"_{prefill_wait}"
    if draws > 1:
        name += f"_draws{draws}"
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
    if draws > 1:  # the expected hour: mean attainment over the arrival draws
        ok_m = df["attainment_at_mean"] >= df["target"]
        tight_m = multi & (df["attainment_below_mean"] < df["target"])
        summary.update({
            "draws": draws,
            "meet_slo_at_sizing_mean_attainment": float(ok_m.mean()),
            "one_fewer_misses_share_mean_attainment": float(
                tight_m.sum() / max(int(multi.sum()), 1)),
            "draws_meeting_at_sizing_share": float(
                df["draws_meeting_at"].sum() / (draws * df["draws_meeting_at"].notna().sum())),
            "cases_meeting_in_every_draw": int((df["draws_meeting_at"] == draws).sum()),
            "missing_slo_mean_attainment": df.loc[~ok_m, "case"].tolist(),
            "padded_mean_attainment": df.loc[multi & ~tight_m, "case"].tolist(),
        })
    if seed == 7 and draws > 1 and prefill_wait == "pooled":
        _draws_chart(df, draws)
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


def _draws_chart(df: pd.DataFrame, draws: int) -> None:
    """Mean attainment over the arrival draws at the sizing and one replica fewer, with the
    range of the draws (``sizing_vs_simulation_draws.png``)."""
    parts = []
    for label, what in (("at", "at the sizing"), ("below", "one replica fewer")):
        part = df[["case", "replicas", f"attainment_{label}_mean", f"attainment_{label}_min",
                   f"attainment_{label}_max"]].dropna()
        part.columns = ["case", "replicas", "mean", "low", "high"]
        parts.append(part.assign(replicas_simulated=part["replicas"] - (label == "below"),
                                 simulated=what))
    long = pd.concat(parts, ignore_index=True)
    base = alt.Chart(long).encode(
        x=alt.X("replicas_simulated:Q", title="replicas simulated",
                scale=alt.Scale(type="log")),
        color=alt.Color("simulated:N", title=None))
    band = base.mark_rule(opacity=0.5).encode(y=alt.Y("low:Q"), y2="high:Q")
    dots = base.mark_point(filled=True, size=50).encode(
        y=alt.Y("mean:Q", title=f"SLO attainment, busiest hour (mean of {draws} arrival "
                                "draws; bar: their range)"),
        tooltip=["case", "replicas_simulated", "mean", "low", "high"])
    target = alt.Chart(pd.DataFrame({"y": [float(df["target"].dropna().iloc[0])]})).mark_rule(
        strokeDash=[4, 4]).encode(y="y:Q")
    (band + dots + target).properties(
        title="Sizing vs simulation over independent arrival draws of the busiest hour",
        width=520, height=300).save(str(HERE / "sizing_vs_simulation_draws.png"))


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(main(int(args[0]) if args else 60, int(args[1]) if len(args) > 1 else 7,
                          args[2] if len(args) > 2 else "pooled",
                          int(args[3]) if len(args) > 3 else 1), indent=2))
