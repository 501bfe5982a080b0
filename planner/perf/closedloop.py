"""Closed-loop steady state of a replica: ``c`` requests always in flight.

A closed-loop benchmark (vLLM/SGLang ``bench serve --max-concurrency c``, InferenceMAX) keeps
``c`` requests in flight and sends a new one as each finishes. This module gives the mean TTFT,
ITL (= TPOT), output tokens/s and requests/s of one replica at each ``c`` by mean-value
analysis (MVA) over the same step model (:class:`planner.perf.step.StepModel`) the simulator
and the open-loop capacity (:mod:`planner.perf.openloop`) run.

Replica (vLLM V1 style chunked prefill, ``C = max_tokens_per_step`` tokens per step): every
step carries the ``d`` decoding requests (one token each) plus up to ``C - d`` tokens of the
prompts waiting for prefill, first come first served; a step with no prompt waiting is a
*decode step*, ``t_d = T(d, K)``, one with prompt tokens a *full step*.

Each request's cycle is ``R = TTFT + (O - 1) ITL`` (``O`` output tokens; the first comes with
the end of its prefill), so the replica serves ``X = c / R`` requests/s and
``X O = c O / (TTFT + (O - 1) ITL)`` output tokens/s (exactly, by construction). With ``n``
prompt tokens to prefill (``I (1 - h)``, ``h`` the prefix-cache hit share), the unknowns solve
a fixed point in the mean decode batch ``d`` (requests between their first and last token):

* by the arrival theorem (Schweitzer's MVA) a request sees the other ``c - 1`` requests in
  their time-average state, so the decodes beside it are ``d_o = d (c - 1) / c``;
* **step mix** (flow balance): per step the ``d`` decodes finish ``d / (O - 1)`` requests,
  whose successors bring ``n`` prompt tokens each: ``p = (c - 1)/c n d / (O - 1)`` prompt
  tokens per step from the others. Full steps carry ``ch = min(n, C - 1 - d_o)`` of them (a
  prompt, or the budget's share of one) and are a share ``f = min(p / ch, 1)`` of the steps;
  once every step is full each carries ``p`` (past ``C - 1 - d_o``: no steady state);
* **ITL** = the mean step a decoding request sees (``1 + d_o`` decodes, ``K = (1 + d_o)
  (I + O/2)`` cached tokens): ``f t_f + (1 - f) t_d``, ``t_f`` the full step;
* **throughput** (Little's law on the decodes) ``X = d / ((O - 1) ITL)``;
* **TTFT** = the wait for the step in progress at arrival (none at ``c = 1``: the engine is
  idle; else ``s = 1/2`` of a full step for the full steps' share of the time, else of a
  decode step) + the time in the prefill stage ``P``. Ahead of the prompt are the others'
  prompts not yet in service: by the arrival theorem and Little's law
  ``A = (c - 1)/c X (wait + P - own)`` prompts (plus what is left of one in service that
  spans several steps), all prefilled first come first served with its own,
  ``P = G(n (1 + A))``, where ``G(x)`` is the time of ``x`` prompt tokens in steps of at most
  ``C - d_o`` tokens beside the ``d_o`` decodes (one step of ``x`` tokens when they fit:
  prompts queued together share a step) and ``own = G(n)``;
* the population closes the loop: ``X R = c``; ``X(d) R(d)`` rises with ``d``, and the
  solution is found by bisection on ``d`` in ``(0, c)``. Where the prefill cannot keep up,
  ``X(d) R(d)`` jumps from below ``c`` to infinity: the replica then runs at that edge and
  the requests beyond it queue for prefill, each adding ``1 / X`` to the TTFT.

A fixed front-end time per request (``params.request_overhead_s``: API server,
tokenisation, streaming the first token; 0 by default) is added to every TTFT; the request is
in flight meanwhile, so it lengthens the cycle ``R`` and thins the decode batch.

**Scheduler admission** (:func:`closed_loop_arrays` ``poll_steps``, default
``params.scheduler_poll_steps``; ``admission_group``/``admission_timeout_steps``): an engine
that looks for new requests only every ``N`` decode steps (SGLang
``--scheduler-recv-interval``) makes a request arriving during a decode step wait
``(N - 1)/2`` decode steps beyond the step in progress; one arriving during a step with prompt
tokens is taken right after it (SGLang's ``SchedulerRecvSkipper`` adds 1 per decode step and
1000, ``SGLANG_SCHEDULER_RECV_SKIPPER_WEIGHT_DEFAULT``, per other step to a counter that
triggers the poll at ``N``): on average ``(1 - b)(N - 1)/2 t_d``, ``b`` the share of time in
steps with prompt tokens. One that holds prompts until ``g`` wait (TensorRT-LLM
attention-DP balancing, one
per rank) adds the time for ``g - 1`` more arrivals, ``(g - 1) / (2 (c-1)/c X)``, at most half
the timeout. The prompts gathered meanwhile are prefilled with the request's own.

At ``c = 1`` this is one request alone: TTFT = its prefill (:meth:`StepModel.prefill_time_s`
when the prompt fits in one step), ITL = a decode step of batch 1. As ``c`` grows the decodes
slow the prefill steps (chunked-prefill interference), prompts queue behind each other, and
other requests' prompts turn decode steps into full steps (ITL).

**KV memory**: at most ``B`` requests (KV cache with up-front reservation, and the engine's
batch cap) are admitted; beyond, the other ``c - B`` wait for a completion. The replica then
runs at its ``B`` state (same ITL and ``X``) and each request's TTFT adds the queue's wait
``(c - B) / X`` (Little's law), so TTFT grows linearly with the queue.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from planner.errors import PlannerError
from planner.perf.memory import check_lengths, max_concurrent_requests, require_fit
from planner.perf.params import PerfParams
from planner.perf.specs import AcceleratorSpec, LLMSpec
from planner.perf.step import StepModel, step_model

#: Share of a step a new request waits for the step in progress (when others are running).
ARRIVAL_STEP_SHARE = 0.5

_BISECT = 50
_GOLDEN = 36


def parse_concurrency(text: str) -> list[int]:
    """``"1,5,25"`` -> ``[1, 5, 25]`` (the ``--concurrency`` option): whole numbers >= 1,
    comma-separated, in the order given. Raises :class:`PlannerError` otherwise."""
    items = [x.strip() for x in str(text).split(",")]
    out = []
    for x in items:
        if not (x.isascii() and x.isdigit()) or int(x) < 1:
            raise PlannerError(f"--concurrency {text!r}: expected whole numbers >= 1 "
                               f"separated by commas (e.g. 1,5,25,50,100), got {x!r}")
        out.append(int(x))
    return out


def _parse_concurrency(concurrency: Any) -> np.ndarray:
    try:
        c = np.atleast_1d(np.asarray(concurrency, dtype=float))
    except (TypeError, ValueError) as exc:
        raise PlannerError(f"concurrency: expected numbers >= 1, got {concurrency!r}") from exc
    if c.size == 0 or not np.all(np.isfinite(c)) or np.any(c < 1):
        raise PlannerError(f"concurrency: expected numbers >= 1, got {concurrency!r}")
    return c


def closed_loop_arrays(
    sm: StepModel,
    concurrency: Any,
    *,
    input_tokens: Any,
    output_tokens: Any,
    max_batch: Any,
    prefix_cache_hit_share: float = 0.0,
    poll_steps: Any = None,
    admission_group: Any = 1,
    admission_timeout_steps: Any = np.inf,
) -> dict[str, np.ndarray]:
    """Closed-loop steady state at each concurrency (inputs broadcast together; see the module
    docstring). ``max_batch``: requests the replica admits at once (KV memory, batch cap).

    Scheduler admission (broadcast with the concurrency): ``poll_steps`` (default
    ``params.scheduler_poll_steps``): the engine looks for new requests every this many steps
    while others run; ``admission_group`` and ``admission_timeout_steps``: the engine holds
    new prompts until ``admission_group`` of them wait, or for at most
    ``admission_timeout_steps`` steps (TensorRT-LLM attention-DP balancing: one prompt per
    rank). Both lengthen the wait before the prefill, and the prompts gathered meanwhile are
    prefilled together with the request's own.

    Returns arrays ``concurrency``, ``admitted``, ``kv_queue``, ``decode_batch``,
    ``full_step_share`` (share of steps carrying prompt tokens), ``step_s`` (mean step = ITL),
    ``prefill_wait_s`` (TTFT beyond the prompt's own prefill and the step in progress: the
    scheduler's admission wait, the wait behind other prompts and for KV memory), the TTFT's
    parts ``front_end_s`` (``params.request_overhead_s``), ``step_in_progress_s``,
    ``admission_wait_s`` (polling interval and admission group) and ``own_prefill_s`` (the
    prompt's own prefill beside the running decodes; ``ttft_s = front_end_s +
    step_in_progress_s + prefill_wait_s + own_prefill_s``),
    ``ttft_s``, ``itl_s``, ``tpot_s``, ``e2e_s``, ``requests_per_s``, ``output_tokens_per_s``,
    ``input_tokens_per_s``.
    """
    c_all = _parse_concurrency(concurrency)
    isl = np.asarray(input_tokens, dtype=float)
    osl = np.asarray(output_tokens, dtype=float)
    bmax = np.asarray(max_batch, dtype=float)
    poll = np.asarray(sm.params.scheduler_poll_steps if poll_steps is None else poll_steps,
                      dtype=float)
    grp = np.asarray(admission_group, dtype=float)
    g_to = np.asarray(admission_timeout_steps, dtype=float)
    c_all, isl, osl, bmax, poll, grp, g_to = np.broadcast_arrays(c_all, isl, osl, bmax, poll,
                                                                 grp, g_to)
    if np.any(bmax < 1):
        raise PlannerError("closed loop: the replica cannot hold one request (max_batch < 1)")
    if np.any(~(poll >= 1)) or np.any(~(grp >= 1)) or np.any(~(g_to >= 0)):
        raise PlannerError("closed loop: poll_steps and admission_group must be >= 1 and "
                           "admission_timeout_steps >= 0")
    h = float(prefix_cache_hit_share)
    if not 0.0 <= h <= 1.0:
        raise PlannerError(f"prefix_cache_hit_share: expected a share in [0, 1], got {h!r}")
    # the replica holds m requests; the rest wait for KV memory
    m = np.minimum(c_all, np.floor(bmax))
    n = np.maximum(isl * (1.0 - h), 1.0)
    ppt = (sm.prefill_pairs(isl) - sm.prefill_pairs(isl - n)) / n  # pairs per prompt token
    ctx = isl + osl / 2.0
    if sm.llm.sliding_window:
        ctx = np.minimum(ctx, float(sm.llm.sliding_window))
    cap = float(sm.params.max_tokens_per_step)
    om1 = np.maximum(osl - 1.0, 0.0)
    others = (m - 1.0) / m  # arrival theorem: the others' share of the time averages
    s_arr = np.where(m >= 2.0, ARRIVAL_STEP_SHARE, 0.0)
    ov = float(sm.params.request_overhead_s)  # front-end time before the first token

    def prefill_time(x, d_o):
        """Time of ``x`` prompt tokens FCFS beside ``d_o`` decodes (steps of <= C - d_o)."""
        room = np.maximum(cap - d_o, 1.0)
        ch = np.minimum(x, room)
        t = np.asarray(sm.step_time_s(d_o, d_o * ctx, ch, ch * ppt), dtype=float)
        return t * x / ch

    def stage_time(a0, slope, own, d_o):
        """Smallest root of h(P) = G(a0 + slope (P - own)) - P, P >= own (inf if none).

        G is convex (affine pieces of the step time; past the step budget, linear at the
        full chunk's time per token), so h is convex: its minimum over the single-step range
        (golden section) tells whether a root lies there (then bisection below the minimum);
        otherwise the root, if any, is on the linear piece, in closed form."""
        room = np.maximum(cap - d_o, 1.0)
        t_room = prefill_time(room, d_o)
        tau = t_room / room

        def h(pp):
            return prefill_time(a0 + slope * (pp - own), d_o) - pp

        with np.errstate(divide="ignore", invalid="ignore"):
            p_room = np.where(slope > 0, own + np.maximum(room - a0, 0.0) / slope, np.inf)
        # a root on the single-step piece has P = G <= G(room)
        lo = own.copy()
        hi = np.maximum(np.minimum(p_room, t_room), own)
        g = 0.5 * (np.sqrt(5.0) - 1.0)
        a, b = lo.copy(), hi.copy()
        u, v = b - g * (b - a), a + g * (b - a)
        hu, hv = h(u), h(v)
        for _ in range(_GOLDEN):  # one new evaluation per iteration
            keep_left = hu <= hv
            a = np.where(keep_left, a, u)
            b = np.where(keep_left, v, b)
            nu = np.where(keep_left, b - g * (b - a), v)
            nv = np.where(keep_left, u, a + g * (b - a))
            new = np.where(keep_left, nu, nv)
            hn = h(new)
            hu, hv = np.where(keep_left, hn, hv), np.where(keep_left, hu, hn)
            u, v = nu, nv
        pm = 0.5 * (a + b)
        hm = h(pm)
        found = hm <= 0.0
        for _ in range(_BISECT):
            mid = 0.5 * (lo + pm)
            pos = h(mid) > 0.0
            lo, pm = np.where(pos, mid, lo), np.where(pos, pm, mid)
        single = pm
        with np.errstate(divide="ignore", invalid="ignore"):
            lin = (a0 - slope * own) * tau / (1.0 - slope * tau)
        lin_ok = (slope * tau < 1.0) & (a0 + slope * (lin - own) >= room * (1.0 - 1e-12))
        lin_ok &= lin >= own * (1.0 - 1e-12)
        return np.where(found, single, np.where(lin_ok, np.maximum(lin, own), np.inf))

    def state(d):
        d_o = others * np.where(om1 > 0, d, 0.0)
        dec = 1.0 + d_o
        room = np.maximum(cap - dec, 1.0)
        ch = np.minimum(n, room)
        # flow balance: the d decodes finish d / (O - 1) requests per step, whose successors
        # bring n prompt tokens each: the others' prompt tokens per step, p = (c-1)/c n d/(O-1)
        # (the bisection variable d stands for X x own prefill when O = 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            pbar = np.where(om1 > 0, others * n * d / om1, 0.0)
        # full steps carry ch tokens (a prompt, or the budget's share of it) while they are a
        # minority; once every step is full they carry p each (beyond the budget: the prefill
        # cannot keep up, no steady state)
        f = np.minimum(pbar / ch, 1.0)
        p_f = np.maximum(ch, pbar)
        short = pbar > room * (1.0 + 1e-12)
        p_f = np.minimum(p_f, room)
        t_d = np.asarray(sm.step_time_s(dec, dec * ctx), dtype=float)
        t_f = np.asarray(sm.step_time_s(dec, dec * ctx, p_f, p_f * ppt), dtype=float)
        itl = f * t_f + (1.0 - f) * t_d
        own = prefill_time(n, d_o)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(om1 > 0, d / (om1 * itl), d / own)
        # the step in progress at arrival (none at c = 1: the engine is idle): a full step for
        # the full steps' share of the time, else a decode step; the arrival waits
        # ARRIVAL_STEP_SHARE of it
        t_d_o = np.asarray(sm.step_time_s(d_o, d_o * ctx), dtype=float)
        t_f_o = np.asarray(sm.step_time_s(d_o, d_o * ctx, p_f, p_f * ppt), dtype=float)
        busy = np.where(om1 > 0, f * t_f_o / np.maximum(f * t_f_o + (1.0 - f) * t_d_o, 1e-300),
                        np.clip(others * x * own, 0.0, 1.0))
        step_o = busy * t_f_o + (1.0 - busy) * t_d_o
        arrive = s_arr * step_o
        # scheduler admission beyond the step in progress (none at c = 1: an idle engine
        # polls at once): the rest of a polling interval, (poll - 1)/2 decode steps on
        # average for an arrival during a decode step (a step with prompt tokens makes the
        # engine poll right after it: SGLang's SchedulerRecvSkipper counts a decode step 1
        # and any other step 1000 towards the interval), and
        # the wait for a group of g prompts (the g - 1 others arrive at (c-1)/c X: (g - 1)/2
        # interarrival times on average, at most the timeout; only the timeout when fewer
        # than g requests can be admitted at all)
        lam = np.maximum(others * x, 1e-300)
        t_out = np.where(np.isfinite(g_to), g_to, 1e300) * step_o  # no timeout: "1e300"
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            gw = np.where(m >= grp, np.minimum((grp - 1.0) / (2.0 * lam), 0.5 * t_out),
                          0.5 * t_out)
        poll_wait = s_arr * (poll - 1.0) * (1.0 - busy) * t_d_o
        extra = np.where(m >= 2.0, poll_wait + np.where(grp > 1, gw, 0.0), 0.0)
        base_arrive = arrive
        arrive = arrive + extra
        ch_o = np.minimum(n, np.maximum(cap - d_o, 1.0))
        # prefill stage P = G(n (1 + A)): ahead of the prompt, by the arrival theorem, are the
        # others' prompts not yet in service (Little's law: (c - 1)/c X times the time a
        # prompt waits before its steps, the step in progress plus W = P - own), and what is
        # left of the one in service after the step in progress ((1 - ch/n) / 2 of a prompt,
        # when a prompt spans several steps); prompts waiting together share steps.
        # (:func:`stage_time` solves it; inf when the prefill stage cannot keep up)
        left = 0.5 * busy * (1.0 - ch_o / n)
        # (the prompts that arrive during the admission wait are prefilled with this one:
        # as many again as those gathered before it, hence the extra wait counted twice)
        p_stage = stage_time(n * (1.0 + left) + others * x * n * (arrive + extra),
                             others * x * n, own, d_o)
        p_stage = np.where(short, np.inf, p_stage)
        ttft = arrive + p_stage + ov
        r = ttft + om1 * itl
        return x, itl, ttft, r, own, f, base_arrive, arrive

    # bisection on d in (0, m): population X(d) R(d) rises with d, equals m at the solution
    lo = np.zeros_like(m)
    # (O = 1: d stands for X x own prefill, and prompts sharing steps may beat own per prompt)
    hi = np.where(om1 > 0, m, m * np.maximum(cap / n, 1.0))
    for _ in range(_BISECT):
        mid = 0.5 * (lo + hi)
        x, _, _, r, *_ = state(mid)
        pop = x * r
        below = pop < m
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    d = lo
    x, itl, ttft, r, own, f, arrive, arrive_all = state(d)
    if np.any(om1 == 0):  # one output token: no decodes, the cycle is the TTFT alone
        d = np.where(om1 == 0, 0.0, d)
    # past what the prefill can keep up with, X(d) R(d) jumps from below m to infinity: the
    # replica runs at that edge and the requests it cannot hold in steady state queue for
    # prefill. Those, and the requests waiting for KV memory, each add 1 / X to the TTFT
    # (Little's law); throughput from the identity X = c / (TTFT + (O - 1) ITL)
    x_m = np.maximum(x, 1e-300)
    ttft = ttft + np.maximum(c_all - x * r, 0.0) / x_m
    e2e = ttft + om1 * itl
    x = c_all / e2e
    wait = ttft - own - arrive - ov
    k1 = np.maximum(n / cap, 1.0)  # c = 1: its prefill steps among its own steps
    full_share = np.where(m >= 2, f, k1 / (k1 + om1))
    return {
        "concurrency": c_all.astype(float),
        "admitted": m,
        "kv_queue": c_all - m,
        "decode_batch": d,
        "full_step_share": full_share,
        "step_s": itl,
        "prefill_wait_s": np.where(wait > 1e-12 * ttft, wait, 0.0),
        "own_prefill_s": own,
        "step_in_progress_s": arrive,
        "admission_wait_s": arrive_all - arrive,
        "front_end_s": np.full_like(ttft, ov),
        "ttft_s": ttft,
        "itl_s": itl,
        "tpot_s": itl,
        "e2e_s": e2e,
        "requests_per_s": x,
        "output_tokens_per_s": x * osl,
        "input_tokens_per_s": x * isl,
    }


def closed_loop_curve(
    llm: LLMSpec,
    acc: AcceleratorSpec,
    *,
    gpus: int,
    precision: str = "bf16",
    input_tokens: float,
    output_tokens: float,
    concurrency: Any,
    params: PerfParams | None = None,
    prefix_cache_hit_share: float = 0.0,
) -> pd.DataFrame:
    """Closed-loop TTFT, ITL/TPOT and throughput of one replica at each concurrency (one row
    per value, in the order given; see the module docstring).

    Columns: ``concurrency``, ``ttft_s``, ``itl_s`` (= ``tpot_s``), ``e2e_s``,
    ``output_tokens_per_s``, ``requests_per_s``, ``input_tokens_per_s``, ``decode_batch``,
    ``kv_queue`` (requests waiting for KV memory), ``full_step_share`` (share of steps that
    carry prompt tokens), ``prefill_wait_s`` (TTFT spent behind other prompts and in the KV
    queue), ``fits_kv``.
    ``output_tokens_per_s = concurrency x O / (ttft_s + (O - 1) itl_s)``.

    Raises :class:`PlannerError` for concurrencies below 1 and configurations that do not fit.
    """
    c = _parse_concurrency(concurrency)
    p = params or PerfParams()
    sm = step_model(llm, acc, gpus, precision, p)
    check_lengths(llm, input_tokens, output_tokens)
    isl, osl = float(input_tokens), float(output_tokens)
    per = isl + osl if p.kv_reserve == "full" else isl + osl / 2.0
    if llm.sliding_window:
        per = min(per, float(llm.sliding_window))
    mp = require_fit(llm, acc, sm.gpus, sm.precision, p, tokens_needed=per)
    bmax = float(np.minimum(max_concurrent_requests(mp.kv_capacity_tokens, isl, osl,
                                                    p.kv_reserve, llm.sliding_window),
                            float(p.max_batch)))
    arr = closed_loop_arrays(sm, c, input_tokens=isl, output_tokens=osl, max_batch=bmax,
                             prefix_cache_hit_share=prefix_cache_hit_share)
    cols = ["concurrency", "ttft_s", "itl_s", "tpot_s", "e2e_s", "output_tokens_per_s",
            "requests_per_s", "input_tokens_per_s", "decode_batch", "kv_queue",
            "full_step_share", "prefill_wait_s"]
    df = pd.DataFrame({k: arr[k] for k in cols})
    df["fits_kv"] = df["kv_queue"] <= 0
    return df
