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
# # What-if risk study: how likely is each option to be the cheapest?
#
# A worked example of the Python API (`import planner`) on the bundled `risk-example`
# scenario: the quickstart's support assistant with its assumptions written as ranges
# (traffic, prompt lengths, API prices and discount, GPU-hour price, server price,
# electricity, operations staff ...). Three options are compared: the gpt-4o API, Llama 3.1
# 70B on rented H100s and the same on a bought HGX H100 server.
#
# Monte Carlo runs are seeded: the same seed gives the same numbers, so this script's output
# is checked in CI against `what_if_risk.out`.

# %%
import pandas as pd

import planner

N_SAMPLES = 20_000
SEED = 1


def show(title: str, df: pd.DataFrame) -> None:
    """Print a table with a title, numbers rounded for reading."""

    def fmt(v: float) -> str:
        a = abs(v)
        if a >= 100 or v == int(v):
            return f"{v:,.0f}"
        return f"{v:.2f}" if a >= 1 else f"{v:.3g}"

    print(f"\n== {title}")
    print(df.to_string(index=False, float_format=fmt, na_rep="-"))


HEADLINE = ["deployment", "usd_per_month_p5", "usd_per_month_p50", "usd_per_month_p95",
            "usd_per_month_cvar95", "p_cheapest"]

# %% [markdown]
# ## 1. The cost ranges today
#
# `planner.risk` samples every uncertain input (with the scenario's rank correlations) and
# prices every option per sample. `p_cheapest` is the share of samples in which the option
# is the cheapest per month; CVaR95 is the mean of the worst 5% of months.

# %%
sc = planner.load("example:risk-example")
base = planner.risk(sc, n=N_SAMPLES, seed=SEED)
show(f"monthly cost (USD), {base.n:,} samples, seed {base.seed}", base.headline[HEADLINE])

# %% [markdown]
# ## 2. Which assumptions decide it?
#
# The tornado moves one input at a time to its P10 and P90 (the others at their medians);
# the swing is the change in monthly cost. Here the three largest per option.

# %%
top = base.tornado[base.tornado["swing"] > 0].groupby("deployment", sort=False).head(3)
show("largest drivers of monthly cost (USD)", top[
    ["deployment", "input", "low_value", "high_value", "usd_low", "usd_high", "swing"]])
show("traffic (requests/day) above which self-hosting beats the API",
     base.breakeven[["self_hosted", "api", "requests_per_day_p5", "requests_per_day_p50",
                     "requests_per_day_p95"]])

# %% [markdown]
# ## 3. What if chat traffic is five times higher?
#
# An override replaces the chat volume's distribution (median 1,000,000 requests/day, P90
# 2,000,000), as `--set` does on the command line. Same seed: the difference is the
# scenario's, not the sampling's.

# %%
busy = planner.load("example:risk-example", overrides={
    "workload.chat.requests_per_day": {"dist": "lognormal", "median": 1_000_000,
                                       "p90": 2_000_000}})
high = planner.risk(busy, n=N_SAMPLES, seed=SEED)
show("monthly cost (USD) at five times the chat traffic", high.headline[HEADLINE])

# %% [markdown]
# ## 4. What if we negotiate the GPU-hour price down to 2.20 USD?
#
# A fixed value replaces the GPU price's range; the rest stays uncertain.

# %%
deal = planner.load("example:risk-example",
                    overrides={"cloud.llama-70b-h100.usd_per_gpu_hour": 2.2})
cheap_gpu = planner.risk(deal, n=N_SAMPLES, seed=SEED)

# %%
p = pd.DataFrame({"deployment": list(base.p_cheapest),
                  "today": list(base.p_cheapest.values()),
                  "chat_x5": [high.p_cheapest[d] for d in base.p_cheapest],
                  "gpu_at_2.20_usd": [cheap_gpu.p_cheapest[d] for d in base.p_cheapest]})
show("probability of being the cheapest option", p)
