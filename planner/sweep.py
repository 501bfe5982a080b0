"""Sweeps: a grid of scenario overrides x Monte Carlo samples, on Dask (``dask.distributed``).

``sweep(scenario, {"workload.chat.requests_per_day": [1e5, 1e6], "planning.utilisation_target":
[0.7, 0.9]}, n=100_000, seed=1)`` runs a Monte Carlo per grid point (the cartesian product of
the override values, in the order given) and returns one tidy table.

Work is split into tasks of one chunk of :data:`planner.engines.risk.sampling.CHUNK_SIZE` samples
of one grid point. Grid point ``g`` uses child ``g`` of ``SeedSequence(seed)`` as its root seed
and chunk ``c`` child ``c`` of that root, so every task's samples are fixed by ``(seed, g, c)``
alone: results are bit-identical to a serial run (``scheduler="serial"``) with the same seed,
whatever the number of workers or the order tasks finish in, and grid point ``g`` equals
``planner.engines.risk.run.run_montecarlo(scenario_g, n=n, seed=SeedSequence(seed).spawn(G)[g])``.

Schedulers (:func:`planner.parallel.map_tasks`, the runner ``planner simulate`` and ``planner
risk --simulate`` use too): ``None`` starts a local cluster of ``n_workers`` processes on
127.0.0.1 (closed afterwards; serial for one worker or one task); ``"tcp://host:port"``
connects to a running scheduler (its workers need planner installed); ``"serial"`` runs in
this process without Dask; a ``distributed.Client`` may be passed as ``client``. The compiled
grid points are sent to each worker once.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from planner.catalog import Catalog
from planner.config import Scenario, parse_scenario
from planner.engines.risk.compiled import CompiledScenario, compile_scenario
from planner.engines.risk.sampling import CHUNK_SIZE, chunk_sizes, root_seed
from planner.engines.risk.stats import summarise, win_probability
from planner.errors import PlannerError
from planner.parallel import map_tasks

__all__ = ["grid_points", "parse_grid", "scenario_with", "sweep"]


def _parse_value(text: str) -> Any:
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    return t


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["key=v1,v2", ...]`` (the CLI's ``--grid``) to ``{key: [v1, v2]}``.

    Values are read as integers, floats, ``true``/``false``, else strings. A key given twice
    is an error.
    """
    out: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise PlannerError(f"--grid: expected key=v1,v2,..., got {item!r}")
        key, _, vals = item.partition("=")
        key = key.strip()
        if not key:
            raise PlannerError(f"--grid: missing the key path in {item!r}")
        if key in out:
            raise PlannerError(f"--grid: key {key!r} is given twice")
        values = [_parse_value(v) for v in vals.split(",") if v.strip()]
        if not values:
            raise PlannerError(f"--grid: no values for {key!r}")
        out[key] = values
    return out


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of the override values; the last key varies fastest."""
    if not isinstance(grid, Mapping):
        raise PlannerError(f"grid: expected a mapping of key path to values, got {grid!r}")
    keys = list(grid)
    values = []
    for k in keys:
        v = grid[k]
        if isinstance(v, str | bytes) or not isinstance(v, Sequence) or len(v) == 0:
            raise PlannerError(f"grid[{k!r}]: expected a non-empty list of values, got {v!r}")
        values.append(list(v))
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def scenario_with(sc: Scenario, overrides: Mapping[str, Any], *,
                  catalog: Catalog | None = None) -> Scenario:
    """The scenario with dotted-key overrides applied and re-validated (ScenarioError names
    a bad key)."""
    data = sc.model_dump(mode="python")
    return parse_scenario(data, path=sc.source_path, overrides=dict(overrides), catalog=catalog)


def _chunk(models: Sequence[CompiledScenario], g: int, root: np.random.SeedSequence,
           index: int, size: int) -> np.ndarray:
    """One task: costs (3, n_options, size) of chunk ``index`` of grid point ``g`` (module
    level: picklable)."""
    return models[g].run_chunk(root, index, size)[0]


def sweep(
    scenario: Scenario,
    grid: Mapping[str, Sequence[Any]] | Sequence[str],
    *,
    n: int = 10_000,
    seed: int | None = 0,
    scheduler: str | None = None,
    n_workers: int = 2,
    catalog: Catalog | None = None,
    correlations: Any = None,
    client: Any = None,
    progress: Any = False,
) -> pd.DataFrame:
    """Monte Carlo over a grid of scenario overrides.

    Parameters
    ----------
    scenario : Scenario
    grid : mapping of key path to values, or ``["key=v1,v2", ...]``
    n : int
        Samples per grid point.
    seed : int or None
        Root seed (None: fresh entropy, recorded in ``df.attrs["seed_entropy"]``).
    scheduler : None, "serial" or "tcp://host:port"
    n_workers : int
        Worker processes of the local cluster (``scheduler=None``).
    client : distributed.Client, optional
        Use this client (overrides ``scheduler``).
    progress : bool or callable
        ``progress(done, total)`` called as chunks finish; True draws a tqdm bar instead.

    Returns
    -------
    DataFrame
        One row per (grid point, deployment, metric): the grid values, then the columns of
        :attr:`RiskResults.summary` and ``p_cheapest``. ``attrs`` holds ``seed_entropy`` and
        ``n``.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise PlannerError(f"n: expected a positive integer number of samples, got {n!r}")
    if not isinstance(grid, Mapping):
        grid = parse_grid(list(grid))
    points = grid_points(grid)
    root = root_seed(seed)
    roots = root.spawn(len(points))
    models = [
        compile_scenario(scenario_with(scenario, p, catalog=catalog), catalog=catalog,
                         correlations=correlations)
        for p in points
    ]
    sizes = chunk_sizes(int(n), CHUNK_SIZE)
    tasks = [(g, c) for g in range(len(points)) for c in range(len(sizes))]
    bar = None
    if callable(progress):
        report = progress
    elif progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), unit="chunk", desc=f"sweep {scenario.name}")
        report = lambda done, total: bar.update(done - bar.n)  # noqa: E731
    else:
        report = None
    try:
        out = map_tasks(_chunk, [(g, roots[g], c, sizes[c]) for g, c in tasks], shared=models,
                        scheduler=scheduler, n_workers=n_workers, client=client,
                        progress=report, name="planner-sweep")
    finally:
        if bar is not None:
            bar.close()
    results = dict(zip(tasks, out, strict=True))
    frames = []
    for g, point in enumerate(points):
        model = models[g]
        costs = np.concatenate([results.pop((g, c)) for c in range(len(sizes))], axis=2)
        summ = summarise(model, costs)
        wins = win_probability(model, costs[0]).set_index("deployment")["p_cheapest"]
        summ["p_cheapest"] = summ["deployment"].map(wins)
        for i, (k, v) in enumerate(point.items()):
            summ.insert(i, k, [v] * len(summ))
        summ.insert(len(point), "grid_point", g)
        frames.append(summ)
    df = pd.concat(frames, ignore_index=True)
    df.attrs["seed_entropy"] = int(root.entropy)
    df.attrs["n"] = int(n)
    return df

