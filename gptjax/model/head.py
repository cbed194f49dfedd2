"""The output head: hidden states [..., D] times the head [V, D] -> float32 logits [..., V].

On GPUs and TPUs (the policy's head "padded") the vocabulary is padded to a multiple of 128
in compute only (checkpoints keep V rows) for even matmul tiles; the padded columns are -inf
wherever a softmax could see them.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gptjax.kernels import Kernels, cpu, resolve
from gptjax.model.weights import narrow_matmul

VOCAB_MULTIPLE = 128  # matmul tiles on GPUs and TPUs: 50,257 columns compute as 50,304


def padded_vocab(V: int) -> int:
    return -(-V // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def padded_head(head: jax.Array, dtype) -> jax.Array:
    """The output head [V, D] in the compute dtype with zero rows up to V' = padded_vocab(V)."""
    V = head.shape[0]
    return jnp.pad(head.astype(dtype), ((0, padded_vocab(V) - V), (0, 0)))


def mask_padding(logits: jax.Array, V: int) -> jax.Array:
    """logits [..., V'] with the columns past the V real tokens set to -inf."""
    return jnp.where(jnp.arange(logits.shape[-1]) < V, logits, -jnp.inf)


def softcap(logits: jax.Array, cap: float | None) -> jax.Array:
    """cap * tanh(logits / cap): logits squashed smoothly into (-cap, cap) (Gemma 2, the
    speedrun); None leaves them as they are (GPT-2)."""
    return logits if cap is None else cap * jnp.tanh(logits / cap)


def xla_head(x: jax.Array, head: jax.Array, pad: int) -> jax.Array:
    """x [..., D] in the compute dtype times the head [V, D], padded (`padded_head`) when
    `pad` (V' - V) is not 0, in x's dtype -> float32 logits [..., V + pad]."""
    head = padded_head(head, x.dtype) if pad else head.astype(x.dtype)
    return jnp.einsum("...d,vd->...v", x, head, preferred_element_type=jnp.float32)


# `Kernels.head` -> (the product, whether a matmul of many rows pads the vocabulary)
HEADS = {
    "padded": (xla_head, True),
    "unpadded": (xla_head, False),
    "cpu": (cpu.head, False),
    "cpu-padded": (cpu.head, True),
}


def lm_logits(
    x: jax.Array,
    head: jax.Array,
    dtype,
    *,
    padded: bool = False,
    cap: float | None = None,
    scale: jax.Array | None = None,
    kernels: Kernels | None = None,
) -> jax.Array:
    """x [..., D] times the output head [V, D] -> float32 logits [..., V], soft-capped at
    `cap` (`GPTConfig.logit_softcap`).

    The product is the policy's head (`Kernels.head`; None: `kernels.resolve` for `dtype`).
    Where it pads, a matmul of many rows (training, prefill) runs on the head padded with zero
    rows to V' = padded_vocab(V), in compute only (checkpoints keep V rows), for even tiles; a
    decode step's few rows would only pay for a padded copy of the head. `padded`: return the
    logits as computed, [..., V'] with the extra columns -inf where the head was padded, so
    softmax, losses and samples are those of the V real tokens without a sliced copy.
    `scale` [V]: the head is narrow (int8, bf16) with a scale per row (`weights.quantize`).
    """
    V = head.shape[0]
    if scale is not None:  # a narrow head, never padded
        product = narrow_matmul(x, head, scale)
    else:
        kernels = kernels or resolve(dtype=dtype)
        matmul, pads = HEADS[kernels.head]
        many = math.prod(x.shape[:-1]) >= VOCAB_MULTIPLE
        product = matmul(x.astype(dtype), head, padded_vocab(V) - V if pads and many else 0)
    logits = softcap(product, cap)
    if logits.shape[-1] == V:
        return logits
    return mask_padding(logits, V) if padded else logits[..., :V]
