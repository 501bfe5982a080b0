"""Hosted-API bills.

Per request (source article 000: input and output priced apart, cached prompts cheaper,
Batch API at ~50%):

    uncached_in = (1 - cached_share) x input_tokens
    cached_in   = cached_share x input_tokens
    realtime    = uncached_in x p_in + cached_in x p_cached + output_tokens x p_out
    batch       = uncached_in x p_batch_in + cached_in x p_cached_batch + output_tokens x p_batch_out
    usd/request = [(1 - batch_share) x realtime + batch_share x batch] / 1e6 x (1 - discount)

Prices are USD per million tokens. Where an offering has no cached (or batch) price, the plain
input (or realtime) price applies. Long-context tiers: when the prompt of one call exceeds the
tier threshold, the long-context input and output prices apply to that whole call (as Anthropic
and Google bill). ``gross_margin`` turns a list price into the provider's cost:
cost = price x (1 - margin) (article 004 assumes a 75% margin).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ApiPrices:
    """Resolved prices of one offering, USD per million tokens."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float
    cached_input_usd_per_mtok: float | None = None
    batch_input_usd_per_mtok: float | None = None
    batch_output_usd_per_mtok: float | None = None
    long_context_threshold_tokens: float | None = None
    long_input_usd_per_mtok: float | None = None
    long_output_usd_per_mtok: float | None = None


def api_cost_per_request(
    prices: ApiPrices,
    input_tokens,
    output_tokens,
    *,
    cached_share=0.0,
    batch_share=0.0,
    calls_per_request=1.0,
    discount=0.0,
    gross_margin=None,
) -> dict[str, np.ndarray | float]:
    """USD per request split into components.

    Returns
    -------
    dict
        ``input``, ``cached_input``, ``output`` (realtime part), ``batch_input``,
        ``batch_output`` (batch part), each USD per request after discount and margin.
    """
    p = prices
    p_in, p_out = p.input_usd_per_mtok, p.output_usd_per_mtok
    if p.long_context_threshold_tokens is not None and p.long_input_usd_per_mtok is not None:
        per_call = np.asarray(input_tokens, dtype=float) / calls_per_request
        long = per_call > p.long_context_threshold_tokens
        p_in = np.where(long, p.long_input_usd_per_mtok, p_in)
        if p.long_output_usd_per_mtok is not None:
            p_out = np.where(long, p.long_output_usd_per_mtok, p_out)
    p_cached = p.cached_input_usd_per_mtok if p.cached_input_usd_per_mtok is not None else p_in
    # batch prices: the sheet's own, or the realtime price where there is none; on a long
    # context tier the batch discount of the base tier is kept (batch / realtime ratio)
    b_in = p.batch_input_usd_per_mtok if p.batch_input_usd_per_mtok is not None else p_in
    b_out = p.batch_output_usd_per_mtok if p.batch_output_usd_per_mtok is not None else p_out
    if p_in is not p.input_usd_per_mtok and p.batch_input_usd_per_mtok is not None:
        r_in = _ratio(p.batch_input_usd_per_mtok, p.input_usd_per_mtok)
        b_in = np.where(p_in == p.input_usd_per_mtok, b_in, p_in * r_in)
    if p_out is not p.output_usd_per_mtok and p.batch_output_usd_per_mtok is not None:
        r_out = _ratio(p.batch_output_usd_per_mtok, p.output_usd_per_mtok)
        b_out = np.where(p_out == p.output_usd_per_mtok, b_out, p_out * r_out)
    # the same products as the formula, in its order; a share that is exactly 0 (a scalar:
    # not uncertain) gives exactly 0 for its components without a pass over the samples
    # (the products' value for finite inputs), and a factor of exactly 1 is not applied
    scale = 1.0 - discount
    if gross_margin:
        scale = scale * (1.0 - gross_margin)
    scale = scale / 1e6
    uncached = (1.0 - cached_share) * input_tokens
    cached = 0.0 if _zero(cached_share) else cached_share * input_tokens
    rt = 1.0 - batch_share
    out: dict[str, np.ndarray | float] = {}
    if _zero(rt):
        out["input"] = out["cached_input"] = out["output"] = 0.0
    else:
        one = _one(rt)
        out["input"] = (uncached if one else rt * uncached) * p_in * scale
        out["cached_input"] = (0.0 if _zero(cached) else
                               (cached if one else rt * cached) * p_cached * scale)
        out["output"] = (output_tokens if one else rt * output_tokens) * p_out * scale
    if _zero(batch_share):
        out["batch_input"] = out["batch_output"] = 0.0
    else:
        b_cached = (p_cached * _ratio(b_in, p_in) if p.cached_input_usd_per_mtok is not None
                    else b_in)
        out["batch_input"] = batch_share * (uncached * b_in + cached * b_cached) * scale
        out["batch_output"] = batch_share * output_tokens * b_out * scale
    return out


def _zero(x) -> bool:
    """``x`` is a number (not an array of samples) equal to 0."""
    return isinstance(x, int | float) and x == 0.0


def _one(x) -> bool:
    """``x`` is a number (not an array of samples) equal to 1."""
    return isinstance(x, int | float) and x == 1.0


def _ratio(num, den):
    """num / den, or 1 where den is 0 (no discount can be inferred from a free price)."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.ones(np.broadcast(num, den).shape), where=den > 0)


def request_fee_usd(
    usd_per_million_requests=None, gb=None, seconds=None, usd_per_gb_s=None
) -> float:
    """USD per request of a serving-stack fee.

    Either a flat fee per million requests, or a serverless function billed by
    memory x duration: gb x seconds x usd_per_gb_s (article 003: AWS Lambda 128 MB, 5 s).
    """
    if usd_per_million_requests is not None:
        return usd_per_million_requests / 1e6
    return gb * seconds * usd_per_gb_s


# --------------------------------------------------------------------------------------------
# price resolution shared by the engines (pure; values may be numpy arrays of samples)

#: ApiDeployment fields that override catalog prices.
API_PRICE_FIELDS = (
    "input_usd_per_mtok", "output_usd_per_mtok", "cached_input_usd_per_mtok",
    "batch_input_usd_per_mtok", "batch_output_usd_per_mtok", "long_context_threshold_tokens",
    "long_input_usd_per_mtok", "long_output_usd_per_mtok",
)


def resolve_api_prices(row, overrides, *, fine_tuned: bool = False,
                       offering: str | None = None) -> ApiPrices:
    """An offering's prices: scenario override, else fine-tuned price, else catalog row.

    ``overrides`` maps :data:`API_PRICE_FIELDS` names to the scenario's values (numbers or
    arrays of samples; missing or None = not overridden). When the realtime price is overridden
    but its batch price is not, the batch price keeps the catalog's batch / realtime ratio
    (a 50% batch discount stays a 50% discount): ``batch = realtime x catalog_batch /
    catalog_realtime``.
    """
    from planner.errors import PlannerError

    def pick(name: str, ft_name: str | None = None):
        v = overrides.get(name)
        if v is not None:
            return v
        if fine_tuned and ft_name is not None and row.get(ft_name) is not None:
            return row[ft_name]
        return row.get(name)

    p_in = pick("input_usd_per_mtok", "ft_input_usd_per_mtok")
    p_out = pick("output_usd_per_mtok", "ft_output_usd_per_mtok")
    if p_in is None or p_out is None:
        raise PlannerError(f"API offering {offering!r}: no input/output price; set them")

    def batch(name: str, realtime, base: str):
        v = overrides.get(name)
        if v is not None:
            return v
        b, r = row.get(name), row.get(base)
        if b is None:
            return None
        return realtime * b / r if r else realtime

    return ApiPrices(
        input_usd_per_mtok=p_in,
        output_usd_per_mtok=p_out,
        cached_input_usd_per_mtok=pick("cached_input_usd_per_mtok"),
        batch_input_usd_per_mtok=batch("batch_input_usd_per_mtok", p_in, "input_usd_per_mtok"),
        batch_output_usd_per_mtok=batch("batch_output_usd_per_mtok", p_out,
                                        "output_usd_per_mtok"),
        long_context_threshold_tokens=pick("long_context_threshold_tokens"),
        long_input_usd_per_mtok=pick("long_input_usd_per_mtok"),
        long_output_usd_per_mtok=pick("long_output_usd_per_mtok"),
    )
