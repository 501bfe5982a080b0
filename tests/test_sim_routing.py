"""The simulator's one spillover decision and the one API-eligibility rule.

* :func:`planner.sim.routing.spill_decision` is the only code of ``planner/sim`` that refuses
  a request (the only user of the refusal reason codes), and its rule holds in its order;
* the spillover API of a simulated scenario serves exactly the classes the cost model lets
  that API serve (:func:`planner.model.structure.api_classes`, the model's compiled option),
  over generated scenarios with quality tiers, fine-tunes and ``classes`` lists.
"""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.catalog import load_catalog
from planner.config import parse_scenario
from planner.model.evaluate import Model
from planner.model.structure import api_classes
from planner.requests import RequestTable
from planner.sim import REASONS, LinearStepModel, PoolSpec, SimPlan, routing, simulate
from planner.sim.engine import Engine
from planner.sim.routing import spill_decision
from planner.sim.scenario import build_plan

SIM = Path(routing.__file__).parent
CAT = load_catalog()

REFUSALS = ("R_QUEUE_FULL", "R_SLO", "R_KV")


def _functions_using(names: tuple[str, ...]) -> set[str]:
    """``module.function`` (outermost function) of every load of one of ``names`` in sim."""
    found = set()
    for path in sorted(SIM.glob("*.py")):
        tree = ast.parse(path.read_text())
        for top in ast.walk(tree):
            if not isinstance(top, ast.FunctionDef | ast.ClassDef):
                continue
            for node in ast.walk(top):
                if isinstance(node, ast.Name) and node.id in names and isinstance(
                        node.ctx, ast.Load):
                    found.add(f"{path.stem}.{top.name}")
    return found


def test_only_spill_decision_refuses_a_request():
    assert _functions_using(REFUSALS) == {"routing.spill_decision"}


def test_reason_names_are_routings():
    assert REASONS is routing.REASONS
    for name, code in [("", routing.R_NONE), ("queue_full", routing.R_QUEUE_FULL),
                       ("slo", routing.R_SLO), ("exceeds_kv_capacity", routing.R_KV),
                       ("no_route", routing.R_NO_ROUTE), ("api_class", routing.R_API_CLASS)]:
        assert REASONS[code] == name


def _pool(cap=1000, max_queue=None, ewma=math.nan):
    return SimpleNamespace(need=[500, 1500], pre=[100, 100], cap=cap, max_queue=max_queue,
                           ewma_dt=ewma, prefill=lambda n: 0.001 * n)


def test_spill_decision_rule_in_order():
    # 1. a request that can never fit: exceeds_kv_capacity, before anything else
    assert spill_decision(_pool(max_queue=0), 1, 5, 0, 0.0) == routing.R_KV
    # 2. nowhere to queue, or the queue is full
    assert spill_decision(_pool(), 0, 0, 0, None) == routing.R_QUEUE_FULL
    assert spill_decision(_pool(max_queue=3), 0, 3, 2, None) == routing.R_QUEUE_FULL
    assert spill_decision(_pool(max_queue=3), 0, 2, 2, None) == routing.R_NONE
    # 3. predicted TTFT (ahead + 1) x EWMA x spread + prefill over the budget
    p = _pool(ewma=0.5)  # prefill 0.1 s
    assert spill_decision(p, 0, 1, 1, 1.1) == routing.R_NONE  # 2 x 0.5 + 0.1 = 1.1
    assert spill_decision(p, 0, 1, 1, 1.09) == routing.R_SLO
    assert spill_decision(p, 0, 1, 2, 2.09) == routing.R_SLO  # spread over 2 replicas
    assert spill_decision(p, 0, 1, 2, None) == routing.R_NONE  # no budget: never on the SLO
    assert spill_decision(_pool(), 0, 100, 1, 0.0) == routing.R_NONE  # no EWMA yet


def test_class_spill_rules():
    from planner.sim import SLO, ApiTarget, LinearStepModel, PoolSpec, SimPlan

    m = LinearStepModel(0.01, 1e-4, 0.01, 1e-4, 1e-7, kv_capacity_tokens=10_000, max_batch=8)
    pools = (PoolSpec("gpu", m),)
    slos = {"a": SLO(ttft_s=2.0), "b": SLO(e2e_s=9.0), "c": SLO(ttft_s=1.0)}
    names = ["a", "b", "c", "d"]
    api = ApiTarget(classes=("a", "b", "d"))
    assert routing.class_spill_rules(SimPlan(pools=pools, slos=slos), names) == (
        [False] * 4, [None] * 4)
    ok, budget = routing.class_spill_rules(
        SimPlan(pools=pools, api=api, slos=slos, spill_margin=0.5), names)
    assert ok == [True, True, False, True]
    assert budget == [1.0, None, None, None]
    ok, budget = routing.class_spill_rules(
        SimPlan(pools=pools, api=api, slos=slos, spill_on_slo=False), names)
    assert budget == [None] * 4


# ---------------------------------------------------------------------- API eligibility
_NAMES = ["chat", "rag", "batch"]


@st.composite
def api_scenarios(draw):
    names = draw(st.lists(st.sampled_from(_NAMES), min_size=1, max_size=3, unique=True))
    workload = {}
    for c in names:
        wc = {"requests_per_day": 1000.0, "input": {"tokens": 500}, "output": {"tokens": 100}}
        tier = draw(st.sampled_from([None, 1, 2, 3]))
        if tier is not None:
            wc["min_quality_tier"] = tier
        workload[c] = wc
    apis = {}
    for k, offering in enumerate(draw(st.lists(st.sampled_from(
            ["openai/gpt-4o-mini", "openai/gpt-4o-2024-08-06", "openai/gpt-4o-mini-2024-07-18"]),
            min_size=1, max_size=3))):
        dep = {"offering": offering}
        if draw(st.booleans()):
            dep["classes"] = draw(st.lists(st.sampled_from(names), unique=True))
        if draw(st.booleans()):
            dep["quality_tier"] = draw(st.integers(1, 4))
        if draw(st.booleans()):
            dep["fine_tune"] = "ft"
        apis[f"api{k}"] = dep
    data = {
        "scenario": {"name": "generated"},
        "workload": workload,
        "api": apis,
        "finetune": {"ft": {
            "method": "api", "base_model": "openai/gpt-4o-mini-2024-07-18",
            "training_tokens": 1e6,
            "qualifies_for": draw(st.lists(st.sampled_from(names), unique=True)),
            "quality_tier": draw(st.one_of(st.none(), st.integers(1, 3)))}},
    }
    return parse_scenario(data, catalog=CAT)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(api_scenarios())
def test_spillover_api_serves_the_cost_models_eligible_classes(sc):
    model = Model(sc, CAT)
    for name in sc.api:
        expect = model.by_name[name].served
        assert api_classes(sc, CAT, name) == expect
        plan, _, covered = build_plan(sc, (), catalog=CAT, sizing={}, spillover=name)
        assert plan.api.classes == expect
        assert covered == list(expect)


def test_argmin_function_is_the_index_of_the_first_minimum():
    """The generated argmin (pump and shared router) is ``w.index(min(w))`` on every list of
    up to 5 items over a few values with ties and inf, and on random longer lists."""
    vals = (0.0, 1.0, 2.0, math.inf)
    rng = np.random.default_rng(11)
    assert routing.argmin_function(0)([]) == -1
    for n in range(1, 20):
        f = routing.argmin_function(n)
        if n <= 5:
            lists = [list(w) for w in itertools.product(vals, repeat=n)]
        else:
            lists = [list(rng.choice(vals, size=n)) for _ in range(300)]
        for w in lists:
            assert f(w) == w.index(min(w)), w


def _busy_requests(n: int, seed: int) -> RequestTable:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(0.05, n))
    inp = rng.integers(20, 3000, n)
    inp[n // 2] = 90_000  # more KV than a replica holds: refused (exceeds_kv_capacity)
    return RequestTable(t, np.zeros(n, dtype=np.int32), ("chat",), inp,
                        rng.integers(1, 400, n), np.zeros(n, dtype=np.int64))


def test_one_class_shared_pool_fast_path_matches_the_per_class_routers():
    """One class on one shared pool: the inlined arrival loop (its pool records written at
    the end of the run) gives the records of the general per-class loop, which the same
    requests take once the table names a second, unused class; with queueing and drops."""
    model = LinearStepModel(prefill_base_s=0.004, prefill_s_per_token=6e-5,
                            decode_base_s=0.007, decode_s_per_seq=6e-5,
                            decode_s_per_kv_token=2.5e-8, kv_capacity_tokens=60_000,
                            max_batch=32)
    reqs = _busy_requests(6000, 5)
    two = RequestTable(reqs.arrival_s, reqs.class_idx, ("chat", "unused"), reqs.input_tokens,
                       reqs.output_tokens, reqs.cached_input_tokens)
    for mode in ("closed_form", "reference"):
        plan = SimPlan(pools=(PoolSpec("a", model, replicas=2, max_queue=8),), mode=mode)
        loops = {Engine(plan, r, np.random.default_rng(0), until_s=None,
                        progress=None).route_until.__name__ for r in (reqs, two)}
        assert loops == {"route_until_shared", "route_until"}
        fast = simulate(plan, reqs).requests
        general = simulate(plan, two).requests
        status = fast["status"].astype(str)
        assert (status == "dropped").sum() > 10 and (status == "completed").sum() > 1000
        assert set(fast["drop_reason"].astype(str)) >= {"queue_full", "exceeds_kv_capacity"}
        for col in fast.columns.drop("class"):
            a, b = fast[col], general[col]
            if isinstance(a.dtype, pd.CategoricalDtype):
                a, b = a.astype(str), b.astype(str)
            pd.testing.assert_series_equal(a, b, check_names=False)
