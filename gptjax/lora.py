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
    found = []

    def walk(node: dict, path: tuple[str, ...]):
        for name, child in node.items():
            if not isinstance(child, dict):
                continue
            kernel = child.get("kernel")
            if name in lcfg.targets and kernel is not None and jnp.ndim(kernel) == 2:
                found.append((*path, name))
            walk(child, (*path, name))

    walk(params, ())
    if not found:
        raise ValueError(f"LoRA targets {list(lcfg.targets)} match no Dense module of the model")
    return found


def get_path(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def set_path(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def init(lcfg: LoRAConfig, params: dict, rng: jax.Array) -> dict:
    """Adapters for every target: lora_a [in, r] ~ U(+-1/sqrt(in)) (PEFT's kaiming_uniform with
    a=sqrt(5); the book's code draws from U(+-1/sqrt(r))), lora_b [r, out] zeros, so the adapted
    model starts equal to the base model."""
    adapters: dict = {}
    paths = target_paths(lcfg, params)
    for path, key in zip(paths, jax.random.split(rng, len(paths)), strict=True):
        d_in, d_out = get_path(params, path)["kernel"].shape
        bound = 1.0 / math.sqrt(d_in)
        a = jax.random.uniform(key, (d_in, lcfg.rank), jnp.float32, -bound, bound)
        set_path(
            adapters, path, {"lora_a": a, "lora_b": jnp.zeros((lcfg.rank, d_out), jnp.float32)}
        )
    return adapters


def adapter_paths(adapters: dict) -> list[tuple[str, ...]]:
    """Paths of the modules that hold a `lora_a`/`lora_b` pair."""
    if "lora_a" in adapters:
        return [()]
    return [(k, *p) for k, v in adapters.items() for p in adapter_paths(v)]


def merge(lcfg: LoRAConfig, params: dict, adapters: dict) -> dict:
    """params with each adapted kernel replaced by kernel + (alpha / r) lora_a @ lora_b.

    Pure and jittable; untouched subtrees are shared with `params`, not copied."""
    merged = dict(params)
    for path in adapter_paths(adapters):
        ad = get_path(adapters, path)
        node = dict(get_path(params, path))
        delta = lcfg.scale * (ad["lora_a"] @ ad["lora_b"])
        node["kernel"] = node["kernel"] + delta.astype(node["kernel"].dtype)
        # Rebuild the spine down to this module so that `params` itself is never mutated.
        parent = merged
        for key in path[:-1]:
            parent[key] = dict(parent[key])
            parent = parent[key]
        parent[path[-1]] = node
    return merged


def count(adapters: dict) -> int:
    """Number of adapter parameters."""
    return sum(x.size for x in jax.tree.leaves(adapters))
