"""Break-even: a fine-tune's one-off cost (training runs x retries + ``one_off_usd``) in the
payback, the cost tables, the optimiser and Monte Carlo; ``planner breakeven`` notes printed
whole."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner import api
from planner.cli import main
from planner.config import parse_scenario
from planner.costs.training import finetune_one_off_usd, finetune_payback
from tests.conftest import ROOT

#: a toy anyone can check by hand: one class, a large API and a fine-tuned small API, all
#: prices stated in the scenario (no catalog price used).
TOY = {
    "scenario": {"name": "toy", "horizon_months": 12},
    "planning": {"hours_per_month": 720.0},
    "workload": {"q": {"requests_per_day": 1000, "input": 500, "output": 500}},
    "api": {
        "big": {"offering": "openai/gpt-4o-2024-08-06", "input_usd_per_mtok": 10,
                "output_usd_per_mtok": 10},
        "small-ft": {"offering": "openai/gpt-4o-mini-2024-07-18", "fine_tune": "ft",
                     "input_usd_per_mtok": 2, "output_usd_per_mtok": 2},
    },
    "finetune": {"ft": {"method": "api", "base_model": "openai/gpt-4o-mini-2024-07-18",
                        "training_tokens": 1e6, "ft_train_usd_per_mtok": 100,
                        "retry_multiplier": 2, "one_off_usd": 4800}},
}


def toy(**ft) -> dict:
    return {**TOY, "finetune": {"ft": {**TOY["finetune"]["ft"], **ft}}}


def hand_payback(d: dict) -> tuple[float, float, float]:
    """(one-off USD, months, tokens) of the toy by hand: payback = (training + one-off) /
    monthly saving; break-even tokens = (training + one-off) / (price difference per token)."""
    f, wc = d["finetune"]["ft"], d["workload"]["q"]
    training = f["ft_train_usd_per_mtok"] * f["training_tokens"] / 1e6 * f["retry_multiplier"]
    once = training + f.get("one_off_usd", 0.0)
    tokens_per_month = (wc["requests_per_day"] * d["planning"]["hours_per_month"] / 24
                        * (wc["input"] + wc["output"]))
    big, small = d["api"]["big"]["input_usd_per_mtok"], d["api"]["small-ft"][
        "input_usd_per_mtok"]
    saving = (big - small) * tokens_per_month / 1e6
    return once, once / saving, once / ((big - small) / 1e6)


@pytest.mark.parametrize("one_off", [0.0, 4800.0, 50_000.0])
def test_payback_counts_one_off_cost(one_off):
    d = toy(one_off_usd=one_off)
    once, months, tokens = hand_payback(d)
    b = api.breakeven(parse_scenario(d))
    r = b.finetune.set_index("versus").loc["big"]
    assert r["finetune_usd"] == pytest.approx(once, rel=1e-12)
    assert r["one_off_usd"] == one_off
    assert r["training_usd"] + r["one_off_usd"] == pytest.approx(r["finetune_usd"], rel=1e-12)
    assert r["payback_months"] == pytest.approx(months, rel=1e-9)
    assert r["breakeven_tokens"] == pytest.approx(tokens, rel=1e-9)


def test_one_off_in_cost_tables():
    d = toy(one_off_usd=4800.0)
    once, _, _ = hand_payback(d)
    c = api.cost(parse_scenario(d))
    ft = c.finetune.set_index("finetune").loc["ft"]
    assert ft["one_off_usd"] == 4800.0 and ft["usd"] == pytest.approx(once, rel=1e-12)
    assert "4800 usd one-off" in ft["basis"]
    line = c.costs[c.costs["component"].str.startswith("fine-tune ft")]
    assert line["usd_per_month"].sum() == pytest.approx(once / 12, rel=1e-12)
    no_extra = api.cost(parse_scenario(toy(one_off_usd=0.0))).summary.set_index("deployment")
    with_extra = c.summary.set_index("deployment")
    assert (with_extra.loc["small-ft", "usd_per_month"]
            - no_extra.loc["small-ft", "usd_per_month"]) == pytest.approx(4800 / 12, rel=1e-9)
    assert with_extra.loc["big", "usd_per_month"] == no_extra.loc["big", "usd_per_month"]


def test_optimiser_counts_one_off_cost():
    """Amortised over 12 months: training 200 USD alone makes the fine-tune cheaper than the
    big API (60 + 200/12 < 300 USD/month); 4,800 USD more makes it dearer (60 + 5000/12)."""
    chosen = {}
    for one_off in (0.0, 4800.0):
        o = api.optimize(parse_scenario(toy(one_off_usd=one_off)))
        assert o.trusted
        chosen[one_off] = set(o.plan.loc[o.plan["chosen"], "deployment"])
    assert chosen[0.0] == {"small-ft"} and chosen[4800.0] == {"big"}


def test_one_off_may_be_uncertain():
    d = toy(one_off_usd={"dist": "uniform", "low": 0, "high": 9600})
    r = api.risk(parse_scenario(d), n=4000, seed=3, sensitivity=False)
    s = r.summary.set_index(["deployment", "metric"])
    mean = float(s.loc[("small-ft", "usd_per_month"), "mean"])
    base = api.cost(parse_scenario(toy(one_off_usd=0.0))).summary.set_index("deployment")
    # the mean of uniform(0, 9600) is 4800: amortised over 12 months, 400 USD a month
    assert mean - base.loc["small-ft", "usd_per_month"] == pytest.approx(400, rel=0.03)


def test_pure_functions():
    assert finetune_one_off_usd(np.array([100.0, 200.0]), 3.0, 50.0).tolist() == [350.0, 650.0]
    tokens, months = finetune_payback(1000.0, 3e-6, 2e-6, -5.0)  # no saving: no payback
    assert math.isnan(tokens) and math.isnan(months)


def test_study_variant_sets_one_off():
    path = ROOT / "studies" / "finetune-breakeven" / "scenario.toml"
    base = api.breakeven(api.load(path)).finetune.set_index("versus").loc["gpt-4o"]
    eng = api.load(path, variants="with-engineering")
    extra = float(eng.finetune["mini"].one_off_usd)
    r = api.breakeven(eng).finetune.set_index("versus").loc["gpt-4o"]
    assert extra > 0 and r["one_off_usd"] == extra
    assert r["payback_months"] == pytest.approx(
        (base["finetune_usd"] + extra) / r["monthly_saving_usd"], rel=1e-9)


def test_breakeven_notes_printed_whole(capsys):
    code = main(["breakeven", "example:quickstart"])
    out = capsys.readouterr().out
    assert code == 0
    assert "…" not in out
    b = api.breakeven("example:quickstart")
    lines = out.splitlines()
    body = " ".join(x.strip() for x in lines if not x.startswith("== "))
    for i, note in enumerate(dict.fromkeys(n for n in b.volume["note"] if n), start=1):
        assert f"[{i}]" in body
        assert " ".join(note.split()) in " ".join(body.split())  # whole, perhaps wrapped
    assert max(len(x) for x in lines if x.startswith("note:")) <= 96
    # CSV keeps the full note in its column
    main(["breakeven", "example:quickstart", "--format", "csv"])
    csv = capsys.readouterr().out
    assert all(n in csv for n in b.volume["note"])


def test_report_fine_tune_section_shows_the_one_off_cost(tmp_path):
    import pandas as pd

    d = toy(one_off_usd=4800.0)
    once, months, _ = hand_payback(d)
    rep = api.report(parse_scenario(d), tmp_path / "rep", sections=["costs", "breakeven"])
    files = rep.files.set_index("name")["path"]
    be = pd.read_csv(files["breakeven_finetune"])
    assert be.loc[0, "one_off_usd"] == 4800.0
    assert be.loc[0, "training_usd"] + be.loc[0, "one_off_usd"] == pytest.approx(once)
    assert be.loc[0, "payback_months"] == pytest.approx(months)
    ft = pd.read_csv(files["finetune"])
    assert ft.loc[0, "one_off_usd"] == 4800.0
    html = rep.html.read_text(encoding="utf-8")
    assert f"pays back its {once:,.0f} USD one-off cost" in html
