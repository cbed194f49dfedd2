"""Attention, step by step, from the simplest form up to GPT-2's fused multi-head causal attention.

Each step adds one idea to the one before it, and the tests show it reduces to its predecessor
under matching weights:

(a) `simple_attention`: scores are plain dot products of the inputs, no weights.
(b) `SelfAttention`: trainable W_q, W_k, W_v and the 1/sqrt(H) scaling.
(c) `CausalAttention`: a mask so position t sees only positions <= t, and dropout on the weights.
(d) `MultiHeadAttention`: N heads of width H = D / N from one fused qkv projection, an output
    projection, and a KV cache for decoding. The model uses this one.
(e) `fused_attention`: the same softmax(q k^T / sqrt(H)) v by a fused kernel (XLA's, cuDNN's
    flash attention, or the Pallas Triton kernel) that never stores the [B, N, T, S] scores;
    (d) runs the one its policy names (`Kernels.attention`) and keeps its einsums as the
    readable reference.

The modern recipe adds three options to (d), each off for GPT-2: rotary position embeddings
(`rotary`, RoFormer, Su et al. 2021), RMS-normalised queries and keys (`rms_heads`), and a
sliding window (`causal_mask`'s `window`). Document masking (`segments`) hides keys of other
documents in a packed row.

Shapes: B batch, T query length, S key length, D model width, N heads, H head width.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from gptjax.kernels import Kernels, cpu, resolve
from gptjax.model.hooks import hook
from gptjax.model.weights import Dense


def simple_attention(x: jax.Array) -> jax.Array:
    """(a) x: [..., T, D] -> [..., T, D]: output t is a softmax(x_t . x_s)-weighted mix of x_s."""
    scores = jnp.einsum("...td,...sd->...ts", x, x)
    return jnp.einsum("...ts,...sd->...td", jax.nn.softmax(scores, axis=-1), x)


def causal_mask(T: int, S: int, offset: jax.Array | int = 0, window: int | None = None):
    """[T, S] bool: query t, at absolute position offset + t, may see key s iff s <= offset + t
    (and, with a `window`, s > offset + t - window: its last `window` keys, itself included).
    With `offset` [B] (one position per row), [B, T, S]."""
    t = (jnp.expand_dims(offset, -1) + jnp.arange(T))[..., None]
    s = jnp.arange(S)
    return (s <= t) if window is None else (s <= t) & (s > t - window)


def rotary(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
    """x [B, T, N, H] with each head's two halves rotated, pair i by angle position * base^(-2i/H)
    (the half-split form of GPT-NeoX and the speedrun). positions [T] or [B, T]. The dot product
    of a rotated query and key depends only on their distance, so cached keys stay valid."""
    H = x.shape[-1]
    freqs = base ** (-jnp.arange(0, H // 2, dtype=jnp.float32) * 2 / H)  # [H/2]
    angles = jnp.asarray(positions, jnp.float32)[..., None] * freqs  # [(B,) T, H/2]
    angles = jnp.broadcast_to(angles, (x.shape[0], x.shape[1], H // 2))[:, :, None]
    cos, sin = jnp.cos(angles), jnp.sin(angles)  # [B, T, 1, H/2]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


def rms_heads(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """x [..., H] scaled to unit root-mean-square over H (no weights): QK-norm, which bounds
    the attention logits."""
    x32 = x.astype(jnp.float32)
    return (x32 * lax.rsqrt(jnp.mean(jnp.square(x32), -1, keepdims=True) + eps)).astype(x.dtype)


def same_segment(segments: jax.Array) -> jax.Array:
    """segments [B, T] int (a document number per token) -> [B, 1, T, T] bool: t sees s only
    within its own document."""
    return (segments[:, :, None] == segments[:, None, :])[:, None]


def masked_softmax(scores: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Softmax over the last axis in float32; masked entries get exactly zero weight."""
    scores = scores.astype(jnp.float32)
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(scores, axis=-1)


def hooked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
    """`masked_softmax` of scores [B, N, T, S] through TransformerLens's hook points:
    hook_attn_scores (masked entries -inf) and hook_pattern."""
    shown = jnp.where(mask, scores, -jnp.inf)
    seen = hook("hook_attn_scores", shown)
    weights = masked_softmax(scores, mask) if seen is shown else jax.nn.softmax(seen, axis=-1)
    return hook("hook_pattern", weights)


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
    keys where it is False (padding). `positions` [T] or [B, T]: each token's position, for
    `rope_base` (rotary embeddings); `segments` [B, T]: document numbers (no cache), for
    document masking. Keys go into the cache already rotated. `kernels`: the policy whose
    `attention` and `dense` run here (None: `kernels.resolve` for `dtype`); dropout on the
    weights always takes the reference einsums.
    """

    n_heads: int
    drop_rate: float = 0.0
    qkv_bias: bool = True
    dtype: Any = jnp.float32
    out_init: Any = nn.initializers.normal(0.02)
    kernels: Kernels | None = None
    rope_base: float | None = None  # rotary positions with this base (None: none, GPT-2)
    qk_norm: bool = False
    window: int | None = None

    @nn.compact
    def __call__(
        self,
        x,
        *,
        deterministic=True,
        cache: KVCache | None = None,
        pos=0,
        key_mask=None,
        positions=None,
        segments=None,
    ):
        B, T, D = x.shape
        N, H = self.n_heads, D // self.n_heads
        kernels = self.kernels or resolve(dtype=self.dtype)
        dense = lambda features, name, init, **kw: Dense(
            features, dtype=self.dtype, kernel_init=init, name=name, impl=kernels.dense, **kw
        )
        qkv = dense(3 * D, "c_attn", nn.initializers.normal(0.02), use_bias=self.qkv_bias)(x)
        # c_attn's output is [q | k | v], each split into N heads of H contiguous columns.
        q, k, v = (qkv.reshape(B, T, 3, N, H)[:, :, i] for i in range(3))
        q, k, v = hook("hook_q", q), hook("hook_k", k), hook("hook_v", v)
        if self.qk_norm:
            q, k = rms_heads(q), rms_heads(k)
        if self.rope_base is not None:
            at = jnp.expand_dims(pos, -1) + jnp.arange(T) if positions is None else positions
            q = hook("hook_rot_q", rotary(q, at, self.rope_base))
            k = hook("hook_rot_k", rotary(k, at, self.rope_base))
        if cache is not None:
            k, v = write_cache(cache.k, k, pos), write_cache(cache.v, v, pos)
            cache = KVCache(k, v)
        S = k.shape[1]
        mask = causal_mask(T, S, pos, self.window)
        if mask.ndim == 3:  # one position per row: [B, T, S] -> [B, 1, T, S]
            mask = mask[:, None]
        if key_mask is not None:
            mask = mask & key_mask[:, None, None, :]  # [B, 1, T, S]
        if segments is not None:
            mask = mask & same_segment(segments)  # [B, 1, T, T]
        dropping = self.drop_rate > 0 and not deterministic
        impl = "reference" if dropping else kernels.attention
        if impl == "reference":
            scores = jnp.einsum("btnh,bsnh->bnts", q, k, preferred_element_type=jnp.float32)
            weights = hooked_softmax(scores / jnp.sqrt(H).astype(jnp.float32), mask)
            weights = nn.Dropout(self.drop_rate)(weights, deterministic=deterministic)
            ctx = jnp.einsum("bnts,bsnh->btnh", weights.astype(self.dtype), v.astype(self.dtype))
        elif impl == "cpu-bf16":  # the same values, every dot on an AMX CPU's bf16 kernel
            ctx = cpu.attention(q, k.astype(q.dtype), v.astype(q.dtype), mask)
        else:
            # Without a cache or padding the mask is causal (windowed, segmented): kernels that
            # know it skip the blocks it hides.
            plain = cache is None and key_mask is None
            k, v = k.astype(q.dtype), v.astype(q.dtype)
            ctx = fused_attention(
                q, k, v, mask, impl, plain, self.window, segments, kernels.platform
            )
        out = dense(D, "c_proj", self.out_init)
        return out(hook("hook_z", ctx).reshape(B, T, D)), cache


def fused_attention(
    q, k, v, mask, impl: str, causal: bool, window=None, segments=None, platform="cpu"
) -> jax.Array:
    """(e) q [B, T, N, H], k and v [B, S, N, H], mask broadcastable to [B, N, T, S] ->
    [B, T, N, H] by `impl` ("xla", "cudnn" or "pallas", the latter `platform`'s Pallas
    kernel). `causal`: the mask is exactly `causal_mask(T, S, 0, window)` with T = S, within
    the documents of `segments` when given (training, a prefill from position 0), which the
    kernels compute without reading the mask: cuDNN takes the window but not segments,
    Pallas's kernels take segments but not the window. Any other mask goes through XLA's."""
    if impl == "pallas" and causal and window is None and platform == "tpu":
        if tpu_flash_fits(q.shape[1]):
            return tpu_flash_attention(q, k, v, segments)
    elif impl == "pallas" and causal and window is None:
        from jax.experimental.pallas.ops.gpu.attention import mha

        interpret = platform == "cpu"  # the kernel's own interpreter: for tests
        scale = q.shape[-1] ** -0.5
        return mha(q, k, v, segments, sm_scale=scale, causal=True, interpret=interpret)
    if impl == "cudnn" and causal and segments is None:
        local = None if window is None else (window - 1, 0)
        return jax.nn.dot_product_attention(
            q, k, v, is_causal=True, local_window_size=local, implementation="cudnn"
        )
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")


def tpu_flash_fits(T: int) -> bool:
    """Whether Pallas's TPU flash kernel takes T (its default blocks are 128 long)."""
    return T >= 128 and T % 128 == 0


def tpu_flash_attention(q, k, v, segments=None) -> jax.Array:
    """Causal q, k, v [B, T, N, H] -> [B, T, N, H] by Pallas's TPU flash attention kernel
    (which wants [B, N, T, H]), within the documents of `segments` [B, T] when given; on CPU
    only inside `pltpu.force_tpu_interpret_mode()`."""
    from jax.experimental.pallas.ops.tpu.flash_attention import SegmentIds, flash_attention

    heads_first = lambda x: x.transpose(0, 2, 1, 3)
    ids = None if segments is None else SegmentIds(segments, segments)
    out = flash_attention(
        heads_first(q),
        heads_first(k),
        heads_first(v),
        segment_ids=ids,
        causal=True,
        sm_scale=q.shape[-1] ** -0.5,
    )
    return heads_first(out)
