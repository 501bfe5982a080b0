"""Scenario validation: every user mistake is a ScenarioError naming file, key and expectation."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from planner.config import load_scenario, parse_scenario
from planner.errors import ScenarioError
from tests.conftest import MINIMAL


def err(write_toml, text: str) -> ScenarioError:
    p = write_toml(text)
    with pytest.raises(ScenarioError) as exc:
        load_scenario(p)
    e = exc.value
    assert str(p) in str(e), "the message names the file"
    return e


def test_minimal_loads_and_is_frozen(write_toml):
    sc = load_scenario(write_toml(MINIMAL))
    assert sc.workload["chat"].requests_per_day == 1000
    assert sc.workload["chat"].input.tokens == 100  # a bare number means tokens
    with pytest.raises(ValidationError):
        sc.workload["chat"].requests_per_day = 5  # frozen


def test_unknown_key_suggests(write_toml):
    e = err(write_toml, MINIMAL.replace("requests_per_day", "request_per_day"))
    assert e.key == "workload.chat.request_per_day"
    assert "did you mean 'requests_per_day'" in str(e)


def test_unknown_top_level_table(write_toml):
    e = err(write_toml, MINIMAL + "\n[clouds.x]\nmodel='a'\n")
    assert e.key == "clouds"
    assert "'cloud'" in str(e)


def test_wrong_type(write_toml):
    e = err(write_toml, MINIMAL.replace("requests_per_day = 1000", 'requests_per_day = "many"'))
    assert e.key == "workload.chat.requests_per_day"
    assert "many" in str(e)


def test_negative_price(write_toml):
    e = err(write_toml, MINIMAL + "input_usd_per_mtok = -1\n")
    assert e.key == "api.a.input_usd_per_mtok"
    assert ">= 0" in str(e)


def test_share_above_one(write_toml):
    e = err(write_toml, MINIMAL.replace("output = 50", "output = 50\ncached_share = 1.5"))
    assert e.key == "workload.chat.cached_share"
    assert "[0, 1]" in str(e)


def test_unknown_model_did_you_mean(write_toml):
    e = err(write_toml, MINIMAL.replace("openai/gpt-4o", "openai/gpt-4oo"))
    assert e.key == "api.a.offering"
    assert "did you mean" in str(e) and "openai/gpt-4o" in str(e)


def test_malformed_toml(write_toml):
    e = err(write_toml, MINIMAL + "\n[api.b\n")
    assert "not valid TOML" in str(e)


def test_missing_required(write_toml):
    e = err(write_toml, MINIMAL.replace("output = 50", ""))
    assert e.key == "workload.chat.output"
    assert "missing" in str(e)


def test_distribution_slot(write_toml):
    sc = load_scenario(write_toml(MINIMAL.replace(
        "requests_per_day = 1000",
        'requests_per_day = {dist = "lognormal", median = 1000, p90 = 2000}')))
    from planner.config import med

    assert med(sc.workload["chat"].requests_per_day) == pytest.approx(1000)


def test_distribution_negative_support_rejected(write_toml):
    e = err(write_toml, MINIMAL.replace(
        "requests_per_day = 1000", 'requests_per_day = {dist = "normal", mean = 1000, sd = 10}'))
    assert e.key == "workload.chat.requests_per_day"
    assert "truncate" in str(e)


def test_bad_distribution_named(write_toml):
    e = err(write_toml, MINIMAL.replace(
        "requests_per_day = 1000", 'requests_per_day = {dist = "lognormal", median = 10, p90 = 5}'))
    assert e.key.startswith("workload.chat.requests_per_day")
    assert "p90" in str(e)


def test_words_need_language(write_toml):
    e = err(write_toml, MINIMAL.replace("input = 100", "input = {words = 100}"))
    assert e.key == "workload.chat.input"
    assert "lang" in str(e)


def test_unknown_class_reference(write_toml):
    e = err(write_toml, MINIMAL + 'classes = ["chta"]\n')
    assert e.key == "api.a.classes"
    assert "'chat'" in str(e)


def test_variants_and_extends(write_toml, tmp_path):
    write_toml(MINIMAL + '\n[variants.big]\n"workload.chat.requests_per_day" = 5000\n',
               name="base.toml")
    child = write_toml('extends = "base.toml"\n[workload.chat]\noutput = 70\n', name="child.toml")
    sc = load_scenario(child)
    assert sc.workload["chat"].output.tokens == 70
    assert sc.workload["chat"].requests_per_day == 1000
    big = load_scenario(child, variants=["big"])
    assert big.workload["chat"].requests_per_day == 5000
    with pytest.raises(ScenarioError, match="did you mean 'big'"):
        load_scenario(child, variants=["bgi"])


def test_extends_loop(write_toml):
    write_toml('extends = "b.toml"\n', name="a.toml")
    b = write_toml('extends = "a.toml"\n', name="b.toml")
    with pytest.raises(ScenarioError, match="loops"):
        load_scenario(b)


def test_overrides():
    import tomllib

    sc = parse_scenario(tomllib.loads(MINIMAL),
                        overrides={"workload.chat.requests_per_day": 7.0})
    assert sc.workload["chat"].requests_per_day == 7.0


@pytest.mark.parametrize("mutation, key", [
    (("requests_per_day", "request_per_day"), "request_per_day"),
    (("input_usd", "x"), None),
])
def test_cli_exit_code_2_no_traceback(write_toml, mutation, key):
    text = MINIMAL.replace(*mutation) if key else MINIMAL + "\ninput_usd_per_mtok = -3\n"
    p = write_toml(text)
    r = subprocess.run([sys.executable, "-m", "planner", "validate", str(p)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert str(p) in r.stderr
    assert r.stderr.count("\n") == 1, "one paragraph"


def test_json_schema_exports():
    from planner.config import scenario_json_schema

    s = scenario_json_schema()
    assert "workload" in s["properties"]
    assert s["properties"]["variants"]["type"] == "object"


def test_unknown_key_suggests_the_name_files_use_not_the_python_field(write_toml):
    # [[simulation.trace]]'s class is stored as the field workload_class (alias "class")
    text = MINIMAL + '\n[[simulation.trace]]\nfile = "x.csv"\nclas = "chat"\n'
    e = err(write_toml, text)
    assert e.key == "simulation.trace.0.clas"
    assert "did you mean 'class'" in str(e) and "workload_class" not in str(e)


# ----------------------------------------------------------------- one validation pass (#12)

HOSTED = MINIMAL + """
[cloud.g]
model = "llama-3.1-8b"
accelerator = "h100-sxm"
"""


@pytest.mark.parametrize("text, key, fragment", [
    (MINIMAL.replace("requests_per_day = 1000", "requests_per_day = true"),
     "workload.chat.requests_per_day", "got true (a boolean)"),
    (MINIMAL.replace("requests_per_day = 1000", "requests_per_day = inf"),
     "workload.chat.requests_per_day", "finite"),
    (MINIMAL.replace("requests_per_day = 1000", "requests_per_day = 1e308"),
     "workload.chat.requests_per_day", "magnitude at most"),
    (MINIMAL.replace("requests_per_day = 1000", "requests_per_day = 1e15"),
     "workload.chat.requests_per_day", "at most 1e+12"),
    (MINIMAL.replace("requests_per_day = 1000", "requests_per_day = 1000\ndiurnal = [nan"
                     + ", 1" * 23 + "]"), "workload.chat.diurnal[0]", "finite"),
    (HOSTED + "perf = { max_batch = inf }\n", "cloud.g.perf.max_batch", "finite"),
    (HOSTED + "perf = { max_batch = 1e9 }\n", "cloud.g.perf", "max_batch"),
    (HOSTED + "perf = { bogus = 1 }\n", "cloud.g.perf", "unknown parameter(s) bogus"),
    (HOSTED + "replicas = 1000000000\n", "cloud.g.replicas", "100000"),
    (MINIMAL + "[simulation]\nlength_cv = nan\n", "simulation.length_cv", "finite"),
    (MINIMAL + "[simulation]\nburstiness_cv = 1e6\n", "simulation.burstiness_cv", "100"),
    (MINIMAL + "[simulation]\napi_output_tokens_per_s = inf\n",
     "simulation.api_output_tokens_per_s", "finite"),
    (MINIMAL + "[planning]\nhours_per_month = 1e6\n", "planning.hours_per_month", "744"),
    (MINIMAL + "[pretraining.j]\nparams_b = 7\ntokens = 1e12\npeak_tflops = 100\n"
     "usd_per_gpu_hour = 2\nmfu = 0\n", "pretraining.j.mfu", "(0, 1]"),
    ('[scenario]\nname = "t"\n[api.a]\noffering = "openai/gpt-4o"\n', "workload",
     "no workload class"),
    (MINIMAL + '\n[variants.bad]\n"workload.chat.requests_per_day" = -5\n',
     "workload.chat.requests_per_day", "with variant 'bad' applied"),
    ("variants = 5\n" + MINIMAL, "variants", "table of named variants"),
    (MINIMAL + "\n[variants]\nx = 5\n", "variants.x", "table of overrides"),
    ('zz = "x"\n"zz.y" = 1\n' + MINIMAL, "zz.y", "already holds a value"),
    ('"scenario.name" = "a"\n' + MINIMAL, "scenario.name", "given twice"),
    (HOSTED.replace("output = 50", "output = 0"), "workload.chat.output", ">= 1 token"),
    (HOSTED.replace("input = 100", "input = 200000"), "workload.chat",
     "context window"),
    (MINIMAL.replace("input = 100", 'input = { words = 10, lang = "en" }')
     + '[cloud.g]\nmodel = "llama-3.1-8b"\naccelerator = "h100-sxm"\n', "workload.chat.input",
     'set tokenizer = "NAME" on [cloud.g]'),
])
def test_invalid_values_name_file_and_key(write_toml, text, key, fragment):
    e = err(write_toml, text)
    assert e.key == key
    assert fragment in str(e)


def test_a_named_tokenizer_with_a_row_counts_with_its_ratio(write_toml):
    from planner.catalog import load_catalog
    from planner.engines.deterministic import evaluate

    text = MINIMAL.replace("input = 100", 'input = { words = 10, lang = "en" }') + \
        '[cloud.g]\nmodel = "llama-3.1-8b"\naccelerator = "h100-sxm"\ntokenizer = "gpt2"\n'
    res = evaluate(load_scenario(write_toml(text)))
    row = res.classes[res.classes["deployment"] == "g"].iloc[0]
    ratio = load_catalog().tokens_per_unit("gpt2", "en", "word")["tokens_per_unit"]
    assert row["input_tokens_per_request"] == pytest.approx(10 * ratio)


@pytest.mark.parametrize("kind", ["deep-array", "deep-inline", "deep-dotted"])
def test_deep_nesting_is_a_clean_error(write_toml, kind):
    d = 1500
    body = {"deep-array": f"x = {'[' * d}1{']' * d}\n",
            "deep-inline": f"x = {'{ a = ' * d}1{' }' * d}\n",
            "deep-dotted": ".".join(["a"] * d) + " = 1\n"}[kind]
    e = err(write_toml, body + MINIMAL)
    assert "nest deeper than" in str(e)


def test_extends_limits(write_toml, tmp_path):
    (tmp_path / "d").mkdir()
    for target, fragment in (("/dev/zero", "not a regular file"), ("d", "is a directory"),
                             ("a\\u0000b", "NUL")):
        p = write_toml(f'extends = "{target}"\n' + MINIMAL, name="x.toml")
        with pytest.raises(ScenarioError, match=fragment):
            load_scenario(p)
    for i in range(40):
        (tmp_path / f"c{i}.toml").write_text(f'extends = "c{i + 1}.toml"\n', encoding="utf-8")
    (tmp_path / "c40.toml").write_text(MINIMAL, encoding="utf-8")
    with pytest.raises(ScenarioError, match="chains more than 32 files") as exc:
        load_scenario(tmp_path / "c0.toml")
    assert exc.value.key == "extends"
    (tmp_path / "big.toml").write_text(MINIMAL + "# " + "x" * 1_000_000, encoding="utf-8")
    with pytest.raises(ScenarioError, match="at most 1,000,000"):
        load_scenario(tmp_path / "big.toml")


def test_a_megabyte_id_is_not_echoed(write_toml):
    e = err(write_toml, MINIMAL.replace('"openai/gpt-4o"', '"' + "z" * 400_000 + '"'))
    assert e.key == "api.a.offering" and len(str(e)) < 5000
    assert "(400,002 characters)" in str(e)
