"""``optimize --verify`` takes the traffic it replays from the one model (issue 11).

:func:`planner.engines.optimize_verify.scenario_traffic` reads each class's input and prompt
tokens per deployment tokenizer from the scenario's compiled
:class:`planner.model.evaluate.Model` (:meth:`Model.length`, :meth:`Model.klass`) instead of
re-deriving them from :func:`planner.workload.resolve_length` and
:func:`planner.workload.class_volumes`. These tests compute the fixed-context share both ways
through public functions on every bundled study and template (so the move changed no
number), check the stochastic path's model (uncertain inputs, at their medians) gives the
same traffic, and that ``optimize`` compiles the scenario once for the problem and the
verification.
"""

from __future__ import annotations

import pytest

import planner.model.evaluate as evaluate_mod
from planner.config import med
from planner.engines.optimize import optimize
from planner.engines.optimize_data import problem_model
from planner.engines.optimize_verify import scenario_traffic
from planner.engines.risk.compiled import compile_scenario
from planner.model.capacity import variable_prompt_share
from planner.sim.scenario import api_latency
from planner.uncertain import uncertain_inputs
from planner.workload import class_volumes, resolve_length
from tests.test_optimize_verify_all import CAT, SCENARIOS, _scenario

WITH_WORKLOAD = [n for n in SCENARIOS if _scenario(n).workload]


def _from_the_workload_functions(sc) -> tuple[dict[str, float], dict]:
    """The fixed-context shares and API latencies as the verification derived them before it
    read the model: each deployment's tokenizer from its catalog row, the lengths from
    :func:`resolve_length` at the medians and the prompt from :func:`class_volumes`."""
    tokenizers: dict[str, str | None] = {"": None}
    latency = {}
    for name, (kind, dep) in sc.deployments().items():
        if kind == "api":
            row = CAT.api(dep.offering)
            tokenizers[name] = dep.tokenizer or row.get("tokenizer")
            latency[name] = api_latency(row, sc.simulation)
        else:
            tokenizers[name] = dep.tokenizer or CAT.llm(dep.model).get("tokenizer")
    share = {}
    for cname, wc in sc.workload.items():
        for name, tok in tokenizers.items():
            inp = resolve_length(wc.input, tok, CAT).tokens
            ctx = resolve_length(wc.context, tok, CAT).tokens
            _, prompt, _ = class_volumes(1.0, inp, 0.0, context_tokens=ctx,
                                         calls_per_request=float(med(wc.calls_per_request)))
            share[f"{cname}@{name}" if name else cname] = (
                1.0 - variable_prompt_share(inp, prompt) if prompt else 0.0)
    return share, latency


def test_the_scenarios_cover_a_fixed_context_and_several_tokenizers():
    # the comparison below is informative: some bundled class has a fixed context, and
    # some scenario serves one class in more than one tokenizer
    fixed = [n for n in WITH_WORKLOAD
             if any(0 < v < 1 for v in _from_the_workload_functions(_scenario(n))[0].values())]
    assert "studies/customer-service/scenario.toml" in fixed
    toks = {n: {o.tokenizer for o in problem_model(_scenario(n), CAT).options}
            for n in WITH_WORKLOAD}
    assert any(len(t) > 1 for t in toks.values())


@pytest.mark.parametrize("name", WITH_WORKLOAD)
def test_traffic_from_the_model_is_what_the_workload_functions_give(name):
    sc = _scenario(name)
    want_share, want_latency = _from_the_workload_functions(sc)
    got = scenario_traffic(sc, CAT)
    assert set(got["fixed_context_share"]) == set(want_share)
    for key, v in want_share.items():
        assert got["fixed_context_share"][key] == pytest.approx(v, rel=1e-12, abs=1e-12), key
    assert got["api_latency"] == want_latency
    # the model the optimiser prices with gives the same traffic (passed in, not rebuilt)
    model = problem_model(sc, CAT)
    assert scenario_traffic(sc, CAT, model=model) == got


UNCERTAIN = [n for n in WITH_WORKLOAD if uncertain_inputs(_scenario(n))]


def test_some_bundled_scenarios_have_uncertain_inputs():
    assert UNCERTAIN


@pytest.mark.parametrize("name", UNCERTAIN)
def test_the_stochastic_model_gives_the_same_traffic(name):
    # optimize --stochastic --verify reads the model the inputs were drawn with (uncertain
    # inputs held at their medians by ctx()): the same traffic as at the medians
    sc = _scenario(name)
    want = scenario_traffic(sc, CAT)
    got = scenario_traffic(sc, CAT, model=compile_scenario(sc, catalog=CAT))
    assert set(got["fixed_context_share"]) == set(want["fixed_context_share"])
    for key, v in want["fixed_context_share"].items():
        assert got["fixed_context_share"][key] == pytest.approx(v, rel=1e-12, abs=1e-12), key
    assert got["api_latency"] == want["api_latency"]


def test_optimize_verify_compiles_the_scenario_once(monkeypatch):
    # the problem's prices and the verification's traffic come from one compiled model
    sc = _scenario("studies/customer-service/scenario.toml")
    built = []
    real_init = evaluate_mod.Model.__init__

    def counting_init(self, *a, **k):
        built.append(type(self).__name__)
        real_init(self, *a, **k)

    monkeypatch.setattr(evaluate_mod.Model, "__init__", counting_init)
    seen = []
    import planner.engines.optimize as opt

    real_traffic = opt.scenario_traffic

    def spy(sc_, cat_, *, model=None):
        seen.append(model)
        return real_traffic(sc_, cat_, model=model)

    monkeypatch.setattr(opt, "scenario_traffic", spy)
    res = optimize(sc, catalog=CAT, verify=True, verify_window_s=125)
    assert res.solution is not None and len(res.verification)
    assert len(seen) == 1 and seen[0] is not None
    assert built == ["Model"]
