"""Text generation as one pure jitted function: a prefill, then a `lax.while_loop` decode over a
preallocated KV cache.

Shapes: B batch, T0 prompt length, S = T0 + max_new_tokens total length, V vocabulary.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gptjax.config import GPTConfig
from gptjax.model import GPT, Cache


class Sampling(NamedTuple):
    """How the next token is picked. Fields that change the program's shape are static."""

    greedy: bool = True
    top_k: int | None = None
    use_top_p: bool = False


class DecodeState(NamedTuple):
    """Everything the decode loop carries; a plain pytree."""

    tokens: jax.Array  # [B, S] int32: the prompt, then generated tokens (eos_id beyond the end)
    cache: Cache  # L KVCaches of [B, S, N, H]
    logits: jax.Array  # [B, V] float32: logits for the token at `pos`
    pos: jax.Array  # int32 scalar: index of the next token to write
    done: jax.Array  # [B] bool: the row has emitted eos_id
    rng: jax.Array


def filter_logits(logits, sampling: Sampling, temperature, top_p):
    """[B, V] -> [B, V]: temperature-scaled logits with tokens outside top-k / top-p at -inf."""
    logits = logits / temperature
    if sampling.top_k is not None:
        kth = lax.top_k(logits, sampling.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if sampling.use_top_p:
        desc = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(desc, axis=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least the first token).
        keep = (jnp.cumsum(probs, axis=-1) - probs) < top_p
        cutoff = jnp.min(jnp.where(keep, desc, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return logits


def next_token(logits, rng, sampling: Sampling, temperature, top_p) -> jax.Array:
    """[B, V] float32 -> [B] int32."""
    if sampling.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits, sampling, temperature, top_p)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@partial(jax.jit, static_argnames=("cfg", "total", "dtype"))
def prefill(cfg: GPTConfig, params, prompt, rng, eos_id, *, total: int, dtype=jnp.float32):
    """Run the prompt [B, T0] through the model once, filling a cache of `total` positions."""
    model = GPT(cfg, dtype)
    B, T0 = prompt.shape
    cache = model.init_cache(B, total)
    logits, cache = model.apply({"params": params}, prompt, cache=cache, pos=0)
    pad = jnp.full((B, total - T0), jnp.maximum(eos_id, 0), jnp.int32)
    tokens = jnp.concatenate([prompt.astype(jnp.int32), pad], axis=1)
    done = jnp.zeros((B,), bool)
    return DecodeState(tokens, cache, logits[:, -1], jnp.int32(T0), done, rng)


def _decode_step(cfg, params, state: DecodeState, temperature, top_p, eos_id, sampling, dtype):
    rng, key = jax.random.split(state.rng)
    tok = next_token(state.logits, key, sampling, temperature, top_p)
    tok = jnp.where(state.done, eos_id, tok)
    done = state.done | (tok == eos_id)
    tokens = lax.dynamic_update_slice(state.tokens, tok[:, None], (0, state.pos))
    logits, cache = GPT(cfg, dtype).apply(
        {"params": params}, tok[:, None], cache=state.cache, pos=state.pos
    )
    return DecodeState(tokens, cache, logits[:, -1], state.pos + 1, done, rng)


decode_step = jax.jit(_decode_step, static_argnames=("cfg", "sampling", "dtype"))
decode_step.__doc__ = "Pick the token at `state.pos`, write it, and run it through the model."


@partial(jax.jit, static_argnames=("cfg", "total", "sampling", "dtype"))
def _generate(cfg, params, prompt, rng, temperature, top_p, eos_id, *, total, sampling, dtype):
    state = prefill(cfg, params, prompt, rng, eos_id, total=total, dtype=dtype)
    state = lax.while_loop(
        lambda s: (s.pos < total) & ~jnp.all(s.done),
        lambda s: _decode_step(cfg, params, s, temperature, top_p, eos_id, sampling, dtype),
        state,
    )
    return state.tokens


def prepare_prompt(cfg: GPTConfig, prompt, max_new_tokens: int) -> jax.Array:
    """Check the request and cut the prompt [B, T] to the last tokens that leave room to generate.

    The cache holds at most `context_length` positions, so a prompt keeps its last
    `context_length - max_new_tokens` tokens.
    """
    prompt = jnp.asarray(prompt)
    if prompt.ndim == 1:
        prompt = prompt[None]
    if prompt.ndim != 2 or prompt.shape[1] == 0 or not jnp.issubdtype(prompt.dtype, jnp.integer):
        raise ValueError(f"prompt must be integer token ids [B, T] with T >= 1, got {prompt.shape}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    room = cfg.context_length - max_new_tokens
    if room < 1:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} does not fit: context_length is "
            f"{cfg.context_length} and the prompt needs at least one token; "
            f"use max_new_tokens <= {cfg.context_length - 1}"
        )
    return prompt[:, -room:].astype(jnp.int32)


def check_sampling(cfg, temperature, top_k, top_p) -> Sampling:
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and not 1 <= top_k <= cfg.vocab_size:
        raise ValueError(f"top_k must be in [1, {cfg.vocab_size}], got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    return Sampling(greedy=temperature == 0, top_k=top_k, use_top_p=top_p is not None)


def generate(
    cfg: GPTConfig,
    params,
    prompt,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    rng: jax.Array | None = None,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """Continue each prompt row. prompt: [B, T] int -> [B, T' + max_new_tokens] int32.

    T' = min(T, context_length - max_new_tokens): longer prompts are cut to their last tokens.
    temperature=0 is greedy; otherwise sample from softmax(logits / temperature) restricted to
    the top_k tokens and then to the smallest set with probability >= top_p. After a row emits
    eos_id it keeps emitting eos_id, and decoding stops once every row has.
    """
    prompt = prepare_prompt(cfg, prompt, max_new_tokens)
    sampling = check_sampling(cfg, temperature, top_k, top_p)
    if max_new_tokens == 0:
        return prompt
    rng = jax.random.key(0) if rng is None else rng
    return _generate(
        cfg, params, prompt, rng,
        jnp.float32(temperature or 1.0), jnp.float32(top_p or 1.0),
        jnp.int32(-1 if eos_id is None else eos_id),
        total=prompt.shape[1] + max_new_tokens, sampling=sampling, dtype=dtype,
    )  # fmt: skip
