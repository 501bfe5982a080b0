"""Generated requests of workload classes: the one generator of ``planner simulate`` and
``planner optimize --verify``.

A class to generate is a :class:`ClassStream`: its expected requests in each simulated hour
(the caller's model of volume: :func:`planner.workload.hourly_rates` for ``planner simulate``,
the plan's routed rates for the optimiser's verification), its prompt and output lengths
(:class:`TokenLength`, resolved by :func:`token_length` from the scenario's
:class:`~planner.config.Length` with :func:`planner.workload.resolve_length`), a fixed context
added to every prompt, and its **prefix-cache hit share** (the workload's
``prefix_cache_hit_share``: the share of each prompt a self-hosted replica finds in its KV
cache and does not prefill). The API billing share ``cached_share`` plays no part here.

:func:`generate_class_requests` draws Poisson (or bursty) arrivals at those rates
(:mod:`planner.arrivals`), lengths per request, and sets
``cached_input_tokens = round(prefix_cache_hit_share x input_tokens)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from planner.config import Length, med
from planner.requests import RequestTable

__all__ = ["ClassStream", "TokenLength", "generate_class_requests", "token_length"]


@dataclass(frozen=True)
class TokenLength:
    """Per-request token counts (a :class:`planner.arrivals.LengthSampler`).

    ``factor x ratio x draw`` when ``dist`` is a distribution of the count (words, chars or
    tokens; ``ratio`` converts it to tokens), else ``factor x tokens``, spread lognormally
    with mean ``tokens`` and coefficient of variation ``cv`` when ``cv > 0``
    (``sigma^2 = ln(1 + cv^2)``). Rounded to whole tokens, never negative.
    """

    tokens: float
    factor: float = 1.0
    dist: Any = None
    ratio: float = 1.0
    cv: float = 0.0

    @property
    def mean_tokens(self) -> float:
        """Tokens per request at the median length (before rounding)."""
        return self.tokens * self.factor

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.dist is not None:
            x = np.asarray(self.dist.sample(rng, n), dtype=float) * self.ratio
        elif self.cv > 0:
            s2 = math.log1p(self.cv * self.cv)
            x = self.tokens * np.exp(math.sqrt(s2) * rng.standard_normal(n) - 0.5 * s2)
        else:
            x = np.full(n, self.tokens)
        return np.maximum(np.rint(x * self.factor), 0.0)


def token_length(length: Length | None, tokenizer: str | None, catalog: Any, *,
                 factor: float = 1.0, cv: float = 0.0) -> TokenLength:
    """The length sampler of a scenario :class:`~planner.config.Length` under a tokenizer.

    Tokens as :func:`planner.workload.resolve_length` resolves them (words/chars x the
    tokenizer's ratio), times ``factor`` (calls per request, samples per call). A count given
    as a distribution is drawn per request (at the same tokens-per-unit ratio); a fixed count
    is used as is, or spread lognormally with ``cv``. ``None`` is zero tokens.
    """
    from planner.distributions import is_distribution
    from planner.workload import resolve_length

    if length is None:
        return TokenLength(0.0)
    tc = resolve_length(length, tokenizer, catalog)
    count = next(getattr(length, k) for k in ("tokens", "words", "chars")
                 if getattr(length, k) is not None)
    if is_distribution(count):
        m = float(med(count))
        return TokenLength(tc.tokens, factor, count, tc.tokens / m if m > 0 else 0.0)
    return TokenLength(tc.tokens, factor, cv=cv)


@dataclass(frozen=True)
class ClassStream:
    """One class to generate.

    Attributes
    ----------
    name : label of the requests (a workload class, or ``class@pool`` in the verification)
    rates_per_hour : expected requests in each simulated hour (hour 0 first)
    input, output : samplers of the prompt (without ``fixed_context_tokens``) and output
        tokens (:class:`TokenLength` or any :class:`planner.arrivals.LengthSampler`)
    fixed_context_tokens : tokens added to every prompt
    prefix_cache_hit_share : share of each prompt (context included) not prefilled
    """

    name: str
    rates_per_hour: tuple[float, ...]
    input: Any
    output: Any
    fixed_context_tokens: int = 0
    prefix_cache_hit_share: float = 0.0


def generate_class_requests(streams: Sequence[ClassStream], hours: int,
                            rng: np.random.Generator, *, burstiness: Any = None) -> RequestTable:
    """Requests of ``streams`` over ``hours`` hours, merged by arrival time.

    Arrivals: :func:`planner.arrivals.generate_requests` at each stream's hourly rates
    (Poisson, or ``burstiness``: :class:`~planner.arrivals.GammaRenewal` /
    :class:`~planner.arrivals.MMPP2`), one child generator per stream. Prompt = input draw +
    ``fixed_context_tokens``; output at least 1 token; ``cached_input_tokens =
    round(prefix_cache_hit_share x prompt)``.
    """
    from planner.arrivals import ArrivalClass, generate_requests

    arrival = [ArrivalClass(s.name, 0.0, s.input, s.output,
                            rates_per_hour=tuple(float(r) for r in s.rates_per_hour),
                            burstiness=burstiness,
                            fixed_context_tokens=int(s.fixed_context_tokens))
               for s in streams]
    reqs = generate_requests(arrival, hours, rng)
    by_name = {s.name: float(s.prefix_cache_hit_share) for s in streams}
    share = np.array([by_name[c] for c in reqs.class_names], dtype=float)
    cached = np.rint(share[reqs.class_idx] * reqs.input_tokens).astype(np.int64)
    return RequestTable(reqs.arrival_s, reqs.class_idx, reqs.class_names, reqs.input_tokens,
                        reqs.output_tokens, cached)
