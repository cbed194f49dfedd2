"""GPT-2 (Radford et al., 2019), top to bottom: LayerNorm, GELU, feed-forward, block, model.

Parameter names are OpenAI's (`wte`, `wpe`, `h_0` .. `h_{L-1}` with `ln_1`, `attn/c_attn`,
`attn/c_proj`, `ln_2`, `mlp/c_fc`, `mlp/c_proj`, then `ln_f`). Flax Dense kernels are
[in, out] like OpenAI's conv1d weights, so loading a checkpoint is a name map.

The modern recipe's switches (`GPTConfig.position`, `norm`, `qk_norm`, `activation`,
`logit_softcap`, `window`) swap a piece in place and keep every name: RMSNorm is still `ln_1`,
and a rotary model simply has no `wpe`. A tree of narrow weights for decoding
(`weights.quantize`: int8 or bf16 matrices with their scales) runs through the same modules.

Every activation passes a named point (`hook`, TransformerLens's names: hook_embed,
hook_resid_pre, ln_1/hook_scale, attn/hook_q, mlp/hook_post, ...), the identity unless
`gptjax.probe` reads or replaces it.

Shapes: B batch, T tokens, S cached positions, D emb_dim, F = 4D MLP width, V vocab_size.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gptjax.config import GPTConfig
from gptjax.kernels import Kernels, resolve
from gptjax.kernels.fence import gradient_fence
from gptjax.model.attention import KVCache, MultiHeadAttention
from gptjax.model.head import lm_logits
from gptjax.model.hooks import hook, inverse_scale
from gptjax.model.weights import Dense, Embed

Cache = tuple[KVCache, ...]  # one KVCache per block


class LayerNorm(nn.Module):
    """x: [..., D] -> [..., D]. Normalise over D (eps 1e-5 as GPT-2), then scale and shift."""

    eps: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        D = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (D,))
        shift = self.param("bias", nn.initializers.zeros, (D,))
        # Statistics in float32 even under bfloat16 compute: variance of activations is fragile.
        x = x.astype(jnp.float32)
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        y = (x - mean) * inverse_scale(var + self.eps) * scale + shift
        return hook("hook_normalized", y.astype(self.dtype))


class RMSNorm(nn.Module):
    """x: [..., D] -> [..., D]. Divide by the root mean square over D, then scale (no shift):
    the modern recipe's norm (Zhang and Sennrich, 2019), one reduction instead of two."""

    eps: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        x = x.astype(jnp.float32)
        y = x * inverse_scale(jnp.square(x).mean(-1, keepdims=True) + self.eps) * scale
        return hook("hook_normalized", y.astype(self.dtype))


def norm(cfg: GPTConfig, dtype, name: str) -> nn.Module:
    """The block's normalisation layer: GPT-2's LayerNorm, or RMSNorm (`cfg.norm`)."""
    return (RMSNorm if cfg.norm == "rmsnorm" else LayerNorm)(dtype=dtype, name=name)


def gelu(x: jax.Array) -> jax.Array:
    """GELU with GPT-2's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return jax.nn.gelu(x, approximate=True)


def relu2(x: jax.Array) -> jax.Array:
    """ReLU squared (So et al., 2021, "Primer"), the speedrun's MLP activation."""
    return jnp.square(jax.nn.relu(x))


ACTIVATIONS = {"gelu": gelu, "relu2": relu2}


class FeedForward(nn.Module):
    """GPT-2's `mlp`: x: [B, T, D] -> [B, T, F=4D] -> GELU (or `activation`) -> [B, T, D]."""

    out_init: Any
    dtype: Any = jnp.float32
    activation: str = "gelu"
    dense: str = "xla"  # `Kernels.dense`

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        D = x.shape[-1]
        layer = lambda n, init, name: Dense(
            n, dtype=self.dtype, kernel_init=init, name=name, impl=self.dense
        )
        h = hook("hook_pre", layer(4 * D, nn.initializers.normal(0.02), "c_fc")(x))
        h = hook("hook_post", ACTIVATIONS[self.activation](h))
        return layer(D, self.out_init, "c_proj")(h)


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)). [B, T, D] -> same."""

    cfg: GPTConfig
    dtype: Any = jnp.float32
    kernels: Kernels | None = None  # what runs at each hot spot (None: resolved for dtype)

    @nn.compact
    def __call__(self, x, deterministic=True, cache: KVCache | None = None, where=None):
        """`where`: where the tokens sit, as `MultiHeadAttention` takes it (pos, key_mask,
        positions, segments), handed on unchanged."""
        cfg, kernels = self.cfg, self.kernels or resolve(dtype=self.dtype)
        # GPT-2 scales the init of layers that write into the residual stream by 1/sqrt(2L).
        out_init = nn.initializers.normal(0.02 / math.sqrt(2 * cfg.n_layers))
        drop = nn.Dropout(cfg.drop_rate)
        attn = MultiHeadAttention(
            cfg.n_heads,
            cfg.drop_rate,
            cfg.qkv_bias,
            self.dtype,
            out_init,
            kernels,
            rope_base=cfg.rope_base if cfg.position == "rotary" else None,
            qk_norm=cfg.qk_norm,
            window=cfg.window,
            name="attn",
        )
        x = hook("hook_resid_pre", x)
        ln_1 = norm(cfg, self.dtype, "ln_1")
        a, cache = attn(ln_1(x), deterministic=deterministic, cache=cache, **(where or {}))
        x = hook("hook_resid_mid", x + drop(hook("hook_attn_out", a), deterministic=deterministic))
        mlp = FeedForward(out_init, self.dtype, cfg.activation, kernels.dense, name="mlp")
        m = hook("hook_mlp_out", mlp(norm(cfg, self.dtype, "ln_2")(x)))
        return hook("hook_resid_post", x + drop(m, deterministic=deterministic)), cache


# What a rematerialised block keeps for the backward pass: "block" nothing (all recomputed),
# "dots" the matmul outputs (recomputes only the cheap elementwise work).
REMAT = {
    "none": None,
    "block": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def trunk(
    cfg: GPTConfig,
    dtype,
    tokens,
    *,
    deterministic,
    cache=None,
    pos=0,
    mask=None,
    offset=None,
    kernels: Kernels | None = None,
    remat="none",
    segments=None,
):
    """Embeddings, the L blocks and the final norm: tokens [B, T] -> x [B, T, D].

    Called inside a compact `__call__` (GPT's, GPTClassifier's), so `wte`, `wpe`, `h_i` and
    `ln_f` are created in the caller's scope: every model built on it has OpenAI's names at the
    top of its tree. Padded rows compute exactly what the row alone would, told either way:
    `mask` [B, T] bool (no cache) marks real tokens anywhere in the row; `offset` [B] int
    counts the pads at the start of each row (left padding, with or without a cache). Pads are
    hidden from attention and do not count as positions. `remat` (a key of REMAT) recomputes
    each block's activations in the backward pass instead of storing them. `segments` [B, T]
    (no cache): each token's document number, which attention keeps to (document masking).
    `kernels`: what runs at each hot spot (None: `kernels.resolve` for `dtype`).
    Returns (x, new_cache, wte).
    """
    kernels = kernels or resolve(dtype=dtype)
    T = tokens.shape[1]
    key_mask = None
    wte = Embed(
        cfg.vocab_size,
        cfg.emb_dim,
        embedding_init=nn.initializers.normal(0.02),
        dtype=dtype,
        name="wte",
    )
    positions = jnp.expand_dims(pos, -1) + jnp.arange(T)  # [T], or [B, T] for pos [B]
    if mask is not None:
        positions, key_mask = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0), mask  # [B, T]
    if offset is not None:
        S = T if cache is None else cache[0].k.shape[1]
        positions = jnp.maximum(positions - offset[:, None], 0)  # [B, T]
        key_mask = jnp.arange(S)[None, :] >= offset[:, None]  # [B, S]
    x = hook("hook_embed", wte(tokens))
    if cfg.position == "learned":  # GPT-2's; rotary positions enter in attention instead
        wpe = nn.Embed(
            cfg.context_length,
            cfg.emb_dim,
            embedding_init=nn.initializers.normal(0.01),
            dtype=dtype,
            name="wpe",
        )
        x = x + hook("hook_pos_embed", jnp.broadcast_to(wpe(positions), x.shape))
    x = nn.Dropout(cfg.drop_rate)(x, deterministic=deterministic)
    if remat not in REMAT:
        raise ValueError(f"unknown remat {remat!r}; expected one of: {', '.join(REMAT)}")
    layer = Block
    if REMAT[remat] is not None:  # `deterministic` (argument 2, self is 0) picks code: static
        layer = nn.remat(Block, policy=REMAT[remat], static_argnums=(2,))
    where = dict(pos=pos, key_mask=key_mask, positions=positions, segments=segments)
    new_cache = []
    for i in range(cfg.n_layers):
        block = layer(cfg, dtype, kernels, name=f"h_{i}")
        layer_cache = None if cache is None else cache[i]
        # On CPU, the residual gradient stored once per block (XLA would re-add it: fence.py).
        x, c = block(gradient_fence(x, kernels.fence), deterministic, layer_cache, where)
        new_cache.append(c)
    return norm(cfg, dtype, "ln_f")(x), tuple(new_cache), wte


class GPT(nn.Module):
    """GPT-2. tokens: [B, T] int -> logits [B, T, V] float32.

    `dtype` is the compute dtype (e.g. bfloat16); parameters stay float32 and the softmax,
    LayerNorm statistics and logits are computed in float32. With `cache` (one KVCache per block,
    each [B, S, N, H]) the tokens sit at positions pos .. pos+T-1 (`pos` a scalar, or [B]: one
    per row) and the call returns (logits, new_cache) for incremental decoding. Padded rows:
    `mask` [B, T] bool (no cache) or `offset` [B] left pads (see `trunk`). `kernels` names
    what runs at each hot spot (`gptjax.kernels`; None: resolved for `dtype` on the default
    devices), `remat` what blocks recompute (`REMAT`).
    `padded_logits`: return the logits as the head computed them, [B, T, V'] with V' = V
    rounded up to a multiple of 128 and the extra columns -inf where it was padded (see
    `lm_logits`), which the loss can take as they are.
    """

    cfg: GPTConfig
    dtype: Any = jnp.float32
    kernels: Kernels | None = None
    remat: str = "none"
    padded_logits: bool = False

    @nn.compact
    def __call__(
        self,
        tokens,
        *,
        deterministic=True,
        cache: Cache | None = None,
        pos=0,
        mask=None,
        offset=None,
        head=True,
        segments=None,
    ):
        """`head=False`: the final hidden states [B, T, D] instead of logits (chunked losses).
        `segments` [B, T] int: document numbers for document masking (see `trunk`)."""
        cfg, kernels = self.cfg, self.kernels or resolve(dtype=self.dtype)
        x, new_cache, wte = trunk(
            cfg,
            self.dtype,
            tokens,
            deterministic=deterministic,
            cache=cache,
            pos=pos,
            mask=mask,
            offset=offset,
            kernels=kernels,
            remat=self.remat,
            segments=segments,
        )
        if cfg.tie_embeddings:
            out, scale = wte.embedding, wte.scale  # [V, D]; scale [V] for narrow weights
        else:
            out = self.param("lm_head", nn.initializers.normal(0.02), (cfg.vocab_size, cfg.emb_dim))
            scale = self.get_variable("params", "lm_head_scale")
        if not head:
            return x
        cap, padded = cfg.logit_softcap, self.padded_logits
        logits = lm_logits(x, out, self.dtype, padded=padded, cap=cap, scale=scale, kernels=kernels)
        return logits if cache is None else (logits, new_cache)

    def init_cache(self, B: int, S: int, dtype: Any = None) -> Cache:
        """An empty cache for B sequences of up to S positions: L KVCaches of [B, S, N, H]."""
        cfg = self.cfg
        dtype = dtype or self.dtype
        return tuple(
            KVCache.zeros(B, S, cfg.n_heads, cfg.head_dim, dtype) for _ in range(cfg.n_layers)
        )
