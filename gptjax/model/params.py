"""Parameters of a GPT as plain nested dicts: fresh ones (GPT-2's init or PyTorch's), their
shapes without memory, their count and the output head."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from flax import traverse_util

from gptjax.config import GPTConfig
from gptjax.model.gpt import GPT


def output_head(cfg: GPTConfig, params: dict) -> jax.Array:
    """The output projection [V, D] of `params`: `wte` when tied, else `lm_head`."""
    return params["wte"]["embedding"] if cfg.tie_embeddings else params["lm_head"]


INITS = ("gpt2", "torch", "zero-proj")


def init_params(cfg: GPTConfig, rng: jax.Array, init: str = "gpt2") -> dict:
    """Freshly initialised parameters for `cfg`, as a plain nested dict.

    `init="gpt2"`: GPT-2's scheme (N(0, 0.02), residual projections scaled by 1/sqrt(2L)).
    `init="torch"`: PyTorch's layer defaults, which the book's GPTModel gets (see `torch_init`).
    `init="zero-proj"`: GPT-2's, with the projections that write into the residual stream
    (`attn/c_proj`, `mlp/c_proj` kernels) zero, so every block starts as the identity (the
    speedrun's init).
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
        if init == "zero-proj":
            return zero_projections(params)
        return torch_init(params, jax.random.fold_in(rng, 1)) if init == "torch" else params

    return jax.jit(fresh)


def zero_projections(params: dict) -> dict:
    """`params` with every `c_proj/kernel` (attention's and the MLP's output) zero."""
    zero = lambda path, p: jnp.zeros_like(p) if path[-2:] == ("c_proj", "kernel") else p
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: zero(k, v) for k, v in flat.items()})


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


def grow_vocab(cfg: GPTConfig, params: dict, vocab_size: int) -> tuple[GPTConfig, dict]:
    """(cfg, params) with room for `vocab_size` tokens: the new rows of `wte` (and of an untied
    `lm_head`) start at the mean of the old ones, so a new token (a chat marker) begins as an
    average token rather than noise (transformers' `resize_token_embeddings` does the same)."""
    V = cfg.vocab_size
    if vocab_size < V:
        raise ValueError(f"cannot shrink the vocabulary from {V} to {vocab_size} rows")

    def grow(table):
        table = jnp.asarray(table)
        mean = jnp.mean(table, axis=0, keepdims=True)
        return jnp.concatenate([table, jnp.repeat(mean, vocab_size - V, axis=0)])

    params = dict(params, wte={"embedding": grow(params["wte"]["embedding"])})
    if "lm_head" in params:
        params["lm_head"] = grow(params["lm_head"])
    return dataclasses.replace(cfg, vocab_size=vocab_size), params
