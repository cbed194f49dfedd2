"""Model FLOPs utilisation: how close a training run is to the hardware's peak.

FLOPs per token as in the PaLM paper and nanoGPT: 6·N for the matmuls of forward and backward
(N = parameters without `wpe`, whose lookups cost nothing) plus 12·L·D·T for attention's scores
and weighted sums. MFU = tokens/s × that / the devices' peak bf16 FLOP/s (dense).
"""

from __future__ import annotations

import jax

from gptjax.config import GPTConfig
from gptjax.model.gpt import abstract_params, count_params

# Dense bf16 peak FLOP/s per device, by a piece of jax's `device_kind`; longest match wins.
PEAK_BF16 = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
}


def flops_per_token(cfg: GPTConfig, T: int) -> float:
    """Training FLOPs (forward + backward) per token at context length T."""
    params = abstract_params(cfg)
    N = count_params(params) - cfg.context_length * cfg.emb_dim  # all but wpe
    return 6.0 * N + 12.0 * cfg.n_layers * cfg.emb_dim * T


def peak_flops(devices=None) -> float | None:
    """Summed bf16 peak of `devices` (default: all); None if any kind is not in the table
    (CPUs among them)."""
    total = 0.0
    for d in devices if devices is not None else jax.devices():
        kinds = [k for k in PEAK_BF16 if k.lower() in d.device_kind.lower()]
        if not kinds:
            return None
        total += PEAK_BF16[max(kinds, key=len)]
    return total
