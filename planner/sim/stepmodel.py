"""Step-time models the simulator consumes, and closed-form decode spans.

A replica's engine runs iterations ("steps"). The simulator needs only:

* ``prefill_time_s(n_tokens)``: one prefill iteration over ``n_tokens`` prompt tokens;
* ``decode_step_time_s(batch, kv_tokens)``: one decode iteration of ``batch`` sequences that
  together hold ``kv_tokens`` tokens of context;
* ``kv_capacity_tokens`` and ``max_batch``;
* for pools with chunked prefill (:class:`~planner.sim.plan.PoolSpec` ``chunked_prefill``),
  the time of one *mixed* iteration, :func:`mixed_step_function`: a model's own
  ``mixed_step_time_s(decode_tokens, kv_tokens, prefill_tokens, prefill_pairs)`` when it
  has one (the performance model's ``step_time_s``), else a decode step plus a prefill
  iteration; and the causal (query, key) pairs of a prompt prefix,
  :func:`prefill_pairs_function`.

:class:`StepModel` is that protocol (``planner.perf.step_model(...)`` returns a conforming
object). :class:`LinearStepModel` is the simple concrete model used in tests, queueing
validation and benchmarks::

    prefill(n)      = a + b n
    decode(B, K)    = c + d B + e K

During decode a batch of ``B`` sequences grows its context by ``B`` tokens per step, so the
time of ``k`` consecutive steps starting from ``K0`` cached tokens has the closed form
(arithmetic series)::

    S(k) = k (c + d B + e K0) + e B k (k - 1) / 2

which lets the simulator jump over ``k`` iterations in O(1) (:meth:`LinearStepModel.decode_span_s`).
:class:`TabulatedStepModel` keeps that closed form for the performance model itself, whose
decode step is affine in ``K`` but not in ``B``: ``c + d B`` becomes a per-batch table.
For any other model :class:`DecodeKernel` evaluates the ``k`` step times vectorised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from planner.errors import PlannerError

__all__ = [
    "DecodeKernel",
    "LinearDecodeStepModel",
    "LinearStepModel",
    "StepModel",
    "TabulatedStepModel",
    "decode_kernel",
    "mixed_step_function",
    "prefill_pairs_function",
]


@runtime_checkable
class StepModel(Protocol):
    """Protocol of a replica's step-time model (vectorised over numpy arrays)."""

    kv_capacity_tokens: int
    max_batch: int

    def prefill_time_s(self, n_tokens: Any) -> Any:
        """Seconds of one prefill iteration over ``n_tokens`` prompt tokens."""
        ...

    def decode_step_time_s(self, batch: Any, kv_tokens: Any) -> Any:
        """Seconds of one decode iteration of ``batch`` sequences holding ``kv_tokens``."""
        ...


@dataclass(frozen=True)
class LinearStepModel:
    """Affine step times: ``prefill = a + b n``, ``decode = c + d B + e K``.

    Parameters
    ----------
    prefill_base_s, prefill_s_per_token : float
        ``a`` and ``b``.
    decode_base_s, decode_s_per_seq, decode_s_per_kv_token : float
        ``c``, ``d`` and ``e``.
    kv_capacity_tokens : int
        KV-cache capacity of one replica in tokens.
    max_batch : int
        Largest number of sequences in a batch.
    """

    prefill_base_s: float = 0.0
    prefill_s_per_token: float = 0.0
    decode_base_s: float = 0.0
    decode_s_per_seq: float = 0.0
    decode_s_per_kv_token: float = 0.0
    kv_capacity_tokens: int = 10**9
    max_batch: int = 256

    def __post_init__(self) -> None:
        for name in (
            "prefill_base_s",
            "prefill_s_per_token",
            "decode_base_s",
            "decode_s_per_seq",
            "decode_s_per_kv_token",
        ):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise PlannerError(f"LinearStepModel.{name} must be a finite number >= 0, got {v}")
        if self.decode_base_s + self.decode_s_per_seq <= 0:
            raise PlannerError(
                "LinearStepModel: a decode step must take time (decode_base_s + decode_s_per_seq > 0)"
            )
        if int(self.kv_capacity_tokens) < 1 or int(self.max_batch) < 1:
            raise PlannerError("LinearStepModel: kv_capacity_tokens and max_batch must be >= 1")

    def prefill_time_s(self, n_tokens: Any) -> Any:
        """``a + b n`` (0 for ``n = 0``)."""
        if isinstance(n_tokens, int | float):
            return self.prefill_base_s + self.prefill_s_per_token * n_tokens if n_tokens else 0.0
        n = np.asarray(n_tokens, dtype=float)
        return np.where(n > 0, self.prefill_base_s + self.prefill_s_per_token * n, 0.0)

    def decode_step_time_s(self, batch: Any, kv_tokens: Any) -> Any:
        """``c + d B + e K``."""
        return (
            self.decode_base_s
            + self.decode_s_per_seq * batch
            + self.decode_s_per_kv_token * kv_tokens
        )

    def mixed_step_time_s(
        self, decode_tokens: int, kv_tokens: int, prefill_tokens: int, prefill_pairs: float = 0.0
    ) -> float:
        """One chunked-prefill iteration: ``decode(B, K) + b p`` with ``B`` decodes and ``p``
        prompt tokens (``prefill(p) = a + b p`` when ``B = 0``; ``decode(B, K)`` when ``p = 0``).

        The fixed cost of a mixed step is the decode step's (one pass over the weights); each
        prompt token adds ``b``. Attention pairs are not charged (the model has no term for
        them).
        """
        if not decode_tokens:
            return self.prefill_time_s(prefill_tokens)
        return (
            self.decode_base_s
            + self.decode_s_per_seq * decode_tokens
            + self.decode_s_per_kv_token * kv_tokens
            + self.prefill_s_per_token * prefill_tokens
        )

    def decode_span_s(self, batch: int, kv0: int, k: int) -> float:
        """Seconds of ``k`` decode steps from ``kv0`` tokens, context growing by ``batch``/step.

        ``S(k) = k (c + d B + e K0) + e B k (k - 1) / 2``.
        """
        e = self.decode_s_per_kv_token
        return k * (self.decode_base_s + self.decode_s_per_seq * batch + e * kv0) + (
            e * batch * (k * (k - 1) // 2)
        )

    @classmethod
    def fit(
        cls,
        model: StepModel,
        *,
        max_prompt_tokens: int = 8192,
        max_batch: int | None = None,
        max_kv_tokens: int | None = None,
        grid: int = 16,
        exact_prefill: bool = False,
    ) -> tuple[LinearStepModel, float]:
        """Least-squares affine fit of any :class:`StepModel` over an operating range.

        Lets the simulator use its closed-form fast path on a model that has none. Returns
        the fitted model and the largest relative error on the grid: prefill over
        ``1..max_prompt_tokens``; decode over batches ``1..max_batch`` and contexts up to
        ``min(max_kv_tokens, batch x max_prompt_tokens)`` (defaults: the model's batch cap
        and KV capacity). Capacity and batch cap are copied from ``model``. With
        ``exact_prefill`` the result keeps ``model``'s prefill times
        (:class:`LinearDecodeStepModel`) and the error is that of the decode fit.
        """
        n = np.unique(np.geomspace(1, max_prompt_tokens, grid).round())
        tp = np.asarray(model.prefill_time_s(n), dtype=float)
        a_p = np.column_stack([np.ones_like(n), n])
        (pa, pb), *_ = np.linalg.lstsq(a_p, tp, rcond=None)
        top_b = int(max_batch if max_batch is not None else model.max_batch)
        top_kv = int(max_kv_tokens if max_kv_tokens is not None else model.kv_capacity_tokens)
        bsz = np.unique(np.geomspace(1, top_b, grid).round())
        share = np.linspace(0.0, 1.0, grid)
        bb, ss = (x.ravel() for x in np.meshgrid(bsz, share))
        kk = ss * np.minimum(top_kv, bb * max_prompt_tokens)
        td = np.asarray(model.decode_step_time_s(bb, kk), dtype=float)
        a_d = np.column_stack([np.ones_like(bb), bb, kk])
        (dc, dd, de), *_ = np.linalg.lstsq(a_d, td, rcond=None)
        fitted = cls(
            prefill_base_s=max(float(pa), 0.0),
            prefill_s_per_token=max(float(pb), 0.0),
            decode_base_s=max(float(dc), 1e-9),
            decode_s_per_seq=max(float(dd), 0.0),
            decode_s_per_kv_token=max(float(de), 0.0),
            kv_capacity_tokens=int(model.kv_capacity_tokens),
            max_batch=int(model.max_batch),
        )
        err_p = np.abs(fitted.prefill_time_s(n) / tp - 1.0).max()
        err_d = np.abs(fitted.decode_step_time_s(bb, kk) / td - 1.0).max()
        if exact_prefill:
            hybrid = LinearDecodeStepModel(
                **{f: getattr(fitted, f) for f in fitted.__dataclass_fields__},
                prefill_model=model,
            )
            return hybrid, float(err_d)
        return fitted, float(max(err_p, err_d))


@dataclass(frozen=True)
class LinearDecodeStepModel(LinearStepModel):
    """Affine decode steps (closed form) with another model's exact prefill times.

    Made by ``LinearStepModel.fit(model, exact_prefill=True)``: prefill runs once per
    admission, so it can afford the exact model; decode runs in closed form.
    """

    prefill_model: Any = None

    def prefill_time_s(self, n_tokens: Any) -> Any:
        return self.prefill_model.prefill_time_s(n_tokens)

    def mixed_step_time_s(
        self, decode_tokens: int, kv_tokens: int, prefill_tokens: int, prefill_pairs: float = 0.0
    ) -> float:
        """The prefill model's mixed step when it has one (``step_time_s``), else a decode
        step plus a prefill iteration of the chunk."""
        return _sum_mixed(self, decode_tokens, kv_tokens, prefill_tokens, prefill_pairs,
                          self.prefill_model)


@dataclass(frozen=True, eq=False)
class TabulatedStepModel:
    """Decode steps ``base[B] + e K`` with ``base`` tabulated per batch size, exact prefill.

    A transformer's decode step is affine in the cached tokens ``K`` at a fixed batch ``B``
    (attention reads, or computes over, every cached token once), while its ``B`` dependence
    is not (weight GEMMs turn compute-bound at large batches, so no affine fit in ``B``
    holds over the whole range). Tabulating ``base[B] = decode(B, 0)`` for ``B = 0 ..
    max_batch`` keeps the closed form of ``k`` steps at a fixed batch::

        S(k) = k (base[B] + e K0) + e B k (k - 1) / 2

    Build with :meth:`from_model`, which also reports the largest relative error of the
    table against the model (0 up to rounding unless the model caps ``K``, e.g. sliding-window
    attention).
    """

    model: Any
    decode_base_table_s: tuple[float, ...]
    decode_s_per_kv_token: float
    kv_capacity_tokens: int
    max_batch: int
    #: memo of the mixed step's ``core(B, p)`` (see :meth:`mixed_step_time_s`)
    _mixed_core: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_model(
        cls, model: StepModel, *, max_batch: int | None = None, grid: int = 16
    ) -> tuple[TabulatedStepModel, float]:
        """Tabulate ``model``'s decode steps; returns the model and its largest relative
        error on a grid of batches up to ``max_batch`` and contexts up to the KV capacity."""
        top_b = int(max_batch if max_batch is not None else model.max_batch)
        cap = int(model.kv_capacity_tokens)
        if top_b < 1 or cap < 1:
            raise PlannerError("TabulatedStepModel: the model needs max_batch >= 1 and KV room")
        b = np.arange(top_b + 1)
        base = np.asarray(model.decode_step_time_s(b, np.zeros(top_b + 1)), dtype=float)
        k1 = float(cap)
        e = float((np.asarray(model.decode_step_time_s(1, k1), dtype=float) - base[1]) / k1)
        if not (math.isfinite(e) and e >= 0 and np.all(np.isfinite(base)) and base[1:].min() > 0):
            raise PlannerError("TabulatedStepModel: the model's decode steps are not positive")
        tab = cls(model, tuple(float(x) for x in base), max(e, 0.0), cap, int(model.max_batch))
        bsz = np.unique(np.geomspace(1, top_b, grid).round()).astype(np.int64)
        share = np.linspace(0.0, 1.0, grid)
        bb, ss = (x.ravel() for x in np.meshgrid(bsz, share))
        kk = np.floor(ss * cap)
        want = np.asarray(model.decode_step_time_s(bb, kk), dtype=float)
        err = float(np.abs(tab.decode_step_time_s(bb, kk) / want - 1.0).max())
        return tab, err

    def base_list(self, max_batch: int) -> list[float]:
        """``base[B]`` for ``B = 0 .. max_batch`` (beyond the table: from the model)."""
        t = list(self.decode_base_table_s)
        if max_batch + 1 > len(t):
            b = np.arange(len(t), max_batch + 1)
            more = np.asarray(self.model.decode_step_time_s(b, np.zeros(b.size)), dtype=float)
            t += [float(x) for x in more]
        return t[: max_batch + 1]

    def prefill_time_s(self, n_tokens: Any) -> Any:
        """The model's own prefill time."""
        return self.model.prefill_time_s(n_tokens)

    def mixed_step_time_s(
        self, decode_tokens: int, kv_tokens: int, prefill_tokens: int, prefill_pairs: float = 0.0
    ) -> float:
        """One chunked-prefill iteration: the model's own mixed step (``step_time_s`` of
        :class:`planner.perf.step.StepModel`, KV capped at the sliding window), or a decode
        step plus a prefill iteration for a model without one.

        The perf model's step is ``core(B, p) + e K + q pairs`` (decode attention reads
        each cached token once, prefill attention is FLOP-bound per pair), so without a
        sliding window ``core(B, p) = step_time_s(B, 0, p, 0)`` is memoised and the two
        linear terms added: the model's value to rounding, without a numpy call per step.
        """
        inner = self.model
        llm = getattr(inner, "llm", None)
        if (
            not prefill_tokens
            or not callable(getattr(inner, "step_time_s", None))
            or llm is None
            or getattr(llm, "sliding_window", None)
        ):
            return _sum_mixed(self, decode_tokens, kv_tokens, prefill_tokens, prefill_pairs,
                              inner)
        memo = self._mixed_core
        q = memo.get("pair_s")
        if q is None:
            big = 1e12
            q = memo["pair_s"] = (
                float(inner.step_time_s(0, 0, 1, big)) - float(inner.step_time_s(0, 0, 1, 0.0))
            ) / big
        key = (decode_tokens, prefill_tokens)
        core = memo.get(key)
        if core is None:
            if len(memo) > 500_000:
                memo.clear()
                memo["pair_s"] = q
            core = memo[key] = float(inner.step_time_s(decode_tokens, 0, prefill_tokens, 0.0))
        return core + self.decode_s_per_kv_token * kv_tokens + q * prefill_pairs

    def decode_step_time_s(self, batch: Any, kv_tokens: Any) -> Any:
        """``base[B] + e K``."""
        e = self.decode_s_per_kv_token
        if isinstance(batch, int | np.integer) and isinstance(kv_tokens, int | float | np.number):
            return self.base_list(int(batch))[int(batch)] + e * kv_tokens
        b = np.asarray(batch, dtype=np.int64)
        table = np.asarray(self.base_list(int(b.max()) if b.size else 0))
        return table[b] + e * np.asarray(kv_tokens, dtype=float)


def _perf_mixed(model: Any, d: int, kv: int, p: int, pairs: float) -> float:
    """``model.step_time_s(d, kv, p, pairs)`` with the decode context capped at the sliding
    window, as :meth:`planner.perf.step.StepModel.decode_step_time_s` caps it."""
    llm = getattr(model, "llm", None)
    w = getattr(llm, "sliding_window", None) if llm is not None else None
    if w and kv > d * w:
        kv = d * w
    return float(model.step_time_s(d, kv, p, pairs))


def _sum_mixed(model: Any, d: int, kv: int, p: int, pairs: float, inner: Any) -> float:
    """Mixed step of ``model`` whose prefill (and maybe mixed steps) come from ``inner``."""
    if not p:
        return float(model.decode_step_time_s(d, kv)) if d else 0.0
    if callable(getattr(inner, "step_time_s", None)):
        return _perf_mixed(inner, d, kv, p, pairs)
    t = float(inner.prefill_time_s(p))
    return t + float(model.decode_step_time_s(d, kv)) if d else t


def mixed_step_function(model: StepModel):
    """``f(decode_tokens, kv_tokens, prefill_tokens, prefill_pairs) -> seconds`` of one
    chunked-prefill iteration of ``model`` (floats; 0 for an empty iteration).

    * a model with ``mixed_step_time_s`` (:class:`LinearStepModel`,
      :class:`TabulatedStepModel`, any user model): that;
    * :class:`planner.perf.step.StepModel` (``step_time_s``): its mixed step, the decode
      context capped at the sliding window as its decode step caps it;
    * any other model: ``decode_step_time_s(B, K) + prefill_time_s(p)`` (no overlap).

    An iteration without prompt tokens is always ``decode_step_time_s(B, K)``.
    """
    own = getattr(model, "mixed_step_time_s", None)
    dec = model.decode_step_time_s

    if callable(own):

        def mixed(d: int, kv: int, p: int, pairs: float) -> float:
            if not p:
                return float(dec(d, kv)) if d else 0.0
            return float(own(d, kv, p, pairs))

        return mixed

    def generic(d: int, kv: int, p: int, pairs: float) -> float:
        return _sum_mixed(model, d, kv, p, pairs, model)

    return generic


def prefill_pairs_function(model: StepModel):
    """``P(L)``: causal (query, key) attention pairs of a prompt's first ``L`` tokens.

    ``L (L + 1) / 2``, or with a sliding window ``w < L``: ``w (w + 1) / 2 + (L - w) w``
    (:meth:`planner.perf.step.StepModel.prefill_pairs`, in pure Python). The window is the
    model's ``llm.sliding_window`` (or its wrapped model's). A chunk covering prompt tokens
    ``[a, b)`` has ``P(b) - P(a)`` pairs.
    """
    m = model
    for _ in range(3):
        if getattr(m, "llm", None) is not None:
            break
        m = getattr(m, "model", None) or getattr(m, "prefill_model", None)
        if m is None:
            break
    llm = getattr(m, "llm", None) if m is not None else None
    w = getattr(llm, "sliding_window", None) if llm is not None else None
    if w:
        w = int(w)
        head = w * (w + 1) / 2.0

        def pairs_w(n: int) -> float:
            return n * (n + 1.0) / 2.0 if n <= w else head + (n - w) * float(w)

        return pairs_w

    def pairs(n: int) -> float:
        return n * (n + 1.0) / 2.0

    return pairs


class DecodeKernel:
    """Time of ``k`` consecutive decode steps, and the step that first covers a delay.

    Uses the closed form of a :class:`LinearStepModel` or :class:`TabulatedStepModel` (the
    step is ``alpha(B) + e K``), else evaluates ``decode_step_time_s`` vectorised over the
    ``k`` steps. Not a hot path for the generic case: one numpy call per segment.
    ``max_batch`` bounds the batches asked for (sizes a tabulated model's table).
    """

    __slots__ = ("closed", "model", "_c", "_d", "_e", "_base")

    def __init__(self, model: StepModel, max_batch: int | None = None):
        self.model = model
        self._base = None
        self.closed = isinstance(model, LinearStepModel | TabulatedStepModel)
        if isinstance(model, LinearStepModel):
            self._c = float(model.decode_base_s)
            self._d = float(model.decode_s_per_seq)
            self._e = float(model.decode_s_per_kv_token)
        elif self.closed:
            self._c = self._d = 0.0
            self._e = float(model.decode_s_per_kv_token)
            self._base = model.base_list(int(max_batch or model.max_batch))

    def base_list(self, max_batch: int) -> list[float]:
        """``alpha(B) - e K = base[B]`` for ``B = 0 .. max_batch`` (closed-form models)."""
        if self._base is not None:
            if len(self._base) < max_batch + 1:
                self._base = self.model.base_list(max_batch)
            return self._base[: max_batch + 1]
        c, d = self._c, self._d
        return [c + d * b for b in range(max_batch + 1)]

    def _alpha0(self, batch: int) -> float:
        if self._base is not None:
            if batch >= len(self._base):
                self._base = self.model.base_list(batch)
            return self._base[batch]
        return self._c + self._d * batch

    def span(self, batch: int, kv0: int, k: int) -> float:
        """Seconds of ``k`` steps starting with ``kv0`` cached tokens."""
        if k <= 0:
            return 0.0
        if self.closed:
            e = self._e
            return k * (self._alpha0(batch) + e * kv0) + e * batch * (k * (k - 1) // 2)
        kv = kv0 + batch * np.arange(k, dtype=np.int64)
        steps = np.asarray(self.model.decode_step_time_s(batch, kv), dtype=float)
        return float(np.cumsum(steps)[-1])

    def cover(self, batch: int, kv0: int, dt: float, kmax: int) -> tuple[int, float]:
        """Smallest ``k`` in ``[1, kmax]`` with ``span(k) >= dt`` (or ``kmax``), and ``span(k)``.

        Closed form: the positive root of ``e B/2 k^2 + (alpha - e B/2) k - dt = 0`` with
        ``alpha = base(B) + e K0``, rounded up, then checked against ``span`` itself so the
        answer is exactly what step-by-step accumulation would give (up to rounding).
        """
        if self.closed:
            e = self._e
            alpha = self._alpha0(batch) + e * kv0
            beta = e * batch
            if dt <= alpha:
                k = 1
            else:
                lin = alpha - 0.5 * beta
                if beta > 0.0:
                    root = 2.0 * dt / (lin + math.sqrt(lin * lin + 2.0 * beta * dt))
                else:
                    root = dt / alpha
                k = max(1, math.ceil(root))
            if k >= kmax:
                return kmax, self.span(batch, kv0, kmax)
            s = k * alpha + beta * (k * (k - 1) // 2)
            while s < dt and k < kmax:
                k += 1
                s = k * alpha + beta * (k * (k - 1) // 2)
            while k > 1:
                s_prev = (k - 1) * alpha + beta * ((k - 1) * (k - 2) // 2)
                if s_prev < dt:
                    break
                k -= 1
                s = s_prev
            return k, s
        kv = kv0 + batch * np.arange(kmax, dtype=np.int64)
        steps = np.asarray(self.model.decode_step_time_s(batch, kv), dtype=float)
        cum = np.cumsum(steps)
        k = int(np.searchsorted(cum, dt, side="left")) + 1
        k = min(max(k, 1), kmax)
        return k, float(cum[k - 1])


def decode_kernel(model: StepModel) -> DecodeKernel:
    """The :class:`DecodeKernel` for ``model``."""
    return DecodeKernel(model)
