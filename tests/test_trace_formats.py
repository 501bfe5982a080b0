"""Trace formats on the command line: --trace-format, --columns, --timestamp-unit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from planner.cli import main
from planner.errors import PlannerError
from planner.traces import TRACE_FORMATS, load_trace, parse_columns, trace_columns
from tests.test_sim_cli import SMALL

MOONCAKE = Path(__file__).parent / "data" / "traces" / "mooncake_sample.jsonl"


def _records() -> list[dict]:
    return [json.loads(x) for x in MOONCAKE.read_text().splitlines() if x.strip()]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def small(write_toml):
    return write_toml(SMALL)


def _check_exact(req: pd.DataFrame) -> None:
    rec = _records()
    assert len(req) == len(rec) == 60
    assert int(req["input_tokens"].sum()) == sum(r["input_length"] for r in rec) == 408_470
    assert int(req["output_tokens"].sum()) == sum(r["output_length"] for r in rec) == 18_573
    ts = np.sort([r["timestamp"] for r in rec]) / 1000.0
    np.testing.assert_allclose(np.sort(req["arrival_s"]), ts - ts[0], atol=1e-9)


def test_mooncake_jsonl_replays_with_cli_flags_only(capsys, small, tmp_path):
    d = tmp_path / "out"
    code, _, err = run(capsys, "simulate", small, "-q", "--trace", f"chat={MOONCAKE}",
                       "--trace-format", "mooncake", "--out", d)
    assert code == 0, err
    req = pd.read_csv(d / "requests.csv")
    _check_exact(req)
    assert set(req["class"]) == {"chat"}


def test_columns_and_unit_flags_without_a_named_format(capsys, small, tmp_path):
    d = tmp_path / "out"
    code, _, err = run(capsys, "simulate", small, "-q", "--trace", f"chat={MOONCAKE}",
                       "--columns", "timestamp=timestamp,input=input_length,output=output_length",
                       "--timestamp-unit", "ms", "--out", d)
    assert code == 0, err
    _check_exact(pd.read_csv(d / "requests.csv"))


def test_cli_path_matches_the_scenario_entry_after_resolving(capsys, write_toml, tmp_path,
                                                             monkeypatch):
    (tmp_path / "t.jsonl").write_text(MOONCAKE.read_text())
    sc = write_toml(SMALL.replace("[simulation]\nhours = 1", """[simulation]
hours = 1
[[simulation.trace]]
file = "t.jsonl"
class = "chat"
trace_format = "mooncake"
"""))
    monkeypatch.chdir(Path(sc).parent)
    (Path(sc).parent / "t.jsonl").write_text(MOONCAKE.read_text())
    for spelled in ("./t.jsonl", "t.jsonl", str(Path(sc).parent / "sub" / ".." / "t.jsonl")):
        d = tmp_path / f"out{abs(hash(spelled))}"
        code, _, err = run(capsys, "simulate", sc, "-q", "--trace", spelled, "--out", d)
        assert code == 0, (spelled, err)
        _check_exact(pd.read_csv(d / "requests.csv"))
    # the scenario's own entry alone works too
    d = tmp_path / "toml"
    assert run(capsys, "simulate", sc, "-q", "--out", d)[0] == 0
    _check_exact(pd.read_csv(d / "requests.csv"))


@pytest.mark.parametrize(("argv", "needle"), [
    (["--trace-format", "mooncake", "--columns", "input=prompt"], "--columns"),
    (["--columns", "timestamp=timestamp,input=input_length,output=output_length"],
     "--timestamp-unit"),
    (["--trace-format", "mooncake", "--timestamp-unit", "hours"], "--timestamp-unit"),
    (["--columns", "when=timestamp"], "--columns"),
    (["--columns", "timestamp"], "--columns"),
    (["--trace-format", "azure"], "--columns"),
])
def test_errors_name_the_flags(capsys, small, argv, needle):
    code, _, err = run(capsys, "simulate", small, "-q", "--trace", f"chat={MOONCAKE}", *argv)
    assert code == 2, err
    assert needle in err and "TraceColumns" not in err and "Traceback" not in err


def test_flags_need_a_trace(capsys, small):
    code, _, err = run(capsys, "simulate", small, "-q", "--trace-format", "mooncake")
    assert code == 2 and "need --trace" in err


def test_toml_errors_name_the_keys(capsys, write_toml, tmp_path):
    (tmp_path / "t.jsonl").write_text(MOONCAKE.read_text())
    sc = write_toml(SMALL.replace("[simulation]\nhours = 1", f"""[simulation]
hours = 1
[[simulation.trace]]
file = "{tmp_path / 't.jsonl'}"
class = "chat"
trace_format = "mooncake"
input_tokens = "prompt"
"""))
    code, _, err = run(capsys, "simulate", sc, "-q")
    assert code == 2
    assert "simulation.trace[0]" in err and "TraceColumns" not in err


def test_named_formats_and_parsing():
    assert set(TRACE_FORMATS) == {"azure", "mooncake", "burstgpt", "csv"}
    cols, kind = trace_columns("mooncake")
    assert (cols.timestamp, cols.input_tokens, cols.output_tokens, cols.timestamp_unit, kind) \
        == ("timestamp", "input_length", "output_length", "ms", "jsonl")
    cols, kind = trace_columns("burstgpt", columns={"class_column": "Model"})
    assert (cols.input_tokens, cols.class_column, cols.timestamp_unit) == (
        "Request tokens", "Model", "s")
    assert parse_columns("timestamp=t, input=in ,output=out,class=c") == {
        "timestamp": "t", "input_tokens": "in", "output_tokens": "out", "class_column": "c"}
    with pytest.raises(PlannerError, match="given twice"):
        parse_columns("input=a,input_tokens=b")
    tr = load_trace(MOONCAKE, trace_columns("mooncake")[0])
    assert len(tr) == 60 and tr.duration_s == pytest.approx(117.418)


def test_burstgpt_layout(tmp_path):
    p = tmp_path / "burst.csv"
    pd.DataFrame({"Timestamp": [5, 7.5, 9], "Model": ["ChatGPT", "GPT-4", "ChatGPT"],
                  "Request tokens": [100, 200, 300], "Response tokens": [10, 0, 30],
                  "Total tokens": [110, 200, 330], "Log Type": ["Conversation log"] * 3}
                 ).to_csv(p, index=False)
    tr = load_trace(p, trace_columns("burstgpt")[0])
    assert tr.arrival_s.tolist() == [0, 2.5, 4] and int(tr.input_tokens.sum()) == 600
