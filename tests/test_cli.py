"""The CLI: each command runs, prints tidy tables, and user errors exit 2 without a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from planner.cli import main
from tests.conftest import ROOT


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cost_bundled_example(capsys):
    code, out, _ = run(capsys, "cost", "example:quickstart")
    assert code == 0
    assert "== summary ==" in out and "gpt-4o-mini" in out and "cost lens: tco" in out


def test_cost_json_and_out_dir(capsys, tmp_path):
    code, out, _ = run(capsys, "cost", "example:quickstart", "--format", "json",
                       "--out", str(tmp_path / "res"))
    assert code == 0
    data = json.loads(out[: out.rindex("}") + 1])
    assert {r["deployment"] for r in data["summary"]} >= {"gpt-4o", "llama-70b-h100"}
    files = {p.name for p in (tmp_path / "res").iterdir()}
    assert {"summary.csv", "costs.csv", "assumptions.csv"} <= files
    df = pd.read_csv(tmp_path / "res" / "summary.csv")
    assert (df["usd_per_month"] > 0).all()


def test_cost_variant_and_set(capsys):
    _, base, _ = run(capsys, "cost", "example:quickstart", "--format", "csv")
    _, big, _ = run(capsys, "cost", "example:quickstart", "--format", "csv",
                    "--variant", "high-volume")
    _, setv, _ = run(capsys, "cost", "example:quickstart", "--format", "csv",
                     "--set", "workload.chat.requests_per_day=2000000")
    assert big == setv and big != base


def test_unknown_example_and_missing_file(capsys, tmp_path):
    code, _, err = run(capsys, "cost", "example:nope")
    assert code == 2 and "quickstart" in err
    code, _, err = run(capsys, "cost", str(tmp_path / "missing.toml"))
    assert code == 2 and "file not found" in err


def test_bad_set_value(capsys):
    code, _, err = run(capsys, "cost", "example:quickstart", "--set", "planning.lens=cheap")
    assert code == 2 and "planning.lens" in err


def test_breakeven(capsys):
    code, out, _ = run(capsys, "breakeven", str(ROOT / "studies/chatgpt-vs-aws/scenario.toml"), "--curve")
    assert code == 0 and "== volume ==" in out and "== curve ==" in out


def test_train_matches_article(capsys):
    code, out, _ = run(capsys, "train", "--model", "gpt-3-175b", "--tokens", "300e9",
                       "--accelerator", "tpu-v4", "--mfu", "0.462", "--price", "2.03",
                       "--format", "json")
    assert code == 0
    usd = json.loads(out)["pretraining"][0]["usd"]
    assert usd == pytest.approx(1.4e6, rel=0.02)  # article 004


def test_train_errors(capsys):
    code, _, err = run(capsys, "train", "--model", "gpt-3-175", "--tokens", "1e9",
                       "--accelerator", "a100-40gb", "--price", "2")
    assert code == 2 and "did you mean" in err
    code, _, err = run(capsys, "train", "--params-b", "7", "--tokens", "1e9", "--price", "2")
    assert code == 2 and "accelerator" in err


def test_tokens_zh_and_en(capsys, tmp_path):
    zh = tmp_path / "zh.txt"
    zh.write_text("这是一个测试。" * 100, encoding="utf-8")  # 6 CJK characters x 100
    code, out, _ = run(capsys, "tokens", str(zh), "--lang", "zh", "--format", "json")
    assert code == 0
    rows = json.loads(out)["tokens"]
    assert all(r["units"] == 600 for r in rows)
    assert {r["tokenizer"] for r in rows} >= {"cl100k", "o200k"}
    by = {r["tokenizer"]: r for r in rows}
    assert by["cl100k"]["tokens"] == pytest.approx(600 * by["cl100k"]["tokens_per_unit"])
    en = tmp_path / "en.txt"
    en.write_text("The quick brown fox doesn't jump. " * 10, encoding="utf-8")
    code, out, _ = run(capsys, "tokens", str(en), "--lang", "en", "--tokenizer", "o200k",
                       "--format", "json")
    assert json.loads(out)["tokens"][0]["units"] == 60
    code, _, err = run(capsys, "tokens", str(en), "--lang", "xx")
    assert code == 2 and "no tokens-per" in err


def test_new_template_then_validate(capsys, tmp_path):
    p = tmp_path / "my.toml"
    assert run(capsys, "new", "--template", "quickstart", "-o", str(p))[0] == 0
    assert run(capsys, "new", "--template", "quickstart", "-o", str(p))[0] == 2  # exists
    code, out, _ = run(capsys, "validate", str(p))
    assert code == 0 and "valid scenario" in out


def test_schema(capsys, tmp_path):
    code, out, _ = run(capsys, "schema")
    assert code == 0 and json.loads(out)["title"] == "planner scenario"


def test_catalog_list(capsys):
    code, out, _ = run(capsys, "catalog", "list")
    assert code == 0 and "llms" in out
    code, out, _ = run(capsys, "catalog", "list", "accelerators")
    assert code == 0 and "h100-sxm" in out
    code, _, err = run(capsys, "catalog", "list", "gpuz")
    assert code == 2


def test_import_litellm_bundled_sample(capsys, tmp_path):
    sample = tmp_path / "prices.json"
    sample.write_text(json.dumps({
        "gpt-x": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 2e-6,
                  "output_cost_per_token": 8e-6, "cache_read_input_token_cost": 5e-7,
                  "input_cost_per_token_batches": 1e-6, "output_cost_per_token_batches": 4e-6},
        "gemini-y": {"litellm_provider": "vertex_ai", "mode": "chat",
                     "input_cost_per_token": 1.25e-6, "output_cost_per_token": 1e-5,
                     "input_cost_per_token_above_200k_tokens": 2.5e-6,
                     "output_cost_per_token_above_200k_tokens": 1.5e-5},
        "embed": {"litellm_provider": "openai", "mode": "embedding", "input_cost_per_token": 1e-7},
    }), encoding="utf-8")
    out = tmp_path / "rows.csv"
    code, _, _ = run(capsys, "catalog", "import-litellm", str(sample), "--out", str(out),
                     "--as-of", "2025-01-01")
    assert code == 0
    df = pd.read_csv(out).set_index("id")
    assert list(df.index) == ["openai/gpt-x", "vertex_ai/gemini-y"]
    assert df.loc["openai/gpt-x", "input_usd_per_mtok"] == pytest.approx(2.0)
    assert df.loc["openai/gpt-x", "batch_output_usd_per_mtok"] == pytest.approx(4.0)
    assert df.loc["vertex_ai/gemini-y", "long_context_threshold_tokens"] == 200_000
    assert df.loc["vertex_ai/gemini-y", "long_output_usd_per_mtok"] == pytest.approx(15.0)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    code, _, err = run(capsys, "catalog", "import-litellm", str(bad))
    assert code == 2 and "not a LiteLLM" in err


def test_import_litellm_real_file(capsys, tmp_path):
    out = tmp_path / "rows.csv"
    code, _, _ = run(capsys, "catalog", "import-litellm",
                     str(ROOT / "tests/data/litellm_model_prices_subset.json"),
                     "--provider", "openai,anthropic", "--out", str(out))
    assert code == 0
    df = pd.read_csv(out).set_index("id")
    assert len(df) > 50
    assert df.loc["openai/gpt-4o", "input_usd_per_mtok"] == pytest.approx(2.5)
    assert df.loc["openai/gpt-4o", "output_usd_per_mtok"] == pytest.approx(10.0)


def test_help_has_examples(capsys):
    assert main(["--help"]) == 0  # main returns argparse's status instead of exiting
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "exit status:" in out


def test_out_is_all_or_nothing(tmp_path, monkeypatch):
    from planner import output

    calls = {"n": 0}
    real = pd.DataFrame.to_csv

    def flaky(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(self, *a, **kw)

    monkeypatch.setattr(pd.DataFrame, "to_csv", flaky)
    with pytest.raises(OSError):
        output.write_tables({"a": pd.DataFrame({"x": [1]}), "b": pd.DataFrame({"y": [2]})},
                            tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert list(Path(tmp_path).iterdir()) == []


def test_perf_one_config(capsys):
    code, out, _ = run(capsys, "perf", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm",
                       "--precision", "fp8", "--isl", "1000", "--osl", "200", "--format", "json")
    assert code == 0
    data = json.loads(out)
    cap = data["capacity"][0]
    assert cap["fits"] and cap["output_tokens_per_s"] > 0
    assert data["cost"][0]["usd_per_1m_output_tokens"] > 0


def test_perf_search_and_errors(capsys):
    code, out, _ = run(capsys, "perf", "--search", "--model", "llama-3.1-8b", "--isl", "500",
                       "--osl", "100", "--accelerators", "h100-sxm,a100-80gb", "--format", "csv")
    assert code == 0 and "h100-sxm" in out
    code, _, err = run(capsys, "perf", "--model", "llama-3.1-405b", "--accelerator", "l4")
    assert code == 2 and "Traceback" not in err
    code, _, err = run(capsys, "perf", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm",
                       "--tp", "3")
    assert code == 2 and "tensor-parallel degree 3" in err


def test_risk_with_simulated_replications(capsys, tmp_path):
    code, out, err = run(capsys, "risk", "example:risk-example", "-n", "2000", "--seed", "3",
                         "--simulate", "2", "--deployment", "llama-70b-hgx", "-q",
                         "--out", str(tmp_path / "r"))
    assert code == 0, err
    sim = pd.read_csv(tmp_path / "r" / "simulation.csv")
    assert len(sim) == 2 and set(sim["deployment"]) == {"llama-70b-hgx"}
    assert sim["slo_attainment"].between(0, 1).all() and (sim["requests"] > 0).all()
    code, _, err = run(capsys, "risk", "example:risk-example", "-n", "500", "--simulate", "1",
                       "--deployment", "gpt-4o", "-q")
    assert code == 2 and "need a cloud or on-prem deployment, got 'gpt-4o'" in err
    code, _, err = run(capsys, "risk", "example:risk-example", "--deployment", "llama-70b-hgx")
    assert code == 2 and "give --simulate too" in err
    code, _, err = run(capsys, "risk", "example:risk-example", "--simulate", "-2")
    assert code == 2 and "--simulate: expected an integer >= 0" in err


def test_optimize_sensitivity_breakpoints_bracket_the_base_plan(capsys, tmp_path):
    out = tmp_path / "opt"
    code, text, err = run(capsys, "optimize", "example:quickstart", "--sensitivity", "-q",
                          "--out", str(out))
    assert code == 0, err
    plan = pd.read_csv(out / "plan.csv")
    base = set(plan.loc[plan["chosen"] & (plan["requests_share"] >= 0.01), "deployment"])
    bp = pd.read_csv(out / "sensitivity_breakpoints.csv")
    grid = pd.read_csv(out / "sensitivity_grid.csv")
    assert len(bp) >= 1 and set(grid["axis"]) == {"traffic", "api_price", "gpu_price"}

    def used(mix: str) -> set[str]:
        return {part.rsplit(" ", 1)[0] for part in mix.split(" + ")}

    for axis, rows in bp.groupby("axis"):
        assert (rows["multiplier_high"] / rows["multiplier_low"] <= 1.05 + 1e-12).all()
        above = rows[rows["multiplier_low"] >= 1]
        below = rows[rows["multiplier_high"] <= 1]
        # the mix on either side of x1 is the plan the optimiser chose at x1
        if len(above):
            assert used(above.nsmallest(1, "multiplier")["mix_below"].iloc[0]) == base, axis
        if len(below):
            assert used(below.nlargest(1, "multiplier")["mix_above"].iloc[0]) == base, axis
    # the grid agrees: the x1 point uses the base plan's deployments
    one = grid[grid["multiplier"] == 1.0]
    assert all(set(d.split(",")) == base for d in one["deployments"])


def test_risk_tornado_lists_only_inputs_that_move_an_option(capsys):
    from planner.cli import scenario_path
    from planner.config import load_scenario
    from planner.engines.risk.run import run_montecarlo

    code, out, err = run(capsys, "risk", "example:quickstart", "-n", "3000", "--seed", "2",
                         "--format", "json")
    assert code == 0, err
    data = json.loads(out[: out.rindex("}") + 1])
    shown = pd.DataFrame(data["tornado (top 5 drivers per option)"])
    assert len(shown) and (shown["swing"] > 0).all()
    full = run_montecarlo(load_scenario(scenario_path("example:quickstart")), n=3000, seed=2,
                          progress=False).tornado
    # the API options do not depend on the on-prem ops cost: zero swing, so not listed
    still = full[(full["deployment"] == "gpt-4o-mini")
                 & (full["input"] == "onprem.llama-70b-hgx.ops_usd_per_year")]
    assert (still["swing"] == 0).all() and len(still) == 1
    listed = shown[shown["deployment"] == "gpt-4o-mini"]["input"]
    assert "onprem.llama-70b-hgx.ops_usd_per_year" not in set(listed)
    top = full[full["swing"] > 0].groupby("deployment", sort=False).head(5)
    assert len(shown) == len(top)


def test_every_example_in_the_help_names_files_that_exist(capsys):
    """Scenario paths and bundled examples quoted in --help (top level and every command)."""
    import re

    from planner.cli import build_parser, templates

    ap = build_parser()
    texts = [ap.format_help()]
    sub = next(a for a in ap._actions if a.__class__.__name__ == "_SubParsersAction")
    texts += [p.format_help() for p in sub.choices.values()]
    text = "\n".join(texts)
    paths = set(re.findall(r"\bstudies/[\w./-]+\.toml", text))
    examples = set(re.findall(r"\bexample:([\w-]+)", text)) - {"NAME"}  # the metavar
    assert paths and examples
    for p in paths:
        assert (ROOT / p).is_file(), p
    assert examples <= set(templates()), examples - set(templates())


# ------------------------------------------------------------------ exit status and outputs


def test_exit_status_is_documented_in_help_and_readme(capsys):
    from planner.cli import EXIT_STATUS

    assert main(["--help"]) == 0
    helptext = capsys.readouterr().out
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for code, meaning in EXIT_STATUS.items():
        assert f"  {code}  " in helptext, code
        assert f"| {code} | {meaning}" in readme, (code, meaning)


def test_internal_error_is_one_line_and_traceback_only_with_debug(capsys, monkeypatch):
    import planner.cli as cli

    def broken(args):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(cli, "cmd_validate", broken)  # build_parser binds it when main runs
    code, out, err = run(capsys, "validate", "example:quickstart")
    assert code == 1
    assert err.count("\n") == 1 and "bug" in err and "--debug" in err
    assert "Traceback" not in err
    code, _, err = run(capsys, "--debug", "validate", "example:quickstart")
    assert code == 1 and "Traceback" in err and "ZeroDivisionError: boom" in err


@pytest.mark.parametrize("argv, reason", [
    (["cost", "example:quickstart", "--out", "{file}"], "exists and is not a directory"),
    (["cost", "example:quickstart", "--out", "{file}/sub"], "is not a directory"),
    (["cost", "example:quickstart", "--out", "/proc/planner-test"], "cannot write in"),
    (["report", "example:quickstart", "-o", ""], "empty string"),
    (["schema", "-o", "{tmp}"], "is a directory"),
    (["new", "-o", "{tmp}/missing/my.toml"], "does not exist"),
    (["catalog", "import-litellm", "x.json", "--out", "{file}/x.csv"], "not a directory"),
])
def test_output_paths_checked_before_work(capsys, tmp_path, argv, reason):
    f = tmp_path / "a-file"
    f.write_text("x", encoding="utf-8")
    argv = [a.format(file=f, tmp=tmp_path) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2, err
    assert reason in err and "Traceback" not in err
    assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_out_failure_during_the_final_moves_keeps_the_old_directory(tmp_path, monkeypatch):
    import os

    from planner import output

    out = tmp_path / "out"
    out.mkdir()
    for name, text in (("a.csv", "old a\n"), ("keep.txt", "mine\n")):
        (out / name).write_text(text, encoding="utf-8")
    real = os.replace
    calls = {"n": 0}

    def flaky(src, dst):
        # the second move of a new table into place fails (a read-only file, a full disk)
        if Path(dst).parent == out and Path(src).parent != out and \
                not Path(src).parent.name.startswith(".out-old-"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise PermissionError(13, "Permission denied", str(dst))
        return real(src, dst)

    monkeypatch.setattr(output.os, "replace", flaky)
    tables = {"a": pd.DataFrame({"x": [1]}), "b": pd.DataFrame({"y": [2]})}
    with pytest.raises(PermissionError):
        output.write_tables(tables, out)
    assert calls["n"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "keep.txt"]
    assert (out / "a.csv").read_text(encoding="utf-8") == "old a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left


def test_out_failure_is_exit_2_and_leaves_old_dir(capsys, tmp_path, monkeypatch):
    from planner import output

    out = tmp_path / "res"
    out.mkdir()
    (out / "summary.csv").write_text("old\n", encoding="utf-8")
    real = output.os.replace

    def flaky(src, dst):  # moving the new summary.csv into place fails (a read-only file)
        if Path(dst) == out / "summary.csv" and Path(src).parent.name.startswith(".res-new-"):
            raise PermissionError(13, "Permission denied", str(dst))
        return real(src, dst)

    monkeypatch.setattr(output.os, "replace", flaky)
    code, _, err = run(capsys, "cost", "example:quickstart", "--out", str(out), "-q")
    assert code == 2 and "Traceback" not in err and "Permission denied" in err
    assert sorted(p.name for p in out.iterdir()) == ["summary.csv"]
    assert (out / "summary.csv").read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]


@pytest.mark.parametrize("argv, flag", [
    (["cost", "example:quickstart", "--check", "--check-max-requests", "-5"],
     "--check-max-requests"),
    (["perf", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm", "--price", "-3"],
     "--price"),
    (["perf", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm", "--price", "nan"],
     "--price"),
    (["perf", "--search", "--model", "llama-3.1-8b", "--tps", "abc"], "--tps"),
    (["perf", "--search", "--model", "llama-3.1-8b", "--tps", "0,-1"], "--tps"),
    (["perf", "--search", "--model", "llama-3.1-8b", "--target-tps", "-1"], "--target-tps"),
    (["train", "--params-b", "175", "--tokens", "3e11", "--peak-tflops", "100", "--mfu", "0",
      "--price", "2"], "--mfu"),
    (["sweep", "example:risk-example", "--grid", "planning.lens=tco", "--workers", "0"],
     "--workers"),
    (["sweep", "example:risk-example", "--grid", "planning.lens=tco", "--workers", "-1"],
     "--workers"),
    (["simulate", "example:quickstart", "--start-hour", "-1"], "--start-hour"),
    (["simulate", "example:quickstart", "--start-hour", "500"], "--start-hour"),
    (["simulate", "example:quickstart", "--hours", "100000"], "--hours"),
    (["risk", "example:risk-example", "-n", "100000000000"], "-n"),
    (["risk", "example:risk-example", "-n", "1e11"], "-n"),
    (["tokens", ".", "--lang", "en"], "Is a directory"),
])
def test_bad_flags_exit_2_naming_the_flag(capsys, argv, flag):
    code, out, err = run(capsys, *argv)
    assert code == 2 and flag in err and "Traceback" not in err


def test_resource_limits_refuse_before_allocating(capsys, monkeypatch):
    import planner.cli as cli

    # 5e7 samples x ~30 columns need ~20 GiB: refused from the estimate, before allocating
    code, _, err = run(capsys, "risk", "example:risk-example", "-n", "50000000")
    assert code == 2 and "GiB of memory" in err
    code, _, err = run(capsys, "simulate", "example:quickstart", "--set",
                       "workload.chat.requests_per_day=1e11", "--hours", "24")
    assert code == 2 and "requests" in err and f"{cli.MAX_SIMULATED_REQUESTS:,}" in err
    code, _, err = run(capsys, "simulate", "example:quickstart", "--replicas", "20000",
                       "--deployment", "llama-8b-h100", "--hours", "1")
    assert code == 2 and "replicas" in err
    # 83,000 requests in the hour, but 333 times the output: the sizing is refused
    code, _, err = run(capsys, "simulate", "example:quickstart", "--hours", "1",
                       "--deployment", "llama-70b-h100", "--set",
                       "workload.chat.output.words=50000", "--set",
                       "workload.chat.requests_per_day=2e6")
    assert code == 2 and "the cost engine sizes 'llama-70b-h100' at" in err


def test_terminal_output_escapes_control_characters(capsys, write_toml):
    p = write_toml('[scenario]\nname = "evil\\u001b[2J"\n[workload."c\\u0007"]\n'
                   'requests_per_day = 100\ninput = 10\noutput = 10\n'
                   '[api."a\\u001b[2J"]\noffering = "openai/gpt-4o"\n')
    for fmt in ("table", "csv", "json"):
        code, out, err = run(capsys, "cost", str(p), "--format", fmt)
        assert code == 0
        assert "\x1b" not in out + err and "\x07" not in out + err
    code, out, _ = run(capsys, "validate", str(p))
    assert code == 0 and "\x1b" not in out and "\\x1b[2J" in out
