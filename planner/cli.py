"""Command-line interface (thin: parse arguments, call the engines, print or write tables).

Exit status (:data:`EXIT_STATUS`): 0 success, 2 user error (bad scenario, unknown id, bad flag,
an output path that cannot be written, a run too large to start), 1 internal error (a bug:
one line asking for a report; the traceback with ``--debug``); ``planner optimize`` also 3
(infeasible: the explanation is printed) and 4 (no trusted plan: time limit without a plan,
solver error, or a plan that failed the re-check).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from planner import __version__, _runtime, api
from planner.api import EXAMPLE_PREFIX, scenario_path, templates  # noqa: F401 (re-exported)
from planner.api import parse_overrides as _parse_set
from planner.errors import (
    EXIT_INFEASIBLE,
    EXIT_INTERNAL,
    EXIT_NO_PLAN,
    EXIT_USER,
    MAX_MESSAGE_CHARS,
    PlannerError,
    ScenarioError,
    clean_text,
    shorten,
)
from planner.output import (
    FORMATS,
    check_output_dir,
    check_output_file,
    render,
    render_tables,
    write_csv_file,
    write_tables,
)

if TYPE_CHECKING:
    import pandas as pd

EPILOG = """examples:
  planner report example:quickstart -o report/
  planner cost example:quickstart
  planner cost studies/gpt4-turbo-summary/scenario.toml --format json
  planner cost my.toml --variant high-volume --set workload.chat.requests_per_day=5e5
  planner breakeven example:quickstart
  planner optimize studies/hybrid-support-bot/scenario.toml --stochastic -n 200 --verify
  planner risk example:risk-example -n 100000 --seed 1
  planner risk example:risk-example --simulate 5 --deployment llama-70b-h100
  planner simulate example:quickstart --hours 24 --out sim/
  planner train --model gpt-3-175b --tokens 300e9 --accelerator tpu-v4 --mfu 0.462 --price 2.03
  planner perf --model llama-3.1-70b --accelerator h100-sxm --tp 2 --precision fp8
  planner perf --search --model llama-3.1-8b --isl 2000 --osl 200 --ttft-slo 1
  planner tokens article.txt --lang zh
  planner validate my.toml
  planner new --template quickstart -o my.toml
  planner catalog list accelerators
  planner catalog import-litellm prices.json --provider openai --out my_prices.csv
  planner catalog import-skypilot skypilot-catalog/catalogs/v7 --clouds aws,lambda --out clouds.csv

exit status:
  0  success
  1  internal error (a bug: please report it; rerun with --debug for the traceback)
  2  user error: a bad scenario file or flag (the message names the file and key), an
     output path that cannot be written, or a run too large to start
  3  planner optimize: infeasible (the constraint to blame is printed)
  4  planner optimize: no trusted plan (time limit without a plan, solver error, or the plan
     failed the re-check)
"""

#: Exit status -> meaning (the epilog above and the README's table say the same).
EXIT_STATUS = {
    0: "success",
    EXIT_INTERNAL: "internal error",
    EXIT_USER: "user error",
    EXIT_INFEASIBLE: "infeasible",
    EXIT_NO_PLAN: "no trusted plan",
}


def load(args):
    """The scenario of a command's arguments (``--variant``, ``--set``) via :func:`api.load`."""
    sc = api.load(args.scenario, variants=args.variant or [], overrides=_parse_set(args.set))
    args.loaded_scenario = scenario_path(args.scenario)  # errors from here on name the file
    return sc


def emit(args, tables: dict[str, pd.DataFrame], *, notes: list[str] | None = None) -> None:
    if getattr(args, "out", None):
        written = write_tables(tables, args.out)
        if not args.quiet:
            print(f"wrote {len(written)} tables to {args.out}", file=sys.stderr)
    if args.quiet and args.format == "table":
        return
    print(render_tables(tables, args.format))
    for n in [] if args.quiet else notes or []:
        if args.format == "table":
            print(clean_text(f"note: {n}"))
        else:
            print(clean_text(f"note: {n}"), file=sys.stderr)


# ---------------------------------------------------------------------------- limits

#: Most Monte Carlo samples (``risk -n``, ``sweep -n``) and optimisation scenarios.
MAX_SAMPLES = 50_000_000
#: Most memory a run may plan to hold (the estimate is checked before allocating), bytes;
#: ``PLANNER_MAX_MEMORY_GB`` raises it.
MAX_MEMORY_BYTES = 4 * 2**30
#: Most requests ``planner simulate`` generates in one run (all simulated deployments): a
#: simulated request peaks at about :data:`SIM_PEAK_BYTES_PER_REQUEST` (a 10M-request day
#: peaked at 1.78 GB, ``tests/benchmarks/bench_memory.py``), so 20M stay within the 4 GiB
#: memory limit; the simulator handles ~250,000 requests a second on one core
#: (``bench_sim.py``), the whole command (requests, simulation, tables) about half that.
MAX_SIMULATED_REQUESTS = 20_000_000
SIM_PEAK_BYTES_PER_REQUEST = 180
SIM_REQUESTS_PER_S = 120_000
#: Most replicas of one simulated pool.
MAX_SIMULATED_REPLICAS = 10_000
#: ``simulate`` / ``risk --simulate`` run on worker processes by default (``--workers``: one
#: per core, at most one per plan or replication) from this many simulated requests in all;
#: below it starting the processes (~3 s) costs more than it saves.
PARALLEL_MIN_REQUESTS = 1_000_000

# command -> flag attribute -> (lowest, highest, lowest excluded, integer); checked before
# any work by :func:`check_flags`
_FLAG_RANGES: dict[str, dict[str, tuple[float | None, float | None, bool, bool]]] = {
    "cost": {"check_max_requests": (100, MAX_SIMULATED_REQUESTS, False, True),
             "check_draws": (1, 100, False, True)},
    "risk": {"n": (1, MAX_SAMPLES, False, True), "seed": (0, 2**63 - 1, False, True),
             "tol": (0, 1, True, False), "simulate": (0, 1000, False, True),
             "workers": (1, 256, False, True)},
    "sweep": {"n": (1, MAX_SAMPLES, False, True), "seed": (0, 2**63 - 1, False, True),
              "workers": (1, 256, False, True)},
    "optimize": {"n": (1, 100_000, False, True), "seed": (0, 2**63 - 1, False, True),
                 "gap": (0, 1, False, False), "time_limit": (0, 7 * 86400, True, False),
                 "verify_window": (0, 86400, True, False)},
    "simulate": {"hours": (1, 8784, False, True), "start_hour": (0, 167, False, True),
                 "seed": (0, 2**63 - 1, False, True), "rate_scale": (0, 1e6, True, False),
                 "workers": (1, 256, False, True)},
    "train": {"params_b": (0, 1e9, True, False), "tokens": (0, 1e18, True, False),
              "peak_tflops": (0, 1e9, True, False), "mfu": (0, 1, True, False),
              "price": (0, 1e9, False, False), "gpus": (1, 1e9, False, True),
              "discount": (0, 1, False, False)},
    "perf": {"tp": (1, 1024, False, True), "isl": (1, 1e7, False, False),
             "osl": (1, 1e7, False, False), "ttft_slo": (0, 86400, True, False),
             "tpot_slo": (0, 3600, True, False), "price": (0, 1e6, False, False),
             "target_tps": (0, 1e12, True, False)},
}


def check_flags(args) -> None:
    """Numeric flags in range and finite (exit 2 naming the flag), before any work."""
    import math

    for attr, (lo, hi, open_lo, integer) in _FLAG_RANGES.get(args.command, {}).items():
        v = getattr(args, attr, None)
        if v is None:
            continue
        flag = "-n" if attr == "n" else "--" + attr.replace("_", "-")
        lo_text = f"> {lo:g}" if open_lo else f">= {lo:g}"
        ok = math.isfinite(v) and (v > lo if open_lo else v >= lo) and v <= hi
        if not ok:
            kind = "an integer" if integer else "a number"
            raise PlannerError(f"{flag}: expected {kind} {lo_text} and <= {hi:g}, got "
                               f"{shorten(v)}")


def _memory_text(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:,.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:,.0f} MiB"


def _max_memory_bytes() -> float:
    import os

    try:
        return float(os.environ.get("PLANNER_MAX_MEMORY_GB", "")) * 2**30
    except ValueError:
        return MAX_MEMORY_BYTES


def check_risk_size(sc, n: int) -> None:
    """Refuse a Monte Carlo run whose samples would not fit in memory (before allocating).

    The engine keeps every sample of every uncertain input and the cost of every option per
    sample, plus working arrays of about as many again: ~16 bytes x n x (inputs + options).
    """
    from planner.uncertain import uncertain_inputs

    width = len(uncertain_inputs(sc)) + len(sc.deployments()) + 4
    need = 16.0 * n * width
    if need > _max_memory_bytes():
        raise PlannerError(
            f"-n {n:,}: {n:,} samples x {width} columns need about {_memory_text(need)} of "
            f"memory, over the {_memory_text(_max_memory_bytes())} limit; use fewer samples "
            "(--tol stops early when the P95 is stable) or set PLANNER_MAX_MEMORY_GB")


def check_simulation_size(sc, *, hours: int, deployments: list[str] | None,
                          replicas) -> float:
    """Refuse a simulation with more requests or replicas than it can handle in a
    reasonable time and memory (estimated from the scenario before generating anything).
    Returns the estimated number of requests in all."""
    from planner.config import med

    per_day = sum(float(med(wc.requests_per_day)) * float(med(wc.calls_per_request))
                  for wc in sc.workload.values())
    runs = len(deployments) if deployments else max(len(sc.cloud) + len(sc.onprem), 1)
    if sc.simulation.deployments and not deployments:
        runs = 1
    total = per_day * hours / 24.0 * (1 if deployments else runs)
    if total > MAX_SIMULATED_REQUESTS:
        raise PlannerError(
            f"simulate: about {total:,.0f} requests ({per_day:,.0f} a day x {hours} h"
            + (f" x {runs} deployments, each simulated on its own" if runs > 1 and not deployments
               else "")
            + f"), over the limit of {MAX_SIMULATED_REQUESTS:,} (~"
            f"{_memory_text(total * SIM_PEAK_BYTES_PER_REQUEST)} and "
            f"{total / SIM_REQUESTS_PER_S / 60:,.0f} minutes); simulate fewer hours (--hours), one "
            "deployment (--deployment), or a smaller requests_per_day")
    stated = [("--replicas", replicas if isinstance(replicas, int) else None)]
    if isinstance(replicas, dict):
        stated += [(f"--replicas {k}", v) for k, v in replicas.items()]
    stated += [(f"simulation.replicas.{k}", v) for k, v in sc.simulation.replicas.items()]
    for kind in ("cloud", "onprem"):
        stated += [(f"{kind}.{k}.replicas", d.replicas) for k, d in getattr(sc, kind).items()]
    for where, v in stated:
        if v is not None and v > MAX_SIMULATED_REPLICAS:
            raise PlannerError(f"simulate: {where} = {v:,} replicas; the simulator handles at "
                               f"most {MAX_SIMULATED_REPLICAS:,} per pool")
    # pools sized by the cost engine: its sizing, before the simulator builds the replicas
    hosted = {**sc.cloud, **sc.onprem}
    sized = [d for d in (deployments or hosted) if d in hosted
             and not isinstance(replicas, int)
             and (replicas or {}).get(d) is None and d not in sc.simulation.replicas
             and hosted[d].replicas is None]
    if sized:  # the model's sizing, the one the simulator's plans use (computed once)
        from planner.model.sizing import size_options

        sizing = size_options(sc)
        for d in sized:
            n = float(sizing[d].replicas) if d in sizing else None
            if n is not None and n == n and n > MAX_SIMULATED_REPLICAS:
                raise PlannerError(
                    f"simulate: the cost engine sizes {shorten(d)} at {n:,.0f} replicas; the "
                    f"simulator handles at most {MAX_SIMULATED_REPLICAS:,} per pool (give "
                    f"--replicas {shorten(d)[1:-1]}=N, or simulate a smaller volume)")
    return total


def _workers(args, n_tasks: int, requests: float) -> int | None:
    """Local worker processes for ``--workers`` (None with ``--scheduler``): the flag, else
    one per core (at most one per task) from :data:`PARALLEL_MIN_REQUESTS` requests, else 1."""
    from planner.parallel import default_workers

    if args.scheduler is not None:
        return None
    if args.workers is not None:
        return args.workers
    return default_workers(n_tasks) if requests >= PARALLEL_MIN_REQUESTS else 1


class _SchedulerFlag:
    """``--scheduler`` checked before any work; the runner's errors (a bad or unreachable
    address, worker processes that do not start) name their flag (exit 2)."""

    def __init__(self, args):
        from planner.parallel import SchedulerError, check_scheduler

        self.args = args
        try:
            check_scheduler(args.scheduler)
        except SchedulerError as exc:
            raise PlannerError(f"--{exc}") from None

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        from planner.parallel import SchedulerError

        if isinstance(exc, SchedulerError):
            raise PlannerError(f"--{exc}") from None
        if isinstance(exc, OSError) and self.args.scheduler:  # lost the scheduler mid-run
            raise PlannerError(f"--scheduler {shorten(self.args.scheduler)}: "
                               f"{_error_text(exc)}") from None
        return False


# ---------------------------------------------------------------------------- commands


def cmd_validate(args) -> int:
    sc = load(args)
    n = {k: len(getattr(sc, k)) for k in ("workload", "api", "cloud", "onprem", "finetune")}
    if not args.quiet:
        print(clean_text(f"{shorten(args.scenario, 300)[1:-1]}: valid scenario "
                         f"{shorten(sc.name)} " + ", ".join(f"{v} {k}" for k, v in n.items())))
    return 0


def cmd_cost(args) -> int:
    check = bool(getattr(args, "check", False))
    if args.check_draws != 1 and not check:
        raise PlannerError("--check-draws needs --check")
    if args.check_needed and not check:
        raise PlannerError("--check-needed needs --check")
    sc = load(args)
    with _Bar("simulating busiest hours", "hour", args.quiet or not check) as bar:
        r = api.cost(sc, check=check, check_max_requests=args.check_max_requests,
                     check_draws=args.check_draws, check_needed=args.check_needed,
                     progress=bar)
    res = r.engine
    if not check and _cost_from_rows(args, sc, r):
        return 0
    summary = r.summary.drop(columns=["lens"])
    check_cols: list[str] = []
    if check:
        check_cols = ["simulated_slo_attainment", "slo_target"]
        chk = r.check.drop(columns=["simulated_requests"])
        if args.check_draws > 1:
            check_cols.append("simulated_draws_meeting")
        else:
            chk = chk.drop(columns=["simulated_draws", "simulated_draws_meeting"])
        if args.check_needed:
            check_cols.append("simulated_replicas_needed")
        else:
            chk = chk.drop(columns=["simulated_replicas_needed"])
        summary = summary.merge(chk, on="deployment", how="left")
        for c in ("simulated_draws", "simulated_draws_meeting", "simulated_replicas_needed"):
            if c in summary:  # counts (the API rows have none)
                summary[c] = summary[c].astype("Int64")
    if sc.scenario.currency.upper() != "USD":
        from planner.config import med

        fx = med(sc.scenario.usd_to_currency)
        cur = sc.scenario.currency.lower()
        summary[f"{cur}_per_month"] = summary["usd_per_month"] * fx
    notes: list[str] = []
    if not summary.empty and args.format == "table" and not args.detail:
        compact = [*_COST_COMPACT, *check_cols]
        if (summary["classes_unserved"] != "").any():
            compact.insert(3, "classes_unserved")
        summary = summary[compact].sort_values("usd_per_month", kind="stable")
    if not res.summary.empty:
        full = res.summary[res.summary["classes_unserved"] == ""]
        if not full.empty:
            best = full.loc[full["usd_per_month"].idxmin()]
            notes.append(_cheapest_note(best["deployment"], best["usd_per_month"]))
    tables = {"summary": summary} if not summary.empty else {}
    if args.detail:
        tables.update({"costs": res.costs, "capacity": res.capacity, "classes": res.classes})
    for name in _COST_EXTRA_TABLES:
        df = getattr(res, name)
        if not df.empty:
            tables[name] = df
    if sc.payback:
        tables["payback"] = r.payback
    if args.detail:
        tables["assumptions"] = res.assumptions
    if check_cols:
        notes.append("simulated_slo_attainment: each self-hosted option simulated alone at "
                     "these replicas in the busiest hour of its classes (worst class; share "
                     "of requests meeting TTFT and TPOT) against slo_target"
                     + (f"; the worst of {args.check_draws} independent arrival draws, "
                        f"simulated_draws_meeting of which meet it" if args.check_draws > 1
                        else "")
                     + ("; simulated_replicas_needed: the fewest replicas whose simulated "
                        "busiest hour meets it (in every draw), one replica at a time from "
                        "these" if args.check_needed else ""))
    notes += [_lens_note(res), *res.warnings]
    if args.out:
        write_tables({**res.tables(), **{k: v for k, v in tables.items() if k == "payback"}},
                     args.out)
        if not args.quiet:
            print(f"wrote result tables to {args.out}", file=sys.stderr)
        args.out = None
    emit(args, tables, notes=notes)
    return 0


_COST_COMPACT = ["deployment", "kind", "offering", "usd_per_month", "usd_horizon",
                 "usd_per_request", "usd_per_mtok", "replicas", "gpus", "utilisation",
                 "requests_per_s_per_replica", "limited_by"]
#: the engine's tables ``planner cost`` prints when they are not empty
_COST_EXTRA_TABLES = ("finetune", "pretraining", "inference_flops", "unit_economics",
                      "token_economics")


def _cheapest_note(deployment: str, usd_per_month: float) -> str:
    return f"cheapest option serving every class: {deployment} ({usd_per_month:,.0f} USD/month)"


def _lens_note(res) -> str:
    return (f"cost lens: {res.lens} ({'full TCO' if res.lens == 'tco' else 'marginal'}); "
            f"horizon {res.horizon_months} months; USD")


def _cost_from_rows(args, sc, r) -> bool:
    """Print ``planner cost``'s tables from the engine's rows, without building DataFrames
    (importing pandas costs more than the computation): the same bytes as the DataFrame
    path below it in :func:`cmd_cost`, for the table and JSON formats of a USD scenario
    without payback, written nowhere. False (nothing printed) when that does not apply or
    a table holds a column type :func:`planner.results.render_tables` leaves to pandas."""
    import math

    from planner.results import Records, render_tables

    if (args.format not in ("table", "json") or args.out or sc.payback
            or sc.scenario.currency.upper() != "USD"):
        return False
    res = r.engine
    raw = {name: res.raw(name) for name in ("summary", "costs", "capacity", "classes",
                                            "finetune", "pretraining", "inference_flops",
                                            "unit_economics", "token_economics",
                                            "assumptions")}
    if any(type(v) is not Records for v in raw.values()):
        return False

    def isnan(v) -> bool:
        return v is None or (isinstance(v, float) and math.isnan(v))

    rows = list(raw["summary"].rows)
    cols = [c for c in raw["summary"].columns if c != "lens"]
    notes: list[str] = []
    if rows and cols and args.format == "table" and not args.detail:
        cols = list(_COST_COMPACT)
        if any(row["classes_unserved"] != "" for row in rows):
            cols.insert(3, "classes_unserved")
        # DataFrame.sort_values(kind="stable"): NaN last
        rows.sort(key=lambda row: (isnan(row["usd_per_month"]),
                                   0.0 if isnan(row["usd_per_month"]) else row["usd_per_month"]))
    if raw["summary"].rows and raw["summary"].columns:
        full = [row for row in raw["summary"].rows if row["classes_unserved"] == ""]
        if any(isnan(row["usd_per_month"]) for row in full):
            return False  # idxmin's NaN rules: left to pandas
        if full:
            best = min(full, key=lambda row: row["usd_per_month"])  # the first of equals
            notes.append(_cheapest_note(best["deployment"], best["usd_per_month"]))
    tables = {"summary": Records.of(rows, cols)} if rows and cols else {}
    if args.detail:
        tables.update({k: raw[k] for k in ("costs", "capacity", "classes")})
    for name in _COST_EXTRA_TABLES:
        if not raw[name].empty:
            tables[name] = raw[name]
    if args.detail:
        tables["assumptions"] = raw["assumptions"]
    text = render_tables(tables, args.format)
    if text is None:
        return False
    notes += [_lens_note(res), *res.warnings]
    if args.quiet and args.format == "table":
        return True
    print(text)  # as emit()
    for n in [] if args.quiet else notes:
        if args.format == "table":
            print(clean_text(f"note: {n}"))
        else:
            print(clean_text(f"note: {n}"), file=sys.stderr)
    return True


class _Bar:
    """A tqdm bar on stderr fed by an engine's ``progress(done, total)`` callback (engines
    print nothing themselves). A new bar starts when the count restarts (one per simulated
    deployment) or the total changes without progress; a total that grows as the count
    advances grows the bar. Used as ``with _Bar(...) as bar: engine(progress=bar)``;
    ``bar`` is None when ``quiet``."""

    def __init__(self, desc: str, unit: str, quiet: bool = False):
        self.desc, self.unit, self.quiet, self.bar = desc, unit, quiet, None

    def __enter__(self):
        return None if self.quiet else self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, done: int, total: int) -> None:
        from tqdm.auto import tqdm

        if self.bar is not None and done > self.bar.n and total > self.bar.total:
            self.bar.total = total  # the same run found more work (grown in place)
        elif self.bar is None or done < self.bar.n or total != self.bar.total:
            self.close()
            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, mininterval=0.5)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_risk(args) -> int:
    if args.deployment and not args.simulate:
        raise PlannerError("--deployment chooses what --simulate K runs; give --simulate too")
    for flag in ("workers", "scheduler"):
        if getattr(args, flag) is not None and not args.simulate:
            raise PlannerError(f"--{flag} chooses where --simulate K runs; give --simulate too")
    sched = _SchedulerFlag(args)
    if args.simulate < 0:
        raise PlannerError(f"--simulate: expected a number of replications >= 1, got "
                           f"{args.simulate}")
    sc = load(args)
    check_risk_size(sc, args.n)
    from planner.engines.risk.replications import MAX_REQUESTS

    workers = _workers(args, args.simulate, args.simulate * MAX_REQUESTS) if args.simulate \
        else 1
    with sched, _Bar(f"risk {sc.name}", "samples", args.quiet) as bar:
        # one bar: a new one starts when the replications' total takes over from the samples'
        r = api.risk(sc, n=args.n, seed=args.seed, tol=args.tol, years=bool(args.years),
                     simulate=args.simulate, deployment=args.deployment, progress=bar,
                     scheduler=args.scheduler, n_workers=workers, simulate_progress=bar)
    res = r.engine
    tables = res.tables()
    shown = {"risk (USD per month unless named)": r.headline}
    moving = res.tornado[res.tornado["swing"] > 0] if not res.tornado.empty else res.tornado
    if not moving.empty:  # inputs an option does not depend on (zero swing) are not drivers
        shown["tornado (top 5 drivers per option)"] = moving.groupby(
            "deployment", sort=False).head(5)
    if not res.breakeven.empty:
        shown["break-even volume"] = res.breakeven
    if args.years:
        shown["net present cost"] = r.npc
        shown["yearly cost"] = r.yearly
        tables.update({"npc": r.npc, "yearly": r.yearly})
    if args.simulate:
        shown["simulated busiest hour at sampled scenarios (spread over the cost range)"] = \
            r.simulation
        tables["simulation"] = r.simulation
    if args.out:
        write_tables(tables, args.out)
        args.out = None
    notes = [f"{args.n:,} samples, seed {args.seed}"] + list(res.warnings)
    emit(args, shown, notes=notes)
    return 0


def cmd_sweep(args) -> int:
    from planner.sweep import parse_grid, sweep

    sched = _SchedulerFlag(args)
    sc = load(args)
    check_risk_size(sc, args.n)
    try:
        with sched:
            df = sweep(sc, parse_grid(args.grid), n=args.n, seed=args.seed,
                       scheduler=args.scheduler, n_workers=args.workers,
                       progress=not args.quiet)
    except OSError as exc:  # a local cluster that failed to start
        raise PlannerError(_error_text(exc)) from None
    emit(args, {"sweep": df})
    return 0


def cmd_report(args) -> int:
    sc = load(args)
    res = api.report(sc, args.out, progress=not args.quiet,
                     sections=[x for x in args.sections.split(",") if x]
                     if args.sections else None).engine
    if not args.quiet:
        print(f"wrote {res.html} ({len(res.charts)} charts, {len(res.tables)} tables, "
              f"{res.seconds:.1f} s)")
        for k, why in res.omitted.items():
            print(clean_text(f"note: section {k} omitted: {why}"))
    return 0


def cmd_breakeven(args) -> int:
    b = api.breakeven(load(args))
    tables = {"volume": b.volume, "finetune": b.finetune, "payback": b.payback}
    if args.curve:
        tables["curve"] = b.curve
    notes: list[str] = []
    if args.format == "table":  # long notes printed whole below the table, not cut
        tables["volume"], notes = _notes_below(b.volume)
    emit(args, {k: v for k, v in tables.items() if not v.empty or k == "volume"},
         notes=notes)
    return 0


def _notes_below(df: pd.DataFrame, column: str = "note", width: int = 96
                 ) -> tuple[pd.DataFrame, list[str]]:
    """A table whose ``column`` holds note numbers ``[1]``, ``[2]`` ... (equal notes share
    one), and the notes themselves, whole and wrapped to ``width`` characters."""
    import textwrap

    if df.empty or column not in df:
        return df, []
    texts: dict[str, int] = {}
    for t in df[column]:
        if isinstance(t, str) and t:
            texts.setdefault(t, len(texts) + 1)
    shown = df.assign(**{column: [f"[{texts[t]}]" if t in texts else t for t in df[column]]})
    lead = "note: "  # :func:`emit` prints each note after it; continuation lines align
    notes = [textwrap.fill(f"[{i}] {t}", width=width, initial_indent=lead,
                           subsequent_indent=" " * len(f"{lead}[{i}] "),
                           break_on_hyphens=False)[len(lead):] for t, i in texts.items()]
    return shown, notes


def cmd_optimize(args) -> int:
    """Exit status 0 with a trusted plan, 3 when infeasible, 4 without a trusted plan."""
    import time

    import pandas as pd

    from planner.engines.optimize import hourly_view, plan_view, status_line

    sc = load(args)
    from planner.config import med

    if not any(float(med(wc.requests_per_day)) > 0 for wc in sc.workload.values()):
        raise PlannerError(f"{shorten(args.scenario, 300)[1:-1]}: nothing to optimise: " + (
            "every workload class has requests_per_day = 0 (at its median)" if sc.workload
            else "the scenario has no workload classes ([workload.NAME])"))
    t0 = time.perf_counter()

    def progress(text: str) -> None:
        print(f"optimize [{time.perf_counter() - t0:6.1f} s] {text}", file=sys.stderr,
              flush=True)

    o = api.optimize(sc, gap=args.gap, time_limit_s=args.time_limit, objective=args.objective,
                     stochastic=args.stochastic, n=args.n, seed=args.seed, verify=args.verify,
                     verify_window_s=args.verify_window, sensitivity=args.sensitivity,
                     progress=None if args.quiet else progress,
                     engine_progress=bool(args.stochastic or args.verify
                                          or sc.optimize.horizon_hours))
    res = o.engine
    shown: dict[str, pd.DataFrame] = {}
    if res.solution is not None:
        shown["plan: what to buy, reserve, rent and call (USD per month)"] = plan_view(res)
        shown["routing: share of each class's requests per route"] = res.routing.drop(
            columns=["kind"])
        if not res.finetune.empty:
            shown["fine-tune decisions"] = res.finetune
        shown["hourly mix (requests/s, replicas" + (
            ": whole replicas of the median scenario, expected = mean over scenarios)"
            if res.n_scenarios > 1 else ")")] = \
            hourly_view(res)
    if not res.year.empty:
        shown["long horizon: typical-day rounds (plan re-priced on every hour, proven lower "
              "bound)"] = res.year
    if not res.years.empty:
        shown["multi-year: reserved blocks bought (paid to the end of their term)"] = \
            res.purchases if not res.purchases.empty else pd.DataFrame(
                {"note": ["no reserved blocks bought"]})
        shown["multi-year: each year's traffic, cost (USD) and blocks held"] = res.years
    if not res.stochastic.empty:
        shown[f"stochastic: {res.n_scenarios} scenarios (P5/P50/P95, CVaR, VSS)"] = \
            res.stochastic
    if not res.verification.empty:
        v = res.verification
        nh = int(v["hours"].max()) if "hours" in v else 1
        shown[f"verification: {nh} simulated hour(s) of the plan, SLO attainment over the "
              "day and in the worst hour"] = v.drop(
            columns=["scenario", "hour", "utilisation_target"], errors="ignore")
    if not res.headroom.empty:
        shown["headroom: utilisation targets tried"] = res.headroom
    if not res.infeasibility.empty:
        shown["infeasibility: re-solved without each group of limits"] = res.infeasibility
    if not res.check.violations.empty:
        shown["violations found by the re-check"] = res.check.violations
    extra: dict[str, pd.DataFrame] = {}
    if args.sensitivity and res.trusted:
        shown["sensitivity: where the optimal mix changes (each axis alone, the others at x1)"] \
            = o.sensitivity_breakpoints if not o.sensitivity_breakpoints.empty else pd.DataFrame(
                {"note": ["the set of deployments used does not change over the scanned "
                          "multipliers"]})
        extra = {"sensitivity_grid": o.sensitivity_grid,
                 "sensitivity_breakpoints": o.sensitivity_breakpoints}
    code = 0 if res.trusted else EXIT_INFEASIBLE if res.status == "infeasible" \
        else EXIT_NO_PLAN
    if args.out:
        tables = {k: v for k, v in {**res.tables(), **extra}.items()
                  if not v.empty or k in ("summary", "messages")}
        written = write_tables(tables, args.out)
        if not args.quiet:
            print(f"wrote {len(written)} tables to {args.out}", file=sys.stderr)
    notes = [f"note: {m}" for m in res.messages]
    if args.quiet and args.format == "table":
        if code:
            print(clean_text("\n".join([status_line(res), *notes])), file=sys.stderr)
        return code
    if args.format == "table":
        print(clean_text(status_line(res)))
        if shown:
            print()
            print(render_tables(shown, "table"))
        if notes:
            print()
            print(clean_text("\n".join(notes)))
    else:
        print(render_tables({"summary": res.summary(), **shown}, args.format))
        print(clean_text("\n".join([status_line(res), *notes])), file=sys.stderr)
    return code


def _simulate_traces(args, sc):
    """--trace [CLASS=]FILE items -> [[simulation.trace]] entries (paths from the CWD; the
    column mapping of a scenario entry with the same file, compared after resolving both
    paths, else the Azure trace columns; --trace-format / --columns / --timestamp-unit /
    --timestamp-format override it)."""
    if not (args.trace or args.trace_format or args.columns or args.timestamp_unit
            or args.timestamp_format or args.rate_scale is not None):
        return []  # no trace flag: planner.traces (scipy.stats) stays unimported
    from planner.config import SimTrace
    from planner.traces import CLI_KEYS, parse_columns, trace_columns

    base_dir = Path(sc.source_path).parent if sc.source_path else Path.cwd()
    known = {t.file if t.file.startswith("bundled:") else str((base_dir / t.file).resolve()): t
             for t in sc.simulation.trace}
    flags: dict = {}
    if args.trace_format:
        flags["trace_format"] = args.trace_format
    if args.columns:
        flags.update(parse_columns(args.columns, flag="--columns"))
    if args.timestamp_unit:
        flags["timestamp_unit"] = args.timestamp_unit
    if args.timestamp_format:
        flags["timestamp_format"] = args.timestamp_format
    if flags and not args.trace:
        raise PlannerError("--trace-format, --columns, --timestamp-unit and --timestamp-format "
                           "need --trace FILE")
    if flags:  # checked here so that errors name the flags
        trace_columns(flags.get("trace_format"), timestamp_unit=flags.get("timestamp_unit"),
                      keys=CLI_KEYS)
    out = []
    for item in args.trace or []:
        cname, f = item.split("=", 1) if "=" in item else (None, item)
        if not f:
            raise PlannerError(f"--trace {item!r}: expected FILE or CLASS=FILE")
        path = f if f.startswith("bundled:") else str(Path(f).resolve())
        base = known.get(path)
        data = base.model_dump(by_alias=True, exclude_unset=True) if base else {}
        if "trace_format" in flags:  # a named format replaces the scenario entry's mapping
            data = {k: v for k, v in data.items() if k not in (
                "timestamp", "input_tokens", "output_tokens", "timestamp_unit",
                "timestamp_format", "class_column", "format")}
        data.update(flags, file=path)
        if cname:
            data["class"] = cname
        t = SimTrace.model_validate(data)
        t._from_cli = base is None or bool(flags)
        out.append(t)
    if args.rate_scale is not None:
        if not args.rate_scale > 0:
            raise PlannerError(f"--rate-scale must be > 0, got {args.rate_scale}")
        out = [t.model_copy(update={"rate_scale": args.rate_scale})
               for t in (out or sc.simulation.trace)]
        if not out:
            raise PlannerError("--rate-scale needs --trace (or [simulation] trace)")
    return out


def _simulate_replicas(items):
    if not items:
        return None
    out: dict[str, int] = {}
    for item in items:
        name, _, n = item.rpartition("=")
        try:
            v = int(n)
        except ValueError:
            raise PlannerError(f"--replicas {item!r}: expected N or DEPLOYMENT=N") from None
        if v < 1:
            raise PlannerError(f"--replicas {item!r}: need at least 1 replica")
        if not name:
            if len(items) > 1:
                raise PlannerError("--replicas N applies to every pool; give it once, or "
                                   "DEPLOYMENT=N per deployment")
            return v
        out[name] = v
    return out


def _sizing_ahead(sc):
    """The model's sizing of ``sc`` (:func:`planner.model.sizing.size_options`, the
    performance model's capacity per option: ~0.1 s) started in a forked child
    (:class:`planner.parallel.ForkedCall`), while this process imports the simulator; None
    where a child cannot be forked. :func:`_take_sizing` installs the result."""
    from planner.parallel import ForkedCall

    if not ForkedCall.available():
        return None
    import planner.model.sizing  # noqa: F401 (numpy and the model: imported once, here)

    return ForkedCall(_capacity_of, sc)


def _capacity_of(sc):
    """(In the child.) Size ``sc`` on the catalog; its filled capacity cache."""
    from planner.catalog import load_catalog
    from planner.model.capacity import CapacityCache
    from planner.model.sizing import size_options

    cat = load_catalog()
    size_options(sc, cat)
    return cat.shared("capacity", CapacityCache)


def _take_sizing(ahead) -> None:
    """The child's capacity cache becomes the catalog's (when the catalog has none yet): the
    sizing then only reads it, the same numbers as computing them here. A child that failed
    changes nothing (the sizing here raises the error, if any)."""
    if ahead is None:
        return
    from planner.catalog import load_catalog
    from planner.parallel import ChildFailed

    try:
        cache = ahead.result()
    except ChildFailed:
        return
    load_catalog().shared("capacity", lambda: cache)


def cmd_simulate(args) -> int:
    from planner.parallel import runs_serially

    sched = _SchedulerFlag(args)
    sc = load(args)
    deployments = [d for ds in (args.deployment or []) for d in ds.split(",") if d]
    replicas = _simulate_replicas(args.replicas)
    if isinstance(replicas, dict):
        hosted = [*sc.cloud, *sc.onprem]
        for d in replicas:
            if d not in hosted:
                raise PlannerError(f"--replicas {shorten(d)}=...: not a self-hosted "
                                   f"deployment; self-hosted: {', '.join(hosted) or 'none'}")
    ahead = _sizing_ahead(sc)  # sizing in a child while the simulator is imported here
    try:
        from planner.sim.output import write_frames
        from planner.sim.scenario import plan_groups
    finally:
        _take_sizing(ahead)
    total = check_simulation_size(
        sc, hours=args.hours or sc.simulation.hours,
        deployments=deployments or list(sc.simulation.deployments) or None, replicas=replicas)
    n_plans = len(plan_groups(sc, deployments or None))
    workers = _workers(args, n_plans, total)
    serial = runs_serially(n_plans, scheduler=args.scheduler, n_workers=workers)
    with sched, _Bar("simulate", "req" if serial else "plan", args.quiet) as bar:
        s = api.simulate(
            sc, deployments=deployments or None, hours=args.hours, start_hour=args.start_hour,
            seed=args.seed, replicas=replicas, spillover=args.spillover,
            traces=_simulate_traces(args, sc) or None,
            records="aggregate" if args.aggregate_only else bool(args.out), progress=bar,
            scheduler=args.scheduler, n_workers=workers,
        )
    tables = {k: v for k, v in s.tables().items() if len(v)}
    if args.out:
        written = write_frames(tables, args.out, fmt="parquet" if args.parquet else "csv")
        if not args.quiet:
            print(f"wrote {len(written)} tables to {args.out}", file=sys.stderr)
        args.out = None
    lat = tables["latency"]
    shown = {
        "latency per class (seconds; SLO attainment = share meeting every bound)": lat,
        "deployments (simulated period: GPU-hours, API tokens, cost in USD)":
            tables["deployments"],
        "totals": tables["totals"],
    }
    sim = sc.simulation
    seed = sim.seed if args.seed is None else args.seed
    notes = list(s.notes)
    notes.append(f"seed {seed}; replicas: " + "; ".join(
        f"{r.deployment} {int(r.replicas)} ({r.replicas_basis})"
        for r in tables["pools"].itertuples() if r.kind != "api"))
    emit(args, shown, notes=notes)
    return 0


def cmd_train(args) -> int:
    from planner.config import PreTraining, Scenario
    from planner.engines.deterministic import evaluate

    job = PreTraining(
        model=args.model, params_b=args.params_b, tokens=args.tokens,
        accelerator=args.accelerator, peak_tflops=args.peak_tflops, mfu=args.mfu,
        usd_per_gpu_hour=args.price, cloud_offering=args.cloud_offering, gpus=args.gpus,
        discount=args.discount,
    ) if _valid_train(args) else None
    sc = Scenario.model_validate({"scenario": {"name": "train"}, "pretraining": {"job": job}})
    from planner.config import check_references

    check_references(sc)
    emit(args, {"pretraining": evaluate(sc).pretraining})
    return 0


def _valid_train(args) -> bool:
    from pydantic import ValidationError

    from planner.config import PreTraining

    try:
        PreTraining(model=args.model, params_b=args.params_b, tokens=args.tokens,
                    accelerator=args.accelerator, peak_tflops=args.peak_tflops, mfu=args.mfu,
                    usd_per_gpu_hour=args.price, cloud_offering=args.cloud_offering,
                    gpus=args.gpus, discount=args.discount)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise PlannerError(f"planner train: {where + ': ' if where else ''}{msg}") from None
    return True


def cmd_tokens(args) -> int:
    from planner.catalog import load_catalog
    from planner.textstats import count_text

    p = Path(args.file)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlannerError(f"{p}: file not found") from None
    except UnicodeDecodeError:
        raise PlannerError(f"{p}: not UTF-8 text") from None
    counts = count_text(text)
    cat = load_catalog()
    unit = args.unit or ("char" if args.lang in ("zh", "ja", "ko") else "word")
    n = counts["cjk_chars"] if unit == "char" else counts["words"]
    df = cat.tokenizers
    rows = df[(df["lang"] == args.lang) & (df["unit"] == unit)]
    if args.tokenizer:
        rows = rows[rows["tokenizer"] == args.tokenizer]
    if rows.empty:
        raise PlannerError(
            f"no tokens-per-{unit} ratio for lang {args.lang!r}"
            + (f" and tokenizer {args.tokenizer!r}" if args.tokenizer else "")
            + " in tokenizers.csv (see `planner catalog list tokenizers`)"
        )
    out = rows.assign(units=n, unit_counted=unit,
                      tokens=lambda d: d["tokens_per_unit"] * n)[
        ["tokenizer", "lang", "unit_counted", "units", "tokens_per_unit", "tokens", "source",
         "as_of"]]
    emit(args, {"tokens": out})
    return 0


def _csv_list(v: str | None, cast=str):
    return [cast(x) for x in v.split(",") if x] if v else None


def _tp_list(text: str | None) -> list[int] | None:
    """``--tps 1,2,4``: tensor-parallel degrees, each an integer in [1, 1024]."""
    if not text:
        return None
    out = []
    for part in text.split(","):
        try:
            v = int(part)
        except ValueError:
            v = 0
        if not 1 <= v <= 1024:
            raise PlannerError(f"--tps {shorten(text)}: expected comma-separated integers in "
                               f"[1, 1024] (e.g. 1,2,4,8), got {shorten(part)}")
        out.append(v)
    return out


def cmd_perf(args) -> int:
    from planner import api
    from planner.perf.closedloop import parse_concurrency

    conc = parse_concurrency(args.concurrency) if args.concurrency is not None else None
    if args.search and conc:
        raise PlannerError("--concurrency applies to one configuration; drop --search")
    if not args.search and not args.accelerator:
        raise PlannerError("planner perf: --accelerator is required (or use --search)")
    res = api.perf(
        args.model, args.accelerator, tp=args.tp, precision=args.precision, isl=args.isl,
        osl=args.osl, ttft_slo_s=args.ttft_slo, tpot_slo_s=args.tpot_slo, plan=args.plan,
        usd_per_gpu_hour=args.price, search=args.search,
        accelerators=_csv_list(args.accelerators),
        precisions=_csv_list(args.precisions) or ("bf16", "fp8"),
        tps=_tp_list(args.tps) or (1, 2, 4, 8), target_output_tokens_per_s=args.target_tps,
        concurrency=conc)
    if args.search:
        emit(args, {"configurations": res.configurations})
        return 0
    cost = res.cost.copy()
    if args.price is not None:
        cost["price_basis"] = "--price"
    emit(args, {"memory": res.memory, "capacity": res.capacity,
                "latency vs concurrency": res.curve, "cost": cost})
    return 0


def cmd_new(args) -> int:
    t = templates()
    if args.template not in t:
        raise PlannerError(f"unknown template {args.template!r}; available: {', '.join(t)}")
    text = t[args.template].read_text(encoding="utf-8")
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    if out.exists() and not args.force:
        raise PlannerError(f"{out} exists; use --force to overwrite")
    out.write_text(text, encoding="utf-8")
    if not args.quiet:
        print(f"wrote {out} (template {args.template}); next: planner cost {out}", file=sys.stderr)
    return 0


def cmd_schema(args) -> int:
    from planner.config import scenario_json_schema

    text = json.dumps(scenario_json_schema(), indent=1)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        print(text)
    return 0


def cmd_catalog_list(args) -> int:
    import pandas as pd

    from planner.catalog import load_catalog

    cat = load_catalog()
    table = args.table or "all"
    aliases = {"apis": "apis", "api": "apis", "clouds": "clouds", "cloud": "clouds",
               "llms": "llms", "llm": "llms", "accelerators": "accelerators",
               "gpus": "accelerators", "servers": "servers", "tokenizers": "tokenizers"}
    if table == "all":
        tabs = {k: cat.table(k) for k in ("llms", "accelerators", "apis", "clouds", "servers",
                                          "tokenizers")}
        counts = pd.DataFrame({"table": list(tabs), "rows": [len(v) for v in tabs.values()]})
        emit(args, {f"catalog ({cat.directory})": counts})
        return 0
    if table not in aliases:
        raise PlannerError(f"unknown catalog table {table!r}; expected one of "
                           "llms, accelerators, apis, clouds, servers, tokenizers")
    df = cat.table(aliases[table])
    cols = {
        "llms": ["id", "params_b", "active_params_b", "layers", "kv_heads", "attention",
                 "quality_score", "quality_tier", "as_of"],
        "accelerators": ["id", "bf16_tflops", "fp8_tflops", "mem_gb", "mem_bw_tbps", "tdp_w",
                         "as_of"],
        "apis": ["id", "input_usd_per_mtok", "output_usd_per_mtok", "cached_input_usd_per_mtok",
                 "batch_input_usd_per_mtok", "ft_train_usd_per_mtok", "as_of"],
        "clouds": ["id", "accelerator", "gpus_per_instance", "plan", "usd_per_gpu_hour",
                   "usd_per_instance_hour", "as_of"],
        "servers": ["id", "accelerator", "gpus_per_server", "server_price_usd", "as_of"],
        "tokenizers": ["tokenizer", "lang", "unit", "tokens_per_unit", "as_of"],
    }[aliases[table]]
    if args.all_columns or args.format != "table":
        cols = list(df.columns)
    emit(args, {aliases[table]: df[[c for c in cols if c in df.columns]]})
    return 0


def cmd_catalog_import(args) -> int:
    from planner.catalog_import import import_litellm

    providers = [p for ps in (args.provider or []) for p in ps.split(",") if p]
    try:
        df = import_litellm(args.file, providers=providers or None, as_of=args.as_of or "")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise PlannerError(f"{shorten(args.file, 300)}: not a LiteLLM price JSON file "
                           f"({_error_text(exc)[:300]})") from None
    if args.out:
        out = write_csv_file(df, args.out)
        if not args.quiet:
            print(f"wrote {len(df)} price rows to {out}", file=sys.stderr)
        return 0
    if args.format == "table":
        print(render(df[["id", "input_usd_per_mtok", "output_usd_per_mtok",
                         "cached_input_usd_per_mtok", "batch_input_usd_per_mtok", "as_of"]]))
    else:
        print(render(df, args.format))
    return 0


def cmd_catalog_import_skypilot(args) -> int:
    from planner.catalog_import import import_skypilot

    res = import_skypilot(args.path, clouds=_csv_list(args.clouds), as_of=args.as_of or "",
                          cheapest=args.cheapest)
    df = res.rows
    if not args.quiet:
        print(res.report(), file=sys.stderr)
    if args.out:
        out = write_csv_file(df, args.out)
        if not args.quiet:
            print(f"wrote {len(df)} cloud price rows to {out}", file=sys.stderr)
        return 0
    if args.format == "table":
        print(render(df[["id", "accelerator", "gpus_per_instance", "plan", "usd_per_gpu_hour",
                         "usd_per_instance_hour", "as_of"]]))
    else:
        print(render(df, args.format))
    return 0


# ---------------------------------------------------------------------------- parser


def _parallel_flags(p: argparse.ArgumentParser, tasks: str) -> None:
    """``--workers`` / ``--scheduler`` of a command whose independent ``tasks`` run in
    parallel (:func:`planner.parallel.map_tasks`; results identical to a serial run)."""
    p.add_argument("--workers", type=int, metavar="N",
                   help=f"local worker processes running the {tasks} (default: one per core, "
                        f"at most one per task, from {PARALLEL_MIN_REQUESTS:,} simulated "
                        "requests in all, else 1; 1 runs them one after another)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT|serial",
                   help=f"run the {tasks} on this Dask scheduler (its workers need planner "
                        "installed), or 'serial' in this process; results are the same")


def _common(p: argparse.ArgumentParser, *, scenario: bool = True, out: bool = True) -> None:
    if scenario:
        p.add_argument("scenario", help="scenario TOML file, or example:NAME for a bundled one")
        p.add_argument("--variant", action="append", metavar="NAME",
                       help="apply [variants.NAME] (repeat or comma-separate)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a value, e.g. --set planning.lens=marginal")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format")
    if out:
        p.add_argument("--out", metavar="DIR", help="also write every table as CSV into DIR")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def _templates_epilog() -> str:
    """The bundled templates, each with the first line of its opening comment."""
    lines = ["templates (also usable as example:NAME wherever a scenario is expected):"]
    for name, path in templates().items():
        first = path.read_text(encoding="utf-8").splitlines()[:1]
        about = first[0].lstrip("#").strip() if first and first[0].startswith("#") else ""
        about = about.split(":", 1)[1].strip() if ":" in about else about
        lines.append(f"  {name:<14} {about}")
    lines.append("\nexample:\n  planner new --template risk-example -o my.toml")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="planner",
        description="Cost, capacity and risk planning for LLM workloads: hosted API, "
                    "cloud GPUs, on-prem GPUs, fine-tuning and training.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="version", version=f"planner {__version__}")
    ap.add_argument("--debug", action="store_true",
                    help="print the traceback of an internal error (for a bug report)")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("cost", help="cost table for every deployment option")
    _common(p)
    p.add_argument("--detail", action="store_true",
                   help="also print cost lines, capacity, class volumes and catalog sources")
    p.add_argument("--check", action="store_true",
                   help="simulate each self-hosted option's busiest hour at its sizing and "
                        "show the SLO attainment beside its cost")
    p.add_argument("--check-max-requests", type=int, default=None, metavar="N",
                   help="cut each simulated hour to N requests (default: [simulation] "
                        "report_max_requests)")
    p.add_argument("--check-draws", type=int, default=1, metavar="N",
                   help="with --check: simulate N independent arrival draws of each busiest "
                        "hour and count those meeting the SLO (default 1)")
    p.add_argument("--check-needed", action="store_true",
                   help="with --check: also simulate one replica fewer or more at a time to "
                        "find the fewest replicas whose busiest hour meets the SLO in every "
                        "draw")
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser(
        "report", help="self-contained HTML report with charts, PNG/SVG and CSV tables",
        epilog="example:\n  planner report example:quickstart -o report/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", help="scenario TOML file, or example:NAME for a bundled one")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--sections", help="comma-separated sections (default: all available)")
    p.add_argument("--variant", action="append", metavar="NAME")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "risk", help="Monte Carlo risk: cost ranges, P(cheapest), tornado, break-even ranges",
        epilog="examples:\n  planner risk example:risk-example -n 100000 --seed 1\n"
               "  planner risk example:risk-example --years --out risk/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p)
    p.add_argument("-n", type=int, default=100_000, help="samples (default 100000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same numbers)")
    p.add_argument("--tol", type=float, help="stop early when the P95 is stable to this "
                   "relative tolerance")
    p.add_argument("--years", action="store_true",
                   help="also multi-year net present cost with [trends]")
    p.add_argument("--simulate", type=int, default=0, metavar="K",
                   help="also simulate the busiest hour (SimPy) at K sampled scenarios spread "
                        "over --deployment's cost range: SLO attainment, spillover, TTFT p99")
    p.add_argument("--deployment", metavar="NAME",
                   help="the cloud or on-prem option --simulate runs")
    _parallel_flags(p, "replications")
    p.set_defaults(func=cmd_risk)

    p = sub.add_parser(
        "sweep", help="grid of scenario overrides x Monte Carlo, on Dask (local or a cluster)",
        epilog="example:\n  planner sweep example:risk-example --grid "
               "planning.utilisation_target=0.6,0.8 --grid planning.lens=tco,marginal\n\n"
               "an input that is a distribution in a [[correlation]] cannot be gridded "
               "(fixing it\nleaves nothing to correlate): grid another key, or drop the "
               "correlation with a variant",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p)
    p.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2",
                   help="values to sweep for one key (repeat for a grid)")
    p.add_argument("-n", type=int, default=10_000, help="samples per grid point")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheduler", help="tcp://host:port of a Dask scheduler, or 'serial' "
                   "(default: a local 2-worker cluster)")
    p.add_argument("--workers", type=int, default=2, help="local worker processes")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("breakeven", help="volume, fine-tune and payback break-even points")
    _common(p)
    p.add_argument("--curve", action="store_true", help="also print cost vs volume")
    p.set_defaults(func=cmd_breakeven)

    p = sub.add_parser(
        "optimize", help="cheapest mix of API, cloud and on-prem capacity, routing and "
                         "fine-tunes (MILP), with uncertainty and simulation",
        epilog="examples:\n  planner optimize example:quickstart\n"
               "  planner optimize studies/hybrid-support-bot/scenario.toml --stochastic "
               "-n 200 --verify --out opt/\n\nexit status: 0 a plan (re-checked against "
               "every constraint), 2 user error,\n  3 infeasible (the constraint to blame is "
               "printed), 4 no trusted plan (time limit\n  without a plan, solver error, or "
               "the plan failed the re-check)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p)
    p.add_argument("--stochastic", action="store_true",
                   help="sample-average plan over Monte Carlo scenarios of the inputs' "
                        "distributions (buy/reserve once, rent/call per scenario)")
    p.add_argument("-n", type=int, default=200, help="scenarios with --stochastic (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same plan)")
    p.add_argument("--gap", type=float,
                   help="relative MIP gap (default: the scenario's [optimize] gap, else 0.01)")
    p.add_argument("--time-limit", type=float, metavar="S",
                   help="solver time limit, seconds (default: [optimize] time_limit_s, else 30)")
    p.add_argument("--verify", action="store_true",
                   help="simulate every hour of the planned day; on an SLO miss, search the "
                        "headroom that fixes it")
    p.add_argument("--verify-window", type=float, default=600.0, metavar="S",
                   help="with --verify: simulated seconds of each hour, busy hours cut to about "
                        "3,000 requests (default 600)")
    p.add_argument("--sensitivity", action="store_true",
                   help="also scan traffic and API/GPU price multipliers (x0.25..x8) and "
                        "bisect where the optimal mix changes")
    p.add_argument("--objective", choices=["expected", "cvar"],
                   help="with --stochastic: expected cost, or expected + lambda x CVaR "
                        "(optimize.cvar_lambda, optimize.cvar_alpha)")
    p.set_defaults(func=cmd_optimize)

    p = sub.add_parser(
        "simulate", help="request-level simulation: latency percentiles, SLOs, utilisation, "
                         "spillover and cost of a day of requests on GPU pools",
        epilog="examples:\n  planner simulate example:quickstart --hours 24\n"
               "  planner simulate example:quickstart --deployment llama-8b-h100 --replicas 1 "
               "--spillover gpt-4o-mini\n"
               "  planner simulate studies/azure-trace/scenario.toml "
               "--trace conv=bundled:azure-conv --out sim/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p)
    p.add_argument("--hours", type=int, help="simulated hours (default [simulation] hours, 24)")
    p.add_argument("--start-hour", type=int, help="hour of the diurnal/weekly profile to start at")
    p.add_argument("--trace", action="append", metavar="[CLASS=]FILE",
                   help="replay a trace (CSV/JSONL/Parquet, or bundled:azure-conv / "
                        "bundled:azure-code) instead of generated arrivals (repeatable)")
    p.add_argument("--trace-format", choices=["azure", "mooncake", "burstgpt", "csv"],
                   help="column names and units of the --trace files: azure (TIMESTAMP, "
                        "ContextTokens, GeneratedTokens), mooncake (JSONL timestamp in ms, "
                        "input_length, output_length), burstgpt (Timestamp s, Request tokens, "
                        "Response tokens), csv (timestamp s, input_tokens, output_tokens)")
    p.add_argument("--columns", metavar="timestamp=COL,input=COL,output=COL[,class=COL]",
                   help="column names of the --trace files (override --trace-format)")
    p.add_argument("--timestamp-unit", metavar="s|ms|us|ns|datetime",
                   help="unit of the --trace timestamp column")
    p.add_argument("--timestamp-format", metavar="STRFTIME",
                   help="strftime format of date-time --trace timestamps")
    p.add_argument("--rate-scale", type=float, help="replay the traces at this multiple of "
                                                    "their rate")
    p.add_argument("--seed", type=int, help="random seed (default [simulation] seed, 0)")
    p.add_argument("--deployment", action="append", metavar="NAME",
                   help="simulate these self-hosted deployments together as pools of one plan "
                        "(repeat or comma-separate; default: each candidate on its own)")
    p.add_argument("--replicas", action="append", metavar="N|NAME=N",
                   help="replicas of every pool, or of one deployment (default: the cost "
                        "engine's sizing)")
    p.add_argument("--spillover", metavar="API",
                   help="an [api.*] deployment taking requests that would miss their SLO")
    p.add_argument("--parquet", action="store_true",
                   help="with --out: write Parquet instead of CSV (needs pyarrow)")
    _parallel_flags(p, "plans")
    p.add_argument("--aggregate-only", action="store_true",
                   help="keep no per-request records, only the summaries (the same figures); "
                        "for very long runs")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("validate", help="check a scenario file")
    _common(p, out=False)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("train", help="pre-training cost at 6 N D FLOPs")
    _common(p, scenario=False)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--model", help="catalog LLM id")
    g.add_argument("--params-b", type=float, help="parameters, billions")
    p.add_argument("--tokens", type=float, required=True, help="training tokens (e.g. 300e9)")
    p.add_argument("--accelerator", help="catalog accelerator id")
    p.add_argument("--peak-tflops", type=float, help="peak TFLOPS instead of --accelerator")
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation (0-1)")
    p.add_argument("--price", type=float, help="USD per accelerator-hour")
    p.add_argument("--cloud-offering", help="catalog cloud price id instead of --price")
    p.add_argument("--gpus", type=int, help="accelerators in the job (for wall-clock days)")
    p.add_argument("--discount", type=float, default=0.0, help="discount share (0-1)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("tokens", help="count a text file's words/characters and convert")
    _common(p, scenario=False)
    p.add_argument("file")
    p.add_argument("--lang", required=True, help="ISO 639-1 language code (en, zh, ...)")
    p.add_argument("--unit", choices=["word", "char"], help="count words or characters")
    p.add_argument("--tokenizer", help="only this tokenizer family")
    p.set_defaults(func=cmd_tokens)

    p = sub.add_parser(
        "perf", help="what one GPU replica delivers: memory fit, throughput, TTFT/TPOT, $/1M",
        epilog="examples:\n  planner perf --model llama-3.1-70b --accelerator h100-sxm --tp 2 "
               "--precision fp8 --isl 1000 --osl 1000\n  planner perf --search --model "
               "llama-3.1-70b --isl 1000 --osl 1000 --tpot-slo 0.05",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p, scenario=False)
    p.add_argument("--model", required=True, help="catalog LLM id")
    p.add_argument("--accelerator", help="catalog accelerator id")
    p.add_argument("--tp", type=int, default=1, help="GPUs per replica (tensor parallel)")
    p.add_argument("--precision", default="bf16", help="bf16 | fp8 | int8 | int4 | fp4")
    p.add_argument("--isl", type=float, default=1000.0, help="input tokens per request")
    p.add_argument("--osl", type=float, default=1000.0, help="output tokens per request")
    p.add_argument("--ttft-slo", type=float, help="time-to-first-token SLO, seconds")
    p.add_argument("--tpot-slo", type=float, help="time-per-output-token SLO, seconds")
    p.add_argument("--plan", default="on-demand", help="catalog price plan for $/GPU-hour")
    p.add_argument("--price", type=float, help="USD per GPU-hour (instead of the catalog)")
    p.add_argument("--search", action="store_true", help="rank configurations by $/1M output")
    p.add_argument("--accelerators", help="with --search: comma-separated accelerator ids")
    p.add_argument("--precisions", help="with --search: e.g. bf16,fp8")
    p.add_argument("--tps", help="with --search: tensor-parallel degrees, e.g. 1,2,4,8")
    p.add_argument("--target-tps", type=float, help="with --search: output tokens/s needed")
    p.add_argument("--concurrency", metavar="C1,C2,...",
                   help="closed-loop latency/throughput at these concurrencies, e.g. "
                        "1,5,25,50,100 (default 1, 8, 32, max batch)")
    p.set_defaults(func=cmd_perf)

    p = sub.add_parser("new", help="write a scenario from a template",
                       epilog=_templates_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--template", default="quickstart",
                   metavar="NAME", help="template name (see below; default quickstart)")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_new)

    p = sub.add_parser("schema", help="JSON Schema of the scenario format (for editors)")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("catalog", help="list or import catalog data")
    csub = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    q = csub.add_parser("list", help="list a catalog table")
    q.add_argument("table", nargs="?",
                   help="llms | accelerators | apis | clouds | servers | tokenizers")
    q.add_argument("--all-columns", action="store_true")
    _common(q, scenario=False, out=False)
    q.set_defaults(func=cmd_catalog_list)
    q = csub.add_parser("import-litellm", help="LiteLLM price JSON -> api_prices.csv rows")
    q.add_argument("file")
    q.add_argument("--provider", action="append", help="only these providers (repeatable)")
    q.add_argument("--as-of", help="as_of date for the rows (default: the file's date)")
    q.add_argument("--out", help="CSV file to write")
    q.add_argument("--format", choices=FORMATS, default="table")
    q.add_argument("-q", "--quiet", action="store_true")
    q.set_defaults(func=cmd_catalog_import)
    q = csub.add_parser("import-skypilot",
                        help="SkyPilot catalog vms.csv -> cloud_prices.csv rows")
    q.add_argument("path", metavar="FILE_OR_DIR",
                   help="a vms.csv / <cloud>_vms*.csv file, or a directory searched for them")
    q.add_argument("--clouds", help="only these clouds, comma-separated (e.g. aws,gcp,lambda)")
    q.add_argument("--cheapest", action="store_true",
                   help="one row per instance type and plan, at its cheapest region")
    q.add_argument("--as-of", help="as_of date for the rows (default: each file's date)")
    q.add_argument("--out", help="CSV file to write (cloud_prices.csv layout)")
    q.add_argument("--format", choices=FORMATS, default="table")
    q.add_argument("-q", "--quiet", action="store_true")
    q.set_defaults(func=cmd_catalog_import_skypilot)
    return ap


def _error_text(exc: BaseException) -> str:
    """An error message fit for a terminal: control characters escaped, length capped."""
    text = clean_text(str(exc))
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS] + f"… ({len(text):,} characters in all)"
    return text


def check_outputs(args) -> None:
    """Every output path a command will write, checked before any work (exit 2 with the
    reason): ``--out``/``-o`` directories, and the files of ``new``/``schema -o`` and
    ``catalog import-litellm --out``."""
    command = getattr(args, "command", None)
    if command in ("new", "schema"):
        if getattr(args, "output", None) not in (None, "-"):
            check_output_file(args.output, flag="-o")
        return
    out = getattr(args, "out", None)
    if out is None:
        return
    if command == "catalog":
        check_output_file(out, flag="--out")
    else:
        check_output_dir(out, flag="-o" if command == "report" else "--out")


def main(argv: list[str] | None = None) -> int:
    """Run the ``planner`` command line; returns the exit status (see :data:`EXIT_STATUS`).

    A user error (:class:`~planner.errors.PlannerError`, a bad flag, an unreadable or
    unwritable path) prints one paragraph and returns 2; any other exception is a bug: one
    line asking for a report (the traceback too with ``--debug``) and status 1.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or a bad flag (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USER
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER
    # process-wide tweaks are the CLI's to make: glibc malloc tuning for the Monte Carlo
    # engine, and fd 1 silenced around HiGHS calls so solver debug lines cannot corrupt output
    _runtime.configure(tune_malloc=True, silence_solver_stdout=True)
    try:
        check_outputs(args)
        check_flags(args)
        return int(args.func(args) or 0)
    except PlannerError as exc:
        text = _error_text(exc)
        loaded = getattr(args, "loaded_scenario", None)
        if loaded and not isinstance(exc, ScenarioError) and loaded not in text:
            text = f"{clean_text(shorten(loaded, 300)[1:-1])}: {text}"  # an engine's error
        print(f"planner: error: {text}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("planner: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a path the user gave that cannot be read or written
        where = f"{shorten(str(exc.filename), 200)}: " if exc.filename else ""
        print(f"planner: error: {where}{_error_text(exc.strerror or exc)}", file=sys.stderr)
        if args.debug:
            import traceback

            traceback.print_exc()
        return EXIT_USER
    except Exception as exc:  # a bug: say so in one line, the traceback only when asked
        print(f"planner: internal error ({type(exc).__name__}: "
              f"{shorten(_error_text(exc), 300)[1:-1]}); this is a bug, please report it "
              "with the command and scenario file"
              + ("" if args.debug else " (rerun with --debug for the traceback)"),
              file=sys.stderr)
        if args.debug:
            import traceback

            traceback.print_exc()
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
