"""GPT-2 (Radford et al., 2019), top to bottom: LayerNorm, GELU, feed-forward, block, model.

Parameter names are OpenAI's (`wte`, `wpe`, `h_0` .. `h_{L-1}` with `ln_1`, `attn/c_attn`,
`attn/c_proj`, `ln_2`, `mlp/c_fc`, `mlp/c_proj`, then `ln_f`). Flax Dense kernels are
[in, out] like OpenAI's conv1d weights, so loading a checkpoint is a name map.

Shapes: B batch, T tokens, S cached positions, D emb_dim, F = 4D MLP width, V vocab_size.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from gptjax.config import GPTConfig
from gptjax.model.attention import KVCache, MultiHeadAttention
from gptjax.model.fence import gradient_fence

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
        y = (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + shift
        return y.astype(self.dtype)


def gelu(x: jax.Array) -> jax.Array:
    """GELU with GPT-2's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return jax.nn.gelu(x, approximate=True)


class FeedForward(nn.Module):
    """GPT-2's `mlp`: x: [B, T, D] -> [B, T, F=4D] -> GELU -> [B, T, D]."""

    out_init: Any
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        D = x.shape[-1]
        init = nn.initializers.normal(0.02)
        h = nn.Dense(4 * D, dtype=self.dtype, kernel_init=init, name="c_fc")(x)
        return nn.Dense(D, dtype=self.dtype, kernel_init=self.out_init, name="c_proj")(gelu(h))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)). [B, T, D] -> same."""

    cfg: GPTConfig
    dtype: Any = jnp.float32
    attention: str = "auto"  # attention implementation (attention.resolve_impl)

    @nn.compact
    def __call__(self, x, deterministic=True, cache: KVCache | None = None, pos=0, key_mask=None):
        cfg = self.cfg
        # GPT-2 scales the init of layers that write into the residual stream by 1/sqrt(2L).
        out_init = nn.initializers.normal(0.02 / math.sqrt(2 * cfg.n_layers))
        drop = nn.Dropout(cfg.drop_rate)
        attn = MultiHeadAttention(
            cfg.n_heads,
            cfg.drop_rate,
            cfg.qkv_bias,
            self.dtype,
            out_init,
            self.attention,
            name="attn",
        )
        a, cache = attn(
            LayerNorm(dtype=self.dtype, name="ln_1")(x),
            deterministic=deterministic,
            cache=cache,
            pos=pos,
            key_mask=key_mask,
        )
        x = x + drop(a, deterministic=deterministic)
        m = FeedForward(out_init, self.dtype, name="mlp")(
            LayerNorm(dtype=self.dtype, name="ln_2")(x)
        )
        return x + drop(m, deterministic=deterministic), cache


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
    attention="auto",
    remat="none",
):
    """Embeddings, the L blocks and the final LayerNorm: tokens [B, T] -> x [B, T, D].

    Called inside a compact `__call__` (GPT's, GPTClassifier's), so `wte`, `wpe`, `h_i` and
    `ln_f` are created in the caller's scope: every model built on it has OpenAI's names at the
    top of its tree. Padded rows compute exactly what the row alone would, told either way:
    `mask` [B, T] bool (no cache) marks real tokens anywhere in the row; `offset` [B] int
    counts the pads at the start of each row (left padding, with or without a cache). Pads are
    hidden from attention and do not count as positions. `remat` (a key of REMAT) recomputes
    each block's activations in the backward pass instead of storing them. Returns
    (x, new_cache, wte).
    """
    T = tokens.shape[1]
    key_mask = None
    wte = nn.Embed(
        cfg.vocab_size,
        cfg.emb_dim,
        embedding_init=nn.initializers.normal(0.02),
        dtype=dtype,
        name="wte",
    )
    wpe = nn.Embed(
        cfg.context_length,
        cfg.emb_dim,
        embedding_init=nn.initializers.normal(0.01),
        dtype=dtype,
        name="wpe",
    )
    positions = jnp.expand_dims(pos, -1) + jnp.arange(T)  # [T], or [B, T] for pos [B]
    if mask is not None:
        positions, key_mask = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0), mask  # [B, T]
    if offset is not None:
        S = T if cache is None else cache[0].k.shape[1]
        positions = jnp.maximum(positions - offset[:, None], 0)  # [B, T]
        key_mask = jnp.arange(S)[None, :] >= offset[:, None]  # [B, S]
    x = wte(tokens) + wpe(positions)
    x = nn.Dropout(cfg.drop_rate)(x, deterministic=deterministic)
    if remat not in REMAT:
        raise ValueError(f"unknown remat {remat!r}; expected one of: {', '.join(REMAT)}")
    layer = Block
    if REMAT[remat] is not None:  # `deterministic` (argument 2, self is 0) picks code: static
        layer = nn.remat(Block, policy=REMAT[remat], static_argnums=(2,))
    new_cache = []
    for i in range(cfg.n_layers):
        block = layer(cfg, dtype, attention, name=f"h_{i}")
        # Store the residual gradient once per block (XLA's CPU fusion would re-add it: fence.py).
        x, c = block(
            gradient_fence(x), deterministic, None if cache is None else cache[i], pos, key_mask
        )
        new_cache.append(c)
    return LayerNorm(dtype=dtype, name="ln_f")(x), tuple(new_cache), wte


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


def lm_logits(x: jax.Array, head: jax.Array, dtype, *, padded: bool = False) -> jax.Array:
    """x [..., D] times the output head [V, D] -> float32 logits [..., V].

    A matmul of many rows (training, prefill) runs on the head padded with zero rows to
    V' = padded_vocab(V), in compute only (checkpoints keep V rows), for even tiles; a decode
    step's few rows would only pay for a padded copy of the head. `padded`: return [..., V']
    with the extra columns -inf, so softmax, losses and samples are those of the V real tokens.
    """
    V, Vp = head.shape[0], padded_vocab(head.shape[0])
    many = math.prod(x.shape[:-1]) >= VOCAB_MULTIPLE
    head = padded_head(head, dtype) if many else head.astype(dtype)
    logits = jnp.einsum("...d,vd->...v", x, head, preferred_element_type=jnp.float32)
    if not padded or Vp == V:
        return logits[..., :V]
    if many:
        return mask_padding(logits, V)
    return jnp.pad(logits, [(0, 0)] * (x.ndim - 1) + [(0, Vp - V)], constant_values=-jnp.inf)


class GPT(nn.Module):
    """GPT-2. tokens: [B, T] int -> logits [B, T, V] float32.

    `dtype` is the compute dtype (e.g. bfloat16); parameters stay float32 and the softmax,
    LayerNorm statistics and logits are computed in float32. With `cache` (one KVCache per block,
    each [B, S, N, H]) the tokens sit at positions pos .. pos+T-1 (`pos` a scalar, or [B]: one
    per row) and the call returns (logits, new_cache) for incremental decoding. Padded rows:
    `mask` [B, T] bool (no cache) or `offset` [B] left pads (see `trunk`). `attention` picks the
    attention kernel (`attention.resolve_impl`), `remat` what blocks recompute (`REMAT`).
    `padded_logits`: return [B, T, V'] with V' = V rounded up to a multiple of 128, the extra
    columns -inf (see `lm_logits`), which the loss can take as they are.
    """

    cfg: GPTConfig
    dtype: Any = jnp.float32
    attention: str = "auto"
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
    ):
        """`head=False`: the final hidden states [B, T, D] instead of logits (chunked losses)."""
        cfg = self.cfg
        x, new_cache, wte = trunk(
            cfg,
            self.dtype,
            tokens,
            deterministic=deterministic,
            cache=cache,
            pos=pos,
            mask=mask,
            offset=offset,
            attention=self.attention,
            remat=self.remat,
        )
        if cfg.tie_embeddings:
            out = wte.embedding  # [V, D]
        else:
            out = self.param("lm_head", nn.initializers.normal(0.02), (cfg.vocab_size, cfg.emb_dim))
        if not head:
            return x
        logits = lm_logits(x, out, self.dtype, padded=self.padded_logits)
        return logits if cache is None else (logits, new_cache)

    def init_cache(self, B: int, S: int, dtype: Any = None) -> Cache:
        """An empty cache for B sequences of up to S positions: L KVCaches of [B, S, N, H]."""
        cfg = self.cfg
        dtype = dtype or self.dtype
        return tuple(
            KVCache.zeros(B, S, cfg.n_heads, cfg.head_dim, dtype) for _ in range(cfg.n_layers)
        )


def compute_params(params, dtype):
    """`params` with every matrix (>= 2-D) cast to the compute dtype; norms and biases stay
    float32. For decoding, which reads every weight once per token and so is bound by memory
    bandwidth: cast once, not at every step."""
    return jax.tree.map(lambda p: p.astype(dtype) if p.ndim >= 2 else p, params)


def output_head(cfg: GPTConfig, params: dict) -> jax.Array:
    """The output projection [V, D] of `params`: `wte` when tied, else `lm_head`."""
    return params["wte"]["embedding"] if cfg.tie_embeddings else params["lm_head"]


INITS = ("gpt2", "torch")


def init_params(cfg: GPTConfig, rng: jax.Array, init: str = "gpt2") -> dict:
    """Freshly initialised parameters for `cfg`, as a plain nested dict.

    `init="gpt2"`: GPT-2's scheme (N(0, 0.02), residual projections scaled by 1/sqrt(2L)).
    `init="torch"`: PyTorch's layer defaults, which the book's GPTModel gets (see `torch_init`).
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; expected one of: {', '.join(INITS)}")
    return _initializer(cfg, init)(rng)


@functools.cache
def _initializer(cfg: GPTConfig, init: str):
    """`init_params` of `cfg` compiled once: run op by op, its few hundred small random draws
    cost seconds even for a tiny model."""

    def fresh(rng):
        tokens = jnp.zeros((1, min(8, cfg.context_length)), jnp.int32)
        params = GPT(cfg).init(rng, tokens)["params"]
        return torch_init(params, jax.random.fold_in(rng, 1)) if init == "torch" else params

    return jax.jit(fresh)


def torch_init(params: dict, rng: jax.Array) -> dict:
    """Redraw `params` as PyTorch's defaults would: nn.Embedding N(0, 1); nn.Linear weight and
    bias U(+-1/sqrt(fan_in)) (kaiming_uniform with a=sqrt(5)); LayerNorm ones and zeros. The
    untied `lm_head` [V, D] is a Linear from D."""
    keys = iter(jax.random.split(rng, 4 * len(jax.tree.leaves(params))))

    def uniform(shape, fan_in):
        bound = 1.0 / math.sqrt(fan_in)
        return jax.random.uniform(next(keys), shape, jnp.float32, -bound, bound)

    def redraw(path: tuple[str, ...], value, flat: dict):
        kernel = flat.get((*path[:-1], "kernel"))
        if path[-1] == "embedding":
            return jax.random.normal(next(keys), value.shape, jnp.float32)
        if path[-1] in ("kernel", "bias") and kernel is not None:
            return uniform(value.shape, kernel.shape[0])
        if path[-1] == "lm_head":
            return uniform(value.shape, value.shape[1])
        return value  # LayerNorm scale and shift keep their ones and zeros

    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({p: redraw(p, v, flat) for p, v in flat.items()})


def abstract_params(cfg: GPTConfig):
    """The parameter tree of `cfg` as shapes and dtypes only (`jax.eval_shape`: no memory)."""
    return jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))


def count_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))
