"""Columnar request table: what arrival processes and trace replay produce and the simulator
(:mod:`planner.sim`) consumes. It sits below both, so :mod:`planner.arrivals` and
:mod:`planner.traces` do not depend on the simulator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from planner.errors import PlannerError

__all__ = ["RequestTable"]


def _int_array(x: object, name: str, n: int, minimum: int) -> np.ndarray:
    a = np.asarray(x)
    if a.shape != (n,):
        raise PlannerError(f"RequestTable.{name}: expected {n} values, got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise PlannerError(f"RequestTable.{name}: token counts must be whole numbers")
    elif a.dtype.kind not in "iu":
        raise PlannerError(f"RequestTable.{name}: expected integers, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if n and a.min() < minimum:
        raise PlannerError(f"RequestTable.{name}: values must be >= {minimum}, got {a.min()}")
    return a


@dataclass(frozen=True, eq=False)
class RequestTable:
    """Requests as numpy columns, sorted by arrival time.

    Attributes
    ----------
    arrival_s : ndarray of float64
        Arrival times in seconds from the start of the simulated period, non-decreasing.
    class_idx : ndarray of int32
        Index into ``class_names`` for each request.
    class_names : tuple of str
        Workload class names.
    input_tokens, output_tokens : ndarray of int64
        Prompt tokens (>= 0; fixed context included) and generated tokens (>= 1).
    cached_input_tokens : ndarray of int64
        Prompt tokens served from a prefix cache (not prefilled again, still held in KV).
    """

    arrival_s: np.ndarray
    class_idx: np.ndarray
    class_names: tuple[str, ...]
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    cached_input_tokens: np.ndarray

    def __post_init__(self) -> None:
        t = np.asarray(self.arrival_s, dtype=np.float64)
        n = t.shape[0] if t.ndim == 1 else -1
        if t.ndim != 1:
            raise PlannerError("RequestTable.arrival_s must be one-dimensional")
        if n and (not np.all(np.isfinite(t)) or t[0] < 0 or np.any(np.diff(t) < 0)):
            raise PlannerError(
                "RequestTable.arrival_s must be finite, >= 0 and sorted (use RequestTable.from_arrays)"
            )
        ci = np.asarray(self.class_idx)
        if ci.shape != (n,):
            raise PlannerError(f"RequestTable.class_idx: expected {n} values, got {ci.shape}")
        names = tuple(str(c) for c in self.class_names)
        if len(set(names)) != len(names):
            raise PlannerError(f"RequestTable.class_names must be unique, got {names}")
        if n and (ci.min() < 0 or ci.max() >= len(names)):
            raise PlannerError("RequestTable.class_idx out of range of class_names")
        inp = _int_array(self.input_tokens, "input_tokens", n, 0)
        out = _int_array(self.output_tokens, "output_tokens", n, 1)
        cached = _int_array(self.cached_input_tokens, "cached_input_tokens", n, 0)
        if n and np.any(cached > inp):
            raise PlannerError("RequestTable.cached_input_tokens must not exceed input_tokens")
        object.__setattr__(self, "arrival_s", t)
        object.__setattr__(self, "class_idx", ci.astype(np.int32))
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "input_tokens", inp)
        object.__setattr__(self, "output_tokens", out)
        object.__setattr__(self, "cached_input_tokens", cached)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(
        cls,
        arrival_s: Sequence[float] | np.ndarray,
        input_tokens: Sequence[int] | np.ndarray,
        output_tokens: Sequence[int] | np.ndarray,
        classes: str | Sequence[str] | np.ndarray = "default",
        *,
        cached_input_tokens: Sequence[int] | np.ndarray | None = None,
    ) -> RequestTable:
        """Build a table from per-request arrays; sorts by arrival (stable).

        ``classes`` is one class name for all requests or one name per request.
        """
        t = np.asarray(arrival_s, dtype=np.float64)
        n = t.shape[0]
        if isinstance(classes, str):
            names, idx = (classes,), np.zeros(n, dtype=np.int32)
        else:
            labels = np.asarray(classes).astype(str)
            if labels.shape != (n,):
                raise PlannerError(f"RequestTable: expected {n} class labels, got {labels.shape}")
            uniq, idx = np.unique(labels, return_inverse=True)
            names = tuple(str(u) for u in uniq)
        cached = np.zeros(n, dtype=np.int64) if cached_input_tokens is None else cached_input_tokens
        order = np.argsort(t, kind="stable")
        return cls(
            arrival_s=t[order],
            class_idx=np.asarray(idx)[order],
            class_names=names,
            input_tokens=np.asarray(input_tokens)[order],
            output_tokens=np.asarray(output_tokens)[order],
            cached_input_tokens=np.asarray(cached)[order],
        )

    @classmethod
    def concat(cls, tables: Sequence[RequestTable]) -> RequestTable:
        """Merge tables (class names unified by name), sorted by arrival (stable)."""
        names: list[str] = []
        for tb in tables:
            for c in tb.class_names:
                if c not in names:
                    names.append(c)
        if not tables:
            return cls.empty()
        remap = [
            np.array([names.index(c) for c in tb.class_names], dtype=np.int32) for tb in tables
        ]
        t = np.concatenate([tb.arrival_s for tb in tables])
        order = np.argsort(t, kind="stable")
        return cls(
            arrival_s=t[order],
            class_idx=np.concatenate(
                [m[tb.class_idx] for m, tb in zip(remap, tables, strict=True)]
            )[order],
            class_names=tuple(names),
            input_tokens=np.concatenate([tb.input_tokens for tb in tables])[order],
            output_tokens=np.concatenate([tb.output_tokens for tb in tables])[order],
            cached_input_tokens=np.concatenate([tb.cached_input_tokens for tb in tables])[order],
        )

    @classmethod
    def empty(cls) -> RequestTable:
        z = np.zeros(0, dtype=np.int64)
        return cls(np.zeros(0), z.astype(np.int32), ("default",), z, z + 1, z)

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    @property
    def classes(self) -> np.ndarray:
        """Class name of each request (object array)."""
        return np.asarray(self.class_names, dtype=object)[self.class_idx]

    @property
    def duration_s(self) -> float:
        """Time of the last arrival (0 for an empty table)."""
        return float(self.arrival_s[-1]) if len(self) else 0.0

    def to_frame(self) -> pd.DataFrame:
        """One row per request."""
        return pd.DataFrame(
            {
                "request_id": np.arange(len(self)),
                "class": pd.Categorical.from_codes(self.class_idx, categories=self.class_names),
                "arrival_s": self.arrival_s,
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "cached_input_tokens": self.cached_input_tokens,
            }
        )
