"""Model FLOPs utilisation: how close a training run is to the hardware's peak.

FLOPs per token as in the PaLM paper and nanoGPT: 6·N for the matmuls of forward and backward
(N = parameters without `wpe`, whose lookups cost nothing) plus 12·L·D·T for attention's scores
and weighted sums. MFU = tokens/s × that / the devices' peak bf16 FLOP/s (dense). Decoding is
bound by memory instead: its roofline is the bytes a step reads over the device's bandwidth.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from gptjax.config import GPTConfig
from gptjax.model.params import abstract_params, count_params


class Chip(NamedTuple):
    bf16: float  # dense (no sparsity) bf16 FLOP/s
    hbm: float  # memory bandwidth, bytes/s


# By a piece of jax's `device_kind` ("NVIDIA H200", "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe",
# "TPU v5 lite"); the longest match wins, so a PCIe or NVL row beats the plain SXM one.
# fmt: off
CHIPS = {
    # NVIDIA A100 datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4): BF16 312 TF dense;
    # 40GB 1,555 GB/s; 80GB PCIe 1,935 GB/s; 80GB SXM 2,039 GB/s.
    "A100":            Chip(312e12, 1555e9),
    "A100-SXM4-40GB":  Chip(312e12, 1555e9),
    "A100-PCIE-40GB":  Chip(312e12, 1555e9),
    "A100 80GB PCIe":  Chip(312e12, 1935e9),
    "A100-SXM4-80GB":  Chip(312e12, 2039e9),
    # NVIDIA H100 datasheet (h100-datasheet-2430615): BF16 1,979 / 1,513 / 1,671 TF with
    # sparsity (SXM / PCIe / NVL), half that dense; 3.35 / 2.0 / 3.9 TB/s.
    "H100":            Chip(989e12, 3.35e12),
    "H100 80GB HBM3":  Chip(989e12, 3.35e12),
    "H100 PCIe":       Chip(756e12, 2.0e12),
    "H100 NVL":        Chip(835e12, 3.9e12),
    # NVIDIA H200 datasheet (h200-datasheet-2981519): BF16 1,979 TF sparse (SXM), 4.8 TB/s;
    # H200 NVL 1,671 TF sparse, 4.8 TB/s.
    "H200":            Chip(989e12, 4.8e12),
    "H200 NVL":        Chip(835e12, 4.8e12),
    # NVIDIA GH200 Grace Hopper datasheet: the H100 die's 1,979 TF sparse BF16; HBM3 96GB at
    # 4 TB/s (HBM3e 144GB: 4.9 TB/s).
    "GH200":           Chip(989e12, 4.0e12),
    "GH200 144G HBM3e": Chip(989e12, 4.9e12),
    # NVIDIA HGX B200 spec (nvidia.com/en-us/data-center/hgx): 36 PF FP16/BF16 sparse for 8
    # GPUs, i.e. 2.25 PF dense each; HBM3e 8 TB/s per GPU.
    "B200":            Chip(2.25e15, 8.0e12),
    # NVIDIA L4 datasheet: BF16 242 TF sparse, GDDR6 300 GB/s.
    "L4":              Chip(121e12, 300e9),
    # NVIDIA L40S datasheet: BF16 733 TF sparse (362.05 dense), GDDR6 864 GB/s; L40: BF16
    # 362 TF sparse, 864 GB/s (a row of its own, or "L4" would match it).
    "L40S":            Chip(362e12, 864e9),
    "L40":             Chip(181e12, 864e9),
    # Google Cloud TPU system architecture pages (cloud.google.com/tpu/docs/v4, v5e, v5p,
    # v6e): bf16 peak per chip and HBM bandwidth. v5e reports as "TPU v5 lite", v5p as
    # "TPU v5", v6e as "TPU v6 lite".
    "TPU v4":          Chip(275e12, 1200e9),
    "TPU v5 lite":     Chip(197e12, 819e9),
    "TPU v5e":         Chip(197e12, 819e9),
    "TPU v5":          Chip(459e12, 2765e9),
    "TPU v5p":         Chip(459e12, 2765e9),
    "TPU v6 lite":     Chip(918e12, 1640e9),
    "TPU v6e":         Chip(918e12, 1640e9),
}
# fmt: on


def chip(device) -> Chip | None:
    """The table's row for a device (longest `device_kind` match), or None (CPUs)."""
    kind = device.device_kind.lower()
    names = [k for k in CHIPS if k.lower() in kind]
    return CHIPS[max(names, key=len)] if names else None


def flops_per_token(cfg: GPTConfig, T: int) -> float:
    """Training FLOPs (forward + backward) per token at context length T."""
    params = abstract_params(cfg)
    N = count_params(params) - cfg.context_length * cfg.emb_dim  # all but wpe
    return 6.0 * N + 12.0 * cfg.n_layers * cfg.emb_dim * T


def peak_flops(devices=None) -> float | None:
    """Summed bf16 peak of `devices` (default: all); None if any kind is not in the table
    (CPUs among them)."""
    chips = [chip(d) for d in (devices if devices is not None else jax.devices())]
    return None if None in chips else sum(c.bf16 for c in chips)


def peak_bandwidth(device=None) -> float | None:
    """Memory bytes/s of one device (default: the first), or None if not in the table."""
    found = chip(device if device is not None else jax.devices()[0])
    return found.hbm if found else None


def decode_bytes(
    cfg: GPTConfig, B: int, S: int, itemsize: int, weight_itemsize: int | None = None
) -> float:
    """Bytes one decode step reads: the weights once (`weight_itemsize` bytes each, default
    `itemsize`) and, per row, K and V of a cache of S positions in `itemsize` (all S: the step
    attends over the preallocated cache). B tokens per step, so the bandwidth roofline is
    B x bytes/s / decode_bytes tokens/s."""
    weights = count_params(abstract_params(cfg)) * (weight_itemsize or itemsize)
    return weights + B * 2 * cfg.n_layers * S * cfg.emb_dim * itemsize
