"""Engines: deterministic, break-even, (simulation, Monte Carlo, optimiser). No I/O, no plots."""
