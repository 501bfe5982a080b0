"""Open-loop capacity of a replica at a latency SLO percentile (requests arriving at a rate).

:func:`planner.perf.replica_capacity` finds the largest closed-loop concurrency whose mean
TTFT and TPOT meet the SLO. A planner sizes for an open stream of requests instead: they
arrive at ``lam`` requests/s (Poisson, or burstier), their lengths vary, and TTFT includes the
wait behind other prompts. This module gives the latency *percentiles* of one replica at an
arrival rate and the largest rate that meets the SLO percentile, from the same step model
(:class:`planner.perf.step.StepModel`) the simulator runs.

The replica (vLLM V1 style chunked prefill, ``C = max_tokens_per_step`` tokens per step)
alternates between two kinds of step:

* **decode steps** ``t_d = T(d, K)``: the ``d`` running requests each produce a token;
* **full steps** ``t_f = T(d, K, C - d, pairs)``: the same decodes plus ``C - d`` tokens of
  waiting prompts (first come, first served), taken whenever a prompt is waiting.

Flow balance at rate ``lam`` with ``n = I (1 - h)`` prompt tokens to prefill per request
(``h`` the prefix-cache hit share) and ``O`` output tokens:

* share of time in full steps (prefill utilisation) ``rho = lam n t_f / (C - d)``;
* steps per second ``s = rho / t_f + (1 - rho) / t_d``, and ``d = lam O / s`` (each step
  gives every running request one token), solved as a fixed point (``K = d (I + O / 2)``).

**TPOT** of a request is the mean of the step times during its ``O`` decode steps:
``t_d + (t_f - t_d) f`` with ``f`` the share of those steps that are full; the prompt tokens
that arrive during its life are a compound renewal sum (mean ``lam L n``, variance
``lam L n^2 (cv_n^2 + c_a^2)`` for arrivals with squared coefficient of variation ``c_a^2``), so
the count is taken as ``D Poisson(m / D)`` prompts with ``D = c_r^2 + c_n^2`` (``c_r^2 = c_a^2
/ c``: a replica of ``c`` gets about every c-th request of the pool; exact for
Poisson arrivals of equal prompts, and it keeps the skew of a small count: a few long prompts
in a short life), over a life of ``O x`` the request's own TPOT (a request that meets more
prompts lives longer and meets more). The decode batch a life averages over is not the mean
``d``: the requests overlapping it arrive as a renewal stream, so it has variance ``(2/3) d
c_r^2``, amplified by the batch's feedback on its own step times (:func:`_batch_swing`);
the step times are taken at lognormal nodes of that batch. A request decodes alongside
itself and, in a stream burstier than Poisson (``c_r^2 > 1``), the clump it arrived in: the
nodes are centred on its Palm batch ``d + G c_r^2`` and the clump's prompts come with its
batch (:func:`_clump_batch`).
Output lengths vary lognormally (``cv_out``); the percentile is taken over the mixture.

**TTFT** of a request is the wait for the prefill server plus its own prefill: the prefill
server works ``C - d`` tokens per full step, so a prompt of ``n`` tokens is ``S = n t_f /
(C - d)`` of its work; the wait is that of a G/G/c queue over the ``c`` replicas of the pool
(the router sends each request to the replica with the fewest requests) for the share of
prompts whose queue the router sees behind the decode counts (:func:`_router_sees_prefill`;
fewer when equal lives make the departures echo the arrivals in runs, :func:`_echo_coherence`),
and each replica's own G/G/1 queue for the others (except the isolated prompts the decode
counts hide, which wait at most the rest of the prefill in progress at their replica,
:func:`_residual_prefill_tail`), utilisation ``rho``, with Gamma-renewal
arrivals (squared coefficient of variation ``c_a^2``): the GI/M/c root
``sigma = A*(c mu (1 - sigma))`` gives the probability of waiting (Erlang C at the load
``c sigma``) and an exponential wait of mean ``E[S] / (c (1 - sigma))``, scaled by ``(c_a^2 +
c_s^2) / (c_a^2 + 1)`` for general service, and at least the mean rest of one prefill (the
router sends a prompt to a replica on arrival, so it waits for that replica's prefill, not the
first of ``c`` to free) (:func:`_renewal_wait`; Pollaczek-Khinchine for
Poisson arrivals and one replica, exact for M/M/c); plus its own prefill. A prompt that does
not wait takes steps of at most ``C - d`` of its tokens beside the decodes, after half a step
for the step in progress at arrival. A prompt that waits is prefilled in full steps, and its
first token comes only at the end of the step holding its last token, which it shares with
the prompts queued behind it (:func:`_queued_service`: its fluid share ``n t_f / (C - d)``
plus the tokens after it in that step, from the arrivals during its stay by the renewal
function, so the clump of a bursty stream it came in counts). Prompt lengths vary
lognormally (``cv_in``).

**Memory**: requests in the replica ``N = lam (E[TTFT] + O t)`` (Little's law) plus ``z sqrt(N)``
must fit the KV cache and the batch cap, otherwise admissions queue.

The SLO at percentile ``q`` holds when the share of requests over the TTFT bound plus the
share over the TPOT bound is at most ``1 - q`` (the union bound: then both hold together for
at least a share ``q`` of the requests, however the two misses are correlated). The latencies
reported at the capacity are the ``q`` percentiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from planner.perf._special import ndtri
from planner.perf.memory import max_concurrent_requests, memory_plan
from planner.perf.step import StepModel

#: Quantile points used to integrate over lognormal lengths.
_NODES = 24


def _lognormal_nodes(mean: Any, cv: float) -> np.ndarray:
    """Equal-weight quantile points (last axis) of lognormals with these means and coefficient
    of variation (the means themselves when ``cv`` is 0)."""
    mean = np.asarray(mean, dtype=float)
    if cv <= 0:
        return mean[..., None]
    return _lognormal_points(mean[..., None], np.log1p(cv * cv), _NODES)


def _lognormal_points(mean: np.ndarray, s2: Any, nodes: int) -> np.ndarray:
    """``nodes`` equal-weight quantile points (broadcast on the last axis) of lognormals of
    mean ``mean`` and log-variance ``s2 = ln(1 + cv^2)``."""
    u = (np.arange(nodes) + 0.5) / nodes
    return mean * np.exp(-s2 / 2.0 + np.sqrt(s2) * ndtri(u))


@dataclass(frozen=True)
class OpenLoopPoint:
    """Latency percentiles of one replica at arrival rates ``lam`` (arrays)."""

    lam: np.ndarray
    decode_batch: np.ndarray
    t_decode_s: np.ndarray
    t_full_s: np.ndarray
    prefill_utilisation: np.ndarray
    ttft_s: np.ndarray  # at the percentile
    tpot_s: np.ndarray  # at the percentile
    in_system: np.ndarray  # requests in the replica at the percentile
    stable: np.ndarray
    ttft_miss: np.ndarray | None = None  # P(TTFT > its SLO), when the SLO is given
    tpot_miss: np.ndarray | None = None  # P(TPOT > its SLO), when the SLO is given


def open_loop(
    sm: StepModel,
    lam: Any,
    *,
    input_tokens: float,
    output_tokens: float,
    prefix_cache_hit_share: float = 0.0,
    cv_in: float = 0.0,
    cv_out: float = 0.0,
    arrival_cv: float = 1.0,
    quantile: float = 0.95,
    servers: float = 1.0,
    iterations: int = 40,
    ttft_slo_s: float | None = None,
    tpot_slo_s: float | None = None,
    quantiles: bool = True,
    pooled_wait: bool = True,
) -> OpenLoopPoint:
    """Latency percentiles of one replica at arrival rates ``lam`` (see the module docstring).

    Parameters
    ----------
    sm : StepModel
    lam : array_like
        Arrival rates, requests/s.
    input_tokens, output_tokens : float
        Mean prompt (context included) and output tokens per request.
    prefix_cache_hit_share : float
        Share of each prompt served from the prefix (KV) cache (not prefilled).
    cv_in, cv_out : float
        Coefficients of variation of the prompt and output lengths (lognormal).
    arrival_cv : float
        Coefficient of variation of the inter-arrival times (1: Poisson).
    quantile : float
        Percentile of TTFT and TPOT returned, as a share (0.95 = p95).
    servers : float
        Replicas of the pool sharing the arrivals (the prefill wait pools over them: a
        join-the-shortest-queue router makes the prefill stage a G/G/c queue).
    ttft_slo_s, tpot_slo_s : float, optional
        SLO bounds: the point then also carries the share of requests over each
        (``ttft_miss``, ``tpot_miss``).
    quantiles : bool
        Compute the TTFT and TPOT percentiles (NaN when False: the capacity search needs only
        the miss shares, stability and memory).
    pooled_wait : bool
        The prompt's wait pools over the ``servers`` replicas (GI/G/c, default); False: it is
        its own replica's prefill, a GI/G/1 queue fed by a random split of the arrivals
        (``c_a^2 = 1 + (c_a^2 - 1) / c``), the bound for a router blind to prefill work.
    """
    lam = np.atleast_1d(np.asarray(lam, dtype=float))
    isl = np.asarray(input_tokens, dtype=float)
    osl = np.asarray(output_tokens, dtype=float)
    n = np.maximum(isl * (1.0 - float(prefix_cache_hit_share)), 1.0)
    cap = float(sm.params.max_tokens_per_step)
    pairs_per_tok = (sm.prefill_pairs(isl) - sm.prefill_pairs(isl - n)) / n
    ctx = isl + osl / 2.0
    if sm.llm.sliding_window:
        ctx = np.minimum(ctx, float(sm.llm.sliding_window))
    ca2 = float(arrival_cv) ** 2
    # a replica of a pool of ``servers`` gets about every c-th request of the pool (the
    # router joins the shortest queue, close to round robin for equal replicas): its gaps
    # are sums of c of the pool's, c_r^2 = c_a^2 / c
    ca2_rep = ca2 / max(float(servers), 1.0)
    lam, isl, osl, n, pairs_per_tok, ctx = np.broadcast_arrays(lam, isl, osl, n, pairs_per_tok,
                                                               ctx)

    def terms(d, lam=lam):
        """Step times, prefill utilisation and steps per second at decode batch ``d`` (and
        arrival rate ``lam``)."""
        chunk = np.maximum(cap - d, 1.0)
        one = np.maximum(d, 1.0)
        t_d = np.asarray(sm.step_time_s(one, one * ctx), dtype=float)
        t_f = np.asarray(sm.step_time_s(d, d * ctx, chunk, chunk * pairs_per_tok), dtype=float)
        rho = lam * n * t_f / chunk
        steps = np.minimum(rho, 1.0) / t_f + np.maximum(1.0 - rho, 0.0) / t_d
        return chunk, t_d, t_f, rho, steps

    # fixed point d = lam O / steps(d): increasing in d (and in lam), so iterating from d = 0
    # climbs to the smallest fixed point (the stable operating point) when there is one; every
    # element takes the same number of steps, so the result stays monotone in lam
    d = np.zeros_like(lam)
    for _ in range(iterations):
        tr = terms(d)
        d_next = np.minimum(lam * osl / tr[4], cap - 1.0)
        # settled, or past what a replica can do (prefill saturated, batch at its cap): the
        # stability test below decides those
        done = np.all((np.abs(d_next - d) <= 1e-7 * np.maximum(d_next, 1.0))
                      | (tr[3] >= 0.999) | (d_next >= cap - 1.0))
        d = d_next
        if done:
            break
    chunk, t_d, t_f, rho, steps = terms(d)
    stable = (rho < 0.999) & (np.abs(lam * osl / steps - d) <= 1e-3 * np.maximum(d, 1.0))
    stable &= d < cap - 1.0
    t_mean = 1.0 / steps
    z = float(ndtri(quantile))
    gain = _batch_gain(terms, lam, d, osl)
    swing2 = _batch_swing(terms, lam, d, osl, ca2_rep, gain)
    e = (..., None)  # the node axis
    # TPOT: over the output-length nodes, the prompts a request meets during its life
    o_nodes = np.maximum(_lognormal_nodes(osl, cv_out), 1.0)
    n_nodes = _lognormal_nodes(n, cv_in)
    cv_n2 = cv_in * cv_in if n_nodes.shape[-1] > 1 else 0.0
    # the prompt tokens arriving during the life: a compound count, variance
    # m n^2 (c_r^2 + c_n^2), taken as D Poisson(m / D) prompts of n tokens with
    # D = c_r^2 + c_n^2 (at least 0.05): exact for Poisson arrivals of equal prompts, and it
    # keeps the skew of a small count (a few long prompts in a short life)
    disp = max(ca2_rep + cv_n2, 0.05)
    # the decode batch a request's life averages over swings with the arrivals around it
    # (:func:`_batch_swing`): lognormal nodes of that batch, each with its own decode
    # and full step times, crossed with the output-length nodes (batch-major)
    # centred on the batch a request meets, itself and its clump included (:func:`_clump_batch`),
    # with the swing's variance about it; the clump's prompts come with its batch
    centre, clump_elasticity = _clump_batch(d, ca2_rep, gain)
    spread2 = swing2 * (d / np.maximum(centre, 1e-9)) ** 2
    d_b = np.minimum(_lognormal_points(centre[e], np.log1p(spread2)[e], _BATCH_NODES), cap - 1.0)
    chunk_b = np.maximum(cap - d_b, 1.0)
    one_b = np.maximum(d_b, 1.0)
    t_d_b = np.asarray(sm.step_time_s(one_b, one_b * ctx[e]), dtype=float)
    t_f_b = np.asarray(sm.step_time_s(d_b, d_b * ctx[e], chunk_b, chunk_b * pairs_per_tok[e]),
                       dtype=float)
    n_o = o_nodes.shape[-1]
    base = np.repeat(t_d_b, n_o, axis=-1)
    o_all = np.tile(o_nodes, _BATCH_NODES)
    per_prompt = np.repeat((t_f_b - t_d_b) * n[e] / chunk_b, n_o, axis=-1) / o_all
    # the prompts met per second at each batch node: lam, times the clump's covariance
    rel = np.maximum(d_b, 1e-9) / np.maximum(d_b.mean(axis=-1, keepdims=True), 1e-9)
    rel = rel ** clump_elasticity[e]
    rate = lam[e] * o_all / disp * np.repeat(rel / rel.mean(axis=-1, keepdims=True), n_o, axis=-1)
    # a request that meets more prompts lives longer and meets more: its life is O x its
    # own TPOT, so the count at TPOT x has mean lam O x
    tpot_miss = None if tpot_slo_s is None else 1.0 - _compound_poisson_cdf(
        base, per_prompt * disp, rate, np.full_like(t_d, tpot_slo_s))
    tpot = _compound_poisson_quantile(
        base, per_prompt * disp, rate, quantile,
        within=None if tpot_miss is None else np.where(tpot_miss <= 1.0 - quantile,
                                                       tpot_slo_s, np.nan),
    ) if quantiles else np.full_like(t_d, np.nan)
    # TTFT: GI/G/1 wait (Kingman mean, exponential tail) + own prefill + half a step. The
    # queue's work is the fluid token time n t_f / (C - d) (prompts share full steps under
    # load); a prompt's own prefill runs in steps of at most C - d of its tokens.
    es = n * t_f / chunk
    r = np.minimum(rho, 0.999)
    c = max(float(servers), 1.0)
    # each replica's own prefill queue: a random split of the pool's arrivals
    alone = _renewal_wait(1.0, r, es, 1.0 + (ca2 - 1.0) / c, cv_n2)
    if pooled_wait and c > 1.0:
        # the router counts a replica's requests, decodes and prompts alike: it sees the
        # prefill queues (the pooled GI/G/c wait) only as far as the decode counts do not
        # hide them (:func:`_router_sees_prefill`), else the prompt waits as on its own;
        # with equal lives the departures echo the arrivals in runs (:func:`_echo_coherence`)
        v = _router_sees_prefill(d)
        kappa = _echo_coherence(lam * c, osl * t_mean, cv_out, ca2)
        sees = v ** (1.0 + kappa)
        # the isolated prompts (neither in a clump of the arrivals nor in an echo run) that
        # the decode counts hide wait at most the prefill in progress at their replica
        # (:func:`_residual_prefill_tail`); the others queue as on their own replica
        isolated = np.maximum(2.0 / (max(ca2, 1.0) + 1.0) - kappa, 0.0)
        hidden = (1.0 - v) * isolated if _HIDDEN_WAIT_ONE_PREFILL else np.zeros_like(v)
        waits = [(sees, *_renewal_wait(c, r, es, ca2, cv_n2), None),
                 (1.0 - sees - hidden, *alone, None),
                 (hidden, alone[0], alone[0] * _residual_mean(es, cv_n2), "residual")]
    else:
        waits = [(np.ones_like(r), *alone, None)]
    c_own = np.minimum(n_nodes, chunk[e])
    t_own = np.asarray(sm.step_time_s(d[e], (d * ctx)[e], c_own,
                                      c_own * pairs_per_tok[e]), dtype=float)
    own = n_nodes / c_own * t_own
    service = own + 0.5 * t_mean[e]
    prefill_s = n_nodes * (t_f / chunk)[e]  # a prompt's prefill in full steps (the nodes)
    parts = [(w, p_wait, ew, _queued_service(n_nodes, n, t_f, chunk, lam, p_wait, ew, ca2_rep),
              None if kind is None else prefill_s)
             for w, p_wait, ew, kind in waits]
    ttft = _mixed_ttft_quantile(parts, service, quantile) if quantiles \
        else np.full_like(r, np.nan)
    ttft_miss = None if ttft_slo_s is None else _mixed_ttft_tail(
        parts, service, np.full_like(r, ttft_slo_s))
    # requests in the replica (Little's law at the mean TTFT and life) plus z standard
    # deviations of a Poisson count; the mean TTFT is the mean wait plus the service of a
    # prompt that does not wait (share 1 - p) or that waits (share p, :func:`_queued_service`),
    # the same mixture the TTFT tail uses
    mean_ttft = sum(w * (ew + ((1.0 - p_wait)[e] * service + p_wait[e] * service_w).mean(
        axis=-1)) for w, p_wait, ew, service_w, _ in parts)
    in_sys = lam * (mean_ttft + osl * t_mean)
    in_sys = in_sys + z * np.sqrt(np.maximum(in_sys, 0.0))
    return OpenLoopPoint(lam, d, t_d, t_f, rho, ttft, tpot, in_sys, stable, ttft_miss,
                         tpot_miss)


#: Decode requests per replica that hide one queued prompt from the router (see
#: :func:`_router_sees_prefill`; calibrated against the simulated pools of
#: ``studies/sizing-vs-simulation``: 1 pads as many tight pools as it fixes misses, 4 and 8
#: fix fewer misses).
_ROUTER_DECODES_PER_PROMPT = 2.0


def _router_sees_prefill(d: np.ndarray) -> np.ndarray:
    """Share of a pool's prompts whose wait is the pooled one (GI/G/c) rather than their own
    replica's (GI/G/1).

    The simulator's router sends a request to the replica with the fewest requests, decodes
    and queued prompts alike. With no decodes the count is the prefill queue and the router
    pools the prefill servers; with ``d`` decodes per replica, whose counts differ from replica
    to replica by about ``sqrt(d / k)`` (``k`` = :data:`_ROUTER_DECODES_PER_PROMPT`), one
    queued prompt is a signal of 1 against that noise, and the router picks by the prefill
    queue for the share ``1 / sqrt(1 + d / k)`` of prompts; the others wait as if each
    replica were alone."""
    return 1.0 / np.sqrt(1.0 + np.maximum(d, 0.0) / _ROUTER_DECODES_PER_PROMPT)


def _echo_coherence(pool_rate: np.ndarray, life_s: np.ndarray, cv_out: float,
                    ca2: float = 1.0) -> np.ndarray:
    """Share of a pool's prompts that arrive in an echo run: runs of arrivals at one replica
    that repeat every life when requests live equally long.

    The router joins the replica with the fewest requests, so a replica gets the next
    arrivals when its requests leave. Requests that arrived at a replica together (a run)
    and live equally long leave together one life later (equal output lengths, the same
    steps), between the same two arrivals of the pool; the replica is then the least loaded
    by the whole clump and takes the next arrivals in a run again, whose prompts queue behind
    each other's prefill. Measured in the simulator (``studies/sizing-vs-simulation``, README):
    with fixed output lengths 3.3 departures at one replica between two pool arrivals
    (8 replicas; 1.4-1.9 with length spread), runs of arrivals at one replica of index
    ``E[m^2] / E[m]`` 1.8 against a random split's 1.3, arrivals one life apart correlated,
    and the replica the router picks is mid-prefill as often as a random one (0.59 of
    arrivals at prefill utilisation 0.59; 0.53-0.88 of it with length spread and Poisson
    arrivals). A prompt of
    such a run is pooled only if the router sees both the queue it joins and the run that
    made its replica the least loaded, each against the same decode-count noise: the pooled
    share ``v`` of :func:`_router_sees_prefill` becomes ``v^(1 + kappa)`` with ``kappa``
    this coherence.

    The echo holds while the lives of a run's requests differ by less than the pool's gap
    between arrivals ``1 / Lambda``: for lognormal lives of mean ``L`` and log-variance
    ``s^2 = ln(1 + cv^2)`` (the output lengths' spread), ``P(|L_1 - L_2| < g) = 2 g int f^2
    = g exp(3 s^2 / 4) / (sqrt(pi) s L)`` for a short gap ``g`` (``f`` the lognormal
    density), at most 1; 1 for equal output lengths (the lives then differ only by the steps
    between the first tokens).

    A clump of a bursty pool's arrivals (mean ``(c_a^2 + 1) / 2`` of a Gamma-renewal stream)
    is spread over the replicas one each whatever left them (runs of index 1.02-1.08 at
    arrival CV 4, below a random split's 1.13-1.50), so runs form from the single arrivals, the share
    ``2 / (c_a^2 + 1)``."""
    rate = np.asarray(pool_rate, dtype=float)
    # a clump of the pool's arrivals (mean (c_a^2 + 1) / 2 of a Gamma-renewal stream) is
    # spread over the replicas one each, whatever left them: runs form from single arrivals
    single = 2.0 / (max(float(ca2), 1.0) + 1.0)
    if cv_out <= 0:
        return np.full_like(rate, single)
    s = np.sqrt(np.log1p(cv_out * cv_out))
    spread = np.sqrt(np.pi) * s * rate * np.asarray(life_s, dtype=float)
    return single * np.minimum(1.0, np.exp(0.75 * s * s) / np.maximum(spread, 1e-12))


def _mixed_ttft_tail(parts: list, service: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``P(TTFT > x)`` mixed over the waits ``(share, p_wait, mean wait, queued service,
    residual)`` of :func:`_wait_plus_service_tail`."""
    return sum(w * _wait_plus_service_tail(p, ew, service, x, sw, res)
               for w, p, ew, sw, res in parts)


def _mixed_ttft_quantile(parts: list, service: np.ndarray, q: float) -> np.ndarray:
    """q-quantile of the TTFT mixture of :func:`_mixed_ttft_tail` (bisection between the
    components' own quantiles, which bracket it)."""
    qs = [_wait_plus_service_quantile(p, ew, service, q, sw, res)
          for _, p, ew, sw, res in parts]
    if len(qs) == 1:
        return qs[0]
    lo = np.minimum.reduce(qs)
    hi = np.maximum.reduce(qs) + 1e-12
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        over = _mixed_ttft_tail(parts, service, mid) > 1.0 - q
        lo = np.where(over, mid, lo)
        hi = np.where(over, hi, mid)
    return hi


#: The prompts the router's decode counts hide wait at most the prefill in progress at their
#: replica (:func:`_residual_prefill_tail`); False: they queue as on their own replica.
_HIDDEN_WAIT_ONE_PREFILL = True

#: Quantile points of the decode batch a request's life averages over.
_BATCH_NODES = 8
#: Largest elasticity of the decode batch to the arrival rate (near saturation the linear
#: response diverges; the batch cap and the stability test bound the operating point there).
_MAX_BATCH_GAIN = 10.0


def _batch_swing(terms: Any, lam: np.ndarray, d: np.ndarray, osl: np.ndarray,
                 ca2_rep: float, gain: np.ndarray | None = None) -> np.ndarray:
    """Squared coefficient of variation of the decode batch that one request's life averages
    over.

    A request decoding for a life ``L`` shares its steps with the requests whose lives overlap
    its own: those arriving within ``L`` before or after it, each for the share ``1 - |s| / L``
    of its life (equal lives). Their count is a renewal count (index of dispersion ``c_r^2``,
    the replica's share of the pool's stream), so the life-averaged batch driven by the
    arrivals directly has variance ``lam c_r^2 int (1 - |s| / L)^2 ds = (2 / 3) d c_r^2``
    (``d = lam L``). The batch feeds back on itself: more requests make longer steps and longer
    lives, which hold more requests, so an excess of arrivals moves the batch by the elasticity
    ``G = d ln d / d ln lam`` of the fixed point ``d = lam O / s(d, lam)`` (implicit
    differentiation, ``G = (d ln F / d ln lam) / (1 - dF / dd)``, at least 1, at most
    :data:`_MAX_BATCH_GAIN`): variance ``(2 / 3) d c_r^2 G^2``. The decode step time grows
    with the batch at long contexts, and a bigger batch leaves a smaller chunk for prompts,
    so this spread widens the TPOT tail (a pool's replicas swing together with the pool's
    arrivals; measured in the simulator, see ``studies/sizing-vs-simulation``)."""
    if gain is None:
        gain = _batch_gain(terms, lam, d, osl)
    return (2.0 / 3.0) * ca2_rep * gain * gain / np.maximum(d, 1e-9)


def _batch_gain(terms: Any, lam: np.ndarray, d: np.ndarray, osl: np.ndarray) -> np.ndarray:
    """Elasticity ``G = d ln d / d ln lam`` of the decode batch to the arrival rate, at least 1
    and at most :data:`_MAX_BATCH_GAIN` (:func:`_batch_swing`): implicit differentiation of
    the fixed point ``d = F(d, lam) = lam O / s(d, lam)``, ``G = (d ln F / d ln lam) /
    (1 - dF / dd)``, by finite differences of ``terms``."""
    h = 1e-3

    def f(dd, ll):
        return ll * osl / terms(dd, ll)[4]

    f0 = f(d, lam)
    step_d = d * h + 1e-6
    df_dd = (f(d + step_d, lam) - f0) / step_d
    dlnf_dlnlam = (f(d, lam * (1.0 + h)) - f0) / (h * np.maximum(f0, 1e-12))
    gain = dlnf_dlnlam / np.maximum(1.0 - df_dd, 1.0 / _MAX_BATCH_GAIN)
    return np.clip(np.where(d > 0, gain, 1.0), 1.0, _MAX_BATCH_GAIN)


def _clump_batch(d: np.ndarray, ca2_rep: float, gain: np.ndarray) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """Centre of the decode batch a request's life averages over, and the elasticity of the
    prompts it meets to that batch, for a replica stream burstier than Poisson.

    Parameters
    ----------
    d : ndarray
        Time-average decode batch (the fixed point of :func:`open_loop`).
    ca2_rep : float
        Squared coefficient of variation of the replica's arrivals, ``c_r^2``.
    gain : ndarray
        Elasticity ``G`` of the batch to the arrival rate (:func:`_batch_gain`).

    Returns
    -------
    centre : ndarray
        ``d + G c_r^2``: the mean batch seen by a request, itself included (Palm).
    elasticity : ndarray
        ``3 / (4 G) (c_r^2 - 1)+ / c_r^2``: how the rate of prompts it meets scales with its
        batch (``rate ~ batch^elasticity``).

    Notes
    -----
    A request does not meet the time-average batch: it decodes alongside itself and the clump
    it arrived in. From an arrival of a renewal stream the expected count of further arrivals
    in ``(0, t]`` is ``lam t + (c_r^2 - 1) / 2`` once ``t`` passes the clump (Cox, *Renewal
    Theory*, 1962, sec. 4.5), and as many came just before it, so beyond the ``lam L`` of a
    Poisson stream a request shares its life with ``c_r^2 - 1`` clump-mates, and with itself:
    the Palm mean of the triangle-weighted batch over its life is ``d + c_r^2`` (``d + 1`` for
    Poisson; a replica of a pool sees ``c_r^2 = c_a^2 / c``). That excess loads the steps of
    its life like a local excess of arrivals, which the batch's feedback on its own step times
    amplifies by ``G``, as for the swing: the centre ``d + G c_r^2`` (measured in the simulator,
    ``studies/sizing-vs-simulation``: ``d + G I`` with ``I`` the replica stream's index of
    dispersion over a life). The swing's variance ``(2/3) d c_r^2 G^2`` (:func:`_batch_swing`)
    is kept about that centre.

    The clump-mates that arrive after the request are also prompts it meets: the arrivals of
    the forward half of its life window and its triangle-weighted batch window have covariance
    ``lam I L / 2`` against the batch's variance ``(2/3) lam I L`` (``I`` the stream's index of
    dispersion), a regression slope of ``3 / 4`` per arrival, ``3 / (4 G)`` per unit of
    batch once the feedback has amplified it. Only the clump's share ``(c_r^2 - 1) / c_r^2`` of
    the batch's variance carries it: the Poisson part is the model's as before (its prompts
    independent of its batch)."""
    clump = max(float(ca2_rep) - 1.0, 0.0)
    centre = d + gain * float(ca2_rep)
    elasticity = 0.75 / gain * clump / max(float(ca2_rep), 1e-9)
    return centre, np.broadcast_to(elasticity, np.shape(d))


def _compound_poisson_quantile(base: np.ndarray, step: np.ndarray, count_per_s: np.ndarray,
                               q: float, within: np.ndarray | None = None) -> np.ndarray:
    """q-quantile ``x`` of ``base + step K`` where ``K ~ Poisson(count_per_s x)`` (the count
    grows with the value itself: a request's life is its output tokens times its TPOT), mixed
    with equal weights over the last axis of ``step`` and ``count_per_s`` (and of ``base``
    when it has that axis too).

    The count's mean grows with ``x`` while its bound grows in steps, so the CDF is a saw
    tooth and may reach ``q`` more than once; ``within`` (NaN where unknown) is a value whose
    CDF is known to reach ``q`` (the SLO bound when its miss share is within ``1 - q``), so
    the search returns a crossing at or below it and the percentile reported agrees with the
    miss share.

    Notes
    -----
    A bracket ``lo < x <= hi`` (``hi`` doubled until the CDF reaches ``q``), then 40 halvings
    keeping ``F(lo) < q <= F(hi)``. Between the points where some node's count bound
    ``floor((x - base) / step)`` changes (its *state*, :func:`_count_states`) the CDF falls
    with ``x`` (each node's ``P(K <= k)`` falls as the mean grows), so a half whose ends have
    the same states needs no evaluation: the CDF at the midpoint is below ``q`` when no node
    changes state between ``lo`` and the midpoint, at least ``q`` when none changes between
    the midpoint and ``hi`` (once those ends are known to be on their sides). Only the points
    whose both halves hold a jump evaluate the CDF, about ``log2`` of the jumps in the
    bracket: 12.6 evaluations per point over the bundled scenarios' capacity searches
    instead of 41, the same halvings, the same result (``tests/test_openloop_vectorised.py``).
    """
    base = np.asarray(base, dtype=float)
    per_node = base.ndim == np.ndim(step)
    lo = base.min(axis=-1) if per_node else base.copy()
    hi = (base.max(axis=-1) if per_node else base) * 2.0 + 1e-9
    if within is not None:
        hi = np.where(np.isfinite(within), np.maximum(within, lo), hi)
    # the points on one axis, their nodes on the last
    b_n = base if per_node else base[..., None]
    shape = np.broadcast_shapes(b_n.shape, np.shape(step), np.shape(count_per_s),
                                lo.shape + (1,), hi.shape + (1,))
    out_shape = shape[:-1]
    b_n, st, cnt = (np.broadcast_to(np.asarray(a, dtype=float), shape).reshape(-1, shape[-1])
                    for a in (b_n, step, count_per_s))
    lo = np.broadcast_to(lo, out_shape).reshape(-1).copy()
    hi = np.broadcast_to(hi, out_shape).reshape(-1).copy()

    def cdf(idx, x):  # the points idx only (pdtr chosen as for all of them)
        return _compound_poisson_cdf(b_n[idx], st[idx], cnt[idx], x, size=st.size)

    every = np.arange(lo.size)
    act = every
    hi_known = np.zeros(lo.size, dtype=bool)  # F(hi) >= q seen
    for _ in range(60):  # bracket: grow hi until the mixture CDF reaches q
        done = cdf(act, hi[act]) >= q
        hi_known[act[done]] = True
        act = act[~done]
        if not act.size:
            break
        hi[act] *= 2.0
    lo_known = np.zeros(lo.size, dtype=bool)  # F(lo) < q seen
    steps, div = st > 0, _divisor(st)
    s_lo = _count_states(b_n, steps, div, lo)
    s_hi = _count_states(b_n, steps, div, hi)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        s_mid = _count_states(b_n, steps, div, mid)
        left = lo_known & (s_mid == s_lo).all(axis=-1)  # no jump in (lo, mid]: F(mid) < q
        right = hi_known & (s_mid == s_hi).all(axis=-1)  # no jump in (mid, hi]: F(mid) >= q
        below = left
        ev = every[~(left | right)]
        if ev.size:
            below[ev] = cdf(ev, mid[ev]) < q
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
        s_lo = np.where(below[:, None], s_mid, s_lo)
        s_hi = np.where(below[:, None], s_hi, s_mid)
        lo_known |= below
        hi_known |= ~below
    return hi.reshape(out_shape)


def _count_states(base: np.ndarray, steps: np.ndarray, div: np.ndarray,
                  x: np.ndarray) -> np.ndarray:
    """The count bound each node of :func:`_compound_poisson_cdf` takes at ``x`` (points on
    the first axis of ``base``, nodes on the last; ``steps``: the nodes with steps, ``div``
    their :func:`_divisor`): ``floor((x - base) / step)``, -1 below ``base`` and 0 for a node
    without steps; the CDF jumps only where it changes."""
    gap = x[:, None] - base
    k = np.where(steps, np.floor(gap / div), 0.0)
    return np.where(gap < 0, -1.0, k)


def _divisor(step: np.ndarray) -> np.ndarray:
    """``step`` to divide a gap by for its count bound (at least 1e-300; 1 where there are no
    steps, whose bound is not used)."""
    step = np.asarray(step, dtype=float)
    return np.where(step > 0, np.maximum(step, 1e-300), 1.0)


def gamma_sigma(rho: Any, ca2: float, iterations: int = 60) -> np.ndarray:
    """Root ``sigma`` in (0, 1) of ``sigma = A*(c mu (1 - sigma))`` for Gamma-renewal
    arrivals (squared coefficient of variation ``ca2``) at utilisation ``rho``: with
    ``k = 1 / ca2``, ``sigma = (1 + (1 - sigma) / (k rho))^-k`` (GI/M/c, Gross and Harris,
    *Fundamentals of Queueing Theory*, sec. 5.3). ``sigma = rho`` for Poisson arrivals."""
    rho = np.clip(np.asarray(rho, dtype=float), 1e-12, 1.0 - 1e-9)
    if abs(ca2 - 1.0) < 1e-12:
        return rho
    k = 1.0 / max(ca2, 1e-9)
    lo, hi = np.zeros_like(rho), np.full_like(rho, 1.0 - 1e-12)
    for _ in range(iterations):  # g(s) = s - A*(s) < 0 below the root, > 0 above it
        mid = 0.5 * (lo + hi)
        below = mid < (1.0 + (1.0 - mid) / (k * rho)) ** (-k)
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def _renewal_wait(c: float, rho: np.ndarray, es: np.ndarray, ca2: float,
                  cs2: float) -> tuple[np.ndarray, np.ndarray]:
    """Probability of waiting and mean wait for the prefill queue (GI/G/c, Gamma-renewal
    arrivals with squared CV ``ca2``, service mean ``es`` and squared CV ``cs2``).

    GI/M/c: an arrival waits with probability ``Pi_W`` and then ``Exp(c mu (1 - sigma))``
    (:func:`gamma_sigma`); ``Pi_W`` is taken as Erlang C at the load ``c sigma`` (exact for
    one server, ``Pi_W = sigma``, and for Poisson arrivals, ``sigma = rho``). General service
    scales the conditional wait by ``(ca2 + cs2) / (ca2 + 1)``: Pollaczek-Khinchine for Poisson
    arrivals, the GI/M/c result for exponential service. Bursty arrivals (``ca2 > 1``) make
    most arrivals of a clump wait even at low utilisation, which Allen-Cunneen's
    ``P_c (ca2 + cs2) / 2`` spreads thinly over every arrival instead.

    The router sends a request to a replica when it arrives, so a prompt that waits waits for
    the prefill in progress at *its* replica, not for the first of ``c`` replicas to free:
    for Poisson or burstier arrivals (``ca2 >= 1``; an arrival sees the equilibrium residual,
    or a prefill its own clump just started) the conditional wait is at least the mean rest of
    one prefill, ``E[S] (1 + c_s^2) / 2`` (:func:`_residual_mean`). The floor binds only in a
    pool of several replicas (for one server and ``ca2 >= 1`` the GI/M/1 wait is never below
    it)."""
    sigma = gamma_sigma(rho, ca2)
    p_wait = erlang_c(c, c * sigma)
    cond = es / (c * (1.0 - sigma)) * (ca2 + cs2) / (ca2 + 1.0)
    if ca2 >= 1.0:
        cond = np.maximum(cond, _residual_mean(es, cs2))
    return p_wait, p_wait * cond


def _compound_poisson_cdf(base: np.ndarray, step: np.ndarray, count_per_s: np.ndarray,
                          x: np.ndarray, size: int | None = None) -> np.ndarray:
    """``P(base + step K <= x)`` with ``K ~ Poisson(count_per_s x)``, mixed over the last axis
    (the distribution :func:`_compound_poisson_quantile` inverts; ``base`` per point, or per
    node when it has that axis too). The Poisson CDF is evaluated only where it is neither 0
    (below ``base``) nor 1 (no steps), by :func:`planner.perf._special.pdtr` chosen for
    ``size`` elements (default: all of them; a search over some points of a larger array
    passes that array's size)."""
    from planner.perf._special import pdtr

    x = np.asarray(x, dtype=float)
    base = np.asarray(base, dtype=float)
    gap = x[..., None] - (base if base.ndim == np.ndim(step) else base[..., None])
    k = np.floor(gap / _divisor(step))
    m = count_per_s * x[..., None]
    # P(K <= k) only where it is not 0 (below the base) or 1 (no steps)
    k, m, step = np.broadcast_arrays(k, m, step)
    need = (step > 0) & ~(gap < 0)
    size = k.size if size is None else size
    cdf = np.broadcast_to(np.where(gap < 0, 0.0, 1.0), k.shape).copy()
    if need.all():
        cdf = pdtr(np.maximum(k, 0.0), m, size=size)
    elif need.any():
        cdf[need] = pdtr(np.maximum(k[need], 0.0), m[need], size=size)
    return cdf.mean(axis=-1)


def _queued_service(n_nodes: np.ndarray, n: np.ndarray, t_f: np.ndarray, chunk: np.ndarray,
                    lam: np.ndarray, p_wait: np.ndarray, ew: np.ndarray,
                    ca2_rep: float) -> np.ndarray:
    """Time from the start of its prefill to the first token of a prompt that queued.

    A prompt that waits is prefilled in full steps (``C - d`` prompt tokens each, ``t_f``
    long): its own tokens take their fluid share ``n t_f / (C - d)``, and its first token
    comes only at the end of the step holding its last token, which also holds the tokens of
    prompts queued behind it. Its last token sits uniformly in that step, so the tokens after
    it are ``min(U (C - d), B)`` (``U`` uniform), of mean ``B - B^2 / (2 (C - d))`` for
    ``B < C - d``, with ``B`` the prompt tokens behind it: the arrivals at its replica during
    its time in the system ``T`` (mean wait of a waiting prompt plus its own share), by the
    renewal function ``lam T + (c_r^2 - 1) / 2`` (Cox, *Renewal Theory*, 1962, sec. 4.5: the
    clump of a bursty stream it arrived in), with ``c_r^2 = c_a^2 / c`` the replica's share of
    the pool's stream (the router spreads a clump over the replicas).
    """
    own_w = n_nodes * (t_f / chunk)[..., None]
    stay = np.where(p_wait > 0, ew / np.maximum(p_wait, 1e-300), 0.0)[..., None] + own_w
    behind = n[..., None] * np.maximum(lam[..., None] * stay + (ca2_rep - 1.0) / 2.0, 0.0)
    cap = chunk[..., None]
    b = np.minimum(behind, cap)
    return own_w + (t_f / chunk)[..., None] * (b - b * b / (2.0 * cap))


def _wait_plus_service_tail(rho: np.ndarray, ew: np.ndarray, service: np.ndarray,
                            x: np.ndarray, service_w: np.ndarray | None = None,
                            residual: np.ndarray | None = None) -> np.ndarray:
    """``P(W + S > x)`` for the wait and service of :func:`_wait_plus_service_quantile`:
    ``S = service`` for a prompt that does not wait (share ``1 - rho``), ``service_w`` for one
    that does (default the same). The wait of a prompt that waits is exponential of mean
    ``ew / rho``, or, given ``residual`` (the prefill times of the prompt in progress,
    equal-weight points on the last axis), the rest of that one prefill
    (:func:`_residual_prefill_tail`)."""
    theta = np.where(rho > 0, ew / np.maximum(rho, 1e-300), 0.0)[..., None]
    x = np.asarray(x, dtype=float)[..., None]
    if service_w is None and residual is None:
        y = x - service
        tail = np.where(y <= 0, 1.0, rho[..., None] * np.exp(-np.maximum(y, 0.0)
                                                             / np.maximum(theta, 1e-300)))
        tail = np.where((y > 0) & (theta <= 0), 0.0, tail)
        return tail.mean(axis=-1)
    y = x - (service if service_w is None else service_w)
    if residual is None:
        waited = np.where(y <= 0, 1.0, np.exp(-np.maximum(y, 0.0) / np.maximum(theta, 1e-300)))
        waited = np.where((y > 0) & (theta <= 0), 0.0, waited)
    else:
        waited = np.where(y <= 0, 1.0, _residual_prefill_tail(residual, np.maximum(y, 0.0)))
    r = rho[..., None]
    return ((1.0 - r) * (x < service) + r * waited).mean(axis=-1)


def _residual_prefill_tail(prefill_s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``P(R > y)`` for the rest ``R`` of the prefill in progress at a random moment of a
    replica's prefill work: the equilibrium residual of the prefill time ``S`` (its points
    ``prefill_s`` on the last axis, equal weights), ``E[(S - y)+] / E[S]`` (Cox, *Renewal
    Theory*, 1962, sec. 1.4: a moment falls in a prefill with probability proportional to its
    length, and uniformly within it); ``(1 - y / S)+`` for equal prompts. ``y`` has the
    points of the arriving prompt on its last axis; the result has its shape."""
    prefill_s = np.asarray(prefill_s, dtype=float)
    over = np.maximum(prefill_s[..., None, :] - y[..., :, None], 0.0).mean(axis=-1)
    return over / np.maximum(prefill_s.mean(axis=-1), 1e-300)[..., None]


def _residual_mean(es: np.ndarray, cs2: float) -> np.ndarray:
    """Mean rest of the prefill in progress (:func:`_residual_prefill_tail`), ``E[S^2] / (2
    E[S]) = E[S] (1 + c_s^2) / 2`` for prefill times of mean ``es`` and squared coefficient of
    variation ``cs2``."""
    return np.asarray(es, dtype=float) * (1.0 + float(cs2)) / 2.0


def erlang_c(c: float, a: Any) -> np.ndarray:
    """Probability of waiting in an M/M/c queue with offered load ``a = lam / mu`` (Erlang C);
    ``a / c`` for one server. Stable recurrence over the Erlang B formula."""
    a = np.asarray(a, dtype=float)
    k = int(round(c))
    b = np.ones_like(a)
    for j in range(1, k + 1):
        b = a * b / (j + a * b)
    rho = np.minimum(a / k, 1.0 - 1e-12)
    return b / (1.0 - rho + rho * b)


def _wait_plus_service_quantile(rho: np.ndarray, ew: np.ndarray, service: np.ndarray,
                                q: float, service_w: np.ndarray | None = None,
                                residual: np.ndarray | None = None) -> np.ndarray:
    """q-quantile of ``W + S``: ``P(W > w) = rho exp(-w rho / E[W])`` with ``rho`` the
    probability of waiting (atom at 0 of mass ``1 - rho``), ``S`` equal-weight points on the
    last axis (``service_w`` for a prompt that waits, default ``service``); with ``residual``
    the wait is the rest of the prefill in progress (:func:`_wait_plus_service_tail`)."""
    theta = np.where(rho > 0, ew / np.maximum(rho, 1e-300), 0.0)
    top = service if service_w is None else np.maximum(service, service_w)
    lo = np.minimum(service.min(axis=-1), top.min(axis=-1))
    if residual is None:
        hi = top.max(axis=-1) + theta * (np.log(np.maximum(rho, 1e-300) / (1.0 - q)) + 1.0)
    else:
        hi = top.max(axis=-1) + np.asarray(residual).max(axis=-1)
    hi = np.maximum(hi, lo) + 1e-12
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        over = _wait_plus_service_tail(rho, ew, service, mid, service_w, residual) > 1.0 - q
        lo = np.where(over, mid, lo)
        hi = np.where(over, hi, mid)
    return hi


@dataclass(frozen=True)
class SloCapacity:
    """Largest arrival rate per replica meeting the SLO percentile, and what limits it."""

    requests_per_s: float
    ttft_s: float
    tpot_s: float
    decode_batch: float
    prefill_utilisation: float
    limited_by: str  # prefill compute | decode | KV memory | TTFT queueing | TPOT | slo


def slo_capacity(sm: StepModel, *, input_tokens: float, output_tokens: float,
                 **kw: Any) -> SloCapacity:
    """Largest arrival rate one replica sustains with its TTFT and TPOT percentiles within
    the SLO (at most ``1 - q`` of requests over the TTFT bound or the TPOT bound, by the union
    bound), its prefill queue
    stable and its requests within the KV cache and batch cap (``max_in_system``; default
    from the memory plan). Keywords as :func:`slo_capacity_many`."""
    out = slo_capacity_many(sm, input_tokens=np.array([float(input_tokens)]),
                            output_tokens=np.array([float(output_tokens)]), **kw)
    return out[0]


def slo_capacity_many(
    sm: StepModel,
    *,
    input_tokens: np.ndarray,
    output_tokens: np.ndarray,
    ttft_slo_s: float | None,
    tpot_slo_s: float | None,
    percentile: float = 90.0,
    prefix_cache_hit_share: float = 0.0,
    cv_in: float = 0.0,
    cv_out: float = 0.0,
    arrival_cv: float = 1.0,
    max_in_system: Any = None,
    servers: float = 1.0,
    pooled_wait: bool = True,
    hour_z: float = 0.0,
    hour_s: float = 3600.0,
) -> list[SloCapacity]:
    """:func:`slo_capacity` for many (prompt, output) length pairs at once (one array
    evaluation: a grid of 32 rates per pair, refined twice around the boundary).

    ``hour_z`` (default 0: at the mean rate): the SLO is met at the rate of an hour whose
    arrival count is ``hour_z`` standard deviations above its mean, ``hour_load``."""
    q = percentile / 100.0
    isl = np.asarray(input_tokens, dtype=float).reshape(-1)
    osl = np.asarray(output_tokens, dtype=float).reshape(-1)
    if max_in_system is None:
        mp = memory_plan(sm.llm, sm.acc, sm.gpus, sm.precision, sm.params)
        max_in_system = np.minimum(
            max_concurrent_requests(mp.kv_capacity_tokens, isl, osl, sm.params.kv_reserve,
                                    sm.llm.sliding_window), sm.params.max_batch)
    max_in = np.broadcast_to(np.asarray(max_in_system, dtype=float), isl.shape)[:, None]
    # an upper bound: every step full of useful tokens at the largest step
    cap = float(sm.params.max_tokens_per_step)
    n = np.maximum(isl * (1.0 - prefix_cache_hit_share), 1.0)
    dd, pp = cap * osl / (n + osl), cap * n / (n + osl)
    t_cap = np.asarray(sm.step_time_s(dd, dd * isl, pp, pp * isl), dtype=float)
    hi = 2.0 * cap / (n + osl) / t_cap
    lo = np.zeros_like(hi)
    found = np.zeros(isl.shape, dtype=bool)
    kw = dict(input_tokens=isl[:, None], output_tokens=osl[:, None],
              prefix_cache_hit_share=prefix_cache_hit_share, cv_in=cv_in, cv_out=cv_out,
              arrival_cv=arrival_cv, quantile=q, servers=servers, ttft_slo_s=ttft_slo_s,
              tpot_slo_s=tpot_slo_s, pooled_wait=pooled_wait)
    frac = np.linspace(0.0, 1.0, 33)[1:]

    def load(lam):  # the rate the SLO is checked at (the mean rate when hour_z = 0)
        return hour_load(lam, arrival_cv, servers, hour_z, hour_s)

    for _ in range(3):  # grid, then two refinements around the boundary
        grid = lo[:, None] + (hi - lo)[:, None] * frac[None, :]
        ok = _ok(open_loop(sm, load(grid), quantiles=False, **kw), max_in,
                 1.0 - percentile / 100.0)
        anyok = ok.any(axis=1)
        last = np.where(anyok, ok.shape[1] - 1 - np.argmax(ok[:, ::-1], axis=1), -1)
        new_lo = np.where(anyok, grid[np.arange(len(isl)), np.maximum(last, 0)], lo)
        nxt = np.minimum(last + 1, ok.shape[1] - 1)
        new_hi = np.where(anyok & (last + 1 < ok.shape[1]), grid[np.arange(len(isl)), nxt],
                          np.where(anyok, hi, grid[:, 0]))
        found |= anyok
        lo, hi = new_lo, new_hi
    at = open_loop(sm, load(lo[:, None]), **kw)
    above = open_loop(sm, load(hi[:, None]), quantiles=False, **kw)
    out = []
    for k in range(len(isl)):
        if not found[k]:
            out.append(SloCapacity(0.0, np.nan, np.nan, 0.0, 0.0, "slo"))
            continue
        out.append(SloCapacity(
            requests_per_s=float(lo[k]), ttft_s=float(at.ttft_s[k, 0]),
            tpot_s=float(at.tpot_s[k, 0]), decode_batch=float(at.decode_batch[k, 0]),
            prefill_utilisation=float(at.prefill_utilisation[k, 0]),
            limited_by=_limit(above, k, float(max_in[k, 0]), 1.0 - percentile / 100.0),
        ))
    return out


def hour_load(lam: Any, arrival_cv: float, servers: float, z: float,
              hour_s: float = 3600.0) -> np.ndarray:
    """Per-replica arrival rate of an hour whose arrival count is ``z`` standard deviations
    above its mean.

    A renewal stream's count over an hour of ``c lam T`` mean arrivals (``c`` replicas,
    ``T = hour_s``) has variance ``c_a^2 c lam T`` (index of dispersion ``c_a^2`` over windows
    long against a gap; Cox, *Renewal Theory*, 1962, sec. 4.5), so that hour's rate per
    replica is ``lam (1 + z c_a / sqrt(c lam T)) = lam + z c_a sqrt(lam / (c T))`` (normal
    approximation). ``z = 0`` gives ``lam``.
    """
    lam = np.asarray(lam, dtype=float)
    if z == 0.0:
        return lam
    return lam + z * float(arrival_cv) * np.sqrt(np.maximum(lam, 0.0)
                                                 / (max(float(servers), 1.0) * hour_s))


def _miss(pt: OpenLoopPoint) -> np.ndarray:
    """Share of requests over the TTFT or the TPOT bound, by the union bound
    ``P(TTFT > a or TPOT > b) <= P(TTFT > a) + P(TPOT > b)``."""
    out = np.zeros(pt.lam.shape)
    for m in (pt.ttft_miss, pt.tpot_miss):
        if m is not None:
            out = out + m
    return out


def _ok(pt: OpenLoopPoint, max_in, budget: float) -> np.ndarray:
    """Stable, within memory, and at most ``budget`` of requests over the SLO."""
    return pt.stable & (pt.in_system <= max_in) & (_miss(pt) <= budget + 1e-12)


def _limit(pt: OpenLoopPoint, k: int, max_in: float, budget: float) -> str:
    """What fails first just above the capacity (row ``k``): the larger share of misses
    names the latency that binds."""
    if not bool(pt.stable[k, 0]):
        return "prefill compute" if pt.prefill_utilisation[k, 0] >= 0.999 else "decode"
    if pt.in_system[k, 0] > max_in:
        return "KV memory"
    a = 0.0 if pt.ttft_miss is None else float(pt.ttft_miss[k, 0])
    b = 0.0 if pt.tpot_miss is None else float(pt.tpot_miss[k, 0])
    if a + b > budget:
        return "TTFT queueing" if a >= b else "TPOT"
    return "slo"
