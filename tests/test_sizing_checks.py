"""The cost table's capacity columns and the simulated check (``planner cost --check``).

Level 1: the summary's ``requests_per_s_per_replica`` is the traffic-weighted harmonic mean of
the capacity table's per-class figures, recomputed here from the engine's own tables.
Level 2: the customer-service case of the issue (Qwen2.5-72B on 2x H100 fp8, 2,300 / 200
tokens, TTFT 1.5 s, TPOT 60 ms at p90, lengths spread with CV 0.5; ``studies/customer-service``)
sized by the cost engine with no headroom meets its SLO over the whole simulated busiest hour
(~250,000 requests), and one replica fewer misses it (measured: 19 replicas 0.985, 18 0.848).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from planner.catalog import load_catalog
from planner.cli import main
from planner.config import load_scenario
from planner.engines.deterministic import evaluate
from planner.sim.scenario import check_sizing, simulate_busiest_hour

CAT = load_catalog()
ROOT = Path(__file__).resolve().parents[1]
CS = ROOT / "studies" / "customer-service" / "scenario.toml"
QUICK = ROOT / "planner" / "templates" / "quickstart.toml"


def test_summary_capacity_is_the_mix_of_the_class_capacities():
    res = evaluate(load_scenario(QUICK, catalog=CAT), CAT)
    hosted = res.summary[res.summary["kind"] != "api"]
    assert len(hosted) >= 2
    for r in hosted.itertuples():
        cap = res.capacity[res.capacity["deployment"] == r.deployment].set_index("class")
        vol = res.classes[res.classes["deployment"] == r.deployment].set_index("class")
        served = r.classes_served.split(",")
        lam = vol.loc[served, "requests_per_day"] / 86400.0
        per = cap.loc[served, "requests_per_s_per_replica"]
        want = lam.sum() / (lam / per).sum()
        assert r.requests_per_s_per_replica == pytest.approx(want, rel=1e-9)
        assert min(per) <= r.requests_per_s_per_replica <= max(per)
        binding = (lam / per).idxmax()
        assert r.limited_by == cap.loc[binding, "limited_by"]
    assert res.summary.loc[res.summary["kind"] == "api", "limited_by"].eq("").all()


def test_cost_check_prints_the_simulated_attainment(capsys):
    rc = main(["cost", str(QUICK), "--check", "--check-max-requests", "2000", "--format",
               "csv", "-q"])
    assert rc == 0
    out = capsys.readouterr().out
    header = [ln for ln in out.splitlines() if ln and not ln.startswith("#")][0].split(",")
    assert "simulated_slo_attainment" in header and "slo_target" in header


@pytest.fixture(scope="module")
def cs():
    return load_scenario(CS, catalog=CAT)


def test_customer_service_sizing_meets_the_slo_and_is_tight(cs):
    chk = check_sizing(cs, CAT, max_requests=10**6).set_index("deployment")
    row = chk.loc["q72-h100"]
    assert row["simulated_meets_slo"], row.to_dict()
    reps = int(evaluate(cs, CAT).summary.set_index("deployment").loc["q72-h100", "replicas"])
    assert reps > 1
    fewer = cs.model_copy(update={"simulation": cs.simulation.model_copy(
        update={"replicas": {"q72-h100": reps - 1}})})
    b = simulate_busiest_hour(fewer, CAT, deployments=["q72-h100"], max_requests=10**6)
    lat = b.run.latency().set_index("class").loc["cs"]
    assert float(lat["slo_attainment"]) < float(lat["slo_target"])
    assert np.isfinite(row["simulated_slo_attainment"])


def test_report_summary_carries_the_simulated_check_of_the_plan_it_ran():
    import pandas as pd

    from planner.report.sections import _with_simulated_check

    summary = pd.DataFrame({"deployment": ["a", "b", "api"], "usd_per_month": [1.0, 2.0, 3.0]})
    lat = pd.DataFrame({"plan": ["a", "a", "a"], "class": ["all", "x", "y"],
                        "slo_attainment": [0.95, 0.97, 0.93], "slo_target": [None, 0.9, 0.95]})
    out = _with_simulated_check(summary, {"latency": lat}).set_index("deployment")
    # the worst class against its own target: y (0.93 vs 0.95), not the pooled "all" row
    assert out.loc["a", "simulated_slo_attainment"] == 0.93
    assert out.loc["a", "slo_target"] == 0.95
    assert out[["simulated_slo_attainment"]].loc[["b", "api"]].isna().all().all()
    assert _with_simulated_check(summary, None) is summary


def test_check_draws_count_the_hours_that_meet_the_slo():
    """``--check-draws``: independent arrival draws of the busiest hour. A bursty
    long-prompt pool of ``studies/sizing-vs-simulation`` (design case 17: Llama-3.1-70B x4,
    arrival CV 4, 3 replicas sized at the median hour; 4 of 10 draws met in the study) meets
    the p90 SLO in some draws and misses it in others; the
    first draw is the single check, the attainment shown is the worst draw's, and the same
    seed gives the same draws."""
    import sys

    sys.path.insert(0, str(ROOT / "studies" / "sizing-vs-simulation"))
    from cases import cases

    from planner.config import parse_scenario
    from planner.sim.scenario import draw_seeds

    sc = parse_scenario(cases(18, 7)[17], catalog=CAT)
    one = check_sizing(sc, CAT).iloc[0]
    many = check_sizing(sc, CAT, draws=10).iloc[0]
    assert one["simulated_draws"] == 1 and many["simulated_draws"] == 10
    assert 0 < many["simulated_draws_meeting"] < 10
    assert not many["simulated_meets_slo"]
    assert many["simulated_slo_attainment"] <= one["simulated_slo_attainment"]
    assert many["simulated_requests"] == one["simulated_requests"]
    seeds = draw_seeds(sc.simulation.seed, 10)
    assert seeds[0] == sc.simulation.seed and len(set(seeds)) == 10
    assert seeds == draw_seeds(sc.simulation.seed, 10)
    assert check_sizing(sc, CAT, draws=10).equals(check_sizing(sc, CAT, draws=10))


def test_cost_check_draws_flag(capsys):
    rc = main(["cost", str(QUICK), "--check", "--check-draws", "2", "--check-max-requests",
               "500", "--format", "csv", "-q"])
    assert rc == 0
    out = capsys.readouterr().out
    rows = [ln.split(",") for ln in out.splitlines() if ln and not ln.startswith("#")]
    col = rows[0].index("simulated_draws_meeting")
    assert {r[col] for r in rows[1:] if r[col]} <= {"0", "1", "2"}
    assert main(["cost", str(QUICK), "--check-draws", "2"]) == 2
    assert "--check-draws needs --check" in capsys.readouterr().err


@pytest.mark.parametrize("seed,k", [(13, 51), (7, 58)])
def test_check_needed_finds_the_fewest_replicas_the_simulated_hour_confirms(seed, k):
    """``--check-needed``: two cases of ``studies/sizing-vs-simulation`` whose simulated
    busiest hour (arrival seed 0) disagrees with the sizing by one replica, one each way
    (held-out seed 13's case 51 misses at its 3 replicas; design case 58 meets with one fewer
    than its 3). The
    count found meets the SLO in that hour and one fewer misses it, checked by simulating
    both here."""
    import sys

    sys.path.insert(0, str(ROOT / "studies" / "sizing-vs-simulation"))
    from cases import cases

    from planner.config import parse_scenario
    from planner.model.sizing import size_options

    sc = parse_scenario(cases(k + 1, seed)[k], catalog=CAT)
    row = check_sizing(sc, CAT, search=True).iloc[0]
    sized = size_options(sc, CAT)["gpu"].replicas
    needed = int(row["simulated_replicas_needed"])
    assert abs(needed - sized) == 1
    assert (needed > sized) == (not row["simulated_meets_slo"])

    def meets(r):
        fixed = sc.model_copy(update={"simulation": sc.simulation.model_copy(
            update={"replicas": {"gpu": r}})})
        return bool(check_sizing(fixed, CAT).iloc[0]["simulated_meets_slo"])

    assert meets(needed) and not meets(needed - 1)


def test_cost_check_needed_flag(capsys):
    import io

    import pandas as pd

    rc = main(["cost", str(QUICK), "--check", "--check-needed", "--check-max-requests",
               "500", "--format", "csv", "-q"])
    assert rc == 0
    out = capsys.readouterr().out
    df = pd.read_csv(io.StringIO(out), comment="#")
    hosted = df[df["kind"] != "api"]
    assert len(hosted) >= 2 and hosted["simulated_replicas_needed"].ge(1).all()
    assert df.loc[df["kind"] == "api", "simulated_replicas_needed"].isna().all()
    assert main(["cost", str(QUICK), "--check-needed"]) == 2
    assert "--check-needed needs --check" in capsys.readouterr().err
