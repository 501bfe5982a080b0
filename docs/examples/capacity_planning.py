# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Capacity planning: API, rented GPUs or bought GPUs?
#
# A worked example of the Python API (`import planner`) on the bundled quickstart scenario:
# a support assistant with a chat class (200,000 requests/day, TTFT 2 s and TPOT 0.1 s SLOs)
# and a nightly summarisation class. We price every option, read how much one replica
# carries at the SLO, ask what changes at ten times the traffic, let the optimiser mix the
# options, and check the sizing with a simulated busy hour.
#
# Run it as a script (`python docs/examples/capacity_planning.py`) or open it as a notebook
# with jupytext. Its printed output is checked in CI against `capacity_planning.out`.

# %%
import pandas as pd

import planner


def show(title: str, df: pd.DataFrame) -> None:
    """Print a table with a title, numbers rounded for reading."""

    def fmt(v: float) -> str:
        a = abs(v)
        if a >= 100 or v == int(v):
            return f"{v:,.0f}"
        return f"{v:.2f}" if a >= 1 else f"{v:.3g}"

    print(f"\n== {title}")
    print(df.to_string(index=False, float_format=fmt, na_rep="-"))


# %% [markdown]
# ## 1. Cost of every option at the median inputs
#
# `planner.cost` runs the deterministic engine (the same as `planner cost`). Self-hosted
# options are sized to the peak hour with the scenario's utilisation target and one HA
# reserve replica.

# %%
sc = planner.load("example:quickstart")
base = planner.cost(sc)
show("cost per month (USD), quickstart", base.summary[
    ["deployment", "kind", "usd_per_month", "usd_per_mtok", "replicas", "gpus",
     "utilisation"]].sort_values("usd_per_month"))
print(f"cheapest option serving every class: {base.cheapest}")

# %% [markdown]
# ## 2. Capacity of one replica at the SLO
#
# The chat class is sized by the open-loop capacity: the largest request rate at which a
# replica still meets the TTFT and TPOT targets at p90; `limited_by` says what binds.

# %%
show("one replica at the SLO", base.capacity[
    ["deployment", "class", "requests_per_s_per_replica", "output_tokens_per_s", "ttft_s",
     "tpot_s", "limited_by"]])

# %% [markdown]
# ## 3. What if traffic grows tenfold?
#
# The `high-volume` variant sets chat to 2,000,000 requests/day. API cost scales with
# volume; a GPU replica's cost does not, so the ranking turns.

# %%
hv = planner.load("example:quickstart", variants="high-volume")
high = planner.cost(hv)
both = base.summary[["deployment", "usd_per_month"]].merge(
    high.summary[["deployment", "usd_per_month", "replicas"]], on="deployment",
    suffixes=("_base", "_high_volume"))
show("cost per month (USD), base and high volume", both)
print(f"cheapest option at high volume: {high.cheapest}")

# %% [markdown]
# ## 4. Optimise the mix
#
# A single option must carry the peak alone. The optimiser (a MILP, `planner optimize`)
# may combine options and route each class's requests among them hour by hour.

# %%
opt = planner.optimize(hv)
print(f"\noptimiser: {opt.status}, plan re-checked against every constraint: "
      f"{opt.trusted}")
print(f"optimised mix: {opt.objective_usd_per_month:,.0f} USD/month; cheapest single "
      f"option: {high.summary['usd_per_month'].min():,.0f} USD/month")
show("plan (chosen deployments)", opt.plan.loc[opt.plan["chosen"], [
    "deployment", "kind", "replicas_peak", "requests_share", "usd_per_month"]])
show("routing: share of each class's requests", opt.routing[["class", "route", "share"]])

# %% [markdown]
# ## 5. Check the plan with a simulated peak hour
#
# `planner.simulate` replays one hour of generated requests (10:00-11:00, the peak of the
# business-hours profile, a fixed seed) on the plan's self-hosted pool at its peak replicas,
# with the API taking any request that would miss its SLO.

# %%
chosen = opt.plan[opt.plan["chosen"]]
pool = chosen[chosen["kind"] != "api"].iloc[0]
api_route = chosen[chosen["kind"] == "api"].iloc[0]
sim = planner.simulate(hv, deployments=[pool["deployment"]],
                       replicas=int(pool["replicas_peak"]), spillover=api_route["deployment"],
                       hours=1, start_hour=10, seed=0)
show(f"simulated peak hour: {pool['deployment']} x {int(pool['replicas_peak'])} "
     f"(seconds)", sim.latency[["class", "requests", "ttft_p90_s", "tpot_p90_s",
                               "slo_attainment", "slo_target", "spillover_share"]])
show("simulated peak hour: cost and busy share", sim.deployments[
    ["deployment", "replicas", "requests", "busy_share", "mean_batch", "usd"]])
