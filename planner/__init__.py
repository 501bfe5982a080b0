"""planner: cost, capacity and risk planning for LLM workloads.

Layers (data flows one way): scenario files -> :mod:`planner.config` -> :mod:`planner.workload`
-> :mod:`planner.perf` -> :mod:`planner.costs` -> engines -> tidy pandas results -> the
Python API (:mod:`planner.api`: ``planner.load``, ``planner.cost`` ...) and the CLI.
"""

from planner._version import __version__

#: the Python API (:mod:`planner.api`), imported on first use so ``import planner`` stays cheap
_API = (
    "load", "cost", "breakeven", "risk", "optimize", "simulate", "report", "perf", "templates",
    "CostResult", "BreakevenResult", "RiskResult", "OptimizeResult", "SimulateResult",
    "ReportResult", "PerfResult",
)

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from planner import api

        return getattr(api, name)
    raise AttributeError(f"module 'planner' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
