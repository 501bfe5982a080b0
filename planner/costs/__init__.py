"""Cost models: pure formulas on floats or numpy arrays (broadcasting), no I/O.

- :mod:`planner.costs.api`: per-token API bills.
- :mod:`planner.costs.selfhosted`: whole-unit packing, cloud billing modes, on-prem TCO.
- :mod:`planner.costs.training`: fine-tuning, pre-training (6ND), 2N inference cost per token.
"""
