"""Declarative name map between our parameter tree, Hugging Face GPT-2 and OpenAI's checkpoints.

Each row names one parameter three ways; `{i}` is the block index. Transforms are tiny: OpenAI
stores conv1d kernels as [1, in, out] where we store [in, out]; everything else is a rename.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from tqdm import tqdm

from gptjax.config import GPTConfig
from gptjax.model.params import abstract_params

# (our path, Hugging Face name without "transformer.", OpenAI name)
GLOBAL_ROWS = [
    ("wte/embedding", "wte.weight", "model/wte"),
    ("wpe/embedding", "wpe.weight", "model/wpe"),
    ("ln_f/scale", "ln_f.weight", "model/ln_f/g"),
    ("ln_f/bias", "ln_f.bias", "model/ln_f/b"),
]
BLOCK_ROWS = [
    ("h_{i}/ln_1/scale", "h.{i}.ln_1.weight", "model/h{i}/ln_1/g"),
    ("h_{i}/ln_1/bias", "h.{i}.ln_1.bias", "model/h{i}/ln_1/b"),
    ("h_{i}/attn/c_attn/kernel", "h.{i}.attn.c_attn.weight", "model/h{i}/attn/c_attn/w"),
    ("h_{i}/attn/c_attn/bias", "h.{i}.attn.c_attn.bias", "model/h{i}/attn/c_attn/b"),
    ("h_{i}/attn/c_proj/kernel", "h.{i}.attn.c_proj.weight", "model/h{i}/attn/c_proj/w"),
    ("h_{i}/attn/c_proj/bias", "h.{i}.attn.c_proj.bias", "model/h{i}/attn/c_proj/b"),
    ("h_{i}/ln_2/scale", "h.{i}.ln_2.weight", "model/h{i}/ln_2/g"),
    ("h_{i}/ln_2/bias", "h.{i}.ln_2.bias", "model/h{i}/ln_2/b"),
    ("h_{i}/mlp/c_fc/kernel", "h.{i}.mlp.c_fc.weight", "model/h{i}/mlp/c_fc/w"),
    ("h_{i}/mlp/c_fc/bias", "h.{i}.mlp.c_fc.bias", "model/h{i}/mlp/c_fc/b"),
    ("h_{i}/mlp/c_proj/kernel", "h.{i}.mlp.c_proj.weight", "model/h{i}/mlp/c_proj/w"),
    ("h_{i}/mlp/c_proj/bias", "h.{i}.mlp.c_proj.bias", "model/h{i}/mlp/c_proj/b"),
]
UNTIED_ROW = ("lm_head", "lm_head.weight", None)


def rows(cfg: GPTConfig) -> list[tuple[str, str, str | None]]:
    """Every parameter of `cfg` as (ours, hf, openai), blocks expanded."""
    out = list(GLOBAL_ROWS)
    for i in range(cfg.n_layers):
        out += [tuple(name.format(i=i) for name in row) for row in BLOCK_ROWS]
    if not cfg.qkv_bias:
        out = [r for r in out if not r[0].endswith("c_attn/bias")]
    if not cfg.tie_embeddings:
        out.append(UNTIED_ROW)
    return out


def param_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Our path -> shape, from `jax.eval_shape` (nothing is allocated)."""
    flat = jax.tree_util.tree_flatten_with_path(abstract_params(cfg))[0]
    return {"/".join(k.key for k in path): leaf.shape for path, leaf in flat}


def assemble(
    cfg: GPTConfig, tensors: Iterable[tuple[str, np.ndarray]], source: str, progress=False
) -> dict:
    """Build our nested params (float32 jax arrays) from (our path, array) pairs, each
    parameter filled exactly once.

    Raises ValueError naming `source` and the offending tensors: wrong shapes, duplicates,
    missing or unexpected names.
    """
    shapes = param_shapes(cfg)
    flat: dict[str, np.ndarray] = {}
    extra = []
    # Closed on the way out of an error too, so the error's line is not written into it.
    with tqdm(total=len(shapes), unit="tensor", desc="converting", disable=not progress) as bar:
        for path, array in tensors:
            bar.update(1)
            if path not in shapes:
                extra.append(path)
                continue
            if path in flat:
                raise ValueError(f"{source}: parameter {path} given twice")
            if tuple(array.shape) != tuple(shapes[path]):
                raise ValueError(
                    f"{source}: tensor for {path} has shape {tuple(array.shape)}, "
                    f"expected {tuple(shapes[path])} from the model config"
                )
            # A jax array now, so the bytes read for it are freed as the next tensor arrives.
            flat[path] = jnp.asarray(array, jnp.float32)
    missing = [p for p in shapes if p not in flat]
    if missing or extra:
        raise ValueError(
            f"{source}: does not match the model config: missing {_few(missing)}; "
            f"unexpected {_few(extra)}"
        )
    return traverse_util.unflatten_dict(flat, sep="/")


def _few(names: list[str]) -> str:
    if not names:
        return "none"
    more = f" (+{len(names) - 5} more)" if len(names) > 5 else ""
    return ", ".join(names[:5]) + more


def flatten(params) -> Iterator[tuple[str, np.ndarray]]:
    """Our nested params -> ("h_0/attn/c_attn/kernel", array) pairs."""
    yield from traverse_util.flatten_dict(params, sep="/").items()
