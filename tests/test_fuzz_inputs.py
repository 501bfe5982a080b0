"""Fuzz the command line with malformed and hostile scenario files (issue 12).

A seeded generator mutates the bundled templates (``planner/templates/*.toml``) and the
studies' scenarios (``studies/*/scenario*.toml``) into at least 1,000 bad inputs per run, in
the classes found by hand: non-finite, huge, boolean and string numbers at any numeric key;
unknown and missing keys; TOML shapes (deep nesting, deep dotted keys, dotted-key clashes,
``variants = 5``, ``[variants] x = 5``); hostile ``extends`` (NUL byte, ``/dev/zero``, a
directory, long chains, loops, oversized and non-UTF-8 files); resource bombs (replicas,
requests, samples, hours); structure (no workload class, a tokenizer without a
``tokenizers.csv`` row, zero requests, control characters in names, megabyte ids).

Each case runs in-process (``planner.cli.main``) under a time budget and must give the
expected exit status: 2 with the file and key named (or the flag, or the TOML line) for a
user error, never a traceback nor an internal error, no raw control character and no
megabyte echo on the terminal, no nan/inf/negative cost printed when it succeeds, and no
output directory (nor temporary sibling) left by a failed ``--out``.

``PLANNER_FUZZ_SEED`` picks another seed (CI uses the fixed default), ``PLANNER_FUZZ_CASES``
another number of cases.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import signal
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from planner.cli import main
from tests.conftest import ROOT

SEED = int(os.environ.get("PLANNER_FUZZ_SEED", "20261205"))
N_CASES = int(os.environ.get("PLANNER_FUZZ_CASES", "1150"))
#: Seconds one case may take before it counts as a hang.
CASE_BUDGET_S = 20.0
#: Longest error message a case may print (a megabyte id must not be echoed in full).
MAX_ERROR_CHARS = 6000

BASES = sorted((ROOT / "planner" / "templates").glob("*.toml")) + sorted(
    (ROOT / "studies").glob("*/scenario*.toml"))


# ---------------------------------------------------------------------------- TOML writing


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(v) -> str:
    """A value as TOML (tables inline, one line)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_str(str(k))} = {toml_value(x)}"
                                for k, x in v.items()) + " }"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return str(v)  # dates and times print as TOML literals


def toml_dumps(data: dict) -> str:
    return "".join(f"{_toml_str(str(k))} = {toml_value(v)}\n" for k, v in data.items())


# ---------------------------------------------------------------------------- cases


@dataclass
class Case:
    kind: str
    argv: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)
    code: int | tuple[int, ...] = 2
    #: fragments the error must contain ({dir} is the case directory)
    needs: list[str] = field(default_factory=list)
    out_dir: str | None = None  # an --out that must not exist afterwards
    check_costs: bool = False  # success: every printed cost finite and >= 0


def numeric_leaves(obj, path=()):
    """(path, value) of every number (not bool) in parsed TOML."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from numeric_leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from numeric_leaves(v, (*path, i))
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        yield path, obj


def tables(obj, path=()):
    """Paths of every table (dict) in parsed TOML, below the top level."""
    if isinstance(obj, dict):
        if path:
            yield path
        for k, v in obj.items():
            yield from tables(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from tables(v, (*path, i))


def set_at(data, path, value):
    cur = data
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value


def del_at(data, path):
    cur = data
    for p in path[:-1]:
        cur = cur[p]
    del cur[path[-1]]


def leaf_name(path) -> str:
    """The last named key of a path (``diurnal`` for ``workload.x.diurnal[3]``); a dotted
    key's last part (``requests_per_day`` for ``"workload.chat.requests_per_day"``)."""
    name = next(str(p) for p in reversed(path) if isinstance(p, str))
    return name.split(".")[-1]


class Generator:
    """Seeded mutations of the bundled scenarios."""

    BAD_NUMBERS = (math.inf, -math.inf, math.nan, 1e308, -1e308, 1e300, 1e19, True, False,
                   "12abc", [1, 2])

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.bases = [(p, tomllib.loads(p.read_text(encoding="utf-8"))) for p in BASES]
        self.i = 0

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def base(self, *, needs_deployments: bool = False):
        while True:
            path, data = self.pick(self.bases)
            if not needs_deployments or any(data.get(k) for k in ("api", "cloud", "onprem")):
                return path, json.loads(json.dumps(data, default=str))

    def name(self) -> str:
        self.i += 1
        return f"case{self.i}.toml"

    # -- classes -------------------------------------------------------------------------
    def bad_number(self) -> Case:
        path, data = self.base()
        leaves = list(numeric_leaves(data))
        where, _ = self.pick(leaves)
        bad = self.BAD_NUMBERS[int(self.rng.integers(len(self.BAD_NUMBERS)))]
        set_at(data, where, bad)
        f = self.name()
        return Case("number", ["validate", f], {f: toml_dumps(data)},
                    needs=[f, "key '", leaf_name(where)])

    def bad_number_cost(self) -> Case:
        c = self.bad_number()
        c.argv[0] = "cost"
        c.kind = "number/cost"
        out = f"out{self.i}"
        c.argv += ["--out", out]
        c.out_dir = out
        return c

    def unknown_key(self) -> Case:
        path, data = self.base()
        where = self.pick(list(tables(data)))
        cur = data
        for p in where:
            cur = cur[p]
        if "dist" in cur:  # a distribution's parameters: its own error message
            where = where[:-1] if len(where) > 1 else where
            cur = data
            for p in where:
                cur = cur[p]
        key = f"zz_{self.pick(['typo', 'requests_per_dya', 'repl1cas', 'x'])}"
        cur[key] = 1
        f = self.name()
        return Case("unknown-key", ["validate", f], {f: toml_dumps(data)},
                    needs=[f, key])

    def missing_key(self) -> Case:
        for _ in range(50):
            path, data = self.base()
            wl = data.get("workload") or {}
            if wl:
                cname = self.pick(list(wl))
                part = self.pick(["input", "output", "requests_per_day"])
                if part in wl[cname]:
                    del wl[cname][part]
                    f = self.name()
                    return Case("missing-key", ["validate", f], {f: toml_dumps(data)},
                                needs=[f, f"workload.{cname}.{part}"])
        raise AssertionError("no base with a workload class")

    def no_workload(self) -> Case:
        path, data = self.base(needs_deployments=True)
        data.pop("workload", None)
        for v in (data.get("variants") or {}).values():
            for k in [k for k in v if str(k).startswith("workload")]:
                del v[k]
        data.pop("revenue", None)
        f = self.name()
        return Case("no-workload", ["validate", f], {f: toml_dumps(data)},
                    needs=[f, "key 'workload'", "no workload class"])

    def toml_shape(self) -> Case:
        path, data = self.base()
        body = toml_dumps(data)
        f = self.name()
        kind = self.pick(["deep-array", "deep-table", "deep-dotted", "clash", "clash-table",
                          "variants-scalar", "variant-scalar", "nul-key", "bad-utf8"])
        if kind == "deep-array":
            d = int(self.rng.integers(49, 3000))
            text = f"zz = {'[' * d}1{']' * d}\n" + body
            needs = [f, "nest deeper"]
        elif kind == "deep-table":
            d = int(self.rng.integers(49, 3000))
            text = f"zz = {'{ a = ' * d}1{' }' * d}\n" + body
            needs = [f, "nest deeper"]
        elif kind == "deep-dotted":
            d = int(self.rng.integers(49, 1500))
            text = ".".join(["a"] * d) + " = 1\n" + body
            needs = [f, "nest deeper"]
        elif kind == "clash":
            text = 'zz = "x"\n"zz.y" = 1\n' + body
            needs = [f, "key 'zz.y'"]
        elif kind == "clash-table":
            # a quoted dotted key and a table setting the same value
            text = ('"scenario.name" = "a"\n' + body) if "scenario" in data else \
                ('"zz.a" = 1\nzz = { a = 2 }\n' + body)
            needs = [f, "given twice"]
        elif kind == "variants-scalar":
            data.pop("variants", None)
            text = "variants = 5\n" + toml_dumps(data)
            needs = [f, "key 'variants'"]
        elif kind == "variant-scalar":
            name = f"v{self.i}"
            data.setdefault("variants", {})[name] = 5
            text = toml_dumps(data)
            needs = [f, f"key 'variants.{name}'"]
        elif kind == "nul-key":
            text = '"a\\u0000b" = 1\n' + body
            needs = [f, "unknown key"]
        else:
            return Case("toml/bad-utf8", ["validate", f], {f: body.encode() + b"\n# \xff\xfe\n"},
                        needs=[f, "UTF-8"])
        return Case(f"toml/{kind}", ["validate", f], {f: text}, needs=needs)

    def hostile_extends(self) -> Case:
        path, data = self.base()
        f = self.name()
        kind = self.pick(["nul", "dev-zero", "directory", "chain", "loop", "huge", "binary",
                          "missing", "non-string"])
        files: dict[str, str | bytes] = {}
        if kind == "nul":
            target, needs = "a\x00b.toml", [f, "key 'extends'"]
        elif kind == "dev-zero":
            target, needs = "/dev/zero", ["/dev/zero", "not a regular file"]
        elif kind == "directory":
            target, needs = ".", ["is a directory"]
        elif kind == "chain":
            n = int(self.rng.integers(33, 1200))
            target, needs = f"chain/c{1200 - n}.toml", ["key 'extends'", "chains more than"]
        elif kind == "loop":
            other = f"loop{self.i}.toml"
            files[other] = f'extends = "{f}"\n'
            target, needs = other, [f, "loops"]
        elif kind == "huge":
            target, needs = "huge.toml", ["huge.toml", "at most"]
        elif kind == "binary":
            other = f"bin{self.i}.toml"
            files[other] = bytes(self.rng.integers(0, 256, 2000, dtype=np.uint8))
            target, needs = other, [other]
        elif kind == "missing":
            target, needs = f"nowhere{self.i}.toml", [f"nowhere{self.i}.toml", "not found"]
        else:
            files[f] = "extends = 5\n" + toml_dumps(data)
            return Case("extends/non-string", ["validate", f], files,
                        needs=[f, "key 'extends'"])
        files[f] = f"extends = {_toml_str(target)}\n" + toml_dumps(data)
        return Case(f"extends/{kind}", ["validate", f], files, needs=needs)

    def resource_bomb(self) -> Case:
        kind = self.pick(["replicas", "rpd", "samples", "hours", "sim-requests", "sim-replicas"])
        f = self.name()
        if kind == "replicas":
            path, data = self.base(needs_deployments=True)
            hosted = [(k, n) for k in ("cloud", "onprem") for n in data.get(k) or {}]
            if not hosted:
                return self.resource_bomb()
            k, n = self.pick(hosted)
            data[k][n]["replicas"] = int(10 ** self.rng.uniform(5.1, 12))
            cmd = self.pick(["validate", "simulate", "cost"])
            return Case("bomb/replicas", [cmd, f, "--hours", "1"] if cmd == "simulate"
                        else [cmd, f], {f: toml_dumps(data)},
                        needs=[f, f"key '{k}.{n}.replicas'"])
        if kind == "rpd":
            path, data = self.base()
            wl = data.get("workload")
            if not wl:
                return self.resource_bomb()
            cname = self.pick(list(wl))
            wl[cname]["requests_per_day"] = float(10 ** self.rng.uniform(12.1, 18))
            cmd = self.pick(["validate", "simulate", "cost", "risk"])
            argv = [cmd, f] + (["--hours", "1"] if cmd == "simulate" else []) + \
                (["-n", "100"] if cmd == "risk" else [])
            return Case("bomb/requests_per_day", argv, {f: toml_dumps(data)},
                        needs=[f, f"workload.{cname}.requests_per_day"])
        if kind == "samples":
            n = int(10 ** self.rng.uniform(8, 14))
            return Case("bomb/samples", ["risk", "example:risk-example", "-n", str(n)],
                        needs=["-n"])
        if kind == "hours":
            h = int(self.rng.integers(8785, 10**7))
            return Case("bomb/hours", ["simulate", "example:quickstart", "--hours", str(h)],
                        needs=["--hours"])
        if kind == "sim-requests":
            rpd = float(10 ** self.rng.uniform(8.5, 11.9))
            return Case("bomb/sim-requests",
                        ["simulate", "example:quickstart", "--set",
                         f"workload.chat.requests_per_day={rpd:.6g}", "--out", f"sim{self.i}"],
                        needs=["requests", "over the limit"], out_dir=f"sim{self.i}")
        r = int(self.rng.integers(10_001, 10**9))
        return Case("bomb/sim-replicas",
                    ["simulate", "example:quickstart", "--deployment", "llama-8b-h100",
                     "--replicas", str(r), "--hours", "1"], needs=["replicas"])

    def tokenizer(self) -> Case:
        text = (ROOT / "planner" / "templates" / "quickstart.toml").read_text(encoding="utf-8")
        data = tomllib.loads(text)
        dep = self.pick(["llama-70b-h100", "llama-8b-h100", "llama-70b-hgx"])
        kind = "onprem" if dep.endswith("hgx") else "cloud"
        # families without an en/word row in tokenizers.csv
        data[kind][dep]["tokenizer"] = self.pick(["llama3", "llama2", "mistral", "nosuch"])
        f = self.name()
        return Case("tokenizer", ["validate", f], {f: toml_dumps(data)},
                    needs=[f, "key 'workload.", "tokenizers.csv",
                           f"[{kind}.{dep}]"])

    def long_id(self) -> Case:
        path, data = self.base(needs_deployments=True)
        n = int(10 ** self.rng.uniform(3, 5.7))
        bogus = "z" * n
        for k in ("api", "cloud", "onprem"):
            for name, d in (data.get(k) or {}).items():
                key = {"api": "offering", "cloud": "model", "onprem": "model"}[k]
                d[key] = bogus
                f = self.name()
                return Case("long-id", ["validate", f], {f: toml_dumps(data)},
                            needs=[f, f"key '{k}.{name}.{key}'", "characters"])
        raise AssertionError("unreachable")

    def control_names(self) -> Case:
        """Valid scenario with control characters in names: exit 0, nothing raw printed."""
        path = ROOT / "planner" / "templates" / "quickstart.toml"
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        evil = "".join(chr(int(c)) for c in self.rng.choice(
            [0x1b, 0x07, 0x08, 0x0d, 0x9b, 0x7f], size=3)) + "[2J"
        data["scenario"]["name"] = "n" + evil
        data["api"]["mini" + evil] = data["api"].pop("gpt-4o-mini")
        for v in data.get("variants", {}).values():
            v.pop("optimize.exclude", None)
        f = self.name()
        fmt = self.pick(["table", "csv", "json"])
        return Case("control-chars", ["cost", f, "--format", fmt], {f: toml_dumps(data)},
                    code=0, check_costs=fmt == "json")

    def zero_requests(self) -> Case:
        path = ROOT / "planner" / "templates" / self.pick(["quickstart.toml",
                                                           "risk-example.toml"])
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        for wc in data["workload"].values():
            wc["requests_per_day"] = 0
        data.pop("correlation", None)
        for v in data.get("variants", {}).values():
            for k in [k for k in v if "requests_per_day" in k]:
                v[k] = 0
        if self.rng.random() < 0.5:
            data["revenue"] = {"r": {"usd_per_year": 1e6, "units_per_month": 1e6}}
        f = self.name()
        if self.rng.random() < 0.5:
            return Case("zero-requests/cost", ["cost", f, "--format", "json"],
                        {f: toml_dumps(data)}, code=0, check_costs=True)
        return Case("zero-requests/optimize", ["optimize", f, "--time-limit", "5"],
                    {f: toml_dumps(data)}, needs=[f, "nothing to optimise"])

    def bad_set(self) -> Case:
        key, needs = self.pick([
            ("planning.hours_per_month", "planning.hours_per_month"),
            ("workload.chat.requests_per_day", "workload.chat.requests_per_day"),
            ("planning.utilisation_target", "planning.utilisation_target"),
            ("simulation.length_cv", "simulation.length_cv"),
            ("cloud.llama-8b-h100.perf.max_batch", "max_batch"),
        ])
        value = self.pick(["inf", "nan", "-inf", "1e308", "true", "-5"])
        if key == "simulation.length_cv" and value == "true":
            value = "inf"
        return Case("set", ["cost", "example:quickstart", "--set", f"{key}={value}"],
                    needs=["quickstart.toml", needs])

    def tiny_run(self) -> Case:
        """A plausible edit (a number x0, x1e-3 or x1e3) run through an engine at a tiny
        size: a valid answer (costs finite, >= 0) or a user error, never a crash."""
        path = self.pick([ROOT / "planner" / "templates" / "quickstart.toml",
                          ROOT / "planner" / "templates" / "risk-example.toml"])
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        cmd = self.pick(["cost", "cost", "cost", "risk", "optimize", "simulate"])
        leaves = [lf for lf in numeric_leaves(data) if lf[0][0] != "variants"]
        where, v = self.pick(leaves)
        new = v * float(self.pick([0.0, 1e-3, 1e3]))
        set_at(data, where, int(new) if isinstance(v, int) else new)
        f = self.name()
        argv = {"cost": ["cost", f, "--format", "json"],
                "risk": ["risk", f, "-n", "300", "-q"],
                "optimize": ["optimize", f, "--time-limit", "5", "-q"],
                "simulate": ["simulate", f, "--hours", "1", "-q", "--deployment",
                             next(iter(data.get("cloud") or data.get("onprem") or {"x": 0}))],
                }[cmd]
        return Case(f"run/{cmd}", argv, {f: toml_dumps(data)},
                    code=(0, 2, 3, 4) if cmd == "optimize" else (0, 2),
                    check_costs=cmd == "cost")

    def bad_flag(self) -> Case:
        argv, needs = self.pick([
            (["perf", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm", "--price",
              self.pick(["-3", "nan", "inf"])], "--price"),
            (["perf", "--search", "--model", "llama-3.1-8b", "--tps",
              self.pick(["abc", "0,-1", "1,,2", "99999"])], "--tps"),
            (["perf", "--search", "--model", "llama-3.1-8b", "--target-tps",
              self.pick(["-1", "0", "nan"])], "--target-tps"),
            (["train", "--params-b", "175", "--tokens", "3e11", "--peak-tflops", "100",
              "--mfu", self.pick(["0", "-0.1", "1.5", "nan"]), "--price", "2"], "--mfu"),
            (["train", "--params-b", "175", "--tokens", self.pick(["1e300", "inf", "0"]),
              "--peak-tflops", "100", "--price", "2"], "--tokens"),
            (["sweep", "example:risk-example", "--grid", "planning.lens=tco", "--workers",
              self.pick(["0", "-1"])], "--workers"),
            (["simulate", "example:quickstart", "--start-hour", self.pick(["-1", "168", "500"])],
             "--start-hour"),
            (["risk", "example:risk-example", "--seed", "-1"], "--seed"),
            (["optimize", "example:quickstart", "--gap", self.pick(["-1", "2", "nan"])], "--gap"),
            (["cost", "example:quickstart", "--out", "/proc/planner-fuzz"], "--out"),
            (["report", "example:quickstart", "-o", ""], "-o"),
        ])
        return Case("flag", argv, needs=[needs])

    CLASSES = (
        ("bad_number", 40), ("bad_number_cost", 6), ("unknown_key", 8), ("missing_key", 5),
        ("no_workload", 3), ("toml_shape", 10), ("hostile_extends", 8), ("resource_bomb", 6),
        ("tokenizer", 3), ("long_id", 3), ("control_names", 2), ("zero_requests", 1),
        ("bad_set", 3), ("bad_flag", 4), ("tiny_run", 3),
    )

    def cases(self, n: int) -> list[Case]:
        names = [c for c, _ in self.CLASSES]
        w = np.array([w for _, w in self.CLASSES], dtype=float)
        picks = self.rng.choice(len(names), size=n, p=w / w.sum())
        # every class at least once, whatever the draw
        picks = np.concatenate([np.arange(len(names)), picks])[:max(n, len(names))]
        return [getattr(self, names[i])() for i in picks]


# ---------------------------------------------------------------------------- running


class _Hang(BaseException):  # not an Exception: main's internal-error handler must not eat it
    pass


def _alarm(signum, frame):
    raise _Hang()


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def run_case(case: Case, d: Path) -> list[str]:
    """Run one case in directory ``d``; the list of what went wrong (empty: it passed)."""
    for name, content in case.files.items():
        p = d / name
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_BUDGET_S)
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(case.argv))
    except _Hang:
        return [f"no answer within {CASE_BUDGET_S:g} s (a hang)"]
    except BaseException as exc:  # noqa: BLE001 - main must never raise
        return [f"main raised {type(exc).__name__}: {str(exc)[:300]}"]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    seconds = time.perf_counter() - t0
    o, e = out.getvalue(), err.getvalue()
    problems = []
    if "Traceback" in o + e:
        problems.append("a traceback was printed")
    expected = case.code if isinstance(case.code, tuple) else (case.code,)
    if code not in expected:
        problems.append(f"exit {code}, expected {' or '.join(map(str, expected))}")
    if _CONTROL.search(o + e.replace("\r", "")):
        problems.append("a raw control character reached the terminal")
    if code == 2 and case.kind.startswith("run/"):
        if "planner: error:" not in e:
            problems.append("exit 2 without a 'planner: error:' paragraph")
    elif code == 2:
        if len(e) > MAX_ERROR_CHARS:
            problems.append(f"a {len(e):,}-character error message")
        for frag in case.needs:
            frag = frag.replace("{dir}", str(d))
            if frag not in e:
                problems.append(f"the error does not name {frag!r}")
    if case.out_dir is not None:
        left = [p.name for p in d.iterdir() if p.name == case.out_dir
                or p.name.startswith(f".{case.out_dir}-")]
        if code != 0 and left:
            problems.append(f"a failed run left {left}")
    if code == 0 and case.check_costs:
        problems += _cost_problems(o)
    if seconds > CASE_BUDGET_S:
        problems.append(f"took {seconds:.1f} s")
    return [f"{p} | stderr: {e[-400:]!r}" for p in problems]


def _cost_problems(text: str) -> list[str]:
    data = json.loads(text)
    bad = []
    for table, rows in data.items():
        for row in rows:
            for k, v in row.items():
                if not ("usd" in k or "cost" in k) or isinstance(v, str | bool) or v is None:
                    continue
                if not math.isfinite(v) or v < 0:
                    bad.append(f"{table}.{k} = {v}")
    return [f"printed cost {b}" for b in bad[:3]]


def test_generator_covers_every_class_and_is_seeded():
    a = [c.kind for c in Generator(1).cases(60)]
    b = [c.kind for c in Generator(1).cases(60)]
    assert a == b
    kinds = {k.split("/")[0] for k in a}
    assert {"number", "unknown-key", "missing-key", "no-workload", "toml", "extends", "bomb",
            "tokenizer", "long-id", "control-chars", "zero-requests", "set", "flag",
            "run"} <= kinds


def test_toml_writer_round_trips_every_base():
    for p in BASES:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
        assert tomllib.loads(toml_dumps(data)) == data, p


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    chain = d / "chain"
    chain.mkdir()
    for i in range(1200):
        nxt = f'extends = "c{i + 1}.toml"\n' if i < 1199 else '[scenario]\nname = "end"\n'
        (chain / f"c{i}.toml").write_text(nxt, encoding="utf-8")
    (d / "huge.toml").write_text("# " + "x" * 1_100_000 + "\n", encoding="utf-8")
    return d


def test_fuzz_malformed_scenarios(fuzz_dir, monkeypatch):
    monkeypatch.chdir(fuzz_dir)
    cases = Generator(SEED).cases(N_CASES)
    n_files = sum(bool(c.files) for c in cases)  # the rest are bad flags on bundled examples
    assert n_files >= 1000 or N_CASES < 1150, n_files
    failures: list[str] = []
    by_kind: dict[str, int] = {}
    seconds_by_kind: dict[str, float] = {}
    t0 = time.perf_counter()
    for case in cases:
        by_kind[case.kind] = by_kind.get(case.kind, 0) + 1
        t1 = time.perf_counter()
        problems = run_case(case, fuzz_dir)
        seconds_by_kind[case.kind] = seconds_by_kind.get(case.kind, 0.0) + \
            time.perf_counter() - t1
        if problems:
            failures.append(f"[{case.kind}] planner {' '.join(a[:60] for a in case.argv)}: "
                            + "; ".join(problems))
    seconds = time.perf_counter() - t0
    print(f"fuzz: {len(cases)} cases, {n_files} of them scenario files (seed {SEED}) in "
          f"{seconds:.1f} s, {len(failures)} failed; by class: "
          + ", ".join(f"{k} {v} ({seconds_by_kind[k]:.1f} s)" for k, v in sorted(by_kind.items())))
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(
        failures[:25])
