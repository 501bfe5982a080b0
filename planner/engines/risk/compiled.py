"""The compiled scenario: the one model (:mod:`planner.model`) with the sampler of its inputs.

:class:`CompiledScenario` is :class:`planner.model.evaluate.Model` built with the scenario's
uncertain inputs (so a class with uncertain token lengths gets a capacity grid, see
:mod:`planner.model.capacity`) plus the :class:`planner.engines.risk.sampling.Sampler` of the
inputs that can change some option's cost. Structure (eligibility, catalog rows, price sources,
billing) is decided once at the medians; only numbers vary between samples, and every formula
is one numpy expression over the arrays of samples. Inputs that cannot change an option's
monthly cost (pre-training jobs, payback, revenue, SLO bounds) are listed in ``unused`` and
held at their medians. A sample whose lengths leave no capacity, or in which a fixed fleet
(``replicas``, on-prem ``servers``, ``max_*`` limits) cannot carry the peak load, costs
``inf``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from planner.catalog import Catalog, load_catalog
from planner.config import Correlation, Scenario
from planner.engines.risk.sampling import Sampler, build_sampler, chunk_generator
from planner.model.capacity import CapacityCache
from planner.model.evaluate import Model
from planner.uncertain import UncertainInput, as_correlations, uncertain_inputs

__all__ = ["CompiledScenario", "clear_compile_cache", "compile_scenario", "predict_sampler",
           "same_sampler"]

#: Samples priced per evaluation inside a chunk (:meth:`CompiledScenario.run_chunk`): a
#: multiple of 64, so numpy's vector loops see the same element groups as for a whole chunk.
EVAL_BLOCK = 8192


class CompiledScenario(Model):
    """A scenario prepared for vectorised evaluation (:class:`planner.model.Model`) with the
    sampler of its uncertain inputs.

    Build it with :func:`compile_scenario`. :meth:`evaluate` prices every option for arrays of
    input values; :attr:`inputs` lists the inputs that affect some option's cost.
    """

    def __init__(self, sc: Scenario, catalog: Catalog, correlations: list[Correlation], *,
                 caps: CapacityCache | None = None):
        super().__init__(sc, catalog, uncertain_inputs(sc), caps=caps)
        # one evaluation at the medians records which inputs the formulas read
        read: set[str] = set()
        self.baseline = self._evaluate({}, 1, 1.0, read)
        self.inputs: dict[str, UncertainInput] = {
            k: u for k, u in self.all_inputs.items() if k in read
        }
        self.unused: dict[str, str] = {
            k: _unused_reason(k) for k in self.all_inputs if k not in read
        }
        self.correlations = correlations
        self.sampler = build_sampler(
            {k: u.dist for k, u in self.inputs.items()}, self.all_inputs, correlations
        )

    def __getstate__(self) -> dict[str, Any]:
        # pickled (to worker processes, Dask) without the performance-model results shared
        # with this process's other compiles: only compiling reads them
        state = self.__dict__.copy()
        state["caps"] = CapacityCache()
        return state

    def _evaluate(self, values: Mapping[str, Any], n: int, volume_scale: Any,
                  record: set | None = None, options: Sequence[str] | None = None,
                  lean: bool = False) -> dict[str, dict[str, Any]]:
        raw = self.evaluate_raw(self.ctx(values, n, volume_scale=volume_scale, record=record,
                                         lean=lean), options)
        for d in raw.values():  # a fleet that cannot carry its load is not a valid option
            if d["serves"] is not True:
                d["monthly"] = np.where(d["serves"], d["monthly"], np.inf)
        return raw

    def evaluate(self, values: Mapping[str, Any] | None = None, n: int | None = None, *,
                 volume_scale: Any = 1.0, options: Sequence[str] | None = None,
                 parts: bool = False) -> dict[str, dict[str, np.ndarray]]:
        """Price every option for ``n`` samples of the inputs.

        Parameters
        ----------
        values : mapping of key path to array (n,), optional
            Sampled inputs; inputs not given are held at their medians.
        n : int, optional
            Number of samples (default: the length of the arrays in ``values``, else 1).
        volume_scale : float or array (n,)
            Multiplies every class's requests per day.
        options : names, optional
            Only these options.
        parts : bool
            Also return cost components (``api_tokens_usd``, ``rental_usd``,
            ``onprem_*_usd`` ...) used by the multi-year engine.

        Returns
        -------
        dict
            option -> {monthly, once, tokens, out_tokens, rpm, ...}: (n,) float arrays;
            ``monthly`` is ``inf`` where a fixed fleet cannot carry the load.
        """
        values = dict(values or {})
        if n is None:
            n = max((np.size(v) for v in values.values()), default=1)
        raw = self._evaluate(values, int(n), volume_scale, None, options)
        keys = ("monthly", "once", "tokens", "out_tokens", "rpm", "user_rpm")
        out = {}
        for name, d in raw.items():
            sel = d if parts else {k: d[k] for k in keys}
            out[name] = {k: (_full(v, int(n)) if not isinstance(v, bool | list | type(None))
                             else v) for k, v in sel.items()}
        return out

    # -- facts -----------------------------------------------------------------------------
    def option_frame(self) -> pd.DataFrame:
        """One row per option: kind, offering, classes served/unserved."""
        return pd.DataFrame([
            {"deployment": o.name, "kind": o.kind, "offering": o.offering,
             "classes_served": ",".join(o.served),
             "classes_unserved": "; ".join(f"{c}: {w}" for c, w in o.unserved.items())}
            for o in self.options
        ], columns=["deployment", "kind", "offering", "classes_served", "classes_unserved"])

    def draw(self, root: np.random.SeedSequence, index: int, size: int) -> dict[str, np.ndarray]:
        """Inputs of chunk ``index`` (``size`` samples)."""
        return self.sampler.draw(chunk_generator(root, index), size)

    def run_chunk(self, root: np.random.SeedSequence, index: int, size: int,
                  keep_inputs: bool = False, out: np.ndarray | None = None):
        """Sample and price one chunk: ``(costs (3, n_options, size), inputs or None)``.

        ``costs[0]`` is the monthly cost, ``costs[1]`` the one-off total, ``costs[2]`` tokens per
        month, per option in :attr:`option_names` order (written into ``out`` when given).
        """
        vals = self.draw(root, index, size)
        return self.price_chunk(vals, size, out), (vals if keep_inputs else None)

    def price_chunk(self, vals: Mapping[str, np.ndarray], size: int,
                    out: np.ndarray | None = None) -> np.ndarray:
        """Price ``size`` drawn samples (:meth:`draw`): the ``(3, n_options, size)`` costs of
        :meth:`run_chunk` (written into ``out`` when given)."""
        arr = np.empty((3, len(self.options), size)) if out is None else out
        # priced in blocks of EVAL_BLOCK samples: every formula is per sample (elementwise
        # over samples; reductions run over hours or classes only), so the costs are the
        # same bits as one evaluation of the chunk, and each block's (samples x hours)
        # temporaries stay in the CPU cache (~30% less time than one evaluation of 32,768)
        for lo in range(0, size, EVAL_BLOCK):
            hi = min(lo + EVAL_BLOCK, size)
            # lean: only the costs below are worked out (not out_tokens, user_rpm ...)
            res = self._evaluate({k: v[lo:hi] for k, v in vals.items()}, hi - lo, 1.0,
                                 lean=True)
            for j, o in enumerate(self.options):
                r = res[o.name]
                arr[0, j, lo:hi] = r["monthly"]
                arr[1, j, lo:hi] = r["once"]
                arr[2, j, lo:hi] = r["tokens"]
        return arr

    @property
    def option_names(self) -> list[str]:
        return [o.name for o in self.options]


def _full(x: Any, n: int) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.shape == (n,):
        return a
    return np.broadcast_to(a.reshape(-1)[0] if a.size == 1 else a, (n,)).copy()


def _unused_reason(key: str) -> str:
    if ".slo." in key:
        return "held at its median (the capacity grid is computed for one SLO)"
    if key.startswith("trends."):
        return "used by the multi-year engine only"
    if key.startswith("scenario.discount_rate"):
        return "used by the multi-year engine only"
    return "does not affect any deployment option's monthly cost"


def clear_compile_cache(catalog: Catalog | None = None) -> None:
    """Forget the performance-model results a catalog shares between compiles (default: the
    default catalog's): the next compile of a scenario calls the performance model again."""
    (catalog or load_catalog()).forget_shared("capacity")


def compile_scenario(sc: Scenario, *, catalog: Catalog | None = None,
                     correlations: Any = None) -> CompiledScenario:
    """Prepare a scenario for vectorised evaluation (catalog rows, eligibility, capacity).

    ``correlations`` defaults to the scenario's ``correlation`` table when the schema has one.
    The performance-model results are the catalog's shared
    :class:`planner.model.capacity.CapacityCache` (``catalog.shared("capacity")``): a second
    compile of a scenario against one catalog object (``planner risk --years`` and the
    report's risk section compile it for the multi-year engine too; sweeps; repeated API
    calls) does not call the performance model again (:func:`clear_compile_cache`).
    """
    if correlations is None:
        correlations = sc.correlation
    catalog = catalog or load_catalog()
    return CompiledScenario(sc, catalog, as_correlations(correlations))


#: Sections whose uncertain inputs price some option (others are pre-training, payback,
#: revenue, trends ... inputs the compile leaves out of :attr:`CompiledScenario.inputs`).
_PRICED_SECTIONS = ("workload", "api", "cloud", "onprem", "planning", "finetune")


def predict_sampler(sc: Scenario, correlations: Any = None) -> Sampler | None:
    """The sampler :func:`compile_scenario` will most likely build, known before the compile.

    The compile keeps the inputs its evaluation at the medians reads; this guesses them from
    the key paths alone (every input of a priced section except SLO bounds), so that a run
    can draw its first chunks while the compile calls the performance model. The guess is
    only used when it equals the compiled sampler (:func:`same_sampler`); None when the
    correlations do not fit it.
    """
    if correlations is None:
        correlations = sc.correlation
    dists = {k: u.dist for k, u in uncertain_inputs(sc).items()
             if k.split(".", 1)[0] in _PRICED_SECTIONS and ".slo." not in k}
    try:
        return build_sampler(dists, uncertain_inputs(sc), as_correlations(correlations))
    except Exception:  # the compile raises the user's error, with its full context
        return None


def same_sampler(a: Sampler | None, b: Sampler) -> bool:
    """True if ``a`` draws the same numbers as ``b`` (same inputs, order, groups, factors)."""
    return (a is not None and a.names == b.names and a.other == b.other
            and a.normal == b.normal and len(a.groups) == len(b.groups)
            and all(x[0] == y[0] and np.array_equal(x[1], y[1])
                    for x, y in zip(a.groups, b.groups, strict=True))
            and all(a.dists[k] == b.dists[k] for k in a.names))
