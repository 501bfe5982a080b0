"""First-principles helpers (used by the source-article studies and as a cross-check).

* Inference: ``2 N`` FLOPs per token for an ``N``-parameter dense transformer (one multiply and
  one add per weight; Kaplan et al. 2020, "Scaling Laws for Neural Language Models", sec. 2.1).
* Training: ``6 N D`` FLOPs for ``D`` tokens (forward 2N + backward 4N; same source; Hoffmann
  et al. 2022, "Chinchilla").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from planner.errors import PlannerError


def _pos(name: str, v: Any) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    if np.any(~np.isfinite(a)) or np.any(a <= 0):
        raise PlannerError(f"{name}: expected a positive number, got {v!r}")
    return a


def flops_per_token(params_b: Any) -> Any:
    """Inference FLOPs per token: ``2 N`` with ``N = params_b x 1e9``."""
    return 2.0 * _pos("params_b", params_b) * 1e9


def training_flops(params_b: Any, tokens: Any) -> Any:
    """Training FLOPs: ``6 N D``."""
    return 6.0 * _pos("params_b", params_b) * 1e9 * _pos("tokens", tokens)


def tokens_per_s_compute(params_b: Any, peak_tflops: Any, mfu: Any) -> Any:
    """Compute-bound tokens/s: ``peak x mfu / (2 N)``."""
    m = np.asarray(mfu, dtype=float)
    if np.any(m <= 0) or np.any(m > 1):
        raise PlannerError(f"mfu: expected a fraction in (0, 1], got {mfu!r}")
    return _pos("peak_tflops", peak_tflops) * 1e12 * m / flops_per_token(params_b)


def decode_tokens_per_s_bandwidth(
    weight_bytes: Any, kv_bytes_per_seq: Any, batch: Any, mem_bw_bytes_per_s: Any
) -> Any:
    """Bandwidth roofline for decode: ``B x BW / (weights + B x KV per sequence)``.

    Every decode step reads all weights once plus each sequence's KV cache; no decode can
    produce tokens faster than this.
    """
    b = np.asarray(batch, dtype=float)
    return b * np.asarray(mem_bw_bytes_per_s, dtype=float) / (
        np.asarray(weight_bytes, dtype=float) + b * np.asarray(kv_bytes_per_seq, dtype=float)
    )
