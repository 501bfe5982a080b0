"""One model of volumes, capacity and cost that every engine calls.

Layer: below the engines (deterministic, Monte Carlo, optimiser, simulator), above the
scenario schema (:mod:`planner.config`), the workload (:mod:`planner.workload`), the
performance model (:mod:`planner.perf`) and the cost formulas (:mod:`planner.costs`).
Nothing here imports an engine, the report or the CLI.

Modules
-------
sizing
    Per self-hosted option: classes served, replicas, capacity per replica and price of a
    replica-hour, as the cost engine sizes them (used by the simulator and the optimiser's
    verification).
price
    API price resolution at the medians (scenario overrides over the catalog row).
"""
