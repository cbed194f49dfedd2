"""The standard analyses, each a short pure function over `run_with_cache` / `run_with_hooks`.

    logit_lens(cfg, params, tokens)                  [L+1, B, T, V] the stream read as logits
    component_logits(cfg, params, tokens, target)   direct logit attribution per head and layer
    patch_positions(cfg, params, clean, corrupt, metric)   [L, T] residual patching
    patch_heads(cfg, params, clean, corrupt, metric)       [L, N] head-output patching
    induction_scores(cfg, params, key)               [L, N] on repeated random tokens
    heatmap(values, out, ...)                        a PNG, through the project's plotting

Shapes: L layers, B batch, T positions, N heads, H head width, D width, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp

from gptjax.config import GPTConfig
from gptjax.model.gpt import norm
from gptjax.model.head import softcap
from gptjax.model.params import output_head
from gptjax.probe import run_with_cache, run_with_hooks
from gptjax.training.plot import plot_heatmap

Metric = Callable[[jax.Array], jax.Array]  # logits [B, T, V] -> a scalar


def unembed(cfg: GPTConfig, params, x: jax.Array) -> jax.Array:
    """The model's own reading of a residual stream x [..., D]: final norm, output head (and
    soft cap) -> logits [..., V] float32."""
    y = norm(cfg, jnp.float32, "ln_f").apply({"params": params["ln_f"]}, x)
    return softcap(y @ output_head(cfg, params).T.astype(jnp.float32), cfg.logit_softcap)


def logit_lens(cfg: GPTConfig, params, tokens) -> jax.Array:
    """tokens [B, T] -> [L+1, B, T, V]: the residual stream before block 0, then after each
    block, read through the final norm and output head (nostalgebraist, 2020); the last equals
    the model's logits."""
    points = ["blocks.0.hook_resid_pre"] + [
        f"blocks.{layer}.hook_resid_post" for layer in range(cfg.n_layers)
    ]
    _, cache = run_with_cache(cfg, params, tokens, points)
    return jnp.stack([unembed(cfg, params, cache[p]) for p in points])


def component_logits(cfg: GPTConfig, params, tokens, target) -> dict[str, jax.Array]:
    """Direct logit attribution: each component's share of the logit of `target` [B, T] (the
    token whose logit is explained, at every position) -> {"embed": [B, T], "heads": [L, N, B,
    T], "attn_bias": [L, B, T], "mlp": [L, B, T], "rest": [B, T]}. Each component's write into
    the residual stream passes the final norm with its scale as computed (frozen: a linear
    map), so the parts add up to the logit exactly ("rest": the norm's shift, before a soft
    cap). A layer's attention share is its heads' plus its bias."""
    names = ["hook_embed", "hook_pos_embed", "ln_final.hook_scale"]
    for layer in range(cfg.n_layers):
        names += [f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_mlp_out"]
    _, c = run_with_cache(cfg, params, tokens, names)
    scale = c["ln_final.hook_scale"]  # [B, T, 1]
    ln = params["ln_f"]
    direction = output_head(cfg, params)[target] * ln["scale"]  # [B, T, D]
    centre = cfg.norm != "rmsnorm"

    def share(x):  # x [..., B, T, D] -> its part of the logit [..., B, T]
        x = x - x.mean(-1, keepdims=True) if centre else x
        return jnp.sum(x / scale * direction, -1)

    embed = c["hook_embed"] + c.get("hook_pos_embed", 0.0)
    heads, bias, mlp = [], [], []
    for layer in range(cfg.n_layers):
        proj = params[f"h_{layer}"]["attn"]["c_proj"]
        W = proj["kernel"].reshape(cfg.n_heads, cfg.head_dim, cfg.emb_dim)  # [N, H, D]
        per_head = jnp.einsum("btnh,nhd->nbtd", c[f"blocks.{layer}.attn.hook_z"], W)
        heads.append(share(per_head))
        bias.append(share(jnp.broadcast_to(proj.get("bias", 0.0), embed.shape)))
        mlp.append(share(c[f"blocks.{layer}.hook_mlp_out"]))
    rest = jnp.sum(ln.get("bias", jnp.zeros(cfg.emb_dim)) * output_head(cfg, params)[target], -1)
    return {
        "embed": share(embed),
        "heads": jnp.stack(heads),
        "attn_bias": jnp.stack(bias),
        "mlp": jnp.stack(mlp),
        "rest": rest,
    }


def patch_positions(cfg: GPTConfig, params, clean, corrupt, metric: Metric) -> jax.Array:
    """Activation patching over (layer, position): metric of the corrupt run with the clean
    run's residual stream at block l's input and position t patched in -> [L, T] (clean and
    corrupt tokens [B, T], the same length)."""
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(cfg.n_layers)]
    _, cache = run_with_cache(cfg, params, clean, names)
    T = clean.shape[1]

    def one(name, t):
        at = (jnp.arange(T) == t)[None, :, None]
        patch = lambda x, hook: jnp.where(at, cache[name], x)
        return metric(run_with_hooks(cfg, params, corrupt, {name: patch}))

    return jnp.stack([jax.vmap(partial(one, n))(jnp.arange(T)) for n in names])


def patch_heads(cfg: GPTConfig, params, clean, corrupt, metric: Metric) -> jax.Array:
    """Activation patching over heads: metric of the corrupt run with head n of layer l's
    output (hook_z, every position) taken from the clean run -> [L, N]."""
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(cfg.n_layers)]
    _, cache = run_with_cache(cfg, params, clean, names)

    def one(name, n):
        head = (jnp.arange(cfg.n_heads) == n)[None, None, :, None]
        patch = lambda z, hook: jnp.where(head, cache[name], z)
        return metric(run_with_hooks(cfg, params, corrupt, {name: patch}))

    return jnp.stack([jax.vmap(partial(one, name))(jnp.arange(cfg.n_heads)) for name in names])


def repeated_tokens(key, batch: int, half: int, vocab: int) -> jax.Array:
    """[B, 2 * half] int32: random tokens, then the same tokens again."""
    first = jax.random.randint(key, (batch, half), 0, vocab, jnp.int32)
    return jnp.concatenate([first, first], axis=1)


def induction_scores(cfg: GPTConfig, params, key, *, batch: int = 8, half: int | None = None):
    """[L, N]: each head's mean attention, over the second half of repeated random tokens,
    from position t to t - half + 1 (the token after the current token's earlier copy): an
    induction head's score is near 1 (Olsson et al., 2022)."""
    half = half or cfg.context_length // 2
    tokens = repeated_tokens(key, batch, half, cfg.vocab_size)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(cfg.n_layers)]
    _, cache = run_with_cache(cfg, params, tokens, names)
    stripe = lambda p: jnp.diagonal(p, offset=1 - half, axis1=-2, axis2=-1)  # [B, N, half]
    return jnp.stack([stripe(cache[n])[..., 1:].mean((0, 2)) for n in names])


def heatmap(values, out: Path, *, xlabel: str, ylabel: str, title: str = "", **ticks) -> Path:
    """Write `out` (PNG) of values [R, C] (e.g. patch_positions' [L, T]); `xticks` / `yticks`:
    labels for the columns / rows."""
    return plot_heatmap(values, out, xlabel=xlabel, ylabel=ylabel, title=title, **ticks)
