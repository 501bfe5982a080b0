from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent

# CI runs every property test on the same examples (derandomised: a red CI names a code
# change, not a lucky draw); local runs keep exploring new examples.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# planner's on-disk cache (the report's Vega bundle) goes to a directory of this test session,
# not the user's cache (subprocesses inherit it)
if "PLANNER_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="planner-test-cache-")
    os.environ["PLANNER_CACHE_DIR"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
# reports built by the tests validate every chart against the Vega-Lite schema
os.environ.setdefault("PLANNER_VALIDATE_CHARTS", "1")


@pytest.fixture
def write_toml(tmp_path):
    """Write a TOML text to a file and return its path."""

    def _write(text: str, name: str = "scenario.toml") -> Path:
        p = tmp_path / name
        p.write_text(text, encoding="utf-8")
        return p

    return _write


MINIMAL = """
[scenario]
name = "t"

[workload.chat]
requests_per_day = 1000
input = 100
output = 50

[api.a]
offering = "openai/gpt-4o"
"""


def at_median(sc, overrides=None):
    """The scenario with every uncertain input fixed at its median (what `planner cost` uses),
    then ``overrides`` applied, for tests that need fixed inputs from a bundled example that
    carries distributions."""
    from planner.config import med, parse_scenario
    from planner.uncertain import scenario_at, uncertain_inputs

    fixed = scenario_at(sc, {k: med(u.dist) for k, u in uncertain_inputs(sc).items()})
    if not overrides:
        return fixed
    return parse_scenario(fixed.model_dump(mode="python"), path=fixed.source_path,
                          overrides=overrides)
