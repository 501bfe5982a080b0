"""``build_report``: scenario -> engines -> sections -> one self-contained HTML page, chart
images and CSV tables, written all-or-nothing."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import importlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from planner._version import __version__
from planner.catalog import load_catalog
from planner.config import Scenario, load_scenario
from planner.errors import PlannerError
from planner.report import export, html, sources, speccache
from planner.report import providers as prov
from planner.report.model import Section, Table
from planner.report.sections import SECTIONS, Context, SectionSpec

#: Engines whose failure fails the report (the others only omit their section).
CORE_ENGINES = ("deterministic", "breakeven")

HTML_NAME = "report.html"


@dataclass(frozen=True)
class ReportResult:
    """What :func:`build_report` wrote.

    Attributes
    ----------
    out_dir : the output directory
    html : ``out_dir/report.html``
    charts : chart name -> (PNG path, SVG path) under ``out_dir/charts``
    tables : table name -> CSV path under ``out_dir/tables``
    sections : keys of the sections in the report, in order
    omitted : section key -> why it is not in the report
    seconds : wall time of the whole build
    """

    out_dir: Path
    html: Path
    charts: Mapping[str, tuple[Path, Path]]
    tables: Mapping[str, Path]
    sections: tuple[str, ...]
    omitted: Mapping[str, str]
    seconds: float


def section_keys() -> tuple[str, ...]:
    """Names accepted by ``sections=`` (and ``planner report --sections``)."""
    return tuple(s.key for s in SECTIONS)


def _select(sections: Iterable[str] | None) -> list[SectionSpec]:
    known = {s.key: s for s in SECTIONS}
    if sections is None:
        return list(SECTIONS)
    want = {x.strip() for item in sections for x in str(item).split(",") if x.strip()}
    bad = sorted(want - set(known))
    if bad:
        hint = difflib.get_close_matches(bad[0], list(known), n=1)
        raise PlannerError(
            f"--sections: unknown section {bad[0]!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; expected some of: {', '.join(known)}"
        )
    want.add("summary")  # the summary always opens the report
    return [s for s in SECTIONS if s.key in want]


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise PlannerError(f"output directory {str(out)!r} exists and is not a directory")
    ours = [n for n in ("charts", "tables") if (out / n).exists()]
    if ours and not (out / HTML_NAME).exists():
        raise PlannerError(
            f"output directory {str(out)!r} already has {' and '.join(ours)}/ but no "
            f"{HTML_NAME}; a report would replace them: choose a new or empty directory"
        )


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished files from ``tmp`` into ``out``; roll back on failure
    (:func:`planner.output.publish_dir`, shared with every ``--out``)."""
    from planner.output import publish_dir

    publish_dir(tmp, out)


def build_report(
    scenario: Scenario | str | os.PathLike,
    *,
    out_dir: str | os.PathLike,
    progress: bool = True,
    sections: Iterable[str] | None = None,
    providers: Mapping[str, prov.Provider] | None = None,
    catalog: Any = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> ReportResult:
    """Run the available engines on a scenario and write a self-contained report.

    Parameters
    ----------
    scenario : Scenario or path
        A validated scenario (as the CLI loads it, with variants/overrides applied) or the
        path of a scenario file.
    out_dir : path
        Directory to write ``report.html``, ``charts/NAME.png|svg`` and ``tables/NAME.csv``
        into. Everything is written to a temporary directory beside it first and moved into
        place at the end, so a failure leaves ``out_dir`` as it was.
    progress : bool
        Show a tqdm progress bar on stderr.
    sections : iterable of str, optional
        Section keys to include (see :func:`section_keys`; comma-separated items allowed);
        default all. The summary is always included.
    providers : mapping, optional
        Engine name -> ``provider(scenario, catalog)`` overriding the defaults in
        :mod:`planner.report.providers` (how tests and later engines plug in results).
    catalog : Catalog, optional
        Catalog to price against (default: the shipped catalog).
    on_progress : callable, optional
        ``on_progress(done, total, stage)`` after each step. ``total`` is fixed before the
        first step: one per engine run, one per section built, one for the page, one per
        section whose chart images are rendered (omitted sections count too) and one for
        publishing the files (the ``progress`` bar shows the same steps).

    Returns
    -------
    ReportResult
    """
    t0 = time.perf_counter()
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    out = Path(out_dir)
    _check_out(out)
    specs = _select(sections)
    table = {**prov.DEFAULT_PROVIDERS, **(providers or {})}
    selected = {s.key for s in specs}
    needed = {e for s in specs for e in s.requires}
    needed |= {e for s in specs for e in s.uses
               if any(e in t.requires for t in SECTIONS if t.key in selected)
               or e in CORE_ENGINES}
    engines = [e for e in table if e in needed]
    unknown = needed - set(table)
    if unknown:  # pragma: no cover - SECTIONS and DEFAULT_PROVIDERS are kept in step
        raise RuntimeError(f"no provider for engine(s) {sorted(unknown)}")

    if catalog is None:
        catalog = load_catalog()
    # before any thread starts (the progress bar's, the exporter's): a fork is safe then
    forked = _fork_engines(sc, catalog, table, engines)
    try:
        exporter = export.Exporter()  # conversion starts while the engines run (not cached)
    except BaseException:
        if forked is not None:
            forked[1].close()
        raise
    try:
        exporter.prefetch_bundle()
        ctx = Context(sc)
        bar = _Progress(len(engines) + 2 * len(specs) + 2, progress, on_progress)
        try:
            built, vl, images = _run_and_build(sc, catalog, table, engines, specs, ctx, bar,
                                               exporter, forked)
            csvs = {t.name: html.frame_csv(t.frame) for s in built for t in s.tables()}
            doc = html.page(
                title=sc.name,
                subtitle=[sc.scenario.question] if sc.scenario.question else [],
                sections=built, specs=vl, csvs=csvs,
                js_bundle=exporter.bundle() if vl else "",
                footer=(f"planner {__version__} · generated "
                        f"{_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M} UTC · Vega-Lite "
                        f"{export.vegalite_version()} inlined (works offline)"),
            )
            bar.update()

            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-new-", dir=out.parent))
            try:
                tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the report is not
                (tmp / "charts").mkdir()
                (tmp / "tables").mkdir()
                (tmp / HTML_NAME).write_text(doc, encoding="utf-8")
                for name, text in csvs.items():
                    (tmp / "tables" / f"{name}.csv").write_text(text, encoding="utf-8")
                by_section = {s.key: [c.name for c in s.charts()] for s in built}
                for spec in specs:  # one step per section, omitted ones included
                    for name in by_section.get(spec.key, ()):
                        bar.stage(f"{name}.svg")
                        svg, png = images[name].result()
                        (tmp / "charts" / f"{name}.svg").write_text(svg, encoding="utf-8")
                        (tmp / "charts" / f"{name}.png").write_bytes(png)
                    bar.update()
                bar.stage("publish")
                _publish(tmp, out)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            bar.update()
        finally:
            bar.close()
    except BaseException:
        exporter.close(wait=False)  # drop the pending conversions
        raise
    finally:
        if forked is not None:
            forked[1].close()  # (a no-op once its result was taken)
    exporter.close()
    speccache.prune()
    return ReportResult(
        out_dir=out,
        html=out / HTML_NAME,
        charts={c: (out / "charts" / f"{c}.png", out / "charts" / f"{c}.svg") for c in vl},
        tables={t: out / "tables" / f"{t}.csv" for t in csvs},
        sections=tuple(s.key for s in built),
        omitted=dict(ctx.omitted),
        seconds=time.perf_counter() - t0,
    )


class _Bar(tqdm):
    """tqdm without its monitor thread (which every tqdm, even a disabled one, starts: a
    running thread keeps the report from forking engines into a child after it started,
    :func:`_fork_engines`); the report's bar has a few dozen steps, it needs no monitor."""

    monitor_interval = 0


class _Progress:
    """A tqdm bar on stderr and/or a callback, with a total fixed up front."""

    def __init__(self, total: int, show: bool,
                 callback: Callable[[int, int, str], None] | None) -> None:
        self.total, self.done, self.label = total, 0, ""
        self.callback = callback
        self.bar = _Bar(total=total, desc="report", unit="step", file=sys.stderr,
                        leave=False) if show else None

    def stage(self, label: str) -> None:
        self.label = label
        if self.bar is not None:
            self.bar.set_postfix_str(label)

    def update(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update()
        if self.callback is not None:
            self.callback(self.done, self.total, self.label)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Sections built only after every engine has run (the summary lists the omitted sections).
_AFTER_ALL_ENGINES = ("summary",)


def _run_and_build(sc, catalog, table, engines, specs, ctx, bar, exporter, forked=None):
    """Run the engines one after another (those ``forked`` runs, from :func:`_fork_engines`,
    are taken from the child); build each section as soon as the engines it requires or uses
    have run, and hand its charts to ``exporter`` at once, so that they are converted while
    the next engines run. Returns (built sections in report order, chart name -> Vega-Lite
    spec, chart name -> future of (SVG, PNG))."""
    pending = list(specs)
    done: dict[str, Section | None] = {}
    images: dict[str, Any] = {}
    specs_vl: dict[str, dict] = {}
    finished: set[str] = set()

    def ready(spec: SectionSpec, all_done: bool) -> bool:
        if spec.key in _AFTER_ALL_ENGINES and not all_done:
            return False
        return all(e in finished or e not in engines for e in (*spec.requires, *spec.uses))

    def build_ready(all_done: bool) -> None:
        for spec in [p for p in pending if ready(p, all_done)]:
            pending.remove(spec)
            if any(e in ctx.unavailable for e in spec.requires):
                done[spec.key] = None  # omitted (ctx.omitted is filled in report order)
                bar.update()
                continue
            bar.stage(spec.key)
            section = spec.build(ctx)
            bar.update()
            for c in section.charts():
                specs_vl[c.name] = c.spec if c.spec is not None else export.spec(c.chart)
                images[c.name] = exporter.submit(specs_vl[c.name])
            done[spec.key] = section

    build_ready(False)
    forks = [forked] if forked is not None else []
    order = list(engines)
    try:
        while order:
            e = order.pop(0)
            bar.stage(e)
            res, why = _engine_result(e, forks, table[e], sc, catalog)
            if why is None:
                ctx.results[e] = res
            else:
                ctx.unavailable[e] = why
            finished.add(e)
            if e in FORK_AFTER.values():
                later = _fork_engines(sc, catalog, table, engines, after=e)
                if later is not None:
                    forks.append(later)
                    pending_engines = set(order)
                    order = [x for x in _engine_order(engines, forks)
                             if x in pending_engines]
            bar.update()
            build_ready(False)
    finally:
        for _, call in forks[1:]:  # (the first is the caller's to close)
            call.close()  # (a no-op once its result was taken)
    _omitted(specs, ctx)
    build_ready(True)

    built = [done[s.key] for s in specs if done[s.key] is not None]
    for s in built:  # original sources in every table, no build-environment path
        s.blocks = [dataclasses.replace(b, frame=sources.clean_frame(b.frame))
                    if isinstance(b, Table) else b for b in s.blocks]
    charts = [c for s in built for c in s.charts()]
    _unique([c.name for c in charts], "chart")
    _unique([t.name for s in built for t in s.tables()], "table")
    bar.stage("html")
    return built, {c.name: specs_vl[c.name] for c in charts}, images


#: Optional engines run in a forked child process while this one runs the others (on Linux,
#: with the default providers; :func:`_fork_engines`).
FORKED_ENGINES = ("simulation", "performance", "risk", "optimiser")
#: Forked engines whose child starts only once an engine of this process has run (they then
#: find its results in the catalog's shared capacity cache, and its modules imported: forked
#: at the start, the risk and optimiser engines cost their child 1.1 s of CPU instead of 0.4
#: s); the others start at once.
FORK_AFTER = {"risk": "deterministic", "optimiser": "deterministic"}
#: Modules this process imports for its own (core) engines anyway -- the deterministic engine
#: and the open-loop capacity model it sizes with (scipy.special), scipy.optimize for the
#: break-even roots -- and the forked engines import too: imported just before each fork
#: (key: the ``after`` of :func:`_fork_engines`), so the child inherits them instead of
#: importing them again (~0.2-0.4 s of CPU per child).
PRELOAD = {None: ("planner.engines.deterministic", "planner.perf.openloop"),
           "deterministic": ("scipy.optimize",)}


def _run_engines(names: tuple[str, ...], table, sc, catalog) -> dict[str, tuple[Any, Any]]:
    """``prov.run`` of each engine in turn (what the forked child computes)."""
    return {e: prov.run(e, table[e], sc, catalog, optional=e not in CORE_ENGINES)
            for e in names}


def _fork_engines(sc, catalog, table, engines, after: str | None = None):
    """Start the :data:`FORKED_ENGINES` of this report (those with their default provider)
    that :data:`FORK_AFTER` starts after engine ``after`` (None: at the start) in a forked
    child (:class:`planner.parallel.ForkedCall`): ``(names, call)``, or None where a child
    cannot be forked (not Linux, or a thread already running) or none is wanted. The child
    computes what this process would: the same providers on the same inputs, with the same
    seeds."""
    from planner.parallel import ForkedCall

    names = tuple(e for e in engines if e in FORKED_ENGINES and e not in CORE_ENGINES
                  and FORK_AFTER.get(e) == after and (after is None or after in engines)
                  and table[e] is prov.DEFAULT_PROVIDERS.get(e))
    if not names or not ForkedCall.available():
        return None
    for module in PRELOAD.get(after, ()):
        importlib.import_module(module)
    try:
        return names, ForkedCall(_run_engines, names, table, sc, catalog)
    except OSError:  # pragma: no cover - no process to be had: run them here
        return None


def _engine_order(engines: list[str], forks: list) -> list[str]:
    """The order this process takes the engines' results in: its own engines first (in table
    order), then those of each forked child, the child started first first (so that it
    builds their sections while a later child still computes)."""
    forked = [e for names, _ in forks for e in names]
    later = [e for e in engines if e in FORK_AFTER and e in FORKED_ENGINES
             and e not in forked]
    own = [e for e in engines if e not in forked and e not in later]
    return own + forked + later


def _engine_result(e: str, forks, provider, sc, catalog) -> tuple[Any, str | None]:
    """(result, None) or (None, why) of engine ``e``: from the forked child when it ran it
    there, else (or when the child failed: the error then comes with its traceback) here.
    ``forks``: a ``(names, call)`` of :func:`_fork_engines`, a list of them, or None."""
    from planner.parallel import ChildFailed

    if forks is not None and not isinstance(forks, list):
        forks = [forks]
    for names, call in forks or ():
        if e not in names:
            continue
        if not hasattr(call, "results"):
            try:
                call.results = call.result()
            except ChildFailed:
                call.results = {}
        if e in call.results:
            return call.results[e]
    return prov.run(e, provider, sc, catalog, optional=e not in CORE_ENGINES)


def _omitted(specs: list[SectionSpec], ctx: Context) -> None:
    """``ctx.omitted``: the sections (in report order) an unavailable engine leaves out."""
    ctx.omitted.clear()
    for spec in specs:
        missing = [e for e in spec.requires if e in ctx.unavailable]
        if missing:
            ctx.omitted[spec.key] = "; ".join(ctx.unavailable[e] for e in missing)


def _unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:  # pragma: no cover - section builders use distinct names
            raise RuntimeError(f"two {what}s named {n!r}")
        seen.add(n)
