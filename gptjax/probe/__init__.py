"""Look inside a GPT, functionally: every activation by TransformerLens's hook names.

    logits, cache = run_with_cache(cfg, params, tokens)                 # every hook point
    logits, cache = run_with_cache(cfg, params, tokens, ["blocks.0.attn.hook_pattern"])
    logits = run_with_hooks(cfg, params, tokens, {"blocks.1.attn.hook_z": ablate_head})

Names and shapes are TransformerLens's: hook_embed, hook_pos_embed [B, T, D];
blocks.{l}.hook_resid_pre / hook_resid_mid / hook_resid_post, hook_attn_out, hook_mlp_out
[B, T, D]; blocks.{l}.ln1 / ln2 .hook_scale [B, T, 1] and .hook_normalized [B, T, D];
blocks.{l}.attn.hook_q / hook_k / hook_v / hook_z [B, T, N, H] (hook_rot_q / hook_rot_k with
rotary positions); blocks.{l}.attn.hook_attn_scores / hook_pattern [B, N, T, S] (masked scores
-inf); blocks.{l}.mlp.hook_pre / hook_post [B, T, F]; ln_final.hook_scale / hook_normalized.
A switch that removes a point removes its name (rotary: no hook_pos_embed).

Both are pure, traceable functions of (params, tokens): jit them (cfg and names static), vmap
them, differentiate them (the gradient of a metric with respect to an activation is the
gradient with respect to a hook that adds a zero to it: attribution patching). The model runs in
float32 with the reference kernels (`Kernels()`), whose attention has scores to show. A hook
point the model passes is the identity unless a probe intercepts it (`gptjax.model.hooks`), so
the plain forward compiles to the program it had without them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from gptjax.config import GPTConfig
from gptjax.kernels import Kernels
from gptjax.model.gpt import GPT
from gptjax.model.hooks import Hook

__all__ = ["HookPoint", "hook_names", "name_of", "run_with_cache", "run_with_hooks"]

# The module paths of gptjax's hook points -> TransformerLens's names.
ROOMS = {"ln_1": "ln1", "ln_2": "ln2", "attn": "attn", "mlp": "mlp"}


class HookPoint(NamedTuple):
    """What a hook function is handed beside the activation, as TransformerLens's `hook`."""

    name: str


def name_of(path: tuple[str, ...]) -> str:
    """A hook module's path (("h_0", "attn", "hook_q")) -> its TransformerLens name
    ("blocks.0.attn.hook_q")."""
    *where, point = path
    if where and where[0] == "ln_f":
        return f"ln_final.{point}"
    if where and (m := re.fullmatch(r"h_(\d+)", where[0])):
        return ".".join(["blocks", m[1], *(ROOMS[w] for w in where[1:]), point])
    return point


def wanted(names) -> Callable[[str], bool]:
    """A predicate for `names`: None (every one), a list of names, or a predicate."""
    if names is None:
        return lambda name: True
    if callable(names):
        return names
    chosen = {names} if isinstance(names, str) else set(names)
    return chosen.__contains__


def run_with_cache(
    cfg: GPTConfig, params, tokens, names=None, *, hooks: dict | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """tokens [B, T] -> (logits [B, T, V] float32, {name: activation}) for the hook points
    `names` keeps (None: all; a list of names or a predicate of a name). With `hooks`
    ({name: fn(activation, hook) -> activation}) those points are replaced on the way through,
    and the cache holds what flowed on (the replaced value)."""
    keep, hooks, cache = wanted(names), dict(hooks or {}), {}

    def intercept(call, args, kwargs, context):
        out = call(*args, **kwargs)
        if not isinstance(context.module, Hook) or context.method_name != "__call__":
            return out
        name = name_of(context.module.path)
        if name in hooks:
            out = hooks[name](out, HookPoint(name))
        if keep(name):
            cache[name] = out
        return out

    with nn.intercept_methods(intercept):
        logits = GPT(cfg, jnp.float32, Kernels()).apply({"params": params}, tokens)
    return logits, cache


def run_with_hooks(cfg: GPTConfig, params, tokens, hooks: dict) -> jax.Array:
    """tokens [B, T] -> logits [B, T, V], each hook point of `hooks` replaced by
    fn(activation, hook) on the way through (an unknown name is an error naming the choices)."""
    names = _hook_names(cfg)
    unknown = set(hooks) - set(names)
    if unknown:
        raise ValueError(
            f"run_with_hooks: no hook point {sorted(unknown)[0]!r} in this model; "
            f"it has {', '.join(names[:6])}, ... (gptjax.probe.hook_names)"
        )
    return run_with_cache(cfg, params, tokens, names=(), hooks=hooks)[0]


def hook_names(cfg: GPTConfig) -> list[str]:
    """Every hook point of a `cfg` model, in the order the forward pass reaches them."""
    return list(_hook_names(cfg))


@functools.lru_cache(maxsize=32)
def _hook_names(cfg: GPTConfig) -> tuple[str, ...]:
    """(An abstract trace of the whole model: once per config, not per run_with_hooks call.)"""
    from gptjax.model.params import init_params

    order: list[str] = []
    seen = lambda name: order.append(name) or False  # asked once per point, in order

    def trace():
        params = init_params(cfg, jax.random.key(0))
        return run_with_cache(cfg, params, jnp.zeros((1, 2), jnp.int32), seen)[0]

    jax.eval_shape(trace)
    return tuple(order)
