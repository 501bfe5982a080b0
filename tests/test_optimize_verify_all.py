"""``planner optimize --verify`` at default settings on every bundled study and template
(issue 11), and the GPU type of an hourly fleet changing only when that pays after start-up
costs.

Every scenario file under ``studies/`` and every template (``example:NAME``) is optimised at
its own settings (its ``[optimize]`` gap and time limit, the default 600 s verify window, each
hour cut to about 3,000 requests and at least 120 s) and the plan is simulated in every hour of
the planned day (:func:`planner.engines.optimize_verify.verify_day`). What the test asks:

- a scenario with workload classes gets a trusted plan, and every hour in which the plan sends
  traffic to a self-hosted pool with a performance model is simulated (computed here from the
  plan's flows, not taken from the verification table);
- in every simulated hour every class meets its SLO percentile (attainment >= target), drops
  no request and spills nothing to an API (a spilled request would be served at API prices
  the plan did not pay for, so a pass bought by spilling is not a pass);
- a plan that sends nothing to a simulated pool (API only, or stated capacities) says
  "nothing simulated" and why, and is not reported as a simulated pass;
- a study with no workload classes (cost-formula studies) is a clean user error (exit 2),
  not a traceback.

The default window is used as is: the whole file takes about 30 s of CPU (customer-service
and hybrid-support-bot, about 10 s each, dominate). ``/tmp`` runs of the busiest hour for
the whole hour (3,600 s, no request cap) gave the same verdicts (studies/README.md).
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from planner.api import scenario_path
from planner.catalog import load_catalog
from planner.config import load_scenario, med, parse_scenario
from planner.engines.optimize import OptimizeOptions, optimize

ROOT = Path(__file__).resolve().parent.parent
CAT = load_catalog()
STUDIES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "studies").rglob("*.toml"))
TEMPLATES = sorted(f"example:{p.stem}" for p in (ROOT / "planner" / "templates").glob("*.toml"))
SCENARIOS = STUDIES + TEMPLATES


def _path(name: str) -> str:
    return scenario_path(name) if name.startswith("example:") else str(ROOT / name)


@functools.cache
def _scenario(name: str):
    return load_scenario(_path(name), catalog=CAT)


def _has_traffic(sc) -> bool:
    return any(float(med(wc.requests_per_day)) > 0 for wc in sc.workload.values())


@functools.cache
def _verified(name: str):
    """The scenario optimised and verified at its default settings (run once per session)."""
    return optimize(_scenario(name), catalog=CAT, verify=True)


def _simulated_pool(o) -> bool:
    """A self-hosted option the simulator models (a performance model, not a stated
    capacity)."""
    return o.kind != "api" and "model" in o.perf and not o.perf.get("stated")


def _pool_hours(res, s: int) -> dict[int, set[str]]:
    """Hour -> classes the plan sends to a simulated pool in scenario ``s`` (from its
    flows)."""
    pb, plan = res.problem, res.solution
    out: dict[int, set[str]] = {}
    for k, (r, c) in enumerate(plan.pairs):
        legs = [d for d, _ in pb.routes[r].legs if _simulated_pool(pb.options[d])]
        if not legs:
            continue
        for h in np.flatnonzero(plan.flows[s, k] > 0):
            out.setdefault(int(h), set()).add(pb.classes[c])
    return out


def test_every_study_and_template_is_covered():
    # the parametrisation below finds the files itself; this pins that it finds them all
    assert len(TEMPLATES) == 2 and "example:quickstart" in TEMPLATES
    assert all(f"studies/{p.parent.name}/scenario.toml" in STUDIES
               for p in (ROOT / "studies").glob("*/scenario.toml"))
    assert sum(_has_traffic(_scenario(n)) for n in SCENARIOS) >= 10


@pytest.mark.parametrize("name", SCENARIOS)
def test_optimize_verify_passes_at_default_settings(name, capsys):
    sc = _scenario(name)
    if not _has_traffic(sc):
        # a cost-formula study (pre-training, payback, ...): nothing to optimise, said so
        from planner.cli import main

        assert main(["optimize", _path(name), "--verify", "-q"]) == 2
        err = capsys.readouterr().err
        assert "nothing to optimise" in err and "no workload classes" in err
        assert "Traceback" not in err
        return
    res = _verified(name)
    assert res.trusted and res.check.passed, (res.status, res.messages)
    assert res.headroom.empty  # no headroom search: the plan passed as planned
    vh = res.verification_hours
    s = int(vh["scenario"].iloc[0]) if len(vh) else 0
    expect = _pool_hours(res, s)
    if not expect:
        # nothing runs on a simulated pool: reported as such, not as a simulated pass
        assert vh.empty and res.verification.empty
        note = [m for m in res.messages if m.startswith("verification: nothing simulated: ")]
        assert len(note) == 1, res.messages
        pb, plan = res.problem, res.solution
        routed = {d for k, (r, _) in enumerate(plan.pairs) if plan.flows[:, k].max() > 0
                  for d, _ in pb.routes[r].legs}
        if all(pb.options[d].kind == "api" for d in routed):
            assert "every request goes to an API" in note[0]
        else:
            assert "no pool with a performance model carries traffic" in note[0]
        return
    # every hour with pool traffic simulated, with the classes the pools serve
    assert set(vh["hour"].astype(int)) == set(expect)
    for h, classes in expect.items():
        assert classes <= set(vh.loc[vh["hour"] == h, "class"]), h
    assert (vh["requests"] > 0).all()
    att = vh["slo_attainment"].to_numpy(float)
    assert np.isfinite(att).all()
    bad = vh[(att < vh["target"].to_numpy(float)) | (vh["dropped"] > 0)
             | (vh["spillover_share"] > 0) | ~vh["passed"].astype(bool)]
    assert bad.empty, bad.to_string()
    v = res.verification
    assert v["passed"].all() and (v["hours_passed"] == v["hours"]).all()
    assert (v["worst_hour_attainment"] >= v["target"]).all()
    assert any(m.startswith("simulated the planned day") for m in res.messages)


# ------------------------------------------------------------------------------------------
# the GPU type of an hourly fleet changes only when that is cheaper after start-up costs

W = 730.0 / 24  # each profile hour stands for ~30.4 hours of the month


def _two_types(day, cap, usd_per_hour, startup_s):
    """One class at ``day[h]`` requests/s in hour h; two hourly (scale-to-zero) GPU types
    ``a`` and ``b`` of one model with stated capacities ``cap`` (requests/s per replica),
    prices ``usd_per_hour`` (per replica) and start-up times ``startup_s``."""
    weights = ", ".join(f"{v!r}" for v in day)
    opts = "".join(f"""
[cloud.{n}]
model = "llama-3.1-8b"
accelerator = "{acc}"
usd_per_gpu_hour = {p!r}
gpus_per_instance = 1
capacity_requests_per_s = {c!r}
billing = "scale-to-zero"
startup_s = {t!r}
""" for n, acc, c, p, t in zip("ab", ("l40s", "h100-sxm"), cap, usd_per_hour, startup_s,
                                    strict=True))
    return parse_scenario(tomllib.loads(f"""
[scenario]
name = "two GPU types"
[workload.q]
requests_per_day = {sum(day) * 3600.0!r}
diurnal = [{weights}]
input = 500
output = 50
{opts}
[planning]
utilisation_target = 1.0
[optimize]
gap = 0.0
"""), catalog=CAT)


def _counts(res, d: str) -> np.ndarray:
    h = res.hourly[(res.hourly["deployment"] == d) & (res.hourly["scenario"] == 0)]
    c = np.zeros(24)
    c[h["hour"].to_numpy(int)] = h["replicas"].to_numpy(float)
    return c


def _cost_usd_per_month(counts, usd_per_hour, startup_s) -> float:
    """Replica-hours plus start-ups (billed while starting: startup_s x the hourly price for
    every replica started, the day repeating), worked out here from the counts."""
    total = 0.0
    for n, p, t in zip(counts, usd_per_hour, startup_s, strict=True):
        starts = np.maximum(0.0, n - np.roll(n, 1))
        total += W * p * (n.sum() + starts.sum() * t / 3600.0)
    return total


def _switches(a, b) -> int:
    """Hours where one type starts replicas while the other stops some."""
    da, db = a - np.roll(a, 1), b - np.roll(b, 1)
    return int(np.sum((da > 0) & (db < 0)) + np.sum((da < 0) & (db > 0)))


@settings(max_examples=30, deadline=None)
# the alternating day of tests/test_optimize_plans.py: free start-ups make switching pay,
# 30-minute ones do not
@example(day=[2.9, 1.9] * 12, cap_b=3.0, usd_a=1.0, usd_b=2.5, startup_s=(0.0, 0.0))
@example(day=[2.9, 1.9] * 12, cap_b=3.0, usd_a=1.0, usd_b=2.5, startup_s=(1800.0, 1800.0))
@given(day=st.lists(st.sampled_from([0.0, 0.5, 0.9, 1.5, 1.9, 2.5, 2.9, 4.0, 5.5]),
                    min_size=24, max_size=24).filter(lambda d: sum(d) > 0),
       cap_b=st.sampled_from([2.0, 3.0, 4.0]),
       usd_a=st.sampled_from([0.8, 1.0, 1.3]),
       usd_b=st.sampled_from([1.8, 2.5, 3.2]),
       startup_s=st.tuples(st.sampled_from([0.0, 60.0, 300.0, 900.0, 1800.0, 3600.0]),
                           st.sampled_from([0.0, 60.0, 300.0, 900.0, 1800.0, 3600.0])))
def test_a_gpu_type_switch_is_never_dearer_than_keeping_one_type(day, cap_b, usd_a, usd_b,
                                                                 startup_s):
    cap, usd = (1.0, cap_b), (usd_a, usd_b)
    sc = _two_types(day, cap, usd, startup_s)
    res = optimize(sc, catalog=CAT)
    assert res.status == "optimal" and res.check.passed
    a, b = _counts(res, "a"), _counts(res, "b")
    assert np.all(a == np.round(a)) and np.all(b == np.round(b))  # whole replicas
    assert np.all(cap[0] * a + cap[1] * b >= np.asarray(day) - 1e-9)  # every hour served
    cost = _cost_usd_per_month((a, b), usd, startup_s)
    assert res.objective_usd_per_month == pytest.approx(cost, rel=1e-9)  # start-ups paid
    # the best plan on one GPU type (the other excluded), re-solved at gap 0
    single = []
    for keep, drop in (("a", "b"), ("b", "a")):
        r1 = optimize(sc, catalog=CAT,
                      options=OptimizeOptions.from_scenario(sc, exclude=(drop,)))
        assert r1.status == "optimal"
        n = _counts(r1, keep)
        assert not _counts(r1, drop).any()
        single.append(_cost_usd_per_month((n, np.zeros(24)) if keep == "a"
                                          else (np.zeros(24), n), usd, startup_s))
    # the plan (switching, mixing or one type) is never dearer than the best one-type plan,
    # start-ups included; and when it switches GPU type the switch is strictly cheaper
    assert cost <= min(single) * (1 + 1e-9)
    if _switches(a, b):
        assert cost < min(single) * (1 - 1e-9)



def _type_switches(res) -> list[tuple[int, str, str]]:
    """(hour, started, stopped): hours where one hourly self-hosted option starts replicas
    while another that serves a class in common stops some (the day repeating)."""
    pb = res.problem
    hourly = [d for d in res.solution.options
              if pb.options[d].stage == "hourly" and pb.options[d].kind != "api"]
    n = {d: _counts(res, d) for d in hourly}
    out = []
    for a in hourly:
        for b in hourly:
            if a != b and set(pb.options[a].classes) & set(pb.options[b].classes):
                da, db = n[a] - np.roll(n[a], 1), n[b] - np.roll(n[b], 1)
                out += [(int(h), a, b) for h in np.flatnonzero((da > 0) & (db < 0))]
    return out


def test_study_plans_switch_gpu_type_only_when_it_is_cheaper():
    # studies/gpu-mix rents A10G at night and an H100 by day (it switches twice a day); that
    # plan, start-ups included, must cost no more than the best plan on one hourly GPU type
    # (every other hourly self-hosted option excluded, re-solved at the same gap). Every other
    # study or template whose plan switches is held to the same.
    checked = []
    for name in SCENARIOS:
        if not _has_traffic(_scenario(name)):
            continue
        res = _verified(name)
        sw = _type_switches(res)
        if not sw:
            continue
        sc, pb = _scenario(name), res.problem
        hourly = [d for d in pb.options if pb.options[d].stage == "hourly"
                  and pb.options[d].kind != "api"]
        best = np.inf
        for keep in hourly:
            r1 = optimize(sc, catalog=CAT, options=OptimizeOptions.from_scenario(
                sc, exclude=tuple(d for d in hourly if d != keep)))
            if r1.solution is None or not r1.trusted:
                continue
            assert not _type_switches(r1)
            best = min(best, r1.objective_usd_per_month)
        assert np.isfinite(best), name
        assert res.objective_usd_per_month <= best * (1 + 1e-9), (name, sw)
        checked.append(name)
    assert "studies/gpu-mix/scenario.toml" in checked


# ------------------------------------------------------------------------------------------
# the verification replays the traffic the capacities were sized for


def test_verify_replays_the_lengths_and_arrivals_the_plan_was_sized_for(monkeypatch):
    # studies/customer-service sizes for lognormal lengths (CV 0.5) around 300 question
    # tokens, a fixed 2,000-token context and 200 output tokens. With identical lengths (what
    # --verify generated before) its whole busiest hour at the plan's 19 replicas met the SLO
    # for ~76% of requests, with the scenario's spread ~98.5% (studies/README.md).
    import planner.engines.optimize as opt
    from planner.engines.optimize_verify import scenario_traffic, verify_requests
    from planner.sim.scenario import scenario_streams

    sc = _scenario("studies/customer-service/scenario.toml")
    kw = scenario_traffic(sc, CAT)
    wc = sc.workload["cs"]
    assert kw["length_cv"] == sc.simulation.length_cv > 0
    assert kw["burstiness"] is None and sc.simulation.burstiness_cv is None
    stream = scenario_streams(sc, hours=1, catalog=CAT)[0]  # what planner simulate generates
    ctx = stream.fixed_context_tokens
    assert ctx == wc.context.tokens > 0
    assert kw["fixed_context_share"]["cs"] == pytest.approx(
        ctx / (ctx + stream.input.mean_tokens), rel=1e-12)
    # per deployment too (its tokenizer; both lengths are in tokens here, so the same share)
    assert kw["fixed_context_share"]["cs@q72-h100"] == pytest.approx(
        kw["fixed_context_share"]["cs"], rel=1e-12)
    # optimize --verify hands that traffic to the day's simulation
    seen = {}
    real = opt.verify_day

    def spy(*a, **k):
        seen.update(k)
        return real(*a, **k)

    monkeypatch.setattr(opt, "verify_day", spy)
    res = optimize(sc, catalog=CAT, verify=True, verify_window_s=130)
    assert seen["length_cv"] == kw["length_cv"]
    assert seen["fixed_context_share"] == kw["fixed_context_share"]
    assert seen["api_latency"] == kw["api_latency"]
    # the requests: every prompt holds the fixed context, the rest spreads with the CV
    s, h = 0, int(np.argmax(res.problem.demand[0].sum(axis=0)))
    traffic = {k: v for k, v in kw.items() if k != "api_latency"}  # the simulated API's
    reqs, _ = verify_requests(res.problem, res.solution, s, h, np.random.default_rng(1),
                              window_s=600.0, **traffic)
    i_tok = float(res.problem.options["q72-h100"].classes["cs"].input_tokens[s])
    var = reqs.input_tokens - ctx
    assert var.min() >= 0 and reqs.input_tokens.min() >= ctx
    assert var.mean() == pytest.approx(i_tok - ctx, rel=0.03)
    assert var.std() / var.mean() == pytest.approx(kw["length_cv"], rel=0.1)
    out = reqs.output_tokens
    assert out.std() / out.mean() == pytest.approx(kw["length_cv"], rel=0.1)
