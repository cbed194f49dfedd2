"""Attention, step by step, from the simplest form up to GPT-2's fused multi-head causal attention.

Each step adds one idea to the one before it, and the tests show it reduces to its predecessor
under matching weights:

(a) `simple_attention`: scores are plain dot products of the inputs, no weights.
(b) `SelfAttention`: trainable W_q, W_k, W_v and the 1/sqrt(H) scaling.
(c) `CausalAttention`: a mask so position t sees only positions <= t, and dropout on the weights.
(d) `MultiHeadAttention`: N heads of width H = D / N from one fused qkv projection, an output
    projection, and a KV cache for decoding. The model uses this one.

Shapes: B batch, T query length, S key length, D model width, N heads, H head width.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def simple_attention(x: jax.Array) -> jax.Array:
    """(a) x: [..., T, D] -> [..., T, D]: output t is a softmax(x_t . x_s)-weighted mix of x_s."""
    scores = jnp.einsum("...td,...sd->...ts", x, x)
    return jnp.einsum("...ts,...sd->...td", jax.nn.softmax(scores, axis=-1), x)


def causal_mask(T: int, S: int, offset: jax.Array | int = 0) -> jax.Array:
    """[T, S] bool: query t, at absolute position offset + t, may see key s iff s <= offset + t.
    With `offset` [B] (one position per row), [B, T, S]."""
    return jnp.arange(S) <= (jnp.expand_dims(offset, -1) + jnp.arange(T))[..., None]


def masked_softmax(scores: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Softmax over the last axis in float32; masked entries get exactly zero weight."""
    scores = scores.astype(jnp.float32)
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(scores, axis=-1)


class SelfAttention(nn.Module):
    """(b) x: [B, T, D] -> [B, T, H]; scaled dot-product attention with trainable projections."""

    d_out: int
    qkv_bias: bool = False

    def project(self, x):
        dense = lambda name: nn.Dense(self.d_out, use_bias=self.qkv_bias, name=name)
        return dense("W_query")(x), dense("W_key")(x), dense("W_value")(x)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        q, k, v = self.project(x)
        weights = masked_softmax(jnp.einsum("bth,bsh->bts", q, k) / jnp.sqrt(self.d_out), None)
        return jnp.einsum("bts,bsh->bth", weights, v)


class CausalAttention(SelfAttention):
    """(c) x: [B, T, D] -> [B, T, H]; (b) where position t attends only to s <= t, with dropout."""

    drop_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
        T = x.shape[1]
        q, k, v = self.project(x)
        scores = jnp.einsum("bth,bsh->bts", q, k) / jnp.sqrt(self.d_out)
        weights = masked_softmax(scores, causal_mask(T, T))
        weights = nn.Dropout(self.drop_rate)(weights, deterministic=deterministic)
        return jnp.einsum("bts,bsh->bth", weights, v)


class KVCache(NamedTuple):
    """Keys and values of one layer for every position decoded so far: each [B, S, N, H]."""

    k: jax.Array
    v: jax.Array

    @classmethod
    def zeros(cls, B: int, S: int, N: int, H: int, dtype: Any = jnp.float32) -> KVCache:
        return cls(jnp.zeros((B, S, N, H), dtype), jnp.zeros((B, S, N, H), dtype))


def write_cache(cache: jax.Array, new: jax.Array, pos) -> jax.Array:
    """Write new [B, T, N, H] into cache [B, S, N, H] at position pos (scalar, or [B] per row)."""
    new = new.astype(cache.dtype)
    if jnp.ndim(pos) == 0:
        return lax.dynamic_update_slice(cache, new, (0, pos, 0, 0))
    row = lambda c, x, p: lax.dynamic_update_slice(c, x, (p, 0, 0))
    return jax.vmap(row)(cache, new, pos)


class MultiHeadAttention(nn.Module):
    """(d) GPT-2's `attn`: causal multi-head attention with a fused qkv projection `c_attn`.

    x: [B, T, D] -> ([B, T, D], cache). With a cache of length S, x holds positions
    pos .. pos+T-1; its keys and values are written into the cache and queries attend to every
    cached position up to their own. `pos` is a scalar, or [B] when each row is at its own
    position (the batched server's slots). `key_mask` [B, S] bool, when given, also hides the
    keys where it is False (padding).
    """

    n_heads: int
    drop_rate: float = 0.0
    qkv_bias: bool = True
    dtype: Any = jnp.float32
    out_init: Any = nn.initializers.normal(0.02)

    @nn.compact
    def __call__(self, x, *, deterministic=True, cache: KVCache | None = None, pos=0,
                 key_mask=None):  # fmt: skip
        B, T, D = x.shape
        N, H = self.n_heads, D // self.n_heads
        dense = lambda features, name, **kw: nn.Dense(
            features, dtype=self.dtype, kernel_init=nn.initializers.normal(0.02), name=name, **kw
        )
        qkv = dense(3 * D, "c_attn", use_bias=self.qkv_bias)(x)
        # c_attn's output is [q | k | v], each split into N heads of H contiguous columns.
        q, k, v = (qkv.reshape(B, T, 3, N, H)[:, :, i] for i in range(3))
        if cache is not None:
            k, v = write_cache(cache.k, k, pos), write_cache(cache.v, v, pos)
            cache = KVCache(k, v)
        S = k.shape[1]
        scores = jnp.einsum("btnh,bsnh->bnts", q, k, preferred_element_type=jnp.float32)
        mask = causal_mask(T, S, pos)
        if mask.ndim == 3:  # one position per row: [B, T, S] -> [B, 1, T, S]
            mask = mask[:, None]
        if key_mask is not None:
            mask = mask & key_mask[:, None, None, :]  # [B, 1, T, S]
        weights = masked_softmax(scores / jnp.sqrt(H).astype(jnp.float32), mask)
        weights = nn.Dropout(self.drop_rate)(weights, deterministic=deterministic)
        ctx = jnp.einsum("bnts,bsnh->btnh", weights.astype(self.dtype), v.astype(self.dtype))
        out = nn.Dense(D, dtype=self.dtype, kernel_init=self.out_init, name="c_proj")
        return out(ctx.reshape(B, T, D)), cache
