"""One accessor for every numeric input: median (N=1), samples (N) or per-scenario values (S)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from planner.distributions import median_of


class Inputs:
    """Values of the scenario's inputs for one evaluation of the model.

    Parameters
    ----------
    medians : mapping of key path to median
        Medians of the scenario's uncertain inputs (a field not listed uses its own median).
    values : mapping of key path to array (n,)
        Sampled (or per-scenario) values; inputs not given are held at their medians.
    n : int
        Number of samples (1 for the deterministic view).
    volume_scale : float or array (n,)
        Multiplies every class's requests per day.
    record : set, optional
        Collects the key paths read (which inputs affect the costs).
    trace : bool
        Build the cost lines with their formulas (deterministic view, ``n == 1``).
    lean : bool
        Only the costs are read (``monthly``, ``once``, ``tokens``, ``serves``: Monte Carlo
        pricing): outputs nothing prices from (``out_tokens``, ``user_rpm``, a cloud option's
        ``utilisation``, ``idle_server_energy_usd``) are ``None`` instead of worked out.
    """

    def __init__(self, medians: Mapping[str, float], values: Mapping[str, Any], n: int,
                 volume_scale: Any = 1.0, record: set | None = None, trace: bool = False,
                 lean: bool = False):
        self.medians = medians
        self.values = values
        self.n = n
        self.scale = volume_scale
        self.record = record
        self.trace = trace
        self.lean = lean
        self.cache: dict[Any, Any] = {}

    def v(self, key: str, x: Any, default: Any = None) -> Any:
        """Value of the field at ``key``: the sample, else its median, else ``default``."""
        if self.record is not None:
            self.record.add(key)
        if key in self.values:
            return self.values[key]
        if x is None:
            return default
        med = self.medians.get(key)
        if med is not None:
            return med
        return x if type(x) is float else median_of(x)  # a number is its own median
