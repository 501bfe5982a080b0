from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


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
