"""Workload: from a validated scenario to request and token volumes per class.

Formulas (per workload class, per month; all work on numpy arrays as well as floats):

- LLM requests/day = requests_per_day x (1 - response_cache_hit_share) x (1 + retry_share)
- input tokens/request = input + calls_per_request x context
- output tokens/request = calls_per_request x samples_per_call x output
- days/month = hours_per_month / 24 (730 h -> 30.42 days)
- peak requests/s = requests/day x max hourly weight / 3600, where the 24 hourly weights of the
  diurnal profile sum to 1; with the flat profile and ``planning.peak_to_average`` set, the
  peak is the mean rate x peak_to_average.

Lengths given in words or characters are converted with the tokenizer ratio of the serving
model (catalog ``tokenizers.csv``), so the same text costs a different number of tokens on
different models (source article 000 measured 1.21 tokens/word and 0.98 tokens/character for
GPT-4o; article 001 used 2 tokens per Chinese character).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from planner.config import PROFILES, Length, Scenario, WorkloadClass, med


def diurnal_weights(profile: str | Sequence[float]) -> np.ndarray:
    """Hourly weights (24, or 168 for a week) that sum to 1.

    Parameters
    ----------
    profile : str or sequence of float
        A name in :data:`planner.config.PROFILES` or explicit non-negative weights.
    """
    w = np.asarray(PROFILES[profile] if isinstance(profile, str) else profile, dtype=float)
    if w.ndim != 1 or w.size not in (24, 168) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("a diurnal profile has 24 or 168 non-negative weights, not all zero")
    return w / w.sum()


def peak_factor(profile: str | Sequence[float], peak_to_average: float | None = None) -> float:
    """Peak-hour rate / mean rate for a profile (x peak_to_average when the profile is flat)."""
    w = diurnal_weights(profile)
    f = float(w.max() * w.size)
    if peak_to_average is not None and is_flat(w):
        f = float(peak_to_average)
    return f


def hourly_rates(
    requests_per_day: float,
    weights: Sequence[float] | np.ndarray,
    batch_share: float = 0.0,
    periods: int | None = None,
) -> np.ndarray:
    """Expected requests in each hour of a profile, batch-eligible requests spread evenly.

    ``d_h = requests_per_day x days x w_h`` with ``w`` the weights normalised to sum to 1 and
    ``days = len(w) / 24`` (1 for a day, 7 for a week); the batch-eligible share ``b`` is
    deferrable, so it is spread evenly over the hours:

        rate_h = (1 - b) x d_h + b x mean(d)

    The rates sum to ``requests_per_day x days``. ``periods`` tiles a 24-hour profile over a
    168-hour week (the per-hour volume does not change). Requests/s = rate / 3600.
    """
    w = np.asarray(weights)
    return hourly_rates_rows(requests_per_day, w, batch_share,
                             w.size if periods is None else periods)[0]


def hourly_rates_rows(requests_per_day: Any, weights: Any, batch_share: Any,
                      periods: int) -> np.ndarray:
    """:func:`hourly_rates` for ``n`` values at once: ``(n, periods)`` requests per hour from
    ``requests_per_day`` and ``batch_share`` (scalars or ``(n,)``)."""
    req = np.atleast_1d(np.asarray(requests_per_day, dtype=float))[:, None]
    b = np.atleast_1d(np.asarray(batch_share, dtype=float))[:, None]
    w = np.asarray(weights, dtype=float)
    w = w / w.sum()
    d = req * (w.size / 24.0) * w
    if periods != w.size:
        if periods % w.size:
            raise ValueError(f"a {w.size}-hour profile does not tile {periods} hours")
        d = np.tile(d, (1, periods // w.size))
    return (1.0 - b) * d + b * d.mean(axis=-1, keepdims=True)


#: Tolerances of the one flatness test (as :func:`numpy.allclose`).
FLAT_RTOL, FLAT_ATOL = 1e-5, 1e-8


def is_flat(hourly: Any) -> Any:
    """True where a profile or load is the same in every hour (last axis), to the
    tolerances: the one flatness rule behind ``planning.peak_to_average``."""
    h = np.asarray(hourly, dtype=float)
    first = h[..., :1]
    return (np.abs(h - first) <= FLAT_ATOL + FLAT_RTOL * np.abs(first)).all(axis=-1)


def busiest_hour(hourly_load) -> tuple[int, ...]:
    """The hour with the highest load: the index of the largest entry of ``hourly_load``.

    ``hourly_load``'s last axis is the hour of the profile; leading axes (e.g. sampled
    scenario and pool) are searched as well, and the whole index is returned (a 1-d load
    gives ``(hour,)``). The first such entry wins a tie. The load is what the caller sizes
    against, built from :func:`hourly_rates`, i.e. with batch-eligible requests spread
    evenly over the hours: the total expected requests of the simulated classes
    (``planner simulate``'s report hour) or a pool's load in replicas (``optimize --verify``).
    """
    a = np.asarray(hourly_load, dtype=float)
    if a.size == 0:
        raise ValueError("busiest_hour: no hours")
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(a)), a.shape))


@dataclass(frozen=True)
class TokenCount:
    """A length resolved to tokens, with how it was derived."""

    tokens: float
    basis: str


def resolve_length(
    length: Length | None, tokenizer: str | None, catalog, *, use_median: bool = True
) -> TokenCount:
    """Tokens for a :class:`~planner.config.Length` under a tokenizer family.

    tokens = words x tokens_per_word, or chars x tokens_per_char, or tokens as given.
    """
    if length is None:
        return TokenCount(0.0, "none")
    get = med if use_median else (lambda x: x)
    if length.tokens is not None:
        return TokenCount(get(length.tokens), "tokens as given")
    unit, count = ("word", length.words) if length.words is not None else ("char", length.chars)
    if length.tokens_per_unit is not None:
        ratio = get(length.tokens_per_unit)
        basis = f"{get(count):g} {unit}s x {ratio:g} tokens/{unit} (scenario)"
    else:
        row = catalog.tokens_per_unit(length.tokenizer or tokenizer or "", length.lang, unit)
        ratio = float(row["tokens_per_unit"])
        basis = (
            f"{get(count):g} {unit}s x {ratio:g} tokens/{unit} "
            f"(tokenizers.csv {row['tokenizer']}/{row['lang']}, {row['source']}, {row['as_of']})"
        )
    return TokenCount(get(count) * ratio, basis)


@dataclass(frozen=True)
class ClassLoad:
    """Volumes of one workload class as served by one deployment (tokenizer-specific)."""

    name: str
    requests_per_day: float  # LLM requests after response cache and retries
    input_tokens: float  # per request, context included
    output_tokens: float  # per request, all calls and samples
    cached_share: float  # API billing: input tokens billed at the cached-input price
    batch_share: float
    peak_to_mean: float
    weights: np.ndarray = field(repr=False)
    basis: dict[str, str] = field(default_factory=dict)

    def requests_per_month(self, hours_per_month: float) -> float:
        return self.requests_per_day * hours_per_month / 24.0

    def tokens_per_month(self, hours_per_month: float) -> float:
        return self.requests_per_month(hours_per_month) * (self.input_tokens + self.output_tokens)

    @property
    def mean_requests_per_s(self) -> float:
        return self.requests_per_day / 86400.0

    @property
    def peak_requests_per_s(self) -> float:
        return self.mean_requests_per_s * self.peak_to_mean

    def hourly_requests_per_s(self) -> np.ndarray:
        """Mean request rate in each hour of the profile (24 or 168 values)."""
        days = self.weights.size / 24
        return self.requests_per_day * days * self.weights / 3600.0

    def hourly_rates(self, periods: int | None = None) -> np.ndarray:
        """Expected requests in each hour, batch-eligible ones spread evenly
        (:func:`hourly_rates`)."""
        return hourly_rates(self.requests_per_day, self.weights, self.batch_share, periods)


def class_load(
    sc: Scenario, name: str, wc: WorkloadClass, tokenizer: str | None, catalog
) -> ClassLoad:
    """Resolve one class's volumes at the medians of its inputs."""
    retry = med(wc.retry_share) if wc.retry_share is not None else med(sc.planning.retry_share)
    cache_hit = med(wc.response_cache_hit_share)
    calls = med(wc.calls_per_request)
    samples = med(wc.samples_per_call)
    inp = resolve_length(wc.input, tokenizer, catalog)
    ctx = resolve_length(wc.context, tokenizer, catalog)
    out = resolve_length(wc.output, tokenizer, catalog)
    req = med(wc.requests_per_day) * (1.0 - cache_hit) * (1.0 + retry)
    basis = {
        "requests_per_day": (
            f"{med(wc.requests_per_day):g} x (1 - {cache_hit:g} cache hits) x (1 + {retry:g} "
            "retries)"
        ),
        "input_tokens": f"input [{inp.basis}] + {calls:g} calls x context [{ctx.basis}]",
        "output_tokens": f"{calls:g} calls x {samples:g} samples x output [{out.basis}]",
    }
    return ClassLoad(
        name=name,
        requests_per_day=req,
        input_tokens=inp.tokens + calls * ctx.tokens,
        output_tokens=calls * samples * out.tokens,
        cached_share=med(wc.cached_share),
        batch_share=med(wc.batch_share),
        peak_to_mean=peak_factor(wc.diurnal, sc.planning.peak_to_average),
        weights=diurnal_weights(wc.diurnal),
        basis=basis,
    )


# --------------------------------------------------------------------------------------------
# array form (Monte Carlo engine): the arithmetic of class_load, in the same order


def class_volumes(
    requests_per_day,
    input_tokens,
    output_tokens,
    *,
    context_tokens=0.0,
    calls_per_request=1.0,
    samples_per_call=1.0,
    response_cache_hit_share=0.0,
    retry_share=0.0,
):
    """Per-class volumes on floats or numpy arrays (broadcasting), as :func:`class_load`.

    - LLM requests/day = requests_per_day x (1 - response_cache_hit_share) x (1 + retry_share)
    - input tokens/request = input + calls_per_request x context
    - output tokens/request = calls_per_request x samples_per_call x output

    Returns
    -------
    (llm_requests_per_day, input_tokens_per_request, output_tokens_per_request)
    """
    req = requests_per_day * (1.0 - response_cache_hit_share) * (1.0 + retry_share)
    inp = input_tokens + calls_per_request * context_tokens
    out = calls_per_request * samples_per_call * output_tokens
    return req, inp, out


def hourly_load_extremes(coef, constant, weights, *, need_min: bool = False):
    """Largest (and smallest) hourly load over a profile, for many samples at once.

    The load in hour ``h`` is ``L_h = constant + sum_c coef[c] x weights[c, h]`` (``coef >= 0``,
    one array per class); the deterministic engine's hourly load of a self-hosted pool has this
    form with ``coef[c] = (1 - batch_share) x requests_per_day x days / 3600 / capacity`` and the
    batch-eligible share spread evenly (in ``constant``). Because every ``coef[c] >= 0``, an hour
    whose weights are all <= another hour's can never hold the maximum, so only the
    non-dominated hours are evaluated (usually one to a few of the 24 or 168).

    Parameters
    ----------
    coef : sequence of float or array, length C
    constant : float or array
    weights : (C, P) array_like
        Hourly weights per class (non-negative).
    need_min : bool
        Also return the smallest hourly load and the load of hour 0.

    Returns
    -------
    peak, or (peak, low, first) when ``need_min``.
    """
    w = np.asarray(weights, dtype=float)
    peak = _extreme_load(coef, constant, w, _undominated_hours(w, larger=True), np.maximum)
    if not need_min:
        return peak
    low = _extreme_load(coef, constant, w, _undominated_hours(w, larger=False), np.minimum)
    first = _extreme_load(coef, constant, w, [0], np.maximum)
    return peak, low, first


def _extreme_load(coef, constant, w: np.ndarray, hours: list[int], pick):
    """``pick`` (np.maximum or np.minimum) of ``constant + sum_c coef[c] w[c, h]`` over hours."""
    best = None
    for h in hours:
        lh = constant
        for c, a in enumerate(coef):
            lh = lh + a * w[c, h]
        best = lh if best is None else pick(best, lh)
    return best


#: :func:`_undominated_hours` by weights (a pool's profile is fixed: the vectorised model asks
#: again on every evaluation).
_UNDOMINATED: dict[tuple, tuple[int, ...]] = {}


def _undominated_hours(w: np.ndarray, *, larger: bool) -> list[int]:
    """Hours not dominated by another hour (weights all >= it, one larger or an earlier tie)."""
    key = (w.shape, w.tobytes(), larger)
    got = _UNDOMINATED.get(key)
    if got is None:
        if len(_UNDOMINATED) >= 256:
            _UNDOMINATED.clear()
        got = _UNDOMINATED[key] = tuple(_undominated_hours_of(w, larger))
    return list(got)


def _undominated_hours_of(w: np.ndarray, larger: bool) -> list[int]:
    s = w if larger else -w
    p = s.shape[1]
    ge = (s[:, None, :] >= s[:, :, None]).all(axis=0)  # [h, g]: hour g >= hour h everywhere
    gt = (s[:, None, :] > s[:, :, None]).any(axis=0)
    earlier = np.arange(p)[None, :] < np.arange(p)[:, None]
    dominated = ge & (gt | earlier)
    np.fill_diagonal(dominated, False)
    return [int(h) for h in np.flatnonzero(~dominated.any(axis=1))]
