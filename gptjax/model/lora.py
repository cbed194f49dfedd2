"""Low-rank adapters (Hu et al., 2021; the book's appendix E) as a pure transform of the params.

A targeted Dense kernel W [in, out] gets two trainable matrices A [in, r] and B [r, out]; the
model computes with W + (alpha / r) A B. Adapters are their own tree following the params' paths
(`{"h_0": {"attn": {"c_attn": {"lora_a", "lora_b"}}}}`), and `merge` folds them in, so the same
model code serves base, adapted and merged weights, and a step differentiates the adapters only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import traverse_util


@dataclass(frozen=True)
class LoRAConfig:
    """rank r, scale alpha / r, and the Dense module names to adapt (matched anywhere in the
    tree, like PEFT's `target_modules`; "score" adapts a classifier's head)."""

    rank: int = 16
    alpha: float = 16.0
    targets: tuple[str, ...] = ("c_attn", "c_proj", "c_fc")

    def __post_init__(self):
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRAConfig.rank must be a positive integer, got {self.rank!r}")
        if not self.targets:
            raise ValueError("LoRAConfig.targets is empty: name at least one Dense module")
        object.__setattr__(self, "targets", tuple(self.targets))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def target_paths(lcfg: LoRAConfig, params: dict) -> list[tuple[str, ...]]:
    """Paths of the Dense modules (dicts holding a 2-D `kernel`) whose name is a target."""
    flat = traverse_util.flatten_dict(params)
    found = [
        path[:-1]
        for path, leaf in flat.items()
        if path[-1] == "kernel"
        and len(path) > 1
        and path[-2] in lcfg.targets
        and jnp.ndim(leaf) == 2
    ]
    if not found:
        raise ValueError(f"LoRA targets {list(lcfg.targets)} match no Dense module of the model")
    return found


def init(lcfg: LoRAConfig, params: dict, rng: jax.Array) -> dict:
    """Adapters for every target: lora_a [in, r] ~ U(+-1/sqrt(in)) (PEFT's kaiming_uniform with
    a=sqrt(5); the book's code draws from U(+-1/sqrt(r))), lora_b [r, out] zeros, so the adapted
    model starts equal to the base model."""
    flat = traverse_util.flatten_dict(params)
    paths = target_paths(lcfg, params)
    adapters = {}
    for path, key in zip(paths, jax.random.split(rng, len(paths)), strict=True):
        d_in, d_out = flat[(*path, "kernel")].shape
        bound = 1.0 / math.sqrt(d_in)
        adapters[(*path, "lora_a")] = jax.random.uniform(
            key, (d_in, lcfg.rank), jnp.float32, -bound, bound
        )
        adapters[(*path, "lora_b")] = jnp.zeros((lcfg.rank, d_out), jnp.float32)
    return traverse_util.unflatten_dict(adapters)


def adapter_paths(adapters: dict) -> list[tuple[str, ...]]:
    """Paths of the modules that hold a `lora_a`/`lora_b` pair."""
    return list(dict.fromkeys(path[:-1] for path in traverse_util.flatten_dict(adapters)))


def merge(lcfg: LoRAConfig, params: dict, adapters: dict) -> dict:
    """params with each adapted kernel replaced by kernel + (alpha / r) lora_a @ lora_b.

    Pure and jittable; `params` is not mutated, and the leaves it keeps are shared, not copied."""
    flat, ad = traverse_util.flatten_dict(params), traverse_util.flatten_dict(adapters)
    for path in adapter_paths(adapters):
        kernel = flat[(*path, "kernel")]
        delta = lcfg.scale * (ad[(*path, "lora_a")] @ ad[(*path, "lora_b")])
        flat[(*path, "kernel")] = kernel + delta.astype(kernel.dtype)
    return traverse_util.unflatten_dict(flat)


def count(adapters: dict) -> int:
    """Number of adapter parameters."""
    return sum(x.size for x in jax.tree.leaves(adapters))
