"""The worked examples under docs/examples run and print what their golden files hold.

Each ``docs/examples/NAME.py`` (a jupytext percent-format script) runs in a fresh interpreter;
its stdout must equal ``docs/examples/NAME.out`` exactly (seeded, so deterministic). After an
intended change, regenerate the golden files and review the diff:

    PLANNER_UPDATE_GOLDEN=1 python -m pytest tests/test_examples.py
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))
UPDATE = os.environ.get("PLANNER_UPDATE_GOLDEN") == "1"


def test_there_are_two_worked_examples_each_with_a_golden_file():
    assert [p.stem for p in SCRIPTS] == ["capacity_planning", "what_if_risk"]
    for p in SCRIPTS:
        text = p.read_text(encoding="utf-8")
        assert "format_name: percent" in text and "# %%" in text, p.name  # jupytext
        assert UPDATE or p.with_suffix(".out").is_file(), p.name


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_example_output_matches_its_golden_file(script, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "PYTHONHASHSEED": "0", "COLUMNS": "200"}
    t0 = time.perf_counter()
    # run from an empty directory: the example must not depend on the working directory
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr  # no progress bars or warnings in the worked example
    golden = script.with_suffix(".out")
    if UPDATE:
        golden.write_text(proc.stdout, encoding="utf-8")
    want = golden.read_text(encoding="utf-8")
    if proc.stdout != want:
        diff = "".join(difflib.unified_diff(
            want.splitlines(True), proc.stdout.splitlines(True), str(golden.name), "stdout"))
        pytest.fail(f"{script.name} output differs from {golden.name} (regenerate with "
                    f"PLANNER_UPDATE_GOLDEN=1 after review):\n{diff}")
    assert seconds < 120, f"{script.name} took {seconds:.0f} s"
