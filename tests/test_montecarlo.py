"""Monte Carlo risk engine: exactness against the deterministic engine, results, sensitivity."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from planner.config import load_scenario, parse_scenario
from planner.distributions import median_of
from planner.engines.deterministic import evaluate
from planner.engines.risk.compiled import compile_scenario
from planner.engines.risk.replications import simulation_replications
from planner.engines.risk.run import run_montecarlo
from planner.engines.risk.sampling import CHUNK_SIZE
from planner.engines.risk.stats import tail_stats
from planner.engines.risk.tornado import tornado
from planner.errors import PlannerError
from planner.uncertain import risk_tables, scenario_at, uncertain_inputs
from tests.conftest import at_median

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "planner" / "templates"
STUDIES = sorted((ROOT / "studies").glob("*/scenario.toml"))


def load_risk_example(overrides=None):
    """The bundled risk example: scenario, correlations, trends (the two tables split off so a
    test can pass them to the engines explicitly)."""
    path = TEMPLATES / "risk-example.toml"
    rest, corr, trends = risk_tables(tomllib.loads(path.read_text(encoding="utf-8")))
    return parse_scenario(rest, path=str(path), overrides=overrides), corr, trends


# Branch coverage for the exactness tests: word/char lengths with catalog and scenario ratios,
# calls x samples, cache hits, per-class retries, batch shares, a 168-hour profile, long-context
# and batch API tiers, discounts, gross margin, both request-fee forms, an API fine-tune and a
# LoRA fine-tune, scale-to-zero / active-window / spot / stated-capacity cloud pools, fixed and
# computed on-prem fleets, facilities and implementation costs.
KITCHEN_SINK_A = """
[scenario]
name = "kitchen sink A"
horizon_months = 24

[workload.chat]
requests_per_day = 50000
diurnal = "consumer"
input = { words = 80, lang = "en" }
context = { chars = 4000, lang = "en", tokens_per_unit = 0.3 }
output = { words = 120, lang = "en" }
calls_per_request = 2
samples_per_call = 1.5
cached_share = 0.3
response_cache_hit_share = 0.1
retry_share = 0.05
slo = { ttft_s = 3.0, tpot_s = 0.12 }

[workload.batchjob]
requests_per_day = 5000
diurnal = [WEEK]
input = { tokens = 100000 }
output = { tokens = 500 }
batch_share = 0.6

[api.claude]
tokenizer = "cl100k"  # no en/word row for its own tokenizer
offering = "anthropic/claude-sonnet-4-5"
discount = 0.1
request_fees = [{ name = "gateway", usd_per_million_requests = 3.5 },
                { name = "lambda", gb = 0.128, seconds = 5, usd_per_gb_s = 0.0000166667 }]

[api.gemini]
tokenizer = "cl100k"  # no en/word row for its own tokenizer
offering = "google/gemini-2.5-pro"
gross_margin = 0.75
input_usd_per_mtok = 1.0

[api.mini-ft]
offering = "openai/gpt-4o-mini-2024-07-18"
fine_tune = "mini"

[cloud.stz]
tokenizer = "cl100k"  # no en/word row for its own tokenizer
model = "llama-3.1-8b"
accelerator = "h100-sxm"
precision = "fp8"
billing = "scale-to-zero"
startup_s = 60
min_billing_s = 120
idle_timeout_s = 200
classes = ["chat"]

[cloud.window]
tokenizer = "cl100k"  # no en/word row for its own tokenizer
model = "llama-3.1-8b"
offering = "lambda/a100-80gb-8x-on-demand"
billing = "active-window"
active_hours_per_day = 12
fine_tune = "lora8b"
request_fees = [{ name = "lb", usd_per_million_requests = 1.0 }]

[cloud.spot]
tokenizer = "cl100k"  # no en/word row for its own tokenizer
model = "llama-3.1-70b"
offering = "aws/p5.48xlarge-spot"
gpus_per_replica = 4
precision = "fp8"
interruption_overhead = 0.1

[cloud.stated]
tokenizer = "cl100k"  # no en/word row for its own tokenizer
model = "llama-3.1-70b"
accelerator = "h100-sxm"
gpus_per_replica = 2
usd_per_instance_hour = 7.0
gpus_per_instance = 2
capacity_requests_per_s = 3.5

[onprem.fixed]
tokenizer = "cl100k"  # no en/word row for its own tokenizer
model = "llama-3.1-70b"
server = "dgx-h100"
gpus_per_replica = 2
precision = "fp8"
servers = 2
residual_share = 0.1
facilities_usd_per_server_year = 5000
implementation_usd = 40000
maintenance_share_per_year = 0.08

[onprem.auto]
tokenizer = "cl100k"  # no en/word row for its own tokenizer
model = "llama-3.1-8b"
accelerator = "a100-80gb"
server_price_usd = 150000
gpus_per_server = 4
server_base_w = 2000
replicas = 3
amortisation_years = 3

[finetune.mini]
method = "api"
base_model = "openai/gpt-4o-mini-2024-07-18"
training_tokens = 3e6
epochs = 2
retry_multiplier = 12

[finetune.lora8b]
method = "lora"
base_model = "llama-3.1-8b"
training_tokens = 1e8
accelerator = "h100-sxm"
mfu = 0.3

[planning]
utilisation_target = 0.7
ha_reserve_replicas = 1
retry_share = 0.02
""".replace("WEEK", ", ".join(["1"] * 48 + ["2"] * 24 + ["1"] * 96))

# marginal lens with committed capacity, flat profile with peak_to_average, overridden batch
# price, a language measured in characters
KITCHEN_SINK_B = """
[scenario]
name = "kitchen sink B"
horizon_months = 18

[workload.chat]
requests_per_day = 300000
input = { tokens = 800 }
output = { tokens = 200 }
batch_share = 0.3

[workload.docs]
requests_per_day = 1000
input = { chars = 3000, lang = "zh" }
output = { tokens = 400 }
batch_share = 1.0

[api.gpt-4o]
offering = "openai/gpt-4o"
batch_input_usd_per_mtok = 1.0

[cloud.c1]
tokenizer = "o200k"  # no zh/char row for llama3
model = "llama-3.1-70b"
accelerator = "h100-sxm"
gpus_per_replica = 2
precision = "fp8"
committed = true
usd_per_gpu_hour = 2.1

[onprem.o1]
tokenizer = "o200k"  # no zh/char row for llama3
model = "llama-3.1-70b"
server = "hgx-h100"
gpus_per_replica = 2
precision = "fp8"
committed = true
implementation_usd = 20000
ops_usd_per_year = 100000

[planning]
peak_to_average = 2.5
lens = "marginal"
utilisation_target = 0.85
"""


def _scenarios():
    q = TEMPLATES / "quickstart.toml"
    out = [("quickstart", at_median(load_scenario(q))),
           ("quickstart-spot", at_median(load_scenario(q, variants=["spot"]))),
           ("quickstart-high", at_median(load_scenario(q, variants=["high-volume"])))]
    for text, name in ((KITCHEN_SINK_A, "sink-a"), (KITCHEN_SINK_B, "sink-b")):
        out.append((name, parse_scenario(tomllib.loads(text))))
    for p in STUDIES:
        out.append((p.parent.name, load_scenario(p)))
    return out


SCENARIOS = _scenarios()


# ------------------------------------------------------------------------------------------
# the hard requirement: fixed inputs reproduce the deterministic engine exactly


@pytest.mark.parametrize("name,sc", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_fixed_inputs_equal_deterministic(name, sc):
    """At the medians (and on the scenario with every input fixed at its median) the Monte
    Carlo engine gives the deterministic engine's numbers."""
    det = evaluate(sc).summary.set_index("deployment")
    model = compile_scenario(sc)
    got = model.evaluate({}, 4)
    assert list(got) == list(det.index)
    for dep in det.index:
        row = det.loc[dep]
        if "fleet too small" in row["classes_unserved"]:
            # a fleet that cannot carry its load is not a valid option: inf in Monte Carlo
            assert np.isinf(got[dep]["monthly"]).all()
        else:
            np.testing.assert_allclose(got[dep]["monthly"], row["usd_per_month"], rtol=1e-12)
        np.testing.assert_allclose(got[dep]["tokens"], row["tokens_per_month"], rtol=1e-12)
        np.testing.assert_allclose(got[dep]["rpm"], row["llm_requests_per_month"], rtol=1e-12)
        np.testing.assert_allclose(got[dep]["user_rpm"], row["requests_per_month"], rtol=1e-12)
    if det.empty:
        return
    unc = uncertain_inputs(sc)
    if unc:
        sc = scenario_at(sc, {k: u.dist.median() for k, u in unc.items()})
        assert uncertain_inputs(sc) == {}
    res = run_montecarlo(sc, n=300, seed=1)
    valid = [d for d in det.index if "fleet too small" not in det.loc[d, "classes_unserved"]]
    for dep in valid:
        np.testing.assert_allclose(res.samples[dep], det.loc[dep, "usd_per_month"], rtol=1e-12)
    summ = res.summary.set_index(["deployment", "metric"])
    for dep in valid:
        for metric in ("usd_per_month", "usd_horizon", "usd_per_mtok"):
            want = det.loc[dep, metric]
            for stat in ("mean", "p5", "p50", "p95", "cvar95", "at_median"):
                got_v = summ.loc[(dep, metric), stat]
                if np.isnan(want):
                    assert np.isnan(got_v)
                else:
                    np.testing.assert_allclose(got_v, want, rtol=1e-12, err_msg=f"{dep} {metric}")
            if not np.isnan(want):
                assert summ.loc[(dep, metric), "p95_se"] == 0.0


def test_risk_example_at_medians_equals_deterministic():
    sc, corr, _ = load_risk_example()
    det = evaluate(sc).summary.set_index("deployment")
    assert set(det["kind"]) == {"api", "cloud", "onprem"}
    model = compile_scenario(sc, correlations=corr)
    assert len(model.inputs) >= 15
    # with the distributions in place, at the medians (capacity from the length grid's node)
    base = model.evaluate({}, 1)
    for dep in det.index:
        np.testing.assert_allclose(base[dep]["monthly"], det.loc[dep, "usd_per_month"],
                                   rtol=1e-12)
    # the scenario fixed at the medians, through the whole Monte Carlo run
    fixed = scenario_at(sc, {k: u.dist.median() for k, u in uncertain_inputs(sc).items()})
    assert uncertain_inputs(fixed) == {}
    res = run_montecarlo(fixed, n=200, seed=3)
    for dep in det.index:
        np.testing.assert_allclose(res.samples[dep], det.loc[dep, "usd_per_month"], rtol=1e-12)
    summ = run_montecarlo(sc, n=2000, seed=3, correlations=corr).summary
    got = summ[summ["metric"] == "usd_horizon"].set_index("deployment")["at_median"]
    np.testing.assert_allclose(got[det.index], det["usd_horizon"], rtol=1e-12)


def test_each_sample_equals_deterministic_on_the_fixed_scenario():
    """Every sampled scenario, fixed and priced by the deterministic engine, costs what the
    vectorised engine said (lengths held fixed so capacity is the perf model's own value)."""
    sc, _, _ = load_risk_example({
        "workload.chat.input.words": 60, "workload.chat.output.words": 150,
        "workload.chat.context.tokens": 1500,
    })
    corr = [{"a": "workload.chat.requests_per_day", "b": "workload.summarise.requests_per_day",
             "rho": 0.7}]
    res = run_montecarlo(sc, n=3000, seed=11, correlations=corr, rank_samples=3000)
    assert len(res.uncertain_inputs) == 14
    # The open-loop capacity pools the prefill wait over the pool the *medians* need (the
    # model decides structure once); a sample whose own demand needs another pool size prices
    # each replica's capacity at that size when fixed and evaluated alone. Exact equality is
    # required wherever the two structures agree, and every mismatch must be that one.
    from planner.catalog import load_catalog
    from planner.model.evaluate import Model

    cat = load_catalog()

    pools = {o.name: o.pool_size for o in Model(sc, cat).options}
    exact = 0
    for i in (0, 1, 17, 1234, 2999):
        fixed = scenario_at(sc, res.inputs.iloc[i].to_dict())
        det = evaluate(fixed).summary.set_index("deployment")["usd_per_month"]
        same = [d for d in det.index if Model(fixed, cat).by_name[d].pool_size == pools[d]]
        np.testing.assert_allclose(res.samples.iloc[i][same], det[same], rtol=1e-12)
        exact += len(same) == len(det)
    assert exact >= 3


def test_capacity_grid_close_to_perf_model():
    """Interpolated replica capacity within 1% of the model's capacity (the perf model at the
    class's SLO) inside the grid (and within 2% with the open-loop capacity, whose worst case
    on this scenario is 1.4%, where the binding limit changes and the capacity has a kink)."""
    sc, corr, _ = load_risk_example()
    assert sc.planning.capacity == "open-loop"  # the default
    open_loop = compile_scenario(sc, correlations=corr)
    cloud = next(o for o in open_loop.options if o.kind == "cloud")
    how, grid = cloud.capacity["chat"]
    assert how == "grid" and grid.isl.size >= 5 and grid.osl.size >= 5
    assert cloud.llm_row["id"] == "llama-3.1-70b"
    slo = sc.workload["chat"].slo
    model = compile_scenario(
        parse_scenario(sc.model_dump(mode="json", by_alias=True, exclude_none=True)
                       | {"planning": {**sc.planning.model_dump(), "capacity": "closed-loop"}}),
        correlations=corr)
    for m, rel in ((model, 0.01), (open_loop, 0.02)):
        cloud = next(o for o in m.options if o.kind == "cloud")
        how, grid = cloud.capacity["chat"]
        assert how == "grid" and (m is model) == (cloud.traffic["chat"] is None)
        rng = np.random.default_rng(5)
        for _ in range(12):
            i = rng.uniform(grid.isl[0], grid.isl[-1])
            o = rng.uniform(grid.osl[0], grid.osl[-1])
            exact, _ = m.caps.rps(cloud.llm_row, cloud.acc_row, cloud.dep, i, o,
                                  median_of(slo.ttft_s), median_of(slo.tpot_s), 0.0,
                                  strict=True, traffic=cloud.traffic["chat"])
            assert float(grid(i, o)) == pytest.approx(exact, rel=rel)


# ------------------------------------------------------------------------------------------
# inputs, reproducibility, results


def test_uncertain_inputs_are_named_by_key_path():
    sc, _, _ = load_risk_example()
    keys = set(uncertain_inputs(sc))
    for k in ("workload.chat.requests_per_day", "workload.chat.context.tokens",
              "workload.chat.input.words", "api.gpt-4o.input_usd_per_mtok",
              "cloud.llama-70b-h100.usd_per_gpu_hour", "onprem.llama-70b-hgx.server_price_usd",
              "onprem.llama-70b-hgx.amortisation_years", "planning.retry_share"):
        assert k in keys
    sink = parse_scenario(tomllib.loads(KITCHEN_SINK_A), overrides={
        "api.claude.request_fees": [
            {"name": "gw", "usd_per_million_requests": {"dist": "uniform", "low": 1, "high": 5}}],
        "workload.chat.slo.ttft_s": {"dist": "uniform", "low": 2, "high": 4},
    })
    model = compile_scenario(sink)
    assert "api.claude.request_fees.0.usd_per_million_requests" in model.inputs
    assert "workload.chat.slo.ttft_s" not in model.inputs
    assert "median" in model.unused["workload.chat.slo.ttft_s"]


def test_same_seed_same_result_whatever_the_threads():
    sc, corr, _ = load_risk_example()
    n = 2 * CHUNK_SIZE + 123
    a = run_montecarlo(sc, n=n, seed=42, correlations=corr, threads=1, sensitivity=False)
    b = run_montecarlo(sc, n=n, seed=42, correlations=corr, threads=2, sensitivity=False)
    c = run_montecarlo(sc, n=n, seed=43, correlations=corr, threads=2, sensitivity=False)
    assert a.samples.shape == (n, 3)
    assert np.array_equal(a.samples.to_numpy(), b.samples.to_numpy())
    assert a.summary.equals(b.summary)
    assert not np.array_equal(a.samples.to_numpy(), c.samples.to_numpy())
    # seed=None draws fresh entropy and records it: the run can be reproduced
    d = run_montecarlo(sc, n=500, seed=None, correlations=corr, sensitivity=False)
    e = run_montecarlo(sc, n=500, seed=np.random.SeedSequence(d.seed_entropy),
                       correlations=corr, sensitivity=False)
    assert np.array_equal(d.samples.to_numpy(), e.samples.to_numpy())


def test_convergence_stops_and_equals_a_run_of_that_size():
    sc, corr, _ = load_risk_example()
    seen = []
    res = run_montecarlo(sc, n=16 * CHUNK_SIZE, seed=5, correlations=corr, tol=0.05,
                         sensitivity=False, progress=lambda done, total: seen.append((done, total)))
    assert res.converged is True
    # progress goes to the callback, once per chunk, up to the samples actually drawn
    assert seen[-1] == (res.n, 16 * CHUNK_SIZE) and len(seen) == res.n // CHUNK_SIZE
    assert res.n < 16 * CHUNK_SIZE and res.n % CHUNK_SIZE == 0
    conv = res.convergence
    last = conv[conv["n"] == res.n]
    assert (last["p95_rel_change"] <= 0.05).all() and (last["p95_rel_se"] <= 0.05).all()
    assert sorted(set(conv["n"])) == [CHUNK_SIZE * 2**k for k in range(len(set(conv["n"])))]
    same = run_montecarlo(sc, n=res.n, seed=5, correlations=corr, sensitivity=False)
    assert np.array_equal(res.samples.to_numpy(), same.samples.to_numpy())
    # an unreachable tolerance runs to n
    hard = run_montecarlo(sc, n=2 * CHUNK_SIZE, seed=5, correlations=corr, tol=1e-9,
                          sensitivity=False)
    assert hard.converged is False and hard.n == 2 * CHUNK_SIZE


def test_summary_statistics_match_the_samples():
    sc, corr, _ = load_risk_example()
    res = run_montecarlo(sc, n=20_000, seed=9, correlations=corr, progress=False)
    summ = res.summary.set_index(["deployment", "metric"])
    for dep in res.samples.columns:
        x = res.samples[dep].to_numpy()
        row = summ.loc[(dep, "usd_per_month")]
        assert row["mean"] == pytest.approx(x.mean(), rel=1e-12)
        q = np.quantile(x, [0.05, 0.5, 0.95])
        np.testing.assert_allclose(row[["p5", "p50", "p95"]].astype(float), q, rtol=1e-12)
        assert row["cvar95"] == pytest.approx(np.sort(x)[-1000:].mean(), rel=1e-12)
        assert row["se_mean"] == pytest.approx(x.std(ddof=1) / math.sqrt(x.size), rel=1e-9)
        assert row["p5"] < row["p50"] < row["p95"] <= row["cvar95"]
        h = summ.loc[(dep, "usd_horizon")]
        assert h["p95"] == pytest.approx(row["p95"] * 36, rel=1e-12)  # no one-off costs here
        # $/Mtok is the monthly cost over the sample's own tokens, so not monthly / median
        assert summ.loc[(dep, "usd_per_mtok"), "p50"] > 0


def test_headline_and_tables():
    sc, corr, _ = load_risk_example()
    res = run_montecarlo(sc, n=5000, seed=6, correlations=corr)
    head = res.headline().set_index("deployment")
    summ = res.summary.set_index(["deployment", "metric"])
    for dep in head.index:
        assert head.loc[dep, "usd_per_month_p95"] == summ.loc[(dep, "usd_per_month"), "p95"]
        assert head.loc[dep, "usd_horizon_p50"] == summ.loc[(dep, "usd_horizon"), "p50"]
    assert head["p_cheapest"].sum() == pytest.approx(1.0)
    tabs = res.tables()
    assert set(tabs) == {"headline", "summary", "win_probability", "tornado",
                         "rank_correlation", "breakeven", "convergence"}
    assert all(len(t) for t in tabs.values())


def test_tail_stats_against_numpy():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 20, 101, 5000):
        x = rng.lognormal(size=n)
        st = tail_stats(x)
        np.testing.assert_allclose([st["p5"], st["p50"], st["p95"]],
                                   np.quantile(x, [0.05, 0.5, 0.95]), rtol=1e-14)
        # Rockafellar-Uryasev: the worst 5 % of the mass, the boundary sample fractionally
        m = 0.05 * n
        k = math.floor(m + 1e-9)
        top = np.sort(x)[::-1]
        expect = (top[:k].sum() + (m - k) * (top[k] if k < n else 0.0)) / m
        assert st["cvar95"] == pytest.approx(expect, rel=1e-12)
    # the P95 standard error shrinks like 1/sqrt(n) (order-statistic interval)
    big = tail_stats(rng.standard_normal(400_000))["p95_se"]
    small = tail_stats(rng.standard_normal(4_000))["p95_se"]
    assert 5 < small / big < 20
    # analytic: se(P95) of N(0,1) = sqrt(0.95 * 0.05 / n) / phi(1.645) = 0.0334 at n = 4000
    assert small == pytest.approx(math.sqrt(0.95 * 0.05 / 4000) / 0.10314, rel=0.25)


def test_win_probability():
    sc, corr, _ = load_risk_example()
    res = run_montecarlo(sc, n=20_000, seed=2, correlations=corr)
    w = res.win_probability.set_index("deployment")
    assert w["compared"].all()
    assert w["p_cheapest"].sum() == pytest.approx(1.0, abs=1e-12)
    s = res.samples.to_numpy()
    best = np.argmin(s, axis=1)
    for j, dep in enumerate(res.samples.columns):
        assert w.loc[dep, "p_cheapest"] == pytest.approx(np.mean(best == j), abs=1e-12)
    # an option serving no class is not compared (its cost is 0)
    ft = run_montecarlo(load_scenario(ROOT / "studies" / "finetune-breakeven" / "scenario.toml"),
                        n=100, seed=1)
    wf = ft.win_probability.set_index("deployment")
    assert not wf.loc["gpt-4o-mini", "compared"] and np.isnan(wf.loc["gpt-4o-mini", "p_cheapest"])
    assert wf.loc["gpt-4o-mini-ft", "p_cheapest"] == 1.0


def test_tornado():
    sc, corr, _ = load_risk_example()
    t = tornado(sc)
    det = evaluate(sc).summary.set_index("deployment")["usd_per_month"]
    for dep, sub in t.groupby("deployment"):
        np.testing.assert_allclose(sub["usd_base"], det[dep], rtol=1e-12)
        assert list(sub["rank"]) == list(range(1, len(sub) + 1))
        assert (np.diff(sub["swing"].to_numpy()) <= 0).all()
    t = t.set_index(["deployment", "input"])
    # the discount moves only the API bill, downwards
    disc = t.xs("api.gpt-4o.discount", level="input")
    assert disc.loc["gpt-4o", "usd_high"] < disc.loc["gpt-4o", "usd_low"]
    assert disc.loc["llama-70b-h100", "swing"] == 0 and disc.loc["llama-70b-hgx", "swing"] == 0
    # volume drives the API bill most
    api = t.xs("gpt-4o", level="deployment")
    assert api["swing"].idxmax() == "workload.chat.requests_per_day"
    # each end of a bar is the deterministic cost with that input at its P10 / P90
    key = "onprem.llama-70b-hgx.ops_usd_per_year"
    row = t.loc[("llama-70b-hgx", key)]
    dist = uncertain_inputs(sc)[key].dist
    assert row["low_value"] == pytest.approx(dist.quantile(0.1))
    for end, q in (("usd_low", 0.1), ("usd_high", 0.9)):
        fixed = scenario_at(sc, {key: dist.quantile(q)})
        want = evaluate(fixed).summary.set_index("deployment").loc["llama-70b-hgx",
                                                                   "usd_per_month"]
        assert row[end] == pytest.approx(want, rel=1e-12)


def test_rank_correlation():
    sc, corr, _ = load_risk_example()
    res = run_montecarlo(sc, n=20_000, seed=4, correlations=corr, rank_samples=20_000)
    rc = res.rank_correlation.set_index(["deployment", "input"])["spearman_rho"]
    api = rc.xs("gpt-4o", level="deployment")
    assert api.abs().idxmax() == "workload.chat.requests_per_day"
    assert api["workload.chat.requests_per_day"] > 0.8
    assert api["api.gpt-4o.discount"] < 0
    # an input the option does not use: |rho| ~ 0 (se ~ 1/sqrt(20000) = 0.007)
    assert abs(api["cloud.llama-70b-h100.usd_per_gpu_hour"]) < 0.04
    assert rc.xs("llama-70b-h100", level="deployment")[
        "cloud.llama-70b-h100.usd_per_gpu_hour"] > 0.3
    contrib = res.rank_correlation.groupby("deployment")["contribution"].sum()
    np.testing.assert_allclose(contrib, 1.0, rtol=1e-12)
    # ranks with ties (the amortisation-years choice) are average ranks, as scipy's
    from scipy import stats

    from planner.engines.risk.tornado import _average_ranks

    a = res.inputs.to_numpy()[:5000]
    assert np.array_equal(_average_ranks(a), stats.rankdata(a, axis=0))
    want = stats.spearmanr(res.inputs["workload.chat.requests_per_day"],
                           res.samples["gpt-4o"]).statistic
    assert api["workload.chat.requests_per_day"] == pytest.approx(want, abs=1e-12)


def test_breakeven_volumes_bracket_the_deterministic_crossing():
    sc = at_median(load_scenario(TEMPLATES / "quickstart.toml"))
    res = run_montecarlo(sc, n=50, seed=1)
    be = res.breakeven.set_index(["self_hosted", "api"])
    row = be.loc[("llama-70b-h100", "gpt-4o")]
    assert row["p_always_cheaper"] == 0 and row["p_never"] == 0
    s = row["scale_p50"]
    assert row["scale_p5"] == row["scale_p95"] == s  # fixed inputs: one value
    step = (1e3 / 1e-3) ** (2.0 ** -20)

    def diff(scale):
        d = evaluate(sc, volume_scale=scale).summary.set_index("deployment")["usd_per_month"]
        return d["llama-70b-h100"] - d["gpt-4o"]

    assert diff(s) <= 0 < diff(s / step)
    rpd = 200000 + 20000
    assert row["requests_per_day_p50"] == pytest.approx(s * rpd, rel=1e-12)


def test_simulation_hook():
    sc, corr, _ = load_risk_example()
    res = run_montecarlo(sc, n=4000, seed=1, correlations=corr, rank_samples=4000)
    seen = []

    def fake_sim(fixed, rng):
        assert uncertain_inputs(fixed) == {}
        assert isinstance(rng, np.random.Generator)
        seen.append(fixed.workload["chat"].requests_per_day)
        return {"slo_attainment": 0.99, "spillover_share": float(rng.random())}

    df = simulation_replications(res, sc, simulate_fn=fake_sim, deployment="llama-70b-hgx",
                                 replications=5)
    assert len(df) == 5 and list(df["replication"]) == list(range(5))
    assert df["usd_per_month"].is_monotonic_increasing  # spread over the cost quantiles
    for i, idx in enumerate(df["sample"]):
        assert seen[i] == pytest.approx(res.inputs["workload.chat.requests_per_day"][idx])
    with pytest.raises(PlannerError, match="need a cloud or on-prem deployment, got 'gpt-4o'"):
        simulation_replications(res, sc, deployment="gpt-4o")


def test_scenario_at_fixes_inputs_inside_tuple_fields():
    """An uncertain request fee (``request_fees`` is a tuple field) is fixed like any other
    input, and the fixed scenario costs what the model priced at that value."""
    sink = parse_scenario(tomllib.loads(KITCHEN_SINK_A), overrides={
        "api.claude.request_fees": [
            {"name": "gw", "usd_per_million_requests": {"dist": "uniform", "low": 1, "high": 5}}],
    })
    key = "api.claude.request_fees.0.usd_per_million_requests"
    fixed = scenario_at(sink, {key: 4.25})
    assert key not in uncertain_inputs(fixed)
    assert fixed.api["claude"].request_fees[0].usd_per_million_requests == 4.25
    model = compile_scenario(sink)
    got = model.evaluate({key: np.array([4.25])}, 1)["claude"]["monthly"]
    det = evaluate(fixed).summary.set_index("deployment").loc["claude", "usd_per_month"]
    np.testing.assert_allclose(got, det, rtol=1e-12)


def test_scenario_at_drops_correlations_of_fixed_inputs():
    sc = load_scenario(TEMPLATES / "risk-example.toml")
    linked = {c.a for c in sc.correlation} | {c.b for c in sc.correlation}
    key = sorted(linked)[0]
    fixed = scenario_at(sc, {key: 123.0})
    assert all(key not in (c.a, c.b) for c in fixed.correlation)
    assert len(fixed.correlation) == sum(key not in (c.a, c.b) for c in sc.correlation)
    assert key not in uncertain_inputs(fixed)


def test_default_simulation_replications_run_simpy_on_sampled_scenarios():
    sc = load_scenario(TEMPLATES / "risk-example.toml")  # with its [[correlation]] tables
    assert sc.correlation
    res = run_montecarlo(sc, n=2000, seed=1, rank_samples=2000)
    kw = dict(deployment="llama-70b-h100", replications=3, seed=5, max_requests=1500)
    df = simulation_replications(res, sc, **kw)
    again = simulation_replications(res, sc, **kw)
    pd.testing.assert_frame_equal(df, again)  # same seed, same replications
    assert len(df) == 3 and df["usd_per_month"].is_monotonic_increasing
    for col in ("slo_attainment", "spillover_share", "dropped_share"):
        assert df[col].between(0, 1).all(), col
    assert (df["requests"] > 0).all() and (df["requests"] <= 1500).all()
    assert (df["ttft_p99_s"] > 0).all()
    # each replication is sized by the cost engine at its own sample
    for r in df.itertuples():
        vals = {k: float(res.inputs[k].iloc[r.sample]) for k in res.inputs.columns}
        summ = evaluate(scenario_at(sc, vals)).summary.set_index("deployment")
        assert r.replicas == summ.loc["llama-70b-h100", "replicas"]
        assert r.usd_per_month == pytest.approx(summ.loc["llama-70b-h100", "usd_per_month"],
                                                rel=1e-9)


def test_bad_arguments():
    sc, corr, _ = load_risk_example()
    with pytest.raises(PlannerError, match="n:"):
        run_montecarlo(sc, n=0)
    with pytest.raises(PlannerError, match="tol"):
        run_montecarlo(sc, n=10, tol=2.0)
    with pytest.raises(PlannerError, match="seed"):
        run_montecarlo(sc, n=10, seed=-1)


def test_report_tables_follow_the_report_contract():
    from planner.cli import scenario_path
    from planner.config import load_scenario
    from planner.engines.risk.report import report_tables

    sc = load_scenario(scenario_path("example:risk-example"))
    t = report_tables(sc, n=2000, chart_samples=500)
    assert set(t["samples"].columns) == {"deployment", "usd_per_month"}
    assert len(t["samples"]) == 500 * t["summary"]["deployment"].nunique()
    assert (t["summary"]["usd_p5"] <= t["summary"]["usd_p50"]).all()
    assert (t["summary"]["usd_p50"] <= t["summary"]["usd_p95"]).all()
    assert t["win"]["probability"].sum() == pytest.approx(1.0)
    assert (t["tornado"]["high_usd_per_month"] != t["tornado"]["low_usd_per_month"]).all()
    assert set(t["paths"]["year"]) == {1, 2, 3}
