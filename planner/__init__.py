"""planner: cost, capacity and risk planning for LLM workloads.

Layers (data flows one way): scenario files -> :mod:`planner.config` -> :mod:`planner.workload`
-> :mod:`planner.perf` -> :mod:`planner.costs` -> engines -> tidy pandas results -> CLI.
"""

__version__ = "0.1.0"
