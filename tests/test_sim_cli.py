"""`planner simulate` and the scenario -> simulation bridge (planner.sim.scenario).

Every expected figure is recomputed here from the scenario, the catalog or the written
records; none is typed in.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from planner import cli
from planner.catalog import load_catalog
from planner.cli import main
from planner.config import load_scenario, med
from planner.errors import PlannerError
from planner.model.sizing import size_options
from planner.parallel import ForkedCall
from planner.sim import report_tables, simulate_scenario
from planner.sim.scenario import scenario_requests
from planner.traces import azure_trace
from planner.workload import class_load
from tests.conftest import MINIMAL, ROOT

SMALL = """
[scenario]
name = "sim test"

[workload.chat]
requests_per_day = 240000
input = { words = 60, lang = "en" }
context = { tokens = 500 }
output = { tokens = 100 }
cached_share = 0.25
prefix_cache_hit_share = 0.25
slo = { ttft_s = 1.0, tpot_s = 0.05 }

[workload.nightly]
requests_per_day = 24000
input = 2000
output = 200
batch_share = 1.0

[api.mini]
offering = "openai/gpt-4o-mini"

[cloud.gpu]
model = "llama-3.1-8b"
tokenizer = "cl100k"  # no en/word row for llama3
accelerator = "h100-sxm"
precision = "fp8"
usd_per_gpu_hour = 2.5

[simulation]
hours = 1
"""


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _json(out: str) -> dict:
    return json.loads(out[: out.rindex("}") + 1])


@pytest.fixture
def small(write_toml):
    return write_toml(SMALL)


# ---------------------------------------------------------------------- CLI
def test_simulate_prints_and_writes_tidy_tables(capsys, small, tmp_path):
    out_dir = tmp_path / "sim"
    code, out, _ = run(capsys, "simulate", small, "--format", "json", "-q", "--out", out_dir)
    assert code == 0
    shown = _json(out)
    assert len(shown) == 3  # latency, deployments, totals
    req = pd.read_csv(out_dir / "requests.csv")
    lat = pd.read_csv(out_dir / "latency.csv").set_index("class")
    totals = pd.read_csv(out_dir / "totals.csv").iloc[0]
    assert {"utilisation.csv", "hourly.csv", "pools.csv", "deployments.csv", "slo.csv"} <= {
        p.name for p in out_dir.iterdir()}
    # conservation: every request completed, dropped, in flight or pending
    assert totals["requests"] == len(req)
    assert sum(totals[k] for k in ("completed", "dropped", "in_flight", "pending")) == len(req)
    assert set(req["class"]) == {"chat", "nightly"}
    # percentiles and attainment are those of the written records, with the scenario's SLO
    sc = load_scenario(small)
    chat = req[(req["class"] == "chat") & (req["status"] == "completed")]
    for m in ("ttft", "tpot", "e2e"):
        for q in (50, 90, 99):
            want = np.quantile(chat[f"{m}_s"].dropna(), q / 100)
            assert lat.loc["chat", f"{m}_p{q}_s"] == pytest.approx(want, rel=1e-9)
    slo = sc.workload["chat"].slo
    all_chat = req[req["class"] == "chat"]
    ok = ((all_chat["status"] == "completed") & (all_chat["ttft_s"] <= slo.ttft_s)
          & ~(all_chat["tpot_s"] > slo.tpot_s))
    assert lat.loc["chat", "slo_attainment"] == pytest.approx(ok.mean(), rel=1e-12)
    assert lat.loc["chat", "slo_target"] == pytest.approx(slo.percentile / 100)
    # replicas and price per replica-hour from the model's sizing; GPU-hours = replica-hours x GPUs
    size = size_options(sc)["gpu"]
    pools = pd.read_csv(out_dir / "pools.csv").set_index("deployment")
    assert pools.loc["gpu", "replicas"] == size.replicas
    assert pools.loc["gpu", "replicas_basis"] == "model sizing"
    dep = pd.read_csv(out_dir / "deployments.csv").set_index("deployment").loc["gpu"]
    price = size.usd_per_replica_hour
    assert dep["usd"] == pytest.approx(dep["replica_hours"] * price, rel=1e-12)
    assert dep["gpu_hours"] == pytest.approx(dep["replica_hours"] * 1, rel=1e-12)
    assert dep["usd"] == pytest.approx(req["cost_usd"].sum(), rel=1e-9)


def test_table_output_has_percentiles_cost_and_notes(capsys, small):
    code, out, err = run(capsys, "simulate", small, "--seed", "3")
    assert code == 0
    for text in ("== latency per class", "ttft_p99_s", "tpot_p50_s", "e2e_p90_s",
                 "slo_attainment", "spillover_share", "gpu_hours", "goodput_rps",
                 "note: seed 3; replicas: gpu"):
        assert text in out
    assert "simulate" in err  # the progress bar (stderr)


def test_same_seed_same_records_and_seed_matters(capsys, small, tmp_path):
    paths = []
    for i, seed in enumerate((5, 5, 6)):
        d = tmp_path / f"r{i}"
        assert run(capsys, "simulate", small, "-q", "--seed", seed, "--out", d)[0] == 0
        paths.append(pd.read_csv(d / "requests.csv"))
    pd.testing.assert_frame_equal(paths[0], paths[1])
    assert len(paths[0]) != len(paths[2]) or not paths[0]["arrival_s"].equals(
        paths[2]["arrival_s"])


def test_replicas_and_spillover_flags(capsys, small, tmp_path):
    d = tmp_path / "s"
    code, _, _ = run(capsys, "simulate", small, "-q", "--out", d, "--replicas", "1",
                     "--spillover", "mini", "--set", "cloud.gpu.perf.max_batch=2")
    assert code == 0
    req = pd.read_csv(d / "requests.csv")
    api = req[req["route"] == "mini"]
    assert len(api) > 0
    tot = pd.read_csv(d / "totals.csv").iloc[0]
    assert tot["spillover_share"] == pytest.approx(len(api) / len(req))
    # the API's cost is its tokens at the catalog prices
    row = load_catalog().api("openai/gpt-4o-mini")
    cached_price = row["cached_input_usd_per_mtok"]
    want = ((api["input_tokens"] - api["cached_input_tokens"]) * row["input_usd_per_mtok"]
            + api["cached_input_tokens"] * cached_price
            + api["output_tokens"] * row["output_usd_per_mtok"]).sum() / 1e6
    dep = pd.read_csv(d / "deployments.csv").set_index("deployment")
    assert dep.loc["mini", "usd"] == pytest.approx(want, rel=1e-9)
    pools = pd.read_csv(d / "pools.csv").set_index("deployment")
    assert pools.loc["gpu", "replicas"] == 1 and pools.loc["gpu", "replicas_basis"] == "given"


def test_trace_replay_with_column_mapping(capsys, write_toml, tmp_path):
    rng = np.random.default_rng(1)
    n = 400
    t_ms = np.sort(rng.uniform(0, 600_000, n)).round()
    trace = pd.DataFrame({"t_ms": t_ms + 1.7e12, "prompt": rng.integers(10, 3000, n),
                          "completion": rng.integers(1, 400, n)})
    trace.to_csv(tmp_path / "trace.csv", index=False)
    text = SMALL.replace("[simulation]\nhours = 1", """[simulation]
hours = 1
[[simulation.trace]]
file = "trace.csv"
class = "chat"
timestamp = "t_ms"
timestamp_unit = "ms"
input_tokens = "prompt"
output_tokens = "completion"
""")
    sc_path = write_toml(text)
    d = tmp_path / "out"
    assert run(capsys, "simulate", sc_path, "-q", "--out", d)[0] == 0
    req = pd.read_csv(d / "requests.csv")
    assert len(req) == n and set(req["class"]) == {"chat"}
    np.testing.assert_allclose(req["arrival_s"], (t_ms - t_ms[0]) / 1000.0, atol=1e-6)
    assert req["input_tokens"].tolist() == trace["prompt"].tolist()
    assert req["output_tokens"].tolist() == trace["completion"].tolist()
    # --trace CLASS=FILE (same mapping, the scenario's entry) at twice the rate
    d2 = tmp_path / "out2"
    code, _, _ = run(capsys, "simulate", sc_path, "-q", "--out", d2, "--rate-scale", "2")
    assert code == 0
    req2 = pd.read_csv(d2 / "requests.csv")
    np.testing.assert_allclose(req2["arrival_s"], req["arrival_s"] / 2, atol=1e-6)


def test_cli_trace_file_needs_a_class_when_ambiguous(capsys, small, tmp_path):
    p = tmp_path / "t.csv"
    pd.DataFrame({"TIMESTAMP": ["2023-11-16 18:15:46.6805900", "2023-11-16 18:15:50.9951690"],
                  "ContextTokens": [100, 200], "GeneratedTokens": [5, 6]}).to_csv(p, index=False)
    code, _, err = run(capsys, "simulate", small, "-q", "--trace", p)
    assert code == 2 and "CLASS=FILE" in err
    d = tmp_path / "o"
    assert run(capsys, "simulate", small, "-q", "--trace", f"chat={p}", "--out", d)[0] == 0
    req = pd.read_csv(d / "requests.csv")
    assert req["input_tokens"].tolist() == [100, 200]
    assert req["arrival_s"].iloc[1] == pytest.approx(50.9951690 - 46.6805900, abs=1e-6)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--deployment", "mini"], "not a self-hosted"),
        (["--deployment", "nope"], "not a self-hosted"),
        (["--replicas", "x"], "expected N or DEPLOYMENT=N"),
        (["--replicas", "0"], "at least 1"),
        (["--replicas", "mini=2"], "not a self-hosted"),
        (["--spillover", "gpu"], "not an [api.*]"),
        (["--trace", "missing.csv"], "not found"),
        (["--trace", "chat=bundled:azure-nope"], "unknown bundled trace"),
        (["--rate-scale", "2"], "needs --trace"),
        (["--hours", "0"], "--hours: expected an integer >= 1"),
        (["--set", "simulation.routing=fifo"], "simulation.routing"),
        (["--set", "simulation.spillover=gpu"], "simulation.spillover"),
    ],
)
def test_user_errors_exit_2(capsys, small, argv, needle):
    code, _, err = run(capsys, "simulate", small, "-q", *argv)
    assert code == 2, err
    assert needle in err and "Traceback" not in err


def test_nothing_self_hosted_is_a_user_error(capsys, write_toml):
    p = write_toml(MINIMAL)
    code, _, err = run(capsys, "simulate", p, "-q")
    assert code == 2 and "no self-hosted" in err
    with pytest.raises(PlannerError, match="self-hosted"):
        report_tables(load_scenario(p))


def _fails(*_args, **_kwargs):
    raise RuntimeError("sizing failed in the child")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is Linux-only")
def test_sizing_ahead_in_a_forked_child_is_the_sizing_here(small, monkeypatch):
    """planner simulate sizes the plans in a forked child while it imports the simulator: the
    capacity cache it hands back becomes the catalog's and the sizing read from it is the one
    computed here from an empty cache; a child that fails leaves the catalog as it was."""
    import planner.parallel as parallel
    import planner.perf.openloop as openloop
    from planner.model.capacity import CapacityCache
    from planner.model.evaluate import Model

    # fork even if an earlier test left a thread running (a Dask client's)
    monkeypatch.setattr(parallel, "start_method", lambda: "fork")
    real_many, real_one = openloop.slo_capacity_many, openloop.slo_capacity
    sc = load_scenario(small)
    cat = load_catalog()
    want = size_options(sc, cat, model=Model(sc, cat, caps=CapacityCache()))
    cat.forget_shared("capacity")
    try:
        cli._take_sizing(cli._sizing_ahead(sc))
        installed = cat.shared("capacity", CapacityCache)
        # the capacities come from the child: the performance model is not run again here
        monkeypatch.setattr(openloop, "slo_capacity_many", _fails)
        monkeypatch.setattr(openloop, "slo_capacity", _fails)
        got = size_options(sc, cat)
        assert got == want and len(got) >= 1 and got["gpu"].replicas >= 1
        monkeypatch.setattr(openloop, "slo_capacity_many", real_many)
        monkeypatch.setattr(openloop, "slo_capacity", real_one)
        cat.forget_shared("capacity")
        cli._take_sizing(ForkedCall(_fails, sc))  # no error; nothing installed
        assert "capacity" not in cat._shared
        assert cat.shared("capacity", CapacityCache) is not installed
    finally:
        cat.forget_shared("capacity")


def test_simulate_output_identical_with_worker_processes(capsys):
    """The same tables and notes, byte for byte, from one process and from two workers (each
    run starting from an empty capacity cache, as a new command does)."""
    outs = []
    for workers in ("1", "2", "1"):
        load_catalog().forget_shared("capacity")
        code, out, err = run(capsys, "simulate", "example:quickstart", "--hours", "1",
                             "--start-hour", "12", "--seed", "5", "--workers", workers,
                             "--format", "csv", "-q")
        assert code == 0, err
        outs.append(out)
    assert outs[0].count("\n") > 10 and outs[0] == outs[1] == outs[2]


def test_simulating_imports_no_scipy():
    """What a simulation worker does (generate the plan's requests, simulate, summarise) needs
    no scipy: run serially in a fresh interpreter, ``planner simulate`` loads none of it, so a
    forked worker does not import it either (it was ~0.3 s of imports in every worker)."""
    probe = ("import contextlib, io, sys\n"
             "from planner.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             "    code = main(['simulate', 'example:quickstart', '--hours', '1', '--workers',"
             " '1', '-q', '--format', 'csv'])\n"
             "print(code, sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=env, check=True, cwd=ROOT).stdout.split()
    assert out == ["0", "[]"]


# ---------------------------------------------------------------------- requests
def test_generated_requests_follow_the_scenario(small):
    sc = load_scenario(small)
    cat = load_catalog()
    tok = cat.llm("llama-3.1-8b")["tokenizer"]
    rng = np.random.default_rng(0)
    reqs = scenario_requests(sc, hours=24, rng=rng, tokenizer=tok, start_hour=0)
    df = reqs.to_frame()
    for cname in ("chat", "nightly"):
        cl = class_load(sc, cname, sc.workload[cname], tok, cat)
        sub = df[df["class"] == cname]
        # lengths: input + context (tokenizer-converted words), output; the prefix-cache
        # share of the input is not prefilled (cached_share is API billing only)
        assert (sub["input_tokens"] == round(cl.input_tokens)).all()
        assert (sub["output_tokens"] == round(cl.output_tokens)).all()
        share = med(sc.workload[cname].prefix_cache_hit_share)
        want_cached = np.rint(share * sub["input_tokens"]).astype(int)
        assert (sub["cached_input_tokens"] == want_cached).all()
        # hourly counts: Poisson around the profile's rate (batch share spread evenly)
        counts = np.bincount((sub["arrival_s"] // 3600).astype(int), minlength=24)
        w = cl.weights
        rate = cl.requests_per_day * ((1 - cl.batch_share) * w + cl.batch_share / 24)
        assert np.all(np.abs(counts - rate) <= 5 * np.sqrt(rate))
        assert abs(counts.sum() - rate.sum()) <= 4 * math.sqrt(rate.sum())


def test_length_distributions_are_drawn_per_request(write_toml):
    p = write_toml(SMALL.replace('input = { words = 60, lang = "en" }',
                                 'input = { tokens = { dist = "lognormal", median = 800, '
                                 'p90 = 2400 } }'))
    sc = load_scenario(p)
    reqs = scenario_requests(sc, hours=24, rng=np.random.default_rng(2), classes=["chat"])
    ctx = sc.workload["chat"].context.tokens
    x = reqs.input_tokens - ctx
    dist = sc.workload["chat"].input.tokens
    n = len(x)
    # sample quantiles vs the distribution's (standard error of a quantile ~ 1/sqrt(n))
    for q in (0.5, 0.9):
        assert np.quantile(x, q) == pytest.approx(dist.quantile(q), rel=20 / math.sqrt(n))


def test_study_scenario_replays_the_bundled_trace():
    sc = load_scenario(ROOT / "studies" / "azure-trace" / "scenario.toml")
    (run_,) = simulate_scenario(sc)
    tr = azure_trace("conv")
    req = run_.result.requests
    assert len(req) == len(tr)
    assert req["input_tokens"].sum() == tr.input_tokens.sum()
    assert req["output_tokens"].sum() == np.maximum(tr.output_tokens, 1).sum()
    np.testing.assert_allclose(np.sort(req["arrival_s"].to_numpy()), tr.arrival_s, atol=1e-9)
    assert (req["status"] == "completed").all()
    assert run_.pools.iloc[0]["replicas"] == sc.simulation.replicas["llama-8b-h100"]


# ---------------------------------------------------------------------- report hook
def test_report_tables_contract_and_request_cap(small):
    sc = load_scenario(small, overrides={"simulation.report_max_requests": 500})
    tabs = report_tables(sc)
    assert {"class", "ttft_s", "tpot_s", "e2e_s"} <= set(tabs["requests"].columns)
    assert len(tabs["requests"]) == 500
    assert {"class", "metric", "attainment", "target"} <= set(tabs["slo"].columns)
    assert set(tabs["slo"]["metric"]) == {"ttft_s", "tpot_s"}  # the bounds chat has
    t = tabs["slo_targets"].set_index("metric")["slo_s"]
    assert t["ttft_s"] == sc.workload["chat"].slo.ttft_s
    assert {"hour", "pool", "utilisation"} <= set(tabs["utilisation"].columns)
    assert "500 requests" in tabs["slo"]["note"].iloc[0]
    # the busiest hour of the profile (flat chat + evenly spread nightly: hour 0)
    cat = load_catalog()
    tok = cat.llm("llama-3.1-8b")["tokenizer"]
    total = sum(class_load(sc, c, sc.workload[c], tok, cat).weights for c in sc.workload)
    assert tabs["utilisation"]["hour"].tolist() == [int(np.argmax(total))]


def test_report_quickstart_simulation_section(tmp_path):
    from planner.report import build_report

    sc = load_scenario(ROOT / "planner" / "templates" / "quickstart.toml")
    res = build_report(sc, out_dir=tmp_path / "r", progress=False, sections=["simulation"])
    assert "simulation" in res.sections and "simulation" not in res.omitted
    att = pd.read_csv(tmp_path / "r" / "tables" / "slo_attainment.csv")
    assert att["note"].str.contains("busiest hour").all()
