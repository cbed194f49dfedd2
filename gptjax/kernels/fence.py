"""A fence for XLA's CPU fusion in the backward pass: the residual stream's gradient is stored
once per block instead of being re-added in every place that reads it.

In the backward pass the gradient at block i's input is the sum of what every later block adds
to the residual stream. XLA's CPU compiler counts those adds as cheap and fuses the whole chain
into each of its consumers (three loop fusions per block, one of them the transposed copy a
weight gradient reads) instead of storing the sum: O(L^2) passes over [B, T, D], up to 231
operands in one fusion of the 124M train step. A conditional is a fusion boundary that XLA
keeps, so passing the gradient through one stores it: 124M's CPU train step runs about 1.25x
faster (AMD EPYC, B 4, T 128), and no value changes.

Only on CPU (the policy's `fence="cpu"`): a GPU's conditional waits for its predicate on the
host, and XLA's GPU fusion weighs what duplicating costs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def gradient_fence(x: jax.Array, fence: str) -> jax.Array:
    """x unchanged; with `fence` "cpu" (`Kernels.fence`) the gradient flowing back through it
    is computed once and stored."""
    return _fenced(x) if fence == "cpu" else x


@jax.custom_vjp
def _fenced(x):
    return x


def _store(g):
    # XLA folds a conditional whose branches are equal, so one adds 0.0, which changes no value
    # (only -0.0 to 0.0); the predicate must be unknown until run time.
    return lax.cond(jnp.isnan(g.reshape(-1)[0]), lambda g: g + 0.0, lambda g: g, g)


_fenced.defvjp(lambda x: (x, None), lambda _, g: (_store(g),))
