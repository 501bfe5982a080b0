"""The report's glossary: what its terms and table columns mean, one line each.

Sections open with a "how to read this" box (:func:`howto`) made of the terms they use, and
table headers carry the meaning of their column as a tooltip (:func:`column_help`). A term
or column missing here simply gets no explanation; :data:`SECTION_TERMS` is tested to name
only terms defined in :data:`TERMS`.
"""

from __future__ import annotations

from planner.report.model import HowTo

#: Term -> one-line meaning (plain text).
TERMS: dict[str, str] = {
    "lens": "which costs count: 'tco' (total cost of ownership) counts hardware purchase "
            "(amortised), energy, staff and facilities; 'marginal' only what the workload "
            "adds to capacity already paid for.",
    "horizon": "the months the plan is costed over; purchases are spread over it or over "
               "the hardware's life.",
    "median inputs": "every uncertain input (a distribution in the scenario) at its median; "
                     "the risk section samples them instead.",
    "USD per million tokens": "monthly cost divided by the tokens served per month, x 1e6: "
                              "comparable across API and self-hosted options.",
    "replica": "one copy of the model on its GPUs; self-hosted capacity is bought or rented "
               "in whole replicas, so cost steps up one replica at a time.",
    "limited by": "what caps a replica's throughput at the latency SLO: TPOT, TTFT "
                  "queueing, decode speed, KV-cache memory or compute.",
    "break-even volume": "the request volume at which a self-hosted option's monthly cost "
                         "equals an API's; above it self-hosting is cheaper.",
    "T*": "fine-tune break-even: tokens after which the one-off fine-tuning cost is repaid "
          "by the cheaper price per token.",
    "ECDF": "empirical cumulative distribution: for each cost x, the share of Monte Carlo "
            "samples costing at most x; a curve further left is cheaper.",
    "P5 / P50 / P95": "5th, 50th (median) and 95th percentiles of the sampled cost: 90% of "
                      "samples lie between P5 and P95.",
    "CVaR95": "conditional value at risk: the mean cost of the worst 5% of samples (how bad "
              "the bad cases are, not just where they start).",
    "P(cheapest)": "share of samples in which an option is the cheapest of those serving "
                   "every class.",
    "tornado": "each uncertain input moved alone from its P10 to its P90, the others at their "
               "medians: the longest bars are the assumptions worth checking first.",
    "cumulative cost": "cash paid from today to the end of each year; on-prem servers still "
                       "have a book (residual) value at the end of the horizon, shown as a "
                       "separate credit, not hidden in the last year's cost.",
    "MILP": "mixed-integer linear program: the optimiser chooses whole replicas, servers and "
            "fine-tunes and the routing of each class at the least monthly cost.",
    "best bound": "a cost no plan can beat, proven by the MILP solver's branch and bound; "
                  "the gap is measured against it.",
    "gap": "(plan cost - best bound) / plan cost: the plan is proven within this share of "
           "the true optimum (0% means proven optimal).",
    "LP relaxation": "the same problem with whole numbers allowed to be fractional: a weaker "
                     "lower bound, solved first; far below the plan cost when replicas are "
                     "few (rounding up matters), which is not a gap.",
    "EV / EEV / VSS": "stochastic plans: EV is the cost of the plan for the average inputs, "
                      "EEV that plan's expected cost when inputs vary, RP the stochastic "
                      "plan's expected cost, and VSS = EEV - RP the value of planning for "
                      "uncertainty.",
    "hourly mix": "requests per second each deployment serves in each hour of the day; "
                  "rented capacity can follow the load, purchased capacity cannot.",
    "TTFT": "time to first token: queueing plus prefill of the prompt (seconds).",
    "TPOT": "time per output token after the first (seconds): the streaming speed.",
    "SLO attainment": "share of requests meeting the class's latency bound; the target is "
                      "the percentile the SLO states (e.g. 90%).",
    "busy share": "share of paid replica time with at least one request in flight "
                  "(simulated); with continuous batching a replica is busy even when lightly "
                  "loaded.",
    "load / capacity": "offered requests per second over what the replicas sustain at the "
                       "SLO: the cost table's utilisation, by hour from the diurnal profile.",
    "predicted vs measured": "the performance model's throughput against published "
                             "benchmarks; points on the diagonal are exact, dashed lines "
                             "+-15% and +-30%.",
    "closed loop": "a benchmark that keeps a fixed number of requests (the concurrency) in "
                   "flight, sending a new one as each finishes; latency and throughput are "
                   "read at each concurrency.",
    "ITL": "inter-token latency: mean time between output tokens after the first "
           "(milliseconds); the same quantity as TPOT.",
    "held out": "points never used to fit the model's few parameters (whole curves, "
                "alternating within each source, GPU, engine and precision); their errors "
                "are the honest ones.",
    "median |error| / bias": "median of |predicted / measured - 1| (how far off), and median "
                             "of the signed error (whether the model leans high or low).",
}

#: Section key -> the terms its "how to read this" box explains, in order.
SECTION_TERMS: dict[str, tuple[str, ...]] = {
    "summary": ("lens", "horizon", "median inputs", "USD per million tokens", "MILP"),
    "costs": ("replica", "limited by", "USD per million tokens", "lens"),
    "breakeven": ("break-even volume", "T*"),
    "risk": ("ECDF", "P5 / P50 / P95", "CVaR95", "P(cheapest)", "tornado", "cumulative cost"),
    "optimiser": ("MILP", "best bound", "gap", "LP relaxation", "EV / EEV / VSS",
                  "hourly mix"),
    "simulation": ("TTFT", "TPOT", "SLO attainment", "busy share", "load / capacity"),
    "performance": ("predicted vs measured", "closed loop", "TTFT", "ITL", "held out",
                    "median |error| / bias"),
}

#: Column name -> meaning, shown as the tooltip of a table header.
COLUMNS: dict[str, str] = {
    "usd_per_month": "cost per month (USD)",
    "usd_horizon": "cost over the whole horizon (USD)",
    "usd_per_mtok": "cost per million tokens served (USD)",
    "usd_per_m_output_tok": "cost per million output tokens (USD)",
    "usd_per_request": "cost per request (USD)",
    "requests_per_month": "requests per month",
    "llm_requests_per_month": "model calls per month (requests x calls per request, retries)",
    "tokens_per_month": "input + output tokens per month",
    "requests_per_s_per_replica": "requests per second one replica sustains at the SLO",
    "limited_by": TERMS["limited by"],
    "utilisation": "mean load / capacity at the SLO (share)",
    "classes_unserved": "workload classes this option cannot serve (model quality, context)",
    "lens": TERMS["lens"],
    "usd_p5": "5th percentile of the sampled cost (USD)",
    "usd_p50": "median of the sampled cost (USD)",
    "usd_p95": "95th percentile of the sampled cost (USD)",
    "mean_usd": "mean of the sampled cost (USD)",
    "cvar95_usd": TERMS["CVaR95"],
    "probability": "share of samples in which the option is the cheapest",
    "residual_credit_usd": "book value of the on-prem servers at the end of the horizon, "
                           "credited (median, USD)",
    "usd_net_p50": "median cumulative cost net of the residual credit (USD)",
    "volume_scale": "multiple of the scenario's request volume",
    "ttft_s": TERMS["TTFT"], "tpot_s": TERMS["TPOT"],
    "e2e_s": "end-to-end latency: arrival to last token (seconds)",
    "attainment": TERMS["SLO attainment"],
    "mean_batch": "mean number of requests decoded together (continuous batching)",
    "requests_share": "share of all requests this deployment serves",
    "replicas_peak": "most replicas in any hour (whole replicas)",
    "expected_replicas": "mean replicas over hours and scenarios (not a count to rent)",
    "tput_median_abs": "median |predicted / measured - 1| of output tokens per second",
    "tput_bias": "median of predicted / measured - 1 for output tokens per second "
                 "(positive: the model predicts too high)",
    "itl_median_abs": "median |predicted / measured - 1| of the inter-token latency",
    "itl_bias": "median of predicted / measured - 1 for the inter-token latency",
    "ttft_median_abs": "median |predicted / measured - 1| of the time to first token "
                       "(median TTFT where published)",
    "ttft_bias": "median of predicted / measured - 1 for the time to first token",
    "benchmark_source": "who published the closed-loop measurements (InferenceX: "
                        "SemiAnalysis InferenceX; NIM: NVIDIA NIM benchmarks; "
                        "dstack: dstack's early-2025 DeepSeek-R1 runs)",
    "rows_set": "which points: held out (never used in the fit), the fit half, or the "
                "out-of-scope source",
    "source": "where the catalog figure comes from (publication, repository, date)",
    "as_of": "date the figure was published or retrieved",
}


def howto(section: str) -> HowTo | None:
    """The "how to read this" box of a section (None when it has no terms)."""
    terms = SECTION_TERMS.get(section, ())
    if not terms:
        return None
    return HowTo("How to read this", tuple((t, TERMS[t]) for t in terms))


def column_help(name: str) -> str:
    """The meaning of a table column ("" when the glossary has none)."""
    return COLUMNS.get(name, "")
