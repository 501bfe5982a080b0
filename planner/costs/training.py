"""Training and first-principles compute costs.

- Inference: ~2N FLOPs per token (N parameters; Kaplan et al. 2020; articles 001, 002, 004).
- Training: ~6N FLOPs per token, C = 6 N D for D tokens (forward 2N + backward 4N).
- LoRA: frozen base weights need no weight gradients, so the backward pass costs ~2N instead of
  4N: ~4N per token (factor 2/3 of full fine-tuning; Hu et al. 2021 report the saving in
  practice). The factor is a parameter, ``lora_flops_factor``.
- Time on hardware: seconds = FLOPs / (chips x peak FLOP/s x MFU).
"""

from __future__ import annotations

import numpy as np

#: FLOPs per parameter per token
INFERENCE_FLOPS_PER_PARAM = 2.0
TRAINING_FLOPS_PER_PARAM = 6.0
LORA_FLOPS_FACTOR = 2.0 / 3.0


def inference_flops(params_b, tokens=1.0):
    """2 N FLOPs per generated or processed token."""
    return INFERENCE_FLOPS_PER_PARAM * np.asarray(params_b, dtype=float) * 1e9 * tokens


def training_flops(params_b, tokens, flops_factor=1.0):
    """C = 6 N D x factor (factor 2/3 for LoRA)."""
    return TRAINING_FLOPS_PER_PARAM * np.asarray(params_b, dtype=float) * 1e9 * tokens * flops_factor


def chip_hours(flops, peak_tflops, mfu=1.0):
    """Accelerator-hours = FLOPs / (peak x MFU) / 3600."""
    return np.asarray(flops, dtype=float) / (np.asarray(peak_tflops, dtype=float) * 1e12 * mfu) / 3600.0


def usd_per_ktok_inference(params_b, peak_tflops, mfu, usd_per_instance_hour, chips_per_instance=1):
    """Cost of 1,000 tokens at 2N FLOPs/token on an instance of identical chips.

    usd/1K = 1000 x 2N / (chips x peak x MFU) x usd_per_instance_hour / 3600
    (article 001: 8 x 222B on A100 312 TFLOPS at $2.2659/h -> $0.0071656;
    article 004: GPT-3 175B on 8 x A100 at $19.22/h and 21.3% MFU -> ~$0.0035).
    """
    seconds = 1000.0 * inference_flops(params_b) / (chips_per_instance * peak_tflops * 1e12 * mfu)
    return seconds * usd_per_instance_hour / 3600.0


def full_finetune_memory_gb(params_b, bytes_per_param=16.0):
    """Model-state memory of full fine-tuning with Adam in mixed precision.

    16 bytes/parameter: bf16 weights (2) + bf16 gradients (2) + fp32 master weights (4) + Adam
    moments (8) (ZeRO paper, Rajbhandari et al. 2020, section 3.1). Activations are extra.
    """
    return np.asarray(params_b, dtype=float) * bytes_per_param


def lora_memory_gb(params_b, bytes_per_param=2.0, overhead_share=0.1):
    """LoRA memory: frozen bf16 weights (2 bytes/param) + ~10% for adapters, their optimiser
    state and activations (an assumption; the adapters are <1% of the parameters)."""
    return np.asarray(params_b, dtype=float) * bytes_per_param * (1.0 + overhead_share)


# --------------------------------------------------------------------------------------------
# fine-tune run costs on arrays (Monte Carlo engine)


def finetune_api_run_usd(ft_train_usd_per_mtok, tokens_trained):
    """One API fine-tuning run: price per 1M training tokens x tokens (x epochs) / 1e6."""
    return ft_train_usd_per_mtok * tokens_trained / 1e6


def finetune_gpu_run_usd(params_b, tokens_trained, flops_factor, gpus, peak_tflops, mfu,
                         usd_per_gpu_hour):
    """One LoRA/full fine-tuning run on rented GPUs.

    hours = 6 N D x factor / (gpus x peak x MFU) / 3600; usd = hours x gpus x usd_per_gpu_hour.
    Returns (usd, wall-clock hours).
    """
    flops = training_flops(params_b, tokens_trained, flops_factor)
    hours = chip_hours(flops, peak_tflops * gpus, mfu)
    return hours * gpus * usd_per_gpu_hour, hours


# --------------------------------------------------------------------------------------------
# a fine-tune's one-off cost and its payback


def finetune_one_off_usd(run_usd, retry_multiplier, one_off_usd=0.0):
    """Everything a fine-tune costs once: training runs x retries + the rest of the project.

    usd = run_usd x retry_multiplier + one_off_usd, where ``one_off_usd`` is the engineering,
    data preparation and evaluation a fine-tune needs besides compute (article 000 budgets the
    training bill at 10-20 runs because fine-tuning rarely succeeds the first time; the
    people-time around it is a separate line that a LoRA's small compute bill does not
    include). Works on numbers and on arrays of samples.
    """
    return run_usd * retry_multiplier + one_off_usd


def finetune_payback(one_off_usd, usd_per_token_finetuned, usd_per_token_versus,
                     monthly_saving_usd):
    """Break-even tokens and payback months of a one-off cost that lowers the cost per token.

    T* = one_off / (c_versus - c_finetuned) tokens (no break-even when the fine-tuned option
    is not cheaper per token); payback months = one_off / monthly saving (the simple payback
    period, undiscounted: Brealey, Myers & Allen, *Principles of Corporate Finance*, ch. 5).
    ``one_off_usd`` is :func:`finetune_one_off_usd`'s total. Returns ``(tokens, months)``,
    NaN where there is no break-even.

    Examples
    --------
    >>> finetune_payback(1_000.0, 1e-6, 3e-6, 500.0)
    (500000000.0, 2.0)
    """
    gain = usd_per_token_versus - usd_per_token_finetuned
    tokens = one_off_usd / gain if gain > 0 else float("nan")
    months = one_off_usd / monthly_saving_usd if monthly_saving_usd > 0 else float("nan")
    return float(tokens), float(months)
