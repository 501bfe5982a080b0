"""Every ``planner ...`` command the README (its ```bash blocks) and the ``--help`` epilogs show
runs as written and exits 0.

The commands run in-process in a temporary directory holding what they refer to: ``studies/``
(a link to the repository's), ``my.toml`` (``planner new``'s quickstart), a text file for
``planner tokens`` and a two-model LiteLLM price file for ``catalog import-litellm``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex

import pytest

from planner.cli import build_parser, main
from tests.conftest import ROOT

#: commands that cannot run here, with the reason
SKIP: dict[str, str] = {
    "planner catalog import-litellm model_prices_and_context_window.json --provider "
    "openai,anthropic --out api_prices.csv":
        "needs LiteLLM's price file, downloaded from GitHub (network); the same command on a "
        "small local file runs below",
}


def readme_commands() -> list[str]:
    """``planner ...`` lines of the README's ```bash blocks, then its inline `planner ...`
    spans that are complete commands (no SCENARIO/FILE placeholders, no [optional] parts)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("planner "):
                    out.append(part)
    for span in re.findall(r"`(planner [^`]+)`", text):
        span = " ".join(span.split())
        if len(span.split()) < 3 or re.search(r"\b[A-Z][A-Z_]*\b|[\[\]|]|\.\.\.", span):
            continue  # a bare command name, or a synopsis with placeholders
        out.append(span)
    return out


def epilog_commands() -> list[str]:
    parsers = [build_parser()]
    out: list[str] = []
    seen: set[int] = set()
    while parsers:
        p = parsers.pop(0)
        if id(p) in seen:
            continue
        seen.add(id(p))
        for line in (p.epilog or "").splitlines():
            line = line.strip()
            if line.startswith("planner "):
                out.append(line)
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                parsers.extend(a.choices.values())
    return out


def _key(command: str) -> str:
    return re.sub(r"/(\s|$)", r"\1", command)  # "-o report/" is "-o report"


def unique_commands(commands: list[str]) -> list[str]:
    """The commands, each once; one that another repeats with ``--out DIR`` added is run
    as that one (same work, and the output directory is checked too)."""
    keys = list(dict.fromkeys(_key(c) for c in commands))
    return [k for k in keys
            if not any(o != k and re.fullmatch(re.escape(k) + r" --out \S+", o) for o in keys)]


COMMANDS = unique_commands(readme_commands() + epilog_commands())


def test_the_docs_show_commands():
    assert any("planner report" in c for c in readme_commands())
    assert len(epilog_commands()) >= 20


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("docs")
    (d / "studies").symlink_to(ROOT / "studies", target_is_directory=True)
    (d / "my.toml").write_text(
        (ROOT / "planner" / "templates" / "quickstart.toml").read_text(encoding="utf-8"),
        encoding="utf-8")
    (d / "article.txt").write_text("大语言模型的推理成本取决于输入和输出的词元数量。" * 20,
                                   encoding="utf-8")
    (d / "prices.json").write_text(json.dumps({
        "gpt-4o": {"mode": "chat", "litellm_provider": "openai",
                   "input_cost_per_token": 2.5e-6, "output_cost_per_token": 1e-5},
        "gpt-4o-mini": {"mode": "chat", "litellm_provider": "openai",
                        "input_cost_per_token": 1.5e-7, "output_cost_per_token": 6e-7},
    }), encoding="utf-8")
    # the SkyPilot catalog's layout (catalogs/v7/<cloud>/vms.csv), from the test fixtures
    for cloud in ("aws", "lambda"):
        sub = d / "skypilot-catalog" / "catalogs" / "v7" / cloud
        sub.mkdir(parents=True)
        (sub / "vms.csv").write_bytes(
            (ROOT / "tests" / "data" / "skypilot" / f"{cloud}_vms_gpu.csv").read_bytes())
    return d


def test_unique_commands_keeps_the_out_variant():
    got = unique_commands(["planner cost x", "planner cost x --out r/", "planner report x -o r/",
                           "planner report x -o r", "planner risk x"])
    assert got == ["planner cost x --out r", "planner report x -o r", "planner risk x"]


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[c[8:70] for c in COMMANDS])
def test_documented_command_runs(command, workdir, monkeypatch, capsys):
    if command in SKIP:
        pytest.skip(SKIP[command])
    monkeypatch.chdir(workdir)
    argv = shlex.split(command)[1:]
    if argv[0] == "new":  # it refuses to overwrite the my.toml the other commands read
        (workdir / argv[argv.index("-o") + 1]).unlink(missing_ok=True)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, f"{command!r} exited {code}: {err[-2000:]}"
    assert "Traceback" not in err
