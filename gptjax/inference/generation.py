"""Text generation as one pure jitted function: a prefill, then a `lax.while_loop` decode over a
preallocated KV cache.

Prompts of different lengths are left-padded to one length T0; each row's `offset` (its pads)
keeps the pads out of attention and out of its positions, so row i computes what prompt i
alone would. Each row samples with its own key (see `row_keys`), so its tokens do not depend on
what else is in the batch either.

Shapes: B batch, T0 prompt length, S = T0 + max_new_tokens total length, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from tqdm import tqdm

from gptjax.config import GPTConfig
from gptjax.data.lengths import LEAST, padded_length
from gptjax.model.gpt import GPT, Cache
from gptjax.model.weights import compute_params


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
    keys: jax.Array  # [B] keys: row b's n-th new token is drawn with fold_in(keys[b], n)
    offset: jax.Array  # [B] int32: left pads before each row's prompt
    start: jax.Array  # int32 scalar: T0, where generation began


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


def next_token(logits, keys, sampling: Sampling, temperature, top_p) -> jax.Array:
    """[B, V] float32, [B] keys -> [B] int32 (row b drawn with keys[b]). `temperature` and
    `top_p` are scalars or [B] (the engine's rows each have their own): a row at temperature 0
    takes the argmax, a row at top_p 1 is not cut."""
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if sampling.greedy:
        return greedy
    B = logits.shape[0]
    t = jnp.broadcast_to(jnp.asarray(temperature, jnp.float32), (B,))
    p = jnp.broadcast_to(jnp.asarray(top_p, jnp.float32), (B,))
    t1 = jnp.where(t > 0, t, 1.0)[:, None]
    scaled = filter_logits(logits, sampling, t1, p[:, None])
    if sampling.use_top_p:  # rows without a cut keep their plain scaled logits
        plain = filter_logits(logits, sampling._replace(use_top_p=False), t1, None)
        scaled = jnp.where(p[:, None] < 1.0, scaled, plain)
    drawn = jax.vmap(jax.random.categorical)(keys, scaled).astype(jnp.int32)
    return jnp.where(t > 0, drawn, greedy)


def row_keys(rng: jax.Array, B: int) -> jax.Array:
    """[B] keys for B rows: `rng` itself when it is already [B] keys, else fold_in(rng, b)."""
    typed = jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
    if rng.ndim == (1 if typed else 2) and rng.shape[0] == B:  # typed [B] or raw uint32 [B, 2]
        return rng
    return jax.vmap(lambda b: jax.random.fold_in(rng, b))(jnp.arange(B))


@partial(jax.jit, static_argnames=("cfg", "total", "dtype"))
def prefill(
    cfg: GPTConfig, params, prompt, keys, eos_id, offset=None, *, total: int, dtype=jnp.float32
):
    """Run the prompt [B, T0] (row b after offset[b] pads) through the model once, filling a
    cache of `total` positions."""
    model = GPT(cfg, dtype)
    B, T0 = prompt.shape
    offset = jnp.zeros((B,), jnp.int32) if offset is None else offset.astype(jnp.int32)
    cache = model.init_cache(B, total)
    logits, cache = model.apply({"params": params}, prompt, cache=cache, pos=0, offset=offset)
    pad = jnp.full((B, total - T0), jnp.maximum(eos_id, 0), jnp.int32)
    tokens = jnp.concatenate([prompt.astype(jnp.int32), pad], axis=1)
    done = jnp.zeros((B,), bool)
    return DecodeState(
        tokens, cache, logits[:, -1], jnp.int32(T0), done, keys, offset, jnp.int32(T0)
    )


def _decode_step(cfg, params, state: DecodeState, temperature, top_p, eos_id, sampling, dtype):
    n = state.pos - state.start  # tokens generated so far, the same count in every row
    keys = jax.vmap(lambda k: jax.random.fold_in(k, n))(state.keys)
    tok = next_token(state.logits, keys, sampling, temperature, top_p)
    tok = jnp.where(state.done, eos_id, tok)
    done = state.done | (tok == eos_id)
    tokens = lax.dynamic_update_slice(state.tokens, tok[:, None], (0, state.pos))
    logits, cache = GPT(cfg, dtype).apply(
        {"params": params}, tok[:, None], cache=state.cache, pos=state.pos, offset=state.offset
    )
    return state._replace(
        tokens=tokens, cache=cache, logits=logits[:, -1], pos=state.pos + 1, done=done
    )


decode_step = jax.jit(_decode_step, static_argnames=("cfg", "sampling", "dtype"))
decode_step.__doc__ = "Pick the token at `state.pos`, write it, and run it through the model."


@partial(jax.jit, static_argnames=("cfg", "total", "sampling", "dtype"))
def _generate(
    cfg, params, prompt, keys, offset, temperature, top_p, eos_id, *, total, sampling, dtype
):
    params = compute_params(params, dtype)  # once, before the loop
    state = prefill(cfg, params, prompt, keys, eos_id, offset, total=total, dtype=dtype)
    state = lax.while_loop(
        lambda s: (s.pos < total) & ~jnp.all(s.done),
        lambda s: _decode_step(cfg, params, s, temperature, top_p, eos_id, sampling, dtype),
        state,
    )
    return state.tokens


def left_pad(prompts, length: int | None = None, pad_id: int = 0):
    """B token lists of any lengths -> (tokens [B, T0] left-padded with pad_id, offset [B]);
    T0 = `length`, or the longest prompt's."""
    lengths = [len(p) for p in prompts]
    T0 = length or max(lengths)
    tokens = np.full((len(prompts), T0), pad_id, np.int32)
    for b, p in enumerate(prompts):
        tokens[b, T0 - len(p) :] = p
    return tokens, np.array([T0 - n for n in lengths], np.int32)


def is_ragged(prompt) -> bool:
    """A list of token lists that are not all the same length."""
    if isinstance(prompt, (np.ndarray, jax.Array)) or not len(prompt):
        return False
    return len({len(p) for p in prompt}) > 1


class DoesNotFitError(ValueError):
    """A prompt and its new tokens that the model's context cannot hold; `param` names the one
    to change ("prompt" or the count of new tokens)."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def check_fit(context: int, n_prompt: int, n_new, *, least_new: int = 1, name="max_tokens"):
    """Refuse a prompt of n_prompt tokens with n_new new ones (at least `least_new`; None: as
    many as fit) that the model's context of `context` positions cannot hold: the KV cache has
    no more. -> the most new tokens that fit."""
    if n_prompt < 1:
        raise DoesNotFitError("a prompt needs at least one token", "prompt")
    if n_prompt > context - least_new:
        raise DoesNotFitError(
            f"the prompt is {n_prompt} tokens; the model's context is {context} tokens, with "
            f"room for at least {least_new} new",
            "prompt",
        )
    room = context - n_prompt
    if n_new is not None and not least_new <= n_new <= room:
        raise DoesNotFitError(
            f"{name}={n_new} does not fit: it must be between {least_new} and {room} (the "
            f"model's context of {context} tokens minus the prompt's {n_prompt})",
            name,
        )
    return room


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
    check_fit(cfg.context_length, 1, max_new_tokens, least_new=0, name="max_new_tokens")
    return prompt[:, -(cfg.context_length - max_new_tokens) :].astype(jnp.int32)


def check_sampling(cfg, temperature, top_k, top_p) -> Sampling:
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and not 1 <= top_k <= cfg.vocab_size:
        raise ValueError(f"top_k must be in [1, {cfg.vocab_size}], got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    return Sampling(greedy=temperature == 0, top_k=top_k, use_top_p=top_p is not None)


def decode_args(rng, B: int, temperature: float, top_p: float | None, eos_id: int | None):
    """The decode loop's traced arguments as `generate` and `stream` pass them: [B] row keys
    (from `rng`, key 0 when None), the temperature (1 when greedy), top_p (1: no cut) and the
    end-of-text id (-1: none)."""
    keys = row_keys(jax.random.key(0) if rng is None else rng, B)
    t, p = jnp.float32(temperature or 1.0), jnp.float32(top_p or 1.0)
    return keys, t, p, jnp.int32(-1 if eos_id is None else eos_id)


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
    """Continue each prompt. prompt: [B, T] int -> [B, T' + max_new_tokens] int32; or B token
    lists of different lengths -> a list of B int32 arrays, row i = prompt i (cut as below)
    followed by its max_new_tokens new ids, equal to generating prompt i alone.

    T' = min(T, context_length - max_new_tokens): longer prompts are cut to their last tokens.
    temperature=0 is greedy; otherwise sample from softmax(logits / temperature) restricted to
    the top_k tokens and then to the smallest set with probability >= top_p. Row b samples with
    its own key: rng[b] when `rng` is [B] keys, else fold_in(rng, b); its n-th new token uses
    fold_in(that key, n). So row b of a batch equals prompt b alone with `rng=keys[b:b+1]`.
    After a row emits eos_id it keeps emitting eos_id; decoding stops once every row has.
    """
    ragged = is_ragged(prompt)
    if ragged:
        room = max(cfg.context_length - max_new_tokens, 1)
        rows = [np.asarray(p, np.int32).reshape(-1)[-room:] for p in prompt]
        if any(len(r) == 0 for r in rows):
            raise ValueError("every prompt needs at least one token")
        # Pad T0 up (pads cost nothing but compute): batches of similar prompts share programs.
        T0 = padded_length(max(len(r) for r in rows), room, least=LEAST)
        tokens, offset = left_pad(rows, T0)
    else:
        tokens, offset = prompt, None
    tokens = prepare_prompt(cfg, tokens, max_new_tokens)
    sampling = check_sampling(cfg, temperature, top_k, top_p)
    B = tokens.shape[0]
    offset = jnp.zeros((B,), jnp.int32) if offset is None else jnp.asarray(offset)
    if max_new_tokens == 0:
        out = tokens
    else:
        keys, temperature, top_p, eos = decode_args(rng, B, temperature, top_p, eos_id)
        out = _generate(
            cfg,
            params,
            tokens,
            keys,
            offset,
            temperature,
            top_p,
            eos,
            total=tokens.shape[1] + max_new_tokens,
            sampling=sampling,
            dtype=dtype,
        )
    if not ragged:
        return out
    return [out[b, int(offset[b]) :] for b in range(B)]


def stream(
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
) -> Iterator[int]:
    """Continue one prompt (token ids [T]) and yield each new id as soon as it is decoded: the
    ids `generate` returns for it with the same arguments, up to (not including) eos_id. One
    compiled step per token, so a caller can show the text as it comes."""
    tokens = prepare_prompt(cfg, prompt, max_new_tokens)
    sampling = check_sampling(cfg, temperature, top_k, top_p)
    keys, temperature, top_p, eos = decode_args(rng, 1, temperature, top_p, eos_id)
    total = tokens.shape[1] + max_new_tokens
    state = prefill(cfg, params, tokens, keys, eos, total=total, dtype=dtype)
    for _ in range(max_new_tokens):
        pos = int(state.pos)
        state = decode_step(cfg, params, state, temperature, top_p, eos, sampling, dtype)
        tok = int(state.tokens[0, pos])
        if tok == eos_id:
            return
        yield tok


def complete_all(
    cfg: GPTConfig,
    params,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    batch: int,
    eos_id: int | None = None,
    dtype: Any = jnp.float32,
    progress: bool = False,
) -> list[list[int]]:
    """Greedy continuations of many prompts, `batch` at a time: each prompt's new tokens, up to
    (not including) eos_id. A short last batch is filled with copies of its last prompt, so
    every batch has one shape and reuses the same few programs."""
    out = []
    starts = range(0, len(prompts), batch)
    for start in tqdm(starts, desc="answering", unit="batch", disable=not progress):
        chunk = prompts[start : start + batch]
        full = chunk + [chunk[-1]] * (batch - len(chunk))
        rows = generate(
            cfg, params, full, max_new_tokens=max_new_tokens, eos_id=eos_id, dtype=dtype
        )
        out += [completion(row, max_new_tokens, eos_id) for row in rows[: len(chunk)]]
    return out


def completion(row, n: int, eos_id: int | None = None) -> list[int]:
    """A row of `generate`'s output -> its n new tokens, up to (not including) eos_id."""
    new = np.asarray(row)[len(row) - n :].tolist()
    return new[: new.index(eos_id)] if eos_id in new else new
