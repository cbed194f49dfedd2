"""Named points of the forward pass, by TransformerLens's names: `hook("hook_resid_pre", x)` is
the identity, a Flax module (`Hook`) whose output `gptjax.probe` reads (run_with_cache) or
replaces (run_with_hooks) through `nn.intercept_methods`. When no probe is active nothing
intercepts them: the jaxpr gains at most values that nothing reads, which XLA drops, so the
compiled program is the one without hooks.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class Hook(nn.Module):
    """The identity, at a named point (its module path: h_0/attn/hook_q, ...)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return x


def hook(name: str, x: jax.Array) -> jax.Array:
    """x through the hook point `name` of the module being built (call inside a compact method)."""
    return Hook(name=name)(x)


def inverse_scale(mean_square: jax.Array) -> jax.Array:
    """1 / sqrt(mean_square) for a norm, [..., 1]; TransformerLens's `hook_scale` is the
    sqrt itself. Unless a probe replaces it, this is the rsqrt the norm always took."""
    root = jnp.sqrt(mean_square)
    seen = hook("hook_scale", root)
    return jax.lax.rsqrt(mean_square) if seen is root else 1.0 / seen
