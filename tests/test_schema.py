"""``planner schema``: every key a scenario file may hold is described (with its unit where it
has one), the schema stays compact, and it still validates what the loader accepts."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from planner.cli import main
from planner.config import (
    Scenario,
    Strict,
    _docstring_fields,
    field_descriptions,
    scenario_json_schema,
)
from tests.conftest import ROOT

#: ``planner schema`` was 164,986 bytes before descriptions (the distribution union repeated
#: under every numeric field); with a description on every key it must stay well below.
MAX_SCHEMA_BYTES = 110_000


def properties(node, path: str = "") -> Iterator[tuple[str, dict]]:
    """Every (path, schema) of a named property anywhere in a JSON Schema."""
    if isinstance(node, dict):
        for k, v in (node.get("properties") or {}).items():
            yield f"{path}.{k}", v
        for k, v in node.items():
            yield from properties(v, f"{path}/{k}" if k != "properties" else path)
    elif isinstance(node, list):
        for v in node:
            yield from properties(v, path)


@pytest.fixture(scope="module")
def schema_text() -> str:
    return json.dumps(scenario_json_schema(), indent=1)


def test_every_property_has_a_description(schema_text):
    s = json.loads(schema_text)
    props = list(properties(s))
    assert len(props) > 250  # the walk reaches every table, deployments and distributions
    missing = [p for p, v in props if not (isinstance(v, dict) and v.get("description"))]
    assert missing == []
    short = [p for p, v in props if len(v["description"]) < 8]
    assert short == []


def test_every_model_field_is_described():
    todo: list[type] = [Strict]
    seen = []
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        seen.append(cls)
        described = field_descriptions(cls)
        for name in cls.model_fields:
            if name in ("source_path", "variants_applied"):
                continue  # set by the loader, not in the schema
            assert described.get(name), f"{cls.__name__}.{name}"
    assert Scenario in seen


@pytest.mark.parametrize("defn, key, words", [
    ("OnPremDeployment", "servers", ["fixed", "max_servers"]),
    ("OnPremDeployment", "max_servers", ["optimiser", "cap"]),
    ("CloudDeployment", "plan", ["on-demand", "hour", "optimiser"]),
    ("ApiDeployment", "fine_tune", ["[finetune.NAME]"]),
    ("FineTune", "one_off_usd", ["USD", "engineering", "payback"]),
    ("CloudDeployment", "usd_per_gpu_hour", ["USD per GPU-hour"]),
    ("SLO", "ttft_s", ["seconds"]),
    ("OnPremDeployment", "electricity_usd_per_kwh", ["USD per kWh"]),
    ("Optimize", "gap", ["gap"]),           # from the class docstring's "name : text" list
    ("Simulation", "max_queue", ["requests"]),
])
def test_the_confusing_keys_say_what_they_mean(schema_text, defn, key, words):
    d = json.loads(schema_text)["$defs"][defn]["properties"][key]["description"]
    for w in words:
        assert w in d, (defn, key, d)


def test_schema_is_compact_and_shares_the_distribution_union(schema_text, capsys):
    assert main(["schema"]) == 0
    out = capsys.readouterr().out
    assert len(out.encode()) < MAX_SCHEMA_BYTES
    assert out.count('"propertyName": "dist"') == 1
    s = json.loads(out)
    assert set(s["$defs"]["Distribution"]["discriminator"]["mapping"]) >= {
        "lognormal", "uniform", "pert", "fixed"}
    assert "source_path" not in s["properties"]


def test_schema_validates_the_studies(schema_text):
    jsonschema = pytest.importorskip("jsonschema")
    import tomllib

    s = json.loads(schema_text)
    for path in [*sorted((ROOT / "studies").glob("*/*.toml")),
                 *sorted((ROOT / "planner" / "templates").glob("*.toml"))]:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        jsonschema.validate(data, s)


def test_docstring_fields_parser():
    doc = """Title.

    alpha : one line.
    beta, gamma : two
        lines.
    not a field line
    delta : x
    """
    got = _docstring_fields(doc)
    assert got == {"alpha": "one line.", "beta": "two lines.", "gamma": "two lines.",
                   "delta": "x"}
