"""planner: cost, capacity and risk planning for LLM workloads.

Layers (data flows one way): scenario files -> :mod:`planner.config` -> :mod:`planner.workload`
-> :mod:`planner.perf` -> :mod:`planner.costs` -> engines -> tidy pandas results -> the
Python API (:mod:`planner.api`: ``planner.load``, ``planner.cost`` ...) and the CLI.
"""

import sys
import types

from planner._version import __version__

#: the Python API (:mod:`planner.api`), imported on first use so ``import planner`` stays cheap
_API = (
    "load", "cost", "breakeven", "risk", "optimize", "simulate", "report", "perf", "templates",
    "CostResult", "BreakevenResult", "RiskResult", "OptimizeResult", "SimulateResult",
    "ReportResult", "PerfResult",
)
#: API functions named like a subpackage: ``planner.report`` and ``planner.perf`` are the
#: subpackages (the import system sets them on the package when they load), made callable
_SUBPACKAGES = ("report", "perf")

__all__ = ["__version__", *_API]


class _CallableSubpackage(types.ModuleType):
    """A subpackage that is also the API function of its name: ``planner.report(sc, "out/")``
    calls :func:`planner.api.report`, and ``planner.report.build_report`` is still the
    module's (same for ``planner.perf``)."""

    def __call__(self, *args, **kwargs):
        from planner import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        if name in _SUBPACKAGES and type(value) is types.ModuleType:
            value.__class__ = _CallableSubpackage
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f"planner.{name}")
    if name in _API:
        from planner import api

        return getattr(api, name)
    raise AttributeError(f"module 'planner' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
